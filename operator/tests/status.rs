//! Status computation and validation, without a cluster.

use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use roomcast_operator::crd::{SocketIOHub, SocketIOHubSpec};
use roomcast_operator::status::{compute, find, Observed, Problem, DEGRADED, PROGRESSING, READY};
use roomcast_operator::validate::validate;

fn hub(replicas: i32) -> SocketIOHub {
    let mut spec: SocketIOHubSpec = serde_json::from_value(serde_json::json!({})).unwrap();
    spec.replicas = replicas;
    let mut h = SocketIOHub::new("chat", spec);
    h.metadata.namespace = Some("apps".into());
    h.metadata.uid = Some("uid-1".into());
    h.metadata.generation = Some(3);
    h
}

fn sts(gen: i64, observed: i64, replicas: i32, ready: i32, updated: i32) -> StatefulSet {
    StatefulSet {
        metadata: ObjectMeta {
            generation: Some(gen),
            ..ObjectMeta::default()
        },
        status: Some(StatefulSetStatus {
            observed_generation: Some(observed),
            replicas,
            ready_replicas: Some(ready),
            updated_replicas: Some(updated),
            current_revision: Some("r1".into()),
            update_revision: Some("r1".into()),
            ..StatefulSetStatus::default()
        }),
        ..StatefulSet::default()
    }
}

fn t(secs: i64) -> Time {
    Time(Timestamp::from_second(1_800_000_000 + secs).unwrap())
}

fn cond(s: &roomcast_operator::crd::SocketIOHubStatus, ty: &str) -> (String, String, Time) {
    let c = find(s, ty).unwrap();
    (
        c.status.clone(),
        c.reason.clone(),
        c.last_transition_time.clone(),
    )
}

#[test]
fn no_statefulset_yet_is_creating() {
    let s = compute(&hub(2), &Observed::default(), &t(0));
    assert_eq!(cond(&s, READY).0, "False");
    assert_eq!(cond(&s, PROGRESSING).1, "Creating");
    assert_eq!(cond(&s, DEGRADED).0, "False");
    assert_eq!(s.observed_generation, Some(3));
    assert_eq!(
        s.selector.as_deref(),
        Some("app.kubernetes.io/instance=chat,app.kubernetes.io/name=roomcast-hub")
    );
    assert_eq!(
        s.endpoint.as_deref(),
        Some("http://chat.apps.svc/socket.io/")
    );
}

#[test]
fn progresses_to_ready_and_keeps_transition_times() {
    let mut h = hub(2);
    let waiting = sts(1, 1, 2, 1, 2);
    let s1 = compute(
        &h,
        &Observed {
            statefulset: Some(&waiting),
            ..Observed::default()
        },
        &t(0),
    );
    assert_eq!(cond(&s1, PROGRESSING).1, "WaitingForPods");
    assert_eq!(cond(&s1, READY).0, "False");
    h.status = Some(s1.clone());

    // Same observation later: nothing changes, not even times.
    let s1b = compute(
        &h,
        &Observed {
            statefulset: Some(&waiting),
            ..Observed::default()
        },
        &t(10),
    );
    assert_eq!(s1, s1b);

    let ready = sts(1, 1, 2, 2, 2);
    let s2 = compute(
        &h,
        &Observed {
            statefulset: Some(&ready),
            ..Observed::default()
        },
        &t(20),
    );
    assert_eq!(
        cond(&s2, READY),
        ("True".into(), "AllReplicasReady".into(), t(20))
    );
    assert_eq!(
        cond(&s2, PROGRESSING),
        ("False".into(), "Complete".into(), t(20))
    );
    // Degraded stayed False: its time is the first one.
    assert_eq!(cond(&s2, DEGRADED).2, t(0));
    assert_eq!(s2.ready_replicas, 2);
}

