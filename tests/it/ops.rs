//! Operations: Prometheus metrics that parse and move with traffic.

use std::collections::HashMap;
use whispr::protocol::{Identity, WireEnvelope};

use crate::support::{config_with, drain_until_synced, receive, TestRelay};

/// Parses the Prometheus text format strictly enough to catch a broken exposition:
/// every line is a comment or `name{labels} value`, every sample has a TYPE.
fn parse(text: &str) -> HashMap<String, f64> {
    let mut samples = HashMap::new();
    let mut typed = Vec::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split(' ');
            let name = parts.next().unwrap().to_string();
            let kind = parts.next().expect("a type");
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            typed.push(name);
            continue;
        }
        if line.starts_with("# HELP ") {
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad sample line {line:?}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line:?}"));
        let name = series.split('{').next().unwrap();
        assert!(name.starts_with("whispr_"), "{line}");
        assert!(
            typed.iter().any(|t| name == t
                || name
                    .strip_prefix(t.as_str())
                    .is_some_and(|s| ["_bucket", "_sum", "_count"].contains(&s))),
            "sample without TYPE: {line}"
        );
        if let Some(labels) = series.strip_prefix(name) {
            if !labels.is_empty() {
                assert!(labels.starts_with('{') && labels.ends_with('}'), "{line}");
            }
        }
        samples.insert(series.to_string(), value);
    }
    samples
}

async fn scrape(url: &str) -> HashMap<String, f64> {
    let resp = reqwest::get(url).await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    parse(&resp.text().await.unwrap())
}

fn get(m: &HashMap<String, f64>, series: &str) -> f64 {
    m.get(series).copied().unwrap_or(0.0)
}

#[tokio::test]
async fn metrics_parse_and_move_with_traffic() {
    let relay = TestRelay::start().await;
    let url = format!("{}/metrics", relay.base);
    let before = scrape(&url).await;
    let (alice, bob) = (Identity::generate(), Identity::generate());
    let (mut ws, _) = relay.connect(&bob).await;
    drain_until_synced(&mut ws, true).await;
    let during = scrape(&url).await;
    assert_eq!(get(&during, "whispr_sessions{codec=\"json\"}"), 1.0);
    assert_eq!(get(&during, "whispr_connections"), 1.0);

    for n in 0..3 {
        relay
            .http()
            .send(&relay.seal(&alice, bob.public_key(), &format!("m{n}")))
            .await
            .unwrap();
    }
    receive(&mut ws, 3, true).await;
    let mut bad = WireEnvelope::from(&relay.seal(&alice, bob.public_key(), "x"));
    bad.body = b"tampered".to_vec();
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/send", relay.base))
        .json(&bad)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 422);
    ws.close().await;
    // The session's end is counted last, after its gauges: once it is, all are final.
    let disconnects = "whispr_disconnects_total{reason=\"client\"}";
    relay
        .wait_metric(disconnects, get(&before, disconnects) + 1.0)
        .await;

    let after = scrape(&url).await;
    let delta = |s: &str| get(&after, s) - get(&before, s);
    assert_eq!(
        delta("whispr_messages_accepted_total{kind=\"stored\"}"),
        3.0
    );
    assert_eq!(
        delta("whispr_messages_delivered_total{kind=\"stored\"}"),
        3.0
    );
    assert_eq!(
        delta("whispr_messages_refused_total{reason=\"bad_signature\"}"),
        1.0
    );
    assert_eq!(delta("whispr_delivery_latency_seconds_count"), 3.0);
    assert_eq!(delta("whispr_queue_age_seconds_count"), 3.0);
    assert_eq!(delta("whispr_disconnects_total{reason=\"client\"}"), 1.0);
    assert_eq!(get(&after, "whispr_sessions{codec=\"json\"}"), 0.0);
    assert_eq!(
        get(&after, "whispr_queue_depth"),
        0.0,
        "everything was acked"
    );
    relay.stop().await;
}

