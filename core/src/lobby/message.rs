//! The JSON text frames of the Godot demo signaling protocol.

use std::fmt;

use serde::Serialize;
use serde_json::Value;

/// The longest text frame accepted (an SDP is a few KiB; 64 KiB leaves ample room).
pub const MAX_MESSAGE_LEN: usize = 64 * 1024;

/// The message types, numbered as in the Godot demo.
///
/// ```
/// use rtcmesh::lobby::{LobbyMessage, MessageKind};
///
/// let seal = LobbyMessage::new(MessageKind::Seal, 0, "");
/// assert_eq!(MessageKind::Seal as u8, 7); // the Godot demo's numbers
/// assert_eq!(LobbyMessage::decode(&seal.encode())?.kind, MessageKind::Seal);
/// # Ok::<(), rtcmesh::lobby::LobbyError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
#[non_exhaustive]
pub enum MessageKind {
    /// Join (or create) a lobby; the server's reply carries the lobby name.
    Join = 0,
    /// The server tells a client its peer id.
    Id = 1,
    /// A peer joined the lobby.
    PeerConnect = 2,
    /// A peer left the lobby.
    PeerDisconnect = 3,
    /// An SDP offer.
    Offer = 4,
    /// An SDP answer.
    Answer = 5,
    /// A trickled ICE candidate.
    Candidate = 6,
    /// The host sealed the lobby.
    Seal = 7,
    /// Server → client, to connections that opted in to host migration only: what the server
    /// can do (`"migrate/1"`: it runs host migrations). The reference server never sends it.
    Hello = 8,
    /// Host migration. Server → client: peer 1 is gone and `id` is peer 1 from the epoch in
    /// `data` (`id` 1: you are). Host → server: hand the lobby over to `id` (0: the lobby
    /// picks), `data` the current epoch.
    HostChange = 9,
    /// Client → server: "my path to peer 1 is dead" (`id` 1, `data` the current epoch).
    HostLost = 10,
    /// Server → client: the line of succession, `"E:X,Y,Z"` (epoch, then the first members
    /// in line to become host, in order).
    Succession = 11,
    /// Server → client, to connections that opted in with `?turn=1` only: short-lived TURN
    /// credentials, `data` a JSON object `{"urls": [...], "username": "...", "credential":
    /// "...", "ttl": seconds}`. Client → server: ask for fresh ones (`data` empty). The
    /// reference server never sends it (and refuses it from a client as an invalid command).
    TurnCredentials = 12,
}

impl MessageKind {
    fn from_number(n: i64) -> Option<MessageKind> {
        Some(match n {
            0 => MessageKind::Join,
            1 => MessageKind::Id,
            2 => MessageKind::PeerConnect,
            3 => MessageKind::PeerDisconnect,
            4 => MessageKind::Offer,
            5 => MessageKind::Answer,
            6 => MessageKind::Candidate,
            7 => MessageKind::Seal,
            8 => MessageKind::Hello,
            9 => MessageKind::HostChange,
            10 => MessageKind::HostLost,
            11 => MessageKind::Succession,
            12 => MessageKind::TurnCredentials,
            _ => return None,
        })
    }
}

/// One protocol message.
///
/// ```
/// use rtcmesh::lobby::{LobbyMessage, MessageKind};
///
/// let text = LobbyMessage::new(MessageKind::Join, 0, "").encode(); // create a mesh lobby
/// let message = LobbyMessage::decode(&text)?;
/// assert_eq!((message.kind, message.id, message.data.as_str()), (MessageKind::Join, 0, ""));
/// let candidate = LobbyMessage::candidate_data("0", 0, "candidate:1 1 udp 1 127.0.0.1 5000 typ host");
/// assert_eq!(LobbyMessage::parse_candidate(&candidate)?, ("0", 0, "candidate:1 1 udp 1 127.0.0.1 5000 typ host"));
/// # Ok::<(), rtcmesh::lobby::LobbyError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LobbyMessage {
    /// What it is.
    pub kind: MessageKind,
    /// A peer id (destination when a client sends, source when the server relays), or the
    /// JOIN mode flag.
    pub id: i64,
    /// Lobby name, SDP or candidate text; empty when unused.
    pub data: String,
}

