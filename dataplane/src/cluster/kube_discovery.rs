//! Member discovery through the Kubernetes API: the EndpointSlices of the hub's headless peer
//! Service (`kubernetes.io/service-name=<service>`), listed then watched by kube-rs, and turned
//! into [`Members`] on each [`Discovery::members`] call.
//!
//! The pods need `get`, `list` and `watch` on `endpointslices` (`discovery.k8s.io`) in their
//! namespace; the operator's per-hub Role grants exactly that.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::pin::pin;
use std::sync::Arc;

use futures_util::{Stream, StreamExt};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointSlice};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::Api;

use super::membership::{Discovery, Members};

/// Name of the peer (gRPC) port in the peer Service, and so in its EndpointSlices.
pub const DEFAULT_PORT_NAME: &str = "peer";
/// Environment variable holding the pod's namespace (set by the operator's StatefulSet).
pub const NAMESPACE_ENV: &str = "ROOMCAST_POD_NAMESPACE";
/// Environment variable holding the headless peer Service's name (`<hub>-peers`).
pub const SERVICE_ENV: &str = "ROOMCAST_PEER_SERVICE";
/// The label the EndpointSlices of a Service carry.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Why EndpointSlice discovery cannot start or answer.
#[derive(Debug, thiserror::Error)]
pub enum KubeDiscoveryError {
    /// The first full list of EndpointSlices has not arrived: an empty answer would wrongly
    /// say that the cluster has no members.
    #[error("EndpointSlices of service {namespace}/{service} not synced yet")]
    NotSynced { namespace: String, service: String },
    #[error("environment variable {0} is not set")]
    MissingEnv(&'static str),
    #[error("{what} {value:?} is not a valid Kubernetes name")]
    BadName { what: &'static str, value: String },
    #[error("no Kubernetes client configuration (in-cluster or KUBECONFIG)")]
    Client(#[source] kube::Error),
    #[error("EndpointSlice discovery needs a running tokio runtime")]
    NoRuntime,
}

/// Members from the ready endpoints of a Service's EndpointSlices, kept current by a watch.
pub struct KubeDiscovery {
    store: Store<EndpointSlice>,
    /// Turns true once the first full list is in the store; the one source of truth for
    /// both `is_synced` and `synced`.
    synced: tokio::sync::watch::Receiver<bool>,
    namespace: String,
    service: String,
    port_name: String,
    watch: tokio::task::AbortHandle,
}

impl KubeDiscovery {
    /// Starts watching the EndpointSlices of `service` in `namespace`; members are addressed
    /// by the port named `port_name` (e.g. [`DEFAULT_PORT_NAME`]). Returns at once: until the
    /// first list has arrived, [`Discovery::members`] fails with
    /// [`KubeDiscoveryError::NotSynced`]. Watch errors (API server down, forbidden, ...) are
    /// logged and retried with backoff, for as long as the returned value lives.
    pub fn start(
        client: kube::Client,
        namespace: &str,
        service: &str,
        port_name: &str,
    ) -> Result<Arc<Self>, KubeDiscoveryError> {
        check_name("namespace", namespace)?;
        check_name("service", service)?;
        let runtime =
            tokio::runtime::Handle::try_current().map_err(|_| KubeDiscoveryError::NoRuntime)?;

        let api: Api<EndpointSlice> = Api::namespaced(client, namespace);
        let config = watcher::Config::default().labels(&format!("{SERVICE_NAME_LABEL}={service}"));
        let (store, writer) = reflector::store();
        let events = reflector::reflector(writer, watcher(api, config).default_backoff());
        let (synced_tx, synced) = tokio::sync::watch::channel(false);
        let watch = runtime
            .spawn(drive(
                events,
                synced_tx,
                namespace.to_string(),
                service.to_string(),
            ))
            .abort_handle();
        Ok(Arc::new(Self {
            store,
            synced,
            namespace: namespace.to_string(),
            service: service.to_string(),
            port_name: port_name.to_string(),
            watch,
        }))
    }

    /// [`KubeDiscovery::start`] for a hub pod run by the operator: namespace and Service from
    /// `ROOMCAST_POD_NAMESPACE` and `ROOMCAST_PEER_SERVICE`, port [`DEFAULT_PORT_NAME`], and
    /// the client from the in-cluster service account (or `KUBECONFIG` outside a cluster).
    pub async fn from_env() -> Result<Arc<Self>, KubeDiscoveryError> {
        let namespace = env(NAMESPACE_ENV)?;
        let service = env(SERVICE_ENV)?;
        let client = kube::Client::try_default()
            .await
            .map_err(KubeDiscoveryError::Client)?;
        Self::start(client, &namespace, &service, DEFAULT_PORT_NAME)
    }

    /// Whether the first full list has arrived.
    pub fn is_synced(&self) -> bool {
        *self.synced.borrow()
    }

    /// Waits until the first full list has arrived (callers bound it with a timeout).
    pub async fn synced(&self) {
        // Only fails if the watch task ended, which happens when `self` is dropped: not
        // while borrowed here.
        if self.synced.clone().wait_for(|s| *s).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    fn snapshot(&self) -> Result<Members, KubeDiscoveryError> {
        if !self.is_synced() {
            return Err(KubeDiscoveryError::NotSynced {
                namespace: self.namespace.clone(),
                service: self.service.clone(),
            });
        }
        let slices = self.store.state();
        Ok(members_from_slices(
            slices.iter().map(|s| s.as_ref()),
            &self.port_name,
        ))
    }
}

impl Drop for KubeDiscovery {
    fn drop(&mut self) {
        self.watch.abort();
    }
}

impl std::fmt::Debug for KubeDiscovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeDiscovery")
            .field("namespace", &self.namespace)
            .field("service", &self.service)
            .field("port_name", &self.port_name)
            .field("synced", &self.is_synced())
            .finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl Discovery for KubeDiscovery {
    async fn members(&self) -> anyhow::Result<Members> {
        Ok(self.snapshot()?)
    }
}

/// Polls the reflector stream (which is what feeds the store) and logs what happens.
async fn drive(
    events: impl Stream<Item = watcher::Result<watcher::Event<EndpointSlice>>>,
    synced: tokio::sync::watch::Sender<bool>,
    namespace: String,
    service: String,
) {
    let mut events = pin!(events);
    while let Some(event) = events.next().await {
        match event {
            Ok(watcher::Event::InitDone) => {
                // The reflector has already swapped the full list into the store.
                if !synced.send_replace(true) {
                    tracing::info!(%namespace, %service, "EndpointSlices synced");
                } else {
                    tracing::debug!(%namespace, %service, "EndpointSlices re-listed");
                }
            }
            Ok(event) => tracing::debug!(%namespace, %service, %event, "EndpointSlice event"),
            // The backoff wrapper delays the next attempt; the stream itself goes on. The
            // error's own text already includes its cause.
            Err(error) => tracing::warn!(
                %namespace,
                %service,
                %error,
                "EndpointSlice watch failed; retrying"
            ),
        }
    }
    tracing::warn!(%namespace, %service, "EndpointSlice watch ended");
}

/// The members that `slices` describe: one per ready or terminating endpoint with an
/// address of the slice's family and the port named `port_name` in its slice. The id is the
/// endpoint's `targetRef.name` (the pod name, which is the node id), else its `hostname`.
///
/// An endpoint listed in several slices counts once. If its copies disagree on the address
/// (dual-stack Services have one slice per family; a re-created pod may linger in an old slice
/// for a moment), the lowest address wins, IPv4 before IPv6, so that the answer does not depend
/// on the order the slices are given in.
pub fn members_from_slices<'a>(
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
    port_name: &str,
) -> Members {
    let mut found: BTreeMap<String, SocketAddr> = BTreeMap::new();
    for slice in slices {
        let Some(port) = slice_port(slice, port_name) else {
            continue;
        };
        let ipv6 = match slice.address_type.as_str() {
            "IPv4" => false,
            "IPv6" => true,
            _ => continue, // FQDN slices name no IP to connect to.
        };
        for endpoint in slice.endpoints.iter().flatten() {
            if !is_member(endpoint) {
                continue;
            }
            let Some(id) = endpoint_id(endpoint) else {
                continue;
            };
            let Some(ip) = endpoint
                .addresses
                .first()
                .and_then(|a| a.parse::<IpAddr>().ok())
                .filter(|ip| ip.is_ipv6() == ipv6)
            else {
                continue;
            };
            let addr = SocketAddr::new(ip, port);
            found
                .entry(id.to_string())
                .and_modify(|known| *known = (*known).min(addr))
                .or_insert(addr);
        }
    }
    let mut members = Members::new();
    for (id, addr) in found {
        members.insert(id, addr);
    }
    members
}

/// Ready (a missing `ready` means ready, per the API), or terminating. A pod that is not
/// ready yet, or failing its readiness, is not a member; a terminating pod is draining (its
/// readiness fails on purpose so clients go elsewhere) and stays a member until it is gone,
/// so its clients keep getting the others' broadcasts until it has closed their sessions.
fn is_member(endpoint: &Endpoint) -> bool {
    endpoint
        .conditions
        .as_ref()
        .is_none_or(|c| c.ready != Some(false) || c.terminating == Some(true))
}

fn endpoint_id(endpoint: &Endpoint) -> Option<&str> {
    let from_ref = endpoint.target_ref.as_ref().and_then(|r| r.name.as_deref());
    [from_ref, endpoint.hostname.as_deref()]
        .into_iter()
        .flatten()
        .find(|id| !id.is_empty())
}

/// The number of the port named `port_name` (an unnamed port matches `""`).
fn slice_port(slice: &EndpointSlice, port_name: &str) -> Option<u16> {
    slice
        .ports
        .iter()
        .flatten()
        .find(|p| p.name.as_deref().unwrap_or("") == port_name)
        .and_then(|p| p.port)
        .and_then(|p| u16::try_from(p).ok())
        .filter(|&p| p != 0)
}

fn env(name: &'static str) -> Result<String, KubeDiscoveryError> {
    std::env::var(name)
        .ok()
        .filter(|v| !v.trim().is_empty())
        .map(|v| v.trim().to_string())
        .ok_or(KubeDiscoveryError::MissingEnv(name))
}

/// A DNS label or subdomain (namespaces and Service names are labels); anything else would
/// also make the label selector mean something else.
fn check_name(what: &'static str, value: &str) -> Result<(), KubeDiscoveryError> {
    let valid = !value.is_empty()
        && value.len() <= 253
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && !value.starts_with(['-', '.'])
        && !value.ends_with(['-', '.']);
    if valid {
        Ok(())
    } else {
        Err(KubeDiscoveryError::BadName {
            what,
            value: value.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::ObjectReference;
    use k8s_openapi::api::discovery::v1::{EndpointConditions, EndpointPort};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    /// An endpoint of pod `pod` at `ip`, ready unless `conditions` say otherwise.
    fn endpoint(pod: &str, ip: &str, conditions: Option<EndpointConditions>) -> Endpoint {
        Endpoint {
            addresses: vec![ip.to_string()],
            conditions,
            target_ref: Some(ObjectReference {
                kind: Some("Pod".to_string()),
                name: Some(pod.to_string()),
                ..ObjectReference::default()
            }),
            ..Endpoint::default()
        }
    }

    fn conditions(ready: Option<bool>, terminating: Option<bool>) -> Option<EndpointConditions> {
        Some(EndpointConditions {
            ready,
            serving: ready,
            terminating,
        })
    }

    fn port(name: &str, number: i32) -> EndpointPort {
        EndpointPort {
            name: Some(name.to_string()),
            port: Some(number),
            protocol: Some("TCP".to_string()),
            ..EndpointPort::default()
        }
    }

    fn slice(
        name: &str,
        family: &str,
        ports: Vec<EndpointPort>,
        endpoints: Vec<Endpoint>,
    ) -> EndpointSlice {
        EndpointSlice {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                ..ObjectMeta::default()
            },
            address_type: family.to_string(),
            endpoints: Some(endpoints),
            ports: Some(ports),
        }
    }

    fn ports() -> Vec<EndpointPort> {
        vec![port("http", 3000), port("peer", 7000)]
    }

    /// A slice with the usual ports whose endpoints, `(pod, ip)`, are all ready.
    fn ready(name: &str, family: &str, endpoints: &[(&str, &str)]) -> EndpointSlice {
        let endpoints = endpoints
            .iter()
            .map(|(pod, ip)| endpoint(pod, ip, None))
            .collect();
        slice(name, family, ports(), endpoints)
    }

    fn members(slices: &[EndpointSlice]) -> Members {
        members_from_slices(slices, DEFAULT_PORT_NAME)
    }

    #[test]
    fn keeps_ready_and_draining_endpoints() {
        let s = slice(
            "hub-peers-a",
            "IPv4",
            ports(),
            vec![
                endpoint("hub-0", "10.0.0.1", conditions(Some(true), Some(false))),
                endpoint("hub-1", "10.0.0.2", conditions(Some(false), Some(false))),
                // Terminating (draining) endpoints stay until their pod is gone.
                endpoint("hub-2", "10.0.0.3", conditions(Some(true), Some(true))),
                endpoint("hub-5", "10.0.0.6", conditions(Some(false), Some(true))),
                // Missing conditions, or missing fields in them, mean ready and not terminating.
                endpoint("hub-3", "10.0.0.4", None),
                endpoint("hub-4", "10.0.0.5", conditions(None, None)),
            ],
        );
        let m = members(&[s]);
        assert_eq!(
            m.ids().collect::<Vec<_>>(),
            ["hub-0", "hub-2", "hub-3", "hub-4", "hub-5"]
        );
        assert_eq!(m.addr("hub-0"), Some("10.0.0.1:7000".parse().unwrap()));
        assert_eq!(m.addr("hub-4"), Some("10.0.0.5:7000".parse().unwrap()));
    }

    #[test]
    fn uses_the_named_port_and_skips_slices_without_it() {
        let with = ready("a", "IPv4", &[("hub-0", "10.0.0.1")]);
        let without = slice(
            "b",
            "IPv4",
            vec![port("http", 3000)],
            vec![endpoint("hub-1", "10.0.0.2", None)],
        );
        let no_number = slice(
            "c",
            "IPv4",
            vec![EndpointPort {
                name: Some("peer".to_string()),
                ..EndpointPort::default()
            }],
            vec![endpoint("hub-2", "10.0.0.3", None)],
        );
        let no_ports = EndpointSlice {
            ports: None,
            ..slice(
                "d",
                "IPv4",
                vec![],
                vec![endpoint("hub-3", "10.0.0.4", None)],
            )
        };
        let m = members(&[with.clone(), without, no_number, no_ports]);
        assert_eq!(m.ids().collect::<Vec<_>>(), ["hub-0"]);
        assert_eq!(
            members_from_slices(&[with], "http").addr("hub-0"),
            Some("10.0.0.1:3000".parse().unwrap())
        );
    }

    #[test]
    fn an_unnamed_port_matches_the_empty_name() {
        let unnamed = EndpointPort {
            name: None,
            port: Some(7000),
            ..EndpointPort::default()
        };
        let s = slice(
            "a",
            "IPv4",
            vec![unnamed],
            vec![endpoint("hub-0", "10.0.0.1", None)],
        );
        assert_eq!(members_from_slices([&s], "").len(), 1);
        assert!(members_from_slices([&s], "peer").is_empty());
    }

    #[test]
    fn merges_slices_and_counts_duplicates_once() {
        let a = ready(
            "hub-peers-a",
            "IPv4",
            &[("hub-0", "10.0.0.1"), ("hub-1", "10.0.0.2")],
        );
        let b = ready(
            "hub-peers-b",
            "IPv4",
            &[("hub-1", "10.0.0.2"), ("hub-2", "10.0.0.3")],
        );
        let m = members(&[a.clone(), b.clone()]);
        assert_eq!(m.ids().collect::<Vec<_>>(), ["hub-0", "hub-1", "hub-2"]);
        assert_eq!(m.addr("hub-1"), Some("10.0.0.2:7000".parse().unwrap()));
        // The order of the slices does not matter.
        assert_eq!(members(&[b, a]), m);
    }

    #[test]
    fn conflicting_copies_resolve_the_same_way_in_any_order() {
        let old = ready("a", "IPv4", &[("hub-0", "10.0.0.9")]);
        let new = ready("b", "IPv4", &[("hub-0", "10.0.0.1")]);
        let one = members(&[old.clone(), new.clone()]);
        assert_eq!(one, members(&[new, old]));
        assert_eq!(one.addr("hub-0"), Some("10.0.0.1:7000".parse().unwrap()));
    }

    #[test]
    fn reads_ipv6_and_prefers_ipv4_in_dual_stack() {
        let v6 = ready(
            "hub-peers-v6",
            "IPv6",
            &[("hub-0", "fd00::1"), ("hub-1", "fd00::2")],
        );
        let v4 = ready("hub-peers-v4", "IPv4", &[("hub-0", "10.0.0.1")]);
        let m = members(std::slice::from_ref(&v6));
        assert_eq!(m.addr("hub-1"), Some("[fd00::2]:7000".parse().unwrap()));
        let m = members(&[v6.clone(), v4.clone()]);
        assert_eq!(m.addr("hub-0"), Some("10.0.0.1:7000".parse().unwrap()));
        assert_eq!(m.addr("hub-1"), Some("[fd00::2]:7000".parse().unwrap()));
        assert_eq!(members(&[v4, v6]), m);
    }

    #[test]
    fn skips_addresses_that_do_not_fit_the_slice() {
        let s = slice(
            "a",
            "IPv4",
            ports(),
            vec![
                endpoint("hub-0", "fd00::1", None), // wrong family
                endpoint("hub-1", "not-an-ip", None),
                Endpoint {
                    addresses: vec![],
                    ..endpoint("hub-2", "", None)
                },
                // Only the first address counts (as for kube-proxy).
                Endpoint {
                    addresses: vec!["10.0.0.4".to_string(), "10.0.0.5".to_string()],
                    ..endpoint("hub-3", "", None)
                },
            ],
        );
        let fqdn = slice(
            "b",
            "FQDN",
            ports(),
            vec![endpoint("hub-4", "hub-4.example.com", None)],
        );
        let m = members(&[s, fqdn]);
        assert_eq!(m.ids().collect::<Vec<_>>(), ["hub-3"]);
        assert_eq!(m.addr("hub-3"), Some("10.0.0.4:7000".parse().unwrap()));
    }

    #[test]
    fn falls_back_to_hostname_without_target_ref() {
        let by_hostname = Endpoint {
            target_ref: None,
            hostname: Some("hub-0".to_string()),
            ..endpoint("", "10.0.0.1", None)
        };
        let nameless_ref = Endpoint {
            target_ref: Some(ObjectReference::default()),
            hostname: Some("hub-1".to_string()),
            ..endpoint("", "10.0.0.2", None)
        };
        let anonymous = Endpoint {
            target_ref: None,
            ..endpoint("", "10.0.0.3", None)
        };
        let empty_name = endpoint("", "10.0.0.4", None);
        let empty_name_with_hostname = Endpoint {
            hostname: Some("hub-5".to_string()),
            ..endpoint("", "10.0.0.5", None)
        };
        let s = slice(
            "a",
            "IPv4",
            ports(),
            vec![
                by_hostname,
                nameless_ref,
                anonymous,
                empty_name,
                empty_name_with_hostname,
            ],
        );
        let m = members(&[s]);
        assert_eq!(m.ids().collect::<Vec<_>>(), ["hub-0", "hub-1", "hub-5"]);
        assert_eq!(m.addr("hub-1"), Some("10.0.0.2:7000".parse().unwrap()));
    }

    #[test]
    fn no_slices_no_members() {
        assert!(members(&[]).is_empty());
        assert!(members(&[slice("a", "IPv4", ports(), vec![])]).is_empty());
    }

    #[test]
    fn checks_names() {
        assert!(check_name("service", "hub-peers").is_ok());
        assert!(check_name("namespace", "apps.v1").is_ok());
        for bad in ["", "-a", "a-", "Hub", "a,b", "a=b", "a b"] {
            assert!(
                matches!(
                    check_name("service", bad),
                    Err(KubeDiscoveryError::BadName { .. })
                ),
                "{bad:?}"
            );
        }
    }

    /// Before the first list (here: an API server that never answers), `members` is an
    /// error, not an empty set; the failing watch is retried, not fatal.
    #[tokio::test]
    async fn not_synced_is_an_error() {
        let config = kube::Config::new("http://127.0.0.1:1".parse().unwrap());
        let client = kube::Client::try_from(config).unwrap();
        let d = KubeDiscovery::start(client, "default", "hub-peers", "peer").unwrap();
        for _ in 0..3 {
            let err = d.members().await.unwrap_err();
            assert!(
                matches!(
                    err.downcast_ref::<KubeDiscoveryError>(),
                    Some(KubeDiscoveryError::NotSynced { .. })
                ),
                "{err:#}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert!(!d.is_synced());
        let timed_out =
            tokio::time::timeout(std::time::Duration::from_millis(100), d.synced()).await;
        assert!(timed_out.is_err());
        // What the node holds it as.
        let _as_discovery: Arc<dyn Discovery> = d;
    }

    #[test]
    fn start_needs_a_runtime_and_valid_names() {
        let config = kube::Config::new("http://127.0.0.1:1".parse().unwrap());
        // Building a client needs a runtime too; this one only serves construction.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let client = rt.block_on(async { kube::Client::try_from(config).unwrap() });
        assert!(matches!(
            KubeDiscovery::start(client.clone(), "default", "hub-peers", "peer"),
            Err(KubeDiscoveryError::NoRuntime)
        ));
        rt.block_on(async {
            assert!(matches!(
                KubeDiscovery::start(client, "default", "a,b=c", "peer"),
                Err(KubeDiscoveryError::BadName { .. })
            ));
        });
    }
}
