//! `appLink`: application instances that run a real socket.io Server through the Node SDK
//! (`@roomcast/socket.io`) and serve this hub's clients over app links (docs/app-sdk.md).

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::Problems;

/// The app link listener. Off unless `listen` is set; then every client session is handed
/// to a linked application instance (the hub's own namespaces, webhooks and relay are not
/// used), and a token is required.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct AppLinkConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    /// The address peers and app instances are told to reach this node's listener at,
    /// when `listen` is a wildcard address (the pod IP in Kubernetes). Left out: the
    /// listener's own address, or the client address's IP with the listener's port.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advertise_address: Option<SocketAddr>,
    /// Bearer token app instances present; prefer `tokenFile`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_file: Option<std::path::PathBuf>,
    /// Largest batch of messages an app instance may send at once (bytes, encoded); a
    /// larger one ends its link.
    pub max_batch_bytes: usize,
    /// Bytes this node may have queued for one app link; past it the app is too slow, the
    /// link is ended and its sessions closed (their clients reconnect to other instances).
    pub max_queued_bytes: usize,
    /// Bytes of one client's packets that may wait on its app's link; past it that client is
    /// disconnected (one client must not fill the link that serves every other client of the
    /// app). A single packet of any allowed size always goes through an empty queue.
    pub max_queued_bytes_per_session: usize,
    /// Sessions one app link may hold; past it new sessions go to other links, or are
    /// refused (503) when every link is full.
    pub max_sessions_per_link: usize,
    /// Requests (joins with a reply, broadcasts with acks) one link may have in flight.
    pub max_pending_requests: usize,
    /// Milliseconds between HTTP/2 pings of a link, and given to each answer: a link whose
    /// instance does not answer (vanished, frozen) ends after about twice this.
    pub keepalive_interval: u64,
    /// Serve app links without TLS. Without it the listener serves TLS with the node's peer
    /// certificate (`cluster.tls`), which apps check against the hub's trust bundle; a node
    /// without `cluster.tls` must say `plaintext: true` (only where nothing untrusted can
    /// reach the port: the token would cross the network in the clear).
    pub plaintext: bool,
    /// Connections the listener holds at once (TLS handshakes included); more are closed
    /// at once. An instance needs one per node.
    pub max_connections: usize,
    /// The same, per source address.
    pub max_connections_per_ip: usize,
}

impl Default for AppLinkConfig {
    fn default() -> Self {
        Self {
            listen: None,
            advertise_address: None,
            token: None,
            token_file: None,
            max_batch_bytes: 4 * 1024 * 1024,
            max_queued_bytes: 64 * 1024 * 1024,
            max_queued_bytes_per_session: 1024 * 1024,
            max_sessions_per_link: 100_000,
            max_pending_requests: 10_000,
            keepalive_interval: 10_000,
            plaintext: false,
            max_connections: 1024,
            max_connections_per_ip: 256,
        }
    }
}

impl AppLinkConfig {
    pub(crate) fn is_off(&self) -> bool {
        *self == Self::default()
    }

    /// Whether client sessions go to application instances.
    pub fn enabled(&self) -> bool {
        self.listen.is_some()
    }

    pub(crate) fn validate(&self, bad: &mut Problems) {
        if self.listen.is_some() && self.token.is_none() && self.token_file.is_none() {
            bad.add(
                "appLink",
                "listen is set but no token or tokenFile: anyone could serve this hub's clients",
            );
        }
        if self.token.is_some() && self.token_file.is_some() {
            bad.add("appLink", "set token or tokenFile, not both");
        }
        if self.token.as_ref().is_some_and(|t| t.len() < 16) {
            bad.add("appLink.token", "must be at least 16 characters");
        }
        if self.max_batch_bytes < 1024 || self.max_batch_bytes > 64 * 1024 * 1024 {
            bad.add("appLink.maxBatchBytes", "must be between 1024 and 67108864");
        }
        if self.max_queued_bytes < self.max_batch_bytes {
            bad.add("appLink.maxQueuedBytes", "must be at least maxBatchBytes");
        }
        if self.max_queued_bytes_per_session == 0
            || self.max_queued_bytes_per_session > self.max_queued_bytes
        {
            bad.add(
                "appLink.maxQueuedBytesPerSession",
                "must be between 1 and maxQueuedBytes",
            );
        }
        if self.max_sessions_per_link == 0 {
            bad.add("appLink.maxSessionsPerLink", "must be at least 1");
        }
        bad.millis("appLink.keepaliveInterval", self.keepalive_interval);
        if self.max_pending_requests == 0 {
            bad.add("appLink.maxPendingRequests", "must be at least 1");
        }
        if self.max_connections == 0 {
            bad.add("appLink.maxConnections", "must be at least 1");
        }
        if self.max_connections_per_ip == 0 || self.max_connections_per_ip > self.max_connections {
            bad.add(
                "appLink.maxConnectionsPerIp",
                "must be between 1 and maxConnections",
            );
        }
    }
}
