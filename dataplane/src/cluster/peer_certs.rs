//! `cluster.tls.kubernetes`: this node obtains its peer certificate from the cluster's
//! CertificateSigningRequest API and keeps `keyFile`, `certFile` and `caFile` current
//! (docs/operator.md#peer-certificates). The TLS layer re-reads the files when they change.
//!
//! The key is made here and never leaves the pod. The request is authenticated by the pod's
//! bound ServiceAccount token, so the API server records the pod name in the CSR and the
//! signer can check that the certificate names that pod. Renewal happens at two thirds of the
//! leaf's life, and soon after the trust bundle gains a newer CA than the one that signed the
//! leaf (a CA rotation). Everything read from the API is bounded and checked.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestSpec,
};
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::ByteString;
use kube::api::{Api, PostParams};
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};
use tokio::task::AbortHandle;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use crate::config::{PeerCertsKubernetes, PeerTlsConfig};

/// Key of the trust bundle in the trust ConfigMap.
pub const BUNDLE_KEY: &str = "ca.crt";
/// Largest trust bundle or issued certificate accepted from the API.
pub const MAX_PEM_BYTES: usize = 64 * 1024;
/// Most CA certificates read from a bundle.
pub const MAX_BUNDLE_CERTS: usize = 16;
/// The key usages every request asks for (what the signer requires, exactly).
pub const USAGES: [&str; 3] = ["digital signature", "client auth", "server auth"];
/// How often a pending request is looked at.
const POLL: Duration = Duration::from_millis(500);
/// Delay before retrying a failed renewal (the current certificate stays in use).
const RETRY: Duration = Duration::from_secs(10);
/// After the bundle gains a newer CA, renewal waits this many reload intervals, so every
/// member has loaded the new bundle before a leaf of the new CA is presented to it.
const ROTATION_WAIT_INTERVALS: u32 = 3;

/// Why certificates could not be obtained.
#[derive(Debug, thiserror::Error)]
pub enum PeerCertsError {
    #[error("kubernetes client: {0}")]
    Client(#[source] kube::Error),
    #[error("kubernetes API: {0}")]
    Api(#[source] kube::Error),
    #[error("this pod's namespace is unknown: {0}")]
    Namespace(String),
    #[error("making the key or request: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("certificate request {name} was {condition}: {message}")]
    Refused {
        name: String,
        condition: String,
        message: String,
    },
    #[error("certificate request {0} was not signed within {1:?}")]
    Timeout(String, Duration),
    #[error("trust ConfigMap {0}: {1}")]
    Bundle(String, String),
    #[error("the issued certificate is unusable: {0}")]
    BadCertificate(String),
    #[error("writing {0}: {1}")]
    Write(String, #[source] std::io::Error),
}

/// Facts of a certificate the renewal logic needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertFacts {
    pub subject: Vec<u8>,
    pub issuer: Vec<u8>,
    pub not_before: i64,
    pub not_after: i64,
}

/// Parses up to [`MAX_BUNDLE_CERTS`] certificates of a PEM text (other blocks are skipped).
pub fn parse_certs(pem: &[u8]) -> Result<Vec<CertFacts>, String> {
    if pem.len() > MAX_PEM_BYTES {
        return Err(format!("larger than {MAX_PEM_BYTES} bytes"));
    }
    let mut out = Vec::new();
    for block in x509_parser::pem::Pem::iter_from_buffer(pem) {
        let block = block.map_err(|e| e.to_string())?;
        if block.label != "CERTIFICATE" {
            continue;
        }
        if out.len() == MAX_BUNDLE_CERTS {
            return Err(format!("more than {MAX_BUNDLE_CERTS} certificates"));
        }
        let (_, c) = X509Certificate::from_der(&block.contents).map_err(|e| e.to_string())?;
        out.push(CertFacts {
            subject: c.subject().as_raw().to_vec(),
            issuer: c.issuer().as_raw().to_vec(),
            not_before: c.validity().not_before.timestamp(),
            not_after: c.validity().not_after.timestamp(),
        });
    }
    if out.is_empty() {
        return Err("no certificate".to_string());
    }
    Ok(out)
}

/// The CA of the bundle issued last: the one the signer signs with.
pub fn newest(bundle: &[CertFacts]) -> Option<&CertFacts> {
    bundle.iter().max_by_key(|c| c.not_before)
}

/// When the leaf is due for renewal: two thirds into its life.
pub fn renew_at(leaf: &CertFacts) -> i64 {
    let life = leaf.not_after.saturating_sub(leaf.not_before);
    leaf.not_before.saturating_add(life / 3 * 2)
}

/// Whether the newest CA of the bundle did not sign the leaf (a CA rotation started).
pub fn signed_by_older_ca(leaf: &CertFacts, bundle: &[CertFacts]) -> bool {
    newest(bundle).is_some_and(|ca| ca.subject != leaf.issuer)
}

/// A new P-256 key and a PKCS#10 request naming `node_id` (common name and DNS SAN).
pub fn request_for(node_id: &str) -> Result<(KeyPair, String), rcgen::Error> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::new(vec![node_id.to_string()])?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, node_id);
    params.distinguished_name = dn;
    let csr = params.serialize_request(&key)?;
    Ok((key, csr.pem()?))
}

