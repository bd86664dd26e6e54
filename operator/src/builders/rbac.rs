//! ServiceAccount, Role and RoleBinding letting hub pods discover their peers.

use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};

use super::{names, object_meta};
use crate::crd::SocketIOHub;
use crate::Result;

fn hub_name(hub: &SocketIOHub) -> String {
    names::same(hub.metadata.name.as_deref().unwrap_or_default())
}

/// The pods' ServiceAccount.
pub fn service_account(hub: &SocketIOHub) -> Result<ServiceAccount> {
    Ok(ServiceAccount {
        metadata: object_meta(hub, hub_name(hub))?,
        automount_service_account_token: Some(true),
        ..ServiceAccount::default()
    })
}

/// Read-only access to EndpointSlices (peer discovery) and to the hub's trust ConfigMap (the
/// CA bundle the pods poll).
pub fn role(hub: &SocketIOHub) -> Result<Role> {
    Ok(Role {
        metadata: object_meta(hub, hub_name(hub))?,
        rules: Some(vec![
            PolicyRule {
                api_groups: Some(vec!["discovery.k8s.io".to_string()]),
                resources: Some(vec!["endpointslices".to_string()]),
                verbs: vec!["get".to_string(), "list".to_string(), "watch".to_string()],
                ..PolicyRule::default()
            },
            PolicyRule {
                api_groups: Some(vec![String::new()]),
                resources: Some(vec!["configmaps".to_string()]),
                resource_names: Some(vec![names::peer_trust(&hub_name(hub))]),
                verbs: vec!["get".to_string()],
                ..PolicyRule::default()
            },
        ]),
    })
}

/// Binds the Role to the ServiceAccount.
pub fn role_binding(hub: &SocketIOHub) -> Result<RoleBinding> {
    let name = hub_name(hub);
    Ok(RoleBinding {
        metadata: object_meta(hub, name.clone())?,
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".to_string()),
            kind: "Role".to_string(),
            name: name.clone(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".to_string(),
            name,
            namespace: hub.metadata.namespace.clone(),
            ..Subject::default()
        }]),
    })
}
