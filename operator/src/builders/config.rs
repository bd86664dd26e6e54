//! The data-plane configuration file, rendered from the hub spec with the data plane's own
//! `Config` type so operator and data plane share one schema.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use k8s_openapi::api::core::v1::ConfigMap;
use roomcast_config::{
    AppLinkConfig, AuthMode, ClusterConfig, Config, CorsConfig, KubernetesConfig, MetricsConfig,
    NamespaceConfig, PolicyConfig, ShutdownConfig, TransportKind, UpstreamConfig,
};
use sha2::{Digest, Sha256};

use super::secret::{app_link_token_ref, management_token_ref};
use super::statefulset::{CLIENT_PORT, METRICS_PORT, PEER_PORT};
use super::{names, object_meta};
use crate::crd::{SecretKeyRef, SocketIOHub, Transport, UpstreamEvent, UpstreamSpec};
use crate::{Error, Result};

/// Key of the configuration file in the ConfigMap.
pub const CONFIG_FILE: &str = "config.yaml";
/// Directory the ConfigMap is mounted at in the hub container.
pub const CONFIG_MOUNT_PATH: &str = "/etc/roomcast";

/// Directory the hub's Secret keys are mounted at (a projected volume).
pub const SECRETS_MOUNT_PATH: &str = "/etc/roomcast-secrets";
/// Port of the management API in the pod.
pub const MANAGEMENT_PORT: i32 = 3001;
/// File (under [`SECRETS_MOUNT_PATH`]) of the app link token.
pub const APP_LINK_TOKEN_FILE: &str = "app-link-token";

/// A Secret key the pods need as a file: where it comes from and its path under
/// [`SECRETS_MOUNT_PATH`].
#[derive(Clone, Debug, PartialEq)]
pub struct SecretFile {
    pub source: SecretKeyRef,
    pub file: String,
}

impl SecretFile {
    pub fn path(&self) -> PathBuf {
        PathBuf::from(SECRETS_MOUNT_PATH).join(&self.file)
    }
}

/// Every Secret key mounted into the hub's pods: the management token, the app link token
/// (with app links on), the auth key and each upstream's signing key. The config file names
/// the same paths.
pub fn secret_files(hub: &SocketIOHub) -> Vec<SecretFile> {
    let mut files = vec![SecretFile {
        source: management_token_ref(hub),
        file: "management-token".to_string(),
    }];
    if hub.spec.enabled_app_link().is_some() {
        files.push(SecretFile {
            source: app_link_token_ref(hub),
            file: APP_LINK_TOKEN_FILE.to_string(),
        });
    }
    if let Some(r) = hub.spec.auth.as_ref().and_then(|a| a.secret_ref.clone()) {
        files.push(SecretFile {
            source: r,
            file: "auth-key".to_string(),
        });
    }
    for (i, ns) in hub.spec.namespaces.iter().enumerate() {
        if let Some(r) = ns
            .upstream
            .as_ref()
            .and_then(|u| u.signing_secret_ref.clone())
        {
            files.push(SecretFile {
                source: r,
                file: format!("upstream-{i}-signing-key"),
            });
        }
    }
    files
}

fn file_of(files: &[SecretFile], name: &str) -> Option<PathBuf> {
    files.iter().find(|f| f.file == name).map(SecretFile::path)
}

/// Milliseconds a terminating pod stays serving, not ready, before closing its sessions.
pub const DRAIN_DELAY_MS: u64 = 5_000;
/// Milliseconds after SIGTERM by which a pod has exited (below the StatefulSet's 30 s
/// `terminationGracePeriodSeconds`, so the kubelet never has to SIGKILL it).
pub const GRACE_PERIOD_MS: u64 = 25_000;

