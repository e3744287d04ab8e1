//! The lobby server as a state machine over connection ids: the behaviour of the Godot demo's
//! `server_node/server.js`, with its limits, timeouts and close reasons.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant};

use super::message::{LobbyError, LobbyMessage, MessageKind};
use crate::transfer::{PeerId, SERVER_ID};

/// The caller's handle for one WebSocket connection.
pub type ConnectionId = u64;

/// Limits and timeouts (defaults are the reference server's).
#[derive(Debug, Clone)]
pub struct LobbyServerConfig {
    /// Connections beyond this are closed at once.
    pub max_peers: usize,
    /// Lobby creations beyond this are refused.
    pub max_lobbies: usize,
    /// A connection that has not joined a lobby by then is closed.
    pub join_timeout: Duration,
    /// A sealed lobby is closed this long after the seal.
    pub seal_close_after: Duration,
}

impl Default for LobbyServerConfig {
    fn default() -> Self {
        LobbyServerConfig {
            max_peers: 4096,
            max_lobbies: 1024,
            join_timeout: Duration::from_secs(1),
            seal_close_after: Duration::from_secs(10),
        }
    }
}

/// What the server wants done on its WebSockets.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum ServerOutput {
    /// Send a text frame.
    Send {
        /// The connection.
        to: ConnectionId,
        /// The frame.
        text: String,
    },
    /// Close the connection with this close code and reason (the server already forgot it).
    Close {
        /// The connection.
        to: ConnectionId,
        /// WebSocket close code: 4000 for protocol errors, 1000 after a seal, 1009 too big.
        code: u16,
        /// Human-readable reason, the reference server's wording.
        reason: &'static str,
    },
}

/// Close reasons, worded as in the reference server.
mod reason {
    pub const NO_LOBBY: &str = "Have not joined lobby yet";
    pub const HOST_DISCONNECTED: &str = "Room host has disconnected";
    pub const ONLY_HOST_CAN_SEAL: &str = "Only host can seal the lobby";
    pub const SEAL_COMPLETE: &str = "Seal complete";
    pub const TOO_MANY_LOBBIES: &str = "Too many lobbies open, disconnecting";
    pub const ALREADY_IN_LOBBY: &str = "Already in a lobby";
    pub const LOBBY_DOES_NOT_EXIST: &str = "Lobby does not exists";
    pub const LOBBY_IS_SEALED: &str = "Lobby is sealed";
    pub const INVALID_FORMAT: &str = "Invalid message format";
    pub const NEED_LOBBY: &str = "Invalid message when not in a lobby";
    pub const INVALID_DEST: &str = "Invalid destination";
    pub const INVALID_CMD: &str = "Invalid command";
    pub const TOO_MANY_PEERS: &str = "Too many peers connected";
    pub const INVALID_TRANSFER_MODE: &str = "Invalid transfer mode, must be text";
    pub const TOO_BIG: &str = "Message too big";
}

const PROTOCOL_ERROR: u16 = 4000;

#[derive(Debug)]
struct Connection {
    /// The id this connection is known by in its lobby, unless it hosts it (then 1).
    peer_id: PeerId,
    lobby: Option<String>,
}

#[derive(Debug)]
struct Lobby {
    host: ConnectionId,
    mesh: bool,
    members: Vec<ConnectionId>,
    sealed: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Deadline {
    Join(ConnectionId),
    SealClose(String),
}

/// The whole signaling server, I/O-free: feed it connection events and text frames, drain
/// [`ServerOutput`]s. Peer ids and lobby names come from a generator seeded by the caller, so
/// the same inputs give the same outputs.
#[derive(Debug)]
pub struct LobbyServer {
    config: LobbyServerConfig,
    rng: u64,
    connections: HashMap<ConnectionId, Connection>,
    lobbies: HashMap<String, Lobby>,
    deadlines: BTreeSet<(Instant, Deadline)>,
    outputs: VecDeque<ServerOutput>,
}

impl LobbyServer {
    /// A server with these limits; `seed` drives peer id and lobby name generation (give it a
    /// random value in production so lobby names are hard to guess).
    pub fn new(config: LobbyServerConfig, seed: u64) -> LobbyServer {
        LobbyServer {
            config,
            rng: seed,
            connections: HashMap::new(),
            lobbies: HashMap::new(),
            deadlines: BTreeSet::new(),
            outputs: VecDeque::new(),
        }
    }

