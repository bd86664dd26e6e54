//! JWT verification at the handshake ([`JwtAuthenticator`]): an HS256 shared secret,
//! RS256/ES256 PEM public keys and/or a JWKS URL. This module holds the rules (which key,
//! which claims, which refusal reason); the keys come from the `keys` and `jwks` modules.
//!
//! Rules, in the order they are applied:
//! 1. The token comes from `auth.token`, the `access_token` query parameter or an
//!    `Authorization: Bearer` header ([`token_from`]); none (or an empty one) is `token_missing`.
//! 2. The header must parse and name an algorithm that is both allowed (`algorithms`) and
//!    has a key configured (HS256 needs the secret, RS256/ES256 a PEM key or a JWKS);
//!    otherwise `algorithm_not_allowed`. HS256 tokens are only ever checked against the
//!    shared secret, so a public key can never be used as an HMAC secret.
//! 3. RS256/ES256 keys: the PEM keys of that algorithm, plus the JWKS keys of that algorithm
//!    (only the one with the token's `kid` when it has one). An unknown `kid` refreshes the
//!    JWKS, at most once per `jwksMinRefreshInterval`; still unknown is `unknown_key`, and
//!    no JWKS ever loaded is `jwks_unavailable`.
//! 4. The signature must verify with one of the keys (`bad_signature`), then the claims:
//!    `exp` is required and checked (`token_expired`; a token without `exp` is refused as
//!    `token_malformed`, so no token is valid forever), `nbf` when present
//!    (`token_not_yet_valid`), `iss` when `issuer` is set (`bad_issuer`), `aud` when
//!    `audience` is set (`bad_audience`: any configured value must appear). `leeway` seconds
//!    of clock skew apply to `exp` and `nbf`. A time claim of the wrong JSON type is
//!    `token_malformed`, never skipped.
//!
//! The verified payload is returned as JSON and becomes the socket's claims.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{DecodingKey, Validation};
use serde_json::Value;

use super::jwks::{JwksCache, Lookup};
use super::keys::{parse_public_pem, trim_line_end, Alg, Key};
use super::{token_from, AuthFailure, Authenticator};
use crate::config::JwtConfig;
use crate::engine::HandshakeInfo;

/// `data.reason` values of a refused handshake.
pub mod reason {
    pub const TOKEN_MISSING: &str = "token_missing";
    pub const TOKEN_MALFORMED: &str = "token_malformed";
    pub const TOKEN_EXPIRED: &str = "token_expired";
    pub const TOKEN_NOT_YET_VALID: &str = "token_not_yet_valid";
    pub const BAD_SIGNATURE: &str = "bad_signature";
    pub const BAD_AUDIENCE: &str = "bad_audience";
    pub const BAD_ISSUER: &str = "bad_issuer";
    pub const UNKNOWN_KEY: &str = "unknown_key";
    pub const ALGORITHM_NOT_ALLOWED: &str = "algorithm_not_allowed";
    pub const JWKS_UNAVAILABLE: &str = "jwks_unavailable";
}

/// The `message` sent with each reason (some cases refine it).
fn message_for(reason: &str) -> &'static str {
    match reason {
        reason::TOKEN_MISSING => "authentication token missing",
        reason::TOKEN_MALFORMED => "malformed authentication token",
        reason::TOKEN_EXPIRED => "authentication token expired",
        reason::TOKEN_NOT_YET_VALID => "authentication token not valid yet",
        reason::BAD_SIGNATURE => "invalid token signature",
        reason::BAD_AUDIENCE => "token audience not accepted",
        reason::BAD_ISSUER => "token issuer not accepted",
        reason::UNKNOWN_KEY => "unknown token signing key",
        reason::ALGORITHM_NOT_ALLOWED => "token algorithm not allowed",
        reason::JWKS_UNAVAILABLE => "token signing keys unavailable",
        _ => "authentication failed",
    }
}

fn fail(reason: &str) -> AuthFailure {
    AuthFailure::new(message_for(reason), reason)
}

/// The claim checks, one per algorithm.
struct Validations {
    hs256: Validation,
    rs256: Validation,
    es256: Validation,
}

impl Validations {
    fn new(config: &JwtConfig) -> Self {
        Self {
            hs256: validation(Alg::Hs256, config),
            rs256: validation(Alg::Rs256, config),
            es256: validation(Alg::Es256, config),
        }
    }

