//! The server the integration tests drive: every behaviour a test needs, behind events.
//! See dataplane/tests/js for the clients. Flags are those of `roomcast-dataplane`.

use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use roomcast_dataplane::cli::HubArgs;
use roomcast_dataplane::config::Config;
use roomcast_dataplane::server::Server;
use roomcast_dataplane::socketio::{
    ConnectDecision, ConnectRequest, Event, Handler, Payload, Selector, Socket, SocketError,
};
use serde_json::{json, Value};

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    hub: HubArgs,
}

struct Testkit;

fn strings(value: Option<&Value>) -> Vec<String> {
    value
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn answer(event: Event, value: Value) {
    if let Some(ack) = event.ack {
        ack.send(Payload::new(vec![value]));
    }
}

#[async_trait::async_trait]
impl Handler for Testkit {
    async fn connect(&self, request: ConnectRequest) -> ConnectDecision {
        if request.namespace == "/private" && request.auth.get("token") != Some(&json!("secret")) {
            return ConnectDecision::reject("unauthorized", Some(json!({ "code": 401 })));
        }
        ConnectDecision::accept()
    }

    fn connected(&self, socket: &Arc<Socket>) {
        let welcome = json!({ "id": socket.id(), "nsp": socket.nsp(), "auth": socket.auth() });
        let _ = socket.emit("welcome", &Payload::new(vec![welcome]));
    }

    fn event(&self, socket: &Arc<Socket>, event: Event) {
        let first = event.payload.args.first().cloned().unwrap_or(Value::Null);
        match event.name.as_str() {
            "echo" => {
                let _ = socket.emit("echo", &event.payload);
            }
            "ack" => {
                if let Some(ack) = event.ack {
                    ack.send(event.payload);
                }
            }
            "join" => {
                let ok = first.as_str().map(|room| socket.join(room));
                match ok {
                    Some(Ok(())) => answer(event, json!("ok")),
                    Some(Err(error)) => answer(event, json!({ "error": error.to_string() })),
                    None => answer(event, json!({ "error": "room expected" })),
                }
            }
            "leave" => {
                if let Some(room) = first.as_str() {
                    socket.leave(room);
                }
                answer(event, json!("ok"));
            }
            "rooms" => {
                let rooms = socket.rooms();
                answer(event, json!(rooms));
            }
            "broadcast" => {
                let mut selector = Selector::rooms(strings(first.get("rooms")));
                selector.except = strings(first.get("except"));
                if first.get("includeSelf") != Some(&Value::Bool(true)) {
                    selector.except.push(socket.id().to_string());
                }
                let name = first
                    .get("event")
                    .and_then(Value::as_str)
                    .unwrap_or("broadcast")
                    .to_string();
                let args = first
                    .get("args")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                let volatile = first.get("volatile") == Some(&Value::Bool(true));
                let payload = Payload {
                    args,
                    attachments: event.payload.attachments.clone(),
                };
                let count = socket.broadcast(&selector, &name, &payload, volatile);
                answer(event, json!({ "ok": true, "count": count }));
            }
            "request-ack" => {
                let name = first
                    .get("event")
                    .and_then(Value::as_str)
                    .unwrap_or("request")
                    .to_string();
                let args = first
                    .get("args")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                let timeout = first.get("timeout").and_then(Value::as_u64).unwrap_or(1000);
                let socket = socket.clone();
                // Binary arguments of the request travel on, and binary in the reply comes back.
                let request = Payload {
                    args,
                    attachments: event.payload.attachments.clone(),
                };
                tokio::spawn(async move {
                    let result = socket
                        .emit_with_ack(&name, &request, Duration::from_millis(timeout))
                        .await;
                    let reply = match result {
                        Ok(reply) => Payload {
                            args: vec![json!({ "ok": true, "response": reply.args })],
                            attachments: reply.attachments,
                        },
                        Err(SocketError::AckTimeout) => {
                            Payload::new(vec![json!({ "ok": false, "error": "timeout" })])
                        }
                        Err(error) => {
                            Payload::new(vec![json!({ "ok": false, "error": error.to_string() })])
                        }
                    };
                    if let Some(ack) = event.ack {
                        ack.send(reply);
                    }
                });
            }
            "broadcast-ack" => {
                let selector = Selector::rooms(strings(first.get("rooms")));
                let name = first
                    .get("event")
                    .and_then(Value::as_str)
                    .unwrap_or("request")
                    .to_string();
                let timeout = first.get("timeout").and_then(Value::as_u64).unwrap_or(1000);
                let Some(ns) = socket.namespace() else {
                    return;
                };
                tokio::spawn(async move {
                    let acks = ns
                        .broadcast_with_ack(
                            &selector,
                            &name,
                            &Payload::default(),
                            Duration::from_millis(timeout),
                        )
                        .await;
                    let replies: Vec<Value> = acks
                        .replies
                        .iter()
                        .map(|r| json!({ "id": &*r.socket_id, "args": r.payload.args }))
                        .collect();
                    answer(
                        event,
                        json!({ "expected": acks.expected, "timedOut": acks.timed_out, "replies": replies }),
                    );
                });
            }
            "disconnect-me" => socket.disconnect(false),
            "disconnect-me-close" => socket.disconnect(true),
            "close-me" => socket.close_transport(),
            "flood" => {
                let count = first.get("count").and_then(Value::as_u64).unwrap_or(100);
                let size = first.get("size").and_then(Value::as_u64).unwrap_or(100) as usize;
                let payload = Payload::new(vec![json!("x".repeat(size))]);
                for _ in 0..count {
                    if socket.emit("flood", &payload).is_err() {
                        break;
                    }
                }
            }
            _ => answer(event, json!({ "error": "unknown event" })),
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    cli.hub.init_logging();
    let mut config = Config {
        listen: ([127, 0, 0, 1], 3000).into(),
        ..Config::default()
    };
    config.socketio.namespaces = vec![
        "/".into(),
        "/custom".into(),
        "/dyn-*".into(),
        "/private".into(),
    ];
    let config = cli.hub.resolve(config)?;
    let server = Server::new(config.clone(), Arc::new(Testkit));
    roomcast_dataplane::cli::serve(server, config.listen, &config.engine.path).await
}
