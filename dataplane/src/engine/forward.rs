//! No sticky sessions: Engine.IO requests for a session another node owns are forwarded to
//! that node (the owner is named by the session id). Plain HTTP requests are proxied with
//! hyper; WebSocket upgrades are upgraded on both sides and the bytes spliced.
//!
//! The engine does not know the cluster: a [`SessionRouter`] tells it where a member serves
//! clients. A forwarded request carries [`HOP_HEADER`], and a node never forwards such a
//! request again (it answers as for an unknown session), so a stale route cannot loop.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full, Limited};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::http::{Body, EngineError, Responder};
use super::{sid, Engine};

/// Marks a request one node forwarded to another; its value is the forwarding node's id.
pub const HOP_HEADER: &str = "x-roomcast-forwarded";
/// How long a connection to the owner may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Extra wait for an owner's answer beyond the longest a long-polling GET may be held.
const ANSWER_SLACK: Duration = Duration::from_secs(5);
/// Once one side of a spliced WebSocket has closed, how long the other may still drain.
const SPLICE_GRACE: Duration = Duration::from_secs(5);
/// How long an idle connection to an owner is kept for reuse: well under the 10 s after
/// which the owner's server drops a connection that sends no request.
const IDLE_FOR: Duration = Duration::from_secs(5);
/// Idle connections kept per owner.
const IDLE_PER_OWNER: usize = 32;
/// How long a reused connection may take to say it is ready.
const READY_TIMEOUT: Duration = Duration::from_millis(500);

/// The body of a forwarded polling request: the client's, capped at maxHttpBufferSize.
type ForwardBody = BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// Idle HTTP/1 connections to owners, reused by later forwards: a polling client behind a
/// round-robin balancer sends a request a few times per ping interval, and a new connection
/// for each would leave the forwarding node with a socket in TIME_WAIT per request.
#[derive(Default)]
pub(super) struct OwnerConnections {
    idle: Mutex<HashMap<SocketAddr, Vec<Idle>>>,
}

/// A connection to an owner and since when it is idle.
type Idle = (SendRequest<ForwardBody>, Instant);

impl OwnerConnections {
    /// The most recently used idle connection to `target` that may still be open.
    fn take(&self, target: SocketAddr) -> Option<SendRequest<ForwardBody>> {
        let mut idle = self.idle.lock();
        let list = idle.get_mut(&target)?;
        while let Some((sender, since)) = list.pop() {
            if since.elapsed() < IDLE_FOR && !sender.is_closed() {
                return Some(sender);
            }
        }
        None
    }

    /// Keeps a connection whose last answer was read whole, for the next forward.
    fn give_back(&self, target: SocketAddr, sender: SendRequest<ForwardBody>) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.idle.lock();
        let list = idle.entry(target).or_default();
        list.retain(|(s, since)| since.elapsed() < IDLE_FOR && !s.is_closed());
        if list.len() < IDLE_PER_OWNER {
            list.push((sender, Instant::now()));
        }
    }

    /// Idle connections kept for `target`.
    #[cfg(test)]
    fn idle(&self, target: SocketAddr) -> usize {
        self.idle.lock().get(&target).map_or(0, Vec::len)
    }
}

/// Where a session's requests are served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Here.
    Local,
    /// At the member serving clients on this address.
    Forward(SocketAddr),
    /// Nowhere reachable: answered as an unknown session.
    Unknown,
}

/// Tells the engine where a member of the cluster serves clients.
pub trait SessionRouter: Send + Sync {
    /// The route to the sessions that member `owner` owns.
    fn route(&self, owner: &str) -> Route;
}

/// The route of a request for session `sid` arriving at member `me`. A request already
/// forwarded once is only served by the owner itself.
pub fn decide(sid: &str, me: &str, forwarded: bool, router: Option<&dyn SessionRouter>) -> Route {
    let Some(owner) = sid::owner_of(sid) else {
        // Not a sid this cluster made: the local lookup answers it as unknown.
        return Route::Local;
    };
    if owner == me {
        return Route::Local;
    }
    if forwarded {
        return Route::Unknown;
    }
    match router {
        Some(router) => router.route(&owner),
        // A single node: only its own sessions exist.
        None => Route::Unknown,
    }
}

