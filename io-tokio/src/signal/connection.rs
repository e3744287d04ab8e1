//! One client's socket: the handshake (TLS, then WebSocket), then a reader and a writer.
//!
//! The reader hands the server loop one frame at a time and reads the next only once that one
//! was dealt with (delivered into its destination's bounded queue), so a fast sender is read
//! exactly as fast as the server delivers; on top of that it enforces the rate limit and the
//! ping/pong keepalive. The writer drains the connection's [`Outbox`] into the socket.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use rtcmesh::lobby::{ConnectOptions, ConnectionId, MAX_MESSAGE_LEN};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

use super::close;
use super::http;
use super::metrics::Counters;
use super::outbox::{Bounds, Next, Outbox};
use super::rate::{Buckets, RateLimit};

/// The socket-side limits every connection runs with.
#[derive(Debug, Clone)]
pub(crate) struct Limits {
    pub queue: Bounds,
    pub rate: RateLimit,
    pub ping_interval: Duration,
    pub pong_timeout: Duration,
    pub handshake_timeout: Duration,
    pub close_timeout: Duration,
}

/// A frame for the server loop.
#[derive(Debug)]
pub(crate) enum Frame {
    Text(String),
    Binary,
    Oversized,
}

/// What a connection tells the server loop.
#[derive(Debug)]
pub(crate) enum Incoming {
    Opened {
        conn: ConnectionId,
        from: SocketAddr,
        outbox: Arc<Outbox>,
        /// What the request's URL asked for (`?migrate=1`).
        options: ConnectOptions,
        /// It asked for minted TURN credentials (`?turn=1`).
        turn: bool,
    },
    /// A pong arrived (the answer to a keepalive ping or to a host-migration probe).
    Pong {
        conn: ConnectionId,
    },
    /// The permit travels with the frame; the reader reads on once the loop drops it.
    Frame {
        conn: ConnectionId,
        frame: Frame,
        permit: OwnedSemaphorePermit,
    },
    Closed {
        conn: ConnectionId,
    },
}

/// Everything a connection task needs besides its socket.
#[derive(Clone)]
pub(crate) struct Context {
    pub limits: Arc<Limits>,
    pub counters: Arc<Counters>,
    pub server: mpsc::UnboundedSender<Incoming>,
    /// Held until the task ends, so a shutdown can wait for every close frame to go out.
    pub _alive: mpsc::Sender<()>,
}

fn websocket_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE_LEN + 1024))
        .max_frame_size(Some(MAX_MESSAGE_LEN + 1024))
        // Eagerly allocated per connection: small, the frames are small.
        .read_buffer_size(4 * 1024)
        // Every frame is flushed as it is sent; the outbox is the only queue.
        .write_buffer_size(0)
        .max_write_buffer_size(4 * MAX_MESSAGE_LEN)
}

/// Runs the TLS and WebSocket handshakes within the handshake timeout, then the connection.
/// A plain `GET /healthz` (no WebSocket upgrade) is answered `200 ok` and closed instead.
pub(crate) async fn handshake(
    conn: ConnectionId,
    tcp: TcpStream,
    from: SocketAddr,
    tls: Option<tokio_rustls::TlsAcceptor>,
    cx: Context,
) {
    let _ = tcp.set_nodelay(true);
    let deadline = tokio::time::Instant::now() + cx.limits.handshake_timeout;
    match tls {
        Some(acceptor) => match tokio::time::timeout_at(deadline, acceptor.accept(tcp)).await {
            Ok(Ok(stream)) => upgrade(conn, stream, from, deadline, cx).await,
            Ok(Err(e)) => {
                log_tls_failure(from, &e);
                handshake_failed(&cx);
            }
            Err(_) => {
                tracing::debug!(%from, "TLS handshake timed out");
                handshake_failed(&cx);
            }
        },
        None => upgrade(conn, tcp, from, deadline, cx).await,
    }
}

/// A failed TLS handshake is logged at debug (scanners and dropped connections are common),
/// but a client that refuses this server's certificate is worth a warning: clients cannot
/// connect until the certificate is fixed.
fn log_tls_failure(from: SocketAddr, e: &std::io::Error) {
    use rustls::AlertDescription as A;
    let refused = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .is_some_and(|e| {
            matches!(
                e,
                rustls::Error::AlertReceived(
                    A::BadCertificate
                        | A::UnknownCA
                        | A::CertificateUnknown
                        | A::CertificateExpired
                        | A::UnsupportedCertificate
                        | A::CertificateRevoked
                )
            )
        });
    if refused {
        tracing::warn!(%from, error = %e, "TLS handshake failed: the client refused the certificate");
    } else {
        tracing::debug!(%from, error = %e, "TLS handshake failed");
    }
}