/// Why a frame was refused.
///
/// ```
/// use rtcmesh::lobby::{LobbyError, LobbyMessage};
///
/// assert_eq!(LobbyMessage::decode(r#"{"type": 99, "id": 0}"#), Err(LobbyError::UnknownType(99)));
/// assert_eq!(LobbyMessage::decode("[]"), Err(LobbyError::InvalidFormat));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LobbyError {
    /// The frame is longer than [`MAX_MESSAGE_LEN`].
    TooLong(usize),
    /// Not a JSON object with numeric `type` and `id` (and string `data`, if present).
    InvalidFormat,
    /// `type` is not one of the message types (0–7 of the Godot demo, 8–11 of host migration).
    UnknownType(i64),
    /// A message that makes no sense in the current state (e.g. a second ID).
    Unexpected(MessageKind),
    /// An id outside 1..=2147483647 where a peer id is required.
    InvalidPeerId(i64),
    /// A candidate whose data is not `"\n<mid>\n<index>\n<candidate>"`.
    InvalidCandidate,
    /// A host-migration frame whose epoch is not a number in 0..=4294967295.
    InvalidEpoch,
    /// A host-migration frame for an epoch that is already over (the server moved on; the
    /// frame was in flight or repeated). Nothing changed; it is safe to ignore.
    StaleEpoch {
        /// The frame's epoch.
        epoch: u32,
        /// The epoch this side is in.
        current: u32,
    },
    /// Host migration is not on for this connection (it did not opt in, or the server did not
    /// say HELLO `"migrate/1"`).
    MigrationOff,
}

impl fmt::Display for LobbyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LobbyError::TooLong(n) => {
                write!(
                    f,
                    "signaling message of {n} bytes exceeds {MAX_MESSAGE_LEN}"
                )
            }
            LobbyError::InvalidFormat => f.write_str("invalid message format"),
            LobbyError::UnknownType(t) => write!(f, "unknown message type {t}"),
            LobbyError::Unexpected(k) => write!(f, "unexpected {k:?} message"),
            LobbyError::InvalidPeerId(id) => write!(f, "invalid peer id {id}"),
            LobbyError::InvalidCandidate => {
                f.write_str("candidate data is not \"\\n<mid>\\n<index>\\n<candidate>\"")
            }
            LobbyError::InvalidEpoch => {
                f.write_str("host-migration epoch is not a number in 0..=4294967295")
            }
            LobbyError::StaleEpoch { epoch, current } => write!(
                f,
                "host-migration frame for epoch {epoch}, already in epoch {current}: ignore it"
            ),
            LobbyError::MigrationOff => f.write_str(
                "host migration is off: open the WebSocket with ?migrate=1 \
                 (LobbyClient::with_migration) on a server that answers HELLO migrate/1",
            ),
        }
    }
}

impl std::error::Error for LobbyError {}

#[derive(Serialize)]
struct Outgoing<'a> {
    #[serde(rename = "type")]
    kind: u8,
    id: i64,
    data: &'a str,
}

/// JSON numbers as Godot and the reference server read them: integers, or floats rounded down.
fn integer(n: &serde_json::Number) -> Option<i64> {
    n.as_i64().or_else(|| {
        n.as_f64()
            .filter(|f| f.is_finite() && f.abs() < 9.0e15)
            .map(|f| f.floor() as i64)
    })
}

impl LobbyMessage {
    /// A message with the given parts.
    pub fn new(kind: MessageKind, id: i64, data: impl Into<String>) -> LobbyMessage {
        LobbyMessage {
            kind,
            id,
            data: data.into(),
        }
    }

    /// The JSON text frame.
    pub fn encode(&self) -> String {
        let out = Outgoing {
            kind: self.kind as u8,
            id: self.id,
            data: &self.data,
        };
        // Serializing a struct of integers and a string cannot fail.
        serde_json::to_string(&out).unwrap_or_default()
    }

    /// Parses a JSON text frame.
    pub fn decode(text: &str) -> Result<LobbyMessage, LobbyError> {
        if text.len() > MAX_MESSAGE_LEN {
            return Err(LobbyError::TooLong(text.len()));
        }
        let value: Value = serde_json::from_str(text).map_err(|_| LobbyError::InvalidFormat)?;
        let Value::Object(fields) = value else {
            return Err(LobbyError::InvalidFormat);
        };
        let number = |name| match fields.get(name) {
            Some(Value::Number(n)) => integer(n).ok_or(LobbyError::InvalidFormat),
            _ => Err(LobbyError::InvalidFormat),
        };
        let (kind, id) = (number("type")?, number("id")?);
        let data = match fields.get("data") {
            Some(Value::String(s)) => s.clone(),
            None | Some(Value::Null) => String::new(),
            Some(_) => return Err(LobbyError::InvalidFormat),
        };
        let kind = MessageKind::from_number(kind).ok_or(LobbyError::UnknownType(kind))?;
        Ok(LobbyMessage { kind, id, data })
    }

