//! Checks beyond what the CRD schema and its CEL rules enforce, and the same checks again for
//! objects stored before a rule existed. A hub failing them is reported `Degraded` with the
//! reasons and is not retried until it changes.

use std::collections::BTreeSet;

use kube::ResourceExt;

use crate::builders::{CLIENT_PORT, METRICS_PORT, PEER_PORT};
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
    if let Some(a) = spec.enabled_app_link() {
        let taken = [
            CLIENT_PORT,
            crate::builders::MANAGEMENT_PORT,
            PEER_PORT,
            METRICS_PORT,
        ];
        if taken.contains(&a.port) {
            problems.push(format!(
                "spec.appLink.port: {} is taken by another port of the hub ({taken:?})",
                a.port
            ));
        }
    }
    let app_link_conflicts = app_link_conflicts(hub);
    let conflicts = !app_link_conflicts.is_empty();
    problems.extend(app_link_conflicts);
    // The data plane's own validation of the configuration the hub renders to. When the
    // checks above found what app links exclude, the data plane's own app-mode checks would
    // say it again in terms of the file: the rest of the file is still checked.
    match crate::builders::render_config(hub) {
        Ok(mut config) => {
            if conflicts {
                config.app_link.listen = None;
            }
            match config.validate() {
                Ok(()) => {}
                Err(ConfigError::Invalid(fields)) => {
                    problems.extend(fields.iter().map(|f| format!("rendered config: {f}")))
                }
                Err(e) => problems.push(format!("rendered config: {e}")),
            }
        }
        Err(e) => problems.push(e.to_string()),
    }
    problems
}

/// What `spec.appLink.enabled` excludes, named by spec field: the application's socket.io
/// Server handles every namespace (no webhook, relay or policies), authenticates clients
/// itself (no `auth`), and its sockets cannot be parked (no connection state recovery).
pub fn app_link_conflicts(hub: &SocketIOHub) -> Vec<String> {
    let spec = &hub.spec;
    if spec.enabled_app_link().is_none() {
        return Vec::new();
    }
    let mut problems = Vec::new();
    let with = "with spec.appLink.enabled";
    for (i, ns) in spec.namespaces.iter().enumerate() {
        for (set, field) in [
            (ns.upstream.is_some(), "upstream"),
            (ns.relay, "relay"),
            (ns.policies.is_some(), "policies"),
        ] {
            if set {
                problems.push(format!(
                    "spec.namespaces[{i}].{field} ({}): not available {with}; the application's socket.io Server handles every namespace",
                    ns.name
                ));
            }
        }
    }
    if spec.auth.is_some() {
        problems.push(format!(
            "spec.auth: client authentication by the hub is not available {with}; authenticate clients in the application (io.use)"
        ));
    }
    if spec
        .connection_state_recovery
        .as_ref()
        .is_some_and(|r| r.enabled.unwrap_or(true))
    {
        problems.push(format!(
            "spec.connectionStateRecovery: not available {with} (the hub cannot park the application's sockets); remove it or set enabled: false"
        ));
    }
    problems
}
