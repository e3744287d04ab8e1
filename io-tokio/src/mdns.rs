//! Resolving peers' `.local` candidates with mDNS, for the mesh (which does no DNS): browsers
//! hide their host addresses behind such names. [`rtcmesh::MdnsResolver`] takes the mesh's
//! names and hands back the answers; this file is only the asking, with `mdns-sd`.
//!
//! With the `mdns` feature (on by default) an `mdns-sd` daemon asks the LAN. It starts on the
//! first name (its thread and its socket on port 5353 exist only once a peer sent one) and
//! is shut down with the loop. Without the feature, or if the daemon cannot start (no
//! multicast-capable interface), every name is answered "did not resolve" at once, so the
//! mesh counts it (`mdns_names_unresolved`) instead of waiting for its timeout.
//!
//! The daemon asks for a name's A and AAAA records in one message; Chromium's responder
//! ignores a query with more than one question (the NAT lab found it: Chromium answered
//! one-question queries at once and never the daemon's, which resolved a name only when it
//! caught Chromium's announcement of it). So each name is also asked with one question per
//! message (A, then AAAA) from port 5353, on every IPv4 interface: the answer is multicast,
//! and the daemon takes it as the answer to its own query.

/// The loop's resolver.
#[cfg(feature = "mdns")]
pub(crate) type Resolver = rtcmesh::MdnsResolver<daemon::Daemon>;
/// The loop's resolver: without the feature, every name is answered "not resolved".
#[cfg(not(feature = "mdns"))]
pub(crate) type Resolver = rtcmesh::MdnsResolver<rtcmesh::NoMdns>;

/// A resolver whose daemon (if any) starts on the first name.
pub(crate) fn resolver() -> Resolver {
    Resolver::new(Default::default())
}

#[cfg(feature = "mdns")]
mod daemon {
    use std::net::IpAddr;
    use std::time::{Duration, Instant};

    use mdns_sd::{DaemonStatus, HostnameResolutionEvent, Receiver, ServiceDaemon, TryRecvError};

    /// When a name is asked with one question per message, from when the daemon's thread noted
    /// the name (it takes an answer only from then on, and Chromium answers within a
    /// millisecond: a new daemon's thread may still be starting when the name is first asked).
    /// Then a second apart, as the daemon repeats its own query (a responder multicasts a
    /// record at most once a second, RFC 6762 §6).
    const ONE_QUESTION_AT: [Duration; 3] = [
        Duration::ZERO,
        Duration::from_secs(1),
        Duration::from_secs(2),
    ];

    /// One name being asked for.
    pub(crate) struct Pending {
        name: String,
        events: Receiver<HostnameResolutionEvent>,
        /// The daemon's status, asked after the name: it comes once its thread noted the name.
        noted: Option<Receiver<DaemonStatus>>,
        /// Since when the daemon takes answers for the name, and how many one-question rounds
        /// went out since.
        since: Option<Instant>,
        rounds: usize,
    }

    impl Pending {
        /// Sends the one-question queries that are due.
        fn ask_one_question(&mut self) {
            let now = Instant::now();
            if self.since.is_none() {
                match self.noted.as_ref().map(|r| r.try_recv()) {
                    Some(Err(TryRecvError::Empty)) => return,
                    _ => self.since = Some(now),
                }
            }
            let since = self.since.unwrap_or(now);
            if ONE_QUESTION_AT
                .get(self.rounds)
                .is_some_and(|&at| now.saturating_duration_since(since) >= at)
            {
                self.rounds += 1;
                one_question::ask(&fqdn(&self.name));
            }
        }
    }

    /// `mdns-sd`'s daemon, started on the first name.
    #[derive(Default)]
    pub(crate) struct Daemon {
        daemon: Option<ServiceDaemon>,
        /// The daemon could not start: nothing is asked.
        unavailable: bool,
    }

