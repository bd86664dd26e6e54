//! NetworkPolicy of the hub's pods: who may reach which of their ports.
//!
//! Ingress only. Egress is left open: the pods call webhook URLs and JWKS endpoints the user
//! chooses, the API server (EndpointSlices) and DNS, and a policy here could only guess those;
//! policies add up, so a user who wants egress rules adds a policy of their own.

use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::config::MANAGEMENT_PORT;
use super::statefulset::{CLIENT_PORT, METRICS_PORT, PEER_PORT};
use super::{names, object_meta, selector_labels};
use crate::crd::SocketIOHub;
use crate::Result;

/// `None` when `spec.networkPolicy.enabled` is false. Rules:
/// - client port: from anywhere;
/// - peer port: from the hub's own pods only;
/// - management port: from `managementFrom` (default: pods of the hub's namespace);
/// - metrics port: from `metricsFrom` (default: pods of any namespace);
/// - app link port (with app links on): from `appLink.allowedFrom` (default: pods of the
///   hub's namespace).
///
/// An empty list renders no rule for its port (in a rule, no `from` would mean everyone).
pub fn network_policy(hub: &SocketIOHub) -> Result<Option<NetworkPolicy>> {
    let spec = &hub.spec.network_policy;
    if !spec.enabled {
        return Ok(None);
    }
    let own_pods = LabelSelector {
        match_labels: Some(selector_labels(hub)),
        ..LabelSelector::default()
    };
    let everything = LabelSelector::default;
    let management = spec.management_from.clone().unwrap_or_else(|| {
        vec![NetworkPolicyPeer {
            pod_selector: Some(everything()),
            ..NetworkPolicyPeer::default()
        }]
    });
    let metrics = spec.metrics_from.clone().unwrap_or_else(|| {
        vec![NetworkPolicyPeer {
            namespace_selector: Some(everything()),
            ..NetworkPolicyPeer::default()
        }]
    });
    let mut ingress = vec![
        rule(CLIENT_PORT, None),
        rule(
            PEER_PORT,
            Some(vec![NetworkPolicyPeer {
                pod_selector: Some(own_pods.clone()),
                ..NetworkPolicyPeer::default()
            }]),
        ),
    ];
    let mut others = vec![(MANAGEMENT_PORT, management), (METRICS_PORT, metrics)];
    if let Some(a) = hub.spec.enabled_app_link() {
        let apps = a.allowed_from.clone().unwrap_or_else(|| {
            vec![NetworkPolicyPeer {
                pod_selector: Some(everything()),
                ..NetworkPolicyPeer::default()
            }]
        });
        others.push((a.port, apps));
    }
    for (port, from) in others {
        if !from.is_empty() {
            ingress.push(rule(port, Some(from)));
        }
    }
    Ok(Some(NetworkPolicy {
        metadata: object_meta(
            hub,
            names::same(hub.metadata.name.as_deref().unwrap_or_default()),
        )?,
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(own_pods),
            policy_types: Some(vec!["Ingress".to_string()]),
            ingress: Some(ingress),
            egress: None,
        }),
    }))
}

/// TCP `port`, from `from` (`None`: from anywhere).
fn rule(port: i32, from: Option<Vec<NetworkPolicyPeer>>) -> NetworkPolicyIngressRule {
    NetworkPolicyIngressRule {
        from,
        ports: Some(vec![NetworkPolicyPort {
            port: Some(IntOrString::Int(port)),
            protocol: Some("TCP".to_string()),
            end_port: None,
        }]),
    }
}
