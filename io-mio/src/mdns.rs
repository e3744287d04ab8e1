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
    use mdns_sd::{HostnameResolutionEvent, Receiver, ServiceDaemon, TryRecvError};
    use rtcmesh::PeerId;

    /// One name being asked for.
    struct Query {
        peer: PeerId,
        name: String,
        events: Receiver<HostnameResolutionEvent>,
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
                if let Some(events) = self.ask(&q.name) {
                    self.queries.push(Query {
                        peer: q.peer,
                        name: q.name,
                        events,
                    });
                } else {
                    mesh.resolved_mdns(now, q.peer, &q.name, None);
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

        /// Starts asking for `name`; `None` when that cannot be done.
        fn ask(&mut self, name: &str) -> Option<Receiver<HostnameResolutionEvent>> {
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
            self.daemon
                .as_ref()?
                .resolve_hostname(&fqdn(name), Some(timeout))
                .ok()
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
