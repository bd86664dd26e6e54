//! A minimal Engine.IO v4 / Socket.IO v5 client over a raw WebSocket.
//!
//! Only what the benchmarks need: the WebSocket-only handshake (`0{...}` open packet,
//! `40` namespace connect, `40{"sid":...}` answer), heartbeats (`2` answered with `3`),
//! text events (`42[...]`) and acks (`43[...]`). Everything is plain text, so frames are
//! built with `format!` and inspected by prefix, which keeps the generator cheap.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::{bail, Context};
use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;

use crate::target::Target;

/// The WebSocket carrying one Engine.IO session.
pub type Ws = WebSocketStream<TcpStream>;

/// One connected Socket.IO socket (one Engine.IO session, one namespace).
pub struct Conn {
    /// The WebSocket.
    pub ws: Ws,
    /// Server ping interval announced in the open packet.
    pub ping_interval: Duration,
    /// Namespace prefix used in packets (`""` for `/`, `"/chat,"` otherwise).
    pub ns_prefix: String,
    /// Pings answered during the handshake.
    pub pings: u64,
    /// The server's CONNECT answer.
    pub answer: ConnectAnswer,
}

/// The Socket.IO CONNECT answer `{sid, pid?}`: `pid` (the private session id) is there when
/// the server has connection state recovery on.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct ConnectAnswer {
    pub sid: String,
    #[serde(default)]
    pub pid: Option<String>,
}

/// A text frame as the benchmarks see it.
pub enum Frame {
    /// Engine.IO ping (`2`): the caller must answer with [`Conn::pong`].
    Ping,
    /// Socket.IO EVENT (`42...`): the frame and the offset of the text after the packet type
    /// and namespace prefix (starting at `[` or the ack id). Kept as the received buffer, so
    /// that receiving an event allocates nothing.
    Event(Utf8Bytes, usize),
    /// Socket.IO ACK (`43...`), same layout.
    Ack(Utf8Bytes, usize),
    /// Engine.IO close or Socket.IO disconnect: the session is over.
    Closed,
    /// Anything else (noop, other packet types): ignored.
    Other,
}

/// Opens a TCP connection from `local_ip` and performs the full Engine.IO + Socket.IO handshake.
pub async fn connect(target: &Target, local_ip: IpAddr, timeout: Duration) -> anyhow::Result<Conn> {
    connect_with_auth(target, local_ip, timeout, None).await
}

/// [`connect`] with an `auth` object (JSON) in the Socket.IO CONNECT packet, as a client
/// resuming its session sends `{"pid":..,"offset":..}`.
pub async fn connect_with_auth(
    target: &Target,
    local_ip: IpAddr,
    timeout: Duration,
    auth: Option<&str>,
) -> anyhow::Result<Conn> {
    tokio::time::timeout(timeout, connect_inner(target, local_ip, auth))
        .await
        .context("handshake timed out")?
}

async fn connect_inner(
    target: &Target,
    local_ip: IpAddr,
    auth: Option<&str>,
) -> anyhow::Result<Conn> {
    let socket = match target.addr {
        SocketAddr::V4(_) => TcpSocket::new_v4(),
        SocketAddr::V6(_) => TcpSocket::new_v6(),
    }
    .context("socket")?;
    socket
        .bind(SocketAddr::new(local_ip, 0))
        .with_context(|| format!("bind {local_ip}"))?;
    let stream = socket.connect(target.addr).await.context("tcp connect")?;
    stream.set_nodelay(true).context("nodelay")?;
    // Small read buffer: thousands of idle clients live in one process.
    let config = WebSocketConfig::default().read_buffer_size(4096);
    let (mut ws, _resp) =
        tokio_tungstenite::client_async_with_config(target.ws_url.as_str(), stream, Some(config))
            .await
            .context("websocket upgrade")?;

    // Engine.IO open packet: 0{"sid":"...","upgrades":[],"pingInterval":25000,...}
    let open = next_text(&mut ws).await?;
    let Some(json) = open.strip_prefix('0') else {
        bail!("expected open packet, got {open:?}");
    };
    let open: OpenPacket = serde_json::from_str(json).context("bad open packet")?;
    if open.sid.is_empty() {
        bail!("empty sid in open packet");
    }

    let ns_prefix = if target.namespace == "/" {
        String::new()
    } else {
        format!("{},", target.namespace)
    };
    ws.send(Message::Text(
        format!("40{ns_prefix}{}", auth.unwrap_or_default()).into(),
    ))
    .await
    .context("send connect")?;

    let mut pings = 0;
    let answer = loop {
        let text = next_text(&mut ws).await?;
        if text == "2" {
            ws.send(Message::Text("3".into())).await.context("pong")?;
            pings += 1;
            continue;
        }
        if let Some(rest) = text.strip_prefix("40") {
            let rest = rest.strip_prefix(ns_prefix.as_str()).unwrap_or(rest);
            let c: ConnectAnswer = serde_json::from_str(rest).context("bad connect answer")?;
            if c.sid.is_empty() {
                bail!("empty socket id in connect answer");
            }
            break c;
        }
        if text.starts_with("44") {
            bail!("connect error: {text}");
        }
        // Events sent before our connect answer are not expected; ignore anything else.
    };
    Ok(Conn {
        ws,
        ping_interval: Duration::from_millis(open.ping_interval),
        ns_prefix,
        pings,
        answer,
    })
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct OpenPacket {
    sid: String,
    ping_interval: u64,
}

async fn next_text(ws: &mut Ws) -> anyhow::Result<String> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => return Ok(t.as_str().to_owned()),
            Some(Ok(Message::Close(_))) | None => bail!("closed during handshake"),
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(e).context("read during handshake"),
        }
    }
}