    fn of(&self, alg: Alg) -> &Validation {
        match alg {
            Alg::Hs256 => &self.hs256,
            Alg::Rs256 => &self.rs256,
            Alg::Es256 => &self.es256,
        }
    }
}

/// Verifies JWTs presented at the handshake; see the module documentation for the rules.
pub struct JwtAuthenticator {
    /// Allowed algorithms that have a key.
    algorithms: Vec<Alg>,
    /// The HS256 secret, if any.
    hs256: Option<Arc<DecodingKey>>,
    /// PEM public keys (RS256 or ES256).
    static_keys: Vec<Key>,
    jwks: Option<Arc<JwksCache>>,
    validations: Validations,
}

impl std::fmt::Debug for JwtAuthenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtAuthenticator")
            .field("algorithms", &self.algorithms)
            .field("hs256", &self.hs256.is_some())
            .field("static_keys", &self.static_keys.len())
            .field("jwks", &self.jwks.as_ref().map(|j| j.url.as_str()))
            .finish()
    }
}

impl JwtAuthenticator {
    /// Reads the secret and key files and, with a `jwksUrl`, fetches the JWKS once and
    /// starts refreshing it every `jwksRefreshInterval`. A JWKS that cannot be fetched now is
    /// logged, not fatal: tokens needing it are refused with `jwks_unavailable` until a
    /// fetch succeeds. Unreadable files, bad PEM keys or an unusable configuration are errors.
    pub async fn new(config: &JwtConfig) -> anyhow::Result<Self> {
        let hs256 = match (&config.hs256_secret, &config.hs256_secret_file) {
            (Some(secret), _) => Some(secret.clone().into_bytes()),
            (None, Some(path)) => {
                let bytes = tokio::fs::read(path).await.map_err(|e| {
                    anyhow::anyhow!(
                        "auth.jwt.hs256SecretFile: cannot read {}: {e}",
                        path.display()
                    )
                })?;
                Some(trim_line_end(bytes))
            }
            (None, None) => None,
        };
        if let Some(secret) = &hs256 {
            if secret.is_empty() {
                anyhow::bail!("auth.jwt: the HS256 secret is empty");
            }
            if secret.len() < 32 {
                tracing::warn!(
                    bytes = secret.len(),
                    "auth.jwt: the HS256 secret is shorter than 32 bytes; use a longer random secret"
                );
            }
        }
        let hs256 = hs256.map(|s| Arc::new(DecodingKey::from_secret(&s)));

        let mut static_keys = Vec::new();
        for (i, pem) in config.public_keys.iter().enumerate() {
            let key = parse_public_pem(pem.as_bytes())
                .map_err(|e| anyhow::anyhow!("auth.jwt.publicKeys[{i}]: {e}"))?;
            static_keys.push(key);
        }
        for (i, path) in config.public_key_files.iter().enumerate() {
            let pem = tokio::fs::read(path).await.map_err(|e| {
                anyhow::anyhow!(
                    "auth.jwt.publicKeyFiles[{i}]: cannot read {}: {e}",
                    path.display()
                )
            })?;
            let key = parse_public_pem(&pem).map_err(|e| {
                anyhow::anyhow!("auth.jwt.publicKeyFiles[{i}] ({}): {e}", path.display())
            })?;
            static_keys.push(key);
        }

        let jwks = match &config.jwks_url {
            Some(url) => Some(
                JwksCache::start(
                    url.clone(),
                    Duration::from_millis(
                        config
                            .jwks_refresh_interval
                            .max(config.jwks_min_refresh_interval)
                            .max(1),
                    ),
                    Duration::from_millis(config.jwks_min_refresh_interval),
                )
                .await?,
            ),
            None => None,
        };

        let mut algorithms = Vec::new();
        for name in &config.algorithms {
            let alg = Alg::parse(name)
                .ok_or_else(|| anyhow::anyhow!("auth.jwt.algorithms: unsupported {name:?}"))?;
            let keyed = match alg {
                Alg::Hs256 => hs256.is_some(),
                _ => jwks.is_some() || static_keys.iter().any(|k| k.alg == alg),
            };
            if keyed && !algorithms.contains(&alg) {
                algorithms.push(alg);
            }
        }
        if algorithms.is_empty() {
            anyhow::bail!(
                "auth.jwt: none of the allowed algorithms {:?} has a key configured",
                config.algorithms
            );
        }
        for key in &static_keys {
            if !algorithms.contains(&key.alg) {
                tracing::warn!(
                    alg = key.alg.name(),
                    "auth.jwt: a public key is configured for an algorithm not in auth.jwt.algorithms; it is ignored"
                );
            }
        }

        let validations = Validations::new(config);
        Ok(Self {
            algorithms,
            hs256,
            static_keys,
            jwks,
            validations,
        })
    }

