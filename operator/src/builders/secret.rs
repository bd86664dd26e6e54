//! The generated management-token Secret.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::ByteString;

use super::{names, object_meta};
use crate::crd::{SecretKeyRef, SocketIOHub};
use crate::Result;

/// Key of the token in the generated Secret.
pub const MANAGEMENT_TOKEN_KEY: &str = "token";

/// Secret `<hub>-management` holding `token`. The token itself is chosen by the caller (kept
/// from the existing Secret, or freshly generated) so this stays a pure function.
pub fn management_secret(hub: &SocketIOHub, token: &str) -> Result<Secret> {
    let name = hub.metadata.name.clone().unwrap_or_default();
    Ok(Secret {
        metadata: object_meta(hub, names::management_secret(&name))?,
        type_: Some("Opaque".to_string()),
        data: Some(BTreeMap::from([(
            MANAGEMENT_TOKEN_KEY.to_string(),
            ByteString(token.as_bytes().to_vec()),
        )])),
        ..Secret::default()
    })
}

/// The Secret key the pods read the management token from: the hub's own reference, or the
/// generated Secret.
pub fn management_token_ref(hub: &SocketIOHub) -> SecretKeyRef {
    match &hub.spec.management.token_secret_ref {
        Some(r) => r.clone(),
        None => SecretKeyRef {
            name: names::management_secret(hub.metadata.name.as_deref().unwrap_or_default()),
            key: MANAGEMENT_TOKEN_KEY.to_string(),
        },
    }
}
