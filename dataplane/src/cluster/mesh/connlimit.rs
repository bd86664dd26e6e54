//! How many connections the peer port holds at once (`cluster.maxPeerConnections`) and per
//! source address (`cluster.maxPeerConnectionsPerIp`).
//!
//! A member needs one connection to each peer (plus one for a moment while a link is
//! replaced), so a small per-address budget never limits a real member, while one host
//! opening connections in a loop (a plaintext-mode stranger, or a holder of a hub
//! certificate whose links are refused) cannot use up the node's descriptors or the total
//! budget the other members need. A connection is counted from accept until it closes, TLS
//! handshake included. The count per address is the engine's [`IpCounts`] (the same as for
//! client sessions).

use std::net::IpAddr;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::engine::iplimit::IpCounts;

/// The counts; shared by the accept loop and the [`Slot`]s of open connections.
#[derive(Debug)]
pub(crate) struct ConnLimit {
    total_max: usize,
    per_ip_max: usize,
    open: Mutex<Open>,
}

#[derive(Debug, Default)]
struct Open {
    total: usize,
    per_ip: IpCounts,
}

/// One counted connection; dropping it frees its place.
#[derive(Debug)]
pub(crate) struct Slot {
    limit: Arc<ConnLimit>,
    ip: IpAddr,
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Full {
    Total,
    PerIp,
}

impl ConnLimit {
    pub(crate) fn new(total_max: usize, per_ip_max: usize) -> Arc<Self> {
        Arc::new(Self {
            total_max,
            per_ip_max,
            open: Mutex::new(Open::default()),
        })
    }

    /// Counts a new connection from `ip`, unless a budget is used up.
    pub(super) fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, Full> {
        let mut open = self.open.lock();
        if open.total >= self.total_max {
            return Err(Full::Total);
        }
        if open.per_ip.get(ip) >= self.per_ip_max {
            return Err(Full::PerIp);
        }
        open.per_ip.add(ip);
        open.total = open.total.saturating_add(1);
        Ok(Slot {
            limit: self.clone(),
            ip,
        })
    }

    #[cfg(test)]
    fn open(&self) -> (usize, usize) {
        let open = self.open.lock();
        (open.total, open.per_ip.addresses())
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.limit.open.lock();
        open.total = open.total.saturating_sub(1);
        open.per_ip.remove(self.ip);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_per_address_and_in_all() {
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        let c: IpAddr = "127.0.0.3".parse().unwrap();
        let limit = ConnLimit::new(3, 2);
        let s1 = limit.admit(a).unwrap();
        let _s2 = limit.admit(mapped).unwrap();
        assert_eq!(
            limit.admit(a).unwrap_err(),
            Full::PerIp,
            "an IPv4-mapped address is the same host"
        );
        let _s3 = limit.admit(b).unwrap();
        assert_eq!(limit.admit(c).unwrap_err(), Full::Total);
        drop(s1);
        assert_eq!(limit.open(), (2, 2));
        let _s4 = limit.admit(c).unwrap();
        assert_eq!(limit.open(), (3, 3));
    }

    #[test]
    fn closing_every_connection_forgets_the_addresses() {
        let limit = ConnLimit::new(10, 1);
        let slots: Vec<_> = (1..=5u8)
            .map(|i| limit.admit(IpAddr::from([127, 0, 0, i])).unwrap())
            .collect();
        assert_eq!(limit.open(), (5, 5));
        drop(slots);
        assert_eq!(limit.open(), (0, 0));
    }
}
