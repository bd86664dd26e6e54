//! The `roomcast.io/peer` signer: watches CertificateSigningRequests of that signer,
//! approves and signs those a hub pod made for itself, denies the rest
//! ([`csr_check`](crate::csr_check) holds the policy).

use futures_util::StreamExt;
use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestCondition, CertificateSigningRequestStatus,
};
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::jiff::Timestamp;
use k8s_openapi::ByteString;
use kube::api::{Api, PostParams};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Client, ResourceExt};
use tracing::{debug, info, warn};

use crate::builders::names;
use crate::crd::SocketIOHub;
use crate::csr_check::{self, Denial};
use crate::peer_ca::{self, CaMaterial, SIGNER_NAME};
use crate::scope::Scope;
use crate::{Error, Result};

/// Attempts at one CSR event before waiting for the next.
const HANDLE_ATTEMPTS: u32 = 5;
/// Delay before the second attempt (grows linearly).
const RETRY_DELAY: std::time::Duration = std::time::Duration::from_millis(500);

/// `spec.extra` key with the uid of the pod a bound token belongs to.
pub const POD_UID_EXTRA: &str = "authentication.kubernetes.io/pod-uid";

/// Watches the signer's CSRs until the stream ends (never, in practice); `scope` limits it
/// to hubs of the namespaces the operator watches.
pub async fn run(client: Client, scope: Scope) {
    let api: Api<CertificateSigningRequest> = Api::all(client.clone());
    let config = watcher::Config::default().fields(&format!("spec.signerName={SIGNER_NAME}"));
    info!(signer = SIGNER_NAME, "starting the CSR signer");
    watcher(api.clone(), config)
        .default_backoff()
        .applied_objects()
        .for_each(|res| {
            let client = client.clone();
            let api = api.clone();
            let scope = scope.clone();
            async move {
                match res {
                    Ok(csr) => {
                        // A few quick retries cover the window before a new hub's CA exists
                        // and conflicts with a concurrent update; after that the next change
                        // or the watch's next relist retries.
                        let name = csr.name_any();
                        let mut current = Some(csr);
                        for attempt in 1..=HANDLE_ATTEMPTS {
                            // Later attempts read the CSR again (an update conflicted, or it
                            // changed meanwhile).
                            let csr = match current.take() {
                                Some(c) => c,
                                None => match api.get_opt(&name).await {
                                    Ok(Some(c)) => c,
                                    Ok(None) => break,
                                    Err(e) => {
                                        warn!(csr = %name, error = %e, "reading a CSR failed");
                                        tokio::time::sleep(RETRY_DELAY * attempt).await;
                                        continue;
                                    }
                                },
                            };
                            match handle(&client, &api, csr, &scope).await {
                                Ok(()) => break,
                                // A watch event older than our own approval: read it again.
                                Err(Error::Kube(kube::Error::Api(e))) if e.code == 409 => {
                                    debug!(csr = %name, attempt, "CSR changed meanwhile; reading it again");
                                }
                                Err(e) => {
                                    warn!(csr = %name, attempt, error = %e, "handling a CSR failed");
                                    tokio::time::sleep(RETRY_DELAY * attempt).await;
                                }
                            }
                        }
                    }
                    Err(e) => warn!(error = %e, "CSR watch error"),
                }
            }
        })
        .await;
}

fn has_condition(csr: &CertificateSigningRequest, type_: &str) -> bool {
    csr.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == type_ && c.status == "True"))
}

fn condition(type_: &str, reason: &str, message: String) -> CertificateSigningRequestCondition {
    let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Timestamp::now());
    CertificateSigningRequestCondition {
        type_: type_.to_string(),
        status: "True".to_string(),
        reason: Some(reason.to_string()),
        message: Some(message),
        last_update_time: Some(now.clone()),
        last_transition_time: Some(now),
    }
}

