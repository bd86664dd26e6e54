//! Connected clients and linked app instances per hub, for `kubectl get socketiohubs`: read
//! from the `roomcast_connections` and `roomcast_app_links` gauges on each ready hub pod's
//! metrics port, bounded (timeout, body size, pods per hub) and refreshed at most once per
//! interval by one loop, separate from the reconciler so that a slow or unreachable pod never
//! delays or fails a reconcile.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use futures_util::future::join_all;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ApiResource, DynamicObject, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::{debug, warn};

use crate::builders::{APP_NAME, MANAGER, METRICS_PORT};
use crate::crd::{SocketIOHub, GROUP, VERSION};
use crate::metrics::Metrics;
use crate::scope::Scope;

/// The data plane's gauge of open sessions (dataplane/src/metrics/exported.txt).
pub const CONNECTIONS_GAUGE: &str = "roomcast_connections";
/// The data plane's gauge of app instances linked to a pod. Every instance links to every
/// pod, so the most any pod reports is the number of instances.
pub const APP_LINKS_GAUGE: &str = "roomcast_app_links";

/// Bounds of the stats reads (`--stats-*` flags).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatsLimits {
    /// Connect plus response, per pod.
    pub timeout: Duration,
    /// Bytes of a `/metrics` response read at most; a longer one counts as a failure.
    pub max_body_bytes: usize,
    /// Ready pods read per hub (the first by name); `connectedClients` then counts only them.
    pub max_pods: usize,
    /// Time between two rounds over all hubs (the cache lifetime of the count).
    pub refresh: Duration,
    /// The hubs' metrics port (the pod template's `metrics` port).
    pub port: u16,
}

impl Default for StatsLimits {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(2),
            max_body_bytes: 1 << 20,
            max_pods: 32,
            refresh: Duration::from_secs(30),
            port: METRICS_PORT_U16,
        }
    }
}

const METRICS_PORT_U16: u16 = METRICS_PORT as u16;

/// Why reading one pod failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ScrapeError {
    #[error("timed out")]
    Timeout,
    #[error("i/o: {0}")]
    Io(String),
    #[error("response larger than {0} bytes")]
    TooLarge(usize),
    #[error("HTTP status line {0:?}")]
    Status(String),
    #[error("no {CONNECTIONS_GAUGE} sample")]
    NoSample,
}

/// Sum of the `roomcast_connections` samples of a Prometheus text exposition (any labels);
/// `None` when there is none. Other metrics sharing the prefix (`roomcast_connections_limit`)
/// do not count.
pub fn parse_connections(body: &str) -> Option<u64> {
    parse_gauge(body, CONNECTIONS_GAUGE)
}

/// Sum of the samples of gauge `name` (any labels); `None` when there is none. Other metrics
/// whose name starts with `name` (`roomcast_app_links_refused_total`) do not count.
pub fn parse_gauge(body: &str, name: &str) -> Option<u64> {
    let mut total: Option<u64> = None;
    for line in body.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let value = if let Some(labelled) = rest.strip_prefix('{') {
            labelled.rsplit_once('}').map(|(_, v)| v)
        } else if rest.starts_with(' ') {
            Some(rest)
        } else {
            None // another metric with the same prefix
        };
        let Some(v) = value
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<f64>().ok())
            .filter(|v| v.is_finite() && *v >= 0.0)
        else {
            continue;
        };
        // A gauge of sessions is an integer; the cast saturates.
        total = Some(total.unwrap_or(0).saturating_add(v as u64));
    }
    total
}

/// The pods to read: ready ones with an IP, the first `max` by name (so that the same pods
/// are read each round).
pub fn pods_to_read(pods: &[Pod], max: usize) -> Vec<(String, IpAddr)> {
    let mut out: Vec<(String, IpAddr)> = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| {
            p.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .filter_map(|p| {
            let ip = p.status.as_ref()?.pod_ip.as_ref()?.parse().ok()?;
            Some((p.name_any(), ip))
        })
        .collect();
    out.sort();
    out.truncate(max);
    out
}

/// What one pod's metrics say.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PodStats {
    /// `roomcast_connections`.
    pub connections: u64,
    /// `roomcast_app_links`; `None` from a data plane without app link metrics.
    pub app_links: Option<u64>,
}

