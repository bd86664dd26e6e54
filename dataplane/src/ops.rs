//! Hub-wide operations, as the application drives them (management API, policies).
//!
//! Everything the app can do to sockets goes through [`HubOps`]. [`LocalOps`] runs them on
//! this node; the cluster layer implements the same trait by fanning out to peers, so the
//! management API does not change when a hub grows from one node to many.

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::Config;
use crate::engine::headers::{visible_ascii, Headers};
use crate::socketio::{BroadcastAcks, Hub, Namespace, Payload, Selector, Socket};

/// Errors of hub operations.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpsError {
    #[error("unknown namespace {0:?}")]
    UnknownNamespace(String),
    #[error("invalid request: {0}")]
    Invalid(String),
    /// A socket id of the request belongs to a cluster member this node has no link to.
    #[error("member {0:?} is not reachable")]
    Unavailable(String),
    /// An operation was applied here but cluster member `member` did not confirm it: its
    /// link dropped the request (queue full), went down, or it did not answer in time.
    #[error("member {member:?} did not confirm the operation: {why}")]
    Unconfirmed { member: String, why: String },
}

/// An emit to the sockets a selector picks.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EmitRequest {
    pub selector: Selector,
    pub event: String,
    pub payload: Payload,
    pub volatile: bool,
    /// When set, wait this long for every recipient's ack and return them.
    pub ack_timeout: Option<Duration>,
}

/// What an emit did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EmitOutcome {
    /// Sockets the event was queued for.
    pub recipients: usize,
    /// With acks: each reply, by socket id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acks: Option<Vec<AckView>>,
    /// With acks: true when some recipients did not answer in time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timed_out: Option<bool>,
}

impl From<BroadcastAcks> for EmitOutcome {
    /// The outcome of an emit with acks on one node's sockets.
    fn from(acks: BroadcastAcks) -> Self {
        EmitOutcome {
            recipients: acks.expected,
            acks: Some(
                acks.replies
                    .into_iter()
                    .map(|r| AckView {
                        socket_id: r.socket_id.to_string(),
                        args: r.payload.args,
                        attachments: r.payload.attachments,
                    })
                    .collect(),
            ),
            timed_out: Some(acks.timed_out),
        }
    }
}

/// One ack reply. Binary values in `args` are `{"_placeholder":true,"num":N}` objects that
/// refer to `attachments` (the wire convention of [`Payload`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AckView {
    pub socket_id: String,
    pub args: Vec<Value>,
    /// Binary attachments (base64 when serialized).
    #[serde(default, skip_serializing_if = "Vec::is_empty", with = "base64_list")]
    pub attachments: Vec<bytes::Bytes>,
}

/// Serde of a list of byte strings as base64 strings.
mod base64_list {
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(list: &[bytes::Bytes], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(list.iter().map(|b| STANDARD.encode(b)))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<bytes::Bytes>, D::Error> {
        Vec::<String>::deserialize(d)?
            .into_iter()
            .map(|s| {
                STANDARD
                    .decode(s)
                    .map(bytes::Bytes::from)
                    .map_err(serde::de::Error::custom)
            })
            .collect()
    }
}

/// What `fetchSockets` returns for one socket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SocketInfo {
    pub id: String,
    pub namespace: String,
    pub rooms: Vec<String>,
    pub handshake: HandshakeView,
    /// Verified claims of the client's token, when client auth is on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub claims: Option<Value>,
    pub data: Value,
}

/// The handshake of a socket, in the shape of Node's `socket.handshake`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HandshakeView {
    pub address: String,
    /// Milliseconds since the Unix epoch.
    pub issued: u64,
    pub url: String,
    pub query: String,
    pub headers: serde_json::Map<String, Value>,
    pub auth: Value,
}

/// A room and how many sockets are in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RoomInfo {
    pub name: String,
    pub members: usize,
}

/// Counters of a hub.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HubStats {
    /// This node and the peers whose link to it is up (in routing).
    pub nodes: usize,
    /// The cluster's members as this node sees them (its ring, itself included), sorted;
    /// left out on a single node. Changes as members join and leave.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub members: Option<Vec<String>>,
    pub connections: usize,
    pub namespaces: Vec<NamespaceStats>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NamespaceStats {
    pub name: String,
    /// Connected sockets.
    pub sockets: usize,
    pub rooms: usize,
    /// Disconnected sockets kept for connection state recovery (not in `sockets`).
    #[serde(default)]
    pub parked: usize,
}

