//! One WebSocket connection's socket: reading messages, writing frames, and the direct
//! writer a broadcast uses (see `outbox`). Framing is in `wsframe`.
//!
//! The TCP stream is shared (`Arc`): the transport task reads and writes what was queued,
//! and the session's outbox writes frames at once through [`DirectSink`] when the
//! transport is idle. The outbox lock orders the two, so frames never interleave.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Read};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::Interest;
use tokio::net::TcpStream;

use super::outbox::{Frame, FrameSink, SinkWrite};
use super::scratch;
use super::stats::EngineStats;
use super::wsframe::{self, Decoder, WsError, WsMessage, MAX_HEADER};

/// Bytes read per `read` call, on the stack of a synchronous function: an idle connection
/// holds no read buffer.
const READ_CHUNK: usize = 8 * 1024;
/// At most this much is read per wake-up, so that one busy client cannot hold the thread.
const READ_BUDGET: usize = 64 * 1024;

/// Why reading stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Protocol(#[from] WsError),
    #[error("websocket read failed: {0}")]
    Io(#[from] io::Error),
}

#[derive(Debug)]
pub struct WsConn {
    stream: Arc<TcpStream>,
    decoder: Decoder,
    inbox: VecDeque<WsMessage>,
    /// A read error, reported after the messages decoded before it.
    failed: Option<ReadError>,
    eof: bool,
}

impl WsConn {
    /// `early` holds bytes the client sent right behind its upgrade request.
    pub fn new(stream: TcpStream, early: &[u8], max_message: usize) -> Self {
        let mut conn = WsConn {
            stream: Arc::new(stream),
            decoder: Decoder::new(max_message),
            inbox: VecDeque::new(),
            failed: None,
            eof: false,
        };
        if !early.is_empty() {
            conn.decode(&mut early.to_vec());
        }
        conn
    }

    /// The writer for the session's outbox.
    pub fn sink(&self, stats: Arc<EngineStats>) -> Arc<dyn FrameSink> {
        Arc::new(DirectSink {
            stream: self.stream.clone(),
            stats,
        })
    }

    /// The next message; `None` once the client has closed the TCP stream. Cancel-safe:
    /// nothing is lost if the future is dropped.
    pub async fn next(&mut self) -> Option<Result<WsMessage, ReadError>> {
        std::future::poll_fn(|cx| self.poll_next(cx)).await
    }

