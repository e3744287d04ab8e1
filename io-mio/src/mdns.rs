//! Resolving peers' `.local` candidates with mDNS, for the mesh (which does no DNS): browsers
//! hide their host addresses behind such names. The mesh hands out each name once
//! ([`Mesh::poll_mdns_query`]) and takes the answer back ([`Mesh::resolved_mdns`]); the mesh
//! bounds how many are outstanding and drops a name that takes too long.
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

use std::net::IpAddr;
use std::time::{Duration, Instant};

use rtcmesh::Mesh;

/// How long the daemon asks for one name before giving up (the mesh's own limit,
/// `Limits::mdns_timeout`, is 5 s by default; this answers before it).
#[cfg_attr(not(feature = "mdns"), allow(dead_code))]
const QUERY_TIMEOUT: Duration = Duration::from_secs(3);

/// How often the loop looks for answers while queries are outstanding (the daemon answers on
/// a channel of its own thread; [`MioEndpoint::timeout`](crate::MioEndpoint::timeout) is at
/// most this long meanwhile).
pub(crate) const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// The most queries in flight at once; the mesh bounds them too (`Limits::max_mdns_queries`),
/// this bounds the daemon's work whatever the mesh's configuration.
#[cfg_attr(not(feature = "mdns"), allow(dead_code))]
const MAX_QUERIES: usize = 256;

/// When a name is asked with one question per message, from when the daemon's thread noted
/// the name (it takes an answer only from then on, and Chromium answers within a millisecond:
/// a new daemon's thread may still be starting when the name is first asked). Then a second
/// apart, as the daemon repeats its own query (a responder multicasts a record at most once a
/// second, RFC 6762 §6).
#[cfg_attr(not(feature = "mdns"), allow(dead_code))]
const ONE_QUESTION_AT: [Duration; 3] = [
    Duration::ZERO,
    Duration::from_secs(1),
    Duration::from_secs(2),
];

/// The address to use from what a name resolved to: IPv4 first (a browser names each address
/// separately, so there is normally one), else a global IPv6 one (a link-local address needs
/// a scope that an ICE candidate cannot carry).
#[cfg_attr(not(feature = "mdns"), allow(dead_code))]
fn pick(addresses: impl IntoIterator<Item = IpAddr>) -> Option<IpAddr> {
    let mut v6 = None;
    for ip in addresses {
        match ip {
            IpAddr::V4(_) => return Some(ip),
            IpAddr::V6(a) if !a.is_unicast_link_local() && !a.is_unspecified() => {
                v6.get_or_insert(ip);
            }
            IpAddr::V6(_) => {}
        }
    }
    v6
}

#[cfg(feature = "mdns")]
mod daemon {
    use super::*;
    use mdns_sd::{DaemonStatus, HostnameResolutionEvent, Receiver, ServiceDaemon, TryRecvError};
    use rtcmesh::PeerId;

    /// One name being asked for.
    struct Query {
        peer: PeerId,
        name: String,
        events: Receiver<HostnameResolutionEvent>,
        /// The daemon's status, asked after the name: it comes once its thread noted the name.
        noted: Option<Receiver<DaemonStatus>>,
        /// Since when the daemon takes answers for the name, and how many one-question rounds
        /// went out since.
        since: Option<Instant>,
        rounds: usize,
    }

    /// The mDNS side of an I/O loop: see the module docs.
    #[derive(Default)]
    pub(crate) struct MdnsResolver {
        daemon: Option<ServiceDaemon>,
        /// The daemon could not start: every name is answered "not resolved".
        unavailable: bool,
        queries: Vec<Query>,
    }

