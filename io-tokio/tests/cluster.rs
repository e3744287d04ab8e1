//! Several `rtcmesh-signal` nodes sharing lobbies through a real `redis-server` on loopback.
//! Nodes run as child processes so a test can kill one outright (`kill -9`). Every wait is
//! bounded. These tests need Debian's `redis-server` (`.ci/run` installs it); without it they
//! say so in one line and pass without running.

mod common;

use std::time::{Duration, Instant};

use common::*;
use futures_util::SinkExt;
use rtcmesh::lobby::LobbyEvent;
use rtcmesh::{Event, Mesh, PeerId, Target, TransferMode};
use rtcmesh_tokio::{join, ClusterConfig, JoinOptions, Session, SignalConfig, SignalServer};
use tokio_tungstenite::tungstenite::Message;

/// How long a dead node's members may take to be announced gone elsewhere: the node lease
/// (3 s by default) plus a lease check (1 s), with slack for a loaded machine.
const DEAD_NODE_NOTICED: Duration = Duration::from_secs(8);

fn node(redis: &RedisServer) -> ServerProcess {
    ServerProcess::start(&["--redis", &redis.url])
}

async fn connected_to(session: &mut Session<Mesh>, count: usize) -> Vec<PeerId> {
    let mut peers = Vec::new();
    let deadline = tokio::time::Instant::now() + LIMIT;
    while peers.len() < count {
        let event = tokio::time::timeout_at(deadline, session.events.recv())
            .await
            .unwrap_or_else(|_| panic!("peer {} saw only {peers:?} connect", session.id()))
            .expect("events open");
        if let Event::PeerConnected(id) = event {
            peers.push(id);
        }
    }
    peers.sort();
    peers
}

