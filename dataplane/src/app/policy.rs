//! Client room policies: which rooms a client may join, leave and emit to by itself.
//!
//! A pattern is literal text with `*` (any run of characters) and `{claim}` placeholders
//! that take the value of a claim of the client's verified token (`{sub}`, `{org.id}`).
//! Substituted values are literal: a claim containing `*` matches only itself.

use serde_json::Value;

use crate::config::PolicyConfig;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Literal(String),
    Wildcard,
}

/// A claim's value as room-name text, if it is a string or a number.
fn claim_text(claims: Option<&Value>, path: &str) -> Option<String> {
    let mut value = claims?;
    for key in path.split('.') {
        value = value.get(key)?;
    }
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Expands a pattern into tokens; `None` when it references a claim the client lacks
/// (the pattern then grants nothing).
fn tokens(pattern: &str, claims: Option<&Value>) -> Option<Vec<Token>> {
    let mut out = Vec::new();
    let mut literal = String::new();
    let mut rest = pattern;
    while let Some(c) = rest.chars().next() {
        match c {
            '*' => {
                if !literal.is_empty() {
                    out.push(Token::Literal(std::mem::take(&mut literal)));
                }
                out.push(Token::Wildcard);
                rest = &rest[1..];
            }
            '{' => match rest.find('}') {
                Some(end) => {
                    literal.push_str(&claim_text(claims, &rest[1..end])?);
                    rest = &rest[end + 1..];
                }
                None => {
                    literal.push('{');
                    rest = &rest[1..];
                }
            },
            c => {
                literal.push(c);
                rest = &rest[c.len_utf8()..];
            }
        }
    }
    if !literal.is_empty() {
        out.push(Token::Literal(literal));
    }
    Some(out)
}

/// Matches `text` against literal segments separated by wildcards, in linear time: the
/// first segment is a prefix, the last a suffix, and each one between is found leftmost
/// (taking the leftmost match never loses one, since a wildcard absorbs anything). A
/// backtracking matcher would take time exponential in the number of wildcards.
fn matches_tokens(tokens: &[Token], text: &str) -> bool {
    let mut segments: Vec<&str> = vec![""];
    for token in tokens {
        match token {
            Token::Literal(lit) => {
                if let Some(last) = segments.last_mut() {
                    *last = lit.as_str();
                }
            }
            Token::Wildcard => segments.push(""),
        }
    }
    crate::socketio::segments_match(segments, text)
}

/// Whether `room` matches `pattern` for a client with these claims.
pub fn pattern_allows(pattern: &str, room: &str, claims: Option<&Value>) -> bool {
    if !pattern.contains('{') {
        // No claims to substitute: the segments are the pattern's own (nothing allocated
        // per join for the common `*` or `chat-*`).
        return crate::socketio::segments_match(pattern.split('*'), room);
    }
    tokens(pattern, claims).is_some_and(|t| matches_tokens(&t, room))
}

/// Whether any of the patterns allows `room`.
pub fn any_allows(patterns: &[String], room: &str, claims: Option<&Value>) -> bool {
    patterns.iter().any(|p| pattern_allows(p, room, claims))
}

/// Whether clients are refused `room` whatever the policies say: a room named like a
/// socket id would give its members that socket's private emits (`to(socket.id)`).
pub fn reserved_room(room: &str) -> bool {
    crate::engine::sid::is_socket_id(room)
}

/// The decisions policies make for one client.
pub struct Policy<'a> {
    pub config: &'a PolicyConfig,
    pub claims: Option<&'a Value>,
}

impl Policy<'_> {
    pub fn may_join(&self, room: &str) -> bool {
        any_allows(&self.config.join, room, self.claims)
    }

    /// `in_room` tells whether the client is in the room already.
    pub fn may_emit(&self, room: &str, in_room: bool) -> bool {
        (self.config.emit_to_joined && in_room) || any_allows(&self.config.emit, room, self.claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    /// Patterns with many wildcards against long rooms: linear, not exponential.
    #[test]
    fn wildcards_do_not_backtrack() {
        let pattern = format!("{}b", "a*".repeat(40));
        let room = "a".repeat(10_000);
        assert!(!pattern_allows(&pattern, &room, None));
        assert!(pattern_allows(&pattern, &format!("{room}b"), None));
    }

    #[test]
    fn literal_and_wildcards() {
        assert!(pattern_allows("lobby", "lobby", None));
        assert!(!pattern_allows("lobby", "lobby2", None));
        assert!(pattern_allows("chat:*", "chat:general", None));
        assert!(pattern_allows("*", "", None));
        assert!(pattern_allows("a*c*e", "abcde", None));
        assert!(!pattern_allows("a*c*e", "abcdf", None));
    }

    #[test]
    fn claim_substitution() {
        let claims = json!({ "sub": "alice", "org": { "id": 7 }, "evil": "*" });
        let c = Some(&claims);
        assert!(pattern_allows("user:{sub}", "user:alice", c));
        assert!(!pattern_allows("user:{sub}", "user:bob", c));
        assert!(pattern_allows("org:{org.id}:*", "org:7:ops", c));
        assert!(!pattern_allows("user:{missing}", "user:", c));
        assert!(!pattern_allows("user:{sub}", "user:alice", None));
        // A claim value is literal, never a wildcard.
        assert!(pattern_allows("x:{evil}", "x:*", c));
        assert!(!pattern_allows("x:{evil}", "x:anything", c));
    }

    #[test]
    fn emit_rules() {
        let config = PolicyConfig {
            join: vec!["room:*".into()],
            emit: vec!["announce".into()],
            emit_to_joined: true,
        };
        let p = Policy {
            config: &config,
            claims: None,
        };
        assert!(p.may_join("room:1"));
        assert!(!p.may_join("announce"));
        assert!(p.may_emit("room:1", true));
        assert!(!p.may_emit("room:1", false));
        assert!(p.may_emit("announce", false));
    }

    proptest! {
        #[test]
        fn star_matches_everything(room in ".{0,30}") {
            prop_assert!(pattern_allows("*", &room, None));
        }

        /// The linear matcher agrees with a backtracking one (the obvious definition).
        #[test]
        fn agrees_with_backtracking(pattern in "[ab*]{0,8}", room in "[ab]{0,10}") {
            fn backtrack(p: &[char], t: &[char]) -> bool {
                match p.split_first() {
                    None => t.is_empty(),
                    Some(('*', rest)) => (0..=t.len()).any(|i| backtrack(rest, &t[i..])),
                    Some((c, rest)) => t.first() == Some(c) && backtrack(rest, &t[1..]),
                }
            }
            let p: Vec<char> = pattern.chars().collect();
            let t: Vec<char> = room.chars().collect();
            prop_assert_eq!(pattern_allows(&pattern, &room, None), backtrack(&p, &t));
        }

        #[test]
        fn never_panics(pattern in ".{0,20}", room in ".{0,20}") {
            let claims = json!({ "sub": "x" });
            let _ = pattern_allows(&pattern, &room, Some(&claims));
        }
    }
}
