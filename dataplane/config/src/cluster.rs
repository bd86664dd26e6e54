//! `cluster`: the other nodes of a hub, where their list comes from, and link timings.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::members::{Members, MembersError};
use crate::peertls::PeerTlsConfig;
use crate::Problems;

/// The other nodes of a hub and how this node talks to them (`docs/local-cluster.md`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// Address the peer (gRPC) endpoint listens on, e.g. `127.0.0.11:7000`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer_listen: Option<SocketAddr>,
    /// Every member of the cluster, this node included, as `ID=IP:PORT` (the peer
    /// address). Empty: a single node.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<String>,
    /// The client (Socket.IO) address other members forward this node's sessions'
    /// requests to. Default: the bound `listen` address, an unspecified IP (0.0.0.0)
    /// replaced by this node's peer IP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advertise_address: Option<SocketAddr>,
    /// A file of `ID=IP:PORT` entries (one per line or comma separated, `#` comments),
    /// re-read every `discoveryInterval`: members join and leave by rewriting it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub members_file: Option<std::path::PathBuf>,
    /// Members from DNS (a Kubernetes headless Service), re-resolved every
    /// `discoveryInterval`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dns: Option<DnsConfig>,
    /// Members from the EndpointSlices of a Kubernetes Service (what the operator sets).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<KubernetesConfig>,
    /// Milliseconds between two lookups of `membersFile`, `dns` or `kubernetes` (default
    /// 5000 for DNS, 1000 otherwise). A static `members` list is never looked up again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub discovery_interval: Option<u64>,
    /// Milliseconds a link may stay silent before this node sends a heartbeat on it.
    pub heartbeat_interval: u64,
    /// Milliseconds without anything from a peer after which its link is declared dead and
    /// the peer leaves routing (at least twice `heartbeatInterval`).
    pub heartbeat_timeout: u64,
    /// Milliseconds a starting member stays not ready (`/readyz` 503) while it waits for
    /// its first member lookup and a link to every member, so that no client or management
    /// call reaches it before it can reach the whole cluster. Ready at the latest after
    /// this long, whatever is missing (logged). 0: ready at once.
    pub warm_up_timeout: u64,
    /// Bytes queued for one peer (encoded messages waiting for its link's writer), on top
    /// of the 16,384-message bound. Past it, messages to that peer are dropped and counted
    /// (`roomcast_peer_messages_dropped_total`), like when the message bound is reached.
    pub max_peer_queue_bytes: usize,
    /// Largest batch of messages sent or accepted on a peer link, in bytes. A batch closes
    /// at 1 MiB, so it is at most 1 MiB plus one message, and the largest messages are a
    /// broadcast of one client message (`engine.maxHttpBufferSize`) or a node's answer to
    /// a cluster-wide query (e.g. fetchSockets). At least `engine.maxHttpBufferSize` + 2 MiB.
    pub max_peer_message_bytes: usize,
    /// Connections the peer port holds at once, TLS handshakes included; past it new ones
    /// are closed at once and counted (`roomcast_peer_connections_refused_total`). A member
    /// holds one per peer.
    pub max_peer_connections: usize,
    /// Connections the peer port holds at once from one source address (a member needs one,
    /// two for a moment while its link is replaced).
    pub max_peer_connections_per_ip: usize,
    /// Where the hub keeps which nodes have members in which rooms (docs/architecture.md,
    /// "Rooms"): `replicated`, every node knows every peer's rooms; `owned`, each room's
    /// owner (a rendezvous hash of the room over the members) knows, and senders cache its
    /// answers. Every member of a hub must use the same.
    pub rooms: RoomsMode,
    /// With `rooms: owned`: the rooms a node caches owners' answers for (least recently
    /// used ones are evicted past it). A broadcast to a room not cached goes to every peer
    /// while its owner is asked.
    pub room_cache_size: usize,
    /// With `rooms: owned`: rooms one peer may subscribe to at this node as their owner;
    /// past it the peer's lookups are refused and it sends those rooms' broadcasts to every
    /// node (more copies, never a miss). Bounds what one peer can make an owner hold.
    pub max_room_subscriptions_per_peer: usize,
    /// Mutual TLS on the peer port. Required for a cluster unless `plaintext` is set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<PeerTlsConfig>,
    /// Run the peer port without TLS: anyone who can reach it can join the hub. Only for a
    /// network where nothing else can reach the peer port (tests, one machine).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub plaintext: bool,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            peer_listen: None,
            members: Vec::new(),
            advertise_address: None,
            members_file: None,
            dns: None,
            kubernetes: None,
            discovery_interval: None,
            heartbeat_interval: 1_000,
            heartbeat_timeout: 3_000,
            warm_up_timeout: 10_000,
            max_peer_queue_bytes: 64 * 1024 * 1024,
            max_peer_message_bytes: 64 * 1024 * 1024,
            max_peer_connections: 1024,
            max_peer_connections_per_ip: 8,
            rooms: RoomsMode::default(),
            room_cache_size: 65_536,
            max_room_subscriptions_per_peer: 131_072,
            tls: None,
            plaintext: false,
        }
    }
}

