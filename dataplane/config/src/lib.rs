//! Hub configuration: the one schema shared by the binary, its config file and the operator.
//!
//! Field names follow the Node `socket.io` server options where one exists (`pingInterval`,
//! `maxHttpBufferSize`, `connectTimeout`, ...) so users can carry their settings over. All
//! durations are milliseconds.
//!
//! This crate is pure (no I/O but reading a file, no runtime) so that the operator can
//! render and check hub configurations without depending on the data plane. One module per
//! section of the file, each with its own `validate`.

#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

mod applink;
mod auth;
mod cluster;
mod engine;
mod limits;
mod management;
pub mod members;
mod metrics;
mod peertls;
mod recovery;
mod socketio;

pub use applink::AppLinkConfig;
pub use auth::{AuthConfig, AuthMode, JwtConfig};
pub use cluster::{
    is_dns_name, ClusterConfig, DnsConfig, KubernetesConfig, MemberSource, RoomsMode,
};
pub use engine::{CorsConfig, EngineConfig, TransportKind};
pub use limits::{LimitsConfig, ShutdownConfig};
pub use management::ManagementConfig;
pub use members::{Members, MembersDiff, MembersError};
pub use metrics::MetricsConfig;
pub use peertls::{PeerCertsKubernetes, PeerTlsConfig};
pub use recovery::RecoveryConfig;
pub use socketio::{NamespaceConfig, PolicyConfig, SocketIoConfig, UpstreamConfig, SECRETS};

use std::net::SocketAddr;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot parse {path}: {message}")]
    Parse { path: String, message: String },
    #[error("invalid configuration:{}", .0.iter().map(|e| format!("\n  - {e}")).collect::<String>())]
    Invalid(Vec<FieldError>),
}

/// One invalid field, named by its path in the file (e.g. `engine.pingInterval`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct FieldError {
    pub field: String,
    pub reason: String,
}

/// Everything a hub process needs to run. `Config::default()` is the embedded default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct Config {
    /// Address the Socket.IO endpoint listens on.
    pub listen: SocketAddr,
    /// Stable member id of this hub process (the pod name in Kubernetes). Encoded into every
    /// Engine.IO session id so any pod can tell which pod owns a session.
    pub node_id: String,
    pub engine: EngineConfig,
    pub socketio: SocketIoConfig,
    pub limits: LimitsConfig,
    /// Client authentication at the handshake.
    pub auth: AuthConfig,
    /// The management REST API the application backend calls.
    pub management: ManagementConfig,
    /// The metrics and probes listener (`/metrics`, `/healthz`, `/readyz`). Off by default.
    pub metrics: MetricsConfig,
    /// Other nodes of the same hub. Left out: a single node.
    #[serde(skip_serializing_if = "ClusterConfig::is_single_node")]
    pub cluster: ClusterConfig,
    /// What SIGTERM does: leave readiness, close the client sessions, exit.
    pub shutdown: ShutdownConfig,
    /// Application instances serving the clients through the Node SDK. Off by default.
    #[serde(skip_serializing_if = "AppLinkConfig::is_off")]
    pub app_link: AppLinkConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 3000)),
            node_id: "local".to_string(),
            engine: EngineConfig::default(),
            socketio: SocketIoConfig::default(),
            limits: LimitsConfig::default(),
            auth: AuthConfig::default(),
            management: ManagementConfig::default(),
            metrics: MetricsConfig::default(),
            cluster: ClusterConfig::default(),
            shutdown: ShutdownConfig::default(),
            app_link: AppLinkConfig::default(),
        }
    }
}

