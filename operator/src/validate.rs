//! Checks beyond what the CRD schema and its CEL rules enforce, and the same checks again for
//! objects stored before a rule existed. A hub failing them is reported `Degraded` with the
//! reasons and is not retried until it changes.

use std::collections::BTreeSet;

use kube::ResourceExt;

use crate::crd::SocketIOHub;
use roomcast_config::ConfigError;

/// Longest hub name: pod names `<hub>-<ordinal>` and the StatefulSet's
/// `controller-revision-hash` label value (`<hub>-<10 chars>`) must fit in 63 characters.
pub const MAX_NAME_LEN: usize = 52;

/// Every problem found in `hub`, in a stable order; empty when valid.
pub fn validate(hub: &SocketIOHub) -> Vec<String> {
    let mut problems = Vec::new();
    let name = hub.name_any();
    if name.len() > MAX_NAME_LEN {
        problems.push(format!(
            "metadata.name must be at most {MAX_NAME_LEN} characters (is {})",
            name.len()
        ));
    }
    let spec = &hub.spec;
    if spec.replicas < 0 {
        problems.push("spec.replicas must not be negative".to_string());
    }
    if let Some(image) = &spec.image {
        if image.trim().is_empty() {
            problems.push("spec.image must not be empty".to_string());
        }
    }
    if let Some(path) = &spec.engine.path {
        if !path.starts_with('/') || !path.ends_with('/') {
            problems.push(format!(
                "spec.engine.path must start and end with '/' (is {path:?})"
            ));
        }
    }
    if let Some(ts) = &spec.engine.transports {
        if ts.is_empty() {
            problems.push("spec.engine.transports must not be empty".to_string());
        }
        let unique: BTreeSet<_> = ts.iter().map(|t| format!("{t:?}")).collect();
        if unique.len() != ts.len() {
            problems.push("spec.engine.transports has duplicates".to_string());
        }
    }
    let mut seen = BTreeSet::new();
    for ns in &spec.namespaces {
        if !ns.name.starts_with('/') {
            problems.push(format!("namespace {:?} must start with '/'", ns.name));
        }
        if !seen.insert(ns.name.as_str()) {
            problems.push(format!("namespace {:?} is listed twice", ns.name));
        }
    }
    if let Some(auth) = &spec.auth {
        if auth.secret_ref.is_some() == auth.jwks_url.is_some() {
            problems.push("spec.auth: set exactly one of secretRef and jwksUrl".to_string());
        }
        if auth
            .jwks_url
            .as_ref()
            .is_some_and(|u| u.starts_with("http://"))
        {
            problems.push(
                "spec.auth.jwksUrl: must be https:// (the data plane refuses a JWKS over plain http)"
                    .to_string(),
            );
        }
    }
    let pdb = &spec.pod_disruption_budget;
    if pdb.min_available.is_some() && pdb.max_unavailable.is_some() {
        problems.push(
            "spec.podDisruptionBudget: set at most one of minAvailable and maxUnavailable"
                .to_string(),
        );
    }
    if spec.service.node_port.is_some() && spec.service.type_ == crate::crd::ServiceType::ClusterIP
    {
        problems.push("spec.service.nodePort needs type NodePort or LoadBalancer".to_string());
    }
    // The data plane's own validation of the configuration the hub renders to.
    match crate::builders::render_config(hub) {
        Ok(config) => match config.validate() {
            Ok(()) => {}
            Err(ConfigError::Invalid(fields)) => {
                problems.extend(fields.iter().map(|f| format!("rendered config: {f}")))
            }
            Err(e) => problems.push(format!("rendered config: {e}")),
        },
        Err(e) => problems.push(e.to_string()),
    }
    problems
}
