//! Relaying a request to the session's owner: the request and its headers as the owner
//! must see them, the owner's answer as the client must see it, and the bytes of a
//! forwarded WebSocket spliced both ways.
//!
//! The [`Forwarder`] is all the engine holds for this: it needs the settings, this node's
//! id and the counters, not the engine itself.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::pool::{self, OwnerConnections};
use super::route::HOP_HEADER;
use super::{ForwardError, CONNECT_TIMEOUT};
use crate::engine::response::{Body, EngineError, Responder};
use crate::engine::settings::EngineSettings;
use crate::engine::stats::EngineStats;

/// Extra wait for an owner's answer beyond the longest a long-polling GET may be held.
const ANSWER_SLACK: Duration = Duration::from_secs(5);
/// Once one side of a spliced WebSocket has closed, how long the other may still drain.
const SPLICE_GRACE: Duration = Duration::from_secs(5);

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

/// Copies bytes both ways until both sides are done. Once one side has closed, the other
/// gets `SPLICE_GRACE` to drain: a client that vanished without a FIN must not keep the
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

/// The longest an owner may take to answer: a long-polling GET is held up to
/// pingInterval (a ping is due by then), so the wait must be longer than that.
fn answer_timeout(settings: &EngineSettings) -> Duration {
    settings
        .ping_interval
        .saturating_add(settings.ping_timeout)
        .saturating_add(ANSWER_SLACK)
}

/// The largest answer relayed: a polling payload of everything a session may queue,
/// binary frames base64-expanded.
fn answer_limit(settings: &EngineSettings) -> usize {
    settings
        .outbox
        .max_bytes
        .max(settings.max_payload)
        .saturating_mul(2)
}

/// Forwards requests for sessions other members own, and keeps idle connections to them.
pub struct Forwarder {
    /// This node's member id, the value of the hop mark.
    node_id: String,
    /// maxHttpBufferSize: the largest request body relayed.
    max_payload: usize,
    answer_timeout: Duration,
    answer_limit: usize,
    pub(super) pool: OwnerConnections,
    stats: Arc<EngineStats>,
}

impl Forwarder {
    pub fn new(settings: &EngineSettings, node_id: &str, stats: Arc<EngineStats>) -> Self {
        Self {
            node_id: node_id.to_string(),
            max_payload: settings.max_payload,
            answer_timeout: answer_timeout(settings),
            answer_limit: answer_limit(settings),
            pool: OwnerConnections::new(pool::idle_for(settings.header_read_timeout)),
            stats,
        }
    }

    /// Forwards a request for a session owned by the member at `target`.
    pub async fn forward(
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
            .is_some_and(|n| n > self.max_payload);
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
        let body = Limited::new(body, self.max_payload).boxed();
        let upstream = self.upstream_request(&parts, body, client, false)?;
        let (mut sender, reused) = self.pool.connection(target).await?;
        let wait = self.answer_timeout;
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
                    sender = pool::open(target).await?;
                    tokio::time::timeout(wait, sender.send_request(upstream))
                        .await
                        .map_err(|_| ForwardError::AnswerTimeout(wait))?
                        .map_err(classify)?
                }
                _ => return Err(classify(failed.into_error())),
            },
        };
        let answer = self.relay(res).await?;
        self.pool.give_back(target, sender);
        Ok(answer)
    }

    /// The owner's answer, as this node's answer to the client.
    async fn relay(&self, res: Response<Incoming>) -> Result<Response<Body>, ForwardError> {
        let (parts, body) = res.into_parts();
        let limit = self.answer_limit;
        let bytes = tokio::time::timeout(self.answer_timeout, Limited::new(body, limit).collect())
            .await
            .map_err(|_| ForwardError::AnswerTimeout(self.answer_timeout))?
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
        let stream = pool::connect(target).await?;
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
    use crate::engine::forward::{is_forwarded, Route, SessionRouter};
    use crate::engine::{ConnectionFactory, ConnectionHandler, Engine, HandshakeInfo, Session};

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
    #[test]
    fn answers_may_take_a_long_poll_and_hold_a_full_queue() {
        let mut config = crate::config::Config::default();
        config.engine.ping_interval = 1_000;
        config.engine.ping_timeout = 500;
        config.engine.max_http_buffer_size = 100;
        config.limits.max_outbound_bytes = 4_000;
        let settings = EngineSettings::from_config(&config);
        assert_eq!(
            answer_timeout(&settings),
            Duration::from_millis(1_500) + ANSWER_SLACK
        );
        assert_eq!(answer_limit(&settings), 8_000);
        config.engine.ping_interval = u64::MAX;
        config.limits.max_outbound_bytes = usize::MAX;
        let huge = EngineSettings::from_config(&config);
        assert!(answer_timeout(&huge) >= Duration::from_millis(u64::MAX));
        assert_eq!(answer_limit(&huge), usize::MAX);
    }

    struct Echo;

    impl ConnectionFactory for Echo {
        fn open(&self, session: &Arc<Session>, _: HandshakeInfo) -> Arc<dyn ConnectionHandler> {
            Arc::new(crate::engine::session::EchoHandler {
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
        assert_eq!(front.forwarder.pool.idle(owner_addr), 1);

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
