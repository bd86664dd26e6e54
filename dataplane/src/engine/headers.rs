//! The handshake's request headers, kept for a session's whole life in one allocation.
//!
//! A session keeps its handshake headers (`socket.handshake.headers`, webhooks, the token
//! in `Authorization`), so they cost memory per connection for as long as it is open. An
//! `http::HeaderMap` costs a table plus an allocation per value: about 900 bytes for the
//! five headers of a minimal WebSocket client, a fifth of an idle connection. Here the
//! names and values sit back to back in one boxed slice, each prefixed by its lengths, and
//! are found by a scan: few, short, and read rarely (at connect, by the management API).

use std::fmt;

use http::HeaderMap;

/// Request headers in arrival order; names lowercase (as `http` parses them), values as
/// sent (not necessarily UTF-8). Cloning copies one allocation.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Headers {
    /// Per header: name length (u16 LE), value length (u32 LE), name, value.
    bytes: Box<[u8]>,
}

const NAME_LEN: usize = 2;
const VALUE_LEN: usize = 4;

impl Headers {
    /// A copy of `map` that owns its bytes (hyper's parsed values share the connection's
    /// read buffer: keeping them would keep that whole buffer alive). A header whose name or
    /// value does not fit the length prefixes is left out; the router bounds the total far
    /// below that (`limits.maxHandshakeHeaderBytes`).
    pub fn from_map(map: &HeaderMap) -> Self {
        // `HeaderMap`'s iterator cannot be cloned to size the copy first.
        let pairs: Vec<(&str, &[u8])> = map
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_bytes()))
            .collect();
        Self::from_pairs(pairs)
    }

    /// Headers from (name, value) pairs; names are lowercased.
    pub fn from_pairs<'a, I>(pairs: I) -> Self
    where
        I: IntoIterator<Item = (&'a str, &'a [u8])>,
        I::IntoIter: Clone,
    {
        let fits = |(name, value): &(&str, &[u8])| {
            u16::try_from(name.len()).is_ok() && u32::try_from(value.len()).is_ok()
        };
        let pairs = pairs.into_iter().filter(fits);
        // Sized first, so the bytes are written into one allocation of the final size (no
        // growth and no shrink: one `malloc` per handshake instead of about a dozen calls).
        let total = pairs.clone().fold(0usize, |sum, (name, value)| {
            sum.saturating_add(NAME_LEN + VALUE_LEN + name.len() + value.len())
        });
        let mut bytes = Vec::with_capacity(total);
        for (name, value) in pairs {
            // Checked by `fits`: the casts cannot truncate.
            bytes.extend_from_slice(&(name.len() as u16).to_le_bytes());
            bytes.extend_from_slice(&(value.len() as u32).to_le_bytes());
            bytes.extend(name.bytes().map(|b| b.to_ascii_lowercase()));
            bytes.extend_from_slice(value);
        }
        Self {
            bytes: bytes.into_boxed_slice(), // shrunk to fit: kept for the session's life
        }
    }

    /// Every header in arrival order (a repeated name appears once per value).
    pub fn iter(&self) -> Iter<'_> {
        Iter { rest: &self.bytes }
    }

    /// The first value of header `name` (case-insensitive).
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// The first value of `name` when it is visible ASCII (what `HeaderValue::to_str` accepts).
    pub fn get_str(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(visible_ascii)
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

/// `value` as text when every byte is visible ASCII or a tab, as `http` requires of `to_str`.
pub fn visible_ascii(value: &[u8]) -> Option<&str> {
    value
        .iter()
        .all(|&b| b == b'\t' || (0x20..0x7f).contains(&b))
        .then(|| std::str::from_utf8(value).ok())
        .flatten()
}

/// Iterator over (name, value); see [`Headers::iter`].
pub struct Iter<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Iter<'a> {
    type Item = (&'a str, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let (lens, rest) = self.rest.split_at_checked(NAME_LEN + VALUE_LEN)?;
        let name_len = u16::from_le_bytes([lens[0], lens[1]]) as usize;
        let value_len = u32::from_le_bytes([lens[2], lens[3], lens[4], lens[5]]) as usize;
        let (name, rest) = rest.split_at_checked(name_len)?;
        let (value, rest) = rest.split_at_checked(value_len)?;
        self.rest = rest;
        // Names come from `&str` (lowercased ASCII stays UTF-8), so this never fails.
        Some((std::str::from_utf8(name).ok()?, value))
    }
}

/// Names only: values may be secrets (cookies, tokens).
impl fmt::Debug for Headers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter().map(|(n, _)| n)).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::{AUTHORIZATION, COOKIE, HOST};
    use http::HeaderValue;

    #[test]
    fn keeps_every_header_in_order_and_finds_by_name() {
        let mut map = HeaderMap::new();
        map.insert(HOST, HeaderValue::from_static("example.test"));
        map.append(COOKIE, HeaderValue::from_static("a=1"));
        map.append(COOKIE, HeaderValue::from_static("b=2"));
        map.insert(AUTHORIZATION, HeaderValue::from_static("Bearer t"));
        map.insert("x-bin", HeaderValue::from_bytes(b"\xffraw").unwrap());
        let headers = Headers::from_map(&map);
        let all: Vec<_> = headers.iter().collect();
        assert_eq!(all.len(), 5);
        assert_eq!(
            headers.get("Cookie"),
            Some(&b"a=1"[..]),
            "first value, any case"
        );
        assert_eq!(headers.get_str("authorization"), Some("Bearer t"));
        assert_eq!(headers.get("x-bin"), Some(&b"\xffraw"[..]));
        assert_eq!(headers.get_str("x-bin"), None, "not visible ASCII");
        assert_eq!(headers.get("missing"), None);
        let cookies: Vec<_> = headers.iter().filter(|(n, _)| *n == "cookie").collect();
        assert_eq!(cookies, [("cookie", &b"a=1"[..]), ("cookie", &b"b=2"[..])]);
        assert!(
            !format!("{headers:?}").contains("Bearer"),
            "Debug shows names only"
        );
    }

    #[test]
    fn pairs_are_lowercased_and_empty_is_empty() {
        let headers = Headers::from_pairs([("X-Token", &b"v"[..]), ("", &b""[..])]);
        assert_eq!(headers.iter().next(), Some(("x-token", &b"v"[..])));
        assert_eq!(headers.iter().count(), 2);
        assert!(Headers::default().is_empty());
        assert_eq!(Headers::default().iter().count(), 0);
    }

    #[test]
    fn a_value_too_long_for_its_prefix_is_left_out() {
        let long = "n".repeat(usize::from(u16::MAX) + 1);
        let headers = Headers::from_pairs([(long.as_str(), &b"v"[..]), ("ok", &b"1"[..])]);
        assert_eq!(headers.iter().collect::<Vec<_>>(), [("ok", &b"1"[..])]);
    }

    #[test]
    fn visible_ascii_matches_http() {
        for value in [
            &b"plain text"[..],
            b"tab\there",
            b"\x7f",
            b"caf\xc3\xa9",
            b"",
        ] {
            let ours = visible_ascii(value).is_some();
            let http = HeaderValue::from_bytes(value)
                .map(|v| v.to_str().is_ok())
                .unwrap_or(false);
            assert_eq!(ours, http, "{value:?}");
        }
    }
}