/// `GET /metrics` on `ip:port` (HTTP/1.0, so the body ends with the connection), at most
/// `limits.max_body_bytes` read, all within `limits.timeout`.
pub async fn scrape(ip: IpAddr, port: u16, limits: &StatsLimits) -> Result<PodStats, ScrapeError> {
    let read = async {
        let mut s = tokio::net::TcpStream::connect((ip, port))
            .await
            .map_err(|e| ScrapeError::Io(e.to_string()))?;
        s.write_all(b"GET /metrics HTTP/1.0\r\nAccept: text/plain\r\n\r\n")
            .await
            .map_err(|e| ScrapeError::Io(e.to_string()))?;
        let mut buf = Vec::new();
        // One byte over the cap tells a response of exactly the cap from a longer one.
        let cap = limits.max_body_bytes.saturating_add(1);
        s.take(cap as u64)
            .read_to_end(&mut buf)
            .await
            .map_err(|e| ScrapeError::Io(e.to_string()))?;
        if buf.len() >= cap {
            return Err(ScrapeError::TooLarge(limits.max_body_bytes));
        }
        let text = String::from_utf8_lossy(&buf);
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let status = head.lines().next().unwrap_or_default();
        if status.split_whitespace().nth(1) != Some("200") {
            return Err(ScrapeError::Status(status.chars().take(80).collect()));
        }
        let connections = parse_connections(body).ok_or(ScrapeError::NoSample)?;
        Ok(PodStats {
            connections,
            app_links: parse_gauge(body, APP_LINKS_GAUGE),
        })
    };
    tokio::time::timeout(limits.timeout, read)
        .await
        .map_err(|_| ScrapeError::Timeout)?
}

/// What the status shows of one hub's pods.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HubStats {
    /// Sum of the pods' connections; `None` when no pod answered (or none is ready).
    pub connected_clients: Option<u64>,
    /// Most app links any answering pod has (each instance links to every pod); `None` when
    /// no pod answered with the gauge.
    pub linked_app_instances: Option<u64>,
}

/// Connected clients and linked app instances of one hub, from the pods read. Failures are
/// counted in `metrics`, never returned.
pub async fn hub_stats(
    pods: &[Pod],
    port: u16,
    limits: &StatsLimits,
    metrics: &Metrics,
) -> HubStats {
    let targets = pods_to_read(pods, limits.max_pods);
    let results = join_all(targets.iter().map(|(_, ip)| scrape(*ip, port, limits))).await;
    let mut stats = HubStats::default();
    for ((pod, _), r) in targets.iter().zip(results) {
        match r {
            Ok(p) => {
                stats.connected_clients = Some(
                    stats
                        .connected_clients
                        .unwrap_or(0)
                        .saturating_add(p.connections),
                );
                if let Some(links) = p.app_links {
                    stats.linked_app_instances =
                        Some(stats.linked_app_instances.unwrap_or(0).max(links));
                }
            }
            Err(e) => {
                metrics.stats_failures.inc();
                debug!(pod = %pod, error = %e, "reading the pod's metrics failed");
            }
        }
    }
    stats
}

/// Connected clients of one hub: the sum over the pods read; `None` when no pod answered
/// (or none is ready). Failures are counted in `metrics`, never returned.
pub async fn hub_connections(
    pods: &[Pod],
    port: u16,
    limits: &StatsLimits,
    metrics: &Metrics,
) -> Option<u64> {
    hub_stats(pods, port, limits, metrics)
        .await
        .connected_clients
}

/// What the status should show: `linkedAppInstances` only for a hub with app links on.
pub fn status_counts(stats: HubStats, app_link: bool) -> HubStats {
    HubStats {
        connected_clients: stats.connected_clients,
        linked_app_instances: stats.linked_app_instances.filter(|_| app_link),
    }
}

/// Whether the hub object (as stored, any shape) has `spec.appLink.enabled: true`.
fn app_link_enabled(hub: &DynamicObject) -> bool {
    hub.data
        .pointer("/spec/appLink/enabled")
        .and_then(serde_json::Value::as_bool)
        .unwrap_or(false)
}

