//! This node's part of a cluster, started from the configuration: the peer mesh, wired to
//! the hub both ways (its broadcasts go out, peers' broadcasts come in), and the discovery
//! loop that keeps the mesh's member set current.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::AbortHandle;

use super::broadcast::MeshFanout;
use super::discovery::{self, DiscoveryStats};
use super::inbound::HubInbound;
use super::membership::{Members, Membership};
use super::mesh::{LinkSettings, Mesh, PeerTls, TlsFiles, TlsSettings};
use super::owned::Owned;
use super::peer_certs::PeerCerts;
use super::ring::Ring;
use super::rooms::{self, RoomSync};
use super::route::{advertise_address, MeshRouter};
use crate::config::{Config, MemberSource, RoomsMode};
use crate::engine::Engine;
use crate::socketio::Hub;

/// A running cluster member.
pub struct Cluster {
    mesh: Arc<Mesh>,
    rooms: Arc<RoomSync>,
    peer_addr: SocketAddr,
    /// The discovery loop, for sources that change at run time.
    discovery: Option<(AbortHandle, Arc<DiscoveryStats>)>,
    /// Keeps the peer certificate files current (`cluster.tls.kubernetes`).
    _certs: Option<PeerCerts>,
}

impl Cluster {
    /// Starts the peer links of a clustered configuration; `None` for a single node.
    ///
    /// A source that changes at run time (members file, DNS) is asked once before the
    /// mesh starts; when that fails the node starts as the only member and the discovery
    /// loop keeps asking every `cluster.discoveryInterval`.
    ///
    /// `client_addr` is where `engine` serves clients: peers learn it (or the configured
    /// `cluster.advertiseAddress`) and forward this node's sessions' requests there, and
    /// `engine` forwards theirs. `app_addr` is where this node takes app links, for peers to
    /// tell the app instances linked to them.
    pub async fn start(
        config: &Config,
        hub: &Hub,
        engine: &Arc<Engine>,
        client_addr: SocketAddr,
        app_addr: Option<SocketAddr>,
    ) -> anyhow::Result<Option<Cluster>> {
        let c = &config.cluster;
        let Some(source) = c.source()? else {
            return Ok(None);
        };
        let Some(listen) = c.peer_listen else {
            anyhow::bail!("cluster.peerListen is needed when the cluster has a member source");
        };
        let me = config.node_id.as_str();
        // The mesh needs its certificate files: obtain them first, or fail the start.
        let certs = match c.tls.as_ref().filter(|t| t.kubernetes.is_some()) {
            Some(tls) => Some(
                PeerCerts::start(tls, me)
                    .await
                    .map_err(|e| anyhow::anyhow!("obtaining the peer certificate: {e}"))?,
            ),
            None => None,
        };
        let source_discovery = discovery::from_source(&source).await?;
        let mut members = match discovery::lookup(source_discovery.as_ref()).await {
            Ok(members) => members,
            Err(error) => {
                tracing::warn!(error = %format!("{error:#}"), "member discovery failed at start; starting as the only member");
                Members::new()
            }
        };
        // This node is a member of its own ring even before the source lists it (a pod
        // that is not ready yet is missing from DNS).
        if members.addr(me).is_none() {
            members.insert(me, listen);
        }
        let settings = LinkSettings {
            heartbeat_interval: Duration::from_millis(c.heartbeat_interval),
            heartbeat_timeout: Duration::from_millis(c.heartbeat_timeout),
            queue_bytes: c.max_peer_queue_bytes,
            max_message_bytes: c.max_peer_message_bytes,
            max_connections: c.max_peer_connections,
            max_connections_per_ip: c.max_peer_connections_per_ip,
            ..LinkSettings::default()
        };
        let owned = (c.rooms == RoomsMode::Owned).then(|| {
            Arc::new(Owned::new(
                me,
                Ring::new(members.ids()),
                c.room_cache_size,
                c.max_room_subscriptions_per_peer,
            ))
        });
        let (room_sync, room_events) = RoomSync::new(owned.clone());
        let inbound = Arc::new(HubInbound {
            hub: hub.clone(),
            rooms: room_sync.clone(),
        });
        let mesh = Mesh::new(me, &members, settings, inbound)?;
        if let Some(tls) = &c.tls {
            let files = TlsFiles {
                ca: tls.ca_file.clone(),
                cert: tls.cert_file.clone(),
                key: tls.key_file.clone(),
            };
            let settings = TlsSettings {
                reload_interval: Duration::from_millis(tls.reload_interval),
                handshake_timeout: Duration::from_millis(tls.handshake_timeout),
                max_handshakes: tls.max_handshakes,
            };
            let tls = PeerTls::load(me, files, settings)
                .map_err(|e| anyhow::anyhow!("cluster.tls: {e}"))?;
            mesh.secure(tls);
        } else {
            tracing::warn!("peer port without TLS (cluster.plaintext): anyone who can reach it can join this hub");
        }
        let fanout = MeshFanout {
            mesh: mesh.clone(),
            rooms: room_sync.clone(),
        };
        if !hub.set_fanout(Arc::new(fanout)) {
            anyhow::bail!("this hub already belongs to a cluster");
        }
        if let Some(recovery) = hub.recovery() {
            recovery.set_member(me);
            recovery.set_handover(Arc::new(super::handover::MeshHandover {
                mesh: mesh.clone(),
                rooms: room_sync.clone(),
            }));
        }
        let advertised = advertise_address(c.advertise_address, client_addr, listen);
        mesh.advertise_client_address(advertised);
        if let Some(app) = app_addr {
            mesh.advertise_app_address(app);
        }
        if !engine.set_router(Arc::new(MeshRouter(mesh.clone()))) {
            anyhow::bail!("this engine already routes for a cluster");
        }
        // Before any link is up, so the first link's full list is queued behind nothing.
        if let Some(owned) = &owned {
            owned.attach(&mesh);
            tokio::spawn(follow_members(mesh.clone(), room_sync.clone()));
        }
        tokio::spawn(rooms::run(room_events, mesh.clone(), hub.clone(), owned));
        let peer_addr = mesh.start(listen).await?;
        let discovery = match source {
            MemberSource::Static(_) => None,
            MemberSource::File(_) | MemberSource::Dns(_) | MemberSource::Kubernetes(_) => {
                let interval = c.discovery_interval();
                let stats = Arc::new(DiscoveryStats::default());
                let task = tokio::spawn(discovery::run(
                    mesh.clone(),
                    source_discovery,
                    interval,
                    stats.clone(),
                ));
                Some((task.abort_handle(), stats))
            }
        };
        if c.warm_up_timeout > 0 {
            engine.set_warming(true);
            tokio::spawn(warm_up(
                mesh.clone(),
                discovery.as_ref().map(|(_, stats)| stats.clone()),
                engine.clone(),
                Duration::from_millis(c.warm_up_timeout),
            ));
        }
        tracing::info!(
            member = %me,
            %peer_addr,
            %advertised,
            members = members.len(),
            dynamic = discovery.is_some(),
            "cluster member started"
        );
        Ok(Some(Cluster {
            mesh,
            rooms: room_sync,
            peer_addr,
            discovery,
            _certs: certs,
        }))
    }