/// Checks an issued certificate: parses, names `node_id`, carries `key`'s public key.
pub fn check_issued(pem: &[u8], node_id: &str, key: &KeyPair) -> Result<CertFacts, String> {
    if pem.len() > MAX_PEM_BYTES {
        return Err(format!("larger than {MAX_PEM_BYTES} bytes"));
    }
    let (_, block) = x509_parser::pem::parse_x509_pem(pem).map_err(|e| e.to_string())?;
    let (_, c) = X509Certificate::from_der(&block.contents).map_err(|e| e.to_string())?;
    if c.public_key().raw != rcgen::PublicKeyData::subject_public_key_info(key).as_slice() {
        return Err("it does not carry this node's public key".to_string());
    }
    let names_node = c
        .subject_alternative_name()
        .ok()
        .flatten()
        .is_some_and(|san| {
            san.value
                .general_names
                .iter()
                .any(|n| matches!(n, GeneralName::DNSName(d) if *d == node_id))
        });
    if !names_node {
        return Err(format!("it does not name {node_id:?}"));
    }
    Ok(CertFacts {
        subject: c.subject().as_raw().to_vec(),
        issuer: c.issuer().as_raw().to_vec(),
        not_before: c.validity().not_before.timestamp(),
        not_after: c.validity().not_after.timestamp(),
    })
}

/// Writes `bytes` to `path` through a temporary file in the same directory and a rename, so
/// a reader sees the old or the new content, never a part. `mode` is the file's permissions.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), PeerCertsError> {
    use std::os::unix::fs::OpenOptionsExt;
    let err = |e| PeerCertsError::Write(path.display().to_string(), e);
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(err)?;
    f.write_all(bytes).map_err(err)?;
    f.sync_all().map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The running keeper; stops when dropped.
pub struct PeerCerts {
    task: AbortHandle,
}

impl Drop for PeerCerts {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Keeper {
    csrs: Api<CertificateSigningRequest>,
    config_maps: Api<ConfigMap>,
    tls: PeerTlsConfig,
    k: PeerCertsKubernetes,
    node_id: String,
}

impl PeerCerts {
    /// Obtains the trust bundle and a certificate (failing after `issueTimeout` when the
    /// signer does not answer), writes the files, then keeps them current in the background.
    pub async fn start(tls: &PeerTlsConfig, node_id: &str) -> Result<Self, PeerCertsError> {
        let Some(k) = tls.kubernetes.clone() else {
            return Err(PeerCertsError::Namespace(
                "cluster.tls.kubernetes is not set".into(),
            ));
        };
        let namespace = match &k.namespace {
            Some(ns) => ns.clone(),
            None => super::discovery::this_pods_namespace()
                .map_err(|e| PeerCertsError::Namespace(e.to_string()))?,
        };
        let client = kube::Client::try_default()
            .await
            .map_err(PeerCertsError::Client)?;
        let keeper = Keeper {
            csrs: Api::all(client.clone()),
            config_maps: Api::namespaced(client, &namespace),
            tls: tls.clone(),
            k,
            node_id: node_id.to_string(),
        };
        let bundle_text = keeper.fetch_bundle().await?;
        let bundle = parse_certs(&bundle_text)
            .map_err(|e| PeerCertsError::Bundle(keeper.k.trust_config_map.clone(), e))?;
        write_atomic(&keeper.tls.ca_file, &bundle_text, 0o644)?;
        let leaf = keeper.issue().await?;
        tracing::info!(node = %node_id, not_after = leaf.not_after, cas = bundle.len(), "peer certificate issued");
        let task = tokio::spawn(keeper.run(bundle_text, bundle, leaf));
        Ok(Self {
            task: task.abort_handle(),
        })
    }
}

impl Keeper {
    async fn fetch_bundle(&self) -> Result<Vec<u8>, PeerCertsError> {
        let name = &self.k.trust_config_map;
        let cm = self
            .config_maps
            .get(name)
            .await
            .map_err(PeerCertsError::Api)?;
        let text = cm
            .data
            .as_ref()
            .and_then(|d| d.get(BUNDLE_KEY))
            .ok_or_else(|| PeerCertsError::Bundle(name.clone(), format!("no key {BUNDLE_KEY}")))?;
        if text.len() > MAX_PEM_BYTES {
            return Err(PeerCertsError::Bundle(
                name.clone(),
                format!("larger than {MAX_PEM_BYTES} bytes"),
            ));
        }
        Ok(text.as_bytes().to_vec())
    }

