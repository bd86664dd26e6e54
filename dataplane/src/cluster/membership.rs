//! Cluster membership: who the members are and where their peer endpoints listen.
//!
//! Discovery is a trait so the same node runs from a static list (local clusters, tests),
//! DNS of a headless Service, or the Kubernetes EndpointSlices of the hub. The ring is built
//! from the member ids only; addresses are for the peer links.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use super::Ring;

/// The members of a cluster at one moment, by member id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Members(BTreeMap<String, SocketAddr>);

/// A member list that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MembersError {
    #[error("member entry {0:?} is not ID=IP:PORT")]
    BadEntry(String),
    #[error("member id {0:?} appears twice")]
    Duplicate(String),
}

impl Members {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn insert(&mut self, id: impl Into<String>, addr: SocketAddr) {
        self.0.insert(id.into(), addr);
    }

    /// Parses `hub-0=127.0.0.11:7000,hub-1=127.0.0.12:7000` (spaces and empty entries ignored).
    pub fn parse(list: &str) -> Result<Self, MembersError> {
        let mut members = Members::new();
        for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (id, addr) = entry
                .split_once('=')
                .ok_or_else(|| MembersError::BadEntry(entry.to_string()))?;
            let addr: SocketAddr = addr
                .trim()
                .parse()
                .map_err(|_| MembersError::BadEntry(entry.to_string()))?;
            let id = id.trim();
            if id.is_empty() {
                return Err(MembersError::BadEntry(entry.to_string()));
            }
            if members.0.insert(id.to_string(), addr).is_some() {
                return Err(MembersError::Duplicate(id.to_string()));
            }
        }
        Ok(members)
    }

    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }

    pub fn addr(&self, id: &str) -> Option<SocketAddr> {
        self.0.get(id).copied()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The ring of these members.
    pub fn ring(&self) -> Ring {
        Ring::new(self.ids())
    }
}

/// A source of the current member set.
#[async_trait::async_trait]
pub trait Discovery: Send + Sync {
    /// The members as of now (including this node once it is ready).
    async fn members(&self) -> anyhow::Result<Members>;
}

/// A fixed member list (flags or configuration).
#[derive(Debug, Clone)]
pub struct StaticDiscovery(pub Members);

#[async_trait::async_trait]
impl Discovery for StaticDiscovery {
    async fn members(&self) -> anyhow::Result<Members> {
        Ok(self.0.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_member_lists() {
        let m = Members::parse(" hub-0=127.0.0.11:7000, hub-1=127.0.0.12:7000,").unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(m.addr("hub-1"), Some("127.0.0.12:7000".parse().unwrap()));
        assert_eq!(m.ring().members(), ["hub-0", "hub-1"]);
        assert!(Members::parse("").unwrap().is_empty());
    }

    #[test]
    fn rejects_bad_lists() {
        assert_eq!(
            Members::parse("hub-0"),
            Err(MembersError::BadEntry("hub-0".into()))
        );
        assert!(matches!(
            Members::parse("=127.0.0.1:1"),
            Err(MembersError::BadEntry(_))
        ));
        assert!(matches!(
            Members::parse("a=notanaddr"),
            Err(MembersError::BadEntry(_))
        ));
        assert_eq!(
            Members::parse("a=127.0.0.1:1,a=127.0.0.2:1"),
            Err(MembersError::Duplicate("a".into()))
        );
    }

    #[tokio::test]
    async fn static_discovery_returns_its_list() {
        let members = Members::parse("a=127.0.0.1:1").unwrap();
        let d = StaticDiscovery(members.clone());
        assert_eq!(d.members().await.unwrap(), members);
    }
}
