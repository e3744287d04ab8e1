//! The HTTP request before a WebSocket: read once, so a load balancer's or orchestrator's
//! plain `GET /healthz` on the WebSocket port is answered without an upgrade, and replayed
//! into the WebSocket handshake otherwise.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

/// The longest request head read (tungstenite's own limit is larger; a browser's is ~1 KiB).
const MAX_HEAD: usize = 8 * 1024;

/// Reads until the blank line that ends the request head. What was read past it (a client
/// may pipeline) stays in the returned bytes and is replayed too.
pub(crate) async fn read_head<S: AsyncRead + Unpin>(stream: &mut S) -> io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    loop {
        if head.windows(4).any(|w| w == b"\r\n\r\n") {
            return Ok(head);
        }
        if head.len() >= MAX_HEAD {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "request head over 8 KiB",
            ));
        }
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        head.extend_from_slice(&buf[..n]);
    }
}

/// How a health check is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HealthCheck {
    Get,
    /// `HEAD`: the status line and headers only.
    Head,
}

/// `GET /healthz` or `HEAD /healthz` (a query is allowed) without `Upgrade: websocket`.
pub(crate) fn health_check(head: &[u8]) -> Option<HealthCheck> {
    let text = std::str::from_utf8(head).ok()?;
    let mut lines = text.split("\r\n");
    let mut request = lines.next()?.split(' ');
    let method = match request.next()? {
        "GET" => HealthCheck::Get,
        "HEAD" => HealthCheck::Head,
        _ => return None,
    };
    let target = request.next()?;
    let path = target.split('?').next()?;
    if path != "/healthz" {
        return None;
    }
    let upgrade = lines
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .any(|(name, value)| {
            name.trim().eq_ignore_ascii_case("upgrade")
                && value.trim().eq_ignore_ascii_case("websocket")
        });
    (!upgrade).then_some(method)
}

/// `200 OK`, body `ok`, then the connection closes.
pub(crate) async fn answer_health<S: AsyncWrite + Unpin>(
    stream: &mut S,
    check: HealthCheck,
) -> io::Result<()> {
    let mut reply = String::from(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
    );
    if check == HealthCheck::Get {
        reply.push_str("ok\n");
    }
    stream.write_all(reply.as_bytes()).await?;
    stream.shutdown().await
}

/// A stream that first gives back bytes already read from it.
pub(crate) struct Replay<S> {
    read: Vec<u8>,
    at: usize,
    inner: S,
}

impl<S> Replay<S> {
    pub(crate) fn new(read: Vec<u8>, inner: S) -> Replay<S> {
        Replay { read, at: 0, inner }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Replay<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.at < this.read.len() {
            let n = (this.read.len() - this.at).min(buf.remaining());
            buf.put_slice(&this.read[this.at..this.at + n]);
            this.at += n;
            if this.at == this.read.len() {
                this.read = Vec::new(); // give the memory back for the connection's lifetime
                this.at = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Replay<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_plain_get_or_head_of_healthz_is_a_health_check() {
        let check = |head: &str| health_check(head.as_bytes());
        assert_eq!(
            check("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"),
            Some(HealthCheck::Get)
        );
        assert_eq!(
            check("HEAD /healthz?probe=1 HTTP/1.1\r\n\r\n"),
            Some(HealthCheck::Head)
        );
        assert_eq!(
            check("GET /healthz HTTP/1.1\r\nConnection: Upgrade\r\nupgrade: WebSocket\r\n\r\n"),
            None
        );
        assert_eq!(check("GET / HTTP/1.1\r\n\r\n"), None);
        assert_eq!(check("GET /healthzz HTTP/1.1\r\n\r\n"), None);
        assert_eq!(check("POST /healthz HTTP/1.1\r\n\r\n"), None);
        assert_eq!(check("\u{0}\u{ff}garbage"), None);
    }

    #[tokio::test]
    async fn a_replayed_stream_gives_back_what_was_read_then_the_rest() {
        let (mut client, server) = tokio::io::duplex(64);
        client
            .write_all(b"GET / HTTP/1.1\r\n\r\nafter")
            .await
            .unwrap();
        drop(client);
        let mut server = server;
        let head = read_head(&mut server).await.unwrap();
        let mut replay = Replay::new(head, server);
        let mut all = String::new();
        replay.read_to_string(&mut all).await.unwrap();
        assert_eq!(all, "GET / HTTP/1.1\r\n\r\nafter");
    }

    #[tokio::test]
    async fn a_head_without_end_is_refused_past_8_kib() {
        let (mut client, mut server) = tokio::io::duplex(64 * 1024);
        client.write_all(&[b'a'; 9000]).await.unwrap();
        let e = read_head(&mut server).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    }
}
