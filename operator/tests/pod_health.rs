//! The verdicts on a hub's pods and referenced Secrets, from fixtures (no cluster).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::ByteString;
use roomcast_operator::crd::{SocketIOHub, SocketIOHubSpec};
use roomcast_operator::pod_health::{
    assess, CONTAINER_CONFIG_ERROR, CRASH_LOOP_BACK_OFF, HEALTHY, IMAGE_PULL_BACK_OFF, POD_FAILED,
    UNSCHEDULABLE,
};
use roomcast_operator::secret_refs::{check, references, secret_names};
use roomcast_operator::status::Problem;
use serde_json::json;

fn pod(name: &str, status: serde_json::Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "status": status,
    }))
    .unwrap()
}

fn ready(name: &str) -> Pod {
    pod(
        name,
        json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}),
    )
}

fn waiting(name: &str, reason: &str, message: &str) -> Pod {
    pod(
        name,
        json!({"phase": "Pending", "containerStatuses": [{
            "name": "hub", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"waiting": {"reason": reason, "message": message}},
        }]}),
    )
}

fn crashed(name: &str, restarts: i32, running_again: bool) -> Pod {
    let state = if running_again {
        json!({"running": {"startedAt": "2026-12-05T00:00:00Z"}})
    } else {
        json!({"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 4s"}})
    };
    pod(
        name,
        json!({"phase": "Running", "containerStatuses": [{
            "name": "hub", "image": "x", "imageID": "", "ready": false, "restartCount": restarts,
            "state": state,
            "lastState": {"terminated": {"exitCode": 1, "reason": "Error"}},
        }]}),
    )
}

fn unschedulable(name: &str) -> Pod {
    pod(
        name,
        json!({"phase": "Pending", "conditions": [{
            "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
            "message": "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector.",
        }]}),
    )
}

#[test]
fn ready_and_starting_pods_are_healthy() {
    let starting = waiting("chat-1", "ContainerCreating", "");
    let h = assess(&[ready("chat-0"), starting]);
    assert!(h.healthy);
    assert_eq!(h.reason, HEALTHY);
    assert!(assess(&[]).healthy);
}

#[test]
fn each_failure_has_its_reason_and_names_the_pod() {
    for (p, reason, words) in [
        (
            waiting(
                "chat-0",
                "ImagePullBackOff",
                "Back-off pulling image \"nope:1\"",
            ),
            IMAGE_PULL_BACK_OFF,
            "nope:1",
        ),
        (
            waiting("chat-0", "ErrImagePull", "not found"),
            IMAGE_PULL_BACK_OFF,
            "not found",
        ),
        (
            crashed("chat-0", 3, false),
            CRASH_LOOP_BACK_OFF,
            "restarted 3 times, last exit code 1",
        ),
        (
            waiting(
                "chat-0",
                "CreateContainerConfigError",
                "secret \"jwt\" not found",
            ),
            CONTAINER_CONFIG_ERROR,
            "jwt",
        ),
        (
            unschedulable("chat-0"),
            UNSCHEDULABLE,
            "didn't match Pod's node affinity",
        ),
        (
            pod("chat-0", json!({"phase": "Failed", "message": "evicted"})),
            POD_FAILED,
            "evicted",
        ),
    ] {
        let h = assess(&[ready("chat-1"), p]);
        assert!(!h.healthy, "{reason}");
        assert_eq!(h.reason, reason);
        assert!(
            h.message.starts_with("1 of 2 pods: chat-0: "),
            "{}",
            h.message
        );
        assert!(h.message.contains(words), "{reason}: {}", h.message);
    }
}

#[test]
fn a_crash_loop_running_between_restarts_is_still_a_crash_loop() {
    assert_eq!(
        assess(&[crashed("chat-0", 2, true)]).reason,
        CRASH_LOOP_BACK_OFF
    );
    // A pod restarted once long ago and Ready again is fine.
    let mut recovered = crashed("chat-0", 1, true);
    recovered.status.as_mut().unwrap().conditions = Some(vec![serde_json::from_value(
        json!({"type": "Ready", "status": "True"}),
    )
    .unwrap()]);
    assert!(assess(&[recovered]).healthy);
}

#[test]
fn the_most_telling_reason_wins_and_the_others_are_counted() {
    let h = assess(&[
        unschedulable("chat-2"),
        crashed("chat-1", 5, false),
        waiting("chat-0", "ImagePullBackOff", "x"),
        waiting("chat-3", "ErrImagePull", "y"),
    ]);
    assert_eq!(h.reason, IMAGE_PULL_BACK_OFF);
    assert!(
        h.message.starts_with("2 of 4 pods: chat-0: "),
        "{}",
        h.message
    );
    assert!(
        h.message.ends_with("(2 more pods failing otherwise)"),
        "{}",
        h.message
    );
}

