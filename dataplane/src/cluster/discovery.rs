//! Member sources that change at run time, and the loop that applies what they say to the
//! mesh.
//!
//! [`DnsDiscovery`] reads the DNS of a Kubernetes headless Service: an SRV lookup lists one
//! target per ready pod (`hub-0.hub-peers.default.svc.cluster.local`), whose first label is
//! the pod name, i.e. the member id. [`run`] asks a [`Discovery`] every interval and hands
//! each good answer to [`Mesh::set_members`]; a failed or empty answer keeps the last good
//! set (a DNS outage must not empty the ring).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::config::{NameServerConfigGroup, ResolverConfig, ResolverOpts};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::{Name, TokioResolver};

use super::kube_discovery::KubeDiscovery;
use super::membership::{Discovery, FileDiscovery, Members, StaticDiscovery};
use super::mesh::Mesh;
use crate::config::{DnsConfig, MemberSource};

/// Longest wait for one answer of a source; past it the round counts as failed.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(10);

/// A source that cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("cannot read the system DNS configuration: {0}")]
    SystemConfig(#[source] hickory_resolver::ResolveError),
    #[error("Kubernetes discovery: {0}")]
    Kubernetes(#[from] super::kube_discovery::KubeDiscoveryError),
    #[error(
        "Kubernetes discovery: no namespace given, and neither {env} nor {file} says this pod's"
    )]
    NoNamespace {
        env: &'static str,
        file: &'static str,
    },
}

/// Where a pod's service account says its namespace is.
const SERVICE_ACCOUNT_NAMESPACE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

/// Members from an SRV lookup: each target is a member named by its first label, at the
/// target's address (A or AAAA) and the SRV port.
pub struct DnsDiscovery {
    name: String,
    resolver: TokioResolver,
}

impl DnsDiscovery {
    /// A source asking `config.nameserver` (UDP, then TCP for long answers), or the
    /// servers of `/etc/resolv.conf` (with its search list) when it is unset.
    pub fn new(config: &DnsConfig) -> Result<Self, DiscoveryError> {
        let provider = TokioConnectionProvider::default();
        let mut builder = match config.nameserver {
            Some(server) => {
                let servers =
                    NameServerConfigGroup::from_ips_clear(&[server.ip()], server.port(), true);
                TokioResolver::builder_with_config(
                    ResolverConfig::from_parts(None, Vec::new(), servers),
                    provider,
                )
                .with_options(ResolverOpts::default())
            }
            None => TokioResolver::builder(provider).map_err(DiscoveryError::SystemConfig)?,
        };
        // Every round asks the server again (see `members`); a short timeout keeps a round
        // well inside the discovery interval.
        let options = builder.options_mut();
        options.timeout = Duration::from_secs(2);
        options.attempts = 2;
        Ok(Self {
            name: config.name.clone(),
            resolver: builder.build(),
        })
    }

    /// The address of one SRV target; `None` (logged) when it has none.
    async fn address(&self, target: &Name) -> Option<IpAddr> {
        match self.resolver.lookup_ip(target.clone()).await {
            Ok(ips) => {
                let ips: Vec<IpAddr> = ips.iter().collect();
                // Several addresses: the smallest, so every node picks the same one.
                ips.into_iter().min()
            }
            Err(error) => {
                tracing::warn!(%target, %error, "SRV target without an address; left out");
                None
            }
        }
    }
}

/// The member id of an SRV target: its first label (`hub-0` of
/// `hub-0.hub-peers.default.svc.cluster.local.`), lowercased as DNS names compare.
pub fn member_id(target: &Name) -> Option<String> {
    let label = target.iter().next()?;
    let id = std::str::from_utf8(label).ok()?.to_ascii_lowercase();
    (!id.is_empty()).then_some(id)
}

