//! Which path a peer's traffic takes: str0m sends DTLS and SCTP only on ICE's nominated pair,
//! from its local candidate's base (our socket, or our relayed address) to the remote
//! candidate's address. The remote's signalled candidates tell what that address is.

use std::net::SocketAddr;

use smallvec::SmallVec;

use super::Link;
use crate::nat::CandidateKind;

/// Remote candidates remembered per peer (what ICE pairs beyond this is still used, only its
/// kind is not known).
const MAX_REMOTE_KINDS: usize = 32;

/// Where the link sends, and what the remote signalled.
#[derive(Debug, Default)]
pub(super) struct Paths {
    /// The (source, destination) of the last DTLS or SCTP datagram sent.
    sending: Option<(SocketAddr, SocketAddr)>,
    /// Remote candidates' addresses and kinds, as signalled.
    remote: SmallVec<[(SocketAddr, CandidateKind); 8]>,
}

impl Paths {
    /// Notes a datagram str0m sent: anything but STUN (first byte 0 or 1) travels on the
    /// nominated pair.
    pub fn sent(&mut self, source: SocketAddr, destination: SocketAddr, contents: &[u8]) {
        if contents.first().is_some_and(|&b| b > 3) {
            self.sending = Some((source, destination));
        }
    }

    /// Notes a remote candidate attribute (`candidate:… <ip> <port> typ <kind> …`).
    pub fn signalled(&mut self, attribute: &str) {
        let attribute = attribute.trim();
        let attribute = attribute.strip_prefix("a=").unwrap_or(attribute);
        let Some(rest) = attribute.strip_prefix("candidate:") else {
            return;
        };
        let fields: SmallVec<[&str; 10]> = rest.split_whitespace().take(8).collect();
        let (Some(ip), Some(port), Some(&"typ"), Some(kind)) =
            (fields.get(4), fields.get(5), fields.get(6), fields.get(7))
        else {
            return;
        };
        let (Ok(ip), Ok(port), Some(kind)) = (
            ip.parse::<std::net::IpAddr>(),
            port.parse::<u16>(),
            CandidateKind::from_sdp(kind),
        ) else {
            return;
        };
        let addr = SocketAddr::new(ip, port);
        if self.remote.iter().any(|&(a, _)| a == addr) || self.remote.len() >= MAX_REMOTE_KINDS {
            return;
        }
        self.remote.push((addr, kind));
    }

    /// Notes every candidate line of an SDP.
    pub fn signalled_sdp(&mut self, sdp: &str) {
        for line in sdp.lines().filter(|l| l.starts_with("a=candidate:")) {
            self.signalled(line);
        }
    }

    /// Forgets the path (a new handshake starts); the remote's candidates come again with it.
    pub fn clear(&mut self) {
        *self = Paths::default();
    }
}

impl Link {
    /// (source, destination) of the nominated pair, once DTLS or SCTP went out on it.
    pub fn sending_path(&self) -> Option<(SocketAddr, SocketAddr)> {
        self.paths.sending
    }

    /// What the remote signalled `address` as; `PeerReflexive` if it never did.
    pub fn remote_kind(&self, address: SocketAddr) -> CandidateKind {
        self.paths
            .remote
            .iter()
            .find(|&&(a, _)| a == address)
            .map_or(CandidateKind::PeerReflexive, |&(_, k)| k)
    }

    /// Whether the remote signalled a relayed candidate.
    pub fn remote_has_relay(&self) -> bool {
        self.paths
            .remote
            .iter()
            .any(|&(_, k)| k == CandidateKind::Relayed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidate_kinds_are_read_from_signals_and_sdp() {
        let mut paths = Paths::default();
        paths.signalled("a=candidate:1 1 udp 2130706431 10.0.0.2 5000 typ host");
        paths.signalled_sdp(
            "v=0\r\na=candidate:2 1 udp 1694498815 203.0.113.11 5000 typ srflx raddr 0.0.0.0 \
             rport 0\r\na=candidate:3 1 udp 16777215 203.0.113.1 49152 typ relay raddr \
             0.0.0.0 rport 0\r\na=candidate:4 1 udp 1 name.local 1 typ host\r\n",
        );
        paths.signalled("candidate:5 1 udp 1 10.0.0.3 x typ host");
        let kinds: Vec<CandidateKind> = paths.remote.iter().map(|&(_, k)| k).collect();
        assert_eq!(
            kinds,
            [
                CandidateKind::Host,
                CandidateKind::ServerReflexive,
                CandidateKind::Relayed
            ]
        );
        let (a, b) = (
            "10.0.0.2:1".parse().expect("addr"),
            "10.0.0.3:2".parse().expect("addr"),
        );
        paths.sent(a, b, &[0, 1, 0, 0]);
        assert_eq!(paths.sending, None, "STUN does not tell the nominated pair");
        paths.sent(a, b, &[22, 254, 253]);
        assert_eq!(paths.sending, Some((a, b)));
    }
}
