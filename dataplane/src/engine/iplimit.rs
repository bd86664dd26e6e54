//! Open sessions per client IP address (`limits.maxConnectionsPerIp`). Pure data: the
//! session table admits and releases sessions here under its own lock.
//!
//! [`IpCounts`], the count per address, is shared with the peer port's connection budgets
//! (`cluster::mesh::connlimit`).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

/// How many of something each address holds; an address with none is not kept. An IPv4
/// client on a dual-stack listener (`::ffff:1.2.3.4`) counts as its IPv4 address.
#[derive(Debug, Default)]
pub(crate) struct IpCounts(HashMap<IpAddr, usize>);

impl IpCounts {
    /// What `ip` holds.
    pub(crate) fn get(&self, ip: IpAddr) -> usize {
        self.0.get(&ip.to_canonical()).copied().unwrap_or(0)
    }

    /// Counts one more for `ip`.
    pub(crate) fn add(&mut self, ip: IpAddr) {
        let count = self.0.entry(ip.to_canonical()).or_insert(0);
        *count = count.saturating_add(1);
    }

    /// Counts one less for `ip` (nothing if it held none).
    pub(crate) fn remove(&mut self, ip: IpAddr) {
        let ip = ip.to_canonical();
        if let Some(count) = self.0.get_mut(&ip) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.0.remove(&ip);
            }
        }
    }

    /// Addresses holding at least one.
    #[cfg(test)]
    pub(crate) fn addresses(&self) -> usize {
        self.0.len()
    }
}

/// Who holds how many sessions. Empty (and unused) when the limit is off.
#[derive(Debug, Default)]
pub(super) struct PerIp {
    /// Open sessions per address.
    counts: IpCounts,
    /// The address of each counted session.
    owners: HashMap<Arc<str>, IpAddr>,
}

impl PerIp {
    /// Whether `ip` may open one more session under `limit` (0: no limit).
    pub fn admits(&self, ip: IpAddr, limit: usize) -> bool {
        limit == 0 || self.counts.get(ip) < limit
    }

    /// Counts session `sid` for `ip`.
    pub fn add(&mut self, sid: Arc<str>, ip: IpAddr) {
        if self.owners.insert(sid, ip).is_none() {
            self.counts.add(ip);
        }
    }

    /// Stops counting session `sid` (if it was counted).
    pub fn remove(&mut self, sid: &str) {
        if let Some(ip) = self.owners.remove(sid) {
            self.counts.remove(ip);
        }
    }

    #[cfg(test)]
    fn count(&self, ip: IpAddr) -> usize {
        self.counts.get(ip)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_address_and_frees_slots() {
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        let mut t = PerIp::default();
        assert!(t.admits(a, 0) && t.admits(a, 2));
        t.add("s1".into(), a);
        t.add("s2".into(), mapped);
        assert_eq!(t.count(a), 2, "an IPv4-mapped address is the same client");
        assert!(!t.admits(a, 2));
        assert!(t.admits(a, 0), "0 is no limit");
        assert!(t.admits(b, 2), "other addresses have their own budget");
        t.add("s2".into(), a);
        assert_eq!(t.count(a), 2, "a session is counted once");
        t.remove("s1");
        t.remove("s1");
        t.remove("unknown");
        assert_eq!(t.count(a), 1);
        assert!(t.admits(a, 2));
        t.remove("s2");
        assert!(t.counts.addresses() == 0 && t.owners.is_empty());
    }
}