#[test]
fn reason_change_without_status_change_keeps_time() {
    let mut h = hub(2);
    let rolling = sts(2, 1, 2, 2, 2);
    let s1 = compute(
        &h,
        &Observed {
            statefulset: Some(&rolling),
            ..Observed::default()
        },
        &t(0),
    );
    assert_eq!(cond(&s1, PROGRESSING).1, "RollingOut");
    h.status = Some(s1);
    let waiting = sts(2, 2, 2, 1, 2);
    let s2 = compute(
        &h,
        &Observed {
            statefulset: Some(&waiting),
            ..Observed::default()
        },
        &t(5),
    );
    assert_eq!(
        cond(&s2, PROGRESSING),
        ("True".into(), "WaitingForPods".into(), t(0))
    );
}

#[test]
fn problems_are_degraded() {
    let h = hub(1);
    let o = Observed {
        problem: Some(Problem::InvalidSpec(
            "spec.engine.path must start and end with '/'".into(),
        )),
        ..Observed::default()
    };
    let s = compute(&h, &o, &t(0));
    let d = find(&s, DEGRADED).unwrap();
    assert_eq!(
        (d.status.as_str(), d.reason.as_str()),
        ("True", "InvalidSpec")
    );
    assert!(d.message.contains("engine.path"));
}

#[test]
fn scaled_to_zero_is_not_ready() {
    let s = compute(
        &hub(0),
        &Observed {
            statefulset: Some(&sts(1, 1, 0, 0, 0)),
            ..Observed::default()
        },
        &t(0),
    );
    assert_eq!(cond(&s, READY).1, "ScaledToZero");
    assert_eq!(cond(&s, PROGRESSING).0, "False");
}

#[test]
fn validation_reports_each_problem() {
    let mut h = hub(1);
    assert!(validate(&h).is_empty());
    h.spec = serde_json::from_value(serde_json::json!({
        "engine": {"path": "no-slash", "transports": ["polling", "polling"]},
        "namespaces": [{"name": "/a"}, {"name": "/a"}, {"name": "b"}],
        "auth": {},
        "podDisruptionBudget": {"minAvailable": 1, "maxUnavailable": 1},
        "service": {"nodePort": 30000},
    }))
    .unwrap();
    let p = validate(&h).join("\n");
    for needle in [
        "engine.path",
        "duplicates",
        "listed twice",
        "\"b\" must start",
        "exactly one",
        "at most one",
        "nodePort",
    ] {
        assert!(p.contains(needle), "missing {needle:?} in {p}");
    }
    // Problems only the data plane's validation knows about surface too.
    h.spec = serde_json::from_value(serde_json::json!({
        "namespaces": [{"name": "/a", "upstream": {"url": "ftp://nope"}}],
    }))
    .unwrap();
    let p = validate(&h).join("\n");
    assert!(
        p.contains("rendered config: socketio.namespaces[0].upstream.url"),
        "{p}"
    );

    h.metadata.name = Some("x".repeat(53));
    h.spec = serde_json::from_value(serde_json::json!({})).unwrap();
    assert_eq!(validate(&h).len(), 1);
}

#[test]
fn events_follow_transitions_only() {
    use kube::runtime::events::EventType;
    use roomcast_operator::controller::events_for;
    let mut h = hub(2);
    let s1 = compute(&h, &Observed::default(), &t(0));
    let e1 = events_for(None, &s1);
    let reasons: Vec<_> = e1.iter().map(|e| e.reason.as_str()).collect();
    assert_eq!(
        reasons,
        ["ReplicasNotReady", "Creating"],
        "no 'AsExpected' event on creation"
    );
    h.status = Some(s1.clone());
    assert!(events_for(Some(&s1), &compute(&h, &Observed::default(), &t(5))).is_empty());

    let bad = Observed {
        problem: Some(Problem::ApplyFailed("refused".into())),
        ..Observed::default()
    };
    let s2 = compute(&h, &bad, &t(10));
    let e2 = events_for(Some(&s1), &s2);
    assert_eq!(e2.len(), 1);
    assert_eq!(
        (e2[0].reason.as_str(), e2[0].type_),
        ("ApplyFailed", EventType::Warning)
    );

    let mut s3 = s1.clone();
    let mut old = s1.clone();
    old.config_hash = Some("aaa".into());
    s3.config_hash = Some("bbb".into());
    let e3 = events_for(Some(&old), &s3);
    assert_eq!(e3.len(), 1);
    assert_eq!(e3[0].reason, "ConfigChanged");
}

