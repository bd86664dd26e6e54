//! Operator tests against a real control plane (kube-apiserver, kube-controller-manager, etcd).
//!
//! Run through `e2e/operator-tests.sh`, which builds and starts the control plane, installs the
//! chart with helm and sets:
//!   ROOMCAST_E2E_KUBECONFIG           admin kubeconfig (the test's own actions)
//!   ROOMCAST_E2E_OPERATOR_KUBECONFIG  kubeconfig with the chart ServiceAccount's token
//!   ROOMCAST_E2E_OPERATOR_BIN         the roomcast-operator binary
//!   ROOMCAST_E2E_KUBECTL              kubectl
//!   ROOMCAST_E2E_RELEASE_NAMESPACE    namespace of the helm release (leases live there)
//!   ROOMCAST_E2E_SCOPED_KUBECONFIG    kubeconfig of a second release's ServiceAccount, installed
//!                                     with watchNamespace = ROOMCAST_E2E_SCOPED_NAMESPACES
//!   ROOMCAST_E2E_SCOPED_RELEASE       that release's name and namespace (`name/namespace`)
//! Every namespace the tests create enforces the `restricted` Pod Security Standard, so the
//! StatefulSet controller can create the hubs' pods only if their template complies.
//! The tests are `#[ignore]`d so a plain `cargo test` skips them.

use std::future::Future;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::NamespaceResourceScope;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config, Resource, ResourceExt};
use roomcast_operator::builders::{self, BuildOptions};
use roomcast_operator::crd::SocketIOHub;
use roomcast_operator::peer_ca::CaMaterial;
use serde_json::json;

mod metrics_standin;
use metrics_standin::MetricsStandin;

const TIMEOUT: Duration = Duration::from_secs(30);

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set: run e2e/operator-tests.sh"))
}

async fn admin() -> Client {
    let kc = Kubeconfig::read_from(env("ROOMCAST_E2E_KUBECONFIG")).expect("admin kubeconfig");
    let cfg = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("admin config");
    Client::try_from(cfg).expect("admin client")
}

/// Polls `f` until it returns `Some`, or panics with `what` after `TIMEOUT`.
async fn eventually<T, F, Fut>(what: &str, f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    eventually_within(TIMEOUT, what, f).await
}

/// [`eventually`] with another timeout.
async fn eventually_within<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A port for a child process to bind later, below the kernel's ephemeral range (as
/// e2e/control-plane.sh's `free_port`): one from a bind to port 0 lies inside that range, and
/// an outgoing connection can take it as its source port before the child binds it.
fn free_port() -> u16 {
    let first = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap_or(32768);
    let span = first.saturating_sub(10_000).max(1);
    let seed = u64::from(std::process::id())
        ^ u64::from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0),
        );
    (0..span.min(500))
        .map(|i| 10_000 + (seed.wrapping_add(i.wrapping_mul(7919)) % span))
        .filter_map(|port| u16::try_from(port).ok())
        .find(|port| std::net::TcpListener::bind(("127.0.0.1", *port)).is_ok())
        .expect("a free port below the ephemeral range")
}

/// A `roomcast-operator` process run with the chart ServiceAccount's credentials.
struct Operator {
    child: Child,
    metrics: u16,
    identity: String,
}

impl Operator {
    fn start(identity: &str, lease: &str, namespace: Option<&str>) -> Self {
        Self::start_as(
            &env("ROOMCAST_E2E_OPERATOR_KUBECONFIG"),
            &env("ROOMCAST_E2E_RELEASE_NAMESPACE"),
            &[],
            identity,
            lease,
            namespace,
        )
    }

    /// Runs with `kubeconfig`'s credentials, its lease in `lease_ns`, and `extra` arguments.
    fn start_as(
        kubeconfig: &str,
        lease_ns: &str,
        extra: &[&str],
        identity: &str,
        lease: &str,
        namespace: Option<&str>,
    ) -> Self {
        let metrics = free_port();
        let mut cmd = Command::new(env("ROOMCAST_E2E_OPERATOR_BIN"));
        cmd.args(["run", "--metrics-addr", &format!("127.0.0.1:{metrics}")])
            .args(["--lease-namespace", lease_ns])
            .args(["--lease-name", lease, "--identity", identity])
            .args(["--default-image", "roomcast/roomcast-dataplane:e2e"])
            .args(extra)
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "info,roomcast_operator=debug,kube=warn")
            .stdin(Stdio::null());
        if let Some(ns) = namespace {
            cmd.args(["--namespace", ns]);
        }
        if let Ok(dir) = std::env::var("ROOMCAST_E2E_LOG_DIR") {
            let file =
                std::fs::File::create(format!("{dir}/operator-{identity}.log")).expect("log file");
            let err = file.try_clone().expect("log file");
            cmd.stdout(file).stderr(err);
        }
        let child = cmd.spawn().expect("spawning roomcast-operator");
        Self {
            child,
            metrics,
            identity: identity.to_string(),
        }
    }

    async fn metric(&self, name: &str) -> Option<f64> {
        let body = http_get(self.metrics, "/metrics").await?;
        body.lines()
            .filter(|l| l.starts_with(name))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .reduce(|a, b| a + b)
    }

    fn sigterm(&self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Minimal HTTP/1.0 GET on 127.0.0.1.
async fn http_get(port: u16, path: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).await.ok()?;
    let (head, body) = buf.split_once("\r\n\r\n")?;
    head.lines()
        .next()?
        .contains(" 200 ")
        .then(|| body.to_string())
}

/// Creates namespace `name` enforcing the `restricted` Pod Security Standard: the API
/// server's PodSecurity admission then refuses any hub pod that does not comply.
async fn namespace(client: &Client, name: &str) {
    let api: Api<Namespace> = Api::all(client.clone());
    let labels = json!({"pod-security.kubernetes.io/enforce": "restricted",
        "pod-security.kubernetes.io/enforce-version": "latest"});
    let ns: Namespace =
        serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}})).unwrap();
    match api.create(&PostParams::default(), &ns).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {
            api.patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"labels": labels}})),
            )
            .await
            .expect("labelling the namespace");
        }
        Err(e) => panic!("creating namespace {name}: {e}"),
    }
}

fn hub_from(value: serde_json::Value) -> SocketIOHub {
    serde_json::from_value(value).expect("hub json")
}

async fn get<K>(client: &Client, ns: &str, name: &str) -> Option<K>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    Api::<K>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .ok()
        .flatten()
}

/// The hub's CA as stored in its `<hub>-peer-ca` Secret.
async fn peer_ca(client: &Client, ns: &str, hub: &str) -> CaMaterial {
    let s: Secret = eventually("the peer CA Secret", || async {
        get::<Secret>(client, ns, &format!("{hub}-peer-ca")).await
    })
    .await;
    CaMaterial::from_secret(&s).expect("CA Secret holds tls.crt and tls.key")
}

fn owned_by(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    hub: &SocketIOHub,
) -> bool {
    meta.owner_references.iter().flatten().any(|o| {
        o.kind == "SocketIOHub"
            && Some(&o.uid) == hub.metadata.uid.as_ref()
            && o.controller == Some(true)
    })
}

fn condition(hub: &SocketIOHub, ty: &str) -> Option<(String, String)> {
    let c = hub
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == ty)?;
    Some((c.status.clone(), c.reason.clone()))
}

async fn mark_pods_ready(client: &Client, ns: &str, hub: &str) -> usize {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let list = pods
        .list(
            &kube::api::ListParams::default().labels(&format!("app.kubernetes.io/instance={hub}")),
        )
        .await
        .expect("listing pods");
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let mut n = 0;
    for p in list.items {
        let ready = p
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        if ready || p.metadata.deletion_timestamp.is_some() {
            n += usize::from(ready);
            continue;
        }
        let patch = json!({"status": {"phase": "Running", "podIP": "127.0.0.1", "conditions": [
            {"type": "Ready", "status": "True", "lastTransitionTime": now},
            {"type": "ContainersReady", "status": "True", "lastTransitionTime": now},
        ]}});
        if pods
            .patch_status(
                &p.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
            .is_ok()
        {
            n += 1;
        }
    }
    n
}

fn kubectl(args: &[&str]) -> std::process::Output {
    Command::new(env("ROOMCAST_E2E_KUBECTL"))
        .arg("--kubeconfig")
        .arg(env("ROOMCAST_E2E_KUBECONFIG"))
        .args(args)
        .output()
        .expect("running kubectl")
}

#[tokio::test]
#[ignore = "needs the control plane of e2e/operator-tests.sh"]
async fn crd_is_established_with_subresources() {
    let client = admin().await;
    let crds: Api<CustomResourceDefinition> = Api::all(client);
    let crd = crds
        .get("socketiohubs.roomcast.dev")
        .await
        .expect("CRD installed by the chart");
    let established = crd
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
        });
    assert!(established, "CRD is not Established");
    let v = &crd.spec.versions[0];
    let sub = v.subresources.as_ref().expect("subresources");
    assert!(sub.status.is_some() && sub.scale.is_some());
    assert_eq!(
        crd.spec.names.short_names.as_deref(),
        Some(&["sio".to_string()][..])
    );
    // The installed CRD is exactly the generated one.
    let generated = <SocketIOHub as kube::CustomResourceExt>::crd();
    assert_eq!(
        crd.spec.versions[0].schema,
        generated.spec.versions[0].schema
    );
}

