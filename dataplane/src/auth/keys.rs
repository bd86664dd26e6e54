//! Verification keys: the algorithms the hub supports, PEM public keys, JWKS documents, and
//! which of a set of keys may verify a token of a given algorithm and `kid`.
//!
//! All pure (bytes in, keys out); reading key files and fetching JWKS documents happen in
//! [`super::verify`] and [`super::jwks`].

use std::sync::Arc;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value;

/// The algorithms the hub supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Alg {
    Hs256,
    Rs256,
    Es256,
}

impl Alg {
    pub(super) fn parse(name: &str) -> Option<Alg> {
        match name {
            "HS256" => Some(Alg::Hs256),
            "RS256" => Some(Alg::Rs256),
            "ES256" => Some(Alg::Es256),
            _ => None,
        }
    }

    pub(super) fn name(self) -> &'static str {
        match self {
            Alg::Hs256 => "HS256",
            Alg::Rs256 => "RS256",
            Alg::Es256 => "ES256",
        }
    }

    pub(super) fn algorithm(self) -> Algorithm {
        match self {
            Alg::Hs256 => Algorithm::HS256,
            Alg::Rs256 => Algorithm::RS256,
            Alg::Es256 => Algorithm::ES256,
        }
    }
}

/// A verification key and the one algorithm it is used with.
#[derive(Clone)]
pub(super) struct Key {
    pub(super) alg: Alg,
    pub(super) kid: Option<String>,
    pub(super) key: Arc<DecodingKey>,
}

/// The keys of `keys` that may verify a token of `alg`: all of that algorithm, or only the
/// one named `kid` when the token names one.
pub(super) fn select(keys: &[Key], alg: Alg, kid: Option<&str>) -> Vec<Arc<DecodingKey>> {
    keys.iter()
        .filter(|k| k.alg == alg && kid.is_none_or(|kid| k.kid.as_deref() == Some(kid)))
        .map(|k| k.key.clone())
        .collect()
}

/// An RSA (RS256) or EC P-256 (ES256) public key in PEM form.
pub(super) fn parse_public_pem(pem: &[u8]) -> anyhow::Result<Key> {
    let text = std::str::from_utf8(pem).map_err(|_| anyhow::anyhow!("not a PEM text"))?;
    if !text.contains("-----BEGIN") {
        anyhow::bail!("not a PEM text (no -----BEGIN line)");
    }
    if text.contains("PRIVATE KEY-----") {
        anyhow::bail!("this is a private key; configure the public key only");
    }
    if text.contains("CERTIFICATE-----") {
        anyhow::bail!("certificates are not supported; configure the certificate's public key");
    }
    if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
        return Ok(Key {
            alg: Alg::Rs256,
            kid: None,
            key: Arc::new(key),
        });
    }
    if let Ok(key) = DecodingKey::from_ec_pem(pem) {
        return Ok(Key {
            alg: Alg::Es256,
            kid: None,
            key: Arc::new(key),
        });
    }
    anyhow::bail!("not an RSA or EC public key in PEM form")
}

/// A secret file's content without its final line break.
pub(super) fn trim_line_end(mut bytes: Vec<u8>) -> Vec<u8> {
    if bytes.last() == Some(&b'\n') {
        bytes.pop();
        if bytes.last() == Some(&b'\r') {
            bytes.pop();
        }
    }
    bytes
}

