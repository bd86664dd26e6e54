//! Objects of the hub's peer certificates: the CA Secret, the trust ConfigMap the pods read,
//! and the ClusterRoleBinding letting the hub's ServiceAccount create CSRs (a cluster-scoped
//! resource, so a namespaced Role cannot grant it).

use std::collections::BTreeMap;
use std::path::Path;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::ByteString;
use kube::ResourceExt;
use roomcast_config::PeerTlsConfig;

use super::{labels, names, object_meta};
use crate::crd::SocketIOHub;
use crate::peer_ca::{CaMaterial, BUNDLE_KEY, SIGNER_NAME};
use crate::{Error, Result};

/// Where the pod's key, certificate and trust bundle live: an in-memory emptyDir, written by
/// the pod itself (the key never leaves the pod).
pub const PEER_TLS_MOUNT_PATH: &str = "/var/run/roomcast/peer-tls";
/// Largest size of that emptyDir.
pub const PEER_TLS_VOLUME_SIZE: &str = "1Mi";
/// Label on the per-hub ClusterRoleBinding naming the hub's namespace (the binding itself is
/// cluster-scoped, so it cannot be owned by the hub; the operator deletes it with the hub).
pub const HUB_NAMESPACE_LABEL: &str = "roomcast.dev/hub-namespace";

/// Secret `<hub>-peer-ca` (`tls.crt`, `tls.key`, and `previous.crt` during a rotation). Read
/// by the operator only; never mounted into pods.
pub fn peer_ca_secret(hub: &SocketIOHub, ca: &CaMaterial) -> Result<Secret> {
    let mut metadata = object_meta(hub, names::peer_ca_secret(&hub.name_any()))?;
    metadata.annotations = Some(ca.annotations());
    Ok(Secret {
        metadata,
        type_: Some("Opaque".to_string()),
        data: Some(
            ca.data()
                .into_iter()
                .map(|(k, v)| (k, ByteString(v.into_bytes())))
                .collect(),
        ),
        ..Secret::default()
    })
}

/// ConfigMap `<hub>-peer-trust`: the trust bundle under `ca.crt`.
pub fn trust_config_map(hub: &SocketIOHub, ca: &CaMaterial) -> Result<ConfigMap> {
    Ok(ConfigMap {
        metadata: object_meta(hub, names::peer_trust(&hub.name_any()))?,
        data: Some(BTreeMap::from([(BUNDLE_KEY.to_string(), ca.bundle())])),
        ..ConfigMap::default()
    })
}

/// Binds the chart's `cluster_role` (create and get CSRs) to the hub's ServiceAccount.
pub fn csr_cluster_role_binding(hub: &SocketIOHub, cluster_role: &str) -> ClusterRoleBinding {
    let name = hub.name_any();
    let namespace = hub.namespace().unwrap_or_default();
    let mut l = labels(hub);
    l.insert(HUB_NAMESPACE_LABEL.to_string(), namespace.clone());
    ClusterRoleBinding {
        metadata: ObjectMeta {
            name: Some(names::csr_binding(&namespace, &name)),
            labels: Some(l),
            ..ObjectMeta::default()
        },
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".to_string()),
            kind: "ClusterRole".to_string(),
            name: cluster_role.to_string(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".to_string(),
            name: names::same(&name),
            namespace: Some(namespace),
            ..Subject::default()
        }]),
    }
}

/// `cluster.tls` of the hub's pods: files on the emptyDir, kept current by the pod through
/// the CSR API and the trust ConfigMap; the other settings keep the data plane's defaults.
pub fn peer_tls_config(hub: &SocketIOHub) -> Result<PeerTlsConfig> {
    let duration = u32::try_from(hub.spec.peer_tls.certificate_seconds)
        .map_err(|_| Error::InvalidHub("spec.peerTls.certificateSeconds is out of range".into()))?;
    let kubernetes = serde_json::json!({
        "signerName": SIGNER_NAME,
        "trustConfigMap": names::peer_trust(&hub.name_any()),
        "durationSeconds": duration,
    });
    let mut tls = PeerTlsConfig::files(Path::new(PEER_TLS_MOUNT_PATH));
    tls.kubernetes = Some(serde_json::from_value(kubernetes)?);
    Ok(tls)
}
