//! The hub's peer CA (docs/operator.md#peer-certificates): its creation, the state kept in the
//! `<hub>-peer-ca` Secret, and the rotation decision.
//!
//! The CA key lives only in that Secret, read by the operator when it signs; hub pods never
//! see it. A rotation publishes old+new in the trust bundle, signs new requests with the new
//! CA, and drops the old CA once every pod holds a leaf of the new one (or, at the latest,
//! once every leaf the old CA signed has expired).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use x509_parser::prelude::{FromDer, X509Certificate};

/// The signer name of hub peer certificates in CertificateSigningRequests.
pub const SIGNER_NAME: &str = "roomcast.io/peer";
/// Hub annotation: a new value starts a CA rotation (e.g. a timestamp).
pub const ROTATE_ANNOTATION: &str = "roomcast.io/rotate-peer-ca";
/// CA Secret annotation: the [`ROTATE_ANNOTATION`] value last acted upon.
pub const ROTATED_FOR_ANNOTATION: &str = "roomcast.io/rotated-for";
/// CA Secret annotation: Unix seconds of the last rotation (absent when none is in progress).
pub const ROTATED_AT_ANNOTATION: &str = "roomcast.io/rotated-at";
/// CA Secret keys.
pub const CERT_KEY: &str = "tls.crt";
pub const KEY_KEY: &str = "tls.key";
/// The previous CA's certificate, kept in the bundle while a rotation is in progress.
pub const PREVIOUS_KEY: &str = "previous.crt";
/// Key of the trust bundle in the trust ConfigMap (what `cluster.tls.kubernetes` reads).
pub const BUNDLE_KEY: &str = "ca.crt";
/// A CA certificate or key larger than this in the Secret is treated as corrupt.
pub const MAX_PEM_BYTES: usize = 16 * 1024;

/// Why CA material could not be made or read.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("generating the CA: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("the CA certificate is not valid PEM/X.509: {0}")]
    Parse(String),
}

/// The CA state of a hub, as kept in its CA Secret.
#[derive(Clone, Debug, PartialEq)]
pub struct CaMaterial {
    pub cert_pem: String,
    pub key_pem: String,
    /// The previous CA's certificate while a rotation is in progress.
    pub previous_cert_pem: Option<String>,
    /// The rotation request value already handled.
    pub rotated_for: Option<String>,
    /// Unix seconds at which the in-progress rotation started.
    pub rotated_at: Option<i64>,
}

impl CaMaterial {
    /// Reads the Secret; `None` when a key is missing, oversized or not UTF-8 (then the caller
    /// makes a new CA: a corrupt Secret is not worth keeping).
    pub fn from_secret(secret: &Secret) -> Option<Self> {
        let data = secret.data.as_ref()?;
        let text = |k: &str| {
            data.get(k)
                .filter(|b| b.0.len() <= MAX_PEM_BYTES)
                .and_then(|b| String::from_utf8(b.0.clone()).ok())
        };
        let annotations = secret.metadata.annotations.clone().unwrap_or_default();
        Some(Self {
            cert_pem: text(CERT_KEY)?,
            key_pem: text(KEY_KEY)?,
            previous_cert_pem: text(PREVIOUS_KEY).filter(|p| !p.is_empty()),
            rotated_for: annotations.get(ROTATED_FOR_ANNOTATION).cloned(),
            rotated_at: annotations
                .get(ROTATED_AT_ANNOTATION)
                .and_then(|v| v.parse().ok()),
        })
    }

    /// The Secret's data.
    pub fn data(&self) -> BTreeMap<String, String> {
        let mut d = BTreeMap::from([
            (CERT_KEY.to_string(), self.cert_pem.clone()),
            (KEY_KEY.to_string(), self.key_pem.clone()),
        ]);
        if let Some(p) = &self.previous_cert_pem {
            d.insert(PREVIOUS_KEY.to_string(), p.clone());
        }
        d
    }

