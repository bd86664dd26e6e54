//! `roomcast-dataplane`: a Roomcast hub node.

use std::sync::Arc;

use clap::Parser;
use roomcast_dataplane::cli::HubArgs;
use roomcast_dataplane::config::Config;
use roomcast_dataplane::relay::Relay;
use roomcast_dataplane::server::Server;

/// A Roomcast hub node: a Socket.IO endpoint that stock clients use unchanged.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(flatten)]
    hub: HubArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    cli.hub.init_logging();
    // The embedded default: every namespace open, the relay app so clients can chat at once.
    let mut config = Config::default();
    config.socketio.namespaces = vec!["*".to_string()];
    let config = cli.hub.resolve(config)?;
    let server = Server::new(config.clone(), Arc::new(Relay));
    roomcast_dataplane::cli::serve(server, config.listen, &config.engine.path).await
}
