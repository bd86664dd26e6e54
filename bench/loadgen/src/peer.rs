//! One peer stream on its own: two processes, each a one-peer Roomcast mesh (the real
//! `roomcast_dataplane::cluster::Mesh`), the sender pushing broadcast messages to the
//! receiver over the gRPC link. It measures what the link itself costs: messages per
//! CPU-second of both processes, and the send-to-receive latency at a given rate.
//!
//! The sender (member `a`) dials; the receiver (member `b`) listens. Each message is a
//! Socket.IO packet `2["m","<monotonic_ns>:<padding>"]`, as a client broadcast would be
//! forwarded. After `--duration-secs` the sender sends one message in namespace `/end`; the
//! receiver then prints its `DONE` line and exits.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use hdrhistogram::Histogram;
use roomcast_dataplane::cluster::mesh::{
    Answer, Inbound, LinkSettings, Mesh, PeerTls, TlsFiles, TlsSettings,
};
use roomcast_dataplane::cluster::proto::{self as pb, message::Kind};
use roomcast_dataplane::cluster::Members;
use serde_json::json;

use crate::clock::monotonic_ns;
use crate::latency;

#[derive(Args)]
pub struct PeerArgs {
    /// This process's peer address (loopback).
    #[arg(long)]
    listen: SocketAddr,
    /// The other process's peer address (loopback).
    #[arg(long)]
    peer: SocketAddr,
    /// Mutual TLS on the link: a folder as `roomcast-dataplane certs cluster --members a,b`
    /// writes (this process's files in DIR/a or DIR/b). Without it the link is plaintext.
    #[arg(long)]
    tls_dir: Option<std::path::PathBuf>,
}

#[derive(Args)]
pub struct PeerSendArgs {
    #[command(flatten)]
    addrs: PeerArgs,
    /// Messages per second; 0 sends as fast as the link takes them (throughput run).
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Packet size in bytes.
    #[arg(long, default_value_t = 100)]
    payload_bytes: usize,
    #[arg(long, default_value_t = 10)]
    duration_secs: u64,
}

#[derive(Args)]
pub struct PeerRecvArgs {
    #[command(flatten)]
    addrs: PeerArgs,
}

