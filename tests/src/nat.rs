//! A NAT box for the simulated network (RFC 4787 terms): how it maps a private socket to a
//! public port, and which inbound datagrams it lets through.
//!
//! A "cone" NAT maps endpoint-independently (one public port per private socket, whoever it
//! talks to); a "symmetric" NAT maps address-and-port-dependently (a fresh public port per
//! destination), which defeats server-reflexive candidates. Both filter: only a remote the
//! mapping already sent to gets in (address-and-port-dependent filtering, what Linux conntrack
//! does, and the lab's nftables NATs).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

/// How a NAT chooses public ports (RFC 4787 §4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mapping {
    /// One public port per private socket, whatever the destination ("cone").
    EndpointIndependent,
    /// A public port per (private socket, destination) ("symmetric").
    AddressAndPortDependent,
}

/// Which inbound datagrams a mapping accepts (RFC 4787 §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filtering {
    /// Anyone ("full cone").
    EndpointIndependent,
    /// Any port of an address the mapping sent to ("restricted cone").
    AddressDependent,
    /// Exactly the addresses the mapping sent to ("port-restricted").
    AddressAndPortDependent,
}

/// A NAT's behaviour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NatBehavior {
    /// How public ports are chosen.
    pub mapping: Mapping,
    /// What may come in.
    pub filtering: Filtering,
}

impl NatBehavior {
    /// A home router's NAT: endpoint-independent mapping, port-restricted filtering (the
    /// lab's `masquerade`).
    pub const CONE: NatBehavior = NatBehavior {
        mapping: Mapping::EndpointIndependent,
        filtering: Filtering::AddressAndPortDependent,
    };
    /// A symmetric NAT (carrier-grade NATs, some corporate firewalls; the lab's
    /// `masquerade fully-random`).
    pub const SYMMETRIC: NatBehavior = NatBehavior {
        mapping: Mapping::AddressAndPortDependent,
        filtering: Filtering::AddressAndPortDependent,
    };
}

/// One public port's mapping.
#[derive(Debug)]
struct Binding {
    private: SocketAddr,
    /// Remote addresses this mapping sent to (what filtering lets back in).
    sent_to: Vec<SocketAddr>,
}

/// A NAT in front of one or more private hosts.
#[derive(Debug)]
pub struct SimNat {
    /// Its public (WAN) address.
    pub public_ip: IpAddr,
    /// How it behaves.
    pub behavior: NatBehavior,
    by_key: HashMap<(SocketAddr, Option<SocketAddr>), u16>,
    by_port: HashMap<u16, Binding>,
    next_port: u16,
    /// Keep a private socket's port when free (until the first rebind).
    preserve_ports: bool,
    /// Inbound datagrams the filter dropped.
    pub filtered: u64,
}

impl SimNat {
    /// A NAT with this public address.
    pub fn new(public_ip: IpAddr, behavior: NatBehavior) -> SimNat {
        SimNat {
            public_ip,
            behavior,
            by_key: HashMap::new(),
            by_port: HashMap::new(),
            next_port: 20_000,
            preserve_ports: true,
            filtered: 0,
        }
    }

    /// The public source of a datagram `private` sends to `destination`, creating the mapping
    /// if needed. A cone NAT keeps the private port when it is free (like Linux masquerade).
    pub fn outbound(&mut self, private: SocketAddr, destination: SocketAddr) -> SocketAddr {
        let key = match self.behavior.mapping {
            Mapping::EndpointIndependent => (private, None),
            Mapping::AddressAndPortDependent => (private, Some(destination)),
        };
        let port = match self.by_key.get(&key) {
            Some(&port) => port,
            None => {
                let port = if self.behavior.mapping == Mapping::EndpointIndependent
                    && self.preserve_ports
                    && !self.by_port.contains_key(&private.port())
                {
                    private.port()
                } else {
                    self.fresh_port()
                };
                self.by_key.insert(key, port);
                self.by_port.insert(
                    port,
                    Binding {
                        private,
                        sent_to: Vec::new(),
                    },
                );
                port
            }
        };
        let binding = self.by_port.get_mut(&port).expect("mapping just made");
        if !binding.sent_to.contains(&destination) {
            binding.sent_to.push(destination);
        }
        SocketAddr::new(self.public_ip, port)
    }

    fn fresh_port(&mut self) -> u16 {
        loop {
            let port = self.next_port;
            self.next_port = if self.next_port >= 65_000 {
                20_000
            } else {
                self.next_port + 7
            };
            if !self.by_port.contains_key(&port) {
                return port;
            }
        }
    }

    /// The private destination of a datagram from `source` to public `port`, if a mapping
    /// exists and its filter lets `source` in.
    pub fn inbound(&mut self, source: SocketAddr, port: u16) -> Option<SocketAddr> {
        let Some(binding) = self.by_port.get(&port) else {
            self.filtered += 1;
            return None;
        };
        let allowed = match self.behavior.filtering {
            Filtering::EndpointIndependent => true,
            Filtering::AddressDependent => binding.sent_to.iter().any(|a| a.ip() == source.ip()),
            Filtering::AddressAndPortDependent => binding.sent_to.contains(&source),
        };
        if allowed {
            Some(binding.private)
        } else {
            self.filtered += 1;
            None
        }
    }

    /// Forgets every mapping (the router rebooted, or its mappings timed out): hosts behind it
    /// appear at new public ports from now on.
    pub fn rebind(&mut self) {
        self.by_key.clear();
        self.by_port.clear();
        // New mappings must not reuse the old ports, or the "new" mapping looks like the old.
        self.next_port = self.next_port.wrapping_add(1000).max(20_000);
        self.preserve_ports = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("address")
    }

    #[test]
    fn a_cone_nat_keeps_one_port_and_filters_by_address_and_port() {
        let mut nat = SimNat::new("127.200.0.1".parse().expect("ip"), NatBehavior::CONE);
        let host = addr("127.100.1.2:5000");
        let a = nat.outbound(host, addr("127.250.0.1:3478"));
        let b = nat.outbound(host, addr("127.200.0.2:5000"));
        assert_eq!(a, b, "endpoint-independent mapping");
        assert_eq!(a, addr("127.200.0.1:5000"), "port preserved");
        assert_eq!(nat.inbound(addr("127.200.0.2:5000"), 5000), Some(host));
        assert_eq!(nat.inbound(addr("127.200.0.2:5001"), 5000), None);
        assert_eq!(nat.inbound(addr("127.200.0.3:5000"), 5000), None);
    }

    #[test]
    fn a_symmetric_nat_maps_each_destination_apart() {
        let mut nat = SimNat::new("127.200.0.1".parse().expect("ip"), NatBehavior::SYMMETRIC);
        let host = addr("127.100.1.2:5000");
        let a = nat.outbound(host, addr("127.250.0.1:3478"));
        let b = nat.outbound(host, addr("127.200.0.2:5000"));
        assert_ne!(a, b);
        assert_eq!(nat.inbound(addr("127.250.0.1:3478"), a.port()), Some(host));
        assert_eq!(nat.inbound(addr("127.250.0.1:3478"), b.port()), None);
        nat.rebind();
        assert_ne!(nat.outbound(host, addr("127.250.0.1:3478")), a);
    }
}
