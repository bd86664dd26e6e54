//! `KubeDiscovery` against a real kube-apiserver. Ignored by default: `e2e/discovery-tests.sh`
//! (`make test-discovery`) starts a throwaway control plane, exports `KUBECONFIG` (an admin) and
//! runs these with `--ignored`.
//!
//! Each test works in a namespace of its own, and discovery runs as a ServiceAccount holding
//! only the Role the docs ask for (get/list/watch endpointslices), so the RBAC is tested too.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{
    Namespace, ObjectReference, Service, ServiceAccount, ServicePort, ServiceSpec,
};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, PostParams};
use kube::{Api, Client};
use roomcast_dataplane::cluster::kube_discovery::{KubeDiscovery, KubeDiscoveryError};
use roomcast_dataplane::cluster::{Discovery, Members};

const SERVICE: &str = "hub-peers";
// Endpoint addresses are documentation ranges (192.0.2.0/24, 2001:db8::/32): the API rejects
// loopback ones, and nothing here connects to them.
/// How long a change may take to show in `members()`.
const WITHIN: Duration = Duration::from_secs(5);

/// A namespace of its own for one test. Not deleted: the control plane is thrown away after
/// the run (and a Drop that talks to the API would deadlock in a panicking test's runtime).
async fn create_namespace(admin: &Client, prefix: &str) -> String {
    let name = format!("{prefix}-{:08x}", rand::random::<u32>());
    let ns = Namespace {
        metadata: meta(&name),
        ..Namespace::default()
    };
    Api::<Namespace>::all(admin.clone())
        .create(&PostParams::default(), &ns)
        .await
        .expect("create namespace");
    name
}

fn meta(name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        ..ObjectMeta::default()
    }
}

async fn admin() -> Client {
    // Shows the discovery's own logs (watch failures, sync) with --nocapture.
    let _ = tracing_subscriber::fmt()
        .with_env_filter("roomcast_dataplane=debug")
        .with_test_writer()
        .try_init();
    Client::try_default()
        .await
        .expect("KUBECONFIG for the test control plane (run e2e/discovery-tests.sh)")
}

/// The headless peer Service, without a selector so that no controller writes its slices.
async fn create_service(admin: &Client, ns: &str) {
    let port = |name: &str, port: i32| ServicePort {
        name: Some(name.to_string()),
        port,
        protocol: Some("TCP".to_string()),
        ..ServicePort::default()
    };
    let svc = Service {
        metadata: meta(SERVICE),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".to_string()),
            ports: Some(vec![port("http", 3000), port("peer", 7000)]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    };
    Api::<Service>::namespaced(admin.clone(), ns)
        .create(&PostParams::default(), &svc)
        .await
        .expect("create service");
}

/// A ServiceAccount `name`, optionally bound to the Role the docs prescribe for hub pods, and
/// a client that authenticates as it.
async fn service_account_client(admin: &Client, ns: &str, name: &str, bind: bool) -> Client {
    let pp = PostParams::default();
    let accounts = Api::<ServiceAccount>::namespaced(admin.clone(), ns);
    accounts
        .create(
            &pp,
            &ServiceAccount {
                metadata: meta(name),
                ..ServiceAccount::default()
            },
        )
        .await
        .expect("create service account");
    if bind {
        grant_endpointslice_reader(admin, ns, name).await;
    }
    let request = TokenRequest {
        // No audiences: the API server's own.
        spec: Some(TokenRequestSpec {
            expiration_seconds: Some(3600),
            ..TokenRequestSpec::default()
        }),
        ..TokenRequest::default()
    };
    let issued: TokenRequest = accounts
        .create_subresource("token", name, &pp, &request)
        .await
        .expect("token request");
    let token = issued
        .status
        .and_then(|s| s.token)
        .expect("token in status");

    let mut config = kube::Config::infer().await.expect("kubeconfig");
    config.auth_info = serde_json::from_value(serde_json::json!({ "token": token }))
        .expect("auth info from token");
    Client::try_from(config).expect("service account client")
}

/// The Role of `operator/src/builders/rbac.rs` (and of docs/operator.md), bound to `account`.
async fn grant_endpointslice_reader(admin: &Client, ns: &str, account: &str) {
    let pp = PostParams::default();
    let role = Role {
        metadata: meta(account),
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec!["discovery.k8s.io".to_string()]),
            resources: Some(vec!["endpointslices".to_string()]),
            verbs: ["get", "list", "watch"].map(String::from).to_vec(),
            ..PolicyRule::default()
        }]),
    };
    Api::<Role>::namespaced(admin.clone(), ns)
        .create(&pp, &role)
        .await
        .expect("create role");
    let binding = RoleBinding {
        metadata: meta(account),
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".to_string()),
            kind: "Role".to_string(),
            name: account.to_string(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".to_string(),
            name: account.to_string(),
            namespace: Some(ns.to_string()),
            ..Subject::default()
        }]),
    };
    Api::<RoleBinding>::namespaced(admin.clone(), ns)
        .create(&pp, &binding)
        .await
        .expect("create role binding");
}

