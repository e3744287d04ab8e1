//! The messages signaling nodes exchange through Redis pub/sub: a small binary format.
//!
//! Every message is `[version 1][kind][from node: u64 BE][connection: u64 BE]` followed by
//! a body that depends on the kind. A client's protocol frames travel as their exact text,
//! so members on different nodes see the same bytes they would on one node.

use std::fmt;
use std::net::IpAddr;

use rtcmesh::lobby::{close, Migration};

use crate::signal::close as adapter_close;

/// A node's identity: random per process start.
pub(crate) type NodeId = u64;

const VERSION: u8 = 1;
const HEADER: usize = 1 + 1 + 8 + 8;

/// What one node tells another about one client connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Body {
    /// Proxy → owner: a client on the sending node joins a lobby the receiver hosts; this is
    /// its JOIN frame, and what its URL asked for (a plain client's JOIN is kind 0, as
    /// before host migration; one that opted in is kind 7, which older nodes refuse).
    Join {
        address: IpAddr,
        migration: Migration,
        frame: String,
    },
    /// Proxy → owner: a text frame from the client.
    Text(String),
    /// Proxy → owner: a binary frame (refused by the protocol).
    Binary,
    /// Proxy → owner: a frame over the size limit.
    Oversized,
    /// Proxy → owner: the client's socket is gone.
    Gone,
    /// Owner → proxy: write this text frame to the client.
    Send(String),
    /// Owner → proxy: close the client with this code and reason.
    Close { code: u16, reason: &'static str },
    /// Owner → proxy: send the client a WebSocket ping (a host-migration probe).
    Ping,
    /// Proxy → owner: the client answered a ping.
    Pong,
}

/// One message between nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NodeMessage {
    pub from: NodeId,
    /// The connection's id on the proxy node (the one holding the socket).
    pub conn: u64,
    pub body: Body,
}

/// A message that is not this format (from another version, or not from a node at all).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DecodeError(&'static str);

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed node message: {}", self.0)
    }
}

/// Every close reason a node may send, so a received one maps back to a `&'static str`.
const REASONS: &[&str] = &[
    close::NO_LOBBY,
    close::HOST_DISCONNECTED,
    close::ONLY_HOST_CAN_SEAL,
    close::SEAL_COMPLETE,
    close::TOO_MANY_LOBBIES,
    close::TOO_MANY_LOBBIES_FROM_ADDRESS,
    close::ALREADY_IN_LOBBY,
    close::LOBBY_DOES_NOT_EXIST,
    close::LOBBY_IS_SEALED,
    close::LOBBY_IS_FULL,
    close::INVALID_FORMAT,
    close::NEED_LOBBY,
    close::INVALID_DEST,
    close::INVALID_CMD,
    close::TOO_MANY_PEERS,
    close::INVALID_TRANSFER_MODE,
    close::TOO_BIG,
    close::IDLE_TOO_LONG,
    close::HOST_REPLACED,
    close::HOST_HANDED_OVER,
    close::ONLY_HOST_CAN_HAND_OVER,
    adapter_close::SHUTTING_DOWN_REASON,
    adapter_close::CLUSTER_UNAVAILABLE_REASON,
];

/// Said for a reason a newer node knows and this one does not.
const OTHER_REASON: &str = "Closed by the lobby's server";

