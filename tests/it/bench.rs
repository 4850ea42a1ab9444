//! The load generator's smoke run: a few seconds of traffic, nothing lost.

use std::time::Duration;
use whispr::bench::{self, BenchConfig};
use whispr::protocol::Codec;

use crate::support::TestRelay;

fn smoke(relay: &TestRelay, rate: u64, codec: Codec, offline_share: f64) -> BenchConfig {
    BenchConfig {
        server: relay.base.clone(),
        send_via: None,
        connections: 50,
        senders: 4,
        rate,
        max_messages: 2000,
        size: 64,
        duration: Duration::from_secs(2),
        codec,
        offline_share,
        drain: Duration::from_secs(10),
        warmup: Duration::from_secs(1),
        storm_at: Duration::ZERO,
        relay_pid: Some(std::process::id()),
        ca: None,
        progress: false,
        defaulted: bench::Defaulted::default(),
        verify_ceiling: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_open_loop_run_loses_nothing() {
    let relay =
        TestRelay::start_clocked(crate::support::config(), whispr::clock::Clock::system()).await;
    let report = bench::run(smoke(&relay, 500, Codec::MsgPack, 0.2))
        .await
        .unwrap();
    assert_eq!(report.messages, 1000);
    assert_eq!(report.accepted, 1000, "{report}");
    assert_eq!(report.delivered, 1000, "{report}");
    assert_eq!(report.lost, 0);
    assert_eq!(report.duplicates, 0);
    assert!(report.errors.is_empty(), "{report}");
    assert!(report.latency_ms.max > 0.0 && report.latency_ms.p50 <= report.latency_ms.max);
    assert!(report.relay_rss_kib.is_some_and(|kib| kib > 0));
    let line = serde_json::to_string(&report).unwrap();
    assert!(line.contains("\"lost\":0"));
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnect_storm_loses_and_duplicates_nothing_and_is_reported() {
    let relay =
        TestRelay::start_clocked(crate::support::config(), whispr::clock::Clock::system()).await;
    let mut cfg = smoke(&relay, 500, Codec::MsgPack, 0.2);
    cfg.storm_at = Duration::from_secs(1);
    let report = bench::run(cfg).await.unwrap();
    assert_eq!(report.accepted, 1000, "{report}");
    assert_eq!(report.delivered, 1000, "{report}");
    // Each receiver resumed after what it processed: nothing came twice.
    assert_eq!((report.lost, report.duplicates), (0, 0), "{report}");
    assert!(report.errors.is_empty(), "{report}");
    let storm = report.storm.as_ref().expect("a storm section");
    assert_eq!((storm.receivers, storm.reconnected), (40, 40), "{report}");
    assert!(storm.all_reconnected_after_s.is_some(), "{report}");
    assert!(report.timeline.len() >= 2, "{report}");
    // A scheduled run reports how late its sends left; a max-rate run has no schedule.
    assert!(
        report.send_lag_ms.is_some(),
        "a send lag with --rate: {report}"
    );
    assert!(report.to_string().contains("send lag ms"), "{report}");
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_max_rate_run_reports_refusals_by_kind() {
    // The relay's default per-sender limit (10/s, burst 50) refuses most of a max-rate
    // run: the report must say so, by kind, and still lose nothing it accepted.
    let relay = TestRelay::start_clocked(
        whispr::config::Config::default(),
        whispr::clock::Clock::system(),
    )
    .await;
    let mut cfg = smoke(&relay, 0, Codec::Json, 0.0);
    cfg.max_messages = 400;
    let report = bench::run(cfg).await.unwrap();
    assert_eq!(
        report.accepted + report.errors.values().sum::<u64>(),
        400,
        "{report}"
    );
    assert!(
        report.errors.get("rate_limited").is_some_and(|&n| n > 0),
        "{report}"
    );
    assert_eq!(report.delivered, report.accepted);
    assert!(
        report.send_lag_ms.is_none(),
        "no schedule, no lag: {report}"
    );
    assert_eq!(report.lost, 0);
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_node_run_on_one_redis_loses_nothing() {
    let Some(redis) = crate::support::RedisServer::start().await else {
        return;
    };
    let config =
        crate::support::config_with(&format!("store = \"redis\"\nredis_url = {:?}", redis.url));
    let clock = whispr::clock::Clock::system();
    let a = TestRelay::start_clocked(config.clone(), clock.clone()).await;
    let b = TestRelay::start_clocked(config, clock).await;
    // Recipients on a, senders on b: every message crosses nodes through Redis.
    let mut cfg = smoke(&a, 250, Codec::MsgPack, 0.2);
    cfg.send_via = Some(b.base.clone());
    let report = bench::run(cfg).await.unwrap();
    assert_eq!(report.accepted, 500, "{report}");
    assert_eq!(report.delivered, 500, "{report}");
    assert_eq!((report.lost, report.duplicates), (0, 0), "{report}");
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_with_no_flags_against_a_relay_with_its_defaults_has_no_errors() {
    // `whispr bench` itself, so its flag defaults are the ones under test; only
    // --server (the relay is on port 0) and --json (to read the report) are given.
    let relay = TestRelay::start_clocked(
        whispr::config::Config::default(),
        whispr::clock::Clock::system(),
    )
    .await;
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        crate::cli::whispr()
            .args(["bench", "--server", &relay.base, "--json"])
            .output(),
    )
    .await
    .expect("the run ends")
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["errors"], serde_json::json!({}), "{report}");
    assert_eq!(report["lost"], 0, "{report}");
    assert!(report["accepted"].as_u64().unwrap() > 0, "{report}");
    assert_eq!(report["accepted"], report["messages"], "{report}");
    let adjusted = report["adjusted"].as_array().unwrap();
    assert_eq!(adjusted.len(), 2, "it says what it fitted: {report}");
    assert!(stderr.contains("max_connections_per_ip"), "{stderr}");
    relay.stop().await;
}
