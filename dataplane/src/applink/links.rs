//! The app links of this node: which instances are linked, which one takes a new client
//! session, and what the instances are told of the hub's nodes.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use parking_lot::{Mutex, RwLock};

use super::link::Link;
use super::outbox::{Outbox, OutboxReader};
use super::proto::{self as pb, hub_message::Kind};
use super::session::AppSession;
use crate::cluster::mesh::Mesh;
use crate::config::{AppLinkConfig, Config};
use crate::engine::{CloseReason, ConnectionFactory, ConnectionHandler, HandshakeInfo, Session};
use crate::ops::HubOps;
use crate::socketio::Hub;

/// How often the member list is checked for changes to tell the instances.
const MEMBERS_EVERY: Duration = Duration::from_secs(1);

/// Counters of the app links.
#[derive(Debug, Default)]
pub struct AppLinkStats {
    /// Link attempts refused (token, instance id, TLS handshake, connection budgets).
    pub refused: Arc<std::sync::atomic::AtomicU64>,
    /// Links ended at `appLink.maxQueuedBytes`.
    pub overflowed: std::sync::atomic::AtomicU64,
}

pub struct AppLinks {
    pub hub: Hub,
    pub stats: AppLinkStats,
    pub node_id: String,
    pub settings: AppLinkConfig,
    pub max_attachments: usize,
    links: RwLock<Vec<Arc<Link>>>,
    next_link: AtomicU64,
    /// Breaks ties between links with as many sessions, so they fill evenly.
    turn: AtomicUsize,
    ops: OnceLock<Arc<dyn HubOps>>,
    mesh: OnceLock<Arc<Mesh>>,
    /// Where this node takes app links, as instances are told.
    address: OnceLock<SocketAddr>,
    members: Mutex<pb::Members>,
}

impl AppLinks {
    pub fn new(config: &Config, hub: Hub) -> Arc<Self> {
        Arc::new(Self {
            hub,
            stats: AppLinkStats::default(),
            node_id: config.node_id.clone(),
            settings: config.app_link.clone(),
            max_attachments: config.limits.max_attachments,
            links: RwLock::new(Vec::new()),
            next_link: AtomicU64::new(1),
            turn: AtomicUsize::new(0),
            ops: OnceLock::new(),
            mesh: OnceLock::new(),
            address: OnceLock::new(),
            members: Mutex::new(pb::Members::default()),
        })
    }

    /// The hub-wide operations (broadcasts with acks); set once the node is built.
    pub fn set_ops(&self, ops: Arc<dyn HubOps>) {
        let _ = self.ops.set(ops);
    }

    pub fn ops(&self) -> Option<&Arc<dyn HubOps>> {
        self.ops.get()
    }

    /// The cluster's links, to tell instances where the other nodes take app links.
    pub fn set_mesh(&self, mesh: Arc<Mesh>) {
        let _ = self.mesh.set(mesh);
    }

    pub fn set_address(&self, addr: SocketAddr) {
        let _ = self.address.set(addr);
    }

    /// Registers a new link of `instance`.
    pub fn add_link(
        &self,
        instance: String,
        local_ip: Option<std::net::IpAddr>,
    ) -> (Arc<Link>, OutboxReader) {
        let (outbox, reader) = Outbox::new(self.settings.max_queued_bytes);
        let id = self.next_link.fetch_add(1, Ordering::Relaxed);
        let link = Arc::new(Link::new(
            id,
            instance,
            local_ip,
            outbox,
            self.settings.max_pending_requests,
        ));
        self.links.write().push(link.clone());
        tracing::info!(instance = %link.instance, link = id, "app instance linked");
        (link, reader)
    }

    /// Ends a link: its clients' sessions are closed (they reconnect, to other instances).
    pub fn remove_link(&self, link: &Arc<Link>) {
        self.links.write().retain(|l| !Arc::ptr_eq(l, link));
        let sessions = link.close();
        tracing::info!(instance = %link.instance, link = link.id, sessions = sessions.len(), "app instance link ended; closing its sessions");
        for session in sessions {
            session.close_client();
        }
        self.publish_members();
    }

    /// Every live link but `except`.
    pub fn others(&self, except: &Arc<Link>) -> Vec<Arc<Link>> {
        self.links
            .read()
            .iter()
            .filter(|l| !Arc::ptr_eq(l, except))
            .cloned()
            .collect()
    }

    /// The link of instance `instance`, if it is linked here.
    pub fn of_instance(&self, instance: &str) -> Option<Arc<Link>> {
        self.links
            .read()
            .iter()
            .find(|l| l.instance == instance)
            .cloned()
    }

    pub fn link_count(&self) -> usize {
        self.links.read().len()
    }

    /// Sessions handed to the linked instances.
    pub fn session_count(&self) -> usize {
        self.links.read().iter().map(|l| l.session_count()).sum()
    }

    /// Bytes queued for every link.
    pub fn queued_bytes(&self) -> usize {
        self.links
            .read()
            .iter()
            .map(|l| l.outbox.queued_bytes())
            .sum()
    }

    /// The link a new session goes to: the one with the fewest sessions among those that
    /// take sessions and are under `appLink.maxSessionsPerLink`.
    fn pick(&self) -> Option<Arc<Link>> {
        let links = self.links.read();
        let n = links.len();
        if n == 0 {
            return None;
        }
        let start = self.turn.fetch_add(1, Ordering::Relaxed) % n;
        let max = self.settings.max_sessions_per_link;
        (0..n)
            .filter_map(|i| links.get((start + i) % n))
            .filter(|l| l.takes_sessions())
            .map(|l| (l.session_count(), l))
            .filter(|(count, _)| *count < max)
            .min_by_key(|(count, _)| *count)
            .map(|(_, l)| l.clone())
    }

