//! `cluster.tls`: mutual TLS on the peer port (docs/architecture.md#trust-model).
//!
//! Every member presents a certificate chaining to one of the CAs of `caFile` and checks the
//! other's; a member's certificate names it by a DNS subject alternative name equal to its
//! member id (the pod name). The files are re-read when they change, so certificates and
//! the trust bundle rotate without a restart. With `kubernetes` set the node obtains its
//! certificate itself, through the CertificateSigningRequest API, and keeps the three files
//! current.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::Problems;

/// Mutual TLS between the members of a hub.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PeerTlsConfig {
    /// PEM trust bundle: one or more CA certificates (two while a CA rotates).
    pub ca_file: PathBuf,
    /// PEM certificate chain of this member, leaf first. The leaf must carry a DNS SAN equal
    /// to this node's `nodeId`.
    pub cert_file: PathBuf,
    /// PEM private key of the leaf (PKCS#8, SEC1 or PKCS#1).
    pub key_file: PathBuf,
    /// Milliseconds between two checks of the files for changes.
    #[serde(default = "PeerTlsConfig::default_reload_interval")]
    pub reload_interval: u64,
    /// Milliseconds a connection may take to complete its TLS handshake.
    #[serde(default = "PeerTlsConfig::default_handshake_timeout")]
    pub handshake_timeout: u64,
    /// Handshakes in progress at once on the peer listener; more connections wait in the
    /// kernel's accept queue.
    #[serde(default = "PeerTlsConfig::default_max_handshakes")]
    pub max_handshakes: usize,
    /// Obtain the certificate from the cluster's CertificateSigningRequest API (the operator
    /// signs) and keep `certFile`, `keyFile` and `caFile` current.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<PeerCertsKubernetes>,
}

impl PeerTlsConfig {
    /// The files `ca.crt`, `tls.crt` and `tls.key` of `dir` (what `certs member` writes),
    /// with default timings.
    pub fn files(dir: &std::path::Path) -> Self {
        Self {
            ca_file: dir.join("ca.crt"),
            cert_file: dir.join("tls.crt"),
            key_file: dir.join("tls.key"),
            reload_interval: Self::default_reload_interval(),
            handshake_timeout: Self::default_handshake_timeout(),
            max_handshakes: Self::default_max_handshakes(),
            kubernetes: None,
        }
    }

    fn default_reload_interval() -> u64 {
        5_000
    }
    fn default_handshake_timeout() -> u64 {
        5_000
    }
    fn default_max_handshakes() -> usize {
        64
    }
}

/// Certificates issued through the Kubernetes CertificateSigningRequest API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PeerCertsKubernetes {
    /// The signer the CSRs name, e.g. `roomcast.io/peer` (the operator's).
    pub signer_name: String,
    /// ConfigMap holding the trust bundle under the key `ca.crt`.
    pub trust_config_map: String,
    /// Namespace of the ConfigMap. Default: this pod's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Requested certificate lifetime in seconds (the signer may shorten it); renewed at two
    /// thirds of its life.
    #[serde(default = "PeerCertsKubernetes::default_duration")]
    pub duration_seconds: u32,
    /// Milliseconds one certificate request may wait for the signer. At start the node
    /// fails when it has no certificate by then; later it keeps its current one and retries.
    #[serde(default = "PeerCertsKubernetes::default_issue_timeout")]
    pub issue_timeout: u64,
}

impl PeerCertsKubernetes {
    fn default_duration() -> u32 {
        24 * 3600
    }
    fn default_issue_timeout() -> u64 {
        60_000
    }
}

impl PeerTlsConfig {
    pub(crate) fn validate(&self, bad: &mut Problems) {
        for (field, path) in [
            ("cluster.tls.caFile", &self.ca_file),
            ("cluster.tls.certFile", &self.cert_file),
            ("cluster.tls.keyFile", &self.key_file),
        ] {
            if path.as_os_str().is_empty() {
                bad.add(field, "must not be empty");
            }
        }
        if !(100..=3_600_000).contains(&self.reload_interval) {
            bad.add(
                "cluster.tls.reloadInterval",
                "must be between 100 and 3600000 milliseconds",
            );
        }
        if !(100..=60_000).contains(&self.handshake_timeout) {
            bad.add(
                "cluster.tls.handshakeTimeout",
                "must be between 100 and 60000 milliseconds",
            );
        }
        if !(1..=4096).contains(&self.max_handshakes) {
            bad.add("cluster.tls.maxHandshakes", "must be between 1 and 4096");
        }
        if let Some(k) = &self.kubernetes {
            if !k.signer_name.contains('/') || k.signer_name.chars().any(char::is_whitespace) {
                bad.add(
                    "cluster.tls.kubernetes.signerName",
                    "must be a signer name like roomcast.io/peer",
                );
            }
            if k.trust_config_map.is_empty() {
                bad.add("cluster.tls.kubernetes.trustConfigMap", "must not be empty");
            }
            if !(600..=365 * 24 * 3600).contains(&k.duration_seconds) {
                bad.add(
                    "cluster.tls.kubernetes.durationSeconds",
                    "must be between 600 and 31536000 (the CSR API's minimum is 600)",
                );
            }
            if !(1_000..=600_000).contains(&k.issue_timeout) {
                bad.add(
                    "cluster.tls.kubernetes.issueTimeout",
                    "must be between 1000 and 600000 milliseconds",
                );
            }
        }
    }
}
