//! Fixture tests of the pure builders: each `tests/fixtures/<case>/hub.yaml` is built into the
//! objects of `expected.yaml`. Regenerate after an intended change with
//! `UPDATE_FIXTURES=1 cargo test -p roomcast-operator --test builders` and review the diff.

use std::path::{Path, PathBuf};

use roomcast_operator::builders::{build, BuildOptions, Desired};
use roomcast_operator::crd::SocketIOHub;
use roomcast_operator::peer_ca::CaMaterial;
use serde::Serialize;

const IMAGE: &str = "roomcast/roomcast-dataplane:test";
const TOKEN: &str = "fixture-token";
const APP_TOKEN: &str = "fixture-app-link-token";

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn load(case: &str) -> SocketIOHub {
    let text = std::fs::read_to_string(fixtures().join(case).join("hub.yaml")).unwrap();
    serde_saphyr::from_str(&text).unwrap()
}

fn opts() -> BuildOptions {
    BuildOptions {
        default_image: IMAGE.to_string(),
        management_token: Some(TOKEN.to_string()),
        app_link_token: Some(APP_TOKEN.to_string()),
        // Builders do not parse the CA: fixed text keeps the fixtures stable.
        peer_ca: CaMaterial {
            cert_pem: "-----BEGIN CERTIFICATE-----\nfixture-ca\n-----END CERTIFICATE-----\n"
                .to_string(),
            key_pem: "-----BEGIN PRIVATE KEY-----\nfixture-key\n-----END PRIVATE KEY-----\n"
                .to_string(),
            previous_cert_pem: Some(
                "-----BEGIN CERTIFICATE-----\nfixture-previous-ca\n-----END CERTIFICATE-----\n"
                    .to_string(),
            ),
            rotated_for: Some("r1".to_string()),
            rotated_at: Some(1_800_000_000),
        },
        csr_cluster_role: "roomcast-operator-hub-csr".to_string(),
        references_hash: None,
    }
}

/// `opts()` with the references hash the reconciler would pass for `hub` (a fixed text).
fn opts_for(hub: &SocketIOHub) -> BuildOptions {
    BuildOptions {
        references_hash: (!roomcast_operator::secret_refs::references(hub).is_empty())
            .then(|| "fixture-references-hash".to_string()),
        ..opts()
    }
}

fn doc<T: Serialize>(out: &mut String, kind: &str, obj: &T) {
    out.push_str(&format!("--- # {kind}\n"));
    out.push_str(&serde_saphyr::to_string(obj).unwrap());
}

fn render(d: &Desired) -> String {
    let mut out = String::new();
    doc(&mut out, "ServiceAccount", &d.service_account);
    doc(&mut out, "Role", &d.role);
    doc(&mut out, "RoleBinding", &d.role_binding);
    doc(&mut out, "ConfigMap", &d.config_map);
    if let Some(s) = &d.secret {
        doc(&mut out, "Secret", s);
    }
    if let Some(s) = &d.app_link_secret {
        doc(&mut out, "Secret (app link)", s);
    }
    doc(&mut out, "Service (peers)", &d.peer_service);
    doc(&mut out, "Service (clients)", &d.client_service);
    doc(&mut out, "Service (management)", &d.management_service);
    if let Some(s) = &d.app_service {
        doc(&mut out, "Service (app links)", s);
    }
    doc(&mut out, "StatefulSet", &d.statefulset);
    if let Some(p) = &d.pdb {
        doc(&mut out, "PodDisruptionBudget", p);
    }
    if let Some(p) = &d.network_policy {
        doc(&mut out, "NetworkPolicy", p);
    }
    doc(&mut out, "Secret (peer CA)", &d.peer_ca_secret);
    doc(&mut out, "ConfigMap (peer trust)", &d.trust_config_map);
    doc(&mut out, "ClusterRoleBinding (peer CSRs)", &d.csr_binding);
    out
}