    impl std::fmt::Debug for MdnsResolver {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("MdnsResolver")
                .field("running", &self.daemon.is_some())
                .field("queries", &self.queries.len())
                .finish()
        }
    }

    impl MdnsResolver {
        /// A resolver whose daemon starts on the first name.
        pub fn new() -> Self {
            Self::default()
        }

        /// Starts a query for each new name of the mesh, and gives the mesh the answers that
        /// arrived (stamped `now`).
        pub fn poll(&mut self, mesh: &mut Mesh, now: Instant) {
            while let Some(q) = mesh.poll_mdns_query() {
                if let Some((events, noted)) = self.ask(&q.name) {
                    self.queries.push(Query {
                        peer: q.peer,
                        name: q.name,
                        events,
                        noted,
                        since: None,
                        rounds: 0,
                    });
                } else {
                    mesh.resolved_mdns(now, q.peer, &q.name, None);
                }
            }
            for q in &mut self.queries {
                if q.since.is_none() {
                    match q.noted.as_ref().map(|r| r.try_recv()) {
                        Some(Err(TryRecvError::Empty)) => continue,
                        _ => q.since = Some(now),
                    }
                }
                let since = q.since.unwrap_or(now);
                if ONE_QUESTION_AT
                    .get(q.rounds)
                    .is_some_and(|&at| now.saturating_duration_since(since) >= at)
                {
                    q.rounds += 1;
                    one_question::ask(&fqdn(&q.name));
                }
            }
            let mut i = 0;
            while i < self.queries.len() {
                match self.answer(i) {
                    Some(answer) => {
                        let q = self.queries.swap_remove(i);
                        if let Some(daemon) = &self.daemon {
                            let _ = daemon.stop_resolve_hostname(&fqdn(&q.name));
                        }
                        mesh.resolved_mdns(now, q.peer, &q.name, answer);
                    }
                    None => i += 1,
                }
            }
        }

        /// Whether answers are awaited (the loop polls again within [`POLL_INTERVAL`]).
        pub fn waiting(&self) -> bool {
            !self.queries.is_empty()
        }

        /// Starts asking for `name`: its answers, and the daemon's status (which comes once
        /// the daemon noted the name); `None` when that cannot be done.
        #[allow(clippy::type_complexity)]
        fn ask(
            &mut self,
            name: &str,
        ) -> Option<(
            Receiver<HostnameResolutionEvent>,
            Option<Receiver<DaemonStatus>>,
        )> {
            if self.queries.len() >= MAX_QUERIES || self.unavailable {
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
            let timeout = QUERY_TIMEOUT.as_millis() as u64;
            let daemon = self.daemon.as_ref()?;
            let events = daemon.resolve_hostname(&fqdn(name), Some(timeout)).ok()?;
            // Its thread takes commands in order: the status comes after the name is noted.
            Some((events, daemon.status().ok()))
        }

        /// The answer for query `i` if it came: `Some(Some(address))`, `Some(None)` when it
        /// will not resolve, `None` while it is still being asked.
        fn answer(&mut self, i: usize) -> Option<Option<IpAddr>> {
            loop {
                match self.queries[i].events.try_recv() {
                    Ok(HostnameResolutionEvent::AddressesFound(_, found)) => {
                        if let Some(ip) = pick(found.iter().map(|a| a.to_ip_addr())) {
                            return Some(Some(ip));
                        }
                    }
                    Ok(HostnameResolutionEvent::SearchTimeout(_))
                    | Ok(HostnameResolutionEvent::SearchStopped(_))
                    | Err(TryRecvError::Disconnected) => return Some(None),
                    Ok(_) => {}
                    Err(TryRecvError::Empty) => return None,
                }
            }
        }
    }

    impl Drop for MdnsResolver {
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

#[cfg(feature = "mdns")]
pub(crate) use daemon::MdnsResolver;

/// Without the `mdns` feature: every name is answered "not resolved" at once.
#[cfg(not(feature = "mdns"))]
#[derive(Debug, Default)]
pub(crate) struct MdnsResolver;

#[cfg(not(feature = "mdns"))]
impl MdnsResolver {
    /// The resolver that answers "not resolved".
    pub fn new() -> Self {
        MdnsResolver
    }

    /// Answers every new name of the mesh "not resolved".
    pub fn poll(&mut self, mesh: &mut Mesh, now: Instant) {
        while let Some(q) = mesh.poll_mdns_query() {
            mesh.resolved_mdns(now, q.peer, &q.name, None);
        }
    }

    /// Never: nothing is asked.
    pub fn waiting(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(feature = "mdns")]
    #[test]
    fn a_name_is_asked_one_question_per_message() {
        let name = "2f6b1c3e-4e1a-4c8e-9d3b-6a1f0e2d7c55.local.";
        let m = daemon::one_question::message(name, 1);
        assert_eq!(&m[..12], &[0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(m[12] as usize, 36);
        assert_eq!(&m[13..49], &name.as_bytes()[..36]);
        assert_eq!(&m[49..], b"\x05local\x00\x00\x01\x00\x01");
        assert_eq!(
            &daemon::one_question::message(name, 28)[m.len() - 4..],
            &[0, 28, 0, 1]
        );
    }

    #[test]
    fn ipv4_first_then_a_global_ipv6_never_link_local() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            pick([ip("fe80::1"), ip("192.168.1.5")]),
            Some(ip("192.168.1.5"))
        );
        assert_eq!(
            pick([ip("fe80::1"), ip("2001:db8::5")]),
            Some(ip("2001:db8::5"))
        );
        assert_eq!(pick([ip("fe80::1")]), None);
        assert_eq!(pick([]), None);
    }
}