#[tokio::test]
#[ignore = "needs the control plane of e2e/operator-tests.sh"]
async fn hub_lifecycle_objects_status_scale_rollout_drift_and_gc() {
    let client = admin().await;
    let ns = "e2e-lifecycle";
    namespace(&client, ns).await;
    let op = Operator::start("lifecycle-op", "lifecycle-lease", Some(ns));

    let hubs: Api<SocketIOHub> = Api::namespaced(client.clone(), ns);
    let hub = hub_from(json!({
        "apiVersion": "roomcast.dev/v1alpha1", "kind": "SocketIOHub",
        "metadata": {"name": "chat"},
        "spec": {
            "replicas": 2,
            "engine": {"pingInterval": 20000, "cors": {"origin": ["https://chat.example"]}},
            "namespaces": [{"name": "/"}, {"name": "/chat", "allowedEvents": ["message"]}],
            "service": {"port": 8080},
            "podDisruptionBudget": {"maxUnavailable": 1}
        }
    }));
    let hub = hubs
        .create(&PostParams::default(), &hub)
        .await
        .expect("creating hub");

    // Every object exists, is owned by the hub, and has the content the builders produce.
    let sts: StatefulSet = eventually("StatefulSet", || get(&client, ns, "chat")).await;
    let cm: ConfigMap = eventually("ConfigMap", || get(&client, ns, "chat-config")).await;
    let secret: Secret = eventually("Secret", || get(&client, ns, "chat-management")).await;
    let peers: Service = eventually("peer Service", || get(&client, ns, "chat-peers")).await;
    let svc: Service = eventually("client Service", || get(&client, ns, "chat")).await;
    let mgmt: Service =
        eventually("management Service", || get(&client, ns, "chat-management")).await;
    let pdb: PodDisruptionBudget = eventually("PDB", || get(&client, ns, "chat")).await;
    let np: NetworkPolicy = eventually("NetworkPolicy", || get(&client, ns, "chat")).await;
    let sa: ServiceAccount = eventually("ServiceAccount", || get(&client, ns, "chat")).await;
    let role: Role = eventually("Role", || get(&client, ns, "chat")).await;
    let rb: RoleBinding = eventually("RoleBinding", || get(&client, ns, "chat")).await;
    for (kind, meta) in [
        ("StatefulSet", &sts.metadata),
        ("ConfigMap", &cm.metadata),
        ("Secret", &secret.metadata),
        ("peer Service", &peers.metadata),
        ("client Service", &svc.metadata),
        ("management Service", &mgmt.metadata),
        ("PDB", &pdb.metadata),
        ("NetworkPolicy", &np.metadata),
        ("ServiceAccount", &sa.metadata),
        ("Role", &role.metadata),
        ("RoleBinding", &rb.metadata),
    ] {
        assert!(
            owned_by(meta, &hub),
            "{kind} lacks the controller owner reference"
        );
    }
    let token = String::from_utf8(secret.data.as_ref().unwrap()["token"].0.clone()).unwrap();
    assert_eq!(token.len(), 64, "generated token is 32 random bytes in hex");
    let desired = builders::build(
        &hub,
        &BuildOptions {
            default_image: "roomcast/roomcast-dataplane:e2e".into(),
            management_token: Some(token.clone()),
            app_link_token: None,
            peer_ca: peer_ca(&client, ns, "chat").await,
            csr_cluster_role: "roomcast-operator-hub-csr".into(),
            references_hash: None,
        },
    )
    .unwrap();
    assert_eq!(
        cm.data, desired.config_map.data,
        "ConfigMap holds the rendered config"
    );
    let cfg_text = &cm.data.as_ref().unwrap()["config.yaml"];
    assert!(cfg_text.contains("pingInterval: 20000") && cfg_text.contains("/chat"));
    let sts_spec = sts.spec.as_ref().unwrap();
    assert_eq!(sts_spec.replicas, Some(2));
    assert_eq!(sts_spec.service_name.as_deref(), Some("chat-peers"));
    let annotations = sts_spec
        .template
        .metadata
        .as_ref()
        .unwrap()
        .annotations
        .clone()
        .unwrap();
    assert_eq!(annotations["roomcast.dev/config-hash"], desired.config_hash);
    let container = &sts_spec.template.spec.as_ref().unwrap().containers[0];
    assert_eq!(
        container.image.as_deref(),
        Some("roomcast/roomcast-dataplane:e2e")
    );
    assert_eq!(
        peers.spec.as_ref().unwrap().cluster_ip.as_deref(),
        Some("None")
    );
    assert_eq!(
        svc.spec.as_ref().unwrap().ports.as_ref().unwrap()[0].port,
        8080
    );
    assert_eq!(
        pdb.spec.as_ref().unwrap().max_unavailable,
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(1))
    );
    assert_eq!(
        role.rules.as_ref().unwrap()[0].resources.as_deref(),
        Some(&["endpointslices".to_string()][..])
    );
    assert_eq!(rb.subjects.as_ref().unwrap()[0].name, "chat");
    // The probes are on the metrics port; the NetworkPolicy is what the builder renders:
    // clients from anywhere, peers from the hub's pods, management from the namespace,
    // metrics from any namespace.
    let metrics_port = container
        .ports
        .as_ref()
        .unwrap()
        .iter()
        .find(|p| p.name.as_deref() == Some("metrics"));
    assert_eq!(metrics_port.map(|p| p.container_port), Some(9090));
    for probe in [&container.readiness_probe, &container.liveness_probe] {
        let port = probe
            .as_ref()
            .and_then(|p| p.http_get.as_ref())
            .map(|h| h.port.clone());
        assert_eq!(
            port,
            Some(
                k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String("metrics".into())
            )
        );
    }
    assert!(cfg_text.contains("listen: 0.0.0.0:9090"), "{cfg_text}");
    assert_eq!(
        serde_json::to_value(&np.spec).unwrap(),
        serde_json::to_value(&desired.network_policy.as_ref().unwrap().spec).unwrap()
    );
    let own_pods = json!([{"podSelector": {"matchLabels": {
        "app.kubernetes.io/instance": "chat", "app.kubernetes.io/name": "roomcast-hub"}}}]);
    assert_eq!(
        policy_rules(&np),
        [
            (3000, None),
            (7000, Some(own_pods.clone())),
            (3001, Some(json!([{"podSelector": {}}]))),
            (9090, Some(json!([{"namespaceSelector": {}}]))),
        ]
    );

    // Status: not ready while pods are pending; Ready once the pods report ready.
    let h = eventually("status Progressing=True", || async {
        let h = hubs.get("chat").await.ok()?;
        (condition(&h, "Progressing")?.0 == "True").then_some(h)
    })
    .await;
    assert_eq!(
        condition(&h, "Ready").map(|c| c.0),
        Some("False".to_string())
    );
    let st = h.status.clone().unwrap();
    assert_eq!(
        st.selector.as_deref(),
        Some("app.kubernetes.io/instance=chat,app.kubernetes.io/name=roomcast-hub")
    );
    assert_eq!(
        st.endpoint.as_deref(),
        Some("http://chat.e2e-lifecycle.svc:8080/socket.io/")
    );
    let degraded_since = h
        .status
        .as_ref()
        .unwrap()
        .conditions
        .iter()
        .find(|c| c.type_ == "Degraded")
        .unwrap()
        .last_transition_time
        .clone();

    let h = eventually("hub Ready after pods are marked ready", || async {
        mark_pods_ready(&client, ns, "chat").await;
        let h = hubs.get("chat").await.ok()?;
        (condition(&h, "Ready")? == ("True".into(), "AllReplicasReady".into())).then_some(h)
    })
    .await;
    assert_eq!(
        condition(&h, "Progressing"),
        Some(("False".into(), "Complete".into()))
    );
    let st = h.status.clone().unwrap();
    assert_eq!(
        (st.replicas, st.ready_replicas, st.observed_generation),
        (2, 2, h.metadata.generation)
    );
    let degraded = st
        .conditions
        .iter()
        .find(|c| c.type_ == "Degraded")
        .unwrap();
    assert_eq!(
        degraded.last_transition_time, degraded_since,
        "Degraded did not transition"
    );

    // No status write when nothing changed.
    let writes = op
        .metric("roomcast_operator_status_writes_total")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let _ = hubs.get("chat").await.unwrap();
    assert_eq!(
        op.metric("roomcast_operator_status_writes_total")
            .await
            .unwrap(),
        writes
    );

    // kubectl scale goes through the scale subresource to the StatefulSet.
    let out = kubectl(&["-n", ns, "scale", "socketiohub", "chat", "--replicas=3"]);
    assert!(
        out.status.success(),
        "kubectl scale: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    eventually("StatefulSet scaled to 3", || async {
        let s: StatefulSet = get(&client, ns, "chat").await?;
        (s.spec?.replicas == Some(3)).then_some(())
    })
    .await;
    let out = kubectl(&[
        "-n",
        ns,
        "get",
        "sio",
        "chat",
        "-o",
        "jsonpath={.spec.replicas}",
    ]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "3");

    // A config change re-renders the ConfigMap and rolls the pod template.
    hubs.patch(
        "chat",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"engine": {"pingInterval": 10000}}})),
    )
    .await
    .unwrap();
    let new_hash = eventually("pod template hash changes", || async {
        let s: StatefulSet = get(&client, ns, "chat").await?;
        let h = s
            .spec?
            .template
            .metadata?
            .annotations?
            .get("roomcast.dev/config-hash")?
            .clone();
        (h != desired.config_hash).then_some(h)
    })
    .await;
    let cm: ConfigMap = get(&client, ns, "chat-config").await.unwrap();
    assert!(cm.data.unwrap()["config.yaml"].contains("pingInterval: 10000"));
    eventually("status.configHash follows", || async {
        let h = hubs.get("chat").await.ok()?;
        (h.status?.config_hash? == new_hash).then_some(())
    })
    .await;

    // A change of spec.networkPolicy updates the NetworkPolicy: scrapers from one namespace,
    // the management port closed (an empty list), without rolling the pods.
    hubs.patch(
        "chat",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"networkPolicy": {
            "managementFrom": [],
            "metricsFrom": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]
        }}})),
    )
    .await
    .unwrap();
    let scrapers = json!([{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]);
    let want = vec![
        (3000, None),
        (7000, Some(own_pods.clone())),
        (9090, Some(scrapers)),
    ];
    eventually("NetworkPolicy updated", || async {
        let np: NetworkPolicy = get(&client, ns, "chat").await?;
        (policy_rules(&np) == want).then_some(())
    })
    .await;
    let s: StatefulSet = get(&client, ns, "chat").await.unwrap();
    let hash = s
        .spec
        .unwrap()
        .template
        .metadata
        .unwrap()
        .annotations
        .unwrap()["roomcast.dev/config-hash"]
        .clone();
    assert_eq!(hash, new_hash, "a policy change does not roll the pods");

    // Condition transitions and the config change were published as Events on the hub.
    eventually("Events on the hub", || async {
        let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), ns);
        let list = events.list(&Default::default()).await.ok()?;
        let reasons: Vec<String> = list
            .items
            .iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("chat"))
            .filter(|e| e.reporting_controller.as_deref() == Some("roomcast-operator"))
            .filter_map(|e| e.reason.clone())
            .collect();
        ["AllReplicasReady", "ConfigChanged"]
            .iter()
            .all(|r| reasons.iter().any(|x| x == r))
            .then_some(())
    })
    .await;

    // Drift: a hand edit of the StatefulSet is put back; a deleted Service comes back.
    let sts_api: Api<StatefulSet> = Api::namespaced(client.clone(), ns);
    sts_api
        .patch(
            "chat",
            &PatchParams::apply("someone-else").force(),
            &Patch::Apply(json!({
                "apiVersion": "apps/v1", "kind": "StatefulSet",
                "spec": {"replicas": 7, "template": {"spec": {"containers": [{"name": "hub", "image": "evil:latest"}]}}}
            })),
        )
        .await
        .unwrap();
    eventually("hand edit reverted", || async {
        let s: StatefulSet = get(&client, ns, "chat").await?;
        let spec = s.spec?;
        let image = spec.template.spec?.containers[0].image.clone()?;
        (spec.replicas == Some(3) && image == "roomcast/roomcast-dataplane:e2e").then_some(())
    })
    .await;
    Api::<Service>::namespaced(client.clone(), ns)
        .delete("chat", &DeleteParams::default())
        .await
        .unwrap();
    eventually("deleted Service recreated", || async {
        let s: Service = get(&client, ns, "chat").await?;
        s.metadata.deletion_timestamp.is_none().then_some(())
    })
    .await;

    // Printer columns.
    let out = kubectl(&["-n", ns, "get", "sio", "chat"]);
    let table = String::from_utf8_lossy(&out.stdout).to_string();
    let header: Vec<&str> = table
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        ["NAME", "REPLICAS", "READY", "CLIENTS", "APPS", "STATUS", "ENDPOINT", "AGE"],
        "{table}"
    );
    assert!(
        table.contains("http://chat.e2e-lifecycle.svc:8080/socket.io/"),
        "{table}"
    );

    // Objects that are no longer wanted go: the PDB when disabled, the generated Secret when
    // the hub names its own.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let own: Secret = serde_json::from_value(json!({
        "metadata": {"name": "my-token"}, "stringData": {"t": "0123456789abcdef0123"}
    }))
    .unwrap();
    secrets.create(&PostParams::default(), &own).await.unwrap();
    hubs.patch(
        "chat",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {
            "podDisruptionBudget": {"enabled": false},
            "networkPolicy": {"enabled": false},
            "management": {"tokenSecretRef": {"name": "my-token", "key": "t"}}
        }})),
    )
    .await
    .unwrap();
    eventually(
        "PDB, NetworkPolicy and generated Secret deleted",
        || async {
            let gone = get::<PodDisruptionBudget>(&client, ns, "chat")
                .await
                .is_none()
                && get::<NetworkPolicy>(&client, ns, "chat").await.is_none()
                && get::<Secret>(&client, ns, "chat-management")
                    .await
                    .is_none();
            gone.then_some(())
        },
    )
    .await;
    let s: StatefulSet = get(&client, ns, "chat").await.unwrap();
    let pod_spec = serde_json::to_string(&s.spec.unwrap().template.spec).unwrap();
    assert!(
        pod_spec.contains(r#""key":"t","path":"management-token""#),
        "{pod_spec}"
    );
    assert!(
        get::<Secret>(&client, ns, "my-token").await.is_some(),
        "the user's Secret stays"
    );

    // Deleting the hub garbage-collects everything it owned.
    hubs.delete("chat", &DeleteParams::foreground())
        .await
        .unwrap();
    eventually("owned objects garbage-collected", || async {
        let gone = get::<StatefulSet>(&client, ns, "chat").await.is_none()
            && get::<ConfigMap>(&client, ns, "chat-config").await.is_none()
            && get::<Secret>(&client, ns, "chat-management")
                .await
                .is_none()
            && get::<Service>(&client, ns, "chat-peers").await.is_none()
            && get::<Service>(&client, ns, "chat").await.is_none()
            && get::<Service>(&client, ns, "chat-management")
                .await
                .is_none()
            && get::<PodDisruptionBudget>(&client, ns, "chat")
                .await
                .is_none()
            && get::<ServiceAccount>(&client, ns, "chat").await.is_none()
            && get::<Role>(&client, ns, "chat").await.is_none()
            && get::<RoleBinding>(&client, ns, "chat").await.is_none()
            && hubs.get_opt("chat").await.ok()?.is_none();
        gone.then_some(())
    })
    .await;
    assert_eq!(
        op.metric("roomcast_operator_reconciles_total{result=\"error\"}")
            .await
            .unwrap_or(0.0),
        0.0
    );
}