/// Decides one CSR: nothing when it is finished (denied, failed or issued), else approve
/// and sign, or deny.
async fn handle(
    client: &Client,
    api: &Api<CertificateSigningRequest>,
    csr: CertificateSigningRequest,
    scope: &Scope,
) -> Result<()> {
    if csr.spec.signer_name != SIGNER_NAME
        || has_condition(&csr, "Denied")
        || has_condition(&csr, "Failed")
        || csr
            .status
            .as_ref()
            .and_then(|s| s.certificate.as_ref())
            .is_some_and(|c| !c.0.is_empty())
    {
        return Ok(());
    }
    let name = csr.name_any();
    if let Ok(r) = csr_check::requester(&csr) {
        if !scope.contains(&r.namespace) {
            return Ok(()); // another operator's namespace
        }
    }
    let checked = match verdict(client, &csr).await? {
        Ok(checked) => checked,
        Err(denial) => {
            // Approved by someone else but against the policy: refuse to sign (Failed, on
            // the status); otherwise deny it (on the approval subresource).
            let (kind, subresource) = if has_condition(&csr, "Approved") {
                info!(csr = %name, reason = %denial, "approved CSR fails the signer's checks; marking it Failed");
                ("Failed", "status")
            } else {
                info!(csr = %name, reason = %denial, "denying CSR");
                ("Denied", "approval")
            };
            let c = condition(kind, "RoomcastPolicy", denial.to_string());
            set_condition(api, csr, c, subresource).await?;
            return Ok(());
        }
    };
    let Some(requester) = csr_check::requester(&csr).ok() else {
        return Ok(());
    };
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &requester.namespace);
    let Some(ca) = secrets
        .get_opt(&names::peer_ca_secret(&requester.service_account))
        .await?
        .and_then(|s| CaMaterial::from_secret(&s))
    else {
        // The hub's first reconcile has not made the CA yet; the watch's resync retries.
        debug!(csr = %name, "no CA yet for this hub");
        return Err(Error::Render(format!(
            "no peer CA yet for hub {}/{}",
            requester.namespace, requester.service_account
        )));
    };
    let ca_info = peer_ca::inspect(&ca.cert_pem).map_err(|e| Error::Render(e.to_string()))?;
    let hubs: Api<SocketIOHub> = Api::namespaced(client.clone(), &requester.namespace);
    let max_seconds = hubs
        .get_opt(&requester.service_account)
        .await?
        .map(|h| h.spec.peer_tls.certificate_seconds)
        .unwrap_or(86_400);
    let now = Timestamp::now().as_second();
    let csr = if has_condition(&csr, "Approved") {
        csr
    } else {
        set_condition(
            api,
            csr,
            condition(
                "Approved",
                "RoomcastPolicy",
                format!(
                    "pod {} of hub {}/{}",
                    requester.pod, requester.namespace, requester.service_account
                ),
            ),
            "approval",
        )
        .await?
    };
    let pem = csr_check::sign(
        &checked,
        &ca.cert_pem,
        &ca.key_pem,
        ca_info.not_after,
        now,
        max_seconds,
    )
    .map_err(|e| Error::Render(format!("signing: {e}")))?;
    let mut signed = csr;
    signed
        .status
        .get_or_insert_with(CertificateSigningRequestStatus::default)
        .certificate = Some(ByteString(pem.into_bytes()));
    api.replace_status(&name, &PostParams::default(), &signed)
        .await?;
    info!(csr = %name, pod = %requester.pod, namespace = %requester.namespace, "signed a peer certificate");
    Ok(())
}

/// The policy against the cluster: the requester is a hub's ServiceAccount, the pod exists,
/// belongs to the hub's StatefulSet and runs as that ServiceAccount, then the request itself.
async fn verdict(
    client: &Client,
    csr: &CertificateSigningRequest,
) -> Result<Result<csr_check::Checked, Denial>> {
    let r = match csr_check::requester(csr) {
        Ok(r) => r,
        Err(d) => return Ok(Err(d)),
    };
    let hubs: Api<SocketIOHub> = Api::namespaced(client.clone(), &r.namespace);
    if hubs.get_opt(&r.service_account).await?.is_none() {
        return Ok(Err(Denial::NotAHub));
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), &r.namespace);
    let hub_sts = names::same(&r.service_account);
    let owned = pods.get_opt(&r.pod).await?.is_some_and(|pod| {
        let by_sts = pod
            .owner_references()
            .iter()
            .any(|o| o.controller == Some(true) && o.kind == "StatefulSet" && o.name == hub_sts);
        let runs_as = pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.as_deref())
            == Some(r.service_account.as_str());
        let uid = csr
            .spec
            .extra
            .as_ref()
            .and_then(|e| e.get(POD_UID_EXTRA))
            .and_then(|v| v.first());
        let same_pod = uid.is_none_or(|u| pod.metadata.uid.as_ref() == Some(u));
        by_sts && runs_as && same_pod
    });
    if !owned {
        return Ok(Err(Denial::NotHubPod(r.pod)));
    }
    Ok(csr_check::check_request(csr, &r.pod))
}

/// Adds `cond` through the `approval` or `status` subresource (an update: the verbs the
/// chart grants).
async fn set_condition(
    api: &Api<CertificateSigningRequest>,
    mut csr: CertificateSigningRequest,
    cond: CertificateSigningRequestCondition,
    subresource: &str,
) -> Result<CertificateSigningRequest> {
    let name = csr.name_any();
    csr.status
        .get_or_insert_with(CertificateSigningRequestStatus::default)
        .conditions
        .get_or_insert_with(Vec::new)
        .push(cond);
    Ok(api
        .replace_subresource(subresource, &name, &PostParams::default(), &csr)
        .await?)
}
