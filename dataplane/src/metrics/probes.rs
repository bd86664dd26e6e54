//! `/healthz` and `/readyz`: one answer for every listener that serves them (the metrics port,
//! which the operator's probes use, and the client port, for load balancers that can only
//! probe the port they send traffic to).

use http::{Response, StatusCode};

use crate::engine::response::Body;
use crate::engine::Engine;

/// Whether `path` is a probe's: the client port answers it before the engine.
pub fn is_probe(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz")
}

/// The answer to a probe at `path`, or `None` when `path` is not a probe ([`is_probe`]).
pub fn answer(engine: &Engine, path: &str) -> Option<Response<Body>> {
    match path {
        "/healthz" => Some(Response::new(Body::from("ok"))),
        // Not ready while warming up or draining, so load balancers send new clients elsewhere.
        "/readyz" if engine.is_ready() => Some(Response::new(Body::from("ok"))),
        "/readyz" => {
            let why = if engine.is_warming() {
                "warming up: not linked to every cluster member yet"
            } else {
                "draining"
            };
            let mut res = Response::new(Body::from(why));
            *res.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            Some(res)
        }
        _ => None,
    }
}