/// The usable verification keys of a JWKS document: RSA keys (RS256) and EC P-256 keys
/// (ES256) whose `alg`, when given, matches and whose `use`, when given, is `sig`. Other
/// entries (symmetric, other curves or algorithms, unparsable) are skipped.
pub(super) fn parse_jwks(body: &[u8]) -> anyhow::Result<Vec<Key>> {
    #[derive(serde::Deserialize)]
    struct Document {
        keys: Vec<Value>,
    }
    let doc: Document = serde_json::from_slice(body)
        .map_err(|e| anyhow::anyhow!("not a JWKS document (a JSON object with keys): {e}"))?;
    let mut keys = Vec::new();
    for (i, entry) in doc.keys.into_iter().enumerate() {
        let jwk: Jwk = match serde_json::from_value(entry) {
            Ok(jwk) => jwk,
            Err(e) => {
                tracing::debug!(index = i, error = %e, "JWKS: skipping an unsupported key");
                continue;
            }
        };
        if matches!(jwk.common.public_key_use, Some(ref u) if *u != PublicKeyUse::Signature) {
            continue;
        }
        let alg = match (&jwk.algorithm, jwk.common.key_algorithm) {
            (AlgorithmParameters::RSA(_), None | Some(KeyAlgorithm::RS256)) => Alg::Rs256,
            (AlgorithmParameters::EllipticCurve(p), None | Some(KeyAlgorithm::ES256))
                if p.curve == EllipticCurve::P256 =>
            {
                Alg::Es256
            }
            _ => continue,
        };
        match DecodingKey::from_jwk(&jwk) {
            Ok(key) => keys.push(Key {
                alg,
                kid: jwk.common.key_id.clone(),
                key: Arc::new(key),
            }),
            Err(e) => {
                tracing::debug!(index = i, error = %e, "JWKS: skipping an unusable key");
            }
        }
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::super::testkit::{EC_JWK, EC_PUB, RSA_JWK, RSA_KEY, RSA_PUB};
    use super::*;
    use serde_json::json;

    #[test]
    fn algorithm_names_round_trip() {
        for alg in [Alg::Hs256, Alg::Rs256, Alg::Es256] {
            assert_eq!(Alg::parse(alg.name()), Some(alg));
            assert_eq!(format!("{:?}", alg.algorithm()), alg.name());
        }
        assert_eq!(Alg::parse("none"), None);
        assert_eq!(Alg::parse("hs256"), None);
    }

    #[test]
    fn pem_keys_say_what_they_are_or_why_not() {
        assert_eq!(
            parse_public_pem(RSA_PUB.as_bytes()).unwrap().alg,
            Alg::Rs256
        );
        assert_eq!(parse_public_pem(EC_PUB.as_bytes()).unwrap().alg, Alg::Es256);
        for (pem, what) in [
            (&b"\xff\xfe"[..], "PEM"),
            (b"hello", "BEGIN"),
            (RSA_KEY.as_bytes(), "private key"),
            (b"-----BEGIN CERTIFICATE-----\n", "certificates"),
            (
                b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
                "RSA or EC",
            ),
        ] {
            let Err(e) = parse_public_pem(pem) else {
                panic!("accepted {what}");
            };
            assert!(e.to_string().contains(what), "{e}");
        }
    }

    #[test]
    fn secrets_lose_one_final_line_break() {
        assert_eq!(trim_line_end(b"s\r\n".to_vec()), b"s");
        assert_eq!(trim_line_end(b"s\n".to_vec()), b"s");
        assert_eq!(trim_line_end(b"s\n\n".to_vec()), b"s\n");
        assert_eq!(trim_line_end(b"s\r".to_vec()), b"s\r");
        assert_eq!(trim_line_end(Vec::new()), b"");
    }

    #[test]
    fn keys_are_selected_by_algorithm_and_kid() {
        let mut rsa: Value = serde_json::from_str(RSA_JWK).unwrap();
        rsa["kid"] = json!("r1");
        let mut ec: Value = serde_json::from_str(EC_JWK).unwrap();
        ec["kid"] = json!("e1");
        let doc = json!({ "keys": [rsa, ec] }).to_string();
        let mut keys = parse_jwks(doc.as_bytes()).unwrap();
        keys.push(parse_public_pem(RSA_PUB.as_bytes()).unwrap());
        assert_eq!(select(&keys, Alg::Rs256, None).len(), 2);
        assert_eq!(select(&keys, Alg::Rs256, Some("r1")).len(), 1);
        assert_eq!(select(&keys, Alg::Rs256, Some("e1")).len(), 0);
        assert_eq!(select(&keys, Alg::Es256, Some("e1")).len(), 1);
        assert_eq!(select(&keys, Alg::Hs256, None).len(), 0);
    }

    #[test]
    fn jwks_documents_skip_unusable_keys() {
        let mut rsa: Value = serde_json::from_str(RSA_JWK).unwrap();
        rsa["kid"] = json!("ok");
        let mut enc = rsa.clone();
        enc["use"] = json!("enc");
        let mut ps = rsa.clone();
        ps["alg"] = json!("PS256");
        let mut p384 = serde_json::from_str::<Value>(EC_JWK).unwrap();
        p384["crv"] = json!("P-384");
        let doc = json!({"keys": [
            rsa, enc, ps, p384,
            {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"},
            {"kty": "weird"},
            {"kty": "RSA", "n": "!!", "e": "AQAB"},
        ]});
        let keys = parse_jwks(doc.to_string().as_bytes()).unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].kid.as_deref(), Some("ok"));
        assert!(parse_jwks(b"[]").is_err());
        assert!(parse_jwks(b"{}").is_err());
    }
}
