//! The reference test server of the engine.io-protocol spec ("Test suite" section): an
//! Engine.IO server on localhost:3000 that echoes every message.

use std::sync::Arc;

use roomcast_dataplane::config::Config;
use roomcast_dataplane::engine::session::EchoHandler;
use roomcast_dataplane::engine::{ConnectionFactory, ConnectionHandler, HandshakeInfo, Session};
use roomcast_dataplane::server::Server;

struct Echo;

impl ConnectionFactory for Echo {
    fn open(
        &self,
        session: &Arc<Session>,
        _handshake: HandshakeInfo,
    ) -> Arc<dyn ConnectionHandler> {
        Arc::new(EchoHandler {
            session: Arc::downgrade(session),
        })
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut config = Config {
        listen: ([127, 0, 0, 1], 3000).into(),
        ..Config::default()
    };
    config.engine.path = "/engine.io/".into();
    config.engine.ping_interval = 300;
    config.engine.ping_timeout = 200;
    config.engine.max_http_buffer_size = 1_000_000;
    let server = Server::engine_only(&config, Arc::new(Echo));
    roomcast_dataplane::cli::serve(server, config.listen, &config.engine.path).await
}
