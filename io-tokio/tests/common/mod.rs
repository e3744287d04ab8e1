//! Helpers shared by the signaling tests: raw WebSocket clients, the `rtcmesh-signal` binary
//! as a child process (to measure its memory and CPU, or kill it), a throwaway certificate.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

pub const LIMIT: Duration = Duration::from_secs(10);

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Connects a raw WebSocket client (`tls` for `wss://`).
pub async fn ws_with(url: &str, tls: Option<Arc<rustls::ClientConfig>>) -> Ws {
    let connect = tokio_tungstenite::connect_async_tls_with_config(
        url,
        None,
        true,
        tls.map(Connector::Rustls),
    );
    tokio::time::timeout(LIMIT, connect)
        .await
        .expect("connect in time")
        .expect("connect")
        .0
}

pub async fn ws(url: &str) -> Ws {
    ws_with(url, None).await
}

/// Reads frames until `pick` returns something, or the connection ends (bounded).
pub async fn read_until<T>(
    ws: &mut Ws,
    limit: Duration,
    mut pick: impl FnMut(&Message) -> Option<T>,
) -> Option<T> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let frame = tokio::time::timeout_at(deadline, ws.next()).await.ok()??;
        if let Some(found) = pick(&frame.ok()?) {
            return Some(found);
        }
    }
}

/// The close code and reason the server ends this connection with.
pub async fn close_of(ws: &mut Ws) -> Option<(u16, String)> {
    read_until(ws, LIMIT, |m| match m {
        Message::Close(Some(f)) => Some((u16::from(f.code), f.reason.to_string())),
        _ => None,
    })
    .await
}

/// A protocol frame's (type, id, data).
pub fn parse(m: &Message) -> Option<(i64, i64, String)> {
    let Message::Text(t) = m else { return None };
    let v: serde_json::Value = serde_json::from_str(t).ok()?;
    Some((
        v["type"].as_i64()?,
        v["id"].as_i64()?,
        v["data"].as_str().unwrap_or_default().to_owned(),
    ))
}

pub fn frame(kind: i64, id: i64, data: &str) -> Message {
    Message::text(serde_json::json!({"type": kind, "id": id, "data": data}).to_string())
}

/// Joins (`""` creates) a mesh lobby and returns (assigned id, lobby name).
pub async fn join_raw(ws: &mut Ws, lobby: &str) -> (i64, String) {
    ws.send(frame(0, 0, lobby)).await.expect("send join");
    let mut id = None;
    let name = read_until(ws, LIMIT, |m| match parse(m)? {
        (1, assigned, _) => {
            id = Some(assigned);
            None
        }
        (0, _, name) => Some(name),
        _ => None,
    })
    .await
    .expect("JOIN reply");
    (id.expect("ID before JOIN"), name)
}

/// Joins (`""` creates) a mesh lobby: (assigned id, lobby name), or the close the server
/// answered with.
pub async fn try_join_raw(
    ws: &mut Ws,
    lobby: &str,
) -> Result<(i64, String), Option<(u16, String)>> {
    ws.send(frame(0, 0, lobby)).await.expect("send join");
    let mut id = None;
    let mut closed = None;
    let name = read_until(ws, LIMIT, |m| {
        if let Message::Close(Some(f)) = m {
            closed = Some((u16::from(f.code), f.reason.to_string()));
            return Some(None);
        }
        match parse(m)? {
            (1, assigned, _) => {
                id = Some(assigned);
                None
            }
            (0, _, name) => Some(Some(name)),
            _ => None,
        }
    })
    .await
    .flatten();
    match (id, name) {
        (Some(id), Some(name)) => Ok((id, name)),
        _ => Err(closed),
    }
}

/// Joining is refused: the close the server answers a JOIN with.
pub async fn join_refused(url: &str, lobby: &str) -> Option<(u16, String)> {
    let mut ws = ws(url).await;
    ws.send(frame(0, 0, lobby)).await.expect("send join");
    close_of(&mut ws).await
}

/// Waits for a frame of `kind` about `id`.
pub async fn expect_frame(ws: &mut Ws, kind: i64, id: i64, limit: Duration) -> bool {
    read_until(ws, limit, |m| {
        parse(m)
            .filter(|(k, i, _)| *k == kind && *i == id)
            .map(|_| ())
    })
    .await
    .is_some()
}

/// A self-signed certificate for `localhost` and `127.0.0.1`, written as PEM files into a
/// fresh directory: (cert file, key file, the certificate for a client root store).
pub fn certificate() -> (PathBuf, PathBuf, rustls::pki_types::CertificateDer<'static>) {
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
            .expect("certificate");
    let dir = std::env::temp_dir().join(format!(
        "rtcmesh-cert-{}-{}",
        std::process::id(),
        Instant::now().elapsed().as_nanos() ^ u128::from(rand_u32())
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, certified.cert.pem()).expect("write cert");
    std::fs::write(&key, certified.signing_key.serialize_pem()).expect("write key");
    (cert, key, certified.cert.der().clone())
}

fn rand_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u8(1);
    h.finish() as u32
}

