//! One pod's life on the runner: prepare it, start its process on the pod address, probe it,
//! report its status, restart it when it crashes, stop it when the pod is deleted.

use std::net::Ipv4Addr;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Pod, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::plan::restart_backoff;
use crate::prepare::{prepare, PrepareError, Prepared};
use crate::{now, Ctx};

/// A pod's two addresses: the one its process listens on (`--ip-range`), and the one the API
/// shows (status.podIP, EndpointSlices): the same, unless `--advertise-range` maps it to a
/// stand-in.
#[derive(Debug, Clone, Copy)]
pub struct Addrs {
    pub listen: Ipv4Addr,
    pub api: Ipv4Addr,
}

/// Annotation naming the address a pod's process listens on; it differs from `status.podIP`
/// only with `--advertise-range`.
pub const LOOPBACK_ANNOTATION: &str = "roomcast.dev/pod-runner-loopback-ip";

/// What ends a pod's task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// The pod is being deleted: SIGTERM, SIGKILL after `grace` seconds, then remove the pod.
    Delete { grace: u64 },
    /// The runner is shutting down: stop the process quickly, leave the pod object alone.
    Shutdown,
}

/// The container state last reported.
#[derive(Debug, Clone)]
enum State {
    Waiting {
        reason: String,
        message: String,
    },
    Running {
        since: String,
        pid: u32,
    },
    Terminated {
        code: i32,
        reason: String,
        started: String,
        finished: String,
    },
}

struct Reporter {
    api: Api<Pod>,
    name: String,
    ip: Ipv4Addr,
    image: String,
    container: String,
    start_time: String,
    phase: &'static str,
    message: Option<(String, String)>,
    state: State,
    last: Option<State>,
    restarts: u32,
    ready: bool,
    ready_since: String,
    sent: Option<Value>,
}

impl Reporter {
    fn status(&self) -> Value {
        let state = |s: &State| match s {
            State::Waiting { reason, message } => {
                json!({"waiting": {"reason": reason, "message": message}})
            }
            State::Running { since, .. } => json!({"running": {"startedAt": since}}),
            State::Terminated {
                code,
                reason,
                started,
                finished,
            } => json!({"terminated": {
                "exitCode": code, "reason": reason, "startedAt": started, "finishedAt": finished}}),
        };
        let cond = |t: &str, ok: bool, since: &str| json!({"type": t, "status": if ok { "True" } else { "False" }, "lastTransitionTime": since});
        let running = matches!(self.state, State::Running { .. });
        let container_id = match &self.state {
            State::Running { pid, .. } => Value::String(format!("roomcast-pod-runner://{pid}")),
            _ => Value::Null,
        };
        let mut status = json!({
            "phase": self.phase,
            "hostIP": "127.0.0.1",
            "hostIPs": [{"ip": "127.0.0.1"}],
            "podIP": self.ip.to_string(),
            "podIPs": [{"ip": self.ip.to_string()}],
            "startTime": self.start_time,
            "conditions": [
                cond("PodScheduled", true, &self.start_time),
                cond("Initialized", true, &self.start_time),
                cond("ContainersReady", self.ready, &self.ready_since),
                cond("Ready", self.ready, &self.ready_since),
            ],
            "containerStatuses": [{
                "name": self.container,
                "image": self.image,
                "imageID": "",
                "containerID": container_id,
                "ready": self.ready,
                "started": running,
                "restartCount": self.restarts,
                "state": state(&self.state),
                "lastState": self.last.as_ref().map_or(json!({}), state),
            }],
            "reason": Value::Null,
            "message": Value::Null,
        });
        if let Some((reason, message)) = &self.message {
            status["reason"] = Value::String(reason.clone());
            status["message"] = Value::String(message.clone());
        }
        status
    }

    fn set_ready(&mut self, ready: bool) {
        if ready != self.ready {
            self.ready = ready;
            self.ready_since = now();
        }
    }

