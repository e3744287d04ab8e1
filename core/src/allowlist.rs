//! Which remote addresses a mesh may talk to: [`MeshConfig::remote_allowlist`](crate::MeshConfig::remote_allowlist).
//!
//! Remote ICE candidates outside the list are dropped (from trickled signals and from the
//! `a=candidate` lines of offers and answers), and so are datagrams from outside it, so str0m
//! never learns, and never sends to, an address outside the list.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// An IP network: an address and a prefix length (`127.0.0.0/8`, `::1/128`, `10.251.0.0/24`).
///
/// ```
/// use rtcmesh::{IpPrefix, MeshConfig};
///
/// let lan: IpPrefix = "192.168.1.0/24".parse()?;
/// assert!(lan.contains("192.168.1.20".parse()?));
/// let mut config = MeshConfig::default();
/// config.remote_allowlist = Some(IpPrefix::loopback()); // only peers on this machine
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpPrefix {
    addr: IpAddr,
    len: u8,
}

/// A prefix that is not `<ip>/<len>` with `len` within the address family's width.
///
/// ```
/// use rtcmesh::IpPrefix;
///
/// let error = "10.0.0.0/33".parse::<IpPrefix>().unwrap_err();
/// assert_eq!(error.0, "10.0.0.0/33");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidPrefix(pub String);

impl fmt::Display for InvalidPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid IP prefix {:?} (expected e.g. 127.0.0.0/8)",
            self.0
        )
    }
}

impl std::error::Error for InvalidPrefix {}

impl IpPrefix {
    /// The network `addr/len`; `len` at most 32 (IPv4) or 128 (IPv6).
    pub fn new(addr: IpAddr, len: u8) -> Result<IpPrefix, InvalidPrefix> {
        let width = if addr.is_ipv4() { 32 } else { 128 };
        if len > width {
            return Err(InvalidPrefix(format!("{addr}/{len}")));
        }
        Ok(IpPrefix { addr, len })
    }

    /// The loopback networks, `127.0.0.0/8` and `::1/128`.
    pub fn loopback() -> Vec<IpPrefix> {
        vec![
            IpPrefix {
                addr: IpAddr::from([127, 0, 0, 0]),
                len: 8,
            },
            IpPrefix {
                addr: IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1]),
                len: 128,
            },
        ]
    }

    /// Whether `ip` is inside this network (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.len)).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.len))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for IpPrefix {
    type Err = InvalidPrefix;

    /// `"10.0.0.0/8"`, or a bare address for a single host.
    fn from_str(s: &str) -> Result<IpPrefix, InvalidPrefix> {
        let bad = || InvalidPrefix(s.to_owned());
        let (addr, len) = match s.split_once('/') {
            Some((addr, len)) => (addr, Some(len)),
            None => (s, None),
        };
        let addr: IpAddr = addr.trim().parse().map_err(|_| bad())?;
        let len = match len {
            Some(len) => len.trim().parse().map_err(|_| bad())?,
            None if addr.is_ipv4() => 32,
            None => 128,
        };
        IpPrefix::new(addr, len).map_err(|_| bad())
    }
}

impl fmt::Display for IpPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// Whether `ip` may be talked to under `allowlist` (`None`: any address).
pub(crate) fn is_allowed(allowlist: Option<&[IpPrefix]>, ip: IpAddr) -> bool {
    allowlist.is_none_or(|list| list.iter().any(|p| p.contains(ip)))
}

/// The address of a candidate attribute (`candidate:<foundation> <component> <transport>
/// <priority> <address> <port> typ …`, with or without `a=`). `None` for a name (mDNS) or
/// anything unparsable.
pub(crate) fn candidate_address(attribute: &str) -> Option<IpAddr> {
    let attribute = attribute.trim();
    let attribute = attribute.strip_prefix("a=").unwrap_or(attribute);
    attribute
        .strip_prefix("candidate:")?
        .split_whitespace()
        .nth(4)?
        .parse()
        .ok()
}

/// `sdp` without the `a=candidate` lines outside `allowlist`, and how many were removed.
pub(crate) fn filter_sdp(sdp: &str, allowlist: &[IpPrefix]) -> (String, usize) {
    let mut removed = 0;
    let mut out = String::with_capacity(sdp.len());
    for line in sdp.split_inclusive('\n') {
        let is_candidate = line.starts_with("a=candidate:");
        // An mDNS name passes: its address is checked once resolved.
        let name = matches!(
            crate::mdns::candidate_address(line),
            crate::mdns::CandidateAddress::Mdns(_)
        );
        let allowed =
            name || candidate_address(line).is_some_and(|ip| is_allowed(Some(allowlist), ip));
        if is_candidate && !allowed {
            removed += 1;
        } else {
            out.push_str(line);
        }
    }
    (out, removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_parse_and_match() {
        let lo: IpPrefix = "127.0.0.0/8".parse().expect("prefix");
        assert!(lo.contains("127.1.2.3".parse().expect("ip")));
        assert!(!lo.contains("128.0.0.1".parse().expect("ip")));
        assert!(
            lo.contains("::ffff:127.0.0.1".parse().expect("ip")),
            "v4-mapped"
        );
        let host: IpPrefix = "::1".parse().expect("prefix");
        assert!(host.contains("::1".parse().expect("ip")));
        assert!(!host.contains("::2".parse().expect("ip")));
        let all: IpPrefix = "0.0.0.0/0".parse().expect("prefix");
        assert!(all.contains("8.8.8.8".parse().expect("ip")));
        assert!("10.0.0.0/33".parse::<IpPrefix>().is_err());
        assert!("nonsense/8".parse::<IpPrefix>().is_err());
        assert_eq!(lo.to_string(), "127.0.0.0/8");
    }

    #[test]
    fn sdp_candidates_outside_the_list_are_removed() {
        let sdp = "v=0\r\na=mid:0\r\na=candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host\r\n\
                   a=candidate:2 1 udp 2130706431 192.168.1.5 5000 typ host\r\n\
                   a=candidate:3 1 udp 2130706431 abcd.local 5000 typ host\r\na=end-of-candidates\r\n";
        let (out, removed) = filter_sdp(sdp, &IpPrefix::loopback());
        assert_eq!(removed, 1, "the mDNS name is checked once resolved");
        assert_eq!(
            out,
            "v=0\r\na=mid:0\r\na=candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host\r\n\
             a=candidate:3 1 udp 2130706431 abcd.local 5000 typ host\r\na=end-of-candidates\r\n"
        );
        assert_eq!(
            candidate_address("candidate:1 1 udp 1 ::1 9 typ host"),
            Some("::1".parse().expect("ip"))
        );
    }
}
