//! Prometheus metrics of a hub node, in the text exposition format, served at `/metrics`
//! on the metrics port ([`listener`], `metrics.listen`), never on the client port. Counters
//! are plain atomics updated on the hot paths; the engine's live in the engine
//! (`engine::EngineStats`), and this module only reads them. [`probes`] answers `/healthz`
//! and `/readyz`, on the metrics port and on the client port alike.

pub mod listener;
pub mod probes;

pub use listener::serve;

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::app::upstream::UpstreamStats;
use crate::applink::AppLinks;
use crate::cluster::discovery::DiscoveryStats;
use crate::cluster::owned::Owned;
use crate::cluster::Mesh;
use crate::engine::Engine;
use crate::socketio::recovery::RecoveryStats;
use crate::socketio::Hub;

/// Everything `/metrics` reports.
#[derive(Clone)]
pub struct MetricsSource {
    pub engine: Arc<Engine>,
    pub hub: Hub,
    pub upstream: Option<Arc<UpstreamStats>>,
    /// The peer links, on a cluster member.
    pub cluster: Option<Arc<Mesh>>,
    /// The discovery loop, on a member whose source changes at run time.
    pub discovery: Option<Arc<DiscoveryStats>>,
    /// Room ownership, on a member with `cluster.rooms: owned`.
    pub ownership: Option<Arc<Owned>>,
    /// The app links, with `appLink.listen` set (their metrics read 0 without).
    pub app_links: Option<Arc<AppLinks>>,
}

fn metric(out: &mut String, name: &str, kind: &str, help: &str, samples: &[(String, u64)]) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (labels, value) in samples {
        let _ = writeln!(out, "{name}{labels} {value}");
    }
}

impl MetricsSource {
    /// Room ownership, on a cluster member (zero with `cluster.rooms: replicated`).
    fn render_ownership(&self, out: &mut String) {
        let o = self
            .ownership
            .as_ref()
            .map(|o| o.stats())
            .unwrap_or_default();
        let one = |v: u64| vec![(String::new(), v)];
        let rows: [(&str, &str, &str, u64); 10] = [
            ("roomcast_room_cache_rooms", "gauge", "Rooms whose owner's answer this node caches (cluster.roomCacheSize at most).", o.cached_rooms as u64),
            ("roomcast_room_cache_hits_total", "counter", "Rooms of broadcasts whose member nodes this node knew (cached, or owned here).", o.cache.hits),
            ("roomcast_room_cache_misses_total", "counter", "Rooms of broadcasts not cached here: sent to every peer while the owner is asked.", o.cache.misses),
            ("roomcast_room_lookups_total", "counter", "Lookups this node sent to room owners.", o.cache.lookups),
            ("roomcast_room_cache_evictions_total", "counter", "Cached rooms evicted to stay within cluster.roomCacheSize.", o.cache.evictions),
            ("roomcast_room_directory_rooms", "gauge", "Rooms in this node's directory (the rooms it owns with members or subscribers).", o.directory_rooms as u64),
            ("roomcast_room_subscriptions", "gauge", "Peers' subscriptions to rooms this node owns (the peers cache their members).", o.subscriptions as u64),
            ("roomcast_room_transitions_total", "counter", "Rooms this node's first member joined or its last one left (each told to the room's owner only).", o.transitions),
            ("roomcast_room_pushes_total", "counter", "Changes of owned rooms pushed to the peers caching them.", o.pushes),
            ("roomcast_room_owner_fallbacks_total", "counter", "Joins a room's owner could not confirm (every peer was told directly).", o.fallbacks),
        ];
        for (name, kind, help, value) in rows {
            metric(out, name, kind, help, &one(value));
        }
    }

    /// Connection state recovery (zero when it is off, so the set of metrics never changes).
    /// Printed on every node (zeros without app links), so dashboards and alerts can rely on
    /// them.
    fn render_app_links(&self, out: &mut String) {
        let links = self.app_links.as_deref();
        let one = |f: fn(&AppLinks) -> u64| vec![(String::new(), links.map_or(0, f))];
        metric(
            out,
            "roomcast_app_links",
            "gauge",
            "App instances linked to this node.",
            &one(|l| l.link_count() as u64),
        );
        metric(
            out,
            "roomcast_app_sessions",
            "gauge",
            "Client sessions of this node handed to app instances.",
            &one(|l| l.session_count() as u64),
        );
        metric(
            out,
            "roomcast_app_queued_bytes",
            "gauge",
            "Bytes queued for app instances and not yet written to their links.",
            &one(|l| l.queued_bytes() as u64),
        );
        metric(
            out,
            "roomcast_app_links_refused_total",
            "counter",
            "App link attempts refused (wrong token or instance id).",
            &one(|l| l.stats.refused.load(Ordering::Relaxed)),
        );
        metric(
            out,
            "roomcast_app_links_overflowed_total",
            "counter",
            "App links ended because the app was too slow (appLink.maxQueuedBytes).",
            &one(|l| l.stats.overflowed.load(Ordering::Relaxed)),
        );
    }

