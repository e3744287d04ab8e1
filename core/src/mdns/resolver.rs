//! The adapter's side of mDNS, without its I/O: an adapter supplies a way to ask the LAN
//! ([`MdnsLookup`]: rtcmesh-tokio and rtcmesh-mio use the `mdns-sd` crate's daemon), and
//! [`MdnsResolver`] does the rest the same way for every adapter: it takes the mesh's names,
//! asks, picks the address a candidate can carry, and hands the answers back.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::mesh::Mesh;
use crate::transfer::PeerId;

/// A way to ask the LAN for `.local` names (multicast DNS), supplied by an adapter. It owns the
/// I/O (a socket on port 5353, a thread); [`MdnsResolver`] calls it.
///
/// ```
/// use std::net::IpAddr;
/// use std::time::Duration;
/// use rtcmesh::MdnsLookup;
///
/// /// A lookup that knows one name (a test's stand-in for a LAN).
/// struct OneName(&'static str, IpAddr);
///
/// impl MdnsLookup for OneName {
///     type Pending = Option<IpAddr>;
///     fn ask(&mut self, name: &str, _timeout: Duration) -> Option<Self::Pending> {
///         Some((name == self.0).then_some(self.1))
///     }
///     fn answer(&mut self, pending: &mut Self::Pending) -> Option<Vec<IpAddr>> {
///         Some(pending.take().into_iter().collect()) // answered at once; empty: not found
///     }
///     fn stop(&mut self, _name: &str, _pending: Self::Pending) {}
/// }
/// ```
pub trait MdnsLookup {
    /// One name being asked for.
    type Pending;

    /// Starts asking for `name` (`<label>.local`, as the peer sent it), for at most `timeout`.
    /// `None` when it cannot be asked (no multicast-capable interface, too many at once): the
    /// mesh then drops the name's candidates at once instead of waiting for its own timeout.
    fn ask(&mut self, name: &str, timeout: Duration) -> Option<Self::Pending>;

    /// What came for `pending`: `None` while it is still being asked; the addresses found once
    /// it resolved, or empty when it will not (timed out, stopped).
    fn answer(&mut self, pending: &mut Self::Pending) -> Option<Vec<IpAddr>>;

    /// Stops asking for `name` (answered, or no longer wanted).
    fn stop(&mut self, name: &str, pending: Self::Pending);
}

/// The lookup for adapters built without mDNS: every name is answered "not resolved" at once
/// (counted in [`MeshStats::mdns_names_unresolved`](crate::MeshStats::mdns_names_unresolved)).
///
/// ```
/// use rtcmesh::{MdnsResolver, NoMdns};
///
/// let resolver = MdnsResolver::new(NoMdns);
/// assert!(!resolver.waiting());
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct NoMdns;

impl MdnsLookup for NoMdns {
    type Pending = std::convert::Infallible;

    fn ask(&mut self, _name: &str, _timeout: Duration) -> Option<Self::Pending> {
        None
    }

    fn answer(&mut self, pending: &mut Self::Pending) -> Option<Vec<IpAddr>> {
        match *pending {}
    }

    fn stop(&mut self, _name: &str, pending: Self::Pending) {
        match pending {}
    }
}

/// One name being asked for.
struct Asking<P> {
    peer: PeerId,
    name: String,
    pending: P,
}