/// The operations an application can run on a hub.
#[async_trait::async_trait]
pub trait HubOps: Send + Sync {
    async fn emit(&self, nsp: &str, request: EmitRequest) -> Result<EmitOutcome, OpsError>;
    async fn sockets_join(
        &self,
        nsp: &str,
        selector: &Selector,
        rooms: &[String],
    ) -> Result<usize, OpsError>;
    async fn sockets_leave(
        &self,
        nsp: &str,
        selector: &Selector,
        rooms: &[String],
    ) -> Result<usize, OpsError>;
    async fn disconnect_sockets(
        &self,
        nsp: &str,
        selector: &Selector,
        close: bool,
    ) -> Result<usize, OpsError>;
    async fn fetch_sockets(
        &self,
        nsp: &str,
        selector: &Selector,
    ) -> Result<Vec<SocketInfo>, OpsError>;
    async fn rooms(&self, nsp: &str) -> Result<Vec<RoomInfo>, OpsError>;
    async fn stats(&self) -> Result<HubStats, OpsError>;
}

/// [`HubOps`] on this node's sockets. (On a cluster member, the hub's fan-out still carries
/// its emits to the other nodes; [`crate::cluster::ClusterOps`] wraps it there.)
#[derive(Clone)]
pub struct LocalOps {
    hub: Hub,
    connections: Arc<dyn Fn() -> usize + Send + Sync>,
}

impl LocalOps {
    /// `connections` counts this node's engine sessions.
    pub fn new(hub: Hub, connections: Arc<dyn Fn() -> usize + Send + Sync>) -> Self {
        Self { hub, connections }
    }

    /// The live namespace; `None` for one the configuration allows that no client has
    /// opened yet (it has no sockets and no rooms); an error for one it does not allow.
    fn namespace(&self, nsp: &str) -> Result<Option<Arc<Namespace>>, OpsError> {
        match self.hub.of(nsp) {
            Some(ns) => Ok(Some(ns)),
            None if self.hub.inner.namespace_allowed(nsp) => Ok(None),
            None => Err(OpsError::UnknownNamespace(nsp.to_string())),
        }
    }
}

/// Refuses emits no node may send: no event name, or a reserved one.
pub fn validate_emit(request: &EmitRequest) -> Result<(), OpsError> {
    if request.event.is_empty() {
        return Err(OpsError::Invalid("event name must not be empty".into()));
    }
    if crate::socketio::packet::RESERVED_EVENTS.contains(&request.event.as_str()) {
        return Err(OpsError::Invalid(format!(
            "{:?} is a reserved event name",
            request.event
        )));
    }
    Ok(())
}

/// What reports of a socket (`fetchSockets`, webhooks, peers' answers) leave out of its
/// handshake: each of [`crate::config::SECRETS`] not listed in `socketio.showSecrets` has
/// its value replaced by `[redacted]`, so the app sees that it was there, not what it was.
#[derive(Debug, Clone, Copy)]
pub struct Redaction<'a> {
    show: &'a [String],
}

/// What a redacted value is replaced with.
pub const REDACTED: &str = "[redacted]";

impl<'a> Redaction<'a> {
    pub fn new(config: &'a Config) -> Self {
        Self::showing(&config.socketio.show_secrets)
    }

    /// Redacts every secret but those in `show` (`socketio.showSecrets`).
    pub fn showing(show: &'a [String]) -> Self {
        Self { show }
    }

    fn hides(&self, secret: &str) -> bool {
        crate::config::SECRETS.contains(&secret) && !self.show.iter().any(|s| s == secret)
    }

    /// Handshake headers as JSON (name to value; values that are not visible ASCII are
    /// left out).
    pub fn headers(&self, headers: &Headers) -> serde_json::Map<String, Value> {
        headers
            .iter()
            .filter_map(|(k, v)| {
                let value = if self.hides(k) {
                    REDACTED
                } else {
                    visible_ascii(v)?
                };
                Some((k.to_string(), Value::String(value.to_string())))
            })
            .collect()
    }

