//! The acks a socket waits for from its client (server emits with a callback), by ack id.
//!
//! Most sockets never have one outstanding, so the map is allocated at the first and freed
//! when the last is answered: an idle socket pays 8 bytes for it, not an empty `HashMap`'s 48.

use std::collections::HashMap;

// Boxed on purpose: the point is that an idle socket holds one pointer, not the map's 48
// bytes of hasher state and table header.
#[allow(clippy::box_collection)]
#[derive(Debug)]
pub(super) struct PendingAcks<W>(Option<Box<HashMap<u64, W>>>);

impl<W> Default for PendingAcks<W> {
    fn default() -> Self {
        Self(None)
    }
}

impl<W> PendingAcks<W> {
    pub(super) fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |m| m.len())
    }

    pub(super) fn insert(&mut self, id: u64, waiter: W) {
        self.0
            .get_or_insert_with(Default::default)
            .insert(id, waiter);
    }

    pub(super) fn remove(&mut self, id: &u64) -> Option<W> {
        let map = self.0.as_mut()?;
        let waiter = map.remove(id);
        if map.is_empty() {
            self.0 = None;
        }
        waiter
    }

    pub(super) fn clear(&mut self) {
        self.0 = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocated_while_some_are_pending() {
        let mut acks = PendingAcks::default();
        assert_eq!(acks.len(), 0);
        acks.insert(1, "a");
        acks.insert(2, "b");
        assert_eq!(acks.len(), 2);
        assert_eq!(acks.remove(&1), Some("a"));
        assert_eq!(acks.remove(&1), None);
        assert!(acks.0.is_some());
        assert_eq!(acks.remove(&2), Some("b"));
        assert!(acks.0.is_none(), "freed with the last");
        acks.insert(3, "c");
        acks.clear();
        assert_eq!(acks.len(), 0);
    }
}
