//! The `SocketIOHub` API (`roomcast.dev/v1alpha1`).
//!
//! Field names follow the data plane's configuration (the `roomcast-config` crate) and, through
//! it, the Node `socket.io` server options, so a user can carry settings over. Durations are
//! milliseconds. Everything optional has a default applied by the API server (the `default`
//! values in the schema) or by the builders.
//!
//! Immutability and cross-field rules are CEL (`x-kubernetes-validations`) so the API server
//! rejects bad objects before the operator sees them; `crate::validate` repeats the checks that
//! matter for objects created before a rule existed.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, ResourceRequirements, Toleration, TopologySpreadConstraint,
};
use k8s_openapi::api::networking::v1::NetworkPolicyPeer;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// API group of every Roomcast resource.
pub const GROUP: &str = "roomcast.dev";
/// Served and stored version.
pub const VERSION: &str = "v1alpha1";

/// Desired state of a Socket.IO hub: a horizontally scaled set of data-plane pods behind one
/// Service, configured for the namespaces, upstreams and auth given here.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "roomcast.dev",
    version = "v1alpha1",
    kind = "SocketIOHub",
    plural = "socketiohubs",
    singular = "socketiohub",
    shortname = "sio",
    category = "roomcast",
    namespaced,
    status = "SocketIOHubStatus",
    derive = "PartialEq",
    doc = "A horizontally scalable Socket.IO endpoint served by Roomcast data-plane pods.",
    validation = Rule::new("size(self.metadata.name) <= 52").message("metadata.name must be at most 52 characters (pod and revision names derive from it)"),
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(name = "Replicas", type_ = "integer", json_path = ".spec.replicas"),
    printcolumn(name = "Ready", type_ = "integer", json_path = ".status.readyReplicas"),
    printcolumn(name = "Clients", type_ = "integer", json_path = ".status.connectedClients"),
    printcolumn(name = "Apps", type_ = "integer", json_path = ".status.linkedAppInstances"),
    printcolumn(
        name = "Status",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason"
    ),
    printcolumn(name = "Endpoint", type_ = "string", json_path = ".status.endpoint"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct SocketIOHubSpec {
    /// Number of data-plane pods. Also driven by `kubectl scale` and HorizontalPodAutoscalers
    /// through the scale subresource.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 0, max = 1000))]
    pub replicas: i32,

    /// Data-plane image. Defaults to the image matching the operator's own version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub image: Option<String>,

    /// Image pull policy of the data-plane container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<PullPolicy>,

    /// Names of Secrets in the hub's namespace used to pull the image.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub image_pull_secrets: Vec<String>,

    /// Compute resources of the data-plane container; when unset, requests of
    /// `cpu: 100m, memory: 128Mi` (the HorizontalPodAutoscaler and the scheduler need
    /// requests) and no limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// Where the pods may run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement: Option<Placement>,

    /// How pods are created and deleted by the StatefulSet. Immutable (a StatefulSet cannot
    /// change it); `Parallel` by default so scaling does not wait pod by pod.
    #[serde(default = "default_pod_management_policy")]
    #[x_kube(validation = Rule::new("self == oldSelf").message("podManagementPolicy is immutable"))]
    pub pod_management_policy: PodManagementPolicy,

    /// Engine.IO options (transports, heartbeats, payload size, CORS).
    #[serde(default)]
    pub engine: EngineSpec,

    /// Socket.IO namespaces clients may connect to. Empty means only the main namespace `/`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub namespaces: Vec<NamespaceSpec>,

    /// How long a new session may stay without joining a namespace, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1000, max = 600000))]
    pub connect_timeout: Option<i64>,

    /// Default timeout of server-to-client acknowledgements, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 100, max = 600000))]
    pub ack_timeout: Option<i64>,

    /// Connection state recovery (socket.io's `connectionStateRecovery`): a client cut off
    /// for less than `maxDisconnectionDuration` gets its session back, with what it missed,
    /// on whichever pod it reconnects to, and a pod that drains hands its sessions to the
    /// others. On when this is set (with `enabled` unset or true). It changes what clients
    /// see: events carry an offset as their last argument. See docs/recovery.md.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_state_recovery: Option<RecoverySpec>,

    /// Per-pod resource limits enforced by the data plane.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<LimitsSpec>,

    /// Handshake secrets that `fetchSockets`, webhooks and peers may show; every other one is
    /// shown as `[redacted]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 5))]
    pub show_secrets: Vec<HandshakeSecret>,

    /// Client authentication (JWT in the handshake).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthSpec>,

    /// Management API used by the application backend.
    #[serde(default)]
    pub management: ManagementSpec,

    /// The client-facing Service.
    #[serde(default)]
    pub service: ServiceSpec,

    /// PodDisruptionBudget of the hub's pods.
    #[serde(default)]
    pub pod_disruption_budget: PdbSpec,

    /// NetworkPolicy of the hub's pods: who may reach which port.
    #[serde(default)]
    pub network_policy: NetworkPolicySpec,

    /// Extra annotations on the pods (merged under the operator's own).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pod_annotations: BTreeMap<String, String>,

    /// Certificates of the peer mesh (docs/operator.md#peer-certificates).
    #[serde(default)]
    pub peer_tls: PeerTlsSpec,

    /// App links (docs/app-sdk.md): the application's own socket.io Server, run with the
    /// Node SDK (`@roomcast/socket.io`), serves this hub's clients over gRPC links to every
    /// pod. Off unless `enabled`; then namespaces may not have `upstream`, `relay` or
    /// `policies`, and neither `auth` nor connection state recovery may be on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_link: Option<AppLinkSpec>,
}

/// App links: the listener application instances link to, behind the Service `<hub>-app`.
/// Limits left out take the data plane's defaults (docs/configuration.md, `appLink`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct AppLinkSpec {
    /// Hand every client session to linked application instances.
    #[serde(default)]
    pub enabled: bool,
    /// Port of the app link listener on every pod (container port and Service port
    /// `app-link`); not one of the hub's other ports (3000, 3001, 7000, 9090).
    #[serde(default = "AppLinkSpec::default_port")]
    #[schemars(range(min = 1, max = 65535))]
    #[x_kube(validation = Rule::new("!(self in [3000, 3001, 7000, 9090])").message("appLink.port must differ from the hub's other ports (3000, 3001, 7000, 9090)"))]
    pub port: i32,
    /// Secret key holding the token app instances present. When absent the operator
    /// generates one into the Secret `<hub>-app-link` (key `token`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_secret_ref: Option<SecretKeyRef>,
    /// Largest batch of messages an instance may send at once, in bytes (default 4 MiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1024, max = 67108864))]
    pub max_batch_bytes: Option<i64>,
    /// Bytes a pod may hold for one instance that does not read fast enough; past it the
    /// link is ended and its sessions closed (default 64 MiB; at least `maxBatchBytes`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1024))]
    pub max_queued_bytes: Option<i64>,
    /// Bytes of one client's packets that may wait on its app's link; past it that client
    /// is disconnected (default 1 MiB; at most `maxQueuedBytes`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_queued_bytes_per_session: Option<i64>,
    /// Client sessions one link may hold (default 100000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_sessions_per_link: Option<i64>,
    /// Requests one link may have in flight (default 10000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_pending_requests: Option<i64>,
    /// Milliseconds between HTTP/2 pings of each link (default 10000): the link of an
    /// instance that stopped answering ends after about twice this, and its clients'
    /// sessions are closed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 3600000))]
    pub keepalive_interval: Option<i64>,
    /// Who may reach the app link port (NetworkPolicy peers). Default: every pod of the
    /// hub's namespace, where the application usually runs (it still needs the token);
    /// an empty list closes the port to every pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    pub allowed_from: Option<Vec<NetworkPolicyPeer>>,
}

