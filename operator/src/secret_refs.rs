//! The Secrets a hub references (`auth.secretRef`, `management.tokenSecretRef`,
//! `appLink.tokenSecretRef` with app links on, each namespace's `upstream.signingSecretRef`): checked before anything is applied, so that a
//! missing Secret or key never rolls the StatefulSet to pods that cannot start, and hashed into
//! the pod template, so that a change of their data rolls the pods as a config change does.
//! Pure: the reconciler fetches the Secrets (by name, never listed) and passes them in.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::Secret;

use crate::builders::hash_entries;
use crate::crd::{SecretKeyRef, SocketIOHub};
use crate::status::Problem;

/// One reference: the spec field that holds it and the Secret key it names.
#[derive(Clone, Debug, PartialEq)]
pub struct Reference {
    pub field: String,
    pub secret: SecretKeyRef,
}

/// The Secrets the hub references, in spec order. The management and app link Secrets the
/// operator generates (when `management.tokenSecretRef` / `appLink.tokenSecretRef` is unset)
/// are not references: the reconcile writes them.
pub fn references(hub: &SocketIOHub) -> Vec<Reference> {
    let spec = &hub.spec;
    let mut refs = Vec::new();
    if let Some(r) = spec.auth.as_ref().and_then(|a| a.secret_ref.clone()) {
        refs.push(Reference {
            field: "spec.auth.secretRef".to_string(),
            secret: r,
        });
    }
    if let Some(r) = spec.management.token_secret_ref.clone() {
        refs.push(Reference {
            field: "spec.management.tokenSecretRef".to_string(),
            secret: r,
        });
    }
    if let Some(r) = spec
        .enabled_app_link()
        .and_then(|a| a.token_secret_ref.clone())
    {
        refs.push(Reference {
            field: "spec.appLink.tokenSecretRef".to_string(),
            secret: r,
        });
    }
    for (i, ns) in spec.namespaces.iter().enumerate() {
        if let Some(r) = ns
            .upstream
            .as_ref()
            .and_then(|u| u.signing_secret_ref.clone())
        {
            refs.push(Reference {
                field: format!("spec.namespaces[{i}].upstream.signingSecretRef"),
                secret: r,
            });
        }
    }
    refs
}

/// Names of the Secrets to fetch, each once.
pub fn secret_names(refs: &[Reference]) -> BTreeSet<String> {
    refs.iter().map(|r| r.secret.name.clone()).collect()
}

/// Checks every reference against the fetched Secrets (`None`: not found) and returns the
/// hash of the referenced values, or the first problem (missing Secret, then missing or empty
/// key), naming the field, the Secret and the key.
pub fn check(
    refs: &[Reference],
    fetched: &BTreeMap<String, Option<Secret>>,
) -> Result<String, Problem> {
    let mut values: Vec<(&Reference, &[u8])> = Vec::with_capacity(refs.len());
    for r in refs {
        let Some(Some(secret)) = fetched.get(&r.secret.name) else {
            return Err(Problem::MissingReference(format!(
                "{}: Secret {:?} not found in the hub's namespace",
                r.field, r.secret.name
            )));
        };
        let value = secret
            .data
            .as_ref()
            .and_then(|d| d.get(&r.secret.key))
            .map(|b| b.0.as_slice())
            .or_else(|| {
                secret
                    .string_data
                    .as_ref()
                    .and_then(|d| d.get(&r.secret.key))
                    .map(|s| s.as_bytes())
            });
        match value {
            Some(v) if !v.is_empty() => values.push((r, v)),
            Some(_) => {
                return Err(Problem::InvalidReference(format!(
                    "{}: key {:?} of Secret {:?} is empty",
                    r.field, r.secret.key, r.secret.name
                )))
            }
            None => {
                return Err(Problem::InvalidReference(format!(
                    "{}: Secret {:?} has no key {:?}",
                    r.field, r.secret.name, r.secret.key
                )))
            }
        }
    }
    // The field is part of each entry: the same value moved to another reference still rolls.
    let labels: Vec<String> = values
        .iter()
        .map(|(r, _)| format!("{}={}/{}", r.field, r.secret.name, r.secret.key))
        .collect();
    Ok(hash_entries(
        labels
            .iter()
            .zip(&values)
            .map(|(l, (_, v))| (l.as_bytes(), *v)),
    ))
}
