//! The generated token Secrets: the management token (`<hub>-management`) and the app link
//! token (`<hub>-app-link`), each made when the hub names no Secret of its own.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::ByteString;

use super::{names, object_meta};
use crate::crd::{SecretKeyRef, SocketIOHub};
use crate::Result;

/// Key of the token in a generated Secret.
pub const TOKEN_KEY: &str = "token";
/// Key of the token in the generated management Secret.
pub const MANAGEMENT_TOKEN_KEY: &str = TOKEN_KEY;

/// A generated token: which Secret holds it, and which spec field, when set, names the
/// hub's own Secret instead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GeneratedToken {
    /// `spec.management.tokenSecretRef`, else `<hub>-management`.
    Management,
    /// `spec.appLink.tokenSecretRef`, else `<hub>-app-link` (only with app links on).
    AppLink,
}

impl GeneratedToken {
    /// Name of the generated Secret of hub `hub`.
    pub fn secret_name(self, hub: &str) -> String {
        match self {
            Self::Management => names::management_secret(hub),
            Self::AppLink => names::app_link_secret(hub),
        }
    }

    /// Whether `hub` needs this token at all.
    pub fn needed(self, hub: &SocketIOHub) -> bool {
        match self {
            Self::Management => true,
            Self::AppLink => hub.spec.enabled_app_link().is_some(),
        }
    }

    /// The hub's own Secret for this token, when it names one.
    pub fn own_ref(self, hub: &SocketIOHub) -> Option<&SecretKeyRef> {
        match self {
            Self::Management => hub.spec.management.token_secret_ref.as_ref(),
            Self::AppLink => hub
                .spec
                .enabled_app_link()
                .and_then(|a| a.token_secret_ref.as_ref()),
        }
    }

    /// Whether the operator generates this token's Secret for `hub`.
    pub fn generated(self, hub: &SocketIOHub) -> bool {
        self.needed(hub) && self.own_ref(hub).is_none()
    }

    /// The Secret key the pods read the token from: the hub's own reference, or the
    /// generated Secret.
    pub fn secret_ref(self, hub: &SocketIOHub) -> SecretKeyRef {
        match self.own_ref(hub) {
            Some(r) => r.clone(),
            None => SecretKeyRef {
                name: self.secret_name(hub.metadata.name.as_deref().unwrap_or_default()),
                key: TOKEN_KEY.to_string(),
            },
        }
    }

    /// The generated Secret holding `token` (chosen by the caller: kept from the existing
    /// Secret, or freshly generated, so this stays a pure function).
    pub fn secret(self, hub: &SocketIOHub, token: &str) -> Result<Secret> {
        let name = hub.metadata.name.clone().unwrap_or_default();
        Ok(Secret {
            metadata: object_meta(hub, self.secret_name(&name))?,
            type_: Some("Opaque".to_string()),
            data: Some(BTreeMap::from([(
                TOKEN_KEY.to_string(),
                ByteString(token.as_bytes().to_vec()),
            )])),
            ..Secret::default()
        })
    }
}

/// Secret `<hub>-management` holding `token`.
pub fn management_secret(hub: &SocketIOHub, token: &str) -> Result<Secret> {
    GeneratedToken::Management.secret(hub, token)
}

/// Secret `<hub>-app-link` holding `token`.
pub fn app_link_secret(hub: &SocketIOHub, token: &str) -> Result<Secret> {
    GeneratedToken::AppLink.secret(hub, token)
}

/// The Secret key the pods read the management token from.
pub fn management_token_ref(hub: &SocketIOHub) -> SecretKeyRef {
    GeneratedToken::Management.secret_ref(hub)
}

/// The Secret key the pods read the app link token from.
pub fn app_link_token_ref(hub: &SocketIOHub) -> SecretKeyRef {
    GeneratedToken::AppLink.secret_ref(hub)
}
