//! The application handler of a hub node, driven by configuration: per namespace, client
//! room policies (`roomcast:*` events), an event allow-list, the upstream webhook and the
//! development relay.

use std::sync::Arc;
use std::time::SystemTime;

use serde_json::{json, Value};

use crate::app::policy::{reserved_room, Policy};
use crate::app::relay::Relay;
use crate::app::upstream::cloudevent::{self, CloudEvent, ConnectAnswer};
use crate::app::upstream::queue::{json_len, ByteBudget, SocketQueue};
use crate::app::upstream::{UpstreamStats, Webhook};
use crate::config::{Config, NamespaceConfig};
use crate::ops::Redaction;
use crate::socketio::namespace_matches;
use crate::socketio::{
    AckResponder, ConnectDecision, ConnectRequest, DisconnectReason, Event, Handler, Payload,
    Selector, Socket,
};

/// Reserved events of client room policies.
pub const JOIN_EVENT: &str = "roomcast:join";
pub const LEAVE_EVENT: &str = "roomcast:leave";
pub const EMIT_EVENT: &str = "roomcast:emit";

struct NamespaceRuntime {
    config: NamespaceConfig,
    webhook: Option<Arc<Webhook>>,
}

pub struct HubApp {
    node_id: String,
    namespaces: Vec<NamespaceRuntime>,
    pub stats: Arc<UpstreamStats>,
    /// `socketio.showSecrets`: what webhooks may see of handshake secrets.
    show_secrets: Vec<String>,
    /// `limits.maxUpstreamQueueBytes`: webhook bodies queued or in flight on this node.
    queue_budget: Arc<ByteBudget>,
}

fn ack(responder: Option<AckResponder>, args: Vec<Value>) {
    if let Some(responder) = responder {
        responder.send(Payload::new(args));
    }
}

fn refuse(responder: Option<AckResponder>, reason: &str, message: &str) {
    ack(
        responder,
        vec![json!({ "ok": false, "error": reason, "message": message })],
    );
}

