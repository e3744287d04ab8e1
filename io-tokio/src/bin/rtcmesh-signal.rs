//! `rtcmesh-signal [ADDRESS] [OPTIONS]`: a signaling server speaking the protocol of Godot 4's
//! `webrtc_signaling` demo. Listens on `127.0.0.1:9080` unless told otherwise (`0.0.0.0:9080`
//! to accept other machines). Every option can also come from an environment variable
//! (`--max-peers` from `RTCMESH_SIGNAL_MAX_PEERS`; a flag wins over its variable). `--help`
//! lists them.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use rtcmesh_tokio::rtcmesh::lobby::MAX_MESSAGE_LEN;
use rtcmesh_tokio::signal::server_tls_from_pem_files;
use rtcmesh_tokio::{ClusterConfig, SignalConfig, SignalServer, TurnSecret};

const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Prefix of the environment variables that set options.
const ENV_PREFIX: &str = "RTCMESH_SIGNAL_";

/// One option: its flag, what its value looks like, what it does. Its environment variable is
/// [`env_name`] of the flag.
struct Flag {
    name: &'static str,
    value: &'static str,
    help: &'static str,
}

const FLAGS: &[Flag] = &[
    Flag {
        name: "--cert",
        value: "FILE",
        help: "serve wss://: PEM certificate chain, leaf first (with --key)",
    },
    Flag {
        name: "--key",
        value: "FILE",
        help: "the PEM private key of --cert",
    },
    Flag {
        name: "--redis",
        value: "URL",
        help: "share lobbies with other nodes through Redis (redis://[:PASSWORD@]HOST:PORT)",
    },
    Flag {
        name: "--redis-prefix",
        value: "PREFIX",
        help: "prefix of the Redis keys and channels (default rtcmesh)",
    },
    Flag {
        name: "--metrics",
        value: "ADDRESS",
        help: "serve Prometheus metrics on http://ADDRESS/metrics",
    },
    Flag {
        name: "--max-peers",
        value: "N",
        help: "connections (default 4096; lowered to fit the descriptor limit)",
    },
    Flag {
        name: "--max-lobbies",
        value: "N",
        help: "lobbies on this node (default 1024)",
    },
    Flag {
        name: "--max-lobby-size",
        value: "N",
        help: "members per lobby, host included (default 256)",
    },
    Flag {
        name: "--max-lobbies-per-address",
        value: "N",
        help: "open lobbies created from one address (default 16)",
    },
    Flag {
        name: "--idle-timeout",
        value: "SECONDS",
        help: "close members silent this long (default: never)",
    },
    Flag {
        name: "--max-queued-bytes",
        value: "N",
        help: "outbound bytes waiting per connection (default 1048576)",
    },
    Flag {
        name: "--max-queued-messages",
        value: "N",
        help: "outbound messages waiting per connection (default 4096)",
    },
    Flag {
        name: "--rate",
        value: "N",
        help: "messages per second per connection (default 200)",
    },
    Flag {
        name: "--rate-burst",
        value: "N",
        help: "messages at once per connection (default 1000)",
    },
    Flag {
        name: "--rate-bytes",
        value: "N",
        help: "bytes per second per connection (default 1048576)",
    },
    Flag {
        name: "--rate-byte-burst",
        value: "N",
        help: "bytes at once per connection (default 4194304)",
    },
    Flag {
        name: "--ping-interval",
        value: "SECONDS",
        help: "keepalive ping interval (default 10)",
    },
    Flag {
        name: "--pong-timeout",
        value: "SECONDS",
        help: "close after ping interval + this of silence (default 10)",
    },
    Flag {
        name: "--max-handshakes",
        value: "N",
        help: "TLS/WebSocket handshakes in progress (default 1024)",
    },
    Flag {
        name: "--handshake-timeout",
        value: "SECONDS",
        help: "time for the TLS and WebSocket handshakes (default 5)",
    },
    Flag {
        name: "--turn-url",
        value: "URL[,URL...]",
        help: "mint short-lived TURN credentials for these servers (coturn use-auth-secret)",
    },
    Flag {
        name: "--turn-secret",
        value: "SECRET",
        help: "coturn's static-auth-secret (prefer the variable or --turn-secret-file)",
    },
    Flag {
        name: "--turn-secret-file",
        value: "FILE",
        help: "read the TURN secret from this file (its first line)",
    },
    Flag {
        name: "--turn-ttl",
        value: "SECONDS",
        help: "how long a minted TURN credential is valid (default 3600)",
    },
    Flag {
        name: "--log-format",
        value: "text|json",
        help: "log lines on stderr (default text; level from RUST_LOG, default info)",
    },
];

