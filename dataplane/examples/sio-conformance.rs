//! The reference test server of the socket.io-protocol spec ("Test suite" section),
//! served by Roomcast on localhost:3000 so the official suite can run against it.

use std::sync::Arc;

use roomcast_dataplane::config::Config;
use roomcast_dataplane::server::Server;
use roomcast_dataplane::socketio::{Event, Handler, Payload, Socket};

struct Conformance;

impl Handler for Conformance {
    fn connected(&self, socket: &Arc<Socket>) {
        // The suite's client reads the CONNECT answer, then starts listening for the next
        // message; when both arrive in one TCP read (loopback, two writes microseconds
        // apart) it misses the second. The server flushes CONNECT on its own; this short
        // pause keeps the two in separate reads, as the Node reference's timing does.
        let socket = socket.clone();
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            let _ = socket.emit("auth", &Payload::new(vec![socket.auth().clone()]));
        });
    }

    fn event(&self, socket: &Arc<Socket>, event: Event) {
        if socket.nsp() != "/" {
            return;
        }
        match event.name.as_str() {
            "message" => {
                let _ = socket.emit("message-back", &event.payload);
            }
            "message-with-ack" => {
                if let Some(ack) = event.ack {
                    ack.send(event.payload);
                }
            }
            _ => {}
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut config = Config {
        listen: ([127, 0, 0, 1], 3000).into(),
        ..Config::default()
    };
    config.engine.ping_interval = 300;
    config.engine.ping_timeout = 200;
    config.engine.max_http_buffer_size = 1_000_000;
    config.socketio.connect_timeout = 1000;
    config.socketio.namespaces = vec!["/".into(), "/custom".into()];
    let server = Server::new(config.clone(), Arc::new(Conformance));
    roomcast_dataplane::cli::serve(server, config.listen, &config.engine.path).await
}
