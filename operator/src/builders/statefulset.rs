//! The StatefulSet running the hub's data-plane pods.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    RollingUpdateStatefulSetStrategy, StatefulSet, StatefulSetSpec, StatefulSetUpdateStrategy,
};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource, EnvVar,
    EnvVarSource, HTTPGetAction, KeyToPath, LocalObjectReference, ObjectFieldSelector,
    PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ProjectedVolumeSource,
    ResourceRequirements, SeccompProfile, SecretProjection, SecurityContext,
    TopologySpreadConstraint, Volume, VolumeMount, VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::config::{secret_files, MANAGEMENT_PORT, SECRETS_MOUNT_PATH};
use super::{
    labels, names, object_meta, selector_labels, CONFIG_FILE, CONFIG_HASH_ANNOTATION,
    CONFIG_MOUNT_PATH, PEER_TLS_MOUNT_PATH, PEER_TLS_VOLUME_SIZE, REFERENCES_HASH_ANNOTATION,
};
use crate::crd::{Placement, SocketIOHub};
use crate::Result;

/// Port the data plane serves clients on inside the pod.
pub const CLIENT_PORT: i32 = 3000;
/// The metrics port (`metrics.listen`), named `metrics`: `/metrics` for scrapers and the
/// `/healthz` and `/readyz` the pod's probes use.
pub const METRICS_PORT: i32 = 9090;
/// The peer (gRPC) port, named `peer`: the EndpointSlices and DNS SRV records
/// (`_peer._tcp.<hub>-peers...`) of the peer Service carry it.
pub const PEER_PORT: i32 = 7000;
/// Name of the app link port (`spec.appLink.port`) on the container and the `<hub>-app`
/// Service.
pub const APP_LINK_PORT_NAME: &str = "app-link";
/// Name of the data-plane container.
pub const CONTAINER_NAME: &str = "hub";

/// CPU request of the hub container when `spec.resources` is unset.
pub const DEFAULT_CPU_REQUEST: &str = "100m";
/// Memory request of the hub container when `spec.resources` is unset.
pub const DEFAULT_MEMORY_REQUEST: &str = "128Mi";
/// Node labels the default spread balances the pods over, widest first.
pub const DEFAULT_SPREAD_KEYS: [&str; 2] =
    ["topology.kubernetes.io/zone", "kubernetes.io/hostname"];

/// Requests without limits: enough for the scheduler and an HPA on CPU to work, no
/// throttling or OOM kill imposed on a hub whose load nobody has measured yet.
fn default_resources() -> ResourceRequirements {
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_string(), Quantity(DEFAULT_CPU_REQUEST.to_string())),
            (
                "memory".to_string(),
                Quantity(DEFAULT_MEMORY_REQUEST.to_string()),
            ),
        ])),
        ..ResourceRequirements::default()
    }
}

/// The hub's own constraints, else (unless turned off) a preferred spread over zones and
/// nodes: losing one node or zone then takes as few of the hub's pods as the cluster allows,
/// and `ScheduleAnyway` never leaves a pod Pending for it.
fn topology_spread(
    hub: &SocketIOHub,
    placement: &Placement,
) -> Option<Vec<TopologySpreadConstraint>> {
    if !placement.topology_spread_constraints.is_empty() {
        return Some(placement.topology_spread_constraints.clone());
    }
    if !placement.default_topology_spread {
        return None;
    }
    Some(
        DEFAULT_SPREAD_KEYS
            .iter()
            .map(|key| TopologySpreadConstraint {
                max_skew: 1,
                topology_key: (*key).to_string(),
                when_unsatisfiable: "ScheduleAnyway".to_string(),
                label_selector: Some(LabelSelector {
                    match_labels: Some(selector_labels(hub)),
                    ..LabelSelector::default()
                }),
                ..TopologySpreadConstraint::default()
            })
            .collect(),
    )
}

