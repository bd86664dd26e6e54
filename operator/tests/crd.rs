//! The committed CRD files must equal what the Rust types generate.
//! Regenerate with `cargo run -p roomcast-operator -- crd --write`.

use std::path::Path;

fn check(rel: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel);
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    let generated = roomcast_operator::crd_yaml().unwrap();
    assert!(
        committed == generated,
        "{rel} differs from the CRD generated from operator/src/crd.rs; run \
         `cargo run -p roomcast-operator -- crd --write` and commit the result"
    );
}

#[test]
fn crds_dir_matches_types() {
    check("crds/socketiohub.yaml");
}

#[test]
fn chart_crd_matches_types() {
    check("charts/roomcast-operator/crds/socketiohub.yaml");
}

#[test]
fn docs_reference_matches_types() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/operator.md");
    let doc = std::fs::read_to_string(&path).unwrap();
    let spliced = roomcast_operator::reference::splice(&doc).unwrap();
    assert!(
        doc == spliced,
        "docs/operator.md reference is stale; run `cargo run -p roomcast-operator -- crd --write`"
    );
}

#[test]
fn crd_has_subresources_columns_and_rules() {
    let y = roomcast_operator::crd_yaml().unwrap();
    for needle in [
        "scale:",
        "specReplicasPath: .spec.replicas",
        "labelSelectorPath: .status.selector",
        "status: {}",
        "shortNames:",
        "- sio",
        "name: Endpoint",
        "x-kubernetes-validations",
        "rule: self == oldSelf",
    ] {
        assert!(y.contains(needle), "CRD lacks {needle:?}");
    }
}
