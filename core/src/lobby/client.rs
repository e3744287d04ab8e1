//! The client side: a mesh's signals to and from a lobby server's text frames.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use super::message::{LobbyError, LobbyMessage, MessageKind};
use super::server::{Migration, HELLO_MIGRATE, SUCCESSION_LEN};
use crate::config::MeshConfig;
use crate::error::{AddPeerError, CreateError, SignalError};
use crate::machine::Machine;
use crate::mesh::Mesh;
use crate::multiplayer::{LobbyRequest, MigrationError};
use crate::signal::{OutgoingSignal, Signal};
use crate::transfer::{is_valid_peer_id, Mode, PeerId, SERVER_ID};

/// What a frame from the lobby server means for this peer.
///
/// ```
/// use rtcmesh::lobby::{LobbyClient, LobbyEvent};
///
/// let mut client = LobbyClient::new("", true);
/// // The server's first frames: our id, then the lobby it created for us.
/// assert_eq!(
///     client.handle_text(r#"{"type": 1, "id": 1, "data": "true"}"#)?,
///     LobbyEvent::Assigned { id: 1, mesh: true }
/// );
/// assert_eq!(
///     client.handle_text(r#"{"type": 0, "id": 0, "data": "ABCDEF"}"#)?,
///     LobbyEvent::Joined("ABCDEF".into())
/// );
/// assert_eq!(client.handle_text(r#"{"type": 2, "id": 77, "data": ""}"#)?, LobbyEvent::PeerJoined(77));
/// # Ok::<(), rtcmesh::lobby::LobbyError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LobbyEvent {
    /// The server assigned our peer id; `mesh` says whether the lobby is a mesh lobby. Create
    /// the mesh with [`LobbyClient::create_mesh`].
    Assigned {
        /// Our peer id (1 for the lobby host).
        id: PeerId,
        /// Mesh lobby (`true`) or client/server lobby.
        mesh: bool,
    },
    /// We are in this lobby (its name, to share with others who want to join).
    Joined(String),
    /// Another peer joined the lobby.
    PeerJoined(PeerId),
    /// A peer left the lobby.
    PeerLeft(PeerId),
    /// A signal from another peer.
    Signal {
        /// The sender.
        from: PeerId,
        /// The signal, ready for [`Mesh::handle_signal`].
        signal: Signal,
    },
    /// The host sealed the lobby: no one else can join, and the server closes it soon (in a
    /// migratable lobby it keeps the members that opted in to migration).
    Sealed,
    /// Host migration: the server greeted this connection, which opted in; `migration` says
    /// whether it runs host migrations (HELLO `"migrate/1"`).
    Hello {
        /// The server runs host migrations.
        migration: bool,
    },
    /// Host migration: peer 1 is gone, and the member that was peer `was` is peer 1 from
    /// `epoch` on. Everyone else keeps their id; connect to the new peer 1.
    HostChanged {
        /// The new host's id until now (it goes by 1 from here).
        was: PeerId,
        /// The lobby's epoch from here.
        epoch: u32,
    },
    /// Host migration: the lobby elected us; our id is 1 from `epoch` on. PEER_CONNECTs for
    /// the members we now serve follow.
    BecameHost {
        /// Our id until now.
        was: PeerId,
        /// The lobby's epoch from here.
        epoch: u32,
    },
    /// Host migration: we were the host and are not any more (we handed the lobby over, or
    /// members reported us lost); the member that was `successor` is peer 1 from `epoch` on.
    /// The server closes our WebSocket next.
    NoLongerHost {
        /// The new host's id until now.
        successor: PeerId,
        /// The lobby's epoch from here.
        epoch: u32,
    },
    /// Host migration: the first members in line to become host, in order (sent on joining
    /// a migratable lobby and whenever the line changes).
    Succession {
        /// The lobby's epoch.
        epoch: u32,
        /// Peer ids, the next host first (at most [`SUCCESSION_LEN`]).
        line: Vec<PeerId>,
    },
    /// Short-lived TURN credentials from the signaling server (the connection opted in with
    /// `?turn=1`): create the mesh with `server` in
    /// [`MeshConfig::ice_servers`](crate::MeshConfig::ice_servers);
    /// [`LobbyClient::apply`] hands later ones to the running mesh
    /// ([`Mesh::set_ice_server_credentials`](crate::Mesh::set_ice_server_credentials)). They
    /// expire `ttl` from when they were sent; the server sends fresh ones before that, and on
    /// [`LobbyClient::turn_credentials_request`].
    TurnCredentials {
        /// The TURN server URLs with the minted username and credential.
        server: crate::IceServer,
        /// How long they are valid from now.
        ttl: std::time::Duration,
    },
}