/// Resolves the mesh's `.local` names with an [`MdnsLookup`]: call [`poll`](Self::poll) each
/// turn of the loop before the mesh's datagrams go out, and while [`waiting`](Self::waiting)
/// wake at least every [`POLL_INTERVAL`](Self::POLL_INTERVAL) (a lookup answers on a thread
/// of its own, which does not wake the loop).
///
/// ```
/// use std::time::Instant;
/// use rtcmesh::{Mesh, MeshConfig, MdnsResolver, NoMdns, Signal};
///
/// let mut mesh = Mesh::create_server(MeshConfig::default())?;
/// mesh.add_peer(Instant::now(), 7, 1)?;
/// let candidate = "candidate:1 1 udp 2122260223 2f6b1c3e-4e1a-4c8e-9d3b-6a1f0e2d7c55.local 54321 typ host";
/// mesh.handle_signal(Instant::now(), 7, Signal::Candidate(candidate.into()))?;
/// let mut resolver = MdnsResolver::new(NoMdns);
/// resolver.poll(&mut mesh, Instant::now());
/// assert_eq!(mesh.stats().mdns_names_unresolved, 1); // no mDNS here: dropped at once
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct MdnsResolver<L: MdnsLookup> {
    lookup: L,
    asking: Vec<Asking<L::Pending>>,
}

impl<L: MdnsLookup + std::fmt::Debug> std::fmt::Debug for MdnsResolver<L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MdnsResolver")
            .field("lookup", &self.lookup)
            .field("asking", &self.asking.len())
            .finish()
    }
}

impl<L: MdnsLookup> MdnsResolver<L> {
    /// How often a loop looks for answers while names are being asked for.
    pub const POLL_INTERVAL: Duration = Duration::from_millis(20);

    /// How long the lookup asks for one name before giving up: shorter than the mesh's own
    /// default limit ([`Limits::mdns_timeout`](crate::Limits::mdns_timeout), 5 s), so the
    /// answer "not found" comes before the mesh drops the name on its own.
    pub const QUERY_TIMEOUT: Duration = Duration::from_secs(3);

    /// The most names asked for at once, whatever the mesh's
    /// [`Limits::max_mdns_queries`](crate::Limits::max_mdns_queries): past it a name is
    /// answered "not resolved" at once.
    pub const MAX_QUERIES: usize = 256;

    /// A resolver asking with `lookup`.
    pub fn new(lookup: L) -> Self {
        MdnsResolver {
            lookup,
            asking: Vec::new(),
        }
    }

    /// Starts asking for each new name of the mesh, and gives the mesh the answers that came
    /// (stamped `now`).
    pub fn poll(&mut self, mesh: &mut Mesh, now: Instant) {
        while let Some(query) = mesh.poll_mdns_query() {
            let pending = if self.asking.len() < Self::MAX_QUERIES {
                self.lookup.ask(&query.name, Self::QUERY_TIMEOUT)
            } else {
                None
            };
            match pending {
                Some(pending) => self.asking.push(Asking {
                    peer: query.peer,
                    name: query.name,
                    pending,
                }),
                None => {
                    mesh.resolved_mdns(now, query.peer, &query.name, None);
                }
            }
        }
        let mut i = 0;
        while i < self.asking.len() {
            match self.lookup.answer(&mut self.asking[i].pending) {
                Some(found) => {
                    let asked = self.asking.swap_remove(i);
                    self.lookup.stop(&asked.name, asked.pending);
                    mesh.resolved_mdns(now, asked.peer, &asked.name, pick(found));
                }
                None => i += 1,
            }
        }
    }

    /// Whether answers are awaited (wake within [`POLL_INTERVAL`](Self::POLL_INTERVAL)).
    pub fn waiting(&self) -> bool {
        !self.asking.is_empty()
    }

    /// The earlier of `deadline` and the next look for answers after `now` (`deadline` when
    /// nothing is awaited).
    pub fn wake_by(&self, now: Instant, deadline: Option<Instant>) -> Option<Instant> {
        if !self.waiting() {
            return deadline;
        }
        let look = now + Self::POLL_INTERVAL;
        Some(deadline.map_or(look, |d| d.min(look)))
    }

    /// The lookup.
    pub fn lookup(&self) -> &L {
        &self.lookup
    }
}