    /// Verifies `token` and returns its claims.
    pub async fn verify(&self, token: &str) -> Result<Value, AuthFailure> {
        let header = parse_header(token)?;
        let Some(alg) = Alg::parse(&header.alg).filter(|a| self.algorithms.contains(a)) else {
            return Err(fail(reason::ALGORITHM_NOT_ALLOWED));
        };
        let kid = header.kid.as_deref();

        let mut keys: Vec<Arc<DecodingKey>> = Vec::new();
        // Set when the token names a kid the JWKS does not have (after a refresh).
        let mut unknown_kid = None;
        match alg {
            Alg::Hs256 => keys.extend(self.hs256.clone()),
            _ => {
                keys.extend(
                    self.static_keys
                        .iter()
                        .filter(|k| k.alg == alg)
                        .map(|k| k.key.clone()),
                );
                if let Some(jwks) = &self.jwks {
                    match jwks.lookup(alg, kid).await {
                        Lookup::Found(found) => keys.extend(found),
                        Lookup::NotFound => unknown_kid = Some(reason::UNKNOWN_KEY),
                        Lookup::Unavailable => unknown_kid = Some(reason::JWKS_UNAVAILABLE),
                    }
                }
            }
        }
        if keys.is_empty() {
            return Err(fail(unknown_kid.unwrap_or(reason::UNKNOWN_KEY)));
        }

        let validation = self.validations.of(alg);
        for key in &keys {
            match jsonwebtoken::decode::<Value>(token, key, validation) {
                Ok(data) => return Ok(data.claims),
                Err(e) if matches!(e.kind(), ErrorKind::InvalidSignature) => continue,
                Err(e) => return Err(failure_for(e.kind())),
            }
        }
        // No key verified the signature. When the kid pointed at no JWKS key, the real
        // problem is the key, not the signature.
        Err(fail(match (kid, unknown_kid) {
            (Some(_), Some(why)) => why,
            _ => reason::BAD_SIGNATURE,
        }))
    }
}

#[async_trait::async_trait]
impl Authenticator for JwtAuthenticator {
    async fn authenticate(
        &self,
        _namespace: &str,
        auth: &Value,
        handshake: &HandshakeInfo,
    ) -> Result<Option<Value>, AuthFailure> {
        let Some(token) = token_from(auth, handshake).filter(|t| !t.is_empty()) else {
            return Err(fail(reason::TOKEN_MISSING));
        };
        self.verify(&token).await.map(Some)
    }
}

/// The claim checks for tokens of `alg`.
fn validation(alg: Alg, config: &JwtConfig) -> Validation {
    let mut v = Validation::new(alg.algorithm());
    // Bounded like the configuration's validation (the library subtracts it from now).
    v.leeway = config.leeway.min(86_400);
    v.validate_exp = true;
    v.validate_nbf = true;
    let mut required = vec!["exp"];
    if let Some(issuer) = &config.issuer {
        v.set_issuer(std::slice::from_ref(issuer));
        required.push("iss");
    }
    if config.audience.is_empty() {
        // No audience configured: `aud` is not checked (the library would otherwise refuse
        // every token that has one).
        v.validate_aud = false;
    } else {
        v.set_audience(&config.audience);
        required.push("aud");
    }
    v.set_required_spec_claims(&required);
    v
}

