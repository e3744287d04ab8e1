//! SceneMultiplayer's wire bytes (Godot 4 `modules/multiplayer/scene_multiplayer.{h,cpp}`).
//!
//! Every packet starts with one command byte: the low 3 bits ([`CMD_MASK`]) are the command, the
//! high 4 bits are flags a subsystem may set (ignored here, as Godot ignores them when matching).
//!
//! | packet | bytes |
//! |---|---|
//! | RAW (`send_bytes`) | `[3][payload…]` |
//! | AUTH data | `[7][0][data…]` (no peer field) |
//! | AUTH complete | `[7][0]` |
//! | ADD_PEER | `[7][1][id i32 LE]` |
//! | DEL_PEER | `[7][2][id i32 LE]` |
//! | RELAY | `[7][3][peer i32 LE][inner packet…]`: `peer` is the destination (`0`, `n`, `-n`) from a client, the true source from the server |
//! | host migration (rtcmesh only) | `[7][0xE0..=0xE5][peer i32 LE][epoch u32 LE]`, see [`Migration`] |
//!
//! The host-migration commands live in a private SYS range that Godot does not know: its
//! `_process_sys` fails on them, so they go only to peers the lobby marked as opted in.
//!
//! Decoding never panics: every byte string maps to a [`Message`] or a [`WireError`].

use std::fmt;

use crate::transfer::PeerId;

/// Mask of the command bits in the first byte (Godot's `CMD_MASK`).
pub const CMD_MASK: u8 = 7;
/// Godot's `NETWORK_COMMAND_RAW`: the payload of `send_bytes`.
pub const COMMAND_RAW: u8 = 3;
/// Godot's `NETWORK_COMMAND_SYS`: auth, peer exchange and relay.
pub const COMMAND_SYS: u8 = 7;
/// `SYS_COMMAND_AUTH`.
pub const SYS_AUTH: u8 = 0;
/// `SYS_COMMAND_ADD_PEER`.
pub const SYS_ADD_PEER: u8 = 1;
/// `SYS_COMMAND_DEL_PEER`.
pub const SYS_DEL_PEER: u8 = 2;
/// `SYS_COMMAND_RELAY`.
pub const SYS_RELAY: u8 = 3;
/// Godot's `SYS_CMD_SIZE`: command, sys command and a peer id.
pub const SYS_CMD_SIZE: usize = 6;
/// Bytes `send_bytes` adds to a payload sent directly (`[3]`).
pub const RAW_OVERHEAD: usize = 1;
/// Bytes `send_bytes` adds to a payload relayed through the server (`[7][3][peer][3]`).
pub const RELAY_OVERHEAD: usize = SYS_CMD_SIZE + RAW_OVERHEAD;
/// `[7][0]`: "this side completed authentication".
pub const AUTH_COMPLETE: [u8; 2] = [COMMAND_SYS, SYS_AUTH];
/// The first SYS command of rtcmesh's private host-migration range.
pub const SYS_MIGRATION_FIRST: u8 = 0xE0;
/// Bytes of a host-migration command: the SYS header and an epoch.
pub const MIGRATION_SIZE: usize = SYS_CMD_SIZE + 4;