fn endpoint(pod: &str, ip: &str, ready: bool) -> Endpoint {
    Endpoint {
        addresses: vec![ip.to_string()],
        conditions: Some(EndpointConditions {
            ready: Some(ready),
            serving: Some(ready),
            terminating: Some(false),
        }),
        target_ref: Some(ObjectReference {
            kind: Some("Pod".to_string()),
            name: Some(pod.to_string()),
            ..ObjectReference::default()
        }),
        ..Endpoint::default()
    }
}

fn slice(name: &str, service: &str, family: &str, endpoints: Vec<Endpoint>) -> EndpointSlice {
    let labels = BTreeMap::from([
        (
            "kubernetes.io/service-name".to_string(),
            service.to_string(),
        ),
        // Not the EndpointSlice controller's value, so that it leaves these slices alone.
        (
            "endpointslice.kubernetes.io/managed-by".to_string(),
            "roomcast-e2e".to_string(),
        ),
    ]);
    let port = |name: &str, port: i32| EndpointPort {
        name: Some(name.to_string()),
        port: Some(port),
        protocol: Some("TCP".to_string()),
        ..EndpointPort::default()
    };
    EndpointSlice {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            labels: Some(labels),
            ..ObjectMeta::default()
        },
        address_type: family.to_string(),
        endpoints: Some(endpoints),
        ports: Some(vec![port("http", 3000), port("peer", 7000)]),
    }
}