/// `--max-peers` is set by `RTCMESH_SIGNAL_MAX_PEERS`.
fn env_name(flag: &str) -> String {
    format!(
        "{ENV_PREFIX}{}",
        flag.trim_start_matches('-')
            .to_uppercase()
            .replace('-', "_")
    )
}

/// The environment variable of the listening address.
const ADDRESS_ENV: &str = "RTCMESH_SIGNAL_ADDRESS";

fn usage() -> String {
    let mut text = format!(
        "usage: rtcmesh-signal [ADDRESS] [OPTIONS]\n\n  \
         ADDRESS                          where to listen (default 127.0.0.1:9080; {ADDRESS_ENV})\n"
    );
    for flag in FLAGS {
        let left = format!("{} {}", flag.name, flag.value);
        text += &format!(
            "  {left:<32} {}\n  {:<32}   ({})\n",
            flag.help,
            "",
            env_name(flag.name)
        );
    }
    text += "  --check                          check the configuration (and load the certificate), then exit\n  \
             --version, -V                    print the version\n  \
             --help, -h                       print this\n\n\
             Every option can come from its environment variable instead; a flag wins over it.\n\
             GET /healthz on the listening port answers 200 while the server runs.\n\
             SIGTERM or SIGINT: close every connection with 1001, leave the cluster, exit 0.";
    text
}

/// Descriptors kept for everything but client sockets: the runtime, the listener, Redis,
/// metrics scrapes, logs.
const RESERVED_DESCRIPTORS: u64 = 64;

#[derive(Debug)]
struct Options {
    addr: SocketAddr,
    config: SignalConfig,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    json_logs: bool,
    check: bool,
    /// Read the TURN secret from this file at start.
    turn_secret_file: Option<PathBuf>,
}

/// What the command line asks for besides serving.
enum Command {
    Serve(Box<Options>),
    Help,
    Version,
}

/// A value and where it came from (`--max-peers` or `RTCMESH_SIGNAL_MAX_PEERS`), for errors.
struct Setting {
    value: String,
    from: String,
}

/// Reads the environment variables, then the command line (which wins), into settings by flag.
fn settings(
    args: &[String],
    env: &[(String, String)],
) -> Result<(BTreeMap<&'static str, Setting>, bool), String> {
    let mut by_flag = BTreeMap::new();
    let mut check = false;
    for (name, value) in env {
        let Some(_) = name.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        let flag = if name == ADDRESS_ENV {
            "ADDRESS"
        } else {
            FLAGS
                .iter()
                .find(|f| env_name(f.name) == *name)
                .map(|f| f.name)
                .ok_or_else(|| {
                    format!(
                        "unknown environment variable {name} (--help lists the options' variables)"
                    )
                })?
        };
        let setting = Setting {
            value: value.clone(),
            from: name.clone(),
        };
        by_flag.insert(flag, setting);
    }
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        if arg == "--check" {
            check = true;
            continue;
        }
        // `--flag=value` and `--flag value` both work.
        let (name, inline) = match arg.split_once('=') {
            Some((name, value)) if name.starts_with("--") => (name, Some(value.to_owned())),
            _ => (arg.as_str(), None),
        };
        if let Some(flag) = FLAGS.iter().find(|f| f.name == name) {
            let value = match inline {
                Some(value) => value,
                None => args
                    .next()
                    .cloned()
                    .ok_or_else(|| format!("{name} needs a value ({})", flag.value))?,
            };
            let from = flag.name.to_owned();
            by_flag.insert(flag.name, Setting { value, from });
        } else if name.starts_with('-') {
            return Err(format!("unknown option {name}"));
        } else if by_flag.get("ADDRESS").is_some_and(|s| s.from == "ADDRESS") {
            return Err(format!("{arg:?}: one ADDRESS only"));
        } else {
            let setting = Setting {
                value: arg.clone(),
                from: "ADDRESS".into(),
            };
            by_flag.insert("ADDRESS", setting);
        }
    }
    Ok((by_flag, check))
}

