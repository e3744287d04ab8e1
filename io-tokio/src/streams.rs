//! The streams a mesh asks for to reach TURN servers over TCP or TLS (`turn:…?transport=tcp`,
//! `turns:`; see [`rtcmesh::stream`]): one task per stream connects (and runs TLS with
//! rustls, the server's certificate checked for the URL's host), writes the frames the mesh
//! sends, and reads what the server sends back into the loop. What waits to be written is
//! bounded as [`rtcmesh::StreamBuffer`] bounds it: relayed data is dropped past
//! [`STREAM_BUFFER`] bytes, the server's requests never.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rtcmesh::{StreamCommand, StreamEnd, StreamId, TlsFailure, STREAM_BUFFER};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// How long a connection (with its TLS handshake) may take; the mesh gives up at 10 s too.
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);
/// What one read takes from a stream.
const READ_CHUNK: usize = 16 * 1024;
/// How many frames one write gathers (fewer system calls and TLS records under load).
const WRITE_BATCH: usize = 64 * 1024;
/// Chunks read and not yet taken by the loop, per endpoint: past it the streams stop reading
/// (TCP's flow control slows the server), as the socket is not read while events wait.
const NEWS_CAPACITY: usize = 64;

/// What a stream's task tells the loop.
#[derive(Debug)]
pub(crate) enum News {
    Opened,
    Data(Vec<u8>),
    Closed(StreamEnd),
}

/// One stream's task, seen from the loop.
struct Open {
    frames: mpsc::UnboundedSender<Vec<u8>>,
    /// Bytes sent to the task and not written yet.
    queued: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

/// The endpoint's streams.
pub(crate) struct Streams {
    tls: Option<Arc<rustls::ClientConfig>>,
    open: HashMap<StreamId, Open>,
    news_tx: mpsc::Sender<(StreamId, News)>,
    pub news: mpsc::Receiver<(StreamId, News)>,
    /// Relayed frames dropped because a stream was too slow, not yet reported to the pump.
    pub dropped: u64,
}

impl Streams {
    /// No streams yet; `tls` for `turns:` servers (`None`: the platform's roots).
    pub fn new(tls: Option<Arc<rustls::ClientConfig>>) -> Streams {
        let (news_tx, news) = mpsc::channel(NEWS_CAPACITY);
        Streams {
            tls,
            open: HashMap::new(),
            news_tx,
            news,
            dropped: 0,
        }
    }

    /// Carries out one of the machine's commands.
    pub fn command(&mut self, command: StreamCommand) {
        match command {
            StreamCommand::Open { id, server, tls } => {
                let (frames, frames_rx) = mpsc::unbounded_channel();
                let queued = Arc::new(AtomicUsize::new(0));
                let task = tokio::spawn(run(
                    id,
                    server,
                    tls.map(|name| (name, self.tls.clone())),
                    frames_rx,
                    queued.clone(),
                    self.news_tx.clone(),
                ));
                self.open.insert(
                    id,
                    Open {
                        frames,
                        queued,
                        task,
                    },
                );
            }
            StreamCommand::Send {
                id,
                data,
                droppable,
            } => {
                let Some(open) = self.open.get(&id) else {
                    return;
                };
                if droppable && open.queued.load(Ordering::Relaxed) >= STREAM_BUFFER {
                    self.dropped += 1;
                    return;
                }
                open.queued.fetch_add(data.len(), Ordering::Relaxed);
                let _ = open.frames.send(data);
            }
            StreamCommand::Close { id } => {
                // The task writes what it was given, then closes (its channel is closed).
                self.open.remove(&id);
            }
            _ => {}
        }
    }