    /// Connections currently open.
    pub fn connection_count(&self) -> usize {
        self.connections.len()
    }

    /// Lobbies currently open.
    pub fn lobby_count(&self) -> usize {
        self.lobbies.len()
    }

    /// A WebSocket connection opened.
    pub fn connect(&mut self, now: Instant, conn: ConnectionId) {
        if self.connections.len() >= self.config.max_peers || self.connections.contains_key(&conn) {
            self.push_close(conn, PROTOCOL_ERROR, reason::TOO_MANY_PEERS);
            return;
        }
        let peer_id = self.fresh_peer_id();
        self.connections.insert(
            conn,
            Connection {
                peer_id,
                lobby: None,
            },
        );
        self.deadlines
            .insert((now + self.config.join_timeout, Deadline::Join(conn)));
    }

    /// A text frame arrived on `conn`. Protocol errors close that connection only.
    pub fn handle_text(&mut self, now: Instant, conn: ConnectionId, text: &str) {
        if !self.connections.contains_key(&conn) {
            return;
        }
        if let Err((code, why)) = self.parse(now, conn, text) {
            self.close(conn, code, why);
        }
    }

    /// A binary frame arrived on `conn`: the protocol is text only.
    pub fn handle_binary(&mut self, conn: ConnectionId) {
        if self.connections.contains_key(&conn) {
            self.close(conn, PROTOCOL_ERROR, reason::INVALID_TRANSFER_MODE);
        }
    }

    /// A frame too large for the transport arrived on `conn`.
    pub fn handle_oversized(&mut self, conn: ConnectionId) {
        if self.connections.contains_key(&conn) {
            self.close(conn, 1009, reason::TOO_BIG);
        }
    }

    /// The connection closed (from either side). Its lobby is told; a host leaving closes
    /// the lobby.
    pub fn disconnect(&mut self, conn: ConnectionId) {
        self.forget(conn);
    }

