//! `roomcast-operator`: runs the SocketIOHub controller, or prints/writes the CRD.
//!
//! ```text
//! roomcast-operator [run] [--metrics-addr ADDR] [--namespace NS[,NS...]] [--concurrency N]
//!                   [--default-image IMAGE] [--leader-elect=BOOL] [--lease-namespace NS]
//!                   [--lease-name NAME] [--identity ID] [--log-format text|json]
//!                   [--hub-csr-cluster-role NAME] [--stats-timeout-ms MS]
//!                   [--stats-max-body-bytes N] [--stats-max-pods N] [--stats-refresh-seconds S]
//!                   [--stats-port PORT] [--pod-recheck-seconds S] [--pod-health-max-pods N]
//!                   [--secret-poll-seconds S]
//! roomcast-operator crd [--write]      print the CRD, or write crds/, the chart's copy and the docs reference
//! ```

#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use roomcast_operator::controller::{self, Context, HealthChecks};
use roomcast_operator::http::{self, Health};
use roomcast_operator::hub_stats::StatsLimits;
use roomcast_operator::leader::{LeaderElector, LeaseConfig};
use roomcast_operator::metrics::Metrics;
use roomcast_operator::scope::Scope;
use tokio::sync::watch;
use tracing::{error, info};

const USAGE: &str = "usage: roomcast-operator [run] [--metrics-addr ADDR] [--namespace NS[,NS...]] \
[--concurrency N] [--default-image IMAGE] [--leader-elect=true|false] [--lease-namespace NS] \
[--lease-name NAME] [--identity ID] [--log-format text|json] [--hub-csr-cluster-role NAME] \
[--stats-timeout-ms MS] [--stats-max-body-bytes N] [--stats-max-pods N] [--stats-refresh-seconds S] [--stats-port PORT] \
[--pod-recheck-seconds S] [--pod-health-max-pods N] [--secret-poll-seconds S]\n       roomcast-operator crd [--write]";

#[derive(Debug)]
struct RunArgs {
    metrics_addr: SocketAddr,
    namespace: Scope,
    concurrency: u16,
    default_image: String,
    leader_elect: bool,
    lease_namespace: Option<String>,
    lease_name: String,
    identity: Option<String>,
    log_format: String,
    hub_csr_cluster_role: String,
    stats: StatsLimits,
    health: HealthChecks,
}

impl Default for RunArgs {
    fn default() -> Self {
        Self {
            metrics_addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            namespace: Scope::all(),
            concurrency: 4,
            default_image: format!(
                "ghcr.io/roomcast/roomcast-dataplane:{}",
                env!("CARGO_PKG_VERSION")
            ),
            leader_elect: true,
            lease_namespace: std::env::var("POD_NAMESPACE").ok(),
            lease_name: "roomcast-operator".to_string(),
            identity: std::env::var("POD_NAME").ok(),
            log_format: "text".to_string(),
            hub_csr_cluster_role: controller::DEFAULT_CSR_CLUSTER_ROLE.to_string(),
            stats: StatsLimits::default(),
            health: HealthChecks::default(),
        }
    }
}