    /// The Secret's annotations.
    pub fn annotations(&self) -> BTreeMap<String, String> {
        let mut a = BTreeMap::new();
        if let Some(v) = &self.rotated_for {
            a.insert(ROTATED_FOR_ANNOTATION.to_string(), v.clone());
        }
        if let Some(v) = self.rotated_at {
            a.insert(ROTATED_AT_ANNOTATION.to_string(), v.to_string());
        }
        a
    }

    /// The trust bundle: the current CA first, then the previous one during a rotation.
    pub fn bundle(&self) -> String {
        let mut b = self.cert_pem.trim_end().to_string();
        b.push('\n');
        if let Some(p) = &self.previous_cert_pem {
            b.push_str(p.trim_end());
            b.push('\n');
        }
        b
    }
}

/// What the operator needs to know about a CA certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaInfo {
    pub not_before: i64,
    pub not_after: i64,
    /// DER of the subject name: the issuer name of every leaf it signs.
    pub subject_der: Vec<u8>,
}

/// Parses the first certificate of a PEM text.
pub fn inspect(cert_pem: &str) -> Result<CaInfo, CaError> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes())
        .map_err(|e| CaError::Parse(e.to_string()))?;
    let (_, cert) =
        X509Certificate::from_der(&pem.contents).map_err(|e| CaError::Parse(e.to_string()))?;
    Ok(CaInfo {
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
        subject_der: cert.subject().as_raw().to_vec(),
    })
}

/// DER of the issuer name of a PEM certificate (which CA signed a leaf).
pub fn issuer_of(cert_pem: &str) -> Result<Vec<u8>, CaError> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes())
        .map_err(|e| CaError::Parse(e.to_string()))?;
    let (_, cert) =
        X509Certificate::from_der(&pem.contents).map_err(|e| CaError::Parse(e.to_string()))?;
    Ok(cert.issuer().as_raw().to_vec())
}

/// Unix seconds as a certificate time.
pub fn time_of(unix: i64) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp(unix).unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

/// A new self-signed ECDSA P-256 CA for `namespace/hub`, valid from a minute before `now` for
/// `validity_seconds`. Its common name carries `now`, so the CAs of successive rotations have
/// distinct subjects and a leaf's issuer name tells which one signed it.
pub fn new_ca(
    namespace: &str,
    hub: &str,
    now: i64,
    validity_seconds: i64,
) -> Result<(String, String), CaError> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "roomcast");
    dn.push(
        DnType::CommonName,
        format!("roomcast peer CA {namespace}/{hub} {now}"),
    );
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = time_of(now.saturating_sub(60));
    params.not_after = time_of(now.saturating_add(validity_seconds));
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// What to do with a hub's CA this reconcile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CaAction {
    /// Nothing.
    Keep,
    /// No usable CA: make one.
    Create,
    /// Start a rotation (the reason is logged).
    Rotate(&'static str),
    /// End the rotation: drop the previous CA from the bundle.
    DropPrevious(&'static str),
}

/// Inputs of [`decide`] besides the stored state.
#[derive(Clone, Debug)]
pub struct RotationFacts<'a> {
    pub now: i64,
    /// The hub's [`ROTATE_ANNOTATION`], if any.
    pub requested: Option<&'a str>,
    /// Whether every current pod of the hub holds a leaf of the current CA.
    pub all_renewed: bool,
    /// Seconds the previous CA stays in the bundle at least after a rotation starts.
    pub settle_seconds: i64,
    /// The longest leaf lifetime the signer grants: after that, no leaf of the previous CA
    /// is valid any more.
    pub max_leaf_seconds: i64,
}