    /// Patches the pod's status if it changed since the last report.
    async fn report(&mut self) {
        let status = self.status();
        if self.sent.as_ref() == Some(&status) {
            return;
        }
        let patch = json!({"status": status});
        match self
            .api
            .patch_status(&self.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => self.sent = Some(status),
            Err(e) => warn!(pod = %self.name, error = %e, "cannot update pod status"),
        }
    }
}

/// Runs one pod until `stop` says so; then releases its address.
pub async fn run(ctx: Arc<Ctx>, pod: Pod, addrs: Addrs, mut stop: watch::Receiver<Option<Stop>>) {
    let ip = addrs.listen;
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let container = pod.spec.as_ref().and_then(|s| s.containers.first());
    let started = now();
    let mut r = Reporter {
        api: Api::namespaced(ctx.client.clone(), &ns),
        name: name.clone(),
        ip: addrs.api,
        image: container.and_then(|c| c.image.clone()).unwrap_or_default(),
        container: container.map(|c| c.name.clone()).unwrap_or_default(),
        start_time: started.clone(),
        phase: "Pending",
        message: None,
        state: State::Waiting {
            reason: "ContainerCreating".into(),
            message: String::new(),
        },
        last: None,
        restarts: 0,
        ready: false,
        ready_since: started,
        sent: None,
    };
    info!(namespace = %ns, pod = %name, %ip, api_ip = %addrs.api, "pod assigned");
    let note = json!({"metadata": {"annotations": {LOOPBACK_ANNOTATION: ip.to_string()}}});
    if let Err(e) = r
        .api
        .patch(&name, &PatchParams::default(), &Patch::Merge(&note))
        .await
    {
        warn!(pod = %name, error = %e, "cannot annotate the pod with its loopback address");
    }
    let outcome = supervise(&ctx, &pod, addrs, &mut r, &mut stop).await;
    if let Some(Stop::Delete { .. }) = outcome {
        // As a kubelet does once the containers are gone: remove the pod for good.
        let dp = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(uid.clone()),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match r.api.delete(&name, &dp).await {
            Ok(_) => info!(namespace = %ns, pod = %name, "pod removed"),
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
            Err(e) => warn!(namespace = %ns, pod = %name, error = %e, "cannot remove pod"),
        }
    }
    let dir = crate::prepare::pod_dir(&ctx.state_dir, &pod).join("volumes");
    if let Err(e) = std::fs::remove_dir_all(&dir) {
        if e.kind() != std::io::ErrorKind::NotFound {
            warn!(path = %dir.display(), error = %e, "cannot remove pod volumes");
        }
    }
    ctx.finished(&uid, addrs.listen);
}

/// Waits for a stop request, or `dur` to pass (then None).
async fn stopped_within(stop: &mut watch::Receiver<Option<Stop>>, dur: Duration) -> Option<Stop> {
    if let Some(s) = *stop.borrow_and_update() {
        return Some(s);
    }
    tokio::select! {
        res = stop.changed() => match res {
            Ok(()) => *stop.borrow_and_update(),
            Err(_) => Some(Stop::Shutdown),
        },
        () = tokio::time::sleep(dur) => None,
    }
}

