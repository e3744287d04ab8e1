//! The signaling server under abuse and in production settings, over real sockets on loopback.
//! Every wait is bounded; a test fails rather than hangs.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rtcmesh::lobby::LobbyServerConfig;
use rtcmesh_tokio::SignalServer;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

const LIMIT: Duration = Duration::from_secs(10);

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

async fn ws(url: &str) -> Ws {
    tokio::time::timeout(LIMIT, tokio_tungstenite::connect_async(url))
        .await
        .expect("connect in time")
        .expect("connect")
        .0
}

/// Reads frames until `pick` returns something, or the connection ends (bounded).
async fn read_until<T>(ws: &mut Ws, mut pick: impl FnMut(&Message) -> Option<T>) -> Option<T> {
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        let frame = tokio::time::timeout_at(deadline, ws.next()).await.ok()??;
        if let Some(found) = pick(&frame.ok()?) {
            return Some(found);
        }
    }
}

/// The close code and reason the server ends this connection with.
async fn close_of(ws: &mut Ws) -> Option<(u16, String)> {
    read_until(ws, |m| match m {
        Message::Close(Some(f)) => Some((u16::from(f.code), f.reason.to_string())),
        _ => None,
    })
    .await
}

/// Joins (`""` creates) and returns (assigned id, lobby name).
async fn join_raw(ws: &mut Ws, lobby: &str) -> (i64, String) {
    let join = format!(r#"{{"type":0,"id":0,"data":"{lobby}"}}"#);
    ws.send(Message::text(join)).await.expect("send join");
    let mut id = None;
    let name = read_until(ws, |m| {
        let Message::Text(t) = m else { return None };
        let v: serde_json::Value = serde_json::from_str(t).ok()?;
        match v["type"].as_i64()? {
            1 => {
                id = v["id"].as_i64();
                None
            }
            0 => v["data"].as_str().map(str::to_owned),
            _ => None,
        }
    })
    .await
    .expect("JOIN reply");
    (id.expect("ID before JOIN"), name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealing_closes_every_member_with_1000_seal_complete_like_the_reference() {
    let config = LobbyServerConfig {
        seal_close_after: Duration::from_millis(200),
        ..LobbyServerConfig::default()
    };
    let server = SignalServer::bind("127.0.0.1:0".parse().expect("addr"), config)
        .await
        .expect("server");
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
