//! The management REST API: what the application backend calls to drive the hub (emit,
//! rooms, disconnects, fetchSockets, stats).
//!
//! It listens on its own address (`management.listen`), never on the client port. Every
//! `/v1` route needs `Authorization: Bearer <token>` (compared in constant time); errors are
//! RFC 9457 problem details. Handlers only call [`HubOps`], so the same routes serve a
//! single node ([`crate::ops::LocalOps`]) or a whole cluster. The OpenAPI document is built
//! by [`openapi::document`] and served at `/openapi.json`; the reference is
//! docs/management-api.md.

pub mod binary;
pub mod model;
pub mod openapi;
pub mod problem;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use serde::de::DeserializeOwned;
use tokio::net::TcpListener;

use crate::auth::bearer::BearerToken;
use crate::cluster::listen::AcceptBackoff;
use crate::config::ManagementConfig;
use crate::ops::{EmitRequest, HubOps};

use model::{
    Ack, DisconnectBody, EmitBody, EmitResponse, FetchBody, JoinBody, LeaveBody, MatchedResponse,
    RoomsResponse, Selecting, SocketsResponse, MAX_ACK_TIMEOUT_MS,
};
use problem::{Kind, Problem};

/// Shortest token accepted, as for `management.token`.
pub use crate::auth::bearer::MIN_TOKEN_LEN;

/// The management API of one hub node.
#[derive(Clone)]
pub struct ManagementApi {
    inner: Arc<Inner>,
}

struct Inner {
    ops: Arc<dyn HubOps>,
    /// The token, as a digest compared in constant time (which hides its length too).
    token: BearerToken,
    max_body_bytes: usize,
    openapi: Bytes,
    /// How long a connection may take to send a request's headers.
    header_read_timeout: Duration,
}

/// `management.headerReadTimeout`'s default.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

impl ManagementApi {
    /// An API driving `ops`, accepting `token`, refusing bodies over `max_body_bytes`.
    pub fn new(ops: Arc<dyn HubOps>, token: &str, max_body_bytes: usize) -> Self {
        Self::with_timeouts(ops, token, max_body_bytes, HEADER_READ_TIMEOUT)
    }

    /// Like [`ManagementApi::new`], with connections that must send each request's headers
    /// within `header_read_timeout`.
    pub fn with_timeouts(
        ops: Arc<dyn HubOps>,
        token: &str,
        max_body_bytes: usize,
        header_read_timeout: Duration,
    ) -> Self {
        Self::with_bearer(
            ops,
            BearerToken::new(token),
            max_body_bytes,
            header_read_timeout,
        )
    }

    fn with_bearer(
        ops: Arc<dyn HubOps>,
        token: BearerToken,
        max_body_bytes: usize,
        header_read_timeout: Duration,
    ) -> Self {
        let openapi = serde_json::to_vec_pretty(&openapi::document()).unwrap_or_default();
        Self {
            inner: Arc::new(Inner {
                ops,
                token,
                max_body_bytes,
                openapi: Bytes::from(openapi),
                header_read_timeout,
            }),
        }
    }

    /// The API as configured: the token comes from `token` or is read (once, now) from
    /// `tokenFile`, surrounding whitespace trimmed.
    pub fn from_config(config: &ManagementConfig, ops: Arc<dyn HubOps>) -> anyhow::Result<Self> {
        let token = BearerToken::from_config(
            config.token.as_deref(),
            config.token_file.as_deref(),
            "management",
        )?;
        Ok(Self::with_bearer(
            ops,
            token,
            config.max_body_bytes,
            Duration::from_millis(config.header_read_timeout),
        ))
    }

    /// The routes, ready to serve.
    pub fn router(&self) -> Router {
        let v1 = Router::new()
            .route("/v1/stats", get(stats))
            .route("/v1/namespaces/{ns}/emit", post(emit))
            .route("/v1/namespaces/{ns}/sockets", get(fetch_sockets_query))
            .route("/v1/namespaces/{ns}/sockets/fetch", post(fetch_sockets))
            .route("/v1/namespaces/{ns}/sockets/join", post(sockets_join))
            .route("/v1/namespaces/{ns}/sockets/leave", post(sockets_leave))
            .route(
                "/v1/namespaces/{ns}/sockets/disconnect",
                post(disconnect_sockets),
            )
            .route("/v1/namespaces/{ns}/rooms", get(rooms))
            .route_layer(middleware::from_fn_with_state(self.clone(), require_token));
        Router::new()
            .route("/healthz", get(healthz))
            .route("/openapi.json", get(openapi_json))
            .merge(v1)
            .fallback(not_found)
            .method_not_allowed_fallback(method_not_allowed)
            .with_state(self.clone())
    }