async fn supervise(
    ctx: &Ctx,
    pod: &Pod,
    addrs: Addrs,
    r: &mut Reporter,
    stop: &mut watch::Receiver<Option<Stop>>,
) -> Option<Stop> {
    let ip = addrs.listen;
    let mut pulls = 0u32;
    let prepared = loop {
        match prepare(ctx, pod, addrs).await {
            Ok(p) => break p,
            Err(PrepareError::Fatal(message)) => {
                warn!(pod = %r.name, %message, "pod cannot run: marking it Failed");
                r.phase = "Failed";
                r.message = Some(("PodRunnerUnsupported".into(), message.clone()));
                r.state = State::Waiting {
                    reason: "PodRunnerUnsupported".into(),
                    message,
                };
                r.report().await;
                // Nothing to run; wait for the pod to go away.
                loop {
                    if let Some(s) = stopped_within(stop, Duration::from_secs(3600)).await {
                        return Some(s);
                    }
                }
            }
            Err(PrepareError::ImagePull(message)) => {
                // As a kubelet whose pull fails: ErrImagePull, then ImagePullBackOff until the
                // next attempt, with a growing back-off; the pod stays Pending.
                info!(pod = %r.name, %message, "no binary for the image: ErrImagePull");
                r.state = State::Waiting {
                    reason: "ErrImagePull".into(),
                    message: message.clone(),
                };
                r.report().await;
                if let Some(s) = stopped_within(stop, Duration::from_secs(1)).await {
                    return Some(s);
                }
                let backoff = restart_backoff(pulls);
                pulls = pulls.saturating_add(1);
                r.state = State::Waiting {
                    reason: "ImagePullBackOff".into(),
                    message: format!("Back-off pulling image {:?}: {message}", r.image),
                };
                r.report().await;
                if let Some(s) = stopped_within(stop, backoff).await {
                    return Some(s);
                }
            }
            Err(PrepareError::Retry(message)) => {
                info!(pod = %r.name, %message, "pod not startable yet; retrying");
                r.state = State::Waiting {
                    reason: "ContainerCreating".into(),
                    message,
                };
                r.report().await;
                if let Some(s) = stopped_within(stop, Duration::from_secs(2)).await {
                    return Some(s);
                }
            }
        }
    };
    let grace_default = pod
        .spec
        .as_ref()
        .and_then(|s| s.termination_grace_period_seconds)
        .and_then(|g| u64::try_from(g).ok())
        .unwrap_or(30);
    let log_path = ctx.state_dir.join("logs").join(format!(
        "{}_{}.log",
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        r.name
    ));
    loop {
        let (outcome, ran_for) = match start(&prepared, &log_path).await {
            Ok(child) => run_process(child, &prepared, ip, r, stop, grace_default).await,
            Err(e) => {
                warn!(pod = %r.name, error = %e, "cannot start the process");
                let at = now();
                (
                    Exit::Crashed(State::Terminated {
                        code: 128,
                        reason: "StartError".into(),
                        started: at.clone(),
                        finished: at,
                    }),
                    Duration::ZERO,
                )
            }
        };
        match outcome {
            Exit::Stopped(s) => return Some(s),
            Exit::Crashed(state) => {
                let backoff = restart_backoff(if ran_for > Duration::from_secs(60) {
                    0
                } else {
                    r.restarts
                });
                r.restarts += 1;
                r.last = Some(state);
                r.set_ready(false);
                r.state = State::Waiting {
                    reason: "CrashLoopBackOff".into(),
                    message: format!("back-off {}s restarting the process", backoff.as_secs()),
                };
                r.report().await;
                if let Some(s) = stopped_within(stop, backoff).await {
                    return Some(s);
                }
            }
        }
    }
}

async fn start(p: &Prepared, log_path: &std::path::Path) -> std::io::Result<Child> {
    if let Some(dir) = log_path.parent() {
        tokio::fs::create_dir_all(dir).await?;
    }
    let mut log = tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path)
        .await?;
    log.write_all(
        format!(
            "===== pod-runner {}: {} {}\n",
            crate::now(),
            p.binary.display(),
            p.args.join(" ")
        )
        .as_bytes(),
    )
    .await?;
    let log = log.into_std().await;
    let err = log.try_clone()?;
    Command::new(&p.binary)
        .args(&p.args)
        .env_clear()
        .envs(p.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&p.dir)
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(err))
        .kill_on_drop(true)
        .spawn()
}

enum Exit {
    Stopped(Stop),
    Crashed(State),
}