fn parse_run(args: &[String]) -> Result<RunArgs> {
    let mut r = RunArgs::default();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) => (f, Some(v.to_string())),
            None => (arg.as_str(), None),
        };
        let mut value = || -> Result<String> {
            match &inline {
                Some(v) => Ok(v.clone()),
                None => it
                    .next()
                    .cloned()
                    .with_context(|| format!("{flag} needs a value")),
            }
        };
        match flag {
            "--metrics-addr" => r.metrics_addr = value()?.parse().context("--metrics-addr")?,
            "--namespace" => r.namespace.extend(Scope::parse(&value()?)),
            "--concurrency" => r.concurrency = value()?.parse().context("--concurrency")?,
            "--default-image" => r.default_image = value()?,
            "--leader-elect" => {
                r.leader_elect = match inline.as_deref() {
                    None => true,
                    Some(v) => v.parse().context("--leader-elect")?,
                }
            }
            "--lease-namespace" => r.lease_namespace = Some(value()?),
            "--lease-name" => r.lease_name = value()?,
            "--identity" => r.identity = Some(value()?),
            "--log-format" => r.log_format = value()?,
            "--hub-csr-cluster-role" => r.hub_csr_cluster_role = value()?,
            "--stats-timeout-ms" => {
                r.stats.timeout = Duration::from_millis(value()?.parse().context(flag.to_string())?)
            }
            "--stats-max-body-bytes" => {
                r.stats.max_body_bytes = value()?.parse().context(flag.to_string())?
            }
            "--stats-port" => r.stats.port = value()?.parse().context(flag.to_string())?,
            "--stats-max-pods" => r.stats.max_pods = value()?.parse().context(flag.to_string())?,
            "--stats-refresh-seconds" => {
                r.stats.refresh = Duration::from_secs(value()?.parse().context(flag.to_string())?)
            }
            "--pod-recheck-seconds" => {
                r.health.pod_recheck =
                    Duration::from_secs(value()?.parse().context(flag.to_string())?)
            }
            "--pod-health-max-pods" => {
                r.health.max_pods = value()?.parse().context(flag.to_string())?
            }
            "--secret-poll-seconds" => {
                r.health.secret_poll =
                    Duration::from_secs(value()?.parse().context(flag.to_string())?)
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    if r.concurrency == 0 {
        bail!("--concurrency must be at least 1");
    }
    if r.stats.timeout.is_zero() || r.stats.refresh.is_zero() || r.stats.max_body_bytes == 0 {
        bail!("--stats-timeout-ms, --stats-refresh-seconds and --stats-max-body-bytes must be at least 1");
    }
    if r.health.pod_recheck.is_zero() || r.health.secret_poll.is_zero() || r.health.max_pods == 0 {
        bail!("--pod-recheck-seconds, --secret-poll-seconds and --pod-health-max-pods must be at least 1");
    }
    Ok(r)
}

fn init_tracing(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,kube=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    if format == "json" {
        builder.json().flatten_event(true).init();
    } else {
        builder.init();
    }
}

fn crd(args: &[String]) -> Result<()> {
    let yaml = roomcast_operator::crd_yaml()?;
    match args.first().map(String::as_str) {
        None => print!("{yaml}"),
        Some("--write") => {
            let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
            for rel in [
                "crds/socketiohub.yaml",
                "charts/roomcast-operator/crds/socketiohub.yaml",
            ] {
                let path = root.join(rel);
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir)
                        .with_context(|| format!("creating {}", dir.display()))?;
                }
                std::fs::write(&path, &yaml)
                    .with_context(|| format!("writing {}", path.display()))?;
                eprintln!("wrote {rel}");
            }
            let doc_path = root.join("docs/operator.md");
            let doc = std::fs::read_to_string(&doc_path)
                .with_context(|| format!("reading {}", doc_path.display()))?;
            std::fs::write(&doc_path, roomcast_operator::reference::splice(&doc)?)
                .with_context(|| format!("writing {}", doc_path.display()))?;
            eprintln!("updated the reference in docs/operator.md");
        }
        Some(other) => bail!("unknown argument {other:?}\n{USAGE}"),
    }
    Ok(())
}

/// Resolves when `rx` turns true (or its sender is gone).
async fn until_true(mut rx: watch::Receiver<bool>) {
    while !*rx.borrow_and_update() {
        if rx.changed().await.is_err() {
            return;
        }
    }
}