fn check(case: &str) {
    let hub = load(case);
    let problems = roomcast_operator::validate::validate(&hub);
    assert!(
        problems.is_empty(),
        "{case}: fixture hub is invalid: {problems:?}"
    );
    let desired = build(&hub, &opts_for(&hub)).unwrap();
    // The rendered file is accepted by the data plane's own parser and validation.
    let text = &desired.config_map.data.as_ref().unwrap()["config.yaml"];
    let config = roomcast_config::Config::parse(text, "yaml").unwrap();
    config.validate().unwrap();
    let got = render(&desired);
    let path = fixtures().join(case).join("expected.yaml");
    if std::env::var_os("UPDATE_FIXTURES").is_some() {
        std::fs::write(&path, &got).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        got == want,
        "{case}: built objects differ from {}; rerun with UPDATE_FIXTURES=1 and review.\n--- got ---\n{got}",
        path.display()
    );
}

#[test]
fn fixture_minimal() {
    check("minimal");
}

#[test]
fn fixture_full() {
    check("full");
}

#[test]
fn fixture_own_secret_no_pdb() {
    check("own-secret-no-pdb");
}

#[test]
fn fixture_app_link() {
    check("app-link");
}

#[test]
fn config_change_changes_pod_template_hash_but_scaling_does_not() {
    let hub = load("minimal");
    let base = build(&hub, &opts()).unwrap();
    let annotation = |d: &Desired| {
        d.statefulset
            .spec
            .as_ref()
            .unwrap()
            .template
            .metadata
            .as_ref()
            .unwrap()
            .annotations
            .as_ref()
            .unwrap()["roomcast.dev/config-hash"]
            .clone()
    };
    assert_eq!(annotation(&base), base.config_hash);

    let mut scaled = hub.clone();
    scaled.spec.replicas = 5;
    assert_eq!(
        build(&scaled, &opts()).unwrap().config_hash,
        base.config_hash
    );

    let mut changed = hub.clone();
    changed.spec.engine.ping_interval = Some(10_000);
    let d = build(&changed, &opts()).unwrap();
    assert_ne!(d.config_hash, base.config_hash);
    assert_eq!(annotation(&d), d.config_hash);
}

#[test]
fn rendered_config_is_the_data_plane_schema() {
    use roomcast_config::Config;
    let hub = load("full");
    let d = build(&hub, &opts()).unwrap();
    let text = &d.config_map.data.as_ref().unwrap()["config.yaml"];
    // The file parses back with the data plane's own type (deny_unknown_fields) ...
    let parsed = Config::parse(text, "yaml").unwrap();
    // ... and carries the spec's settings.
    assert_eq!(parsed.engine.path, "/rt/");
    assert_eq!(parsed.engine.ping_interval, 10_000);
    let names = serde_json::to_string(&parsed.socketio.namespaces).unwrap();
    for ns in ["\"/\"", "\"/lobby\"", "\"/tenant-*\""] {
        assert!(names.contains(ns), "{ns} missing from {names}");
    }
    assert_eq!(parsed.limits.max_connections, 20_000);
    assert_eq!(parsed.listen.port(), 3000);
    let mgmt = parsed.management.listen.unwrap();
    assert_eq!(mgmt.port(), 3001);
    assert_eq!(
        parsed.management.token_file.unwrap().to_str(),
        Some("/etc/roomcast-secrets/management-token")
    );
    assert_eq!(
        parsed.auth.jwt.hs256_secret_file.unwrap().to_str(),
        Some("/etc/roomcast-secrets/auth-key")
    );
    // Every file the config names is projected into the pod from the right Secret key.
    let volume = serde_json::to_string(&d.statefulset).unwrap();
    for (secret, key, file) in [
        ("game-management", "token", "management-token"),
        ("jwt", "hs256", "auth-key"),
        ("webhook", "signing-key", "upstream-1-signing-key"),
    ] {
        let needle = format!(
            r#"{{"items":[{{"key":"{key}","path":"{file}"}}],"name":"{secret}","optional":false}}"#
        );
        assert!(volume.contains(&needle), "missing projection {needle}");
    }
}