/// Why applying a lobby event to a mesh failed.
///
/// ```
/// use std::time::Instant;
/// use rtcmesh::lobby::{ApplyError, LobbyClient, LobbyEvent};
/// use rtcmesh::{Mesh, MeshConfig};
///
/// let mut mesh = Mesh::create_mesh(3, MeshConfig::default())?;
/// mesh.add_host_candidate("127.0.0.1:5000".parse()?)?;
/// let event = LobbyEvent::PeerJoined(8);
/// LobbyClient::apply(&event, &mut mesh, Instant::now(), 1)?; // adds peer 8
/// assert!(mesh.has_peer(8));
/// let offer = LobbyEvent::Signal { from: 9, signal: rtcmesh::Signal::Offer("v=0".into()) };
/// let refused = LobbyClient::apply(&offer, &mut mesh, Instant::now(), 1);
/// assert!(matches!(refused, Err(ApplyError::Signal(_)))); // nobody added peer 9
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ApplyError {
    /// Adding the announced peer failed.
    AddPeer(AddPeerError),
    /// The mesh refused the signal.
    Signal(SignalError),
    /// The multiplayer layer refused a change of host (host migration).
    Migration(MigrationError),
    /// The mesh refused minted TURN credentials (e.g. for a server it was not created with).
    Credentials(crate::error::CredentialsError),
}

impl std::fmt::Display for ApplyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ApplyError::AddPeer(e) => write!(f, "lobby peer not added: {e}"),
            ApplyError::Signal(e) => write!(f, "lobby signal refused: {e}"),
            ApplyError::Migration(e) => write!(f, "lobby host change refused: {e}"),
            ApplyError::Credentials(e) => write!(f, "lobby TURN credentials refused: {e}"),
        }
    }
}

impl std::error::Error for ApplyError {}

/// One peer's view of the lobby protocol; see the [module docs](super).
///
/// ```
/// use std::time::Instant;
/// use rtcmesh::lobby::{LobbyClient, LobbyEvent};
/// use rtcmesh::{Event, MeshConfig};
///
/// // Your WebSocket to the server carries these text frames; the client does the protocol.
/// let mut lobby = LobbyClient::new("", true);
/// let join = lobby.join_message(); // send first
/// assert!(join.contains(r#""type":0"#));
/// let mut mesh = None;
/// for frame in [r#"{"type":1,"id":2,"data":"true"}"#, r#"{"type":2,"id":1,"data":""}"#] {
///     match lobby.handle_text(frame)? {
///         LobbyEvent::Assigned { id, mesh: is_mesh } => {
///             let mut m = LobbyClient::create_mesh(id, is_mesh, MeshConfig::default())?;
///             m.add_host_candidate("127.0.0.1:5000".parse()?)?;
///             mesh = Some(m);
///         }
///         event => LobbyClient::apply(&event, mesh.as_mut().expect("assigned first"), Instant::now(), 1)?,
///     }
/// }
/// // Peer 1 joined and 2 > 1: our mesh offers; the offer goes out as a frame.
/// let mesh = mesh.as_mut().expect("created");
/// if let Some(Event::Signal(offer)) = mesh.poll_event() {
///     let frame = lobby.signal_message(&offer); // send it on the WebSocket
///     assert!(frame.contains(r#""type":4"#));
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct LobbyClient {
    lobby: String,
    mesh_mode: bool,
    id: Option<PeerId>,
    /// The media id of each peer's data section, read from the SDP, for candidate messages.
    mids: HashMap<PeerId, String>,
    /// What we asked the server for (the URL's `migrate` parameter).
    migration: Migration,
    /// The server said HELLO `"migrate/1"`.
    server_migrates: bool,
    /// The lobby's epoch as far as we know.
    epoch: u32,
    /// Peers the server announced as taking part in migration (PEER_CONNECT data `"m"`).
    migrating_peers: HashSet<PeerId>,
    /// The last line of succession the server sent.
    succession: Vec<PeerId>,
}