fn handshake_failed(cx: &Context) {
    Counters::sub(&cx.counters.handshakes);
    Counters::add(&cx.counters.handshakes_failed, 1);
}

/// Reads the HTTP request (a health check is answered here), then the WebSocket handshake and
/// the connection.
async fn upgrade<S>(
    conn: ConnectionId,
    mut stream: S,
    from: SocketAddr,
    deadline: tokio::time::Instant,
    cx: Context,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let head = match tokio::time::timeout_at(deadline, http::read_head(&mut stream)).await {
        Ok(Ok(head)) => head,
        Ok(Err(e)) => {
            tracing::debug!(conn, %from, error = %e, "no HTTP request");
            return handshake_failed(&cx);
        }
        Err(_) => {
            tracing::debug!(conn, %from, "no HTTP request within the handshake timeout");
            return handshake_failed(&cx);
        }
    };
    if let Some(check) = http::health_check(&head) {
        Counters::sub(&cx.counters.handshakes);
        let _ = tokio::time::timeout_at(deadline, http::answer_health(&mut stream, check)).await;
        return;
    }
    // The request's target (path and query) carries the client's options. (The result type
    // is tungstenite's callback signature, not ours to shrink.)
    let mut target = String::new();
    #[allow(clippy::result_large_err)]
    let read_target = |request: &Request, response: Response| -> Result<Response, ErrorResponse> {
        let uri = request.uri();
        target = uri
            .path_and_query()
            .map_or_else(String::new, |p| p.as_str().to_owned());
        Ok(response)
    };
    let accept = tokio_tungstenite::accept_hdr_async_with_config(
        http::Replay::new(head, stream),
        read_target,
        Some(websocket_config()),
    );
    match tokio::time::timeout_at(deadline, accept).await {
        Ok(Ok(ws)) => {
            Counters::sub(&cx.counters.handshakes);
            tracing::debug!(conn, %from, target, "connection opened");
            let turn = super::turn::wanted(&target);
            run(conn, ws, from, options(&target), turn, cx).await;
            tracing::debug!(conn, %from, "connection closed");
        }
        Ok(Err(e)) => {
            tracing::debug!(conn, %from, error = %e, "WebSocket handshake failed");
            handshake_failed(&cx);
        }
        Err(_) => {
            tracing::debug!(conn, %from, "WebSocket handshake timed out");
            handshake_failed(&cx);
        }
    }
}

fn options(target: &str) -> ConnectOptions {
    ConnectOptions::from_request_target(target)
}

