//! Re-reconciles hubs when a Secret they reference changes. The operator may not list or
//! watch Secrets (least privilege: the chart grants `get` by name only), so it polls: every
//! `--secret-poll-seconds`, one GET per distinct Secret the known hubs reference; when one's
//! `resourceVersion` differs from what the last reconcile saw (or it appeared or vanished),
//! the hubs of that controller are reconciled, which re-hashes the referenced data into the pod
//! template (crate::secret_refs) and rolls the pods when it changed.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::core::error_boundary::DeserializeGuard;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::Client;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::crd::SocketIOHub;

/// `resourceVersion` of each referenced Secret by name (`None`: not found).
pub type Versions = BTreeMap<String, Option<String>>;

/// What the reconciles saw, per hub (`namespace/name`).
#[derive(Debug, Default)]
pub struct Seen {
    hubs: Mutex<HashMap<(String, String), Versions>>,
}

impl Seen {
    /// Records the Secret versions a reconcile of `ns/hub` used (none: the hub is forgotten).
    pub fn record(&self, ns: &str, hub: &str, versions: Versions) {
        let mut hubs = match self.hubs.lock() {
            Ok(h) => h,
            Err(poisoned) => poisoned.into_inner(),
        };
        let key = (ns.to_string(), hub.to_string());
        if versions.is_empty() {
            hubs.remove(&key);
        } else {
            hubs.insert(key, versions);
        }
    }

    fn snapshot(&self) -> Vec<((String, String), Versions)> {
        let hubs = match self.hubs.lock() {
            Ok(h) => h,
            Err(poisoned) => poisoned.into_inner(),
        };
        hubs.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }
}

/// The version of a fetched Secret, as recorded in [`Versions`].
pub fn version_of(secret: Option<&Secret>) -> Option<String> {
    secret.map(|s| s.metadata.resource_version.clone().unwrap_or_default())
}

/// Whether any Secret of `seen` is now at another version (`now` lacks the ones not fetched,
/// which count as unchanged).
pub fn changed(
    seen: &Versions,
    now: &BTreeMap<(String, String), Option<String>>,
    ns: &str,
) -> bool {
    seen.iter().any(|(name, version)| {
        now.get(&(ns.to_string(), name.clone()))
            .is_some_and(|v| v != version)
    })
}

/// Polls the Secrets of the hubs of one controller (`namespace`: `None` for all) until the
/// receiver is dropped; sends `()` when that controller's hubs should be reconciled.
pub async fn run(
    client: Client,
    seen: std::sync::Arc<Seen>,
    store: Store<DeserializeGuard<SocketIOHub>>,
    namespace: Option<String>,
    interval: Duration,
    trigger: mpsc::Sender<()>,
) {
    loop {
        tokio::time::sleep(interval).await;
        if trigger.is_closed() {
            return;
        }
        let mine: Vec<_> = seen
            .snapshot()
            .into_iter()
            .filter(|((ns, _), _)| namespace.as_deref().is_none_or(|n| n == ns))
            .collect();
        let mut now: BTreeMap<(String, String), Option<String>> = BTreeMap::new();
        let mut any = false;
        for ((ns, hub), versions) in mine {
            if store.get(&ObjectRef::new(&hub).within(&ns)).is_none() {
                // Deleted (or not yet listed): no reconcile will record it again.
                if store.is_empty() {
                    continue;
                }
                seen.record(&ns, &hub, Versions::new());
                continue;
            }
            let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
            for name in versions.keys() {
                let key = (ns.clone(), name.clone());
                if now.contains_key(&key) {
                    continue;
                }
                match secrets.get_opt(name).await {
                    Ok(s) => {
                        now.insert(key, version_of(s.as_ref()));
                    }
                    Err(e) => {
                        warn!(namespace = %ns, secret = %name, error = %e, "polling a referenced Secret failed")
                    }
                }
            }
            if changed(&versions, &now, &ns) {
                info!(namespace = %ns, hub = %hub, "a referenced Secret changed: reconciling");
                let updated = versions
                    .keys()
                    .map(|n| {
                        let v = now
                            .get(&(ns.clone(), n.clone()))
                            .cloned()
                            .unwrap_or_else(|| versions.get(n).cloned().flatten());
                        (n.clone(), v)
                    })
                    .collect();
                seen.record(&ns, &hub, updated);
                any = true;
            }
        }
        debug!(
            secrets = now.len(),
            changed = any,
            "referenced Secrets polled"
        );
        if any && trigger.send(()).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_version_an_appearance_or_a_removal_is_a_change() {
        let seen = Versions::from([
            ("jwt".to_string(), Some("5".to_string())),
            ("gone".to_string(), None),
        ]);
        let at = |jwt: Option<&str>, gone: Option<&str>| {
            BTreeMap::from([
                (
                    ("apps".to_string(), "jwt".to_string()),
                    jwt.map(str::to_string),
                ),
                (
                    ("apps".to_string(), "gone".to_string()),
                    gone.map(str::to_string),
                ),
            ])
        };
        assert!(!changed(&seen, &at(Some("5"), None), "apps"));
        assert!(changed(&seen, &at(Some("6"), None), "apps"), "edited");
        assert!(changed(&seen, &at(None, None), "apps"), "deleted");
        assert!(changed(&seen, &at(Some("5"), Some("1")), "apps"), "created");
        // Another namespace's Secrets of the same name, or unfetched ones, are no change.
        assert!(!changed(&seen, &at(Some("6"), Some("1")), "other"));
        assert!(!changed(&seen, &BTreeMap::new(), "apps"));
    }

    #[test]
    fn a_hub_without_references_is_forgotten() {
        let s = Seen::default();
        s.record("apps", "chat", Versions::from([("jwt".to_string(), None)]));
        assert_eq!(s.snapshot().len(), 1);
        s.record("apps", "chat", Versions::new());
        assert!(s.snapshot().is_empty());
    }
}