#[test]
fn terminating_pods_are_ignored_and_messages_are_bounded() {
    let mut gone = waiting("chat-0", "ImagePullBackOff", "x");
    gone.metadata.deletion_timestamp =
        Some(serde_json::from_value(json!("2026-12-05T00:00:00Z")).unwrap());
    assert!(assess(&[gone]).healthy);
    let long = waiting("chat-0", "ErrImagePull", &"z".repeat(10_000));
    assert!(assess(&[long]).message.len() < 400);
}

fn hub(spec: serde_json::Value) -> SocketIOHub {
    let spec: SocketIOHubSpec = serde_json::from_value(spec).unwrap();
    let mut h = SocketIOHub::new("chat", spec);
    h.metadata.namespace = Some("apps".into());
    h
}

fn secret(data: &[(&str, &str)]) -> Option<Secret> {
    Some(Secret {
        data: Some(
            data.iter()
                .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                .collect(),
        ),
        ..Secret::default()
    })
}

fn referencing() -> SocketIOHub {
    hub(json!({
        "auth": {"secretRef": {"name": "jwt", "key": "key"}},
        "management": {"tokenSecretRef": {"name": "mgmt", "key": "token"}},
        "namespaces": [
            {"name": "/"},
            {"name": "/chat", "upstream": {"url": "http://app/hook", "signingSecretRef": {"name": "jwt", "key": "hook"}}},
        ],
    }))
}

#[test]
fn references_are_the_user_secrets_only() {
    let refs = references(&referencing());
    let fields: Vec<&str> = refs.iter().map(|r| r.field.as_str()).collect();
    assert_eq!(
        fields,
        [
            "spec.auth.secretRef",
            "spec.management.tokenSecretRef",
            "spec.namespaces[1].upstream.signingSecretRef"
        ]
    );
    assert_eq!(
        secret_names(&refs).into_iter().collect::<Vec<_>>(),
        ["jwt", "mgmt"]
    );
    // The generated management Secret is the operator's own, not a reference.
    assert!(references(&hub(json!({}))).is_empty());
}

#[test]
fn missing_secret_or_key_is_a_problem_naming_field_secret_and_key() {
    let refs = references(&referencing());
    let all = BTreeMap::from([
        ("jwt".to_string(), secret(&[("key", "k1"), ("hook", "h1")])),
        ("mgmt".to_string(), secret(&[("token", "t1")])),
    ]);
    assert!(check(&refs, &all).is_ok());

    let mut missing = all.clone();
    missing.insert("mgmt".into(), None);
    match check(&refs, &missing) {
        Err(Problem::MissingReference(m)) => {
            assert!(
                m.contains("spec.management.tokenSecretRef") && m.contains("\"mgmt\""),
                "{m}"
            )
        }
        other => panic!("{other:?}"),
    }
    let mut no_key = all.clone();
    no_key.insert("jwt".into(), secret(&[("key", "k1")]));
    match check(&refs, &no_key) {
        Err(Problem::InvalidReference(m)) => {
            assert!(
                m.contains("signingSecretRef") && m.contains("\"hook\""),
                "{m}"
            )
        }
        other => panic!("{other:?}"),
    }
    let mut empty = all.clone();
    empty.insert("mgmt".into(), secret(&[("token", "")]));
    assert!(
        matches!(check(&refs, &empty), Err(Problem::InvalidReference(m)) if m.contains("empty"))
    );
}

#[test]
fn the_hash_follows_the_referenced_values_only() {
    let refs = references(&referencing());
    let base = BTreeMap::from([
        ("jwt".to_string(), secret(&[("key", "k1"), ("hook", "h1")])),
        ("mgmt".to_string(), secret(&[("token", "t1")])),
    ]);
    let h0 = check(&refs, &base).unwrap();
    assert_eq!(h0.len(), 32);
    let mut other_key = base.clone();
    other_key.insert(
        "jwt".into(),
        secret(&[("key", "k1"), ("hook", "h1"), ("unused", "u")]),
    );
    assert_eq!(
        check(&refs, &other_key).unwrap(),
        h0,
        "an unreferenced key does not roll"
    );
    let mut edited = base.clone();
    edited.insert("mgmt".into(), secret(&[("token", "t2")]));
    assert_ne!(check(&refs, &edited).unwrap(), h0, "an edited value rolls");
    let mut swapped = base.clone();
    swapped.insert("jwt".into(), secret(&[("key", "h1"), ("hook", "k1")]));
    assert_ne!(
        check(&refs, &swapped).unwrap(),
        h0,
        "values moved between keys roll"
    );
}
