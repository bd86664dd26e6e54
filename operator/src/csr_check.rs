//! Pure policy of the `roomcast.io/peer` signer: which CertificateSigningRequests are
//! approved, and the leaf certificate signed for them.
//!
//! Everything in a CSR is attacker-controlled except what the API server fills in
//! (`username`, `extra`): the requested names are checked against the pod the API server
//! vouches for, and the signed certificate is built from scratch (only the public key is
//! taken from the request).

use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use rcgen::{
    CertificateParams, CertificateSigningRequestParams, DistinguishedName, DnType, DnValue,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};

use crate::peer_ca::{time_of, SIGNER_NAME};

/// The `spec.extra` key under which the API server names the pod of a bound token.
pub const POD_NAME_EXTRA: &str = "authentication.kubernetes.io/pod-name";
/// The key usages a request must ask for, exactly.
pub const USAGES: [&str; 3] = ["digital signature", "client auth", "server auth"];
/// Largest PEM request accepted.
pub const MAX_REQUEST_BYTES: usize = 16 * 1024;
/// Kubernetes names are at most this long (a DNS subdomain).
const MAX_NAME: usize = 253;
/// Clock skew allowed for: certificates are valid from this many seconds before signing.
pub const BACKDATE_SECONDS: i64 = 60;

/// Why a request is denied (the Denied condition's message).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Denial {
    #[error("signer is not {SIGNER_NAME}")]
    Signer,
    #[error("requester {0:?} is not a service account")]
    NotServiceAccount(String),
    #[error("requester is not the service account of a SocketIOHub")]
    NotAHub,
    #[error("the request carries no single {POD_NAME_EXTRA} (not made with a pod-bound token)")]
    NoPod,
    #[error("pod {0:?} is not a pod of the hub")]
    NotHubPod(String),
    #[error("usages must be exactly: digital signature, client auth, server auth")]
    Usages,
    #[error("the request is not a valid, correctly signed PKCS#10 request: {0}")]
    Malformed(String),
    #[error("the key must be ECDSA P-256")]
    KeyType,
    #[error(
        "the request must name exactly the pod {0:?} (one DNS name, common name empty or equal)"
    )]
    Names(String),
    #[error("the request may ask only for digital signature, client auth and server auth")]
    RequestedUsages,
}

/// The requester as the API server recorded it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Requester {
    pub namespace: String,
    pub service_account: String,
    pub pod: String,
}

/// Reads who asked: a service account (`system:serviceaccount:<ns>:<name>`) with exactly one
/// pod name in `extra` (present for pod-bound tokens since Kubernetes 1.32).
pub fn requester(csr: &CertificateSigningRequest) -> Result<Requester, Denial> {
    if csr.spec.signer_name != SIGNER_NAME {
        return Err(Denial::Signer);
    }
    let user = csr.spec.username.clone().unwrap_or_default();
    let parts: Vec<&str> = user.split(':').collect();
    let (namespace, sa) = match parts.as_slice() {
        ["system", "serviceaccount", ns, sa] if valid_name(ns) && valid_name(sa) => {
            (ns.to_string(), sa.to_string())
        }
        _ => return Err(Denial::NotServiceAccount(truncate(&user))),
    };
    let pod = match csr
        .spec
        .extra
        .as_ref()
        .and_then(|e| e.get(POD_NAME_EXTRA))
        .map(Vec::as_slice)
    {
        Some([pod]) if valid_name(pod) => pod.clone(),
        _ => return Err(Denial::NoPod),
    };
    Ok(Requester {
        namespace,
        service_account: sa,
        pod,
    })
}

/// A request that passed every check.
#[derive(Debug)]
pub struct Checked {
    pub pod: String,
    pub request: CertificateSigningRequestParams,
    /// Requested lifetime (`spec.expirationSeconds`), if any.
    pub requested_seconds: Option<i64>,
}

