//! The accept loop: new TCP connections, a cap on handshakes in progress, and a pause after
//! an accept error instead of a spin.
//!
//! When the process runs out of file descriptors, `accept` fails with `EMFILE` (or `ENFILE`
//! for the whole system) and the pending connection stays in the kernel's backlog, so an
//! accept loop that simply retries spins at full CPU. This one sleeps, doubling the pause from
//! 5 ms up to half a second while the errors last, and resumes at once when a connection is
//! accepted again.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rtcmesh::lobby::ConnectionId;
use tokio::net::TcpListener;

use super::connection::{handshake, Context};
use super::metrics::Counters;

const FIRST_PAUSE: Duration = Duration::from_millis(5);
const LONGEST_PAUSE: Duration = Duration::from_millis(500);

/// Errors about one connection only (it was reset before we took it): try the next at once.
fn is_per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::Interrupted
    )
}

pub(crate) async fn accept_loop(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    max_handshakes: usize,
    ids: Arc<AtomicU64>,
    cx: Context,
) {
    let mut pause = FIRST_PAUSE;
    let mut failing = false;
    loop {
        match listener.accept().await {
            Ok((tcp, from)) => {
                if failing {
                    tracing::info!("accepting connections again");
                    failing = false;
                }
                pause = FIRST_PAUSE;
                Counters::add(&cx.counters.accepted, 1);
                if Counters::get(&cx.counters.handshakes) >= max_handshakes as u64 {
                    Counters::add(&cx.counters.handshakes_refused, 1);
                    continue; // dropped: the socket closes at once
                }
                Counters::add(&cx.counters.handshakes, 1);
                let conn: ConnectionId = ids.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(handshake(conn, tcp, from, tls.clone(), cx.clone()));
            }
            Err(e) if is_per_connection(&e) => continue,
            Err(e) => {
                Counters::add(&cx.counters.accept_errors, 1);
                if !failing {
                    tracing::warn!(error = %e, "accept failed (out of file descriptors?); pausing between retries");
                    failing = true;
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(LONGEST_PAUSE);
            }
        }
    }
}
