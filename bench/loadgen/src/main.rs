//! `roomcast-bench`: load generator for the Roomcast benchmarks.
//!
//! Speaks Engine.IO v4 + Socket.IO v5 over WebSocket directly (no client library), so that the
//! generator stays cheap and its own behaviour is known. Modes:
//!
//! - `idle`: open N connections (optionally joining a room), keep them alive answering pings,
//!   exit after `--hold-secs`. With `--join` the READY line doubles as a connect-rate figure
//!   (handshake + namespace connect + room join).
//! - `subscribe`: like `idle --join ROOM`, and records publish-to-receive latency of every
//!   `message` event into an HDR histogram.
//! - `publish`: one connection that joins the room, then emits
//!   `message("<monotonic_ns>:<seq>:<padding>")` at a fixed rate; the server relays it to the
//!   other sockets of the room (the relay app of `roomcast-dataplane`, and the same behaviour in
//!   `bench/node/server.mjs` and `bench/socketioxide-server`).
//! - `merge`: merges the histograms of several `subscribe` outputs.
//! - `peer-send` / `peer-recv`: two processes joined by one Roomcast peer link (the real
//!   mesh), for the cost and latency of forwarding between nodes (see `peer.rs`).
//! - `recovery` / `recovery-publish`: clients that resume their sessions as socket.io-client
//!   does (connection state recovery) and numbered publishers, for loss and recovery time
//!   across a node's drain (see `recovery.rs`); `clock` prints `CLOCK_MONOTONIC` in ns.
//!
//! Machine-readable output goes to stdout: one `READY {json}` line when the connect phase is
//! over, one `DONE {json}` line at the end. Progress goes to stderr. Only loopback addresses are
//! accepted, and every mode stops by itself.

mod clock;
mod latency;
mod peer;
mod pool;
mod proto;
mod recovery;
mod sendcost;
mod target;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use serde_json::json;
use tokio::sync::watch;

use crate::pool::{Counters, PoolOpts};
use crate::proto::json_str;
use crate::target::Target;

#[derive(Parser)]
#[command(
    name = "roomcast-bench",
    about = "Socket.IO load generator (loopback only)"
)]
struct Cli {
    /// Tokio worker threads; 1 runs a single-threaded runtime (the default: the script runs
    /// several processes instead).
    #[arg(long, global = true, default_value_t = 1)]
    threads: usize,
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// Hold N idle connections.
    Idle(IdleArgs),
    /// Hold N connections joined to a room and record `message` latency.
    Subscribe(SubscribeArgs),
    /// Publish timestamped events to a room at a fixed rate.
    Publish(PublishArgs),
    /// Merge `DONE` lines of several `subscribe` outputs into one latency summary.
    Merge(MergeArgs),
    /// One side of a bare peer stream: send broadcasts to a `peer-recv` process.
    PeerSend(peer::PeerSendArgs),
    /// One side of a bare peer stream: receive, count and time broadcasts.
    PeerRecv(peer::PeerRecvArgs),
    /// Clients that resume their sessions (connection state recovery) after a disconnection.
    Recovery(recovery::RecoveryArgs),
    /// Numbered messages to many rooms, one connection per room.
    RecoveryPublish(recovery::PublishRoomsArgs),
    /// Prints CLOCK_MONOTONIC in nanoseconds (the clock of every timestamp here).
    Clock,
    /// The kernel's cost of a small loopback write by system call (`writev` or `send`).
    SendCost(sendcost::SendCostArgs),
}

#[derive(Args, Clone)]
struct ConnArgs {
    /// Server URL, e.g. ws://127.0.0.1:3000 (loopback only).
    #[arg(long)]
    url: String,
    /// Engine.IO path when the URL has none.
    #[arg(long, default_value = "/socket.io/")]
    path: String,
    /// Socket.IO namespace.
    #[arg(long, default_value = "/")]
    namespace: String,
    /// Comma-separated local source IPs (127.0.0.0/8), used round-robin.
    #[arg(long, default_value = "127.0.0.1")]
    source_ips: String,
    /// Index offset for the source-IP round robin (give each process a different one).
    #[arg(long, default_value_t = 0)]
    ip_offset: usize,
    /// Handshakes in flight at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Attempts per connection.
    #[arg(long, default_value_t = 3)]
    attempts: u32,
    /// Handshake timeout in seconds.
    #[arg(long, default_value_t = 20)]
    handshake_timeout_secs: u64,
}