/// CPU seconds (user + system) used by this process so far.
pub fn cpu_seconds() -> f64 {
    // SAFETY: `usage` is a valid, writable rusage; RUSAGE_SELF is always supported.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return 0.0;
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

fn mesh(me: &str, addrs: &PeerArgs, inbound: Arc<dyn Inbound>) -> anyhow::Result<Arc<Mesh>> {
    for a in [addrs.listen, addrs.peer] {
        if !a.ip().is_loopback() {
            bail!("{a} is not a loopback address");
        }
    }
    let other = if me == "a" { "b" } else { "a" };
    let mut members = Members::new();
    members.insert(me, addrs.listen);
    members.insert(other, addrs.peer);
    let settings = LinkSettings {
        // Deep enough to keep the link busy; the sender backs off when it is full.
        queue: 64 * 1024,
        ..LinkSettings::default()
    };
    let mesh = Mesh::new(me, &members, settings, inbound)?;
    if let Some(dir) = &addrs.tls_dir {
        let dir = dir.join(me);
        let files = TlsFiles {
            ca: dir.join("ca.crt"),
            cert: dir.join("tls.crt"),
            key: dir.join("tls.key"),
        };
        let settings = TlsSettings {
            reload_interval: std::time::Duration::from_secs(5),
            handshake_timeout: std::time::Duration::from_secs(5),
            max_handshakes: 64,
        };
        mesh.secure(PeerTls::load(me, files, settings)?);
    }
    Ok(mesh)
}

/// Sends nothing back.
struct Silent;

impl Inbound for Silent {
    fn receive(&self, _from: &str, _message: Kind) -> Option<Answer> {
        None
    }
}

fn broadcast(namespace: &str, payload_bytes: usize) -> pb::Message {
    let stamp = monotonic_ns().to_string();
    let pad = payload_bytes.saturating_sub(stamp.len() + 12);
    let packet = format!("2[\"m\",\"{stamp}:{}\"]", "x".repeat(pad));
    pb::Message::of(Kind::Broadcast(pb::Broadcast {
        namespace: namespace.to_string(),
        packet: packet.into(),
        ..Default::default()
    }))
}

pub async fn send(args: PeerSendArgs) -> anyhow::Result<()> {
    let mesh = mesh("a", &args.addrs, Arc::new(Silent))?;
    mesh.start(args.addrs.listen).await?;
    let linked = Instant::now();
    while mesh.connected().is_empty() {
        if linked.elapsed() > Duration::from_secs(20) {
            bail!("no link to the receiver at {}", args.addrs.peer);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!("READY {}", json!({ "role": "send" }));
    let cpu0 = cpu_seconds();
    let started = Instant::now();
    let end = started + Duration::from_secs(args.duration_secs);
    let mut sent = 0u64;
    let mut full = 0u64;
    if args.rate > 0.0 {
        // Paced: every millisecond, what the rate owes by then.
        let mut tick = tokio::time::interval(Duration::from_millis(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        while Instant::now() < end {
            tick.tick().await;
            let due = (started.elapsed().as_secs_f64() * args.rate) as u64;
            while sent < due {
                mesh.send_all(&broadcast("/", args.payload_bytes), false);
                sent += 1;
            }
        }
    } else {
        // As fast as the link takes them: a full queue (counted as dropped by the mesh) makes
        // the sender wait a little and resend.
        while Instant::now() < end {
            for _ in 0..256 {
                let before = mesh.dropped();
                mesh.send_all(&broadcast("/", args.payload_bytes), false);
                if mesh.dropped() == before {
                    sent += 1;
                } else {
                    full += 1;
                    tokio::time::sleep(Duration::from_micros(200)).await;
                }
            }
            tokio::task::yield_now().await;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    // Paced runs never resend: what the full queue refused is lost, and reported.
    let dropped = if args.rate > 0.0 { mesh.dropped() } else { 0 };
    // The end marker, sent until the queue takes it.
    loop {
        let before = mesh.dropped();
        mesh.send_all(&broadcast("/end", 0), false);
        if mesh.dropped() == before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    // Let the link drain before the process (and the link) goes.
    tokio::time::sleep(Duration::from_secs(2)).await;
    println!(
        "DONE {}",
        json!({
            "role": "send",
            "sent": sent,
            "queue_full_retries": full,
            "dropped": dropped,
            "seconds": elapsed,
            "cpu_seconds": cpu,
        })
    );
    mesh.close();
    Ok(())
}

/// Counts broadcasts and records their latency.
struct Recorder {
    received: AtomicU64,
    first: Mutex<Option<(Instant, f64)>>,
    histogram: Mutex<Histogram<u64>>,
    done: tokio::sync::Notify,
}

impl Inbound for Recorder {
    fn receive(&self, _from: &str, message: Kind) -> Option<Answer> {
        let Kind::Broadcast(b) = message else {
            return None;
        };
        if b.namespace == "/end" {
            self.done.notify_one();
            return None;
        }
        let now = monotonic_ns();
        if self.received.fetch_add(1, Ordering::Relaxed) == 0 {
            if let Ok(mut first) = self.first.lock() {
                *first = Some((Instant::now(), cpu_seconds()));
            }
        }
        let stamp = std::str::from_utf8(&b.packet)
            .ok()
            .and_then(|p| p.strip_prefix("2[\"m\",\""))
            .and_then(|p| p.split(':').next())
            .and_then(|s| s.parse::<u64>().ok());
        if let (Some(stamp), Ok(mut h)) = (stamp, self.histogram.lock()) {
            latency::record(&mut h, now.saturating_sub(stamp) / 1000);
        }
        None
    }
}

pub async fn recv(args: PeerRecvArgs) -> anyhow::Result<()> {
    let recorder = Arc::new(Recorder {
        received: AtomicU64::new(0),
        first: Mutex::new(None),
        histogram: Mutex::new(latency::new_histogram()?),
        done: tokio::sync::Notify::new(),
    });
    let mesh = mesh("b", &args.addrs, recorder.clone())?;
    let addr = mesh.start(args.addrs.listen).await?;
    println!(
        "READY {}",
        json!({ "role": "recv", "listen": addr.to_string() })
    );
    tokio::time::timeout(Duration::from_secs(3600), recorder.done.notified())
        .await
        .context("no end marker within an hour")?;
    let received = recorder.received.load(Ordering::Relaxed);
    let (seconds, cpu) = match *recorder
        .first
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
    {
        Some((at, cpu0)) => (at.elapsed().as_secs_f64(), cpu_seconds() - cpu0),
        None => (0.0, 0.0),
    };
    let summary = {
        let h = recorder
            .histogram
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?;
        latency::summarize(&h)
    };
    println!(
        "DONE {}",
        json!({
            "role": "recv",
            "received": received,
            "seconds": seconds,
            "cpu_seconds": cpu,
            "latency": summary,
        })
    );
    mesh.close();
    Ok(())
}
