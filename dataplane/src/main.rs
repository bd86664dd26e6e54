//! `roomcast-dataplane`: a Roomcast hub node.

use clap::Parser;
use roomcast_dataplane::cli::HubArgs;
use roomcast_dataplane::config::Config;

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
    config.socketio.namespaces = vec!["*".into()];
    let config = cli.hub.resolve(config)?;
    let node = roomcast_dataplane::app::build(config).await?;
    roomcast_dataplane::cli::serve(node.server, node.config.listen, &node.config.engine.path).await
}