async fn lobby_event(session: &mut Session<Mesh>, wanted: &LobbyEvent, limit: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, session.lobby_events.recv()).await {
            Ok(Some(event)) if event == *wanted => return true,
            Ok(Some(_)) => continue,
            _ => return false,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_on_three_nodes_form_one_mesh_and_a_killed_nodes_member_is_announced_gone() {
    let Some(redis) = redis() else { return };
    let (a, b, c) = (node(&redis), node(&redis), node(&redis));
    let host = join(&a.url, "", JoinOptions::default())
        .await
        .expect("host on a");
    let lobby = host.lobby.clone();
    let mut sessions = vec![host];
    for url in [&b.url, &c.url, &a.url] {
        let s = join(url, &lobby, JoinOptions::default())
            .await
            .expect("member joins through another node");
        sessions.push(s);
    }
    let ids: Vec<PeerId> = sessions.iter().map(|s| s.id()).collect();
    for s in &mut sessions {
        let mut expected: Vec<PeerId> = ids.iter().copied().filter(|id| *id != s.id()).collect();
        expected.sort();
        assert_eq!(
            connected_to(s, 3).await,
            expected,
            "a full mesh across nodes"
        );
    }
    for s in &sessions {
        s.handle
            .send(
                Target::All,
                TransferMode::Reliable,
                0,
                s.id().to_le_bytes().to_vec(),
            )
            .await
            .expect("send");
    }
    for s in &mut sessions {
        let mut from = Vec::new();
        let deadline = tokio::time::Instant::now() + LIMIT;
        while from.len() < 3 {
            let event = tokio::time::timeout_at(deadline, s.events.recv())
                .await
                .expect("packets in time")
                .expect("open");
            if let Event::Packet(p) = event {
                assert_eq!(p.data, p.from.to_le_bytes());
                from.push(p.from);
            }
        }
        assert_eq!(from.len(), 3);
        assert_eq!(s.rejected_signals(), 0);
    }

    // Node c dies without a word: its member is announced gone on a and b.
    let gone = sessions[2].id();
    c.signal("KILL");
    let started = Instant::now();
    for i in [0, 1, 3] {
        assert!(
            lobby_event(
                &mut sessions[i],
                &LobbyEvent::PeerLeft(gone),
                DEAD_NODE_NOTICED
            )
            .await,
            "peer {} heard that {gone} left",
            sessions[i].id()
        );
    }
    let noticed = started.elapsed();
    println!("a killed node's member was announced gone after {noticed:?}");
    assert!(noticed < DEAD_NODE_NOTICED);
    drop(c);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_takes_its_own_lobbies_and_members_and_nothing_else() {
    let Some(redis) = redis() else { return };
    let (a, b) = (node(&redis), node(&redis));
    // Lobby Y lives on b, with a member on a; lobby Z lives on a, with a member on b.
    let mut y_host = ws(&b.url).await;
    let (_, y) = join_raw(&mut y_host, "").await;
    let mut y_member = ws(&a.url).await;
    let (y_member_id, _) = join_raw(&mut y_member, &y).await;
    let mut z_host = ws(&a.url).await;
    let (_, z) = join_raw(&mut z_host, "").await;
    let mut z_member = ws(&b.url).await;
    let (z_member_id, _) = join_raw(&mut z_member, &z).await;
    assert!(expect_frame(&mut y_host, 2, y_member_id, LIMIT).await);
    assert!(expect_frame(&mut z_host, 2, z_member_id, LIMIT).await);

    // Across nodes, a relayed frame is byte for byte what one node sends.
    y_member
        .send(frame(4, 1, "v=0 offer"))
        .await
        .expect("offer");
    let relayed = read_until(&mut y_host, LIMIT, |m| match m {
        Message::Text(t) if t.contains("\"type\":4") => Some(t.to_string()),
        _ => None,
    })
    .await;
    assert_eq!(
        relayed.as_deref(),
        Some(format!(r#"{{"type":4,"id":{y_member_id},"data":"v=0 offer"}}"#).as_str())
    );

    a.signal("KILL");
    let started = Instant::now();
    assert!(
        expect_frame(&mut y_host, 3, y_member_id, DEAD_NODE_NOTICED).await,
        "b's lobby hears that a's member left"
    );
    assert_eq!(
        close_of(&mut z_member).await,
        Some((4000, "Room host has disconnected".to_owned())),
        "a's lobby is gone with its host"
    );
    let noticed = started.elapsed();
    println!("a killed node's clients were handled elsewhere after {noticed:?}");
    assert!(noticed < DEAD_NODE_NOTICED);
    // b goes on: a new member joins y there.
    let mut late = ws(&b.url).await;
    let (late_id, _) = join_raw(&mut late, &y).await;
    assert!(expect_frame(&mut y_host, 2, late_id, LIMIT).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_shutting_down_tells_the_others_at_once() {
    let Some(redis) = redis() else { return };
    let (mut a, b) = (node(&redis), node(&redis));
    let mut y_host = ws(&b.url).await;
    let (_, y) = join_raw(&mut y_host, "").await;
    let mut y_member = ws(&a.url).await;
    let (y_member_id, _) = join_raw(&mut y_member, &y).await;
    let mut z_host = ws(&a.url).await;
    let (_, z) = join_raw(&mut z_host, "").await;
    let mut z_member = ws(&b.url).await;
    join_raw(&mut z_member, &z).await;
    assert!(expect_frame(&mut y_host, 2, y_member_id, LIMIT).await);

    a.signal("TERM");
    let started = Instant::now();
    let shutting_down = Some((1001, "Server shutting down".to_owned()));
    assert_eq!(close_of(&mut y_member).await, shutting_down);
    assert_eq!(close_of(&mut z_member).await, shutting_down, "through b");
    assert!(expect_frame(&mut y_host, 3, y_member_id, LIMIT).await);
    let took = started.elapsed();
    println!("a node's graceful shutdown reached the other node's clients in {took:?}");
    assert!(
        took < Duration::from_secs(2),
        "no lease to wait for: {took:?}"
    );
    assert!(a.wait_exit(LIMIT).is_some_and(|s| s.success()));
    // A lobby name that died with a is unknown now.
    assert_eq!(
        join_refused(&b.url, &z).await,
        Some((4000, "Lobby does not exists".to_owned()))
    );
}

/// A node in this process, so a test can set what the binary has no flag for.
async fn node_in_process(
    redis: &RedisServer,
    tune: impl FnOnce(&mut SignalConfig),
) -> SignalServer {
    let mut config =
        SignalConfig::default().with_cluster(Some(ClusterConfig::new(redis.url.clone())));
    tune(&mut config);
    SignalServer::bind_with("127.0.0.1:0".parse().expect("addr"), config)
        .await
        .expect("node")
}

/// Two nodes sharing lobbies both ways, where a's queue of messages for Redis holds four, so
/// a burst while Redis stalls overflows it. Lobby Y lives on a with a member on b; lobby Z lives
/// on b (two members at most) with a member on a.
struct Split {
    redis: RedisServer,
    a: SignalServer,
    b: SignalServer,
    y: String,
    y_host: Ws,
    y_member: Ws,
    y_member_id: i64,
    z: String,
    z_host: Ws,
    z_member: Ws,
    z_member_id: i64,
}

impl Split {
    /// `None` without `redis-server` (see `installed`).
    async fn start() -> Option<Split> {
        let redis = redis()?;
        let a = node_in_process(&redis, |c| {
            let cluster = c.cluster.as_mut().expect("cluster");
            cluster.max_pending_publishes = 4;
            // Renewed every second (each lease check), so a live lobby's record never lapses.
            cluster.lobby_lease = Duration::from_secs(2);
        })
        .await;
        let b = node_in_process(&redis, |c| c.lobby.max_lobby_size = 2).await;
        let mut y_host = ws(&a.url()).await;
        let (_, y) = join_raw(&mut y_host, "").await;
        let mut y_member = ws(&b.url()).await;
        let (y_member_id, _) = join_raw(&mut y_member, &y).await;
        assert!(expect_frame(&mut y_host, 2, y_member_id, LIMIT).await);
        let mut z_host = ws(&b.url()).await;
        let (_, z) = join_raw(&mut z_host, "").await;
        let mut z_member = ws(&a.url()).await;
        let (z_member_id, _) = join_raw(&mut z_member, &z).await;
        assert!(expect_frame(&mut z_host, 2, z_member_id, LIMIT).await);
        Some(Split {
            redis,
            a,
            b,
            y,
            y_host,
            y_member,
            y_member_id,
            z,
            z_host,
            z_member,
            z_member_id,
        })
    }

    /// Redis stalls for a second while Z's member on a signals its host 50 times: a's queue
    /// overflows and a detaches, as when Redis fails: it closes its client in Z (1011) and Y
    /// loses its member on b. Returns once a is attached again.
    async fn overflow_a(&mut self) {
        assert_eq!(
            self.redis.command(&["CLIENT", "PAUSE", "1000", "ALL"]),
            "+OK"
        );
        for i in 0..50 {
            let candidate = format!("\n0\n0\ncandidate:{i} 1 udp 1 127.0.0.1 9 typ host");
            if self.z_member.send(frame(6, 1, &candidate)).await.is_err() {
                break;
            }
        }
        assert_eq!(
            close_of(&mut self.z_member).await,
            Some((1011, "Signaling cluster unavailable".to_owned())),
            "a detached: its client in b's lobby is closed"
        );
        assert!(
            expect_frame(&mut self.y_host, 3, self.y_member_id, LIMIT).await,
            "a detached: its lobby lost its member on b"
        );
        let a = &self.a;
        assert!(
            eventually(LIMIT, || a.metrics().cluster_up).await,
            "a re-attached"
        );
    }
}

/// Waits (bounded) until `ready` holds, polling.
async fn eventually(limit: Duration, mut ready: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while !ready() {
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_reconnects_to_redis_keeps_its_lobbies() {
    let Some(redis) = redis() else { return };
    let (a, b) = (node(&redis), node(&redis));
    let mut host = ws(&a.url).await;
    let (_, lobby) = join_raw(&mut host, "").await;

    for n in [&a, &b] {
        assert!(n.wait_log("attached to the Redis cluster", LIMIT));
    }

    // Redis drops every node's connections (a restart, a failover, a blip) but keeps its keys:
    // the lobby's record still names a when a comes back.
    assert_eq!(
        redis
            .command(&["CLIENT", "KILL", "TYPE", "normal"])
            .get(..1),
        Some(":")
    );
    assert_eq!(
        redis
            .command(&["CLIENT", "KILL", "TYPE", "pubsub"])
            .get(..1),
        Some(":")
    );
    for n in [&a, &b] {
        assert!(
            n.wait_log_count("attached to the Redis cluster", 2, LIMIT),
            "the node re-attached; its log:\n{}",
            n.log()
        );
    }

    // a recognises its own record: the host stays, and a member joins through b.
    let closed = read_until(&mut host, Duration::from_secs(1), |m| match m {
        Message::Close(f) => Some(f.clone()),
        _ => None,
    })
    .await;
    assert_eq!(closed, None, "the host of a's lobby is not closed");
    let mut member = ws(&b.url).await;
    let joined = try_join_raw(&mut member, &lobby).await;
    let (member_id, _) = joined.expect("a member joins a's lobby through b");
    assert!(expect_frame(&mut host, 2, member_id, LIMIT).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_publish_queue_overflowed_detaches_and_comes_back() {
    let Some(mut split) = Split::start().await else {
        return;
    };
    split.overflow_a().await;

    // a is whole again: a client on a joins a new lobby on b, and a's own lobby, still
    // recorded after its 2 s lease, takes a new member through b.
    let mut w_host = ws(&split.b.url()).await;
    let (_, w) = join_raw(&mut w_host, "").await;
    let mut w_member = ws(&split.a.url()).await;
    let (w_member_id, _) = try_join_raw(&mut w_member, &w)
        .await
        .expect("a client on a joins b's lobby");
    assert!(expect_frame(&mut w_host, 2, w_member_id, LIMIT).await);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut late = ws(&split.b.url()).await;
    let (late_id, _) = try_join_raw(&mut late, &split.y)
        .await
        .expect("a's lobby is still recorded in Redis");
    assert!(expect_frame(&mut split.y_host, 2, late_id, LIMIT).await);
}
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_back_from_an_outage_tells_the_lobbies_it_left_so_no_ghost_stays() {
    let Some(mut split) = Split::start().await else {
        return;
    };
    split.overflow_a().await;

    // Z's host hears that a's client left, and the place it held is free: a client joining
    // again through a is one member, not two.
    assert!(
        expect_frame(&mut split.z_host, 3, split.z_member_id, LIMIT).await,
        "Z's host heard that the member on a left"
    );
    let mut again = ws(&split.a.url()).await;
    let (again_id, _) = try_join_raw(&mut again, &split.z)
        .await
        .expect("room in Z (two members at most) for the client joining again");
    assert!(expect_frame(&mut split.z_host, 2, again_id, LIMIT).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_back_from_an_outage_has_the_members_it_dropped_closed_where_they_are() {
    let Some(mut split) = Split::start().await else {
        return;
    };
    split.overflow_a().await;

    // Y dropped its member on b while a was detached: b closes that client instead of leaving
    // it in a lobby it is no longer in.
    assert_eq!(
        close_of(&mut split.y_member).await,
        Some((1011, "Signaling cluster unavailable".to_owned())),
        "b closed the member Y dropped"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_that_its_lobbys_node_never_answers_is_closed_not_left_waiting() {
    // A lobby recorded for a node whose lease runs but which hears nothing: a JOIN sent while
    // its node was detached, or just before it died.
    let Some(redis) = redis() else { return };
    let b = node(&redis);
    let silent = "00000000deadbeef";
    let lease = ["PX", "60000"];
    let node_key = format!("rtcmesh:node:{silent}");
    assert_eq!(
        redis.command(&[&["SET", &node_key, "1"][..], &lease].concat()),
        "+OK"
    );
    let lobby_key = "rtcmesh:lobby:NOBODYANSWERS";
    assert_eq!(
        redis.command(&[&["SET", lobby_key, silent][..], &lease].concat()),
        "+OK"
    );

    let started = Instant::now();
    assert_eq!(
        join_refused(&b.url, "NOBODYANSWERS").await,
        Some((1011, "Signaling cluster unavailable".to_owned()))
    );
    println!(
        "an unanswered JOIN was closed after {:?}",
        started.elapsed()
    );
}

/// Host migration across nodes: the lobby lives on node a, where its host connected; its
/// successor is on node b. The election runs on a; HELLO comes from each member's own node,
/// the opt-in travels with the JOIN, and the probe of a host on another node is a ping that
/// node sends and whose pong it forwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lobby_migrates_its_host_to_a_member_on_another_node() {
    let redis = RedisServer::start();
    let (a, b) = (node(&redis), node(&redis));
    let opted = |node: &ServerProcess| format!("{}/?migrate=1", node.url);
    let mut host = ws(&opted(&a)).await;
    let (_, lobby) = join_client_server_raw(&mut host, "").await;
    let mut x = ws(&opted(&b)).await;
    assert_eq!(
        next_frames(&mut x, 1, LIMIT).await,
        vec![(8, 0, "migrate/1".to_owned())]
    );
    let (x_id, _) = join_client_server_raw(&mut x, &lobby).await;
    let mut y = ws(&opted(&a)).await;
    let (y_id, _) = join_client_server_raw(&mut y, &lobby).await;
    let mut plain = ws(&b.url).await;
    let (plain_id, _) = join_client_server_raw(&mut plain, &lobby).await;
    assert!(expect_frame(&mut host, 2, plain_id, LIMIT).await);

    drop(host); // the host's process dies
    assert_eq!(
        next_frames(&mut x, 3, LIMIT).await,
        vec![
            (9, 1, "1".to_owned()),
            (2, y_id, "m".to_owned()),
            (2, plain_id, String::new()),
        ],
        "the member on node b is peer 1 now"
    );
    assert_eq!(
        next_frames(&mut y, 1, LIMIT).await,
        vec![(9, x_id, "1".to_owned())]
    );
    assert_eq!(
        next_frames(&mut plain, 3, LIMIT).await,
        vec![
            (3, 1, String::new()),
            (3, x_id, String::new()),
            (2, 1, String::new())
        ]
    );

    // y reports x lost; x (on b) answers the probe that crosses nodes, so y reconnects.
    y.send(frame(10, 1, "1")).await.expect("HOST_LOST");
    let reads = tokio::spawn(async move {
        let frames = next_frames(&mut x, 2, LIMIT).await;
        (x, frames)
    });
    assert_eq!(
        next_frames(&mut y, 2, LIMIT).await,
        vec![(3, 1, String::new()), (2, 1, "m".to_owned())]
    );
    let (x, frames) = reads.await.expect("x task");
    assert_eq!(
        frames,
        vec![(3, y_id, String::new()), (2, y_id, "m".to_owned())]
    );

    // x goes too: y is next, and the plain member on b follows again.
    drop(x);
    assert_eq!(
        next_frames(&mut y, 2, LIMIT).await,
        vec![(9, 1, "2".to_owned()), (2, plain_id, String::new())]
    );
    assert_eq!(
        next_frames(&mut plain, 3, LIMIT).await,
        vec![
            (3, 1, String::new()),
            (3, y_id, String::new()),
            (2, 1, String::new())
        ]
    );
    assert!(
        a.wait_log_count("host migrated", 2, LIMIT),
        "node a ran both elections"
    );
    assert!(!b.log().contains("host migrated"), "node b ran none");
}
