//! Private session ids and packet offsets.
//!
//! A private session id (`pid`) is what a client presents to get its session back, so it
//! is a secret: 128 random bits. It ends with `.` and the member id of the node that
//! created the session, where a node that does not hold it asks first.
//!
//! An offset names one delivered packet for the whole hub: the node that emits it tags it
//! (`<incarnation>-<counter>`, the incarnation random per process), so every node that
//! delivers the same broadcast knows it by the same name and a hand-over between nodes can
//! drop duplicates by offset.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rand::RngCore;

fn random(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::thread_rng().fill_bytes(&mut buf);
    URL_SAFE_NO_PAD.encode(buf)
}

/// A new private session id for a session created on `member` (empty on a single node).
pub fn new_pid(member: &str) -> Arc<str> {
    let mut pid = random(16);
    if !member.is_empty() {
        pid.push('.');
        pid.push_str(member);
    }
    Arc::from(pid)
}

/// The member that created the session `pid`, if it names one.
pub fn pid_member(pid: &str) -> Option<&str> {
    pid.split_once('.')
        .map(|(_, member)| member)
        .filter(|m| !m.is_empty())
}

/// Whether `text` has the shape of a pid (what a client may send; anything else is
/// ignored before any lookup).
pub fn is_pid(text: &str) -> bool {
    let (random, member) = text.split_once('.').unwrap_or((text, ""));
    random.len() == 22
        && random
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        && member.len() <= 253
        && member
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// Whether `text` has the shape of an offset.
pub fn is_offset(text: &str) -> bool {
    (3..=40).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Makes this process's offsets.
pub struct Offsets {
    incarnation: String,
    next: AtomicU64,
}

impl Default for Offsets {
    fn default() -> Self {
        Self {
            incarnation: random(6),
            next: AtomicU64::new(1),
        }
    }
}

impl Offsets {
    pub fn next(&self) -> Arc<str> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        Arc::from(format!("{}-{n:x}", self.incarnation))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pids_are_secret_and_name_their_node() {
        let a = new_pid("hub-1");
        let b = new_pid("hub-1");
        assert_ne!(a, b);
        assert!(is_pid(&a), "{a}");
        assert_eq!(pid_member(&a), Some("hub-1"));
        let single = new_pid("");
        assert!(is_pid(&single));
        assert_eq!(pid_member(&single), None);
        for bad in ["", "x", "a.b", &"x".repeat(300), "aaaaaaaaaaaaaaaaaaaaa\"."] {
            assert!(!is_pid(bad), "{bad}");
        }
    }

    #[test]
    fn offsets_are_unique_per_process_and_well_formed() {
        let (a, b) = (Offsets::default(), Offsets::default());
        let (x, y, z) = (a.next(), a.next(), b.next());
        assert_ne!(x, y);
        assert_ne!(
            x, z,
            "another process (incarnation) never repeats an offset"
        );
        assert!(is_offset(&x) && is_offset(&z));
        assert!(!is_offset("") && !is_offset("a\"b") && !is_offset(&"a".repeat(41)));
    }
}