fn parse(args: &[String], env: &[(String, String)]) -> Result<Command, String> {
    if args.iter().any(|a| a == "-h" || a == "--help") {
        return Ok(Command::Help);
    }
    if args.iter().any(|a| a == "-V" || a == "--version") {
        return Ok(Command::Version);
    }
    let (settings, check) = settings(args, env)?;
    let mut options = Options {
        addr: SocketAddr::from(([127, 0, 0, 1], 9080)),
        config: SignalConfig::default(),
        cert: None,
        key: None,
        json_logs: false,
        check,
        turn_secret_file: None,
    };
    let mut turn_urls: Option<Vec<String>> = None;
    let mut turn_secret: Option<String> = None;
    let mut turn_ttl: Option<Duration> = None;
    let mut redis: Option<ClusterConfig> = None;
    let mut prefix = None;
    for (flag, Setting { value, from }) in settings {
        let v = value.trim();
        let c = &mut options.config;
        match flag {
            "ADDRESS" => {
                options.addr = v.parse().map_err(|_| {
                    format!("{from}: {v:?} is not a socket address (e.g. 0.0.0.0:9080)")
                })?
            }
            "--cert" => options.cert = Some(path(&from, v)?),
            "--key" => options.key = Some(path(&from, v)?),
            "--redis" => redis = Some(ClusterConfig::new(redis_url(&from, v)?)),
            "--redis-prefix" => {
                if v.is_empty() || v.contains(char::is_whitespace) {
                    return Err(format!(
                        "{from}: {v:?} is not a prefix (one word, no spaces)"
                    ));
                }
                prefix = Some(v.to_owned())
            }
            "--metrics" => {
                c.metrics = Some(v.parse().map_err(|_| {
                    format!("{from}: {v:?} is not a socket address (e.g. 127.0.0.1:9100)")
                })?)
            }
            "--max-peers" => c.lobby.max_peers = count(&from, v, 1)?,
            "--max-lobbies" => c.lobby.max_lobbies = count(&from, v, 1)?,
            // The host and at least one member.
            "--max-lobby-size" => c.lobby.max_lobby_size = count(&from, v, 2)?,
            "--max-lobbies-per-address" => c.lobby.max_lobbies_per_address = count(&from, v, 1)?,
            "--idle-timeout" => c.lobby.member_idle_timeout = Some(seconds(&from, v)?),
            // A queue must hold the largest message, or every such message closes its reader.
            "--max-queued-bytes" => c.max_queued_bytes = count(&from, v, MAX_MESSAGE_LEN)?,
            "--max-queued-messages" => c.max_queued_messages = count(&from, v, 1)?,
            "--rate" => c.rate_limit.messages_per_second = rate(&from, v, 1.0)?,
            "--rate-burst" => c.rate_limit.message_burst = rate(&from, v, 1.0)?,
            "--rate-bytes" => c.rate_limit.bytes_per_second = rate(&from, v, 1.0)?,
            // A burst must admit the largest message, or every such message closes its sender.
            "--rate-byte-burst" => {
                c.rate_limit.byte_burst = rate(&from, v, MAX_MESSAGE_LEN as f64)?
            }
            "--ping-interval" => c.ping_interval = seconds(&from, v)?,
            "--pong-timeout" => c.pong_timeout = seconds(&from, v)?,
            "--max-handshakes" => c.max_handshakes = count(&from, v, 1)?,
            "--handshake-timeout" => c.handshake_timeout = seconds(&from, v)?,
            "--turn-url" => {
                let urls: Vec<String> = v
                    .split(',')
                    .map(str::trim)
                    .filter(|u| !u.is_empty())
                    .map(str::to_owned)
                    .collect();
                if urls.is_empty()
                    || urls
                        .iter()
                        .any(|u| !(u.starts_with("turn:") || u.starts_with("turns:")))
                {
                    return Err(format!(
                        "{from}: {v:?} is not a list of turn: URLs (turn:HOST:PORT,...)"
                    ));
                }
                turn_urls = Some(urls);
            }
            "--turn-secret" => {
                if v.is_empty() {
                    return Err(format!("{from}: empty secret"));
                }
                turn_secret = Some(v.to_owned())
            }
            "--turn-secret-file" => options.turn_secret_file = Some(path(&from, v)?),
            "--turn-ttl" => turn_ttl = Some(seconds(&from, v)?.max(Duration::from_secs(60))),
            "--log-format" => {
                options.json_logs = match v {
                    "json" => true,
                    "text" => false,
                    other => return Err(format!("{from}: {other:?} is neither text nor json")),
                }
            }
            other => unreachable!("every flag is matched: {other}"),
        }
    }
    if let (Some(redis), Some(prefix)) = (redis.as_mut(), prefix.as_ref()) {
        redis.prefix = prefix.clone();
    } else if prefix.is_some() {
        return Err("--redis-prefix needs --redis".into());
    }
    options.config.cluster = redis;
    let has_secret = turn_secret.is_some() || options.turn_secret_file.is_some();
    if turn_secret.is_some() && options.turn_secret_file.is_some() {
        return Err("--turn-secret and --turn-secret-file: give one".into());
    }
    match (turn_urls, has_secret) {
        (Some(urls), true) => {
            let mut turn = TurnSecret::new(turn_secret.unwrap_or_default(), urls);
            if let Some(ttl) = turn_ttl {
                turn.ttl = ttl;
            }
            options.config.turn = Some(turn);
        }
        (None, false) if turn_ttl.is_none() => {}
        (None, _) => return Err("minting TURN credentials needs --turn-url".into()),
        (Some(_), false) => {
            return Err("--turn-url needs --turn-secret or --turn-secret-file".into())
        }
    }
    if options.cert.is_some() != options.key.is_some() {
        return Err("--cert and --key go together".into());
    }
    if options.config.metrics == Some(options.addr) && options.addr.port() != 0 {
        return Err(format!(
            "--metrics: {} is the listening address; give metrics a port of their own",
            options.addr
        ));
    }
    Ok(Command::Serve(Box::new(options)))
}