impl LobbyClient {
    /// A client that will join `lobby` (`""` creates a new lobby and makes us its host) in mesh
    /// mode or client/server mode.
    pub fn new(lobby: impl Into<String>, mesh_mode: bool) -> LobbyClient {
        LobbyClient {
            lobby: lobby.into(),
            mesh_mode,
            id: None,
            mids: HashMap::new(),
            migration: Migration::Off,
            server_migrates: false,
            epoch: 0,
            migrating_peers: HashSet::new(),
            succession: Vec::new(),
        }
    }

    /// Takes part in host migration: open the WebSocket with [`query`](LobbyClient::query)
    /// on its URL. [`Migration::Eligible`] may become host, [`Migration::Follow`] only
    /// follows. Only client/server lobbies whose host opted in migrate.
    ///
    /// ```
    /// use rtcmesh::lobby::{LobbyClient, LobbyEvent, Migration};
    ///
    /// let mut client = LobbyClient::new("ABC", false).with_migration(Migration::Eligible);
    /// let url = format!("ws://127.0.0.1:9080/?{}", client.query().expect("opted in"));
    /// assert!(url.ends_with("?migrate=1"));
    /// assert_eq!(
    ///     client.handle_text(r#"{"type":8,"id":0,"data":"migrate/1"}"#)?,
    ///     LobbyEvent::Hello { migration: true }
    /// );
    /// client.handle_text(r#"{"type":1,"id":5,"data":""}"#)?; // we are 5
    /// // The host crashed; the lobby elected peer 7, which is peer 1 from epoch 1 on.
    /// assert_eq!(
    ///     client.handle_text(r#"{"type":9,"id":7,"data":"1"}"#)?,
    ///     LobbyEvent::HostChanged { was: 7, epoch: 1 }
    /// );
    /// assert_eq!(client.epoch(), 1);
    /// # Ok::<(), rtcmesh::lobby::LobbyError>(())
    /// ```
    pub fn with_migration(mut self, migration: Migration) -> LobbyClient {
        self.migration = migration;
        self
    }

    /// What this client asked for.
    pub fn migration(&self) -> Migration {
        self.migration
    }

