//! Packets out: Godot's `put_packet` with its target, transfer mode and channel.

use smallvec::SmallVec;

use super::Mesh;
use crate::channels;
use crate::error::SendError;
use crate::link::WriteError;
use crate::transfer::{ConnectionStatus, Target, TransferMode};

impl Mesh {
    /// Sends `data` to `target` on transfer channel `channel` (0 = the default channel of `mode`;
    /// `k >= 1` = extra channel `k`, whose configured mode applies, as in Godot).
    /// Broadcasts skip peers that are not connected yet. A packet larger than a peer accepts
    /// (its SDP `a=max-message-size`, see
    /// [`PeerStats::max_packet_size`](crate::PeerStats::max_packet_size)) is refused for that
    /// peer ([`SendError::PacketTooLargeForPeers`]); one that does not fit SCTP's send window
    /// now waits in the peer's bounded queue ([`SendError::QueueFull`] past it).
    ///
    /// Writes reach str0m at the next `poll_transmit`, `poll_event` or `handle_timeout`, once
    /// per burst, at the latest time the mesh was given (by any `handle_*` call): SCTP times
    /// round trips, retransmissions and lifetimes from it, so call
    /// [`handle_timeout`](Mesh::handle_timeout) with the current time on every loop iteration,
    /// not only when [`poll_timeout`](Mesh::poll_timeout) is due.
    pub fn send(
        &mut self,
        target: Target,
        mode: TransferMode,
        channel: u16,
        data: &[u8],
    ) -> Result<(), SendError> {
        if self.closed || self.status == ConnectionStatus::Disconnected {
            return Err(SendError::Disconnected);
        }
        if data.is_empty() {
            return Err(SendError::EmptyPacket);
        }
        if data.len() > self.config.max_packet_size {
            return Err(SendError::PacketTooLarge {
                size: data.len(),
                max: self.config.max_packet_size,
            });
        }
        let index = channels::channel_index(mode, channel, self.config.channels.len())
            .ok_or(SendError::UnknownChannel(channel))?;
        let keys: SmallVec<[usize; 16]> = match target {
            Target::Peer(id) if id <= 0 => return Err(SendError::InvalidTarget(id)),
            Target::AllExcept(id) if id <= 0 => {
                return Err(SendError::InvalidTarget(target.to_godot()))
            }
            Target::Peer(id) => {
                let key = self.peers.key(id).ok_or(SendError::UnknownPeer(id))?;
                if !self.peers.link(key).is_connected() {
                    return Err(SendError::PeerNotConnected(id));
                }
                SmallVec::from_elem(key, 1)
            }
            Target::All | Target::AllExcept(_) => {
                let excluded = match target {
                    Target::AllExcept(id) => id,
                    _ => 0,
                };
                self.peers
                    .entries()
                    .filter(|&(id, key)| id != excluded && self.peers.link(key).is_connected())
                    .map(|(_, key)| key)
                    .collect()
            }
        };
        let Some(now) = self.last_now else {
            return Ok(()); // No peer was ever added, so there is nobody to send to.
        };
        let max_queued = self.config.max_queued_bytes;
        let single = matches!(target, Target::Peer(_));
        let mut full = Vec::new();
        let mut too_large = Vec::new();
        for key in keys {
            let link = self.peers.link_mut(key);
            let peer = link.peer();
            if data.len() > link.max_message_size() {
                too_large.push((peer, link.max_message_size()));
                continue;
            }
            match link.write(now, index, data, max_queued) {
                Ok(true) => self.peers.mark_dirty(key),
                Ok(false) => {}
                Err(WriteError::QueueFull) => full.push(peer),
                // The channel is closing: the peer is on its way out. A broadcast skips it as
                // it skips peers not connected yet.
                Err(WriteError::Closed) if single => return Err(SendError::PeerNotConnected(peer)),
                Err(WriteError::Closed) => {}
            }
        }
        if !too_large.is_empty() {
            Err(SendError::PacketTooLargeForPeers {
                size: data.len(),
                peers: too_large,
                queue_full: full,
            })
        } else if !full.is_empty() {
            Err(SendError::QueueFull(full))
        } else {
            Ok(())
        }
    }
}
