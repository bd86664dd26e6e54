//! A TCP stream with the bytes already read from it put back in front.
//!
//! The direct WebSocket path ([`super::direct`]) reads a request's head before it knows
//! whether it can answer it; when it cannot, hyper serves the connection, and must see
//! the request from its first byte. [`Rewind`] replays what was read, then reads on.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// A stream that yields `ahead[pos..]` before anything more from the socket.
#[derive(Debug)]
pub struct Rewind {
    ahead: Vec<u8>,
    pos: usize,
    stream: TcpStream,
}

impl Rewind {
    /// `ahead` is what was read from `stream` and not consumed.
    pub fn new(stream: TcpStream, ahead: Vec<u8>) -> Self {
        Self {
            ahead,
            pos: 0,
            stream,
        }
    }

    /// The socket and what was read ahead and not replayed yet.
    pub fn into_parts(mut self) -> (TcpStream, Vec<u8>) {
        let rest = self.ahead.split_off(self.pos.min(self.ahead.len()));
        (self.stream, rest)
    }
}

impl AsyncRead for Rewind {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let rest = this.ahead.get(this.pos..).unwrap_or_default();
        if rest.is_empty() {
            return Pin::new(&mut this.stream).poll_read(cx, buf);
        }
        let n = rest.len().min(buf.remaining());
        buf.put_slice(&rest[..n]);
        this.pos += n;
        if this.pos == this.ahead.len() {
            // Replayed: let go of the buffer (it may be a whole request head).
            this.ahead = Vec::new();
            this.pos = 0;
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Rewind {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn pair() -> (TcpStream, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap());
        let (accepted, client) = tokio::join!(listener.accept(), client);
        (client.unwrap(), accepted.unwrap().0)
    }

    #[tokio::test]
    async fn replays_what_was_read_then_reads_on() {
        let (mut client, server) = pair().await;
        client.write_all(b" world").await.unwrap();
        let mut io = Rewind::new(server, b"hello".to_vec());
        let mut small = [0u8; 3];
        io.read_exact(&mut small).await.unwrap();
        assert_eq!(&small, b"hel");
        let mut rest = [0u8; 8];
        io.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"lo world");
        io.write_all(b"back").await.unwrap();
        let mut back = [0u8; 4];
        client.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"back");
    }

    #[tokio::test]
    async fn into_parts_keeps_what_was_not_replayed() {
        let (_client, server) = pair().await;
        let mut io = Rewind::new(server, b"abcdef".to_vec());
        let mut two = [0u8; 2];
        io.read_exact(&mut two).await.unwrap();
        let (_, rest) = io.into_parts();
        assert_eq!(rest, b"cdef");
    }
}