#[test]
fn generated_secret_only_without_own_reference() {
    assert!(build(&load("minimal"), &opts()).unwrap().secret.is_some());
    let d = build(&load("own-secret-no-pdb"), &opts()).unwrap();
    assert!(d.secret.is_none());
    assert!(d.pdb.is_none());
    assert!(d.network_policy.is_none());
    let text = serde_json::to_string(&d.statefulset).unwrap();
    assert!(text.contains("notify-admin") && text.contains("api-token"));
    // jwksUrl only: no key file, RS256/ES256.
    let cfg = &d.config_map.data.as_ref().unwrap()["config.yaml"];
    assert!(cfg.contains("jwksUrl: https://auth.example/.well-known/jwks.json"));
    assert!(!cfg.contains("hs256SecretFile"));
}

#[test]
fn a_jwks_over_plain_http_is_reported() {
    let mut hub = load("own-secret-no-pdb");
    let auth = hub.spec.auth.as_mut().expect("the fixture has auth");
    auth.jwks_url = Some("http://idp.internal/jwks.json".into());
    let problems = roomcast_operator::validate::validate(&hub);
    assert!(
        problems.iter().any(|p| p.contains("must be https://")),
        "{problems:?}"
    );
}

/// The ports of the NetworkPolicy's ingress rules, each with who may reach it (`None`: anyone).
fn policy_rules(d: &Desired) -> Vec<(i32, Option<serde_json::Value>)> {
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    let spec = d.network_policy.as_ref().unwrap().spec.as_ref().unwrap();
    spec.ingress
        .as_ref()
        .unwrap()
        .iter()
        .map(|r| {
            let ports = r.ports.as_ref().unwrap();
            assert_eq!(ports.len(), 1);
            let Some(IntOrString::Int(port)) = ports[0].port else {
                panic!("numeric ports")
            };
            (
                port,
                r.from.as_ref().map(|f| serde_json::to_value(f).unwrap()),
            )
        })
        .collect()
}

#[test]
fn network_policy_defaults_and_an_empty_list_closes_its_port() {
    use serde_json::json;
    let d = build(&load("minimal"), &opts()).unwrap();
    let spec = d.network_policy.as_ref().unwrap().spec.as_ref().unwrap();
    assert_eq!(
        spec.policy_types.as_deref(),
        Some(&["Ingress".to_string()][..])
    );
    assert!(spec.egress.is_none(), "egress is left open");
    let own = json!([{"podSelector": {"matchLabels": {
        "app.kubernetes.io/instance": "chat", "app.kubernetes.io/name": "roomcast-hub"}}}]);
    assert_eq!(
        policy_rules(&d),
        [
            (3000, None),
            (7000, Some(own.clone())),
            (3001, Some(json!([{"podSelector": {}}]))),
            (9090, Some(json!([{"namespaceSelector": {}}]))),
        ]
    );
    // `[]` is "nobody", not a rule without `from` (which would be "everybody").
    let mut closed = load("minimal");
    closed.spec.network_policy.management_from = Some(vec![]);
    closed.spec.network_policy.metrics_from = Some(vec![]);
    let d = build(&closed, &opts()).unwrap();
    assert_eq!(policy_rules(&d), [(3000, None), (7000, Some(own))]);
}

#[test]
fn default_requests_and_spread_are_replaced_or_turned_off() {
    let pod = |hub: &SocketIOHub| {
        build(hub, &opts())
            .unwrap()
            .statefulset
            .spec
            .unwrap()
            .template
            .spec
            .unwrap()
    };
    let minimal = load("minimal");
    let p = pod(&minimal);
    let req = p.containers[0].resources.clone().unwrap().requests.unwrap();
    assert_eq!(
        (req["cpu"].0.as_str(), req["memory"].0.as_str()),
        ("100m", "128Mi")
    );
    let keys: Vec<String> = p
        .topology_spread_constraints
        .unwrap()
        .into_iter()
        .map(|c| format!("{}/{}", c.topology_key, c.when_unsatisfiable))
        .collect();
    assert_eq!(
        keys,
        [
            "topology.kubernetes.io/zone/ScheduleAnyway",
            "kubernetes.io/hostname/ScheduleAnyway"
        ]
    );

    let mut off = minimal.clone();
    off.spec.placement =
        Some(serde_json::from_value(serde_json::json!({"defaultTopologySpread": false})).unwrap());
    off.spec.resources =
        Some(serde_json::from_value(serde_json::json!({"limits": {"memory": "1Gi"}})).unwrap());
    let p = pod(&off);
    assert!(p.topology_spread_constraints.is_none());
    let res = p.containers[0].resources.clone().unwrap();
    assert!(res.requests.is_none(), "own resources replace the defaults");
    assert_eq!(res.limits.unwrap()["memory"].0, "1Gi");

    // Own constraints replace the default ones ("full" sets one on zones only).
    let full = pod(&load("full"));
    assert_eq!(full.topology_spread_constraints.unwrap().len(), 1);
}

