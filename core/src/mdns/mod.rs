//! mDNS candidates: browsers (Chromium and Firefox by default) hide their host addresses behind
//! random `<uuid>.local` names in ICE candidates. str0m takes only IP addresses, and the core
//! does no DNS (as for ICE server names), so a peer's `.local` candidate waits here until the
//! adapter resolved its name ([`Mesh::poll_mdns_query`](crate::Mesh::poll_mdns_query), then
//! [`Mesh::resolved_mdns`](crate::Mesh::resolved_mdns)); then it goes to ICE with the address
//! in place of the name, everything else (foundation, priority, port, type) as signalled.
//!
//! Bounded: a peer's held candidates count against its candidate cap, a peer has at most
//! [`Limits::max_mdns_names`](crate::Limits::max_mdns_names) names waiting, the mesh at most
//! [`Limits::max_mdns_queries`](crate::Limits::max_mdns_queries) queries outstanding, and a
//! query not answered within [`Limits::mdns_timeout`](crate::Limits::mdns_timeout) is dropped.
//! A name that never resolves holds back nothing but its own candidates.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::time::Instant;

use crate::transfer::PeerId;

mod resolver;
pub use resolver::{MdnsLookup, MdnsResolver, NoMdns};

/// The longest label of a name (DNS); a browser's is a UUID, 36 characters.
const MAX_LABEL: usize = 63;

/// A `.local` name for the adapter to resolve with mDNS, from
/// [`Mesh::poll_mdns_query`](crate::Mesh::poll_mdns_query). Pass the answer (or `None` when it
/// did not resolve) to [`Mesh::resolved_mdns`](crate::Mesh::resolved_mdns), with the same
/// `peer` and `name`.
///
/// ```
/// use std::time::Instant;
/// use rtcmesh::{Mesh, MeshConfig, Signal};
///
/// let mut mesh = Mesh::create_server(MeshConfig::default())?;
/// mesh.add_host_candidate("192.168.1.10:5000".parse()?)?;
/// mesh.add_peer(Instant::now(), 7, 1)?;
/// // A browser on the LAN trickles its host candidate behind a name.
/// let name = "2f6b1c3e-4e1a-4c8e-9d3b-6a1f0e2d7c55.local";
/// let candidate = format!("candidate:1 1 udp 2122260223 {name} 54321 typ host");
/// mesh.handle_signal(Instant::now(), 7, Signal::Candidate(candidate))?;
/// let query = mesh.poll_mdns_query().expect("a name to resolve");
/// assert_eq!((query.peer, query.name.as_str()), (7, name));
/// // The adapter asks the LAN (mDNS) and hands the address back: the candidate goes to ICE.
/// let applied = mesh.resolved_mdns(Instant::now(), query.peer, &query.name, Some("192.168.1.20".parse()?));
/// assert!(applied);
/// assert_eq!(mesh.stats().mdns_names_resolved, 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MdnsQuery {
    /// The peer whose candidates carry the name.
    pub peer: PeerId,
    /// The name, as the peer sent it (`<label>.local`, ASCII, validated).
    pub name: String,
}

/// What a candidate's address field is: an IP address (or anything else str0m judges), a valid
/// mDNS name, or a `.local` name that is not one we accept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CandidateAddress<'a> {
    /// Not a `.local` name: str0m parses it (and refuses what it cannot).
    Other,
    /// `<label>.local` (the `.local` in any case).
    Mdns(&'a str),
    /// Ends in `.local` but is not one label of letters, digits and hyphens, at most 63 long.
    BadName,
}

