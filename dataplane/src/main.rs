//! `roomcast-dataplane`: a Roomcast hub node.

#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

use clap::{Parser, Subcommand};
use roomcast_dataplane::cli::certs::CertsCommand;
use roomcast_dataplane::cli::HubArgs;
use roomcast_dataplane::config::{Config, NamespaceConfig, PolicyConfig};

/// A Roomcast hub node: a Socket.IO endpoint that stock clients use unchanged.
#[derive(Debug, Parser)]
#[command(version, about, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(flatten)]
    hub: HubArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Certificates for mutual TLS between cluster members (cluster.tls).
    #[command(subcommand)]
    Certs(CertsCommand),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(Command::Certs(command)) = &cli.command {
        return roomcast_dataplane::cli::certs::run(command);
    }
    cli.hub.init_logging();
    // The embedded default: every namespace open, with the development relay and client
    // room policies on, so clients can chat at once with no backend.
    let mut config = Config::default();
    config.socketio.namespaces = vec![NamespaceConfig {
        relay: true,
        policies: Some(PolicyConfig {
            join: vec!["*".into()],
            emit: Vec::new(),
            emit_to_joined: true,
        }),
        ..NamespaceConfig::from("*")
    }];
    let config = cli.hub.resolve(config)?;
    let node = roomcast_dataplane::node::build(config).await?;
    roomcast_dataplane::node::run(node).await
}
