//! `rtcmesh-signal [ADDRESS] [OPTIONS]`: a signaling server speaking the protocol of Godot 4's
//! `webrtc_signaling` demo. Listens on `127.0.0.1:9080` unless told otherwise (`0.0.0.0:9080`
//! to accept other machines). `--help` lists the options.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use rtcmesh_tokio::signal::server_tls_from_pem_files;
use rtcmesh_tokio::{ClusterConfig, SignalConfig, SignalServer};

const USAGE: &str = "\
usage: rtcmesh-signal [ADDRESS] [OPTIONS]     (ADDRESS default 127.0.0.1:9080)

  --cert FILE --key FILE        serve wss:// (PEM certificate chain and private key)
  --redis URL                   share lobbies with other nodes through Redis (redis://host:port)
  --redis-prefix PREFIX         prefix of the Redis keys and channels (default rtcmesh)
  --metrics ADDRESS             serve Prometheus metrics on http://ADDRESS/metrics
  --max-peers N                 connections (default 4096; lowered to fit the descriptor limit)
  --max-lobbies N               lobbies on this node (default 1024)
  --max-lobby-size N            members per lobby (default 256)
  --max-lobbies-per-address N   open lobbies created from one address (default 16)
  --idle-timeout SECONDS        close members silent this long (default: never)
  --max-queued-bytes N          outbound bytes waiting per connection (default 1048576)
  --max-queued-messages N       outbound messages waiting per connection (default 4096)
  --rate N                      messages per second per connection (default 200)
  --rate-burst N                messages at once per connection (default 1000)
  --rate-bytes N                bytes per second per connection (default 1048576)
  --rate-byte-burst N           bytes at once per connection (default 4194304)
  --ping-interval SECONDS       keepalive ping interval (default 10)
  --pong-timeout SECONDS        close after ping interval + this of silence (default 10)
  --max-handshakes N            TLS/WebSocket handshakes in progress (default 1024)
  --handshake-timeout SECONDS   (default 5)
  --log-format text|json        log lines (default text; level from RUST_LOG, default info)

SIGTERM or SIGINT: close every connection with 1001, leave the cluster, exit.";

/// Descriptors kept for everything but client sockets: the runtime, the listener, Redis,
/// metrics scrapes, logs.
const RESERVED_DESCRIPTORS: u64 = 64;

struct Options {
    addr: SocketAddr,
    config: SignalConfig,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    json_logs: bool,
}

fn parse(args: &[String]) -> Result<Options, String> {
    let mut options = Options {
        addr: SocketAddr::from(([127, 0, 0, 1], 9080)),
        config: SignalConfig::default(),
        cert: None,
        key: None,
        json_logs: false,
    };
    let c = &mut options.config;
    let mut redis: Option<ClusterConfig> = None;
    let mut prefix = None;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let mut value = || {
            args.next()
                .cloned()
                .ok_or_else(|| format!("{arg} needs a value"))
        };
        fn num<T: std::str::FromStr>(arg: &str, v: String) -> Result<T, String> {
            v.parse()
                .map_err(|_| format!("{arg}: {v:?} is not a valid number"))
        }
        let secs = |arg: &str, v: String| -> Result<Duration, String> {
            let s: f64 = num(arg, v)?;
            Duration::try_from_secs_f64(s).map_err(|_| format!("{arg}: not a duration"))
        };
        match arg.as_str() {
            "--cert" => options.cert = Some(value()?.into()),
            "--key" => options.key = Some(value()?.into()),
            "--redis" => redis = Some(ClusterConfig::new(value()?)),
            "--redis-prefix" => prefix = Some(value()?),
            "--metrics" => {
                let v = value()?;
                c.metrics = Some(
                    v.parse()
                        .map_err(|_| format!("--metrics: {v:?} is not a socket address"))?,
                );
            }
            "--max-peers" => c.lobby.max_peers = num(arg, value()?)?,
            "--max-lobbies" => c.lobby.max_lobbies = num(arg, value()?)?,
            "--max-lobby-size" => c.lobby.max_lobby_size = num(arg, value()?)?,
            "--max-lobbies-per-address" => c.lobby.max_lobbies_per_address = num(arg, value()?)?,
            "--idle-timeout" => c.lobby.member_idle_timeout = Some(secs(arg, value()?)?),
            "--max-queued-bytes" => c.max_queued_bytes = num(arg, value()?)?,
            "--max-queued-messages" => c.max_queued_messages = num(arg, value()?)?,
            "--rate" => c.rate_limit.messages_per_second = num(arg, value()?)?,
            "--rate-burst" => c.rate_limit.message_burst = num(arg, value()?)?,
            "--rate-bytes" => c.rate_limit.bytes_per_second = num(arg, value()?)?,
            "--rate-byte-burst" => c.rate_limit.byte_burst = num(arg, value()?)?,
            "--ping-interval" => c.ping_interval = secs(arg, value()?)?,
            "--pong-timeout" => c.pong_timeout = secs(arg, value()?)?,
            "--max-handshakes" => c.max_handshakes = num(arg, value()?)?,
            "--handshake-timeout" => c.handshake_timeout = secs(arg, value()?)?,
            "--log-format" => match value()?.as_str() {
                "json" => options.json_logs = true,
                "text" => options.json_logs = false,
                other => return Err(format!("--log-format: {other:?} is neither text nor json")),
            },
            other if other.starts_with("--") => return Err(format!("unknown option {other}")),
            other => {
                options.addr = other
                    .parse()
                    .map_err(|e| format!("{other:?} is not a socket address: {e}"))?;
            }
        }
    }
    if let (Some(redis), Some(prefix)) = (redis.as_mut(), prefix) {
        redis.prefix = prefix;
    }
    options.config.cluster = redis;
    if options.cert.is_some() != options.key.is_some() {
        return Err("--cert and --key go together".into());
    }
    Ok(options)
}