    fn render_recovery(&self, out: &mut String) {
        let recovery = self.hub.recovery();
        let load = |f: fn(&RecoveryStats) -> &AtomicU64| {
            recovery.map_or(0, |r| f(&r.stats).load(Ordering::Relaxed))
        };
        let one = |v: u64| vec![(String::new(), v)];
        metric(
            out,
            "roomcast_recovery_parked_sessions",
            "gauge",
            "Disconnected sessions kept for connection state recovery on this node.",
            &one(self.hub.parked_count() as u64),
        );
        metric(
            out,
            "roomcast_recovery_buffer_bytes",
            "gauge",
            "Bytes of recent packets kept for replay (socketio.connectionStateRecovery.maxBufferBytes).",
            &one(recovery.map_or(0, |r| r.log().bytes() as u64)),
        );
        metric(
            out,
            "roomcast_recovery_recovered_total",
            "counter",
            "Sessions recovered here, by where they were held (local: this node; remote: taken over from another).",
            &[
                ("{where=\"local\"}".to_string(), load(|s| &s.recovered_local)),
                ("{where=\"remote\"}".to_string(), load(|s| &s.recovered_remote)),
            ],
        );
        let failed: Vec<(String, u64)> = recovery
            .map(|r| {
                r.stats
                    .failed
                    .lock()
                    .iter()
                    .map(|(reason, n)| (format!("{{reason=\"{reason}\"}}"), *n))
                    .collect()
            })
            .unwrap_or_default();
        metric(
            out,
            "roomcast_recovery_failed_total",
            "counter",
            "Recovery attempts that gave the client a new session instead, by reason.",
            &failed,
        );
        metric(
            out,
            "roomcast_recovery_replayed_packets_total",
            "counter",
            "Packets sent again to recovered sessions.",
            &one(load(|s| &s.replayed_packets)),
        );
        metric(
            out,
            "roomcast_recovery_handed_over_total",
            "counter",
            "Sessions this node handed to another node (taken over by a reconnecting client's node).",
            &one(load(|s| &s.handed_over)),
        );
        metric(
            out,
            "roomcast_recovery_adopted_total",
            "counter",
            "Sessions taken over from a draining node.",
            &one(load(|s| &s.adopted)),
        );
        metric(
            out,
            "roomcast_recovery_expired_total",
            "counter",
            "Disconnected sessions not recovered within maxDisconnectionDuration.",
            &one(load(|s| &s.expired)),
        );
    }
}

fn label(namespace: &str) -> String {
    let escaped = namespace
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n");
    format!("{{namespace=\"{escaped}\"}}")
}