    /// Fires due timeouts: unjoined connections and sealed lobbies.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some((at, _)) = self.deadlines.first() {
            if *at > now {
                break;
            }
            let Some((_, deadline)) = self.deadlines.pop_first() else {
                break;
            };
            match deadline {
                Deadline::Join(conn) => {
                    if self
                        .connections
                        .get(&conn)
                        .is_some_and(|c| c.lobby.is_none())
                    {
                        self.close(conn, PROTOCOL_ERROR, reason::NO_LOBBY);
                    }
                }
                Deadline::SealClose(name) => {
                    // Every member, host included, gets 1000 "Seal complete" as in the
                    // reference server: the lobby goes as a whole, so the host's close must
                    // not run the "host left" path on the others.
                    if self.lobbies.get(&name).is_some_and(|lobby| lobby.sealed) {
                        self.close_lobby(&name, 1000, reason::SEAL_COMPLETE);
                    }
                }
            }
        }
    }

    /// When [`handle_timeout`](LobbyServer::handle_timeout) should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadlines.first().map(|(at, _)| *at)
    }

    /// The next thing to do on a WebSocket.
    pub fn poll_output(&mut self) -> Option<ServerOutput> {
        self.outputs.pop_front()
    }

    fn parse(
        &mut self,
        now: Instant,
        conn: ConnectionId,
        text: &str,
    ) -> Result<(), (u16, &'static str)> {
        let message = LobbyMessage::decode(text).map_err(|e| match e {
            LobbyError::TooLong(_) => (1009, reason::TOO_BIG),
            LobbyError::UnknownType(_) => (PROTOCOL_ERROR, reason::INVALID_CMD),
            _ => (PROTOCOL_ERROR, reason::INVALID_FORMAT),
        })?;
        if message.id < 0 {
            return Err((PROTOCOL_ERROR, reason::INVALID_FORMAT));
        }
        if message.kind == MessageKind::Join {
            return self.join(now, conn, message.data, message.id == 0);
        }
        let lobby_name = self.connections[&conn]
            .lobby
            .clone()
            .ok_or((PROTOCOL_ERROR, reason::NEED_LOBBY))?;
        match message.kind {
            MessageKind::Seal => self.seal(now, conn, lobby_name),
            MessageKind::Offer | MessageKind::Answer | MessageKind::Candidate => {
                let lobby = &self.lobbies[&lobby_name];
                let dest = if message.id == i64::from(SERVER_ID) {
                    Some(lobby.host)
                } else {
                    lobby.members.iter().copied().find(|m| {
                        *m != lobby.host && i64::from(self.connections[m].peer_id) == message.id
                    })
                };
                let dest = dest.ok_or((PROTOCOL_ERROR, reason::INVALID_DEST))?;
                let from = self.lobby_peer_id(conn);
                let relayed = LobbyMessage::new(message.kind, i64::from(from), message.data);
                self.send(dest, &relayed);
                Ok(())
            }
            _ => Err((PROTOCOL_ERROR, reason::INVALID_CMD)),
        }
    }

    fn join(
        &mut self,
        now: Instant,
        conn: ConnectionId,
        name: String,
        mesh: bool,
    ) -> Result<(), (u16, &'static str)> {
        if self.connections[&conn].lobby.is_some() {
            return Err((PROTOCOL_ERROR, reason::ALREADY_IN_LOBBY));
        }
        let _ = now;
        let name = if name.is_empty() {
            if self.lobbies.len() >= self.config.max_lobbies {
                return Err((PROTOCOL_ERROR, reason::TOO_MANY_LOBBIES));
            }
            let name = self.fresh_lobby_name();
            let lobby = Lobby {
                host: conn,
                mesh,
                members: Vec::new(),
                sealed: false,
            };
            self.lobbies.insert(name.clone(), lobby);
            name
        } else {
            name
        };
        let lobby = self
            .lobbies
            .get(&name)
            .ok_or((PROTOCOL_ERROR, reason::LOBBY_DOES_NOT_EXIST))?;
        if lobby.sealed {
            return Err((PROTOCOL_ERROR, reason::LOBBY_IS_SEALED));
        }
        let (mesh, members) = (lobby.mesh, lobby.members.clone());
        if let Some(c) = self.connections.get_mut(&conn) {
            c.lobby = Some(name.clone());
        }
        let assigned = self.lobby_peer_id(conn);
        self.send(
            conn,
            &LobbyMessage::new(
                MessageKind::Id,
                assigned.into(),
                if mesh { "true" } else { "" },
            ),
        );
        for member in members {
            let theirs = self.lobby_peer_id(member);
            self.send(
                member,
                &LobbyMessage::new(MessageKind::PeerConnect, assigned.into(), ""),
            );
            self.send(
                conn,
                &LobbyMessage::new(MessageKind::PeerConnect, theirs.into(), ""),
            );
        }
        if let Some(lobby) = self.lobbies.get_mut(&name) {
            lobby.members.push(conn);
        }
        self.send(conn, &LobbyMessage::new(MessageKind::Join, 0, name));
        Ok(())
    }

    fn seal(
        &mut self,
        now: Instant,
        conn: ConnectionId,
        name: String,
    ) -> Result<(), (u16, &'static str)> {
        let Some(lobby) = self.lobbies.get_mut(&name) else {
            return Err((PROTOCOL_ERROR, reason::NEED_LOBBY));
        };
        if lobby.host != conn {
            return Err((PROTOCOL_ERROR, reason::ONLY_HOST_CAN_SEAL));
        }
        lobby.sealed = true;
        let members = lobby.members.clone();
        for member in members {
            self.send(member, &LobbyMessage::new(MessageKind::Seal, 0, ""));
        }
        self.deadlines.insert((
            now + self.config.seal_close_after,
            Deadline::SealClose(name),
        ));
        Ok(())
    }

    /// The id `conn` has inside its lobby: 1 for the host.
    fn lobby_peer_id(&self, conn: ConnectionId) -> PeerId {
        let Some(c) = self.connections.get(&conn) else {
            return 0;
        };
        match c.lobby.as_ref().and_then(|name| self.lobbies.get(name)) {
            Some(lobby) if lobby.host == conn => SERVER_ID,
            _ => c.peer_id,
        }
    }

    fn close(&mut self, conn: ConnectionId, code: u16, reason: &'static str) {
        self.forget(conn);
        self.push_close(conn, code, reason);
    }

    /// Closes every member of `name` with the same code and reason, and forgets the lobby.
    fn close_lobby(&mut self, name: &str, code: u16, reason: &'static str) {
        let Some(lobby) = self.lobbies.remove(name) else {
            return;
        };
        for member in lobby.members {
            self.connections.remove(&member);
            self.push_close(member, code, reason);
        }
    }

    fn push_close(&mut self, conn: ConnectionId, code: u16, reason: &'static str) {
        self.outputs.push_back(ServerOutput::Close {
            to: conn,
            code,
            reason,
        });
    }

    /// Removes `conn`, tells its lobby, and closes the lobby if it was the host.
    fn forget(&mut self, conn: ConnectionId) {
        let Some(lobby_name) = self.connections.get(&conn).map(|c| c.lobby.clone()) else {
            return;
        };
        let leaving = self.lobby_peer_id(conn);
        self.connections.remove(&conn);
        let Some(name) = lobby_name else { return };
        let Some(lobby) = self.lobbies.get_mut(&name) else {
            return;
        };
        lobby.members.retain(|m| *m != conn);
        let was_host = lobby.host == conn;
        let members = lobby.members.clone();
        if was_host {
            self.lobbies.remove(&name);
            for member in members {
                self.connections.remove(&member);
                self.push_close(member, PROTOCOL_ERROR, reason::HOST_DISCONNECTED);
            }
        } else {
            for member in members {
                self.send(
                    member,
                    &LobbyMessage::new(MessageKind::PeerDisconnect, leaving.into(), ""),
                );
            }
        }
    }

    fn send(&mut self, to: ConnectionId, message: &LobbyMessage) {
        self.outputs.push_back(ServerOutput::Send {
            to,
            text: message.encode(),
        });
    }

    /// splitmix64.
    fn next_random(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A random id in 2..=2147483647 not used by another connection (1 is the hosts' id).
    fn fresh_peer_id(&mut self) -> PeerId {
        loop {
            let id = (self.next_random() & 0x7FFF_FFFF) as PeerId;
            if id > SERVER_ID && !self.connections.values().any(|c| c.peer_id == id) {
                return id;
            }
        }
    }

    fn fresh_lobby_name(&mut self) -> String {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
        loop {
            let name: String = (0..16)
                .map(|_| ALPHABET[(self.next_random() % ALPHABET.len() as u64) as usize] as char)
                .collect();
            if !self.lobbies.contains_key(&name) {
                return name;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Harness {
        server: LobbyServer,
        now: Instant,
    }

    impl Harness {
        fn new() -> Harness {
            Harness {
                server: LobbyServer::new(LobbyServerConfig::default(), 7),
                now: Instant::now(),
            }
        }
        fn text(&mut self, conn: ConnectionId, text: &str) -> Vec<ServerOutput> {
            self.server.handle_text(self.now, conn, text);
            self.drain()
        }
        fn drain(&mut self) -> Vec<ServerOutput> {
            std::iter::from_fn(|| self.server.poll_output()).collect()
        }
        fn messages_to(out: &[ServerOutput], conn: ConnectionId) -> Vec<LobbyMessage> {
            out.iter()
                .filter_map(|o| match o {
                    ServerOutput::Send { to, text } if *to == conn => {
                        LobbyMessage::decode(text).ok()
                    }
                    _ => None,
                })
                .collect()
        }
        /// Connects `conn`, joins `lobby`, returns (its peer id, the lobby name).
        fn join(&mut self, conn: ConnectionId, lobby: &str, mesh: bool) -> (i64, String) {
            self.server.connect(self.now, conn);
            let join =
                LobbyMessage::new(MessageKind::Join, if mesh { 0 } else { 1 }, lobby).encode();
            let out = self.text(conn, &join);
            let mine = Self::messages_to(&out, conn);
            let id = mine
                .iter()
                .find(|m| m.kind == MessageKind::Id)
                .expect("ID")
                .id;
            let name = mine
                .iter()
                .find(|m| m.kind == MessageKind::Join)
                .expect("JOIN")
                .data
                .clone();
            (id, name)
        }
    }

    fn closed(out: &[ServerOutput], conn: ConnectionId) -> Option<(u16, &'static str)> {
        out.iter().find_map(|o| match o {
            ServerOutput::Close { to, code, reason } if *to == conn => Some((*code, *reason)),
            _ => None,
        })
    }

    #[test]
    fn join_announces_peers_both_ways_and_the_host_is_1() {
        let mut h = Harness::new();
        let (host, name) = h.join(10, "", true);
        assert_eq!(host, 1);
        assert_eq!(name.len(), 16);
        h.server.connect(h.now, 11);
        let out = h.text(
            11,
            &LobbyMessage::new(MessageKind::Join, 0, name.clone()).encode(),
        );
        let to_new = Harness::messages_to(&out, 11);
        assert_eq!(to_new[0].kind, MessageKind::Id);
        assert_eq!(to_new[0].data, "true");
        let new_id = to_new[0].id;
        assert!(new_id > 1);
        assert_eq!(
            to_new[1],
            LobbyMessage::new(MessageKind::PeerConnect, 1, "")
        );
        assert_eq!(to_new[2], LobbyMessage::new(MessageKind::Join, 0, name));
        assert_eq!(
            Harness::messages_to(&out, 10),
            vec![LobbyMessage::new(MessageKind::PeerConnect, new_id, "")]
        );
    }

    #[test]
    fn signals_are_relayed_with_the_source_id() {
        let mut h = Harness::new();
        let (_, name) = h.join(10, "", false);
        let (b, _) = h.join(11, &name, false);
        let out = h.text(
            11,
            &LobbyMessage::new(MessageKind::Offer, 1, "sdp-b").encode(),
        );
        assert_eq!(
            Harness::messages_to(&out, 10),
            vec![LobbyMessage::new(MessageKind::Offer, b, "sdp-b")]
        );
        let out = h.text(
            10,
            &LobbyMessage::new(MessageKind::Answer, b, "sdp-a").encode(),
        );
        assert_eq!(
            Harness::messages_to(&out, 11),
            vec![LobbyMessage::new(MessageKind::Answer, 1, "sdp-a")]
        );
    }

    #[test]
    fn a_message_for_another_lobby_closes_only_the_sender() {
        let mut h = Harness::new();
        let (_, first) = h.join(10, "", true);
        let (a, _) = h.join(11, &first, true);
        let (_, second) = h.join(20, "", true);
        let (_, _) = h.join(21, &second, true);
        let out = h.text(21, &LobbyMessage::new(MessageKind::Offer, a, "x").encode());
        assert_eq!(closed(&out, 21), Some((4000, reason::INVALID_DEST)));
        assert!(
            Harness::messages_to(&out, 11).is_empty(),
            "nothing crosses lobbies"
        );
        // The other lobby goes on.
        let out = h.text(11, &LobbyMessage::new(MessageKind::Offer, 1, "y").encode());
        assert_eq!(Harness::messages_to(&out, 10).len(), 1);
        assert_eq!(h.server.lobby_count(), 2);
    }

    #[test]
    fn bad_frames_get_a_clear_close_reason() {
        let mut h = Harness::new();
        let (_, name) = h.join(10, "", true);
        h.join(11, &name, true);
        h.join(12, &name, true);
        assert_eq!(
            closed(&h.text(11, "{not json"), 11),
            Some((4000, reason::INVALID_FORMAT))
        );
        assert_eq!(
            closed(&h.text(12, r#"{"type":42,"id":1}"#), 12),
            Some((4000, reason::INVALID_CMD))
        );
        h.server.connect(h.now, 13);
        assert_eq!(
            closed(&h.text(13, r#"{"type":4,"id":1,"data":"x"}"#), 13),
            Some((4000, reason::NEED_LOBBY))
        );
        h.server.connect(h.now, 14);
        let big = format!(r#"{{"type":0,"id":0,"data":"{}"}}"#, "x".repeat(70_000));
        assert_eq!(closed(&h.text(14, &big), 14), Some((1009, reason::TOO_BIG)));
        h.server.connect(h.now, 15);
        h.server.handle_binary(15);
        assert_eq!(
            closed(&h.drain(), 15),
            Some((4000, reason::INVALID_TRANSFER_MODE))
        );
        h.server.connect(h.now, 16);
        assert_eq!(
            closed(&h.text(16, r#"{"type":0,"id":0,"data":"NOPE"}"#), 16),
            Some((4000, reason::LOBBY_DOES_NOT_EXIST))
        );
        let out = h.text(10, r#"{"type":0,"id":0,"data":""}"#);
        assert_eq!(closed(&out, 10), Some((4000, reason::ALREADY_IN_LOBBY)));
    }

    #[test]
    fn a_connection_that_never_joins_is_closed_after_the_join_timeout() {
        let mut h = Harness::new();
        h.server.connect(h.now, 1);
        h.join(2, "", true);
        assert_eq!(
            h.server.poll_timeout(),
            Some(h.now + Duration::from_secs(1))
        );
        h.server.handle_timeout(h.now + Duration::from_millis(999));
        assert!(h.drain().is_empty());
        h.server.handle_timeout(h.now + Duration::from_secs(1));
        let out = h.drain();
        assert_eq!(
            out,
            vec![ServerOutput::Close {
                to: 1,
                code: 4000,
                reason: reason::NO_LOBBY
            }]
        );
        assert_eq!(h.server.connection_count(), 1);
    }

    #[test]
    fn a_leaving_peer_is_announced_and_a_leaving_host_closes_the_lobby() {
        let mut h = Harness::new();
        let (_, name) = h.join(10, "", true);
        let (b, _) = h.join(11, &name, true);
        h.join(12, &name, true);
        h.server.disconnect(11);
        let out = h.drain();
        for conn in [10, 12] {
            assert_eq!(
                Harness::messages_to(&out, conn),
                vec![LobbyMessage::new(MessageKind::PeerDisconnect, b, "")]
            );
        }
        h.server.disconnect(10);
        assert_eq!(
            closed(&h.drain(), 12),
            Some((4000, reason::HOST_DISCONNECTED))
        );
        assert_eq!(h.server.lobby_count(), 0);
        assert_eq!(h.server.connection_count(), 0);
    }

    #[test]
    fn seal_refuses_joins_and_closes_the_lobby_later() {
        let mut h = Harness::new();
        let (_, name) = h.join(10, "", true);
        h.join(11, &name, true);
        h.join(13, &name, true);
        let out = h.text(11, r#"{"type":7,"id":0}"#);
        assert_eq!(closed(&out, 11), Some((4000, reason::ONLY_HOST_CAN_SEAL)));
        let out = h.text(10, r#"{"type":7,"id":0}"#);
        assert_eq!(
            Harness::messages_to(&out, 10),
            vec![LobbyMessage::new(MessageKind::Seal, 0, "")]
        );
        h.server.connect(h.now, 12);
        let out = h.text(12, &LobbyMessage::new(MessageKind::Join, 0, name).encode());
        assert_eq!(closed(&out, 12), Some((4000, reason::LOBBY_IS_SEALED)));
        h.server.handle_timeout(h.now + Duration::from_secs(10));
        let out = h.drain();
        for member in [10, 13] {
            assert_eq!(closed(&out, member), Some((1000, reason::SEAL_COMPLETE)));
            assert!(Harness::messages_to(&out, member).is_empty(), "no PEER_DISCONNECT");
        }
        assert_eq!(h.server.lobby_count(), 0);
    }

    #[test]
    fn peer_ids_are_unique_and_never_0_or_1() {
        let mut h = Harness::new();
        let mut seen = std::collections::HashSet::new();
        for conn in 0..500 {
            h.server.connect(h.now, conn);
            let id = h.server.connections[&conn].peer_id;
            assert!(id > 1);
            assert!(seen.insert(id));
        }
    }
}
