//! The signaling server under load: joins per second and relayed messages per second on one
//! node, and on two nodes sharing lobbies through Redis (a `redis-server` this run starts),
//! measured in the same run.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use rtcmesh::lobby::LobbyServerConfig;
use rtcmesh_tokio::{ClusterConfig, RateLimit, SignalConfig, SignalServer};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A node on its own thread and single-threaded runtime, as the binary runs.
struct Node {
    url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Node {
    fn start(cluster: Option<String>) -> Node {
        let (url_tx, url_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let config = SignalConfig::default()
                    .with_lobby(
                        LobbyServerConfig::default()
                            .with_max_peers(100_000)
                            .with_max_lobbies(100_000)
                            .with_max_lobbies_per_address(100_000)
                            .with_join_timeout(Duration::from_secs(30)),
                    )
                    .with_rate_limit(RateLimit::unlimited())
                    .with_max_queued_bytes(64 << 20)
                    .with_max_queued_messages(1 << 20)
                    .with_max_handshakes(100_000)
                    .with_cluster(cluster.map(ClusterConfig::new));
                let server = SignalServer::bind_with("127.0.0.1:0".parse().expect("addr"), config)
                    .await
                    .expect("signaling node");
                url_tx.send(server.url()).expect("url");
                let _ = stopped.await;
                server.shutdown().await;
            });
        });
        let url = url_rx.recv().expect("node started");
        Node {
            url,
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

struct Redis(Child, String);

impl Redis {
    fn start() -> Result<Redis, String> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let child = Command::new("redis-server")
            .args([
                "--bind",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("redis-server not found ({e}); apt-get install redis-server"))?;
        let redis = Redis(child, format!("redis://127.0.0.1:{port}"));
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                return Err("redis-server did not start".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(redis)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn connect(url: &str) -> Ws {
    tokio_tungstenite::connect_async(url)
        .await
        .expect("connect")
        .0
}

fn text(kind: i64, id: i64, data: &str) -> Message {
    Message::text(format!(r#"{{"type":{kind},"id":{id},"data":"{data}"}}"#))
}

fn kind_and_id(m: &Message) -> Option<(i64, i64)> {
    let Message::Text(t) = m else { return None };
    let v: serde_json::Value = serde_json::from_str(t).ok()?;
    Some((v["type"].as_i64()?, v["id"].as_i64()?))
}

/// Joins (`""` creates); returns (our id, lobby).
async fn join(ws: &mut Ws, lobby: &str) -> (i64, String) {
    ws.send(text(0, 0, lobby)).await.expect("join");
    let mut id = 0;
    loop {
        let m = ws.next().await.expect("open").expect("frame");
        let Message::Text(t) = &m else { continue };
        let v: serde_json::Value = serde_json::from_str(t).expect("json");
        match v["type"].as_i64() {
            Some(1) => id = v["id"].as_i64().unwrap_or(0),
            Some(0) => return (id, v["data"].as_str().unwrap_or_default().to_owned()),
            _ => {}
        }
    }
}

/// `joiners` clients connect and join one of the hosts' lobbies, `in_flight` at a time,
/// alternating over `urls`; joins per second.
async fn joins(host_url: &str, urls: &[String], lobbies: usize, joiners: usize) -> f64 {
    let mut hosts = Vec::new();
    let mut names = Vec::new();
    for _ in 0..lobbies {
        let mut h = connect(host_url).await;
        names.push(join(&mut h, "").await.1);
        hosts.push(h);
    }
    // The hosts read their PEER_CONNECTs in the background.
    let readers: Vec<_> = hosts
        .into_iter()
        .map(|mut h| tokio::spawn(async move { while let Some(Ok(_)) = h.next().await {} }))
        .collect();
    let in_flight = Arc::new(Semaphore::new(64));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..joiners {
        let permit = in_flight.clone().acquire_owned().await.expect("permit");
        let url = urls[i % urls.len()].clone();
        let lobby = names[i % names.len()].clone();
        tasks.push(tokio::spawn(async move {
            let mut ws = connect(&url).await;
            join(&mut ws, &lobby).await;
            drop(permit);
            ws
        }));
    }
    let mut members = Vec::new();
    for t in tasks {
        members.push(t.await.expect("joiner"));
    }
    let rate = joiners as f64 / started.elapsed().as_secs_f64();
    drop(members);
    for r in readers {
        r.abort();
    }
    rate
}

/// `pairs` lobbies of two; each member (on `member_url`) sends `each` small offers to its
/// host (on `host_url`) as fast as it can; relayed messages per second.
async fn relay(host_url: &str, member_url: &str, pairs: usize, each: usize) -> f64 {
    let mut ends = Vec::new();
    for _ in 0..pairs {
        let mut host = connect(host_url).await;
        let (_, lobby) = join(&mut host, "").await;
        let mut member = connect(member_url).await;
        let (member_id, _) = join(&mut member, &lobby).await;
        ends.push((host, member, member_id));
    }
    let payload = "x".repeat(100);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (mut host, member, member_id) in ends {
        let (mut sink, mut stream) = member.split();
        let payload = payload.clone();
        let sender = tokio::spawn(async move {
            for _ in 0..each {
                sink.feed(text(4, 1, &payload)).await.expect("offer");
            }
            sink.flush().await.expect("flush");
            // Keep the member's socket open until its host has everything.
            (
                sink,
                tokio::spawn(async move { while let Some(Ok(_)) = stream.next().await {} }),
            )
        });
        tasks.push(tokio::spawn(async move {
            let mut got = 0;
            while got < each {
                let m = host.next().await.expect("open").expect("frame");
                if kind_and_id(&m) == Some((4, member_id)) {
                    got += 1;
                }
            }
            sender.await.expect("sender")
        }));
    }
    let mut keep = Vec::new();
    for t in tasks {
        keep.push(t.await.expect("pair"));
    }
    let rate = (pairs * each) as f64 / started.elapsed().as_secs_f64();
    for (_, reader) in keep {
        reader.abort();
    }
    rate
}

pub fn run(quick: bool) {
    println!("\n## Signaling server load (rtcmesh-signal's server, WebSocket clients on loopback)");
    let (joiners, pairs, each) = if quick {
        (500, 20, 500)
    } else {
        (2_000, 50, 2_000)
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let one = Node::start(None);
    let single = runtime.block_on(async {
        let urls = vec![one.url.clone()];
        (
            joins(&one.url, &urls, 20, joiners).await,
            relay(&one.url, &one.url, pairs, each).await,
        )
    });
    drop(one);
    let two = Redis::start().map(|redis| {
        let (a, b) = (
            Node::start(Some(redis.1.clone())),
            Node::start(Some(redis.1.clone())),
        );
        let figures = runtime.block_on(async {
            let urls = vec![a.url.clone(), b.url.clone()];
            (
                joins(&a.url, &urls, 20, joiners).await,
                relay(&a.url, &b.url, pairs, each).await,
            )
        });
        drop((a, b));
        drop(redis);
        figures
    });
    println!("| figure | one node | two nodes through Redis | two ÷ one |");
    println!("|---|---|---|---|");
    let row = |name: &str, one: f64, two: Option<f64>| {
        println!(
            "| {name} | {one:.0}/s | {} | {} |",
            two.map_or("—".into(), |t| format!("{t:.0}/s")),
            two.map_or("—".into(), |t| format!("{:.2}×", t / one)),
        );
    };
    let two_ok = two.as_ref().ok();
    row(
        &format!("joins ({joiners} clients, 64 at a time, half through the other node)"),
        single.0,
        two_ok.map(|t| t.0),
    );
    row(
        &format!(
            "relayed messages ({pairs} lobbies × {each} offers of 100 B; every one crosses nodes)"
        ),
        single.1,
        two_ok.map(|t| t.1),
    );
    if let Err(why) = two {
        println!("two nodes: skipped: {why}");
    }
}
