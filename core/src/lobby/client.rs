//! The client side: a mesh's signals to and from a lobby server's text frames.

use std::collections::HashMap;
use std::time::Instant;

use super::message::{LobbyError, LobbyMessage, MessageKind};
use crate::config::MeshConfig;
use crate::error::{AddPeerError, CreateError, SignalError};
use crate::machine::Machine;
use crate::mesh::Mesh;
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
    /// The host sealed the lobby: no one else can join, and the server closes it soon.
    Sealed,
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
}

impl std::fmt::Display for ApplyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ApplyError::AddPeer(e) => write!(f, "lobby peer not added: {e}"),
            ApplyError::Signal(e) => write!(f, "lobby signal refused: {e}"),
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
        }
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
            MessageKind::PeerConnect => LobbyEvent::PeerJoined(peer()?),
            MessageKind::PeerDisconnect => {
                let id = peer()?;
                self.mids.remove(&id);
                LobbyEvent::PeerLeft(id)
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
            LobbyEvent::Assigned { .. } | LobbyEvent::Joined(_) | LobbyEvent::Sealed => Ok(()),
        }
    }
}

/// The first `a=mid:` value of an SDP.
fn first_mid(sdp: &str) -> Option<&str> {
    sdp.lines()
        .find_map(|l| l.strip_prefix("a=mid:"))
        .map(str::trim)
}

#[cfg(test)]
mod tests {
    use super::*;

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