/// Every `limits.refresh`: for each hub in `scope`, read its pods and write
/// `status.connectedClients` and `status.linkedAppInstances` when they changed (an apply of
/// those two fields).
pub async fn run(
    client: Client,
    scope: Scope,
    limits: StatsLimits,
    metrics: std::sync::Arc<Metrics>,
) {
    // Untyped: a hub that does not decode into the current types does not stop the round;
    // only its metadata and `spec.appLink.enabled` are read.
    let resource = ApiResource::erase::<SocketIOHub>(&());
    let apis: Vec<Api<DynamicObject>> = if scope.is_all() {
        vec![Api::all_with(client.clone(), &resource)]
    } else {
        scope
            .list()
            .iter()
            .map(|ns| Api::namespaced_with(client.clone(), ns, &resource))
            .collect()
    };
    let mut tick = tokio::time::interval(limits.refresh);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // What this loop last wrote, per hub uid: unchanged counts are not written again (a
    // recreated hub has a new uid, so it is written). Hubs not listed this round are
    // forgotten (at worst written once more).
    let mut written: HashMap<String, HubStats> = HashMap::new();
    loop {
        tick.tick().await;
        let mut seen = HashMap::new();
        for api in &apis {
            let hubs = match api.list(&ListParams::default()).await {
                Ok(l) => l.items,
                Err(e) => {
                    warn!(error = %e, "listing hubs for their connection counts failed");
                    continue;
                }
            };
            for hub in hubs {
                let Some(uid) = hub.uid() else { continue };
                let last = written.remove(&uid);
                if let Some(count) = round_one(&client, &hub, last, &limits, &metrics).await {
                    seen.insert(uid, count);
                } else if let Some(last) = last {
                    seen.insert(uid, last);
                }
            }
        }
        written = seen;
    }
}

