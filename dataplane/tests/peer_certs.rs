//! `cluster.tls.kubernetes` (`PeerCerts`) against a real kube-apiserver. Ignored by default:
//! `e2e/discovery-tests.sh` (`make test-discovery`) starts a throwaway control plane, exports
//! `KUBECONFIG` (an admin) and runs these with `--ignored`.
//!
//! The test plays the signer (approving or denying through the API, signing with a CA of its
//! own) under a signer name of its own, so the node's side is tested alone: the request it
//! makes, the wait, the refusals, the files, and renewal after a CA rotation.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestCondition, CertificateSigningRequestStatus,
};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::ByteString;
use kube::api::{ListParams, PostParams};
use kube::{Api, Client, ResourceExt};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, IsCa, Issuer, KeyPair,
};
use roomcast_config::PeerTlsConfig;
use roomcast_dataplane::cluster::peer_certs::{parse_certs, PeerCerts, PeerCertsError};

async fn admin() -> Client {
    Client::try_default()
        .await
        .expect("KUBECONFIG for the test control plane (run e2e/discovery-tests.sh)")
}

async fn namespace(admin: &Client) -> String {
    let name = format!("certs-{:08x}", rand::random::<u32>());
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    Api::<Namespace>::all(admin.clone())
        .create(&PostParams::default(), &ns)
        .await
        .expect("namespace");
    name
}

struct Ca {
    pem: String,
    key: KeyPair,
}

fn ca(cn: &str, not_before: i64) -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.not_before = time::OffsetDateTime::from_unix_timestamp(not_before).unwrap();
    p.not_after = time::OffsetDateTime::from_unix_timestamp(not_before + 86_400).unwrap();
    Ca {
        pem: p.self_signed(&key).unwrap().pem(),
        key,
    }
}

async fn put_bundle(admin: &Client, ns: &str, pem: &str) {
    let cm = ConfigMap {
        metadata: ObjectMeta {
            name: Some("trust".into()),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([("ca.crt".to_string(), pem.to_string())])),
        ..ConfigMap::default()
    };
    let api: Api<ConfigMap> = Api::namespaced(admin.clone(), ns);
    let pp = kube::api::PatchParams::apply("test").force();
    api.patch("trust", &pp, &kube::api::Patch::Apply(&cm))
        .await
        .expect("trust ConfigMap");
}

fn config(dir: &Path, ns: &str, signer: &str, issue_timeout: u64) -> PeerTlsConfig {
    let mut tls = PeerTlsConfig::files(dir);
    tls.reload_interval = 200;
    tls.kubernetes = Some(
        serde_json::from_value(serde_json::json!({
            "signerName": signer,
            "trustConfigMap": "trust",
            "namespace": ns,
            "durationSeconds": 3600,
            "issueTimeout": issue_timeout,
        }))
        .unwrap(),
    );
    tls
}

/// Pending CSRs of `signer`.
async fn pending(
    api: &Api<CertificateSigningRequest>,
    signer: &str,
) -> Vec<CertificateSigningRequest> {
    api.list(&ListParams::default().fields(&format!("spec.signerName={signer}")))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|c| {
            c.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_none()
        })
        .collect()
}

fn condition(type_: &str) -> CertificateSigningRequestCondition {
    CertificateSigningRequestCondition {
        type_: type_.into(),
        status: "True".into(),
        reason: Some("Test".into()),
        message: Some(format!("{type_} by the test")),
        ..CertificateSigningRequestCondition::default()
    }
}

/// Approves and signs (with `ca`) or denies every pending CSR of `signer`; returns how many.
async fn decide(admin: &Client, signer: &str, ca: Option<&Ca>) -> usize {
    let api: Api<CertificateSigningRequest> = Api::all(admin.clone());
    let list = pending(&api, signer).await;
    let n = list.len();
    for mut csr in list {
        let name = csr.name_any();
        let approve = ca.is_some();
        csr.status = Some(CertificateSigningRequestStatus {
            conditions: Some(vec![condition(if approve { "Approved" } else { "Denied" })]),
            ..CertificateSigningRequestStatus::default()
        });
        let mut csr = api
            .replace_subresource("approval", &name, &PostParams::default(), &csr)
            .await
            .unwrap();
        let Some(ca) = ca else { continue };
        // The request as the node made it: usages, names, key.
        assert_eq!(
            csr.spec.usages.clone().unwrap(),
            vec!["digital signature", "client auth", "server auth"]
        );
        assert_eq!(csr.spec.expiration_seconds, Some(3600));
        assert!(name.starts_with("hub-0-"), "generateName <nodeId>-: {name}");
        let req = CertificateSigningRequestParams::from_pem(
            std::str::from_utf8(&csr.spec.request.0).unwrap(),
        )
        .unwrap();
        assert_eq!(
            req.params.subject_alt_names,
            vec![rcgen::SanType::DnsName("hub-0".try_into().unwrap())]
        );
        let issuer = Issuer::from_ca_cert_pem(&ca.pem, &ca.key).unwrap();
        let cert = req.signed_by(&issuer).unwrap();
        csr.status.get_or_insert_with(Default::default).certificate =
            Some(ByteString(cert.pem().into_bytes()));
        api.replace_status(&name, &PostParams::default(), &csr)
            .await
            .unwrap();
    }
    n
}

