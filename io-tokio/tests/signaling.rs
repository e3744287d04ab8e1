//! The signaling server under abuse and in production settings, over real sockets on loopback.
//! Every wait is bounded; a test fails rather than hangs. The abuse cases run the
//! `rtcmesh-signal` binary as a child process so its own memory and CPU can be measured.

mod common;

use std::time::{Duration, Instant};

use common::*;
use futures_util::{SinkExt, StreamExt};
use rtcmesh::lobby::LobbyServerConfig;
use rtcmesh::{Event, Target, TransferMode};
use rtcmesh_tokio::{join, JoinError, JoinOptions, SignalConfig, SignalServer};
use tokio_tungstenite::tungstenite::Message;

async fn server_with(config: SignalConfig) -> SignalServer {
    SignalServer::bind_with("127.0.0.1:0".parse().expect("addr"), config)
        .await
        .expect("server")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealing_closes_every_member_with_1000_seal_complete_like_the_reference() {
    let config = LobbyServerConfig::default().with_seal_close_after(Duration::from_millis(200));
    let server = server_with(SignalConfig::default().with_lobby(config)).await;
    let mut host = ws(&server.url()).await;
    let (_, lobby) = join_raw(&mut host, "").await;
    let mut guests = Vec::new();
    for _ in 0..2 {
        let mut guest = ws(&server.url()).await;
        join_raw(&mut guest, &lobby).await;
        guests.push(guest);
    }
    host.send(Message::text(r#"{"type":7,"id":0,"data":""}"#))
        .await
        .expect("seal");
    let expected = Some((1000, "Seal complete".to_owned()));
    assert_eq!(close_of(&mut host).await, expected, "host");
    for (i, guest) in guests.iter_mut().enumerate() {
        assert_eq!(close_of(guest).await, expected, "guest {i}");
    }
}

/// Round trips of small OFFER/ANSWER pairs through the server between two well-behaved
/// clients, until `stop`; returns the longest.
async fn measure_round_trips(url: String, stop: tokio::sync::watch::Receiver<bool>) -> Duration {
    let mut a = ws(&url).await;
    let (_, lobby) = join_raw(&mut a, "").await;
    let mut b = ws(&url).await;
    let (b_id, _) = join_raw(&mut b, &lobby).await;
    let mut worst = Duration::ZERO;
    for _ in 0..2000 {
        if *stop.borrow() {
            break;
        }
        let sent = Instant::now();
        a.send(frame(4, b_id, "ping")).await.expect("offer");
        assert!(expect_frame(&mut b, 4, 1, LIMIT).await, "offer through");
        b.send(frame(5, 1, "pong")).await.expect("answer");
        assert!(expect_frame(&mut a, 5, b_id, LIMIT).await, "answer through");
        worst = worst.max(sent.elapsed());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    worst
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_and_a_fast_sender_are_closed_with_bounded_memory_while_others_keep_their_round_trip(
) {
    // Queues of 256 KiB; a byte rate high enough that the slow reader's queue fills first, the
    // default message rate for the fast sender.
    let server = ServerProcess::start(&[
        "--max-queued-bytes",
        "262144",
        "--rate-bytes",
        "67108864",
        "--rate-byte-burst",
        "67108864",
    ]);
    let url = server.url.clone();
    let baseline_kib = server.status_kib("VmRSS");

    let (stop, stopped) = tokio::sync::watch::channel(false);
    let probe = tokio::spawn(measure_round_trips(url.clone(), stopped));
    tokio::time::sleep(Duration::from_millis(300)).await;

    // 1. A member that never reads while its host sends it 64 KB offers as fast as it can.
    let mut host = ws(&url).await;
    let (_, lobby) = join_raw(&mut host, "").await;
    let mut slow = ws(&url).await;
    let (slow_id, _) = join_raw(&mut slow, &lobby).await;
    let offer = frame(4, slow_id, &"x".repeat(64_000));
    let (mut sink, mut stream) = host.split();
    let flood = tokio::spawn(async move {
        let started = Instant::now();
        let mut sent = 0u64;
        while sent < 3000 && started.elapsed() < LIMIT {
            if sink.send(offer.clone()).await.is_err() {
                break;
            }
            sent += 1;
        }
        sent
    });
    // The host hears that the slow reader left (its queue overflowed).
    let gone = async {
        loop {
            match stream.next().await {
                Some(Ok(m)) if parse(&m).is_some_and(|(k, id, _)| k == 3 && id == slow_id) => {
                    return true
                }
                Some(Ok(_)) => continue,
                _ => return false,
            }
        }
    };
    assert!(
        tokio::time::timeout(LIMIT, gone).await.unwrap_or(false),
        "the slow reader was dropped from its lobby"
    );
    let sent = flood.await.expect("flood");
    // The slow reader finds the close frame after what it had not read.
    let close = read_until(&mut slow, LIMIT, |m| match m {
        Message::Close(Some(f)) => Some((u16::from(f.code), f.reason.to_string())),
        _ => None,
    })
    .await;
    assert_eq!(close, Some((4001, "Too slow reading messages".to_owned())));

    // 2. A member that sends small offers to a reading peer as fast as it can.
    let mut host = ws(&url).await;
    let (_, lobby) = join_raw(&mut host, "").await;
    let mut fast = ws(&url).await;
    let (fast_id, _) = join_raw(&mut fast, &lobby).await;
    let reader = tokio::spawn(async move {
        let left = expect_frame(&mut host, 3, fast_id, LIMIT).await;
        (host, left)
    });
    let mut flooded = 0u32;
    while flooded < 100_000 {
        if fast.send(frame(4, 1, "o")).await.is_err() {
            break;
        }
        flooded += 1;
        if flooded.is_multiple_of(500) {
            tokio::task::yield_now().await;
        }
    }
    assert_eq!(
        close_of(&mut fast).await,
        Some((4002, "Sending too fast".to_owned())),
        "after {flooded} frames"
    );
    let (_host, left) = reader.await.expect("reader");
    assert!(left, "the reading peer stays and hears the sender left");

    stop.send(true).expect("stop");
    let worst = probe.await.expect("probe");
    let peak_kib = server.status_kib("VmHWM");
    println!(
        "the host sent {sent} x 64 KB offers; server RSS {baseline_kib} KiB at start, peak {peak_kib} KiB; worst round trip {worst:?}"
    );
    assert!(
        peak_kib < baseline_kib + 16 * 1024,
        "server memory bounded: peak {peak_kib} KiB from {baseline_kib} KiB"
    );
    assert!(
        worst < Duration::from_millis(500),
        "a client in another lobby kept its round trip ({worst:?})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_connection_is_closed_by_keepalive_and_an_idle_member_by_the_idle_limit() {
    let server = server_with(
        SignalConfig::default()
            .with_lobby(
                LobbyServerConfig::default()
                    .with_member_idle_timeout(Some(Duration::from_millis(1500))),
            )
            .with_ping_interval(Duration::from_millis(200))
            .with_pong_timeout(Duration::from_millis(300)),
    )
    .await;
    let url = server.url();
    let mut host = ws(&url).await;
    let (_, lobby) = join_raw(&mut host, "").await;
    // Never polled again: no pongs.
    let mut dead = ws(&url).await;
    let (dead_id, _) = join_raw(&mut dead, &lobby).await;
    // Polled (so it answers pings) but never says anything.
    let mut quiet = ws(&url).await;
    let (quiet_id, _) = join_raw(&mut quiet, &lobby).await;
    let started = Instant::now();
    let quiet_close = tokio::spawn(async move { close_of(&mut quiet).await });

    // The host talks to the quiet member every 300 ms (so the host is not idle) and reads.
    let mut left = Vec::new();
    while left.len() < 2 && started.elapsed() < LIMIT {
        let heard = read_until(&mut host, Duration::from_millis(300), |m| {
            parse(m).filter(|(k, _, _)| *k == 3).map(|(_, id, _)| id)
        })
        .await;
        if let Some(id) = heard {
            left.push((id, started.elapsed()));
        }
        if !left.iter().any(|(id, _)| *id == quiet_id) {
            host.send(frame(4, quiet_id, "still here?"))
                .await
                .expect("offer");
        }
    }
    assert_eq!(
        left.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
        vec![dead_id, quiet_id],
        "the dead one goes first, then the idle one"
    );
    assert!(
        left[0].1 < Duration::from_millis(1200),
        "dead after {:?}",
        left[0].1
    );
    assert!(
        left[1].1 >= Duration::from_millis(1400),
        "idle after {:?}",
        left[1].1
    );
    assert_eq!(
        quiet_close.await.expect("quiet"),
        Some((4003, "Idle too long".to_owned()))
    );
    assert_eq!(
        close_of(&mut dead).await,
        Some((4004, "No reply to ping".to_owned()))
    );
    // The host that kept talking is still in its lobby.
    let mut late = ws(&url).await;
    let (late_id, _) = join_raw(&mut late, &lobby).await;
    assert!(expect_frame(&mut host, 2, late_id, LIMIT).await);
    let m = server.metrics();
    assert_eq!(m.closes_with(4003, "Idle too long"), 1);
    assert_eq!(m.closes_with(4004, "No reply to ping"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_lobby_and_too_many_lobbies_from_one_address_are_refused() {
    let server = server_with(
        SignalConfig::default().with_lobby(
            LobbyServerConfig::default()
                .with_max_lobby_size(3)
                .with_max_lobbies_per_address(2),
        ),
    )
    .await;
    let url = server.url();
    let mut members = Vec::new();
    let mut host = ws(&url).await;
    let (_, lobby) = join_raw(&mut host, "").await;
    for _ in 0..2 {
        let mut m = ws(&url).await;
        join_raw(&mut m, &lobby).await;
        members.push(m);
    }
    assert_eq!(
        join_refused(&url, &lobby).await,
        Some((4000, "Lobby is full".to_owned()))
    );
    let mut second = ws(&url).await;
    join_raw(&mut second, "").await;
    assert_eq!(
        join_refused(&url, "").await,
        Some((4000, "Too many lobbies from this address".to_owned()))
    );
    // One lobby closes: this address may open another.
    drop(second);
    let deadline = Instant::now() + LIMIT;
    let _again = loop {
        let mut again = ws(&url).await;
        again.send(frame(0, 0, "")).await.expect("join");
        let reply = read_until(&mut again, LIMIT, |m| match m {
            Message::Close(_) => Some(false),
            m if parse(m).is_some_and(|(k, _, _)| k == 0) => Some(true),
            _ => None,
        })
        .await;
        if reply == Some(true) {
            break again;
        }
        assert!(
            Instant::now() < deadline,
            "the closed lobby's slot came back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    while server.metrics().lobbies != 2 {
        assert!(Instant::now() < deadline, "{:?}", server.metrics());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_form_a_mesh_over_wss_with_a_generated_certificate() {
    let (cert, key, der) = certificate();
    let tls = rtcmesh_tokio::signal::server_tls_from_pem_files(&cert, &key).expect("tls");
    let server = server_with(SignalConfig::default().with_tls(Some(tls))).await;
    let url = server.url_for("localhost");
    assert!(url.starts_with("wss://localhost:"));
    let options = JoinOptions::default().with_tls(Some(trusting(der)));
    let mut host = join(&url, "", options.clone())
        .await
        .expect("host over wss");
    let mut guest = join(&server.url(), &host.lobby, options.clone())
        .await
        .expect("guest over wss by IP address");
    for (me, other) in [(&mut host, guest.id()), (&mut guest, 1)] {
        let deadline = tokio::time::Instant::now() + LIMIT;
        loop {
            let e = tokio::time::timeout_at(deadline, me.events.recv())
                .await
                .expect("connected in time")
                .expect("open");
            if e == Event::PeerConnected(other) {
                break;
            }
        }
    }
    host.handle
        .send(Target::All, TransferMode::Reliable, 0, b"over wss".to_vec())
        .await
        .expect("send");
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        let e = tokio::time::timeout_at(deadline, guest.events.recv())
            .await
            .expect("packet in time")
            .expect("open");
        if let Event::Packet(p) = e {
            assert_eq!((p.from, p.data.as_slice()), (1, &b"over wss"[..]));
            break;
        }
    }
    // Without trusting the certificate (the platform's roots), joining fails.
    let refused = join(&url, "", JoinOptions::default()).await;
    assert!(
        matches!(refused, Err(JoinError::WebSocket(_) | JoinError::Tls(_))),
        "an untrusted certificate is refused"
    );
    // A plain ws:// client gets nowhere on a wss:// port.
    let plain = tokio_tungstenite::connect_async(format!("ws://{}", server.local_addr())).await;
    assert!(plain.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_serves_wss_and_metrics_and_closes_everyone_on_sigterm() {
    let (cert, key, der) = certificate();
    let (cert, key) = (cert.to_str().expect("path"), key.to_str().expect("path"));
    let mut server =
        ServerProcess::start(&["--cert", cert, "--key", key, "--metrics", "127.0.0.1:0"]);
    assert!(server.url.starts_with("wss://127.0.0.1:"), "{}", server.url);
    let tls = trusting(der);
    let mut host = ws_with(&server.url, Some(tls.clone())).await;
    let (_, lobby) = join_raw(&mut host, "").await;
    let mut guest = ws_with(&server.url, Some(tls.clone())).await;
    let (guest_id, _) = join_raw(&mut guest, &lobby).await;
    host.send(frame(4, guest_id, "sdp")).await.expect("offer");
    assert!(expect_frame(&mut guest, 4, 1, LIMIT).await);
    let metrics_url = server.metrics.clone().expect("metrics url");
    let text = scrape(&metrics_url).await;
    assert_eq!(
        metric(&text, "rtcmesh_signal_connections"),
        Some(2.0),
        "{text}"
    );
    assert_eq!(metric(&text, "rtcmesh_signal_lobbies"), Some(1.0));
    assert_eq!(metric(&text, "rtcmesh_signal_joins_total"), Some(2.0));
    assert_eq!(
        metric(&text, "rtcmesh_signal_messages_relayed_total"),
        Some(1.0)
    );

    server.signal("TERM");
    for ws in [&mut host, &mut guest] {
        assert_eq!(
            close_of(ws).await,
            Some((1001, "Server shutting down".to_owned()))
        );
    }
    let status = server.wait_exit(LIMIT).expect("exits after SIGTERM");
    assert!(status.success(), "clean exit: {status:?}\n{}", server.log());
    assert!(server.wait_log("shutting down", LIMIT), "{}", server.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_descriptors_the_server_pauses_instead_of_spinning_and_recovers() {
    // 128 descriptors in all: max_peers is lowered to fit, and 200 connections that never
    // finish their handshake exhaust the rest.
    let server = ServerProcess::start_with_descriptor_limit(
        128,
        &["--handshake-timeout", "60", "--metrics", "127.0.0.1:0"],
    );
    assert!(
        server.wait_log("lowering max_peers", LIMIT),
        "{}",
        server.log()
    );
    let addr = server.url.trim_start_matches("ws://").to_owned();
    let mut hogs = Vec::new();
    for _ in 0..200 {
        match tokio::net::TcpStream::connect(&addr).await {
            Ok(s) => hogs.push(s),
            Err(e) => panic!("loopback connect failed: {e}"),
        }
    }
    // Let the server run into the limit, then measure its CPU for two seconds.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = server.cpu_time();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let used = server.cpu_time() - before;
    println!("server CPU while out of descriptors: {used:?} in 2 s");
    assert!(
        used < Duration::from_millis(200),
        "no spin: {used:?} of CPU in 2 s; log:\n{}",
        server.log()
    );
    assert!(server.wait_log("accept failed", LIMIT), "{}", server.log());

    // Descriptors free up: service resumes.
    drop(hogs);
    let started = Instant::now();
    let session = loop {
        match join(&server.url, "", JoinOptions::default()).await {
            Ok(s) => break s,
            Err(e) => {
                assert!(started.elapsed() < LIMIT, "service did not resume: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    assert_eq!(session.id(), 1);
    let text = scrape(server.metrics.as_deref().expect("metrics")).await;
    assert!(metric(&text, "rtcmesh_signal_accept_errors_total").unwrap_or(0.0) > 0.0);
}

/// Host migration over real WebSockets: members that opened `/?migrate=1` hear typed host
/// changes, a plain member the demo protocol's frames; a host that stops answering the probe
/// after a HOST_LOST report is replaced and fenced (4010), one that answers is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migratable_lobby_elects_a_successor_and_probes_a_reported_host() {
    let server = server_with(SignalConfig::default()).await;
    let opted = format!("{}/?migrate=1", server.url());
    let mut host = ws(&opted).await;
    let (hello, _, data) = next_frames(&mut host, 1, LIMIT).await.remove(0);
    assert_eq!((hello, data.as_str()), (8, "migrate/1"), "HELLO");
    let (_, lobby) = join_client_server_raw(&mut host, "").await;
    let mut x = ws(&opted).await;
    let (x_id, _) = join_client_server_raw(&mut x, &lobby).await;
    let mut y = ws(&opted).await;
    let (y_id, _) = join_client_server_raw(&mut y, &lobby).await;
    let mut plain = ws(&server.url()).await;
    let (plain_id, _) = join_client_server_raw(&mut plain, &lobby).await;
    assert!(expect_frame(&mut host, 2, plain_id, LIMIT).await);

    // y reports the host lost; the host's client reads (so it answers the ping): y is told
    // to connect to it again, and nothing else changes.
    y.send(frame(10, 1, "0")).await.expect("HOST_LOST");
    let reads = tokio::spawn(async move {
        let _ = next_frames(&mut host, 2, LIMIT).await; // y's PEER_DISCONNECT + PEER_CONNECT
        host
    });
    let again = next_frames(&mut y, 2, LIMIT).await;
    assert_eq!(
        again,
        vec![(3, 1, String::new()), (2, 1, "m".to_owned())],
        "reconnect to the same host"
    );
    let host = reads.await.expect("host task");

    // The host's process dies: its TCP connection ends.
    let started = Instant::now();
    drop(host);
    let to_x = next_frames(&mut x, 3, LIMIT).await;
    println!("successor told after {:?}", started.elapsed());
    assert_eq!(
        to_x,
        vec![
            (9, 1, "1".to_owned()),
            (2, y_id, "m".to_owned()),
            (2, plain_id, String::new()),
        ]
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

    // x (the new host) stops reading its socket: y's report is not answered, and 500 ms
    // later y is the host and x is fenced.
    y.send(frame(10, 1, "1")).await.expect("HOST_LOST");
    let to_y = next_frames(&mut y, 2, LIMIT).await;
    assert_eq!(
        to_y,
        vec![(9, 1, "2".to_owned()), (2, plain_id, String::new())]
    );
    assert_eq!(
        next_frames(&mut x, 1, LIMIT).await,
        vec![(9, y_id, "2".to_owned())],
        "the old host learns who took over"
    );
    assert_eq!(
        close_of(&mut x).await,
        Some((4010, "Replaced as host".to_owned()))
    );
    let metrics = server.metrics();
    assert_eq!((metrics.host_migrations, metrics.host_lost_reports), (2, 2));
}
