//! Host migration in the lobby server, frame by frame (design: docs/host-migration.md).

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use super::server::close;
use super::*;

const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const PLAIN: Migration = Migration::Off;
const ELIGIBLE: Migration = Migration::Eligible;
const FOLLOW: Migration = Migration::Follow;

fn msg(kind: MessageKind, id: i64, data: &str) -> LobbyMessage {
    LobbyMessage::new(kind, id, data)
}

struct Lobby {
    server: LobbyServer,
    now: Instant,
    name: String,
    /// Peer id of each connection, by connection id.
    ids: std::collections::HashMap<ConnectionId, i64>,
}

impl Lobby {
    /// A client/server lobby whose host (connection 1) joined with `host`.
    fn new(host: Migration) -> Lobby {
        Lobby::with_config(host, LobbyServerConfig::default())
    }

    fn with_config(host: Migration, config: LobbyServerConfig) -> Lobby {
        let mut lobby = Lobby {
            server: LobbyServer::new(config, 7),
            now: Instant::now(),
            name: String::new(),
            ids: Default::default(),
        };
        let out = lobby.join_as(1, host, false);
        lobby.name = to(&out, 1)
            .iter()
            .find(|m| m.kind == MessageKind::Join)
            .expect("JOIN")
            .data
            .clone();
        lobby
    }

    fn join_as(
        &mut self,
        conn: ConnectionId,
        migration: Migration,
        mesh: bool,
    ) -> Vec<ServerOutput> {
        let options = ConnectOptions::default().with_migration(migration);
        self.server.connect_with(self.now, conn, LOCAL, options);
        let join = msg(
            MessageKind::Join,
            if mesh { 0 } else { 1 },
            &self.name.clone(),
        )
        .encode();
        let out = self.text(conn, &join);
        let id = to(&out, conn)
            .iter()
            .find(|m| m.kind == MessageKind::Id)
            .expect("ID")
            .id;
        self.ids.insert(conn, id);
        out
    }

    /// Connection `conn` joins the lobby as `migration`; returns its peer id.
    fn join(&mut self, conn: ConnectionId, migration: Migration) -> i64 {
        self.join_as(conn, migration, false);
        self.drain();
        self.ids[&conn]
    }

    fn text(&mut self, conn: ConnectionId, text: &str) -> Vec<ServerOutput> {
        self.server.handle_text(self.now, conn, text);
        self.drain()
    }

    fn drain(&mut self) -> Vec<ServerOutput> {
        std::iter::from_fn(|| self.server.poll_output()).collect()
    }

    fn host_lost(&mut self, conn: ConnectionId, epoch: u32) -> Vec<ServerOutput> {
        self.text(
            conn,
            &msg(MessageKind::HostLost, 1, &epoch.to_string()).encode(),
        )
    }

    fn at(&mut self, after: Duration) -> Vec<ServerOutput> {
        self.now += after;
        self.server.handle_timeout(self.now);
        self.drain()
    }
}

fn to(out: &[ServerOutput], conn: ConnectionId) -> Vec<LobbyMessage> {
    out.iter()
        .filter_map(|o| match o {
            ServerOutput::Send { to, text } if *to == conn => LobbyMessage::decode(text).ok(),
            _ => None,
        })
        .collect()
}

/// The frames to `conn`, without the SUCCESSION updates.
fn to_but_succession(out: &[ServerOutput], conn: ConnectionId) -> Vec<LobbyMessage> {
    to(out, conn)
        .into_iter()
        .filter(|m| m.kind != MessageKind::Succession)
        .collect()
}

fn closed(out: &[ServerOutput], conn: ConnectionId) -> Option<(u16, &'static str)> {
    out.iter().find_map(|o| match o {
        ServerOutput::Close { to, code, reason } if *to == conn => Some((*code, *reason)),
        _ => None,
    })
}