/// Waits until `members()` equals `expected` (checked every 50 ms), panicking with the last
/// answer after [`WITHIN`].
async fn expect_members(d: &Arc<KubeDiscovery>, expected: &str, what: &str) {
    let expected = Members::parse(expected).expect("expected members");
    let start = tokio::time::Instant::now();
    loop {
        let got = d.members().await;
        if matches!(&got, Ok(m) if *m == expected) {
            eprintln!("{what}: seen after {:?}", start.elapsed());
            return;
        }
        if start.elapsed() > WITHIN {
            panic!("{what}: after {WITHIN:?} members are {got:?}, expected {expected:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
#[ignore = "needs a kube-apiserver: e2e/discovery-tests.sh"]
async fn members_follow_endpointslices() {
    let admin = admin().await;
    let ns = create_namespace(&admin, "discovery").await;
    create_service(&admin, &ns).await;
    let client = service_account_client(&admin, &ns, "hub", true).await;
    let slices = Api::<EndpointSlice>::namespaced(admin.clone(), &ns);
    let pp = PostParams::default();

    // Synced with no slices yet: an empty set, not an error.
    let d = KubeDiscovery::start(client, &ns, SERVICE, "peer").expect("start");
    tokio::time::timeout(Duration::from_secs(10), d.synced())
        .await
        .expect("synced within 10 s");
    // Right after `synced()`, with no waiting.
    assert!(d.is_synced());
    assert_eq!(
        d.members().await.expect("members once synced"),
        Members::new()
    );

    let mut v4 = slice(
        "hub-peers-v4",
        SERVICE,
        "IPv4",
        vec![
            endpoint("hub-0", "192.0.2.11", true),
            endpoint("hub-1", "192.0.2.12", true),
        ],
    );
    let v4_more = slice(
        "hub-peers-v4-more",
        SERVICE,
        "IPv4",
        // hub-1 again (counted once) and a pod that is not ready.
        vec![
            endpoint("hub-1", "192.0.2.12", true),
            endpoint("hub-5", "192.0.2.15", false),
        ],
    );
    let mut v6 = slice(
        "hub-peers-v6",
        SERVICE,
        "IPv6",
        vec![endpoint("hub-2", "2001:db8::2", true)],
    );
    // Another Service's slice in the same namespace is not ours.
    let other = slice(
        "other-peers",
        "other-peers",
        "IPv4",
        vec![endpoint("other-0", "192.0.2.99", true)],
    );
    for s in [&v4, &v4_more, &v6, &other] {
        slices.create(&pp, s).await.expect("create slice");
    }
    expect_members(
        &d,
        "hub-0=192.0.2.11:7000,hub-1=192.0.2.12:7000,hub-2=[2001:db8::2]:7000",
        "slices created",
    )
    .await;

    // hub-0 becomes not ready.
    set_endpoints(
        &slices,
        &mut v4,
        vec![
            endpoint("hub-0", "192.0.2.11", false),
            endpoint("hub-1", "192.0.2.12", true),
        ],
    )
    .await;
    expect_members(
        &d,
        "hub-1=192.0.2.12:7000,hub-2=[2001:db8::2]:7000",
        "hub-0 not ready",
    )
    .await;

    // hub-3 is added, in both families.
    for (slice, ip) in [(&mut v4, "192.0.2.13"), (&mut v6, "2001:db8::3")] {
        let mut more = slice.endpoints.clone().unwrap_or_default();
        more.push(endpoint("hub-3", ip, true));
        set_endpoints(&slices, slice, more).await;
    }
    expect_members(
        &d,
        "hub-1=192.0.2.12:7000,hub-2=[2001:db8::2]:7000,hub-3=192.0.2.13:7000",
        "hub-3 added",
    )
    .await;

    // The first IPv4 slice goes: hub-1 stays (it is in the other IPv4 slice), hub-3 is left
    // with its IPv6 address.
    delete(&slices, "hub-peers-v4").await;
    expect_members(
        &d,
        "hub-1=192.0.2.12:7000,hub-2=[2001:db8::2]:7000,hub-3=[2001:db8::3]:7000",
        "hub-peers-v4 deleted",
    )
    .await;
    delete(&slices, "hub-peers-v4-more").await;
    expect_members(
        &d,
        "hub-2=[2001:db8::2]:7000,hub-3=[2001:db8::3]:7000",
        "hub-peers-v4-more deleted",
    )
    .await;
}

async fn delete(slices: &Api<EndpointSlice>, name: &str) {
    slices
        .delete(name, &DeleteParams::default())
        .await
        .expect("delete slice");
}

/// Gives `slice` these endpoints, in the API too (a plain update at its current version).
async fn set_endpoints(
    slices: &Api<EndpointSlice>,
    slice: &mut EndpointSlice,
    endpoints: Vec<Endpoint>,
) {
    slice.endpoints = Some(endpoints);
    let name = slice.metadata.name.clone().expect("slice name");
    let current = slices.get(&name).await.expect("get slice");
    slice.metadata.resource_version = current.metadata.resource_version;
    slices
        .replace(&name, &PostParams::default(), slice)
        .await
        .expect("replace slice");
}

/// Without the Role the list is forbidden: `members()` keeps failing with "not synced" (never
/// an empty set, never a panic) and the watch keeps retrying, so granting the Role later is
/// enough.
#[tokio::test]
#[ignore = "needs a kube-apiserver: e2e/discovery-tests.sh"]
async fn forbidden_until_granted() {
    let admin = admin().await;
    let ns = create_namespace(&admin, "discovery-rbac").await;
    create_service(&admin, &ns).await;
    Api::<EndpointSlice>::namespaced(admin.clone(), &ns)
        .create(
            &PostParams::default(),
            &slice(
                "hub-peers-a",
                SERVICE,
                "IPv4",
                vec![endpoint("hub-0", "192.0.2.11", true)],
            ),
        )
        .await
        .expect("create slice");
    let client = service_account_client(&admin, &ns, "hub", false).await;

    let d = KubeDiscovery::start(client, &ns, SERVICE, "peer").expect("start");
    for _ in 0..20 {
        let err = d.members().await.expect_err("not synced while forbidden");
        assert!(
            matches!(
                err.downcast_ref::<KubeDiscoveryError>(),
                Some(KubeDiscoveryError::NotSynced { .. })
            ),
            "{err:#}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    grant_endpointslice_reader(&admin, &ns, "hub").await;
    // The watcher's backoff starts at 0.8 s and doubles (with jitter): a few retries.
    tokio::time::timeout(Duration::from_secs(30), d.synced())
        .await
        .expect("synced once the Role is granted");
    assert_eq!(
        d.members().await.expect("members once synced"),
        Members::parse("hub-0=192.0.2.11:7000").expect("members")
    );
}