impl AppLinkSpec {
    /// Default port of the app link listener.
    pub const DEFAULT_PORT: i32 = 5100;

    fn default_port() -> i32 {
        Self::DEFAULT_PORT
    }
}

impl Default for AppLinkSpec {
    fn default() -> Self {
        Self {
            enabled: false,
            port: Self::DEFAULT_PORT,
            token_secret_ref: None,
            max_batch_bytes: None,
            max_queued_bytes: None,
            max_queued_bytes_per_session: None,
            max_sessions_per_link: None,
            max_pending_requests: None,
            keepalive_interval: None,
            allowed_from: None,
        }
    }
}

/// The hub's peer CA and the leaf certificates the operator signs for its pods.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PeerTlsSpec {
    /// Validity of a new CA in days; the CA rotates in the last third of its life.
    #[serde(default = "PeerTlsSpec::default_ca_validity_days")]
    #[schemars(range(min = 1, max = 3650))]
    pub ca_validity_days: i64,
    /// Lifetime of a pod's certificate in seconds (requested by the pod and the most the
    /// operator signs); pods renew at two thirds of it.
    #[serde(default = "PeerTlsSpec::default_certificate_seconds")]
    #[schemars(range(min = 600, max = 31536000))]
    pub certificate_seconds: i64,
    /// Seconds the previous CA stays in the trust bundle at least after a CA rotation
    /// starts, after every pod holds a certificate of the new one.
    #[serde(default = "PeerTlsSpec::default_rotation_settle_seconds")]
    #[schemars(range(min = 0, max = 86400))]
    pub rotation_settle_seconds: i64,
}