#[derive(Args)]
struct IdleArgs {
    #[command(flatten)]
    conn: ConnArgs,
    /// Connections to open.
    #[arg(long)]
    connections: usize,
    /// Seconds to hold the connections after the connect phase (SIGTERM/SIGINT end it earlier).
    #[arg(long, default_value_t = 60)]
    hold_secs: u64,
    /// Room to join (with an ack) right after connecting.
    #[arg(long)]
    join: Option<String>,
    /// With `--join ROOM`: each connection joins a room of its own, `ROOM<pid>-<i>` (a per-user
    /// room, the common case), instead of all sharing ROOM.
    #[arg(long, requires = "join")]
    room_per_connection: bool,
    /// Seconds between progress lines on stderr (0: none).
    #[arg(long, default_value_t = 10)]
    report_secs: u64,
}

#[derive(Args)]
struct SubscribeArgs {
    #[command(flatten)]
    idle: IdleArgs,
}

#[derive(Args)]
struct PublishArgs {
    #[command(flatten)]
    conn: ConnArgs,
    /// Room to join, then publish to.
    #[arg(long)]
    room: String,
    /// Publishes per second.
    #[arg(long, default_value_t = 10.0)]
    rate: f64,
    /// Payload size in bytes (timestamp and sequence included).
    #[arg(long, default_value_t = 100)]
    payload_bytes: usize,
    /// How long to publish.
    #[arg(long, default_value_t = 10)]
    duration_secs: u64,
    /// Seconds to wait after connecting before publishing.
    #[arg(long, default_value_t = 0)]
    delay_secs: u64,
}

#[derive(Args)]
struct MergeArgs {
    /// Files holding `DONE {json}` lines from `subscribe`.
    files: Vec<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let rt = if cli.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cli.threads)
            .enable_all()
            .build()?
    };
    rt.block_on(async move {
        match cli.mode {
            Mode::Idle(a) => run_clients(a, false).await,
            Mode::Subscribe(a) => {
                if a.idle.join.is_none() {
                    bail!("subscribe needs --join ROOM");
                }
                run_clients(a.idle, true).await
            }
            Mode::Publish(a) => run_publish(a).await,
            Mode::Merge(a) => run_merge(a),
            Mode::PeerSend(a) => peer::send(a).await,
            Mode::PeerRecv(a) => peer::recv(a).await,
            Mode::Recovery(a) => recovery::run_clients(a).await,
            Mode::RecoveryPublish(a) => recovery::run_publishers(a).await,
            Mode::Clock => {
                println!("{}", clock::monotonic_ns());
                Ok(())
            }
            // Plain threads: nothing else runs on the runtime meanwhile.
            Mode::SendCost(a) => sendcost::run(a),
        }
    })
}

fn pool_opts(c: &ConnArgs, connections: usize) -> anyhow::Result<PoolOpts> {
    Ok(PoolOpts {
        target: Target::parse(&c.url, &c.path, &c.namespace)?,
        connections,
        source_ips: target::parse_source_ips(&c.source_ips)?,
        concurrency: c.concurrency,
        attempts: c.attempts,
        handshake_timeout: Duration::from_secs(c.handshake_timeout_secs),
        ip_offset: c.ip_offset,
    })
}

/// Resolves when SIGTERM or SIGINT arrives (never, if the handlers cannot be installed).
/// Opens every connection of `opts`, each running `task`, unless the process is terminated
/// first; logs what failed.
async fn connect_all<F, Fut>(
    what: &str,
    opts: &PoolOpts,
    counters: &Arc<Counters>,
    task: F,
) -> anyhow::Result<pool::ConnectOutcome>
where
    F: Fn(usize, proto::Conn, pool::Ready) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    eprintln!(
        "{what}connecting {} to {} from {:?}",
        opts.connections, opts.target.ws_url, opts.source_ips
    );
    let outcome = tokio::select! {
        o = pool::open_many(opts, counters.clone(), task) => o,
        _ = terminated() => bail!("terminated during connect phase"),
    };
    for (err, n) in &outcome.errors {
        eprintln!("connect error x{n}: {err}");
    }
    Ok(outcome)
}