/// Raises the soft descriptor limit to the hard one and returns the soft limit in force.
fn raise_descriptor_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return None;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    #[allow(clippy::unnecessary_cast)] // rlim_t is not u64 on every platform
    Some(limit.rlim_cur as u64)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let mut options = match parse(&args) {
        Ok(options) => options,
        Err(e) => {
            eprintln!("rtcmesh-signal: {e}\n\n{USAGE}");
            return ExitCode::FAILURE;
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if options.json_logs {
        logs.json().init();
    } else {
        logs.init();
    }

    if let Some(soft) = raise_descriptor_limit() {
        // A quarter of what is left is for handshakes in progress; beyond that, accept errors
        // (EMFILE) pause the accept loop instead of spinning.
        let holdable = soft.saturating_sub(RESERVED_DESCRIPTORS) * 3 / 4;
        let holdable = usize::try_from(holdable).unwrap_or(usize::MAX).max(1);
        if options.config.lobby.max_peers > holdable {
            tracing::warn!(
                requested = options.config.lobby.max_peers,
                max_peers = holdable,
                descriptor_limit = soft,
                "lowering max_peers to what the descriptor limit can hold (raise `ulimit -Hn` for more)"
            );
            options.config.lobby.max_peers = holdable;
        }
    }
    if let (Some(cert), Some(key)) = (&options.cert, &options.key) {
        match server_tls_from_pem_files(cert, key) {
            Ok(tls) => options.config.tls = Some(tls),
            Err(e) => {
                eprintln!("rtcmesh-signal: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    let addr = options.addr;
    let server = match SignalServer::bind_with(addr, options.config).await {
        Ok(server) => server,
        Err(e) => {
            eprintln!("rtcmesh-signal: cannot start on {addr}: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("rtcmesh-signal listening on {}", server.url());
    if let Some(metrics) = server.metrics_addr() {
        println!("rtcmesh-signal metrics on http://{metrics}/metrics");
    }
    let mut terminate =
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("rtcmesh-signal: cannot handle SIGTERM: {e}");
                return ExitCode::FAILURE;
            }
        };
    tokio::select! {
        _ = terminate.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("signal received, shutting down");
    server.shutdown().await;
    tracing::info!("stopped");
    ExitCode::SUCCESS
}