/// The CA state machine: Create when there is no usable CA; Rotate on a new request or in
/// the last third of the CA's life (never while a rotation is in progress); DropPrevious when
/// every pod renewed and the settle time passed, or when every old leaf has expired anyway.
pub fn decide(state: Option<(&CaMaterial, &CaInfo)>, f: &RotationFacts<'_>) -> CaAction {
    let Some((ca, info)) = state else {
        return CaAction::Create;
    };
    if f.now >= info.not_after {
        return CaAction::Create;
    }
    if ca.previous_cert_pem.is_some() {
        let since = f.now.saturating_sub(ca.rotated_at.unwrap_or(0));
        if since >= f.max_leaf_seconds.saturating_add(f.settle_seconds) {
            return CaAction::DropPrevious("every leaf of the previous CA has expired");
        }
        if f.all_renewed && since >= f.settle_seconds {
            return CaAction::DropPrevious("every pod holds a leaf of the new CA");
        }
        return CaAction::Keep;
    }
    if let Some(r) = f.requested.filter(|r| !r.is_empty()) {
        if ca.rotated_for.as_deref() != Some(r) {
            return CaAction::Rotate("rotation requested by annotation");
        }
    }
    let life = info.not_after.saturating_sub(info.not_before);
    if f.now >= info.not_before.saturating_add(life / 3 * 2) {
        return CaAction::Rotate("the CA is in the last third of its life");
    }
    CaAction::Keep
}

/// Seconds until [`decide`] may change its answer without any event (to requeue then).
pub fn next_check(state: Option<(&CaMaterial, &CaInfo)>, f: &RotationFacts<'_>) -> Option<i64> {
    let (ca, info) = state?;
    if ca.previous_cert_pem.is_some() {
        // Pods renew within seconds of a bundle change; look again soon.
        return Some(5);
    }
    let life = info.not_after.saturating_sub(info.not_before);
    Some(
        info.not_before
            .saturating_add(life / 3 * 2)
            .saturating_sub(f.now)
            .max(1),
    )
}