    /// A query string with the values of secret parameters replaced.
    pub fn query(&self, query: &str) -> String {
        if !self.hides("access_token") {
            return query.to_string();
        }
        query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some(("access_token", _)) => format!("access_token={REDACTED}"),
                _ => pair.to_string(),
            })
            .collect::<Vec<_>>()
            .join("&")
    }

    /// A request URL (path and query) with its query redacted.
    pub fn url(&self, url: &str) -> String {
        match url.split_once('?') {
            Some((path, query)) => format!("{path}?{}", self.query(query)),
            None => url.to_string(),
        }
    }

    /// The client's `auth` object with its `token` replaced.
    pub fn auth(&self, auth: &Value) -> Value {
        let mut auth = auth.clone();
        if self.hides("auth.token") {
            if let Some(token) = auth.get_mut("token") {
                *token = Value::String(REDACTED.to_string());
            }
        }
        auth
    }
}

/// A socket as `fetchSockets` reports it, its secrets redacted.
pub fn socket_info(socket: &Socket, redaction: Redaction<'_>) -> SocketInfo {
    let hs = socket.handshake();
    SocketInfo {
        id: socket.id().to_string(),
        namespace: socket.nsp().to_string(),
        rooms: socket.rooms(),
        handshake: HandshakeView {
            address: hs.address.ip().to_string(),
            issued: hs
                .time
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
            url: redaction.url(&hs.url),
            query: redaction.query(hs.query()),
            headers: redaction.headers(&hs.headers),
            auth: redaction.auth(socket.auth()),
        },
        claims: socket.claims().cloned(),
        data: socket.data(),
    }
}

#[async_trait::async_trait]
impl HubOps for LocalOps {
    async fn emit(&self, nsp: &str, request: EmitRequest) -> Result<EmitOutcome, OpsError> {
        validate_emit(&request)?;
        let ns = self.namespace(nsp)?;
        let Some(timeout) = request.ack_timeout else {
            // Through the hub: in a cluster the event also goes to the other nodes, even when
            // no client opened `nsp` on this one.
            let recipients = self.hub.broadcast(
                nsp,
                &request.selector,
                &request.event,
                &request.payload,
                request.volatile,
            );
            return Ok(EmitOutcome {
                recipients,
                acks: None,
                timed_out: None,
            });
        };
        let Some(ns) = ns else {
            return Ok(EmitOutcome {
                recipients: 0,
                acks: Some(Vec::new()),
                timed_out: Some(false),
            });
        };
        let acks = ns
            .broadcast_with_ack(&request.selector, &request.event, &request.payload, timeout)
            .await;
        Ok(acks.into())
    }

    async fn sockets_join(
        &self,
        nsp: &str,
        selector: &Selector,
        rooms: &[String],
    ) -> Result<usize, OpsError> {
        Ok(self
            .namespace(nsp)?
            .map_or(0, |ns| ns.sockets_join(selector, rooms)))
    }

    async fn sockets_leave(
        &self,
        nsp: &str,
        selector: &Selector,
        rooms: &[String],
    ) -> Result<usize, OpsError> {
        Ok(self
            .namespace(nsp)?
            .map_or(0, |ns| ns.sockets_leave(selector, rooms)))
    }

    async fn disconnect_sockets(
        &self,
        nsp: &str,
        selector: &Selector,
        close: bool,
    ) -> Result<usize, OpsError> {
        Ok(self
            .namespace(nsp)?
            .map_or(0, |ns| ns.disconnect_sockets(selector, close)))
    }

    async fn fetch_sockets(
        &self,
        nsp: &str,
        selector: &Selector,
    ) -> Result<Vec<SocketInfo>, OpsError> {
        let Some(ns) = self.namespace(nsp)? else {
            return Ok(Vec::new());
        };
        let redaction = Redaction::new(self.hub.config());
        Ok(ns
            .sockets(selector)
            .iter()
            .map(|s| socket_info(s, redaction))
            .collect())
    }

    async fn rooms(&self, nsp: &str) -> Result<Vec<RoomInfo>, OpsError> {
        let Some(ns) = self.namespace(nsp)? else {
            return Ok(Vec::new());
        };
        Ok(ns
            .rooms()
            .into_iter()
            .map(|(name, members)| RoomInfo { name, members })
            .collect())
    }

    async fn stats(&self) -> Result<HubStats, OpsError> {
        Ok(HubStats {
            nodes: 1,
            members: None,
            connections: (self.connections)(),
            namespaces: self
                .hub
                .namespaces()
                .iter()
                .map(|ns| NamespaceStats {
                    name: ns.name().to_string(),
                    sockets: ns.socket_count(),
                    rooms: ns.rooms().len(),
                    parked: ns.parked_count(),
                })
                .collect(),
        })
    }
}