/// A client TLS configuration trusting exactly `cert`.
pub fn trusting(cert: rustls::pki_types::CertificateDer<'static>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).expect("root");
    rtcmesh_tokio::signal::client_tls(roots).expect("client tls")
}

/// Whether a test can use `program`, a system tool or service outside the Rust toolchain (e.g.
/// Debian's `redis-server`). When it cannot, `what` (the tests that need it) did not run: one
/// line says so and how to run them, on the terminal even though libtest captures test output,
/// once per program and test binary; the caller returns early. With `RTCMESH_REQUIRE_SERVICES=1` (as
/// `.ci/run` sets) a missing program fails the test instead, so CI never skips silently.
pub fn installed(program: &str, what: &str, install: &str) -> bool {
    let found = std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| {
            std::fs::metadata(dir.join(program)).is_ok_and(|m| {
                m.is_file()
                    && std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o111 != 0
            })
        })
    });
    if found {
        return true;
    }
    let line = format!(
        "{what} did not run: `{program}` is not installed ({install}; .ci/run installs it)"
    );
    if std::env::var("RTCMESH_REQUIRE_SERVICES").is_ok_and(|v| v == "1") {
        panic!("{line}, and RTCMESH_REQUIRE_SERVICES=1 requires it");
    }
    // Once per missing program and test binary.
    static SAID: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let mut said = SAID.lock().unwrap_or_else(|e| e.into_inner());
    if !said.iter().any(|p| p == program) {
        said.push(program.to_owned());
        use std::io::Write;
        // Straight to the terminal: libtest captures only print!/eprint!.
        let _ = writeln!(std::io::stderr(), "note: {line}");
    }
    false
}

/// Debian's `redis-server` for the multi-node tests, unless it is not installed (see
/// [`installed`]).
pub fn redis() -> Option<RedisServer> {
    installed(
        "redis-server",
        "the multi-node signaling tests (io-tokio/tests/cluster.rs)",
        "apt-get install redis-server",
    )
    .then(RedisServer::start)
}

/// The `rtcmesh-signal` binary running as a child process; killed when dropped.
pub struct ServerProcess {
    pub child: Child,
    pub url: String,
    pub metrics: Option<String>,
    /// Everything it logged (stderr), for assertions.
    pub log: Arc<Mutex<String>>,
}

impl ServerProcess {
    /// Starts `rtcmesh-signal 127.0.0.1:0 ARGS…` and waits for its "listening on" line.
    pub fn start(args: &[&str]) -> ServerProcess {
        Self::start_with(None, &[], args)
    }

    /// [`start`](Self::start) with these environment variables (`RUST_LOG` is `info` unless
    /// given).
    pub fn start_with_env(env: &[(&str, &str)], args: &[&str]) -> ServerProcess {
        Self::start_with(None, env, args)
    }

    /// [`start`](Self::start) with soft and hard descriptor limits of `descriptors`.
    pub fn start_with_descriptor_limit(descriptors: u64, args: &[&str]) -> ServerProcess {
        Self::start_with(Some(descriptors), &[], args)
    }