    /// A stream's task ended by itself (its `Closed` news is on its way).
    pub fn ended(&mut self, id: StreamId) {
        self.open.remove(&id);
    }
}

impl Drop for Streams {
    fn drop(&mut self) {
        // The loop is gone: nothing more will be written or read.
        for (_, open) in self.open.drain() {
            open.task.abort();
        }
    }
}

/// A stream's life: connect, TLS if asked, then frames out and bytes in until either side
/// closes.
async fn run(
    id: StreamId,
    server: SocketAddr,
    tls: Option<(String, Option<Arc<rustls::ClientConfig>>)>,
    frames: mpsc::UnboundedReceiver<Vec<u8>>,
    queued: Arc<AtomicUsize>,
    news: mpsc::Sender<(StreamId, News)>,
) {
    let opened = tokio::time::timeout(OPEN_TIMEOUT, connect(server, tls)).await;
    match opened {
        Ok(Ok(Connected::Tcp(tcp))) => carry(id, tcp, frames, queued, news).await,
        Ok(Ok(Connected::Tls(tls))) => carry(id, *tls, frames, queued, news).await,
        Ok(Err(end)) => {
            let _ = news.send((id, News::Closed(end))).await;
        }
        Err(_) => {
            let _ = news.send((id, News::Closed(StreamEnd::Unreachable))).await;
        }
    }
}

enum Connected {
    Tcp(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

async fn connect(
    server: SocketAddr,
    tls: Option<(String, Option<Arc<rustls::ClientConfig>>)>,
) -> Result<Connected, StreamEnd> {
    let tcp = TcpStream::connect(server)
        .await
        .map_err(|_| StreamEnd::Unreachable)?;
    // Frames are small and latency-bound (SCTP over TURN): no Nagle delay.
    let _ = tcp.set_nodelay(true);
    let Some((name, config)) = tls else {
        return Ok(Connected::Tcp(tcp));
    };
    let config = match config {
        Some(config) => config,
        // Reading the platform's roots touches the file system: not on the loop's thread.
        None => tokio::task::spawn_blocking(crate::signal::platform_client_tls)
            .await
            .map_err(|_| StreamEnd::Tls(TlsFailure::NoRoots))?
            .map_err(|e| {
                tracing::warn!("TURN over TLS: {e}");
                StreamEnd::Tls(TlsFailure::NoRoots)
            })?,
    };
    let name = ServerName::try_from(name).map_err(|_| StreamEnd::Tls(TlsFailure::NameMismatch))?;
    let stream = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|e| {
            tracing::warn!(%server, "TURN over TLS failed: {e}");
            StreamEnd::Tls(tls_failure(&e))
        })?;
    Ok(Connected::Tls(Box::new(stream)))
}

/// Moves frames out and bytes in until the server closes, the mesh closes, or an error.
async fn carry<S: AsyncRead + AsyncWrite>(
    id: StreamId,
    stream: S,
    mut frames: mpsc::UnboundedReceiver<Vec<u8>>,
    queued: Arc<AtomicUsize>,
    news: mpsc::Sender<(StreamId, News)>,
) {
    if news.send((id, News::Opened)).await.is_err() {
        return;
    }
    let (mut reader, mut writer) = tokio::io::split(stream);
    let mut buffer = vec![0u8; READ_CHUNK];
    let end = loop {
        tokio::select! {
            frame = frames.recv() => {
                let Some(mut batch) = frame else {
                    // Closed by the mesh: everything sent was written.
                    let _ = writer.shutdown().await;
                    return;
                };
                while batch.len() < WRITE_BATCH {
                    match frames.try_recv() {
                        Ok(more) => batch.extend_from_slice(&more),
                        Err(_) => break,
                    }
                }
                let written = batch.len();
                if let Err(e) = write(&mut writer, &batch).await {
                    break io_end(&e);
                }
                queued.fetch_sub(written, Ordering::Relaxed);
            }
            read = reader.read(&mut buffer) => match read {
                Ok(0) => break StreamEnd::Closed,
                Ok(n) => {
                    if news.send((id, News::Data(buffer[..n].to_vec()))).await.is_err() {
                        return;
                    }
                }
                Err(e) => break io_end(&e),
            },
        }
    };
    let _ = news.send((id, News::Closed(end))).await;
}

async fn write<W: AsyncWrite + Unpin>(writer: &mut W, bytes: &[u8]) -> io::Result<()> {
    writer.write_all(bytes).await?;
    writer.flush().await
}

/// Why a stream that was open ended, from its I/O error.
fn io_end(e: &io::Error) -> StreamEnd {
    match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(tls) => StreamEnd::Tls(failure_of(tls)),
        None => StreamEnd::Closed,
    }
}

/// What a failed TLS handshake says, as the mesh reports it.
fn tls_failure(e: &io::Error) -> TlsFailure {
    match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(tls) => failure_of(tls),
        None => TlsFailure::Handshake,
    }
}

/// rustls's error, in the mesh's words.
pub(crate) fn failure_of(e: &rustls::Error) -> TlsFailure {
    use rustls::CertificateError as C;
    match e {
        rustls::Error::InvalidCertificate(C::UnknownIssuer) => TlsFailure::UnknownIssuer,
        rustls::Error::InvalidCertificate(
            C::NotValidForName | C::NotValidForNameContext { .. },
        ) => TlsFailure::NameMismatch,
        rustls::Error::InvalidCertificate(
            C::Expired | C::ExpiredContext { .. } | C::NotValidYet | C::NotValidYetContext { .. },
        ) => TlsFailure::Expired,
        rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented => {
            TlsFailure::BadCertificate
        }
        _ => TlsFailure::Handshake,
    }
}
