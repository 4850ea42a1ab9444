//! The chat commands as a user runs them: the real `whispr` binary in child processes,
//! talking to relays started by the test.

use serde_json::Value;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStderr, ChildStdout, Command};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::support::{config, config_with, scratch_dir, TestRelay};
use whispr::clock::Clock;
use whispr::config::Config;
use whispr::server::Server;

/// The `whispr` binary, isolated from the caller's environment.
pub(crate) fn whispr() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_whispr"));
    cmd.env_remove("WHISPR_SERVER")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    cmd
}

/// Runs `whispr ARGS` to completion (at most 20 s).
pub(crate) async fn run(args: &[&str]) -> Output {
    run_with_stdin(args, None).await
}

pub(crate) async fn run_with_stdin(args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = whispr();
    cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    if stdin.is_some() {
        cmd.stdin(Stdio::piped());
    }
    let mut child = cmd.spawn().expect("spawn whispr");
    if let Some(text) = stdin {
        use tokio::io::AsyncWriteExt;
        let mut pipe = child.stdin.take().expect("stdin");
        pipe.write_all(text.as_bytes()).await.expect("write stdin");
    }
    tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
        .await
        .expect("whispr finishes within 20 s")
        .expect("whispr ran")
}

pub(crate) fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

pub(crate) fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).trim().to_string()
}

/// `whispr keygen` into `dir/name.json`: (key file, public key hex).
pub(crate) async fn keygen(dir: &Path, name: &str) -> (PathBuf, String) {
    let path = dir.join(format!("{name}.json"));
    let out = run(&["keygen", "--out", path.to_str().unwrap()]).await;
    assert!(out.status.success(), "keygen failed: {}", stderr(&out));
    let public = stdout(&out);
    assert_eq!(
        public.len(),
        64,
        "keygen prints 64 hex characters: {public}"
    );
    (path, public)
}

/// `whispr send`; returns the message id it printed. Panics unless it exits 0.
pub(crate) async fn send(server: &str, key: &Path, to: &str, text: &str) -> String {
    let out = run(&[
        "send",
        "--server",
        server,
        "--key",
        key.to_str().unwrap(),
        "--to",
        to,
        text,
    ])
    .await;
    assert!(out.status.success(), "send failed: {}", stderr(&out));
    stdout(&out)
}

/// A running `whispr listen --json`.
pub(crate) struct Listen {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
    errors: Lines<BufReader<ChildStderr>>,
}

impl Listen {
    pub(crate) fn start(server: &str, key: &Path, extra: &[&str]) -> Self {
        let mut child = whispr()
            .args(["listen", "--json", "--server", server, "--key"])
            .arg(key)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn listen");
        let lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let errors = BufReader::new(child.stderr.take().expect("stderr")).lines();
        Listen {
            child,
            lines,
            errors,
        }
    }

    /// The next printed message (at most 15 s away: reconnects take a few seconds).
    pub(crate) async fn next(&mut self) -> Value {
        let line = tokio::time::timeout(Duration::from_secs(15), self.lines.next_line())
            .await
            .expect("a message within 15 s")
            .expect("read stdout")
            .expect("listen is still running");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
    }

    /// The next stderr line that contains `needle` (at most 15 s away).
    pub(crate) async fn stderr_line_with(&mut self, needle: &str) -> String {
        let wait = async {
            loop {
                match self.errors.next_line().await.expect("read stderr") {
                    Some(line) if line.contains(needle) => return line,
                    Some(_) => {}
                    None => panic!("listen ended before saying {needle:?}"),
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(15), wait)
            .await
            .unwrap_or_else(|_| panic!("listen did not say {needle:?} within 15 s"))
    }

    /// Asserts that nothing more is printed for `ms` milliseconds.
    pub(crate) async fn assert_quiet(&mut self, ms: u64) {
        if let Ok(line) =
            tokio::time::timeout(Duration::from_millis(ms), self.lines.next_line()).await
        {
            panic!("expected no more messages, got {line:?}");
        }
    }

    /// The exit status once `listen` ends by itself (at most 10 s away).
    pub(crate) async fn exit_code(mut self) -> Option<i32> {
        tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .expect("listen exits within 10 s")
            .expect("wait")
            .code()
    }

    /// SIGTERM, as Ctrl-C would; `listen` closes its session and exits 0.
    pub(crate) async fn stop(mut self) {
        let pid = self.child.id().expect("listen is running").to_string();
        let killed = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("run kill");
        assert!(killed.success());
        let status = tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .expect("listen exits within 10 s of SIGTERM")
            .expect("wait");
        assert!(status.success(), "listen exited with {status}");
    }
}

pub(crate) fn texts(messages: &[Value]) -> Vec<&str> {
    messages
        .iter()
        .map(|m| m["text"].as_str().unwrap())
        .collect()
}

/// A relay with the system clock (the CLI signs with the real time).
pub(crate) async fn relay() -> TestRelay {
    TestRelay::start_clocked(config(), Clock::system()).await
}

#[tokio::test]
async fn two_terminals_chat_end_to_end() {
    let relay = relay().await;
    let dir = scratch_dir("cli-chat");
    let (alice_key, alice) = keygen(&dir, "alice").await;
    let (bob_key, bob) = keygen(&dir, "bob").await;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&bob_key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "identity files are private");
    }