/// The ports of a NetworkPolicy's ingress rules, each with its `from` (`None`: anyone).
fn policy_rules(np: &NetworkPolicy) -> Vec<(i32, Option<serde_json::Value>)> {
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    let rules = np
        .spec
        .as_ref()
        .and_then(|s| s.ingress.clone())
        .unwrap_or_default();
    rules
        .iter()
        .map(|r| {
            let port = match r.ports.as_deref() {
                Some([p]) => match p.port {
                    Some(IntOrString::Int(n)) => n,
                    _ => -1,
                },
                _ => -1,
            };
            (
                port,
                r.from.as_ref().map(|f| serde_json::to_value(f).unwrap()),
            )
        })
        .collect()
}

/// Creates a hub that the API server must refuse with 422; returns the message.
async fn rejected(hubs: &Api<SocketIOHub>, spec: serde_json::Value, name: &str) -> String {
    let hub = hub_from(
        json!({"apiVersion": "roomcast.dev/v1alpha1", "kind": "SocketIOHub",
        "metadata": {"name": name}, "spec": spec}),
    );
    match hubs.create(&PostParams::default(), &hub).await {
        Err(kube::Error::Api(e)) => {
            assert_eq!(e.code, 422, "{name}: {e:?}");
            e.message
        }
        other => panic!("{name}: expected a 422, got {other:?}"),
    }
}

#[tokio::test]
#[ignore = "needs the control plane of e2e/operator-tests.sh"]
async fn invalid_hubs_are_rejected_by_cel_or_reported_degraded() {
    let client = admin().await;
    let ns = "e2e-invalid";
    namespace(&client, ns).await;
    let op = Operator::start("invalid-op", "invalid-lease", Some(ns));
    let hubs: Api<SocketIOHub> = Api::namespaced(client.clone(), ns);

    let m = rejected(
        &hubs,
        json!({"auth": {"secretRef": {"name": "a", "key": "b"}, "jwksUrl": "https://x/jwks"}}),
        "both-auth",
    )
    .await;
    assert!(m.contains("exactly one of secretRef and jwksUrl"), "{m}");
    let m = rejected(
        &hubs,
        json!({"podDisruptionBudget": {"minAvailable": 1, "maxUnavailable": 1}}),
        "both-pdb",
    )
    .await;
    assert!(m.contains("at most one of minAvailable"), "{m}");
    let m = rejected(
        &hubs,
        json!({"service": {"nodePort": 30000}}),
        "nodeport-clusterip",
    )
    .await;
    assert!(m.contains("nodePort needs type"), "{m}");
    let m = rejected(&hubs, json!({"engine": {"path": "no-slash"}}), "bad-path").await;
    assert!(m.contains("path"), "{m}");
    let m = rejected(&hubs, json!({}), &"x".repeat(53)).await;
    assert!(m.contains("at most 52 characters"), "{m}");
    let m = rejected(
        &hubs,
        json!({"namespaces": [{"name": "/a"}, {"name": "/a"}]}),
        "dup-ns",
    )
    .await;
    assert!(m.to_lowercase().contains("duplicate"), "{m}");

    // Immutable field: podManagementPolicy cannot change after creation.
    let ok = hub_from(
        json!({"apiVersion": "roomcast.dev/v1alpha1", "kind": "SocketIOHub",
        "metadata": {"name": "fixed"}, "spec": {"podManagementPolicy": "Parallel"}}),
    );
    hubs.create(&PostParams::default(), &ok).await.unwrap();
    let err = hubs
        .patch(
            "fixed",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"podManagementPolicy": "OrderedReady"}})),
        )
        .await
        .expect_err("podManagementPolicy change must be rejected");
    assert!(
        err.to_string().contains("podManagementPolicy is immutable"),
        "{err}"
    );

    // Valid for the schema, refused by the data plane's own config validation: reported
    // Degraded/InvalidSpec, nothing applied, and not retried until the hub changes.
    let odd = hub_from(
        json!({"apiVersion": "roomcast.dev/v1alpha1", "kind": "SocketIOHub",
        "metadata": {"name": "comma-ns"}, "spec": {"namespaces": [{"name": "/a,b"}]}}),
    );
    hubs.create(&PostParams::default(), &odd).await.unwrap();
    let h = eventually("Degraded=True InvalidSpec", || async {
        let h = hubs.get("comma-ns").await.ok()?;
        (condition(&h, "Degraded")? == ("True".into(), "InvalidSpec".into())).then_some(h)
    })
    .await;
    let msg = h
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Degraded")
        .unwrap()
        .message;
    assert!(msg.contains("socketio.namespaces[0].name"), "{msg}");
    // Writing the Degraded status echoes back as one more watch event (and one more, equally
    // invalid, reconcile that writes nothing); let it pass before taking the baseline.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let invalid_runs = op
        .metric("roomcast_operator_reconciles_total{result=\"invalid\"}")
        .await
        .unwrap_or(0.0);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        get::<StatefulSet>(&client, ns, "comma-ns").await.is_none(),
        "nothing applied"
    );
    assert_eq!(
        op.metric("roomcast_operator_reconciles_total{result=\"invalid\"}")
            .await
            .unwrap_or(0.0),
        invalid_runs,
        "an invalid hub is not retried"
    );

    // Valid for the schema, refused by the API server when applied: reported Degraded, retried
    // with backoff (not in a storm).
    let bad = hub_from(
        json!({"apiVersion": "roomcast.dev/v1alpha1", "kind": "SocketIOHub",
        "metadata": {"name": "bad-resources"},
        "spec": {"resources": {"requests": {"cpu": "2"}, "limits": {"cpu": "1"}}}}),
    );
    hubs.create(&PostParams::default(), &bad).await.unwrap();
    let h = eventually("Degraded=True ApplyFailed", || async {
        let h = hubs.get("bad-resources").await.ok()?;
        (condition(&h, "Degraded")? == ("True".into(), "ApplyFailed".into())).then_some(h)
    })
    .await;
    let msg = h
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Degraded")
        .unwrap()
        .message;
    assert!(msg.contains("limit"), "{msg}");
    tokio::time::sleep(Duration::from_secs(6)).await;
    let errors = op
        .metric("roomcast_operator_reconciles_total{result=\"error\"}")
        .await
        .unwrap_or(0.0);
    assert!(
        (1.0..=8.0).contains(&errors),
        "backoff: {errors} failed reconciles in ~6s"
    );

    // Fixing the spec clears Degraded.
    hubs.patch(
        "bad-resources",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"resources": {"limits": {"cpu": "4"}}}})),
    )
    .await
    .unwrap();
    eventually("Degraded=False after the fix", || async {
        let h = hubs.get("bad-resources").await.ok()?;
        (condition(&h, "Degraded")?.0 == "False").then_some(())
    })
    .await;
    // The other hub was reconciled normally all along.
    let _: StatefulSet = eventually("valid hub reconciled", || get(&client, ns, "fixed")).await;
}

async fn lease_holder(client: &Client, name: &str) -> Option<String> {
    let leases: Api<Lease> =
        Api::namespaced(client.clone(), &env("ROOMCAST_E2E_RELEASE_NAMESPACE"));
    leases.get_opt(name).await.ok()??.spec?.holder_identity
}