    /// The hub's nodes and where they take app links, and the instances linked here.
    pub fn members(&self) -> pb::Members {
        let mut members = vec![pb::Member {
            id: self.node_id.clone(),
            app_address: self
                .address
                .get()
                .map(ToString::to_string)
                .unwrap_or_default(),
        }];
        if let Some(mesh) = self.mesh.get() {
            for id in mesh.connected() {
                let app_address = mesh
                    .app_address_of(&id)
                    .map(|a| a.to_string())
                    .unwrap_or_default();
                members.push(pb::Member { id, app_address });
            }
        }
        members.sort_by(|a, b| a.id.cmp(&b.id));
        let mut instances: Vec<String> = self
            .links
            .read()
            .iter()
            .map(|l| l.instance.clone())
            .collect();
        instances.sort();
        instances.dedup();
        pb::Members { members, instances }
    }

    /// The member list as `link` is told: this node's own address, when it was bound to a
    /// wildcard IP, gets the IP the link's instance reached it at (a pod does not know its
    /// own IP; its peers learn it from the connection, and so does the app).
    pub fn members_for(&self, link: &Link, members: &pb::Members) -> pb::Members {
        let mut members = members.clone();
        if let (Some(ip), Some(own)) = (link.local_ip, self.address.get()) {
            if own.ip().is_unspecified() {
                let dialed = SocketAddr::new(ip, own.port()).to_string();
                for m in members.members.iter_mut().filter(|m| m.id == self.node_id) {
                    m.app_address = dialed.clone();
                }
            }
        }
        members
    }

    /// Tells every link the member list when it changed.
    pub fn publish_members(&self) {
        let now = self.members();
        {
            let mut last = self.members.lock();
            if *last == now {
                return;
            }
            *last = now.clone();
        }
        for link in self.links.read().iter() {
            link.send(Kind::Members(self.members_for(link, &now)));
        }
    }

    /// Checks the member list every second for as long as the node runs.
    pub fn watch_members(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut every = tokio::time::interval(MEMBERS_EVERY);
            loop {
                every.tick().await;
                let Some(links) = weak.upgrade() else { return };
                links.publish_members();
            }
        })
    }

    /// The `Welcome` a new link starts with.
    pub fn welcome(&self, link: &Link) -> pb::Welcome {
        pb::Welcome {
            node: self.node_id.clone(),
            limits: Some(pb::Limits {
                max_batch_bytes: u32::try_from(self.settings.max_batch_bytes).unwrap_or(u32::MAX),
                max_queued_bytes: self.settings.max_queued_bytes as u64,
            }),
            members: Some(self.members_for(link, &self.members())),
            hub_ack_base: crate::socketio::external::HUB_ACK_BASE,
        }
    }
}

/// The handler of a session no instance could take (the last link went away between the
/// check and the session): closed at once, the client retries.
struct Unserved;

impl ConnectionHandler for Unserved {
    fn on_message(&self, _text: bytes::Bytes) {}
    fn on_binary(&self, _data: bytes::Bytes) {}
    fn on_close(&self, _reason: CloseReason) {}
}

/// The handshake as an app is told of it.
fn handshake_message(handshake: &HandshakeInfo) -> pb::Handshake {
    pb::Handshake {
        headers: handshake
            .headers
            .iter()
            .filter_map(|(name, value)| {
                Some(pb::Header {
                    name: name.to_string(),
                    value: std::str::from_utf8(value).ok()?.to_string(),
                })
            })
            .collect(),
        url: handshake.url.clone(),
        address: handshake.address.ip().to_string(),
        secure: handshake.secure,
        issued: handshake
            .time
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0),
        claims_json: String::new(),
    }
}

impl ConnectionFactory for AppLinks {
    /// Whether `pick` would find a link, without choosing one (it runs once, in `open`).
    fn accepting(&self) -> bool {
        let max = self.settings.max_sessions_per_link;
        self.links
            .read()
            .iter()
            .any(|l| l.takes_sessions() && l.session_count() < max)
    }

    fn open(&self, session: &Arc<Session>, handshake: HandshakeInfo) -> Arc<dyn ConnectionHandler> {
        let transport = session.transport().as_str();
        let handshake = Arc::new(handshake);
        let max_attachments = self.max_attachments;
        let max_queued = self.settings.max_queued_bytes_per_session;
        let served = self.pick().and_then(|link| {
            let app = link.add_session(|handle| {
                AppSession::new(
                    handle,
                    link.uplink(),
                    session,
                    handshake.clone(),
                    max_attachments,
                    max_queued,
                )
            })?;
            let suffix = crate::engine::sid::node_suffix(&session.sid).to_string();
            link.send(Kind::Open(pb::Open {
                session: app.handle,
                socket_id_suffix: suffix,
                handshake: Some(handshake_message(&handshake)),
                transport: transport.to_string(),
            }));
            Some(app)
        });
        match served {
            Some(app) => app,
            None => {
                let session = session.clone();
                tokio::spawn(async move { session.close(CloseReason::ServerShutdown) });
                Arc::new(Unserved)
            }
        }
    }
}
