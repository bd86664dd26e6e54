//! Pure builders: a `SocketIOHub` in, the desired Kubernetes objects out.
//!
//! Nothing here talks to the API server, reads a clock or draws randomness, so every builder is
//! unit-tested with fixtures (`operator/tests/fixtures/`). The reconciler server-side-applies
//! what these return with one field manager.

mod config;
mod networkpolicy;
mod pdb;
mod peer_tls;
mod rbac;
mod secret;
mod service;
mod statefulset;

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::{Resource, ResourceExt};

pub use config::{
    config_hash, hash_entries, render_config, secret_files, SecretFile, APP_LINK_TOKEN_FILE,
    CONFIG_FILE, CONFIG_MOUNT_PATH, MANAGEMENT_PORT, SECRETS_MOUNT_PATH,
};
pub use networkpolicy::network_policy;
pub use pdb::pod_disruption_budget;
pub use peer_tls::{
    csr_cluster_role_binding, peer_ca_secret, peer_tls_config, trust_config_map,
    HUB_NAMESPACE_LABEL, PEER_TLS_MOUNT_PATH, PEER_TLS_VOLUME_SIZE,
};
pub use rbac::{role, role_binding, service_account};
pub use secret::{
    app_link_secret, app_link_token_ref, management_secret, management_token_ref, GeneratedToken,
    MANAGEMENT_TOKEN_KEY, TOKEN_KEY,
};
pub use service::{
    app_endpoint, app_service, client_service, endpoint, management_endpoint, management_service,
    peer_service,
};
pub use statefulset::{
    statefulset, APP_LINK_PORT_NAME, CLIENT_PORT, CONTAINER_NAME, METRICS_PORT, PEER_PORT,
};

use crate::crd::SocketIOHub;
use crate::peer_ca::CaMaterial;
use crate::{Error, Result};

/// `app.kubernetes.io/name` of every hub object.
pub const APP_NAME: &str = "roomcast-hub";
/// `app.kubernetes.io/managed-by` and the server-side-apply field manager.
pub const MANAGER: &str = "roomcast-operator";
/// Pod-template annotation carrying the hash of the rendered config; a change rolls the pods.
pub const CONFIG_HASH_ANNOTATION: &str = "roomcast.dev/config-hash";
/// Pod-template annotation carrying the hash of the referenced Secret data
/// (crate::secret_refs); a change rolls the pods.
pub const REFERENCES_HASH_ANNOTATION: &str = "roomcast.dev/references-hash";
/// Label naming the hub an object belongs to.
pub const HUB_LABEL: &str = "roomcast.dev/hub";

/// Inputs besides the hub itself. Everything impure (operator flags, existing Secret content,
/// generated randomness) is decided by the caller and passed in here.
#[derive(Clone, Debug, PartialEq)]
pub struct BuildOptions {
    /// Image used when `spec.image` is unset (the operator's matching data-plane version).
    pub default_image: String,
    /// Management token to store in the generated Secret. `None` when the hub names its own
    /// Secret (then no Secret is generated).
    pub management_token: Option<String>,
    /// App link token to store in the generated Secret `<hub>-app-link`. `None` when app
    /// links are off or the hub names its own Secret (then none is generated).
    pub app_link_token: Option<String>,
    /// The hub's peer CA (kept from its Secret, or freshly made / rotated by the caller).
    pub peer_ca: CaMaterial,
    /// The chart's ClusterRole letting hub ServiceAccounts create and read CSRs.
    pub csr_cluster_role: String,
    /// Hash of the Secret data the hub references (crate::secret_refs), read by the caller;
    /// `None` when it references none.
    pub references_hash: Option<String>,
}

/// Everything a hub consists of.
#[derive(Clone, Debug, PartialEq)]
pub struct Desired {
    pub service_account: ServiceAccount,
    pub role: Role,
    pub role_binding: RoleBinding,
    pub config_map: ConfigMap,
    /// Generated management-token Secret; `None` when the hub references its own.
    pub secret: Option<Secret>,
    /// Generated app-link-token Secret `<hub>-app-link`; `None` when app links are off or
    /// the hub references its own.
    pub app_link_secret: Option<Secret>,
    pub peer_service: Service,
    pub client_service: Service,
    pub management_service: Service,
    /// Service `<hub>-app` the application instances link to; `None` when app links are off.
    pub app_service: Option<Service>,
    pub statefulset: StatefulSet,
    /// `None` when the hub disables its PodDisruptionBudget.
    pub pdb: Option<PodDisruptionBudget>,
    /// `None` when the hub disables its NetworkPolicy.
    pub network_policy: Option<NetworkPolicy>,
    /// The peer CA (`<hub>-peer-ca`), the trust bundle (`<hub>-peer-trust`) and the binding
    /// letting the pods request certificates.
    pub peer_ca_secret: Secret,
    pub trust_config_map: ConfigMap,
    pub csr_binding: ClusterRoleBinding,
    /// Hash of the rendered configuration (also on the pod template).
    pub config_hash: String,
}