/// A host-migration command (rtcmesh ↔ rtcmesh only): `[7][cmd][peer i32 LE][epoch u32 LE]`.
/// `peer` names the successor where one is meant, else 0; `epoch` is the sender's migration
/// epoch. Bytes after the epoch are ignored (room for later versions).
///
/// ```
/// use rtcmesh::multiplayer::wire::{self, Message, Migration};
///
/// let bytes = wire::migration(Migration::HostLeaving, 5, 2); // "I leave; 5 succeeds me"
/// assert_eq!(bytes, [7, 0xE1, 5, 0, 0, 0, 2, 0, 0, 0]);
/// assert_eq!(
///     wire::decode(&bytes),
///     Ok(Message::Migration { command: Migration::HostLeaving, peer: 5, epoch: 2 })
/// );
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Migration {
    /// `0xE0`, host → client, unreliable: "I am alive" (sent only when nothing else was sent
    /// for a keepalive interval), with the host's current successor.
    HostAlive,
    /// `0xE1`, host → client, once on every reliable channel: the host is leaving, `peer`
    /// succeeds it. Everything the host sent on a channel before it arrives before it.
    HostLeaving,
    /// `0xE2`, client → host, once on every reliable channel, in answer to `HostLeaving`: the
    /// client sends the host nothing more (everything it sent came first).
    Stopped,
    /// `0xE3`, host → client, once on every reliable channel, after every client stopped:
    /// nothing more comes from the old host, relayed or its own.
    HostDone,
    /// `0xE4`, new host → survivor, after the peer exchange: every peer still in the game was
    /// announced with ADD_PEER; the survivor forgets those that were not.
    Roster,
    /// `0xE5`, client → host, unreliable: "are you there?" (sent only when the client sent the
    /// host nothing else for a keepalive interval). The host does nothing with it; its SCTP
    /// acknowledges it, and that acknowledgement reaches the client even while the host's own
    /// packets wait for a retransmission timeout (up to 3 s on a new connection), when its
    /// `HostAlive` cannot.
    ClientAlive,
}

impl Migration {
    /// The SYS command byte.
    pub fn command(self) -> u8 {
        SYS_MIGRATION_FIRST
            + match self {
                Migration::HostAlive => 0,
                Migration::HostLeaving => 1,
                Migration::Stopped => 2,
                Migration::HostDone => 3,
                Migration::Roster => 4,
                Migration::ClientAlive => 5,
            }
    }

    fn from_command(cmd: u8) -> Option<Migration> {
        Some(match cmd.checked_sub(SYS_MIGRATION_FIRST)? {
            0 => Migration::HostAlive,
            1 => Migration::HostLeaving,
            2 => Migration::Stopped,
            3 => Migration::HostDone,
            4 => Migration::Roster,
            5 => Migration::ClientAlive,
            _ => return None,
        })
    }
}

/// One decoded SceneMultiplayer packet, borrowing from the bytes it was decoded from.
///
/// ```
/// use rtcmesh::multiplayer::wire::{self, Message};
///
/// let mut packet = Vec::new();
/// wire::encode_raw(b"hello", &mut packet); // what send_bytes puts on the wire
/// assert_eq!(packet, b"\x03hello");
/// assert_eq!(wire::decode(&packet), Ok(Message::Raw(b"hello")));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Message<'a> {
    /// `send_bytes` payload (never empty).
    Raw(&'a [u8]),
    /// Authentication data; empty means "the remote side completed authentication".
    Auth(&'a [u8]),
    /// The server announces a peer.
    AddPeer(PeerId),
    /// The server announces that a peer left.
    DelPeer(PeerId),
    /// A relayed packet: `peer` is the destination (client → server) or the source
    /// (server → client); `inner` is never empty.
    Relay {
        /// Destination or source id, by direction.
        peer: PeerId,
        /// The packet being relayed.
        inner: &'a [u8],
    },
    /// A Godot command this layer does not implement (RPC, path cache, spawn, despawn, sync):
    /// the command number (0..=6 except 3).
    Unsupported(u8),
    /// A host-migration command (rtcmesh's private SYS range).
    Migration {
        /// Which one.
        command: Migration,
        /// The successor it names, or 0.
        peer: PeerId,
        /// The sender's migration epoch.
        epoch: u32,
    },
}

/// Why bytes are not a valid SceneMultiplayer packet.
///
/// ```
/// use rtcmesh::multiplayer::wire::{self, WireError};
///
/// assert_eq!(wire::decode(&[]), Err(WireError::Empty));
/// assert_eq!(wire::decode(&[3]), Err(WireError::EmptyRaw)); // RAW with no payload
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum WireError {
    /// Zero bytes.
    Empty,
    /// A RAW command with no payload.
    EmptyRaw,
    /// A SYS command shorter than its layout needs (the length is given).
    SysTooShort(usize),
    /// A SYS command other than AUTH, ADD_PEER, DEL_PEER, RELAY and the host-migration ones.
    UnknownSys(u8),
    /// A RELAY with no inner packet.
    EmptyRelay,
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::Empty => f.write_str("empty packet"),
            WireError::EmptyRaw => f.write_str("RAW packet without payload"),
            WireError::SysTooShort(n) => write!(f, "SYS packet of {n} bytes is too short"),
            WireError::UnknownSys(c) => write!(f, "unknown SYS command {c}"),
            WireError::EmptyRelay => f.write_str("RELAY packet without an inner packet"),
        }
    }
}

