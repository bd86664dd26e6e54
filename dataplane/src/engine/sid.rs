//! Engine.IO session ids and Socket.IO socket ids.
//!
//! A session id is 16 random base64url characters (96 bits from a CSPRNG) followed by the
//! base64url form of the owning node's member id, so any node can tell which node owns a
//! session from the id alone. A socket id has its own random part and the same node suffix
//! as its session: knowing a socket id (which other clients may see) never lets anyone
//! touch the engine session, and any node can still tell where the socket lives, so an
//! emit to one socket goes to one node.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rand::RngCore;

const RANDOM_BYTES: usize = 12;
/// Length of the random part of a session id in characters.
const RANDOM_CHARS: usize = RANDOM_BYTES * 4 / 3;

/// A fresh random part followed by `suffix`, in one allocation of the exact size (one per
/// id: a handshake makes two).
fn random_with(suffix: &str) -> String {
    let mut bytes = [0u8; RANDOM_BYTES];
    rand::thread_rng().fill_bytes(&mut bytes);
    let mut chars = [0u8; RANDOM_CHARS];
    // 12 bytes are exactly 16 base64 characters: the slice always fits.
    let written = URL_SAFE_NO_PAD
        .encode_slice(bytes, &mut chars)
        .unwrap_or_default();
    let mut id = String::with_capacity(RANDOM_CHARS + suffix.len());
    // base64url is ASCII.
    id.push_str(std::str::from_utf8(&chars[..written]).unwrap_or_default());
    id.push_str(suffix);
    id
}

/// Makes session ids that name their node.
#[derive(Debug, Clone)]
pub struct SidGenerator {
    node_suffix: String,
}

impl SidGenerator {
    pub fn new(node_id: &str) -> Self {
        Self {
            node_suffix: URL_SAFE_NO_PAD.encode(node_id.as_bytes()),
        }
    }

    pub fn session_id(&self) -> String {
        random_with(&self.node_suffix)
    }
}

/// A fresh random id (CloudEvent ids and the like).
pub fn random_id() -> String {
    random_with("")
}

/// A fresh Socket.IO socket id for a socket of session `sid`: a new random part, and the
/// session's node suffix (nothing else of the session id).
pub fn socket_id(sid: &str) -> String {
    random_with(node_suffix(sid))
}

/// The part of a session id that names its node: what every socket id of the session
/// ends with.
pub fn node_suffix(sid: &str) -> &str {
    sid.get(RANDOM_CHARS..).unwrap_or("")
}

/// The member id of the node that owns a session id, if the id is well formed.
/// Whether `text` has the shape of a socket (or session) id of any node: the random part,
/// then a node id in URL-safe base64 that decodes to a plausible member id. Every socket
/// is in a room named by its id, so a client that could join a room of that name would
/// receive that socket's private emits.
pub fn is_socket_id(text: &str) -> bool {
    text.len() > RANDOM_CHARS
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        && owner_of(text).is_some_and(|node| {
            !node.is_empty()
                && node
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
        })
}

pub fn owner_of(sid: &str) -> Option<String> {
    let suffix = sid.get(RANDOM_CHARS..)?;
    let bytes = URL_SAFE_NO_PAD.decode(suffix).ok()?;
    String::from_utf8(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn session_ids_are_unique_and_name_their_node() {
        let generator = SidGenerator::new("hub-2");
        let a = generator.session_id();
        let b = generator.session_id();
        assert_ne!(a, b);
        assert_eq!(owner_of(&a).as_deref(), Some("hub-2"));
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
    }

    #[test]
    fn socket_ids_name_their_node_but_not_their_session() {
        let sid = SidGenerator::new("hub-7").session_id();
        let a = socket_id(&sid);
        let b = socket_id(&sid);
        assert_ne!(a, b);
        assert_eq!(owner_of(&a).as_deref(), Some("hub-7"));
        assert_ne!(&a[..RANDOM_CHARS], &sid[..RANDOM_CHARS]);
        // A malformed session id still gives a random, well-formed socket id.
        assert_eq!(socket_id("short").len(), RANDOM_CHARS);
    }

    #[test]
    fn socket_ids_are_recognised() {
        let sid = SidGenerator::new("hub-0").session_id();
        assert!(is_socket_id(&socket_id(&sid)));
        assert!(is_socket_id(
            &SidGenerator::new("chat-7.peers").session_id()
        ));
        for room in [
            "lobby",
            "user:42",
            "team:acme:general",
            "",
            "0123456789abcdef",
            "a very long room name with spaces in it",
        ] {
            assert!(!is_socket_id(room), "{room}");
        }
    }

    proptest! {
        #[test]
        fn owner_round_trip(node in "[a-z0-9.-]{1,63}") {
            let sid = SidGenerator::new(&node).session_id();
            prop_assert_eq!(owner_of(&sid), Some(node));
        }

        #[test]
        fn owner_of_garbage_never_panics(s in ".{0,64}") {
            let _ = owner_of(&s);
        }
    }
}