/// The hub's StatefulSet. `config_hash` and `references_hash` (of the referenced Secret data)
/// go into the pod template so that a change of either rolls the pods.
pub fn statefulset(
    hub: &SocketIOHub,
    default_image: &str,
    config_hash: &str,
    references_hash: Option<&str>,
) -> Result<StatefulSet> {
    let spec = &hub.spec;
    let name = hub.metadata.name.clone().unwrap_or_default();

    let mut pod_annotations = spec.pod_annotations.clone();
    pod_annotations.insert(CONFIG_HASH_ANNOTATION.to_string(), config_hash.to_string());
    if let Some(h) = references_hash {
        pod_annotations.insert(REFERENCES_HASH_ANNOTATION.to_string(), h.to_string());
    }

    let env = vec![
        field_env("ROOMCAST_NODE_ID", "metadata.name"),
        field_env("ROOMCAST_POD_NAMESPACE", "metadata.namespace"),
        EnvVar {
            name: "ROOMCAST_PEER_SERVICE".to_string(),
            value: Some(names::peer_service(&name)),
            ..EnvVar::default()
        },
    ];

    let placement = spec.placement.clone().unwrap_or_default();
    let http_probe = |path: &str, period: i32, failures: i32| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_string()),
            port: IntOrString::String("metrics".to_string()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        ..Probe::default()
    };

    let mut ports = vec![
        ContainerPort {
            name: Some("http".to_string()),
            container_port: CLIENT_PORT,
            protocol: Some("TCP".to_string()),
            ..ContainerPort::default()
        },
        ContainerPort {
            name: Some("management".to_string()),
            container_port: MANAGEMENT_PORT,
            protocol: Some("TCP".to_string()),
            ..ContainerPort::default()
        },
        ContainerPort {
            name: Some("peer".to_string()),
            container_port: PEER_PORT,
            protocol: Some("TCP".to_string()),
            ..ContainerPort::default()
        },
        ContainerPort {
            name: Some("metrics".to_string()),
            container_port: METRICS_PORT,
            protocol: Some("TCP".to_string()),
            ..ContainerPort::default()
        },
    ];
    // Only with app links on: a port added to every hub would roll every hub's pods.
    if let Some(a) = spec.enabled_app_link() {
        ports.push(ContainerPort {
            name: Some(APP_LINK_PORT_NAME.to_string()),
            container_port: a.port,
            protocol: Some("TCP".to_string()),
            ..ContainerPort::default()
        });
    }

    let container = Container {
        name: CONTAINER_NAME.to_string(),
        image: Some(
            spec.image
                .clone()
                .unwrap_or_else(|| default_image.to_string()),
        ),
        image_pull_policy: spec.image_pull_policy.map(|p| p.as_str().to_string()),
        args: Some(vec![
            "--config".to_string(),
            format!("{CONFIG_MOUNT_PATH}/{CONFIG_FILE}"),
        ]),
        env: Some(env),
        ports: Some(ports),
        readiness_probe: Some(http_probe("/readyz", 5, 2)),
        liveness_probe: Some(http_probe("/healthz", 10, 3)),
        resources: Some(spec.resources.clone().unwrap_or_else(default_resources)),
        volume_mounts: Some(vec![
            VolumeMount {
                name: "config".to_string(),
                mount_path: CONFIG_MOUNT_PATH.to_string(),
                read_only: Some(true),
                ..VolumeMount::default()
            },
            VolumeMount {
                name: "secrets".to_string(),
                mount_path: SECRETS_MOUNT_PATH.to_string(),
                read_only: Some(true),
                ..VolumeMount::default()
            },
            VolumeMount {
                name: "peer-tls".to_string(),
                mount_path: PEER_TLS_MOUNT_PATH.to_string(),
                ..VolumeMount::default()
            },
        ]),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".to_string()]),
                ..Capabilities::default()
            }),
            ..SecurityContext::default()
        }),
        ..Container::default()
    };

    let spread = topology_spread(hub, &placement);
    let pod_spec = PodSpec {
        service_account_name: Some(names::same(&name)),
        enable_service_links: Some(false),
        termination_grace_period_seconds: Some(30),
        image_pull_secrets: (!spec.image_pull_secrets.is_empty()).then(|| {
            spec.image_pull_secrets
                .iter()
                .map(|n| LocalObjectReference { name: n.clone() })
                .collect()
        }),
        node_selector: (!placement.node_selector.is_empty()).then_some(placement.node_selector),
        tolerations: (!placement.tolerations.is_empty()).then_some(placement.tolerations),
        affinity: placement.affinity,
        topology_spread_constraints: spread,
        priority_class_name: placement.priority_class_name,
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".to_string(),
                ..SeccompProfile::default()
            }),
            ..PodSecurityContext::default()
        }),
        containers: vec![container],
        volumes: Some(vec![
            Volume {
                name: "config".to_string(),
                config_map: Some(ConfigMapVolumeSource {
                    name: names::config_map(&name),
                    ..ConfigMapVolumeSource::default()
                }),
                ..Volume::default()
            },
            Volume {
                name: "secrets".to_string(),
                projected: Some(secrets_volume(hub)),
                ..Volume::default()
            },
            // The pod's own key and certificates: in memory, never on a disk.
            Volume {
                name: "peer-tls".to_string(),
                empty_dir: Some(EmptyDirVolumeSource {
                    medium: Some("Memory".to_string()),
                    size_limit: Some(Quantity(PEER_TLS_VOLUME_SIZE.to_string())),
                }),
                ..Volume::default()
            },
        ]),
        ..PodSpec::default()
    };

    Ok(StatefulSet {
        metadata: object_meta(hub, names::same(&name))?,
        spec: Some(StatefulSetSpec {
            replicas: Some(spec.replicas),
            service_name: Some(names::peer_service(&name)),
            pod_management_policy: Some(spec.pod_management_policy.as_str().to_string()),
            selector: LabelSelector {
                match_labels: Some(selector_labels(hub)),
                ..LabelSelector::default()
            },
            update_strategy: Some(StatefulSetUpdateStrategy {
                type_: Some("RollingUpdate".to_string()),
                rolling_update: Some(RollingUpdateStatefulSetStrategy {
                    partition: Some(0),
                    ..RollingUpdateStatefulSetStrategy::default()
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(hub)),
                    annotations: Some(pod_annotations),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod_spec),
            },
            ..StatefulSetSpec::default()
        }),
        ..StatefulSet::default()
    })
}

fn field_env(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.to_string(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.to_string(),
                ..ObjectFieldSelector::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

/// One projected volume with every Secret key the pod needs, at the paths the config names.
fn secrets_volume(hub: &SocketIOHub) -> ProjectedVolumeSource {
    ProjectedVolumeSource {
        default_mode: Some(0o440),
        sources: Some(
            secret_files(hub)
                .into_iter()
                .map(|f| VolumeProjection {
                    secret: Some(SecretProjection {
                        name: f.source.name,
                        items: Some(vec![KeyToPath {
                            key: f.source.key,
                            path: f.file,
                            ..KeyToPath::default()
                        }]),
                        optional: Some(false),
                    }),
                    ..VolumeProjection::default()
                })
                .collect(),
        ),
    }
}