#[tokio::test]
#[ignore = "needs the control plane of e2e/operator-tests.sh"]
async fn leader_election_two_processes() {
    let client = admin().await;
    let ns = "e2e-leader";
    namespace(&client, ns).await;
    let lease = "leader-test";
    let a = Operator::start("op-a", lease, Some(ns));
    eventually("op-a leads", || async {
        (lease_holder(&client, lease).await? == "op-a").then_some(())
    })
    .await;
    let mut b = Operator::start("op-b", lease, Some(ns));
    eventually("op-b serves /readyz as a standby", || {
        http_get(b.metrics, "/readyz")
    })
    .await;

    let hubs: Api<SocketIOHub> = Api::namespaced(client.clone(), ns);
    hubs.create(
        &PostParams::default(),
        &hub_from(
            json!({"apiVersion": "roomcast.dev/v1alpha1", "kind": "SocketIOHub",
            "metadata": {"name": "one"}, "spec": {}}),
        ),
    )
    .await
    .unwrap();
    let _: StatefulSet = eventually("hub one reconciled by the leader", || {
        get(&client, ns, "one")
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(lease_holder(&client, lease).await.as_deref(), Some("op-a"));
    assert_eq!(a.metric("roomcast_operator_leader").await, Some(1.0));
    assert_eq!(b.metric("roomcast_operator_leader").await, Some(0.0));
    assert_eq!(
        b.metric("roomcast_operator_reconciles_total")
            .await
            .unwrap_or(0.0),
        0.0,
        "standby reconciled"
    );
    assert!(
        a.metric("roomcast_operator_reconciles_total")
            .await
            .unwrap_or(0.0)
            >= 1.0
    );

    // SIGTERM: the leader shuts down cleanly and hands over the lease at once.
    a.sigterm();
    let mut a = a;
    let status = eventually("op-a exits", || {
        let s = a.child.try_wait().ok().flatten();
        async move { s }
    })
    .await;
    assert!(status.success(), "op-a exit status {status:?}");
    eventually("op-b takes over", || async {
        (lease_holder(&client, lease).await? == "op-b").then_some(())
    })
    .await;
    hubs.create(
        &PostParams::default(),
        &hub_from(
            json!({"apiVersion": "roomcast.dev/v1alpha1", "kind": "SocketIOHub",
            "metadata": {"name": "two"}, "spec": {}}),
        ),
    )
    .await
    .unwrap();
    let _: StatefulSet = eventually("hub two reconciled by the new leader", || {
        get(&client, ns, "two")
    })
    .await;
    assert_eq!(b.metric("roomcast_operator_leader").await, Some(1.0));
    assert_eq!(b.identity, "op-b");

    // A killed leader (no release) is replaced once its lease expires.
    b.child.kill().unwrap();
    let _ = b.child.wait();
    let c = Operator::start("op-c", lease, Some(ns));
    let start = Instant::now();
    let wait = Duration::from_secs(25);
    loop {
        if lease_holder(&client, lease).await.as_deref() == Some("op-c") {
            break;
        }
        assert!(
            start.elapsed() < wait,
            "op-c did not take over an expired lease"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        start.elapsed() > Duration::from_secs(5),
        "took over a lease that had not expired"
    );
    assert_eq!(c.identity, "op-c");

    // A leader that finds the Lease taken stops acting at once: it exits non-zero.
    let leases: Api<Lease> =
        Api::namespaced(client.clone(), &env("ROOMCAST_E2E_RELEASE_NAMESPACE"));
    eventually("lease stolen (retried on write conflicts)", || {
        let leases = leases.clone();
        async move {
            let mut l = leases.get(lease).await.ok()?;
            let spec = l.spec.as_mut()?;
            spec.holder_identity = Some("thief".into());
            spec.renew_time = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
                k8s_openapi::jiff::Timestamp::now(),
            ));
            leases
                .replace(lease, &PostParams::default(), &l)
                .await
                .ok()
                .map(|_| ())
        }
    })
    .await;
    let mut c = c;
    let status = eventually("op-c exits after losing the lease", || {
        let s = c.child.try_wait().ok().flatten();
        async move { s }
    })
    .await;
    assert!(
        !status.success(),
        "op-c must exit with an error, got {status:?}"
    );
}

#[tokio::test]
#[ignore = "needs the control plane of e2e/operator-tests.sh"]
async fn undecodable_hub_does_not_stop_the_watch() {
    let client = admin().await;
    let ns = "e2e-undecodable";
    namespace(&client, ns).await;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let hubs: Api<SocketIOHub> = Api::namespaced(client.clone(), ns);
    let raw: Api<kube::api::DynamicObject> = Api::namespaced_with(
        client.clone(),
        ns,
        &kube::api::ApiResource::erase::<SocketIOHub>(&()),
    );

    // Version skew: a CRD newer than the operator admits a value the operator's types do not
    // know (here a new imagePullPolicy). Loosen that field's schema for this test.
    let mut loose = crds.get("socketiohubs.roomcast.dev").await.unwrap();
    let schema = loose.spec.versions[0]
        .schema
        .as_mut()
        .unwrap()
        .open_api_v3_schema
        .as_mut()
        .unwrap();
    let spec = schema.properties.as_mut().unwrap().get_mut("spec").unwrap();
    spec.properties.as_mut().unwrap().insert(
        "imagePullPolicy".into(),
        serde_json::from_value(json!({"type": "string"})).unwrap(),
    );
    crds.replace("socketiohubs.roomcast.dev", &PostParams::default(), &loose)
        .await
        .unwrap();
    let broken: kube::api::DynamicObject = serde_json::from_value(json!({
        "apiVersion": "roomcast.dev/v1alpha1", "kind": "SocketIOHub",
        "metadata": {"name": "broken", "namespace": ns},
        "spec": {"imagePullPolicy": "Sometimes"}
    }))
    .unwrap();
    eventually(
        "the newer schema admits a hub the operator cannot decode",
        || {
            let raw = raw.clone();
            let broken = broken.clone();
            async move {
                raw.create(&PostParams::default(), &broken)
                    .await
                    .ok()
                    .map(|_| ())
            }
        },
    )
    .await;

    let _op = Operator::start("undecodable-op", "undecodable-lease", Some(ns));
    hubs.create(
        &PostParams::default(),
        &hub_from(
            json!({"apiVersion": "roomcast.dev/v1alpha1", "kind": "SocketIOHub",
            "metadata": {"name": "fine"}, "spec": {}}),
        ),
    )
    .await
    .unwrap();
    // The valid hub is reconciled although the list the watch got holds an undecodable one ...
    let _: StatefulSet = eventually("valid hub reconciled", || get(&client, ns, "fine")).await;
    // ... and the undecodable one is reported.
    let reason = eventually("broken hub reported Degraded/Undecodable", || async {
        let o = raw.get("broken").await.ok()?;
        let conds = o.data.get("status")?.get("conditions")?.as_array()?.clone();
        conds
            .iter()
            .find(|c| c["type"] == "Degraded" && c["status"] == "True")
            .map(|c| {
                (
                    c["reason"].as_str().unwrap_or_default().to_string(),
                    c["message"].to_string(),
                )
            })
    })
    .await;
    assert_eq!(reason.0, "Undecodable", "{reason:?}");
    assert!(get::<StatefulSet>(&client, ns, "broken").await.is_none());
    raw.delete("broken", &DeleteParams::default())
        .await
        .unwrap();
}

/// A client authenticated as `pod` of `hub` the way the kubelet does it: a token bound to the
/// pod (so the API server records the pod name in a CSR's `extra`).
async fn pod_client(admin: &Client, ns: &str, sa: &str, pod: &Pod) -> Client {
    use k8s_openapi::api::authentication::v1::{
        BoundObjectReference, TokenRequest, TokenRequestSpec,
    };
    let sas: Api<ServiceAccount> = Api::namespaced(admin.clone(), ns);
    let tr = TokenRequest {
        spec: Some(TokenRequestSpec {
            audiences: None,
            expiration_seconds: Some(3600),
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: pod.metadata.name.clone(),
                uid: pod.metadata.uid.clone(),
            }),
        }),
        ..TokenRequest::default()
    };
    let token = sas
        .create_token_request(sa, &PostParams::default(), &tr)
        .await
        .expect("token request")
        .status
        .expect("token")
        .token;
    let kc = Kubeconfig::read_from(env("ROOMCAST_E2E_KUBECONFIG")).expect("admin kubeconfig");
    let mut cfg = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("config");
    cfg.auth_info = serde_json::from_value(json!({ "token": token })).expect("auth info");
    Client::try_from(cfg).expect("pod client")
}

/// Creates a CSR for the peer signer and waits until it is issued or refused.
async fn request_cert(
    client: &Client,
    names: (&str, &[&str]),
    usages: &[&str],
) -> (Option<String>, Option<String>) {
    use k8s_openapi::api::certificates::v1::{
        CertificateSigningRequest, CertificateSigningRequestSpec,
    };
    let key = rcgen::KeyPair::generate().unwrap();
    let mut p =
        rcgen::CertificateParams::new(names.1.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap();
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::CommonName, names.0);
    p.distinguished_name = dn;
    let pem = p.serialize_request(&key).unwrap().pem().unwrap();
    let csr = CertificateSigningRequest {
        metadata: kube::api::ObjectMeta {
            generate_name: Some("e2e-".into()),
            ..Default::default()
        },
        spec: CertificateSigningRequestSpec {
            signer_name: "roomcast.io/peer".into(),
            request: k8s_openapi::ByteString(pem.into_bytes()),
            usages: Some(usages.iter().map(|u| u.to_string()).collect()),
            expiration_seconds: Some(3600),
            ..Default::default()
        },
        status: None,
    };
    let api: Api<CertificateSigningRequest> = Api::all(client.clone());
    let name = api
        .create(&PostParams::default(), &csr)
        .await
        .expect("creating the CSR")
        .name_any();
    let admin_api: Api<CertificateSigningRequest> = Api::all(admin().await);
    eventually("the CSR to be decided", || async {
        let c = admin_api.get(&name).await.ok()?;
        let st = c.status?;
        if let Some(cert) = st.certificate.filter(|c| !c.0.is_empty()) {
            return Some((Some(String::from_utf8(cert.0).unwrap()), None));
        }
        let denied = st
            .conditions?
            .into_iter()
            .find(|c| c.type_ == "Denied" || c.type_ == "Failed")?;
        Some((None, denied.message))
    })
    .await
}

fn parse_pem_cert(pem: &str) -> Vec<u8> {
    x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .expect("pem")
        .1
        .contents
}

const PEER_USAGES: [&str; 3] = ["digital signature", "client auth", "server auth"];