impl std::error::Error for WireError {}

/// Whether `bytes` is a SYS command (whatever follows).
pub fn is_sys(bytes: &[u8]) -> bool {
    bytes.first().is_some_and(|b| b & CMD_MASK == COMMAND_SYS)
}

/// Decodes one packet.
pub fn decode(bytes: &[u8]) -> Result<Message<'_>, WireError> {
    let (&first, rest) = bytes.split_first().ok_or(WireError::Empty)?;
    match first & CMD_MASK {
        COMMAND_RAW if rest.is_empty() => Err(WireError::EmptyRaw),
        COMMAND_RAW => Ok(Message::Raw(rest)),
        COMMAND_SYS => decode_sys(bytes),
        other => Ok(Message::Unsupported(other)),
    }
}

fn decode_sys(bytes: &[u8]) -> Result<Message<'_>, WireError> {
    match bytes.get(1) {
        None => Err(WireError::SysTooShort(bytes.len())),
        Some(&SYS_AUTH) => Ok(Message::Auth(&bytes[2..])),
        Some(&cmd) => {
            let Some((head, inner)) = bytes.split_first_chunk::<SYS_CMD_SIZE>() else {
                return Err(WireError::SysTooShort(bytes.len()));
            };
            let peer = i32::from_le_bytes([head[2], head[3], head[4], head[5]]);
            if let Some(command) = Migration::from_command(cmd) {
                let Some(epoch) = inner.first_chunk::<4>() else {
                    return Err(WireError::SysTooShort(bytes.len()));
                };
                return Ok(Message::Migration {
                    command,
                    peer,
                    epoch: u32::from_le_bytes(*epoch),
                });
            }
            match cmd {
                SYS_ADD_PEER => Ok(Message::AddPeer(peer)),
                SYS_DEL_PEER => Ok(Message::DelPeer(peer)),
                SYS_RELAY if inner.is_empty() => Err(WireError::EmptyRelay),
                SYS_RELAY => Ok(Message::Relay { peer, inner }),
                other => Err(WireError::UnknownSys(other)),
            }
        }
    }
}

/// `[3][payload…]`, appended to `out`.
pub fn encode_raw(payload: &[u8], out: &mut Vec<u8>) {
    out.reserve(RAW_OVERHEAD + payload.len());
    out.push(COMMAND_RAW);
    out.extend_from_slice(payload);
}

/// `[7][3][peer i32 LE][inner…]`, appended to `out`.
pub fn encode_relay(peer: PeerId, inner: &[u8], out: &mut Vec<u8>) {
    out.reserve(SYS_CMD_SIZE + inner.len());
    out.extend_from_slice(&sys_header(SYS_RELAY, peer));
    out.extend_from_slice(inner);
}

/// `[7][1][id i32 LE]`.
pub fn add_peer(id: PeerId) -> [u8; SYS_CMD_SIZE] {
    sys_header(SYS_ADD_PEER, id)
}

/// `[7][2][id i32 LE]`.
pub fn del_peer(id: PeerId) -> [u8; SYS_CMD_SIZE] {
    sys_header(SYS_DEL_PEER, id)
}

/// `[7][cmd][peer i32 LE][epoch u32 LE]`: a host-migration command.
pub fn migration(command: Migration, peer: PeerId, epoch: u32) -> [u8; MIGRATION_SIZE] {
    let mut out = [0; MIGRATION_SIZE];
    out[..SYS_CMD_SIZE].copy_from_slice(&sys_header(command.command(), peer));
    out[SYS_CMD_SIZE..].copy_from_slice(&epoch.to_le_bytes());
    out
}