    fn start_with(descriptors: Option<u64>, env: &[(&str, &str)], args: &[&str]) -> ServerProcess {
        use std::os::unix::process::CommandExt;
        let mut command = Command::new(env!("CARGO_BIN_EXE_rtcmesh-signal"));
        if let Some(n) = descriptors {
            let limit = libc::rlimit {
                rlim_cur: n as libc::rlim_t,
                rlim_max: n as libc::rlim_t,
            };
            // SAFETY: between fork and exec the closure only calls setrlimit, which is
            // async-signal-safe, on a struct it owns.
            unsafe {
                command.pre_exec(move || {
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                });
            }
        }
        let mut child = command
            .arg("127.0.0.1:0")
            .args(args)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start rtcmesh-signal");
        // Everything it says goes to stderr, through its logs; the addresses come from its
        // "listening on" and "metrics on" lines.
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().expect("stderr");
        let sink = log.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                {
                    let mut log = sink.lock().expect("log");
                    log.push_str(&line);
                    log.push('\n');
                }
                let _ = tx.send(line);
            }
        });
        let mut server = ServerProcess {
            child,
            url: String::new(),
            metrics: None,
            log,
        };
        let after = |line: &str, words: &str| {
            let rest = &line[line.find(words)? + words.len()..];
            Some(rest.split([' ', '"']).next()?.to_owned())
        };
        let deadline = Instant::now() + LIMIT;
        while server.url.is_empty() || (args.contains(&"--metrics") && server.metrics.is_none()) {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx.recv_timeout(left).unwrap_or_else(|_| {
                panic!(
                    "rtcmesh-signal did not start; its log:\n{}",
                    server.log.lock().expect("log")
                )
            });
            if let Some(url) = after(&line, "listening on ") {
                server.url = url;
            } else if let Some(url) = after(&line, "metrics on ") {
                server.metrics = Some(url);
            }
        }
        server
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A line of `/proc/PID/status` in KiB (e.g. `VmHWM`, the peak resident memory).
    pub fn status_kib(&self, field: &str) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("status");
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no {field} in /proc status"))
    }

    /// CPU time used so far (user + system).
    pub fn cpu_time(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).expect("stat");
        // Fields after the command name (which is in parentheses): utime is the 14th field
        // of the line, stime the 15th; both in clock ticks (100 per second on Linux).
        let after = &stat[stat.rfind(')').expect("comm") + 2..];
        let fields: Vec<&str> = after.split(' ').collect();
        let ticks: u64 =
            fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
        Duration::from_millis(ticks * 10)
    }

    /// Sends a signal (`"TERM"`, `"KILL"`).
    pub fn signal(&self, name: &str) {
        let signal = match name {
            "TERM" => libc::SIGTERM,
            "KILL" => libc::SIGKILL,
            "INT" => libc::SIGINT,
            other => panic!("no signal {other}"),
        };
        let pid = libc::pid_t::try_from(self.pid()).expect("pid");
        // SAFETY: kill only sends a signal to our own child process.
        let sent = unsafe { libc::kill(pid, signal) };
        assert_eq!(sent, 0, "kill -{name}: {}", std::io::Error::last_os_error());
    }

    /// Waits (bounded) for the process to exit; its exit status.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Waits (bounded) until its log contains `needle` (stderr is read on another thread).
    pub fn wait_log(&self, needle: &str, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            if self.log().contains(needle) {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits (bounded) until `needle` occurs `count` times in its log.
    pub fn wait_log_count(&self, needle: &str, count: usize, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            if self.log().matches(needle).count() >= count {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn log(&self) -> String {
        self.log.lock().expect("log").clone()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `GET /metrics` from `url` (`http://ADDRESS/metrics`), as text.
pub async fn scrape(url: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = url
        .strip_prefix("http://")
        .and_then(|r| r.split('/').next())
        .expect("metrics url");
    let mut stream = tokio::time::timeout(LIMIT, TcpStream::connect(addr))
        .await
        .expect("in time")
        .expect("connect to metrics");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("request");
    let mut body = String::new();
    tokio::time::timeout(LIMIT, stream.read_to_string(&mut body))
        .await
        .expect("in time")
        .expect("read");
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    body
}

/// A metric's value in Prometheus text (the first line starting with `name` and a space or `{`).
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| l.starts_with(&format!("{name} ")) || l.starts_with(&format!("{name}{{")))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Debian's `redis-server` on a free loopback port, with no persistence; stopped when dropped.
pub struct RedisServer {
    child: Child,
    port: u16,
    pub url: String,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "the multi-node tests need Debian's redis-server (apt-get install redis-server): {e}"
                )
            });
        let server = RedisServer {
            child,
            port,
            url: format!("redis://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + LIMIT;
        loop {
            if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
                use std::io::{Read, Write};
                let mut reply = [0u8; 7];
                if s.write_all(b"PING\r\n").is_ok()
                    && s.read_exact(&mut reply).is_ok()
                    && &reply == b"+PONG\r\n"
                {
                    return server;
                }
            }
            assert!(
                Instant::now() < deadline,
                "redis-server did not start on port {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl RedisServer {
    /// Runs one command on a connection of its own and returns the first line of the reply
    /// (`+OK`, `:3`, `-ERR …`).
    pub fn command(&self, args: &[&str]) -> String {
        use std::io::Write;
        let mut request = format!("*{}\r\n", args.len());
        for arg in args {
            request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
        }
        let mut stream =
            std::net::TcpStream::connect(("127.0.0.1", self.port)).expect("connect to Redis");
        stream.set_read_timeout(Some(LIMIT)).expect("timeout");
        stream.write_all(request.as_bytes()).expect("send command");
        let mut line = String::new();
        BufReader::new(stream)
            .read_line(&mut line)
            .expect("Redis reply");
        line.trim_end().to_owned()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Joins (`""` creates) a client/server lobby and returns (assigned id, lobby name).
pub async fn join_client_server_raw(ws: &mut Ws, lobby: &str) -> (i64, String) {
    ws.send(frame(0, 1, lobby)).await.expect("send join");
    let mut id = None;
    let name = read_until(ws, LIMIT, |m| match parse(m)? {
        (1, assigned, _) => {
            id = Some(assigned);
            None
        }
        (0, _, name) => Some(name),
        _ => None,
    })
    .await
    .expect("JOIN reply");
    (id.expect("ID before JOIN"), name)
}

/// The next `count` protocol frames (type, id, data), skipping SUCCESSION (11) updates;
/// fewer if the connection ends or `limit` passes.
pub async fn next_frames(ws: &mut Ws, count: usize, limit: Duration) -> Vec<(i64, i64, String)> {
    let mut got = Vec::new();
    read_until(ws, limit, |m| {
        if let Some(f) = parse(m).filter(|f| f.0 != 11) {
            got.push(f);
        }
        (got.len() >= count).then_some(())
    })
    .await;
    got
}