impl PeerTlsSpec {
    fn default_ca_validity_days() -> i64 {
        365
    }
    fn default_certificate_seconds() -> i64 {
        24 * 3600
    }
    fn default_rotation_settle_seconds() -> i64 {
        30
    }
}

impl Default for PeerTlsSpec {
    fn default() -> Self {
        Self {
            ca_validity_days: Self::default_ca_validity_days(),
            certificate_seconds: Self::default_certificate_seconds(),
            rotation_settle_seconds: Self::default_rotation_settle_seconds(),
        }
    }
}

fn default_replicas() -> i32 {
    1
}

fn default_pod_management_policy() -> PodManagementPolicy {
    PodManagementPolicy::Parallel
}

/// Image pull policy.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum PullPolicy {
    Always,
    IfNotPresent,
    Never,
}

impl PullPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            PullPolicy::Always => "Always",
            PullPolicy::IfNotPresent => "IfNotPresent",
            PullPolicy::Never => "Never",
        }
    }
}

/// StatefulSet pod management policy.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum PodManagementPolicy {
    OrderedReady,
    Parallel,
}

impl PodManagementPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            PodManagementPolicy::OrderedReady => "OrderedReady",
            PodManagementPolicy::Parallel => "Parallel",
        }
    }
}

/// Pod placement, copied onto the pod template as is.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Placement {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// Replaces the default spread when not empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub topology_spread_constraints: Vec<TopologySpreadConstraint>,
    /// Without `topologySpreadConstraints`: spread the pods across zones
    /// (`topology.kubernetes.io/zone`) and nodes (`kubernetes.io/hostname`), preferred
    /// (`ScheduleAnyway`, never blocks scheduling). `false` turns that default off.
    #[serde(default = "default_true")]
    pub default_topology_spread: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
}

impl Default for Placement {
    fn default() -> Self {
        Self {
            node_selector: BTreeMap::new(),
            tolerations: Vec::new(),
            affinity: None,
            topology_spread_constraints: Vec::new(),
            default_topology_spread: true,
            priority_class_name: None,
        }
    }
}

/// An Engine.IO transport.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Polling,
    Websocket,
}

/// Engine.IO options; unset fields take the data plane's defaults.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.pingTimeout) || !has(self.pingInterval) || self.pingTimeout <= self.pingInterval * 10").message("pingTimeout must not exceed ten pingIntervals"))]
pub struct EngineSpec {
    /// HTTP path of the endpoint; must start and end with `/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256), regex(pattern = r"^/([^?#]*/)?$"))]
    pub path: Option<String>,
    /// Transports offered to clients, in order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub transports: Option<Vec<Transport>>,
    /// Whether a polling session may upgrade to WebSocket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_upgrades: Option<bool>,
    /// Interval between server pings, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1000, max = 3600000))]
    pub ping_interval: Option<i64>,
    /// Time a client has to answer a ping, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1000, max = 3600000))]
    pub ping_timeout: Option<i64>,
    /// Time an upgrade may take, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 100, max = 600000))]
    pub upgrade_timeout: Option<i64>,
    /// Largest accepted message or HTTP body in bytes (`maxPayload`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1024, max = 104857600))]
    pub max_http_buffer_size: Option<i64>,
    /// CORS for the polling transport.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors: Option<CorsSpec>,
    /// Time a polling POST body may take to arrive, in milliseconds (slow senders get 408).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 100, max = 600000))]
    pub polling_body_timeout: Option<i64>,
    /// Time a client may take to send its request headers, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 100, max = 600000))]
    pub header_read_timeout: Option<i64>,
    /// How long the kernel may hold a new client connection until its first bytes arrive
    /// before the pod takes it (TCP_DEFER_ACCEPT), in milliseconds, rounded up to whole
    /// seconds (default 1000); 0 hands connections over at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 60000))]
    pub defer_accept: Option<i64>,
    /// Under sustained fan-out load, the longest a WebSocket frame may wait so that each
    /// write carries several room broadcasts, in milliseconds (default 6); 0 writes every
    /// broadcast at once. See docs/configuration.md, "Write coalescing".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1000))]
    pub write_coalescing_delay: Option<i64>,
    /// The share of a pod's time, in percent, spent writing to clients above which writes
    /// start waiting (default 50); 0: whenever broadcasts come closer together than
    /// `writeCoalescingDelay`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub write_coalescing_load: Option<i64>,
}

