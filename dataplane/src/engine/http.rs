//! The HTTP front of the engine: request validation, handshakes, error answers and CORS.
//! Error codes and statuses match the reference Node `engine.io` server.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;

use super::{polling, websocket, Engine, HandshakeInfo, Route};
use crate::config::TransportKind;

pub type Body = Full<Bytes>;

/// Engine.IO error answers: (code, message), as the reference server sends them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineError {
    UnknownTransport,
    UnknownSid,
    BadHandshakeMethod,
    BadRequest,
    Forbidden,
    UnsupportedProtocolVersion,
}

impl EngineError {
    pub fn code(self) -> u8 {
        match self {
            EngineError::UnknownTransport => 0,
            EngineError::UnknownSid => 1,
            EngineError::BadHandshakeMethod => 2,
            EngineError::BadRequest => 3,
            EngineError::Forbidden => 4,
            EngineError::UnsupportedProtocolVersion => 5,
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            EngineError::UnknownTransport => "Transport unknown",
            EngineError::UnknownSid => "Session ID unknown",
            EngineError::BadHandshakeMethod => "Bad handshake method",
            EngineError::BadRequest => "Bad request",
            EngineError::Forbidden => "Forbidden",
            EngineError::UnsupportedProtocolVersion => "Unsupported protocol version",
        }
    }

    fn status(self) -> StatusCode {
        match self {
            EngineError::Forbidden => StatusCode::FORBIDDEN,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

/// The query parameters the engine reads.
#[derive(Debug, Default)]
struct Query<'a> {
    eio: Option<&'a str>,
    transport: Option<&'a str>,
    sid: Option<&'a str>,
}

fn parse_query(query: &str) -> Query<'_> {
    let mut q = Query::default();
    for pair in query.split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "EIO" => q.eio = Some(value),
            "transport" => q.transport = Some(value),
            "sid" => q.sid = Some(value),
            _ => {}
        }
    }
    q
}

/// A copy of the request headers that owns its bytes. Header values parsed by hyper share
/// the connection's read buffer (8 KiB or more); keeping them for the session's lifetime
/// would keep that whole buffer alive per connection.
fn detached_headers(headers: &HeaderMap) -> HeaderMap {
    let mut copy = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        if let Ok(mut owned) = HeaderValue::from_bytes(value.as_bytes()) {
            owned.set_sensitive(value.is_sensitive());
            copy.append(name.clone(), owned);
        }
    }
    copy
}

fn is_websocket_upgrade(headers: &HeaderMap) -> bool {
    headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// Builds a response with the CORS headers this request deserves.
pub(super) struct Responder {
    cors: Option<(HeaderValue, bool)>,
}

impl Responder {
    fn new(engine: &Engine, headers: &HeaderMap) -> Self {
        let s = &engine.settings;
        let origin = headers.get(header::ORIGIN);
        let cors = match origin {
            Some(origin) if !s.cors_origins.is_empty() => {
                let any = s.cors_origins.iter().any(|o| o == "*");
                let listed = origin
                    .to_str()
                    .is_ok_and(|o| s.cors_origins.iter().any(|allowed| allowed == o));
                if any && !s.cors_credentials {
                    Some((HeaderValue::from_static("*"), false))
                } else if any || listed {
                    Some((origin.clone(), s.cors_credentials))
                } else {
                    None
                }
            }
            _ => None,
        };
        Self { cors }
    }

    pub fn build(
        &self,
        status: StatusCode,
        content_type: &'static str,
        body: impl Into<Bytes>,
    ) -> Response<Body> {
        let mut res = Response::new(Full::new(body.into()));
        *res.status_mut() = status;
        let h = res.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        if let Some((origin, credentials)) = &self.cors {
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
            if origin != "*" {
                h.insert(header::VARY, HeaderValue::from_static("Origin"));
            }
            if *credentials {
                h.insert(
                    header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                    HeaderValue::from_static("true"),
                );
            }
        }
        res
    }

    pub fn error(&self, error: EngineError) -> Response<Body> {
        let body = format!(
            r#"{{"code":{},"message":"{}"}}"#,
            error.code(),
            error.message()
        );
        self.build(error.status(), "application/json", body)
    }

    pub fn status_json(&self, status: StatusCode, code: u8, message: &str) -> Response<Body> {
        let body = serde_json::json!({ "code": code, "message": message }).to_string();
        self.build(status, "application/json", body)
    }

    fn preflight(&self, headers: &HeaderMap) -> Response<Body> {
        let mut res = self.build(StatusCode::NO_CONTENT, "text/plain", Bytes::new());
        let h = res.headers_mut();
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET,HEAD,PUT,PATCH,POST,DELETE"),
        );
        if let Some(requested) = headers.get(header::ACCESS_CONTROL_REQUEST_HEADERS) {
            h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, requested.clone());
            h.insert(
                header::VARY,
                HeaderValue::from_static("Origin, Access-Control-Request-Headers"),
            );
        }
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
        res
    }
}

