//! A STUN/TURN server on the simulated network: `turn-server-proto`'s sans-IO server, driven by
//! the world's fake clock, with relayed addresses handed out on its own IP.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use turn_server_proto::api::{TurnServerApi, TurnServerPollRet};
use turn_server_proto::server::TurnServer;
use turn_server_proto::stun::agent::Transmit as StunTransmit;
use turn_server_proto::types::prelude::DelayedTransmitBuild;
use turn_server_proto::types::stun::TransportType;

/// A datagram the server sends: (from, to, bytes).
pub type ServerDatagram = (SocketAddr, SocketAddr, Vec<u8>);

/// One STUN/TURN server.
pub struct SimTurnServer {
    /// Where clients reach it (`stun:` / `turn:` URL address).
    pub listen: SocketAddr,
    realm: String,
    users: Vec<(String, String)>,
    server: TurnServer,
    start: Instant,
    /// Relayed addresses currently allocated.
    pub relays: Vec<SocketAddr>,
    next_port: u16,
    deadline: Option<Instant>,
    /// Allocations made since the server started (restarts included).
    pub allocations: u64,
    /// Datagrams the server relayed between a client and a peer.
    pub relayed: u64,
}

impl SimTurnServer {
    /// A server at `listen` accepting these long-term credentials; `start` is the world's
    /// clock origin.
    pub fn new(listen: SocketAddr, users: &[(&str, &str)], start: Instant) -> SimTurnServer {
        let users: Vec<(String, String)> = users
            .iter()
            .map(|(u, p)| (u.to_string(), p.to_string()))
            .collect();
        let realm = "rtcmesh.test".to_owned();
        SimTurnServer {
            listen,
            server: server(listen, &realm, &users),
            realm,
            users,
            start,
            relays: Vec::new(),
            next_port: 49_152,
            deadline: Some(start),
            allocations: 0,
            relayed: 0,
        }
    }

    /// The server restarts: every allocation, permission and channel is forgotten.
    pub fn restart(&mut self) {
        self.server = server(self.listen, &self.realm, &self.users);
        self.relays.clear();
    }

    /// Whether `addr` is this server (its listening address or a relayed one).
    pub fn owns(&self, addr: SocketAddr) -> bool {
        addr == self.listen || self.relays.contains(&addr)
    }

    /// When [`poll`](SimTurnServer::poll) must next run.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    fn at(&self, now: Instant) -> turn_server_proto::types::Instant {
        let nanos = now.saturating_duration_since(self.start).as_nanos();
        turn_server_proto::types::Instant::from_nanos(i64::try_from(nanos).unwrap_or(i64::MAX))
    }

    /// A datagram arrived at `to` (the listening or a relayed address) from `from`.
    pub fn receive(
        &mut self,
        now: Instant,
        from: SocketAddr,
        to: SocketAddr,
        data: &[u8],
        out: &mut Vec<ServerDatagram>,
    ) {
        let t = self.at(now);
        let transmit = StunTransmit::new(data, TransportType::Udp, from, to);
        if let Some(reply) = self.server.recv(transmit, t) {
            if to != self.listen || reply.from != self.listen {
                self.relayed += 1;
            }
            let (reply_from, mut reply_to) = (reply.from, reply.to);
            // turn-server-proto 0.7.3 addresses its Binding *response* to its own listening
            // address (`handle_stun_binding` sends to `transmit.to`); the mapped address inside
            // is right. Send it where the request came from, as a real server does.
            if reply_to == self.listen {
                reply_to = from;
            }
            out.push((reply_from, reply_to, reply.data.build()));
        }
        self.poll(now, out);
    }

    /// Runs the server's timers and collects what it sends.
    pub fn poll(&mut self, now: Instant, out: &mut Vec<ServerDatagram>) {
        let t = self.at(now);
        for _ in 0..1000 {
            match self.server.poll(t) {
                TurnServerPollRet::AllocateSocket {
                    transport,
                    listen_addr,
                    client_addr,
                    allocation_transport,
                    family,
                } => {
                    let relay = SocketAddr::new(self.listen.ip(), self.next_port);
                    self.next_port = self.next_port.wrapping_add(1).max(49_152);
                    self.relays.push(relay);
                    self.allocations += 1;
                    self.server.allocated_socket(
                        transport,
                        listen_addr,
                        client_addr,
                        allocation_transport,
                        family,
                        Ok(relay),
                        t,
                    );
                }
                TurnServerPollRet::SocketClose { listen_addr, .. } => {
                    self.relays.retain(|&r| r != listen_addr);
                }
                TurnServerPollRet::WaitUntil(at) => {
                    let nanos = u64::try_from(at.as_nanos()).unwrap_or(0);
                    let at = self.start + Duration::from_nanos(nanos);
                    // turn-server-proto removes a permission only once its expiry has passed,
                    // and asks to be woken at the expiry itself: on a clock that stops exactly
                    // there, waking it at `now` again would spin. A millisecond later it is.
                    self.deadline = Some(if at > now {
                        at
                    } else {
                        now + Duration::from_millis(1)
                    });
                    break;
                }
                TurnServerPollRet::TcpConnect { .. } | TurnServerPollRet::TcpClose { .. } => {}
            }
        }
        while let Some(transmit) = self.server.poll_transmit(t) {
            out.push((transmit.from, transmit.to, transmit.data));
        }
    }
}

fn server(listen: SocketAddr, realm: &str, users: &[(String, String)]) -> TurnServer {
    let mut server = TurnServer::new(TransportType::Udp, listen, realm.to_owned());
    for (user, password) in users {
        server.add_user(user.clone(), password.clone());
    }
    server
}