#[test]
fn app_link_objects_follow_the_spec() {
    use serde_json::json;
    let hub = load("app-link");
    let d = build(&hub, &opts_for(&hub)).unwrap();
    assert!(d.app_link_secret.is_some() && d.app_service.is_some());
    assert_eq!(
        roomcast_operator::builders::app_endpoint(&hub).as_deref(),
        Some("chat-app.apps.svc:5100")
    );

    // The hub's own token Secret: nothing generated, its key projected, and it is a
    // reference (checked and hashed before anything is applied).
    let mut own = hub.clone();
    own.spec.app_link.as_mut().unwrap().token_secret_ref =
        Some(serde_json::from_value(json!({"name": "app-secrets", "key": "link-token"})).unwrap());
    let d = build(&own, &opts_for(&own)).unwrap();
    assert!(d.app_link_secret.is_none());
    let pod = serde_json::to_string(&d.statefulset).unwrap();
    assert!(
        pod.contains(r#"{"items":[{"key":"link-token","path":"app-link-token"}],"name":"app-secrets","optional":false}"#),
        "{pod}"
    );
    let refs = roomcast_operator::secret_refs::references(&own);
    assert!(refs
        .iter()
        .any(|r| r.field == "spec.appLink.tokenSecretRef" && r.secret.name == "app-secrets"));

    // allowedFrom left out: the hub's namespace; `[]`: no rule (nobody).
    let mut open = hub.clone();
    open.spec.app_link.as_mut().unwrap().allowed_from = None;
    let rules = policy_rules(&build(&open, &opts()).unwrap());
    assert_eq!(
        rules.last(),
        Some(&(5100, Some(json!([{"podSelector": {}}]))))
    );
    open.spec.app_link.as_mut().unwrap().allowed_from = Some(vec![]);
    let rules = policy_rules(&build(&open, &opts()).unwrap());
    assert!(rules.iter().all(|(port, _)| *port != 5100), "{rules:?}");

    // Off (the block kept, enabled: false): none of it, and the config has no appLink.
    let mut off = hub.clone();
    off.spec.app_link.as_mut().unwrap().enabled = false;
    let d = build(&off, &opts()).unwrap();
    assert!(d.app_link_secret.is_none() && d.app_service.is_none());
    assert!(roomcast_operator::builders::app_endpoint(&off).is_none());
    let text = serde_json::to_string(&d.statefulset).unwrap();
    assert!(!text.contains("app-link"), "{text}");
    assert!(!d.config_map.data.as_ref().unwrap()["config.yaml"].contains("appLink"));
    assert!(policy_rules(&d).iter().all(|(port, _)| *port != 5100));
    assert!(roomcast_operator::secret_refs::references(&off).is_empty());
}

#[test]
fn chart_examples_are_valid_hubs() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/roomcast-operator/examples");
    for file in ["hub.yaml", "hub-app-link.yaml"] {
        let text = std::fs::read_to_string(dir.join(file)).unwrap();
        let mut hub: SocketIOHub = serde_saphyr::from_str(&text).unwrap();
        hub.metadata.namespace = Some("default".into());
        hub.metadata.uid = Some("example-uid".into());
        let problems = roomcast_operator::validate::validate(&hub);
        assert!(problems.is_empty(), "{file}: {problems:?}");
        build(&hub, &opts_for(&hub)).unwrap();
    }
}