/// Builds every object of `hub`.
pub fn build(hub: &SocketIOHub, opts: &BuildOptions) -> Result<Desired> {
    let config_map = config::config_map(hub)?;
    let hash = config::config_map_hash(&config_map);
    Ok(Desired {
        service_account: service_account(hub)?,
        role: role(hub)?,
        role_binding: role_binding(hub)?,
        secret: generated_secret(hub, GeneratedToken::Management, &opts.management_token)?,
        app_link_secret: generated_secret(hub, GeneratedToken::AppLink, &opts.app_link_token)?,
        peer_service: peer_service(hub)?,
        client_service: client_service(hub)?,
        management_service: management_service(hub)?,
        app_service: app_service(hub)?,
        statefulset: statefulset(
            hub,
            &opts.default_image,
            &hash,
            opts.references_hash.as_deref(),
        )?,
        pdb: pod_disruption_budget(hub)?,
        network_policy: network_policy(hub)?,
        peer_ca_secret: peer_ca_secret(hub, &opts.peer_ca)?,
        trust_config_map: trust_config_map(hub, &opts.peer_ca)?,
        csr_binding: csr_cluster_role_binding(hub, &opts.csr_cluster_role),
        config_map,
        config_hash: hash,
    })
}

/// The generated Secret of `which` holding `token`, when the hub needs one and names no
/// Secret of its own.
fn generated_secret(
    hub: &SocketIOHub,
    which: GeneratedToken,
    token: &Option<String>,
) -> Result<Option<Secret>> {
    match token {
        Some(token) if which.generated(hub) => Ok(Some(which.secret(hub, token)?)),
        _ => Ok(None),
    }
}

/// Names of the objects of a hub, derived from the hub's name.
pub mod names {
    pub fn config_map(hub: &str) -> String {
        format!("{hub}-config")
    }
    pub fn management_secret(hub: &str) -> String {
        format!("{hub}-management")
    }
    pub fn peer_service(hub: &str) -> String {
        format!("{hub}-peers")
    }
    pub fn management_service(hub: &str) -> String {
        format!("{hub}-management")
    }
    pub fn app_link_secret(hub: &str) -> String {
        format!("{hub}-app-link")
    }
    pub fn app_service(hub: &str) -> String {
        format!("{hub}-app")
    }
    pub fn peer_ca_secret(hub: &str) -> String {
        format!("{hub}-peer-ca")
    }
    pub fn peer_trust(hub: &str) -> String {
        format!("{hub}-peer-trust")
    }
    /// The per-hub ClusterRoleBinding (cluster-scoped, so the namespace is in the name).
    pub fn csr_binding(namespace: &str, hub: &str) -> String {
        format!("roomcast-peer-csr-{namespace}-{hub}")
    }
    /// Client Service, StatefulSet, PDB, NetworkPolicy, ServiceAccount, Role and RoleBinding
    /// share the hub's name.
    pub fn same(hub: &str) -> String {
        hub.to_string()
    }
}

/// Labels selecting the hub's pods (stable: part of the immutable StatefulSet selector).
pub fn selector_labels(hub: &SocketIOHub) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), APP_NAME.to_string()),
        ("app.kubernetes.io/instance".to_string(), hub.name_any()),
    ])
}

/// The selector as a string, for the scale subresource.
pub fn selector_string(hub: &SocketIOHub) -> String {
    selector_labels(hub)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Labels on every object of the hub.
pub fn labels(hub: &SocketIOHub) -> BTreeMap<String, String> {
    let mut l = selector_labels(hub);
    l.insert(
        "app.kubernetes.io/managed-by".to_string(),
        MANAGER.to_string(),
    );
    l.insert(
        "app.kubernetes.io/part-of".to_string(),
        "roomcast".to_string(),
    );
    l.insert("app.kubernetes.io/component".to_string(), "hub".to_string());
    l.insert(HUB_LABEL.to_string(), hub.name_any());
    l
}

/// Controller owner reference to the hub (so deleting the hub garbage-collects the object).
pub fn owner_ref(hub: &SocketIOHub) -> Result<OwnerReference> {
    hub.controller_owner_ref(&())
        .ok_or_else(|| Error::InvalidHub("hub has no uid yet".to_string()))
}

/// Metadata of an object named `name` in the hub's namespace, labelled and owned by the hub.
pub fn object_meta(hub: &SocketIOHub, name: String) -> Result<ObjectMeta> {
    Ok(ObjectMeta {
        name: Some(name),
        namespace: hub.namespace(),
        labels: Some(labels(hub)),
        owner_references: Some(vec![owner_ref(hub)?]),
        ..ObjectMeta::default()
    })
}
