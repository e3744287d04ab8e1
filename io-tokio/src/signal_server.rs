//! The signaling server: [`rtcmesh::lobby::LobbyServer`] behind WebSockets.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use rtcmesh::lobby::{ConnectionId, LobbyServer, LobbyServerConfig, ServerOutput, MAX_MESSAGE_LEN};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

/// What a connection's reader tells the server loop.
enum Incoming {
    Opened(ConnectionId, mpsc::UnboundedSender<ServerOutput>),
    Text(ConnectionId, String),
    Binary(ConnectionId),
    Oversized(ConnectionId),
    Closed(ConnectionId),
}

/// A running signaling server.
pub struct SignalServer {
    local: SocketAddr,
    task: Option<JoinHandle<()>>,
}

impl SignalServer {
    /// Listens on `addr` (e.g. `127.0.0.1:9080`) and serves lobbies until dropped.
    pub async fn bind(addr: SocketAddr, config: LobbyServerConfig) -> io::Result<SignalServer> {
        let listener = TcpListener::bind(addr).await?;
        let local = listener.local_addr()?;
        let seed = random_seed();
        let task = tokio::spawn(serve(listener, LobbyServer::new(config, seed)));
        Ok(SignalServer {
            local,
            task: Some(task),
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The `ws://` URL clients connect to.
    pub fn url(&self) -> String {
        format!("ws://{}", self.local)
    }

    /// Runs until the listener fails (a server binary's main loop).
    pub async fn wait(mut self) {
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for SignalServer {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// A seed for lobby names and ids from the standard library's per-process random keys.
fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    h.finish()
}

async fn serve(listener: TcpListener, mut lobby: LobbyServer) {
    let (incoming_tx, mut incoming) = mpsc::unbounded_channel();
    let mut writers: HashMap<ConnectionId, mpsc::UnboundedSender<ServerOutput>> = HashMap::new();
    let mut next_id: ConnectionId = 0;
    loop {
        let wake = lobby
            .poll_timeout()
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(60));
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                next_id += 1;
                tokio::spawn(connection(next_id, stream, incoming_tx.clone()));
            }
            Some(message) = incoming.recv() => {
                let now = Instant::now();
                match message {
                    Incoming::Opened(conn, writer) => {
                        writers.insert(conn, writer);
                        lobby.connect(now, conn);
                    }
                    Incoming::Text(conn, text) => lobby.handle_text(now, conn, &text),
                    Incoming::Binary(conn) => lobby.handle_binary(conn),
                    Incoming::Oversized(conn) => lobby.handle_oversized(conn),
                    Incoming::Closed(conn) => {
                        writers.remove(&conn);
                        lobby.disconnect(conn);
                    }
                }
            }
            () = tokio::time::sleep_until(wake.into()) => lobby.handle_timeout(Instant::now()),
        }
        while let Some(output) = lobby.poll_output() {
            let to = match &output {
                ServerOutput::Send { to, .. } | ServerOutput::Close { to, .. } => *to,
            };
            let closing = matches!(output, ServerOutput::Close { .. });
            if let Some(writer) = writers.get(&to) {
                let _ = writer.send(output);
            }
            if closing {
                writers.remove(&to);
            }
        }
    }
}

/// One WebSocket: frames in go to the server loop, outputs from it go out.
async fn connection(
    conn: ConnectionId,
    stream: TcpStream,
    server: mpsc::UnboundedSender<Incoming>,
) {
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE_LEN + 1024))
        .max_frame_size(Some(MAX_MESSAGE_LEN + 1024));
    let handshake = tokio_tungstenite::accept_async_with_config(stream, Some(config));
    let Ok(Ok(ws)) = tokio::time::timeout(Duration::from_secs(5), handshake).await else {
        return;
    };
    let (mut sink, mut stream) = ws.split();
    let (writer, mut outputs) = mpsc::unbounded_channel();
    if server.send(Incoming::Opened(conn, writer)).is_err() {
        return;
    }
    // After a frame the transport could not read, stop reading and wait for the server's close.
    let mut reading = true;
    loop {
        tokio::select! {
            frame = stream.next(), if reading => {
                let report = match frame {
                    Some(Ok(Message::Text(text))) => Incoming::Text(conn, text.to_string()),
                    Some(Ok(Message::Binary(_))) => Incoming::Binary(conn),
                    Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
                    Some(Err(WsError::Capacity(_))) => {
                        reading = false;
                        Incoming::Oversized(conn)
                    }
                    Some(Ok(Message::Close(_)) | Err(_)) | None => break,
                };
                if server.send(report).is_err() {
                    break;
                }
            }
            output = outputs.recv() => match output {
                Some(ServerOutput::Send { text, .. }) => {
                    if sink.send(Message::text(text)).await.is_err() {
                        break;
                    }
                }
                Some(ServerOutput::Close { code, reason, .. }) => {
                    let frame = CloseFrame { code: CloseCode::from(code), reason: reason.into() };
                    let _ = sink.send(Message::Close(Some(frame))).await;
                    let _ = sink.close().await;
                    return; // the server already forgot this connection
                }
                None => break,
            },
        }
    }
    let _ = server.send(Incoming::Closed(conn));
}
