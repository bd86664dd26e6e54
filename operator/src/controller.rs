//! The reconcile loop: read → validate → check referenced Secrets → build → server-side apply
//! → read the pods' health → status.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{FutureExt, StreamExt};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use k8s_openapi::{ClusterResourceScope, NamespaceResourceScope};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::core::error_boundary::DeserializeGuard;
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use rand::RngCore;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tracing::{debug, info, warn};

use crate::builders::{self, names, BuildOptions, GeneratedToken, MANAGER, TOKEN_KEY};
use crate::ca_sync;
use crate::crd::{SocketIOHub, SocketIOHubStatus, GROUP, VERSION};
use crate::hub_stats::{self, StatsLimits};
use crate::metrics::Metrics;
use crate::pod_health::{self, PodHealth};
use crate::scope::Scope;
use crate::secret_poll::{self, Seen};
use crate::secret_refs;
use crate::status::{self, Observed, Problem};
use crate::validate::validate;
use crate::{Error, Result};

/// How often a healthy hub is re-reconciled even without events (corrects drift in objects
/// the operator does not watch, such as the generated Secret).
pub const RESYNC: Duration = Duration::from_secs(300);
/// Backoff after a failed reconcile: `BACKOFF_BASE * 2^(failures-1)`, at most `BACKOFF_MAX`.
pub const BACKOFF_BASE: Duration = Duration::from_secs(1);
pub const BACKOFF_MAX: Duration = Duration::from_secs(300);

/// How the operator follows what it does not watch: the hubs' pods and referenced Secrets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthChecks {
    /// Re-reconcile period of a hub whose pods are not all ready (`--pod-recheck-seconds`):
    /// how soon a pull or crash loop shows in its status (pods are listed, not watched).
    pub pod_recheck: Duration,
    /// Most pods read per hub and reconcile (`--pod-health-max-pods`); one list request.
    pub max_pods: u32,
    /// Period of the referenced-Secret poll (`--secret-poll-seconds`; crate::secret_poll).
    pub secret_poll: Duration,
}

impl Default for HealthChecks {
    fn default() -> Self {
        Self {
            pod_recheck: Duration::from_secs(10),
            max_pods: 500,
            secret_poll: Duration::from_secs(15),
        }
    }
}

/// Name of the chart's ClusterRole for hub CSRs for the release name `roomcast-operator`.
pub const DEFAULT_CSR_CLUSTER_ROLE: &str = "roomcast-operator-hub-csr";