/// A whole number of at least `min`.
fn count(from: &str, v: &str, min: usize) -> Result<usize, String> {
    let n: usize = v
        .parse()
        .map_err(|_| format!("{from}: {v:?} is not a whole number"))?;
    if n < min {
        return Err(format!("{from}: {n} is too small (at least {min})"));
    }
    Ok(n)
}

/// A finite rate of at least `min`.
fn rate(from: &str, v: &str, min: f64) -> Result<f64, String> {
    let n: f64 = v
        .parse()
        .map_err(|_| format!("{from}: {v:?} is not a number"))?;
    if !n.is_finite() || n < min {
        return Err(format!("{from}: {v} is not a number of at least {min}"));
    }
    Ok(n)
}

/// A positive, finite number of seconds (fractions allowed: `0.5`).
fn seconds(from: &str, v: &str) -> Result<Duration, String> {
    let s: f64 = v
        .parse()
        .map_err(|_| format!("{from}: {v:?} is not a number of seconds"))?;
    match Duration::try_from_secs_f64(s) {
        Ok(d) if d >= Duration::from_millis(1) && d <= Duration::from_secs(365 * 86_400) => Ok(d),
        _ => Err(format!(
            "{from}: {v} seconds is out of range (at least 0.001, at most a year)"
        )),
    }
}

fn path(from: &str, v: &str) -> Result<PathBuf, String> {
    if v.is_empty() {
        return Err(format!("{from}: empty file name"));
    }
    Ok(PathBuf::from(v))
}

