//! The shared secrets an application presents as `authorization: Bearer <token>` (the
//! management API's token, the app link token): read once from the configuration, kept
//! only as a digest, compared in constant time whatever is presented.

use std::path::Path;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Shortest accepted token.
pub const MIN_TOKEN_LEN: usize = 16;

/// Why a configured token cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum BearerError {
    #[error("{section}.tokenFile: cannot read {path}: {source}")]
    Read {
        section: String,
        path: String,
        source: std::io::Error,
    },
    #[error("{0}: a token or tokenFile is required")]
    Missing(String),
    #[error("{0} token must be at least {MIN_TOKEN_LEN} characters")]
    TooShort(String),
}

#[derive(Clone)]
pub struct BearerToken([u8; 32]);

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BearerToken(..)")
    }
}

impl BearerToken {
    pub fn new(token: &str) -> Self {
        Self(Sha256::digest(token.as_bytes()).into())
    }

    /// The token of configuration section `section`: `token`, or read (once, now) from
    /// `tokenFile`, surrounding whitespace trimmed; at least [`MIN_TOKEN_LEN`] characters.
    pub fn from_config(
        token: Option<&str>,
        file: Option<&Path>,
        section: &str,
    ) -> Result<Self, BearerError> {
        let token = match (token, file) {
            (Some(token), _) => token.to_string(),
            (None, Some(path)) => std::fs::read_to_string(path)
                .map_err(|source| BearerError::Read {
                    section: section.to_string(),
                    path: path.display().to_string(),
                    source,
                })?
                .trim()
                .to_string(),
            (None, None) => return Err(BearerError::Missing(section.to_string())),
        };
        if token.len() < MIN_TOKEN_LEN {
            return Err(BearerError::TooShort(section.to_string()));
        }
        Ok(Self::new(&token))
    }

    /// Whether `presented` is the token (constant time in what is presented).
    pub fn matches(&self, presented: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        digest.ct_eq(&self.0).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_from_the_configuration() {
        let t = BearerToken::from_config(Some("0123456789abcdef"), None, "x").unwrap();
        assert!(t.matches("0123456789abcdef"));
        assert!(!t.matches("0123456789abcdeg"));
        assert!(!t.matches(""));
        assert!(matches!(
            BearerToken::from_config(Some("short"), None, "appLink"),
            Err(BearerError::TooShort(_))
        ));
        assert!(matches!(
            BearerToken::from_config(None, None, "appLink"),
            Err(BearerError::Missing(_))
        ));
        let dir = std::env::temp_dir().join(format!("bearer-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("token");
        std::fs::write(&file, "  0123456789abcdefXYZ\n").unwrap();
        let t = BearerToken::from_config(None, Some(&file), "management").unwrap();
        assert!(t.matches("0123456789abcdefXYZ"), "whitespace trimmed");
        let missing = BearerToken::from_config(None, Some(&dir.join("nope")), "management");
        assert!(missing
            .unwrap_err()
            .to_string()
            .starts_with("management.tokenFile: cannot read"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
