//! What an application instance sends on its link, handled in order on the link's task.
//!
//! The app is authenticated but still checked: socket ids must name this node and be
//! unique, namespaces and rooms obey the hub's limits, broadcasts must be Socket.IO EVENT
//! packets of the namespace they claim, and a message about a session or socket that is
//! not this link's is ignored (or answered with an error when it asked for a reply).

use std::sync::Arc;
use std::time::Duration;

use super::link::Link;
use super::links::AppLinks;
use super::proto::{self as pb, app_message::Kind, hub_message};
use crate::ops::EmitRequest;
use crate::socketio::external::Attach;
use crate::socketio::packet::{Packet, PacketKind};
use crate::socketio::{DisconnectReason, Payload, Selector, Transport};

pub fn handle(links: &Arc<AppLinks>, link: &Arc<Link>, message: pb::AppMessage) {
    let Some(kind) = message.kind else { return };
    match kind {
        Kind::Packet(packet) => {
            if let (Some(session), Some(body)) = (link.session(packet.session), packet.body) {
                session.deliver(body, packet.volatile);
            }
        }
        Kind::Close(close) => {
            if let Some(session) = link.session(close.session) {
                session.close_client();
            }
        }
        Kind::Join(join) => {
            let request = join.request;
            match apply_join(links, link, join) {
                Ok(Some(socket)) if request != 0 => {
                    if !link.begin_request() {
                        link.refuse(
                            request,
                            "too many requests in flight (appLink.maxPendingRequests)".into(),
                        );
                        return;
                    }
                    let link = link.clone();
                    socket.when_rooms_propagated(move || {
                        link.answer(pb::Reply {
                            request,
                            ..pb::Reply::default()
                        })
                    });
                }
                Ok(_) => {}
                Err(error) if request != 0 => link.refuse(request, error),
                Err(error) => {
                    tracing::debug!(instance = %link.instance, %error, "app join refused")
                }
            }
        }
        Kind::Leave(leave) => apply_leave(link, leave),
        Kind::Broadcast(broadcast) => {
            let request = broadcast.request;
            if let Err(error) = apply_broadcast(links, link, broadcast) {
                if request != 0 {
                    link.refuse(request, error);
                } else {
                    tracing::debug!(instance = %link.instance, %error, "app broadcast refused");
                }
            }
        }
        Kind::Publish(publish) => {
            let message = hub_message::Kind::Published(pb::Published {
                from: link.instance.clone(),
                body: publish.body,
            });
            if publish.to.is_empty() {
                for other in links.others(link) {
                    other.send(message.clone());
                }
            } else if let Some(to) = links.of_instance(&publish.to) {
                to.send(message);
            }
        }
        Kind::Drain(_) => {
            tracing::info!(instance = %link.instance, link = link.id, "app instance draining: no new sessions");
            link.drain();
        }
    }
}

/// Creates the hub's view of the socket on its first join, then joins the rooms. Returns
/// the socket, for the reply to wait on.
fn apply_join(
    links: &AppLinks,
    link: &Arc<Link>,
    join: pb::Join,
) -> Result<Option<Arc<crate::socketio::Socket>>, String> {
    let Some(session) = link.session(join.session) else {
        return Err("unknown or closed session".into());
    };
    let socket = match session.socket(&join.namespace, &join.socket_id) {
        Some(socket) => socket,
        None => {
            let Some(engine) = session.engine_session() else {
                return Err("the session is closed".into());
            };
            let ns = links
                .hub
                .namespace_for_app(&join.namespace)
                .map_err(|e| e.to_string())?;
            let conn: Arc<dyn Transport> = session.clone();
            let socket = ns
                .attach(
                    Attach {
                        session: engine.clone(),
                        handshake: session.handshake.clone(),
                        id: Arc::from(join.socket_id.as_str()),
                        conn: Arc::downgrade(&conn),
                    },
                    crate::engine::sid::node_suffix(&engine.sid),
                )
                .map_err(|e| e.to_string())?;
            if !session.add_socket(socket.clone()) {
                socket.detach(DisconnectReason::Transport(
                    crate::engine::CloseReason::TransportClose,
                ));
                return Err("the session is closed".into());
            }
            socket
        }
    };
    // Every room that can be joined is; the refused ones are told back as left, so that the
    // app's view of the socket's rooms (`socket.rooms`) stays the hub's.
    let mut refused = Vec::new();
    let mut errors = Vec::new();
    for room in &join.rooms {
        if let Err(e) = socket.join(room) {
            errors.push(format!("room {room:?}: {e}"));
            refused.push(room.clone());
        }
    }
    if refused.is_empty() {
        return Ok(Some(socket));
    }
    session.rooms_changed(&socket, &[], &refused);
    Err(errors.join("; "))
}

fn apply_leave(link: &Arc<Link>, leave: pb::Leave) {
    let Some(session) = link.session(leave.session) else {
        return;
    };
    let Some(socket) = session.socket(&leave.namespace, &leave.socket_id) else {
        return;
    };
    if leave.all {
        socket.detach(DisconnectReason::ServerNamespaceDisconnect);
        return;
    }
    for room in &leave.rooms {
        socket.leave(room);
    }
}

