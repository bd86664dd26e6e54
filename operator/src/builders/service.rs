//! The client Service, the headless peer Service, the management Service and the app link
//! Service.

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::config::MANAGEMENT_PORT;
use super::statefulset::{APP_LINK_PORT_NAME, CLIENT_PORT, PEER_PORT};
use super::{names, object_meta, selector_labels};
use crate::crd::{SessionAffinity, SocketIOHub};
use crate::Result;

/// Headless Service `<hub>-peers`: stable pod DNS names and the EndpointSlices the pods
/// discover each other through. Not-ready pods are published too: a starting pod stays
/// not ready until it is linked to every member (`cluster.warmUpTimeout`), and the others
/// only dial it once they see it here.
pub fn peer_service(hub: &SocketIOHub) -> Result<Service> {
    let name = hub.metadata.name.clone().unwrap_or_default();
    Ok(Service {
        metadata: object_meta(hub, names::peer_service(&name))?,
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".to_string()),
            selector: Some(selector_labels(hub)),
            publish_not_ready_addresses: Some(true),
            ports: Some(vec![
                ServicePort {
                    name: Some("http".to_string()),
                    port: CLIENT_PORT,
                    target_port: Some(IntOrString::String("http".to_string())),
                    protocol: Some("TCP".to_string()),
                    ..ServicePort::default()
                },
                ServicePort {
                    name: Some("peer".to_string()),
                    port: PEER_PORT,
                    target_port: Some(IntOrString::String("peer".to_string())),
                    protocol: Some("TCP".to_string()),
                    ..ServicePort::default()
                },
            ]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    })
}

/// Client Service `<hub>`: what Socket.IO clients connect to. Any pod serves any session, so
/// no affinity is needed; `ClientIP` affinity only saves a forwarding hop.
pub fn client_service(hub: &SocketIOHub) -> Result<Service> {
    let name = hub.metadata.name.clone().unwrap_or_default();
    let s = &hub.spec.service;
    let mut meta = object_meta(hub, names::same(&name))?;
    if !s.annotations.is_empty() {
        meta.annotations = Some(s.annotations.clone());
    }
    Ok(Service {
        metadata: meta,
        spec: Some(ServiceSpec {
            type_: Some(s.type_.as_str().to_string()),
            selector: Some(selector_labels(hub)),
            session_affinity: Some(
                match s.session_affinity {
                    SessionAffinity::None => "None",
                    SessionAffinity::ClientIP => "ClientIP",
                }
                .to_string(),
            ),
            ports: Some(vec![ServicePort {
                name: Some("http".to_string()),
                port: s.port,
                node_port: s.node_port,
                target_port: Some(IntOrString::String("http".to_string())),
                protocol: Some("TCP".to_string()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    })
}

/// Service `<hub>-management`: the management API for the application backend (never
/// exposed with the client Service).
pub fn management_service(hub: &SocketIOHub) -> Result<Service> {
    let name = hub.metadata.name.clone().unwrap_or_default();
    Ok(Service {
        metadata: object_meta(hub, names::management_service(&name))?,
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".to_string()),
            selector: Some(selector_labels(hub)),
            ports: Some(vec![ServicePort {
                name: Some("management".to_string()),
                port: MANAGEMENT_PORT,
                target_port: Some(IntOrString::String("management".to_string())),
                protocol: Some("TCP".to_string()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    })
}

/// Service `<hub>-app` (ClusterIP): what application instances running the Node SDK link to
/// (port `app-link`, `spec.appLink.port`). Any pod will do: an instance learns every pod
/// from the one it reached and links to each. `None` when app links are off.
pub fn app_service(hub: &SocketIOHub) -> Result<Option<Service>> {
    let Some(a) = hub.spec.enabled_app_link() else {
        return Ok(None);
    };
    let name = hub.metadata.name.clone().unwrap_or_default();
    Ok(Some(Service {
        metadata: object_meta(hub, names::app_service(&name))?,
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".to_string()),
            selector: Some(selector_labels(hub)),
            ports: Some(vec![ServicePort {
                name: Some(APP_LINK_PORT_NAME.to_string()),
                port: a.port,
                target_port: Some(IntOrString::String(APP_LINK_PORT_NAME.to_string())),
                protocol: Some("TCP".to_string()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }))
}

/// Where application instances link to (what goes in `status.appEndpoint` and the SDK's
/// `ROOMCAST_APP_ENDPOINT`): `<hub>-app.<namespace>.svc:<port>`; `None` when app links are
/// off.
pub fn app_endpoint(hub: &SocketIOHub) -> Option<String> {
    let a = hub.spec.enabled_app_link()?;
    let name = hub.metadata.name.as_deref().unwrap_or_default();
    let ns = hub.metadata.namespace.as_deref().unwrap_or("default");
    Some(format!("{}.{ns}.svc:{}", names::app_service(name), a.port))
}

/// In-cluster URL of the management API (what goes in `status.managementEndpoint`).
pub fn management_endpoint(hub: &SocketIOHub) -> String {
    let name = hub.metadata.name.as_deref().unwrap_or_default();
    let ns = hub.metadata.namespace.as_deref().unwrap_or("default");
    format!(
        "http://{}.{ns}.svc:{MANAGEMENT_PORT}",
        names::management_service(name)
    )
}

/// In-cluster URL of the hub (what goes in `status.endpoint`).
pub fn endpoint(hub: &SocketIOHub) -> String {
    let name = hub.metadata.name.as_deref().unwrap_or_default();
    let ns = hub.metadata.namespace.as_deref().unwrap_or("default");
    let port = hub.spec.service.port;
    let path = hub.spec.engine.path.as_deref().unwrap_or("/socket.io/");
    if port == 80 {
        format!("http://{name}.{ns}.svc{path}")
    } else {
        format!("http://{name}.{ns}.svc:{port}{path}")
    }
}