/// Reads one hub's counts and writes them unless they are `last` (what this loop last
/// wrote). Returns the counts now in the status, or `None` when nothing was read or written.
async fn round_one(
    client: &Client,
    hub: &DynamicObject,
    last: Option<HubStats>,
    limits: &StatsLimits,
    metrics: &Metrics,
) -> Option<HubStats> {
    let (Some(ns), name) = (hub.namespace(), hub.name_any()) else {
        return None;
    };
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let selector = format!("app.kubernetes.io/name={APP_NAME},app.kubernetes.io/instance={name}");
    let list = match pods.list(&ListParams::default().labels(&selector)).await {
        Ok(l) => l.items,
        Err(e) => {
            metrics.stats_failures.inc();
            warn!(hub = %name, namespace = %ns, error = %e, "listing hub pods failed");
            return None;
        }
    };
    let count = status_counts(
        hub_stats(&list, limits.port, limits, metrics).await,
        app_link_enabled(hub),
    );
    if last == Some(count) {
        return Some(count);
    }
    // A null leaves the field to nobody: it is removed (no pod answered, app links off).
    let patch = serde_json::json!({
        "apiVersion": format!("{GROUP}/{VERSION}"),
        "kind": "SocketIOHub",
        "status": {
            "connectedClients": count.connected_clients,
            "linkedAppInstances": count.linked_app_instances,
        },
    });
    let hubs: Api<SocketIOHub> = Api::namespaced(client.clone(), &ns);
    // Its own field manager: the reconciler's status apply never owns this field.
    let pp = PatchParams::apply(&format!("{MANAGER}-stats")).force();
    match hubs.patch_status(&name, &pp, &Patch::Apply(&patch)).await {
        Ok(_) => Some(count),
        Err(e) => {
            metrics.stats_failures.inc();
            warn!(hub = %name, namespace = %ns, error = %e, "writing connectedClients and linkedAppInstances failed");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    #[test]
    fn parse_sums_samples_and_skips_the_limit_gauge() {
        let body = "# HELP roomcast_connections Open sessions.\n\
                    # TYPE roomcast_connections gauge\n\
                    roomcast_connections 7\n\
                    roomcast_connections_limit 10000\n\
                    roomcast_connections{shard=\"b\"} 3 1700000000000\n";
        assert_eq!(parse_connections(body), Some(10));
    }

    #[test]
    fn app_links_gauge_skips_the_counters_sharing_its_prefix() {
        let body = "# TYPE roomcast_app_links gauge\n\
                    roomcast_app_links 3\n\
                    roomcast_app_links_refused_total 12\n\
                    roomcast_app_links_overflowed_total 1\n\
                    roomcast_app_sessions 40\n";
        assert_eq!(parse_gauge(body, APP_LINKS_GAUGE), Some(3));
        assert_eq!(
            parse_gauge("roomcast_app_links_refused_total 1\n", APP_LINKS_GAUGE),
            None
        );
    }

    #[test]
    fn linked_app_instances_only_with_app_links_on() {
        let stats = HubStats {
            connected_clients: Some(5),
            linked_app_instances: Some(2),
        };
        assert_eq!(status_counts(stats, true), stats);
        assert_eq!(
            status_counts(stats, false),
            HubStats {
                connected_clients: Some(5),
                linked_app_instances: None
            }
        );
        let hub = |spec: serde_json::Value| -> DynamicObject {
            serde_json::from_value(serde_json::json!({
                "apiVersion": "roomcast.dev/v1alpha1", "kind": "SocketIOHub",
                "metadata": {"name": "h"}, "spec": spec}))
            .unwrap()
        };
        assert!(app_link_enabled(&hub(
            serde_json::json!({"appLink": {"enabled": true}})
        )));
        assert!(!app_link_enabled(&hub(
            serde_json::json!({"appLink": {"enabled": false}})
        )));
        assert!(!app_link_enabled(&hub(serde_json::json!({"appLink": {}}))));
        assert!(!app_link_enabled(&hub(serde_json::json!({}))));
        assert!(!app_link_enabled(&hub(
            serde_json::json!({"appLink": "odd"})
        )));
    }

    #[test]
    fn parse_without_a_sample_or_with_garbage_is_none() {
        assert_eq!(parse_connections(""), None);
        assert_eq!(parse_connections("roomcast_connections_limit 5\n"), None);
        assert_eq!(parse_connections("roomcast_connections NaN\n"), None);
        assert_eq!(parse_connections("roomcast_connections -1\n"), None);
        assert_eq!(parse_connections("roomcast_connections{a=\"}\" 4\n"), None);
        assert_eq!(parse_connections("roomcast_connections 1e3\n"), Some(1000));
    }

    fn pod(name: &str, ip: Option<&str>, ready: bool) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "status": {"podIP": ip, "conditions": [
                {"type": "Ready", "status": if ready { "True" } else { "False" }}]}
        }))
        .unwrap()
    }

    #[test]
    fn pods_to_read_are_ready_with_an_ip_and_bounded() {
        let pods = vec![
            pod("h-2", Some("10.0.0.2"), true),
            pod("h-0", Some("10.0.0.0"), true),
            pod("h-1", None, true),
            pod("h-3", Some("10.0.0.3"), false),
            pod("h-4", Some("10.0.0.4"), true),
        ];
        let names: Vec<String> = pods_to_read(&pods, 2).into_iter().map(|p| p.0).collect();
        assert_eq!(names, ["h-0", "h-2"]);
        assert_eq!(pods_to_read(&pods, 10).len(), 3);
    }

    /// A one-shot HTTP server on loopback answering `response`, after `delay`.
    async fn serve(response: Vec<u8>, delay: Duration) -> u16 {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let response = response.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    let _ = s.read(&mut buf).await;
                    tokio::time::sleep(delay).await;
                    let _ = s.write_all(&response).await;
                });
            }
        });
        port
    }

    /// [`serve`] at `ip:port`, answering at once.
    async fn serve_at(ip: &str, port: u16, response: Vec<u8>) -> u16 {
        let l = TcpListener::bind((ip, port)).await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let response = response.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    let _ = s.read(&mut buf).await;
                    let _ = s.write_all(&response).await;
                });
            }
        });
        port
    }

    fn ok(body: &str) -> Vec<u8> {
        format!("HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n{body}").into_bytes()
    }

    fn limits() -> StatsLimits {
        StatsLimits {
            timeout: Duration::from_millis(300),
            max_body_bytes: 4096,
            max_pods: 2,
            refresh: Duration::from_secs(30),
            port: 0,
        }
    }

    const LOOPBACK: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    #[tokio::test]
    async fn scrape_reads_the_gauge() {
        let port = serve(ok("roomcast_connections 42\n"), Duration::ZERO).await;
        assert_eq!(
            scrape(LOOPBACK, port, &limits()).await,
            Ok(PodStats {
                connections: 42,
                app_links: None
            })
        );
        let port = serve(
            ok("roomcast_connections 3\nroomcast_app_links 2\nroomcast_app_links_refused_total 9\n"),
            Duration::ZERO,
        )
        .await;
        assert_eq!(
            scrape(LOOPBACK, port, &limits()).await,
            Ok(PodStats {
                connections: 3,
                app_links: Some(2)
            })
        );
    }

    #[tokio::test]
    async fn scrape_is_bounded_in_time_and_size() {
        let slow = serve(ok("roomcast_connections 1\n"), Duration::from_secs(5)).await;
        let start = std::time::Instant::now();
        assert_eq!(
            scrape(LOOPBACK, slow, &limits()).await,
            Err(ScrapeError::Timeout)
        );
        assert!(start.elapsed() < Duration::from_secs(2));

        let big = format!("roomcast_connections 1\n{}", "# padding\n".repeat(1000));
        let port = serve(ok(&big), Duration::ZERO).await;
        assert_eq!(
            scrape(LOOPBACK, port, &limits()).await,
            Err(ScrapeError::TooLarge(4096))
        );

        let port = serve(b"HTTP/1.0 500 Oops\r\n\r\n".to_vec(), Duration::ZERO).await;
        assert!(matches!(
            scrape(LOOPBACK, port, &limits()).await,
            Err(ScrapeError::Status(_))
        ));
    }

    #[tokio::test]
    async fn hub_count_sums_answering_pods_and_counts_failures() {
        let good = serve(ok("roomcast_connections 5\n"), Duration::ZERO).await;
        let pods = vec![
            pod("h-0", Some("127.0.0.1"), true),
            pod("h-1", Some("127.0.0.1"), true),
        ];
        let metrics = Metrics::default();
        // Both pods share the loopback address here, so both read the same server.
        assert_eq!(
            hub_connections(&pods, good, &limits(), &metrics).await,
            Some(10)
        );
        assert_eq!(metrics.stats_failures.get(), 0);

        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        assert_eq!(
            hub_connections(&pods, closed, &limits(), &metrics).await,
            None
        );
        assert_eq!(metrics.stats_failures.get(), 2);
        // App links: the most any pod has (each instance links to every pod), not the sum.
        let three = serve(
            ok("roomcast_connections 1\nroomcast_app_links 3\n"),
            Duration::ZERO,
        )
        .await;
        // The second pod, at 127.0.0.2 on the same port, has one link fewer (an instance
        // still linking to it).
        let two = serve_at(
            "127.0.0.2",
            three,
            ok("roomcast_connections 4\nroomcast_app_links 2\n"),
        )
        .await;
        let apart = vec![
            pod("h-0", Some("127.0.0.1"), true),
            pod("h-1", Some("127.0.0.2"), true),
        ];
        assert_eq!(
            hub_stats(&apart, two, &limits(), &metrics).await,
            HubStats {
                connected_clients: Some(5),
                linked_app_instances: Some(3)
            }
        );
        // A pod without the gauge (an older data plane): no instance count from it.
        assert_eq!(
            hub_stats(&pods, good, &limits(), &metrics)
                .await
                .linked_app_instances,
            None
        );
        assert_eq!(metrics.stats_failures.get(), 2);
        // No ready pod: nothing read, nothing failed.
        let none = vec![pod("h-0", Some("127.0.0.1"), false)];
        assert_eq!(
            hub_connections(&none, good, &limits(), &metrics).await,
            None
        );
        assert_eq!(metrics.stats_failures.get(), 2);
    }
}
