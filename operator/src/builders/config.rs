//! The data-plane configuration file, rendered from the hub spec with the data plane's own
//! `Config` type so operator and data plane share one schema.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use crate::dataplane_config::{Config, CorsConfig, TransportKind};
use k8s_openapi::api::core::v1::ConfigMap;
use sha2::{Digest, Sha256};

use super::{names, object_meta, statefulset::CLIENT_PORT};
use crate::crd::{SocketIOHub, Transport};
use crate::{Error, Result};

/// Key of the configuration file in the ConfigMap.
pub const CONFIG_FILE: &str = "config.yaml";
/// Directory the ConfigMap is mounted at in the hub container.
pub const CONFIG_MOUNT_PATH: &str = "/etc/roomcast";

/// The data-plane `Config` a hub's pods run with. Fields the spec leaves unset keep the data
/// plane's defaults. `nodeId` is left at its default: each pod overrides it with its own name
/// through the `ROOMCAST_NODE_ID` environment variable.
pub fn render_config(hub: &SocketIOHub) -> Result<Config> {
    let spec = &hub.spec;
    let mut c = Config {
        listen: SocketAddr::from(([0, 0, 0, 0], CLIENT_PORT as u16)),
        ..Config::default()
    };
    let e = &spec.engine;
    if let Some(path) = &e.path {
        c.engine.path = path.clone();
    }
    if let Some(ts) = &e.transports {
        c.engine.transports = ts
            .iter()
            .map(|t| match t {
                Transport::Polling => TransportKind::Polling,
                Transport::Websocket => TransportKind::Websocket,
            })
            .collect();
    }
    if let Some(v) = e.allow_upgrades {
        c.engine.allow_upgrades = v;
    }
    if let Some(v) = e.ping_interval {
        c.engine.ping_interval = to_u64(v, "engine.pingInterval")?;
    }
    if let Some(v) = e.ping_timeout {
        c.engine.ping_timeout = to_u64(v, "engine.pingTimeout")?;
    }
    if let Some(v) = e.upgrade_timeout {
        c.engine.upgrade_timeout = to_u64(v, "engine.upgradeTimeout")?;
    }
    if let Some(v) = e.max_http_buffer_size {
        c.engine.max_http_buffer_size = to_usize(v, "engine.maxHttpBufferSize")?;
    }
    if let Some(cors) = &e.cors {
        c.engine.cors = CorsConfig {
            origin: cors.origin.clone(),
            credentials: cors.credentials,
        };
    }
    c.socketio.namespaces = spec
        .namespace_names()
        .iter()
        .map(|n| n.as_str().into())
        .collect();
    if let Some(v) = spec.connect_timeout {
        c.socketio.connect_timeout = to_u64(v, "connectTimeout")?;
    }
    if let Some(v) = spec.ack_timeout {
        c.socketio.ack_timeout = to_u64(v, "ackTimeout")?;
    }
    if let Some(l) = &spec.limits {
        let set = |dst: &mut usize, v: Option<i64>, field: &str| -> Result<()> {
            if let Some(v) = v {
                *dst = to_usize(v, field)?;
            }
            Ok(())
        };
        let lim = &mut c.limits;
        set(
            &mut lim.max_connections,
            l.max_connections,
            "limits.maxConnections",
        )?;
        set(
            &mut lim.max_namespaces_per_session,
            l.max_namespaces_per_session,
            "limits.maxNamespacesPerSession",
        )?;
        set(
            &mut lim.max_outbound_frames,
            l.max_outbound_frames,
            "limits.maxOutboundFrames",
        )?;
        set(
            &mut lim.max_outbound_bytes,
            l.max_outbound_bytes,
            "limits.maxOutboundBytes",
        )?;
        set(
            &mut lim.max_pending_acks,
            l.max_pending_acks,
            "limits.maxPendingAcks",
        )?;
        set(
            &mut lim.max_attachments,
            l.max_attachments,
            "limits.maxAttachments",
        )?;
        set(
            &mut lim.max_rooms_per_socket,
            l.max_rooms_per_socket,
            "limits.maxRoomsPerSocket",
        )?;
    }
    Ok(c)
}

fn to_u64(v: i64, field: &str) -> Result<u64> {
    u64::try_from(v).map_err(|_| Error::InvalidHub(format!("{field} must not be negative: {v}")))
}

fn to_usize(v: i64, field: &str) -> Result<usize> {
    usize::try_from(v).map_err(|_| Error::InvalidHub(format!("{field} is too large: {v}")))
}

/// The rendered configuration file.
pub fn render_config_file(hub: &SocketIOHub) -> Result<String> {
    let config = render_config(hub)?;
    let yaml = serde_saphyr::to_string(&config).map_err(|e| Error::Render(e.to_string()))?;
    Ok(format!(
        "# Rendered by roomcast-operator from SocketIOHub {}; do not edit.\n{yaml}",
        hub.metadata.name.as_deref().unwrap_or_default()
    ))
}

/// ConfigMap holding the configuration file.
pub(super) fn config_map(hub: &SocketIOHub) -> Result<ConfigMap> {
    let name = hub.metadata.name.clone().unwrap_or_default();
    Ok(ConfigMap {
        metadata: object_meta(hub, names::config_map(&name))?,
        data: Some(BTreeMap::from([(
            CONFIG_FILE.to_string(),
            render_config_file(hub)?,
        )])),
        ..ConfigMap::default()
    })
}

/// Hash of a ConfigMap's data (keys in order), hex SHA-256, first 16 bytes.
pub(super) fn config_map_hash(cm: &ConfigMap) -> String {
    let mut h = Sha256::new();
    for (k, v) in cm.data.iter().flatten() {
        h.update((k.len() as u64).to_le_bytes());
        h.update(k.as_bytes());
        h.update((v.len() as u64).to_le_bytes());
        h.update(v.as_bytes());
    }
    hex(&h.finalize()[..16])
}

/// Hash of the rendered configuration of `hub`.
pub fn config_hash(hub: &SocketIOHub) -> Result<String> {
    Ok(config_map_hash(&config_map(hub)?))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
