//! PodDisruptionBudget of the hub's pods.

use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{names, object_meta, selector_labels};
use crate::crd::SocketIOHub;
use crate::Result;

/// `None` when disabled. Defaults to `maxUnavailable: 1`, which never blocks a drain of a
/// one-pod hub forever and keeps larger hubs serving while nodes are drained.
pub fn pod_disruption_budget(hub: &SocketIOHub) -> Result<Option<PodDisruptionBudget>> {
    let p = &hub.spec.pod_disruption_budget;
    if !p.enabled {
        return Ok(None);
    }
    let (min_available, max_unavailable) = match (&p.min_available, &p.max_unavailable) {
        (None, None) => (None, Some(IntOrString::Int(1))),
        (min, max) => (min.clone(), max.clone()),
    };
    Ok(Some(PodDisruptionBudget {
        metadata: object_meta(
            hub,
            names::same(hub.metadata.name.as_deref().unwrap_or_default()),
        )?,
        spec: Some(PodDisruptionBudgetSpec {
            selector: Some(LabelSelector {
                match_labels: Some(selector_labels(hub)),
                ..LabelSelector::default()
            }),
            min_available,
            max_unavailable,
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    }))
}
