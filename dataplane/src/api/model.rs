//! Request and response bodies of the management API. Their JSON Schemas (derived here)
//! are the `components/schemas` of the OpenAPI document.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ops::{HubStats, RoomInfo, SocketInfo};
use crate::socketio::Selector;

use super::problem::Problem;

/// Longest ack timeout a request may ask for, in milliseconds.
pub const MAX_ACK_TIMEOUT_MS: u64 = 120_000;

/// Declares a request body that selects sockets: the selection fields (`rooms`,
/// `socketIds`, `except`, declared and documented once, here) come first, then the fields
/// given; the body gets [`Selecting::selector`].
macro_rules! selecting_body {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $($(#[$fmeta:meta])* pub $field:ident: $ty:ty,)*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
        #[serde(rename_all = "camelCase", deny_unknown_fields)]
        pub struct $name {
            /// Select sockets in any of these rooms. Leave out (with `socketIds`) to select
            /// every socket of the namespace.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub rooms: Option<Vec<String>>,
            /// Select these sockets (by socket id), in addition to those `rooms` selects.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub socket_ids: Option<Vec<String>>,
            /// Skip sockets in any of these rooms (socket ids allowed).
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub except: Option<Vec<String>>,
            $($(#[$fmeta])* pub $field: $ty,)*
        }

        impl Selecting for $name {
            fn selection(&self) -> [(&'static str, Option<&[String]>); 3] {
                [
                    ("rooms", self.rooms.as_deref()),
                    ("socketIds", self.socket_ids.as_deref()),
                    ("except", self.except.as_deref()),
                ]
            }
        }
    };
}

/// A request body that selects sockets.
pub trait Selecting {
    /// The selection fields by name: `rooms`, `socketIds`, `except`.
    fn selection(&self) -> [(&'static str, Option<&[String]>); 3];

    /// The [`Selector`]: sockets in any of `rooms` or with one of `socketIds` (a socket id is
    /// a room holding just that socket), minus those in `except`. Both left out selects every
    /// socket. An empty list is refused: leave the field out instead, so a bug that empties
    /// a list never turns into "everyone".
    fn selector(&self) -> Result<Selector, Problem> {
        let mut selector = Selector::default();
        for (field, list) in self.selection() {
            let Some(list) = list else { continue };
            if list.is_empty() {
                return Err(Problem::invalid(format!(
                    "{field} must not be empty (leave it out to select every socket)"
                )));
            }
            if let Some(i) = list.iter().position(String::is_empty) {
                return Err(Problem::invalid(format!(
                    "{field}[{i}] must not be an empty string"
                )));
            }
            let target = if field == "except" {
                &mut selector.except
            } else {
                &mut selector.rooms
            };
            target.extend(list.iter().cloned());
        }
        Ok(selector)
    }
}

selecting_body! {
    /// Emit an event to the selected sockets.
    pub struct EmitBody {
        /// Event name; not one of the reserved names (`connect`, `connect_error`, `disconnect`,
        /// `disconnecting`, `newListener`, `removeListener`).
        pub event: String,
        /// Event arguments, in order. A binary argument is written `{"_binary": "<base64>"}`
        /// (anywhere, also nested); clients receive it as binary.
        #[serde(default)]
        pub args: Vec<Value>,
        /// Drop the event for clients that are not ready to receive it (like `socket.volatile`).
        /// Cannot be combined with `ackTimeoutMs`.
        #[serde(default)]
        pub volatile: bool,
        /// Ask every recipient for an ack and wait up to this long for them; the response
        /// then lists the acks received (broadcast acks).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[schemars(range(min = 1, max = 120_000))]
        pub ack_timeout_ms: Option<u64>,
    }
}

selecting_body! {
    /// Make the selected sockets join rooms.
    pub struct JoinBody {
        /// The rooms the selected sockets join.
        pub join: Vec<String>,
    }
}

selecting_body! {
    /// Make the selected sockets leave rooms.
    pub struct LeaveBody {
        /// The rooms the selected sockets leave.
        pub leave: Vec<String>,
    }
}

selecting_body! {
    /// Disconnect the selected sockets. An empty object `{}` disconnects every socket of the
    /// namespace.
    pub struct DisconnectBody {
        /// Also close the client's underlying connection (every namespace it joined), like
        /// `socket.disconnect(true)`. Otherwise only this namespace is left.
        #[serde(default)]
        pub close: bool,
    }
}

selecting_body! {
    /// Select sockets. Every field may be left out; `{}` selects every socket of the namespace.
    pub struct FetchBody {}
}

/// What an emit did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EmitResponse {
    /// Sockets the event was sent to (with acks: the number of acks expected).
    pub recipients: usize,
    /// Only with `ackTimeoutMs`: the acks received, in arrival order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acks: Option<Vec<Ack>>,
    /// Only with `ackTimeoutMs`: true when some recipients did not answer in time (or
    /// disconnected first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timed_out: Option<bool>,
}

/// One client's ack.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Ack {
    pub socket_id: String,
    /// The ack's arguments; binary values as `{"_binary": "<base64>"}`.
    pub args: Vec<Value>,
}

/// How many sockets an operation selected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MatchedResponse {
    /// Sockets the selection matched (and the operation applied to).
    pub matched: usize,
}

/// The sockets a selection matched (`fetchSockets`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SocketsResponse {
    pub sockets: Vec<SocketInfo>,
}

/// The rooms of a namespace with their member counts (the implicit room each socket has,
/// named by its id, is not listed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RoomsResponse {
    pub rooms: Vec<RoomInfo>,
}

/// Hub counters.
pub type StatsResponse = HubStats;

/// The body of every error response.
pub type ProblemResponse = Problem;

/// Checks a list of room names an operation applies (join/leave).
pub fn room_list(field: &str, rooms: &[String]) -> Result<(), Problem> {
    if rooms.is_empty() {
        return Err(Problem::invalid(format!(
            "{field} must name at least one room"
        )));
    }
    if let Some(i) = rooms.iter().position(String::is_empty) {
        return Err(Problem::invalid(format!(
            "{field}[{i}] must not be an empty string"
        )));
    }
    Ok(())
}