async fn terminated() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

async fn run_clients(a: IdleArgs, record_latency: bool) -> anyhow::Result<()> {
    let opts = pool_opts(&a.conn, a.connections)?;
    let counters = Arc::new(Counters::default());
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let hist = Arc::new(Mutex::new(latency::new_histogram()?));
    let join_room = a.join.clone();
    let room_per_connection = a.room_per_connection;
    let pid = std::process::id();

    let task = {
        let counters = counters.clone();
        let hist = hist.clone();
        move |i: usize, mut conn: proto::Conn, ready: pool::Ready| {
            let counters = counters.clone();
            let shutdown = shutdown_rx.clone();
            let join_frame = join_room.as_deref().map(|room| {
                let room = if room_per_connection {
                    format!("{room}{pid}-{i}")
                } else {
                    room.to_string()
                };
                format!("[\"join\",{}]", json_str(&room))
            });
            let hist = hist.clone();
            async move {
                if let Some(frame) = join_frame {
                    match conn
                        .emit_acked_with_retry(&frame, 5, Duration::from_secs(2))
                        .await
                    {
                        Ok(id) if id > 1 => Counters::inc(&counters.join_retries),
                        Ok(_) => {}
                        Err(e) => {
                            ready.done(Err(e.context("join")));
                            return;
                        }
                    }
                }
                ready.done(Ok(()));
                if record_latency {
                    pool::hold(conn, &counters, shutdown, |body| {
                        if let Some(sent_ns) = parse_message_timestamp(body) {
                            let now = clock::monotonic_ns();
                            let us = now.saturating_sub(sent_ns) / 1_000;
                            if let Ok(mut h) = hist.lock() {
                                latency::record(&mut h, us);
                            }
                        }
                    })
                    .await;
                } else {
                    pool::hold(conn, &counters, shutdown, |_| {}).await;
                }
            }
        }
    };

    let outcome = connect_all("", &opts, &counters, task).await?;
    let secs = outcome.elapsed.as_secs_f64();
    let ready = json!({
        "connected": outcome.connected,
        "failed": outcome.failed,
        "connect_secs": secs,
        "connects_per_sec": if secs > 0.0 { outcome.connected as f64 / secs } else { 0.0 },
        "ping_interval_ms": Counters::get(&counters.ping_interval_ms),
        "join_retries": Counters::get(&counters.join_retries),
    });
    println!("READY {ready}");

    let hold_until = Instant::now() + Duration::from_secs(a.hold_secs);
    let mut tick = tokio::time::interval(Duration::from_secs(a.report_secs.max(1)));
    tick.tick().await;
    let term = terminated();
    tokio::pin!(term);
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(hold_until.into()) => break,
            _ = &mut term => break,
            _ = tick.tick() => if a.report_secs > 0 {
                eprintln!(
                    "alive={} closed={} errors={} pings={} events={}",
                    Counters::get(&counters.alive),
                    Counters::get(&counters.closed_by_server),
                    Counters::get(&counters.read_errors),
                    Counters::get(&counters.pings),
                    Counters::get(&counters.events),
                );
            },
        }
    }
    let _ = shutdown_tx.send(true);

    let mut done = json!({
        "connected": outcome.connected,
        "failed": outcome.failed,
        "connect_secs": secs,
        "alive": Counters::get(&counters.alive),
        "closed_by_server": Counters::get(&counters.closed_by_server),
        "read_errors": Counters::get(&counters.read_errors),
        "pings": Counters::get(&counters.pings),
        "events": Counters::get(&counters.events),
    });
    if record_latency {
        let h = hist
            .lock()
            .map_err(|_| anyhow::anyhow!("histogram lock poisoned"))?;
        done["latency"] = serde_json::to_value(latency::summarize(&h))?;
        done["latency_buckets"] = serde_json::to_value(latency::Buckets::from_histogram(&h))?;
    }
    println!("DONE {done}");
    Ok(())
}