/// The data-plane `Config` a hub's pods run with. Fields the spec leaves unset keep the data
/// plane's defaults. `nodeId` is left at its default: each pod overrides it with its own name
/// through the `ROOMCAST_NODE_ID` environment variable. Secrets are referenced as files.
pub fn render_config(hub: &SocketIOHub) -> Result<Config> {
    let spec = &hub.spec;
    let files = secret_files(hub);
    let mut c = Config {
        listen: SocketAddr::from(([0, 0, 0, 0], CLIENT_PORT as u16)),
        // Scrapers and the pod's probes use the metrics port; clients never see it.
        metrics: MetricsConfig {
            listen: Some(SocketAddr::from(([0, 0, 0, 0], METRICS_PORT as u16))),
            ..MetricsConfig::default()
        },
        // Endpoint removal takes a few seconds to reach kube-proxy and ingresses; the grace
        // period fits in the pod's terminationGracePeriodSeconds (see the StatefulSet).
        shutdown: ShutdownConfig {
            drain_delay: DRAIN_DELAY_MS,
            grace_period: GRACE_PERIOD_MS,
        },
        // The pods find each other through the EndpointSlices of the headless peer Service
        // (ready pods, by pod name = ROOMCAST_NODE_ID), in the pod's own namespace.
        cluster: ClusterConfig {
            peer_listen: Some(SocketAddr::from(([0, 0, 0, 0], PEER_PORT as u16))),
            kubernetes: Some(KubernetesConfig {
                service: names::peer_service(hub.metadata.name.as_deref().unwrap_or_default()),
                namespace: None,
                port_name: "peer".to_string(),
            }),
            // Mutual TLS with per-pod certificates the pods request themselves.
            tls: Some(super::peer_tls::peer_tls_config(hub)?),
            ..ClusterConfig::default()
        },
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
    if let Some(v) = e.polling_body_timeout {
        c.engine.polling_body_timeout = to_u64(v, "engine.pollingBodyTimeout")?;
    }
    if let Some(v) = e.header_read_timeout {
        c.engine.header_read_timeout = to_u64(v, "engine.headerReadTimeout")?;
    }
    if let Some(v) = e.defer_accept {
        c.engine.defer_accept = to_u64(v, "engine.deferAccept")?;
    }
    if let Some(v) = e.write_coalescing_delay {
        c.engine.write_coalescing_delay = to_u64(v, "engine.writeCoalescingDelay")?;
    }
    if let Some(v) = e.write_coalescing_load {
        c.engine.write_coalescing_load = u8::try_from(to_u64(v, "engine.writeCoalescingLoad")?)
            .map_err(|_| {
                Error::InvalidHub(format!(
                    "engine.writeCoalescingLoad is a percentage, 0 to 100: {v}"
                ))
            })?;
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

    if !spec.namespaces.is_empty() {
        let mut namespaces = Vec::with_capacity(spec.namespaces.len());
        for (i, n) in spec.namespaces.iter().enumerate() {
            let mut ns = NamespaceConfig::from(n.name.as_str());
            ns.allowed_events = n.allowed_events.clone();
            ns.relay = n.relay;
            ns.policies = n.policies.as_ref().map(|p| PolicyConfig {
                join: p.join.clone(),
                emit: p.emit.clone(),
                emit_to_joined: p.emit_to_joined,
            });
            if let Some(u) = &n.upstream {
                ns.upstream = Some(upstream(
                    u,
                    file_of(&files, &format!("upstream-{i}-signing-key")),
                    i,
                )?);
            }
            namespaces.push(ns);
        }
        c.socketio.namespaces = namespaces;
    }
    if let Some(v) = spec.connect_timeout {
        c.socketio.connect_timeout = to_u64(v, "connectTimeout")?;
    }
    c.socketio.show_secrets = spec
        .show_secrets
        .iter()
        .map(|s| s.as_str().to_string())
        .collect();
    if let Some(v) = spec.ack_timeout {
        c.socketio.ack_timeout = to_u64(v, "ackTimeout")?;
    }
    if let Some(r) = &spec.connection_state_recovery {
        let c = &mut c.socketio.connection_state_recovery;
        c.enabled = r.enabled.unwrap_or(true);
        if let Some(v) = r.max_disconnection_duration {
            c.max_disconnection_duration =
                to_u64(v, "connectionStateRecovery.maxDisconnectionDuration")?;
        }
        if let Some(v) = r.skip_middlewares {
            c.skip_middlewares = v;
        }
        for (value, field, at) in [
            (
                r.max_packets_per_session,
                "maxPacketsPerSession",
                &mut c.max_packets_per_session,
            ),
            (
                r.max_bytes_per_session,
                "maxBytesPerSession",
                &mut c.max_bytes_per_session,
            ),
            (
                r.max_buffer_bytes,
                "maxBufferBytes",
                &mut c.max_buffer_bytes,
            ),
            (r.max_sessions, "maxSessions", &mut c.max_sessions),
        ] {
            if let Some(v) = value {
                *at = to_usize(v, &format!("connectionStateRecovery.{field}"))?;
            }
        }
    }

    if let Some(a) = &spec.auth {
        c.auth.mode = AuthMode::Jwt;
        let j = &mut c.auth.jwt;
        j.algorithms = if !a.algorithms.is_empty() {
            a.algorithms.iter().map(|x| format!("{x:?}")).collect()
        } else if a.secret_ref.is_some() {
            vec!["HS256".to_string()]
        } else {
            vec!["RS256".to_string(), "ES256".to_string()]
        };
        if let Some(path) = file_of(&files, "auth-key") {
            if j.algorithms.iter().any(|x| x == "HS256") {
                j.hs256_secret_file = Some(path);
            } else {
                j.public_key_files = vec![path];
            }
        }
        j.jwks_url = a.jwks_url.clone();
        j.issuer = a.issuer.clone();
        j.audience = a.audience.clone();
        j.disconnect_on_expiry = a.disconnect_on_expiry.unwrap_or(false);
        j.allow_insecure_jwks_url = a.allow_insecure_jwks_url.unwrap_or(false);
        if let Some(l) = a.leeway {
            j.leeway = to_u64(l, "auth.leeway")?;
        }
    }

    c.management.listen = Some(SocketAddr::from(([0, 0, 0, 0], MANAGEMENT_PORT as u16)));
    c.management.token_file = file_of(&files, "management-token");

    if let Some(a) = spec.enabled_app_link() {
        // A wildcard address: each app instance is told the IP it reached the pod at, and
        // peers the IP of the pod's peer connection, so no per-pod advertiseAddress.
        let port = u16::try_from(a.port)
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| {
                Error::InvalidHub(format!("appLink.port is out of range: {}", a.port))
            })?;
        let mut link = AppLinkConfig {
            listen: Some(SocketAddr::from(([0, 0, 0, 0], port))),
            token_file: file_of(&files, APP_LINK_TOKEN_FILE),
            ..AppLinkConfig::default()
        };
        for (value, field, at) in [
            (
                a.max_batch_bytes,
                "maxBatchBytes",
                &mut link.max_batch_bytes,
            ),
            (
                a.max_queued_bytes,
                "maxQueuedBytes",
                &mut link.max_queued_bytes,
            ),
            (
                a.max_queued_bytes_per_session,
                "maxQueuedBytesPerSession",
                &mut link.max_queued_bytes_per_session,
            ),
            (
                a.max_sessions_per_link,
                "maxSessionsPerLink",
                &mut link.max_sessions_per_link,
            ),
            (
                a.max_pending_requests,
                "maxPendingRequests",
                &mut link.max_pending_requests,
            ),
        ] {
            if let Some(v) = value {
                *at = to_usize(v, &format!("appLink.{field}"))?;
            }
        }
        if let Some(v) = a.keepalive_interval {
            link.keepalive_interval = to_u64(v, "appLink.keepaliveInterval")?;
        }
        c.app_link = link;
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
        set(
            &mut lim.max_upstream_concurrency,
            l.max_upstream_concurrency,
            "limits.maxUpstreamConcurrency",
        )?;
        for (dst, v, field) in [
            (
                &mut lim.max_namespace_name_bytes,
                l.max_namespace_name_bytes,
                "limits.maxNamespaceNameBytes",
            ),
            (
                &mut lim.max_dynamic_namespaces,
                l.max_dynamic_namespaces,
                "limits.maxDynamicNamespaces",
            ),
            (
                &mut lim.max_room_name_bytes,
                l.max_room_name_bytes,
                "limits.maxRoomNameBytes",
            ),
            (
                &mut lim.max_auth_bytes,
                l.max_auth_bytes,
                "limits.maxAuthBytes",
            ),
            (
                &mut lim.max_handshake_header_bytes,
                l.max_handshake_header_bytes,
                "limits.maxHandshakeHeaderBytes",
            ),
            (
                &mut lim.max_upstream_queue_bytes,
                l.max_upstream_queue_bytes,
                "limits.maxUpstreamQueueBytes",
            ),
            (
                &mut lim.max_upstream_answer_bytes,
                l.max_upstream_answer_bytes,
                "limits.maxUpstreamAnswerBytes",
            ),
            (
                &mut lim.max_connections_per_ip,
                l.max_connections_per_ip,
                "limits.maxConnectionsPerIp",
            ),
        ] {
            set(dst, v, field)?;
        }
    }
    Ok(c)
}

/// An upstream, starting from the data plane's own defaults for what the spec leaves unset.
fn upstream(u: &UpstreamSpec, secret_file: Option<PathBuf>, i: usize) -> Result<UpstreamConfig> {
    let mut up: UpstreamConfig = serde_json::from_value(serde_json::json!({ "url": u.url }))
        .map_err(|e| Error::Render(format!("namespaces[{i}].upstream: {e}")))?;
    if !u.events.is_empty() {
        up.events = u
            .events
            .iter()
            .map(|e| match e {
                UpstreamEvent::Connect => "connect",
                UpstreamEvent::Event => "event",
                UpstreamEvent::Disconnect => "disconnect",
                UpstreamEvent::Reconnect => "reconnect",
            })
            .map(str::to_string)
            .collect();
    }
    if let Some(t) = u.timeout {
        up.timeout = to_u64(t, "upstream.timeout")?;
    }
    if let Some(r) = u.disconnect_retries {
        up.disconnect_retries = u32::try_from(r).map_err(|_| {
            Error::InvalidHub(format!(
                "namespaces[{i}].upstream.disconnectRetries must not be negative"
            ))
        })?;
    }
    up.secret_file = secret_file;
    Ok(up)
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
    hash_entries(
        cm.data
            .iter()
            .flatten()
            .map(|(k, v)| (k.as_bytes(), v.as_bytes())),
    )
}

/// Hash of (name, value) entries in the given order, each length-prefixed so that no two
/// different lists of entries hash alike: 32 hex digits (128 bits of SHA-256).
pub fn hash_entries<'a>(entries: impl IntoIterator<Item = (&'a [u8], &'a [u8])>) -> String {
    let mut h = Sha256::new();
    for (k, v) in entries {
        h.update((k.len() as u64).to_le_bytes());
        h.update(k);
        h.update((v.len() as u64).to_le_bytes());
        h.update(v);
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
