//! Packets out: `send_bytes` (direct, or through the server as RELAY) and the SYS packets the
//! layer itself sends.

use smallvec::SmallVec;

use super::{wire, Multiplayer, Route};
use crate::error::SendError;
use crate::transfer::{ConnectionStatus, Mode, PeerId, Target, TransferMode, SERVER_ID};

impl Multiplayer {
    /// Godot's `send_bytes(bytes, id, mode, channel)`: sends `[3][bytes…]`. In client mode with
    /// the relay on, anything not for the server (one other client, everyone, everyone but `n`)
    /// goes to the server as `[7][3][target][3][bytes…]` and the server forwards it.
    ///
    /// Errors as [`Mesh::send`](crate::Mesh::send), and: [`SendError::PeerNotConnected`] for a peer still
    /// authenticating (or, on a client, `1` until the server is admitted);
    /// [`SendError::UnknownPeer`] for a peer not admitted; [`SendError::PacketTooLarge`] gives
    /// the largest payload once the framing is counted.
    ///
    /// While the server changes (host migration), reliable packets are held and go to the new
    /// server ([`SendError::QueueFull`] past
    /// [`MigrationConfig::held_bytes`](crate::MigrationConfig::held_bytes)); others are dropped
    /// and counted in [`MultiplayerStats::migration_dropped`](crate::MultiplayerStats::migration_dropped).
    /// After [`leave`](Multiplayer::leave), a server sends nothing more ([`SendError::Disconnected`]).
    pub fn send_bytes(
        &mut self,
        target: Target,
        mode: TransferMode,
        channel: u16,
        bytes: &[u8],
    ) -> Result<(), SendError> {
        let result = self.try_send_bytes(target, mode, channel, bytes);
        self.pump();
        result
    }

    pub(super) fn try_send_bytes(
        &mut self,
        target: Target,
        mode: TransferMode,
        channel: u16,
        bytes: &[u8],
    ) -> Result<(), SendError> {
        if self.status() == ConnectionStatus::Disconnected || self.has_left() {
            return Err(SendError::Disconnected);
        }
        if bytes.is_empty() {
            return Err(SendError::EmptyPacket);
        }
        match target {
            Target::Peer(n) if n <= 0 => return Err(SendError::InvalidTarget(n)),
            Target::AllExcept(n) if n <= 0 => {
                return Err(SendError::InvalidTarget(target.to_godot()))
            }
            _ => {}
        }
        if usize::from(channel) > self.mesh.channels_config().len() {
            return Err(SendError::UnknownChannel(channel));
        }
        if self.migration.is_switching() {
            if let Target::Peer(n) = target {
                let known = n == SERVER_ID
                    || self.peers.contains_key(&n)
                    || self.migration_target() == Some(n);
                if !known {
                    return Err(SendError::UnknownPeer(n));
                }
            }
            let overhead = if target == Target::Peer(SERVER_ID) {
                wire::RAW_OVERHEAD
            } else {
                wire::RELAY_OVERHEAD
            };
            let max = self.mesh.max_packet_size().saturating_sub(overhead);
            if bytes.len() > max {
                return Err(SendError::PacketTooLarge {
                    size: bytes.len(),
                    max,
                });
            }
            return self.hold_for_new_server(target, mode, channel, bytes);
        }
        let client = self.mesh.mode() == Mode::Client;
        if client && self.peers.get(&SERVER_ID) != Some(&Route::Direct) {
            return Err(SendError::PeerNotConnected(SERVER_ID));
        }
        let via_server = client && self.relay_active() && target != Target::Peer(SERVER_ID);
        let overhead = if via_server {
            wire::RELAY_OVERHEAD
        } else {
            wire::RAW_OVERHEAD
        };
        let max = self.mesh.max_packet_size().saturating_sub(overhead);
        if bytes.len() > max {
            return Err(SendError::PacketTooLarge {
                size: bytes.len(),
                max,
            });
        }
        // A new server holds what is for survivors still reconnecting (host migration).
        let mut waiting: SmallVec<[PeerId; 16]> = SmallVec::new();
        let direct_targets: SmallVec<[PeerId; 16]> = match target {
            Target::Peer(n) => match self.peers.get(&n) {
                Some(Route::Relayed) if via_server => SmallVec::new(),
                Some(Route::Direct) => SmallVec::from_elem(n, 1),
                Some(Route::Relayed) if self.migration.expects(n) => {
                    waiting.push(n);
                    SmallVec::new()
                }
                _ if self.pending.contains(n) => return Err(SendError::PeerNotConnected(n)),
                _ => return Err(SendError::UnknownPeer(n)),
            },
            Target::All | Target::AllExcept(_) if via_server => SmallVec::new(),
            Target::All | Target::AllExcept(_) => {
                let excluded = match target {
                    Target::AllExcept(n) => n,
                    _ => 0,
                };
                waiting = self.expected_survivors();
                waiting.retain(|p| *p != excluded);
                self.direct_peers().filter(|&p| p != excluded).collect()
            }
        };
        let mut frame = std::mem::take(&mut self.scratch);
        frame.clear();
        let result = if via_server {
            let mut inner = Vec::with_capacity(wire::RAW_OVERHEAD + bytes.len());
            wire::encode_raw(bytes, &mut inner);
            wire::encode_relay(target.to_godot(), &inner, &mut frame);
            self.mesh
                .send(Target::Peer(SERVER_ID), mode, channel, &frame)
        } else {
            wire::encode_raw(bytes, &mut frame);
            for peer in waiting {
                self.wait_for_survivor(peer, mode, channel, &frame);
            }
            let mut full = Vec::new();
            let mut too_large = Vec::new();
            let mut result = Ok(());
            for peer in direct_targets {
                match self.mesh.send(Target::Peer(peer), mode, channel, &frame) {
                    Ok(()) => {}
                    Err(SendError::QueueFull(missed)) => full.extend(missed),
                    Err(SendError::PacketTooLargeForPeers {
                        peers, queue_full, ..
                    }) => {
                        too_large.extend(peers);
                        full.extend(queue_full);
                    }
                    Err(e) => {
                        result = Err(e);
                        break;
                    }
                }
            }
            if result.is_ok() && !too_large.is_empty() {
                result = Err(SendError::PacketTooLargeForPeers {
                    size: frame.len(),
                    peers: too_large,
                    queue_full: full,
                });
            } else if result.is_ok() && !full.is_empty() {
                result = Err(SendError::QueueFull(full));
            }
            result
        };
        self.scratch = frame;
        result.map_err(|e| match e {
            // Limits in the caller's terms: payload bytes, not framed ones.
            SendError::PacketTooLargeForPeers {
                peers, queue_full, ..
            } => SendError::PacketTooLargeForPeers {
                size: bytes.len(),
                peers: peers
                    .into_iter()
                    .map(|(peer, max)| (peer, max.saturating_sub(overhead)))
                    .collect(),
                queue_full,
            },
            other => other,
        })
    }

    /// Sends a SYS packet the layer itself originates (reliable, channel 0, as Godot).
    pub(super) fn send_sys(&mut self, to: PeerId, bytes: &[u8]) {
        if self
            .mesh
            .send(Target::Peer(to), TransferMode::Reliable, 0, bytes)
            .is_err()
        {
            self.stats.send_failed += 1;
        }
    }
}
