//! `roomcast-pod-runner`: a test-only kubelet stand-in for the local e2e control plane.
//!
//! It registers a Node (kube-scheduler, part of the test control plane, binds pods to it) and
//! runs each pod bound to it as a local process on its own pod address (loopback, or any block when the
//! runner has a network namespace of its own), with the pod's
//! environment and its ConfigMap/Secret volumes written as files. It reports the pod's IP,
//! phase, container status and readiness (from the readiness probe), restarts crashed processes
//! with backoff (CrashLoopBackOff), reports images it has no binary for as a failed pull
//! (ErrImagePull / ImagePullBackOff), and on deletion stops the process (SIGTERM, SIGKILL after the grace period)
//! and removes the pod. No isolation, no images, no Service networking: see
//! e2e/README.md.

mod plan;
mod pod;
mod prepare;

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::{reflector, watcher, WatchStreamExt};
use kube::Client;
use serde_json::json;
use tokio::sync::{watch, Notify};
use tracing::{info, warn};

use plan::{ImageMapping, IpPool, IpRange, NodeTaint};
use pod::Stop;

#[derive(Debug, Parser)]
#[command(
    name = "roomcast-pod-runner",
    about = "Runs pods as local processes on loopback addresses (tests only)"
)]
struct Args {
    /// Name of the Node this runner registers and plays.
    #[arg(long, default_value = "roomcast-e2e-node")]
    node_name: String,
    /// Block of the addresses the pod processes listen on (one address per pod). It must be
    /// loopback (127.0.0.0/8) unless the runner runs in a network namespace of its own (see
    /// e2e/README.md), where any block routed locally (`ip route add local ...`) will do.
    #[arg(long, default_value = "127.0.50.0/24")]
    ip_range: IpRange,
    /// Block of the stand-in addresses the API sees as pod IPs, same size as --ip-range and
    /// mapped 1:1 onto it (same host bits); default: the --ip-range addresses themselves. The
    /// API refuses loopback addresses in EndpointSlices, so with a loopback --ip-range the
    /// slices stay empty unless this is set, e.g. to 239.0.50.0/24: an organization-local
    /// multicast block, to which the kernel refuses any TCP connection before a packet is
    /// sent, so a client that dials a stand-in address fails at once and never leaves the
    /// machine.
    #[arg(long)]
    advertise_range: Option<IpRange>,
    /// REPOSITORY=BINARY: containers of that image repository (any registry, tag or digest)
    /// run BINARY. Repeatable. Pods with any other image stay Pending in ImagePullBackOff.
    #[arg(long = "image", required = true)]
    images: Vec<ImageMapping>,
    /// Directory for per-pod files (volumes, kubeconfig) and logs (STATE_DIR/logs/NS_POD.log).
    #[arg(long)]
    state_dir: PathBuf,
    /// KEY[=VALUE]:EFFECT: a taint of the Node, so that kube-scheduler places only pods that
    /// tolerate it here (a test that shares the cluster with pods nobody runs). Repeatable.
    #[arg(long = "node-taint")]
    taints: Vec<NodeTaint>,
}

/// What every pod task shares.
pub struct Ctx {
    client: Client,
    node: String,
    taints: Vec<NodeTaint>,
    state_dir: PathBuf,
    images: Vec<ImageMapping>,
    api_url: String,
    api_host: String,
    api_port: u16,
    pool: Mutex<IpPool>,
    ip_range: IpRange,
    advertise_range: IpRange,
    /// Running pod tasks by pod uid.
    pods: Mutex<HashMap<String, watch::Sender<Option<Stop>>>>,
    idle: Notify,
}

impl Ctx {
    /// Called by a pod task when it is done: frees its address and its slot.
    fn finished(&self, uid: &str, ip: Ipv4Addr) {
        if let Ok(mut pool) = self.pool.lock() {
            pool.release(ip);
        }
        if let Ok(mut pods) = self.pods.lock() {
            pods.remove(uid);
        }
        self.idle.notify_waiters();
    }

    fn stop(&self, uid: &str, stop: Stop) -> bool {
        let Ok(pods) = self.pods.lock() else {
            return false;
        };
        match pods.get(uid) {
            Some(tx) => {
                // The first request wins, except that a shorter grace period replaces a longer one.
                let replace = match (*tx.borrow(), stop) {
                    (None, _) => true,
                    (Some(Stop::Delete { grace: old }), Stop::Delete { grace: new }) => new < old,
                    _ => false,
                };
                if replace {
                    let _ = tx.send(Some(stop));
                }
                true
            }
            None => false,
        }
    }

    fn running(&self) -> usize {
        self.pods.lock().map(|p| p.len()).unwrap_or(0)
    }
}