/// CORS settings.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CorsSpec {
    /// Allowed origins; `"*"` allows any. Empty disables CORS headers.
    #[serde(default)]
    #[schemars(length(max = 64))]
    pub origin: Vec<String>,
    #[serde(default)]
    pub credentials: bool,
}

/// A Socket.IO namespace, its upstream and what clients may do in it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct NamespaceSpec {
    /// Namespace name (`/chat`) or pattern with `*` (`/tenant-*`).
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^/[^\s]*$"))]
    pub name: String,
    /// Where client events of this namespace are delivered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<UpstreamSpec>,
    /// Event names clients may emit; empty allows all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub allowed_events: Vec<String>,
    /// Lets clients join rooms and emit to them themselves (apps without backend logic).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policies: Option<PolicySpec>,
    /// Development mode: client events not handled otherwise go to the other sockets in the
    /// sender's rooms (`join` / `leave` events manage rooms).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub relay: bool,
}

/// Upstream webhook of a namespace (CloudEvents over HTTP).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpstreamSpec {
    /// Webhook URL of the application backend.
    #[schemars(length(min = 1, max = 2048))]
    #[x_kube(validation = Rule::new("self.startsWith('http://') || self.startsWith('https://')").message("url must be http or https"))]
    pub url: String,
    /// Which events are sent; default all of connect, event, disconnect.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub events: Vec<UpstreamEvent>,
    /// Timeout of one webhook call, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 100, max = 60000))]
    pub timeout: Option<i64>,
    /// Secret holding the key of the `X-Roomcast-Signature` HMAC header of webhook requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_secret_ref: Option<SecretKeyRef>,
    /// Extra attempts for `disconnect` deliveries (other events are never retried).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 10))]
    pub disconnect_retries: Option<i32>,
}

/// Kinds of client activity sent upstream.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamEvent {
    Connect,
    Event,
    Disconnect,
    /// A socket came back through connection state recovery.
    Reconnect,
}

/// Client room policies. Patterns use `*` for any run of characters and `{claim}` for a claim
/// of the client's verified token, e.g. `user:{sub}` or `team:{org}:*`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicySpec {
    /// Rooms clients may join and leave themselves.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub join: Vec<String>,
    /// Rooms clients may emit to even when not in them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub emit: Vec<String>,
    /// Whether clients may emit to rooms they are in.
    #[serde(default)]
    pub emit_to_joined: bool,
}

/// A key of a Secret in the hub's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// Connection state recovery; unset fields take the data plane's defaults.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecoverySpec {
    /// Default true (setting the block turns recovery on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// How long a disconnected session can be recovered, in milliseconds (default 120000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1000, max = 3600000))]
    pub max_disconnection_duration: Option<i64>,
    /// Recovered sockets skip the `connect` webhook (default true). JWTs are always checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip_middlewares: Option<bool>,
    /// A session that missed more packets gets a new session instead (default 500).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_packets_per_session: Option<i64>,
    /// A session that missed more bytes gets a new session instead (default 1 MiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_bytes_per_session: Option<i64>,
    /// Bytes of recent packets a pod keeps for replay (default 64 MiB; count it in the
    /// pod's memory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_buffer_bytes: Option<i64>,
    /// Disconnected sessions a pod keeps (default 100000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_sessions: Option<i64>,
}

