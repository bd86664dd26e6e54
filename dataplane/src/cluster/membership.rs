//! Cluster membership: who the members are and where their peer endpoints listen.
//!
//! Discovery is a trait so the same node runs from a static list (local clusters, tests),
//! a members file, DNS of a headless Service, or the Kubernetes EndpointSlices of the hub.
//! The ring is built from the member ids only; addresses are for the peer links.
//!
//! The member set changes at run time: the mesh publishes each new set as a
//! [`Membership`] (members, ring, epoch) on a `tokio::sync::watch` channel that the rest of
//! the node subscribes to (see `Mesh::subscribe`).

use std::path::PathBuf;

use super::ring::Ring;

pub use roomcast_config::members::{Members, MembersDiff, MembersError};

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
    /// The ring of `members`, computed once per change.
    pub ring: Ring,
}

impl Membership {
    pub fn new(epoch: u64, members: Members) -> Self {
        let ring = Ring::new(members.ids());
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
    fn a_membership_carries_the_ring_of_its_members() {
        let members = Members::parse("b=127.0.0.1:2,a=127.0.0.1:1").unwrap();
        let m = Membership::new(3, members.clone());
        assert_eq!(m.ring, Ring::new(members.ids()));
        assert_eq!(m.ring.members(), ["a", "b"]);
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
