//! The live namespaces of one node: which names the configuration allows, and the namespace
//! of each name, created on first use (dynamic namespaces match a `*` pattern).

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::RwLock;

use super::handler::Handler;
use super::namespace::{FanoutCell, Namespace, NamespaceLimits};
use crate::auth::Authenticator;
use crate::config::Config;

/// Whether `name` matches a namespace pattern, where `*` matches any run of characters.
pub fn namespace_matches(pattern: &str, name: &str) -> bool {
    let Some((head, rest)) = pattern.split_once('*') else {
        return pattern == name;
    };
    let Some(mut remaining) = name.strip_prefix(head) else {
        return false;
    };
    let mut parts: Vec<&str> = rest.split('*').collect();
    let tail = parts.pop().unwrap_or("");
    for part in parts {
        match remaining.find(part) {
            Some(at) => remaining = &remaining[at + part.len()..],
            None => return false,
        }
    }
    remaining.len() >= tail.len() && remaining.ends_with(tail)
}

/// The namespaces of a hub and what every one of them shares.
pub(crate) struct Namespaces {
    pub config: Arc<Config>,
    pub handler: Arc<dyn Handler>,
    pub authenticator: Arc<dyn Authenticator>,
    namespaces: RwLock<HashMap<String, Arc<Namespace>>>,
    limits: NamespaceLimits,
    pub fanout: FanoutCell,
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
        }
    }

    pub fn namespace_allowed(&self, name: &str) -> bool {
        self.config
            .socketio
            .namespaces
            .iter()
            .any(|ns| namespace_matches(&ns.name, name))
    }

    /// The namespace of that name, created on first use.
    pub fn namespace(&self, name: &str) -> Arc<Namespace> {
        if let Some(ns) = self.namespaces.read().get(name) {
            return ns.clone();
        }
        self.namespaces
            .write()
            .entry(name.to_string())
            .or_insert_with(|| {
                Namespace::new(name, self.limits, self.handler.clone(), self.fanout.clone())
            })
            .clone()
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
    }
}
