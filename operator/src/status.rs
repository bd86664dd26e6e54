//! Status computation: pure, from the hub, its StatefulSet and what the reconcile found, to the
//! `SocketIOHubStatus` to write. A condition's `lastTransitionTime` changes only when its
//! `status` changes; the reconciler writes the status only when the result differs.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::builders::{app_endpoint, endpoint, management_endpoint, selector_string};
use crate::crd::{SocketIOHub, SocketIOHubStatus};
use crate::pod_health::PodHealth;

pub const READY: &str = "Ready";
pub const PROGRESSING: &str = "Progressing";
pub const DEGRADED: &str = "Degraded";
/// Whether the hub's pods start and keep running (crate::pod_health has the reasons).
pub const PODS_HEALTHY: &str = "PodsHealthy";

/// `Degraded` reason: a Secret the hub references does not exist.
pub const MISSING_REFERENCE: &str = "MissingReference";
/// `Degraded` reason: a Secret the hub references lacks the key (or it is empty).
pub const INVALID_REFERENCE: &str = "InvalidReference";

/// Something that went wrong in this reconcile, reported through `Degraded`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    /// The spec is invalid; the message lists why.
    InvalidSpec(String),
    /// Applying an object failed (the API server rejected it).
    ApplyFailed(String),
    /// A referenced Secret is missing: nothing was applied (the pods would not start).
    MissingReference(String),
    /// A referenced Secret lacks the key: nothing was applied.
    InvalidReference(String),
}

/// What the reconcile observed.
#[derive(Clone, Debug, Default)]
pub struct Observed<'a> {
    pub statefulset: Option<&'a StatefulSet>,
    pub problem: Option<Problem>,
    /// Hash of the rendered configuration now applied (kept from the previous status when
    /// nothing was applied).
    pub config_hash: Option<String>,
    /// Hash of the referenced Secret data now applied (kept like `config_hash`).
    pub references_hash: Option<String>,
    /// The verdict on the hub's pods; `None` when they were not read (condition Unknown).
    pub pods: Option<PodHealth>,
}

/// The status the hub should have.
pub fn compute(hub: &SocketIOHub, observed: &Observed<'_>, now: &Time) -> SocketIOHubStatus {
    let previous = hub.status.clone().unwrap_or_default();
    let generation = hub.metadata.generation;
    let desired = hub.spec.replicas;

    let sts_status = observed
        .statefulset
        .and_then(|s| s.status.clone())
        .unwrap_or_default();
    let replicas = sts_status.replicas;
    let ready = sts_status.ready_replicas.unwrap_or(0);
    let updated = sts_status.updated_replicas.unwrap_or(0);

    let (progressing, p_reason, p_message) = match observed.statefulset {
        None => (
            true,
            "Creating",
            "the StatefulSet does not exist yet".to_string(),
        ),
        Some(sts) => {
            let sts_gen = sts.metadata.generation.unwrap_or(0);
            let seen_gen = sts_status.observed_generation.unwrap_or(0);
            let revisions_differ = matches!(
                (&sts_status.current_revision, &sts_status.update_revision),
                (Some(c), Some(u)) if c != u
            );
            if seen_gen < sts_gen {
                (
                    true,
                    "RollingOut",
                    format!("StatefulSet generation {sts_gen} not yet observed"),
                )
            } else if updated < desired || revisions_differ {
                (
                    true,
                    "RollingOut",
                    format!("{updated}/{desired} pods run the current template"),
                )
            } else if replicas > desired {
                (
                    true,
                    "ScalingDown",
                    format!("{replicas} pods, scaling down to {desired}"),
                )
            } else if ready < desired {
                (
                    true,
                    "WaitingForPods",
                    format!("{ready}/{desired} pods ready"),
                )
            } else {
                (
                    false,
                    "Complete",
                    format!("{ready}/{desired} pods ready and up to date"),
                )
            }
        }
    };

    let failing = observed.pods.as_ref().filter(|p| !p.healthy);
    let (is_ready, r_reason, r_message) = if desired == 0 {
        (false, "ScaledToZero", "spec.replicas is 0".to_string())
    } else if observed.statefulset.is_some() && ready >= desired {
        (
            true,
            "AllReplicasReady",
            format!("{ready}/{desired} pods ready"),
        )
    } else if let Some(p) = failing {
        // Why the missing pods are not ready, where `kubectl get socketiohubs` shows it.
        (
            false,
            p.reason,
            format!("{ready}/{desired} pods ready; {}", p.message),
        )
    } else {
        (
            false,
            "ReplicasNotReady",
            format!("{ready}/{desired} pods ready"),
        )
    };

    let (degraded, d_reason, d_message) = match &observed.problem {
        Some(Problem::InvalidSpec(m)) => (true, "InvalidSpec", m.clone()),
        Some(Problem::ApplyFailed(m)) => (true, "ApplyFailed", m.clone()),
        Some(Problem::MissingReference(m)) => (true, MISSING_REFERENCE, m.clone()),
        Some(Problem::InvalidReference(m)) => (true, INVALID_REFERENCE, m.clone()),
        None => (false, "AsExpected", "no problems".to_string()),
    };

    let (pods_status, pods_reason, pods_message) = match &observed.pods {
        Some(p) => (
            if p.healthy { "True" } else { "False" },
            p.reason,
            p.message.clone(),
        ),
        None => ("Unknown", "NotRead", "the pods were not read".to_string()),
    };

    let conditions = vec![
        condition(
            &previous, READY, is_ready, r_reason, r_message, generation, now,
        ),
        condition(
            &previous,
            PROGRESSING,
            progressing,
            p_reason,
            p_message,
            generation,
            now,
        ),
        condition(
            &previous, DEGRADED, degraded, d_reason, d_message, generation, now,
        ),
        condition_with(
            &previous,
            PODS_HEALTHY,
            pods_status,
            pods_reason,
            pods_message,
            generation,
            now,
        ),
    ];

    SocketIOHubStatus {
        observed_generation: generation,
        replicas,
        ready_replicas: ready,
        updated_replicas: updated,
        selector: Some(selector_string(hub)),
        endpoint: Some(endpoint(hub)),
        management_endpoint: Some(management_endpoint(hub)),
        app_endpoint: app_endpoint(hub),
        config_hash: observed.config_hash.clone().or(previous.config_hash),
        references_hash: observed
            .references_hash
            .clone()
            .or(previous.references_hash),
        // Written by the stats loop (crate::hub_stats), kept as is here.
        connected_clients: previous.connected_clients,
        linked_app_instances: previous.linked_app_instances,
        conditions,
    }
}

/// A condition, keeping the previous `lastTransitionTime` when the status did not change.
fn condition(
    previous: &SocketIOHubStatus,
    type_: &str,
    status: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
    now: &Time,
) -> Condition {
    let status = if status { "True" } else { "False" };
    condition_with(previous, type_, status, reason, message, generation, now)
}

/// A condition whose status may be `Unknown`.
fn condition_with(
    previous: &SocketIOHubStatus,
    type_: &str,
    status: &str,
    reason: &str,
    message: String,
    generation: Option<i64>,
    now: &Time,
) -> Condition {
    let status = status.to_string();
    let last_transition_time = previous
        .conditions
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| now.clone());
    Condition {
        type_: type_.to_string(),
        status,
        reason: reason.to_string(),
        message,
        observed_generation: generation,
        last_transition_time,
    }
}

/// The condition of `type_` in `status`, if any.
pub fn find<'a>(status: &'a SocketIOHubStatus, type_: &str) -> Option<&'a Condition> {
    status.conditions.iter().find(|c| c.type_ == type_)
}