    let mut listen = Listen::start(&relay.base, &bob_key, &[]);
    let text = "hello, bob: ünïcode, \"quotes\" and\ttabs";
    let id = send(&relay.base, &alice_key, &bob, text).await;
    let got = listen.next().await;
    assert_eq!(got["text"], text);
    assert_eq!(got["from"], alice.as_str());
    assert_eq!(got["id"], id.as_str());
    assert!(got["seq"].as_u64().unwrap() >= 1);
    assert!(got["timestamp"].as_u64().unwrap() > 1_700_000_000_000);

    // Text from standard input; a reply the other way round.
    let out = run_with_stdin(
        &[
            "send",
            "--server",
            &relay.base,
            "--key",
            alice_key.to_str().unwrap(),
            "--to",
            &bob,
        ],
        Some("line one\nline two\n"),
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(listen.next().await["text"], "line one\nline two");
    let mut reply = Listen::start(&relay.base, &alice_key, &[]);
    send(&relay.base, &bob_key, &alice, "hi alice").await;
    assert_eq!(reply.next().await["from"], bob.as_str());
    reply.stop().await;
    listen.assert_quiet(300).await;
    listen.stop().await;

    // Everything shown was acknowledged: a later read finds only what is new.
    send(&relay.base, &alice_key, &bob, "while you were away").await;
    let key = bob_key.to_str().unwrap();
    let out = run(&["inbox", "--json", "--server", &relay.base, "--key", key]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let lines: Vec<Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(texts(&lines), ["while you were away"]);
    let out = run(&["inbox", "--server", &relay.base, "--key", key]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "", "inbox acknowledged what it printed");
    relay.stop().await;
}

/// An in-process relay on a fixed address whose memory store survives a graceful
/// restart through `memory_snapshot_path`.
struct RestartableRelay {
    addr: SocketAddr,
    config: Config,
    running: Option<(oneshot::Sender<()>, JoinHandle<()>)>,
}

impl RestartableRelay {
    async fn start(snapshot: &Path) -> Self {
        let config = config_with(&format!(
            "memory_snapshot_path = {:?}",
            snapshot.display().to_string()
        ));
        let mut relay = RestartableRelay {
            addr: "127.0.0.1:0".parse().unwrap(),
            config,
            running: None,
        };
        relay.up().await;
        relay
    }

    fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    async fn up(&mut self) {
        let listener = tokio::net::TcpListener::bind(self.addr)
            .await
            .expect("bind");
        self.addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let server = Server::new(self.config.clone()).with_clock(Clock::system());
        let task = tokio::spawn(async move {
            server
                .run(listener, async {
                    let _ = rx.await;
                })
                .await
                .expect("relay ran");
        });
        self.running = Some((tx, task));
    }

    /// Graceful stop: sessions get 1001, the store writes its snapshot.
    async fn down(&mut self) {
        let (tx, task) = self.running.take().expect("running");
        let _ = tx.send(());
        tokio::time::timeout(Duration::from_secs(15), task)
            .await
            .expect("relay stops")
            .expect("relay task");
    }
}

#[tokio::test]
async fn listen_survives_a_relay_restart_without_loss_or_duplicates() {
    let dir = scratch_dir("cli-restart");
    let mut relay = RestartableRelay::start(&dir.join("snapshot.bin")).await;
    let base = relay.base();
    let (alice_key, _) = keygen(&dir, "alice").await;
    let (bob_key, bob) = keygen(&dir, "bob").await;
    let mut listen = Listen::start(&base, &bob_key, &[]);
    send(&base, &alice_key, &bob, "before").await;
    assert_eq!(listen.next().await["text"], "before");

    // The relay restarts; while it is down a send fails with "unreachable" (3).
    relay.down().await;
    listen.stderr_line_with("reconnecting").await;
    let key = alice_key.to_str().unwrap();
    let out = run(&[
        "send", "--server", &base, "--key", key, "--to", &bob, "lost?",
    ])
    .await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("cannot reach the relay"),
        "{}",
        stderr(&out)
    );
    relay.up().await;
    // Sent while the listener is still backing off: it finds them when it is back.
    send(&base, &alice_key, &bob, "during 1").await;
    send(&base, &alice_key, &bob, "during 2").await;
    let got = [listen.next().await, listen.next().await];
    assert_eq!(texts(&got), ["during 1", "during 2"]);

    // The listener goes away; a message waits in the relay across another restart.
    listen.stop().await;
    send(&base, &alice_key, &bob, "queued across a restart").await;
    relay.down().await;
    relay.up().await;
    let mut listen = Listen::start(&base, &bob_key, &[]);
    assert_eq!(listen.next().await["text"], "queued across a restart");
    send(&base, &alice_key, &bob, "after").await;
    assert_eq!(listen.next().await["text"], "after");
    // Nothing shown before is shown again (the cursor file), nothing extra arrives.
    listen.assert_quiet(500).await;
    listen.stop().await;
    relay.down().await;
}

#[tokio::test]
async fn bad_input_gives_one_readable_line_and_a_nonzero_status() {
    let relay = TestRelay::start().await;
    let dir = scratch_dir("cli-errors");
    let (alice_key, alice) = keygen(&dir, "alice").await;
    let key = alice_key.to_str().unwrap();
    let base = relay.base.as_str();

    // keygen never overwrites by accident.
    let out = run(&["keygen", "--out", key]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("--force"), "{}", stderr(&out));

    // A corrupted identity file: status 1, the file named, what to do.
    let corrupt = dir.join("corrupt.json");
    std::fs::write(&corrupt, "{\"version\":1,\"ed25519_seed\":\"not hex\"}").unwrap();
    for cmd in ["send", "listen", "inbox"] {
        let mut args = vec![cmd, "--server", base, "--key", corrupt.to_str().unwrap()];
        if cmd == "send" {
            args.extend(["--to", alice.as_str(), "hi"]);
        }
        let out = run(&args).await;
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{cmd}: {err}");
        assert_eq!(err.lines().count(), 1, "{cmd}: one line: {err}");
        assert!(
            err.contains("corrupt.json") && err.contains("keygen"),
            "{err}"
        );
    }

    // Invalid recipients: not hex, wrong length, a small-order point.
    let small_order = format!("01{}", "00".repeat(31));
    for to in ["bob", &alice[..62], small_order.as_str()] {
        let out = run(&["send", "--server", base, "--key", key, "--to", to, "hi"]).await;
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{to}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains("--to"), "{err}");
    }