/// `[7][0][data…]`, appended to `out` (`data` empty gives [`AUTH_COMPLETE`]).
pub fn encode_auth(data: &[u8], out: &mut Vec<u8>) {
    out.reserve(2 + data.len());
    out.extend_from_slice(&AUTH_COMPLETE);
    out.extend_from_slice(data);
}

fn sys_header(cmd: u8, peer: PeerId) -> [u8; SYS_CMD_SIZE] {
    let p = peer.to_le_bytes();
    [COMMAND_SYS, cmd, p[0], p[1], p[2], p[3]]
}

#[cfg(test)]
mod tests {
    //! Fixed vectors built by hand from the layout in Godot's `scene_multiplayer.cpp`.
    use super::*;

    fn raw(payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_raw(payload, &mut out);
        out
    }

    fn relay(peer: PeerId, inner: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_relay(peer, inner, &mut out);
        out
    }

    #[test]
    fn raw_is_command_3_then_the_payload() {
        assert_eq!(raw(&[1, 2, 3]), [0x03, 1, 2, 3]);
        assert_eq!(decode(&[0x03, 1, 2, 3]), Ok(Message::Raw(&[1, 2, 3])));
    }

    #[test]
    fn client_relaying_1_2_3_to_peer_7() {
        // What the client sends to the server: SYS, RELAY, destination 7 (LE), then RAW [1,2,3].
        let sent = relay(7, &raw(&[1, 2, 3]));
        assert_eq!(sent, [0x07, 0x03, 0x07, 0x00, 0x00, 0x00, 0x03, 1, 2, 3]);
        assert_eq!(
            decode(&sent),
            Ok(Message::Relay {
                peer: 7,
                inner: &[0x03, 1, 2, 3]
            })
        );
    }

    #[test]
    fn peer_7_receiving_1_2_3_relayed_from_peer_2() {
        // What the server forwards to peer 7: the destination replaced by the true source.
        let forwarded = [0x07, 0x03, 0x02, 0x00, 0x00, 0x00, 0x03, 1, 2, 3];
        assert_eq!(relay(2, &raw(&[1, 2, 3])), forwarded);
        let Ok(Message::Relay { peer, inner }) = decode(&forwarded) else {
            panic!("not a relay");
        };
        assert_eq!(peer, 2);
        assert_eq!(decode(inner), Ok(Message::Raw(&[1, 2, 3])));
    }

    #[test]
    fn broadcast_and_exclude_destinations_are_little_endian_i32() {
        assert_eq!(relay(0, &[0x03, 9]), [0x07, 0x03, 0, 0, 0, 0, 0x03, 9]);
        // -5 = 0xFFFF_FFFB.
        assert_eq!(
            relay(-5, &[0x03, 9]),
            [0x07, 0x03, 0xFB, 0xFF, 0xFF, 0xFF, 0x03, 9]
        );
        assert_eq!(
            decode(&[0x07, 0x03, 0xFF, 0xFF, 0xFF, 0xFF, 0x03, 9]),
            Ok(Message::Relay {
                peer: -1,
                inner: &[0x03, 9]
            })
        );
    }

    #[test]
    fn peer_exchange_vectors() {
        assert_eq!(add_peer(7), [0x07, 0x01, 0x07, 0x00, 0x00, 0x00]);
        assert_eq!(del_peer(0x1234_5678), [0x07, 0x02, 0x78, 0x56, 0x34, 0x12]);
        assert_eq!(
            add_peer(i32::MAX),
            [0x07, 0x01, 0xFF, 0xFF, 0xFF, 0x7F],
            "the largest peer id"
        );
        assert_eq!(decode(&add_peer(7)), Ok(Message::AddPeer(7)));
        assert_eq!(
            decode(&[0x07, 0x02, 0x78, 0x56, 0x34, 0x12]),
            Ok(Message::DelPeer(0x1234_5678))
        );
    }

    #[test]
    fn auth_vectors_have_no_peer_field() {
        let mut data = Vec::new();
        encode_auth(b"hi", &mut data);
        assert_eq!(data, [0x07, 0x00, b'h', b'i']);
        assert_eq!(decode(&data), Ok(Message::Auth(b"hi")));
        assert_eq!(AUTH_COMPLETE, [0x07, 0x00]);
        assert_eq!(decode(&[0x07, 0x00]), Ok(Message::Auth(&[])));
    }

