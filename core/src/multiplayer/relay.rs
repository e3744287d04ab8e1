//! Server relay (`SYS_COMMAND_RELAY`): the server forwards a client's packet to other clients
//! with its true source; a client processes what the server relayed as its source's packet.

use smallvec::SmallVec;

use super::{wire, Multiplayer, Route};
use crate::event::Packet;
use crate::transfer::{is_valid_peer_id, Mode, PeerId, Target, TransferMode, SERVER_ID};
use wire::Message;

impl Multiplayer {
    /// RELAY: the server forwards it; a client processes the inner packet as its source's.
    pub(super) fn on_relay(
        &mut self,
        from: PeerId,
        peer: PeerId,
        inner: &[u8],
        mode: TransferMode,
        channel: u16,
    ) {
        if !self.relay_active() {
            self.stats.relay_refused += 1;
        } else if self.mesh.mode() == Mode::Server {
            self.forward(from, peer, inner, mode, channel);
        } else if from != SERVER_ID {
            self.stats.sys_not_from_server += 1;
        } else if !is_valid_peer_id(peer) {
            self.stats.malformed += 1;
        } else {
            self.process_relayed(peer, inner, mode, channel);
        }
    }

    /// The server's side of RELAY from `source` to `destination` (`n`, `0` or `-n`): copies
    /// carry the true source, on the mode and channel the request came on. The server processes
    /// the inner packet itself when it is among the destinations (`0`, or `-n` with `n != 1`).
    pub(super) fn forward(
        &mut self,
        source: PeerId,
        destination: PeerId,
        inner: &[u8],
        mode: TransferMode,
        channel: u16,
    ) {
        if wire::is_sys(inner) {
            // Godot forwards these and the receiver discards them; refusing here saves a hop.
            self.stats.spoof_attempts += 1;
            return;
        }
        if destination == i32::MIN {
            self.stats.malformed += 1;
            return;
        }
        // A new server holds copies for survivors still reconnecting (host migration).
        let mut waiting: SmallVec<[PeerId; 16]> = SmallVec::new();
        let targets: SmallVec<[PeerId; 16]> = if destination > 0 {
            if self.migration.expects(destination) {
                waiting.push(destination);
                SmallVec::new()
            } else if self.peers.get(&destination) != Some(&Route::Direct) {
                // Unknown, still authenticating, or gone while the packet was in flight.
                self.stats.relay_unknown_target += 1;
                return;
            } else {
                SmallVec::from_elem(destination, 1)
            }
        } else {
            let excluded = -destination;
            waiting = self.expected_survivors();
            waiting.retain(|p| *p != source && *p != excluded);
            self.direct_peers()
                .filter(|&p| p != source && p != excluded)
                .collect()
        };
        let mut frame = std::mem::take(&mut self.scratch);
        frame.clear();
        wire::encode_relay(source, inner, &mut frame);
        for peer in waiting {
            self.wait_for_survivor(peer, mode, channel, &frame);
        }
        for target in targets {
            match self.mesh.send(Target::Peer(target), mode, channel, &frame) {
                Ok(()) => self.stats.relayed += 1,
                Err(_) => self.stats.send_failed += 1,
            }
        }
        self.scratch = frame;
        if destination <= 0 && destination != -SERVER_ID {
            self.process_relayed(source, inner, mode, channel);
        }
    }

    /// An inner packet of a RELAY, as sent by `source`: only RAW is delivered.
    pub(super) fn process_relayed(
        &mut self,
        source: PeerId,
        inner: &[u8],
        mode: TransferMode,
        channel: u16,
    ) {
        if wire::is_sys(inner) {
            self.stats.spoof_attempts += 1;
            return;
        }
        match wire::decode(inner) {
            Ok(Message::Raw(payload)) => self.deliver(Packet {
                from: source,
                channel,
                mode,
                data: payload.to_vec(),
            }),
            Ok(_) => self.stats.unsupported += 1,
            Err(_) => self.stats.malformed += 1,
        }
    }
}
