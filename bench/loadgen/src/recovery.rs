//! Connection state recovery under a drain: clients that resume their session the way the
//! stock `socket.io-client` does, and publishers that number their messages per room, so
//! that loss and duplicates can be counted per client.
//!
//! - `recovery`: N clients, client `i` joined to room `<prefix><i mod rooms>`. Every event's
//!   last string argument is kept as the client's offset (socket.io-client's `_lastOffset`);
//!   when the server closes a connection (or it breaks), the client reconnects, to the next
//!   `--reconnect-urls` entry, with the Socket.IO CONNECT auth `{"pid":..,"offset":..}`. The
//!   CONNECT answer's `pid` equal to the one it had means *recovered* (socket.io-client's
//!   `socket.recovered`); a new one is a fresh session, after which the client joins its room
//!   again, as an application would. Per-client recovery time (disconnect to recovered CONNECT
//!   answer) goes into an HDR histogram (µs); each client counts the numbered messages it got,
//!   twice and skipped. `RECOVERED {json}` is printed once every client that lost its
//!   connection is back (or gave up); at the end, one `CLIENT ...` line per client precedes
//!   the `DONE` line.
//! - `recovery-publish`: one connection per room (joined to it) that emits
//!   `message("<CLOCK_MONOTONIC ns>:<seq>:<padding>")` at `--rate` per room, `seq` counting
//!   from 0 in each room; `--sent-out` writes `room sent` lines at the end.

use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use serde_json::{json, Value};
use tokio::sync::{watch, Semaphore};

use crate::pool::{self, Counters};
use crate::proto::{self, json_str, Conn, Frame};
use crate::target::Target;
use crate::{clock, latency, pool_opts, terminated, ConnArgs};

#[derive(Args)]
pub struct RecoveryArgs {
    #[command(flatten)]
    conn: ConnArgs,
    /// Clients to open (on `--url`).
    #[arg(long)]
    connections: usize,
    /// Rooms the clients are spread over (client i joins room i mod rooms).
    #[arg(long, default_value_t = 100)]
    rooms: usize,
    /// Room name prefix (the room index follows).
    #[arg(long, default_value = "recovery-")]
    room_prefix: String,
    /// Where to reconnect, round robin per client and attempt (comma-separated ws:// URLs;
    /// default: `--url`).
    #[arg(long)]
    reconnect_urls: Option<String>,
    /// Wait before the first reconnection attempt (socket.io-client's default is a random
    /// 500-1500 ms).
    #[arg(long, default_value_t = 0)]
    reconnect_delay_ms: u64,
    /// Reconnection handshakes in flight at once in this process.
    #[arg(long, default_value_t = 64)]
    reconnect_concurrency: usize,
    /// Reconnection attempts after one disconnection.
    #[arg(long, default_value_t = 20)]
    reconnect_attempts: u32,
    /// Seconds to run after the connect phase (SIGTERM/SIGINT end it earlier).
    #[arg(long, default_value_t = 300)]
    hold_secs: u64,
    /// Seconds between progress lines on stderr (0: none).
    #[arg(long, default_value_t = 10)]
    report_secs: u64,
}

#[derive(Args)]
pub struct PublishRoomsArgs {
    #[command(flatten)]
    conn: ConnArgs,
    /// Rooms to publish to, one connection each.
    #[arg(long, default_value_t = 100)]
    rooms: usize,
    /// Room name prefix (the room index follows).
    #[arg(long, default_value = "recovery-")]
    room_prefix: String,
    /// Messages per second to each room.
    #[arg(long, default_value_t = 1.0)]
    rate: f64,
    /// Payload size in bytes (timestamp and sequence included).
    #[arg(long, default_value_t = 100)]
    payload_bytes: usize,
    /// How long to publish at most (SIGTERM/SIGINT end it earlier).
    #[arg(long, default_value_t = 300)]
    duration_secs: u64,
    /// Writes `room sent` lines at the end.
    #[arg(long)]
    sent_out: Option<PathBuf>,
}

/// What one client saw, for the end-of-run accounting.
#[derive(Debug, Default, Clone)]
struct Tally {
    room: usize,
    received: u64,
    /// Messages whose seq was below the next expected one (delivered again).
    twice: u64,
    /// Messages skipped over (a seq above the next expected one).
    skipped: u64,
    /// The next seq expected in the client's room.
    next_seq: u64,
    disconnects: u64,
    recovered: u64,
    fresh: u64,
    /// Disconnections after which no reconnection succeeded.
    failed: u64,
}