impl NodeMessage {
    pub fn encode(&self) -> Vec<u8> {
        let (kind, body_len) = match &self.body {
            Body::Join {
                migration: Migration::Off,
                frame,
                ..
            } => (0, 17 + frame.len()),
            Body::Join { frame, .. } => (7, 18 + frame.len()),
            Body::Text(t) => (1, t.len()),
            Body::Binary => (2, 0),
            Body::Oversized => (3, 0),
            Body::Gone => (4, 0),
            Body::Send(t) => (5, t.len()),
            Body::Close { reason, .. } => (6, 2 + reason.len()),
            Body::Ping => (8, 0),
            Body::Pong => (9, 0),
        };
        let mut out = Vec::with_capacity(HEADER + body_len);
        out.push(VERSION);
        out.push(kind);
        out.extend_from_slice(&self.from.to_be_bytes());
        out.extend_from_slice(&self.conn.to_be_bytes());
        match &self.body {
            Body::Join {
                address,
                migration,
                frame,
            } => {
                match address {
                    IpAddr::V4(v4) => {
                        out.push(4);
                        out.extend_from_slice(&v4.to_ipv6_mapped().octets());
                    }
                    IpAddr::V6(v6) => {
                        out.push(6);
                        out.extend_from_slice(&v6.octets());
                    }
                }
                match migration {
                    Migration::Off => {}
                    Migration::Follow => out.push(1),
                    _ => out.push(2),
                }
                out.extend_from_slice(frame.as_bytes());
            }
            Body::Text(t) | Body::Send(t) => out.extend_from_slice(t.as_bytes()),
            Body::Binary | Body::Oversized | Body::Gone | Body::Ping | Body::Pong => {}
            Body::Close { code, reason } => {
                out.extend_from_slice(&code.to_be_bytes());
                out.extend_from_slice(reason.as_bytes());
            }
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<NodeMessage, DecodeError> {
        if bytes.len() < HEADER {
            return Err(DecodeError("shorter than the header"));
        }
        if bytes[0] != VERSION {
            return Err(DecodeError("unknown version"));
        }
        let u64_at = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[at..at + 8]);
            u64::from_be_bytes(b)
        };
        let (from, conn, rest) = (u64_at(2), u64_at(10), &bytes[HEADER..]);
        let text = |b: &[u8]| {
            std::str::from_utf8(b)
                .map(str::to_owned)
                .map_err(|_| DecodeError("text is not UTF-8"))
        };
        let body = match bytes[1] {
            kind @ (0 | 7) => {
                if rest.len() < 17 {
                    return Err(DecodeError("JOIN without an address"));
                }
                let mut octets = [0u8; 16];
                octets.copy_from_slice(&rest[1..17]);
                let v6 = std::net::Ipv6Addr::from(octets);
                let address = match rest[0] {
                    4 => IpAddr::V4(
                        v6.to_ipv4_mapped()
                            .ok_or(DecodeError("IPv4 address not mapped"))?,
                    ),
                    6 => IpAddr::V6(v6),
                    _ => return Err(DecodeError("unknown address family")),
                };
                let (migration, frame) = match (kind, rest.get(17)) {
                    (0, _) => (Migration::Off, &rest[17..]),
                    (_, Some(1)) => (Migration::Follow, &rest[18..]),
                    (_, Some(2)) => (Migration::Eligible, &rest[18..]),
                    _ => return Err(DecodeError("unknown migration option")),
                };
                Body::Join {
                    address,
                    migration,
                    frame: text(frame)?,
                }
            }
            1 => Body::Text(text(rest)?),
            2 => Body::Binary,
            3 => Body::Oversized,
            4 => Body::Gone,
            5 => Body::Send(text(rest)?),
            6 => {
                if rest.len() < 2 {
                    return Err(DecodeError("CLOSE without a code"));
                }
                let code = u16::from_be_bytes([rest[0], rest[1]]);
                let said = text(&rest[2..])?;
                let reason = REASONS
                    .iter()
                    .copied()
                    .find(|r| *r == said)
                    .unwrap_or(OTHER_REASON);
                Body::Close { code, reason }
            }
            8 => Body::Ping,
            9 => Body::Pong,
            _ => return Err(DecodeError("unknown kind")),
        };
        Ok(NodeMessage { from, conn, body })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_round_trips() {
        let bodies = [
            Body::Join {
                address: "192.0.2.7".parse().expect("ip"),
                migration: Migration::Off,
                frame: r#"{"type":0,"id":0,"data":"ABC"}"#.into(),
            },
            Body::Join {
                address: "2001:db8::1".parse().expect("ip"),
                migration: Migration::Off,
                frame: String::new(),
            },
            Body::Join {
                address: "192.0.2.7".parse().expect("ip"),
                migration: Migration::Eligible,
                frame: r#"{"type":0,"id":1,"data":"ABC"}"#.into(),
            },
            Body::Join {
                address: "192.0.2.7".parse().expect("ip"),
                migration: Migration::Follow,
                frame: String::new(),
            },
            Body::Ping,
            Body::Pong,
            Body::Text("{\"type\":4}".into()),
            Body::Binary,
            Body::Oversized,
            Body::Gone,
            Body::Send("héllo".into()),
            Body::Close {
                code: 4000,
                reason: close::HOST_DISCONNECTED,
            },
        ];
        for body in bodies {
            let m = NodeMessage {
                from: u64::MAX - 3,
                conn: 42,
                body,
            };
            assert_eq!(NodeMessage::decode(&m.encode()), Ok(m));
        }
    }

    #[test]
    fn garbage_is_a_typed_error_and_unknown_reasons_are_generic() {
        assert!(NodeMessage::decode(b"").is_err());
        assert!(NodeMessage::decode(&[2; 40]).is_err());
        let mut bad_kind = NodeMessage {
            from: 1,
            conn: 2,
            body: Body::Gone,
        }
        .encode();
        bad_kind[1] = 99;
        assert!(NodeMessage::decode(&bad_kind).is_err());
        let mut close = NodeMessage {
            from: 1,
            conn: 2,
            body: Body::Close {
                code: 4000,
                reason: close::LOBBY_IS_FULL,
            },
        }
        .encode();
        close.truncate(HEADER + 2);
        close.extend_from_slice(b"something new");
        assert_eq!(
            NodeMessage::decode(&close).map(|m| m.body),
            Ok(Body::Close {
                code: 4000,
                reason: OTHER_REASON
            })
        );
    }
}