/// The address field of a candidate attribute (`candidate:<foundation> <component> <transport>
/// <priority> <address> <port> typ …`, with or without `a=`), classified.
pub(crate) fn candidate_address(attribute: &str) -> CandidateAddress<'_> {
    let attribute = attribute.trim();
    let attribute = attribute.strip_prefix("a=").unwrap_or(attribute);
    let Some(address) = attribute
        .strip_prefix("candidate:")
        .and_then(|rest| rest.split_whitespace().nth(4))
    else {
        return CandidateAddress::Other;
    };
    let Some(cut) = address.len().checked_sub(".local".len()) else {
        return CandidateAddress::Other;
    };
    let (label, suffix) = match (address.get(..cut), address.get(cut..)) {
        (Some(label), Some(suffix)) => (label, suffix),
        // The cut falls inside a multi-byte character: not ASCII, so not `.local` either.
        _ => return CandidateAddress::Other,
    };
    if !suffix.eq_ignore_ascii_case(".local") {
        return CandidateAddress::Other;
    }
    if is_label(label) {
        CandidateAddress::Mdns(address)
    } else {
        CandidateAddress::BadName
    }
}

/// One DNS label: 1 to 63 ASCII letters, digits and hyphens, not starting or ending with a
/// hyphen.
fn is_label(label: &str) -> bool {
    !label.is_empty()
        && label.len() <= MAX_LABEL
        && label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !label.starts_with('-')
        && !label.ends_with('-')
}

/// `attribute` with its address field (a name) replaced by `ip`; the rest as it was.
pub(crate) fn with_address(attribute: &str, ip: IpAddr) -> Option<String> {
    let attribute = attribute.trim();
    let attribute = attribute.strip_prefix("a=").unwrap_or(attribute);
    let mut fields: Vec<&str> = attribute.split_whitespace().collect();
    let ip = ip.to_string();
    *fields.get_mut(4)? = &ip;
    Some(fields.join(" "))
}

/// The `.local` candidates of one connection waiting for their names to resolve. Each one
/// takes a slot of the connection's candidate cap while it waits (the guard counts them).
#[derive(Debug, Default)]
pub(crate) struct HeldNames {
    /// Name (lowercased) and the candidate attributes that carry it.
    names: Vec<(String, Vec<String>)>,
    /// Names held since the mesh last asked (it starts a query for each).
    fresh: Vec<String>,
    /// Names resolved for this connection (at most `max_mdns_names`): a later candidate with
    /// one goes to ICE at once.
    resolved: Vec<(String, IpAddr)>,
}

/// Why a `.local` candidate was not held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The peer has `max_mdns_names` other names waiting.
    TooManyNames,
}

impl HeldNames {
    /// Candidate attributes held.
    pub fn len(&self) -> usize {
        self.names.iter().map(|(_, lines)| lines.len()).sum()
    }

    /// Holds `attribute` (whose address is `name`) until `name` resolves. A repeat of a held
    /// attribute is held once.
    pub fn hold(&mut self, name: &str, attribute: &str, max_names: usize) -> Result<(), Refused> {
        let name = name.to_ascii_lowercase();
        let attribute = attribute.trim();
        let attribute = attribute.strip_prefix("a=").unwrap_or(attribute);
        if let Some((_, lines)) = self.names.iter_mut().find(|(n, _)| *n == name) {
            if !lines.iter().any(|l| l == attribute) {
                lines.push(attribute.to_owned());
            }
            return Ok(());
        }
        if self.names.len() >= max_names {
            return Err(Refused::TooManyNames);
        }
        self.fresh.push(name.clone());
        self.names.push((name, vec![attribute.to_owned()]));
        Ok(())
    }

    /// Whether `attribute` is held already (a repeat takes no new slot).
    pub fn holds(&self, name: &str, attribute: &str) -> bool {
        let attribute = attribute.trim();
        let attribute = attribute.strip_prefix("a=").unwrap_or(attribute);
        self.names
            .iter()
            .any(|(n, lines)| n.eq_ignore_ascii_case(name) && lines.iter().any(|l| l == attribute))
    }

    /// Whether a name is waiting already.
    #[cfg(test)]
    pub fn has_name(&self, name: &str) -> bool {
        self.names.iter().any(|(n, _)| n.eq_ignore_ascii_case(name))
    }

    /// The names held since the last call.
    pub fn take_fresh(&mut self) -> Vec<String> {
        std::mem::take(&mut self.fresh)
    }

    /// The attributes carrying `name`, no longer held.
    pub fn release(&mut self, name: &str) -> Vec<String> {
        match self
            .names
            .iter()
            .position(|(n, _)| n.eq_ignore_ascii_case(name))
        {
            Some(i) => self.names.swap_remove(i).1,
            None => Vec::new(),
        }
    }