    /// Requests, waits for and writes a new key and certificate.
    async fn issue(&self) -> Result<CertFacts, PeerCertsError> {
        let (key, request) = request_for(&self.node_id)?;
        let csr = CertificateSigningRequest {
            metadata: ObjectMeta {
                generate_name: Some(format!("{}-", self.node_id)),
                ..ObjectMeta::default()
            },
            spec: CertificateSigningRequestSpec {
                signer_name: self.k.signer_name.clone(),
                request: ByteString(request.into_bytes()),
                usages: Some(USAGES.iter().map(|u| u.to_string()).collect()),
                expiration_seconds: Some(
                    i32::try_from(self.k.duration_seconds).unwrap_or(i32::MAX),
                ),
                ..CertificateSigningRequestSpec::default()
            },
            status: None,
        };
        let created = self
            .csrs
            .create(&PostParams::default(), &csr)
            .await
            .map_err(PeerCertsError::Api)?;
        let name = created.metadata.name.clone().unwrap_or_default();
        tracing::debug!(csr = %name, "certificate requested");
        let timeout = Duration::from_millis(self.k.issue_timeout);
        let cert = tokio::time::timeout(timeout, self.wait_issued(&name))
            .await
            .map_err(|_| PeerCertsError::Timeout(name.clone(), timeout))??;
        let facts =
            check_issued(&cert, &self.node_id, &key).map_err(PeerCertsError::BadCertificate)?;
        write_atomic(&self.tls.key_file, key.serialize_pem().as_bytes(), 0o600)?;
        write_atomic(&self.tls.cert_file, &cert, 0o644)?;
        Ok(facts)
    }

