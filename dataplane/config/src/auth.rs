//! `auth`: how clients prove who they are at the handshake (JWT settings).

use serde::{Deserialize, Serialize};

use crate::Problems;

/// How clients prove who they are at the handshake.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct AuthConfig {
    /// `none` (default) or `jwt`.
    pub mode: AuthMode,
    pub jwt: JwtConfig,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    #[default]
    None,
    Jwt,
}

/// JWT verification. Tokens come from `auth.token`, the `access_token` query parameter or
/// an `Authorization: Bearer` header.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct JwtConfig {
    /// Accepted algorithms: HS256, RS256, ES256.
    pub algorithms: Vec<String>,
    /// HS256 shared secret; prefer `hs256SecretFile`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hs256_secret: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hs256_secret_file: Option<std::path::PathBuf>,
    /// PEM public keys (RS256 or ES256).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub public_keys: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub public_key_files: Vec<std::path::PathBuf>,
    /// A JWKS document URL; keys are cached and refreshed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwks_url: Option<String>,
    /// Refresh period of the JWKS cache.
    pub jwks_refresh_interval: u64,
    /// Minimum time between two JWKS fetches (an unknown `kid` triggers one at most this often).
    pub jwks_min_refresh_interval: u64,
    /// Required `iss`, when set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// Accepted `aud` values; any one must match, when set.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub audience: Vec<String>,
    /// Clock skew tolerated on `exp` and `nbf`, in seconds.
    pub leeway: u64,
    /// Allows a `jwksUrl` over plain `http://` (keys fetched without TLS can be swapped by
    /// anyone on the path). Without it an `http://` JWKS URL is a configuration error.
    pub allow_insecure_jwks_url: bool,
    /// Disconnects a socket (namespace DISCONNECT, as the server's `disconnect()`) when its
    /// token expires: at its `exp` plus `leeway`. Off by default: a token is checked at
    /// connect only.
    pub disconnect_on_expiry: bool,
}

impl Default for JwtConfig {
    fn default() -> Self {
        Self {
            algorithms: vec!["HS256".into(), "RS256".into(), "ES256".into()],
            hs256_secret: None,
            hs256_secret_file: None,
            public_keys: Vec::new(),
            public_key_files: Vec::new(),
            jwks_url: None,
            jwks_refresh_interval: 300_000,
            jwks_min_refresh_interval: 10_000,
            issuer: None,
            audience: Vec::new(),
            leeway: 0,
            allow_insecure_jwks_url: false,
            disconnect_on_expiry: false,
        }
    }
}

impl AuthConfig {
    /// What is allowed but risky in this configuration, one sentence each (logged as
    /// warnings at startup).
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        if self.mode != AuthMode::Jwt {
            return warnings;
        }
        let j = &self.jwt;
        if j.jwks_url.is_some() && (j.audience.is_empty() || j.issuer.is_none()) {
            warnings.push(
                "auth.jwt.jwksUrl is set without both auth.jwt.audience and auth.jwt.issuer: \
                 any token the JWKS's keys signed is accepted, including tokens issued for other \
                 applications of the same identity provider"
                    .to_string(),
            );
        }
        if j.jwks_url
            .as_ref()
            .is_some_and(|u| u.starts_with("http://"))
        {
            warnings.push(
                "auth.jwt.jwksUrl uses plain http (allowed by allowInsecureJwksUrl): the keys \
                 can be swapped on the way"
                    .to_string(),
            );
        }
        warnings
    }

    pub(crate) fn validate(&self, bad: &mut Problems) {
        if self.mode != AuthMode::Jwt {
            return;
        }
        let j = &self.jwt;
        let has_key = j.hs256_secret.is_some()
            || j.hs256_secret_file.is_some()
            || !j.public_keys.is_empty()
            || !j.public_key_files.is_empty()
            || j.jwks_url.is_some();
        if !has_key {
            bad.add(
                "auth.jwt",
                "mode jwt needs hs256Secret(File), publicKeys/publicKeyFiles or jwksUrl",
            );
        }
        if j.hs256_secret.is_some() && j.hs256_secret_file.is_some() {
            bad.add("auth.jwt", "set hs256Secret or hs256SecretFile, not both");
        }
        if j.algorithms.is_empty()
            || j.algorithms
                .iter()
                .any(|a| !["HS256", "RS256", "ES256"].contains(&a.as_str()))
        {
            bad.add(
                "auth.jwt.algorithms",
                "must be a non-empty subset of HS256, RS256, ES256",
            );
        }
        if j.jwks_min_refresh_interval == 0 || j.jwks_refresh_interval < j.jwks_min_refresh_interval
        {
            bad.add(
                "auth.jwt.jwksRefreshInterval",
                "must be at least jwksMinRefreshInterval, which must be positive",
            );
        }
        if j.jwks_url
            .as_ref()
            .is_some_and(|u| !(u.starts_with("http://") || u.starts_with("https://")))
        {
            bad.add("auth.jwt.jwksUrl", "must be an http:// or https:// URL");
        }
        if j.jwks_url
            .as_ref()
            .is_some_and(|u| u.starts_with("http://"))
            && !j.allow_insecure_jwks_url
        {
            bad.add(
                "auth.jwt.jwksUrl",
                "must be https:// (keys fetched over plain http can be swapped on the way); set auth.jwt.allowInsecureJwksUrl: true to allow it anyway",
            );
        }
        if j.hs256_secret.as_ref().is_some_and(String::is_empty) {
            bad.add("auth.jwt.hs256Secret", "must not be empty");
        }
        if j.issuer.as_ref().is_some_and(String::is_empty) {
            bad.add(
                "auth.jwt.issuer",
                "must not be empty (leave it out to skip the check)",
            );
        }
        if j.audience.iter().any(String::is_empty) {
            bad.add("auth.jwt.audience", "entries must not be empty");
        }
        if j.leeway > 86_400 {
            bad.add("auth.jwt.leeway", "must be at most 86400 seconds");
        }
    }
}
