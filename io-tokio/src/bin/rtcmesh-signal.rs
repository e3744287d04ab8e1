//! `rtcmesh-signal [ADDRESS]`: a signaling server speaking the protocol of Godot 4's
//! `webrtc_signaling` demo. Listens on `127.0.0.1:9080` unless told otherwise
//! (`0.0.0.0:9080` to accept other machines).

use std::net::SocketAddr;
use std::process::ExitCode;

use rtcmesh::lobby::LobbyServerConfig;
use rtcmesh_tokio::SignalServer;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let arg = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9080".to_owned());
    if arg == "-h" || arg == "--help" {
        println!("usage: rtcmesh-signal [ADDRESS]   (default 127.0.0.1:9080)");
        return ExitCode::SUCCESS;
    }
    let addr: SocketAddr = match arg.parse() {
        Ok(addr) => addr,
        Err(e) => {
            eprintln!("rtcmesh-signal: {arg:?} is not a socket address: {e}");
            return ExitCode::FAILURE;
        }
    };
    match SignalServer::bind(addr, LobbyServerConfig::default()).await {
        Ok(server) => {
            println!("rtcmesh-signal listening on {}", server.url());
            server.wait().await;
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("rtcmesh-signal: cannot listen on {addr}: {e}");
            ExitCode::FAILURE
        }
    }
}