#[test]
fn the_url_query_opts_in() {
    let read = |target| ConnectOptions::from_request_target(target).migration;
    assert_eq!(read("/?migrate=1"), ELIGIBLE);
    assert_eq!(read("/?migrate=true"), ELIGIBLE);
    assert_eq!(read("/game?room=x&migrate=follow#top"), FOLLOW);
    assert_eq!(read("/?migrate=0"), PLAIN);
    assert_eq!(read("/?migrate"), PLAIN);
    assert_eq!(read("/?nomigrate=1"), PLAIN);
    assert_eq!(read("/"), PLAIN);
    assert_eq!(ELIGIBLE.query(), Some("migrate=1"));
    assert_eq!(PLAIN.query(), None);
}

#[test]
fn only_opted_in_connections_hear_hello_and_m_and_plain_ones_get_the_demo_protocol() {
    let mut server = LobbyServer::new(LobbyServerConfig::default(), 7);
    let now = Instant::now();
    server.connect(now, 1, LOCAL);
    assert_eq!(
        server.poll_output(),
        None,
        "no HELLO for a plain connection"
    );
    server.connect_with(
        now,
        2,
        LOCAL,
        ConnectOptions::default().with_migration(FOLLOW),
    );
    assert_eq!(
        server.poll_output(),
        Some(ServerOutput::Send {
            to: 2,
            text: r#"{"type":8,"id":0,"data":"migrate/1"}"#.into()
        })
    );
    // A plain connection sending the new types is refused as by the reference server.
    for (conn, frame) in [
        (1, r#"{"type":9,"id":0,"data":"0"}"#),
        (3, r#"{"type":10,"id":1,"data":"0"}"#),
    ] {
        if conn == 3 {
            server.connect(now, 3, LOCAL);
        }
        server.handle_text(now, conn, r#"{"type":0,"id":1,"data":""}"#);
        server.handle_text(now, conn, frame);
        let out: Vec<_> = std::iter::from_fn(|| server.poll_output()).collect();
        assert_eq!(closed(&out, conn), Some((4000, close::INVALID_CMD)));
    }

    // In a migratable lobby, "m" marks opted-in peers, and only to opted-in receivers.
    let mut lobby = Lobby::new(ELIGIBLE);
    let out = lobby.join_as(2, PLAIN, false);
    let plain = lobby.ids[&2];
    assert_eq!(
        to(&out, 2),
        vec![
            msg(MessageKind::Id, plain, ""),
            msg(MessageKind::PeerConnect, 1, ""),
            msg(MessageKind::Join, 0, &lobby.name),
        ],
        "a plain member sees exactly the demo's frames"
    );
    assert_eq!(to(&out, 1), vec![msg(MessageKind::PeerConnect, plain, "")]);
    let out = lobby.join_as(3, ELIGIBLE, false);
    let b = lobby.ids[&3];
    assert_eq!(
        to(&out, 3),
        vec![
            msg(MessageKind::Hello, 0, "migrate/1"),
            msg(MessageKind::Id, b, ""),
            msg(MessageKind::PeerConnect, 1, "m"),
            msg(MessageKind::Succession, 0, &format!("0:{b}")),
            msg(MessageKind::Join, 0, &lobby.name),
        ]
    );
    assert_eq!(
        to(&out, 1),
        vec![
            msg(MessageKind::PeerConnect, b, "m"),
            msg(MessageKind::Succession, 0, &format!("0:{b}")),
        ]
    );
    assert!(to(&out, 2).is_empty(), "plain members hear nothing of it");
}

#[test]
fn the_host_leaving_makes_the_earliest_eligible_member_peer_1_with_exact_frames() {
    let mut lobby = Lobby::new(ELIGIBLE);
    let plain = lobby.join(2, PLAIN);
    let follower = lobby.join(3, FOLLOW);
    let x = lobby.join(4, ELIGIBLE);
    let y = lobby.join(5, ELIGIBLE);
    lobby.server.disconnect(1); // the host's process died
    let out = lobby.drain();
    // The successor first: it is peer 1 now, and meets everyone it must serve.
    let first = out
        .iter()
        .position(|o| matches!(o, ServerOutput::Send { .. }));
    assert_eq!(
        out[first.expect("frames")],
        ServerOutput::Send {
            to: 4,
            text: msg(MessageKind::HostChange, 1, "1").encode()
        },
        "the successor's HOST_CHANGE is the first frame"
    );
    assert_eq!(
        to_but_succession(&out, 4),
        vec![
            msg(MessageKind::HostChange, 1, "1"),
            msg(MessageKind::PeerConnect, plain, ""),
            msg(MessageKind::PeerConnect, follower, "m"),
            msg(MessageKind::PeerConnect, y, "m"),
        ]
    );
    assert_eq!(
        to(&out, 2),
        vec![
            msg(MessageKind::PeerDisconnect, 1, ""),
            msg(MessageKind::PeerDisconnect, x, ""),
            msg(MessageKind::PeerConnect, 1, ""),
        ],
        "a plain member follows with the demo's frames"
    );
    for opted_in in [3, 5] {
        assert_eq!(
            to_but_succession(&out, opted_in),
            vec![msg(MessageKind::HostChange, x, "1")]
        );
        assert_eq!(
            to(&out, opted_in).last(),
            Some(&msg(MessageKind::Succession, 0, &format!("1:{y}")))
        );
    }
    assert!(out.contains(&ServerOutput::HostChanged {
        name: lobby.name.clone(),
        host: 4,
        epoch: 1
    }));
    assert!(closed(&out, 2).is_none() && lobby.server.lobby_count() == 1);
    assert_eq!(lobby.server.epoch(&lobby.name), Some(1));
    assert_eq!(lobby.server.stats().migrations, 1);

    // Peer 1 is the successor now, both ways, and its old id is nobody's.
    let out = lobby.text(2, &msg(MessageKind::Offer, 1, "sdp").encode());
    assert_eq!(to(&out, 4), vec![msg(MessageKind::Offer, plain, "sdp")]);
    let out = lobby.text(4, &msg(MessageKind::Answer, plain, "sdp2").encode());
    assert_eq!(to(&out, 2), vec![msg(MessageKind::Answer, 1, "sdp2")]);
    let out = lobby.text(5, &msg(MessageKind::Offer, x, "sdp").encode());
    assert_eq!(closed(&out, 5), Some((4000, close::INVALID_DEST)));
    // A newcomer meets the new host as peer 1.
    let out = lobby.join_as(6, ELIGIBLE, false);
    assert_eq!(to(&out, 6)[2], msg(MessageKind::PeerConnect, 1, "m"));
    // (y was closed for its offer to x: the newcomer is next in line.)
    assert_eq!(
        to(&out, 6)[3],
        msg(MessageKind::Succession, 0, &format!("1:{}", lobby.ids[&6]))
    );
    assert_eq!(
        to(&out, 4)[0],
        msg(MessageKind::PeerConnect, lobby.ids[&6], "m")
    );
}

#[test]
fn no_eligible_member_closes_the_lobby_as_today() {
    let mut lobby = Lobby::new(ELIGIBLE);
    lobby.join(2, PLAIN);
    lobby.join(3, FOLLOW);
    lobby.server.disconnect(1);
    let out = lobby.drain();
    for member in [2, 3] {
        assert_eq!(closed(&out, member), Some((4000, close::HOST_DISCONNECTED)));
        assert!(to(&out, member).is_empty());
    }
    assert_eq!(lobby.server.lobby_count(), 0);

    // A host that did not opt in: today's close, whoever else opted in.
    let mut lobby = Lobby::new(PLAIN);
    lobby.join(2, ELIGIBLE);
    lobby.server.disconnect(1);
    assert_eq!(
        closed(&lobby.drain(), 2),
        Some((4000, close::HOST_DISCONNECTED))
    );

    // Mesh lobbies do not migrate (v1): every member is already connected to every other.
    let mut server = LobbyServer::new(LobbyServerConfig::default(), 7);
    let now = Instant::now();
    let eligible = ConnectOptions::default().with_migration(ELIGIBLE);
    server.connect_with(now, 1, LOCAL, eligible);
    server.handle_text(now, 1, r#"{"type":0,"id":0,"data":""}"#);
    let out: Vec<_> = std::iter::from_fn(|| server.poll_output()).collect();
    let name = to(&out, 1).last().expect("JOIN").data.clone();
    server.connect_with(now, 2, LOCAL, eligible);
    server.handle_text(now, 2, &msg(MessageKind::Join, 0, &name).encode());
    server.disconnect(1);
    let out: Vec<_> = std::iter::from_fn(|| server.poll_output()).collect();
    assert_eq!(closed(&out, 2), Some((4000, close::HOST_DISCONNECTED)));
}

#[test]
fn a_successor_that_leaves_mid_migration_hands_on_to_the_next_in_line() {
    let mut lobby = Lobby::new(ELIGIBLE);
    let x = lobby.join(2, ELIGIBLE);
    let y = lobby.join(3, ELIGIBLE);
    let plain = lobby.join(4, PLAIN);
    lobby.server.disconnect(1);
    lobby.drain();
    lobby.server.disconnect(2); // the successor dies before anyone reached it
    let out = lobby.drain();
    assert_eq!(
        to_but_succession(&out, 3),
        vec![
            msg(MessageKind::HostChange, 1, "2"),
            msg(MessageKind::PeerConnect, plain, ""),
        ]
    );
    assert_eq!(
        to(&out, 4),
        vec![
            msg(MessageKind::PeerDisconnect, 1, ""),
            msg(MessageKind::PeerDisconnect, y, ""),
            msg(MessageKind::PeerConnect, 1, ""),
        ]
    );
    assert!(
        to(&out, 4).iter().all(|m| m.id != x),
        "x never was more than peer 1"
    );
    assert_eq!(lobby.server.epoch(&lobby.name), Some(2));
}

#[test]
fn a_lost_report_the_host_answers_only_reconnects_the_reporter() {
    let mut lobby = Lobby::new(ELIGIBLE);
    let a = lobby.join(2, ELIGIBLE);
    lobby.join(3, ELIGIBLE);
    lobby.join(4, ELIGIBLE);
    let out = lobby.host_lost(2, 0);
    assert_eq!(
        out,
        vec![ServerOutput::Ping { to: 1 }],
        "the lobby probes the host"
    );
    lobby.server.handle_pong(1);
    let out = lobby.drain();
    assert_eq!(
        to(&out, 2),
        vec![
            msg(MessageKind::PeerDisconnect, 1, ""),
            msg(MessageKind::PeerConnect, 1, "m"),
        ]
    );
    assert_eq!(
        to(&out, 1),
        vec![
            msg(MessageKind::PeerDisconnect, a, ""),
            msg(MessageKind::PeerConnect, a, "m"),
        ]
    );
    assert!(to(&out, 3).is_empty() && to(&out, 4).is_empty());
    assert!(
        lobby.at(Duration::from_secs(1)).is_empty(),
        "no election after the answer"
    );
    assert_eq!(lobby.server.epoch(&lobby.name), Some(0));
    // The same member reporting again is still one report.
    lobby.host_lost(2, 0);
    lobby.host_lost(2, 0);
    lobby.server.handle_pong(1);
    lobby.drain();
    assert_eq!(lobby.server.epoch(&lobby.name), Some(0));
}

#[test]
fn enough_reports_replace_the_host_and_fence_it() {
    // n = 4 opted-in clients: max(2, ⌈4/2⌉) = 2 reports.
    let mut lobby = Lobby::new(ELIGIBLE);
    let x = lobby.join(2, ELIGIBLE);
    lobby.join(3, ELIGIBLE);
    lobby.join(4, FOLLOW);
    lobby.join(5, ELIGIBLE);
    lobby.host_lost(4, 0);
    lobby.server.handle_pong(1); // its WebSocket is fine, its UDP is not
    lobby.drain();
    let out = lobby.host_lost(3, 0);
    assert_eq!(
        to_but_succession(&out, 2)[0],
        msg(MessageKind::HostChange, 1, "1")
    );
    assert_eq!(
        to_but_succession(&out, 3),
        vec![msg(MessageKind::HostChange, x, "1")]
    );
    // The old host is told who took over, then closed.
    assert_eq!(to(&out, 1), vec![msg(MessageKind::HostChange, x, "1")]);
    assert_eq!(
        closed(&out, 1),
        Some((close::HOST_REPLACED_CODE, close::HOST_REPLACED))
    );
    assert!(!lobby.server.is_connected(1));
    assert!(
        to(&out, 2)
            .iter()
            .all(|m| m.kind != MessageKind::PeerConnect || m.id != 1),
        "nobody hears of the old host's own id"
    );
    assert_eq!(lobby.server.stats().host_lost_reports, 2);
}

#[test]
fn reports_expire_and_a_crowd_needs_half() {
    // n = 5: three reports within the window.
    let mut lobby = Lobby::new(ELIGIBLE);
    for conn in 2..=6 {
        lobby.join(conn, ELIGIBLE);
    }
    lobby.host_lost(2, 0);
    lobby.server.handle_pong(1);
    lobby.drain();
    lobby.at(Duration::from_secs(6)); // the first report is older than the 5 s window
    lobby.host_lost(3, 0);
    lobby.server.handle_pong(1);
    lobby.host_lost(4, 0);
    lobby.server.handle_pong(1);
    lobby.drain();
    assert_eq!(
        lobby.server.epoch(&lobby.name),
        Some(0),
        "two live reports of five"
    );
    lobby.host_lost(5, 0);
    assert_eq!(lobby.server.epoch(&lobby.name), Some(1));
}

#[test]
fn one_report_and_no_answer_replaces_a_silent_host() {
    let config = LobbyServerConfig {
        host_probe_timeout: Duration::from_millis(500),
        ..LobbyServerConfig::default()
    };
    let mut lobby = Lobby::with_config(ELIGIBLE, config);
    let x = lobby.join(2, ELIGIBLE);
    let out = lobby.host_lost(2, 0);
    assert_eq!(out, vec![ServerOutput::Ping { to: 1 }]);
    assert!(lobby.at(Duration::from_millis(499)).is_empty());
    let out = lobby.at(Duration::from_millis(1));
    assert_eq!(
        to_but_succession(&out, 2),
        vec![msg(MessageKind::HostChange, 1, "1")]
    );
    assert_eq!(to(&out, 1), vec![msg(MessageKind::HostChange, x, "1")]);
    assert_eq!(closed(&out, 1), Some((4010, close::HOST_REPLACED)));
    // A pong that comes too late changes nothing.
    lobby.server.handle_pong(1);
    assert!(lobby.drain().is_empty());
}

#[test]
fn stale_epochs_are_ignored() {
    let mut lobby = Lobby::new(ELIGIBLE);
    lobby.join(2, ELIGIBLE);
    lobby.join(3, ELIGIBLE);
    lobby.join(4, ELIGIBLE);
    lobby.server.disconnect(1);
    lobby.drain();
    // Reports and hand-overs about epoch 0 arrive after the change to epoch 1.
    assert!(lobby.host_lost(3, 0).is_empty());
    assert!(lobby.host_lost(4, 0).is_empty());
    assert!(lobby
        .text(2, &msg(MessageKind::HostChange, 0, "0").encode())
        .is_empty());
    assert_eq!(lobby.server.epoch(&lobby.name), Some(1));
    assert_eq!(lobby.server.stats().stale_epochs, 3);
    // Malformed epochs are protocol errors.
    let out = lobby.host_lost_text(3, "one");
    assert_eq!(closed(&out, 3), Some((4000, close::INVALID_FORMAT)));
    // A member that is not the host cannot hand over.
    let out = lobby.text(4, &msg(MessageKind::HostChange, 0, "1").encode());
    assert_eq!(
        closed(&out, 4),
        Some((4000, close::ONLY_HOST_CAN_HAND_OVER))
    );
    // Server-only types from a client are refused.
    lobby.join(5, ELIGIBLE);
    let out = lobby.text(5, &msg(MessageKind::Hello, 0, "migrate/1").encode());
    assert_eq!(closed(&out, 5), Some((4000, close::INVALID_CMD)));
}

impl Lobby {
    fn host_lost_text(&mut self, conn: ConnectionId, epoch: &str) -> Vec<ServerOutput> {
        self.text(conn, &msg(MessageKind::HostLost, 1, epoch).encode())
    }
}

#[test]
fn the_host_hands_over_to_a_chosen_member_or_the_next_in_line() {
    let mut lobby = Lobby::new(ELIGIBLE);
    let x = lobby.join(2, ELIGIBLE);
    let y = lobby.join(3, ELIGIBLE);
    let plain = lobby.join(4, PLAIN);
    let out = lobby.text(1, &msg(MessageKind::HostChange, y, "0").encode());
    assert_eq!(
        to_but_succession(&out, 3),
        vec![
            msg(MessageKind::HostChange, 1, "1"),
            msg(MessageKind::PeerConnect, x, "m"),
            msg(MessageKind::PeerConnect, plain, ""),
        ]
    );
    assert_eq!(to(&out, 1), vec![msg(MessageKind::HostChange, y, "1")]);
    assert_eq!(closed(&out, 1), Some((1000, close::HOST_HANDED_OVER)));
    assert_eq!(
        to_but_succession(&out, 2),
        vec![msg(MessageKind::HostChange, y, "1")]
    );
    // The new host hands over with 0: the next in line (x) takes it; a follower is never
    // chosen, and naming a plain member means "the lobby picks".
    let out = lobby.text(3, &msg(MessageKind::HostChange, plain, "1").encode());
    assert_eq!(
        to_but_succession(&out, 2)[0],
        msg(MessageKind::HostChange, 1, "2")
    );
    // The last eligible member hands over to nobody: the lobby ends as when a host leaves.
    let out = lobby.text(2, &msg(MessageKind::HostChange, 0, "2").encode());
    assert_eq!(closed(&out, 4), Some((4000, close::HOST_DISCONNECTED)));
    assert_eq!(lobby.server.lobby_count(), 0);
}

#[test]
fn seal_keeps_opted_in_members_of_a_migratable_lobby() {
    let mut lobby = Lobby::new(ELIGIBLE);
    lobby.join(2, PLAIN);
    lobby.join(3, ELIGIBLE);
    let out = lobby.text(1, &msg(MessageKind::Seal, 0, "").encode());
    assert_eq!(to(&out, 2), vec![msg(MessageKind::Seal, 0, "")]);
    let out = lobby.at(Duration::from_secs(10));
    assert_eq!(closed(&out, 2), Some((1000, close::SEAL_COMPLETE)));
    assert!(closed(&out, 1).is_none() && closed(&out, 3).is_none());
    assert!(
        to(&out, 1).is_empty() && to(&out, 3).is_empty(),
        "no PEER_DISCONNECT"
    );
    // Still sealed, still migratable.
    lobby.server.connect(lobby.now, 9, LOCAL);
    let join = msg(MessageKind::Join, 1, &lobby.name.clone()).encode();
    assert_eq!(
        closed(&lobby.text(9, &join), 9),
        Some((4000, close::LOBBY_IS_SEALED))
    );
    lobby.server.disconnect(1);
    let out = lobby.drain();
    assert_eq!(
        to_but_succession(&out, 3),
        vec![msg(MessageKind::HostChange, 1, "1")]
    );
}

#[test]
fn offers_to_the_new_host_follow_its_host_change() {
    // Every frame the server queues for the successor after the election follows its
    // HOST_CHANGE, and a survivor can only offer after its own HOST_CHANGE arrived.
    let mut lobby = Lobby::new(ELIGIBLE);
    lobby.join(2, ELIGIBLE);
    let b = lobby.join(3, ELIGIBLE);
    lobby.server.disconnect(1);
    let out = lobby.drain();
    let successor_first = out
        .iter()
        .position(|o| matches!(o, ServerOutput::Send { to: 2, .. }))
        .expect("frames to the successor");
    let survivor_first = out
        .iter()
        .position(|o| matches!(o, ServerOutput::Send { to: 3, .. }))
        .expect("frames to the survivor");
    assert!(successor_first < survivor_first);
    let out = lobby.text(3, &msg(MessageKind::Offer, 1, "sdp").encode());
    assert_eq!(to(&out, 2), vec![msg(MessageKind::Offer, b, "sdp")]);
}

#[test]
fn lobby_clients_follow_a_migration_end_to_end() {
    // The server and three LobbyClients: host, successor, survivor.
    let mut server = LobbyServer::new(LobbyServerConfig::default(), 3);
    let now = Instant::now();
    let mut clients: Vec<LobbyClient> = Vec::new();
    let mut events: Vec<Vec<LobbyEvent>> = vec![Vec::new(); 3];
    let mut pump = |server: &mut LobbyServer, clients: &mut Vec<LobbyClient>| {
        while let Some(out) = server.poll_output() {
            if let ServerOutput::Send { to, text } = out {
                let i = (to - 1) as usize;
                let event = clients[i].handle_text(&text).expect("valid frame");
                events[i].push(event);
            }
        }
    };
    let mut lobby = String::new();
    for i in 0..3u64 {
        let client = LobbyClient::new(lobby.clone(), false).with_migration(ELIGIBLE);
        let options = ConnectOptions::from_request_target(&format!(
            "/?{}",
            client.query().expect("opted in")
        ));
        let join = client.join_message();
        clients.push(client);
        server.connect_with(now, i + 1, LOCAL, options);
        server.handle_text(now, i + 1, &join);
        pump(&mut server, &mut clients);
        lobby = clients[0].lobby().to_owned();
    }
    let (x, y) = (clients[1].id().expect("id"), clients[2].id().expect("id"));
    assert!(clients.iter().all(LobbyClient::migration_available));
    assert_eq!(clients[0].successor(), Some(x));
    assert!(clients[1].peer_migrates(1) && clients[0].peer_migrates(y));

    // The host hands over to whoever is next.
    let frame = clients[0].hand_over_message(None).expect("host");
    server.handle_text(now, 1, &frame);
    let mut events2 = Vec::new();
    while let Some(out) = server.poll_output() {
        if let ServerOutput::Send { to, text } = out {
            events2.push((
                to,
                clients[(to - 1) as usize]
                    .handle_text(&text)
                    .expect("valid"),
            ));
        }
    }
    assert!(events2.contains(&(2, LobbyEvent::BecameHost { was: x, epoch: 1 })));
    assert!(events2.contains(&(2, LobbyEvent::PeerJoined(y))));
    assert!(events2.contains(&(3, LobbyEvent::HostChanged { was: x, epoch: 1 })));
    assert!(events2.contains(&(
        1,
        LobbyEvent::NoLongerHost {
            successor: x,
            epoch: 1
        }
    )));
    assert_eq!(clients[1].id(), Some(1));
    assert_eq!(clients[2].id(), Some(y));
    assert_eq!(clients[2].epoch(), 1);
    assert_eq!(clients[1].successor(), Some(y));
    // The survivor's report now names epoch 1.
    assert_eq!(
        clients[2].host_lost_message(),
        Ok(msg(MessageKind::HostLost, 1, "1").encode())
    );
    assert!(
        clients[1].host_lost_message().is_err(),
        "the host does not report itself"
    );
}