#[tokio::test]
#[ignore = "needs the control plane of e2e/operator-tests.sh"]
async fn peer_ca_trust_bundle_csr_signer_and_ca_rotation() {
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
    let client = admin().await;
    let ns = "e2e-peer-certs";
    namespace(&client, ns).await;
    let _op = Operator::start("certs-op", "certs-lease", Some(ns));
    let hubs: Api<SocketIOHub> = Api::namespaced(client.clone(), ns);
    let hub = hub_from(json!({
        "apiVersion": "roomcast.dev/v1alpha1", "kind": "SocketIOHub",
        "metadata": {"name": "mesh"},
        "spec": {"replicas": 2, "peerTls": {"rotationSettleSeconds": 0}}
    }));
    hubs.create(&PostParams::default(), &hub)
        .await
        .expect("creating hub");

    // The CA Secret and the trust bundle holding exactly that CA.
    let ca = peer_ca(&client, ns, "mesh").await;
    let ca_info = roomcast_operator::peer_ca::inspect(&ca.cert_pem).unwrap();
    assert!(ca_info.not_after - ca_info.not_before >= 365 * 86400);
    assert!(ca.key_pem.contains("PRIVATE KEY"));
    let trust: ConfigMap = eventually("the trust ConfigMap", || async {
        get::<ConfigMap>(&client, ns, "mesh-peer-trust").await
    })
    .await;
    assert_eq!(
        trust.data.as_ref().unwrap()["ca.crt"].trim(),
        ca.cert_pem.trim()
    );
    // The pods never mount the CA Secret; they get an in-memory emptyDir for their own key.
    let sts: StatefulSet = get(&client, ns, "mesh").await.unwrap();
    let pod_spec = sts.spec.unwrap().template.spec.unwrap();
    let volumes = serde_json::to_string(&pod_spec.volumes).unwrap();
    assert!(!volumes.contains("mesh-peer-ca"), "{volumes}");
    assert!(volumes.contains("\"medium\":\"Memory\""), "{volumes}");
    // The hub's ServiceAccount may create CSRs (cluster-wide binding) and read only its trust
    // ConfigMap.
    let bindings: Api<k8s_openapi::api::rbac::v1::ClusterRoleBinding> = Api::all(client.clone());
    eventually("the CSR ClusterRoleBinding", || async {
        bindings
            .get_opt("roomcast-peer-csr-e2e-peer-certs-mesh")
            .await
            .ok()
            .flatten()
    })
    .await;

    // The StatefulSet controller made the pod objects (no kubelet here, none needed).
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let pod0 = eventually("pod mesh-0", || async {
        pods.get_opt("mesh-0").await.ok().flatten()
    })
    .await;
    let as_pod = pod_client(&client, ns, "mesh", &pod0).await;

    // Right identity: approved and signed, valid for the pod name, chaining to the CA.
    let (cert, why) = request_cert(&as_pod, ("mesh-0", &["mesh-0"]), &PEER_USAGES).await;
    let cert = cert.unwrap_or_else(|| panic!("denied: {why:?}"));
    let leaf_der = parse_pem_cert(&cert);
    let (_, leaf) = X509Certificate::from_der(&leaf_der).unwrap();
    let ca_der = parse_pem_cert(&ca.cert_pem);
    let (_, ca_cert) = X509Certificate::from_der(&ca_der).unwrap();
    leaf.verify_signature(Some(ca_cert.public_key()))
        .expect("leaf signed by the hub CA");
    let sans = leaf
        .subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names
        .clone();
    assert_eq!(sans, vec![GeneralName::DNSName("mesh-0")]);
    let life = leaf.validity().not_after.timestamp() - leaf.validity().not_before.timestamp();
    assert!(life <= 3600 + 60, "requested an hour, got {life}s");

    // Forged requests: another pod's name, an extra name, other usages, not a pod's token.
    let (c, why) = request_cert(&as_pod, ("mesh-1", &["mesh-1"]), &PEER_USAGES).await;
    assert!(c.is_none() && why.unwrap().contains("must name exactly the pod"));
    let (c, _) = request_cert(&as_pod, ("mesh-0", &["mesh-0", "mesh-1"]), &PEER_USAGES).await;
    assert!(c.is_none());
    let (c, why) = request_cert(
        &as_pod,
        ("mesh-0", &["mesh-0"]),
        &["digital signature", "client auth"],
    )
    .await;
    assert!(c.is_none() && why.unwrap().contains("usages"));
    let (c, why) = request_cert(&client, ("mesh-0", &["mesh-0"]), &PEER_USAGES).await;
    assert!(c.is_none() && why.unwrap().contains("service account"));

    // CA rotation on request: the bundle carries old+new, new requests are signed by the
    // new CA, and once every pod holds a leaf of it the old CA leaves the bundle.
    hubs.patch(
        "mesh",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": {"roomcast.io/rotate-peer-ca": "1"}}})),
    )
    .await
    .unwrap();
    let rotated = eventually("a rotated CA", || async {
        let m = CaMaterial::from_secret(&get::<Secret>(&client, ns, "mesh-peer-ca").await?)?;
        (m.cert_pem != ca.cert_pem).then_some(m)
    })
    .await;
    assert_eq!(
        rotated.previous_cert_pem.as_deref(),
        Some(ca.cert_pem.as_str())
    );
    let bundle = get::<ConfigMap>(&client, ns, "mesh-peer-trust")
        .await
        .unwrap()
        .data
        .unwrap()["ca.crt"]
        .clone();
    assert!(bundle.contains(ca.cert_pem.trim()) && bundle.contains(rotated.cert_pem.trim()));
    let new_ca_der = parse_pem_cert(&rotated.cert_pem);
    let (_, new_ca) = X509Certificate::from_der(&new_ca_der).unwrap();
    let mut renewed = Vec::new();
    for name in ["mesh-0", "mesh-1"] {
        let pod = eventually("pod", || async { pods.get_opt(name).await.ok().flatten() }).await;
        let c = pod_client(&client, ns, "mesh", &pod).await;
        let (cert, why) = request_cert(&c, (name, &[name]), &PEER_USAGES).await;
        renewed.push(cert.unwrap_or_else(|| panic!("denied: {why:?}")));
    }
    for cert in &renewed {
        let der = parse_pem_cert(cert);
        let (_, leaf) = X509Certificate::from_der(&der).unwrap();
        leaf.verify_signature(Some(new_ca.public_key()))
            .expect("signed by the new CA");
    }
    eventually("the old CA to leave the bundle", || async {
        let b = get::<ConfigMap>(&client, ns, "mesh-peer-trust")
            .await?
            .data?["ca.crt"]
            .clone();
        (b.trim() == rotated.cert_pem.trim()).then_some(())
    })
    .await;

    // The cluster-scoped binding cannot be garbage-collected through the hub: an operator
    // sweeps it (at start, then every 5 minutes) once the hub is gone.
    hubs.delete("mesh", &DeleteParams::default()).await.unwrap();
    eventually("the hub to be gone", || async {
        hubs.get_opt("mesh")
            .await
            .ok()
            .and_then(|h| h.is_none().then_some(()))
    })
    .await;
    drop(_op);
    let _op2 = Operator::start("certs-op2", "certs-lease2", Some(ns));
    eventually(
        "the CSR ClusterRoleBinding of the deleted hub to be swept",
        || async {
            match bindings
                .get_opt("roomcast-peer-csr-e2e-peer-certs-mesh")
                .await
            {
                Ok(None) => Some(()),
                _ => None,
            }
        },
    )
    .await;
}

async fn pdb_disruptions_allowed(client: &Client, ns: &str, name: &str) -> Option<i32> {
    let pdb: PodDisruptionBudget = get(client, ns, name).await?;
    pdb.status?.disruptions_allowed
}

async fn evict(pods: &Api<Pod>, name: &str) -> Result<(), u16> {
    match pods.evict(name, &kube::api::EvictParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) => Err(e.code),
        Err(e) => panic!("evicting {name}: {e}"),
    }
}

#[tokio::test]
#[ignore = "needs the control plane of e2e/operator-tests.sh"]
async fn pdb_is_honoured_by_the_eviction_api() {
    let client = admin().await;
    let ns = "e2e-evict";
    namespace(&client, ns).await;
    let _op = Operator::start("evict-op", "evict-lease", Some(ns));
    let hubs: Api<SocketIOHub> = Api::namespaced(client.clone(), ns);
    hubs.create(
        &PostParams::default(),
        &hub_from(
            json!({"apiVersion": "roomcast.dev/v1alpha1", "kind": "SocketIOHub",
            "metadata": {"name": "ev"}, "spec": {"replicas": 2}}),
        ),
    )
    .await
    .unwrap();
    // The disruption controller (kube-controller-manager) allows one disruption once both
    // pods (created through restricted admission, marked ready here) are healthy.
    eventually("PDB allows one disruption", || async {
        mark_pods_ready(&client, ns, "ev").await;
        (pdb_disruptions_allowed(&client, ns, "ev").await? == 1).then_some(())
    })
    .await;
    // Without kube's retries, which would wait out the 429's Retry-After again and again.
    let kc = Kubeconfig::read_from(env("ROOMCAST_E2E_KUBECONFIG")).expect("admin kubeconfig");
    let mut cfg = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("admin config");
    cfg.default_retry = false;
    let pods: Api<Pod> = Api::namespaced(Client::try_from(cfg).expect("client"), ns);
    assert_eq!(evict(&pods, "ev-0").await, Ok(()), "the first eviction");
    // The API server counts the eviction in the PDB at once: a second one is refused while
    // ev-0 is not back and ready.
    assert_eq!(evict(&pods, "ev-1").await, Err(429), "a second eviction");
    // Once the replacement is ready again, the budget allows an eviction again. Two
    // controllers must act in turn (the StatefulSet controller recreates ev-0, the disruption
    // controller recounts): on a loaded 2-core CI machine that took longer than 30 s once.
    eventually_within(
        Duration::from_secs(90),
        "eviction allowed after the replacement is ready",
        || async {
            mark_pods_ready(&client, ns, "ev").await;
            (pdb_disruptions_allowed(&client, ns, "ev").await? == 1).then_some(())
        },
    )
    .await;
    assert_eq!(
        evict(&pods, "ev-1").await,
        Ok(()),
        "eviction after recovery"
    );
    hubs.delete("ev", &DeleteParams::default()).await.unwrap();
}

