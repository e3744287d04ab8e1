//! Host migration's two primitives: a client becomes the server, and a connection goes by
//! another peer id. The decisions (when, who) are the multiplayer layer's; these only change
//! the mesh's own bookkeeping, never a connection.

use std::time::Instant;

use super::Mesh;
use crate::error::{PromoteError, RenameError};
use crate::link::Loss;
use crate::transfer::{is_valid_peer_id, ConnectionStatus, Mode, PeerId, SERVER_ID};

impl Mesh {
    /// Whether [`close`](Mesh::close) was called (a closed mesh refuses new peers).
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Host migration: this client becomes the server. Its id becomes 1 and its mode
    /// [`Mode::Server`] (status `Connected`), as if it had been created with `create_server`.
    /// Its link to the old server is dropped without `PeerDisconnected` (the caller decided),
    /// or, with `keep_old_server`, kept under this side's former id, to receive what the old
    /// server still sends (a graceful hand-over drains it, then removes it). Returns the
    /// former id.
    ///
    /// ```
    /// use std::time::Instant;
    /// use rtcmesh::{Mesh, MeshConfig, Mode, PromoteError};
    ///
    /// let mut mesh = Mesh::create_client(7, MeshConfig::default())?;
    /// mesh.add_host_candidate("127.0.0.1:5000".parse()?)?;
    /// mesh.add_peer(Instant::now(), 1, 1)?;
    /// assert_eq!(mesh.promote_to_server(Instant::now(), true), Ok(7));
    /// assert_eq!((mesh.unique_id(), mesh.mode()), (1, Mode::Server));
    /// assert!(mesh.has_peer(7) && !mesh.has_peer(1)); // the old server, under our former id
    /// assert_eq!(mesh.promote_to_server(Instant::now(), false), Err(PromoteError::NotClient(Mode::Server)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn promote_to_server(
        &mut self,
        now: Instant,
        keep_old_server: bool,
    ) -> Result<PeerId, PromoteError> {
        if self.closed {
            return Err(PromoteError::Closed);
        }
        if self.mode != Mode::Client {
            return Err(PromoteError::NotClient(self.mode));
        }
        self.observe(now);
        let former = self.unique_id;
        // A server first, so that losing peer 1 does not read as a client's disconnection.
        self.mode = Mode::Server;
        if let Some(key) = self.peers.key(SERVER_ID) {
            if keep_old_server {
                self.peers.rekey(SERVER_ID, former, &self.span);
            } else {
                self.remove_link(key, false, Loss::Removed);
            }
        }
        self.unique_id = SERVER_ID;
        self.span = crate::trace::mesh_span(SERVER_ID, Mode::Server);
        self.set_status(ConnectionStatus::Connected);
        Ok(former)
    }

    /// Gives peer `from` the id `to`: the same connection (DTLS, SCTP, queued packets and
    /// counters carry over, no handshake), reported under `to` from now on. The side that
    /// offered keeps offering (handshake retries, ICE restarts), whatever the new ids say, so
    /// both ends stay in agreement. A client whose peer 1 is
    /// renamed has no server until it adds one (status `Connecting`), and one whose peer
    /// becomes 1 is `Connected` if that peer is.
    ///
    /// ```
    /// use std::time::Instant;
    /// use rtcmesh::{Mesh, MeshConfig, RenameError};
    ///
    /// let mut mesh = Mesh::create_mesh(2, MeshConfig::default())?;
    /// mesh.add_host_candidate("127.0.0.1:5000".parse()?)?;
    /// mesh.add_peer(Instant::now(), 5, 1)?;
    /// mesh.rename_peer(5, 9)?;
    /// assert!(mesh.has_peer(9) && !mesh.has_peer(5));
    /// assert_eq!(mesh.rename_peer(5, 6), Err(RenameError::UnknownPeer(5)));
    /// assert_eq!(mesh.rename_peer(9, 2), Err(RenameError::SelfPeer(2)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn rename_peer(&mut self, from: PeerId, to: PeerId) -> Result<(), RenameError> {
        if self.closed {
            return Err(RenameError::Closed);
        }
        let key = self.peers.key(from).ok_or(RenameError::UnknownPeer(from))?;
        if !is_valid_peer_id(to) {
            return Err(RenameError::InvalidId(to));
        }
        if to == self.unique_id {
            return Err(RenameError::SelfPeer(to));
        }
        if from == to {
            return Ok(());
        }
        if self.peers.contains_id(to) {
            return Err(RenameError::AlreadyExists(to));
        }
        self.peers.rekey(from, to, &self.span);
        self.mdns.rename_peer(from, to);
        if self.mode == Mode::Client {
            if from == SERVER_ID {
                self.set_status(ConnectionStatus::Connecting);
            } else if to == SERVER_ID && self.peers.link(key).is_connected() {
                self.set_status(ConnectionStatus::Connected);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MeshConfig;
    use crate::event::Event;
    use crate::transfer::{Target, TransferMode};
    use std::time::{Duration, Instant};

    /// Two meshes on an in-memory network, and what each reported (signals excepted).
    struct Pair {
        a: Mesh,
        b: Mesh,
        now: Instant,
        a_log: Vec<Event>,
        b_log: Vec<Event>,
    }

    impl Pair {
        fn new(a: Mesh, b: Mesh) -> Pair {
            let (mut a, mut b) = (a, b);
            a.add_host_candidate("127.0.0.1:6001".parse().unwrap())
                .unwrap();
            b.add_host_candidate("127.0.0.1:6002".parse().unwrap())
                .unwrap();
            Pair {
                a,
                b,
                now: Instant::now(),
                a_log: Vec::new(),
                b_log: Vec::new(),
            }
        }

        /// Runs until `done`, at most 10 simulated seconds.
        fn run(&mut self, mut done: impl FnMut(&Pair) -> bool) {
            for _ in 0..10_000 {
                if done(self) {
                    return;
                }
                self.now += Duration::from_millis(1);
                let now = self.now;
                for a_to_b in [true, false] {
                    let (from, to) = if a_to_b {
                        (&mut self.a, &mut self.b)
                    } else {
                        (&mut self.b, &mut self.a)
                    };
                    from.handle_timeout(now);
                    while let Some(t) = from.poll_transmit() {
                        to.handle_datagram(now, t.source, t.destination, &t.contents);
                    }
                    let log = if a_to_b {
                        &mut self.a_log
                    } else {
                        &mut self.b_log
                    };
                    while let Some(event) = from.poll_event() {
                        match event {
                            Event::Signal(s) => {
                                let _ = to.handle_signal(now, from.unique_id(), s.signal);
                            }
                            other => log.push(other),
                        }
                    }
                }
            }
            panic!("not done within 10 s");
        }

        /// Client `a` (7) connected to server `b`.
        fn connected() -> Pair {
            let mut pair = Pair::new(
                Mesh::create_client(7, MeshConfig::default()).unwrap(),
                Mesh::create_server(MeshConfig::default()).unwrap(),
            );
            let now = pair.now;
            pair.a.add_peer(now, 1, 1).unwrap();
            pair.b.add_peer(now, 7, 1).unwrap();
            pair.run(|p| p.a.status() == ConnectionStatus::Connected);
            while pair.a.poll_event().is_some() || pair.b.poll_event().is_some() {}
            pair.a_log.clear();
            pair.b_log.clear();
            pair
        }
    }

    #[test]
    fn a_promoted_client_is_the_server_and_drops_its_old_server_quietly() {
        let mut pair = Pair::connected();
        let now = pair.now;
        assert_eq!(pair.a.promote_to_server(now, false), Ok(7));
        assert_eq!((pair.a.unique_id(), pair.a.mode()), (1, Mode::Server));
        assert!(
            pair.a.peers().next().is_none(),
            "the old server's link is gone"
        );
        // No PeerDisconnected for the old server, and no Disconnected blip.
        assert_eq!(pair.a.poll_event(), None);
        // A server now: it adds clients, not a server.
        assert!(pair.a.add_peer(now, 3, 1).is_ok());
        assert_eq!(
            pair.a.add_peer(now, 1, 1),
            Err(crate::error::AddPeerError::ServerCannotAddServer)
        );
    }

    #[test]
    fn promotion_refuses_a_server_a_mesh_and_a_closed_client() {
        let now = Instant::now();
        let mut server = Mesh::create_server(MeshConfig::default()).unwrap();
        assert_eq!(
            server.promote_to_server(now, false),
            Err(PromoteError::NotClient(Mode::Server))
        );
        let mut mesh = Mesh::create_mesh(3, MeshConfig::default()).unwrap();
        assert_eq!(
            mesh.promote_to_server(now, false),
            Err(PromoteError::NotClient(Mode::Mesh))
        );
        let mut client = Mesh::create_client(3, MeshConfig::default()).unwrap();
        client.close();
        assert_eq!(
            client.promote_to_server(now, false),
            Err(PromoteError::Closed)
        );
    }

    #[test]
    fn a_renamed_link_carries_on_without_a_handshake_and_keeps_who_offers() {
        // 7 offered to 1 (the larger id offers). Once 7 is the server and keeps the old
        // server's link as 7, its own id (1) is the smaller: Godot's rule would flip the
        // roles, the link must not.
        let mut pair = Pair::connected();
        let now = pair.now;
        let offerer = pair.a.peers.link(pair.a.peers.key(1).unwrap()).role();
        assert_eq!(pair.a.promote_to_server(now, true), Ok(7));
        let key = pair.a.peers.key(7).expect("kept as 7");
        assert_eq!(
            pair.a.peers.link(key).role(),
            offerer,
            "a rename does not flip roles"
        );
        assert_eq!(pair.a.peer(7).map(|p| p.connected), Some(true));
        // The old server's packets arrive from 7 now, over the same connection.
        let retries = pair.a.stats().connect_retries;
        pair.b
            .send(Target::Peer(7), TransferMode::Reliable, 0, b"last words")
            .unwrap();
        pair.run(|p| p.a_log.iter().any(|e| matches!(e, Event::Packet(_))));
        assert!(
            matches!(&pair.a_log[..], [Event::Packet(p)] if p.from == 7 && p.data == b"last words"),
            "{:?}",
            pair.a_log
        );
        assert_eq!(pair.a.stats().connect_retries, retries, "no new handshake");
        // And ours reach it.
        pair.a
            .send(Target::Peer(7), TransferMode::Reliable, 0, b"thanks")
            .unwrap();
        pair.run(|p| {
            p.b_log
                .iter()
                .any(|e| matches!(e, Event::Packet(p) if p.from == 7 && p.data == b"thanks"))
        });
    }

    #[test]
    fn rename_refuses_what_would_break_the_table() {
        let now = Instant::now();
        let mut server = Mesh::create_server(MeshConfig::default()).unwrap();
        server
            .add_host_candidate("127.0.0.1:6003".parse().unwrap())
            .unwrap();
        server.add_peer(now, 4, 1).unwrap();
        server.add_peer(now, 5, 1).unwrap();
        assert_eq!(server.rename_peer(4, 5), Err(RenameError::AlreadyExists(5)));
        assert_eq!(server.rename_peer(4, 1), Err(RenameError::SelfPeer(1)));
        assert_eq!(server.rename_peer(4, 0), Err(RenameError::InvalidId(0)));
        assert_eq!(server.rename_peer(4, -3), Err(RenameError::InvalidId(-3)));
        assert_eq!(server.rename_peer(9, 6), Err(RenameError::UnknownPeer(9)));
        assert_eq!(server.rename_peer(4, 4), Ok(()));
        assert_eq!(server.rename_peer(4, 6), Ok(()));
        assert_eq!(server.peers().collect::<Vec<_>>(), vec![5, 6]);
        server.close();
        assert_eq!(server.rename_peer(5, 8), Err(RenameError::Closed));
    }

    #[test]
    fn a_client_renaming_its_server_away_waits_for_a_new_one() {
        let mut pair = Pair::connected();
        let now = pair.now;
        pair.a.rename_peer(1, 9).unwrap();
        assert_eq!(pair.a.status(), ConnectionStatus::Connecting);
        assert_eq!(
            pair.a.poll_event(),
            Some(Event::StatusChanged(ConnectionStatus::Connecting))
        );
        // Room for the new server while the old one drains as 9.
        pair.a.add_peer(now, 1, 1).unwrap();
        assert!(pair.a.has_peer(9) && pair.a.has_peer(1));
        // Renamed back, it is the server again.
        pair.a.disconnect_peer(1, true);
        pair.a.rename_peer(9, 1).unwrap();
        assert_eq!(pair.a.status(), ConnectionStatus::Connected);
    }
}