#[tokio::test]
async fn metrics_can_live_on_their_own_address() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let relay = TestRelay::start_with(config_with(&format!(
        "metrics_listen = \"127.0.0.1:{port}\""
    )))
    .await;
    // The relay binds it while it starts: wait until it answers.
    let url = format!("http://127.0.0.1:{port}/metrics");
    for _ in 0..3000 {
        if reqwest::get(&url).await.is_ok() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let m = scrape(&url).await;
    assert!(m.contains_key("whispr_connections"));
    let public = reqwest::get(format!("{}/metrics", relay.base))
        .await
        .unwrap();
    assert_eq!(public.status().as_u16(), 404, "not on the public listener");
    relay.stop().await;
}

/// The shipped unit, with ExecStart pointing at the binary under test.
fn unit_text() -> String {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/systemd/whispr.service"
    ))
    .unwrap();
    text.replace("/usr/local/bin/whispr", env!("CARGO_BIN_EXE_whispr"))
}

fn unit_value(text: &str, key: &str) -> String {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("the unit sets {key}"))
        .to_string()
}

#[test]
fn the_systemd_unit_fits_the_relays_defaults() {
    let text = unit_text();
    let defaults = whispr::config::Config::default();
    let stop: u64 = unit_value(&text, "TimeoutStopSec").parse().unwrap();
    assert!(
        stop > defaults.shutdown_grace_seconds,
        "systemd must wait longer than the relay's grace period"
    );
    let nofile: usize = unit_value(&text, "LimitNOFILE").parse().unwrap();
    assert!(
        nofile
            >= defaults.max_connections
                + defaults.http_max_connections
                + defaults.http_reserved_connections
                + 256,
        "enough descriptors for every connection the caps allow"
    );
    assert_eq!(unit_value(&text, "KillSignal"), "SIGTERM");
    assert!(unit_value(&text, "ExecReload").contains("-HUP"));
    assert!(unit_value(&text, "After").contains("redis.service"));
    for hardening in [
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "User=whispr",
    ] {
        assert!(text.lines().any(|l| l == hardening), "missing {hardening}");
    }
}

#[test]
fn the_systemd_unit_keeps_mail_and_grants_no_capability() {
    let text = unit_text();
    // A restart keeps queued mail: the memory store's snapshot is in the state directory.
    let state = format!("/var/lib/{}/", unit_value(&text, "StateDirectory"));
    let env = unit_value(&text, "Environment");
    let snapshot = env
        .strip_prefix("WHISPR_MEMORY_SNAPSHOT_PATH=")
        .unwrap_or_else(|| panic!("the unit sets the snapshot path: {env}"));
    assert!(snapshot.starts_with(&state), "{snapshot} is not in {state}");
    assert!(unit_value(&text, "ReadWritePaths").starts_with(state.trim_end_matches('/')));
    let path = std::path::Path::new(snapshot);
    let config =
        whispr::config::Config::from_toml(&format!("memory_snapshot_path = {snapshot:?}")).unwrap();
    assert_eq!(config.memory_snapshot_path.as_deref(), Some(path));

    // No capability unless the operator uncomments the variant for ports below 1024.
    assert_eq!(unit_value(&text, "CapabilityBoundingSet"), "");
    assert!(!text.lines().any(|l| l.starts_with("AmbientCapabilities=")));
    for variant in [
        "#CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
        "#AmbientCapabilities=CAP_NET_BIND_SERVICE",
    ] {
        assert!(text.lines().any(|l| l == variant), "missing {variant}");
    }
    // TLS keys through credentials, ready to uncomment; the config keys read them.
    assert!(text
        .lines()
        .any(|l| l.starts_with("#LoadCredential=tls-key:")));
    assert!(text
        .lines()
        .any(|l| l == "#Environment=WHISPR_TLS_CERT=%d/tls-cert WHISPR_TLS_KEY=%d/tls-key"));
}