impl Conn {
    /// Reads the next frame; `Err` on transport errors.
    pub async fn next_frame(&mut self) -> anyhow::Result<Frame> {
        loop {
            let msg = match self.ws.next().await {
                Some(Ok(m)) => m,
                Some(Err(e)) => return Err(e).context("read"),
                None => return Ok(Frame::Closed),
            };
            let text = match msg {
                Message::Text(t) => t,
                Message::Close(_) => return Ok(Frame::Closed),
                _ => continue,
            };
            let frame = match classify(text.as_str(), &self.ns_prefix) {
                Kind::Ping => Frame::Ping,
                Kind::Closed => Frame::Closed,
                Kind::Event(start) => Frame::Event(text, start),
                Kind::Ack(start) => Frame::Ack(text, start),
                Kind::Other => Frame::Other,
            };
            return Ok(frame);
        }
    }

    /// Answers an Engine.IO ping.
    pub async fn pong(&mut self) -> anyhow::Result<()> {
        self.ws
            .send(Message::Text("3".into()))
            .await
            .context("pong")
    }

    /// Sends a Socket.IO EVENT; `args_json` is the JSON array `["name",...]`;
    /// `ack_id` requests an ack.
    pub async fn emit(&mut self, args_json: &str, ack_id: Option<u64>) -> anyhow::Result<()> {
        let frame = match ack_id {
            Some(id) => format!("42{}{id}{args_json}", self.ns_prefix),
            None => format!("42{}{args_json}", self.ns_prefix),
        };
        self.ws
            .send(Message::Text(frame.into()))
            .await
            .context("emit")
    }

    /// Emits with an ack and waits up to `wait` for it (answering pings meanwhile; other
    /// events are dropped). `Ok(false)` when the ack did not come in time.
    pub async fn emit_and_wait_ack(
        &mut self,
        args_json: &str,
        ack_id: u64,
        wait: Duration,
    ) -> anyhow::Result<bool> {
        self.emit(args_json, Some(ack_id)).await?;
        let want = ack_id.to_string();
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let frame = match tokio::time::timeout_at(deadline, self.next_frame()).await {
                Ok(f) => f?,
                Err(_) => return Ok(false),
            };
            match frame {
                Frame::Ping => self.pong().await?,
                Frame::Ack(text, start)
                    if text.as_str()[start..]
                        .strip_prefix(want.as_str())
                        .is_some_and(|r| r.starts_with('[')) =>
                {
                    return Ok(true)
                }
                Frame::Closed => bail!("closed while waiting for ack {ack_id}"),
                _ => {}
            }
        }
    }

    /// Emits with an ack, re-emitting (with a new ack id) when no ack came within `wait`.
    /// Some servers (socketioxide) run the connect handler after sending the CONNECT answer,
    /// so an event sent right away can reach a socket that has no handler yet and be dropped.
    pub async fn emit_acked_with_retry(
        &mut self,
        args_json: &str,
        tries: u64,
        wait: Duration,
    ) -> anyhow::Result<u64> {
        for id in 1..=tries.max(1) {
            if self.emit_and_wait_ack(args_json, id, wait).await? {
                return Ok(id);
            }
        }
        bail!("no ack after {tries} tries")
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Kind {
    Ping,
    Closed,
    Event(usize),
    Ack(usize),
    Other,
}

/// Classifies a text frame; for events and acks, the offset of the body after the packet type
/// and the namespace prefix.
fn classify(s: &str, ns_prefix: &str) -> Kind {
    match s.as_bytes() {
        [b'2'] => Kind::Ping,
        [b'1', ..] | [b'4', b'1', ..] => Kind::Closed,
        [b'4', kind @ (b'2' | b'3'), ..] => {
            let start = if s[2..].starts_with(ns_prefix) {
                2 + ns_prefix.len()
            } else {
                2
            };
            if *kind == b'2' {
                Kind::Event(start)
            } else {
                Kind::Ack(start)
            }
        }
        _ => Kind::Other,
    }
}

/// JSON-encodes a string (quotes and escapes).
pub fn json_str(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

#[cfg(test)]
mod tests {
    use super::{classify, Kind};

    #[test]
    fn classifies_frames() {
        assert_eq!(classify("2", ""), Kind::Ping);
        assert_eq!(classify("2probe", ""), Kind::Other);
        assert_eq!(classify("1", ""), Kind::Closed);
        assert_eq!(classify("41", ""), Kind::Closed);
        assert_eq!(classify("42[\"message\",1]", ""), Kind::Event(2));
        assert_eq!(classify("42/chat,[\"m\"]", "/chat,"), Kind::Event(8));
        assert_eq!(classify("431[{\"ok\":true}]", ""), Kind::Ack(2));
        assert_eq!(classify("40{\"sid\":\"x\"}", ""), Kind::Other);
        assert_eq!(classify("", ""), Kind::Other);
    }
}