/// The state after `action`, given a fresh CA from [`new_ca`] for Create and Rotate.
pub fn apply(
    state: Option<&CaMaterial>,
    action: &CaAction,
    fresh: Option<(String, String)>,
    requested: Option<&str>,
    now: i64,
) -> Option<CaMaterial> {
    match action {
        CaAction::Keep => state.cloned(),
        CaAction::Create => fresh.map(|(cert_pem, key_pem)| CaMaterial {
            cert_pem,
            key_pem,
            previous_cert_pem: None,
            rotated_for: requested.map(str::to_string),
            rotated_at: None,
        }),
        CaAction::Rotate(_) => {
            let (cert_pem, key_pem) = fresh?;
            Some(CaMaterial {
                cert_pem,
                key_pem,
                previous_cert_pem: state.map(|s| s.cert_pem.clone()),
                rotated_for: requested
                    .map(str::to_string)
                    .or_else(|| state.and_then(|s| s.rotated_for.clone())),
                rotated_at: Some(now),
            })
        }
        CaAction::DropPrevious(_) => state.map(|s| CaMaterial {
            previous_cert_pem: None,
            rotated_at: None,
            ..s.clone()
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const YEAR: i64 = 365 * 24 * 3600;

    fn facts(now: i64) -> RotationFacts<'static> {
        RotationFacts {
            now,
            requested: None,
            all_renewed: false,
            settle_seconds: 30,
            max_leaf_seconds: 86_400,
        }
    }

    fn ca(now: i64) -> (CaMaterial, CaInfo) {
        let (cert_pem, key_pem) = new_ca("ns", "hub", now, YEAR).unwrap();
        let info = inspect(&cert_pem).unwrap();
        let m = CaMaterial {
            cert_pem,
            key_pem,
            previous_cert_pem: None,
            rotated_for: None,
            rotated_at: None,
        };
        (m, info)
    }

    #[test]
    fn new_ca_is_valid_for_the_requested_time() {
        let now = 1_800_000_000;
        let (_, info) = ca(now);
        assert_eq!(info.not_before, now - 60);
        assert_eq!(info.not_after, now + YEAR);
    }

    #[test]
    fn missing_or_expired_ca_is_created() {
        let now = 1_800_000_000;
        assert_eq!(decide(None, &facts(now)), CaAction::Create);
        let (m, i) = ca(now);
        assert_eq!(decide(Some((&m, &i)), &facts(now + YEAR)), CaAction::Create);
    }

    #[test]
    fn rotates_in_the_last_third_and_on_request_once() {
        let now = 1_800_000_000;
        let (m, i) = ca(now);
        assert_eq!(decide(Some((&m, &i)), &facts(now + 1000)), CaAction::Keep);
        assert!(matches!(
            decide(Some((&m, &i)), &facts(now + YEAR * 2 / 3 + 60)),
            CaAction::Rotate(_)
        ));
        let mut f = facts(now + 1000);
        f.requested = Some("1");
        assert!(matches!(decide(Some((&m, &i)), &f), CaAction::Rotate(_)));
        let (fresh, _) = ca(now + 1000);
        let next = apply(
            Some(&m),
            &CaAction::Rotate("x"),
            Some((fresh.cert_pem.clone(), fresh.key_pem.clone())),
            Some("1"),
            now + 1000,
        )
        .unwrap();
        assert_eq!(next.previous_cert_pem.as_deref(), Some(m.cert_pem.as_str()));
        assert_eq!(next.rotated_for.as_deref(), Some("1"));
        assert!(next.bundle().contains(m.cert_pem.trim_end()));
        assert!(next.bundle().starts_with(fresh.cert_pem.trim_end()));
        let ni = inspect(&next.cert_pem).unwrap();
        // While it is in progress, nothing else happens until the pods renewed and it settled.
        assert_eq!(decide(Some((&next, &ni)), &f), CaAction::Keep);
        let mut f2 = facts(now + 1010);
        f2.requested = Some("2");
        f2.all_renewed = true;
        assert_eq!(decide(Some((&next, &ni)), &f2), CaAction::Keep, "settling");
        f2.now = now + 1031;
        assert!(matches!(
            decide(Some((&next, &ni)), &f2),
            CaAction::DropPrevious(_)
        ));
        // Not renewed: dropped only when every old leaf has expired.
        f2.all_renewed = false;
        assert_eq!(decide(Some((&next, &ni)), &f2), CaAction::Keep);
        f2.now = now + 1000 + 86_400 + 30;
        assert!(matches!(
            decide(Some((&next, &ni)), &f2),
            CaAction::DropPrevious(_)
        ));
        let done = apply(Some(&next), &CaAction::DropPrevious("x"), None, None, 0).unwrap();
        assert_eq!(done.previous_cert_pem, None);
        assert_eq!(done.bundle(), format!("{}\n", fresh.cert_pem.trim_end()));
        // The same request value does not rotate again; a new one does.
        let di = inspect(&done.cert_pem).unwrap();
        let mut f3 = facts(now + 2000);
        f3.requested = Some("1");
        assert_eq!(decide(Some((&done, &di)), &f3), CaAction::Keep);
        f3.requested = Some("2");
        assert!(matches!(
            decide(Some((&done, &di)), &f3),
            CaAction::Rotate(_)
        ));
    }

    #[test]
    fn secret_round_trip_and_corrupt_secret() {
        let (mut m, _) = ca(1_800_000_000);
        m.previous_cert_pem = Some("p".into());
        m.rotated_at = Some(5);
        m.rotated_for = Some("r".into());
        let secret = Secret {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                annotations: Some(m.annotations()),
                ..Default::default()
            },
            data: Some(
                m.data()
                    .into_iter()
                    .map(|(k, v)| (k, k8s_openapi::ByteString(v.into_bytes())))
                    .collect(),
            ),
            ..Default::default()
        };
        assert_eq!(CaMaterial::from_secret(&secret), Some(m));
        assert_eq!(CaMaterial::from_secret(&Secret::default()), None);
        assert!(inspect("not a certificate").is_err());
    }
}
