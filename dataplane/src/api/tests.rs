//! The router in process: a real hub and [`LocalOps`], no sockets.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

use super::problem::TYPE_BASE;
use super::ManagementApi;
use crate::config::{Config, ManagementConfig};
use crate::ops::LocalOps;
use crate::server::Server;
use crate::socketio::{Event, Handler, Socket};

const TOKEN: &str = "test-token-0123456789";

struct Quiet;

impl Handler for Quiet {
    fn event(&self, _socket: &Arc<Socket>, _event: Event) {}
}

fn ops() -> Arc<LocalOps> {
    let mut config = Config::default();
    config.socketio.namespaces = vec!["/".into(), "/chat".into(), "/dyn-*".into()];
    let server = Server::new(config, Arc::new(Quiet));
    let hub = server.hub().cloned().unwrap();
    Arc::new(LocalOps::new(hub, Arc::new(|| 0)))
}

fn router_with_limit(max_body_bytes: usize) -> Router {
    ManagementApi::new(ops(), TOKEN, max_body_bytes).router()
}

fn router() -> Router {
    router_with_limit(4096)
}

struct Answer {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    json: Value,
    text: String,
}

async fn send(router: &Router, req: Request<Body>) -> Answer {
    let res = router.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let headers = res.headers().clone();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Answer {
        status,
        headers,
        json,
        text,
    }
}

fn authed(method: Method, uri: &str) -> axum::http::request::Builder {
    Request::builder()
        .method(method)
        .uri(uri)
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
}

async fn post(router: &Router, uri: &str, body: &str) -> Answer {
    let req = authed(Method::POST, uri)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    send(router, req).await
}

async fn get(router: &Router, uri: &str) -> Answer {
    send(
        router,
        authed(Method::GET, uri).body(Body::empty()).unwrap(),
    )
    .await
}

