//! Keeps a hub's peer CA current: reads the CA Secret, decides with
//! [`peer_ca::decide`](crate::peer_ca::decide) and returns the CA state the reconcile applies
//! (the trust ConfigMap first, then the Secret the signer reads).

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};
use tracing::{info, warn};

use crate::builders::{names, selector_string};
use crate::crd::SocketIOHub;
use crate::csr_check::POD_NAME_EXTRA;
use crate::peer_ca::{self, CaAction, CaInfo, CaMaterial, RotationFacts, ROTATE_ANNOTATION};
use crate::{Error, Result};

/// The CA state to apply and when to look again.
pub struct CaState {
    pub material: CaMaterial,
    pub recheck: Option<Duration>,
}

/// Reads, creates or rotates the CA of `hub` as of Unix time `now`.
pub async fn sync(client: &Client, hub: &SocketIOHub, now: i64) -> Result<CaState> {
    let ns = hub.namespace().unwrap_or_default();
    let name = hub.name_any();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let stored = secrets
        .get_opt(&names::peer_ca_secret(&name))
        .await?
        .and_then(|s| CaMaterial::from_secret(&s));
    let parsed: Option<(CaMaterial, CaInfo)> = match stored {
        Some(m) => match peer_ca::inspect(&m.cert_pem) {
            Ok(info) => Some((m, info)),
            Err(e) => {
                warn!(hub = %name, namespace = %ns, error = %e, "the peer CA Secret is corrupt; making a new CA");
                None
            }
        },
        None => None,
    };
    let spec = &hub.spec.peer_tls;
    let settle = spec.rotation_settle_seconds;
    let rotating = parsed
        .as_ref()
        .is_some_and(|(m, _)| m.previous_cert_pem.is_some());
    let all_renewed = match (&parsed, rotating) {
        (Some((_, info)), true) => {
            pods_renewed(client, &ns, hub, &info.subject_der, now, settle).await?
        }
        _ => false,
    };
    let requested = hub.annotations().get(ROTATE_ANNOTATION).map(String::as_str);
    let facts = RotationFacts {
        now,
        requested,
        all_renewed,
        settle_seconds: settle,
        max_leaf_seconds: spec.certificate_seconds,
    };
    let state = parsed.as_ref().map(|(m, i)| (m, i));
    let action = peer_ca::decide(state, &facts);
    let fresh = match action {
        CaAction::Create | CaAction::Rotate(_) => Some(
            peer_ca::new_ca(
                &ns,
                &name,
                now,
                spec.ca_validity_days.saturating_mul(86_400),
            )
            .map_err(|e| Error::Render(e.to_string()))?,
        ),
        _ => None,
    };
    match &action {
        CaAction::Keep => {}
        CaAction::Create => info!(hub = %name, namespace = %ns, "creating the peer CA"),
        CaAction::Rotate(why) => {
            info!(hub = %name, namespace = %ns, reason = why, "rotating the peer CA")
        }
        CaAction::DropPrevious(why) => {
            info!(hub = %name, namespace = %ns, reason = why, "dropping the previous peer CA from the trust bundle")
        }
    }
    let material = peer_ca::apply(
        parsed.as_ref().map(|(m, _)| m),
        &action,
        fresh,
        requested,
        now,
    )
    .ok_or_else(|| Error::Render("no peer CA".to_string()))?;
    let after = peer_ca::inspect(&material.cert_pem).ok();
    let recheck = peer_ca::next_check(after.as_ref().map(|i| (&material, i)), &facts)
        .map(|s| Duration::from_secs(u64::try_from(s).unwrap_or(1)));
    Ok(CaState { material, recheck })
}

/// Whether every current pod of the hub holds a certificate issued by the CA with subject
/// `ca_subject` (its newest issued CSR), the last of them issued at least `settle` seconds
/// ago (time for the pod to load it).
async fn pods_renewed(
    client: &Client,
    ns: &str,
    hub: &SocketIOHub,
    ca_subject: &[u8],
    now: i64,
    settle: i64,
) -> Result<bool> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let pods = pods
        .list(&ListParams::default().labels(&selector_string(hub)))
        .await?;
    if pods.items.is_empty() {
        return Ok(true);
    }
    let csrs: Api<CertificateSigningRequest> = Api::all(client.clone());
    let csrs = csrs
        .list(&ListParams::default().fields(&format!("spec.signerName={}", peer_ca::SIGNER_NAME)))
        .await?;
    let user = format!(
        "system:serviceaccount:{ns}:{}",
        names::same(&hub.name_any())
    );
    // Newest issued certificate per pod: (creation time, certificate).
    let mut newest: BTreeMap<String, (i64, Vec<u8>)> = BTreeMap::new();
    for csr in &csrs.items {
        if csr.spec.username.as_deref() != Some(user.as_str()) {
            continue;
        }
        let Some(pod) = csr
            .spec
            .extra
            .as_ref()
            .and_then(|e| e.get(POD_NAME_EXTRA))
            .and_then(|v| v.first())
        else {
            continue;
        };
        let Some(cert) = csr.status.as_ref().and_then(|s| s.certificate.as_ref()) else {
            continue;
        };
        let created = csr
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0.as_second())
            .unwrap_or(0);
        if newest.get(pod).is_none_or(|(t, _)| *t <= created) {
            newest.insert(pod.clone(), (created, cert.0.clone()));
        }
    }
    for pod in &pods.items {
        let Some((created, cert)) = newest.get(&pod.name_any()) else {
            return Ok(false);
        };
        let issuer = std::str::from_utf8(cert)
            .ok()
            .and_then(|pem| peer_ca::issuer_of(pem).ok());
        if issuer.as_deref() != Some(ca_subject) || now.saturating_sub(*created) < settle {
            return Ok(false);
        }
    }
    Ok(true)
}