    impl std::fmt::Debug for Daemon {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("Daemon")
                .field("running", &self.daemon.is_some())
                .finish()
        }
    }

    impl rtcmesh::MdnsLookup for Daemon {
        type Pending = Pending;

        fn ask(&mut self, name: &str, timeout: Duration) -> Option<Self::Pending> {
            if self.unavailable {
                return None;
            }
            if self.daemon.is_none() {
                match ServiceDaemon::new() {
                    Ok(daemon) => self.daemon = Some(daemon),
                    Err(_) => {
                        self.unavailable = true;
                        return None;
                    }
                }
            }
            let daemon = self.daemon.as_ref()?;
            let events = daemon
                .resolve_hostname(&fqdn(name), Some(timeout.as_millis() as u64))
                .ok()?;
            // Its thread takes commands in order: the status comes after the name is noted.
            let noted = daemon.status().ok();
            let mut pending = Pending {
                name: name.to_owned(),
                events,
                noted,
                since: None,
                rounds: 0,
            };
            pending.ask_one_question();
            Some(pending)
        }

        fn answer(&mut self, pending: &mut Self::Pending) -> Option<Vec<IpAddr>> {
            pending.ask_one_question();
            loop {
                match pending.events.try_recv() {
                    Ok(HostnameResolutionEvent::AddressesFound(_, found)) => {
                        return Some(found.iter().map(|a| a.to_ip_addr()).collect());
                    }
                    Ok(HostnameResolutionEvent::SearchTimeout(_))
                    | Ok(HostnameResolutionEvent::SearchStopped(_))
                    | Err(TryRecvError::Disconnected) => return Some(Vec::new()),
                    Ok(_) => {}
                    Err(TryRecvError::Empty) => return None,
                }
            }
        }

        fn stop(&mut self, name: &str, _events: Self::Pending) {
            if let Some(daemon) = &self.daemon {
                let _ = daemon.stop_resolve_hostname(&fqdn(name));
            }
        }
    }

    impl Drop for Daemon {
        fn drop(&mut self) {
            if let Some(daemon) = self.daemon.take() {
                // Its thread ends on its own; nothing waits for it.
                let _ = daemon.shutdown();
            }
        }
    }

    /// The fully qualified name the daemon takes (`<label>.local.`).
    fn fqdn(name: &str) -> String {
        format!("{name}.")
    }

    /// Queries with one question each, as Chromium's responder wants them.
    pub(super) mod one_question {
        use std::io;
        use std::net::{IpAddr, Ipv4Addr, SocketAddr};

        use socket2::{Domain, Protocol, Socket, Type};

        /// mDNS's IPv4 group and port (RFC 6762).
        const GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 251);
        const PORT: u16 = 5353;
        const TYPE_A: u16 = 1;
        const TYPE_AAAA: u16 = 28;

        /// Asks for `name` (`<label>.local.`, validated by the mesh) on every non-loopback
        /// IPv4 interface: an A query and an AAAA query, each a message of its own. Nothing
        /// is sent where the socket cannot be had (the daemon's own queries still go).
        pub fn ask(name: &str) {
            let Ok(socket) = socket() else {
                return;
            };
            let messages = [message(name, TYPE_A), message(name, TYPE_AAAA)];
            let to = SocketAddr::from((GROUP, PORT)).into();
            let interfaces = if_addrs::get_if_addrs().unwrap_or_default();
            for interface in interfaces.iter().filter(|i| !i.is_loopback()) {
                let IpAddr::V4(ip) = interface.ip() else {
                    continue;
                };
                if socket.set_multicast_if_v4(&ip).is_err() {
                    continue;
                }
                for message in &messages {
                    let _ = socket.send_to(message, &to);
                }
            }
        }

        /// A socket on port 5353 beside the daemon's (a query from another port would be
        /// answered to that port alone, RFC 6762 §6.7, and the daemon would not hear it).
        /// It only sends, and is closed at once.
        fn socket() -> io::Result<Socket> {
            let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
            socket.set_reuse_address(true)?;
            #[cfg(all(unix, not(any(target_os = "solaris", target_os = "illumos"))))]
            socket.set_reuse_port(true)?;
            socket.set_nonblocking(true)?;
            socket.set_multicast_ttl_v4(255)?;
            socket.bind(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, PORT)).into())?;
            Ok(socket)
        }

        /// A query message with one question: `name`, `qtype`, class IN, a multicast answer
        /// wanted (the QU bit clear).
        pub fn message(name: &str, qtype: u16) -> Vec<u8> {
            // Id 0, no flags, one question, no records (RFC 6762 §18).
            let mut m = vec![0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
            for label in name.trim_end_matches('.').split('.') {
                m.push(label.len() as u8);
                m.extend_from_slice(label.as_bytes());
            }
            m.push(0);
            m.extend_from_slice(&qtype.to_be_bytes());
            m.extend_from_slice(&1u16.to_be_bytes());
            m
        }
    }
}

#[cfg(all(test, feature = "mdns"))]
mod tests {
    use super::daemon::one_question::message;

    #[test]
    fn a_name_is_asked_one_question_per_message() {
        let name = "2f6b1c3e-4e1a-4c8e-9d3b-6a1f0e2d7c55.local.";
        let m = message(name, 1);
        assert_eq!(&m[..12], &[0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(m[12] as usize, 36);
        assert_eq!(&m[13..49], &name.as_bytes()[..36]);
        assert_eq!(&m[49..], b"\x05local\x00\x00\x01\x00\x01");
        assert_eq!(&message(name, 28)[m.len() - 4..], &[0, 28, 0, 1]);
    }
}