/// Checks the request itself for `pod` (the requester already checked against the cluster):
/// the usages, the PKCS#10 signature, the key type and the names.
pub fn check_request(csr: &CertificateSigningRequest, pod: &str) -> Result<Checked, Denial> {
    let mut usages: Vec<&str> = csr
        .spec
        .usages
        .iter()
        .flatten()
        .map(String::as_str)
        .collect();
    usages.sort_unstable();
    let mut expected = USAGES;
    expected.sort_unstable();
    if usages != expected {
        return Err(Denial::Usages);
    }
    let raw = &csr.spec.request.0;
    if raw.len() > MAX_REQUEST_BYTES {
        return Err(Denial::Malformed("request too large".to_string()));
    }
    let pem = std::str::from_utf8(raw).map_err(|_| Denial::Malformed("not UTF-8".to_string()))?;
    let request = CertificateSigningRequestParams::from_pem(pem)
        .map_err(|e| Denial::Malformed(e.to_string()))?;
    if request.public_key.algorithm() != &rcgen::PKCS_ECDSA_P256_SHA256 {
        return Err(Denial::KeyType);
    }
    let p = &request.params;
    let names_ok = matches!(p.subject_alt_names.as_slice(), [SanType::DnsName(n)] if n.as_str() == pod)
        && p.distinguished_name.iter().all(|(ty, value)| {
            *ty == DnType::CommonName && dn_text(value).is_some_and(|v| v == pod)
        });
    if !names_ok {
        return Err(Denial::Names(pod.to_string()));
    }
    let usages_ok = p
        .key_usages
        .iter()
        .all(|u| *u == KeyUsagePurpose::DigitalSignature)
        && p.extended_key_usages.iter().all(|u| {
            matches!(
                u,
                ExtendedKeyUsagePurpose::ClientAuth | ExtendedKeyUsagePurpose::ServerAuth
            )
        })
        && p.is_ca == IsCa::NoCa;
    if !usages_ok {
        return Err(Denial::RequestedUsages);
    }
    Ok(Checked {
        pod: pod.to_string(),
        requested_seconds: csr.spec.expiration_seconds.map(i64::from),
        request,
    })
}

/// Signs the leaf for a checked request with the CA: valid from `now - BACKDATE_SECONDS`
/// for min(requested, `max_seconds`), never past the CA's `ca_not_after`; DNS SAN and common
/// name = the pod; digital signature, client and server auth; a random serial.
pub fn sign(
    checked: &Checked,
    ca_cert_pem: &str,
    ca_key_pem: &str,
    ca_not_after: i64,
    now: i64,
    max_seconds: i64,
) -> Result<String, rcgen::Error> {
    let key = KeyPair::from_pem(ca_key_pem)?;
    let issuer = Issuer::from_ca_cert_pem(ca_cert_pem, key)?;
    let lifetime = checked
        .requested_seconds
        .unwrap_or(max_seconds)
        .clamp(1, max_seconds.max(1));
    let mut params = CertificateParams::new(vec![checked.pod.clone()])?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, checked.pod.clone());
    params.distinguished_name = dn;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    let mut serial = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut serial);
    serial[0] &= 0x7f;
    params.serial_number = Some(SerialNumber::from_slice(&serial));
    params.not_before = time_of(now.saturating_sub(BACKDATE_SECONDS));
    params.not_after = time_of(now.saturating_add(lifetime).min(ca_not_after));
    Ok(params
        .signed_by(&checked.request.public_key, &issuer)?
        .pem())
}

fn dn_text(v: &DnValue) -> Option<&str> {
    match v {
        DnValue::Utf8String(s) => Some(s.as_str()),
        DnValue::PrintableString(s) => Some(s.as_str()),
        _ => None,
    }
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_NAME
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
}

