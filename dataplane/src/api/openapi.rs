//! The OpenAPI 3.1 document of the management API, built from code: the schemas are
//! derived from the request and response types ([`super::model`]), the paths are
//! written out here next to the router they describe.
//!
//! The copy checked in at docs/management-api.openapi.json must stay equal to
//! [`document`]; a test fails when it is not. Regenerate it with
//! `cargo run -p roomcast-dataplane --example write-openapi`
//! (or `ROOMCAST_UPDATE_OPENAPI=1 cargo test -p roomcast-dataplane --lib openapi`).

use schemars::generate::{Contract, SchemaSettings};
use schemars::JsonSchema;
use serde_json::{json, Map, Value};

use super::model::{
    DisconnectBody, EmitBody, EmitResponse, FetchBody, JoinBody, LeaveBody, MatchedResponse,
    RoomsResponse, SocketsResponse, StatsResponse, MAX_ACK_TIMEOUT_MS,
};
use super::problem::{Kind, Problem};

/// Path of the checked-in copy, relative to the repository root.
pub const CHECKED_IN_PATH: &str = "docs/management-api.openapi.json";

fn settings(contract: Contract) -> SchemaSettings {
    SchemaSettings::draft2020_12().with(|s| {
        s.definitions_path = "/components/schemas".into();
        s.meta_schema = None;
        s.contract = contract;
    })
}

/// JSON Schemas of the bodies: requests as they are read, responses as they are written.
fn schemas() -> Map<String, Value> {
    let mut requests = settings(Contract::Deserialize).into_generator();
    requests.subschema_for::<EmitBody>();
    requests.subschema_for::<JoinBody>();
    requests.subschema_for::<LeaveBody>();
    requests.subschema_for::<DisconnectBody>();
    requests.subschema_for::<FetchBody>();
    let mut responses = settings(Contract::Serialize).into_generator();
    responses.subschema_for::<EmitResponse>();
    responses.subschema_for::<MatchedResponse>();
    responses.subschema_for::<SocketsResponse>();
    responses.subschema_for::<RoomsResponse>();
    responses.subschema_for::<StatsResponse>();
    responses.subschema_for::<Problem>();
    let mut all = requests.take_definitions(true);
    for (name, schema) in responses.take_definitions(true) {
        all.entry(name).or_insert(schema);
    }
    all.sort_keys();
    all
}

fn schema_name<T: JsonSchema>() -> String {
    T::schema_name().into_owned()
}

fn schema_ref<T: JsonSchema>() -> Value {
    json!({ "$ref": format!("#/components/schemas/{}", schema_name::<T>()) })
}

fn json_content<T: JsonSchema>(examples: Value) -> Value {
    let mut media = json!({ "schema": schema_ref::<T>() });
    if examples.as_object().is_some_and(|m| !m.is_empty()) {
        media["examples"] = examples;
    }
    json!({ "application/json": media })
}

fn ok<T: JsonSchema>(description: &str, examples: Value) -> Value {
    json!({ "description": description, "content": json_content::<T>(examples) })
}

fn problem_ref(name: &str) -> Value {
    json!({ "$ref": format!("#/components/responses/{name}") })
}

/// The error responses of an operation: 400, 401, 404 (and 413, 415 when it has a body).
fn errors(with_body: bool, with_namespace: bool) -> Vec<(&'static str, Value)> {
    let mut out = vec![("401", problem_ref("Unauthorized"))];
    if with_namespace || with_body {
        out.push(("400", problem_ref("BadRequest")));
    }
    if with_namespace {
        out.push(("404", problem_ref("UnknownNamespace")));
    }
    if with_body {
        out.push(("413", problem_ref("PayloadTooLarge")));
        out.push(("415", problem_ref("UnsupportedMediaType")));
    }
    out
}

struct Op {
    id: &'static str,
    summary: &'static str,
    description: String,
    request: Option<(Value, bool)>,
    response: Value,
    namespace: bool,
    query: Vec<Value>,
}