    /// The data of a CANDIDATE message: `"\n<mid>\n<index>\n<candidate>"`.
    pub fn candidate_data(mid: &str, index: u32, candidate: &str) -> String {
        format!("\n{mid}\n{index}\n{candidate}")
    }

    /// Reads the epoch a host-migration frame carries in its data (a decimal `u32`).
    pub fn parse_epoch(data: &str) -> Result<u32, LobbyError> {
        if data.is_empty() || data.len() > 10 || !data.bytes().all(|b| b.is_ascii_digit()) {
            return Err(LobbyError::InvalidEpoch);
        }
        data.parse().map_err(|_| LobbyError::InvalidEpoch)
    }

    /// Splits CANDIDATE data into (mid, m-line index, candidate), as Godot's demo client does.
    pub fn parse_candidate(data: &str) -> Result<(&str, u32, &str), LobbyError> {
        let mut parts = data.split('\n').filter(|p| !p.is_empty());
        let (Some(mid), Some(index), Some(candidate), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(LobbyError::InvalidCandidate);
        };
        let index = index
            .trim()
            .parse()
            .map_err(|_| LobbyError::InvalidCandidate)?;
        Ok((mid, index, candidate))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_like_the_godot_demo() {
        let m = LobbyMessage::new(MessageKind::Offer, 7, "v=0\r\n");
        assert_eq!(m.encode(), r#"{"type":4,"id":7,"data":"v=0\r\n"}"#);
        assert_eq!(LobbyMessage::decode(&m.encode()), Ok(m));
    }

    #[test]
    fn accepts_floats_and_missing_data_like_the_reference_server() {
        let m = LobbyMessage::decode(r#"{"type":2.0,"id":1234.7}"#).expect("decode");
        assert_eq!(m, LobbyMessage::new(MessageKind::PeerConnect, 1234, ""));
    }

    #[test]
    fn refuses_bad_frames_with_typed_errors() {
        assert_eq!(LobbyMessage::decode("nope"), Err(LobbyError::InvalidFormat));
        assert_eq!(
            LobbyMessage::decode(r#"{"type":"4","id":1}"#),
            Err(LobbyError::InvalidFormat)
        );
        assert_eq!(
            LobbyMessage::decode(r#"{"type":99,"id":1}"#),
            Err(LobbyError::UnknownType(99))
        );
        assert_eq!(
            LobbyMessage::decode(r#"[4,1,""]"#),
            Err(LobbyError::InvalidFormat)
        );
        let long = format!(
            r#"{{"type":4,"id":1,"data":"{}"}}"#,
            "x".repeat(MAX_MESSAGE_LEN)
        );
        assert!(matches!(
            LobbyMessage::decode(&long),
            Err(LobbyError::TooLong(_))
        ));
    }

    #[test]
    fn host_migration_types_and_epochs() {
        let m = LobbyMessage::decode(r#"{"type":9,"id":1,"data":"3"}"#).expect("decode");
        assert_eq!(m, LobbyMessage::new(MessageKind::HostChange, 1, "3"));
        assert_eq!(LobbyMessage::parse_epoch("4294967295"), Ok(u32::MAX));
        for bad in ["", "-1", "+1", " 1", "4294967296", "1e3", "99999999999"] {
            assert_eq!(
                LobbyMessage::parse_epoch(bad),
                Err(LobbyError::InvalidEpoch),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn candidate_data_round_trips() {
        let data = LobbyMessage::candidate_data("0", 0, "candidate:1 1 udp 1 127.0.0.1 9 typ host");
        assert_eq!(data, "\n0\n0\ncandidate:1 1 udp 1 127.0.0.1 9 typ host");
        assert_eq!(
            LobbyMessage::parse_candidate(&data),
            Ok(("0", 0, "candidate:1 1 udp 1 127.0.0.1 9 typ host"))
        );
        assert_eq!(
            LobbyMessage::parse_candidate("\n0\nx\nc"),
            Err(LobbyError::InvalidCandidate)
        );
        assert_eq!(
            LobbyMessage::parse_candidate("\n0\n0"),
            Err(LobbyError::InvalidCandidate)
        );
    }
}
