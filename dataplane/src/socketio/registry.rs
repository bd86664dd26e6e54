//! The live namespaces of one node: which names the configuration allows, and the namespace
//! of each name, created on first use (dynamic namespaces match a `*` pattern).

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::RwLock;

use super::handler::Handler;
use super::namespace::{FanoutCell, Namespace, NamespaceLimits};
use super::parking::Parking;
use super::recovery::Recovery;
use crate::auth::Authenticator;
use crate::config::Config;

/// Whether `name` matches a namespace pattern, where `*` matches any run of characters.
pub fn namespace_matches(pattern: &str, name: &str) -> bool {
    segments_match(pattern.split('*'), name)
}

/// Whether `text` is `segments` joined by wildcards (`*`, any run of characters): the first
/// segment is a prefix, the last a suffix, and each one between is found leftmost in what
/// remains. Linear time (leftmost is always safe, as a wildcard absorbs anything), unlike a
/// backtracking matcher, whose time grows exponentially with the number of wildcards.
/// Takes the segments as an iterator so that a pattern is matched without collecting them:
/// this runs for every CONNECT and every join.
pub fn segments_match<'a>(segments: impl IntoIterator<Item = &'a str>, text: &str) -> bool {
    let mut segments = segments.into_iter();
    let Some(first) = segments.next() else {
        return text.is_empty();
    };
    let Some(mut remaining) = text.strip_prefix(first) else {
        return false;
    };
    let Some(mut last) = segments.next() else {
        return remaining.is_empty();
    };
    for next in segments {
        // `last` lies between two wildcards.
        match remaining.find(last) {
            Some(at) => remaining = remaining.get(at.saturating_add(last.len())..).unwrap_or(""),
            None => return false,
        }
        last = next;
    }
    remaining.ends_with(last)
}

/// The namespaces of a hub and what every one of them shares.
pub(crate) struct Namespaces {
    pub config: Arc<Config>,
    pub handler: Arc<dyn Handler>,
    pub authenticator: Arc<dyn Authenticator>,
    namespaces: RwLock<HashMap<String, Arc<Namespace>>>,
    limits: NamespaceLimits,
    pub fanout: FanoutCell,
    /// Sockets to disconnect when their token expires (`auth.jwt.disconnectOnExpiry`).
    pub expiries: Arc<super::expiry::TokenExpiries>,
    /// Parked sockets and the delivery log, with connection state recovery on.
    pub parking: Option<Arc<Parking>>,
}

impl Namespaces {
    pub fn new(
        config: Arc<Config>,
        handler: Arc<dyn Handler>,
        authenticator: Arc<dyn Authenticator>,
        limits: NamespaceLimits,
    ) -> Self {
        Self {
            config,
            handler,
            authenticator,
            namespaces: RwLock::new(HashMap::new()),
            limits,
            fanout: FanoutCell::default(),
            expiries: Arc::default(),
            parking: None,
        }
        .with_recovery()
    }

    fn with_recovery(mut self) -> Self {
        let recovery = &self.config.socketio.connection_state_recovery;
        if recovery.enabled {
            // A client cut off silently is noticed within a ping interval and timeout: what it
            // missed until then must still be in the log.
            let e = &self.config.engine;
            let ping_window =
                std::time::Duration::from_millis(e.ping_interval.saturating_add(e.ping_timeout));
            self.parking = Some(Parking::new(Arc::new(Recovery::new(recovery, ping_window))));
        }
        self
    }

    pub fn namespace_allowed(&self, name: &str) -> bool {
        // With app links the application decides which namespaces exist.
        self.config.app_link.enabled()
            || self
                .config
                .socketio
                .namespaces
                .iter()
                .any(|ns| namespace_matches(&ns.name, name))
    }

    /// Whether `name` is configured as an exact name (not only matched by a pattern). Such
    /// a namespace lives as long as the hub; the others are dynamic.
    fn configured(&self, name: &str) -> bool {
        self.config
            .socketio
            .namespaces
            .iter()
            .any(|ns| ns.name == name)
    }

    /// The namespace of that name, created on first use; `None` when it would be one
    /// dynamic namespace too many (`limits.maxDynamicNamespaces`) even after removing the
    /// empty ones.
    pub fn namespace(&self, name: &str) -> Option<Arc<Namespace>> {
        self.with_namespace(name, Arc::clone)
    }

    /// Runs `f` on the namespace of that name (created on first use, as [`Self::namespace`])
    /// while no empty namespace can be removed: what adds a socket to a dynamic namespace,
    /// so that it never lands in one that was just dropped.
    pub fn with_namespace<R>(&self, name: &str, f: impl FnOnce(&Arc<Namespace>) -> R) -> Option<R> {
        {
            let map = self.namespaces.read();
            if let Some(ns) = map.get(name) {
                return Some(f(ns));
            }
        }
        let mut map = self.namespaces.write();
        if !map.contains_key(name) {
            let max = self.config.limits.max_dynamic_namespaces;
            let dynamic = |map: &HashMap<String, Arc<Namespace>>| {
                map.keys().filter(|n| !self.configured(n)).count()
            };
            if !self.configured(name) && dynamic(&map) >= max {
                // Empty dynamic namespaces hold nothing: drop them to make room.
                map.retain(|n, ns| self.configured(n) || ns.member_count() > 0);
                if dynamic(&map) >= max {
                    tracing::warn!(
                        namespace = name,
                        limit = max,
                        "dynamic namespace refused: limits.maxDynamicNamespaces reached"
                    );
                    return None;
                }
            }
            let ns = Namespace::new(
                name,
                self.limits,
                self.handler.clone(),
                self.fanout.clone(),
                self.parking.clone(),
            );
            map.insert(name.to_string(), ns);
        }
        map.get(name).map(f)
    }

    /// A namespace that exists (configured, or created by a client connecting to it).
    pub fn get(&self, name: &str) -> Option<Arc<Namespace>> {
        self.namespaces.read().get(name).cloned()
    }

    /// Every live namespace, sorted by name.
    pub fn all(&self) -> Vec<Arc<Namespace>> {
        let mut all: Vec<_> = self.namespaces.read().values().cloned().collect();
        all.sort_by(|a, b| a.name().cmp(b.name()));
        all
    }
}

#[cfg(test)]
mod tests {
    use super::namespace_matches as m;

    #[test]
    fn namespace_patterns() {
        assert!(m("/", "/"));
        assert!(!m("/", "/a"));
        assert!(m("/dyn-*", "/dyn-1"));
        assert!(m("/dyn-*", "/dyn-"));
        assert!(!m("/dyn-*", "/dy"));
        assert!(m("*", "/anything"));
        assert!(m("/t/*/chat", "/t/acme/chat"));
        assert!(!m("/t/*/chat", "/t/acme/chatx"));
        assert!(m("/a*b*c", "/aXbYc"));
        assert!(!m("/a*bc", "/abc/x"));
        assert!(m("/a*a", "/aa"));
        assert!(!m("/a*a", "/a"));
        assert!(m("**", ""));
    }

    /// Many wildcards against a long near-miss: a backtracking matcher never finishes.
    #[test]
    fn matching_is_linear() {
        let pattern = format!("{}b", "a*".repeat(64));
        let text = "a".repeat(100_000);
        let started = std::time::Instant::now();
        assert!(!m(&pattern, &text));
        assert!(m(&pattern, &format!("{text}b")));
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
    }
}