/// Sends SIGTERM, waits up to `grace`, then SIGKILL. A later stop request with a shorter grace
/// period (a force deletion during a graceful one) shortens the wait, as on a kubelet.
async fn terminate(
    child: &mut Child,
    grace: Duration,
    pod: &str,
    stop: &mut watch::Receiver<Option<Stop>>,
) {
    if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
        // SAFETY: kill(2) on our own child's pid; no memory is touched.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
    }
    let mut deadline = tokio::time::Instant::now() + grace;
    let mut open = true;
    loop {
        tokio::select! {
            status = child.wait() => {
                match status {
                    Ok(status) => info!(%pod, %status, "process exited after SIGTERM"),
                    Err(e) => warn!(%pod, error = %e, "cannot wait for the process"),
                }
                return;
            }
            () = tokio::time::sleep_until(deadline) => {
                warn!(%pod, grace_s = grace.as_secs(), "process still running after the grace period: SIGKILL");
                if let Err(e) = child.kill().await {
                    warn!(%pod, error = %e, "cannot kill the process");
                }
                return;
            }
            res = stop.changed(), if open => match res {
                Ok(()) => {
                    if let Some(Stop::Delete { grace }) = *stop.borrow_and_update() {
                        deadline = deadline.min(tokio::time::Instant::now() + Duration::from_secs(grace));
                    }
                }
                Err(_) => open = false,
            },
        }
    }
}

async fn run_process(
    mut child: Child,
    p: &Prepared,
    ip: Ipv4Addr,
    r: &mut Reporter,
    stop: &mut watch::Receiver<Option<Stop>>,
    grace_default: u64,
) -> (Exit, Duration) {
    let t0 = Instant::now();
    let since = now();
    let pid = child.id().unwrap_or_default();
    info!(pod = %r.name, pid, %ip, "process started");
    r.phase = "Running";
    r.message = None;
    r.state = State::Running {
        since: since.clone(),
        pid,
    };
    r.set_ready(p.readiness.is_none());
    r.report().await;

    let mut ready_probe = ProbeState::new(p.readiness.as_ref());
    let mut live_probe = ProbeState::new(p.liveness.as_ref());
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            status = child.wait() => {
                let (code, reason) = match status {
                    Ok(s) => (s.code().unwrap_or(128 + std::os::unix::process::ExitStatusExt::signal(&s).unwrap_or(0)),
                              if s.success() { "Completed" } else { "Error" }),
                    Err(_) => (128, "Unknown"),
                };
                warn!(pod = %r.name, pid, code, "process exited; restarting it");
                return (Exit::Crashed(State::Terminated {
                    code, reason: reason.into(), started: since, finished: now(),
                }), t0.elapsed());
            }
            res = stop.changed() => {
                let s = match res { Ok(()) => (*stop.borrow_and_update()).unwrap_or(Stop::Shutdown), Err(_) => Stop::Shutdown };
                let grace = match s {
                    Stop::Delete { grace } => Duration::from_secs(grace),
                    Stop::Shutdown => Duration::from_secs(5),
                };
                info!(pod = %r.name, pid, grace_s = grace.as_secs(), "stopping the process");
                terminate(&mut child, grace, &r.name, stop).await;
                return (Exit::Stopped(s), t0.elapsed());
            }
            _ = tick.tick() => {
                if let Some(ok) = ready_probe.due(t0, r.ready) {
                    let ok = ok && probe(ip, &p.container, ready_probe.probe).await;
                    if let Some(ready) = ready_probe.record(ok) {
                        if ready != r.ready {
                            info!(pod = %r.name, ready, "readiness changed");
                        }
                        r.set_ready(ready);
                        r.report().await;
                    }
                }
                if let Some(ok) = live_probe.due(t0, true) {
                    let ok = ok && probe(ip, &p.container, live_probe.probe).await;
                    if live_probe.record(ok) == Some(false) {
                        warn!(pod = %r.name, pid, "liveness probe failed: restarting the process");
                        terminate(&mut child, Duration::from_secs(grace_default), &r.name, stop).await;
                        return (Exit::Crashed(State::Terminated {
                            code: 137, reason: "LivenessProbeFailed".into(), started: since, finished: now(),
                        }), t0.elapsed());
                    }
                }
            }
        }
    }
}