/// Shared state of the reconcilers.
pub struct Context {
    pub client: Client,
    pub metrics: Arc<Metrics>,
    /// Data-plane image used when a hub sets none.
    pub default_image: String,
    /// Publishes Kubernetes Events on hubs (condition transitions, config changes).
    recorder: Recorder,
    /// The chart's ClusterRole bound to each hub's ServiceAccount (CSR create and get).
    pub csr_cluster_role: String,
    /// Bounds of the connected-clients reads (crate::hub_stats).
    pub stats_limits: StatsLimits,
    /// Pod and Secret follow-up (`--pod-*`, `--secret-poll-seconds`).
    pub health: HealthChecks,
    /// Referenced-Secret versions each hub's last reconcile saw (crate::secret_poll).
    secrets_seen: Arc<Seen>,
    /// Consecutive failures per hub (`namespace/name`), for exponential backoff.
    failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    /// `instance` names this operator process in the Events it publishes.
    pub fn new(
        client: Client,
        metrics: Arc<Metrics>,
        default_image: String,
        instance: Option<String>,
    ) -> Self {
        let reporter = Reporter {
            controller: MANAGER.to_string(),
            instance,
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            metrics,
            default_image,
            csr_cluster_role: DEFAULT_CSR_CLUSTER_ROLE.to_string(),
            stats_limits: StatsLimits::default(),
            health: HealthChecks::default(),
            secrets_seen: Arc::new(Seen::default()),
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Names the chart's ClusterRole for hub CSRs (`--hub-csr-cluster-role`).
    pub fn with_csr_cluster_role(mut self, name: String) -> Self {
        self.csr_cluster_role = name;
        self
    }

    /// Bounds of the connected-clients reads (`--stats-*`).
    pub fn with_stats_limits(mut self, limits: StatsLimits) -> Self {
        self.stats_limits = limits;
        self
    }

    /// Pod and Secret follow-up periods and bounds.
    pub fn with_health_checks(mut self, health: HealthChecks) -> Self {
        self.health = health;
        self
    }

    fn record(&self, key: &str, failed: bool) -> u32 {
        let mut f = match self.failures.lock() {
            Ok(f) => f,
            Err(poisoned) => poisoned.into_inner(),
        };
        if failed {
            let n = f.entry(key.to_string()).or_insert(0);
            *n = n.saturating_add(1);
            *n
        } else {
            f.remove(key);
            0
        }
    }
}

/// Backoff after `failures` consecutive failures.
pub fn backoff(failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(16);
    BACKOFF_BASE.saturating_mul(1 << exp).min(BACKOFF_MAX)
}

fn key_of<K: Resource>(obj: &K) -> String {
    format!(
        "{}/{}",
        obj.meta().namespace.as_deref().unwrap_or_default(),
        obj.meta().name.as_deref().unwrap_or_default()
    )
}

/// Seconds-precision now (what the API server stores), so a status read back compares equal.
fn now() -> Time {
    let ts = Timestamp::now();
    Time(Timestamp::from_second(ts.as_second()).unwrap_or(ts))
}

/// Reconciles one hub.
pub async fn reconcile(
    obj: Arc<DeserializeGuard<SocketIOHub>>,
    ctx: Arc<Context>,
) -> Result<Action> {
    let start = Instant::now();
    let key = key_of(obj.as_ref());
    let result = match &obj.0 {
        Ok(hub) => reconcile_hub(hub, &ctx).await,
        Err(invalid) => report_undecodable(&invalid.metadata, &invalid.error, &ctx).await,
    };
    let label = match &result {
        Ok((_, true)) => "ok",
        Ok((_, false)) => "invalid",
        Err(_) => "error",
    };
    ctx.metrics.observe(label, start.elapsed());
    match result {
        Ok((action, _)) => {
            ctx.record(&key, false);
            Ok(action)
        }
        Err(e) => {
            ctx.metrics.error(e.kind());
            Err(e)
        }
    }
}

/// Requeue policy on error: exponential per-object backoff.
pub fn error_policy(
    obj: Arc<DeserializeGuard<SocketIOHub>>,
    err: &Error,
    ctx: Arc<Context>,
) -> Action {
    let key = key_of(obj.as_ref());
    let failures = ctx.record(&key, true);
    let delay = backoff(failures);
    warn!(hub = %key, error = %err, failures, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// Returns the action and whether the hub was valid.
async fn reconcile_hub(hub: &SocketIOHub, ctx: &Context) -> Result<(Action, bool)> {
    let ns = hub
        .namespace()
        .ok_or_else(|| Error::InvalidHub("hub has no namespace".to_string()))?;
    let name = hub.name_any();
    if hub.metadata.deletion_timestamp.is_some() {
        // Owned objects are garbage-collected through their owner references.
        return Ok((Action::await_change(), true));
    }
    let client = &ctx.client;
    let hubs: Api<SocketIOHub> = Api::namespaced(client.clone(), &ns);
    let statefulsets: Api<StatefulSet> = Api::namespaced(client.clone(), &ns);

    let problems = validate(hub);
    if !problems.is_empty() {
        let message = problems.join("; ");
        info!(hub = %name, namespace = %ns, problems = %message, "hub spec is invalid");
        let sts = statefulsets.get_opt(&name).await?;
        let pods = hub_health(client, &ns, hub, sts.as_ref(), ctx.health.max_pods).await?;
        let observed = Observed {
            statefulset: sts.as_ref(),
            problem: Some(Problem::InvalidSpec(message)),
            pods: Some(pods),
            ..Observed::default()
        };
        write_status(&hubs, hub, status::compute(hub, &observed, &now()), ctx).await?;
        // No retry: the next change of the hub triggers a new reconcile.
        return Ok((Action::await_change(), false));
    }

    // Referenced Secrets first: a missing one leaves everything as it is (the pods would not
    // start), says why, and waits for the Secret (crate::secret_poll notices it).
    let refs = secret_refs::references(hub);
    let fetched = fetch_secrets(client, &ns, &refs).await?;
    ctx.secrets_seen.record(
        &ns,
        &name,
        fetched
            .iter()
            .map(|(n, s)| (n.clone(), secret_poll::version_of(s.as_ref())))
            .collect(),
    );
    let references_hash = match secret_refs::check(&refs, &fetched) {
        Ok(hash) => (!refs.is_empty()).then_some(hash),
        Err(problem) => {
            info!(hub = %name, namespace = %ns, ?problem, "a referenced Secret is missing or lacks its key: nothing applied");
            let sts = statefulsets.get_opt(&name).await?;
            let pods = hub_health(client, &ns, hub, sts.as_ref(), ctx.health.max_pods).await?;
            let observed = Observed {
                statefulset: sts.as_ref(),
                problem: Some(problem),
                pods: Some(pods),
                ..Observed::default()
            };
            write_status(&hubs, hub, status::compute(hub, &observed, &now()), ctx).await?;
            return Ok((Action::requeue(RESYNC), false));
        }
    };

    let management_token = generated_token(client, &ns, hub, GeneratedToken::Management).await?;
    let app_link_token = generated_token(client, &ns, hub, GeneratedToken::AppLink).await?;
    let ca = ca_sync::sync(client, hub, Timestamp::now().as_second()).await?;
    let desired = builders::build(
        hub,
        &BuildOptions {
            default_image: ctx.default_image.clone(),
            management_token,
            app_link_token,
            peer_ca: ca.material,
            csr_cluster_role: ctx.csr_cluster_role.clone(),
            references_hash: references_hash.clone(),
        },
    )?;
    let requeue = ca
        .recheck
        .map_or(RESYNC, |r| r.clamp(Duration::from_secs(1), RESYNC));

    match apply_all(client, &ns, hub, &desired).await {
        Ok(sts) => {
            let pods = hub_health(client, &ns, hub, Some(&sts), ctx.health.max_pods).await?;
            let observed = Observed {
                statefulset: Some(&sts),
                problem: None,
                config_hash: Some(desired.config_hash.clone()),
                references_hash,
                pods: Some(pods),
            };
            let st = status::compute(hub, &observed, &now());
            let ready = status::find(&st, status::READY).is_some_and(|c| c.status == "True");
            write_status(&hubs, hub, st, ctx).await?;
            debug!(hub = %name, namespace = %ns, ready, "reconciled");
            // Pods are listed, not watched: look again soon while some are not ready.
            let requeue = if ready || hub.spec.replicas == 0 {
                requeue
            } else {
                requeue.min(ctx.health.pod_recheck)
            };
            Ok((Action::requeue(requeue), true))
        }
        Err(Error::Kube(kube::Error::Api(e))) if (400..500).contains(&e.code) && e.code != 409 => {
            // The API server refused an object: say so on the hub, then back off.
            let message = format!("{} ({})", e.message, e.reason);
            let sts = statefulsets.get_opt(&name).await?;
            let pods = hub_health(client, &ns, hub, sts.as_ref(), ctx.health.max_pods).await?;
            let observed = Observed {
                statefulset: sts.as_ref(),
                problem: Some(Problem::ApplyFailed(message)),
                pods: Some(pods),
                ..Observed::default()
            };
            write_status(&hubs, hub, status::compute(hub, &observed, &now()), ctx).await?;
            Err(Error::Kube(kube::Error::Api(e)))
        }
        Err(e) => Err(e),
    }
}

/// The Secrets `refs` name, each fetched once by name (`None`: not found).
async fn fetch_secrets(
    client: &Client,
    ns: &str,
    refs: &[secret_refs::Reference],
) -> Result<BTreeMap<String, Option<Secret>>> {
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    let mut fetched = BTreeMap::new();
    for name in secret_refs::secret_names(refs) {
        let secret = api.get_opt(&name).await?;
        fetched.insert(name, secret);
    }
    Ok(fetched)
}

/// The verdict on the hub's own pods: those of its selector controlled by its StatefulSet,
/// at most `max` of them (one list request).
async fn hub_health(
    client: &Client,
    ns: &str,
    hub: &SocketIOHub,
    sts: Option<&StatefulSet>,
    max: u32,
) -> Result<PodHealth> {
    let Some(sts_uid) = sts.and_then(|s| s.metadata.uid.as_deref()) else {
        return Ok(pod_health::assess(&[]));
    };
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let list = api
        .list(
            &ListParams::default()
                .labels(&builders::selector_string(hub))
                .limit(max),
        )
        .await?;
    let own: Vec<Pod> = list
        .items
        .into_iter()
        .filter(|p| {
            p.owner_references()
                .iter()
                .any(|o| o.uid == sts_uid && o.controller == Some(true))
        })
        .collect();
    Ok(pod_health::assess(&own))
}

/// Applies every object; returns the StatefulSet as stored.
async fn apply_all(
    client: &Client,
    ns: &str,
    hub: &SocketIOHub,
    d: &builders::Desired,
) -> Result<StatefulSet> {
    apply(client, ns, &d.service_account).await?;
    apply(client, ns, &d.role).await?;
    apply(client, ns, &d.role_binding).await?;
    apply(client, ns, &d.config_map).await?;
    // Before the pods: they request their certificate at start. The bundle goes out before
    // the Secret, so a new CA is trusted before the signer issues anything with it.
    apply_cluster(client, &d.csr_binding).await?;
    apply(client, ns, &d.trust_config_map).await?;
    apply(client, ns, &d.peer_ca_secret).await?;
    let name = hub.name_any();
    for (secret, which) in [
        (&d.secret, GeneratedToken::Management),
        (&d.app_link_secret, GeneratedToken::AppLink),
    ] {
        match secret {
            Some(s) => {
                apply(client, ns, s).await?;
            }
            None => delete_if_owned::<Secret>(client, ns, &which.secret_name(&name), hub).await?,
        }
    }
    apply(client, ns, &d.peer_service).await?;
    apply(client, ns, &d.client_service).await?;
    apply(client, ns, &d.management_service).await?;
    match &d.app_service {
        Some(s) => {
            apply(client, ns, s).await?;
        }
        None => delete_if_owned::<Service>(client, ns, &names::app_service(&name), hub).await?,
    }
    let sts = apply(client, ns, &d.statefulset).await?;
    match &d.pdb {
        Some(p) => {
            apply(client, ns, p).await?;
        }
        None => {
            delete_if_owned::<PodDisruptionBudget>(client, ns, &names::same(&name), hub).await?
        }
    }
    match &d.network_policy {
        Some(p) => {
            apply(client, ns, p).await?;
        }
        None => delete_if_owned::<NetworkPolicy>(client, ns, &names::same(&name), hub).await?,
    }
    Ok(sts)
}

/// Server-side apply with the operator's field manager, taking over conflicting fields
/// (that is what corrects drift, e.g. a hand-edited StatefulSet).
async fn apply<K>(client: &Client, ns: &str, obj: &K) -> Result<K>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Serialize
        + DeserializeOwned
        + Clone
        + Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    let name = obj.meta().name.clone().unwrap_or_default();
    let pp = PatchParams::apply(MANAGER).force();
    Ok(api.patch(&name, &pp, &Patch::Apply(obj)).await?)
}

/// Server-side apply of a cluster-scoped object.
async fn apply_cluster<K>(client: &Client, obj: &K) -> Result<K>
where
    K: Resource<DynamicType = (), Scope = ClusterResourceScope>
        + Serialize
        + DeserializeOwned
        + Clone
        + Debug,
{
    let api: Api<K> = Api::all(client.clone());
    let name = obj.meta().name.clone().unwrap_or_default();
    let pp = PatchParams::apply(MANAGER).force();
    Ok(api.patch(&name, &pp, &Patch::Apply(obj)).await?)
}

/// Deletes the per-hub CSR ClusterRoleBindings whose hub is gone (a cluster-scoped object
/// cannot be garbage-collected through a namespaced owner).
pub async fn sweep_csr_bindings(client: &Client, scope: &Scope) -> Result<()> {
    let api: Api<ClusterRoleBinding> = Api::all(client.clone());
    let bindings = api
        .list(&ListParams::default().labels(&format!(
            "app.kubernetes.io/managed-by={MANAGER},{}",
            builders::HUB_NAMESPACE_LABEL
        )))
        .await?;
    for b in bindings.items {
        let (Some(ns), Some(hub)) = (
            b.labels().get(builders::HUB_NAMESPACE_LABEL),
            b.labels().get(builders::HUB_LABEL),
        ) else {
            continue;
        };
        if !scope.contains(ns) {
            continue;
        }
        let hubs: Api<SocketIOHub> = Api::namespaced(client.clone(), ns);
        if hubs.get_opt(hub).await?.is_none() {
            info!(binding = %b.name_any(), hub = %hub, namespace = %ns, "deleting the CSR binding of a deleted hub");
            match api.delete(&b.name_any(), &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(())
}

/// Deletes `name` if it exists and is controlled by `hub`.
async fn delete_if_owned<K>(client: &Client, ns: &str, name: &str, hub: &SocketIOHub) -> Result<()>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + DeserializeOwned
        + Clone
        + Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    let Some(obj) = api.get_opt(name).await? else {
        return Ok(());
    };
    let owned = obj
        .owner_references()
        .iter()
        .any(|o| Some(&o.uid) == hub.metadata.uid.as_ref() && o.controller == Some(true));
    if owned {
        info!(hub = %hub.name_any(), kind = %K::kind(&()), object = name, "deleting object no longer wanted");
        match api.delete(name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// A token the operator generates for `hub` (the management token, the app link token):
/// `None` when the hub names its own Secret or does not need it; else kept from the generated
/// Secret when it exists, or a new random one (32 bytes, hex).
async fn generated_token(
    client: &Client,
    ns: &str,
    hub: &SocketIOHub,
    which: GeneratedToken,
) -> Result<Option<String>> {
    if !which.generated(hub) {
        return Ok(None);
    }
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    if let Some(s) = secrets.get_opt(&which.secret_name(&hub.name_any())).await? {
        if let Some(token) = s
            .data
            .as_ref()
            .and_then(|d| d.get(TOKEN_KEY))
            .and_then(|b| String::from_utf8(b.0.clone()).ok())
            .filter(|t| !t.is_empty())
        {
            return Ok(Some(token));
        }
    }
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    Ok(Some(bytes.iter().map(|b| format!("{b:02x}")).collect()))
}

/// Writes the status through the status subresource, only when it changed, and publishes an
/// Event for every condition transition and configuration change.
async fn write_status(
    api: &Api<SocketIOHub>,
    hub: &SocketIOHub,
    status: SocketIOHubStatus,
    ctx: &Context,
) -> Result<()> {
    if hub.status.as_ref() == Some(&status) {
        return Ok(());
    }
    // connectedClients and linkedAppInstances belong to the stats loop's field manager;
    // leave them out of this apply.
    let applied = SocketIOHubStatus {
        connected_clients: None,
        linked_app_instances: None,
        ..status.clone()
    };
    let patch = serde_json::json!({
        "apiVersion": format!("{GROUP}/{VERSION}"),
        "kind": "SocketIOHub",
        "status": applied,
    });
    api.patch_status(
        &hub.name_any(),
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    ctx.metrics.status_writes.inc();
    for event in events_for(hub.status.as_ref(), &status) {
        if let Err(e) = ctx.recorder.publish(&event, &hub.object_ref(&())).await {
            warn!(hub = %hub.name_any(), error = %e, reason = %event.reason, "publishing an event failed");
        }
    }
    Ok(())
}

/// Events describing the change from `old` to `new`: one per condition whose status or reason
/// changed, and one when the configuration hash changed.
pub fn events_for(old: Option<&SocketIOHubStatus>, new: &SocketIOHubStatus) -> Vec<Event> {
    let mut events = Vec::new();
    for c in &new.conditions {
        let before = old.and_then(|o| status::find(o, &c.type_));
        if before.is_some_and(|b| b.status == c.status && b.reason == c.reason) {
            continue;
        }
        let warning = (c.type_ == status::DEGRADED && c.status == "True")
            || (c.type_ == status::PODS_HEALTHY && c.status == "False");
        let quiet = (c.type_ == status::DEGRADED && c.status == "False")
            || (c.type_ == status::PODS_HEALTHY && c.status != "False");
        if before.is_none() && quiet {
            continue; // "not degraded", "pods healthy" on creation is no news
        }
        events.push(Event {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: c.reason.clone(),
            note: Some(
                format!("{}={}: {}", c.type_, c.status, c.message)
                    .chars()
                    .take(1000)
                    .collect(),
            ),
            action: "Reconcile".to_string(),
            secondary: None,
        });
    }
    let hashes = [
        (
            "ReferencesChanged",
            "referenced Secret data",
            old.and_then(|o| o.references_hash.as_ref()),
            new.references_hash.as_ref(),
        ),
        (
            "ConfigChanged",
            "configuration",
            old.and_then(|o| o.config_hash.as_ref()),
            new.config_hash.as_ref(),
        ),
    ];
    for (reason, what, before, after) in hashes {
        if let (Some(before), Some(after)) = (before, after) {
            if before != after {
                events.push(Event {
                    type_: EventType::Normal,
                    reason: reason.to_string(),
                    note: Some(format!("{what} {before} -> {after}; rolling the pods")),
                    action: "Reconcile".to_string(),
                    secondary: None,
                });
            }
        }
    }
    events
}

/// A hub object that does not decode into the current types: reported `Degraded` and left
/// alone until it changes; the watch carries on with the other hubs.
async fn report_undecodable(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    error: &str,
    ctx: &Context,
) -> Result<(Action, bool)> {
    let (Some(ns), Some(name)) = (meta.namespace.as_deref(), meta.name.as_deref()) else {
        return Ok((Action::await_change(), false));
    };
    warn!(
        hub = name,
        namespace = ns,
        error,
        "hub object cannot be decoded"
    );
    let api: Api<DeserializeGuard<SocketIOHub>> = Api::namespaced(ctx.client.clone(), ns);
    let patch = serde_json::json!({
        "apiVersion": format!("{GROUP}/{VERSION}"),
        "kind": "SocketIOHub",
        "status": {
            "observedGeneration": meta.generation,
            "conditions": [{
                "type": status::DEGRADED,
                "status": "True",
                "reason": "Undecodable",
                "message": error,
                "observedGeneration": meta.generation,
                "lastTransitionTime": now(),
            }],
        },
    });
    // A merge patch, not server-side apply: SSA needs the live object to fit the schema's
    // types, which an undecodable object does not.
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    ctx.metrics.status_writes.inc();
    Ok((Action::await_change(), false))
}

/// Runs the controller until `shutdown` resolves (then finishes running reconciles): one
/// watch over all namespaces, or one controller per watched namespace (each with its own
/// namespaced watches, so the operator needs no cluster-wide list or watch rights then).
pub async fn run(
    ctx: Arc<Context>,
    scope: Scope,
    concurrency: u16,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    info!(namespaces = ?scope.list(), all = scope.is_all(), concurrency, "starting controller");
    let signer = crate::signer::run(client.clone(), scope.clone());
    let sweeper = {
        let client = client.clone();
        let scope = scope.clone();
        async move {
            loop {
                if let Err(e) = sweep_csr_bindings(&client, &scope).await {
                    warn!(error = %e, "sweeping CSR bindings failed");
                }
                tokio::time::sleep(RESYNC).await;
            }
        }
    };
    let stats = hub_stats::run(
        client.clone(),
        scope.clone(),
        ctx.stats_limits.clone(),
        ctx.metrics.clone(),
    );
    let shutdown = shutdown.shared();
    let controllers: Vec<_> = if scope.is_all() {
        vec![hub_controller(ctx.clone(), None, concurrency, shutdown.clone()).boxed()]
    } else {
        scope
            .list()
            .iter()
            .map(|ns| {
                hub_controller(ctx.clone(), Some(ns.clone()), concurrency, shutdown.clone()).boxed()
            })
            .collect()
    };
    // The signer, the sweeper and the stats loop run as long as the controllers (so only on
    // the leader).
    tokio::select! {
        _ = futures_util::future::join_all(controllers) => {}
        () = signer => warn!("the CSR signer stopped"),
        () = sweeper => {}
        () = stats => {}
    }
    info!("controller stopped");
}

/// The SocketIOHub controller of one namespace (`None`: all).
async fn hub_controller(
    ctx: Arc<Context>,
    namespace: Option<String>,
    concurrency: u16,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    fn api<K: Resource<DynamicType = (), Scope = NamespaceResourceScope>>(
        client: &Client,
        ns: &Option<String>,
    ) -> Api<K> {
        match ns {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        }
    }
    let hubs: Api<DeserializeGuard<SocketIOHub>> = api(&client, &namespace);
    let owned =
        watcher::Config::default().labels(&format!("app.kubernetes.io/managed-by={MANAGER}"));
    let controller = Controller::new(hubs, watcher::Config::default());
    // Referenced Secrets cannot be watched (no list/watch right on Secrets): polled instead.
    let (trigger, triggered) = tokio::sync::mpsc::channel(1);
    let poller = secret_poll::run(
        client.clone(),
        ctx.secrets_seen.clone(),
        controller.store(),
        namespace.clone(),
        ctx.health.secret_poll,
        trigger,
    );
    let controller = controller
        .reconcile_all_on(futures_util::stream::unfold(
            triggered,
            |mut rx| async move { rx.recv().await.map(|t| (t, rx)) },
        ))
        .owns(api::<StatefulSet>(&client, &namespace), owned.clone())
        .owns(api::<ConfigMap>(&client, &namespace), owned.clone())
        .owns(api::<Service>(&client, &namespace), owned.clone())
        .owns(
            api::<PodDisruptionBudget>(&client, &namespace),
            owned.clone(),
        )
        .owns(api::<NetworkPolicy>(&client, &namespace), owned.clone())
        .owns(api::<ServiceAccount>(&client, &namespace), owned.clone())
        .owns(api::<Role>(&client, &namespace), owned.clone())
        .owns(api::<RoleBinding>(&client, &namespace), owned)
        .with_config(controller::Config::default().concurrency(concurrency))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            match res {
                Ok((obj, _)) => debug!(hub = %obj.name, "reconcile done"),
                Err(e) => debug!(error = %e, "controller event"),
            }
        });
    // The poller ends with the controller (it stops at shutdown).
    tokio::select! {
        () = controller => {}
        () = poller => {}
    }
}