    // A missing flag is a usage error too.
    let out = run(&["send", "--key", key, "hi"]).await;
    assert_eq!(out.status.code(), Some(1));

    // The relay refuses (its clock is an hour ahead of ours): status 2 and a hint.
    relay.clock.advance_ms(3_600_000);
    let out = run(&["send", "--server", base, "--key", key, "--to", &alice, "hi"]).await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("stale_timestamp") && err.contains("clock"),
        "{err}"
    );

    // Nobody listening: status 3.
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}", free.local_addr().unwrap());
    drop(free);
    let out = run(&[
        "send", "--server", &dead, "--key", key, "--to", &alice, "hi",
    ])
    .await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let out = run(&["inbox", "--server", &dead, "--key", key]).await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    relay.stop().await;
}

#[tokio::test]
async fn a_second_listener_with_the_same_key_takes_over_and_the_first_stops() {
    let relay = relay().await;
    let dir = scratch_dir("cli-takeover");
    let (bob_key, _) = keygen(&dir, "bob").await;
    let mut first = Listen::start(&relay.base, &bob_key, &[]);
    first.stderr_line_with("connected").await;
    let mut second = Listen::start(&relay.base, &bob_key, &[]);
    second.stderr_line_with("connected").await;
    let line = first.stderr_line_with("took over").await;
    assert!(line.contains("4001"), "{line}");
    assert_eq!(first.exit_code().await, Some(4));
    second.stop().await;
    relay.stop().await;
}