/// A failed exchange with the owner; a body over the limit is the client's fault.
fn classify(error: hyper::Error) -> ForwardError {
    let too_large = std::error::Error::source(&error)
        .is_some_and(|e| e.is::<http_body_util::LengthLimitError>());
    if too_large {
        ForwardError::TooLarge
    } else {
        ForwardError::Http(error)
    }
}

/// Whether another node already forwarded this request.
pub fn is_forwarded(headers: &HeaderMap) -> bool {
    headers.contains_key(HOP_HEADER)
}

/// Why a forward failed (logged; the client gets a 502 or 413).
#[derive(Debug, thiserror::Error)]
enum ForwardError {
    #[error("cannot connect to the owner: {0}")]
    Connect(#[source] std::io::Error),
    #[error("no connection to the owner within {0:?}")]
    ConnectTimeout(Duration),
    #[error("http exchange with the owner failed: {0}")]
    Http(#[from] hyper::Error),
    #[error("no answer from the owner within {0:?}")]
    AnswerTimeout(Duration),
    #[error("cannot build the request for the owner: {0}")]
    Build(#[from] http::Error),
    #[error("the request body is over maxHttpBufferSize")]
    TooLarge,
    #[error("the owner's answer is over {0} bytes or broken")]
    Answer(usize),
}

/// Headers that belong to one connection, never copied to the next hop.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// `headers` without the hop-by-hop ones (and those the `Connection` header names); an
/// upgrade keeps `Connection: upgrade` and its `Upgrade` header, which the next hop needs.
fn end_to_end(headers: &HeaderMap, upgrade: bool) -> HeaderMap {
    let named: Vec<String> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|v| v.trim().to_ascii_lowercase())
        .filter(|v| !v.is_empty())
        .collect();
    let mut out = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        let dropped = HOP_BY_HOP.contains(name)
            || (*name == header::UPGRADE && !upgrade)
            || named
                .iter()
                .any(|n| n == name.as_str() && *name != header::UPGRADE);
        if !dropped {
            out.append(name.clone(), value.clone());
        }
    }
    if upgrade {
        out.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
    out
}

/// The headers of the request to the owner: the client's end-to-end headers (cookies,
/// Origin, Host...), `x-forwarded-for` extended with the client's IP, and the hop mark.
fn upstream_headers(headers: &HeaderMap, client: SocketAddr, me: &str, upgrade: bool) -> HeaderMap {
    let mut out = end_to_end(headers, upgrade);
    let ip = client.ip().to_string();
    let chain = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(earlier) if !earlier.trim().is_empty() => format!("{earlier}, {ip}"),
        _ => ip,
    };
    if let Ok(value) = HeaderValue::from_str(&chain) {
        out.insert(HeaderName::from_static("x-forwarded-for"), value);
    }
    let mark = HeaderValue::from_str(me).unwrap_or_else(|_| HeaderValue::from_static("1"));
    out.insert(HeaderName::from_static(HOP_HEADER), mark);
    out
}

async fn connect(target: SocketAddr) -> Result<TcpStream, ForwardError> {
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(target))
        .await
        .map_err(|_| ForwardError::ConnectTimeout(CONNECT_TIMEOUT))?
        .map_err(ForwardError::Connect)?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// Copies bytes both ways until both sides are done. Once one side has closed, the other
/// gets [`SPLICE_GRACE`] to drain: a client that vanished without a FIN must not keep the
/// task (and the owner's socket) forever. Returns the bytes copied (to `b`, to `a`).
pub async fn splice<A, B>(a: A, b: B) -> (u64, u64)
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let (mut a_read, mut a_write) = tokio::io::split(a);
    let (mut b_read, mut b_write) = tokio::io::split(b);
    let forward = async {
        let n = tokio::io::copy(&mut a_read, &mut b_write)
            .await
            .unwrap_or(0);
        let _ = b_write.shutdown().await;
        n
    };
    let backward = async {
        let n = tokio::io::copy(&mut b_read, &mut a_write)
            .await
            .unwrap_or(0);
        let _ = a_write.shutdown().await;
        n
    };
    tokio::pin!(forward, backward);
    tokio::select! {
        up = &mut forward => {
            let down = tokio::time::timeout(SPLICE_GRACE, backward).await.unwrap_or(0);
            (up, down)
        }
        down = &mut backward => {
            let up = tokio::time::timeout(SPLICE_GRACE, forward).await.unwrap_or(0);
            (up, down)
        }
    }
}