fn truncate(s: &str) -> String {
    s.chars().take(100).collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::api::certificates::v1::CertificateSigningRequestSpec;
    use k8s_openapi::ByteString;
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

    use super::*;
    use crate::peer_ca::new_ca;

    fn request_pem(
        cn: Option<&str>,
        sans: &[&str],
        alg: &'static rcgen::SignatureAlgorithm,
    ) -> String {
        let key = KeyPair::generate_for(alg).unwrap();
        let mut p =
            CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        let mut dn = DistinguishedName::new();
        if let Some(cn) = cn {
            dn.push(DnType::CommonName, cn);
        }
        p.distinguished_name = dn;
        p.serialize_request(&key).unwrap().pem().unwrap()
    }

    fn csr(user: &str, pods: &[&str], usages: &[&str], pem: &str) -> CertificateSigningRequest {
        CertificateSigningRequest {
            spec: CertificateSigningRequestSpec {
                signer_name: SIGNER_NAME.to_string(),
                username: Some(user.to_string()),
                extra: Some(BTreeMap::from([(
                    POD_NAME_EXTRA.to_string(),
                    pods.iter().map(|p| p.to_string()).collect(),
                )])),
                usages: Some(usages.iter().map(|u| u.to_string()).collect()),
                request: ByteString(pem.as_bytes().to_vec()),
                expiration_seconds: Some(3600),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    const SA: &str = "system:serviceaccount:apps:chat";

    fn good() -> CertificateSigningRequest {
        csr(
            SA,
            &["chat-0"],
            &USAGES,
            &request_pem(Some("chat-0"), &["chat-0"], &rcgen::PKCS_ECDSA_P256_SHA256),
        )
    }

    #[test]
    fn good_request_is_signed_for_the_pod_by_the_ca() {
        let r = requester(&good()).unwrap();
        assert_eq!(
            r,
            Requester {
                namespace: "apps".into(),
                service_account: "chat".into(),
                pod: "chat-0".into()
            }
        );
        let checked = check_request(&good(), &r.pod).unwrap();
        let now = 1_800_000_000;
        let (ca_cert, ca_key) = new_ca("apps", "chat", now, 365 * 86400).unwrap();
        let pem = sign(&checked, &ca_cert, &ca_key, now + 365 * 86400, now, 86400).unwrap();
        let (_, leaf_pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
        let (_, leaf) = X509Certificate::from_der(&leaf_pem.contents).unwrap();
        let (_, ca_pem) = x509_parser::pem::parse_x509_pem(ca_cert.as_bytes()).unwrap();
        let (_, ca) = X509Certificate::from_der(&ca_pem.contents).unwrap();
        leaf.verify_signature(Some(ca.public_key())).unwrap();
        assert_eq!(leaf.issuer(), ca.subject());
        let sans: Vec<_> = leaf
            .subject_alternative_name()
            .unwrap()
            .unwrap()
            .value
            .general_names
            .clone();
        assert_eq!(sans, vec![GeneralName::DNSName("chat-0")]);
        // Lifetime: the requested hour (below the 1-day maximum), backdated a minute.
        assert_eq!(leaf.validity().not_after.timestamp(), now + 3600);
        assert_eq!(leaf.validity().not_before.timestamp(), now - 60);
        let eku = leaf.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.client_auth && eku.server_auth);
        assert!(!leaf.is_ca());
        // A request for longer than the maximum gets the maximum, never past the CA.
        let long = Checked {
            requested_seconds: Some(10 * 86400),
            ..check_request(&good(), "chat-0").unwrap()
        };
        let pem = sign(&long, &ca_cert, &ca_key, now + 7200, now, 86400).unwrap();
        let (_, p) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
        let (_, c) = X509Certificate::from_der(&p.contents).unwrap();
        assert_eq!(c.validity().not_after.timestamp(), now + 7200);
    }

    #[test]
    fn wrong_requesters_are_denied() {
        let pem = request_pem(Some("chat-0"), &["chat-0"], &rcgen::PKCS_ECDSA_P256_SHA256);
        for user in [
            "alice",
            "system:serviceaccount:apps",
            "system:serviceaccount:apps:chat:x",
            "system:node:n1",
        ] {
            assert!(
                matches!(
                    requester(&csr(user, &["chat-0"], &USAGES, &pem)),
                    Err(Denial::NotServiceAccount(_))
                ),
                "{user}"
            );
        }
        // Missing extra (a long-lived token, or a client certificate).
        let mut c = good();
        c.spec.extra = None;
        assert_eq!(requester(&c), Err(Denial::NoPod));
        assert_eq!(requester(&csr(SA, &[], &USAGES, &pem)), Err(Denial::NoPod));
        assert_eq!(
            requester(&csr(SA, &["chat-0", "chat-1"], &USAGES, &pem)),
            Err(Denial::NoPod)
        );
        let mut c = good();
        c.spec.signer_name = "kubernetes.io/kube-apiserver-client".into();
        assert_eq!(requester(&c), Err(Denial::Signer));
    }

    #[test]
    fn wrong_names_usages_and_keys_are_denied() {
        let p256 = &rcgen::PKCS_ECDSA_P256_SHA256;
        // Another pod's name, an extra name, a different common name.
        for (cn, sans) in [
            (Some("chat-1"), vec!["chat-1"]),
            (Some("chat-0"), vec!["chat-1"]),
            (Some("chat-0"), vec!["chat-0", "chat-1"]),
            (Some("chat-1"), vec!["chat-0"]),
            (None, vec![]),
        ] {
            let c = csr(SA, &["chat-0"], &USAGES, &request_pem(cn, &sans, p256));
            assert_eq!(
                check_request(&c, "chat-0").unwrap_err(),
                Denial::Names("chat-0".into()),
                "{cn:?} {sans:?}"
            );
        }
        // Common name may be left out.
        let c = csr(
            SA,
            &["chat-0"],
            &USAGES,
            &request_pem(None, &["chat-0"], p256),
        );
        assert!(check_request(&c, "chat-0").is_ok());
        // Usages must be exactly the three.
        let pem = request_pem(Some("chat-0"), &["chat-0"], p256);
        for usages in [
            vec!["digital signature", "client auth"],
            vec![
                "digital signature",
                "client auth",
                "server auth",
                "key encipherment",
            ],
            vec!["client auth", "server auth", "cert sign"],
        ] {
            let c = csr(SA, &["chat-0"], &usages, &pem);
            assert_eq!(check_request(&c, "chat-0").unwrap_err(), Denial::Usages);
        }
        // Another key type.
        let c = csr(
            SA,
            &["chat-0"],
            &USAGES,
            &request_pem(Some("chat-0"), &["chat-0"], &rcgen::PKCS_ED25519),
        );
        assert_eq!(check_request(&c, "chat-0").unwrap_err(), Denial::KeyType);
        // Garbage, and a request whose signature does not match (a flipped byte).
        let c = csr(
            SA,
            &["chat-0"],
            &USAGES,
            "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
        );
        assert!(matches!(
            check_request(&c, "chat-0"),
            Err(Denial::Malformed(_))
        ));
        let (_, der) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
        let mut bytes = der.contents.clone();
        let n = bytes.len();
        bytes[n - 5] ^= 0x01;
        use base64::Engine as _;
        let forged = format!(
            "-----BEGIN CERTIFICATE REQUEST-----\n{}\n-----END CERTIFICATE REQUEST-----\n",
            base64::engine::general_purpose::STANDARD.encode(bytes)
        );
        let c = csr(SA, &["chat-0"], &USAGES, &forged);
        assert!(matches!(
            check_request(&c, "chat-0"),
            Err(Denial::Malformed(_))
        ));
        // A CA request.
        let key = KeyPair::generate_for(p256).unwrap();
        let mut p = CertificateParams::new(vec!["chat-0".to_string()]).unwrap();
        p.distinguished_name = DistinguishedName::new();
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        let c = csr(
            SA,
            &["chat-0"],
            &USAGES,
            &p.serialize_request(&key).unwrap().pem().unwrap(),
        );
        assert_eq!(
            check_request(&c, "chat-0").unwrap_err(),
            Denial::RequestedUsages
        );
    }
}