#[tokio::test]
async fn listen_reports_expired_messages_as_a_gap_on_stderr() {
    let relay = TestRelay::start_with(config_with("message_ttl_seconds = 60")).await;
    let dir = scratch_dir("cli-gap");
    let (alice_key, _) = keygen(&dir, "alice").await;
    let (bob_key, bob) = keygen(&dir, "bob").await;
    send(&relay.base, &alice_key, &bob, "too late").await;
    // Two minutes pass on the relay's clock: the message expires unread.
    relay.clock.advance_ms(120_000);
    let mut listen = Listen::start(&relay.base, &bob_key, &[]);
    let line = listen.stderr_line_with("missing").await;
    assert!(line.contains("expired"), "{line}");
    send(&relay.base, &alice_key, &bob, "in time").await;
    assert_eq!(listen.next().await["text"], "in time");
    listen.stop().await;
    relay.stop().await;
}

#[tokio::test]
async fn a_configuration_mistake_is_one_line_printed_once() {
    let dir = scratch_dir("config-errors");
    let toml = dir.join("whispr.toml");
    std::fs::write(&toml, "max_mesages_per_second = 5\n").unwrap();
    let typo_in_file = ["serve", "--config", toml.to_str().unwrap()];
    let typo_in_env = ["serve", "--listen", "localhost:0"];
    for (args, env, expected) in [
        (
            &typo_in_file[..],
            None,
            format!(
                "whispr: configuration: {} max_mesages_per_second: unknown key (did you mean max_messages_per_second?)",
                toml.display()
            ),
        ),
        (
            &typo_in_env[..],
            Some(("WHISPR_MAX_MESAGES_PER_SECOND", "5")),
            "whispr: configuration: environment WHISPR_MAX_MESAGES_PER_SECOND: unknown variable (did you mean WHISPR_MAX_MESSAGES_PER_SECOND?)".to_string(),
        ),
    ] {
        let mut cmd = whispr();
        cmd.args(args);
        if let Some((k, v)) = env {
            cmd.env(k, v);
        }
        let out = tokio::time::timeout(std::time::Duration::from_secs(20), cmd.output())
            .await
            .expect("whispr serve stops at once")
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        assert_eq!(String::from_utf8_lossy(&out.stderr), format!("{expected}\n"));
    }
    // A variable that --redis-url also reads is named as the variable, not the flag.
    let mut cmd = whispr();
    cmd.args(["serve", "--listen", "127.0.0.1:0"])
        .env("WHISPR_REDIS_URL", "http://not-redis:6379");
    let out = tokio::time::timeout(std::time::Duration::from_secs(20), cmd.output())
        .await
        .expect("whispr serve stops at once")
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.starts_with("whispr: configuration: environment WHISPR_REDIS_URL: ")
            && err.lines().count() == 1,
        "{err}"
    );
}

/// A stand-in for nginx with its relay down: every request gets an HTML 502 page.
async fn proxy_answering_502() -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf).await;
                let page = "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n";
                let answer = format!(
                    "HTTP/1.1 502 Bad Gateway\r\nServer: nginx\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{page}",
                    page.len()
                );
                let _ = stream.write_all(answer.as_bytes()).await;
            });
        }
    });
    format!("http://{addr}")
}

#[tokio::test]
async fn a_proxy_page_or_an_untrusted_certificate_is_one_line_with_status_3() {
    let dir = scratch_dir("cli-proxy");
    let (key_file, me) = keygen(&dir, "me").await;
    let key = key_file.to_str().unwrap();
    let proxy = proxy_answering_502().await;
    for args in [
        vec!["send", "--server", &proxy, "--key", key, "--to", &me, "hi"],
        vec!["inbox", "--server", &proxy, "--key", key],
    ] {
        let out = run(&args).await;
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(3), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(
            err.contains(&format!("the proxy at {proxy}"))
                && err.contains("answered 502 Bad Gateway: is the relay running behind it?")
                && !err.contains("<html"),
            "{args:?}: {err}"
        );
    }

    if !crate::support::have_program("openssl") {
        return;
    }
    let (cert, tls_key) = crate::support::self_signed_cert(&dir, "relay");
    let relay = TestRelay::start_with(crate::support::config_with(&format!(
        "tls_cert = {:?}\ntls_key = {:?}",
        cert.display().to_string(),
        tls_key.display().to_string()
    )))
    .await;
    let server = format!("https://{}", relay.addr);
    for args in [
        vec!["send", "--server", &server, "--key", key, "--to", &me, "hi"],
        vec!["inbox", "--server", &server, "--key", key],
    ] {
        let out = run(&args).await;
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(3), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains("--ca"), "{args:?}: {err}");
    }
    relay.stop().await;
}
