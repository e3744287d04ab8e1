//! Packets out: Godot's `put_packet` with its target, transfer mode and channel.

use smallvec::SmallVec;

use super::Mesh;
use crate::channels;
use crate::error::SendError;
use crate::transfer::{ConnectionStatus, Target, TransferMode};

impl Mesh {
    /// Sends `data` to `target` on transfer channel `channel` (0 = the default channel of `mode`;
    /// `k >= 1` = extra channel `k`, whose configured mode applies, as in Godot).
    /// Broadcasts skip peers that are not connected yet. The packet is sent at the latest time
    /// the mesh was given (by any `handle_*` call): SCTP times round trips and retransmissions
    /// from it, so call [`handle_timeout`](Mesh::handle_timeout) with the current time on every
    /// loop iteration, not only when [`poll_timeout`](Mesh::poll_timeout) is due.
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
                let key = *self.by_id.get(&id).ok_or(SendError::UnknownPeer(id))?;
                if !self.links[key].announced {
                    return Err(SendError::PeerNotConnected(id));
                }
                SmallVec::from_elem(key, 1)
            }
            Target::All | Target::AllExcept(_) => {
                let excluded = match target {
                    Target::AllExcept(id) => id,
                    _ => 0,
                };
                self.by_id
                    .iter()
                    .filter(|&(&id, &key)| id != excluded && self.links[key].announced)
                    .map(|(_, &key)| key)
                    .collect()
            }
        };
        let Some(now) = self.last_now else {
            return Ok(()); // No peer was ever added, so there is nobody to send to.
        };
        let max_queued = self.config.max_queued_bytes;
        let mut full = Vec::new();
        for key in keys {
            let link = &mut self.links[key];
            let peer = link.peer;
            match link.write(now, index, data, max_queued, &mut sink!(self)) {
                Ok(progress) => self.settle(key, progress),
                Err(()) => full.push(peer),
            }
        }
        if full.is_empty() {
            Ok(())
        } else {
            Err(SendError::QueueFull(full))
        }
    }
}