/// The address to use from what a name resolved to: IPv4 first (a browser names each address
/// separately, so there is normally one), else a global IPv6 one (a link-local address needs a
/// scope that an ICE candidate cannot carry).
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{MeshConfig, Signal};
    use std::collections::HashMap;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ipv4_first_then_a_global_ipv6_never_link_local() {
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

    /// A LAN whose names answer after a number of looks (or never), recording what was
    /// stopped.
    #[derive(Default)]
    struct Lan {
        names: HashMap<String, (u32, Vec<IpAddr>)>,
        stopped: Vec<String>,
        refuse: bool,
    }

    impl MdnsLookup for Lan {
        type Pending = (String, u32);

        fn ask(&mut self, name: &str, timeout: Duration) -> Option<Self::Pending> {
            assert_eq!(timeout, MdnsResolver::<Lan>::QUERY_TIMEOUT);
            (!self.refuse).then(|| (name.to_owned(), 0))
        }

        fn answer(&mut self, pending: &mut Self::Pending) -> Option<Vec<IpAddr>> {
            pending.1 += 1;
            match self.names.get(&pending.0) {
                Some((after, found)) if pending.1 >= *after => Some(found.clone()),
                Some(_) => None,
                None => Some(Vec::new()),
            }
        }

        fn stop(&mut self, name: &str, _pending: Self::Pending) {
            self.stopped.push(name.to_owned());
        }
    }

    fn mesh_with_names(names: &[&str]) -> Mesh {
        let now = Instant::now();
        let mut mesh = Mesh::create_server(MeshConfig::default()).unwrap();
        mesh.add_host_candidate("192.168.1.10:5000".parse().unwrap())
            .unwrap();
        mesh.add_peer(now, 7, 1).unwrap();
        for (i, name) in names.iter().enumerate() {
            let candidate = format!("candidate:{i} 1 udp 2122260223 {name} 5432{i} typ host");
            mesh.handle_signal(now, 7, Signal::Candidate(candidate))
                .unwrap();
        }
        mesh
    }

    #[test]
    fn an_answer_that_comes_later_reaches_the_mesh_and_the_name_stops_being_asked() {
        let name = "a1.local";
        let mut mesh = mesh_with_names(&[name]);
        let mut lan = Lan::default();
        lan.names
            .insert(name.into(), (3, vec![ip("fe80::9"), ip("192.168.1.20")]));
        let mut resolver = MdnsResolver::new(lan);
        let now = Instant::now();
        resolver.poll(&mut mesh, now);
        assert!(resolver.waiting());
        assert_eq!(
            resolver.wake_by(now, None),
            Some(now + MdnsResolver::<Lan>::POLL_INTERVAL)
        );
        resolver.poll(&mut mesh, now);
        assert_eq!(mesh.stats().mdns_names_resolved, 0, "not answered yet");
        resolver.poll(&mut mesh, now);
        assert_eq!(mesh.stats().mdns_names_resolved, 1);
        assert!(!resolver.waiting());
        assert_eq!(resolver.wake_by(now, None), None);
        assert_eq!(resolver.lookup().stopped, vec![name.to_owned()]);
    }

    #[test]
    fn a_name_that_cannot_be_asked_or_finds_no_usable_address_is_dropped_at_once() {
        let mut mesh = mesh_with_names(&["b1.local"]);
        let mut resolver = MdnsResolver::new(Lan {
            refuse: true,
            ..Lan::default()
        });
        resolver.poll(&mut mesh, Instant::now());
        assert!(!resolver.waiting());
        assert_eq!(mesh.stats().mdns_names_unresolved, 1);

        // Only a link-local address: nothing an ICE candidate can carry.
        let mut mesh = mesh_with_names(&["b2.local"]);
        let mut lan = Lan::default();
        lan.names
            .insert("b2.local".into(), (1, vec![ip("fe80::2")]));
        let mut resolver = MdnsResolver::new(lan);
        resolver.poll(&mut mesh, Instant::now());
        assert_eq!(mesh.stats().mdns_names_unresolved, 1);
        assert_eq!(mesh.stats().mdns_names_resolved, 0);
    }
}