    /// The address `name` resolved to, if it did on this connection.
    pub fn resolved(&self, name: &str) -> Option<IpAddr> {
        self.resolved
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|&(_, ip)| ip)
    }

    /// Remembers that `name` resolved to `ip` (the oldest is forgotten past `max`).
    pub fn remember(&mut self, name: &str, ip: IpAddr, max: usize) {
        self.resolved.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self.resolved.push((name.to_ascii_lowercase(), ip));
        if self.resolved.len() > max {
            self.resolved.remove(0);
        }
    }

    /// Adds `other`'s held candidates to these (see the guard's `merge`), up to `max_names`
    /// names (the candidates of names past it are dropped).
    pub fn merge(&mut self, other: HeldNames, max_names: usize) {
        for (name, lines) in other.names {
            let room = self.names.len() < max_names;
            match self.names.iter_mut().find(|(n, _)| *n == name) {
                Some((_, mine)) => {
                    for line in lines {
                        if !mine.contains(&line) {
                            mine.push(line);
                        }
                    }
                }
                None if room => self.names.push((name, lines)),
                None => {}
            }
        }
        self.fresh.extend(other.fresh);
        // `other.resolved` is a cache: without it, a name is asked again.
    }
}

/// One outstanding query.
#[derive(Debug)]
struct Query {
    peer: PeerId,
    name: String,
    /// `None`: never (an `mdns_timeout` past the end of `Instant`'s range).
    deadline: Option<Instant>,
    /// Handed to the adapter by `poll_mdns_query`.
    asked: bool,
}

/// The mesh's outstanding mDNS queries, across peers: bounded, each with a deadline.
#[derive(Debug, Default)]
pub(crate) struct Queries {
    queries: VecDeque<Query>,
}

/// Whether a new name got a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Asked {
    /// A query is outstanding for it (new, or already).
    Yes,
    /// The mesh has `max_mdns_queries` outstanding: the name is dropped.
    Full,
}

impl Queries {
    /// Starts a query for `peer`'s `name` (lowercased), unless one is outstanding.
    pub fn ask(
        &mut self,
        peer: PeerId,
        name: String,
        deadline: Option<Instant>,
        max: usize,
    ) -> Asked {
        if self
            .queries
            .iter()
            .any(|q| q.peer == peer && q.name == name)
        {
            return Asked::Yes;
        }
        if self.queries.len() >= max {
            return Asked::Full;
        }
        self.queries.push_back(Query {
            peer,
            name,
            deadline,
            asked: false,
        });
        Asked::Yes
    }

    /// The next query the adapter has not been given.
    pub fn next(&mut self) -> Option<MdnsQuery> {
        let q = self.queries.iter_mut().find(|q| !q.asked)?;
        q.asked = true;
        Some(MdnsQuery {
            peer: q.peer,
            name: q.name.clone(),
        })
    }

    /// Ends the query for `peer`'s `name`; whether it was outstanding.
    pub fn answer(&mut self, peer: PeerId, name: &str) -> bool {
        let before = self.queries.len();
        self.queries
            .retain(|q| !(q.peer == peer && q.name.eq_ignore_ascii_case(name)));
        self.queries.len() != before
    }

    /// Drops every query of `peer` (it is gone).
    pub fn forget_peer(&mut self, peer: PeerId) {
        self.queries.retain(|q| q.peer != peer);
    }

    /// `from`'s queries are `to`'s now (the peer was renamed).
    pub fn rename_peer(&mut self, from: PeerId, to: PeerId) {
        self.queries.retain(|q| q.peer != to);
        for q in self.queries.iter_mut().filter(|q| q.peer == from) {
            q.peer = to;
        }
    }

    /// The earliest deadline.
    pub fn deadline(&self) -> Option<Instant> {
        self.queries.iter().filter_map(|q| q.deadline).min()
    }