impl MetricsSource {
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(2048);
        let s = &self.engine.stats;
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let one = |v: u64| vec![(String::new(), v)];
        metric(
            &mut out,
            "roomcast_connections",
            "gauge",
            "Open Engine.IO sessions on this node.",
            &one(self.engine.session_count() as u64),
        );
        // Exported so that an alert can compare `roomcast_connections` with it (connections
        // near the limit) without copying the configured value into the rule.
        metric(
            &mut out,
            "roomcast_connections_limit",
            "gauge",
            "Open Engine.IO sessions allowed on this node (limits.maxConnections); handshakes beyond it get HTTP 503.",
            &one(self.engine.settings.max_connections as u64),
        );
        metric(
            &mut out,
            "roomcast_sessions_opened_total",
            "counter",
            "Engine.IO sessions opened.",
            &one(load(&s.sessions_opened)),
        );
        metric(
            &mut out,
            "roomcast_sessions_closed_total",
            "counter",
            "Engine.IO sessions closed.",
            &one(load(&s.sessions_closed)),
        );
        metric(
            &mut out,
            "roomcast_packets_received_total",
            "counter",
            "Engine.IO packets received from clients.",
            &one(load(&s.packets_received)),
        );
        metric(
            &mut out,
            "roomcast_frames_sent_total",
            "counter",
            "Engine.IO frames written to clients.",
            &one(load(&s.frames_sent)),
        );
        metric(
            &mut out,
            "roomcast_write_rounds_coalesced_total",
            "counter",
            "Broadcasts whose writes took turns under fan-out load so that each write carries several (engine.writeCoalescingDelay), in this process.",
            &one(crate::engine::coalesced_rounds()),
        );
        metric(
            &mut out,
            "roomcast_slow_consumers_total",
            "counter",
            "Sessions closed because their outbound queue was full.",
            &one(load(&s.slow_consumers)),
        );
        metric(
            &mut out,
            "roomcast_forwarded_requests_total",
            "counter",
            "Polling requests forwarded to the node owning their session.",
            &one(load(&s.forwarded_requests)),
        );
        metric(
            &mut out,
            "roomcast_forwarded_upgrades_total",
            "counter",
            "WebSocket upgrades forwarded to the node owning their session.",
            &one(load(&s.forwarded_upgrades)),
        );
        metric(
            &mut out,
            "roomcast_forward_failures_total",
            "counter",
            "Forwards to a session's owner that failed.",
            &one(load(&s.forward_failures)),
        );
        metric(
            &mut out,
            "roomcast_forward_unroutable_total",
            "counter",
            "Requests for another node's session that could not be routed (answered as unknown sessions).",
            &one(load(&s.forward_unroutable)),
        );
        let namespaces = self.hub.namespaces();
        let sockets: Vec<_> = namespaces
            .iter()
            .map(|ns| (label(ns.name()), ns.socket_count() as u64))
            .collect();
        let rooms: Vec<_> = namespaces
            .iter()
            .map(|ns| (label(ns.name()), ns.rooms().len() as u64))
            .collect();
        metric(
            &mut out,
            "roomcast_sockets",
            "gauge",
            "Connected sockets by namespace.",
            &sockets,
        );
        metric(
            &mut out,
            "roomcast_rooms",
            "gauge",
            "Rooms by namespace.",
            &rooms,
        );
        self.render_recovery(&mut out);
        self.render_app_links(&mut out);
        if let Some(u) = &self.upstream {
            metric(
                &mut out,
                "roomcast_upstream_requests_total",
                "counter",
                "Webhook requests sent.",
                &one(load(&u.requests)),
            );
            metric(
                &mut out,
                "roomcast_upstream_failures_total",
                "counter",
                "Webhook requests that failed (incl. timeouts).",
                &one(load(&u.failures)),
            );
            metric(
                &mut out,
                "roomcast_upstream_timeouts_total",
                "counter",
                "Webhook requests that timed out.",
                &one(load(&u.timeouts)),
            );
            let _ = writeln!(
                out,
                "# HELP roomcast_upstream_latency_seconds_sum Total webhook latency."
            );
            let _ = writeln!(out, "# TYPE roomcast_upstream_latency_seconds_sum counter");
            let _ = writeln!(
                out,
                "roomcast_upstream_latency_seconds_sum {:.6}",
                load(&u.latency_micros_total) as f64 / 1e6
            );
        }
        if let Some(mesh) = &self.cluster {
            let m = mesh.stats();
            metric(
                &mut out,
                "roomcast_members",
                "gauge",
                "Members of the cluster as this node sees them (its ring), itself included.",
                &one(m.members as u64),
            );
            metric(
                &mut out,
                "roomcast_membership_epoch",
                "gauge",
                "Changes of the member set seen by this node since it started.",
                &one(m.epoch),
            );
            metric(
                &mut out,
                "roomcast_peers",
                "gauge",
                "Other members of the cluster.",
                &one(m.peers as u64),
            );
            metric(
                &mut out,
                "roomcast_peers_connected",
                "gauge",
                "Other members whose peer link is up (in routing).",
                &one(m.connected as u64),
            );
            metric(
                &mut out,
                "roomcast_peer_messages_sent_total",
                "counter",
                "Messages (e.g. broadcasts) queued for peers, one per destination; room updates not counted.",
                &one(m.sent),
            );
            metric(
                &mut out,
                "roomcast_peer_messages_received_total",
                "counter",
                "Messages received from peers; room updates not counted.",
                &one(m.received),
            );
            if let Some(d) = &self.discovery {
                metric(
                    &mut out,
                    "roomcast_discovery_lookups_total",
                    "counter",
                    "Lookups of the member source (members file or DNS).",
                    &one(load(&d.lookups)),
                );
                metric(
                    &mut out,
                    "roomcast_discovery_failures_total",
                    "counter",
                    "Lookups of the member source that failed or found nobody (the last good member set was kept).",
                    &one(load(&d.failures)),
                );
            }
            metric(
                &mut out,
                "roomcast_peer_room_updates_sent_total",
                "counter",
                "Room updates (a room's first member joined / last left, full lists) queued for peers.",
                &one(m.room_updates_sent),
            );
            metric(
                &mut out,
                "roomcast_peer_room_updates_received_total",
                "counter",
                "Room updates received from peers.",
                &one(m.room_updates_received),
            );
            metric(
                &mut out,
                "roomcast_peer_messages_dropped_total",
                "counter",
                "Messages not sent because a peer's queue was full.",
                &one(m.dropped),
            );
            metric(
                &mut out,
                "roomcast_peer_handshakes_failed_total",
                "counter",
                "Peer connections refused at the TLS handshake (no or untrusted certificate) or dropped for not completing it in time.",
                &one(m.handshakes_failed),
            );
            metric(
                &mut out,
                "roomcast_peer_connections_refused_total",
                "counter",
                "Peer connections closed at once for being over cluster.maxPeerConnections or cluster.maxPeerConnectionsPerIp.",
                &one(m.connections_refused),
            );
            metric(
                &mut out,
                "roomcast_peer_links_refused_total",
                "counter",
                "Peer links refused because the caller's certificate is not valid for the member id it claimed (or it claimed none).",
                &one(m.links_refused),
            );
            self.render_ownership(&mut out);
            if let (Some(done), Some(failed)) = (m.tls_reloads, m.tls_reloads_failed) {
                metric(
                    &mut out,
                    "roomcast_peer_tls_reloads_total",
                    "counter",
                    "Times changed peer TLS files were loaded (new handshakes use them).",
                    &one(done),
                );
                metric(
                    &mut out,
                    "roomcast_peer_tls_reload_failures_total",
                    "counter",
                    "Checks of the peer TLS files that found them unreadable or unusable (the previous material stayed in use).",
                    &one(failed),
                );
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::NoAuth;
    use crate::config::Config;
    use crate::socketio::{Event, Handler, Socket};

    struct Quiet;

    impl Handler for Quiet {
        fn event(&self, _socket: &Arc<Socket>, _event: Event) {}
    }

    /// A node without a cluster, with a webhook and `limits.maxConnections` of 1234.
    fn render_single_node() -> String {
        let mut config = Config::default();
        config.limits.max_connections = 1234;
        let config = Arc::new(config);
        let hub = Hub::new(config.clone(), Arc::new(Quiet), Arc::new(NoAuth));
        let engine = Engine::new(&config, hub.connection_factory());
        MetricsSource {
            engine,
            hub,
            upstream: Some(Arc::new(UpstreamStats::default())),
            cluster: None,
            discovery: None,
            ownership: None,
            app_links: None,
        }
        .render()
    }

    #[tokio::test]
    async fn the_connection_limit_is_exported() {
        let out = render_single_node();
        assert!(
            out.contains("# TYPE roomcast_connections_limit gauge\n"),
            "{out}"
        );
        assert!(out.contains("\nroomcast_connections_limit 1234\n"), "{out}");
    }

    /// exported.txt (what the chart's dashboard and alerts may use) lists every metric; the
    /// JS monitoring test checks the full set of a cluster member against it.
    #[tokio::test]
    async fn every_metric_is_in_the_exported_list() {
        let listed = include_str!("exported.txt");
        let out = render_single_node();
        for line in out.lines().filter(|l| l.starts_with("# TYPE ")) {
            assert!(
                listed.lines().any(|l| l == line),
                "{line} is not in dataplane/src/metrics/exported.txt"
            );
        }
    }

    #[test]
    fn labels_are_escaped() {
        assert_eq!(label("/a\"b"), "{namespace=\"/a\\\"b\"}");
    }

    #[test]
    fn exposition_lines() {
        let mut out = String::new();
        metric(
            &mut out,
            "x_total",
            "counter",
            "An x.",
            &[(String::new(), 3)],
        );
        assert_eq!(
            out,
            "# HELP x_total An x.\n# TYPE x_total counter\nx_total 3\n"
        );
    }
}