/// Where the hub keeps which nodes have members in which rooms (`cluster.rooms`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RoomsMode {
    /// Every node knows every peer's rooms: memory and announcements per (room, node) pair
    /// on every node.
    Replicated,
    /// Each room's owner knows its member nodes; senders cache owners' answers.
    #[default]
    Owned,
}

/// Member discovery through the EndpointSlices of the peers' headless Service: ready,
/// non-terminating endpoints, each a member named by its pod at its address and the port
/// named `portName` (see `cluster::kube_discovery`; RBAC in docs/operator.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KubernetesConfig {
    /// The Service, e.g. `chat-peers`.
    pub service: String,
    /// Its namespace. Default: this pod's (`ROOMCAST_POD_NAMESPACE`, else the service
    /// account's namespace file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The name of the peer port in the slices.
    #[serde(default = "KubernetesConfig::default_port_name")]
    pub port_name: String,
}

impl KubernetesConfig {
    fn default_port_name() -> String {
        "peer".to_string()
    }
}

/// Member discovery through DNS: an SRV lookup of `name`, whose every target is a member
/// named by the target's first label (`hub-0.hub-peers.default.svc.cluster.local` is
/// `hub-0`) at the target's address and the SRV port.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DnsConfig {
    /// The SRV name, e.g. `_peer._tcp.hub-peers.default.svc.cluster.local`.
    pub name: String,
    /// `IP:PORT` of the DNS server to ask instead of those of `/etc/resolv.conf`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nameserver: Option<SocketAddr>,
}

/// Whether `id` is a DNS name a certificate can carry (RFC 1123: dot-separated labels of
/// lowercase letters, digits and inner hyphens, not all digits), as Kubernetes pod names are.
pub fn is_dns_name(id: &str) -> bool {
    let label = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    };
    id.len() <= 253
        && id.split('.').all(label)
        && !id.bytes().all(|b| b.is_ascii_digit() || b == b'.')
}

/// Where a cluster member learns the member set.
#[derive(Debug, Clone, PartialEq)]
pub enum MemberSource {
    /// `cluster.members`: fixed for the life of the process.
    Static(Members),
    /// `cluster.membersFile`, re-read every interval.
    File(std::path::PathBuf),
    /// `cluster.dns`, re-resolved every interval.
    Dns(DnsConfig),
    /// `cluster.kubernetes`: a watch of EndpointSlices, read every interval.
    Kubernetes(KubernetesConfig),
}

impl ClusterConfig {
    /// Default `discoveryInterval` for a members file.
    pub const FILE_INTERVAL_MS: u64 = 1_000;
    /// Default `discoveryInterval` for DNS.
    pub const DNS_INTERVAL_MS: u64 = 5_000;

