//! Assembles a hub node from its configuration: the authenticator, the application handler
//! (relay, webhooks, policies) and the management API beside the client endpoint.

use std::sync::Arc;

use crate::auth::{Authenticator, NoAuth};
use crate::config::{AuthMode, Config};
use crate::ops::{HubOps, LocalOps};
use crate::relay::Relay;
use crate::server::Server;
use crate::socketio::Handler;

/// A node ready to serve.
pub struct Node {
    pub config: Config,
    pub server: Server,
    pub ops: Arc<dyn HubOps>,
}

/// The authenticator the configuration asks for.
pub async fn authenticator(config: &Config) -> anyhow::Result<Arc<dyn Authenticator>> {
    match config.auth.mode {
        AuthMode::None => Ok(Arc::new(NoAuth)),
        AuthMode::Jwt => anyhow::bail!("auth.mode jwt is not available in this build yet"),
    }
}

/// The application handler the configuration asks for.
pub fn handler(_config: &Config) -> Arc<dyn Handler> {
    Arc::new(Relay)
}

/// Builds the node: server, hub and the operations the management API drives.
pub async fn build(config: Config) -> anyhow::Result<Node> {
    let auth = authenticator(&config).await?;
    let server = Server::with_auth(config.clone(), handler(&config), auth);
    let Some(hub) = server.hub().cloned() else {
        anyhow::bail!("a hub node needs the Socket.IO layer");
    };
    let engine = server.engine().clone();
    let ops: Arc<dyn HubOps> =
        Arc::new(LocalOps::new(hub, Arc::new(move || engine.session_count())));
    Ok(Node {
        config,
        server,
        ops,
    })
}