/// Data-plane limits; unset fields take the data plane's defaults.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LimitsSpec {
    /// Open sessions per pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_connections: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_namespaces_per_session: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_outbound_frames: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_outbound_bytes: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_pending_acks: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub max_attachments: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_rooms_per_socket: Option<i64>,
    /// Webhook requests in flight at once per pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_upstream_concurrency: Option<i64>,
    /// Bytes of a namespace name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_namespace_name_bytes: Option<i64>,
    /// Namespaces created by clients through a `*` pattern, alive at once per pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_dynamic_namespaces: Option<i64>,
    /// Bytes of a room name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_room_name_bytes: Option<i64>,
    /// Bytes of the `auth` object a client sends with CONNECT.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_auth_bytes: Option<i64>,
    /// Bytes of request headers kept with a session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_handshake_header_bytes: Option<i64>,
    /// Bytes of webhook bodies queued or in flight per pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_upstream_queue_bytes: Option<i64>,
    /// Bytes of one webhook answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_upstream_answer_bytes: Option<i64>,
    /// Open sessions per client IP address (the TCP peer's); 0 turns the limit off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub max_connections_per_ip: Option<i64>,
}

/// A handshake secret, redacted from reports unless listed in `showSecrets`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum HandshakeSecret {
    /// The `cookie` request header.
    #[serde(rename = "cookie")]
    Cookie,
    /// The `authorization` request header.
    #[serde(rename = "authorization")]
    Authorization,
    /// The `proxy-authorization` request header.
    #[serde(rename = "proxy-authorization")]
    ProxyAuthorization,
    /// The `access_token` query parameter.
    #[serde(rename = "access_token")]
    AccessToken,
    /// The `token` of the client's `auth` object.
    #[serde(rename = "auth.token")]
    AuthToken,
}

impl HandshakeSecret {
    /// The name the data plane's `socketio.showSecrets` uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cookie => "cookie",
            Self::Authorization => "authorization",
            Self::ProxyAuthorization => "proxy-authorization",
            Self::AccessToken => "access_token",
            Self::AuthToken => "auth.token",
        }
    }
}

/// Client authentication with a JWT in the handshake.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.secretRef) != has(self.jwksUrl)").message("set exactly one of secretRef and jwksUrl"))]
pub struct AuthSpec {
    /// Secret key with the HS256 secret (when `algorithms` has HS256, the default) or else a PEM
    /// public key (RS256/ES256). Mounted into the pods as a file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretKeyRef>,
    /// URL of a JWKS document with the verification keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048))]
    #[x_kube(validation = Rule::new("self.startsWith('https://') || self.startsWith('http://')").message("jwksUrl must be http or https"))]
    pub jwks_url: Option<String>,
    /// Accepted algorithms; default HS256 with secretRef, RS256 and ES256 with jwksUrl.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub algorithms: Vec<JwtAlgorithm>,
    /// Required `iss` claim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// Accepted `aud` values; one must match, when set.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub audience: Vec<String>,
    /// Disconnect a socket when its token expires (at `exp` plus `leeway`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disconnect_on_expiry: Option<bool>,
    /// Allow a `jwksUrl` over plain `http://` (keys fetched without TLS can be swapped by
    /// anyone on the path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_insecure_jwks_url: Option<bool>,
    /// Clock skew tolerated on `exp` and `nbf`, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 3600))]
    pub leeway: Option<i64>,
}

/// JWT signature algorithms.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum JwtAlgorithm {
    HS256,
    RS256,
    ES256,
}

/// Management API settings. The API listens on port 3001 of every pod, behind the Service
/// `<hub>-management`; any pod serves any call.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ManagementSpec {
    /// Secret key holding the bearer token of the management API. When absent the operator
    /// generates one into the Secret `<hub>-management` (key `token`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_secret_ref: Option<SecretKeyRef>,
}

/// Kind of client Service.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ServiceType {
    #[default]
    ClusterIP,
    NodePort,
    LoadBalancer,
}

impl ServiceType {
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceType::ClusterIP => "ClusterIP",
            ServiceType::NodePort => "NodePort",
            ServiceType::LoadBalancer => "LoadBalancer",
        }
    }
}

/// Session affinity of the client Service. Roomcast needs none (any pod serves any session);
/// `ClientIP` only saves a forwarding hop.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum SessionAffinity {
    #[default]
    None,
    ClientIP,
}

/// The client-facing Service.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.nodePort) || self.type != 'ClusterIP'").message("nodePort needs type NodePort or LoadBalancer"))]
pub struct ServiceSpec {
    #[serde(default, rename = "type")]
    pub type_: ServiceType,
    /// Port clients connect to.
    #[serde(default = "default_service_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// Fixed node port (NodePort / LoadBalancer only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub node_port: Option<i32>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default)]
    pub session_affinity: SessionAffinity,
}