    /// No cluster configured: this node serves alone.
    pub fn is_single_node(&self) -> bool {
        self.sources().is_empty()
    }

    /// The member sources set, by field name.
    fn sources(&self) -> Vec<&'static str> {
        let mut sources = Vec::new();
        if !self.members.is_empty() {
            sources.push("cluster.members");
        }
        if self.members_file.is_some() {
            sources.push("cluster.membersFile");
        }
        if self.dns.is_some() {
            sources.push("cluster.dns");
        }
        if self.kubernetes.is_some() {
            sources.push("cluster.kubernetes");
        }
        sources
    }

    /// The member source of a validated configuration; `None` for a single node.
    pub fn source(&self) -> Result<Option<MemberSource>, MembersError> {
        Ok(if !self.members.is_empty() {
            Some(MemberSource::Static(self.members()?))
        } else if let Some(path) = &self.members_file {
            Some(MemberSource::File(path.clone()))
        } else if let Some(dns) = &self.dns {
            Some(MemberSource::Dns(dns.clone()))
        } else {
            self.kubernetes.clone().map(MemberSource::Kubernetes)
        })
    }

    /// How often the member source is looked up again.
    pub fn discovery_interval(&self) -> std::time::Duration {
        let default = if self.dns.is_some() {
            Self::DNS_INTERVAL_MS
        } else {
            Self::FILE_INTERVAL_MS
        };
        std::time::Duration::from_millis(self.discovery_interval.unwrap_or(default))
    }

    /// The member list, parsed.
    pub fn members(&self) -> Result<Members, MembersError> {
        Members::parse(&self.members.join(","))
    }
}