/// Extracts the publish timestamp from an EVENT body `["message","<ns>:<seq>:<pad>"]`.
fn parse_message_timestamp(body: &str) -> Option<u64> {
    // Skip an ack id if any (we never request one for `message`).
    let body = body.trim_start_matches(|c: char| c.is_ascii_digit());
    let rest = body.strip_prefix("[\"message\",\"")?;
    let end = rest.find(|c: char| !c.is_ascii_digit())?;
    rest[..end].parse().ok()
}

async fn run_publish(a: PublishArgs) -> anyhow::Result<()> {
    if !a.rate.is_finite() || a.rate <= 0.0 {
        bail!("--rate must be positive");
    }
    let opts = pool_opts(&a.conn, 1)?;
    let ip = opts.source_ips[a.conn.ip_offset % opts.source_ips.len()];
    let mut conn = proto::connect(&opts.target, ip, opts.handshake_timeout).await?;
    let join = format!("[\"join\",{}]", json_str(&a.room));
    conn.emit_acked_with_retry(&join, 5, Duration::from_secs(2))
        .await
        .context("publisher join")?;
    println!("READY {}", json!({"connected": 1}));
    let deadline = tokio::time::sleep(Duration::from_secs(a.delay_secs));
    tokio::pin!(deadline);
    let pad_len = a.payload_bytes.saturating_sub(30);
    let pad = "x".repeat(pad_len);
    let mut waiting = true;
    let mut started = Instant::now();
    let period = Duration::from_secs_f64((1.0 / a.rate).max(0.001));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut sent: u64 = 0;
    let total = (a.rate * a.duration_secs as f64).round() as u64;
    let term = terminated();
    tokio::pin!(term);
    loop {
        tokio::select! {
            _ = &mut deadline, if waiting => {
                waiting = false;
                started = Instant::now();
            }
            _ = tick.tick(), if !waiting => {
                let due = ((started.elapsed().as_secs_f64() * a.rate) as u64 + 1).min(total);
                while sent < due {
                    let payload = format!("{}:{}:{}", clock::monotonic_ns(), sent, pad);
                    let frame = format!("[\"message\",\"{payload}\"]");
                    conn.emit(&frame, None).await?;
                    sent += 1;
                }
                if sent >= total {
                    break;
                }
            }
            frame = conn.next_frame() => match frame? {
                proto::Frame::Ping => conn.pong().await?,
                proto::Frame::Closed => bail!("server closed the publisher"),
                _ => {}
            },
            _ = &mut term => break,
        }
    }
    let secs = started.elapsed().as_secs_f64();
    // Give the last broadcasts time to leave before the connection drops.
    tokio::time::sleep(Duration::from_millis(200)).await;
    println!(
        "DONE {}",
        json!({"sent": sent, "secs": secs, "rate": if secs > 0.0 { sent as f64 / secs } else { 0.0 }})
    );
    Ok(())
}

fn run_merge(a: MergeArgs) -> anyhow::Result<()> {
    let mut h = latency::new_histogram()?;
    let mut events = 0u64;
    let mut alive = 0u64;
    for f in &a.files {
        let text = std::fs::read_to_string(f).with_context(|| format!("read {}", f.display()))?;
        for line in text.lines() {
            let Some(j) = line.strip_prefix("DONE ") else {
                continue;
            };
            let v: serde_json::Value = serde_json::from_str(j)?;
            events += v["events"].as_u64().unwrap_or(0);
            alive += v["alive"].as_u64().unwrap_or(0);
            if let Some(b) = v.get("latency_buckets") {
                let b: latency::Buckets = serde_json::from_value(b.clone())?;
                b.add_to(&mut h);
            }
        }
    }
    println!(
        "{}",
        json!({"events": events, "alive": alive, "latency": latency::summarize(&h)})
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_message_timestamp;

    #[test]
    fn parses_timestamp() {
        assert_eq!(
            parse_message_timestamp("[\"message\",\"123456:7:xx\"]"),
            Some(123456)
        );
        assert_eq!(parse_message_timestamp("[\"other\",\"1:2\"]"), None);
    }
}