/// The reason (and message) for a verification error of the library.
fn failure_for(kind: &ErrorKind) -> AuthFailure {
    match kind {
        ErrorKind::ExpiredSignature => fail(reason::TOKEN_EXPIRED),
        ErrorKind::ImmatureSignature => fail(reason::TOKEN_NOT_YET_VALID),
        ErrorKind::InvalidIssuer => fail(reason::BAD_ISSUER),
        ErrorKind::InvalidAudience => fail(reason::BAD_AUDIENCE),
        ErrorKind::MissingRequiredClaim(claim) => match claim.as_str() {
            "iss" => AuthFailure::new("token has no iss claim", reason::BAD_ISSUER),
            "aud" => AuthFailure::new("token has no aud claim", reason::BAD_AUDIENCE),
            "exp" => AuthFailure::new("token has no exp claim", reason::TOKEN_MALFORMED),
            other => AuthFailure::new(
                format!("token has no {other} claim"),
                reason::TOKEN_MALFORMED,
            ),
        },
        ErrorKind::InvalidClaimFormat(claim) => AuthFailure::new(
            format!("token claim {claim} has the wrong type"),
            reason::TOKEN_MALFORMED,
        ),
        ErrorKind::InvalidSignature
        | ErrorKind::InvalidEcdsaKey
        | ErrorKind::InvalidRsaKey(_)
        | ErrorKind::InvalidKeyFormat
        | ErrorKind::Provider(_) => fail(reason::BAD_SIGNATURE),
        ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm => {
            fail(reason::ALGORITHM_NOT_ALLOWED)
        }
        _ => fail(reason::TOKEN_MALFORMED),
    }
}

/// The parts of a JOSE header used to pick the key.
#[derive(Debug)]
struct TokenHeader {
    alg: String,
    kid: Option<String>,
}

/// Checks the compact shape (three base64url parts) and reads `alg` and `kid`.
fn parse_header(token: &str) -> Result<TokenHeader, AuthFailure> {
    let malformed = || fail(reason::TOKEN_MALFORMED);
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(_signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed());
    };
    if header.is_empty() || payload.is_empty() {
        return Err(malformed());
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| malformed())?;
    let value: Value = serde_json::from_slice(&bytes).map_err(|_| malformed())?;
    let alg = value
        .get("alg")
        .and_then(Value::as_str)
        .ok_or_else(malformed)?
        .to_string();
    let kid = match value.get("kid") {
        None | Some(Value::Null) => None,
        Some(Value::String(kid)) => Some(kid.clone()),
        Some(_) => return Err(malformed()),
    };
    Ok(TokenHeader { alg, kid })
}

#[cfg(test)]
mod tests {
    use super::super::testkit::*;
    use super::*;
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    use serde_json::json;