#[async_trait::async_trait]
impl Discovery for DnsDiscovery {
    async fn members(&self) -> anyhow::Result<Members> {
        // Kubernetes DNS answers with short TTLs anyway; asking afresh each round means a
        // pod that became ready is seen within one interval.
        self.resolver.clear_cache();
        let srv = self
            .resolver
            .srv_lookup(self.name.as_str())
            .await
            .map_err(|e| anyhow::anyhow!("SRV lookup of {}: {e}", self.name))?;
        // One entry per member id; a pod listed twice (several ports) keeps its first.
        let mut targets: BTreeMap<String, (Name, u16)> = BTreeMap::new();
        for record in srv.iter() {
            match member_id(record.target()) {
                Some(id) => {
                    targets
                        .entry(id)
                        .or_insert_with(|| (record.target().clone(), record.port()));
                }
                None => {
                    tracing::warn!(target = %record.target(), "SRV target without a usable first label; left out")
                }
            }
        }
        let addresses =
            futures_util::future::join_all(targets.iter().map(|(id, (target, port))| async move {
                let ip = self.address(target).await?;
                Some((id.clone(), SocketAddr::new(ip, *port)))
            }))
            .await;
        let mut members = Members::new();
        for (id, addr) in addresses.into_iter().flatten() {
            members.insert(id, addr);
        }
        Ok(members)
    }
}

/// The [`Discovery`] of a configured source.
pub async fn from_source(source: &MemberSource) -> Result<Arc<dyn Discovery>, DiscoveryError> {
    Ok(match source {
        MemberSource::Static(members) => Arc::new(StaticDiscovery(members.clone())),
        MemberSource::File(path) => Arc::new(FileDiscovery(path.clone())),
        MemberSource::Dns(config) => Arc::new(DnsDiscovery::new(config)?),
        MemberSource::Kubernetes(config) => {
            let namespace = match &config.namespace {
                Some(ns) => ns.clone(),
                None => this_pods_namespace()?,
            };
            let client = kube::Client::try_default()
                .await
                .map_err(super::kube_discovery::KubeDiscoveryError::Client)?;
            KubeDiscovery::start(client, &namespace, &config.service, &config.port_name)?
        }
    })
}

/// This pod's namespace: the operator's env variable, else the service account's file.
pub(crate) fn this_pods_namespace() -> Result<String, DiscoveryError> {
    let from_env = std::env::var(super::kube_discovery::NAMESPACE_ENV)
        .ok()
        .filter(|v| !v.trim().is_empty());
    let from_file = || {
        std::fs::read_to_string(SERVICE_ACCOUNT_NAMESPACE)
            .ok()
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    from_env
        .or_else(from_file)
        .ok_or(DiscoveryError::NoNamespace {
            env: super::kube_discovery::NAMESPACE_ENV,
            file: SERVICE_ACCOUNT_NAMESPACE,
        })
}

/// One answer of a source: the set to apply, or why the last good set stays.
pub async fn lookup(discovery: &dyn Discovery) -> anyhow::Result<Members> {
    let members = tokio::time::timeout(LOOKUP_TIMEOUT, discovery.members())
        .await
        .map_err(|_| anyhow::anyhow!("no answer within {LOOKUP_TIMEOUT:?}"))??;
    // An empty answer is far likelier a broken source (a truncated file, a DNS zone
    // mid-update) than a cluster without members, and this node is a member anyway.
    if members.is_empty() {
        anyhow::bail!("the source lists no members");
    }
    Ok(members)
}

/// Counters of the discovery loop, for `/metrics`.
#[derive(Debug, Default)]
pub struct DiscoveryStats {
    pub lookups: AtomicU64,
    /// Lookups that failed or found nobody (the last good set was kept).
    pub failures: AtomicU64,
    /// Lookups whose member set was applied to the mesh.
    pub applied: AtomicU64,
}

impl DiscoveryStats {
    /// Lookups whose member set was applied to the mesh.
    pub fn good_lookups(&self) -> u64 {
        self.applied.load(Ordering::Acquire)
    }
}

/// Asks `discovery` every `interval` for as long as the task lives and applies each good
/// answer to `mesh`. Errors are logged once per streak of failures; the mesh keeps the last
/// good set meanwhile.
pub async fn run(
    mesh: Arc<Mesh>,
    discovery: Arc<dyn Discovery>,
    interval: Duration,
    stats: Arc<DiscoveryStats>,
) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failures = 0u64;
    loop {
        ticks.tick().await;
        stats.lookups.fetch_add(1, Ordering::Relaxed);
        match lookup(discovery.as_ref()).await {
            Ok(members) => {
                if failures > 0 {
                    tracing::info!(failures, "member discovery works again");
                    failures = 0;
                }
                apply(&mesh, &members);
                stats.applied.fetch_add(1, Ordering::Release);
            }
            Err(error) => {
                stats.failures.fetch_add(1, Ordering::Relaxed);
                failures += 1;
                if failures == 1 {
                    tracing::warn!(error = %format!("{error:#}"), "member discovery failed; keeping the last member set");
                } else {
                    tracing::debug!(error = %format!("{error:#}"), failures, "member discovery still failing");
                }
            }
        }
    }
}

