//! The rooms of one namespace as plain data, like socket.io's in-memory adapter: which
//! members (sockets) there are, which rooms each room holds, and which members a
//! [`Selector`] picks. No locks, no I/O: the namespace wraps it in its lock and turns the
//! transitions it reports (a room's first member joined, its last one left) into
//! announcements to the cluster.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Which sockets an operation applies to: those in any of `rooms` (all sockets when
/// empty) and in none of `except`. A socket id is also a room holding just that socket.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Selector {
    pub rooms: Vec<String>,
    pub except: Vec<String>,
}

impl Selector {
    pub fn all() -> Self {
        Self::default()
    }

    pub fn rooms<I: IntoIterator<Item = S>, S: Into<String>>(rooms: I) -> Self {
        Self {
            rooms: rooms.into_iter().map(Into::into).collect(),
            except: Vec::new(),
        }
    }

    pub fn except<I: IntoIterator<Item = S>, S: Into<String>>(mut self, rooms: I) -> Self {
        self.except.extend(rooms.into_iter().map(Into::into));
        self
    }

    /// Whether the selector picks the member `id` in `rooms` (the same rule as
    /// [`RoomIndex::for_each`], for one member: what a replay after a disconnection uses).
    pub fn picks(&self, id: &str, rooms: &[Arc<str>]) -> bool {
        let is_in = |room: &String| room == id || rooms.iter().any(|r| **r == **room);
        (self.rooms.is_empty() || self.rooms.iter().any(is_in)) && !self.except.iter().any(is_in)
    }
}

/// Members by id and rooms by name. A member's id is shared (`Arc<str>`) between both maps,
/// so identity checks compare pointers, not strings.
#[derive(Debug)]
pub struct RoomIndex<T> {
    members: HashMap<Arc<str>, T>,
    rooms: HashMap<Arc<str>, Members<T>>,
}

/// The members of one room. Most rooms are per-user rooms with one member, kept inline: a
/// table of one entry would cost about 130 more bytes per room.
#[derive(Debug)]
enum Members<T> {
    One(Arc<str>, T),
    Many(HashMap<Arc<str>, T>),
}

impl<T: Clone> Members<T> {
    fn insert(&mut self, id: Arc<str>, member: T) {
        match self {
            Members::Many(map) => {
                map.insert(id, member);
            }
            Members::One(own, slot) if **own == *id => *slot = member,
            Members::One(own, slot) => {
                let map = HashMap::from([(own.clone(), slot.clone()), (id, member)]);
                *self = Members::Many(map);
            }
        }
    }

    fn get_mut(&mut self, id: &str) -> Option<&mut T> {
        match self {
            Members::One(own, slot) => (**own == *id).then_some(slot),
            Members::Many(map) => map.get_mut(id),
        }
    }

    /// Takes `id` out of a room it is not the last member of (the caller drops a room whose
    /// last member leaves: see [`Members::is_only`]).
    fn remove(&mut self, id: &str) {
        if let Members::Many(map) = self {
            map.remove(id);
        }
    }

    /// Whether `id` is the last member: taking it out empties the room.
    fn is_only(&self, id: &str) -> bool {
        match self {
            Members::One(own, _) => **own == *id,
            Members::Many(map) => map.len() == 1 && map.contains_key(id),
        }
    }

    fn len(&self) -> usize {
        match self {
            Members::One(..) => 1,
            Members::Many(map) => map.len(),
        }
    }

    fn iter(&self) -> impl Iterator<Item = (&Arc<str>, &T)> {
        let (one, many) = match self {
            Members::One(id, member) => (Some((id, member)), None),
            Members::Many(map) => (None, Some(map.iter())),
        };
        one.into_iter().chain(many.into_iter().flatten())
    }
}

impl<T> Default for RoomIndex<T> {
    fn default() -> Self {
        Self {
            members: HashMap::new(),
            rooms: HashMap::new(),
        }
    }
}

/// Identity of a member: the address of its shared id.
fn key(id: &Arc<str>) -> *const u8 {
    Arc::as_ptr(id).cast::<u8>()
}