impl Tally {
    /// Counts message `seq` of the client's room.
    fn message(&mut self, seq: u64) {
        self.received += 1;
        if seq < self.next_seq {
            self.twice += 1;
        } else {
            self.skipped += seq - self.next_seq;
            self.next_seq = seq + 1;
        }
    }
}

/// Per-process counters and timestamps (CLOCK_MONOTONIC ns; 0 = none yet).
#[derive(Default)]
struct Shared {
    disconnected: AtomicU64,
    back: AtomicU64,
    recovered: AtomicU64,
    fresh: AtomicU64,
    failed: AtomicU64,
    first_disconnect_ns: AtomicU64,
    last_disconnect_ns: AtomicU64,
    last_recovered_ns: AtomicU64,
}

fn set_min(a: &AtomicU64, v: u64) {
    let _ = a.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |old| {
        (old == 0 || v < old).then_some(v)
    });
}

fn set_max(a: &AtomicU64, v: u64) {
    a.fetch_max(v, Ordering::Relaxed);
}

/// The session a client resumes: its private id and the offset of the last event it got.
struct Session {
    pid: Option<String>,
    offset: Option<String>,
}

impl Session {
    /// The CONNECT auth socket.io-client sends when it has a pid: `{pid, offset}` (no offset
    /// when nothing was received yet).
    fn auth(&self) -> Option<String> {
        let pid = self.pid.as_deref()?;
        Some(match &self.offset {
            Some(offset) => json!({ "pid": pid, "offset": offset }).to_string(),
            None => json!({ "pid": pid }).to_string(),
        })
    }
}

/// From an EVENT body (`["message","<ns>:<seq>:<pad>","<offset>"]`, maybe after an ack id):
/// the offset (the last argument, when a string and not the only argument) and the seq.
fn parse_event(body: &str) -> (Option<String>, Option<u64>) {
    let body = body.trim_start_matches(|c: char| c.is_ascii_digit());
    let Ok(Value::Array(args)) = serde_json::from_str::<Value>(body) else {
        return (None, None);
    };
    // args[0] is the event name; socket.io-client takes the last argument as the offset.
    let offset = match args.last() {
        Some(Value::String(s)) if args.len() > 1 => Some(s.clone()),
        _ => None,
    };
    let seq = match (args.first(), args.get(1)) {
        (Some(Value::String(name)), Some(Value::String(payload))) if name == "message" => {
            payload.split(':').nth(1).and_then(|s| s.parse().ok())
        }
        _ => None,
    };
    (offset, seq)
}

fn join_frame(prefix: &str, room: usize) -> String {
    format!("[\"join\",{}]", json_str(&format!("{prefix}{room}")))
}

