//! Assembles a hub node from its configuration: the authenticator, the application handler
//! (relay, webhooks, policies), the management API and the metrics listener beside the client
//! endpoint.

use std::sync::Arc;

use crate::app::handler::HubApp;
use crate::applink::AppLinks;
use crate::auth::bearer::BearerToken;
use crate::auth::{Authenticator, NoAuth};
use crate::cluster::{Cluster, ClusterOps};
use crate::config::{AuthMode, Config};
use crate::metrics::MetricsSource;
use crate::ops::{HubOps, LocalOps};
use crate::server::Server;
use crate::socketio::Handler;

/// A node ready to serve.
pub struct Node {
    pub config: Config,
    pub server: Server,
    /// The client endpoint's listener, bound before the cluster starts so peers learn
    /// the real address (`listen` may ask for port 0).
    pub listener: tokio::net::TcpListener,
    pub ops: Arc<dyn HubOps>,
    /// What the metrics listener serves, when `metrics.listen` is set.
    pub metrics: MetricsSource,
    /// This node's peer links, when the configuration names a cluster.
    pub cluster: Option<Cluster>,
    /// The app links and their listener's address, with `appLink.listen` set.
    pub app_links: Option<(Arc<AppLinks>, std::net::SocketAddr)>,
}

/// The authenticator the configuration asks for.
pub async fn authenticator(config: &Config) -> anyhow::Result<Arc<dyn Authenticator>> {
    for warning in config.auth.warnings() {
        tracing::warn!("{warning}");
    }
    match config.auth.mode {
        AuthMode::None => Ok(Arc::new(NoAuth)),
        AuthMode::Jwt => Ok(Arc::new(
            crate::auth::JwtAuthenticator::new(&config.auth.jwt).await?,
        )),
    }
}

/// The application handler the configuration asks for.
pub fn handler(config: &Config) -> anyhow::Result<Arc<HubApp>> {
    Ok(Arc::new(HubApp::new(config)?))
}

/// Builds the node: server, hub and the operations the management API drives.
pub async fn build(config: Config) -> anyhow::Result<Node> {
    let auth = authenticator(&config).await?;
    let app = handler(&config)?;
    let upstream = app.stats.clone();
    // With app links, the engine hands every session to an application instance.
    let (server, links) = if config.app_link.enabled() {
        let hub =
            crate::socketio::Hub::new(Arc::new(config.clone()), app as Arc<dyn Handler>, auth);
        let links = AppLinks::new(&config, hub.clone());
        (Server::with_hub(&config, hub, links.clone()), Some(links))
    } else {
        let server = Server::with_auth(config.clone(), app as Arc<dyn Handler>, auth);
        (server, None)
    };
    let Some(hub) = server.hub().cloned() else {
        anyhow::bail!("a hub node needs the Socket.IO layer");
    };
    let engine = server.engine().clone();
    let listener = crate::cluster::listen::bind_client(config.listen, engine.settings.defer_accept)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.listen))?;
    let client_addr = listener.local_addr()?;
    // Bound before the cluster starts, so peers learn where this node takes app links.
    let app_listener = match (links, config.app_link.listen) {
        (Some(links), Some(listen)) => {
            let token = BearerToken::from_config(
                config.app_link.token.as_deref(),
                config.app_link.token_file.as_deref(),
                "appLink",
            )?;
            let (listener, addr) = crate::applink::service::bind(listen).await?;
            Some((links, listener, addr, token))
        }
        _ => None,
    };
    let app_addr = app_listener
        .as_ref()
        .map(|(_, _, addr, _)| config.app_link.advertise_address.unwrap_or(*addr));
    // The peer listener is bound here, so a taken address fails the start like the others.
    let cluster = Cluster::start(&config, &hub, &engine, client_addr, app_addr).await?;
    // App links are served with the peer port's TLS material, once it is loaded.
    let app_links = match app_listener {
        Some((links, listener, addr, token)) => {
            let tls = match cluster.as_ref().and_then(|c| c.mesh().peer_tls()) {
                _ if config.app_link.plaintext => None,
                Some(tls) => Some(tls),
                None => anyhow::bail!(
                    "appLink: TLS needs this node's peer certificate (cluster.peerListen and cluster.tls), or set appLink.plaintext: true"
                ),
            };
            crate::applink::service::serve(links.clone(), listener, token, tls);
            Some((links, addr))
        }
        None => None,
    };
    let metrics = MetricsSource {
        engine: engine.clone(),
        hub: hub.clone(),
        upstream: Some(upstream),
        cluster: cluster.as_ref().map(|c| c.mesh().clone()),
        discovery: cluster.as_ref().and_then(Cluster::discovery_stats),
        ownership: cluster.as_ref().and_then(|c| c.rooms().owned().cloned()),
        app_links: app_links.as_ref().map(|(links, _)| links.clone()),
    };
    let local = LocalOps::new(hub.clone(), Arc::new(move || engine.session_count()));
    let ops: Arc<dyn HubOps> = match &cluster {
        Some(cluster) => Arc::new(ClusterOps::new(
            local,
            hub,
            cluster.mesh().clone(),
            cluster.rooms().clone(),
        )),
        None => Arc::new(local),
    };
    if let (Some((links, _)), Some(addr)) = (&app_links, app_addr) {
        links.set_ops(ops.clone());
        // A wildcard IP is replaced, for each link, by the IP its instance reached this node at.
        links.set_address(addr);
        if let Some(cluster) = &cluster {
            links.set_mesh(cluster.mesh().clone());
        }
        links.watch_members();
    }
    Ok(Node {
        config,
        server,
        listener,
        ops,
        metrics,
        cluster,
        app_links,
    })
}

