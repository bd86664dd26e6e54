//! The metrics listener (`metrics.listen`): `/metrics` for scrapers and the `/healthz` and
//! `/readyz` probes, on a port of its own so that clients never read the metrics and a
//! NetworkPolicy can open it to scrapers and the kubelet only. Hardened like the other
//! listeners: the shared accept loop (backs off on EMFILE) and a header read timeout.

use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use super::{probes, MetricsSource};
use crate::cluster::listen::AcceptBackoff;
use crate::engine::response::Body;

/// Content type of the Prometheus text exposition format.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Serves `source` on `listener` until `stop` resolves. Connections that do not send a
/// request's headers within `header_read_timeout` are closed. Runs through the client
/// endpoint's drain (the caller stops it after), so the kubelet sees `/readyz` fail then.
pub async fn serve(
    source: MetricsSource,
    listener: TcpListener,
    header_read_timeout: Duration,
    stop: impl Future<Output = ()>,
) {
    tokio::pin!(stop);
    let mut backoff = AcceptBackoff::new("metrics");
    while let Some((stream, peer)) = backoff.accept(&listener, stop.as_mut()).await {
        let source = source.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| {
                let answer = route(&source, &req);
                async move { Ok::<_, Infallible>(answer) }
            });
            let result = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_read_timeout)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(error) = result {
                tracing::debug!(%error, %peer, "metrics connection ended with an error");
            }
        });
    }
}

fn route<B>(source: &MetricsSource, req: &Request<B>) -> Response<Body> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return status(StatusCode::METHOD_NOT_ALLOWED);
    }
    let path = req.uri().path();
    if path == "/metrics" {
        let mut res = Response::new(Body::from(source.render()));
        res.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static(CONTENT_TYPE),
        );
        return res;
    }
    probes::answer(&source.engine, path).unwrap_or_else(|| status(StatusCode::NOT_FOUND))
}

fn status(code: StatusCode) -> Response<Body> {
    let mut res = Response::new(Body::from(code.canonical_reason().unwrap_or_default()));
    *res.status_mut() = code;
    res
}