/// Runs the `recovery` clients.
pub async fn run_clients(a: RecoveryArgs) -> anyhow::Result<()> {
    if a.rooms == 0 {
        bail!("--rooms must be at least 1");
    }
    let opts = pool_opts(&a.conn, a.connections)?;
    let reconnect: Vec<Target> = match &a.reconnect_urls {
        Some(list) => list
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(|u| Target::parse(u, &a.conn.path, &a.conn.namespace))
            .collect::<anyhow::Result<_>>()?,
        None => vec![opts.target.clone()],
    };
    if reconnect.is_empty() {
        bail!("--reconnect-urls names no URL");
    }
    let reconnect = Arc::new(reconnect);
    let counters = Arc::new(Counters::default());
    let shared = Arc::new(Shared::default());
    let tallies = Arc::new(Mutex::new(vec![Tally::default(); a.connections]));
    let hist = Arc::new(Mutex::new(latency::new_histogram()?));
    let permits = Arc::new(Semaphore::new(a.reconnect_concurrency.max(1)));
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let plan = Arc::new(Plan {
        rooms: a.rooms,
        prefix: a.room_prefix.clone(),
        reconnect,
        delay: Duration::from_millis(a.reconnect_delay_ms),
        attempts: a.reconnect_attempts.max(1),
        timeout: opts.handshake_timeout,
        source_ips: opts.source_ips.clone(),
        ip_offset: opts.ip_offset,
    });

    let task = {
        let (counters, shared, tallies, hist) = (
            counters.clone(),
            shared.clone(),
            tallies.clone(),
            hist.clone(),
        );
        move |i: usize, conn: Conn, ready: pool::Ready| {
            let client = Client {
                i,
                plan: plan.clone(),
                counters: counters.clone(),
                shared: shared.clone(),
                hist: hist.clone(),
                permits: permits.clone(),
                shutdown: shutdown_rx.clone(),
                tally: Tally {
                    room: i % plan.rooms,
                    ..Tally::default()
                },
            };
            let tallies = tallies.clone();
            async move {
                let tally = client.run(conn, ready).await;
                if let Ok(mut all) = tallies.lock() {
                    if let Some(slot) = all.get_mut(i) {
                        *slot = tally;
                    }
                }
            }
        }
    };

    let outcome = crate::connect_all("recovery: ", &opts, &counters, task).await?;
    println!(
        "READY {}",
        json!({
            "connected": outcome.connected,
            "failed": outcome.failed,
            "connect_secs": outcome.elapsed.as_secs_f64(),
        })
    );

    let hold_until = Instant::now() + Duration::from_secs(a.hold_secs);
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut last_report = Instant::now();
    let mut announced = false;
    let term = terminated();
    tokio::pin!(term);
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(hold_until.into()) => break,
            _ = &mut term => break,
            _ = tick.tick() => {
                let down = Counters::get(&shared.disconnected);
                let back = Counters::get(&shared.back) + Counters::get(&shared.failed);
                if !announced && down >= outcome.connected && back >= down && down > 0 {
                    announced = true;
                    println!("RECOVERED {}", summary(&shared, &counters));
                }
                if a.report_secs > 0 && last_report.elapsed() >= Duration::from_secs(a.report_secs) {
                    last_report = Instant::now();
                    eprintln!("{}", summary(&shared, &counters));
                }
            }
        }
    }
    let _ = shutdown_tx.send(true);
    // The client tasks write their tallies when they see the shutdown.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let tallies = tallies
        .lock()
        .map_err(|_| anyhow::anyhow!("tallies lock poisoned"))?
        .clone();
    let mut done = summary(&shared, &counters);
    done["connected"] = json!(outcome.connected);
    done["failed_connect"] = json!(outcome.failed);
    done["twice"] = json!(tallies.iter().map(|t| t.twice).sum::<u64>());
    done["skipped"] = json!(tallies.iter().map(|t| t.skipped).sum::<u64>());
    done["clients_twice"] = json!(tallies.iter().filter(|t| t.twice > 0).count());
    done["clients_skipped"] = json!(tallies.iter().filter(|t| t.skipped > 0).count());
    {
        let h = hist
            .lock()
            .map_err(|_| anyhow::anyhow!("histogram lock poisoned"))?;
        done["latency"] = serde_json::to_value(latency::summarize(&h))?;
        done["latency_buckets"] = serde_json::to_value(latency::Buckets::from_histogram(&h))?;
    }
    {
        // CLIENT i room received twice skipped next_seq disconnects recovered fresh failed
        let stdout = std::io::stdout();
        let mut out = std::io::BufWriter::new(stdout.lock());
        for (i, t) in tallies.iter().enumerate() {
            writeln!(
                out,
                "CLIENT {i} {} {} {} {} {} {} {} {} {}",
                t.room,
                t.received,
                t.twice,
                t.skipped,
                t.next_seq,
                t.disconnects,
                t.recovered,
                t.fresh,
                t.failed
            )?;
        }
        out.flush()?;
    }
    println!("DONE {done}");
    Ok(())
}

fn summary(shared: &Shared, counters: &Counters) -> Value {
    json!({
        "alive": Counters::get(&counters.alive),
        "events": Counters::get(&counters.events),
        "disconnected": Counters::get(&shared.disconnected),
        "back": Counters::get(&shared.back),
        "recovered": Counters::get(&shared.recovered),
        "fresh": Counters::get(&shared.fresh),
        "reconnect_failed": Counters::get(&shared.failed),
        "first_disconnect_ns": Counters::get(&shared.first_disconnect_ns),
        "last_disconnect_ns": Counters::get(&shared.last_disconnect_ns),
        "last_recovered_ns": Counters::get(&shared.last_recovered_ns),
    })
}

/// What every client of a process shares: rooms and where and how to reconnect.
struct Plan {
    rooms: usize,
    prefix: String,
    reconnect: Arc<Vec<Target>>,
    delay: Duration,
    attempts: u32,
    timeout: Duration,
    source_ips: Vec<IpAddr>,
    ip_offset: usize,
}

struct Client {
    i: usize,
    plan: Arc<Plan>,
    counters: Arc<Counters>,
    shared: Arc<Shared>,
    hist: Arc<Mutex<hdrhistogram::Histogram<u64>>>,
    permits: Arc<Semaphore>,
    shutdown: watch::Receiver<bool>,
    tally: Tally,
}

/// Why a connection's hold loop ended.
enum Ended {
    Shutdown,
    Lost,
}