/// Runs the node until SIGTERM/Ctrl-C: the client endpoint on `config.listen` and, when
/// `management.listen` / `metrics.listen` are set, the management API and the metrics
/// listener on their own. Prints `listening on http://IP:PORT (path P)` on stdout once the
/// client endpoint is bound, then `management listening on http://IP:PORT` for the API, then
/// `metrics listening on http://IP:PORT`, then `peer listening on IP:PORT` for a cluster
/// member's peer endpoint. All stop on the same signal.
pub async fn run(node: Node) -> anyhow::Result<()> {
    let Node {
        config,
        server,
        listener,
        ops,
        metrics,
        cluster,
        app_links,
    } = node;
    // The token file is read before anything listens, so a bad one fails the start.
    let management = match config.management.listen {
        Some(addr) => Some((
            addr,
            crate::api::ManagementApi::from_config(&config.management, ops)?,
        )),
        None => None,
    };
    let addr = listener.local_addr()?;
    let management = match management {
        Some((addr, api)) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| anyhow::anyhow!("cannot listen on {addr} (management.listen): {e}"))?;
            Some((listener.local_addr()?, listener, api))
        }
        None => None,
    };
    let metrics_listener = match config.metrics.listen {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| anyhow::anyhow!("cannot listen on {addr} (metrics.listen): {e}"))?;
            Some((listener.local_addr()?, listener))
        }
        None => None,
    };
    let path = &config.engine.path;
    // Tests and scripts wait for these exact lines, in this order.
    println!("listening on http://{addr} (path {path})");
    tracing::info!(%addr, path, "listening");
    if let Some((addr, _, _)) = &management {
        println!("management listening on http://{addr}");
        tracing::info!(%addr, "management API listening");
    }
    if let Some((addr, _)) = &metrics_listener {
        println!("metrics listening on http://{addr}");
        tracing::info!(%addr, "metrics listening");
    }
    if let Some(cluster) = &cluster {
        println!("peer listening on {}", cluster.peer_addr());
    }
    if let Some((_, addr)) = &app_links {
        println!("app link listening on {addr}");
        tracing::info!(%addr, "app links listening");
    }

    // The management API keeps serving while the client endpoint drains (the app may still
    // call it), and stops after.
    let (api_stop, api_stopped) = tokio::sync::oneshot::channel::<()>();
    let management = management.map(|(_, listener, api)| {
        tokio::spawn(api.serve(listener, async {
            let _ = api_stopped.await;
        }))
    });
    // The metrics listener serves through the drain too: the kubelet's readiness probe must
    // see `/readyz` fail there.
    let (metrics_stop, metrics_stopped) = tokio::sync::oneshot::channel::<()>();
    let metrics_task = metrics_listener.map(|(_, listener)| {
        let header_read_timeout =
            std::time::Duration::from_millis(config.metrics.header_read_timeout);
        tokio::spawn(crate::metrics::serve(
            metrics,
            listener,
            header_read_timeout,
            async {
                let _ = metrics_stopped.await;
            },
        ))
    });
    let hub = server.hub().cloned();
    // On a worker, not in `block_on`'s thread: the accept loop then runs beside the
    // connections it spawns, with no wake-up and context switch between two threads per
    // batch of accepts (on one CPU, 5 % of a handshake's samples were context switches).
    tokio::spawn(server.run(listener, crate::server::shutdown_signal()))
        .await
        .map_err(|e| anyhow::anyhow!("the client endpoint's task failed: {e}"))??;
    // Every client session is closed (parked, with recovery on): hand them to live peers,
    // where their clients will find them, before leaving the cluster.
    if let (Some(cluster), Some(hub)) = (&cluster, &hub) {
        if let Some(recovery) = hub.recovery() {
            crate::cluster::handover::hand_over_all(hub, cluster.mesh()).await;
            // Sessions that reconnecting clients' nodes are taking from this one right now:
            // their answers must be queued before the links close (which send what is
            // queued); a moment for the tasks that queue them.
            recovery
                .hand_overs_done(cluster.mesh().request_timeout() * 2)
                .await;
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
    let _ = api_stop.send(());
    let _ = metrics_stop.send(());
    if let Some(task) = metrics_task {
        if let Err(error) = task.await {
            tracing::warn!(%error, "metrics listener task failed");
        }
    }
    if let Some(task) = management {
        // Calls in flight (e.g. an emit waiting for acks) get a moment to finish.
        match tokio::time::timeout(std::time::Duration::from_secs(5), task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(error))) => tracing::warn!(%error, "management API failed"),
            Ok(Err(error)) => tracing::warn!(%error, "management API task failed"),
            Err(_) => tracing::warn!("management API calls still running at shutdown"),
        }
    }
    if let Some(cluster) = cluster {
        // What the last calls queued for peers (an acknowledged emit's copies, hand-overs'
        // answers) leaves before the links close; a peer that does not confirm within its
        // heartbeat timeout is cut.
        cluster.shutdown(cluster.mesh().request_timeout()).await;
    }
    Ok(())
}