/// An RFC 3339 timestamp with second precision, as Kubernetes writes them.
pub fn now() -> String {
    let t = k8s_openapi::jiff::Timestamp::now();
    format!("{t:.0}")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    std::fs::create_dir_all(args.state_dir.join("logs"))
        .with_context(|| format!("cannot create {}", args.state_dir.display()))?;
    let state_dir = args
        .state_dir
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", args.state_dir.display()))?;
    for m in &args.images {
        anyhow::ensure!(
            m.binary.is_file(),
            "--image {}: {} is not a file",
            m.repository,
            m.binary.display()
        );
    }

    anyhow::ensure!(
        args.ip_range.is_loopback() || only_loopback_network(),
        "--ip-range must be inside 127.0.0.0/8 unless the runner runs in a network namespace \
         with no interface but loopback (unshare --net)"
    );
    let advertise_range = args
        .advertise_range
        .clone()
        .unwrap_or_else(|| args.ip_range.clone());
    anyhow::ensure!(
        args.ip_range.same_size(&advertise_range),
        "--advertise-range must be as large as --ip-range"
    );
    let config = kube::Config::infer()
        .await
        .context("no Kubernetes config")?;
    let api_url = config
        .cluster_url
        .to_string()
        .trim_end_matches('/')
        .to_string();
    let api_host = config.cluster_url.host().unwrap_or("127.0.0.1").to_string();
    let api_port = config.cluster_url.port_u16().unwrap_or(443);
    let client = Client::try_from(config).context("cannot build a Kubernetes client")?;

    let ctx = Arc::new(Ctx {
        client: client.clone(),
        node: args.node_name.clone(),
        taints: args.taints.clone(),
        state_dir,
        images: args.images.clone(),
        api_url,
        api_host,
        api_port,
        pool: Mutex::new(IpPool::new(args.ip_range.clone())),
        ip_range: args.ip_range.clone(),
        advertise_range,
        pods: Mutex::new(HashMap::new()),
        idle: Notify::new(),
    });

    register_node(&ctx).await?;
    tokio::spawn(heartbeat(ctx.clone()));

    let (reader, writer) = reflector::store::<Pod>();
    let changed = Arc::new(Notify::new());
    let events = {
        let ctx = ctx.clone();
        let changed = changed.clone();
        let pods: Api<Pod> = Api::all(client.clone());
        async move {
            let stream =
                reflector(writer, watcher(pods, watcher::Config::default())).default_backoff();
            futures_util::pin_mut!(stream);
            while let Some(event) = stream.next().await {
                match event {
                    Ok(watcher::Event::Delete(pod)) => {
                        // Gone from the API (force-deleted): kill at once.
                        if let Some(uid) = pod.metadata.uid.as_deref() {
                            ctx.stop(uid, Stop::Delete { grace: 0 });
                        }
                    }
                    Ok(_) => {}
                    Err(e) => warn!(error = %e, "pod watch error"),
                }
                changed.notify_one();
            }
        }
    };
    tokio::spawn(events);
    reader
        .wait_until_ready()
        .await
        .context("pod watch never became ready")?;
    info!(node = %ctx.node, "pod runner ready");

    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot listen for SIGTERM")?;
    loop {
        tokio::select! {
            () = changed.notified() => {}
            () = tokio::time::sleep(Duration::from_secs(2)) => {}
            _ = tokio::signal::ctrl_c() => break,
            _ = sigterm.recv() => break,
        }
        for pod in reader.state() {
            sync(&ctx, &pod).await;
        }
    }

    info!(
        pods = ctx.running(),
        "shutting down: stopping every pod process"
    );
    let uids: Vec<String> = ctx
        .pods
        .lock()
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default();
    for uid in uids {
        ctx.stop(&uid, Stop::Shutdown);
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while ctx.running() > 0 && tokio::time::Instant::now() < deadline {
        let _ = tokio::time::timeout(Duration::from_millis(200), ctx.idle.notified()).await;
    }
    info!(left = ctx.running(), "pod runner stopped");
    Ok(())
}

/// Whether the only network interface this process sees is loopback, as in a network
/// namespace made with `unshare --net`: then pod addresses outside 127.0.0.0/8 reach nothing
/// but this machine's own processes in that namespace.
fn only_loopback_network() -> bool {
    std::fs::read_to_string("/proc/self/net/dev").is_ok_and(|dev| {
        // Two header lines, then "  NAME: counters..." per interface.
        dev.lines()
            .skip(2)
            .filter_map(|l| l.split(':').next())
            .all(|name| name.trim() == "lo")
    })
}

/// Brings one pod closer to what it should be on this node.
async fn sync(ctx: &Arc<Ctx>, pod: &Pod) {
    let (Some(ns), Some(name), Some(uid)) = (
        pod.metadata.namespace.as_deref(),
        pod.metadata.name.as_deref(),
        pod.metadata.uid.as_deref(),
    ) else {
        return;
    };
    let Some(spec) = pod.spec.as_ref() else {
        return;
    };
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    let deleting = pod.metadata.deletion_timestamp.is_some();
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);

    // Only pods kube-scheduler (or a test, through spec.nodeName) bound to this node.
    if spec.node_name.as_deref() != Some(ctx.node.as_str()) {
        return;
    }
    if deleting {
        let grace = pod
            .metadata
            .deletion_grace_period_seconds
            .or(spec.termination_grace_period_seconds)
            .and_then(|g| u64::try_from(g).ok())
            .unwrap_or(30);
        if !ctx.stop(uid, Stop::Delete { grace }) {
            // Nothing runs for it: finish the deletion as a kubelet does.
            let dp = DeleteParams {
                grace_period_seconds: Some(0),
                preconditions: Some(Preconditions {
                    uid: Some(uid.to_string()),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            match api.delete(name, &dp).await {
                Ok(_) => info!(namespace = ns, pod = name, "pod removed"),
                Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
                Err(e) => warn!(namespace = ns, pod = name, error = %e, "cannot remove pod"),
            }
        }
        return;
    }
    if matches!(phase, Some("Succeeded" | "Failed")) {
        return;
    }
    let Ok(mut pods) = ctx.pods.lock() else {
        return;
    };
    if pods.contains_key(uid) {
        return;
    }
    let ports: Vec<u16> = spec
        .containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| u16::try_from(p.container_port).ok())
        .collect();
    let ip = ctx.pool.lock().ok().and_then(|mut pool| {
        pool.allocate(|ip| {
            ports
                .iter()
                .all(|&port| std::net::TcpListener::bind((ip, port)).is_ok())
        })
    });
    let Some(ip) = ip else {
        warn!(
            namespace = ns,
            pod = name,
            "no free address left in the pod range"
        );
        return;
    };
    let Some(api_ip) = ctx.ip_range.translate(ip, &ctx.advertise_range) else {
        warn!(namespace = ns, pod = name, %ip, "address outside the pod range");
        return;
    };
    let (tx, rx) = watch::channel(None);
    pods.insert(uid.to_string(), tx);
    drop(pods);
    let addrs = pod::Addrs {
        listen: ip,
        api: api_ip,
    };
    tokio::spawn(pod::run(ctx.clone(), pod.clone(), addrs, rx));
}

fn node_status() -> serde_json::Value {
    let t = now();
    let resources =
        json!({"cpu": "8", "memory": "16Gi", "pods": "110", "ephemeral-storage": "10Gi"});
    json!({
        "capacity": resources,
        "allocatable": resources,
        "conditions": [{
            "type": "Ready", "status": "True", "reason": "PodRunnerReady",
            "message": "roomcast-pod-runner is running pods as local processes",
            "lastHeartbeatTime": t, "lastTransitionTime": t,
        }],
        "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
        "nodeInfo": {
            "machineID": "", "systemUUID": "", "bootID": "", "kernelVersion": "",
            "osImage": "roomcast-pod-runner", "containerRuntimeVersion": "roomcast-pod-runner://0",
            "kubeletVersion": "v0.0.0-roomcast-pod-runner", "kubeProxyVersion": "",
            "operatingSystem": "linux", "architecture": "amd64",
        },
    })
}

/// Creates (or takes over) the Node object and marks it Ready.
async fn register_node(ctx: &Ctx) -> anyhow::Result<()> {
    let nodes: Api<Node> = Api::all(ctx.client.clone());
    let taints: Vec<_> = ctx
        .taints
        .iter()
        .map(|t| json!({"key": t.key, "value": t.value, "effect": t.effect}))
        .collect();
    let node: Node = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": ctx.node, "labels": {
            "kubernetes.io/hostname": ctx.node,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            "roomcast.dev/pod-runner": "true",
        }},
        "spec": {"taints": taints},
    }))
    .context("node object")?;
    match nodes.create(&PostParams::default(), &node).await {
        Ok(_) => info!(node = %ctx.node, "node registered"),
        Err(kube::Error::Api(s)) if s.code == 409 => info!(node = %ctx.node, "node exists"),
        Err(e) => return Err(e).context("cannot register the node"),
    }
    nodes
        .patch_status(
            &ctx.node,
            &PatchParams::default(),
            &Patch::Merge(&json!({"status": node_status()})),
        )
        .await
        .context("cannot set the node status")?;
    // The API server's admission taints a new Node `node.kubernetes.io/not-ready`; the node
    // lifecycle controller (not run here) lifts it once the Node is Ready. Do its part: keep
    // only the taints asked for.
    nodes
        .patch(
            &ctx.node,
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"taints": taints}})),
        )
        .await
        .context("cannot set the node taints")?;
    Ok(())
}

async fn heartbeat(ctx: Arc<Ctx>) {
    let nodes: Api<Node> = Api::all(ctx.client.clone());
    loop {
        tokio::time::sleep(Duration::from_secs(20)).await;
        if let Err(e) = nodes
            .patch_status(
                &ctx.node,
                &PatchParams::default(),
                &Patch::Merge(&json!({"status": node_status()})),
            )
            .await
        {
            warn!(node = %ctx.node, error = %e, "node heartbeat failed");
        }
    }
}
