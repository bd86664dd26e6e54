//! Cluster membership: who the members are and where their peer endpoints listen.
//!
//! Discovery is a trait so the same node runs from a static list (local clusters, tests),
//! a members file, DNS of a headless Service, or the Kubernetes EndpointSlices of the hub.
//! The ring is built from the member ids only; addresses are for the peer links.
//!
//! The member set changes at run time: the mesh publishes each new set as a
//! [`Membership`] (members, ring, epoch) on a `tokio::sync::watch` channel that the rest of
//! the node subscribes to (see `Mesh::subscribe`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use super::ring::Ring;

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

    /// Takes `id` out; returns its address if it was a member.
    pub fn remove(&mut self, id: &str) -> Option<SocketAddr> {
        self.0.remove(id)
    }

    /// Parses a members file: entries as in [`Members::parse`], one per line and/or comma
    /// separated; `#` starts a comment that runs to the end of its line.
    pub fn parse_file(text: &str) -> Result<Self, MembersError> {
        let entries: Vec<&str> = text
            .lines()
            .map(|line| line.split_once('#').map_or(line, |(entry, _)| entry))
            .collect();
        Self::parse(&entries.join(","))
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

    /// Members with their peer addresses, sorted by id.
    pub fn iter(&self) -> impl Iterator<Item = (&str, SocketAddr)> {
        self.0.iter().map(|(id, addr)| (id.as_str(), *addr))
    }

    /// What changes from `self` to `next`.
    pub fn diff(&self, next: &Members) -> MembersDiff {
        let mut diff = MembersDiff::default();
        for (id, addr) in next.iter() {
            match self.addr(id) {
                None => diff.joined.push((id.to_string(), addr)),
                Some(old) if old != addr => diff.moved.push((id.to_string(), old, addr)),
                Some(_) => {}
            }
        }
        for (id, addr) in self.iter() {
            if next.addr(id).is_none() {
                diff.left.push((id.to_string(), addr));
            }
        }
        diff
    }
}

/// The difference between two member sets, each list sorted by id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MembersDiff {
    /// New members and their addresses.
    pub joined: Vec<(String, SocketAddr)>,
    /// Members that are gone, with their last address.
    pub left: Vec<(String, SocketAddr)>,
    /// Members still there at another address: `(id, old, new)`.
    pub moved: Vec<(String, SocketAddr, SocketAddr)>,
}

impl MembersDiff {
    pub fn is_empty(&self) -> bool {
        self.joined.is_empty() && self.left.is_empty() && self.moved.is_empty()
    }
}

/// One version of the cluster's member set as this node sees it: what ring changes are
/// published as. This node is always a member, even before discovery lists it (a pod that
/// is not ready yet is missing from DNS and EndpointSlices).
///
/// Following ring changes (e.g. to re-announce rooms to their new owners):
///
/// ```ignore
/// let mut ring = cluster.subscribe(); // or mesh.subscribe()
/// let mut seen = ring.borrow_and_update().clone(); // the current set: start from it
/// while ring.changed().await.is_ok() {
///     let now = ring.borrow_and_update().clone();
///     let diff = seen.members.diff(&now.members); // who joined, left, moved
///     // ... now.ring.owner(namespace, room) for the new owners ...
///     seen = now;
/// }
/// // `changed()` fails once the mesh is gone.
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    /// Starts at 0 with the members the node started with; +1 on every change of the set
    /// (a member joined, left or moved). Epochs are local to this node: two nodes with the
    /// same members may be at different epochs.
    pub epoch: u64,
    pub members: Members,
    /// `members.ring()`, computed once per change.
    pub ring: Ring,
}

impl Membership {
    pub fn new(epoch: u64, members: Members) -> Self {
        let ring = members.ring();
        Self {
            epoch,
            members,
            ring,
        }
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

/// A file of `ID=IP:PORT` entries ([`Members::parse_file`]), re-read on every call, so
/// operators (or tests) change the cluster by rewriting it. Replace it atomically (write a
/// new file, then rename it over the old one): a half-written file is read as it is.
#[derive(Debug, Clone)]
pub struct FileDiscovery(pub PathBuf);

#[async_trait::async_trait]
impl Discovery for FileDiscovery {
    async fn members(&self) -> anyhow::Result<Members> {
        let text = tokio::fs::read_to_string(&self.0)
            .await
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", self.0.display()))?;
        Members::parse_file(&text).map_err(|e| anyhow::anyhow!("{}: {e}", self.0.display()))
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

    #[test]
    fn parses_member_files() {
        let text = "# the hub\nhub-0=127.0.0.11:7000 # first\n\nhub-1=127.0.0.12:7000, hub-2=127.0.0.13:7000\n#hub-3=127.0.0.14:7000\n";
        let m = Members::parse_file(text).unwrap();
        assert_eq!(m.ring().members(), ["hub-0", "hub-1", "hub-2"]);
        assert!(Members::parse_file("# nobody\n").unwrap().is_empty());
        assert!(matches!(
            Members::parse_file("hub-0=127.0.0.1:1\nhub-0=127.0.0.1:2"),
            Err(MembersError::Duplicate(_))
        ));
    }

    #[test]
    fn diffs_name_joins_leaves_and_moves() {
        let before = Members::parse("a=127.0.0.1:1,b=127.0.0.1:2,c=127.0.0.1:3").unwrap();
        let after = Members::parse("b=127.0.0.1:2,c=127.0.0.9:3,d=127.0.0.1:4").unwrap();
        let diff = before.diff(&after);
        assert_eq!(
            diff.joined,
            [("d".to_string(), "127.0.0.1:4".parse().unwrap())]
        );
        assert_eq!(
            diff.left,
            [("a".to_string(), "127.0.0.1:1".parse().unwrap())]
        );
        assert_eq!(
            diff.moved,
            [(
                "c".to_string(),
                "127.0.0.1:3".parse().unwrap(),
                "127.0.0.9:3".parse().unwrap()
            )]
        );
        assert!(after.diff(&after).is_empty());
        let m = Membership::new(3, after.clone());
        assert_eq!(m.ring, after.ring());
    }

    #[tokio::test]
    async fn file_discovery_rereads_its_file() {
        let dir = std::env::temp_dir().join(format!("roomcast-members-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("members");
        let d = FileDiscovery(path.clone());
        assert!(d.members().await.is_err(), "a missing file is an error");
        std::fs::write(&path, "a=127.0.0.1:1\n").unwrap();
        assert_eq!(d.members().await.unwrap().len(), 1);
        std::fs::write(&path, "a=127.0.0.1:1\nb=127.0.0.1:2\n").unwrap();
        assert_eq!(d.members().await.unwrap().len(), 2);
        std::fs::write(&path, "a=oops\n").unwrap();
        let err = d.members().await.unwrap_err().to_string();
        assert!(err.contains("members") && err.contains("a=oops"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn static_discovery_returns_its_list() {
        let members = Members::parse("a=127.0.0.1:1").unwrap();
        let d = StaticDiscovery(members.clone());
        assert_eq!(d.members().await.unwrap(), members);
    }
}