/// Why the reader stopped.
enum ReadEnd {
    /// The client closed or the socket failed: nothing more to send.
    Gone,
    /// The server asked for a close (it is in the outbox).
    ServerClosing,
    /// The client broke a socket-side limit: close it with this.
    Violation(u16, &'static str),
}

async fn run<S>(
    conn: ConnectionId,
    ws: WebSocketStream<S>,
    from: SocketAddr,
    options: ConnectOptions,
    turn: bool,
    cx: Context,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let outbox = Arc::new(Outbox::new(cx.limits.queue));
    let opened = Incoming::Opened {
        conn,
        from,
        outbox: outbox.clone(),
        options,
        turn,
    };
    if cx.server.send(opened).is_err() {
        return;
    }
    let (mut sink, mut stream) = ws.split();
    let end = {
        let reader = read(conn, &mut stream, &outbox, &cx);
        let writer = write(&mut sink, &outbox, &cx);
        tokio::pin!(reader, writer);
        let end = tokio::select! {
            end = &mut reader => Some(end),
            () = &mut writer => None,
        };
        match end {
            Some(ReadEnd::Violation(code, reason)) => {
                cx.counters.closed(code, reason);
                outbox.close(code, reason);
                writer.await;
            }
            Some(ReadEnd::ServerClosing) => writer.await,
            Some(ReadEnd::Gone) | None => {}
        }
        end
    };
    // Tell the server first: the client is gone for its lobby whatever happens below.
    let _ = cx.server.send(Incoming::Closed { conn });
    if matches!(end, Some(ReadEnd::Gone)) {
        // Completes a close the client started (tungstenite queued the reply).
        let _ = tokio::time::timeout(Duration::from_secs(1), sink.close()).await;
    }
    if !matches!(end, Some(ReadEnd::Gone)) && outbox.is_closing() {
        // Our close frame went out (or timed out): give the client a moment to answer it, so
        // the socket closes cleanly and the frame is not lost to a reset.
        let drain = async { while let Some(Ok(_)) = stream.next().await {} };
        let _ =
            tokio::time::timeout(cx.limits.close_timeout.min(Duration::from_secs(2)), drain).await;
    }
}

/// Reads frames one at a time until the client leaves, breaks a limit or the server closes it.
async fn read<S>(
    conn: ConnectionId,
    stream: &mut SplitStream<WebSocketStream<S>>,
    outbox: &Outbox,
    cx: &Context,
) -> ReadEnd
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let limits = &cx.limits;
    let in_flight = Arc::new(Semaphore::new(1));
    let mut buckets = Buckets::new(limits.rate, Instant::now());
    let start = tokio::time::Instant::now();
    let mut ping = tokio::time::interval_at(start + limits.ping_interval, limits.ping_interval);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let grace = limits.ping_interval + limits.pong_timeout;
    let mut heard = start;
    let silence = tokio::time::sleep_until(start + grace);
    tokio::pin!(silence);
    loop {
        let next = async {
            // Wait until the previous frame was dealt with before reading the next.
            let permit = in_flight.clone().acquire_owned().await.ok()?;
            Some((permit, stream.next().await))
        };
        tokio::select! {
            biased;
            () = outbox.closed() => return ReadEnd::ServerClosing,
            () = cx.server.closed() => return ReadEnd::Gone,
            () = &mut silence => {
                if heard + grace <= tokio::time::Instant::now() {
                    return ReadEnd::Violation(close::NO_PONG, close::NO_PONG_REASON);
                }
                silence.as_mut().reset(heard + grace);
            }
            _ = ping.tick() => outbox.ping(),
            read = next => {
                let Some((permit, frame)) = read else { return ReadEnd::Gone };
                heard = tokio::time::Instant::now();
                let len = match &frame {
                    Some(Ok(m)) => m.len(),
                    _ => 0,
                };
                let frame = match frame {
                    Some(Ok(Message::Text(text))) => {
                        Counters::add(&cx.counters.frames_in, 1);
                        Counters::add(&cx.counters.bytes_in, len as u64);
                        Frame::Text(text.as_str().to_owned())
                    }
                    Some(Ok(Message::Binary(_))) => Frame::Binary,
                    Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {
                        if !buckets.admit(Instant::now(), len) {
                            return ReadEnd::Violation(close::RATE_LIMITED, close::RATE_LIMITED_REASON);
                        }
                        if matches!(frame, Some(Ok(Message::Pong(_))))
                            && cx.server.send(Incoming::Pong { conn }).is_err()
                        {
                            return ReadEnd::Gone;
                        }
                        continue;
                    }
                    Some(Err(WsError::Capacity(_))) => Frame::Oversized,
                    Some(Ok(Message::Close(_)) | Err(_)) | None => return ReadEnd::Gone,
                };
                if !buckets.admit(Instant::now(), len) {
                    return ReadEnd::Violation(close::RATE_LIMITED, close::RATE_LIMITED_REASON);
                }
                let oversized = matches!(frame, Frame::Oversized);
                if cx.server.send(Incoming::Frame { conn, frame, permit }).is_err() {
                    return ReadEnd::Gone;
                }
                if oversized {
                    // The transport cannot read past it: wait for the server's close.
                    let _ = tokio::time::timeout(limits.close_timeout, outbox.closed()).await;
                    return ReadEnd::ServerClosing;
                }
            }
        }
    }
}

/// Writes what the outbox gives until a close frame went out or the socket failed. Once a
/// close is requested, what is still queued and the close frame get `close_timeout` in all
/// (a write stuck on a client that does not read is given up then).
async fn write<S>(sink: &mut SplitSink<WebSocketStream<S>, Message>, outbox: &Outbox, cx: &Context)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut deadline: Option<tokio::time::Instant> = None;
    let close_within = || tokio::time::Instant::now() + cx.limits.close_timeout;
    loop {
        let next = outbox.next().await;
        if deadline.is_none() && outbox.is_closing() {
            deadline = Some(close_within());
        }
        let (message, last) = match next {
            Next::Text(text) => (Message::text(text), false),
            Next::Ping => (Message::Ping(Default::default()), false),
            Next::Close(code, reason) => {
                let frame = CloseFrame {
                    code: CloseCode::from(code),
                    reason: reason.into(),
                };
                (Message::Close(Some(frame)), true)
            }
        };
        let text = message.is_text();
        let send = sink.send(message);
        tokio::pin!(send);
        let sent = match deadline {
            Some(at) => tokio::time::timeout_at(at, &mut send).await.ok(),
            None => tokio::select! {
                sent = &mut send => Some(sent),
                () = outbox.closed() => {
                    let at = close_within();
                    deadline = Some(at);
                    tokio::time::timeout_at(at, &mut send).await.ok()
                }
            },
        };
        match sent {
            Some(Ok(())) if !last => {
                if text {
                    Counters::add(&cx.counters.frames_out, 1);
                }
            }
            _ => return,
        }
    }
}