impl Config {
    /// Reads a configuration file: YAML (`.yaml`, `.yml`), TOML (`.toml`) or JSON (`.json`).
    /// Fields left out keep their defaults; unknown fields are errors.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: shown.clone(),
            source,
        })?;
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        Self::parse(&text, ext).map_err(|message| ConfigError::Parse {
            path: shown,
            message,
        })
    }

    /// Parses configuration text in the format named by `format` (`yaml`, `toml`, `json`).
    pub fn parse(text: &str, format: &str) -> Result<Config, String> {
        match format {
            "toml" => toml::from_str(text).map_err(|e| e.to_string()),
            "json" => serde_json::from_str(text).map_err(|e| e.to_string()),
            "yaml" | "yml" | "" => serde_saphyr::from_str(text).map_err(|e| e.to_string()),
            other => Err(format!(
                "unknown configuration format {other:?} (use .yaml, .toml or .json)"
            )),
        }
    }

    /// Checks cross-field rules; every bad field is reported, named by its path.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut bad = Problems::default();
        if self.node_id.is_empty() || self.node_id.len() > 253 {
            bad.add("nodeId", "must be 1 to 253 characters");
        }
        if self.node_id.chars().any(char::is_whitespace) {
            bad.add("nodeId", "must not contain whitespace");
        }
        self.engine.validate(&mut bad);
        self.socketio.validate(&mut bad);
        self.shutdown.validate(&mut bad);
        self.auth.validate(&mut bad);
        self.management.validate(&mut bad);
        self.app_link.validate(&mut bad);
        if self.app_link.enabled() {
            self.validate_app_mode(&mut bad);
        }
        self.metrics.validate(self.listen, &mut bad);
        self.cluster
            .validate(&self.node_id, self.engine.max_http_buffer_size, &mut bad);
        self.limits
            .validate(self.engine.max_http_buffer_size, &mut bad);
        if bad.0.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(bad.0))
        }
    }
}

impl Config {
    /// With app links, the application owns the Socket.IO side: what the hub would
    /// otherwise do itself for a namespace cannot be asked for too.
    fn validate_app_mode(&self, bad: &mut Problems) {
        if self.cluster.tls.is_none() && !self.app_link.plaintext {
            bad.add(
                "appLink",
                "app links are TLS with the node's peer certificate: set cluster.tls, or appLink.plaintext: true where nothing untrusted can reach appLink.listen",
            );
        }
        for (i, ns) in self.socketio.namespaces.iter().enumerate() {
            if ns.upstream.is_some() || ns.relay || ns.policies.is_some() {
                bad.add(
                    &format!("socketio.namespaces[{i}]"),
                    "upstream, relay and policies are for the webhook mode; with appLink the application's socket.io Server handles every namespace",
                );
            }
        }
        if self.auth.mode != AuthMode::None {
            bad.add(
                "auth.mode",
                "must be none with appLink: the application authenticates its clients (io.use), see docs/app-sdk.md",
            );
        }
        if self.socketio.connection_state_recovery.enabled {
            bad.add(
                "socketio.connectionStateRecovery",
                "not available with appLink (the application's sockets cannot be parked by the hub)",
            );
        }
    }
}

/// The field errors found so far while validating.
#[derive(Debug, Default)]
pub(crate) struct Problems(Vec<FieldError>);

impl Problems {
    pub(crate) fn add(&mut self, field: &str, reason: &str) {
        self.0.push(FieldError {
            field: field.to_string(),
            reason: reason.to_string(),
        });
    }