/// Asserts an `application/problem+json` answer of that status and problem type.
fn assert_problem(answer: &Answer, status: u16, slug: &str) {
    assert_eq!(
        answer.status.as_u16(),
        status,
        "status; body {}",
        answer.text
    );
    assert_eq!(
        answer.headers.get(header::CONTENT_TYPE).unwrap(),
        "application/problem+json",
        "content type; body {}",
        answer.text
    );
    assert_eq!(
        answer.json["type"],
        format!("{TYPE_BASE}{slug}"),
        "{}",
        answer.text
    );
    assert_eq!(answer.json["status"], status, "{}", answer.text);
    assert!(answer.json["title"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(answer.json["detail"]
        .as_str()
        .is_some_and(|t| !t.is_empty()));
}

#[tokio::test]
async fn health_and_document_need_no_token() {
    let r = router();
    let health = send(&r, Request::get("/healthz").body(Body::empty()).unwrap()).await;
    assert_eq!(health.status, StatusCode::OK);
    assert_eq!(health.text, "ok");
    let doc = send(
        &r,
        Request::get("/openapi.json").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(doc.status, StatusCode::OK);
    assert_eq!(
        doc.headers.get(header::CONTENT_TYPE).unwrap(),
        "application/json"
    );
    assert_eq!(doc.json, super::openapi::document());
}

#[tokio::test]
async fn missing_or_wrong_tokens_are_refused() {
    let r = router();
    for auth in [
        None,
        Some("Bearer wrong-token-0123456789".to_string()),
        Some(format!("Bearer {TOKEN}x")),
        Some(format!("Basic {TOKEN}")),
        Some(TOKEN.to_string()),
        Some("Bearer".to_string()),
    ] {
        for (method, uri) in [
            (Method::GET, "/v1/stats"),
            (Method::GET, "/v1/namespaces/%2F/rooms"),
            (Method::POST, "/v1/namespaces/%2F/emit"),
            (Method::POST, "/v1/namespaces/%2Fnope/emit"),
        ] {
            let mut req = Request::builder().method(method).uri(uri);
            if let Some(auth) = &auth {
                req = req.header(header::AUTHORIZATION, auth);
            }
            let answer = send(&r, req.body(Body::from("{\"event\":\"x\"}")).unwrap()).await;
            assert_problem(&answer, 401, "unauthorized");
            let challenge = answer.headers.get(header::WWW_AUTHENTICATE).unwrap();
            assert!(challenge.to_str().unwrap().starts_with("Bearer"));
        }
    }
    // The scheme is case-insensitive.
    let req = Request::get("/v1/stats")
        .header(header::AUTHORIZATION, format!("bearer {TOKEN}"))
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(&r, req).await.status, StatusCode::OK);
}

#[tokio::test]
async fn stats_rooms_and_fetch_on_an_empty_hub() {
    let r = router();
    let stats = get(&r, "/v1/stats").await;
    assert_eq!(stats.status, StatusCode::OK, "{}", stats.text);
    assert_eq!(stats.json["nodes"], 1);
    assert_eq!(stats.json["connections"], 0);
    let names: Vec<&str> = stats.json["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["/", "/chat"]);

    let rooms = get(&r, "/v1/namespaces/%2F/rooms").await;
    assert_eq!(rooms.status, StatusCode::OK);
    assert_eq!(rooms.json, json!({ "rooms": [] }));

    let fetch = post(&r, "/v1/namespaces/%2Fchat/sockets/fetch", "").await;
    assert_eq!(fetch.status, StatusCode::OK, "{}", fetch.text);
    assert_eq!(fetch.json, json!({ "sockets": [] }));
    let fetch = get(&r, "/v1/namespaces/chat/sockets?rooms=a&rooms=b&except=c").await;
    assert_eq!(fetch.json, json!({ "sockets": [] }));
}

#[tokio::test]
async fn operations_answer_on_an_empty_namespace() {
    let r = router();
    let emit = post(
        &r,
        "/v1/namespaces/%2F/emit",
        r#"{"event":"hello","args":[1]}"#,
    )
    .await;
    assert_eq!(emit.status, StatusCode::OK, "{}", emit.text);
    assert_eq!(emit.json, json!({ "recipients": 0 }));
    let emit = post(
        &r,
        "/v1/namespaces/%2F/emit",
        r#"{"event":"hello","rooms":["a"],"socketIds":["s"],"except":["b"],"ackTimeoutMs":50,
            "args":[{"_binary":"AQID"}]}"#,
    )
    .await;
    assert_eq!(emit.status, StatusCode::OK, "{}", emit.text);
    assert_eq!(
        emit.json,
        json!({ "recipients": 0, "acks": [], "timedOut": false })
    );
    for (op, body) in [
        ("join", r#"{"rooms":["a"],"join":["b"]}"#),
        ("leave", r#"{"socketIds":["x"],"leave":["b"]}"#),
        ("disconnect", r#"{}"#),
        ("disconnect", r#"{"rooms":["a"],"close":true}"#),
    ] {
        let answer = post(&r, &format!("/v1/namespaces/%2F/sockets/{op}"), body).await;
        assert_eq!(answer.status, StatusCode::OK, "{op}: {}", answer.text);
        assert_eq!(answer.json, json!({ "matched": 0 }));
    }
}

#[tokio::test]
async fn namespaces_from_the_path() {
    let r = router();
    // Configured: with or without the leading slash.
    for ns in ["%2Fchat", "chat"] {
        let answer = get(&r, &format!("/v1/namespaces/{ns}/rooms")).await;
        assert_eq!(answer.status, StatusCode::OK, "{ns}");
    }
    // Allowed by a pattern but not opened by any client yet: empty, not unknown.
    let answer = post(&r, "/v1/namespaces/%2Fdyn-7/emit", r#"{"event":"e"}"#).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    assert_eq!(answer.json["recipients"], 0);
    // Not allowed: 404 for every operation.
    for (method, uri, body) in [
        (Method::POST, "emit", r#"{"event":"e"}"#),
        (Method::POST, "sockets/join", r#"{"join":["a"]}"#),
        (Method::POST, "sockets/leave", r#"{"leave":["a"]}"#),
        (Method::POST, "sockets/disconnect", r#"{}"#),
        (Method::POST, "sockets/fetch", r#"{}"#),
        (Method::GET, "sockets", ""),
        (Method::GET, "rooms", ""),
    ] {
        let req = authed(method, &format!("/v1/namespaces/%2Fnope/{uri}"))
            .body(Body::from(body))
            .unwrap();
        let answer = send(&r, req).await;
        assert_problem(&answer, 404, "unknown-namespace");
        assert!(answer.json["detail"].as_str().unwrap().contains("/nope"));
    }
    // Not valid UTF-8 once decoded.
    let answer = get(&r, "/v1/namespaces/%FF/rooms").await;
    assert_problem(&answer, 400, "invalid-request");
}

#[tokio::test]
async fn bad_bodies_are_400() {
    let r = router();
    let emit = "/v1/namespaces/%2F/emit";
    for body in ["{", "not json", "[1,", r#"{"event":"e",}"#] {
        assert_problem(&post(&r, emit, body).await, 400, "invalid-json");
    }
    assert_problem(&post(&r, emit, "").await, 400, "invalid-json");
    assert_problem(
        &post(&r, "/v1/namespaces/%2F/sockets/disconnect", " ").await,
        400,
        "invalid-json",
    );
    for (body, needle) in [
        (r#"{"args":[]}"#, "missing field `event`"),
        (r#"{"event":"e","bogus":1}"#, "unknown field `bogus`"),
        (r#"{"event":5}"#, "invalid type"),
        (r#"{"event":"e","args":"x"}"#, "invalid type"),
        (r#"{"event":""}"#, "event must not be empty"),
        (r#"{"event":"disconnect"}"#, "reserved"),
        (r#"{"event":"e","rooms":[]}"#, "rooms must not be empty"),
        (r#"{"event":"e","socketIds":[""]}"#, "socketIds[0]"),
        (r#"{"event":"e","except":[]}"#, "except must not be empty"),
        (
            r#"{"event":"e","volatile":true,"ackTimeoutMs":10}"#,
            "cannot be combined",
        ),
        (
            r#"{"event":"e","ackTimeoutMs":0}"#,
            "ackTimeoutMs must be between",
        ),
        (
            r#"{"event":"e","ackTimeoutMs":120001}"#,
            "ackTimeoutMs must be between",
        ),
        (r#"{"event":"e","ackTimeoutMs":-1}"#, "invalid value"),
        (
            r#"{"event":"e","args":[{"_binary":"%%"}]}"#,
            "/args/0: invalid base64",
        ),
        (
            r#"{"event":"e","args":[{"_placeholder":true,"num":0}]}"#,
            "reserved",
        ),
    ] {
        let answer = post(&r, emit, body).await;
        assert_problem(&answer, 400, "invalid-request");
        let detail = answer.json["detail"].as_str().unwrap();
        assert!(detail.contains(needle), "{body}: {detail}");
    }
    for (op, body, needle) in [
        ("join", r#"{"rooms":["a"]}"#, "missing field `join`"),
        ("join", r#"{"join":[]}"#, "join must name at least one room"),
        ("leave", r#"{"leave":[""]}"#, "leave[0]"),
        ("disconnect", r#"{"close":"yes"}"#, "invalid type"),
        ("fetch", r#"{"rooms":"a"}"#, "invalid type"),
    ] {
        let answer = post(&r, &format!("/v1/namespaces/%2F/sockets/{op}"), body).await;
        assert_problem(&answer, 400, "invalid-request");
        let detail = answer.json["detail"].as_str().unwrap();
        assert!(detail.contains(needle), "{op} {body}: {detail}");
    }
    let answer = get(&r, "/v1/namespaces/%2F/sockets?room=a").await;
    assert_problem(&answer, 400, "invalid-request");
}

#[tokio::test]
async fn oversized_bodies_are_413() {
    let r = router_with_limit(64);
    let big = format!(r#"{{"event":"e","args":["{}"]}}"#, "x".repeat(100));
    assert_problem(
        &post(&r, "/v1/namespaces/%2F/emit", &big).await,
        413,
        "payload-too-large",
    );
    // Without a Content-Length (streamed), the limit still holds.
    let chunks: Vec<Result<_, std::io::Error>> = vec![
        Ok(axum::body::Bytes::from(r#"{"event":"e","args":[""#)),
        Ok(axum::body::Bytes::from("y".repeat(100))),
        Ok(axum::body::Bytes::from(r#""]}"#)),
    ];
    let req = authed(Method::POST, "/v1/namespaces/%2F/emit")
        .body(Body::from_stream(futures_util::stream::iter(chunks)))
        .unwrap();
    assert_problem(&send(&r, req).await, 413, "payload-too-large");
    // Just under the limit is fine.
    let small = r#"{"event":"e","args":["xx"]}"#;
    assert_eq!(
        post(&r, "/v1/namespaces/%2F/emit", small).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn other_content_types_are_415() {
    let r = router();
    let req = authed(Method::POST, "/v1/namespaces/%2F/emit")
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Body::from(r#"{"event":"e"}"#))
        .unwrap();
    assert_problem(&send(&r, req).await, 415, "unsupported-media-type");
    // No content type, or a JSON one with parameters, is accepted.
    for ct in [
        None,
        Some("application/json; charset=utf-8"),
        Some("application/merge+json"),
    ] {
        let mut req = authed(Method::POST, "/v1/namespaces/%2F/emit");
        if let Some(ct) = ct {
            req = req.header(header::CONTENT_TYPE, ct);
        }
        let answer = send(&r, req.body(Body::from(r#"{"event":"e"}"#)).unwrap()).await;
        assert_eq!(answer.status, StatusCode::OK, "{ct:?}: {}", answer.text);
    }
}

#[tokio::test]
async fn unknown_routes_and_methods() {
    let r = router();
    assert_problem(&get(&r, "/v1/nothing").await, 404, "not-found");
    assert_problem(&get(&r, "/").await, 404, "not-found");
    assert_problem(
        &get(&r, "/v1/namespaces/%2F/emit").await,
        405,
        "method-not-allowed",
    );
    assert_problem(
        &post(&r, "/v1/stats", "{}").await,
        405,
        "method-not-allowed",
    );
}

#[test]
fn token_from_config_or_file() {
    let dir = std::env::temp_dir().join(format!("roomcast-api-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("token");
    std::fs::write(&file, format!("  {TOKEN}\n")).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    let config = ManagementConfig {
        token_file: Some(file.clone()),
        ..ManagementConfig::default()
    };
    let api = ManagementApi::from_config(&config, ops()).unwrap();
    assert!(api.token_matches(TOKEN));
    assert!(!api.token_matches(&format!("  {TOKEN}\n")));
    let answer = rt.block_on(get(&api.router(), "/v1/stats"));
    assert_eq!(answer.status, StatusCode::OK);

    std::fs::write(&file, "short\n").unwrap();
    let err = ManagementApi::from_config(&config, ops()).err().unwrap();
    assert!(err.to_string().contains("at least 16"), "{err}");
    let missing = ManagementConfig {
        token_file: Some(dir.join("missing")),
        ..ManagementConfig::default()
    };
    let err = ManagementApi::from_config(&missing, ops()).err().unwrap();
    assert!(err.to_string().contains("management.tokenFile"), "{err}");
    assert!(ManagementApi::from_config(&ManagementConfig::default(), ops()).is_err());
    let inline = ManagementConfig {
        token: Some(TOKEN.into()),
        ..ManagementConfig::default()
    };
    assert!(ManagementApi::from_config(&inline, ops())
        .unwrap()
        .token_matches(TOKEN));
    std::fs::remove_dir_all(&dir).ok();
}