impl ClusterConfig {
    /// Checks the cluster section; `node_id` is this node's, which a static list must name;
    /// `max_http_buffer_size` is the engine's, which a peer batch must fit.
    pub(crate) fn validate(&self, node_id: &str, max_http_buffer_size: usize, bad: &mut Problems) {
        let sources = self.sources();
        if sources.len() > 1 {
            bad.add(
                "cluster",
                &format!(
                    "set only one member source, not {} (use cluster.members, cluster.membersFile, cluster.dns or cluster.kubernetes)",
                    sources.join(" and ")
                ),
            );
        }
        if !self.members.is_empty() {
            match self.members() {
                Err(error) => bad.add("cluster.members", &error.to_string()),
                Ok(members) if members.addr(node_id).is_none() => bad.add(
                    "cluster.members",
                    "must list this node's own nodeId (with its peer address)",
                ),
                Ok(_) => {}
            }
        }
        if self
            .members_file
            .as_ref()
            .is_some_and(|p| p.as_os_str().is_empty())
        {
            bad.add("cluster.membersFile", "must not be empty");
        }
        if let Some(dns) = &self.dns {
            if dns.name.trim().is_empty() || dns.name.chars().any(char::is_whitespace) {
                bad.add(
                    "cluster.dns.name",
                    "must be a DNS name, e.g. _peer._tcp.hub-peers.default.svc.cluster.local",
                );
            }
        }
        if let Some(k) = &self.kubernetes {
            let label = |v: &str| {
                !v.is_empty()
                    && v.len() <= 63
                    && v.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            };
            if !label(&k.service) {
                bad.add(
                    "cluster.kubernetes.service",
                    "must be a Service name (a DNS label)",
                );
            }
            if k.namespace.as_deref().is_some_and(|n| !label(n)) {
                bad.add(
                    "cluster.kubernetes.namespace",
                    "must be a namespace name (a DNS label)",
                );
            }
            if k.port_name.is_empty() {
                bad.add("cluster.kubernetes.portName", "must not be empty");
            }
        }
        if !(1..=16_777_216).contains(&self.room_cache_size) {
            bad.add(
                "cluster.roomCacheSize",
                "must be between 1 and 16777216 rooms",
            );
        }
        if !(1..=16_777_216).contains(&self.max_room_subscriptions_per_peer) {
            bad.add(
                "cluster.maxRoomSubscriptionsPerPeer",
                "must be between 1 and 16777216 rooms",
            );
        }
        if self
            .discovery_interval
            .is_some_and(|ms| !(100..=600_000).contains(&ms))
        {
            bad.add(
                "cluster.discoveryInterval",
                "must be between 100 and 600000 milliseconds",
            );
        }
        if let Some(tls) = &self.tls {
            tls.validate(bad);
            if self.plaintext {
                bad.add(
                    "cluster.plaintext",
                    "set cluster.tls or cluster.plaintext, not both",
                );
            }
        }
        if self.tls.is_some() {
            if !is_dns_name(node_id) {
                bad.add(
                    "nodeId",
                    "must be a DNS name (lowercase letters, digits, '-' and '.') with cluster.tls: a member's certificate names it",
                );
            }
            if let Ok(members) = self.members() {
                if members.iter().any(|(id, _)| !is_dns_name(id)) {
                    bad.add(
                        "cluster.members",
                        "member ids must be DNS names (lowercase letters, digits, '-' and '.') with cluster.tls: a member's certificate names it",
                    );
                }
            }
        }
        let least = max_http_buffer_size.saturating_add(2 * 1024 * 1024);
        if self.max_peer_message_bytes < least || self.max_peer_message_bytes > 1 << 30 {
            bad.add(
                "cluster.maxPeerMessageBytes",
                "must be at least engine.maxHttpBufferSize + 2097152 (a batch of 1 MiB plus one client message) and at most 1073741824",
            );
        }
        if !(1..=65_536).contains(&self.max_peer_connections) {
            bad.add("cluster.maxPeerConnections", "must be between 1 and 65536");
        }
        if !(2..=1024).contains(&self.max_peer_connections_per_ip) {
            bad.add(
                "cluster.maxPeerConnectionsPerIp",
                "must be between 2 and 1024 (a member needs two while its link is replaced)",
            );
        }
        if !self.is_single_node() {
            if self.tls.is_none() && !self.plaintext {
                bad.add(
                    "cluster.tls",
                    "a cluster needs cluster.tls (mutual TLS between members), or cluster.plaintext: true where nothing else can reach the peer port",
                );
            }
            if self.peer_listen.is_none() {
                bad.add(
                    "cluster.peerListen",
                    &format!("needed when {} is set", sources.join(" and ")),
                );
            }
        } else if self.peer_listen.is_some() {
            bad.add(
                "cluster.members",
                "a member source (cluster.members, cluster.membersFile, cluster.dns or cluster.kubernetes) is needed when cluster.peerListen is set",
            );
        }
        if self
            .advertise_address
            .is_some_and(|a| a.ip().is_unspecified() || a.port() == 0)
        {
            bad.add(
                "cluster.advertiseAddress",
                "must be a concrete IP and port that other members can reach",
            );
        }
        if self.heartbeat_interval == 0 || self.heartbeat_interval > 60_000 {
            bad.add(
                "cluster.heartbeatInterval",
                "must be between 1 and 60000 milliseconds",
            );
        }
        if self.heartbeat_timeout < 2 * self.heartbeat_interval || self.heartbeat_timeout > 600_000
        {
            bad.add(
                "cluster.heartbeatTimeout",
                "must be at least twice heartbeatInterval and at most 600000 milliseconds",
            );
        }
        if self.max_peer_queue_bytes < 1024 * 1024 {
            bad.add(
                "cluster.maxPeerQueueBytes",
                "must be at least 1048576 (1 MiB)",
            );
        }
        if self.warm_up_timeout > 600_000 {
            bad.add(
                "cluster.warmUpTimeout",
                "must be at most 600000 milliseconds",
            );
        }
    }
}