#[tokio::test]
#[ignore = "needs the control plane of e2e/operator-tests.sh"]
async fn scoped_install_reconciles_only_the_watched_namespaces() {
    let client = admin().await;
    let watched = env("ROOMCAST_E2E_SCOPED_NAMESPACES");
    let (release, release_ns) = env("ROOMCAST_E2E_SCOPED_RELEASE")
        .split_once('/')
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .expect("name/namespace");
    let csr_role = format!("{release}-hub-csr");
    let watched_ns: Vec<&str> = watched.split(',').collect();
    let elsewhere = "e2e-unwatched";
    for ns in watched_ns.iter().chain([&elsewhere]) {
        namespace(&client, ns).await;
    }
    // The chart's RBAC for this release (Roles in the watched namespaces only) is all it has.
    let _op = Operator::start_as(
        &env("ROOMCAST_E2E_SCOPED_KUBECONFIG"),
        &release_ns,
        &["--hub-csr-cluster-role", &csr_role],
        "scoped-op",
        "scoped-lease",
        Some(&watched),
    );
    let hub = || {
        hub_from(
            json!({"apiVersion": "roomcast.dev/v1alpha1", "kind": "SocketIOHub",
            "metadata": {"name": "scoped"}, "spec": {"replicas": 1}}),
        )
    };
    for ns in watched_ns.iter().chain([&elsewhere]) {
        Api::<SocketIOHub>::namespaced(client.clone(), ns)
            .create(&PostParams::default(), &hub())
            .await
            .unwrap();
    }
    for ns in &watched_ns {
        let hubs: Api<SocketIOHub> = Api::namespaced(client.clone(), ns);
        eventually(&format!("hub in watched {ns} Ready"), || async {
            mark_pods_ready(&client, ns, "scoped").await;
            let h = hubs.get("scoped").await.ok()?;
            (condition(&h, "Ready")?.0 == "True").then_some(())
        })
        .await;
        let binding = builders::names::csr_binding(ns, "scoped");
        let crbs: Api<k8s_openapi::api::rbac::v1::ClusterRoleBinding> = Api::all(client.clone());
        let crb = crbs.get(&binding).await.expect("the hub's CSR binding");
        assert_eq!(crb.role_ref.name, csr_role);
    }
    // The watched hubs are done; the other one has had the same time and is untouched.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let other: SocketIOHub = get(&client, elsewhere, "scoped").await.unwrap();
    assert!(other.status.is_none(), "hub outside the scope got a status");
    assert!(
        get::<StatefulSet>(&client, elsewhere, "scoped")
            .await
            .is_none(),
        "hub outside the scope got a StatefulSet"
    );
    for ns in watched_ns.iter().chain([&elsewhere]) {
        Api::<SocketIOHub>::namespaced(client.clone(), ns)
            .delete("scoped", &DeleteParams::default())
            .await
            .unwrap();
    }
}

/// Serves `/metrics` with `roomcast_connections <n>` and `roomcast_app_links 3` on 127.0.0.1
/// until the task is aborted.
async fn fake_hub_metrics(n: u64) -> (u16, tokio::task::JoinHandle<()>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let body = format!("# TYPE roomcast_connections gauge\nroomcast_connections {n}\nroomcast_connections_limit 100\nroomcast_app_links 3\nroomcast_app_links_refused_total 5\n");
                let _ = s
                    .write_all(format!("HTTP/1.0 200 OK\r\n\r\n{body}").as_bytes())
                    .await;
            });
        }
    });
    (port, task)
}

#[tokio::test]
#[ignore = "needs the control plane of e2e/operator-tests.sh"]
async fn connected_clients_column_from_the_pods_metrics() {
    let client = admin().await;
    let ns = "e2e-clients";
    namespace(&client, ns).await;
    // The tier's pods are API objects whose IP the test sets to 127.0.0.1 (no kubelet): a
    // loopback server stands in for their metrics port, reached through --stats-port.
    let (port, server) = fake_hub_metrics(7).await;
    let port_arg = port.to_string();
    let _op = Operator::start_as(
        &env("ROOMCAST_E2E_OPERATOR_KUBECONFIG"),
        &env("ROOMCAST_E2E_RELEASE_NAMESPACE"),
        &["--stats-port", &port_arg, "--stats-refresh-seconds", "1"],
        "clients-op",
        "clients-lease",
        Some(ns),
    );
    let hubs: Api<SocketIOHub> = Api::namespaced(client.clone(), ns);
    hubs.create(
        &PostParams::default(),
        &hub_from(
            json!({"apiVersion": "roomcast.dev/v1alpha1", "kind": "SocketIOHub",
            "metadata": {"name": "cc"}, "spec": {"replicas": 2}}),
        ),
    )
    .await
    .unwrap();
    eventually("connectedClients = 2 ready pods x 7", || async {
        mark_pods_ready(&client, ns, "cc").await;
        let h = hubs.get("cc").await.ok()?;
        (h.status?.connected_clients == Some(14)).then_some(())
    })
    .await;
    let out = kubectl(&["-n", ns, "get", "sio", "cc", "--no-headers"]);
    let row = String::from_utf8_lossy(&out.stdout).to_string();
    let cols: Vec<&str> = row.split_whitespace().collect();
    // The APPS column is blank (no linkedAppInstances): STATUS follows CLIENTS.
    assert_eq!(
        cols.get(1..5),
        Some(&["2", "2", "14", "AllReplicasReady"][..]),
        "{row}"
    );
    // The pods report app links, but the hub has none: no linkedAppInstances.
    let h = hubs.get("cc").await.unwrap();
    assert_eq!(h.status.unwrap().linked_app_instances, None);

    // A hub with app links: the most links any pod has (3 on each here), in the Apps column.
    hubs.create(
        &PostParams::default(),
        &hub_from(
            json!({"apiVersion": "roomcast.dev/v1alpha1", "kind": "SocketIOHub",
            "metadata": {"name": "cc-app"}, "spec": {"replicas": 2, "appLink": {"enabled": true}}}),
        ),
    )
    .await
    .unwrap();
    eventually("linkedAppInstances = 3", || async {
        mark_pods_ready(&client, ns, "cc-app").await;
        let st = hubs.get("cc-app").await.ok()?.status?;
        (st.linked_app_instances == Some(3) && st.connected_clients == Some(14)).then_some(())
    })
    .await;
    let out = kubectl(&["-n", ns, "get", "sio", "cc-app", "--no-headers"]);
    let row = String::from_utf8_lossy(&out.stdout).to_string();
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cols.get(1..5), Some(&["2", "2", "14", "3"][..]), "{row}");

    // No pod answers any more: the counts are dropped, not kept stale.
    server.abort();
    eventually("connectedClients unset when no pod answers", || async {
        let h = hubs.get("cc").await.ok()?;
        h.status?.connected_clients.is_none().then_some(())
    })
    .await;
    eventually("linkedAppInstances unset when no pod answers", || async {
        let st = hubs.get("cc-app").await.ok()?.status?;
        (st.linked_app_instances.is_none() && st.connected_clients.is_none()).then_some(())
    })
    .await;
    hubs.delete("cc", &DeleteParams::default()).await.unwrap();
    hubs.delete("cc-app", &DeleteParams::default())
        .await
        .unwrap();
}

