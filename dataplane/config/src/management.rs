//! `management`: the management REST API the application backend calls.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::Problems;

/// The management REST API, on its own port. Disabled unless `listen` is set; a token is
/// then required.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct ManagementConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    /// Bearer token the app presents; prefer `tokenFile`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_file: Option<std::path::PathBuf>,
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// How long a connection may take to send a request's headers (counted from the
    /// connection's start or the end of the previous answer); past it it is closed.
    pub header_read_timeout: u64,
}

impl Default for ManagementConfig {
    fn default() -> Self {
        Self {
            listen: None,
            token: None,
            token_file: None,
            max_body_bytes: 1024 * 1024,
            header_read_timeout: 10_000,
        }
    }
}

impl ManagementConfig {
    pub(crate) fn validate(&self, bad: &mut Problems) {
        if self.listen.is_some() && self.token.is_none() && self.token_file.is_none() {
            bad.add(
                "management",
                "listen is set but no token or tokenFile: the API would be open",
            );
        }
        if self.token.is_some() && self.token_file.is_some() {
            bad.add("management", "set token or tokenFile, not both");
        }
        if self.token.as_ref().is_some_and(|t| t.len() < 16) {
            bad.add("management.token", "must be at least 16 characters");
        }
        if self.max_body_bytes == 0 {
            bad.add("management.maxBodyBytes", "must be at least 1");
        }
        bad.millis("management.headerReadTimeout", self.header_read_timeout);
    }
}
