//! Room ownership at scale, simulated: the data plane's own ownership state machines
//! (`roomcast_dataplane::cluster::ownership`: directory, sender cache, ring agreement) for
//! every node of a large hub in one process, joined by in-memory ordered links with a delay
//! (`ownership::sim`). It reports what ownership costs per node and per transition, checks
//! that no broadcast misses a member whose join was acknowledged, and measures the
//! replicated view it replaces (one node's `cluster::interest::Interest`) as the baseline.
//!
//! `bash bench/run.sh` runs it as the `ring` scenario; alone:
//!     cargo run --release -p roomcast-bench --bin roomcast-ringsim -- --nodes 64 --rooms 2000000

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use anyhow::Result;
use clap::Parser;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use roomcast_dataplane::cluster::interest::Interest;
use roomcast_dataplane::cluster::ownership::directory::Directory;
use roomcast_dataplane::cluster::ownership::sim::Sim;
use roomcast_dataplane::cluster::ownership::RoomKey;
use roomcast_dataplane::cluster::ring::Ring;

/// Counts live heap bytes, to measure one structure by the difference around its building.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size, Ordering::Relaxed);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn live() -> usize {
    LIVE.load(Ordering::Relaxed)
}

#[derive(Parser, Debug)]
#[command(about = "Simulates room ownership on a large hub and reports its costs")]
struct Args {
    #[arg(long, default_value_t = 64)]
    nodes: usize,
    #[arg(long, default_value_t = 2_000_000)]
    rooms: usize,
    /// Each room has members on 1 to this many nodes (uniform).
    #[arg(long, default_value_t = 3)]
    max_nodes_per_room: usize,
    /// Joins plus leaves per simulated second, spread over all nodes.
    #[arg(long, default_value_t = 1000)]
    churn: usize,
    /// Broadcasts per simulated second, from uniformly chosen nodes.
    #[arg(long, default_value_t = 20_000)]
    broadcasts: usize,
    /// Zipf exponent of the rooms broadcast to (0: uniform over all rooms).
    #[arg(long, default_value_t = 1.0)]
    zipf: f64,
    /// Simulated seconds of churn; a node is added at 1/3 and one removed at 2/3.
    #[arg(long, default_value_t = 15)]
    seconds: u64,
    /// Rooms each sender caches.
    #[arg(long, default_value_t = 65_536)]
    cache: usize,
    /// One-way link delay, µs (each message takes one to two of these, in order per link).
    #[arg(long, default_value_t = 100)]
    latency_us: u64,
    /// Over this many µs the members learn a new member set, each at its own moment.
    #[arg(long, default_value_t = 50_000)]
    learn_us: u64,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Cold rooms: `everywhere` (a broadcast goes to every node while its lookup is in
    /// flight) or `lookup` (it waits for the answer, and the sender's later broadcasts
    /// behind it, to keep their order).
    #[arg(long, default_value = "everywhere")]
    cold: String,
    /// Write the report's numbers as `key<TAB>value` lines here.
    #[arg(long)]
    tsv: Option<std::path::PathBuf>,
}

/// Room `i` of namespace `/`, whose name is shared by every key, as the hub shares it.
fn room(i: usize) -> RoomKey {
    static NSP: OnceLock<Arc<str>> = OnceLock::new();
    RoomKey {
        nsp: NSP.get_or_init(|| Arc::from("/")).clone(),
        room: format!("user:{i}").into(),
    }
}

/// Samples ranks 0..n with P(k) proportional to 1/(k+1)^s.
struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    fn new(n: usize, s: f64) -> Self {
        let mut acc = 0.0;
        let mut cdf = Vec::with_capacity(n);
        for k in 0..n {
            acc += 1.0 / ((k + 1) as f64).powf(s);
            cdf.push(acc);
        }
        for c in cdf.iter_mut() {
            *c /= acc;
        }
        Self { cdf }
    }
    fn sample(&self, rng: &mut StdRng) -> usize {
        let u: f64 = rng.gen();
        self.cdf.partition_point(|c| *c < u).min(self.cdf.len() - 1)
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    let started = Instant::now();
    let mut out: Vec<(String, String)> = Vec::new();
    let mut put = |k: &str, v: String| {
        println!("{k}\t{v}");
        out.push((k.to_string(), v));
    };
    let mut members: Vec<String> = (0..args.nodes).map(|i| format!("hub-{i}")).collect();
    let mut rng = StdRng::seed_from_u64(args.seed);

    // Which nodes have members in each room.
    let mut holders: Vec<Vec<usize>> = Vec::with_capacity(args.rooms);
    for _ in 0..args.rooms {
        let k = rng.gen_range(1..=args.max_nodes_per_room.max(1));
        let mut h: Vec<usize> = Vec::with_capacity(k);
        while h.len() < k.min(args.nodes) {
            let n = rng.gen_range(0..args.nodes);
            if !h.contains(&n) {
                h.push(n);
            }
        }
        holders.push(h);
    }
    let pairs: usize = holders.iter().map(Vec::len).sum();
    put("nodes", args.nodes.to_string());
    put("rooms", args.rooms.to_string());
    put("memberships", pairs.to_string());

    // Baseline: the replicated view of one node (hub-0), which holds every peer's rooms.
    let before = live();
    let mut interest = Interest::new();
    {
        let mut per_peer: HashMap<usize, Vec<String>> = HashMap::new();
        for (i, h) in holders.iter().enumerate() {
            for &n in h {
                if n != 0 {
                    per_peer.entry(n).or_default().push(format!("user:{i}"));
                }
            }
        }
        for (n, rooms) in per_peer {
            let peer = format!("hub-{n}");
            interest.link_up(&peer);
            interest.announce(&peer, "/", &rooms, &[]);
            interest.synced(&peer);
        }
    }
    let replicated = live() - before;
    put("replicated_view_bytes_per_node", replicated.to_string());
    drop(interest);

    // One node's directory alone, measured the same way (and the directory's own estimate).
    let ring = Ring::new(members.iter().cloned());
    let before = live();
    let mut dir = Directory::new("hub-0", ring.clone());
    for (i, h) in holders.iter().enumerate() {
        let key = room(i);
        if ring.owner(&key.nsp, &key.room) != Some("hub-0") {
            continue;
        }
        for &n in h {
            let node = format!("hub-{n}");
            if n == 0 {
                dir.local(&key, true);
            } else {
                dir.link_up(&node);
                dir.transition(&node, &key, true);
            }
        }
    }
    let directory_measured = live() - before;
    put(
        "directory_bytes_hub0_measured",
        directory_measured.to_string(),
    );
    put(
        "directory_bytes_hub0_estimated",
        dir.heap_bytes().to_string(),
    );
    drop(dir);

    // The simulated hub.
    let mut sim = Sim::new(&members, args.cache, args.latency_us, args.seed);
    sim.cold_everywhere = match args.cold.as_str() {
        "everywhere" => true,
        "lookup" => false,
        other => anyhow::bail!("--cold is everywhere or lookup, not {other}"),
    };
    put("cold_path", args.cold.clone());
    for (n, node) in members.iter().enumerate() {
        let rooms: Vec<RoomKey> = holders
            .iter()
            .enumerate()
            .filter(|(_, h)| h.contains(&n))
            .map(|(i, _)| room(i))
            .collect();
        sim.preload(node, rooms);
    }
    sim.preload_done();
    let t_link = Instant::now();
    for a in 0..args.nodes {
        for b in a + 1..args.nodes {
            sim.link(&members[a], &members[b]);
        }
    }
    sim.run_until(1_000_000);
    put(
        "initial_sync_listed_rooms",
        sim.stats.listed_rooms.to_string(),
    );
    put(
        "initial_sync_seconds_wall",
        format!("{:.1}", t_link.elapsed().as_secs_f64()),
    );
    let base = sim.stats.clone();
    let cache_base = sim.cache_stats();

    // Churn, broadcasts and two member set changes.
    let zipf = (args.zipf > 0.0).then(|| Zipf::new(args.rooms, args.zipf));
    let step_us = 1_000u64; // one ms at a time
    let t0 = sim.now();
    let end = t0 + args.seconds * 1_000_000;
    let add_at = t0 + args.seconds * 1_000_000 / 3;
    let remove_at = t0 + 2 * args.seconds * 1_000_000 / 3;
    let mut learn: Vec<(u64, String, Vec<String>)> = Vec::new();
    let (mut added, mut removed) = (false, false);
    let mut churn_acc = 0.0;
    let mut bcast_acc = 0.0;
    let mut sync_before_add = 0;
    let mut steady: Option<(u64, u64)> = None;
    let mut listed_before_add = 0;
    let mut t = t0;
    // Memberships the churn made, to leave them again.
    let mut joined: Vec<(String, RoomKey)> = Vec::new();
    while t < end {
        t += step_us;
        if !added && t >= add_at {
            added = true;
            // Before the first member change: the steady state.
            steady = Some((
                sim.stats.transitions - base.transitions,
                sim.stats.room_messages - base.room_messages,
            ));
            sync_before_add = sim.stats.sync_messages;
            listed_before_add = sim.stats.listed_rooms;
            let new = format!("hub-{}", args.nodes);
            members.push(new.clone());
            sim.add_node(&new, &members, args.cache);
            for m in sim.members() {
                if *m != *new {
                    let at = t + rng.gen_range(0..args.learn_us);
                    learn.push((at, m.to_string(), members.clone()));
                }
            }
        }
        if !removed && t >= remove_at {
            removed = true;
            let gone = members.remove(7);
            sim.remove_node(&gone);
            joined.retain(|(n, _)| *n != gone);
            for m in sim.members() {
                let at = t + rng.gen_range(0..args.learn_us);
                learn.push((at, m.to_string(), members.clone()));
            }
        }
        learn.sort_by_key(|l| l.0);
        while learn.first().is_some_and(|l| l.0 <= t) {
            let (at, node, set) = learn.remove(0);
            sim.run_until(at);
            sim.learn(&node, &set);
        }
        sim.run_until(t);
        let live_nodes = sim.members();
        churn_acc += args.churn as f64 * step_us as f64 / 1e6;
        while churn_acc >= 1.0 {
            churn_acc -= 1.0;
            if rng.gen_bool(0.5) || joined.is_empty() {
                let node = live_nodes[rng.gen_range(0..live_nodes.len())].to_string();
                let key = room(rng.gen_range(0..args.rooms));
                sim.join(&node, &key);
                joined.push((node, key));
            } else {
                let i = rng.gen_range(0..joined.len());
                let (node, key) = joined.swap_remove(i);
                sim.leave(&node, &key);
            }
        }
        bcast_acc += args.broadcasts as f64 * step_us as f64 / 1e6;
        while bcast_acc >= 1.0 {
            bcast_acc -= 1.0;
            let node = live_nodes[rng.gen_range(0..live_nodes.len())].to_string();
            let i = match &zipf {
                Some(z) => z.sample(&mut rng),
                None => rng.gen_range(0..args.rooms),
            };
            sim.broadcast(&node, &room(i));
        }
    }
    sim.run_until(end + 1_000_000);

    let s = &sim.stats;
    let c = sim.cache_stats();
    let transitions = s.transitions - base.transitions;
    let room_messages = s.room_messages - base.room_messages;
    let broadcasts = s.broadcasts - base.broadcasts;
    let hits = c.hits - cache_base.hits;
    let misses = c.misses - cache_base.misses;
    put("churn_joins", (s.joins - base.joins).to_string());
    put("churn_leaves", (s.leaves - base.leaves).to_string());
    put("transitions", transitions.to_string());
    put("room_messages", room_messages.to_string());
    put(
        "room_messages_per_transition",
        format!("{:.2}", room_messages as f64 / transitions.max(1) as f64),
    );
    if let Some((t, m)) = steady {
        put(
            "steady_room_messages_per_transition",
            format!("{:.2}", m as f64 / t.max(1) as f64),
        );
    }
    put(
        "replicated_messages_per_transition",
        format!("{}", 3 * (args.nodes - 1)),
    );
    put(
        "join_ack_latency_us_mean",
        format!("{:.0}", s.ack_latency_us as f64 / s.acked.max(1) as f64),
    );
    put(
        "member_change_sync_messages",
        (s.sync_messages - sync_before_add).to_string(),
    );
    put(
        "member_change_listed_rooms",
        (s.listed_rooms - listed_before_add).to_string(),
    );
    put("broadcasts", broadcasts.to_string());
    put("held_broadcasts", (s.held - base.held).to_string());
    put(
        "hold_us_mean",
        format!(
            "{:.0}",
            (s.hold_us - base.hold_us) as f64 / (s.held - base.held).max(1) as f64
        ),
    );
    put("lost_broadcasts", s.lost.to_string());
    put(
        "cache_hit_rate",
        format!("{:.3}", hits as f64 / (hits + misses).max(1) as f64),
    );
    put("cold_broadcasts", (s.cold - base.cold).to_string());
    put(
        "lookup_messages",
        (s.lookup_messages - base.lookup_messages).to_string(),
    );
    put("lookups", (c.lookups - cache_base.lookups).to_string());
    put(
        "cache_evictions",
        (c.evictions - cache_base.evictions).to_string(),
    );
    put(
        "pushed_updates_applied",
        (c.updates - cache_base.updates).to_string(),
    );
    let copies = s.copies - base.copies;
    let wasted = s.wasted_copies - base.wasted_copies;
    put(
        "copies_per_broadcast",
        format!("{:.2}", copies as f64 / broadcasts.max(1) as f64),
    );
    put(
        "useful_copies_per_broadcast",
        format!("{:.2}", (copies - wasted) as f64 / broadcasts.max(1) as f64),
    );
    put("extra_hops", "0".to_string());
    let mem = sim.memory();
    let n = mem.len().max(1);
    let dir_mean = mem.iter().map(|m| m.1).sum::<usize>() / n;
    let dir_max = mem.iter().map(|m| m.1).max().unwrap_or(0);
    let cache_mean = mem.iter().map(|m| m.2).sum::<usize>() / n;
    let cache_max = mem.iter().map(|m| m.2).max().unwrap_or(0);
    let entries_mean = mem.iter().map(|m| m.3).sum::<usize>() / n;
    put("directory_bytes_per_node_mean", dir_mean.to_string());
    put("directory_bytes_per_node_max", dir_max.to_string());
    put("cache_bytes_per_node_mean", cache_mean.to_string());
    put("cache_bytes_per_node_max", cache_max.to_string());
    put("cache_entries_per_node_mean", entries_mean.to_string());
    put(
        "ownership_over_replicated",
        format!(
            "{:.4}",
            (dir_max + cache_max) as f64 / replicated.max(1) as f64
        ),
    );
    put("pending_joins_at_end", sim.pending_joins().to_string());
    put(
        "wall_seconds",
        format!("{:.1}", started.elapsed().as_secs_f64()),
    );
    // The process's peak RSS (Linux), for the report.
    let hwm = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("VmHWM:")
                    .map(|v| v.trim().trim_end_matches("kB").trim().to_string())
            })
        })
        .unwrap_or_default();
    put("process_max_rss_kib", hwm);
    if let Some(path) = args.tsv {
        let text: String = out.iter().map(|(k, v)| format!("{k}\t{v}\n")).collect();
        std::fs::write(path, text)?;
    }
    if s.lost > 0 {
        anyhow::bail!(
            "{} broadcasts missed an acknowledged member: {:?}",
            s.lost,
            sim.losses
        );
    }
    Ok(())
}