#[tokio::test]
#[ignore = "needs the control plane of e2e/operator-tests.sh"]
async fn app_link_hub_gets_secret_service_port_policy_and_endpoint() {
    let client = admin().await;
    let ns = "e2e-applink";
    namespace(&client, ns).await;
    let _op = Operator::start("applink-op", "applink-lease", Some(ns));
    let hubs: Api<SocketIOHub> = Api::namespaced(client.clone(), ns);

    // The CRD's CEL rule refuses a port the hub already uses.
    let m = rejected(
        &hubs,
        json!({"appLink": {"enabled": true, "port": 3001}}),
        "port-taken",
    )
    .await;
    assert!(m.contains("appLink.port must differ"), "{m}");

    let hub = hubs
        .create(
            &PostParams::default(),
            &hub_from(json!({
                "apiVersion": "roomcast.dev/v1alpha1", "kind": "SocketIOHub",
                "metadata": {"name": "chat"},
                "spec": {
                    "replicas": 2,
                    "namespaces": [{"name": "/"}],
                    "appLink": {"enabled": true, "maxSessionsPerLink": 5000}
                }
            })),
        )
        .await
        .expect("creating hub");

    // The generated token Secret, the Service, the container port, the projected token,
    // the config and the NetworkPolicy rule.
    let secret: Secret =
        eventually("Secret chat-app-link", || get(&client, ns, "chat-app-link")).await;
    let app: Service = eventually("Service chat-app", || get(&client, ns, "chat-app")).await;
    let sts: StatefulSet = eventually("StatefulSet", || get(&client, ns, "chat")).await;
    let cm: ConfigMap = eventually("ConfigMap", || get(&client, ns, "chat-config")).await;
    let np: NetworkPolicy = eventually("NetworkPolicy", || get(&client, ns, "chat")).await;
    let mgmt: Secret =
        eventually("management Secret", || get(&client, ns, "chat-management")).await;
    assert!(owned_by(&secret.metadata, &hub) && owned_by(&app.metadata, &hub));
    let token = String::from_utf8(secret.data.as_ref().unwrap()["token"].0.clone()).unwrap();
    assert_eq!(token.len(), 64, "generated token is 32 random bytes in hex");
    assert!(token.bytes().all(|b| b.is_ascii_hexdigit()));
    let mgmt_token = String::from_utf8(mgmt.data.as_ref().unwrap()["token"].0.clone()).unwrap();
    assert_ne!(token, mgmt_token, "a token of its own");
    let spec = app.spec.as_ref().unwrap();
    assert_eq!(spec.type_.as_deref(), Some("ClusterIP"));
    let port = &spec.ports.as_ref().unwrap()[0];
    assert_eq!(
        (port.name.as_deref(), port.port, port.target_port.clone()),
        (
            Some("app-link"),
            5100,
            Some(
                k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(
                    "app-link".into()
                )
            )
        )
    );
    let pod_spec = sts.spec.as_ref().unwrap().template.spec.clone().unwrap();
    let container_port = pod_spec.containers[0]
        .ports
        .as_ref()
        .unwrap()
        .iter()
        .find(|p| p.name.as_deref() == Some("app-link"))
        .map(|p| p.container_port);
    assert_eq!(container_port, Some(5100));
    let pod_json = serde_json::to_string(&pod_spec).unwrap();
    assert!(
        pod_json.contains(r#"{"items":[{"key":"token","path":"app-link-token"}],"name":"chat-app-link","optional":false}"#),
        "{pod_json}"
    );
    let desired = builders::build(
        &hub,
        &BuildOptions {
            default_image: "roomcast/roomcast-dataplane:e2e".into(),
            management_token: Some(mgmt_token),
            app_link_token: Some(token.clone()),
            peer_ca: peer_ca(&client, ns, "chat").await,
            csr_cluster_role: "roomcast-operator-hub-csr".into(),
            references_hash: None,
        },
    )
    .unwrap();
    assert_eq!(
        cm.data, desired.config_map.data,
        "ConfigMap holds the rendered config"
    );
    let config = roomcast_config::Config::parse(&cm.data.as_ref().unwrap()["config.yaml"], "yaml")
        .expect("the data plane parses the file");
    config.validate().expect("the data plane accepts the file");
    assert_eq!(
        config.app_link.listen,
        Some("0.0.0.0:5100".parse().unwrap())
    );
    assert_eq!(
        config.app_link.token_file.as_deref(),
        Some(std::path::Path::new("/etc/roomcast-secrets/app-link-token"))
    );
    assert_eq!(config.app_link.max_sessions_per_link, 5000);
    assert_eq!(
        config.app_link.max_queued_bytes,
        64 * 1024 * 1024,
        "the data plane's default"
    );
    assert_eq!(
        policy_rules(&np).last(),
        Some(&(5100, Some(json!([{"podSelector": {}}]))))
    );
    assert_eq!(
        serde_json::to_value(&app).unwrap()["spec"]["selector"],
        json!({"app.kubernetes.io/instance": "chat", "app.kubernetes.io/name": "roomcast-hub"})
    );

    // status.appEndpoint, next to the other endpoints.
    let st = eventually("status.appEndpoint", || async {
        let st = hubs.get("chat").await.ok()?.status?;
        st.app_endpoint.is_some().then_some(st)
    })
    .await;
    assert_eq!(
        st.app_endpoint.as_deref(),
        Some("chat-app.e2e-applink.svc:5100")
    );
    assert_eq!(
        st.management_endpoint.as_deref(),
        Some("http://chat-management.e2e-applink.svc:3001")
    );

    // A change of the port and of allowedFrom: the token is kept; Service, port, rule and
    // endpoint follow.
    hubs.patch(
        "chat",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"appLink": {"port": 5200,
            "allowedFrom": [{"podSelector": {"matchLabels": {"app": "chat-app"}}}]}}})),
    )
    .await
    .unwrap();
    eventually("port 5200 everywhere", || async {
        let app: Service = get(&client, ns, "chat-app").await?;
        let np: NetworkPolicy = get(&client, ns, "chat").await?;
        let st = hubs.get("chat").await.ok()?.status?;
        let sts: StatefulSet = get(&client, ns, "chat").await?;
        let ports = sts.spec?.template.spec?.containers[0].ports.clone()?;
        let ok = app.spec?.ports?[0].port == 5200
            && policy_rules(&np).last()
                == Some(&(
                    5200,
                    Some(json!([{"podSelector": {"matchLabels": {"app": "chat-app"}}}])),
                ))
            && st.app_endpoint.as_deref() == Some("chat-app.e2e-applink.svc:5200")
            && ports
                .iter()
                .any(|p| p.name.as_deref() == Some("app-link") && p.container_port == 5200);
        ok.then_some(())
    })
    .await;
    let kept: Secret = get(&client, ns, "chat-app-link").await.unwrap();
    assert_eq!(
        kept.data.unwrap()["token"].0,
        token.as_bytes(),
        "token kept"
    );

    // What app links exclude, added to the running hub: Degraded/InvalidSpec naming the
    // field, nothing applied (the StatefulSet keeps its template).
    let before: StatefulSet = get(&client, ns, "chat").await.unwrap();
    let hash_of = |s: &StatefulSet| {
        s.spec
            .as_ref()
            .unwrap()
            .template
            .metadata
            .as_ref()
            .unwrap()
            .annotations
            .as_ref()
            .unwrap()["roomcast.dev/config-hash"]
            .clone()
    };
    hubs.patch(
        "chat",
        &PatchParams::default(),
        &Patch::Merge(
            json!({"spec": {"namespaces": [{"name": "/"}, {"name": "/dev", "relay": true}]}}),
        ),
    )
    .await
    .unwrap();
    let msg = condition_message(&hubs, "chat", "Degraded", "True", "InvalidSpec").await;
    assert!(
        msg.contains("spec.namespaces[1].relay (/dev): not available with spec.appLink.enabled"),
        "{msg}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after: StatefulSet = get(&client, ns, "chat").await.unwrap();
    assert_eq!(hash_of(&after), hash_of(&before), "nothing applied");
    hubs.patch(
        "chat",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"namespaces": [{"name": "/"}]}})),
    )
    .await
    .unwrap();
    condition_message(&hubs, "chat", "Degraded", "False", "AsExpected").await;

    // A new hub with client auth and recovery: refused, each field named, no StatefulSet.
    hubs.create(
        &PostParams::default(),
        &hub_from(json!({
            "apiVersion": "roomcast.dev/v1alpha1", "kind": "SocketIOHub",
            "metadata": {"name": "authed"},
            "spec": {
                "appLink": {"enabled": true},
                "auth": {"jwksUrl": "https://idp.example/jwks.json"},
                "connectionStateRecovery": {"maxDisconnectionDuration": 60000}
            }
        })),
    )
    .await
    .unwrap();
    let msg = condition_message(&hubs, "authed", "Degraded", "True", "InvalidSpec").await;
    assert!(msg.contains("spec.auth: client authentication by the hub is not available with spec.appLink.enabled"), "{msg}");
    assert!(
        msg.contains("spec.connectionStateRecovery: not available with spec.appLink.enabled"),
        "{msg}"
    );
    assert!(get::<StatefulSet>(&client, ns, "authed").await.is_none());
    assert!(get::<Secret>(&client, ns, "authed-app-link")
        .await
        .is_none());

    // The hub's own token Secret: the generated one goes, the pods read the user's key.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let own: Secret = serde_json::from_value(json!({
        "metadata": {"name": "app-token"}, "stringData": {"t": "0123456789abcdef0123"}
    }))
    .unwrap();
    secrets.create(&PostParams::default(), &own).await.unwrap();
    hubs.patch(
        "chat",
        &PatchParams::default(),
        &Patch::Merge(
            json!({"spec": {"appLink": {"tokenSecretRef": {"name": "app-token", "key": "t"}}}}),
        ),
    )
    .await
    .unwrap();
    eventually("generated Secret deleted, own key projected", || async {
        let gone = get::<Secret>(&client, ns, "chat-app-link").await.is_none();
        let sts: StatefulSet = get(&client, ns, "chat").await?;
        let text = serde_json::to_string(&sts.spec?.template.spec?).ok()?;
        (gone && text.contains(r#""key":"t","path":"app-link-token""#)).then_some(())
    })
    .await;
    let st = hubs.get("chat").await.unwrap().status.unwrap();
    assert!(
        st.references_hash.is_some(),
        "the own Secret is a checked reference"
    );

    // App links off: the Service, the rule, the port and the endpoint go; the user's
    // Secret stays.
    hubs.patch(
        "chat",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"appLink": {"enabled": false}}})),
    )
    .await
    .unwrap();
    eventually("app link objects gone", || async {
        let gone = get::<Service>(&client, ns, "chat-app").await.is_none();
        let np: NetworkPolicy = get(&client, ns, "chat").await?;
        let st = hubs.get("chat").await.ok()?.status?;
        let sts: StatefulSet = get(&client, ns, "chat").await?;
        let text = serde_json::to_string(&sts.spec?.template.spec?).ok()?;
        let cm: ConfigMap = get(&client, ns, "chat-config").await?;
        let ok = gone
            && policy_rules(&np).iter().all(|(p, _)| *p != 5200)
            && st.app_endpoint.is_none()
            && !text.contains("app-link")
            && !cm.data?["config.yaml"].contains("appLink");
        ok.then_some(())
    })
    .await;
    assert!(get::<Secret>(&client, ns, "app-token").await.is_some());
    hubs.delete("chat", &DeleteParams::default()).await.unwrap();
    hubs.delete("authed", &DeleteParams::default())
        .await
        .unwrap();
}

/// Taint of the pod runner's Node in this tier (e2e/operator-tests.sh): only hubs that
/// tolerate it are placed there (and really run); every other pod stays unscheduled.
const RUNNER_TAINT: &str = "roomcast.dev/pod-runner";

/// `(status, reason, message)` of the hub's condition `ty`.
fn condition_full(hub: &SocketIOHub, ty: &str) -> Option<(String, String, String)> {
    let c = hub
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == ty)?;
    Some((c.status.clone(), c.reason.clone(), c.message.clone()))
}

/// Reasons of the operator's Events on hub `name`.
async fn event_reasons(client: &Client, ns: &str, name: &str) -> Vec<String> {
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), ns);
    let Ok(list) = events.list(&Default::default()).await else {
        return Vec::new();
    };
    list.items
        .iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .filter(|e| e.reporting_controller.as_deref() == Some("roomcast-operator"))
        .filter_map(|e| e.reason.clone())
        .collect()
}

/// Waits for the hub's condition `ty` to have `status` and `reason`; returns its message.
async fn condition_message(
    hubs: &Api<SocketIOHub>,
    hub: &str,
    ty: &str,
    status: &str,
    reason: &str,
) -> String {
    eventually(&format!("{hub}: {ty}={status} {reason}"), || async {
        let h = hubs.get(hub).await.ok()?;
        let c = condition_full(&h, ty)?;
        (c.0 == status && c.1 == reason).then_some(c.2)
    })
    .await
}

/// The references hash on the pod template of the hub's StatefulSet.
async fn template_references_hash(client: &Client, ns: &str, hub: &str) -> Option<String> {
    let sts = get::<StatefulSet>(client, ns, hub).await?;
    let annotations = sts.spec?.template.metadata?.annotations?;
    annotations.get("roomcast.dev/references-hash").cloned()
}

fn pod_annotation(pod: &Pod, key: &str) -> Option<String> {
    pod.metadata.annotations.as_ref()?.get(key).cloned()
}