impl Engine {
    /// Where the requests of session `sid` are served.
    pub(super) fn route(&self, sid: &str, headers: &HeaderMap) -> Route {
        let router = self.router.get().map(|r| r.as_ref());
        decide(sid, &self.node_id, is_forwarded(headers), router)
    }

    /// Forwards a request for a session owned by the member at `target`.
    pub(super) async fn forward(
        &self,
        req: Request<Incoming>,
        target: SocketAddr,
        client: SocketAddr,
        upgrade: bool,
        responder: &Responder,
    ) -> Response<Body> {
        let method = req.method().clone();
        let result = if upgrade {
            self.forward_upgrade(req, target, client).await
        } else {
            self.forward_http(req, target, client).await
        };
        match result {
            Ok(res) => {
                let counter = if upgrade {
                    &self.stats.forwarded_upgrades
                } else {
                    &self.stats.forwarded_requests
                };
                counter.fetch_add(1, Ordering::Relaxed);
                res
            }
            Err(error) => {
                self.stats.forward_failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%target, %client, %method, upgrade, %error, "cannot forward a request to its session's owner");
                match error {
                    ForwardError::TooLarge => responder.status_json(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        EngineError::BadRequest.code(),
                        "Payload too large",
                    ),
                    _ => responder.status_json(
                        StatusCode::BAD_GATEWAY,
                        EngineError::UnknownSid.code(),
                        "Session owner unreachable",
                    ),
                }
            }
        }
    }

    /// The longest an owner may take to answer: a long-polling GET is held up to
    /// pingInterval (a ping is due by then), so the wait must be longer than that.
    fn answer_timeout(&self) -> Duration {
        self.settings.ping_interval + self.settings.ping_timeout + ANSWER_SLACK
    }

    /// The largest answer relayed: a polling payload of everything a session may queue,
    /// binary frames base64-expanded.
    fn answer_limit(&self) -> usize {
        self.settings
            .outbox
            .max_bytes
            .max(self.settings.max_payload)
            .saturating_mul(2)
    }

    fn upstream_request<B>(
        &self,
        parts: &http::request::Parts,
        body: B,
        client: SocketAddr,
        upgrade: bool,
    ) -> Result<Request<B>, ForwardError> {
        let path = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        let mut req = Request::builder()
            .method(parts.method.clone())
            .uri(path)
            .body(body)?;
        *req.headers_mut() = upstream_headers(&parts.headers, client, &self.node_id, upgrade);
        Ok(req)
    }

    /// A new HTTP/1 connection to `target`, its driver running on its own task.
    async fn open(target: SocketAddr) -> Result<SendRequest<ForwardBody>, ForwardError> {
        let stream = connect(target).await?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            if let Err(error) = conn.await {
                tracing::debug!(%target, %error, "connection to a session's owner ended");
            }
        });
        Ok(sender)
    }

    /// A connection to `target` ready for a request: an idle one if it still works, else
    /// a new one. Also says whether it was reused.
    async fn connection(
        &self,
        target: SocketAddr,
    ) -> Result<(SendRequest<ForwardBody>, bool), ForwardError> {
        while let Some(mut sender) = self.owners.take(target) {
            if let Ok(Ok(())) = tokio::time::timeout(READY_TIMEOUT, sender.ready()).await {
                return Ok((sender, true));
            }
        }
        Ok((Self::open(target).await?, false))
    }

    async fn forward_http(
        &self,
        req: Request<Incoming>,
        target: SocketAddr,
        client: SocketAddr,
    ) -> Result<Response<Body>, ForwardError> {
        let (parts, body) = req.into_parts();
        // The owner refuses a declared oversized body at once (and closes the session), and
        // may drop the connection while the body is still streaming: whichever error the
        // exchange then ends with, the answer is the owner's 413.
        let declared_too_large = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok())
            .is_some_and(|n| n > self.settings.max_payload);
        let result = self.exchange(parts, body, target, client).await;
        match result {
            Err(_) if declared_too_large => Err(ForwardError::TooLarge),
            other => other,
        }
    }

    async fn exchange(
        &self,
        parts: http::request::Parts,
        body: Incoming,
        target: SocketAddr,
        client: SocketAddr,
    ) -> Result<Response<Body>, ForwardError> {
        let body = Limited::new(body, self.settings.max_payload).boxed();
        let upstream = self.upstream_request(&parts, body, client, false)?;
        let (mut sender, reused) = self.connection(target).await?;
        let wait = self.answer_timeout();
        let sent = match tokio::time::timeout(wait, sender.try_send_request(upstream)).await {
            Err(_) => return Err(ForwardError::AnswerTimeout(wait)),
            Ok(sent) => sent,
        };
        let res = match sent {
            Ok(res) => res,
            Err(mut failed) => match failed.take_message() {
                // A reused connection the owner closed before the request went out: once
                // more on a new one (nothing of the request was sent).
                Some(upstream) if reused => {
                    sender = Self::open(target).await?;
                    tokio::time::timeout(wait, sender.send_request(upstream))
                        .await
                        .map_err(|_| ForwardError::AnswerTimeout(wait))?
                        .map_err(classify)?
                }
                _ => return Err(classify(failed.into_error())),
            },
        };
        let answer = self.relay(res).await?;
        self.owners.give_back(target, sender);
        Ok(answer)
    }

    /// The owner's answer, as this node's answer to the client.
    async fn relay(&self, res: Response<Incoming>) -> Result<Response<Body>, ForwardError> {
        let (parts, body) = res.into_parts();
        let limit = self.answer_limit();
        let bytes =
            tokio::time::timeout(self.answer_timeout(), Limited::new(body, limit).collect())
                .await
                .map_err(|_| ForwardError::AnswerTimeout(self.answer_timeout()))?
                .map_err(|_| ForwardError::Answer(limit))?
                .to_bytes();
        let mut out = Response::new(Full::new(bytes));
        *out.status_mut() = parts.status;
        let mut headers = end_to_end(&parts.headers, false);
        // Recomputed for the whole body by hyper.
        headers.remove(header::CONTENT_LENGTH);
        *out.headers_mut() = headers;
        Ok(out)
    }

    async fn forward_upgrade(
        &self,
        mut req: Request<Incoming>,
        target: SocketAddr,
        client: SocketAddr,
    ) -> Result<Response<Body>, ForwardError> {
        let client_side = hyper::upgrade::on(&mut req);
        let (parts, _) = req.into_parts();
        // An upgraded connection is never reused: it gets one of its own.
        let upstream = self.upstream_request(&parts, Empty::<Bytes>::new(), client, true)?;
        let stream = connect(target).await?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            if let Err(error) = conn.with_upgrades().await {
                tracing::debug!(%target, %error, "upgraded connection to a session's owner ended");
            }
        });
        // The owner answers an upgrade at once (101, or an error for an unknown session).
        let mut res = tokio::time::timeout(CONNECT_TIMEOUT, sender.send_request(upstream))
            .await
            .map_err(|_| ForwardError::AnswerTimeout(CONNECT_TIMEOUT))??;
        if res.status() != StatusCode::SWITCHING_PROTOCOLS {
            return self.relay(res).await;
        }
        let owner_side = hyper::upgrade::on(&mut res);
        tokio::spawn(async move {
            match tokio::try_join!(client_side, owner_side) {
                Ok((client_io, owner_io)) => {
                    let (up, down) = splice(TokioIo::new(client_io), TokioIo::new(owner_io)).await;
                    tracing::debug!(%target, %client, up, down, "forwarded websocket closed");
                }
                Err(error) => {
                    tracing::debug!(%target, %client, %error, "forwarded websocket upgrade failed");
                }
            }
        });
        let mut out = Response::new(Full::new(Bytes::new()));
        *out.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        *out.headers_mut() = end_to_end(res.headers(), true);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    struct Table;

    impl SessionRouter for Table {
        fn route(&self, owner: &str) -> Route {
            match owner {
                "hub-1" => Route::Forward(SocketAddr::from(([127, 0, 0, 12], 3000))),
                _ => Route::Unknown,
            }
        }
    }

    fn sid_of(node: &str) -> String {
        sid::SidGenerator::new(node).session_id()
    }

    #[test]
    fn router_decisions() {
        let router: &dyn SessionRouter = &Table;
        let at_hub1 = Route::Forward(SocketAddr::from(([127, 0, 0, 12], 3000)));
        assert_eq!(
            decide(&sid_of("hub-0"), "hub-0", false, Some(router)),
            Route::Local
        );
        assert_eq!(
            decide(&sid_of("hub-1"), "hub-0", false, Some(router)),
            at_hub1
        );
        // Forwarded once: only the owner serves it, never a second hop.
        assert_eq!(
            decide(&sid_of("hub-1"), "hub-0", true, Some(router)),
            Route::Unknown
        );
        assert_eq!(
            decide(&sid_of("hub-0"), "hub-0", true, Some(router)),
            Route::Local
        );
        assert_eq!(
            decide(&sid_of("hub-9"), "hub-0", false, Some(router)),
            Route::Unknown
        );
        assert_eq!(
            decide(&sid_of("hub-1"), "hub-0", false, None),
            Route::Unknown
        );
        // Garbage ids fall through to the local table, which does not know them either.
        assert_eq!(decide("short", "hub-0", false, Some(router)), Route::Local);
        assert_eq!(
            decide("AAAAAAAAAAAAAAAA%%%", "hub-0", false, Some(router)),
            Route::Local
        );
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| (HeaderName::from_static(k), HeaderValue::from_static(v)))
            .collect()
    }

    #[test]
    fn forwarded_requests_are_marked_and_keep_end_to_end_headers() {
        let h = headers(&[
            ("cookie", "io=abc"),
            ("origin", "http://app.test"),
            ("host", "lb:3000"),
            ("connection", "keep-alive, x-private"),
            ("x-private", "1"),
            ("transfer-encoding", "chunked"),
            ("x-forwarded-for", "10.1.1.1"),
        ]);
        assert!(!is_forwarded(&h));
        let client = SocketAddr::from(([127, 0, 0, 10], 5555));
        let out = upstream_headers(&h, client, "hub-0", false);
        assert!(is_forwarded(&out));
        assert_eq!(out[HOP_HEADER], "hub-0");
        assert_eq!(out[header::COOKIE], "io=abc");
        assert_eq!(out[header::ORIGIN], "http://app.test");
        assert_eq!(out[header::HOST], "lb:3000");
        assert_eq!(out["x-forwarded-for"], "10.1.1.1, 127.0.0.10");
        for gone in ["connection", "x-private", "transfer-encoding"] {
            assert!(!out.contains_key(gone), "{gone} copied");
        }
    }

    #[test]
    fn upgrades_keep_their_upgrade_headers() {
        let h = headers(&[
            ("connection", "Upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-key", "k"),
        ]);
        let client = SocketAddr::from(([127, 0, 0, 1], 1));
        let out = upstream_headers(&h, client, "hub-0", true);
        assert_eq!(out[header::CONNECTION], "upgrade");
        assert_eq!(out[header::UPGRADE], "websocket");
        assert_eq!(out[header::SEC_WEBSOCKET_KEY], "k");
        assert_eq!(out["x-forwarded-for"], "127.0.0.1");
        let plain = upstream_headers(&h, client, "hub-0", false);
        assert!(!plain.contains_key(header::UPGRADE));
    }

    /// Echoes every message (the engine conformance handler).
    struct Echo;

    impl super::super::ConnectionFactory for Echo {
        fn open(
            &self,
            session: &Arc<super::super::Session>,
            _: super::super::HandshakeInfo,
        ) -> Arc<dyn super::super::ConnectionHandler> {
            Arc::new(super::super::session::EchoHandler {
                session: Arc::downgrade(session),
            })
        }
    }

    /// Every other member's sessions are at one address.
    struct To(SocketAddr);

    impl SessionRouter for To {
        fn route(&self, _: &str) -> Route {
            Route::Forward(self.0)
        }
    }

    /// An engine-only node on a loopback port; stops when the sender is dropped or fires.
    async fn node(
        id: &str,
        router: Option<Arc<dyn SessionRouter>>,
    ) -> (SocketAddr, Arc<Engine>, tokio::sync::oneshot::Sender<()>) {
        let mut config = crate::config::Config {
            node_id: id.into(),
            ..Default::default()
        };
        config.engine.ping_interval = 500;
        let server = crate::server::Server::engine_only(&config, Arc::new(Echo));
        if let Some(router) = router {
            assert!(server.engine().set_router(router));
        }
        let engine = server.engine().clone();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(server.run(listener, async {
            let _ = stopped.await;
        }));
        (addr, engine, stop)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn polling_requests_reach_the_owner_through_another_node() {
        let (owner_addr, _owner, stop_owner) = node("hub-1", None).await;
        let (front_addr, front, _stop_front) = node("hub-0", Some(Arc::new(To(owner_addr)))).await;
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        let url = |addr: SocketAddr, sid: &str| {
            format!("http://{addr}/socket.io/?EIO=4&transport=polling&sid={sid}")
        };
        let open = http
            .get(format!(
                "http://{owner_addr}/socket.io/?EIO=4&transport=polling"
            ))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let open: serde_json::Value = serde_json::from_str(&open[1..]).unwrap();
        let sid = open["sid"].as_str().unwrap().to_string();
        let count = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);

        let posted = http
            .post(url(front_addr, &sid))
            .body("4hello")
            .send()
            .await
            .unwrap();
        assert_eq!(posted.status(), 200);
        let got = http.get(url(front_addr, &sid)).send().await.unwrap();
        assert_eq!(got.text().await.unwrap(), "4hello");
        // A long poll with nothing queued is held until the ping, not cut short.
        let started = std::time::Instant::now();
        let ping = http.get(url(front_addr, &sid)).send().await.unwrap();
        assert_eq!(ping.text().await.unwrap(), "2");
        assert!(started.elapsed() >= Duration::from_millis(200));
        assert_eq!(count(&front.stats.forwarded_requests), 3);
        // One after the other, the three forwards shared one connection to the owner.
        assert_eq!(front.owners.idle(owner_addr), 1);

        // Marked as forwarded already: never forwarded again.
        let marked = http
            .post(url(front_addr, &sid))
            .header(HOP_HEADER, "hub-x")
            .body("3")
            .send()
            .await
            .unwrap();
        assert_eq!(marked.status(), 400);
        assert_eq!(
            marked.text().await.unwrap(),
            r#"{"code":1,"message":"Session ID unknown"}"#
        );
        assert_eq!(count(&front.stats.forward_unroutable), 1);
        assert_eq!(count(&front.stats.forwarded_requests), 3);

        // An owner nothing listens for: the forward fails cleanly.
        let gone = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let gone_addr = gone.local_addr().unwrap();
        drop(gone);
        let (lost_addr, lost, _stop_lost) = node("hub-2", Some(Arc::new(To(gone_addr)))).await;
        let failed = http.get(url(lost_addr, &sid)).send().await.unwrap();
        assert_eq!(failed.status(), 502);
        assert_eq!(count(&lost.stats.forward_failures), 1);
        let _ = stop_owner.send(());
    }

    #[tokio::test(start_paused = true)]
    async fn splice_copies_both_ways_and_ends_when_one_side_closes() {
        let (client, proxy_a) = tokio::io::duplex(64);
        let (proxy_b, owner) = tokio::io::duplex(64);
        let task = tokio::spawn(splice(proxy_a, proxy_b));
        let (mut client_r, mut client_w) = tokio::io::split(client);
        let (mut owner_r, mut owner_w) = tokio::io::split(owner);
        use tokio::io::AsyncReadExt;
        client_w.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        owner_r.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping");
        owner_w.write_all(b"pong!").await.unwrap();
        owner_w.shutdown().await.unwrap();
        drop(owner_w);
        drop(owner_r);
        let mut got = Vec::new();
        client_r.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"pong!");
        // The client never closes its side: the splice still ends after the grace period.
        let (_, down) = tokio::time::timeout(SPLICE_GRACE * 2, task)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(down, 5);
    }
}