impl Default for ServiceSpec {
    fn default() -> Self {
        Self {
            type_: ServiceType::ClusterIP,
            port: default_service_port(),
            node_port: None,
            annotations: BTreeMap::new(),
            session_affinity: SessionAffinity::None,
        }
    }
}

fn default_service_port() -> i32 {
    80
}

/// PodDisruptionBudget settings; by default one pod may be disrupted at a time.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!(has(self.minAvailable) && has(self.maxUnavailable))").message("set at most one of minAvailable and maxUnavailable"))]
pub struct PdbSpec {
    #[serde(default = "default_true")]
    pub enabled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_available: Option<IntOrString>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unavailable: Option<IntOrString>,
}

impl Default for PdbSpec {
    fn default() -> Self {
        Self {
            enabled: true,
            min_available: None,
            max_unavailable: None,
        }
    }
}

/// The hub's NetworkPolicy (ingress only). The client port is open to all and the peer port
/// to the hub's own pods; these fields say who else may reach the other ports. A list left
/// out takes the default; an empty list closes the port to every pod (traffic from the node
/// the pod runs on, hence the kubelet's probes, is always allowed).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NetworkPolicySpec {
    /// Render the NetworkPolicy (enforced only where the cluster's CNI enforces policies).
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Who may reach the management API (port 3001). Default: every pod of the hub's
    /// namespace, where the application backend usually runs (it still needs the token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    pub management_from: Option<Vec<NetworkPolicyPeer>>,
    /// Who may scrape the metrics port (9090, also `/healthz` and `/readyz`). Default: every
    /// pod of every namespace of the cluster (Prometheus usually runs in a namespace of its
    /// own; the metrics carry counts, no secrets or message content), nothing outside it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    pub metrics_from: Option<Vec<NetworkPolicyPeer>>,
}

impl Default for NetworkPolicySpec {
    fn default() -> Self {
        Self {
            enabled: true,
            management_from: None,
            metrics_from: None,
        }
    }
}

fn default_true() -> bool {
    true
}

/// Observed state of a hub.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SocketIOHubStatus {
    /// Generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Pods of the StatefulSet (scale subresource `statusReplicasPath`).
    #[serde(default)]
    pub replicas: i32,
    /// Pods passing their readiness probe.
    #[serde(default)]
    pub ready_replicas: i32,
    /// Pods running the current pod template.
    #[serde(default)]
    pub updated_replicas: i32,
    /// Label selector of the pods, as a string (scale subresource `labelSelectorPath`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// In-cluster URL clients connect to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// In-cluster URL of the management API (for the application backend).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub management_endpoint: Option<String>,
    /// Address application instances link to (`ROOMCAST_APP_ENDPOINT` of the Node SDK),
    /// `<hub>-app.<namespace>.svc:<port>`; only with `spec.appLink.enabled`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_endpoint: Option<String>,
    /// Hash of the rendered data-plane configuration now in the pod template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_hash: Option<String>,
    /// Hash of the Secret data the hub references (auth key, management token, webhook
    /// signing keys) now in the pod template; a change of that data rolls the pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub references_hash: Option<String>,
    /// Open client sessions over the hub's ready pods (at most `--stats-max-pods` of them),
    /// read from their metrics port every `--stats-refresh-seconds`; unset when no pod answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connected_clients: Option<i64>,
    /// Application instances linked to the hub (every instance links to every pod: the most
    /// links any pod read reports), read with `connectedClients`; unset when no pod answered
    /// or app links are off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub linked_app_instances: Option<i64>,
    /// `Ready`, `Progressing`, `Degraded` and `PodsHealthy` (docs/operator.md, "Status
    /// reasons").
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

impl SocketIOHubSpec {
    /// The app link settings when app links are on.
    pub fn enabled_app_link(&self) -> Option<&AppLinkSpec> {
        self.app_link.as_ref().filter(|a| a.enabled)
    }

    /// Namespace names the data plane accepts; `/` when none are listed.
    pub fn namespace_names(&self) -> Vec<String> {
        if self.namespaces.is_empty() {
            vec!["/".to_string()]
        } else {
            self.namespaces.iter().map(|n| n.name.clone()).collect()
        }
    }
}