/// A Redis URL this build can use; errors never show its password.
fn redis_url(from: &str, v: &str) -> Result<String, String> {
    let scheme = v.split_once("://").map(|(s, _)| s);
    match scheme {
        Some("redis" | "redis+unix" | "unix") => Ok(v.to_owned()),
        Some("rediss") => Err(format!(
            "{from}: rediss:// (Redis over TLS) is not supported; reach Redis over a private network or a local tunnel"
        )),
        _ => Err(format!(
            "{from}: not a Redis URL (redis://HOST:PORT, redis://:PASSWORD@HOST:PORT/DB or redis+unix:///PATH)"
        )),
    }
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

/// Logs on stderr through tracing: text (colours only on a terminal, and not with NO_COLOR)
/// or one JSON object per line.
fn init_logs(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour);
    if json {
        logs.json().init();
    } else {
        logs.init();
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let env: Vec<(String, String)> = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect();
    let mut options = match parse(&args, &env) {
        Ok(Command::Serve(options)) => options,
        Ok(Command::Help) => {
            println!("{}", usage());
            return ExitCode::SUCCESS;
        }
        Ok(Command::Version) => {
            println!("rtcmesh-signal {VERSION}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("rtcmesh-signal: {e}\n(rtcmesh-signal --help lists the options)");
            return ExitCode::from(2);
        }
    };
    init_logs(options.json_logs);
    tracing::info!(version = VERSION, "rtcmesh-signal starting");

    if let (Some(cert), Some(key)) = (&options.cert, &options.key) {
        match server_tls_from_pem_files(cert, key) {
            Ok(tls) => options.config.tls = Some(tls),
            Err(e) => {
                tracing::error!("cannot serve wss://: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    if let (Some(file), Some(turn)) = (&options.turn_secret_file, &mut options.config.turn) {
        match std::fs::read_to_string(file) {
            Ok(text) if !text.lines().next().unwrap_or("").trim().is_empty() => {
                turn.secret = text.lines().next().unwrap_or("").trim().to_owned();
            }
            Ok(_) => {
                tracing::error!("--turn-secret-file {}: empty", file.display());
                return ExitCode::FAILURE;
            }
            Err(e) => {
                tracing::error!("--turn-secret-file {}: {e}", file.display());
                return ExitCode::FAILURE;
            }
        }
    }
    if options.check {
        let c = &options.config;
        tracing::info!(
            address = %options.addr,
            tls = c.tls.is_some(),
            metrics = ?c.metrics,
            cluster = ?c.cluster,
            turn = ?c.turn,
            lobby = ?c.lobby,
            "configuration is valid"
        );
        return ExitCode::SUCCESS;
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
    // The server logs where it listens (and serves metrics) once it does.
    let server = match SignalServer::bind_with(options.addr, options.config).await {
        Ok(server) => server,
        Err(e) => {
            tracing::error!("cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut terminate =
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!("cannot handle SIGTERM: {e}");
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

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<String> {
        line.split_whitespace().map(str::to_owned).collect()
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn options(line: &str, vars: &[(&str, &str)]) -> Options {
        match parse(&args(line), &env(vars)) {
            Ok(Command::Serve(options)) => *options,
            Ok(_) => panic!("{line}: not a serve command"),
            Err(e) => panic!("{line}: {e}"),
        }
    }

    fn error(line: &str, vars: &[(&str, &str)]) -> String {
        match parse(&args(line), &env(vars)) {
            Err(e) => e,
            Ok(_) => panic!("{line} {vars:?} was accepted"),
        }
    }

    #[test]
    fn every_flag_has_an_environment_variable_and_the_flag_wins() {
        let o = options(
            "",
            &[
                ("RTCMESH_SIGNAL_MAX_PEERS", "10"),
                ("RTCMESH_SIGNAL_ADDRESS", "0.0.0.0:9000"),
            ],
        );
        assert_eq!(o.config.lobby.max_peers, 10);
        assert_eq!(o.addr, "0.0.0.0:9000".parse().unwrap());
        let o = options(
            "127.0.0.1:1 --max-peers 20",
            &[
                ("RTCMESH_SIGNAL_MAX_PEERS", "10"),
                ("RTCMESH_SIGNAL_ADDRESS", "0.0.0.0:9000"),
            ],
        );
        assert_eq!(o.config.lobby.max_peers, 20);
        assert_eq!(o.addr, "127.0.0.1:1".parse().unwrap());
        for flag in FLAGS {
            assert!(usage().contains(&env_name(flag.name)), "{}", flag.name);
        }
        let o = options(
            "--ping-interval=2.5 --log-format json",
            &[
                ("RTCMESH_SIGNAL_REDIS", "redis://:pw@10.0.0.5:6379"),
                ("RTCMESH_SIGNAL_REDIS_PREFIX", "eu"),
            ],
        );
        assert_eq!(o.config.ping_interval, Duration::from_millis(2500));
        assert!(o.json_logs);
        let cluster = o.config.cluster.expect("cluster");
        assert_eq!(cluster.prefix, "eu");
        // Both on port 0: two ports the system picks.
        options("127.0.0.1:0 --metrics 127.0.0.1:0", &[]);
        let o = options(
            "--turn-url turn:10.0.0.9:3478,turns:turn.example.org:443 --turn-ttl 600",
            &[("RTCMESH_SIGNAL_TURN_SECRET", "north")],
        );
        let turn = o.config.turn.expect("turn");
        assert_eq!(turn.urls.len(), 2);
        assert_eq!(turn.ttl, Duration::from_secs(600));
        assert_eq!(turn.secret, "north");
        let o = options("--turn-url turn:h:3478 --turn-secret-file /run/secret", &[]);
        assert_eq!(o.turn_secret_file, Some(PathBuf::from("/run/secret")));
        // Other programs' variables are none of its business.
        options("", &[("RUST_LOG", "debug"), ("RTCMESH_OTHER", "x")]);
    }

    #[test]
    fn nonsense_is_refused_with_the_option_named() {
        for (line, vars, says) in [
            (
                "--max-peers 0",
                vec![],
                "--max-peers: 0 is too small (at least 1)",
            ),
            (
                "",
                vec![("RTCMESH_SIGNAL_MAX_PEERS", "0")],
                "RTCMESH_SIGNAL_MAX_PEERS: 0 is too small",
            ),
            (
                "--ping-interval 0",
                vec![],
                "--ping-interval: 0 seconds is out of range",
            ),
            (
                "--pong-timeout -1",
                vec![],
                "--pong-timeout: -1 seconds is out of range",
            ),
            (
                "--handshake-timeout nan",
                vec![],
                "--handshake-timeout: nan seconds is out of range",
            ),
            (
                "--idle-timeout soon",
                vec![],
                "--idle-timeout: \"soon\" is not a number of seconds",
            ),
            (
                "--max-lobby-size 1",
                vec![],
                "--max-lobby-size: 1 is too small (at least 2)",
            ),
            (
                "--max-queued-bytes 1000",
                vec![],
                "--max-queued-bytes: 1000 is too small (at least 65536)",
            ),
            (
                "--rate-byte-burst 1000",
                vec![],
                "--rate-byte-burst: 1000 is not a number of at least 65536",
            ),
            ("--rate inf", vec![], "--rate: inf is not a number"),
            (
                "--rate 0",
                vec![],
                "--rate: 0 is not a number of at least 1",
            ),
            (
                "--max-peers many",
                vec![],
                "--max-peers: \"many\" is not a whole number",
            ),
            ("--max-peers", vec![], "--max-peers needs a value (N)"),
            ("--cert a.pem", vec![], "--cert and --key go together"),
            ("--redis-prefix eu", vec![], "--redis-prefix needs --redis"),
            (
                "--redis rediss://h:6379",
                vec![],
                "--redis: rediss:// (Redis over TLS) is not supported",
            ),
            ("--redis h:6379", vec![], "--redis: not a Redis URL"),
            (
                "--log-format xml",
                vec![],
                "--log-format: \"xml\" is neither text nor json",
            ),
            ("--max-peer 5", vec![], "unknown option --max-peer"),
            (
                "",
                vec![("RTCMESH_SIGNAL_MAX_PEER", "5")],
                "unknown environment variable RTCMESH_SIGNAL_MAX_PEER",
            ),
            (
                "localhost:80",
                vec![],
                "ADDRESS: \"localhost:80\" is not a socket address",
            ),
            (
                "127.0.0.1:9080 --metrics 127.0.0.1:9080",
                vec![],
                "--metrics: 127.0.0.1:9080 is the listening address",
            ),
            ("127.0.0.1:1 127.0.0.1:2", vec![], "one ADDRESS only"),
            (
                "--turn-url turn:h:3478",
                vec![],
                "--turn-url needs --turn-secret or --turn-secret-file",
            ),
            (
                "--turn-secret s",
                vec![],
                "minting TURN credentials needs --turn-url",
            ),
            (
                "--turn-url stun:h:3478 --turn-secret s",
                vec![],
                "--turn-url: \"stun:h:3478\" is not a list of turn: URLs",
            ),
            (
                "--turn-url turn:h --turn-secret s --turn-secret-file f",
                vec![],
                "give one",
            ),
        ] {
            let e = error(line, &vars);
            assert!(e.contains(says), "{line} {vars:?}: {e}");
        }
    }

    #[test]
    fn a_redis_password_is_never_in_an_error() {
        let e = error("--redis rediss://:hunter2@h:6379", &[]);
        assert!(!e.contains("hunter2"), "{e}");
        let e = error("--redis http://:hunter2@h", &[]);
        assert!(!e.contains("hunter2"), "{e}");
    }
}