impl Engine {
    /// Serves one HTTP request addressed to the engine path.
    pub async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        peer: SocketAddr,
    ) -> Response<Body> {
        let responder = Responder::new(&self, req.headers());
        if !req.uri().path().starts_with(self.settings.path.as_str()) {
            return responder.build(StatusCode::NOT_FOUND, "text/plain", "Not found");
        }
        if req.method() == Method::OPTIONS {
            return responder.preflight(req.headers());
        }
        let query_string = req.uri().query().unwrap_or("").to_string();
        let query = parse_query(&query_string);

        let transport = match query.transport {
            Some("polling") => TransportKind::Polling,
            Some("websocket") => TransportKind::Websocket,
            _ => return responder.error(EngineError::UnknownTransport),
        };
        if !self.settings.allows(transport) {
            return responder.error(EngineError::UnknownTransport);
        }
        if query.eio != Some("4") {
            return responder.error(EngineError::UnsupportedProtocolVersion);
        }
        let upgrade = is_websocket_upgrade(req.headers());
        if upgrade != (transport == TransportKind::Websocket) {
            return responder.error(EngineError::BadRequest);
        }

        match query.sid {
            None => {
                if req.method() != Method::GET {
                    return responder.error(EngineError::BadHandshakeMethod);
                }
                let handshake = HandshakeInfo {
                    headers: detached_headers(req.headers()),
                    query: query_string.clone(),
                    address: peer,
                    url: req.uri().to_string(),
                    time: std::time::SystemTime::now(),
                    secure: false,
                };
                if transport == TransportKind::Websocket {
                    return websocket::accept(self.clone(), req, &responder, None, Some(handshake));
                }
                let session = match self.create_session(transport, handshake) {
                    Ok(session) => session,
                    Err(refusal) => {
                        return responder.status_json(
                            StatusCode::SERVICE_UNAVAILABLE,
                            EngineError::Forbidden.code(),
                            refusal.message(),
                        )
                    }
                };
                let open = self.open_packet(&session, transport);
                responder.build(StatusCode::OK, "text/plain; charset=UTF-8", open)
            }
            Some(sid) => {
                match self.route(sid, req.headers()) {
                    Route::Local => {}
                    Route::Unknown => {
                        self.stats
                            .forward_unroutable
                            .fetch_add(1, Ordering::Relaxed);
                        return responder.error(EngineError::UnknownSid);
                    }
                    Route::Forward(target) => {
                        return self.forward(req, target, peer, upgrade, &responder).await;
                    }
                }
                let Some(session) = self.session(sid) else {
                    return responder.error(EngineError::UnknownSid);
                };
                if session.close_if_ping_overdue() {
                    return responder.error(EngineError::UnknownSid);
                }
                if session.is_closed() {
                    // A lingering closed polling session: its next GET collects what was
                    // queued (ending with the close packet); anything else finds no session.
                    self.remove_session(sid);
                    if !upgrade && *req.method() == Method::GET {
                        return polling::poll(&self, &session, &responder).await;
                    }
                    return responder.error(EngineError::UnknownSid);
                }
                if upgrade {
                    if !self.settings.allow_upgrades {
                        return responder.error(EngineError::BadRequest);
                    }
                    return websocket::accept(self.clone(), req, &responder, Some(session), None);
                }
                if session.transport() != TransportKind::Polling {
                    return responder.error(EngineError::BadRequest);
                }
                match *req.method() {
                    Method::GET => polling::poll(&self, &session, &responder).await,
                    Method::POST => polling::data(&self, &session, req, &responder).await,
                    _ => responder.error(EngineError::BadRequest),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parsing() {
        let q = parse_query("EIO=4&transport=polling&t=abc&sid=xyz");
        assert_eq!(q.eio, Some("4"));
        assert_eq!(q.transport, Some("polling"));
        assert_eq!(q.sid, Some("xyz"));
        let q = parse_query("");
        assert_eq!(q.eio, None);
    }

    #[test]
    fn error_codes_match_reference() {
        assert_eq!(EngineError::UnknownSid.code(), 1);
        assert_eq!(
            EngineError::UnsupportedProtocolVersion.message(),
            "Unsupported protocol version"
        );
    }
}