    pub fn mesh(&self) -> &Arc<Mesh> {
        &self.mesh
    }

    /// Which rooms the peers have, and this node's announcements to them.
    pub fn rooms(&self) -> &Arc<RoomSync> {
        &self.rooms
    }

    pub fn peer_addr(&self) -> SocketAddr {
        self.peer_addr
    }

    /// The current member set and ring (see [`Mesh::membership`]).
    pub fn membership(&self) -> Arc<Membership> {
        self.mesh.membership()
    }

    /// Counters of the discovery loop; `None` for a static member list.
    pub fn discovery_stats(&self) -> Option<Arc<DiscoveryStats>> {
        self.discovery.as_ref().map(|(_, stats)| stats.clone())
    }

    /// Follows ring changes (see [`Mesh::subscribe`]).
    pub fn subscribe(&self) -> watch::Receiver<Arc<Membership>> {
        self.mesh.subscribe()
    }

    /// Stops discovery and closes the peer links (at shutdown, after the client sessions
    /// are closed and the management API has stopped): each link first sends what is queued
    /// for it and waits for the peer to have read it, for at most `within`.
    pub async fn shutdown(&self, within: std::time::Duration) {
        if let Some((task, _)) = &self.discovery {
            task.abort();
        }
        self.mesh.close_gracefully(within).await;
    }
}

/// Tells `rooms` of every change of the member set (room owners follow it).
async fn follow_members(mesh: Arc<Mesh>, rooms: Arc<RoomSync>) {
    let mut members = mesh.subscribe();
    // A change before this subscription is not seen as one (a same ring changes nothing).
    rooms.membership_changed(members.borrow_and_update().clone());
    while members.changed().await.is_ok() {
        let now = members.borrow_and_update().clone();
        rooms.membership_changed(now);
    }
}

/// Keeps `engine` not ready until this member has looked its members up once (dynamic
/// sources) and has a link to every one of them, or until `timeout`. A member that becomes
/// ready sooner would take clients and management calls (room joins, emits) that it cannot
/// pass on to the members it has no link to yet. Once ready, it stays so: a link that breaks
/// later is the mesh's business (the peer leaves routing), not a reason to turn every pod
/// away.
async fn warm_up(
    mesh: Arc<Mesh>,
    discovery: Option<Arc<DiscoveryStats>>,
    engine: Arc<Engine>,
    timeout: Duration,
) {
    let start = tokio::time::Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    loop {
        tick.tick().await;
        let looked_up = discovery
            .as_ref()
            .is_none_or(|stats| stats.good_lookups() > 0);
        let stats = mesh.stats();
        if looked_up && stats.connected == stats.peers {
            tracing::info!(
                peers = stats.peers,
                elapsed_ms = start.elapsed().as_millis() as u64,
                "linked to every member: ready"
            );
            break;
        }
        if start.elapsed() >= timeout {
            tracing::warn!(
                peers = stats.peers,
                linked = stats.connected,
                looked_up,
                timeout_ms = timeout.as_millis() as u64,
                "not linked to every member after the warm-up timeout: ready anyway"
            );
            break;
        }
    }
    engine.set_warming(false);
}