/// Applies one member set to the mesh and logs what changed.
pub fn apply(mesh: &Arc<Mesh>, members: &Members) {
    let diff = mesh.set_members(members);
    if diff.is_empty() {
        return;
    }
    let epoch = mesh.membership().epoch;
    for (member, addr) in &diff.joined {
        tracing::info!(%member, %addr, epoch, "member joined");
    }
    for (member, addr) in &diff.left {
        tracing::info!(%member, %addr, epoch, "member left");
    }
    for (member, old, new) in &diff.moved {
        // This node's own entry changes when the source first lists it (e.g. its pod IP
        // instead of the peerListen address it started with): not news.
        if member == mesh.me() {
            tracing::debug!(%old, %new, epoch, "this node's listed address changed");
        } else {
            tracing::info!(%member, %old, %new, epoch, "member moved to a new address");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::net::Ipv4Addr;

    use hickory_resolver::proto::op::{Message, MessageType, ResponseCode};
    use hickory_resolver::proto::rr::rdata::{A, SRV};
    use hickory_resolver::proto::rr::{RData, Record, RecordType};
    use parking_lot::Mutex;

    const SRV_NAME: &str = "_peer._tcp.hub-peers.default.svc.cluster.local";

    /// What the test DNS server answers: SRV targets (name, port) and A records.
    #[derive(Default)]
    struct Zone {
        srv: Vec<(String, u16)>,
        a: HashMap<String, Ipv4Addr>,
    }

    fn key(name: &Name) -> String {
        name.to_ascii().trim_end_matches('.').to_ascii_lowercase()
    }

    fn answer(zone: &Zone, query: &Message) -> Message {
        let mut reply = Message::new();
        reply
            .set_id(query.id())
            .set_message_type(MessageType::Response)
            .set_op_code(query.op_code())
            .set_recursion_desired(query.recursion_desired())
            .set_recursion_available(true)
            .set_authoritative(true);
        let mut known = false;
        for q in query.queries() {
            reply.add_query(q.clone());
            let name = key(q.name());
            if name == SRV_NAME {
                known = true;
                if q.query_type() == RecordType::SRV {
                    for (target, port) in &zone.srv {
                        let Ok(target) = Name::from_ascii(format!("{target}.")) else {
                            continue;
                        };
                        let srv = SRV::new(0, 50, *port, target);
                        reply.add_answer(Record::from_rdata(q.name().clone(), 5, RData::SRV(srv)));
                    }
                }
            } else if let Some(ip) = zone.a.get(&name) {
                known = true;
                if q.query_type() == RecordType::A {
                    reply.add_answer(Record::from_rdata(q.name().clone(), 5, RData::A(A(*ip))));
                }
            }
        }
        if !known {
            reply.set_response_code(ResponseCode::NXDomain);
        }
        reply
    }

    /// A DNS server on 127.0.0.1:<random UDP port> answering from `zone`.
    async fn dns_server(zone: Arc<Mutex<Zone>>) -> (SocketAddr, tokio::task::JoinHandle<()>) {
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let Ok((n, from)) = socket.recv_from(&mut buf).await else {
                    return;
                };
                let Ok(query) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                let reply = answer(&zone.lock(), &query);
                if let Ok(bytes) = reply.to_vec() {
                    let _ = socket.send_to(&bytes, from).await;
                }
            }
        });
        (addr, task)
    }

    fn pod(zone: &mut Zone, name: &str, ip: [u8; 4]) {
        pod_at(zone, name, SocketAddr::from((ip, 7000)));
    }

    fn pod_at(zone: &mut Zone, name: &str, addr: SocketAddr) {
        let target = format!("{name}.hub-peers.default.svc.cluster.local");
        zone.srv.push((target.clone(), addr.port()));
        if let IpAddr::V4(ip) = addr.ip() {
            zone.a.insert(target, ip);
        }
    }

    fn free_port() -> SocketAddr {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    }

    /// Whole nodes (`app::build`) configured with `cluster.dns`: they find each other when
    /// DNS lists them, and part when it stops listing one.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn nodes_find_each_other_through_dns() {
        let zone = Arc::new(Mutex::new(Zone::default()));
        let (nameserver, server) = dns_server(zone.clone()).await;
        let node = |id: &str, peer: SocketAddr| {
            let mut config = crate::config::Config {
                node_id: id.into(),
                listen: "127.0.0.1:0".parse().unwrap(),
                ..Default::default()
            };
            config.cluster.peer_listen = Some(peer);
            config.cluster.dns = Some(DnsConfig {
                name: SRV_NAME.into(),
                nameserver: Some(nameserver),
            });
            config.cluster.discovery_interval = Some(100);
            let tls = super::super::mesh::testkit::pki().write_member(id);
            config.cluster.tls = Some(crate::config::PeerTlsConfig::files(&tls));
            config.validate().unwrap();
            crate::node::build(config)
        };
        let (p0, p1) = (free_port(), free_port());
        // hub-0 starts before DNS lists anybody: it runs as the only member.
        let hub0 = node("hub-0", p0).await.unwrap();
        let c0 = hub0.cluster.as_ref().unwrap();
        assert_eq!(c0.membership().ring.members(), ["hub-0"]);
        // Both pods ready: both are listed, and they link.
        pod_at(&mut zone.lock(), "hub-0", p0);
        pod_at(&mut zone.lock(), "hub-1", p1);
        let hub1 = node("hub-1", p1).await.unwrap();
        let c1 = hub1.cluster.as_ref().unwrap();
        let linked = |c: &crate::cluster::Cluster, n: usize| c.mesh().connected().len() == n;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !(linked(c0, 1) && linked(c1, 1)) {
            assert!(std::time::Instant::now() < deadline, "no link through DNS");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(c0.membership().ring.members(), ["hub-0", "hub-1"]);
        assert_eq!(c0.membership().members.addr("hub-1"), Some(p1));
        // hub-1 is no longer listed (e.g. not ready): hub-0 drops it.
        let mut ring = c0.subscribe();
        zone.lock()
            .srv
            .retain(|(target, _)| !target.starts_with("hub-1."));
        let m = next_change(&mut ring).await;
        assert_eq!(m.ring.members(), ["hub-0"]);
        assert!(c0.mesh().connected().is_empty());
        c0.shutdown(Duration::ZERO).await;
        c1.shutdown(Duration::ZERO).await;
        server.abort();
    }

    #[tokio::test]
    async fn dns_discovery_follows_srv_and_a_records() {
        let zone = Arc::new(Mutex::new(Zone::default()));
        pod(&mut zone.lock(), "hub-0", [127, 0, 0, 11]);
        pod(&mut zone.lock(), "hub-1", [127, 0, 0, 12]);
        let (nameserver, server) = dns_server(zone.clone()).await;
        let dns = DnsDiscovery::new(&DnsConfig {
            name: SRV_NAME.into(),
            nameserver: Some(nameserver),
        })
        .unwrap();
        assert_eq!(
            dns.members().await.unwrap(),
            Members::parse("hub-0=127.0.0.11:7000,hub-1=127.0.0.12:7000").unwrap()
        );

        // A pod joins, another moves: the next lookup sees both (nothing is cached).
        {
            let mut z = zone.lock();
            pod(&mut z, "hub-2", [127, 0, 0, 13]);
            z.a.insert(
                "hub-1.hub-peers.default.svc.cluster.local".into(),
                Ipv4Addr::new(127, 0, 0, 22),
            );
        }
        assert_eq!(
            lookup(&dns).await.unwrap(),
            Members::parse("hub-0=127.0.0.11:7000,hub-1=127.0.0.22:7000,hub-2=127.0.0.13:7000")
                .unwrap()
        );

        // A target without an address is left out; the others stay.
        zone.lock()
            .a
            .remove("hub-2.hub-peers.default.svc.cluster.local");
        assert_eq!(lookup(&dns).await.unwrap().len(), 2);

        // No SRV records at all: an error, so the last good set is kept.
        zone.lock().srv.clear();
        assert!(lookup(&dns).await.is_err());
        server.abort();
    }

    #[test]
    fn member_ids_are_first_labels() {
        let name = |s: &str| Name::from_ascii(s).unwrap();
        assert_eq!(
            member_id(&name("Hub-0.hub-peers.default.svc.cluster.local.")),
            Some("hub-0".to_string())
        );
        assert_eq!(member_id(&name("solo")), Some("solo".to_string()));
        assert_eq!(member_id(&Name::root()), None);
    }

    /// The loop applies good answers and keeps the last good set through bad ones.
    #[tokio::test]
    async fn the_loop_applies_changes_and_keeps_the_last_good_set() {
        use super::super::mesh::{Answer, Inbound, LinkSettings};
        use super::super::proto::message::Kind;
        struct Ignore;
        impl Inbound for Ignore {
            fn receive(&self, _: &str, _: Kind) -> Option<Answer> {
                None
            }
        }
        let dir = std::env::temp_dir().join(format!("roomcast-discovery-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("members");
        let me = Members::parse("a=127.0.0.1:1").unwrap();
        let mesh = Mesh::new("a", &me, LinkSettings::default(), Arc::new(Ignore)).unwrap();
        let mut ring = mesh.subscribe();
        let write = |text: &str| {
            // Replaced atomically, as the docs ask.
            let tmp = dir.join("members.tmp");
            std::fs::write(&tmp, text).unwrap();
            std::fs::rename(&tmp, &path).unwrap();
        };
        write("a=127.0.0.1:1\nb=127.0.0.1:2\n");
        let stats = Arc::new(DiscoveryStats::default());
        let task = tokio::spawn(run(
            mesh.clone(),
            Arc::new(FileDiscovery(path.clone())),
            Duration::from_millis(20),
            stats.clone(),
        ));
        let m = next_change(&mut ring).await;
        assert_eq!(
            (m.epoch, m.ring.members()),
            (1, &["a".to_string(), "b".to_string()][..])
        );
        // Garbage, an empty file, a missing file: the set stays.
        write("b=oops\n");
        tokio::time::sleep(Duration::from_millis(100)).await;
        write("# nobody\n");
        tokio::time::sleep(Duration::from_millis(100)).await;
        std::fs::remove_file(&path).unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!ring.has_changed().unwrap());
        assert_eq!(mesh.membership().epoch, 1);
        assert!(stats.failures.load(Ordering::Relaxed) >= 3);
        // b leaves and c joins; this node stays even though the file leaves it out.
        write("c=127.0.0.1:3\n");
        let m = next_change(&mut ring).await;
        assert_eq!(m.epoch, 2);
        assert_eq!(m.ring.members(), ["a", "c"]);
        assert_eq!(mesh.stats().peers, 1);
        task.abort();
        mesh.close();
        let _ = std::fs::remove_dir_all(&dir);
    }

    async fn next_change(
        ring: &mut tokio::sync::watch::Receiver<Arc<crate::cluster::Membership>>,
    ) -> Arc<crate::cluster::Membership> {
        tokio::time::timeout(Duration::from_secs(5), ring.changed())
            .await
            .expect("a ring change within 5 s")
            .expect("the mesh is alive");
        ring.borrow_and_update().clone()
    }
}