    /// Serves on `listener` until `shutdown` resolves, then lets requests in flight finish
    /// (the caller bounds how long). HTTP/1 connections that do not send a request's headers
    /// within `management.headerReadTimeout` (from the connection's start or the end of the
    /// previous answer) are closed: `axum::serve` has no such bound, hence this loop.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let service = TowerToHyperService::new(self.router());
        let header_read_timeout = self.inner.header_read_timeout;
        // Connections hold a receiver each; `true` asks them to finish gracefully, and the
        // sender's `closed` resolves once every one has.
        let (stop, stopped) = tokio::sync::watch::channel(false);
        tokio::pin!(shutdown);
        let mut backoff = AcceptBackoff::new("management");
        while let Some((stream, peer)) = backoff.accept(&listener, shutdown.as_mut()).await {
            let service = service.clone();
            let mut stopped = stopped.clone();
            tokio::spawn(async move {
                let conn = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(header_read_timeout)
                    .serve_connection(TokioIo::new(stream), service);
                tokio::pin!(conn);
                let result = tokio::select! {
                    result = conn.as_mut() => result,
                    _ = stopped.changed() => {
                        conn.as_mut().graceful_shutdown();
                        conn.await
                    }
                };
                if let Err(error) = result {
                    tracing::debug!(%error, %peer, "management connection ended with an error");
                }
            });
        }
        drop(listener);
        let _ = stop.send(true);
        drop(stopped);
        stop.closed().await;
        Ok(())
    }

    fn token_matches(&self, presented: &str) -> bool {
        self.inner.token.matches(presented)
    }
}

async fn require_token(State(api): State<ManagementApi>, req: Request, next: Next) -> Response {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    match presented {
        None => Problem::new(
            Kind::Unauthorized,
            "send the management token as Authorization: Bearer <token>",
        )
        .into_response(),
        Some(token) if !api.token_matches(token) => {
            tracing::warn!(path = %req.uri().path(), "management API: wrong bearer token");
            Problem::new(Kind::Unauthorized, "the bearer token is not valid").into_response()
        }
        Some(_) => {
            let (method, path) = (req.method().clone(), req.uri().path().to_string());
            let res = next.run(req).await;
            tracing::debug!(%method, path, status = res.status().as_u16(), "management call");
            res
        }
    }
}

async fn healthz() -> &'static str {
    "ok"
}

async fn openapi_json(State(api): State<ManagementApi>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        api.inner.openapi.clone(),
    )
        .into_response()
}

async fn not_found(req: Request) -> Problem {
    Problem::new(
        Kind::NotFound,
        format!("no route for {} {}", req.method(), req.uri().path()),
    )
}

async fn method_not_allowed(req: Request) -> Problem {
    Problem::new(
        Kind::MethodNotAllowed,
        format!("{} is not allowed on {}", req.method(), req.uri().path()),
    )
}

/// The namespace named by the `{ns}` path segment (percent-decoded; `%2F` is `/`). The
/// leading `/` may be left out: `chat` is `/chat`.
fn namespace(path: Result<Path<String>, PathRejection>) -> Result<String, Problem> {
    let Path(ns) = path.map_err(|e| Problem::invalid(format!("bad namespace in path: {e}")))?;
    if ns.is_empty() {
        return Err(Problem::invalid(
            "the namespace must not be empty (use %2F for /)",
        ));
    }
    Ok(if ns.starts_with('/') {
        ns
    } else {
        format!("/{ns}")
    })
}

/// Reads a JSON body of at most `max_body_bytes`. An empty body is `default` when given.
async fn json_body<T: DeserializeOwned>(
    api: &ManagementApi,
    headers: &HeaderMap,
    body: Body,
    default: Option<T>,
) -> Result<T, Problem> {
    let limit = api.inner.max_body_bytes;
    if let Some(ct) = headers.get(header::CONTENT_TYPE) {
        let essence = ct
            .to_str()
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if essence != "application/json" && !essence.ends_with("+json") {
            return Err(Problem::new(
                Kind::UnsupportedMediaType,
                format!("send the body as application/json, not {essence:?}"),
            ));
        }
    }
    let too_large = || {
        Problem::new(
            Kind::PayloadTooLarge,
            format!("the body is larger than {limit} bytes (management.maxBodyBytes)"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let bytes = axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| too_large())?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return default.ok_or_else(|| Problem::new(Kind::InvalidJson, "a JSON body is required"));
    }
    // Syntax first (the whole body), then shape, so the two get their own problem types.
    let value: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| {
        Problem::new(
            Kind::InvalidJson,
            format!("the body is not valid JSON: {e}"),
        )
    })?;
    serde_json::from_value(value).map_err(|e| Problem::invalid(format!("invalid body: {e}")))
}

async fn stats(State(api): State<ManagementApi>) -> Result<Response, Problem> {
    let stats = api.inner.ops.stats().await?;
    Ok(Json(stats).into_response())
}