impl<T: Clone> RoomIndex<T> {
    pub fn insert(&mut self, id: Arc<str>, member: T) {
        self.members.insert(id, member);
    }

    pub fn contains(&self, id: &str) -> bool {
        self.members.contains_key(id)
    }

    pub fn get(&self, id: &str) -> Option<&T> {
        self.members.get(id)
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Removes a member from the index and from `rooms`; returns the rooms it left empty.
    pub fn remove(&mut self, id: &str, rooms: &[Arc<str>]) -> Vec<Arc<str>> {
        self.members.remove(id);
        rooms
            .iter()
            .filter(|room| self.leave(id, room))
            .cloned()
            .collect()
    }

    /// Adds member `id` to `room`. Returns the room's shared name (to keep in the member's
    /// own room list) and whether the room was empty before, or `None` when `id` is not a
    /// member.
    pub fn join(&mut self, id: &Arc<str>, room: &str) -> Option<(Arc<str>, bool)> {
        let member = self.members.get(&**id)?.clone();
        let room: Arc<str> = match self.rooms.get_key_value(room) {
            Some((existing, _)) => existing.clone(),
            None => Arc::from(room),
        };
        let first = match self.rooms.entry(room.clone()) {
            Entry::Vacant(slot) => {
                slot.insert(Members::One(id.clone(), member));
                true
            }
            Entry::Occupied(mut slot) => {
                slot.get_mut().insert(id.clone(), member);
                false
            }
        };
        Some((room, first))
    }

    /// Puts `member` in the place of the member with the same id, in the index and in
    /// `rooms` (its rooms): a socket recovered under its old id. Returns false (and changes
    /// nothing) when `id` is not a member.
    pub fn replace(&mut self, id: &Arc<str>, member: T, rooms: &[Arc<str>]) -> bool {
        let Some(slot) = self.members.get_mut(&**id) else {
            return false;
        };
        *slot = member.clone();
        for room in rooms {
            if let Some(slot) = self.rooms.get_mut(&**room).and_then(|m| m.get_mut(id)) {
                *slot = member.clone();
            }
        }
        true
    }

    /// Takes member `id` out of `room`; true when that left the room empty.
    pub fn leave(&mut self, id: &str, room: &str) -> bool {
        let Some(members) = self.rooms.get_mut(room) else {
            return false;
        };
        if members.is_only(id) {
            self.rooms.remove(room);
            return true;
        }
        members.remove(id);
        false
    }

    /// Members of a room, including the member whose id is the room name.
    pub fn members<'a>(&'a self, room: &str) -> impl Iterator<Item = (&'a Arc<str>, &'a T)> + 'a {
        let own = self.members.get_key_value(room);
        let joined = self.rooms.get(room).into_iter().flat_map(Members::iter);
        own.into_iter().chain(joined)
    }

    /// Calls `f` once for each member the selector picks.
    pub fn for_each(&self, selector: &Selector, mut f: impl FnMut(&T)) {
        let excluded: HashSet<*const u8> = selector
            .except
            .iter()
            .flat_map(|room| self.members(room))
            .map(|(id, _)| key(id))
            .collect();
        let mut visit = |id: &Arc<str>, member: &T| {
            if excluded.is_empty() || !excluded.contains(&key(id)) {
                f(member);
            }
        };
        match selector.rooms.as_slice() {
            [] => self.members.iter().for_each(|(id, m)| visit(id, m)),
            [room] => self.members(room).for_each(|(id, m)| visit(id, m)),
            rooms => {
                // A member of several target rooms is still picked once.
                let mut seen = HashSet::new();
                for (id, member) in rooms.iter().flat_map(|room| self.members(room)) {
                    if seen.insert(key(id)) {
                        visit(id, member);
                    }
                }
            }
        }
    }

    /// Rooms with their member counts, sorted by name (members' own id rooms not listed).
    pub fn room_sizes(&self) -> Vec<(String, usize)> {
        let mut rooms: Vec<_> = self
            .rooms
            .iter()
            .map(|(r, m)| (r.to_string(), m.len()))
            .collect();
        rooms.sort();
        rooms
    }

    /// Names of the rooms with members (members' own id rooms not listed).
    pub fn room_names(&self) -> Vec<String> {
        self.rooms.keys().map(|r| r.to_string()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(ids: &[&str]) -> (RoomIndex<String>, Vec<Arc<str>>) {
        let mut index = RoomIndex::default();
        let ids: Vec<Arc<str>> = ids.iter().map(|id| Arc::from(*id)).collect();
        for id in &ids {
            index.insert(id.clone(), id.to_string());
        }
        (index, ids)
    }

    fn picked(index: &RoomIndex<String>, selector: &Selector) -> Vec<String> {
        let mut out = Vec::new();
        index.for_each(selector, |m| out.push(m.clone()));
        out.sort();
        out
    }

    #[test]
    fn joins_and_leaves_report_transitions() {
        let (mut index, ids) = index(&["a", "b"]);
        assert_eq!(index.join(&ids[0], "r").map(|(_, first)| first), Some(true));
        assert_eq!(
            index.join(&ids[1], "r").map(|(_, first)| first),
            Some(false)
        );
        assert!(!index.leave("a", "r"), "b is still in r");
        assert!(!index.leave("a", "r"), "a already left");
        assert!(index.leave("b", "r"), "r is empty now");
        assert!(index.join(&Arc::from("ghost"), "r").is_none());
        assert!(index.room_names().is_empty());
    }

    #[test]
    fn selectors_pick_each_member_once() {
        let (mut index, ids) = index(&["a", "b", "c"]);
        for (i, room) in [(0, "x"), (1, "x"), (1, "y"), (2, "y")] {
            index.join(&ids[i], room);
        }
        assert_eq!(picked(&index, &Selector::all()), ["a", "b", "c"]);
        assert_eq!(
            picked(&index, &Selector::rooms(["x", "y"])),
            ["a", "b", "c"]
        );
        assert_eq!(picked(&index, &Selector::rooms(["x"]).except(["y"])), ["a"]);
        assert_eq!(
            picked(&index, &Selector::rooms(["c"])),
            ["c"],
            "own id room"
        );
        assert_eq!(picked(&index, &Selector::all().except(["b"])), ["a", "c"]);
        assert_eq!(index.room_sizes(), [("x".into(), 2), ("y".into(), 2)]);
    }

    #[test]
    fn a_room_grows_from_one_member_and_shrinks_back() {
        let (mut index, ids) = index(&["a", "b", "c"]);
        let (r, _) = index.join(&ids[0], "r").unwrap();
        assert!(index.replace(&ids[0], "a2".into(), std::slice::from_ref(&r)));
        assert_eq!(
            picked(&index, &Selector::rooms(["r"])),
            ["a2"],
            "one member, replaced"
        );
        assert_eq!(
            index.join(&ids[0], "r").map(|(_, first)| first),
            Some(false)
        );
        assert_eq!(
            index.room_sizes(),
            [("r".into(), 1)],
            "joining twice is one member"
        );
        index.join(&ids[1], "r");
        index.join(&ids[2], "r");
        assert!(!index.leave("ghost", "r"));
        assert!(!index.leave("a", "r"));
        assert!(!index.leave("c", "r"));
        assert_eq!(picked(&index, &Selector::rooms(["r"])), ["b"]);
        assert!(!index.leave("a", "r"), "a already left");
        assert!(index.leave("b", "r"), "b was the last one");
        assert!(index.room_names().is_empty());
        index.join(&ids[2], "s");
        assert!(!index.leave("a", "s"), "not a member of a one-member room");
        assert_eq!(picked(&index, &Selector::rooms(["s"])), ["c"]);
    }

    #[test]
    fn removing_a_member_empties_its_rooms() {
        let (mut index, ids) = index(&["a", "b"]);
        let (x, _) = index.join(&ids[0], "x").unwrap();
        let (y, _) = index.join(&ids[0], "y").unwrap();
        index.join(&ids[1], "y");
        assert_eq!(index.remove("a", &[x, y]), [Arc::<str>::from("x")]);
        assert_eq!(index.len(), 1);
        assert_eq!(picked(&index, &Selector::rooms(["y"])), ["b"]);
    }
}
