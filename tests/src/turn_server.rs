//! A STUN/TURN server on the simulated network: `turn-server-proto`'s sans-IO server, driven by
//! the world's fake clock, with relayed addresses handed out on its own IP. It listens on UDP
//! and, like coturn, on TCP at the same address (`turn:…?transport=tcp`; `turns:` too, where
//! the world plays the TLS handshake and checks [`SimTurnServer::tls_name`]). The TCP side
//! frames its streams itself (RFC 8656 §12.5), independently of rtcmesh's framing.

use std::collections::HashMap;
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
    /// The same server for clients on TCP streams.
    tcp: TurnServer,
    start: Instant,
    /// Relayed addresses currently allocated (for UDP and TCP clients).
    pub relays: Vec<SocketAddr>,
    /// Those of them allocated for TCP clients.
    tcp_relays: Vec<SocketAddr>,
    next_port: u16,
    deadline: Option<Instant>,
    /// Allocations made since the server started (restarts included).
    pub allocations: u64,
    /// Datagrams the server relayed between a client and a peer.
    pub relayed: u64,
    /// Bytes of each client stream not framed yet.
    unframed: HashMap<SocketAddr, Vec<u8>>,
    /// What the server wrote on client streams since the world last took it: (client, bytes).
    pub stream_out: Vec<(SocketAddr, Vec<u8>)>,
    /// The host name its TLS certificate is valid for; `None` accepts any (`turns:` only).
    pub tls_name: Option<String>,
    /// Whether it accepts TCP (and TLS) connections at all.
    pub accepts_streams: bool,
    /// Relayed addresses to hand out before making any up (a server on real sockets binds
    /// them first).
    pub relay_addresses: std::collections::VecDeque<SocketAddr>,
    /// Usernames whose short-lived credential has expired: as coturn does with
    /// `use-auth-secret`, an Allocate signed with one is refused (401), while allocations made
    /// with it before live on (their refreshes and permissions are not checked again).
    pub expired: Vec<String>,
    /// Allocates refused for an expired username.
    pub refused_expired: u64,
    /// As coturn does: the username of a refused Allocate stays bound to the client's address
    /// for 60 s (its `max-allocate-timeout`), and an Allocate from there with another is
    /// answered 437 meanwhile. Off: the server forgets a refused request (RFC 8656).
    pub holds_refused_usernames: bool,
    refused_by: HashMap<SocketAddr, (String, Instant)>,
    /// Allocates answered 437 for that hold.
    pub held: u64,
    /// Allocate requests that carried a username (one per attempt with a credential).
    pub signed_allocates: u64,
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
            server: server(TransportType::Udp, listen, &realm, &users),
            tcp: server(TransportType::Tcp, listen, &realm, &users),
            realm,
            users,
            start,
            relays: Vec::new(),
            tcp_relays: Vec::new(),
            next_port: 49_152,
            deadline: Some(start),
            allocations: 0,
            relayed: 0,
            unframed: HashMap::new(),
            stream_out: Vec::new(),
            tls_name: None,
            accepts_streams: true,
            relay_addresses: std::collections::VecDeque::new(),
            expired: Vec::new(),
            refused_expired: 0,
            holds_refused_usernames: false,
            refused_by: HashMap::new(),
            held: 0,
            signed_allocates: 0,
        }
    }

    /// The 401 answer to an Allocate signed with an expired username, or the 437 answer to one
    /// from an address still bound to a refused username, if `data` is one of those.
    fn refuse_expired(&mut self, now: Instant, from: SocketAddr, data: &[u8]) -> Option<Vec<u8>> {
        use turn_server_proto::types::message::ALLOCATE;
        use turn_server_proto::types::stun::attribute::{ErrorCode, Username};
        use turn_server_proto::types::stun::message::{Message, MessageClass, MessageWriteVec};
        use turn_server_proto::types::stun::prelude::{MessageWrite, MessageWriteExt};
        if data.first().is_none_or(|b| b & 0xC0 != 0) {
            return None;
        }
        let msg = Message::from_bytes(data).ok()?;
        if !msg.has_class(MessageClass::Request) || msg.method() != ALLOCATE {
            return None;
        }
        let username = msg.attribute::<Username>().ok()?;
        let username = username.username();
        self.signed_allocates += 1;
        let held = self
            .refused_by
            .get(&from)
            .is_some_and(|(user, at)| user != username && now < *at + Duration::from_secs(60));
        let code = if held {
            self.held += 1;
            ErrorCode::ALLOCATION_MISMATCH
        } else if self.expired.iter().any(|u| u == username) {
            self.refused_expired += 1;
            if self.holds_refused_usernames {
                self.refused_by.insert(from, (username.to_owned(), now));
            }
            ErrorCode::UNAUTHORIZED
        } else {
            return None;
        };
        let mut reply = Message::builder_error(&msg, MessageWriteVec::new());
        reply
            .add_attribute(&ErrorCode::builder(code).build().ok()?)
            .ok()?;
        Some(reply.finish())
    }

    /// The server restarts: every allocation, permission and channel is forgotten (its TCP
    /// connections stay up, as a restarted process behind a load balancer would not keep them,
    /// but the allocations on them are gone all the same).
    pub fn restart(&mut self) {
        self.server = server(TransportType::Udp, self.listen, &self.realm, &self.users);
        self.tcp = server(TransportType::Tcp, self.listen, &self.realm, &self.users);
        self.relays.clear();
        self.tcp_relays.clear();
        self.unframed.clear();
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
        if to == self.listen {
            if let Some(refusal) = self.refuse_expired(now, from, data) {
                out.push((self.listen, from, refusal));
                return;
            }
        }
        let transmit = StunTransmit::new(data, TransportType::Udp, from, to);
        // A peer's datagram to a relay of a TCP client: that server wraps it for the stream.
        let server = match self.tcp_relays.contains(&to) {
            true => &mut self.tcp,
            false => &mut self.server,
        };
        if let Some(reply) = server.recv(transmit, t) {
            if to != self.listen || reply.from != self.listen {
                self.relayed += 1;
            }
            let (reply_from, mut reply_to, transport) = (reply.from, reply.to, reply.transport);
            // turn-server-proto 0.7.3 addresses its Binding *response* to its own listening
            // address (`handle_stun_binding` sends to `transmit.to`); the mapped address inside
            // is right. Send it where the request came from, as a real server does.
            if reply_to == self.listen {
                reply_to = from;
            }
            let bytes = reply.data.build();
            match transport {
                TransportType::Tcp => self.stream_out.push((reply_to, frame_for_stream(bytes))),
                TransportType::Udp => out.push((reply_from, reply_to, bytes)),
            }
        }
        self.poll(now, out);
    }

    /// Bytes arrived on the stream from the TCP client at `client`.
    pub fn stream_data(
        &mut self,
        now: Instant,
        client: SocketAddr,
        data: &[u8],
        out: &mut Vec<ServerDatagram>,
    ) {
        let t = self.at(now);
        let buffer = self.unframed.entry(client).or_default();
        buffer.extend_from_slice(data);
        let frames = take_frames(buffer);
        for frame in frames {
            if let Some(refusal) = self.refuse_expired(now, client, &frame) {
                self.stream_out.push((client, refusal));
                continue;
            }
            let transmit =
                StunTransmit::new(frame.as_slice(), TransportType::Tcp, client, self.listen);
            if let Some(reply) = self.tcp.recv(transmit, t) {
                let (to, transport) = (reply.to, reply.transport);
                let bytes = reply.data.build();
                if transport == TransportType::Tcp {
                    // Answers go back on the client's stream, whatever address they name.
                    let _ = to;
                    self.stream_out.push((client, frame_for_stream(bytes)));
                } else {
                    self.relayed += 1;
                    out.push((reply.from, to, bytes));
                }
            }
        }
        self.poll(now, out);
    }

    /// The TCP client at `client` closed its stream: its allocation goes with it (RFC 6062).
    pub fn stream_closed(
        &mut self,
        now: Instant,
        client: SocketAddr,
        out: &mut Vec<ServerDatagram>,
    ) {
        let t = self.at(now);
        self.unframed.remove(&client);
        let closed = StunTransmit::new(&[][..], TransportType::Tcp, client, self.listen);
        let _ = self.tcp.recv(closed, t);
        self.poll(now, out);
    }

    /// Runs the server's timers and collects what it sends.
    pub fn poll(&mut self, now: Instant, out: &mut Vec<ServerDatagram>) {
        let t = self.at(now);
        let mut next: Option<Instant> = None;
        for tcp in [false, true] {
            for _ in 0..1000 {
                let server = if tcp { &mut self.tcp } else { &mut self.server };
                match server.poll(t) {
                    TurnServerPollRet::AllocateSocket {
                        transport,
                        listen_addr,
                        client_addr,
                        allocation_transport,
                        family,
                    } => {
                        let relay = match self.relay_addresses.pop_front() {
                            Some(relay) => relay,
                            None => {
                                let relay = SocketAddr::new(self.listen.ip(), self.next_port);
                                self.next_port = self.next_port.wrapping_add(1).max(49_152);
                                relay
                            }
                        };
                        self.relays.push(relay);
                        if tcp {
                            self.tcp_relays.push(relay);
                        }
                        self.allocations += 1;
                        let server = if tcp { &mut self.tcp } else { &mut self.server };
                        server.allocated_socket(
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
                        self.tcp_relays.retain(|&r| r != listen_addr);
                    }
                    TurnServerPollRet::WaitUntil(at) => {
                        let nanos = u64::try_from(at.as_nanos()).unwrap_or(0);
                        let at = self.start + Duration::from_nanos(nanos);
                        // turn-server-proto removes a permission only once its expiry has
                        // passed, and asks to be woken at the expiry itself: on a clock that
                        // stops exactly there, waking it at `now` again would spin. A
                        // millisecond later it is.
                        let at = if at > now {
                            at
                        } else {
                            now + Duration::from_millis(1)
                        };
                        next = Some(next.map_or(at, |n| n.min(at)));
                        break;
                    }
                    TurnServerPollRet::TcpConnect { .. } | TurnServerPollRet::TcpClose { .. } => {}
                }
            }
        }
        self.deadline = next;
        while let Some(transmit) = self.server.poll_transmit(t) {
            out.push((transmit.from, transmit.to, transmit.data));
        }
        while let Some(transmit) = self.tcp.poll_transmit(t) {
            match transmit.transport {
                TransportType::Tcp => self
                    .stream_out
                    .push((transmit.to, frame_for_stream(transmit.data))),
                TransportType::Udp => out.push((transmit.from, transmit.to, transmit.data)),
            }
        }
    }
}

