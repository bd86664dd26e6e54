//! The HTTP entry point of the engine ([`Engine::handle`]): request validation,
//! handshakes, and the dispatch of each request to its transport or to the session's owner.
//! Error codes and statuses match the reference Node `engine.io` server.
//!
//! Named `router` (it was `engine::http`) so that it does not shadow the `http` crate. It
//! is the top of the engine: nothing in the engine uses it.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use http::{header, HeaderMap, Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use super::forward::route::Route;
use super::request::{header_bytes, parse_query};
use super::response::{Body, EngineError, Responder};
use super::sessions::Engine;
use super::{polling, websocket, HandshakeInfo, Headers};
use crate::config::TransportKind;

fn is_websocket_upgrade(headers: &HeaderMap) -> bool {
    headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

impl Engine {
    /// Serves one HTTP request addressed to the engine path.
    pub async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        peer: SocketAddr,
    ) -> Response<Body> {
        let responder = Responder::new(&self.settings, req.headers());
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
                // The headers are kept with the session: bounded before anything is kept.
                let pairs = req
                    .headers()
                    .iter()
                    .map(|(n, v)| (n.as_str(), v.as_bytes()));
                if header_bytes(pairs) > self.settings.max_handshake_header_bytes {
                    return responder.status_json(
                        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                        EngineError::BadRequest.code(),
                        "Request headers too large",
                    );
                }
                let handshake = HandshakeInfo {
                    headers: Headers::from_map(req.headers()),
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
                            refusal.status(),
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
                        return self
                            .forwarder
                            .forward(req, target, peer, upgrade, &responder)
                            .await;
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