    /// The query to put on the WebSocket URL (`"migrate=1"`), or `None` when the client did
    /// not opt in to migration.
    pub fn query(&self) -> Option<&'static str> {
        self.migration.query()
    }

    /// Whether host migration is on: we opted in and the server said it runs migrations.
    pub fn migration_available(&self) -> bool {
        self.migration != Migration::Off && self.server_migrates
    }

    /// The lobby's epoch as far as we know (0 until its first host change).
    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    /// Whether the server announced `peer` as taking part in migration.
    pub fn peer_migrates(&self, peer: PeerId) -> bool {
        self.migrating_peers.contains(&peer)
    }

    /// The next host if the current one goes, as the server last said.
    pub fn successor(&self) -> Option<PeerId> {
        self.succession.first().copied()
    }

    /// The line of succession the server last sent, the next host first.
    pub fn line_of_succession(&self) -> &[PeerId] {
        &self.succession
    }

    /// The HOST_CHANGE frame a host sends to hand the lobby over: to peer `to`, or with
    /// `None` to whoever is next in line. Send it after everything the game must still tell
    /// the others; the server answers [`LobbyEvent::NoLongerHost`] and closes the WebSocket
    /// (1000), and the others hear of their new host.
    pub fn hand_over_message(&self, to: Option<PeerId>) -> Result<String, LobbyError> {
        if !self.migration_available() {
            return Err(LobbyError::MigrationOff);
        }
        if self.id != Some(SERVER_ID) {
            return Err(LobbyError::Unexpected(MessageKind::HostChange));
        }
        let to = to.map_or(0, i64::from);
        Ok(LobbyMessage::new(MessageKind::HostChange, to, self.epoch.to_string()).encode())
    }

    /// The frame that asks a signaling server for fresh TURN credentials (the connection
    /// opted in with `?turn=1`); they come back as [`LobbyEvent::TurnCredentials`]. A server
    /// limits how often it answers.
    pub fn turn_credentials_request(&self) -> String {
        LobbyMessage::new(MessageKind::TurnCredentials, 0, "").encode()
    }

    /// The HOST_LOST frame a client sends when its path to peer 1 is dead. The server
    /// probes the host; it replaces the host if it does not answer or enough members report
    /// it, and otherwise tells us to connect to it again (PEER_DISCONNECT 1, PEER_CONNECT 1).
    pub fn host_lost_message(&self) -> Result<String, LobbyError> {
        if !self.migration_available() {
            return Err(LobbyError::MigrationOff);
        }
        if matches!(self.id, None | Some(SERVER_ID)) {
            return Err(LobbyError::Unexpected(MessageKind::HostLost));
        }
        Ok(LobbyMessage::new(
            MessageKind::HostLost,
            SERVER_ID.into(),
            self.epoch.to_string(),
        )
        .encode())
    }

    /// The frame for what the multiplayer layer asks of the lobby
    /// ([`MultiplayerEvent::ToLobby`](crate::MultiplayerEvent::ToLobby)): HOST_LOST, or the
    /// host's HOST_CHANGE.
    pub fn request_message(&self, request: &LobbyRequest) -> Result<String, LobbyError> {
        match *request {
            LobbyRequest::HostLost { .. } => self.host_lost_message(),
            LobbyRequest::HandOver { to, .. } => self.hand_over_message(to),
        }
    }

    /// A host-migration frame's epoch, if it is newer than ours.
    fn newer_epoch(&self, data: &str) -> Result<u32, LobbyError> {
        let epoch = LobbyMessage::parse_epoch(data)?;
        if epoch <= self.epoch {
            return Err(LobbyError::StaleEpoch {
                epoch,
                current: self.epoch,
            });
        }
        Ok(epoch)
    }

    /// The JOIN frame to send once the WebSocket is open.
    pub fn join_message(&self) -> String {
        let mode = if self.mesh_mode { 0 } else { 1 };
        LobbyMessage::new(MessageKind::Join, mode, self.lobby.clone()).encode()
    }

    /// The SEAL frame (only the lobby host may send it).
    pub fn seal_message(&self) -> String {
        LobbyMessage::new(MessageKind::Seal, 0, "").encode()
    }

    /// Our peer id, once assigned.
    pub fn id(&self) -> Option<PeerId> {
        self.id
    }

    /// The lobby name (the one joined, once the server confirmed it).
    pub fn lobby(&self) -> &str {
        &self.lobby
    }

    /// Reads one text frame from the server.
    pub fn handle_text(&mut self, text: &str) -> Result<LobbyEvent, LobbyError> {
        let message = LobbyMessage::decode(text)?;
        let peer = || {
            PeerId::try_from(message.id)
                .ok()
                .filter(|&id| is_valid_peer_id(id))
                .ok_or(LobbyError::InvalidPeerId(message.id))
        };
        Ok(match message.kind {
            MessageKind::Id => {
                if self.id.is_some() {
                    return Err(LobbyError::Unexpected(MessageKind::Id));
                }
                let id = peer()?;
                self.id = Some(id);
                LobbyEvent::Assigned {
                    id,
                    mesh: message.data == "true",
                }
            }
            MessageKind::Join => {
                self.lobby = message.data.clone();
                LobbyEvent::Joined(message.data)
            }
            MessageKind::PeerConnect => {
                let id = peer()?;
                if message.data == "m" {
                    self.migrating_peers.insert(id);
                } else {
                    self.migrating_peers.remove(&id);
                }
                LobbyEvent::PeerJoined(id)
            }
            MessageKind::PeerDisconnect => {
                let id = peer()?;
                self.mids.remove(&id);
                self.migrating_peers.remove(&id);
                LobbyEvent::PeerLeft(id)
            }
            MessageKind::Hello => {
                self.server_migrates = message.data.split(',').any(|f| f == HELLO_MIGRATE);
                LobbyEvent::Hello {
                    migration: self.server_migrates,
                }
            }
            MessageKind::HostChange => {
                let was = peer()?;
                let Some(mine) = self.id else {
                    return Err(LobbyError::Unexpected(MessageKind::HostChange));
                };
                let epoch = self.newer_epoch(&message.data)?;
                self.epoch = epoch;
                self.mids.remove(&SERVER_ID);
                if was == SERVER_ID {
                    // Everyone we knew was the old host; the server announces whom we serve.
                    self.id = Some(SERVER_ID);
                    self.migrating_peers.clear();
                    self.mids.clear();
                    LobbyEvent::BecameHost { was: mine, epoch }
                } else if mine == SERVER_ID {
                    LobbyEvent::NoLongerHost {
                        successor: was,
                        epoch,
                    }
                } else {
                    self.migrating_peers.remove(&was);
                    self.migrating_peers.insert(SERVER_ID);
                    self.mids.remove(&was);
                    LobbyEvent::HostChanged { was, epoch }
                }
            }
            MessageKind::Succession => {
                let (epoch, line) = parse_succession(&message.data)?;
                if epoch < self.epoch {
                    return Err(LobbyError::StaleEpoch {
                        epoch,
                        current: self.epoch,
                    });
                }
                self.epoch = epoch;
                self.succession = line.clone();
                LobbyEvent::Succession { epoch, line }
            }
            MessageKind::HostLost => return Err(LobbyError::Unexpected(MessageKind::HostLost)),
            MessageKind::TurnCredentials => {
                let (server, ttl) = parse_turn_credentials(&message.data)?;
                LobbyEvent::TurnCredentials { server, ttl }
            }
            MessageKind::Seal => LobbyEvent::Sealed,
            MessageKind::Offer | MessageKind::Answer => {
                let from = peer()?;
                if let Some(mid) = first_mid(&message.data) {
                    self.mids.insert(from, mid.to_owned());
                }
                let signal = match message.kind {
                    MessageKind::Offer => Signal::Offer(message.data),
                    _ => Signal::Answer(message.data),
                };
                LobbyEvent::Signal { from, signal }
            }
            MessageKind::Candidate => {
                let from = peer()?;
                let (_mid, _index, candidate) = LobbyMessage::parse_candidate(&message.data)?;
                let candidate = candidate.strip_prefix("a=").unwrap_or(candidate);
                LobbyEvent::Signal {
                    from,
                    signal: Signal::Candidate(candidate.to_owned()),
                }
            }
        })
    }

    /// The frame that carries one of the mesh's outgoing signals to its destination.
    pub fn signal_message(&mut self, outgoing: &OutgoingSignal) -> String {
        let to = i64::from(outgoing.to);
        let message = match &outgoing.signal {
            Signal::Offer(sdp) | Signal::Answer(sdp) => {
                if let Some(mid) = first_mid(sdp) {
                    self.mids.insert(outgoing.to, mid.to_owned());
                }
                let kind = match outgoing.signal {
                    Signal::Offer(_) => MessageKind::Offer,
                    _ => MessageKind::Answer,
                };
                LobbyMessage::new(kind, to, sdp.clone())
            }
            Signal::Candidate(candidate) => {
                let mid = self.mids.get(&outgoing.to).map_or("0", String::as_str);
                let data = LobbyMessage::candidate_data(mid, 0, candidate);
                LobbyMessage::new(MessageKind::Candidate, to, data)
            }
        };
        message.encode()
    }

    /// The machine the lobby asks for: `create_mesh(id)` in a mesh lobby, else `create_server()`
    /// for id 1 and `create_client(id)` for the others — what the Godot demo client does.
    pub fn create_mesh(id: PeerId, mesh: bool, config: MeshConfig) -> Result<Mesh, CreateError> {
        if mesh {
            Mesh::create_mesh(id, config)
        } else if id == SERVER_ID {
            Mesh::create_server(config)
        } else {
            Mesh::create_client(id, config)
        }
    }

    /// Applies a lobby event to the machine (a [`Mesh`], or a layer on one such as
    /// [`Multiplayer`](crate::Multiplayer), which sees every command): a peer that joined is
    /// added (with `unreliable_lifetime` ms, Godot's `add_peer` argument), one that left is
    /// removed, and signals are handed over. In client mode only the server (id 1) is added,
    /// since a client talks to the other clients through it.
    pub fn apply<M: Machine>(
        event: &LobbyEvent,
        machine: &mut M,
        now: Instant,
        unreliable_lifetime: i32,
    ) -> Result<(), ApplyError> {
        let mesh = machine.mesh();
        match event {
            LobbyEvent::PeerJoined(id) => {
                if mesh.mode() == Mode::Client && *id != SERVER_ID {
                    return Ok(());
                }
                if *id == mesh.unique_id() || mesh.has_peer(*id) {
                    return Ok(());
                }
                machine
                    .add_peer(now, *id, unreliable_lifetime)
                    .map_err(ApplyError::AddPeer)
            }
            LobbyEvent::PeerLeft(id) => {
                machine.remove_peer(*id);
                Ok(())
            }
            LobbyEvent::Signal { from, signal } => {
                if mesh.mode() == Mode::Client && *from != SERVER_ID {
                    return Ok(());
                }
                machine
                    .handle_signal(now, *from, signal.clone())
                    .map_err(ApplyError::Signal)
            }
            LobbyEvent::HostChanged { .. } => {
                // What a Godot demo client does on PEER_DISCONNECT 1 + PEER_CONNECT 1: drop
                // the old host and connect to the new one (our id is larger: we offer).
                if mesh.mode() != Mode::Client {
                    return Ok(());
                }
                machine.remove_peer(SERVER_ID);
                machine
                    .add_peer(now, SERVER_ID, unreliable_lifetime)
                    .map_err(ApplyError::AddPeer)
            }
            // A machine that becomes host, or steps down, needs its migration layer.
            LobbyEvent::BecameHost { .. } | LobbyEvent::NoLongerHost { .. } => Ok(()),
            LobbyEvent::Assigned { .. }
            | LobbyEvent::Joined(_)
            | LobbyEvent::Sealed
            | LobbyEvent::Hello { .. }
            | LobbyEvent::Succession { .. } => Ok(()),
            // The running mesh takes them for its next allocations on those servers (the ones
            // it has keep theirs).
            LobbyEvent::TurnCredentials { server, .. } => machine
                .mesh_mut()
                .set_ice_server_credentials(now, server)
                .map_err(ApplyError::Credentials),
        }
    }
}

