//! `limits` and `shutdown`: explicit resource limits, and what SIGTERM does.

use serde::{Deserialize, Serialize};

use crate::Problems;

/// The graceful drain on SIGTERM (or Ctrl-C), in milliseconds from the signal:
///
/// 1. `/readyz` answers 503 at once, so load balancers and Kubernetes endpoints stop sending
///    new clients; for `drainDelay` the node otherwise serves as usual (the endpoint change
///    takes a moment to reach every load balancer).
/// 2. Then new handshakes get 503 and every client session is closed with an Engine.IO
///    close, so stock clients reconnect at once, through the load balancer, to other nodes.
/// 3. The node exits once its sessions are gone, or at `gracePeriod` at the latest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct ShutdownConfig {
    pub drain_delay: u64,
    pub grace_period: u64,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        // 0 ms suits a local node; the operator sets a few seconds for Kubernetes, where
        // endpoint removal propagates asynchronously. 25 s fits in the default 30 s
        // terminationGracePeriodSeconds.
        Self {
            drain_delay: 0,
            grace_period: 25_000,
        }
    }
}

/// Explicit resource limits. Every one is enforced with a clear error, never a panic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Open Engine.IO sessions per process; handshakes beyond it get HTTP 503.
    pub max_connections: usize,
    /// Namespaces one engine session may join at once.
    pub max_namespaces_per_session: usize,
    /// Frames queued for one connection; past it volatile frames are dropped, and a
    /// connection still over the limit is disconnected as a slow consumer.
    pub max_outbound_frames: usize,
    /// Bytes queued for one connection; same policy as `maxOutboundFrames`.
    pub max_outbound_bytes: usize,
    /// Server-to-client acknowledgements awaited per socket.
    pub max_pending_acks: usize,
    /// Binary attachments accepted in one packet.
    pub max_attachments: usize,
    /// Rooms one socket may be in.
    pub max_rooms_per_socket: usize,
    /// Webhook requests in flight at once on this node.
    pub max_upstream_concurrency: usize,
    /// Bytes of a namespace name (longer: CONNECT_ERROR `Invalid namespace`).
    pub max_namespace_name_bytes: usize,
    /// Namespaces created on this node by clients connecting to a `*` pattern, alive at
    /// once. Past it, connects to new dynamic namespaces get CONNECT_ERROR
    /// `Too many namespaces`; empty dynamic namespaces are removed to make room.
    pub max_dynamic_namespaces: usize,
    /// Bytes of a room name (longer: the join is refused).
    pub max_room_name_bytes: usize,
    /// Bytes of the `auth` object a client sends with CONNECT (larger: CONNECT_ERROR
    /// `Auth payload too large`).
    pub max_auth_bytes: usize,
    /// Bytes of request headers (names and values) kept with a session for
    /// `fetchSockets` and webhooks (larger: the handshake gets HTTP 431).
    pub max_handshake_header_bytes: usize,
    /// Bytes of webhook bodies queued or in flight on this node (summed over every
    /// socket's queue). Past it, new events get the error ack `upstream_backlog`, as when
    /// a socket's queue holds 64 events; `disconnect` events are always queued, and an
    /// event is never refused while nothing else is queued (so any accepted message can
    /// reach the app).
    pub max_upstream_queue_bytes: usize,
    /// Bytes of one webhook answer body. A larger answer is a webhook failure (logged,
    /// counted): the client gets the error ack `upstream_error` (a connect is refused).
    pub max_upstream_answer_bytes: usize,
    /// Open Engine.IO sessions per client IP address (the TCP peer's); handshakes beyond it
    /// get HTTP 429. 0: no limit.
    pub max_connections_per_ip: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_connections: 100_000,
            max_namespaces_per_session: 16,
            max_outbound_frames: 1_024,
            max_outbound_bytes: 4 * 1024 * 1024,
            max_pending_acks: 256,
            max_attachments: 16,
            max_rooms_per_socket: 1_024,
            max_upstream_concurrency: 256,
            max_namespace_name_bytes: 256,
            max_dynamic_namespaces: 1_024,
            max_room_name_bytes: 256,
            max_auth_bytes: 8 * 1024,
            max_handshake_header_bytes: 16 * 1024,
            max_upstream_queue_bytes: 256 * 1024 * 1024,
            max_upstream_answer_bytes: 1024 * 1024,
            max_connections_per_ip: 0,
        }
    }
}

impl ShutdownConfig {
    pub(crate) fn validate(&self, bad: &mut Problems) {
        if self.grace_period == 0 || self.grace_period > 3_600_000 {
            bad.add(
                "shutdown.gracePeriod",
                "must be between 1 and 3600000 milliseconds",
            );
        }
        if self.drain_delay >= self.grace_period {
            bad.add(
                "shutdown.drainDelay",
                "must be shorter than shutdown.gracePeriod",
            );
        }
    }
}

impl LimitsConfig {
    /// Checks the limits; `max_http_buffer_size` is the engine's, which every queue must fit.
    pub(crate) fn validate(&self, max_http_buffer_size: usize, bad: &mut Problems) {
        for (field, value) in [
            ("limits.maxConnections", self.max_connections),
            (
                "limits.maxNamespacesPerSession",
                self.max_namespaces_per_session,
            ),
            ("limits.maxOutboundFrames", self.max_outbound_frames),
            ("limits.maxOutboundBytes", self.max_outbound_bytes),
            ("limits.maxPendingAcks", self.max_pending_acks),
            ("limits.maxRoomsPerSocket", self.max_rooms_per_socket),
            (
                "limits.maxUpstreamConcurrency",
                self.max_upstream_concurrency,
            ),
            (
                "limits.maxUpstreamQueueBytes",
                self.max_upstream_queue_bytes,
            ),
            (
                "limits.maxUpstreamAnswerBytes",
                self.max_upstream_answer_bytes,
            ),
        ] {
            if value == 0 {
                bad.add(field, "must be at least 1");
            }
        }
        if self.max_outbound_bytes < max_http_buffer_size {
            bad.add(
                "limits.maxOutboundBytes",
                "must be at least engine.maxHttpBufferSize so any accepted message can be sent on",
            );
        }
        if self.max_handshake_header_bytes == 0 {
            bad.add(
                "limits.maxHandshakeHeaderBytes",
                "must be at least 1 (0 would refuse every handshake)",
            );
        }
    }
}
