//! What the mesh counts: messages sent to and received from peers, room updates apart from
//! the rest, and drops of peers that have since left; and [`MeshStats`], the snapshot that
//! `/metrics` reads.
//!
//! Its own module because the rule "what counts as a room update" is shared by the send
//! path and the receive path, and is pure.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::cluster::proto::{self as pb, message::Kind};

/// Counters of a mesh, for `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MeshStats {
    /// Members of the ring, this node included.
    pub members: usize,
    /// The membership epoch (see `Membership::epoch`).
    pub epoch: u64,
    /// Other members.
    pub peers: usize,
    /// Other members whose link is up (in routing).
    pub connected: usize,
    pub sent: u64,
    pub received: u64,
    pub room_updates_sent: u64,
    pub room_updates_received: u64,
    /// Messages not sent because a peer's queue was full.
    pub dropped: u64,
    /// Peer connections refused at the TLS handshake (or timed out in it).
    pub handshakes_failed: u64,
    /// Peer connections closed at once for being over `cluster.maxPeerConnections` or
    /// `cluster.maxPeerConnectionsPerIp`.
    pub connections_refused: u64,
    /// Links refused because the caller's certificate is not valid for the member id it
    /// claims, or it claimed none.
    pub links_refused: u64,
    /// TLS material reloads done and failed (`None` in plaintext).
    pub tls_reloads: Option<u64>,
    pub tls_reloads_failed: Option<u64>,
}

/// The mesh's running totals (each a counter: it never falls).
#[derive(Debug, Default)]
pub(super) struct Counters {
    /// Messages queued for peers and received from them (link upkeep and room updates not
    /// counted).
    pub(super) sent: AtomicU64,
    pub(super) received: AtomicU64,
    /// Room updates (announcements, full lists, synced markers, their pings) queued and
    /// received.
    pub(super) room_updates_sent: AtomicU64,
    pub(super) room_updates_received: AtomicU64,
    /// Drops counted by peers that have since left.
    pub(super) dropped_by_departed: AtomicU64,
    /// Shared with the peer listener's handshake futures.
    pub(super) handshakes_failed: std::sync::Arc<AtomicU64>,
    pub(super) connections_refused: std::sync::Arc<AtomicU64>,
    pub(super) links_refused: AtomicU64,
}

impl Counters {
    /// The counter that `message`, once queued for a peer, counts in.
    pub(super) fn sent_for(&self, message: &pb::Message) -> &AtomicU64 {
        if is_room_update(message) {
            &self.room_updates_sent
        } else {
            &self.sent
        }
    }

    /// Counts `kind`, received from a peer (link upkeep is not passed here).
    pub(super) fn count_received(&self, kind: &Kind) {
        let counter = if is_room_update_kind(kind) {
            &self.room_updates_received
        } else {
            &self.received
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Whether a message is about rooms (counted apart from broadcasts and operations).
fn is_room_update(message: &pb::Message) -> bool {
    message.kind.as_ref().is_some_and(is_room_update_kind)
}

/// Room announcements, full lists, synced markers, room ownership, and the pings, pongs
/// and owners' flushes that make sure peers have them.
fn is_room_update_kind(kind: &Kind) -> bool {
    matches!(
        kind,
        Kind::RoomAnnounce(_)
            | Kind::Synced(_)
            | Kind::Ping(_)
            | Kind::Pong(_)
            | Kind::Ownership(_)
            | Kind::Request(pb::Request {
                query: Some(pb::request::Query::Flush(_)),
                ..
            })
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_updates_are_counted_apart() {
        let counters = Counters::default();
        let ping = pb::Message::of(Kind::Ping(pb::Ping { id: 1 }));
        let broadcast = pb::Message::of(Kind::Broadcast(pb::Broadcast::default()));
        for message in [&ping, &broadcast, &broadcast, &pb::Message { kind: None }] {
            counters.sent_for(message).fetch_add(1, Ordering::Relaxed);
        }
        counters.count_received(&Kind::Synced(Default::default()));
        counters.count_received(&Kind::Pong(pb::Pong { id: 1 }));
        counters.count_received(&Kind::Reply(pb::Reply::default()));
        let read = |c: &AtomicU64| c.load(Ordering::Relaxed);
        assert_eq!(
            (
                read(&counters.sent),
                read(&counters.room_updates_sent),
                read(&counters.received),
                read(&counters.room_updates_received)
            ),
            (3, 1, 1, 2)
        );
    }
}