#[test]
fn failing_pods_explain_ready_and_warn() {
    use kube::runtime::events::EventType;
    use roomcast_operator::controller::events_for;
    use roomcast_operator::pod_health::PodHealth;
    use roomcast_operator::status::PODS_HEALTHY;
    let mut h = hub(2);
    let rolling = sts(1, 1, 2, 1, 2);
    let healthy = Observed {
        statefulset: Some(&rolling),
        pods: Some(PodHealth {
            healthy: true,
            reason: "AsExpected",
            message: "no pod failing (2 pods)".into(),
        }),
        ..Observed::default()
    };
    let s1 = compute(&h, &healthy, &t(0));
    assert_eq!(cond(&s1, PODS_HEALTHY).0, "True");
    assert_eq!(cond(&s1, READY).1, "ReplicasNotReady");
    h.status = Some(s1.clone());
    let failing = Observed {
        pods: Some(PodHealth {
            healthy: false,
            reason: "ImagePullBackOff",
            message: "1 of 2 pods: chat-1: container hub: Back-off pulling image".into(),
        }),
        ..healthy.clone()
    };
    let s2 = compute(&h, &failing, &t(5));
    assert_eq!(
        cond(&s2, PODS_HEALTHY),
        ("False".into(), "ImagePullBackOff".into(), t(5))
    );
    let ready = find(&s2, READY).unwrap();
    assert_eq!(ready.reason, "ImagePullBackOff", "kubectl get shows why");
    assert!(
        ready
            .message
            .starts_with("1/2 pods ready; 1 of 2 pods: chat-1"),
        "{}",
        ready.message
    );
    let events = events_for(Some(&s1), &s2);
    let pods_event = events
        .iter()
        .find(|e| {
            e.note
                .as_deref()
                .is_some_and(|n| n.starts_with("PodsHealthy=False"))
        })
        .unwrap();
    assert_eq!(
        (pods_event.reason.as_str(), pods_event.type_),
        ("ImagePullBackOff", EventType::Warning)
    );
    // All ready: Ready wins whatever an old pod says.
    let done = sts(1, 1, 2, 2, 2);
    let s3 = compute(
        &h,
        &Observed {
            statefulset: Some(&done),
            ..failing.clone()
        },
        &t(9),
    );
    assert_eq!(cond(&s3, READY).1, "AllReplicasReady");
}

#[test]
fn reference_problems_are_degraded_and_reference_changes_announced() {
    use roomcast_operator::controller::events_for;
    use roomcast_operator::status::{INVALID_REFERENCE, MISSING_REFERENCE};
    let mut h = hub(1);
    for (problem, reason) in [
        (
            Problem::MissingReference("spec.auth.secretRef: Secret \"jwt\" not found".into()),
            MISSING_REFERENCE,
        ),
        (
            Problem::InvalidReference(
                "spec.auth.secretRef: Secret \"jwt\" has no key \"k\"".into(),
            ),
            INVALID_REFERENCE,
        ),
    ] {
        let s = compute(
            &h,
            &Observed {
                problem: Some(problem),
                ..Observed::default()
            },
            &t(0),
        );
        let d = find(&s, DEGRADED).unwrap();
        assert_eq!((d.status.as_str(), d.reason.as_str()), ("True", reason));
        assert!(d.message.contains("\"jwt\""));
    }
    let s1 = compute(
        &h,
        &Observed {
            references_hash: Some("aaa".into()),
            ..Observed::default()
        },
        &t(0),
    );
    h.status = Some(s1.clone());
    // Kept when nothing was applied.
    assert_eq!(
        compute(&h, &Observed::default(), &t(1))
            .references_hash
            .as_deref(),
        Some("aaa")
    );
    let s2 = compute(
        &h,
        &Observed {
            references_hash: Some("bbb".into()),
            ..Observed::default()
        },
        &t(2),
    );
    let e = events_for(Some(&s1), &s2);
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].reason, "ReferencesChanged");
}