async fn emit(
    State(api): State<ManagementApi>,
    ns: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<EmitResponse>, Problem> {
    let nsp = namespace(ns)?;
    let body: EmitBody = json_body(&api, &headers, body, None).await?;
    let selector = body.selector()?;
    if body.event.is_empty() {
        return Err(Problem::invalid("event must not be empty"));
    }
    let ack_timeout = match body.ack_timeout_ms {
        None => None,
        Some(_) if body.volatile => {
            return Err(Problem::invalid(
                "volatile and ackTimeoutMs cannot be combined",
            ))
        }
        Some(ms) if (1..=MAX_ACK_TIMEOUT_MS).contains(&ms) => Some(Duration::from_millis(ms)),
        Some(ms) => {
            return Err(Problem::invalid(format!(
                "ackTimeoutMs must be between 1 and {MAX_ACK_TIMEOUT_MS}, got {ms}"
            )))
        }
    };
    let payload = binary::decode_args(body.args).map_err(Problem::invalid)?;
    let outcome = api
        .inner
        .ops
        .emit(
            &nsp,
            EmitRequest {
                selector,
                event: body.event,
                payload,
                volatile: body.volatile,
                ack_timeout,
            },
        )
        .await?;
    Ok(Json(EmitResponse {
        recipients: outcome.recipients,
        acks: outcome.acks.map(|acks| {
            acks.into_iter()
                .map(|a| Ack {
                    socket_id: a.socket_id,
                    args: binary::encode_args(a.args, &a.attachments),
                })
                .collect()
        }),
        timed_out: outcome.timed_out,
    }))
}

async fn sockets_join(
    State(api): State<ManagementApi>,
    ns: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<MatchedResponse>, Problem> {
    let nsp = namespace(ns)?;
    let body: JoinBody = json_body(&api, &headers, body, None).await?;
    let selector = body.selector()?;
    model::room_list("join", &body.join)?;
    let matched = api
        .inner
        .ops
        .sockets_join(&nsp, &selector, &body.join)
        .await?;
    Ok(Json(MatchedResponse { matched }))
}

async fn sockets_leave(
    State(api): State<ManagementApi>,
    ns: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<MatchedResponse>, Problem> {
    let nsp = namespace(ns)?;
    let body: LeaveBody = json_body(&api, &headers, body, None).await?;
    let selector = body.selector()?;
    model::room_list("leave", &body.leave)?;
    let matched = api
        .inner
        .ops
        .sockets_leave(&nsp, &selector, &body.leave)
        .await?;
    Ok(Json(MatchedResponse { matched }))
}

async fn disconnect_sockets(
    State(api): State<ManagementApi>,
    ns: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<MatchedResponse>, Problem> {
    let nsp = namespace(ns)?;
    let body: DisconnectBody = json_body(&api, &headers, body, None).await?;
    let selector = body.selector()?;
    let matched = api
        .inner
        .ops
        .disconnect_sockets(&nsp, &selector, body.close)
        .await?;
    Ok(Json(MatchedResponse { matched }))
}

async fn fetch_sockets(
    State(api): State<ManagementApi>,
    ns: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<SocketsResponse>, Problem> {
    let nsp = namespace(ns)?;
    let body: FetchBody = json_body(&api, &headers, body, Some(FetchBody::default())).await?;
    fetch(&api, &nsp, &body).await
}

/// `GET .../sockets?rooms=a&rooms=b&socketIds=x&except=c`: the same as `POST .../fetch`.
async fn fetch_sockets_query(
    State(api): State<ManagementApi>,
    ns: Result<Path<String>, PathRejection>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<SocketsResponse>, Problem> {
    let nsp = namespace(ns)?;
    let Query(pairs) = query.map_err(|e| Problem::invalid(format!("bad query string: {e}")))?;
    let mut body = FetchBody::default();
    for (key, value) in pairs {
        let list = match key.as_str() {
            "rooms" => &mut body.rooms,
            "socketIds" => &mut body.socket_ids,
            "except" => &mut body.except,
            other => {
                return Err(Problem::invalid(format!(
                    "unknown query parameter {other:?} (expected rooms, socketIds or except)"
                )))
            }
        };
        list.get_or_insert_with(Vec::new).push(value);
    }
    fetch(&api, &nsp, &body).await
}

async fn fetch(
    api: &ManagementApi,
    nsp: &str,
    body: &FetchBody,
) -> Result<Json<SocketsResponse>, Problem> {
    let selector = body.selector()?;
    let sockets = api.inner.ops.fetch_sockets(nsp, &selector).await?;
    Ok(Json(SocketsResponse { sockets }))
}

async fn rooms(
    State(api): State<ManagementApi>,
    ns: Result<Path<String>, PathRejection>,
) -> Result<Json<RoomsResponse>, Problem> {
    let nsp = namespace(ns)?;
    let rooms = api.inner.ops.rooms(&nsp).await?;
    Ok(Json(RoomsResponse { rooms }))
}

#[cfg(test)]
mod tests;