#[test]
fn the_systemd_unit_passes_systemd_analyze_verify() {
    if !crate::support::have_program("systemd-analyze") {
        return;
    }
    let dir = crate::support::scratch_dir("systemd");
    let unit = dir.join("whispr.service");
    std::fs::write(&unit, unit_text()).unwrap();
    let out = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // verify exits 0 on many problems and only prints them: any line about our unit fails.
    let complaints: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("whispr.service"))
        .collect();
    assert!(
        out.status.success() && complaints.is_empty(),
        "systemd-analyze verify: {stderr}"
    );
    // The hardening score may only get better (lower): 1.6 before capabilities went.
    let out = std::process::Command::new("systemd-analyze")
        .args(["security", "--offline=true"])
        .arg(&unit)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    let score: f64 = report
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for whispr.service: ")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in {report}"));
    assert!(score <= 1.4, "systemd-analyze security: {score} (was 1.4)");
    let _ = std::fs::remove_dir_all(dir);
}

async fn analytics_run(
    include_keys: bool,
) -> (Vec<serde_json::Value>, String, whispr::protocol::PublicKey) {
    let dir = crate::support::scratch_dir("analytics");
    let path = dir.join("analytics_events.log");
    let relay = TestRelay::start_with(config_with(&format!(
        "analytics_log_path = {:?}\nanalytics_include_keys = {include_keys}",
        path.display().to_string()
    )))
    .await;
    let (alice, bob) = (Identity::generate(), Identity::generate());
    let (mut ws, _) = relay.connect(&bob).await;
    drain_until_synced(&mut ws, true).await;
    relay
        .http()
        .send(&relay.seal(&alice, bob.public_key(), "12345"))
        .await
        .unwrap();
    receive(&mut ws, 1, true).await;
    let mut bad = WireEnvelope::from(&relay.seal(&alice, bob.public_key(), "x"));
    bad.body = b"tampered".to_vec();
    reqwest::Client::new()
        .post(format!("{}/v1/send", relay.base))
        .json(&bad)
        .send()
        .await
        .unwrap();
    ws.close().await;
    relay.stop().await;
    let text = std::fs::read_to_string(&path).unwrap();
    let _ = std::fs::remove_dir_all(dir);
    let lines = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect();
    (lines, text, bob.public_key())
}

#[tokio::test]
async fn the_analytics_log_has_counts_and_sizes_but_no_keys_unless_asked() {
    let (events, text, bob) = analytics_run(false).await;
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    for expected in [
        "message_accepted",
        "message_delivered",
        "message_refused",
        "session_closed",
    ] {
        assert!(
            kinds.contains(&expected),
            "{expected} missing from {kinds:?}"
        );
    }
    let accepted = events
        .iter()
        .find(|e| e["event"] == "message_accepted")
        .unwrap();
    assert_eq!(accepted["bytes"], 5);
    assert_eq!(accepted["kind"], "stored");
    assert!(accepted["ts_ms"].as_u64().is_some());
    let refused = events
        .iter()
        .find(|e| e["event"] == "message_refused")
        .unwrap();
    assert_eq!(refused["reason"], "bad_signature");
    assert!(!text.contains(&bob.to_hex()), "no keys by default");
    assert!(!text.contains("127.0.0.1"), "no addresses");

    let (events, text, bob) = analytics_run(true).await;
    assert!(text.contains(&bob.to_hex()), "keys when configured");
    assert!(events.iter().any(|e| e["recipient"] == bob.to_hex()));
}