/// SUCCESSION data: `"E:X,Y,Z"` (at most [`SUCCESSION_LEN`] ids are kept).
fn parse_succession(data: &str) -> Result<(u32, Vec<PeerId>), LobbyError> {
    let (epoch, ids) = data.split_once(':').ok_or(LobbyError::InvalidFormat)?;
    let epoch = LobbyMessage::parse_epoch(epoch)?;
    let mut line = Vec::new();
    for id in ids
        .split(',')
        .filter(|s| !s.is_empty())
        .take(SUCCESSION_LEN)
    {
        let n: i64 = id.parse().map_err(|_| LobbyError::InvalidFormat)?;
        let peer = PeerId::try_from(n)
            .ok()
            .filter(|&p| is_valid_peer_id(p))
            .ok_or(LobbyError::InvalidPeerId(n))?;
        line.push(peer);
    }
    Ok((epoch, line))
}

/// The first `a=mid:` value of an SDP.
fn first_mid(sdp: &str) -> Option<&str> {
    sdp.lines()
        .find_map(|l| l.strip_prefix("a=mid:"))
        .map(str::trim)
}

/// The data of a TURN_CREDENTIALS frame: `{"urls": [...], "username", "credential", "ttl"}`,
/// bounded (the URLs by [`crate::MAX_ICE_SERVER_URLS`]).
fn parse_turn_credentials(
    data: &str,
) -> Result<(crate::IceServer, std::time::Duration), LobbyError> {
    #[derive(serde::Deserialize)]
    struct Credentials {
        urls: Vec<String>,
        username: String,
        credential: String,
        ttl: u64,
    }
    let c: Credentials = serde_json::from_str(data).map_err(|_| LobbyError::InvalidFormat)?;
    if c.urls.is_empty() || c.urls.len() > crate::MAX_ICE_SERVER_URLS || c.ttl == 0 {
        return Err(LobbyError::InvalidFormat);
    }
    let server = crate::IceServer {
        urls: c.urls,
        username: c.username,
        credential: c.credential,
    };
    Ok((
        server,
        std::time::Duration::from_secs(c.ttl.min(365 * 86_400)),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turn_credentials_are_read_and_hostile_ones_refused() {
        let frame = |data: &str| LobbyMessage::new(MessageKind::TurnCredentials, 0, data).encode();
        let mut client = LobbyClient::new("", true);
        let good = r#"{"urls": ["turn:10.0.0.1:3478"], "username": "100:a", "credential": "c", "ttl": 60}"#;
        match client.handle_text(&frame(good)) {
            Ok(LobbyEvent::TurnCredentials { server, ttl }) => {
                assert_eq!(server.urls, vec!["turn:10.0.0.1:3478".to_string()]);
                assert_eq!(
                    (server.username.as_str(), server.credential.as_str()),
                    ("100:a", "c")
                );
                assert_eq!(ttl, std::time::Duration::from_secs(60));
            }
            other => panic!("{other:?}"),
        }
        let many = format!(
            r#"{{"urls": [{}], "username": "u", "credential": "c", "ttl": 60}}"#,
            vec!["\"turn:h\""; crate::MAX_ICE_SERVER_URLS + 1].join(",")
        );
        for bad in [
            "not json",
            r#"{"urls": [], "username": "u", "credential": "c", "ttl": 60}"#,
            r#"{"urls": ["turn:h"], "username": "u", "credential": "c", "ttl": 0}"#,
            r#"{"urls": ["turn:h"], "username": "u", "ttl": 60}"#,
            &many,
        ] {
            assert_eq!(
                client.handle_text(&frame(bad)),
                Err(LobbyError::InvalidFormat),
                "{bad}"
            );
        }
        assert_eq!(
            LobbyMessage::decode(&client.turn_credentials_request()).map(|m| m.kind),
            Ok(MessageKind::TurnCredentials)
        );
    }

    #[test]
    fn join_and_assignment() {
        let mut c = LobbyClient::new("", true);
        assert_eq!(c.join_message(), r#"{"type":0,"id":0,"data":""}"#);
        assert_eq!(
            LobbyClient::new("abc", false).join_message(),
            r#"{"type":0,"id":1,"data":"abc"}"#
        );
        let e = c
            .handle_text(r#"{"type":1,"id":1,"data":"true"}"#)
            .expect("id");
        assert_eq!(e, LobbyEvent::Assigned { id: 1, mesh: true });
        assert_eq!(
            c.handle_text(r#"{"type":1,"id":5,"data":""}"#),
            Err(LobbyError::Unexpected(MessageKind::Id))
        );
        assert_eq!(
            c.handle_text(r#"{"type":0,"id":0,"data":"LOBBY"}"#),
            Ok(LobbyEvent::Joined("LOBBY".into()))
        );
        assert_eq!(c.lobby(), "LOBBY");
    }

    #[test]
    fn candidates_carry_the_mid_of_the_sdp() {
        let mut c = LobbyClient::new("", true);
        let offer = OutgoingSignal {
            to: 3,
            signal: Signal::Offer("v=0\r\na=mid:data\r\n".into()),
        };
        assert!(c.signal_message(&offer).contains(r#""type":4,"id":3"#));
        let cand = OutgoingSignal {
            to: 3,
            signal: Signal::Candidate("candidate:1 1 udp 9 127.0.0.1 5 typ host".into()),
        };
        assert_eq!(
            c.signal_message(&cand),
            r#"{"type":6,"id":3,"data":"\ndata\n0\ncandidate:1 1 udp 9 127.0.0.1 5 typ host"}"#
        );
        let got = c
            .handle_text(
                r#"{"type":6,"id":3,"data":"\n0\n0\na=candidate:2 1 udp 9 127.0.0.1 6 typ host"}"#,
            )
            .expect("candidate");
        assert_eq!(
            got,
            LobbyEvent::Signal {
                from: 3,
                signal: Signal::Candidate("candidate:2 1 udp 9 127.0.0.1 6 typ host".into())
            }
        );
    }

    #[test]
    fn bad_ids_are_refused() {
        let mut c = LobbyClient::new("", true);
        assert_eq!(
            c.handle_text(r#"{"type":2,"id":0}"#),
            Err(LobbyError::InvalidPeerId(0))
        );
        assert_eq!(
            c.handle_text(r#"{"type":4,"id":4294967296,"data":"x"}"#),
            Err(LobbyError::InvalidPeerId(4294967296))
        );
    }

    fn migrating_client(id: i64) -> LobbyClient {
        let mut c = LobbyClient::new("L", false).with_migration(Migration::Eligible);
        assert_eq!(
            c.handle_text(r#"{"type":8,"id":0,"data":"migrate/1,future/2"}"#),
            Ok(LobbyEvent::Hello { migration: true })
        );
        c.handle_text(&format!(r#"{{"type":1,"id":{id},"data":""}}"#))
            .expect("id");
        c
    }

    #[test]
    fn host_changes_are_typed_and_stale_epochs_refused() {
        let mut c = migrating_client(5);
        assert_eq!(
            c.host_lost_message(),
            Ok(r#"{"type":10,"id":1,"data":"0"}"#.into())
        );
        assert_eq!(
            c.hand_over_message(None),
            Err(LobbyError::Unexpected(MessageKind::HostChange)),
            "only the host hands over"
        );
        assert_eq!(
            c.handle_text(r#"{"type":9,"id":7,"data":"1"}"#),
            Ok(LobbyEvent::HostChanged { was: 7, epoch: 1 })
        );
        assert_eq!(
            c.handle_text(r#"{"type":9,"id":8,"data":"1"}"#),
            Err(LobbyError::StaleEpoch {
                epoch: 1,
                current: 1
            })
        );
        assert_eq!(
            c.handle_text(r#"{"type":9,"id":8,"data":"x"}"#),
            Err(LobbyError::InvalidEpoch)
        );
        assert_eq!(
            c.handle_text(r#"{"type":11,"id":0,"data":"2:5,9"}"#),
            Ok(LobbyEvent::Succession {
                epoch: 2,
                line: vec![5, 9]
            })
        );
        assert_eq!(c.successor(), Some(5));
        assert_eq!(
            c.handle_text(r#"{"type":9,"id":1,"data":"3"}"#),
            Ok(LobbyEvent::BecameHost { was: 5, epoch: 3 })
        );
        assert_eq!(c.id(), Some(1));
        assert_eq!(
            c.hand_over_message(Some(9)),
            Ok(r#"{"type":9,"id":9,"data":"3"}"#.into())
        );
        assert_eq!(
            c.handle_text(r#"{"type":9,"id":9,"data":"4"}"#),
            Ok(LobbyEvent::NoLongerHost {
                successor: 9,
                epoch: 4
            })
        );
        for bad in ["", "1", ":1", "1:0", "1:x", "1:2147483648"] {
            let frame = format!(r#"{{"type":11,"id":0,"data":"{bad}"}}"#);
            assert!(c.handle_text(&frame).is_err(), "{bad:?}");
        }
        assert_eq!(
            c.handle_text(r#"{"type":10,"id":1,"data":"0"}"#),
            Err(LobbyError::Unexpected(MessageKind::HostLost))
        );
    }

    #[test]
    fn without_opting_in_there_is_no_migration_to_ask_for() {
        let mut c = LobbyClient::new("L", false);
        c.handle_text(r#"{"type":1,"id":1,"data":""}"#).expect("id");
        assert_eq!(c.query(), None);
        assert_eq!(c.hand_over_message(None), Err(LobbyError::MigrationOff));
        // Opted in, but the server never said HELLO migrate/1 (the reference server).
        let mut c = LobbyClient::new("L", false).with_migration(Migration::Follow);
        c.handle_text(r#"{"type":1,"id":4,"data":""}"#).expect("id");
        assert_eq!(c.query(), Some("migrate=follow"));
        assert_eq!(c.host_lost_message(), Err(LobbyError::MigrationOff));
        assert!(LobbyError::MigrationOff.to_string().contains("?migrate=1"));
    }

    #[test]
    fn a_client_mesh_follows_a_host_change_by_connecting_to_the_new_1() {
        let now = Instant::now();
        let mut mesh = LobbyClient::create_mesh(5, false, MeshConfig::default()).expect("client");
        mesh.add_host_candidate("127.0.0.1:5000".parse().expect("addr"))
            .expect("candidate");
        LobbyClient::apply(&LobbyEvent::PeerJoined(1), &mut mesh, now, 1).expect("added");
        while mesh.poll_event().is_some() {}
        let change = LobbyEvent::HostChanged { was: 7, epoch: 1 };
        LobbyClient::apply(&change, &mut mesh, now, 1).expect("followed");
        assert!(mesh.has_peer(1));
        let offered = std::iter::from_fn(|| mesh.poll_event()).any(|e| {
            matches!(
                e,
                crate::Event::Signal(OutgoingSignal {
                    to: 1,
                    signal: Signal::Offer(_)
                })
            )
        });
        assert!(offered, "a fresh offer to the new peer 1");
    }

    #[test]
    fn client_mode_adds_only_the_server() {
        let now = Instant::now();
        let mut mesh = LobbyClient::create_mesh(5, false, MeshConfig::default()).expect("client");
        LobbyClient::apply(&LobbyEvent::PeerJoined(7), &mut mesh, now, 1).expect("ignored");
        assert!(!mesh.has_peer(7));
        LobbyClient::apply(&LobbyEvent::PeerJoined(1), &mut mesh, now, 1).expect("added");
        assert!(mesh.has_peer(1));
        LobbyClient::apply(&LobbyEvent::PeerLeft(1), &mut mesh, now, 1).expect("removed");
        assert!(!mesh.has_peer(1));
    }
}