    /// [`WsConn::next`] as a poll. It waits in the stream's own reader slot
    /// (`poll_read_ready`), not in a waiter node of the future: the idle transport task,
    /// one per connection, is 170 bytes smaller than with `readable().await`.
    pub fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<WsMessage, ReadError>>> {
        loop {
            if let Some(next) = self.try_next() {
                return Poll::Ready(Some(next));
            }
            if self.eof {
                return Poll::Ready(None);
            }
            match self.stream.poll_read_ready(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(error)) => self.failed = Some(error.into()),
                Poll::Ready(Ok(())) => self.read_now(),
            }
        }
    }

    /// The next message already read, if any; never waits.
    pub fn try_next(&mut self) -> Option<Result<WsMessage, ReadError>> {
        match self.inbox.pop_front() {
            Some(msg) => Some(Ok(msg)),
            None => {
                // Drained: an idle connection keeps no inbox (160 bytes each otherwise).
                if self.inbox.capacity() > 0 {
                    self.inbox = VecDeque::new();
                }
                self.failed.take().map(|error| {
                    self.eof = true;
                    Err(error)
                })
            }
        }
    }

    /// Reads what the socket has, without waiting, and decodes it.
    fn read_now(&mut self) {
        scratch::with_read(READ_CHUNK, |chunk| {
            let mut budget = READ_BUDGET;
            while budget > 0 && self.failed.is_none() {
                match read_draining(&self.stream, chunk) {
                    Ok(0) => {
                        self.eof = true;
                        return;
                    }
                    Ok(n) => {
                        budget = budget.saturating_sub(n);
                        // Only the `n` bytes just read are looked at.
                        self.decode(chunk.get_mut(..n).unwrap_or_default());
                        if n < chunk.len() {
                            return;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => self.failed = Some(e.into()),
                }
            }
        })
    }

    fn decode(&mut self, bytes: &mut [u8]) {
        if let Err(error) = self.decoder.decode(bytes, &mut self.inbox) {
            self.failed = Some(error.into());
        }
    }

    /// Writes all of `bytes`, waiting for the socket as needed.
    pub async fn write_all(&self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            self.stream.writable().await?;
            match self.stream.try_write(bytes) {
                Ok(n) => bytes = &bytes[n..],
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Writes one text message.
    pub async fn send_text(&self, text: &str) -> io::Result<()> {
        let mut out = Vec::new();
        wsframe::encode_frame(wsframe::OP_TEXT, text.as_bytes(), &mut out);
        self.write_all(&out).await
    }

    /// Sends a close frame if the socket takes it at once, shuts the write side down, then
    /// reads and discards until the client closes too, for at most [`CLOSE_LINGER`]. Dropping
    /// a socket with unread input would reset it, and the client could lose the close frame.
    pub async fn close(self, code: u16) {
        let _ = self.stream.try_write(&wsframe::close_frame(code));
        // `TcpStream::shutdown` needs `&mut`; the stream is shared with the outbox's sink.
        let _ = socket2::SockRef::from(&*self.stream).shutdown(std::net::Shutdown::Write);
        let drain = async {
            let mut chunk = [0u8; 1024];
            loop {
                if self.stream.readable().await.is_err() {
                    return;
                }
                match self.stream.try_read(&mut chunk) {
                    Ok(0) => return,
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) => return,
                }
            }
        };
        let _ = tokio::time::timeout(CLOSE_LINGER, drain).await;
    }
}

/// Reads what `stream` has into `buf`. A read that does not fill `buf` has drained the
/// socket, so the stream's read readiness is cleared then, as tokio's own `poll_read` does on
/// epoll: otherwise the next wait would return at once and a read would find nothing, one
/// wasted `recvfrom` per message received. Data arriving later raises a new edge, and a
/// closed read side stays ready (tokio never clears "read closed").
fn read_draining(stream: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    let len = buf.len();
    let mut got = 0;
    let result = stream.try_io(Interest::READABLE, || {
        let mut socket: &socket2::Socket = &socket2::SockRef::from(stream);
        got = socket.read(buf)?;
        if cfg!(target_os = "linux") && 0 < got && got < len {
            // `try_io` clears the readiness when its closure reports WouldBlock.
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(got)
    });
    match result {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock && got > 0 => Ok(got),
        other => other,
    }
}

/// How long a closing connection waits for the client's side of the close.
const CLOSE_LINGER: std::time::Duration = std::time::Duration::from_secs(2);

/// The WebSocket opcode and payload of an Engine.IO frame.
fn opcode_and_payload(frame: &Frame) -> (u8, &[u8]) {
    match frame {
        Frame::Text(text) => (wsframe::OP_TEXT, text.as_bytes()),
        Frame::Binary(data) => (wsframe::OP_BINARY, data),
    }
}

/// Appends the wire bytes of one frame to `out`.
pub fn encode_frame(frame: &Frame, out: &mut Vec<u8>) {
    let (opcode, payload) = opcode_and_payload(frame);
    wsframe::encode_frame(opcode, payload, out);
}

/// A single frame up to this size (header included) is copied into one buffer and written
/// with `send`; a larger one goes out as header and payload with `writev`. One buffer
/// through `send` skips the file layer and the vectored path: on the bench VM a 130-byte
/// `writev` cost 4.70 µs of kernel time against 4.25 µs for `send`
/// (`roomcast-bench send-cost`, bench/PROFILE.md). Copying 4 KiB costs far less.
const SEND_COPY_MAX: usize = 4096;

/// Writes frames straight to the socket for a session's outbox.
#[derive(Debug)]
struct DirectSink {
    stream: Arc<TcpStream>,
    stats: Arc<EngineStats>,
}

impl FrameSink for DirectSink {
    fn try_write(&self, frames: &mut dyn ExactSizeIterator<Item = &Frame>) -> SinkWrite {
        let count = frames.len();
        let single = if count == 1 { frames.next() } else { None };
        let mut header = [0; MAX_HEADER];
        let large = single
            .map(opcode_and_payload)
            .and_then(|(opcode, payload)| {
                let n = wsframe::encode_header(opcode, payload.len(), &mut header);
                (n + payload.len() > SEND_COPY_MAX).then_some((n, payload))
            });
        let written = if let Some((n, payload)) = large {
            // Too large to copy: header and payload in one vectored write.
            let slices = [IoSlice::new(&header[..n]), IoSlice::new(payload)];
            self.stream.try_write_vectored(&slices).map(|w| {
                rest_of(w, n + payload.len(), |at| {
                    let mut wire = [&header[..n], payload].concat();
                    wire.drain(..at.min(wire.len()));
                    Bytes::from(wire)
                })
            })
        } else {
            // One frame or a batch: encoded into this thread's buffer, one `send`.
            scratch::with_write(|wire| {
                for frame in single.into_iter().chain(frames) {
                    encode_frame(frame, wire);
                }
                self.stream.try_write(wire).map(|w| {
                    rest_of(w, wire.len(), |at| {
                        Bytes::copy_from_slice(wire.get(at..).unwrap_or_default())
                    })
                })
            })
        };
        match written {
            Ok(result) => {
                if !matches!(result, SinkWrite::Nothing) {
                    self.stats
                        .frames_sent
                        .fetch_add(count as u64, Ordering::Relaxed);
                }
                result
            }
            // WouldBlock, or a failed socket: the transport task finds out and closes.
            Err(_) => SinkWrite::Nothing,
        }
    }
}

/// What is left after `written` of `total` wire bytes went out; `tail(at)` copies the wire
/// bytes from `at` on.
fn rest_of(written: usize, total: usize, tail: impl FnOnce(usize) -> Bytes) -> SinkWrite {
    if written >= total {
        SinkWrite::All
    } else if written == 0 {
        SinkWrite::Nothing
    } else {
        SinkWrite::Rest(tail(written))
    }
}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;

    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    use super::*;

    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (server, client)
    }

    fn read_ready(stream: &TcpStream) -> bool {
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        stream.poll_read_ready(&mut cx).is_ready()
    }

    #[tokio::test]
    async fn a_short_read_clears_readiness_and_later_data_or_the_end_is_still_seen() {
        let (server, mut client) = pair().await;
        let mut buf = [0u8; 64];

        client.write_all(b"hello").await.unwrap();
        poll_fn(|cx| server.poll_read_ready(cx)).await.unwrap();
        assert_eq!(read_draining(&server, &mut buf).unwrap(), 5);
        assert_eq!(&buf[..5], b"hello");
        // Drained: no wake-up is left for a read that would find nothing.
        assert!(!read_ready(&server), "readiness kept after a short read");

        // New data raises readiness again.
        client.write_all(b"again").await.unwrap();
        tokio::time::timeout(
            std::time::Duration::from_secs(5),
            poll_fn(|cx| server.poll_read_ready(cx)),
        )
        .await
        .expect("new data must wake the reader")
        .unwrap();
        assert_eq!(read_draining(&server, &mut buf).unwrap(), 5);

        // Data and the end together: the data first, then the end (0), never a hang.
        client.write_all(b"bye").await.unwrap();
        client.shutdown().await.unwrap();
        drop(client);
        let mut seen = Vec::new();
        let end = tokio::time::timeout(std::time::Duration::from_secs(5), async {
            loop {
                poll_fn(|cx| server.poll_read_ready(cx)).await.unwrap();
                match read_draining(&server, &mut buf) {
                    Ok(0) => return,
                    Ok(n) => seen.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => panic!("{e}"),
                }
            }
        })
        .await;
        assert!(end.is_ok(), "the end of the stream was not seen");
        assert_eq!(seen, b"bye");
    }

    #[tokio::test]
    async fn a_full_read_keeps_readiness_for_the_rest() {
        let (server, mut client) = pair().await;
        client.write_all(&[7u8; 100]).await.unwrap();
        poll_fn(|cx| server.poll_read_ready(cx)).await.unwrap();
        // Wait for all 100 bytes to be queued before reading 64 of them.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let mut buf = [0u8; 64];
        assert_eq!(read_draining(&server, &mut buf).unwrap(), 64);
        assert!(read_ready(&server), "more may be waiting: readiness stays");
        assert_eq!(read_draining(&server, &mut buf).unwrap(), 36);
    }

    fn direct(server: TcpStream) -> DirectSink {
        DirectSink {
            stream: Arc::new(server),
            stats: Arc::new(EngineStats::default()),
        }
    }

    fn wire_of(frames: &[Frame]) -> Vec<u8> {
        let mut wire = Vec::new();
        frames.iter().for_each(|f| encode_frame(f, &mut wire));
        wire
    }

    async fn read_exactly(client: &mut TcpStream, len: usize) -> Vec<u8> {
        use tokio::io::AsyncReadExt;
        let mut got = vec![0u8; len];
        client.read_exact(&mut got).await.unwrap();
        got
    }

    /// Single frames below, at and above the size copied for `send`, and a batch, arrive as
    /// their exact wire bytes.
    #[tokio::test]
    async fn direct_writes_put_the_exact_wire_bytes_on_the_socket() {
        let (server, mut client) = pair().await;
        let sink = direct(server);
        let text = Frame::Text(tokio_tungstenite::tungstenite::Utf8Bytes::from(format!(
            "42[\"tick\",\"{}\"]",
            "x".repeat(120)
        )));
        // A 126..=65535-byte payload has a 4-byte header: 4092 fills the copy exactly.
        let at = Frame::Binary(Bytes::from(vec![1u8; SEND_COPY_MAX - 4]));
        let above = Frame::Binary(Bytes::from(vec![2u8; SEND_COPY_MAX - 3]));
        let big = Frame::Binary(Bytes::from(vec![3u8; 100 * 1024]));
        for frame in [&text, &at, &above, &big] {
            let expected = wire_of(std::slice::from_ref(frame));
            let mut rest = Vec::new();
            match sink.try_write(&mut std::iter::once(frame)) {
                SinkWrite::All => {}
                SinkWrite::Rest(bytes) => rest = bytes.to_vec(),
                SinkWrite::Nothing => panic!("an empty socket took nothing"),
            }
            let head = read_exactly(&mut client, expected.len() - rest.len()).await;
            assert_eq!([head, rest].concat(), expected);
        }
        let batch = [text.clone(), at.clone(), text];
        assert!(matches!(sink.try_write(&mut batch.iter()), SinkWrite::All));
        let expected = wire_of(&batch);
        assert_eq!(read_exactly(&mut client, expected.len()).await, expected);
        assert_eq!(sink.stats.frames_sent.load(Ordering::Relaxed), 7);
    }

    /// When the socket fills mid-frame, what a copied single frame hands back is exactly the
    /// unwritten tail, so the stream stays whole once it is written.
    #[tokio::test]
    async fn a_partly_written_frame_hands_back_its_exact_tail() {
        use tokio::io::AsyncReadExt;
        let (server, mut client) = pair().await;
        socket2::SockRef::from(&server)
            .set_send_buffer_size(4096)
            .unwrap();
        let sink = direct(server);
        let frame = Frame::Binary(Bytes::from(
            (0..3000u32).map(|i| i as u8).collect::<Vec<_>>(),
        ));
        let one = wire_of(std::slice::from_ref(&frame));
        let mut got = Vec::new();
        let mut whole = 0usize;
        let rest = loop {
            match sink.try_write(&mut std::iter::once(&frame)) {
                SinkWrite::All => whole += 1,
                SinkWrite::Rest(rest) => break rest,
                // Full on a frame boundary: take some in and try again.
                SinkWrite::Nothing => {
                    let mut chunk = [0u8; 1000];
                    let n = client.read(&mut chunk).await.unwrap();
                    got.extend_from_slice(&chunk[..n]);
                    sink.stream.writable().await.unwrap();
                }
            }
            assert!(whole < 100_000, "the socket never filled");
        };
        assert!(!rest.is_empty() && rest.len() < one.len());
        let expected = one.repeat(whole + 1);
        let reader = tokio::spawn(async move {
            let tail = read_exactly(&mut client, expected.len() - got.len()).await;
            [got, tail].concat() == expected
        });
        let mut rest = &rest[..];
        while !rest.is_empty() {
            sink.stream.writable().await.unwrap();
            if let Ok(n) = sink.stream.try_write(rest) {
                rest = &rest[n..];
            }
        }
        assert!(reader.await.unwrap());
    }
}