    /// The queries past their deadline at `now`, removed.
    pub fn expire(&mut self, now: Instant) -> Vec<(PeerId, String)> {
        let mut expired = Vec::new();
        self.queries.retain(|q| {
            let keep = q.deadline.is_none_or(|at| at > now);
            if !keep {
                expired.push((q.peer, q.name.clone()));
            }
            keep
        });
        expired
    }

    /// Queries outstanding.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.queries.len()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const UUID: &str = "2f6b1c3e-4e1a-4c8e-9d3b-6a1f0e2d7c55";

    fn line(address: &str) -> String {
        format!("candidate:1 1 udp 2122260223 {address} 54321 typ host generation 0")
    }

    #[test]
    fn names_are_one_ascii_label_under_local() {
        let name = format!("{UUID}.local");
        assert_eq!(
            candidate_address(&line(&name)),
            CandidateAddress::Mdns(&name)
        );
        assert_eq!(
            candidate_address(&format!("a={}\r\n", line("Host-1.LOCAL"))),
            CandidateAddress::Mdns("Host-1.LOCAL")
        );
        for bad in [
            ".local",
            "a.b.local",
            "-x.local",
            "x-.local",
            "ünïcode.local",
            "x_y.local",
            &format!("{}.local", "a".repeat(64)),
        ] {
            assert_eq!(
                candidate_address(&line(bad)),
                CandidateAddress::BadName,
                "{bad}"
            );
        }
        for other in ["192.168.1.2", "::1", "example.com", "local", "ü.lo", "é"] {
            assert_eq!(
                candidate_address(&line(other)),
                CandidateAddress::Other,
                "{other}"
            );
        }
        assert_eq!(
            candidate_address("candidate:1 1 udp"),
            CandidateAddress::Other
        );
        assert!(is_label(&"a".repeat(63)));
    }

    #[test]
    fn the_address_replaces_the_name_and_nothing_else() {
        let ip: IpAddr = "192.168.1.20".parse().expect("ip");
        assert_eq!(
            with_address(&format!("a={}", line("x.local")), ip).as_deref(),
            Some("candidate:1 1 udp 2122260223 192.168.1.20 54321 typ host generation 0")
        );
        assert_eq!(with_address("candidate:1 1", ip), None);
    }

    #[test]
    fn held_names_are_bounded_and_released_by_name() {
        let mut held = HeldNames::default();
        held.hold("A.local", &line("A.local"), 2).expect("room");
        held.hold("a.local", &line("a.local"), 2)
            .expect("same name");
        held.hold("a.local", &line("a.local"), 2).expect("a repeat");
        held.hold("b.local", &line("b.local"), 2).expect("room");
        assert_eq!(
            held.hold("c.local", &line("c.local"), 2),
            Err(Refused::TooManyNames)
        );
        assert_eq!(held.len(), 3);
        assert_eq!(held.take_fresh(), ["a.local", "b.local"]);
        assert!(held.take_fresh().is_empty());
        assert!(held.holds("A.LOCAL", &line("a.local")));
        assert_eq!(held.release("A.local").len(), 2);
        assert!(!held.has_name("a.local"));
        assert!(held.release("a.local").is_empty());
    }

    #[test]
    fn queries_are_bounded_deduplicated_and_expire() {
        let t0 = Instant::now();
        let mut q = Queries::default();
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(q.ask(1, "a.local".into(), Some(t0), 2), Asked::Yes);
        assert_eq!(q.ask(1, "a.local".into(), Some(t0), 2), Asked::Yes);
        assert_eq!(q.ask(2, "a.local".into(), Some(t1), 2), Asked::Yes);
        assert_eq!(q.ask(3, "c.local".into(), Some(t0), 2), Asked::Full);
        assert_eq!(q.next().map(|q| q.peer), Some(1));
        assert_eq!(q.next().map(|q| q.peer), Some(2));
        assert_eq!(q.next(), None);
        assert_eq!(q.deadline(), Some(t0));
        assert_eq!(q.expire(t0), [(1, "a.local".to_owned())]);
        assert!(!q.answer(1, "a.local"), "expired");
        q.rename_peer(2, 5);
        assert!(q.answer(5, "A.local"));
        assert_eq!(q.len(), 0);
    }
}