impl Client {
    /// Joins the room, then holds the connection, reconnecting (and resuming) after every
    /// loss, until shutdown. Returns the client's tally.
    async fn run(mut self, mut conn: Conn, ready: pool::Ready) -> Tally {
        let join = join_frame(&self.plan.prefix, self.tally.room);
        if let Err(e) = conn
            .emit_acked_with_retry(&join, 5, Duration::from_secs(2))
            .await
        {
            ready.done(Err(e.context("join")));
            return self.tally;
        }
        ready.done(Ok(()));
        let mut session = Session {
            pid: conn.answer.pid.clone(),
            offset: None,
        };
        Counters::inc(&self.counters.alive);
        loop {
            let ended = self.hold(&mut conn, &mut session).await;
            self.counters.alive.fetch_sub(1, Ordering::Relaxed);
            if matches!(ended, Ended::Shutdown) {
                return self.tally;
            }
            let lost_at = clock::monotonic_ns();
            self.tally.disconnects += 1;
            Counters::inc(&self.shared.disconnected);
            set_min(&self.shared.first_disconnect_ns, lost_at);
            set_max(&self.shared.last_disconnect_ns, lost_at);
            drop(conn);
            conn = match self.reconnect(&session).await {
                Some(c) => c,
                None => {
                    self.tally.failed += 1;
                    Counters::inc(&self.shared.failed);
                    return self.tally;
                }
            };
            let now = clock::monotonic_ns();
            if conn.answer.pid.is_some() && conn.answer.pid == session.pid {
                self.tally.recovered += 1;
                Counters::inc(&self.shared.recovered);
                set_max(&self.shared.last_recovered_ns, now);
                if let Ok(mut h) = self.hist.lock() {
                    latency::record(&mut h, now.saturating_sub(lost_at) / 1_000);
                }
            } else {
                // A fresh session: the application joins its room again; what was sent
                // meanwhile is lost for this client (counted as skipped).
                self.tally.fresh += 1;
                Counters::inc(&self.shared.fresh);
                session = Session {
                    pid: conn.answer.pid.clone(),
                    offset: None,
                };
                if conn
                    .emit_acked_with_retry(&join, 5, Duration::from_secs(2))
                    .await
                    .is_err()
                {
                    self.tally.failed += 1;
                    Counters::inc(&self.shared.failed);
                    return self.tally;
                }
            }
            Counters::inc(&self.shared.back);
            Counters::inc(&self.counters.alive);
        }
    }

    /// Answers pings and counts events until the connection ends or shutdown.
    async fn hold(&mut self, conn: &mut Conn, session: &mut Session) -> Ended {
        loop {
            if *self.shutdown.borrow() {
                return Ended::Shutdown;
            }
            tokio::select! {
                frame = conn.next_frame() => match frame {
                    Ok(Frame::Ping) => {
                        Counters::inc(&self.counters.pings);
                        if conn.pong().await.is_err() {
                            return Ended::Lost;
                        }
                    }
                    Ok(Frame::Event(text, start)) => {
                        Counters::inc(&self.counters.events);
                        let (offset, seq) = parse_event(&text.as_str()[start..]);
                        if offset.is_some() {
                            session.offset = offset;
                        }
                        if let Some(seq) = seq {
                            self.tally.message(seq);
                        }
                    }
                    Ok(Frame::Closed) | Err(_) => return Ended::Lost,
                    Ok(Frame::Ack(..)) | Ok(Frame::Other) => {}
                },
                _ = self.shutdown.changed() => return Ended::Shutdown,
            }
        }
    }

    /// Reconnects with the session's `{pid, offset}`, round robin over the reconnect URLs.
    async fn reconnect(&mut self, session: &Session) -> Option<Conn> {
        let plan = self.plan.clone();
        let ip = plan.source_ips[(self.i + plan.ip_offset) % plan.source_ips.len()];
        let auth = session.auth();
        for attempt in 0..plan.attempts {
            let wait = if attempt == 0 {
                plan.delay
            } else {
                Duration::from_millis(100 << attempt.min(4))
            };
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
            if *self.shutdown.borrow() {
                return None;
            }
            let target = &plan.reconnect[(self.i + attempt as usize) % plan.reconnect.len()];
            let Ok(_permit) = self.permits.acquire().await else {
                return None;
            };
            if let Ok(conn) =
                proto::connect_with_auth(target, ip, plan.timeout, auth.as_deref()).await
            {
                return Some(conn);
            }
        }
        None
    }
}