    #[test]
    fn headers_are_read_or_refused_as_malformed() {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let token = |header: &str| format!("{}.e30.sig", b64.encode(header));
        let header = parse_header(&token(r#"{"alg":"RS256","kid":"k1"}"#)).unwrap();
        assert_eq!(
            (header.alg.as_str(), header.kid.as_deref()),
            ("RS256", Some("k1"))
        );
        let header = parse_header(&token(r#"{"alg":"HS256","kid":null}"#)).unwrap();
        assert_eq!(header.kid, None);
        for bad in [
            token(r#"{"alg":"RS256","kid":7}"#),
            token(r#"{"alg":1}"#),
            token("[]"),
            "a.b".into(),
            ".e30.sig".into(),
        ] {
            let refused = parse_header(&bad).unwrap_err();
            assert_eq!(refused.reason, reason::TOKEN_MALFORMED, "{bad}");
        }
    }

    #[test]
    fn library_errors_map_to_reasons() {
        let cases = [
            (ErrorKind::ExpiredSignature, reason::TOKEN_EXPIRED),
            (ErrorKind::ImmatureSignature, reason::TOKEN_NOT_YET_VALID),
            (ErrorKind::InvalidIssuer, reason::BAD_ISSUER),
            (ErrorKind::InvalidAudience, reason::BAD_AUDIENCE),
            (
                ErrorKind::MissingRequiredClaim("iss".into()),
                reason::BAD_ISSUER,
            ),
            (
                ErrorKind::MissingRequiredClaim("aud".into()),
                reason::BAD_AUDIENCE,
            ),
            (
                ErrorKind::MissingRequiredClaim("sub".into()),
                reason::TOKEN_MALFORMED,
            ),
            (ErrorKind::InvalidSignature, reason::BAD_SIGNATURE),
            (ErrorKind::InvalidAlgorithm, reason::ALGORITHM_NOT_ALLOWED),
            (ErrorKind::InvalidToken, reason::TOKEN_MALFORMED),
        ];
        for (kind, expected) in cases {
            let failure = failure_for(&kind);
            assert_eq!(failure.reason, expected, "{kind:?}");
            assert!(!failure.message.is_empty());
        }
        assert_eq!(message_for("something else"), "authentication failed");
    }

    #[test]
    fn validations_require_what_is_configured() {
        let open = Validations::new(&JwtConfig::default());
        assert!(!open.of(Alg::Hs256).validate_aud);
        let strict = Validations::new(&JwtConfig {
            issuer: Some("i".into()),
            audience: vec!["a".into()],
            leeway: 1_000_000,
            ..JwtConfig::default()
        });
        let v = strict.of(Alg::Es256);
        assert_eq!(v.algorithms, [Algorithm::ES256]);
        assert!(v.validate_aud && v.validate_exp && v.validate_nbf);
        assert_eq!(v.leeway, 86_400, "bounded");
        assert_eq!(strict.of(Alg::Rs256).algorithms, [Algorithm::RS256]);
    }

    #[tokio::test]
    async fn hs256_token_gives_its_claims() {
        let a = auth(hs_config()).await;
        let verified = a.verify(&hs(&claims())).await.unwrap();
        assert_eq!(verified["sub"], "alice");
        // any configured audience, also inside an aud array
        let c = with(claims(), "aud", json!(["x", "other"]));
        assert_eq!(
            a.verify(&hs(&c)).await.unwrap()["aud"],
            json!(["x", "other"])
        );
    }

    #[tokio::test]
    async fn token_sources_and_missing_token() {
        let a = auth(hs_config()).await;
        let token = hs(&claims());
        let mut handshake = HandshakeInfo {
            headers: crate::engine::Headers::default(),
            address: ([127, 0, 0, 1], 1).into(),
            url: "/socket.io/?EIO=4&transport=polling".into(),
            time: std::time::SystemTime::now(),
            secure: false,
        };
        let missing = a
            .authenticate("/", &json!({}), &handshake)
            .await
            .unwrap_err();
        assert_eq!(missing.reason, reason::TOKEN_MISSING);
        let empty = a
            .authenticate("/", &json!({"token": ""}), &handshake)
            .await
            .unwrap_err();
        assert_eq!(empty.reason, reason::TOKEN_MISSING);
        let ok = a
            .authenticate("/", &json!({"token": token}), &handshake)
            .await
            .unwrap();
        assert_eq!(ok.unwrap()["sub"], "alice");
        handshake.url = format!("/socket.io/?EIO=4&access_token={token}");
        assert!(a.authenticate("/", &json!({}), &handshake).await.is_ok());
        handshake.url = "/socket.io/?EIO=4".into();
        let bearer = format!("Bearer {token}");
        handshake.headers =
            crate::engine::Headers::from_pairs([("authorization", bearer.as_bytes())]);
        assert!(a.authenticate("/", &json!({}), &handshake).await.is_ok());
    }

    #[tokio::test]
    async fn malformed_tokens() {
        let a = auth(hs_config()).await;
        let good = hs(&claims());
        let (head, rest) = good.split_once('.').unwrap();
        let (_, sig) = rest.split_once('.').unwrap();
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        for token in [
            "garbage".to_string(),
            "a.b".to_string(),
            "a.b.c.d".to_string(),
            format!("{head}..{sig}"),
            format!("!!!.{rest}"),
            format!("{}.{rest}", b64.encode("not json")),
            format!("{}.{rest}", b64.encode(r#"{"typ":"JWT"}"#)),
            format!("{head}.{}.%%%", b64.encode(claims().to_string())),
        ] {
            assert_eq!(
                reason_of(&a, &token).await,
                reason::TOKEN_MALFORMED,
                "{token}"
            );
        }
        // payloads that are not a claims object, correctly signed
        assert_eq!(
            reason_of(&a, &hs(&json!([1]))).await,
            reason::TOKEN_MALFORMED
        );
        assert_eq!(
            reason_of(&a, &hs(&json!("x"))).await,
            reason::TOKEN_MALFORMED
        );
    }

    #[tokio::test]
    async fn expiry_and_not_before() {
        let a = auth(hs_config()).await;
        let expired = with(claims(), "exp", json!(now() - 5));
        assert_eq!(reason_of(&a, &hs(&expired)).await, reason::TOKEN_EXPIRED);
        let early = with(claims(), "nbf", json!(now() + 60));
        assert_eq!(
            reason_of(&a, &hs(&early)).await,
            reason::TOKEN_NOT_YET_VALID
        );
        let started = with(claims(), "nbf", json!(now() - 1));
        assert!(a.verify(&hs(&started)).await.is_ok());
        // no exp: refused, a token must not be valid forever
        let f = a.verify(&hs(&without(claims(), "exp"))).await.unwrap_err();
        assert_eq!(
            (f.reason.as_str(), f.message.as_str()),
            (reason::TOKEN_MALFORMED, "token has no exp claim")
        );
        // time claims of the wrong type are refused, not skipped (CVE-2026-25537)
        for (claim, value) in [("exp", json!("99999999999")), ("nbf", json!("99999999999"))] {
            let c = with(claims(), claim, value);
            assert_eq!(
                reason_of(&a, &hs(&c)).await,
                reason::TOKEN_MALFORMED,
                "{claim}"
            );
        }
        // leeway covers clock skew on both ends
        let mut config = hs_config();
        config.leeway = 30;
        let lenient = auth(config).await;
        assert!(lenient.verify(&hs(&expired)).await.is_ok());
        assert!(lenient.verify(&hs(&early)).await.is_err());
        let slightly_early = with(claims(), "nbf", json!(now() + 10));
        assert!(lenient.verify(&hs(&slightly_early)).await.is_ok());
        let long_expired = with(claims(), "exp", json!(now() - 100));
        assert_eq!(
            reason_of(&lenient, &hs(&long_expired)).await,
            reason::TOKEN_EXPIRED
        );
    }

    #[tokio::test]
    async fn audience_and_issuer() {
        let a = auth(hs_config()).await;
        let c = with(claims(), "aud", json!("someone-else"));
        assert_eq!(reason_of(&a, &hs(&c)).await, reason::BAD_AUDIENCE);
        let c = with(claims(), "aud", json!(["a", "b"]));
        assert_eq!(reason_of(&a, &hs(&c)).await, reason::BAD_AUDIENCE);
        assert_eq!(
            reason_of(&a, &hs(&without(claims(), "aud"))).await,
            reason::BAD_AUDIENCE
        );
        let c = with(claims(), "iss", json!("https://evil.test"));
        assert_eq!(reason_of(&a, &hs(&c)).await, reason::BAD_ISSUER);
        assert_eq!(
            reason_of(&a, &hs(&without(claims(), "iss"))).await,
            reason::BAD_ISSUER
        );
        // neither configured: neither checked
        let open = auth(JwtConfig {
            hs256_secret: Some(SECRET.into()),
            ..JwtConfig::default()
        })
        .await;
        let c = with(with(claims(), "aud", json!("x")), "iss", json!("y"));
        assert!(open.verify(&hs(&c)).await.is_ok());
    }

    #[tokio::test]
    async fn signatures_and_algorithms() {
        let mut config = hs_config();
        config.public_keys = vec![RSA_PUB.into(), EC_PUB.into()];
        let a = auth(config).await;
        assert!(a.verify(&rs(RSA_KEY, None, &claims())).await.is_ok());
        assert!(a.verify(&es(None, &claims())).await.is_ok());
        // wrong secret, other RSA key, tampered payload
        let wrong = hs_with("another-secret-another-secret-xx", &claims());
        assert_eq!(reason_of(&a, &wrong).await, reason::BAD_SIGNATURE);
        assert_eq!(
            reason_of(&a, &rs(RSA2_KEY, None, &claims())).await,
            reason::BAD_SIGNATURE
        );
        let good = hs(&claims());
        let parts: Vec<&str> = good.split('.').collect();
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let forged = with(claims(), "sub", json!("mallory"));
        let tampered = format!(
            "{}.{}.{}",
            parts[0],
            b64.encode(forged.to_string()),
            parts[2]
        );
        assert_eq!(reason_of(&a, &tampered).await, reason::BAD_SIGNATURE);
        // algorithm confusion: HS256 "signed" with the RSA public key as secret
        let confused = hs_with(RSA_PUB, &claims());
        assert_eq!(reason_of(&a, &confused).await, reason::BAD_SIGNATURE);
        // alg none, unsupported algorithms
        let none = format!(
            "{}.{}.",
            b64.encode(r#"{"alg":"none","typ":"JWT"}"#),
            b64.encode(claims().to_string())
        );
        assert_eq!(reason_of(&a, &none).await, reason::ALGORITHM_NOT_ALLOWED);
        let hs512 = jsonwebtoken::encode(
            &Header::new(Algorithm::HS512),
            &claims(),
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap();
        assert_eq!(reason_of(&a, &hs512).await, reason::ALGORITHM_NOT_ALLOWED);

        // only what the allow-list names, and only algorithms with a key
        let only_rs = auth(JwtConfig {
            algorithms: vec!["RS256".into()],
            hs256_secret: Some(SECRET.into()),
            public_keys: vec![RSA_PUB.into()],
            ..JwtConfig::default()
        })
        .await;
        assert_eq!(
            reason_of(&only_rs, &hs(&claims())).await,
            reason::ALGORITHM_NOT_ALLOWED
        );
        assert_eq!(
            reason_of(&only_rs, &es(None, &claims())).await,
            reason::ALGORITHM_NOT_ALLOWED
        );
        assert!(only_rs.verify(&rs(RSA_KEY, None, &claims())).await.is_ok());
    }

    #[tokio::test]
    async fn pkcs1_rsa_public_keys_work_too() {
        let pem = include_str!("../../tests/fixtures/jwt/rsa.pub.pkcs1.pem");
        assert!(pem.starts_with("-----BEGIN RSA PUBLIC KEY-----"));
        let a = auth(JwtConfig {
            public_keys: vec![pem.into()],
            ..JwtConfig::default()
        })
        .await;
        assert!(a.verify(&rs(RSA_KEY, None, &claims())).await.is_ok());
    }

    #[tokio::test]
    async fn key_files_are_read() {
        let dir = std::env::temp_dir().join(format!("roomcast-jwt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let secret = dir.join("secret");
        std::fs::write(&secret, format!("{SECRET}\n")).unwrap();
        let public = dir.join("ec.pem");
        std::fs::write(&public, EC_PUB).unwrap();
        let a = auth(JwtConfig {
            hs256_secret_file: Some(secret.clone()),
            public_key_files: vec![public],
            ..JwtConfig::default()
        })
        .await;
        assert!(
            a.verify(&hs(&claims())).await.is_ok(),
            "final newline trimmed"
        );
        assert!(a.verify(&es(None, &claims())).await.is_ok());

        let err = JwtAuthenticator::new(&JwtConfig {
            hs256_secret_file: Some(dir.join("absent")),
            ..JwtConfig::default()
        })
        .await
        .unwrap_err();
        assert!(err.to_string().contains("hs256SecretFile"), "{err}");
        for (pem, what) in [
            ("hello", "PEM"),
            (RSA_KEY, "private key"),
            (
                "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
                "certificates",
            ),
            (
                "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
                "RSA or EC",
            ),
        ] {
            let err = JwtAuthenticator::new(&JwtConfig {
                public_keys: vec![pem.into()],
                ..JwtConfig::default()
            })
            .await
            .unwrap_err();
            let text = err.to_string();
            assert!(
                text.contains("publicKeys[0]") && text.contains(what),
                "{text}"
            );
        }
        let err = JwtAuthenticator::new(&JwtConfig {
            algorithms: vec!["ES256".into()],
            hs256_secret: Some(SECRET.into()),
            ..JwtConfig::default()
        })
        .await
        .unwrap_err();
        assert!(err.to_string().contains("has a key"), "{err}");
        std::fs::remove_dir_all(&dir).ok();
    }

    /// The `auth:` examples of docs/configuration.md parse and validate.
    #[test]
    fn documented_examples_are_valid() {
        let doc = include_str!("../../../docs/configuration.md");
        let mut examples = 0;
        for block in doc.split("```yaml\n").skip(1) {
            let Some((yaml, _)) = block.split_once("```") else {
                continue;
            };
            if !yaml.starts_with("auth:") {
                continue;
            }
            let config = crate::config::Config::parse(yaml, "yaml")
                .unwrap_or_else(|e| panic!("{e}\n{yaml}"));
            config.validate().unwrap_or_else(|e| panic!("{e}\n{yaml}"));
            if !config.auth.jwt.public_keys.is_empty() {
                for pem in &config.auth.jwt.public_keys {
                    parse_public_pem(pem.as_bytes()).unwrap();
                }
            }
            examples += 1;
        }
        assert!(examples >= 4, "found {examples} auth examples");
    }
}