    #[test]
    fn flag_bits_are_ignored_when_matching_the_command() {
        // Bits 4..7 are subsystem flags; Godot matches `byte & CMD_MASK`.
        assert_eq!(decode(&[0xF3, 5]), Ok(Message::Raw(&[5])));
        assert!(is_sys(&[0x17, 0x01]));
        assert_eq!(decode(&[0x17, 0x01, 2, 0, 0, 0]), Ok(Message::AddPeer(2)));
    }

    #[test]
    fn migration_vectors() {
        assert_eq!(
            migration(Migration::HostAlive, 0, 1),
            [0x07, 0xE0, 0, 0, 0, 0, 1, 0, 0, 0]
        );
        assert_eq!(
            migration(Migration::Roster, 9, 0x0102_0304),
            [0x07, 0xE4, 9, 0, 0, 0, 4, 3, 2, 1]
        );
        for command in [
            Migration::HostAlive,
            Migration::HostLeaving,
            Migration::Stopped,
            Migration::HostDone,
            Migration::Roster,
            Migration::ClientAlive,
        ] {
            let bytes = migration(command, 7, 3);
            let expected = Message::Migration {
                command,
                peer: 7,
                epoch: 3,
            };
            assert_eq!(decode(&bytes), Ok(expected));
            // Later versions may append: the command still reads the same.
            assert_eq!(decode(&[&bytes[..], &[1, 2]].concat()), Ok(expected));
            // Without its epoch it is too short.
            assert_eq!(decode(&bytes[..9]), Err(WireError::SysTooShort(9)));
        }
        // Past the range: unknown as before.
        assert_eq!(
            decode(&[0x07, 0xE6, 0, 0, 0, 0, 0, 0, 0, 0]),
            Err(WireError::UnknownSys(0xE6))
        );
    }

    #[test]
    fn godot_commands_without_a_handler_here_are_unsupported_not_errors() {
        for cmd in [0u8, 1, 2, 4, 5, 6] {
            assert_eq!(decode(&[cmd, 1, 2]), Ok(Message::Unsupported(cmd)));
        }
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_decode_without_panicking(bytes in proptest::collection::vec(0u8..=255, 0..40)) {
            let _ = decode(&bytes);
        }

        #[test]
        fn relay_round_trips(peer: i32, inner in proptest::collection::vec(0u8..=255, 1..40)) {
            let bytes = relay(peer, &inner);
            proptest::prop_assert_eq!(bytes.len(), SYS_CMD_SIZE + inner.len());
            proptest::prop_assert_eq!(decode(&bytes), Ok(Message::Relay { peer, inner: &inner }));
        }
    }

    #[test]
    fn malformed_packets_are_errors_never_panics() {
        assert_eq!(decode(&[]), Err(WireError::Empty));
        assert_eq!(decode(&[0x03]), Err(WireError::EmptyRaw));
        assert_eq!(decode(&[0x07]), Err(WireError::SysTooShort(1)));
        assert_eq!(decode(&[0x07, 0x01]), Err(WireError::SysTooShort(2)));
        assert_eq!(
            decode(&[0x07, 0x01, 7, 0, 0]),
            Err(WireError::SysTooShort(5))
        );
        assert_eq!(
            decode(&[0x07, 0x09, 7, 0, 0, 0]),
            Err(WireError::UnknownSys(9))
        );
        assert_eq!(
            decode(&[0x07, 0x03, 7, 0, 0, 0]),
            Err(WireError::EmptyRelay)
        );
        // Every short prefix of every valid vector decodes to something without panicking.
        let vectors: [&[u8]; 4] = [
            &[0x07, 0x03, 0x07, 0, 0, 0, 0x03, 1],
            &add_peer(3),
            &del_peer(3),
            &[0x07, 0x00, 1],
        ];
        for v in vectors {
            for n in 0..=v.len() {
                let _ = decode(&v[..n]);
            }
        }
    }
}