#[tokio::test]
async fn deliveries_count_per_transport_and_refused_bodies_per_reason() {
    use crate::support::v1::{connect, get as v1_get, next_json, send as v1_send, V1User};
    let relay = TestRelay::start_with(config_with(
        "max_messages_per_second = 1\nburst_messages = 1",
    ))
    .await;
    let url = format!("{}/metrics", relay.base);
    let before = scrape(&url).await;
    let bob = Identity::generate();

    // Native: one message read by an HTTP poll, one over the WebSocket.
    relay
        .http()
        .send(&relay.seal(&Identity::generate(), bob.public_key(), "polled"))
        .await
        .unwrap();
    let page = relay.http().poll(&bob, None, None).await.unwrap();
    assert_eq!(page.messages.len(), 1);
    relay
        .http()
        .poll(&bob, Some(page.next), None)
        .await
        .unwrap();
    let carol = Identity::generate();
    relay
        .http()
        .send(&relay.seal(&carol, bob.public_key(), "pushed"))
        .await
        .unwrap();
    let (mut ws, _) = relay.connect(&bob).await;
    assert_eq!(drain_until_synced(&mut ws, true).await.len(), 1);
    // The same sender again at once: over its burst of 1.
    assert!(relay
        .http()
        .send(&relay.seal(&carol, bob.public_key(), "too soon"))
        .await
        .is_err());

    // Whispr v1: one message polled, one pushed.
    let (alice, dave) = (V1User::new(), V1User::new());
    assert_eq!(
        v1_send(&relay, &dave.message(&alice, "polled", 1.0))
            .await
            .0,
        200
    );
    let (status, polled) = v1_get(&relay, &format!("/inbox/{}", alice.enc_pub())).await;
    assert_eq!(
        (status, polled["messages"].as_array().unwrap().len()),
        (200, 1)
    );
    let mut v1_ws = connect(&relay, &format!("/ws/{}", alice.enc_pub())).await;
    let erin = V1User::new();
    assert_eq!(
        v1_send(&relay, &erin.message(&alice, "pushed", 2.0))
            .await
            .0,
        200
    );
    assert_eq!(alice.open(&next_json(&mut v1_ws).await), "pushed");

    // Bodies declared over the limit: 413 before a byte of them is sent.
    for (path, route) in [("/v1/send", "send"), ("/upload", "v1_upload")] {
        let mut tcp = tokio::net::TcpStream::connect(relay.addr).await.unwrap();
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: 1000000000\r\n\r\n",
            relay.addr
        );
        let answer = crate::support::raw_request(&mut tcp, &head).await.unwrap();
        assert_eq!(answer.status, 413, "{route}");
    }

    // A session that ended, so the close counters have series too.
    ws.close().await;
    relay
        .wait_metric("whispr_disconnects_total{reason=\"client\"}", 1.0)
        .await;

    let after = scrape(&url).await;
    let delta = |s: &str| get(&after, s) - get(&before, s);
    for transport in ["ws", "http_poll", "v1_ws", "v1_poll"] {
        assert_eq!(
            delta(&format!(
                "whispr_deliveries_total{{transport=\"{transport}\"}}"
            )),
            1.0,
            "{transport}"
        );
    }
    for route in ["send", "v1_upload"] {
        assert_eq!(
            delta(&format!(
                "whispr_http_bodies_refused_total{{reason=\"too_large\",route=\"{route}\"}}"
            )),
            1.0,
            "{route}"
        );
    }

    // Every metric the shipped Grafana dashboard queries is one the relay exposes.
    let dashboard: serde_json::Value =
        serde_json::from_str(include_str!("../../monitoring/whispr-dashboard.json")).unwrap();
    let names: std::collections::HashSet<&str> = after
        .keys()
        .map(|series| series.split('{').next().unwrap())
        .collect();
    let mut queried = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            for name in expr
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|w| w.starts_with("whispr_"))
            {
                assert!(
                    names.contains(name),
                    "the dashboard's {:?} queries {name}, which /metrics lacks",
                    panel["title"]
                );
                queried += 1;
            }
        }
    }
    assert!(queried >= 20, "the dashboard queries the relay: {queried}");
    relay.stop().await;
}
