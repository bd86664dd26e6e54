//! Opening many connections at bounded concurrency, spread over source IPs, and keeping them
//! alive until shutdown. Shared by every client-side mode.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};

use crate::proto::{self, Conn, Frame};
use crate::target::Target;

/// How to open the connections of one process.
#[derive(Clone)]
pub struct PoolOpts {
    pub target: Target,
    pub connections: usize,
    pub source_ips: Vec<IpAddr>,
    /// Handshakes in flight at once.
    pub concurrency: usize,
    /// Attempts per connection (>= 1).
    pub attempts: u32,
    pub handshake_timeout: Duration,
    /// Offset added to the connection index to pick the source IP, so that several
    /// processes spread evenly.
    pub ip_offset: usize,
}

/// Counters shared by all connection tasks of a process.
#[derive(Default)]
pub struct Counters {
    pub alive: AtomicU64,
    pub closed_by_server: AtomicU64,
    pub read_errors: AtomicU64,
    pub pings: AtomicU64,
    pub events: AtomicU64,
    /// Joins that needed more than one emit.
    pub join_retries: AtomicU64,
    /// Ping interval announced by the server (ms), from the last handshake.
    pub ping_interval_ms: AtomicU64,
}

impl Counters {
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
    pub fn inc(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// Result of the connect phase.
pub struct ConnectOutcome {
    pub connected: u64,
    pub failed: u64,
    pub elapsed: Duration,
    /// Error messages with their counts.
    pub errors: BTreeMap<String, u64>,
}

/// Handed to the per-connection task once the handshake is done; the task reports when its
/// own setup (e.g. joining a room) is complete. Dropping it unreported counts as a failure.
pub struct Ready {
    tx: Option<mpsc::UnboundedSender<Result<(), String>>>,
    _permit: OwnedSemaphorePermit,
}

impl Ready {
    pub fn done(mut self, result: anyhow::Result<()>) {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(result.map_err(|e| format!("{e:#}")));
        }
    }
}

impl Drop for Ready {
    fn drop(&mut self) {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(Err("setup abandoned".into()));
        }
    }
}

/// Opens `opts.connections` connections; each successful one is handed to `task` (which runs
/// for the connection's lifetime). Returns once every connection has either failed or called
/// [`Ready::done`].
pub async fn open_many<F, Fut>(opts: &PoolOpts, counters: Arc<Counters>, task: F) -> ConnectOutcome
where
    F: Fn(usize, Conn, Ready) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let started = Instant::now();
    let sem = Arc::new(Semaphore::new(opts.concurrency.max(1)));
    let (tx, mut rx) = mpsc::unbounded_channel();
    for i in 0..opts.connections {
        let permit = match sem.clone().acquire_owned().await {
            Ok(p) => p,
            Err(_) => break,
        };
        let ip = opts.source_ips[(i + opts.ip_offset) % opts.source_ips.len()];
        let target = opts.target.clone();
        let tx = tx.clone();
        let task = task.clone();
        let counters = counters.clone();
        let attempts = opts.attempts.max(1);
        let timeout = opts.handshake_timeout;
        tokio::spawn(async move {
            let mut last_err = String::new();
            for attempt in 0..attempts {
                if attempt > 0 {
                    tokio::time::sleep(Duration::from_millis(50 << attempt.min(6))).await;
                }
                match proto::connect(&target, ip, timeout).await {
                    Ok(conn) => {
                        counters.pings.fetch_add(conn.pings, Ordering::Relaxed);
                        counters
                            .ping_interval_ms
                            .store(conn.ping_interval.as_millis() as u64, Ordering::Relaxed);
                        let ready = Ready {
                            tx: Some(tx),
                            _permit: permit,
                        };
                        task(i, conn, ready).await;
                        return;
                    }
                    Err(e) => last_err = format!("{e:#}"),
                }
            }
            let _ = tx.send(Err(last_err));
            drop(permit);
        });
    }
    drop(tx);
    let mut out = ConnectOutcome {
        connected: 0,
        failed: 0,
        elapsed: Duration::ZERO,
        errors: BTreeMap::new(),
    };
    while let Some(r) = rx.recv().await {
        match r {
            Ok(()) => out.connected += 1,
            Err(e) => {
                out.failed += 1;
                // Keep the error kinds few: strip per-connection details after the first colon pair.
                *out.errors.entry(shorten(&e)).or_default() += 1;
            }
        }
        if out.connected + out.failed == opts.connections as u64 {
            break;
        }
    }
    out.elapsed = started.elapsed();
    out
}

fn shorten(e: &str) -> String {
    let mut s: String = e.chars().take(120).collect();
    if s.len() < e.len() {
        s.push('…');
    }
    s
}

/// Keeps a connection alive until `shutdown` fires or the server closes it: answers pings and
/// hands every EVENT body to `on_event`. Maintains `counters.alive`.
pub async fn hold<E>(
    mut conn: Conn,
    counters: &Counters,
    mut shutdown: watch::Receiver<bool>,
    mut on_event: E,
) where
    E: FnMut(&str),
{
    Counters::inc(&counters.alive);
    loop {
        if *shutdown.borrow() {
            return;
        }
        tokio::select! {
            frame = conn.next_frame() => match frame {
                Ok(Frame::Ping) => {
                    Counters::inc(&counters.pings);
                    if conn.pong().await.is_err() {
                        Counters::inc(&counters.read_errors);
                        break;
                    }
                }
                Ok(Frame::Event(text, start)) => {
                    Counters::inc(&counters.events);
                    on_event(&text.as_str()[start..]);
                }
                Ok(Frame::Closed) => {
                    Counters::inc(&counters.closed_by_server);
                    break;
                }
                Ok(Frame::Ack(..)) | Ok(Frame::Other) => {}
                Err(_) => {
                    Counters::inc(&counters.read_errors);
                    break;
                }
            },
            _ = shutdown.changed() => return,
        }
    }
    counters.alive.fetch_sub(1, Ordering::Relaxed);
}
