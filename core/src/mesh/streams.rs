//! The streams to TURN servers reached over TCP or TLS (see [`crate::stream`]): their commands
//! out, their bytes in. What a peer sent through such a server continues as a datagram from
//! that peer to our relayed address, exactly as if it had come over UDP.

use std::time::Instant;

use super::Mesh;
use crate::stream::{StreamCommand, StreamId, StreamInput};

impl Mesh {
    /// The next thing to do with a stream to a TURN server (open, write, close), if any. Call
    /// it after [`poll_transmit`](Mesh::poll_transmit) returned `None`: relayed datagrams for
    /// such a server are written to its stream as they are polled. Meshes configured without
    /// `turn:…?transport=tcp` or `turns:` servers never return one.
    pub fn poll_stream_command(&mut self) -> Option<StreamCommand> {
        if self.nat.has_streams() {
            self.route_streamed();
        }
        self.nat.poll_stream_command()
    }

    /// Passes what happened on a stream this mesh asked for: it opened, bytes arrived (in
    /// order, in any chunks), or it ended and why. Input for a stream the mesh no longer
    /// wants (it sent `Close`, or gave up) is ignored. Whatever a server sends is untrusted:
    /// bytes that break TURN's framing close the stream
    /// ([`IceServerError::InvalidStream`](crate::IceServerError::InvalidStream)), memory
    /// stays bounded.
    pub fn handle_stream(&mut self, now: Instant, id: StreamId, input: StreamInput<'_>) {
        if self.closed {
            return;
        }
        let now = self.observe(now);
        let mut relayed = Vec::new();
        self.nat.handle_stream(now, id, input, &mut relayed);
        self.absorb_nat();
        for (peer, relay, bytes) in relayed {
            self.handle_peer_datagram(now, peer, relay, &bytes);
        }
    }

    /// Wraps what the links sent from a relayed address whose server is reached over a
    /// stream, so it is on the stream before the stream's commands are read; the socket's
    /// datagrams keep their order.
    fn route_streamed(&mut self) {
        self.flush_dirty();
        let Some(now) = self.last_now else {
            return;
        };
        if !self
            .transmits
            .iter()
            .any(|t| self.nat.is_stream_relay(t.source))
        {
            return;
        }
        let pending = std::mem::take(&mut self.transmits);
        for t in pending {
            if !self.nat.is_stream_relay(t.source) {
                self.transmits.push_back(t);
            } else if let Some(wrapped) = self.nat.wrap(now, t) {
                self.transmits.push_back(wrapped);
            }
        }
        self.absorb_nat();
    }
}