#[test]
fn app_link_conflicts_name_the_spec_field() {
    let mut h = hub(1);
    h.spec = serde_json::from_value(serde_json::json!({
        "appLink": {"enabled": true},
        "namespaces": [
            {"name": "/"},
            {"name": "/orders", "upstream": {"url": "http://backend/hook"}},
            {"name": "/lobby", "relay": true, "policies": {"join": ["*"]}},
        ],
        "auth": {"secretRef": {"name": "jwt", "key": "k"}},
        "connectionStateRecovery": {},
    }))
    .unwrap();
    let problems = validate(&h);
    let p = problems.join("\n");
    for needle in [
        "spec.namespaces[1].upstream (/orders): not available with spec.appLink.enabled",
        "spec.namespaces[2].relay (/lobby)",
        "spec.namespaces[2].policies (/lobby)",
        "spec.auth: client authentication by the hub is not available with spec.appLink.enabled",
        "spec.connectionStateRecovery: not available with spec.appLink.enabled",
    ] {
        assert!(p.contains(needle), "missing {needle:?} in {p}");
    }
    // Said once, by spec field: not again in terms of the rendered file.
    assert_eq!(problems.len(), 5, "{p}");
    assert!(!p.contains("rendered config"), "{p}");

    // The same spec is valid without app links (recovery on, webhooks, relay, auth).
    h.spec.app_link.as_mut().unwrap().enabled = false;
    assert!(validate(&h).is_empty(), "{:?}", validate(&h));

    // Recovery explicitly off is fine; other problems of the file still surface.
    h.spec = serde_json::from_value(serde_json::json!({
        "appLink": {"enabled": true, "maxBatchBytes": 1048576, "maxQueuedBytes": 4096},
        "connectionStateRecovery": {"enabled": false},
    }))
    .unwrap();
    let p = validate(&h).join("\n");
    assert!(
        p.contains("rendered config: appLink.maxQueuedBytes: must be at least maxBatchBytes"),
        "{p}"
    );
    // A port of the hub's own (the CRD's CEL rule says so too, for new objects).
    h.spec =
        serde_json::from_value(serde_json::json!({"appLink": {"enabled": true, "port": 7000}}))
            .unwrap();
    let p = validate(&h).join("\n");
    assert!(p.contains("spec.appLink.port: 7000 is taken"), "{p}");
}

#[test]
fn app_endpoint_only_with_app_links_and_linked_instances_kept() {
    let mut h = hub(1);
    let s = compute(&h, &Observed::default(), &t(0));
    assert_eq!(s.app_endpoint, None);
    h.spec.app_link = Some(serde_json::from_value(serde_json::json!({"enabled": true})).unwrap());
    let s = compute(&h, &Observed::default(), &t(0));
    assert_eq!(s.app_endpoint.as_deref(), Some("chat-app.apps.svc:5100"));
    h.spec.app_link.as_mut().unwrap().port = 6000;
    assert_eq!(
        compute(&h, &Observed::default(), &t(0))
            .app_endpoint
            .as_deref(),
        Some("chat-app.apps.svc:6000")
    );
    // linkedAppInstances (like connectedClients) is the stats loop's: kept as stored.
    h.status = Some(roomcast_operator::crd::SocketIOHubStatus {
        linked_app_instances: Some(4),
        connected_clients: Some(9),
        ..s
    });
    let s = compute(&h, &Observed::default(), &t(1));
    assert_eq!(
        (s.linked_app_instances, s.connected_clients),
        (Some(4), Some(9))
    );
}