#[tokio::test]
#[ignore = "needs the control plane of e2e/operator-tests.sh"]
async fn failures_show_in_status_and_events() {
    let client = admin().await;
    let ns = "e2e-failures";
    namespace(&client, ns).await;
    let _op = Operator::start_as(
        &env("ROOMCAST_E2E_OPERATOR_KUBECONFIG"),
        &env("ROOMCAST_E2E_RELEASE_NAMESPACE"),
        &["--pod-recheck-seconds", "1", "--secret-poll-seconds", "1"],
        "failures-op",
        "failures-lease",
        Some(ns),
    );
    let hubs: Api<SocketIOHub> = Api::namespaced(client.clone(), ns);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let on_runner = json!({
        "nodeSelector": {"roomcast.dev/pod-runner": "true"},
        "tolerations": [{"key": RUNNER_TAINT, "operator": "Exists", "effect": "NoSchedule"}],
    });
    // All hubs at once, so that their waits overlap.
    for (name, spec) in [
        // An image the runner (the kubelet stand-in) has no binary for.
        (
            "pull",
            json!({"replicas": 1, "image": "roomcast/no-such-image:1", "placement": on_runner}),
        ),
        // An image whose binary exits 1 at once (/bin/false).
        (
            "crash",
            json!({"replicas": 1, "image": "roomcast/crasher:1", "placement": on_runner}),
        ),
        // A nodeSelector no node has: kube-scheduler leaves the pod Pending.
        (
            "nowhere",
            json!({"replicas": 1, "placement": {
                "nodeSelector": {"roomcast.dev/no-such-node": "true"},
                "tolerations": [{"key": RUNNER_TAINT, "operator": "Exists", "effect": "NoSchedule"}],
            }}),
        ),
        // A JWT key in a Secret that does not exist yet.
        (
            "refs",
            json!({"replicas": 1, "auth": {"secretRef": {"name": "jwt", "key": "key"}}}),
        ),
    ] {
        hubs.create(
            &PostParams::default(),
            &hub_from(
                json!({"apiVersion": "roomcast.dev/v1alpha1", "kind": "SocketIOHub",
                "metadata": {"name": name}, "spec": spec}),
            ),
        )
        .await
        .unwrap();
    }

    // Missing Secret: Degraded/MissingReference naming field and Secret; nothing applied.
    let message = condition_message(&hubs, "refs", "Degraded", "True", "MissingReference").await;
    assert!(
        message.contains("spec.auth.secretRef") && message.contains("\"jwt\""),
        "{message}"
    );
    // A wrong key is InvalidReference; still nothing applied.
    let secret = |key: &str, value: &str| -> Secret {
        serde_json::from_value(json!({"metadata": {"name": "jwt"}, "stringData": {key: value}}))
            .unwrap()
    };
    secrets
        .create(&PostParams::default(), &secret("wrong", "x"))
        .await
        .unwrap();
    let message = condition_message(&hubs, "refs", "Degraded", "True", "InvalidReference").await;
    assert!(message.contains("has no key \"key\""), "{message}");
    assert!(
        get::<StatefulSet>(&client, ns, "refs").await.is_none(),
        "no StatefulSet rolled out while the reference is broken"
    );
    // Fixed: applied, with the hash of the referenced data in the pod template.
    secrets
        .patch(
            "jwt",
            &PatchParams::default(),
            &Patch::Merge(json!({"stringData": {"key": "first-key"}})),
        )
        .await
        .unwrap();
    let first = eventually("refs: StatefulSet with a references hash", || {
        template_references_hash(&client, ns, "refs")
    })
    .await;
    let first_pod = eventually("refs-0 ready (marked) with the first hash", || async {
        mark_pods_ready(&client, ns, "refs").await;
        let pod = get::<Pod>(&client, ns, "refs-0").await?;
        (pod_annotation(&pod, "roomcast.dev/references-hash").as_ref() == Some(&first))
            .then_some(pod)
    })
    .await;
    let h = eventually("refs: not Degraded, references hash in status", || async {
        let h = hubs.get("refs").await.ok()?;
        (condition(&h, "Degraded")?.0 == "False").then_some(h)
    })
    .await;
    assert_eq!(
        h.status.unwrap().references_hash.as_deref(),
        Some(first.as_str())
    );

    // Runner-scheduled failures: the runner reports them on the pods, the operator on the hub.
    for (hub, reason, words) in [
        ("pull", "ImagePullBackOff", "roomcast/no-such-image:1"),
        ("crash", "CrashLoopBackOff", "restarted"),
        (
            "nowhere",
            "Unschedulable",
            "didn't match Pod's node affinity/selector",
        ),
    ] {
        let (_, _, message) = eventually(&format!("{hub}: PodsHealthy=False {reason}"), || async {
            let h = hubs.get(hub).await.ok()?;
            let p = condition_full(&h, "PodsHealthy")?;
            let r = condition(&h, "Ready")?;
            (p.0 == "False" && p.1 == reason && r == ("False".into(), reason.into())).then_some(p)
        })
        .await;
        assert!(
            message.contains(&format!("{hub}-0")) && message.contains(words),
            "{hub}: {message}"
        );
        eventually(&format!("{hub}: Warning Event {reason}"), || async {
            event_reasons(&client, ns, hub)
                .await
                .iter()
                .any(|r| r == reason)
                .then_some(())
        })
        .await;
    }
    let crash_pod = get::<Pod>(&client, ns, "crash-0").await.unwrap();
    let cs = &crash_pod.status.unwrap().container_statuses.unwrap()[0];
    assert!(
        cs.restart_count >= 1,
        "the runner restarts the crashing process: {cs:?}"
    );
    assert_eq!(
        cs.last_state
            .as_ref()
            .and_then(|s| s.terminated.as_ref())
            .map(|t| t.exit_code),
        Some(1)
    );

    // An edit of the referenced Secret rolls the pods with a new hash.
    secrets
        .patch(
            "jwt",
            &PatchParams::default(),
            &Patch::Merge(json!({"stringData": {"key": "second-key"}})),
        )
        .await
        .unwrap();
    let second = eventually("refs: a new references hash in the template", || async {
        template_references_hash(&client, ns, "refs")
            .await
            .filter(|h| *h != first)
    })
    .await;
    eventually("refs-0 replaced by a pod with the new hash", || async {
        mark_pods_ready(&client, ns, "refs").await;
        let pod = get::<Pod>(&client, ns, "refs-0").await?;
        (pod.metadata.uid != first_pod.metadata.uid
            && pod_annotation(&pod, "roomcast.dev/references-hash").as_ref() == Some(&second))
        .then_some(())
    })
    .await;
    eventually("refs: ReferencesChanged Event", || async {
        event_reasons(&client, ns, "refs")
            .await
            .iter()
            .any(|r| r == "ReferencesChanged")
            .then_some(())
    })
    .await;
    for name in ["pull", "crash", "nowhere", "refs"] {
        hubs.delete(name, &DeleteParams::default()).await.unwrap();
    }
}

/// The hub's `spec.replicas`, `status.replicas` and its StatefulSet's `spec.replicas`.
async fn hub_and_sts_replicas(client: &Client, ns: &str, hub: &str) -> Option<(i32, i32, i32)> {
    let h: SocketIOHub = get(client, ns, hub).await?;
    let s: StatefulSet = get(client, ns, hub).await?;
    Some((h.spec.replicas, h.status?.replicas, s.spec?.replicas?))
}

/// The real HorizontalPodAutoscaler controller of kube-controller-manager scales a hub through
/// its scale subresource on `roomcast_connections` per pod, read from the custom metrics API
/// (served by the stand-in for prometheus-adapter, tests/metrics_standin), up and back down.
/// Named to run after `hub_lifecycle_...` (tests run in name order, one at a time): by then
/// kube-controller-manager has refreshed its discovery since the chart installed the CRD (see
/// below), which saves the tier up to 30 s.
#[tokio::test]
#[ignore = "needs the control plane of e2e/operator-tests.sh"]
async fn hub_scaled_by_the_hpa_controller_on_connections_per_pod() {
    let client = admin().await;
    let ns = "e2e-hpa";
    namespace(&client, ns).await;
    let standin = std::sync::Arc::new(MetricsStandin::start(&client, ns).await);
    standin.register(&client).await;
    // Panics in the scenario still unregister the APIService: an unavailable one would fail
    // discovery for the tests that follow.
    let scenario = tokio::spawn(hpa_scenario(client.clone(), standin.clone(), ns));
    let outcome = scenario.await;
    standin.unregister(&client).await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

async fn hpa_scenario(client: Client, standin: std::sync::Arc<MetricsStandin>, ns: &'static str) {
    let _op = Operator::start("hpa-op", "hpa-lease", Some(ns));
    let hubs: Api<SocketIOHub> = Api::namespaced(client.clone(), ns);
    hubs.create(
        &PostParams::default(),
        &hub_from(
            json!({"apiVersion": "roomcast.dev/v1alpha1", "kind": "SocketIOHub",
            "metadata": {"name": "auto"}, "spec": {"replicas": 1}}),
        ),
    )
    .await
    .unwrap();
    // The hub's pods never run here (no kubelet): the HPA controller counts only Running pods
    // for a Pods metric (Pending ones are left out of the average), so the test marks them
    // Running and Ready as they appear, as a kubelet would.
    let selector = eventually("one ready pod and status.selector", || async {
        mark_pods_ready(&client, ns, "auto").await;
        let st = hubs.get("auto").await.ok()?.status?;
        (st.ready_replicas == 1).then_some(st.selector?)
    })
    .await;
    let hpas: Api<k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler> =
        Api::namespaced(client.clone(), ns);
    let hpa = serde_json::from_value(json!({
        "metadata": {"name": "auto"},
        "spec": {
            "scaleTargetRef": {"apiVersion": "roomcast.dev/v1alpha1", "kind": "SocketIOHub", "name": "auto"},
            "minReplicas": 1, "maxReplicas": 3,
            "metrics": [{"type": "Pods", "pods": {
                "metric": {"name": metrics_standin::METRIC},
                "target": {"type": "AverageValue", "averageValue": "100"}}}],
            "behavior": {"scaleDown": {"stabilizationWindowSeconds": 0}}
        }
    }))
    .unwrap();
    hpas.create(&PostParams::default(), &hpa).await.unwrap();

    // 250 connections on the one pod, 100 wanted per pod: ceil(250 / 100) = 3 pods.
    // kube-controller-manager maps kinds to resources from a discovery cache it refreshes every
    // 30 s: if it last did before the chart installed the CRD, the HPA waits for that
    // ("no matches for kind SocketIOHub") first; later in the tier it knows the kind at once.
    standin.set(ns, 250);
    eventually_within(
        TIMEOUT + Duration::from_secs(30),
        "HPA scales the hub to 3 (hub, status, StatefulSet)",
        || async {
            mark_pods_ready(&client, ns, "auto").await;
            (hub_and_sts_replicas(&client, ns, "auto").await? == (3, 3, 3)).then_some(())
        },
    )
    .await;
    // The HPA controller asked through the aggregation layer, as itself, for the hub's pods.
    let queries = standin.queries();
    let sorted = |s: &str| {
        let mut v: Vec<String> = s.split(',').map(str::to_string).collect();
        v.sort();
        v
    };
    assert!(
        queries
            .iter()
            .any(|q| q.user == "system:kube-controller-manager"
                && q.namespace == ns
                && sorted(&q.selector) == sorted(&selector)),
        "no metrics query of the HPA controller for {selector}: {queries:?}"
    );
    let ready = eventually("3 ready pods, the HPA reads 250 per pod", || async {
        let n = mark_pods_ready(&client, ns, "auto").await;
        let h = hpas.get("auto").await.ok()?;
        let st = h.status?;
        let current = st
            .current_metrics?
            .first()?
            .pods
            .as_ref()?
            .current
            .average_value
            .clone()?;
        (n == 3 && current.0 == "250" && st.current_replicas == Some(3)).then_some(n)
    })
    .await;
    assert_eq!(ready, 3);

    // 20 per pod: ceil(3 x 20 / 100) = 1; no stabilization window, so at once.
    standin.set(ns, 20);
    eventually(
        "HPA scales the hub down to 1 (hub, status, StatefulSet)",
        || async {
            mark_pods_ready(&client, ns, "auto").await;
            (hub_and_sts_replicas(&client, ns, "auto").await? == (1, 1, 1)).then_some(())
        },
    )
    .await;
    let scaling_active = hpas
        .get("auto")
        .await
        .unwrap()
        .status
        .and_then(|s| s.conditions)
        .and_then(|cs| cs.into_iter().find(|c| c.type_ == "ScalingActive"))
        .map(|c| (c.status, c.reason));
    assert_eq!(
        scaling_active,
        Some(("True".into(), Some("ValidMetricFound".into())))
    );
    hpas.delete("auto", &DeleteParams::default()).await.unwrap();
    hubs.delete("auto", &DeleteParams::default()).await.unwrap();
}