fn server(
    transport: TransportType,
    listen: SocketAddr,
    realm: &str,
    users: &[(String, String)],
) -> TurnServer {
    let mut server = TurnServer::new(transport, listen, realm.to_owned());
    for (user, password) in users {
        server.add_user(user.clone(), password.clone());
    }
    server
}

/// A message for a TCP stream: ChannelData padded to four bytes (RFC 8656 §12.5).
pub fn frame_for_stream(mut bytes: Vec<u8>) -> Vec<u8> {
    if bytes.first().is_some_and(|b| b & 0xC0 == 0x40) {
        bytes.resize(bytes.len().div_ceil(4) * 4, 0);
    }
    bytes
}

/// Takes every complete frame off the front of a client's stream: STUN messages by their
/// length, ChannelData by its own plus padding (returned without it). Bytes that frame as
/// neither are dropped with everything after them (the client is ours, and never sends any).
fn take_frames(buffer: &mut Vec<u8>) -> Vec<Vec<u8>> {
    let mut frames = Vec::new();
    let mut at = 0;
    while buffer.len() - at >= 4 {
        let b = &buffer[at..];
        let length = usize::from(u16::from_be_bytes([b[2], b[3]]));
        let (frame, total) = match b[0] >> 6 {
            0 => (20 + length, 20 + length),
            1 => (4 + length, (4 + length).div_ceil(4) * 4),
            _ => {
                buffer.clear();
                return frames;
            }
        };
        if b.len() < total {
            break;
        }
        frames.push(b[..frame].to_vec());
        at += total;
    }
    buffer.drain(..at);
    frames
}
