//! Runtime pieces that need no cluster: backoff, the probe/metrics server, metrics encoding.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use roomcast_operator::controller::{backoff, BACKOFF_MAX};
use roomcast_operator::http::{serve, Health};
use roomcast_operator::metrics::Metrics;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[test]
fn backoff_doubles_up_to_the_cap() {
    assert_eq!(backoff(1), Duration::from_secs(1));
    assert_eq!(backoff(2), Duration::from_secs(2));
    assert_eq!(backoff(5), Duration::from_secs(16));
    assert_eq!(backoff(9), Duration::from_secs(256));
    assert_eq!(backoff(10), BACKOFF_MAX);
    assert_eq!(backoff(u32::MAX), BACKOFF_MAX);
}

async fn get(addr: std::net::SocketAddr, path: &str) -> (String, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).await.unwrap();
    let (head, body) = buf.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_string(), body.to_string())
}

#[tokio::test]
async fn probes_and_metrics_endpoints() {
    let health = Arc::new(Health::default());
    let metrics = Arc::new(Metrics::default());
    let (addr, task) = serve(
        "127.0.0.1:0".parse().unwrap(),
        health.clone(),
        metrics.clone(),
    )
    .await
    .unwrap();
    assert!(get(addr, "/healthz").await.0.contains(" 200 "));
    assert!(get(addr, "/readyz").await.0.contains(" 503 "));
    health.ready.store(true, Ordering::Relaxed);
    assert!(get(addr, "/readyz").await.0.contains(" 200 "));
    assert!(get(addr, "/nope").await.0.contains(" 404 "));

    metrics.observe("ok", Duration::from_millis(30));
    metrics.error("kube");
    metrics.leader.set(1);
    let (status, body) = get(addr, "/metrics").await;
    assert!(status.contains(" 200 "));
    for line in [
        "roomcast_operator_reconciles_total{result=\"ok\"} 1",
        "roomcast_operator_reconcile_errors_total{kind=\"kube\"} 1",
        "roomcast_operator_reconcile_duration_seconds_count 1",
        "roomcast_operator_leader 1",
    ] {
        assert!(body.contains(line), "missing {line:?} in\n{body}");
    }
    task.abort();
}