/// The event and payload of an app's encoded EVENT packet for `namespace`.
fn decode_event(
    namespace: &str,
    text: &str,
    attachments: Vec<bytes::Bytes>,
    max_attachments: usize,
) -> Result<(String, Payload), String> {
    let packet = Packet::decode(text, max_attachments).map_err(|e| format!("packet: {e}"))?;
    if !matches!(packet.kind, PacketKind::Event | PacketKind::BinaryEvent) {
        return Err("a broadcast must be an EVENT packet".into());
    }
    if packet.nsp != namespace {
        return Err(format!(
            "the packet is for namespace {:?}, the broadcast for {namespace:?}",
            packet.nsp
        ));
    }
    if packet.id.is_some() {
        return Err("a broadcast packet carries no ack id (the hub adds its own)".into());
    }
    if packet.attachments != attachments.len() {
        return Err(format!(
            "the packet announces {} attachments, {} came",
            packet.attachments,
            attachments.len()
        ));
    }
    let Some(serde_json::Value::Array(mut data)) = packet.data else {
        return Err("an EVENT packet's data is an array".into());
    };
    if data.is_empty() {
        return Err("an EVENT packet names its event".into());
    }
    let serde_json::Value::String(event) = data.remove(0) else {
        return Err("the event name is a string".into());
    };
    Ok((
        event,
        Payload {
            args: data,
            attachments,
        },
    ))
}

fn apply_broadcast(
    links: &Arc<AppLinks>,
    link: &Arc<Link>,
    broadcast: pb::Broadcast,
) -> Result<(), String> {
    let (event, payload) = decode_event(
        &broadcast.namespace,
        &broadcast.text,
        broadcast.attachments,
        links.max_attachments,
    )?;
    let selector = Selector {
        rooms: broadcast.rooms,
        except: broadcast.except,
    };
    let request = broadcast.request;
    if request == 0 || broadcast.ack_timeout_ms == 0 {
        // In order with the link's other messages: on this task, now.
        let recipients = links.hub.broadcast(
            &broadcast.namespace,
            &selector,
            &event,
            &payload,
            broadcast.volatile,
        );
        if request != 0 {
            link.reply(pb::Reply {
                request,
                recipients: recipients as u64,
                ..pb::Reply::default()
            });
        }
        return Ok(());
    }
    let Some(ops) = links.ops().cloned() else {
        return Err("the node is starting".into());
    };
    if !link.begin_request() {
        return Err("too many requests in flight (appLink.maxPendingRequests)".into());
    }
    let link = link.clone();
    let namespace = broadcast.namespace;
    let emit = EmitRequest {
        selector,
        event,
        payload,
        volatile: broadcast.volatile,
        ack_timeout: Some(Duration::from_millis(u64::from(broadcast.ack_timeout_ms))),
    };
    tokio::spawn(async move {
        let reply = match ops.emit(&namespace, emit).await {
            Ok(outcome) => pb::Reply {
                request,
                error: String::new(),
                recipients: outcome.recipients as u64,
                acks: outcome
                    .acks
                    .unwrap_or_default()
                    .into_iter()
                    .map(|a| pb::AckReply {
                        socket_id: a.socket_id,
                        args_json: serde_json::Value::Array(a.args).to_string(),
                        attachments: a.attachments,
                    })
                    .collect(),
                timed_out: outcome.timed_out.unwrap_or(false),
            },
            Err(error) => pb::Reply {
                request,
                error: error.to_string(),
                ..pb::Reply::default()
            },
        };
        link.answer(reply);
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcasts_are_event_packets_of_their_namespace() {
        let (event, payload) = decode_event("/", r#"2["hi",1,{"a":2}]"#, vec![], 16).unwrap();
        assert_eq!(event, "hi");
        assert_eq!(
            payload.args,
            vec![serde_json::json!(1), serde_json::json!({"a": 2})]
        );
        let bin = r#"51-/chat,["file",{"_placeholder":true,"num":0}]"#;
        let (_, payload) =
            decode_event("/chat", bin, vec![bytes::Bytes::from_static(b"\x01")], 16).unwrap();
        assert_eq!(payload.attachments.len(), 1);
        for (nsp, text, n) in [
            ("/", r#"3["hi"]"#, 0),     // not an event
            ("/chat", r#"2["hi"]"#, 0), // another namespace
            ("/", r#"21["hi"]"#, 0),    // an ack id
            ("/", r#"51-["x",{}]"#, 0), // attachments announced, none came
            ("/", r#"2[]"#, 0),         // no event name
            ("/", r#"2[7]"#, 0),        // a name that is not a string
            ("/", "2", 0),              // no data
        ] {
            let attachments = vec![bytes::Bytes::new(); n];
            assert!(
                decode_event(nsp, text, attachments, 16).is_err(),
                "{text} accepted"
            );
        }
    }
}
