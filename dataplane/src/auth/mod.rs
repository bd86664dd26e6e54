//! Client authentication at the Socket.IO handshake.
//!
//! An [`Authenticator`] runs before the application's connect decision, for every namespace
//! a client joins. What it returns (the verified claims) is attached to the socket and passed
//! upstream; a failure answers CONNECT_ERROR with `message` and `data.reason`.
//!
//! This file holds what every scheme shares (the trait, the failure, where the token is
//! read from); JWT verification is split by job, each module depending only on the ones
//! before it: `keys` (algorithms, PEM and JWKS key parsing, key selection; pure),
//! `jwks` (the JWKS cache and its fetching), `verify` ([`JwtAuthenticator`]: the rules).

use serde_json::Value;

use crate::engine::HandshakeInfo;

pub mod bearer;
mod jwks;
mod keys;
#[cfg(test)]
mod testkit;
pub mod verify;

pub use verify::{reason, JwtAuthenticator};

/// A refused handshake: sent to the client as CONNECT_ERROR `{message, data: {reason}}`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} ({reason})")]
pub struct AuthFailure {
    /// Human-readable, e.g. "authentication failed".
    pub message: String,
    /// Machine-readable, e.g. `token_expired`, `token_missing`, `bad_audience`.
    pub reason: String,
}

impl AuthFailure {
    pub fn new(message: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            reason: reason.into(),
        }
    }
}

/// Verifies a client joining `namespace`; `auth` is the CONNECT packet's auth object.
/// Returns the verified claims (`None` when the scheme has none).
#[async_trait::async_trait]
pub trait Authenticator: Send + Sync {
    async fn authenticate(
        &self,
        namespace: &str,
        auth: &Value,
        handshake: &HandshakeInfo,
    ) -> Result<Option<Value>, AuthFailure>;
}

/// Lets everyone in (the default).
#[derive(Debug, Default)]
pub struct NoAuth;

#[async_trait::async_trait]
impl Authenticator for NoAuth {
    async fn authenticate(
        &self,
        _namespace: &str,
        _auth: &Value,
        _handshake: &HandshakeInfo,
    ) -> Result<Option<Value>, AuthFailure> {
        Ok(None)
    }
}

/// The client's token: `auth.token`, else the `access_token` query parameter, else an
/// `Authorization: Bearer` header.
pub fn token_from(auth: &Value, handshake: &HandshakeInfo) -> Option<String> {
    if let Some(token) = auth.get("token").and_then(Value::as_str) {
        return Some(token.to_string());
    }
    for pair in handshake.query().split('&') {
        if let Some(value) = pair.strip_prefix("access_token=") {
            return Some(percent_decode(value));
        }
    }
    let header = handshake.headers.get_str("authorization")?;
    let (scheme, token) = header.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_string())
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn handshake(query: &str, authorization: Option<&str>) -> HandshakeInfo {
        let headers = authorization.map(|a| ("Authorization", a.as_bytes()));
        HandshakeInfo {
            headers: crate::engine::Headers::from_pairs(headers),
            address: ([127, 0, 0, 1], 1).into(),
            url: format!("/socket.io/?{query}"),
            time: std::time::SystemTime::now(),
            secure: false,
        }
    }

    #[test]
    fn token_sources_in_order() {
        let hs = handshake("EIO=4&access_token=q%2Ex", Some("Bearer h"));
        assert_eq!(
            token_from(&json!({"token": "a"}), &hs).as_deref(),
            Some("a")
        );
        assert_eq!(token_from(&json!({}), &hs).as_deref(), Some("q.x"));
        let hs = handshake("EIO=4", Some("Bearer h"));
        assert_eq!(token_from(&json!({}), &hs).as_deref(), Some("h"));
        let hs = handshake("EIO=4", Some("Basic h"));
        assert_eq!(token_from(&json!({}), &hs), None);
    }

    #[test]
    fn percent_decoding_is_total() {
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("%zz"), "%zz");
        assert_eq!(percent_decode("%41+b"), "A b");
    }
}