    async fn wait_issued(&self, name: &str) -> Result<Vec<u8>, PeerCertsError> {
        loop {
            match self.csrs.get(name).await {
                Ok(csr) => {
                    let status = csr.status.unwrap_or_default();
                    for c in status.conditions.iter().flatten() {
                        if (c.type_ == "Denied" || c.type_ == "Failed") && c.status == "True" {
                            return Err(PeerCertsError::Refused {
                                name: name.to_string(),
                                condition: c.type_.clone(),
                                message: c
                                    .message
                                    .clone()
                                    .unwrap_or_default()
                                    .chars()
                                    .take(300)
                                    .collect(),
                            });
                        }
                    }
                    if let Some(cert) = status.certificate.filter(|c| !c.0.is_empty()) {
                        return Ok(cert.0);
                    }
                }
                Err(e) => {
                    tracing::debug!(csr = %name, error = %e, "reading the certificate request failed; retrying")
                }
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Polls the bundle every `reloadInterval`; renews on schedule or after a CA rotation.
    async fn run(self, mut bundle_text: Vec<u8>, mut bundle: Vec<CertFacts>, mut leaf: CertFacts) {
        let interval = Duration::from_millis(self.tls.reload_interval);
        let rotation_wait = i64::try_from((interval * ROTATION_WAIT_INTERVALS).as_secs())
            .unwrap_or(0)
            .max(1);
        let retry = i64::try_from(RETRY.as_secs()).unwrap_or(10);
        let mut due = renew_at(&leaf);
        if signed_by_older_ca(&leaf, &bundle) {
            due = due.min(now() + rotation_wait);
        }
        loop {
            tokio::time::sleep(interval).await;
            match self.fetch_bundle().await {
                Ok(text) if text != bundle_text => match parse_certs(&text) {
                    Ok(parsed) => match write_atomic(&self.tls.ca_file, &text, 0o644) {
                        Ok(()) => {
                            tracing::info!(cas = parsed.len(), "trust bundle updated");
                            bundle_text = text;
                            bundle = parsed;
                            if signed_by_older_ca(&leaf, &bundle) {
                                due = due.min(now() + rotation_wait);
                                tracing::info!(
                                    in_seconds = rotation_wait,
                                    "the bundle has a newer CA; renewing the certificate"
                                );
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, "writing the trust bundle failed"),
                    },
                    Err(e) => {
                        tracing::warn!(error = %e, "the trust bundle is unusable; keeping the current one")
                    }
                },
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "reading the trust bundle failed; keeping the current one")
                }
            }
            if now() >= due {
                match self.issue().await {
                    Ok(new_leaf) => {
                        tracing::info!(not_after = new_leaf.not_after, "peer certificate renewed");
                        leaf = new_leaf;
                        due = renew_at(&leaf);
                        // Signed just before the signer switched to the bundle's newest CA:
                        // ask again rather than wait for the next bundle change.
                        if signed_by_older_ca(&leaf, &bundle) {
                            due = due.min(now() + retry);
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, retry_in = ?RETRY, "renewing the peer certificate failed; the current one stays");
                        due = now() + retry;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, IsCa, Issuer};

    fn ca(cn: &str, not_before: i64) -> (String, KeyPair) {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, cn);
        p.distinguished_name = dn;
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.not_before = time::OffsetDateTime::from_unix_timestamp(not_before).unwrap();
        p.not_after = time::OffsetDateTime::from_unix_timestamp(not_before + 1_000_000).unwrap();
        (p.self_signed(&key).unwrap().pem(), key)
    }

    fn leaf(node: &str, key: &KeyPair, ca_pem: &str, ca_key: &KeyPair) -> String {
        let issuer = Issuer::from_ca_cert_pem(ca_pem, ca_key).unwrap();
        let mut p = CertificateParams::new(vec![node.to_string()]).unwrap();
        p.not_before = time::OffsetDateTime::from_unix_timestamp(1_000_000).unwrap();
        p.not_after = time::OffsetDateTime::from_unix_timestamp(1_000_000 + 3000).unwrap();
        p.signed_by(key, &issuer).unwrap().pem()
    }

    #[test]
    fn issued_certificate_is_checked_and_renewal_is_due_at_two_thirds() {
        let (ca_pem, ca_key) = ca("old", 1000);
        let (key, request) = request_for("chat-0").unwrap();
        assert!(request.contains("CERTIFICATE REQUEST"));
        let cert = leaf("chat-0", &key, &ca_pem, &ca_key);
        let facts = check_issued(cert.as_bytes(), "chat-0", &key).unwrap();
        assert_eq!(renew_at(&facts), 1_000_000 + 2000);
        // Another node's name, or another key.
        assert!(check_issued(cert.as_bytes(), "chat-1", &key).is_err());
        let other = KeyPair::generate().unwrap();
        assert!(check_issued(cert.as_bytes(), "chat-0", &other).is_err());
        assert!(check_issued(b"garbage", "chat-0", &key).is_err());
    }

    #[test]
    fn a_newer_ca_in_the_bundle_triggers_renewal() {
        let (old_pem, old_key) = ca("old", 1000);
        let (new_pem, _) = ca("new", 2000);
        let key = KeyPair::generate().unwrap();
        let cert = leaf("chat-0", &key, &old_pem, &old_key);
        let facts = check_issued(cert.as_bytes(), "chat-0", &key).unwrap();
        let only_old = parse_certs(old_pem.as_bytes()).unwrap();
        assert!(!signed_by_older_ca(&facts, &only_old));
        // Order in the bundle does not matter: the newest is the one issued last.
        for bundle in [format!("{new_pem}{old_pem}"), format!("{old_pem}{new_pem}")] {
            let parsed = parse_certs(bundle.as_bytes()).unwrap();
            assert_eq!(parsed.len(), 2);
            assert!(signed_by_older_ca(&facts, &parsed));
        }
    }

    #[test]
    fn hostile_bundles_are_refused() {
        assert!(parse_certs(b"").is_err());
        assert!(
            parse_certs(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n").is_err()
        );
        let big = vec![b'a'; MAX_PEM_BYTES + 1];
        assert!(parse_certs(&big).is_err());
        let (ca_pem, _) = ca("x", 1000);
        let many = ca_pem.repeat(MAX_BUNDLE_CERTS + 1);
        assert!(parse_certs(many.as_bytes()).is_err());
    }

    #[test]
    fn files_are_replaced_atomically_with_their_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("peer-certs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("tls.key");
        write_atomic(&path, b"one", 0o600).unwrap();
        write_atomic(&path, b"two", 0o600).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(!dir.join("tls.key.tmp").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