/// Timing and thresholds of one probe of one process run.
struct ProbeState<'a> {
    probe: Option<&'a Probe>,
    next: Duration,
    successes: i32,
    failures: i32,
}

impl<'a> ProbeState<'a> {
    fn new(probe: Option<&'a Probe>) -> Self {
        let delay = probe
            .and_then(|p| p.initial_delay_seconds)
            .and_then(|s| u64::try_from(s).ok())
            .unwrap_or(0);
        Self {
            probe,
            next: Duration::from_secs(delay),
            successes: 0,
            failures: 0,
        }
    }

    /// Some(true) when a probe is due. Until the first success (`passed` false), probes run
    /// every 500 ms instead of every periodSeconds, so pods become ready without a wasted period.
    fn due(&mut self, t0: Instant, passed: bool) -> Option<bool> {
        let p = self.probe?;
        if t0.elapsed() < self.next {
            return None;
        }
        let period = p
            .period_seconds
            .and_then(|s| u64::try_from(s).ok())
            .unwrap_or(10);
        let step = if passed || self.successes > 0 {
            Duration::from_secs(period.max(1))
        } else {
            Duration::from_millis(500)
        };
        self.next = t0.elapsed() + step;
        Some(true)
    }

    /// Some(new verdict) once a threshold is crossed.
    fn record(&mut self, ok: bool) -> Option<bool> {
        let p = self.probe?;
        if ok {
            self.failures = 0;
            self.successes += 1;
            (self.successes >= p.success_threshold.unwrap_or(1)).then_some(true)
        } else {
            self.successes = 0;
            self.failures += 1;
            (self.failures >= p.failure_threshold.unwrap_or(3)).then_some(false)
        }
    }
}

/// One probe against the pod address: httpGet (2xx/3xx) or tcpSocket; others count as passed.
async fn probe(
    ip: Ipv4Addr,
    container: &k8s_openapi::api::core::v1::Container,
    p: Option<&Probe>,
) -> bool {
    let Some(p) = p else { return true };
    let timeout = Duration::from_secs(
        p.timeout_seconds
            .and_then(|s| u64::try_from(s).ok())
            .unwrap_or(1)
            .max(1),
    );
    let port_of = |port: &IntOrString| match port {
        IntOrString::Int(n) => u16::try_from(*n).ok(),
        IntOrString::String(name) => container
            .ports
            .iter()
            .flatten()
            .find(|cp| cp.name.as_deref() == Some(name.as_str()))
            .and_then(|cp| u16::try_from(cp.container_port).ok()),
    };
    if let Some(h) = &p.http_get {
        let Some(port) = port_of(&h.port) else {
            return false;
        };
        let path = h.path.clone().unwrap_or_else(|| "/".into());
        return tokio::time::timeout(timeout, http_get(ip, port, &path))
            .await
            .ok()
            .and_then(Result::ok)
            .is_some_and(|code| (200..400).contains(&code));
    }
    if let Some(t) = &p.tcp_socket {
        let Some(port) = port_of(&t.port) else {
            return false;
        };
        return tokio::time::timeout(timeout, tokio::net::TcpStream::connect((ip, port)))
            .await
            .is_ok_and(|r| r.is_ok());
    }
    true
}

/// A minimal HTTP/1.0 GET; returns the status code.
async fn http_get(ip: Ipv4Addr, port: u16, path: &str) -> std::io::Result<u16> {
    let mut stream = tokio::net::TcpStream::connect((ip, port)).await?;
    let request = format!(
        "GET {path} HTTP/1.0\r\nHost: {ip}:{port}\r\nUser-Agent: roomcast-pod-runner\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut head = [0u8; 64];
    let mut n = 0;
    while n < head.len() {
        let read = stream.read(&mut head[n..]).await?;
        if read == 0 {
            break;
        }
        n += read;
        if head[..n].contains(&b'\n') {
            break;
        }
    }
    let line = String::from_utf8_lossy(&head[..n]);
    line.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "no HTTP status"))
}