impl HubApp {
    /// Sends a socket's `disconnect` or `reconnect` CloudEvent (when the upstream wants
    /// `wants`): who the socket is, where it is, and one field of the event's own. Counted in
    /// the queue budget, never refused: the app must hear of it.
    fn lifecycle_event(
        &self,
        socket: &Arc<Socket>,
        wants: &str,
        kind: &'static str,
        (key, value): (&str, Value),
    ) {
        let Some(webhook) = self.runtime(socket.nsp()).and_then(|rt| rt.webhook.clone()) else {
            return;
        };
        if !webhook.wants(wants) {
            return;
        }
        let Some(queue) = socket.extension::<SocketQueue>() else {
            return;
        };
        let mut body = json!({
            "socketId": socket.id(),
            "namespace": socket.nsp(),
            "rooms": socket.rooms(),
            "claims": socket.claims(),
            "data": socket.data(),
        });
        body[key] = value;
        let ce = self.cloud_event(kind, socket.id(), socket.nsp(), None, body);
        let reserved = self.queue_budget.reserve(json_len(&ce.body), true);
        queue.push(
            async move {
                let _reserved = reserved;
                let _ = webhook.send_with_retries(&ce).await;
            },
            true,
        );
    }
    pub fn new(config: &Config) -> anyhow::Result<Self> {
        let stats = Arc::new(UpstreamStats::default());
        let permits = Arc::new(tokio::sync::Semaphore::new(
            config.limits.max_upstream_concurrency,
        ));
        let client = reqwest::Client::builder()
            .user_agent(concat!("roomcast/", env!("CARGO_PKG_VERSION")))
            .pool_max_idle_per_host(64)
            .build()?;
        let namespaces = config
            .socketio
            .namespaces
            .iter()
            .map(|ns| {
                let webhook = match &ns.upstream {
                    Some(up) => Some(Arc::new(Webhook::new(
                        up.clone(),
                        client.clone(),
                        permits.clone(),
                        stats.clone(),
                        config.limits.max_upstream_answer_bytes,
                    )?)),
                    None => None,
                };
                Ok(NamespaceRuntime {
                    config: ns.clone(),
                    webhook,
                })
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Self {
            node_id: config.node_id.clone(),
            namespaces,
            stats,
            show_secrets: config.socketio.show_secrets.clone(),
            queue_budget: ByteBudget::new(config.limits.max_upstream_queue_bytes),
        })
    }

    /// The settings of a namespace: the first configured entry whose name or pattern matches.
    fn runtime(&self, nsp: &str) -> Option<&NamespaceRuntime> {
        self.namespaces
            .iter()
            .find(|ns| namespace_matches(&ns.config.name, nsp))
    }

    fn cloud_event(
        &self,
        kind: &'static str,
        socket_id: &str,
        nsp: &str,
        event: Option<String>,
        body: Value,
    ) -> CloudEvent {
        CloudEvent {
            id: crate::engine::sid::random_id(),
            kind,
            source: format!("roomcast://{}{}", self.node_id, nsp),
            subject: socket_id.to_string(),
            time: cloudevent::rfc3339(SystemTime::now()),
            namespace: nsp.to_string(),
            event,
            body,
        }
    }

    fn policy_event(&self, rt: &NamespaceRuntime, socket: &Arc<Socket>, event: Event) {
        let Some(config) = &rt.config.policies else {
            return refuse(
                event.ack,
                "policies_disabled",
                "client room policies are off in this namespace",
            );
        };
        let policy = Policy {
            config,
            claims: socket.claims(),
        };
        let first = event.payload.args.first().cloned().unwrap_or(Value::Null);
        match event.name.as_str() {
            JOIN_EVENT | LEAVE_EVENT => {
                let Some(room) = first.as_str() else {
                    return refuse(event.ack, "bad_request", "expected a room name");
                };
                if event.name == JOIN_EVENT && reserved_room(room) {
                    return refuse(
                        event.ack,
                        "reserved",
                        "a room named like a socket id may not be joined by clients",
                    );
                }
                if !policy.may_join(room) {
                    return refuse(
                        event.ack,
                        "forbidden",
                        "this room may not be joined by clients",
                    );
                }
                if event.name == JOIN_EVENT {
                    if let Err(error) = socket.join(room) {
                        return refuse(event.ack, "limit", &error.to_string());
                    }
                    let responder = event.ack;
                    socket
                        .when_rooms_propagated(move || ack(responder, vec![json!({ "ok": true })]));
                    return;
                }
                socket.leave(room);
                ack(event.ack, vec![json!({ "ok": true })]);
            }
            _ => {
                // roomcast:emit {room | rooms, event, args}
                let rooms: Vec<String> = match (first.get("room"), first.get("rooms")) {
                    (Some(Value::String(room)), _) => vec![room.clone()],
                    (_, Some(Value::Array(rooms))) => rooms
                        .iter()
                        .filter_map(|r| r.as_str().map(str::to_string))
                        .collect(),
                    _ => Vec::new(),
                };
                let name = first
                    .get("event")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                if rooms.is_empty() || name.is_empty() {
                    return refuse(
                        event.ack,
                        "bad_request",
                        "expected {room or rooms, event, args}",
                    );
                }
                if crate::socketio::packet::RESERVED_EVENTS.contains(&name) {
                    return refuse(event.ack, "bad_request", "reserved event name");
                }
                let joined = socket.rooms();
                if let Some(room) = rooms
                    .iter()
                    .find(|r| !policy.may_emit(r, joined.contains(r)))
                {
                    return refuse(
                        event.ack,
                        "forbidden",
                        &format!("emitting to room {room:?} is not allowed"),
                    );
                }
                let args = first
                    .get("args")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                let payload = Payload {
                    args,
                    attachments: event.payload.attachments.clone(),
                };
                let selector = Selector::rooms(rooms).except([socket.id()]);
                let recipients = socket.broadcast(&selector, name, &payload, false);
                ack(
                    event.ack,
                    vec![json!({ "ok": true, "recipients": recipients })],
                );
            }
        }
    }

    fn forward_event(&self, webhook: &Arc<Webhook>, socket: &Arc<Socket>, event: Event) {
        let Some(queue) = socket.extension::<SocketQueue>() else {
            return refuse(event.ack, "internal", "socket state unavailable");
        };
        let nsp = socket.nsp().to_string();
        let body = json!({
            "socketId": socket.id(),
            "namespace": &nsp,
            "event": &event.name,
            "args": event.payload.to_json_base64(),
            "ackRequested": event.ack.is_some(),
            "claims": socket.claims(),
            "data": socket.data(),
        });
        let ce = self.cloud_event(
            cloudevent::TYPE_EVENT,
            socket.id(),
            &nsp,
            Some(event.name.clone()),
            body,
        );
        let Some(reserved) = self.queue_budget.reserve(json_len(&ce.body), false) else {
            tracing::warn!(
                socket = socket.id(),
                queued_bytes = self.queue_budget.used(),
                "webhook byte budget (limits.maxUpstreamQueueBytes) full: event refused"
            );
            return ack(
                event.ack,
                cloudevent::error_ack(
                    "upstream_backlog",
                    "too many bytes waiting for the application",
                ),
            );
        };
        let webhook = webhook.clone();
        let responder = Arc::new(parking_lot::Mutex::new(event.ack));
        let job_responder = responder.clone();
        let accepted = queue.push(
            async move {
                // Held until the webhook call ends.
                let _reserved = reserved;
                let responder = job_responder.lock().take();
                match webhook.send(&ce).await {
                    Ok(body) => match cloudevent::parse_ack_answer(&body) {
                        Ok(args) => {
                            let payload = Payload::from_json_base64(args).unwrap_or_else(|message| {
                                Payload::new(cloudevent::error_ack("upstream_bad_answer", &message))
                            });
                            if let Some(r) = responder {
                                r.send(payload);
                            }
                        }
                        Err(message) => {
                            tracing::warn!(url = %webhook.config.url, %message, "webhook answer unreadable");
                            ack(responder, cloudevent::error_ack("upstream_bad_answer", &message));
                        }
                    },
                    Err(error) => ack(responder, cloudevent::error_ack(error.reason(), &error.to_string())),
                }
            },
            false,
        );
        if !accepted {
            tracing::warn!(socket = socket.id(), "webhook backlog full: event refused");
            let responder = responder.lock().take();
            ack(
                responder,
                cloudevent::error_ack(
                    "upstream_backlog",
                    "too many events waiting for the application",
                ),
            );
        }
    }
}

#[async_trait::async_trait]
impl Handler for HubApp {
    async fn connect(&self, request: ConnectRequest) -> ConnectDecision {
        let Some(webhook) = self
            .runtime(&request.namespace)
            .and_then(|rt| rt.webhook.clone())
        else {
            return ConnectDecision::accept();
        };
        if !webhook.wants("connect") {
            return ConnectDecision::accept();
        }
        let hs = &request.handshake;
        let redaction = Redaction::showing(&self.show_secrets);
        let body = json!({
            "namespace": &request.namespace,
            "auth": redaction.auth(&request.auth),
            "claims": &request.claims,
            "handshake": {
                "address": hs.address.ip().to_string(),
                "url": redaction.url(&hs.url),
                "query": redaction.query(hs.query()),
                "headers": redaction.headers(&hs.headers),
            },
        });
        // The socket id is not assigned yet: the subject is the engine-independent "pending".
        let ce = self.cloud_event(
            cloudevent::TYPE_CONNECT,
            "pending",
            &request.namespace,
            None,
            body,
        );
        match webhook.send(&ce).await {
            Ok(body) => match cloudevent::parse_connect_answer(&body) {
                Ok(ConnectAnswer::Accept { data, rooms }) => {
                    ConnectDecision::Accept { data, rooms }
                }
                Ok(ConnectAnswer::Reject { message, data }) => {
                    ConnectDecision::Reject { message, data }
                }
                Err(message) => {
                    tracing::warn!(url = %webhook.config.url, %message, "connect answer unreadable");
                    ConnectDecision::reject(
                        "upstream error",
                        Some(json!({ "reason": "upstream_bad_answer" })),
                    )
                }
            },
            Err(error) => ConnectDecision::reject(
                "upstream unavailable",
                Some(json!({ "reason": error.reason(), "detail": error.to_string() })),
            ),
        }
    }