/// Runs `recovery-publish`.
pub async fn run_publishers(a: PublishRoomsArgs) -> anyhow::Result<()> {
    if !a.rate.is_finite() || a.rate <= 0.0 {
        bail!("--rate must be positive");
    }
    let opts = pool_opts(&a.conn, a.rooms)?;
    let sent: Arc<Vec<AtomicU64>> = Arc::new((0..a.rooms).map(|_| AtomicU64::new(0)).collect());
    let mut conns = Vec::with_capacity(a.rooms);
    for room in 0..a.rooms {
        let ip = opts.source_ips[(room + opts.ip_offset) % opts.source_ips.len()];
        let mut conn = proto::connect(&opts.target, ip, opts.handshake_timeout)
            .await
            .with_context(|| format!("publisher of room {room}"))?;
        conn.emit_acked_with_retry(&join_frame(&a.room_prefix, room), 5, Duration::from_secs(2))
            .await
            .with_context(|| format!("publisher join of room {room}"))?;
        conns.push(conn);
    }
    println!("READY {}", json!({ "connected": conns.len() }));
    let (stop_tx, stop_rx) = watch::channel(false);
    let pad = "x".repeat(a.payload_bytes.saturating_sub(30));
    let period = Duration::from_secs_f64(1.0 / a.rate);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (room, mut conn) in conns.into_iter().enumerate() {
        let (sent, pad, mut stop) = (sent.clone(), pad.clone(), stop_rx.clone());
        // Rooms start spread over one period, so the load is even.
        let first = tokio::time::Instant::now() + period.mul_f64(room as f64 / a.rooms as f64);
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval_at(first, period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut seq = 0u64;
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        let frame = format!("[\"message\",\"{}:{seq}:{pad}\"]", clock::monotonic_ns());
                        if conn.emit(&frame, None).await.is_err() {
                            return Err(anyhow::anyhow!("publisher of room {room} lost its connection"));
                        }
                        seq += 1;
                        if let Some(s) = sent.get(room) {
                            s.store(seq, Ordering::Relaxed);
                        }
                    }
                    frame = conn.next_frame() => match frame? {
                        Frame::Ping => conn.pong().await?,
                        Frame::Closed => bail!("server closed the publisher of room {room}"),
                        _ => {}
                    },
                    _ = stop.changed() => {
                        // Give the last messages time to leave before the connection drops.
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        return Ok(());
                    }
                }
            }
        }));
    }
    tokio::select! {
        _ = tokio::time::sleep(Duration::from_secs(a.duration_secs)) => {}
        _ = terminated() => {}
    }
    let _ = stop_tx.send(true);
    let mut errors = 0;
    for t in tasks {
        match t.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                errors += 1;
                eprintln!("{e:#}");
            }
            Err(e) => {
                errors += 1;
                eprintln!("publisher task: {e}");
            }
        }
    }
    let counts: Vec<u64> = sent.iter().map(|s| s.load(Ordering::Relaxed)).collect();
    if let Some(path) = &a.sent_out {
        let mut out = String::new();
        for (room, n) in counts.iter().enumerate() {
            out.push_str(&format!("{room} {n}\n"));
        }
        std::fs::write(path, out).with_context(|| format!("write {}", path.display()))?;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "DONE {}",
        json!({ "sent": counts.iter().sum::<u64>(), "secs": secs, "errors": errors })
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_the_offset_and_seq_as_socket_io_client_would() {
        let (offset, seq) = parse_event("[\"message\",\"123:7:xx\",\"abc-42\"]");
        assert_eq!(offset.as_deref(), Some("abc-42"));
        assert_eq!(seq, Some(7));
        // No offset when the only argument is the event name, or the last one is no string.
        assert_eq!(parse_event("[\"ping\"]").0, None);
        assert_eq!(parse_event("[\"x\",1]").0, None);
        assert_eq!(parse_event("not json"), (None, None));
    }

    #[test]
    fn tally_counts_duplicates_and_gaps() {
        let mut t = Tally::default();
        for seq in [0, 1, 1, 4, 5, 2] {
            t.message(seq);
        }
        assert_eq!((t.received, t.twice, t.skipped, t.next_seq), (6, 2, 2, 6));
    }

    #[test]
    fn auth_is_pid_and_offset_when_known() {
        let mut s = Session {
            pid: None,
            offset: None,
        };
        assert_eq!(s.auth(), None);
        s.pid = Some("p".into());
        assert_eq!(s.auth().as_deref(), Some("{\"pid\":\"p\"}"));
        s.offset = Some("o".into());
        let v: Value = serde_json::from_str(&s.auth().unwrap_or_default()).unwrap();
        assert_eq!(v, json!({"pid": "p", "offset": "o"}));
    }
}
