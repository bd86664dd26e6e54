//! The built-in relay application of the `roomcast-dataplane` binary: lets clients chat in
//! rooms with no backend. `join`/`leave` manage rooms; any other event goes to everyone
//! else in the sender's rooms (or in the namespace when the sender joined none).

use std::sync::Arc;

use serde_json::{json, Value};

use crate::socketio::{Event, Handler, Payload, Selector, Socket};

#[derive(Debug, Default)]
pub struct Relay;

fn reply(event: Event, value: Value) {
    if let Some(ack) = event.ack {
        ack.send(Payload::new(vec![value]));
    }
}

impl Handler for Relay {
    fn event(&self, socket: &Arc<Socket>, event: Event) {
        let room = event
            .payload
            .args
            .first()
            .and_then(Value::as_str)
            .map(str::to_string);
        match (event.name.as_str(), room) {
            ("join", Some(room)) => {
                if super::policy::reserved_room(&room) || socket.join(&room).is_err() {
                    return reply(event, json!({ "ok": false }));
                }
                socket.when_rooms_propagated(move || reply(event, json!({ "ok": true })));
            }
            ("leave", Some(room)) => {
                socket.leave(&room);
                reply(event, json!({ "ok": true }));
            }
            ("join" | "leave", None) => {
                reply(event, json!({ "ok": false, "error": "room name expected" }))
            }
            _ => {
                let rooms: Vec<String> = socket.rooms().into_iter().skip(1).collect();
                let selector = if rooms.is_empty() {
                    Selector::all()
                } else {
                    Selector::rooms(rooms)
                };
                let selector = selector.except([socket.id()]);
                let delivered = socket.broadcast(&selector, &event.name, &event.payload, false);
                reply(event, json!({ "ok": true, "delivered": delivered }));
            }
        }
    }
}