fn issuer_cn(cert_file: &Path) -> Vec<u8> {
    let pem = std::fs::read(cert_file).unwrap();
    parse_certs(&pem).unwrap()[0].issuer.clone()
}

#[tokio::test]
#[ignore = "needs the control plane of e2e/discovery-tests.sh"]
async fn issued_written_renewed_after_a_ca_rotation_and_refusals_fail_the_start() {
    let admin = admin().await;
    let ns = namespace(&admin).await;
    let signer = format!("test.roomcast.io/{ns}");
    let dir = std::env::temp_dir().join(format!("peer-certs-{ns}"));
    std::fs::create_dir_all(&dir).unwrap();
    let old = ca("old", 1_700_000_000);
    put_bundle(&admin, &ns, &old.pem).await;

    // Nobody signs: the start fails after issueTimeout, naming the request.
    let tls = config(&dir, &ns, &signer, 1000);
    match PeerCerts::start(&tls, "hub-0").await {
        Err(PeerCertsError::Timeout(name, _)) => assert!(name.starts_with("hub-0-")),
        Err(e) => panic!("expected a timeout, got {e}"),
        Ok(_) => panic!("started without a certificate"),
    }
    assert!(!dir.join("tls.crt").exists() && !dir.join("tls.key").exists());
    // Clear what that attempt left pending.
    decide(&admin, &signer, None).await;

    // Denied: the start fails with the signer's reason.
    let tls = config(&dir, &ns, &signer, 20_000);
    let denier = {
        let admin = admin.clone();
        let signer = signer.clone();
        tokio::spawn(async move {
            while decide(&admin, &signer, None).await == 0 {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    match PeerCerts::start(&tls, "hub-0").await {
        Err(e @ PeerCertsError::Refused { .. }) => {
            assert!(e.to_string().contains("Denied by the test"), "{e}")
        }
        Err(e) => panic!("expected a refusal, got {e}"),
        Ok(_) => panic!("started with a denied request"),
    }
    denier.await.unwrap();

    // Signed: key (0600), certificate and bundle written before the start returns.
    let signing = {
        let admin = admin.clone();
        let signer = signer.clone();
        let pem = old.pem.clone();
        let key = old.key.serialize_pem();
        tokio::spawn(async move {
            let ca = Ca {
                pem,
                key: KeyPair::from_pem(&key).unwrap(),
            };
            while decide(&admin, &signer, Some(&ca)).await == 0 {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let certs = PeerCerts::start(&tls, "hub-0").await.expect("certificate");
    signing.await.unwrap();
    let key_mode = std::fs::metadata(dir.join("tls.key"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(key_mode, 0o600);
    assert_eq!(
        std::fs::read_to_string(dir.join("ca.crt")).unwrap(),
        old.pem
    );
    let old_subject = parse_certs(old.pem.as_bytes()).unwrap()[0].subject.clone();
    assert_eq!(issuer_cn(&dir.join("tls.crt")), old_subject);

    // CA rotation: a bundle with a newer CA is written out, and the node asks again (after
    // three reload intervals); the new certificate is from the new CA.
    let new = ca("new", 1_700_000_100);
    put_bundle(&admin, &ns, &format!("{}{}", old.pem, new.pem)).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while decide(&admin, &signer, Some(&new)).await == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no renewal after the CA rotation"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let new_subject = parse_certs(new.pem.as_bytes()).unwrap()[0].subject.clone();
    while issuer_cn(&dir.join("tls.crt")) != new_subject {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the renewed certificate was not written"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        parse_certs(&std::fs::read(dir.join("ca.crt")).unwrap())
            .unwrap()
            .len(),
        2
    );
    drop(certs);
    std::fs::remove_dir_all(&dir).unwrap();
}
