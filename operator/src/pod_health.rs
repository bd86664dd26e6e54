//! Why a hub's pods cannot start, read from their statuses: pure, so every reason is
//! unit-tested with pod fixtures. The reconciler lists the hub's own pods (label selector,
//! controlled by its StatefulSet) and turns the verdict into the `PodsHealthy` condition, the
//! reason of `Ready=False` and a Warning Event.

use k8s_openapi::api::core::v1::{ContainerStatus, Pod};

/// Reasons of `PodsHealthy` (and of `Ready=False` when pods fail), most telling first: when
/// pods fail for several reasons the condition names the first of this list.
pub const IMAGE_PULL_BACK_OFF: &str = "ImagePullBackOff";
pub const CRASH_LOOP_BACK_OFF: &str = "CrashLoopBackOff";
pub const CONTAINER_CONFIG_ERROR: &str = "ContainerConfigError";
pub const UNSCHEDULABLE: &str = "Unschedulable";
pub const POD_FAILED: &str = "PodFailed";
/// `PodsHealthy=True`: no pod is in one of the states above.
pub const HEALTHY: &str = "AsExpected";

/// Waiting reasons of a container whose image cannot be pulled (kubelet's names).
const PULL_REASONS: [&str; 5] = [
    "ImagePullBackOff",
    "ErrImagePull",
    "InvalidImageName",
    "ErrImageNeverPull",
    "RegistryUnavailable",
];
/// Waiting reasons of a container the kubelet cannot create from the pod spec (a missing
/// Secret or ConfigMap key in its environment, for instance).
const CONFIG_REASONS: [&str; 3] = [
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
];
/// Longest message kept from a pod (the scheduler's can list every node).
const MAX_POD_MESSAGE: usize = 300;

/// The verdict on a hub's pods.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodHealth {
    pub healthy: bool,
    /// One of the reason constants of this module.
    pub reason: &'static str,
    /// Which pods, and why (the first failing pod's own message, bounded).
    pub message: String,
}

/// What is wrong with one pod, if anything.
fn pod_problem(pod: &Pod) -> Option<(&'static str, String)> {
    if pod.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let status = pod.status.as_ref()?;
    let conditions = status.conditions.as_deref().unwrap_or_default();
    let is_true = |ty: &str| {
        conditions
            .iter()
            .any(|c| c.type_ == ty && c.status == "True")
    };
    if is_true("Ready") {
        return None;
    }
    if status.phase.as_deref() == Some("Failed") {
        let why = status
            .message
            .clone()
            .or_else(|| status.reason.clone())
            .unwrap_or_else(|| "the pod failed".to_string());
        return Some((POD_FAILED, why));
    }
    let containers = status.container_statuses.iter().flatten();
    let mut found: Option<(&'static str, String)> = None;
    for c in containers {
        if let Some(p) = container_problem(c) {
            if found.as_ref().is_none_or(|f| rank(p.0) < rank(f.0)) {
                found = Some(p);
            }
        }
    }
    if found.is_some() {
        return found;
    }
    conditions
        .iter()
        .find(|c| {
            c.type_ == "PodScheduled"
                && c.status == "False"
                && c.reason.as_deref() == Some("Unschedulable")
        })
        .map(|c| {
            (
                UNSCHEDULABLE,
                c.message
                    .clone()
                    .unwrap_or_else(|| "no node fits the pod".to_string()),
            )
        })
}

fn container_problem(c: &ContainerStatus) -> Option<(&'static str, String)> {
    let waiting = c.state.as_ref().and_then(|s| s.waiting.as_ref());
    let reason = waiting
        .and_then(|w| w.reason.as_deref())
        .unwrap_or_default();
    let message = waiting.and_then(|w| w.message.clone()).unwrap_or_default();
    let with_name = |m: &str| {
        if m.is_empty() {
            format!("container {}: {reason}", c.name)
        } else {
            format!("container {}: {m}", c.name)
        }
    };
    if PULL_REASONS.contains(&reason) {
        return Some((IMAGE_PULL_BACK_OFF, with_name(&message)));
    }
    if CONFIG_REASONS.contains(&reason) {
        return Some((CONTAINER_CONFIG_ERROR, with_name(&message)));
    }
    // Waiting in back-off, or running again between two crashes (not ready yet): both are the
    // crash loop, so the condition does not flap with each restart.
    let last_exit = c
        .last_state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
        .map(|t| t.exit_code);
    if reason == "CrashLoopBackOff" || (c.restart_count > 0 && last_exit.is_some_and(|e| e != 0)) {
        let exit = last_exit.map_or(String::new(), |e| format!(", last exit code {e}"));
        return Some((
            CRASH_LOOP_BACK_OFF,
            format!(
                "container {} restarted {} times{exit}",
                c.name, c.restart_count
            ),
        ));
    }
    None
}

fn rank(reason: &str) -> usize {
    [
        IMAGE_PULL_BACK_OFF,
        CRASH_LOOP_BACK_OFF,
        CONTAINER_CONFIG_ERROR,
        UNSCHEDULABLE,
        POD_FAILED,
    ]
    .iter()
    .position(|r| *r == reason)
    .unwrap_or(usize::MAX)
}

/// The verdict on `pods` (the hub's own pods): healthy unless a pod that is not Ready is
/// failing to pull, crash-looping, cannot be created, cannot be scheduled or failed. Pods
/// still starting normally (ContainerCreating, probes not yet passed) are healthy.
pub fn assess(pods: &[Pod]) -> PodHealth {
    let mut failing: Vec<(&str, &'static str, String)> = pods
        .iter()
        .filter_map(|p| {
            pod_problem(p).map(|(r, m)| (p.metadata.name.as_deref().unwrap_or_default(), r, m))
        })
        .collect();
    if failing.is_empty() {
        return PodHealth {
            healthy: true,
            reason: HEALTHY,
            message: format!("no pod failing ({} pods)", pods.len()),
        };
    }
    failing.sort_by(|a, b| rank(a.1).cmp(&rank(b.1)).then(a.0.cmp(b.0)));
    let (pod, reason, message) = &failing[0];
    let same: Vec<&str> = failing
        .iter()
        .filter(|f| f.1 == *reason)
        .map(|f| f.0)
        .collect();
    let others = failing.len() - same.len();
    let mut m: String = message.chars().take(MAX_POD_MESSAGE).collect();
    m = format!("{} of {} pods: {pod}: {m}", same.len(), pods.len());
    if others > 0 {
        m.push_str(&format!(" ({others} more pods failing otherwise)"));
    }
    PodHealth {
        healthy: false,
        reason,
        message: m,
    }
}