    fn event(&self, socket: &Arc<Socket>, event: Event) {
        let Some(rt) = self.runtime(socket.nsp()) else {
            return refuse(event.ack, "no_namespace_config", "namespace not configured");
        };
        if matches!(event.name.as_str(), JOIN_EVENT | LEAVE_EVENT | EMIT_EVENT) {
            return self.policy_event(rt, socket, event);
        }
        let allowed = rt.config.allowed_events.is_empty()
            || rt
                .config
                .allowed_events
                .iter()
                .any(|p| namespace_matches(p, &event.name));
        if !allowed {
            tracing::debug!(socket = socket.id(), event = %event.name, "event not in allow-list");
            return refuse(
                event.ack,
                "event_not_allowed",
                "this event is not accepted in this namespace",
            );
        }
        match &rt.webhook {
            Some(webhook) if webhook.wants("event") => self.forward_event(webhook, socket, event),
            _ if rt.config.relay => Relay.event(socket, event),
            _ => refuse(
                event.ack,
                "no_upstream",
                "no application handles this namespace",
            ),
        }
    }

    fn disconnected(&self, socket: &Arc<Socket>, reason: DisconnectReason) {
        self.lifecycle_event(
            socket,
            "disconnect",
            cloudevent::TYPE_DISCONNECT,
            ("reason", json!(reason.as_str())),
        );
    }

    fn recovered(&self, socket: &Arc<Socket>, missed: usize) {
        self.lifecycle_event(
            socket,
            "reconnect",
            cloudevent::TYPE_RECONNECT,
            ("missedPackets", json!(missed)),
        );
    }
}