    /// A duration in milliseconds that must be positive and at most an hour.
    pub(crate) fn millis(&mut self, field: &str, value: u64) {
        if value == 0 || value > 3_600_000 {
            self.add(field, "must be between 1 and 3600000 milliseconds");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        Config::default().validate().unwrap();
    }

    #[test]
    fn yaml_toml_and_json_agree() {
        let yaml = "nodeId: hub-0\nengine:\n  pingInterval: 1000\n  transports: [websocket]\n";
        let toml =
            "nodeId = \"hub-0\"\n[engine]\npingInterval = 1000\ntransports = [\"websocket\"]\n";
        let json =
            r#"{"nodeId":"hub-0","engine":{"pingInterval":1000,"transports":["websocket"]}}"#;
        let a = Config::parse(yaml, "yaml").unwrap();
        let b = Config::parse(toml, "toml").unwrap();
        let c = Config::parse(json, "json").unwrap();
        assert_eq!(a, b);
        assert_eq!(b, c);
        assert_eq!(a.engine.ping_interval, 1000);
        assert_eq!(a.engine.transports, vec![TransportKind::Websocket]);
        assert_eq!(a.engine.ping_timeout, 20_000, "unset fields keep defaults");
    }

    #[test]
    fn kubernetes_discovery_is_a_member_source() {
        let yaml = "nodeId: chat-0\ncluster:\n  plaintext: true\n  peerListen: 0.0.0.0:7000\n  kubernetes:\n    service: chat-peers\n";
        let config = Config::parse(yaml, "yaml").unwrap();
        config.validate().unwrap();
        let Some(MemberSource::Kubernetes(k)) = config.cluster.source().unwrap() else {
            panic!("expected the Kubernetes source");
        };
        assert_eq!(k.service, "chat-peers");
        assert_eq!(k.namespace, None);
        assert_eq!(k.port_name, "peer");
        assert_eq!(config.cluster.discovery_interval().as_millis(), 1_000);
        let mut bad = config.clone();
        bad.cluster.kubernetes = Some(KubernetesConfig {
            service: "Chat_Peers".into(),
            namespace: Some("".into()),
            port_name: String::new(),
        });
        bad.cluster.members_file = Some("/m".into());
        let ConfigError::Invalid(errors) = bad.validate().unwrap_err() else {
            panic!("expected field errors");
        };
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "cluster",
                "cluster.kubernetes.service",
                "cluster.kubernetes.namespace",
                "cluster.kubernetes.portName"
            ]
        );
    }

    #[test]
    fn cluster_configs_are_checked() {
        let yaml = "nodeId: hub-1\ncluster:\n  plaintext: true\n  peerListen: 127.0.0.12:7000\n  members: [hub-0=127.0.0.11:7000, hub-1=127.0.0.12:7000]\n";
        let config = Config::parse(yaml, "yaml").unwrap();
        config.validate().unwrap();
        assert_eq!(config.cluster.members().unwrap().len(), 2);
        assert_eq!(config.cluster.heartbeat_timeout, 3_000);

        let fields = |c: &Config| match c.validate() {
            Err(ConfigError::Invalid(errors)) => {
                errors.into_iter().map(|e| e.field).collect::<Vec<_>>()
            }
            other => panic!("expected field errors, got {other:?}"),
        };
        let mut not_listed = config.clone();
        not_listed.node_id = "hub-9".into();
        assert_eq!(fields(&not_listed), ["cluster.members"]);
        let mut no_listen = config.clone();
        no_listen.cluster.peer_listen = None;
        assert_eq!(fields(&no_listen), ["cluster.peerListen"]);
        let mut bad = config.clone();
        bad.cluster.members.push("hub-2".into());
        bad.cluster.heartbeat_timeout = bad.cluster.heartbeat_interval;
        assert_eq!(
            fields(&bad),
            ["cluster.members", "cluster.heartbeatTimeout"]
        );
        let mut listen_only = Config::default();
        listen_only.cluster.peer_listen = config.cluster.peer_listen;
        assert_eq!(fields(&listen_only), ["cluster.members"]);
        let with_advertise = Config::parse(
            &format!("{yaml}  advertiseAddress: 10.0.0.5:3000\n"),
            "yaml",
        )
        .unwrap();
        with_advertise.validate().unwrap();
        assert_eq!(
            with_advertise.cluster.advertise_address,
            Some("10.0.0.5:3000".parse().unwrap())
        );
        for unusable in ["0.0.0.0:3000", "10.0.0.5:0"] {
            let mut bad = config.clone();
            bad.cluster.advertise_address = Some(unusable.parse().unwrap());
            assert_eq!(fields(&bad), ["cluster.advertiseAddress"], "{unusable}");
        }

        // Sources that change at run time; only one source at a time.
        let yaml = "nodeId: hub-1\ncluster:\n  plaintext: true\n  peerListen: 127.0.0.12:7000\n  membersFile: /etc/roomcast/members\n";
        let file = Config::parse(yaml, "yaml").unwrap();
        file.validate().unwrap();
        assert_eq!(
            file.cluster.source().unwrap(),
            Some(MemberSource::File("/etc/roomcast/members".into()))
        );
        assert_eq!(file.cluster.discovery_interval().as_millis(), 1_000);
        let yaml = "nodeId: hub-1\ncluster:\n  plaintext: true\n  peerListen: 0.0.0.0:7000\n  dns:\n    name: _peer._tcp.hub-peers.default.svc.cluster.local\n    nameserver: 127.0.0.1:5353\n  discoveryInterval: 2000\n";
        let dns = Config::parse(yaml, "yaml").unwrap();
        dns.validate().unwrap();
        let Some(MemberSource::Dns(d)) = dns.cluster.source().unwrap() else {
            panic!("expected a DNS source");
        };
        assert_eq!(d.nameserver, Some("127.0.0.1:5353".parse().unwrap()));
        assert_eq!(dns.cluster.discovery_interval().as_millis(), 2_000);
        let mut defaults = dns.clone();
        defaults.cluster.discovery_interval = None;
        assert_eq!(defaults.cluster.discovery_interval().as_millis(), 5_000);
        let mut two = dns.clone();
        two.cluster.members_file = Some("/m".into());
        two.cluster.discovery_interval = Some(10);
        let ConfigError::Invalid(errors) = two.validate().unwrap_err() else {
            panic!("expected field errors");
        };
        assert_eq!(errors[0].field, "cluster");
        assert!(
            errors[0]
                .reason
                .contains("cluster.membersFile and cluster.dns"),
            "{}",
            errors[0].reason
        );
        assert_eq!(errors[1].field, "cluster.discoveryInterval");
        let mut no_name = dns.clone();
        no_name.cluster.dns = Some(DnsConfig {
            name: " ".into(),
            nameserver: None,
        });
        no_name.cluster.peer_listen = None;
        assert_eq!(fields(&no_name), ["cluster.dns.name", "cluster.peerListen"]);
        // A single node serializes without a cluster section.
        let json = serde_json::to_string(&Config::default()).unwrap();
        assert!(!json.contains("cluster"), "{json}");
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let err = Config::parse("engine:\n  pingIntervall: 5\n", "yaml").unwrap_err();
        assert!(err.contains("pingIntervall"), "{err}");
    }

    #[test]
    fn validation_names_every_bad_field() {
        let mut config = Config::default();
        config.engine.path = "socket".into();
        config.engine.ping_interval = 0;
        config.limits.max_connections = 0;
        let ConfigError::Invalid(errors) = config.validate().unwrap_err() else {
            panic!("expected field errors");
        };
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "engine.path",
                "engine.pingInterval",
                "limits.maxConnections"
            ]
        );
    }

    #[test]
    fn namespaces_are_names_or_objects() {
        let yaml = "socketio:\n  namespaces:\n    - /\n    - name: /chat\n      allowedEvents: [message]\n      upstream:\n        url: http://app/hook\n";
        let config = Config::parse(yaml, "yaml").unwrap();
        assert_eq!(config.socketio.namespaces[0], NamespaceConfig::from("/"));
        let chat = &config.socketio.namespaces[1];
        assert_eq!(chat.allowed_events, vec!["message".to_string()]);
        let upstream = chat.upstream.as_ref().unwrap();
        assert_eq!((upstream.timeout, upstream.events.len()), (5_000, 3));
        config.validate().unwrap();
        let err = Config::parse(
            "socketio:\n  namespaces:\n    - name: /x\n      bogus: 1\n",
            "yaml",
        );
        assert!(err.is_err());
    }

    #[test]
    fn jwt_auth_is_validated() {
        let mut config = Config::default();
        config.auth.mode = AuthMode::Jwt;
        let ConfigError::Invalid(errors) = config.validate().unwrap_err() else {
            panic!("expected field errors");
        };
        assert_eq!(errors[0].field, "auth.jwt", "no key source");
        let j = &mut config.auth.jwt;
        j.hs256_secret = Some(String::new());
        j.jwks_url = Some("ftp://keys".into());
        j.algorithms = vec!["HS512".into()];
        j.issuer = Some(String::new());
        j.audience = vec![String::new()];
        j.leeway = 100_000;
        let ConfigError::Invalid(errors) = config.validate().unwrap_err() else {
            panic!("expected field errors");
        };
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "auth.jwt.algorithms",
                "auth.jwt.jwksUrl",
                "auth.jwt.hs256Secret",
                "auth.jwt.issuer",
                "auth.jwt.audience",
                "auth.jwt.leeway"
            ]
        );
        let yaml = "auth:\n  mode: jwt\n  jwt:\n    algorithms: [RS256]\n    jwksUrl: https://idp.example/.well-known/jwks.json\n    issuer: https://idp.example/\n    audience: [roomcast]\n    leeway: 30\n";
        let config = Config::parse(yaml, "yaml").unwrap();
        config.validate().unwrap();
        assert_eq!(config.auth.jwt.jwks_refresh_interval, 300_000);
        assert!(
            config.auth.warnings().is_empty(),
            "https, audience and issuer"
        );
    }

    #[test]
    fn a_jwks_over_http_needs_an_explicit_opt_in_and_missing_claims_checks_warn() {
        let yaml = "auth:\n  mode: jwt\n  jwt:\n    jwksUrl: http://idp.internal/jwks.json\n";
        let mut config = Config::parse(yaml, "yaml").unwrap();
        let ConfigError::Invalid(errors) = config.validate().unwrap_err() else {
            panic!("expected field errors");
        };
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].field, "auth.jwt.jwksUrl");
        assert!(
            errors[0].reason.contains("allowInsecureJwksUrl"),
            "{}",
            errors[0].reason
        );
        config.auth.jwt.allow_insecure_jwks_url = true;
        config.validate().unwrap();
        // No audience, no issuer, plain http: two warnings.
        let warnings = config.auth.warnings();
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(warnings[0].contains("audience") && warnings[0].contains("issuer"));
        // Audience alone is not enough.
        config.auth.jwt.jwks_url = Some("https://idp.example/jwks.json".into());
        config.auth.jwt.audience = vec!["roomcast".into()];
        assert_eq!(config.auth.warnings().len(), 1);
        config.auth.jwt.issuer = Some("https://idp.example/".into());
        assert!(config.auth.warnings().is_empty());
        // Static keys need neither (they are this deployment's own).
        config.auth.jwt.jwks_url = None;
        config.auth.jwt.hs256_secret = Some("s".into());
        config.auth.jwt.audience.clear();
        assert!(config.auth.warnings().is_empty());
    }

    #[test]
    fn the_byte_budgets_have_sane_defaults_and_are_validated() {
        let config = Config::default();
        assert_eq!(config.limits.max_upstream_queue_bytes, 256 * 1024 * 1024);
        assert_eq!(config.limits.max_upstream_answer_bytes, 1024 * 1024);
        assert_eq!(config.cluster.max_peer_queue_bytes, 64 * 1024 * 1024);
        let yaml = "limits:\n  maxUpstreamQueueBytes: 0\n  maxUpstreamAnswerBytes: 0\ncluster:\n  maxPeerQueueBytes: 1000\n";
        let config = Config::parse(yaml, "yaml").unwrap();
        let ConfigError::Invalid(errors) = config.validate().unwrap_err() else {
            panic!("expected field errors");
        };
        let mut fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        fields.sort();
        assert_eq!(
            fields,
            [
                "cluster.maxPeerQueueBytes",
                "limits.maxUpstreamAnswerBytes",
                "limits.maxUpstreamQueueBytes"
            ]
        );
    }

    /// The fields a configuration's validation names.
    fn fields(yaml: &str) -> Vec<String> {
        match Config::parse(yaml, "yaml").unwrap().validate() {
            Ok(()) => Vec::new(),
            Err(ConfigError::Invalid(errors)) => errors.into_iter().map(|e| e.field).collect(),
            Err(other) => panic!("{other}"),
        }
    }

    /// App links are TLS with the peer certificate, or say they are plaintext.
    #[test]
    fn app_links_need_tls_or_plaintext() {
        let app = "appLink: {listen: 127.0.0.1:5100, token: 0123456789abcdef0123";
        assert_eq!(fields(&format!("{app}}}\n")), ["appLink"]);
        assert!(fields(&format!("{app}, plaintext: true}}\n")).is_empty());
        let tls = "cluster:\n  peerListen: 127.0.0.12:7000\n  members: [hub-0=127.0.0.12:7000]\n  tls: {caFile: /t/ca.crt, certFile: /t/tls.crt, keyFile: /t/tls.key}\n";
        assert!(fields(&format!("nodeId: hub-0\n{app}}}\n{tls}")).is_empty());
        assert_eq!(
            fields(&format!(
                "{app}, plaintext: true, maxConnections: 2, maxConnectionsPerIp: 3}}\n"
            )),
            ["appLink.maxConnectionsPerIp"]
        );
    }

    /// A cluster runs mutual TLS or says it is plaintext; with TLS, member ids are DNS names.
    #[test]
    fn a_cluster_needs_tls_or_plaintext() {
        let base = "nodeId: hub-1\ncluster:\n  peerListen: 127.0.0.12:7000\n  members: [hub-0=127.0.0.11:7000, hub-1=127.0.0.12:7000]\n";
        assert_eq!(fields(base), ["cluster.tls"]);
        assert!(fields(&format!("{base}  plaintext: true\n")).is_empty());
        let tls = "  tls: {caFile: /t/ca.crt, certFile: /t/tls.crt, keyFile: /t/tls.key}\n";
        assert!(fields(&format!("{base}{tls}")).is_empty());
        assert_eq!(
            fields(&format!("{base}{tls}  plaintext: true\n")),
            ["cluster.plaintext"]
        );
        let upper = base.replace("hub-1", "Hub_1");
        assert_eq!(
            fields(&format!("{upper}{tls}")),
            ["nodeId", "cluster.members"]
        );
        // A single node needs neither.
        assert!(fields("nodeId: hub-1\n").is_empty());
        let small = format!("{base}  plaintext: true\n  maxPeerMessageBytes: 1048576\n");
        assert_eq!(fields(&small), ["cluster.maxPeerMessageBytes"]);
        for (id, ok) in [
            ("hub-0", true),
            ("hub-0.hub-peers.ns", true),
            ("a", true),
            ("10.0.0.1", false),
            ("-a", false),
            ("a_b", false),
            ("A", false),
            ("", false),
        ] {
            assert_eq!(is_dns_name(id), ok, "{id}");
        }
    }

    #[test]
    fn open_management_api_is_refused() {
        let mut config = Config::default();
        config.management.listen = Some(([127, 0, 0, 1], 3001).into());
        assert!(config.validate().is_err());
        config.management.token = Some("0123456789abcdef".into());
        config.validate().unwrap();
    }

    /// Every YAML example of docs/configuration.md that is a whole file parses and validates.
    #[test]
    fn documented_examples_are_valid() {
        let doc = include_str!("../../../docs/configuration.md");
        let mut checked = 0;
        for block in doc.split("```yaml\n").skip(1) {
            let Some((yaml, _)) = block.split_once("```") else {
                continue;
            };
            let config = Config::parse(yaml, "yaml").unwrap_or_else(|e| panic!("{e}\n{yaml}"));
            config.validate().unwrap_or_else(|e| panic!("{e}\n{yaml}"));
            checked += 1;
        }
        assert!(checked >= 5, "found {checked} examples");
    }

    #[test]
    fn round_trips_through_yaml() {
        let config = Config::default();
        let text = serde_saphyr::to_string(&config).unwrap();
        assert_eq!(Config::parse(&text, "yaml").unwrap(), config);
    }
}