async fn run(args: RunArgs) -> Result<()> {
    let metrics = Arc::new(Metrics::default());
    let health = Arc::new(Health::default());
    let (bound, _server) = http::serve(args.metrics_addr, health.clone(), metrics.clone())
        .await
        .with_context(|| format!("binding {}", args.metrics_addr))?;
    info!(addr = %bound, "serving /healthz, /readyz and /metrics");

    // SIGTERM / SIGINT → graceful shutdown.
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::spawn(async move {
        tokio::select! {
            _ = sigterm.recv() => info!("SIGTERM received, shutting down"),
            _ = tokio::signal::ctrl_c() => info!("interrupt received, shutting down"),
        }
        let _ = stop_tx.send(true);
    });

    let client = kube::Client::try_default()
        .await
        .context("creating the Kubernetes client (in-cluster or KUBECONFIG)")?;
    let ctx = Arc::new(
        Context::new(
            client.clone(),
            metrics.clone(),
            args.default_image.clone(),
            args.identity.clone(),
        )
        .with_csr_cluster_role(args.hub_csr_cluster_role.clone())
        .with_stats_limits(args.stats.clone())
        .with_health_checks(args.health.clone()),
    );

    if !args.leader_elect {
        health.ready.store(true, Ordering::Relaxed);
        controller::run(ctx, args.namespace, args.concurrency, until_true(stop_rx)).await;
        return Ok(());
    }

    let identity = args.identity.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "roomcast-operator".to_string());
        format!("{host}-{}", std::process::id())
    });
    let lease_ns = args
        .lease_namespace
        .clone()
        .or_else(|| {
            std::fs::read_to_string("/var/run/secrets/kubernetes.io/serviceaccount/namespace").ok()
        })
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| client.default_namespace().to_string());
    let mut elector = LeaderElector::new(
        client.clone(),
        LeaseConfig::new(lease_ns.clone(), args.lease_name.clone(), identity.clone()),
    );
    // A standby is healthy and ready: it serves probes and waits for the lease.
    health.ready.store(true, Ordering::Relaxed);
    info!(identity = %identity, lease = %args.lease_name, namespace = %lease_ns, "waiting for leadership");
    tokio::select! {
        r = elector.acquire() => r?,
        _ = until_true(stop_rx.clone()) => {
            info!("stopped before becoming leader");
            return Ok(());
        }
    }
    metrics.leader.set(1);
    info!(identity = %identity, "became leader");

    let mut ctrl = tokio::spawn(controller::run(
        ctx,
        args.namespace.clone(),
        args.concurrency,
        until_true(stop_rx.clone()),
    ));
    let (_renew_stop_tx, renew_stop_rx) = watch::channel(false);
    tokio::select! {
        res = &mut ctrl => {
            if let Err(e) = res {
                error!(error = %e, "controller task failed");
            }
        }
        res = elector.keep_renewing(renew_stop_rx) => {
            // Leadership is gone: stop acting at once, without waiting for reconciles.
            metrics.leader.set(0);
            let reason = match res { Err(e) => e.to_string(), Ok(()) => "renewal stopped".to_string() };
            error!(identity = %identity, reason = %reason, "lost leadership, exiting");
            std::process::exit(1);
        }
    }
    metrics.leader.set(0);
    if let Err(e) = elector.release().await {
        error!(error = %e, "releasing the lease failed");
    } else {
        info!(identity = %identity, "released the lease");
    }
    Ok(())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("crd") => crd(&args[1..]),
        Some("-h") | Some("--help") => {
            println!("{USAGE}");
            Ok(())
        }
        first => {
            let rest = if first == Some("run") {
                &args[1..]
            } else {
                &args[..]
            };
            let run_args = parse_run(rest)?;
            init_tracing(&run_args.log_format);
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .context("starting the tokio runtime")?;
            rt.block_on(run(run_args))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn health_check_flags_have_documented_defaults_and_refuse_zero() {
        let d = parse_run(&[]).unwrap();
        assert_eq!(d.health.pod_recheck, Duration::from_secs(10));
        assert_eq!(d.health.max_pods, 500);
        assert_eq!(d.health.secret_poll, Duration::from_secs(15));
        let r = parse_run(&args(&[
            "--pod-recheck-seconds=2",
            "--pod-health-max-pods",
            "7",
            "--secret-poll-seconds=3",
        ]))
        .unwrap();
        assert_eq!(
            (
                r.health.pod_recheck,
                r.health.max_pods,
                r.health.secret_poll
            ),
            (Duration::from_secs(2), 7, Duration::from_secs(3))
        );
        for zero in [
            "--pod-recheck-seconds=0",
            "--pod-health-max-pods=0",
            "--secret-poll-seconds=0",
        ] {
            assert!(parse_run(&args(&[zero])).is_err(), "{zero}");
        }
    }
}