impl Op {
    fn build(self) -> Value {
        let mut responses = Map::new();
        responses.insert("200".into(), self.response);
        for (status, value) in errors(self.request.is_some(), self.namespace) {
            responses.insert(status.into(), value);
        }
        let mut op = json!({
            "operationId": self.id,
            "summary": self.summary,
            "description": self.description,
            "tags": [if self.namespace { "namespaces" } else { "hub" }],
            "responses": responses,
        });
        let mut params = Vec::new();
        if self.namespace {
            params.push(json!({ "$ref": "#/components/parameters/Namespace" }));
        }
        params.extend(self.query);
        if !params.is_empty() {
            op["parameters"] = Value::Array(params);
        }
        if let Some((content, required)) = self.request {
            op["requestBody"] = json!({ "required": required, "content": content });
        }
        op
    }
}

fn selection_query(name: &str, description: &str) -> Value {
    json!({
        "name": name,
        "in": "query",
        "description": description,
        "required": false,
        "style": "form",
        "explode": true,
        "schema": { "type": "array", "items": { "type": "string", "minLength": 1 } },
    })
}

/// The OpenAPI document.
pub fn document() -> Value {
    let emit = Op {
        id: "emit",
        summary: "Emit an event to the namespace, to rooms or to sockets",
        description: format!(
            "Sends `event` with `args` to every selected socket of the namespace: all of \
             them, or those in any of `rooms` or listed in `socketIds`, minus those in any of \
             `except`. Binary arguments are written `{{\"_binary\": \"<base64>\"}}`. With \
             `ackTimeoutMs` (1 to {MAX_ACK_TIMEOUT_MS}) every recipient is asked for an ack \
             and the call returns when all answered or the timeout passed, with the acks \
             received and `timedOut`."
        ),
        request: Some((
            json_content::<EmitBody>(json!({
                "namespace": {
                    "summary": "To every socket of the namespace",
                    "value": { "event": "news", "args": ["hello", { "n": 1 }] },
                },
                "rooms": {
                    "summary": "To two rooms, except one socket",
                    "value": {
                        "event": "message",
                        "args": [{ "from": "bot", "text": "hi" }],
                        "rooms": ["room-1", "room-2"],
                        "except": ["Gx3kq0f5dV8pJ2aL"],
                    },
                },
                "binary": {
                    "summary": "To one socket, with a binary argument",
                    "value": {
                        "event": "file",
                        "args": ["report.bin", { "_binary": "AAECAw==" }],
                        "socketIds": ["Gx3kq0f5dV8pJ2aL"],
                    },
                },
                "acks": {
                    "summary": "Broadcast with acks",
                    "value": { "event": "ping", "args": [], "rooms": ["room-1"], "ackTimeoutMs": 2000 },
                },
            })),
            true,
        )),
        response: ok::<EmitResponse>(
            "What the emit did",
            json!({
                "plain": { "value": { "recipients": 2 } },
                "acks": {
                    "value": {
                        "recipients": 2,
                        "acks": [{ "socketId": "Gx3kq0f5dV8pJ2aL", "args": ["pong"] }],
                        "timedOut": true,
                    },
                },
            }),
        ),
        namespace: true,
        query: vec![],
    };
    let join = Op {
        id: "socketsJoin",
        summary: "Make the selected sockets join rooms",
        description: "Every socket in any of `rooms` or listed in `socketIds`, minus those in \
                      any of `except` (all sockets when `rooms` and `socketIds` are left out), \
                      joins every room of `join`."
            .into(),
        request: Some((
            json_content::<JoinBody>(json!({
                "bySocket": { "value": { "socketIds": ["Gx3kq0f5dV8pJ2aL"], "join": ["room-1"] } },
                "byRoom": { "value": { "rooms": ["lobby"], "join": ["game-7"] } },
            })),
            true,
        )),
        response: ok::<MatchedResponse>("How many sockets were selected", json!({})),
        namespace: true,
        query: vec![],
    };
    let leave = Op {
        id: "socketsLeave",
        summary: "Make the selected sockets leave rooms",
        description: "Every selected socket leaves every room of `leave`.".into(),
        request: Some((
            json_content::<LeaveBody>(json!({
                "byRoom": { "value": { "rooms": ["game-7"], "leave": ["game-7"] } },
            })),
            true,
        )),
        response: ok::<MatchedResponse>("How many sockets were selected", json!({})),
        namespace: true,
        query: vec![],
    };
    let disconnect = Op {
        id: "disconnectSockets",
        summary: "Disconnect the selected sockets",
        description: "The selected sockets are disconnected from the namespace (the client \
                      sees `io server disconnect`). With `close`, their whole connection is \
                      closed too. `{}` selects every socket of the namespace."
            .into(),
        request: Some((
            json_content::<DisconnectBody>(json!({
                "one": { "value": { "socketIds": ["Gx3kq0f5dV8pJ2aL"] } },
                "roomAndClose": { "value": { "rooms": ["banned"], "close": true } },
            })),
            true,
        )),
        response: ok::<MatchedResponse>("How many sockets were disconnected", json!({})),
        namespace: true,
        query: vec![],
    };
    let fetch = Op {
        id: "fetchSockets",
        summary: "Describe the selected sockets (fetchSockets)",
        description: "Id, rooms, handshake (address, time, url, query, headers, auth), \
                      verified token claims and data of every selected socket. The body may \
                      be left out to select every socket."
            .into(),
        request: Some((
            json_content::<FetchBody>(json!({
                "room": { "value": { "rooms": ["room-1"] } },
            })),
            false,
        )),
        response: ok::<SocketsResponse>("The selected sockets", json!({})),
        namespace: true,
        query: vec![],
    };
    let fetch_get = Op {
        id: "listSockets",
        summary: "Describe the selected sockets (fetchSockets), selected by query",
        description: "The same as `POST .../sockets/fetch`, with the selection in the query \
                      string: repeat a parameter for several values, e.g. \
                      `?rooms=a&rooms=b&except=c`."
            .into(),
        request: None,
        response: ok::<SocketsResponse>("The selected sockets", json!({})),
        namespace: true,
        query: vec![
            selection_query("rooms", "Select sockets in any of these rooms."),
            selection_query("socketIds", "Select these sockets."),
            selection_query(
                "except",
                "Skip sockets in any of these rooms (or with these ids).",
            ),
        ],
    };
    let rooms = Op {
        id: "rooms",
        summary: "List the rooms of a namespace with their member counts",
        description: "Rooms sockets joined, sorted by name; the implicit room of each socket \
                      (its id) is not listed."
            .into(),
        request: None,
        response: ok::<RoomsResponse>(
            "The rooms",
            json!({ "two": { "value": { "rooms": [{ "name": "lobby", "members": 3 }, { "name": "room-1", "members": 1 }] } } }),
        ),
        namespace: true,
        query: vec![],
    };
    let stats = Op {
        id: "stats",
        summary: "Hub counters",
        description: "Nodes in routing, the cluster's members as this node sees them, client connections, and sockets and rooms per live namespace.".into(),
        request: None,
        response: ok::<StatsResponse>("The counters", json!({})),
        namespace: false,
        query: vec![],
    };

    let problem_response = |kind: Kind, description: &str| {
        let example = Problem::new(kind, description);
        json!({
            "description": description,
            "content": {
                "application/problem+json": {
                    "schema": schema_ref::<Problem>(),
                    "example": example,
                },
            },
        })
    };
    let mut unauthorized = problem_response(
        Kind::Unauthorized,
        "send the management token as Authorization: Bearer <token>",
    );
    unauthorized["headers"] = json!({
        "WWW-Authenticate": {
            "description": "Always `Bearer realm=\"roomcast-management\"`.",
            "schema": { "type": "string" },
        },
    });
    let problem_types: Vec<Value> = Kind::ALL
        .iter()
        .map(|k| {
            json!(format!(
                "`{}` ({}): {}",
                k.type_uri(),
                k.status().as_u16(),
                k.title()
            ))
        })
        .collect();

    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Roomcast management API",
            "version": "1.0.0",
            "description": "What an application backend calls to drive a Roomcast hub: emit \
                to namespaces, rooms and sockets (with broadcast acks), make sockets join and \
                leave rooms, disconnect them, describe them (fetchSockets), list rooms and read \
                counters. Any hub node serves any call for the whole hub. Every `/v1` call needs \
                `Authorization: Bearer <token>`. Errors are RFC 9457 problem details \
                (`application/problem+json`). See docs/management-api.md.",
            "license": { "name": "Apache-2.0", "identifier": "Apache-2.0" },
        },
        "servers": [{ "url": "http://127.0.0.1:3001", "description": "management.listen of a local hub" }],
        "tags": [
            { "name": "namespaces", "description": "Operations on the sockets of one namespace." },
            { "name": "hub", "description": "The hub as a whole." },
            { "name": "meta", "description": "Health and this document; no token needed." },
        ],
        "security": [{ "bearerAuth": [] }],
        "paths": {
            "/v1/namespaces/{ns}/emit": { "post": emit.build() },
            "/v1/namespaces/{ns}/sockets": { "get": fetch_get.build() },
            "/v1/namespaces/{ns}/sockets/fetch": { "post": fetch.build() },
            "/v1/namespaces/{ns}/sockets/join": { "post": join.build() },
            "/v1/namespaces/{ns}/sockets/leave": { "post": leave.build() },
            "/v1/namespaces/{ns}/sockets/disconnect": { "post": disconnect.build() },
            "/v1/namespaces/{ns}/rooms": { "get": rooms.build() },
            "/v1/stats": { "get": stats.build() },
            "/healthz": {
                "get": {
                    "operationId": "healthz",
                    "summary": "Liveness of the management listener",
                    "tags": ["meta"],
                    "security": [],
                    "responses": {
                        "200": {
                            "description": "The text `ok`",
                            "content": { "text/plain": { "schema": { "type": "string", "const": "ok" } } },
                        },
                    },
                },
            },
            "/openapi.json": {
                "get": {
                    "operationId": "openapi",
                    "summary": "This document",
                    "tags": ["meta"],
                    "security": [],
                    "responses": {
                        "200": {
                            "description": "The OpenAPI document",
                            "content": { "application/json": { "schema": { "type": "object" } } },
                        },
                    },
                },
            },
        },
        "components": {
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "The token of `management.token` or `management.tokenFile`.",
                },
            },
            "parameters": {
                "Namespace": {
                    "name": "ns",
                    "in": "path",
                    "required": true,
                    "description": "The Socket.IO namespace, URL-encoded: `%2F` for `/`, \
                        `%2Fchat` for `/chat`. The leading slash may be left out (`chat`). A \
                        namespace the hub's configuration does not allow answers 404; an \
                        allowed one that no client opened yet has no sockets.",
                    "schema": { "type": "string", "minLength": 1 },
                    "examples": {
                        "main": { "value": "/" },
                        "chat": { "value": "/chat" },
                    },
                },
            },
            "responses": {
                "BadRequest": problem_response(
                    Kind::InvalidRequest,
                    "The body is not JSON (`invalid-json`) or breaks a rule (`invalid-request`)",
                ),
                "Unauthorized": unauthorized,
                "UnknownNamespace": problem_response(
                    Kind::UnknownNamespace,
                    "The namespace is not configured on this hub",
                ),
                "PayloadTooLarge": problem_response(
                    Kind::PayloadTooLarge,
                    "The body is larger than management.maxBodyBytes",
                ),
                "UnsupportedMediaType": problem_response(
                    Kind::UnsupportedMediaType,
                    "The body is declared as something other than JSON",
                ),
            },
            "schemas": schemas(),
        },
        "x-problem-types": problem_types,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The checked-in document equals the generated one.
    #[test]
    fn openapi_document_is_checked_in() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../docs/management-api.openapi.json"
        );
        let mut generated = serde_json::to_string_pretty(&document()).unwrap();
        generated.push('\n');
        if std::env::var_os("ROOMCAST_UPDATE_OPENAPI").is_some() {
            std::fs::write(path, &generated).unwrap();
            return;
        }
        let checked_in = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            checked_in == generated,
            "{CHECKED_IN_PATH} differs from the document the code generates; regenerate it \
             with `cargo run -p roomcast-dataplane --example write-openapi` and commit it"
        );
    }

    #[test]
    fn every_schema_reference_resolves() {
        let doc = document();
        let text = doc.to_string();
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        for part in text.split("#/components/schemas/").skip(1) {
            let name: String = part.chars().take_while(|c| *c != '"').collect();
            assert!(schemas.contains_key(&name), "dangling reference to {name}");
        }
        for name in [
            "EmitBody",
            "EmitResponse",
            "SocketInfo",
            "HubStats",
            "Problem",
        ] {
            assert!(schemas.contains_key(name), "missing schema {name}");
        }
    }
}
