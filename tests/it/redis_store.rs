//! The Redis store against a real `redis-server` started by the test on a free port.

use std::time::Duration;

use whispr::protocol::{Cursor, Identity};
use whispr::testing::store::conformance::{envelope, run_all, LIMITS};
use whispr::testing::store::{
    HistoryLoss, InsertOutcome, MessageStore, RedisOptions, RedisStore, SharedStore, StoreError,
    StoreLimits,
};

use crate::support::{
    free_port, inbox_key, plain_conn, scratch_dir, single, store_with, RedisServer,
};

#[tokio::test]
async fn redis_store_passes_conformance() {
    let Some(server) = RedisServer::start().await else {
        return;
    };
    let server = &server;
    run_all(|limits| async move {
        server.flush().await;
        RedisStore::connect(&single(&server.url), limits)
            .await
            .expect("connect to the test redis") as SharedStore
    })
    .await;
}

#[tokio::test]
async fn connecting_to_a_closed_port_is_a_readable_error() {
    let url = format!("redis://127.0.0.1:{}", free_port());
    let err = match RedisStore::connect(&single(&url), LIMITS).await {
        Ok(_) => panic!("nothing listens on {url}"),
        Err(e) => e,
    };
    let StoreError::Unavailable(detail) = &err else {
        panic!("expected Unavailable, got {err:?}");
    };
    let text = err.to_string();
    assert!(
        text.contains("cannot connect to redis"),
        "the message says what failed: {text}"
    );
    assert!(!detail.is_empty());
}

#[tokio::test]
async fn queued_messages_survive_a_new_store_and_idle_inboxes_expire() {
    let Some(server) = RedisServer::start().await else {
        return;
    };
    let now = 1_800_000_000_000;
    let (alice, bob) = (Identity::generate(), Identity::generate());
    let first = store_on(&server).await;
    let InsertOutcome::Stored { epoch, seq } = first
        .insert(&envelope(&alice, bob.public_key(), 1, now), now)
        .await
        .unwrap()
    else {
        panic!("stored");
    };
    drop(first);

    // A relay restart: a new store on the same Redis sees the same inbox and epoch.
    let second = store_on(&server).await;
    let batch = second
        .fetch(
            &bob.public_key().into(),
            Some(Cursor { epoch, seq: 0 }),
            10,
            now,
        )
        .await
        .unwrap();
    assert_eq!(batch.epoch, epoch);
    assert_eq!(batch.gap, None);
    assert_eq!(batch.messages.len(), 1);
    assert_eq!(batch.messages[0].seq, seq);
    assert_eq!(batch.messages[0].envelope.body, b"body 1");
    assert_eq!(batch.messages[0].stored_at_ms, now);

    // The inbox's metadata and dedupe ids are set to vanish once idle (message TTL +
    // dedupe window, renewed once per sixteenth of that); its messages' keys have no
    // life of their own, since their messages leave by ack or TTL score.
    let mut conn = server.conn().await;
    let keep = (LIMITS.message_ttl_ms + LIMITS.dedupe_window_ms) as i64;
    for (part, lives) in [("meta", true), ("ids", true), ("queue", false)] {
        let left = life(&mut conn, &bob, part).await;
        if lives {
            assert!(
                left > keep - 10_000 && left <= keep + keep / 16 + 1_000,
                "{part} lives {left} ms"
            );
        } else {
            assert_eq!(left, -1, "{part} exists and has no life of its own");
        }
    }
}

const NOW: u64 = 1_800_000_000_000;

/// A store on `server` with the conformance limits.
async fn store_on(server: &RedisServer) -> std::sync::Arc<RedisStore> {
    RedisStore::connect(&single(&server.url), LIMITS)
        .await
        .unwrap()
}

/// The PTTL of `part` of `who`'s inbox (-1: no life, -2: gone).
async fn life(conn: &mut redis::aio::MultiplexedConnection, who: &Identity, part: &str) -> i64 {
    redis::cmd("PTTL")
        .arg(inbox_key(who, part))
        .query_async(conn)
        .await
        .unwrap()
}

async fn redis_do(conn: &mut redis::aio::MultiplexedConnection, args: &[&str]) {
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    let _: redis::Value = cmd.query_async(conn).await.unwrap();
}

/// The insert script of the relay before the single `queue`, verbatim (see the file).
const LEGACY_INSERT: &str = include_str!("fixtures/legacy_insert.lua");

/// What an earlier relay's insert does: stores `bodies` messages from `alice` into
/// `who`'s inbox in the earlier schema (`q`, `m`, `exp`), with the script that relay
/// ran. Returns the inbox's epoch.
async fn legacy_insert(
    conn: &mut redis::aio::MultiplexedConnection,
    alice: &Identity,
    who: &Identity,
    bodies: std::ops::RangeInclusive<u32>,
) -> u64 {
    #[derive(serde::Serialize)]
    struct Payload<'a> {
        stored_at_ms: u64,
        envelope: &'a whispr::protocol::Envelope,
    }
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(conn)
        .await
        .unwrap();
    let run = info
        .lines()
        .find_map(|l| l.strip_prefix("run_id:"))
        .unwrap()
        .trim()
        .to_owned();
    let mut call = redis::cmd("EVAL");
    call.arg(LEGACY_INSERT.replace("RUN_ID", &run))
        .arg(5 * bodies.clone().count());
    for _ in bodies.clone() {
        for part in ["meta", "q", "m", "exp", "ids"] {
            call.arg(inbox_key(who, part));
        }
    }
    call.arg("").arg("0").arg("");
    let keep = LIMITS.message_ttl_ms + LIMITS.dedupe_window_ms;
    for n in bodies {
        let message = envelope(alice, who.public_key(), n, NOW);
        let payload = rmp_serde::to_vec_named(&Payload {
            stored_at_ms: NOW,
            envelope: message.envelope(),
        })
        .unwrap();
        call.arg(7)
            .arg(keep)
            .arg(message.id().to_hex())
            .arg(NOW + LIMITS.dedupe_window_ms)
            .arg(NOW)
            .arg(NOW + LIMITS.message_ttl_ms)
            .arg(LIMITS.max_messages_per_inbox)
            .arg(payload)
            .arg("");
    }
    let reply: Vec<Vec<u8>> = call.query_async(conn).await.unwrap();
    assert_eq!(reply[1], b"stored", "{reply:?}");
    String::from_utf8(reply[2].clone())
        .unwrap()
        .parse()
        .unwrap()
}

/// How many of `who`'s earlier-schema keys exist.
async fn legacy_keys(conn: &mut redis::aio::MultiplexedConnection, who: &Identity) -> u64 {
    let mut call = redis::cmd("EXISTS");
    for part in ["q", "m", "exp"] {
        call.arg(inbox_key(who, part));
    }
    call.query_async(conn).await.unwrap()
}

#[tokio::test]
async fn inboxes_of_the_earlier_schema_are_migrated_in_place_and_a_mixed_version_write_is_reported()
{
    let Some(server) = RedisServer::start().await else {
        return;
    };
    let mut conn = server.conn().await;
    let alice = Identity::generate();
    let (bob, carol, dave) = (
        Identity::generate(),
        Identity::generate(),
        Identity::generate(),
    );
    // What the relays before this one left queued: Bob 3 messages, Carol 2, Dave 1 whose
    // metadata is gone (an eviction).
    let epoch = legacy_insert(&mut conn, &alice, &bob, 1..=3).await;
    legacy_insert(&mut conn, &alice, &carol, 1..=2).await;
    legacy_insert(&mut conn, &alice, &dave, 1..=1).await;
    redis_do(&mut conn, &["DEL", &inbox_key(&dave, "meta")]).await;
    assert_eq!(legacy_keys(&mut conn, &bob).await, 3);

    let store = store_on(&server).await;
    assert_eq!(store.depth().await.unwrap(), 6, "unmigrated messages count");
    // A reader of Bob's inbox before the upgrade reads on with its cursor: no gap,
    // nothing lost, nothing repeated, and the earlier keys are gone.
    let bob_inbox = bob.public_key().into();
    let batch = store
        .fetch(&bob_inbox, Some(Cursor { epoch, seq: 1 }), 10, NOW + 1)
        .await
        .unwrap();
    assert_eq!((batch.epoch, batch.gap), (epoch, None));
    let bodies: Vec<_> = batch
        .messages
        .iter()
        .map(|m| m.envelope.body.clone())
        .collect();
    assert_eq!(bodies, [b"body 2".to_vec(), b"body 3".to_vec()]);
    assert_eq!(
        batch.messages.iter().map(|m| m.seq).collect::<Vec<_>>(),
        [2, 3]
    );
    assert_eq!(legacy_keys(&mut conn, &bob).await, 0);
    // The next message numbers on.
    let Ok(InsertOutcome::Stored { seq: 4, .. }) = store
        .insert(&envelope(&alice, bob.public_key(), 4, NOW + 2), NOW + 2)
        .await
    else {
        panic!("stored as seq 4");
    };
    // Carol's inbox is migrated by the sweep, which expires nothing yet.
    assert_eq!(store.sweep(NOW + 3).await.unwrap().expired, 0);
    assert_eq!(legacy_keys(&mut conn, &carol).await, 0);
    assert_eq!(legacy_keys(&mut conn, &dave).await, 0);
    assert_eq!(store.depth().await.unwrap(), 7);
    let carol_batch = store
        .fetch(&carol.public_key().into(), None, 10, NOW + 4)
        .await
        .unwrap();
    assert_eq!(carol_batch.messages.len(), 2);
    // Dave's message within its TTL outlived its metadata: kept, and the loss reported.
    assert_eq!(
        store
            .events()
            .history_lost_total(HistoryLoss::MetadataMissing),
        1
    );
    let dave_batch = store
        .fetch(&dave.public_key().into(), None, 10, NOW + 4)
        .await
        .unwrap();
    assert_eq!(dave_batch.messages.len(), 1);

    // An earlier relay still running writes to Bob's migrated inbox: its message is
    // kept, and the mixed versions are reported with a new epoch.
    legacy_insert(&mut conn, &alice, &bob, 5..=5).await;
    let batch = store
        .fetch(&bob_inbox, Some(Cursor { epoch, seq: 3 }), 10, NOW + 5)
        .await
        .unwrap();
    assert_eq!(batch.gap, Some(whispr::protocol::GapReason::EpochChanged));
    assert_eq!(
        batch.messages.iter().map(|m| m.seq).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5],
        "nothing acked, so everything still stored is handed out again"
    );
    assert_eq!(
        store
            .events()
            .history_lost_total(HistoryLoss::MixedVersions),
        1
    );
    assert_eq!(legacy_keys(&mut conn, &bob).await, 0);

    // A sweep that finds no inbox of the earlier layout is the last to look for them:
    // the next scans the keyspace for `queue` keys alone, half the SCANs.
    let before = command_calls(&server.url, "scan").await;
    store.sweep(NOW + 6).await.unwrap();
    let looking = command_calls(&server.url, "scan").await - before;
    store.sweep(NOW + 7).await.unwrap();
    let after = command_calls(&server.url, "scan").await - before - looking;
    assert_eq!(2 * after, looking, "{looking} SCANs, then {after}");
}

#[tokio::test]
async fn an_inbox_whose_metadata_expired_idle_is_swept_without_a_loss_but_not_one_with_live_messages(
) {
    let Some(server) = RedisServer::start().await else {
        return;
    };
    let store = store_on(&server).await;
    let mut conn = server.conn().await;
    let alice = Identity::generate();
    let (idle, evicted) = (Identity::generate(), Identity::generate());
    // The second message is younger: still within its TTL when the sweep below runs.
    let young = NOW + LIMITS.message_ttl_ms / 2;
    for (who, at) in [(&idle, NOW), (&evicted, young)] {
        store
            .insert(&envelope(&alice, who.public_key(), 1, at), at)
            .await
            .unwrap();
        redis_do(&mut conn, &["DEL", &inbox_key(who, "meta")]).await;
    }
    let later = NOW + LIMITS.message_ttl_ms + 1;
    let swept = store.sweep(later).await.unwrap();
    // The idle one: its message expired before its metadata, as key lives allow. No loss.
    assert_eq!(swept.expired, 1, "only the expired message is swept");
    assert_eq!(
        life(&mut conn, &idle, "queue").await,
        -2,
        "the queue is gone"
    );
    let batch = store
        .fetch(&idle.public_key().into(), None, 10, later)
        .await
        .unwrap();
    assert!(batch.messages.is_empty());
    // The other still held a message within its TTL: that is a loss of history (an
    // eviction), reported, and the message is kept in a new epoch.
    assert_eq!(
        store
            .events()
            .history_lost_total(HistoryLoss::MetadataMissing),
        1
    );
    let batch = store
        .fetch(&evicted.public_key().into(), None, 10, later)
        .await
        .unwrap();
    assert_eq!(batch.messages.len(), 1);
}

#[tokio::test]
async fn an_id_past_its_dedupe_window_is_new_even_before_it_is_forgotten() {
    let Some(server) = RedisServer::start().await else {
        return;
    };
    let store = store_on(&server).await;
    let (alice, bob) = (Identity::generate(), Identity::generate());
    let env = envelope(&alice, bob.public_key(), 1, NOW);
    let first = store.insert(&env, NOW).await.unwrap();
    assert!(matches!(first, InsertOutcome::Stored { seq: 1, .. }));
    let inside = NOW + LIMITS.dedupe_window_ms - 1;
    assert_eq!(
        store.insert(&env, inside).await.unwrap(),
        InsertOutcome::Duplicate
    );
    // Forgetting runs on every sixteenth message only; this id is still in the set.
    let past = NOW + LIMITS.dedupe_window_ms;
    assert!(matches!(
        store.insert(&env, past).await.unwrap(),
        InsertOutcome::Stored { seq: 2, .. }
    ));
    assert_eq!(
        store.insert(&env, past).await.unwrap(),
        InsertOutcome::Duplicate,
        "remembered again for a new window"
    );
}

/// Polls `check` until it succeeds, for up to 10 s.
async fn until_ready(store: &RedisStore) -> Result<(), StoreError> {
    let mut last = Ok(());
    for _ in 0..100 {
        last = store.check().await;
        if last.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    last
}

#[tokio::test]
async fn a_lost_redis_is_unavailable_then_reconnects_by_itself() {
    let Some(server) = RedisServer::start().await else {
        return;
    };
    let store = store_on(&server).await;
    let port = server.port;
    drop(server);

    let bob = Identity::generate();
    let now = 1_800_000_000_000;
    let down = tokio::time::timeout(
        Duration::from_secs(10),
        store.fetch(&bob.public_key().into(), None, 10, now),
    )
    .await
    .expect("a lost redis fails fast");
    assert!(
        matches!(down, Err(StoreError::Unavailable(_))),
        "got {down:?}"
    );
    assert!(matches!(
        store.check().await,
        Err(StoreError::Unavailable(_))
    ));

    let _again = RedisServer::start_with(port, &[]).await.unwrap();
    until_ready(&store)
        .await
        .expect("the store reconnects once redis is back");
    let batch = store
        .fetch(&bob.public_key().into(), None, 10, now)
        .await
        .unwrap();
    assert!(batch.messages.is_empty());
}

#[tokio::test]
async fn redis_out_of_memory_is_store_full() {
    let Some(server) = RedisServer::start_with(
        free_port(),
        &["--maxmemory", "1mb", "--maxmemory-policy", "noeviction"],
    )
    .await
    else {
        return;
    };
    let store = store_on(&server).await;
    let alice = Identity::generate();
    let now = 1_800_000_000_000;
    let mut refused = None;
    for n in 0..20_000 {
        let bob = Identity::generate();
        if let Err(e) = store
            .insert(&envelope(&alice, bob.public_key(), n, now), now)
            .await
        {
            refused = Some(e);
            break;
        }
    }
    assert_eq!(refused, Some(StoreError::RedisFull));
}

#[tokio::test]
async fn concurrent_inserts_get_distinct_consecutive_seqs() {
    let Some(server) = RedisServer::start().await else {
        return;
    };
    let limits = StoreLimits {
        max_messages_per_inbox: 1_000,
        ..LIMITS
    };
    let store = RedisStore::connect(&single(&server.url), limits)
        .await
        .unwrap();
    let (alice, bob) = (Identity::generate(), Identity::generate());
    let now = 1_800_000_000_000;
    let tasks: Vec<_> = (0..200)
        .map(|n| {
            let (store, env) = (store.clone(), envelope(&alice, bob.public_key(), n, now));
            tokio::spawn(async move { store.insert(&env, now).await })
        })
        .collect();
    let mut seqs = Vec::new();
    for task in tasks {
        match task.await.unwrap().unwrap() {
            InsertOutcome::Stored { seq, .. } => seqs.push(seq),
            InsertOutcome::Duplicate => panic!("distinct envelopes"),
        }
    }
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=200).collect::<Vec<u64>>());
    // Group commit: inserts pending together went to Redis together.
    let calls = script_calls(&server.url).await;
    assert!(
        calls < 200,
        "200 concurrent inserts took {calls} script calls"
    );
}

#[tokio::test]
async fn a_relay_on_redis_keeps_queued_messages_across_a_restart() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let config = redis.config("");
    let (alice, bob) = (
        whispr::protocol::Identity::generate(),
        whispr::protocol::Identity::generate(),
    );

    let relay = crate::support::TestRelay::start_with(config.clone()).await;
    let (probe, ready) = relay.connect(&bob).await;
    probe.close().await;
    for n in 1..=3 {
        relay
            .http()
            .send(&relay.seal(&alice, bob.public_key(), &format!("m{n}")))
            .await
            .unwrap();
    }
    let clock = relay.clock.clone();
    relay.stop().await;

    // A new relay process on the same Redis: same epoch, nothing lost, nothing twice.
    let relay = crate::support::TestRelay::start_clocked(config, clock).await;
    let cursor = whispr::protocol::Cursor {
        epoch: ready.epoch,
        seq: 0,
    };
    let (mut ws, again) = relay
        .connect_at(&bob, Some(cursor), whispr::protocol::Codec::MsgPack)
        .await;
    assert_eq!(again.epoch, ready.epoch);
    let got = crate::support::drain_until_synced(&mut ws, true).await;
    assert_eq!(
        got,
        vec![(1, "m1".into()), (2, "m2".into()), (3, "m3".into())]
    );
    ws.close().await;
    relay.stop().await;
}

#[tokio::test]
async fn store_redis_refuses_to_start_without_redis_and_auto_falls_back() {
    let url = format!("redis://:secret@127.0.0.1:{}", free_port());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let config = crate::support::config_with(&format!("store = \"redis\"\nredis_url = {url:?}"));
    let err = whispr::server::Server::new(config)
        .run(listener, std::future::pending())
        .await
        .expect_err("store = redis needs Redis");
    let text = err.to_string();
    assert!(
        text.contains("cannot use Redis") && text.contains("127.0.0.1"),
        "{text}"
    );
    assert!(
        !text.contains("secret"),
        "the password is not echoed: {text}"
    );

    let config = crate::support::config_with(&format!("store = \"auto\"\nredis_url = {url:?}"));
    let relay = crate::support::TestRelay::start_with(config).await;
    let (alice, bob) = (
        whispr::protocol::Identity::generate(),
        whispr::protocol::Identity::generate(),
    );
    relay
        .http()
        .send(&relay.seal(&alice, bob.public_key(), "on memory"))
        .await
        .unwrap();
    let (mut ws, _) = relay.connect(&bob).await;
    assert_eq!(
        crate::support::drain_until_synced(&mut ws, true)
            .await
            .len(),
        1
    );
    relay.stop().await;
}

/// Calls of `command` (lowercase, e.g. `pttl`) the Redis at `url` has run, scripts' included.
async fn command_calls(url: &str, command: &str) -> u64 {
    let mut conn = plain_conn(url).await;
    let stats: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut conn)
        .await
        .unwrap();
    let prefix = format!("cmdstat_{command}:calls=");
    stats
        .lines()
        .find_map(|l| l.strip_prefix(&prefix)?.split(',').next()?.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn a_batch_of_inserts_keeps_each_inbox_alive_once_not_every_inbox_per_message() {
    let Some(server) = RedisServer::start().await else {
        return;
    };
    let (store, alice, now) = (store_on(&server).await, Identity::generate(), NOW);
    let inserts = (0..200).map(|n| {
        let env = envelope(&alice, Identity::generate().public_key(), n, now);
        let store = store.clone();
        tokio::spawn(async move { store.insert(&env, now).await })
    });
    for task in inserts.collect::<Vec<_>>() {
        task.await.unwrap().unwrap();
    }
    // Five keys per inbox, one PTTL each; batches of many inboxes must not multiply it.
    let pttl = command_calls(&server.url, "pttl").await;
    assert!(
        pttl <= 5 * 200,
        "200 inserts into 200 inboxes ran {pttl} PTTL"
    );
}

/// Script calls (`EVAL`, `EVALSHA`) the Redis at `url` has run since it started.
pub(crate) async fn script_calls(url: &str) -> u64 {
    command_calls(url, "evalsha").await + command_calls(url, "eval").await
}

/// What the store's script fence (`store::redis::fence`) relies on: a Redis process has
/// a script only when a `SCRIPT LOAD` was sent to that process, never from the AOF it
/// restarted from nor from the master it replicates.
#[tokio::test]
async fn redis_neither_persists_nor_replicates_loaded_scripts() {
    let (dir, port) = (scratch_dir("redis-scripts"), free_port());
    let aof = ["--appendonly", "yes", "--appendfsync", "always"];
    let Some(master) = RedisServer::start_in(port, &dir, &aof).await else {
        return;
    };
    let replica = RedisServer::start_in(
        free_port(),
        &scratch_dir("redis-replica"),
        &["--replicaof", "127.0.0.1", &port.to_string()],
    )
    .await
    .unwrap();
    let connect = |url: String| async move {
        let client = redis::Client::open(url.as_str()).unwrap();
        client.get_multiplexed_async_connection().await.unwrap()
    };
    let (mut m, mut r) = (
        connect(master.url.clone()).await,
        connect(replica.url.clone()).await,
    );
    // The replica's first sync waits for the master's `repl-diskless-sync-delay` (5 s by
    // default) before it starts: the guard below times replication, not that.
    let mut linked = false;
    for _ in 0..600 {
        let info: String = redis::cmd("INFO")
            .arg("replication")
            .query_async(&mut r)
            .await
            .unwrap();
        if info.contains("master_link_status:up") {
            linked = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        linked,
        "the replica did not sync with its master within 30 s"
    );
    let sha: String = redis::cmd("SCRIPT")
        .arg("LOAD")
        .arg("return redis.call('SET', KEYS[1], ARGV[1])")
        .query_async(&mut m)
        .await
        .unwrap();
    let exists = |sha: String| {
        let mut c = redis::cmd("SCRIPT");
        c.arg("EXISTS").arg(sha);
        c
    };
    let _: () = redis::cmd("EVALSHA")
        .arg(&sha)
        .arg(1)
        .arg("k")
        .arg("v")
        .query_async(&mut m)
        .await
        .unwrap();
    // What the script wrote reaches the replica (5 s guard); the script does not.
    let mut replicated: Option<String> = None;
    for _ in 0..100 {
        replicated = redis::cmd("GET")
            .arg("k")
            .query_async(&mut r)
            .await
            .unwrap();
        if replicated.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(replicated.as_deref(), Some("v"));
    let on_replica: Vec<u8> = exists(sha.clone()).query_async(&mut r).await.unwrap();
    assert_eq!(on_replica, [0]);
    // Restarted from its AOF, the master has the data but not the script.
    drop(master);
    let master = RedisServer::start_in(port, &dir, &aof).await.unwrap();
    let mut m = connect(master.url.clone()).await;
    let back: Option<String> = redis::cmd("GET")
        .arg("k")
        .query_async(&mut m)
        .await
        .unwrap();
    assert_eq!(back.as_deref(), Some("v"));
    let after_restart: Vec<u8> = exists(sha).query_async(&mut m).await.unwrap();
    assert_eq!(after_restart, [0]);
}

#[tokio::test]
async fn concurrent_reads_and_acks_share_script_calls_and_each_gets_its_own_answer() {
    let Some(server) = RedisServer::start().await else {
        return;
    };
    // The default (one call out per writer) and more.
    for calls_in_flight in [1, 4] {
        server.flush().await;
        let store = store_with(
            &server.url,
            RedisOptions {
                calls_in_flight,
                ..RedisOptions::default()
            },
        )
        .await;
        reads_and_acks_batched(&server, store).await;
    }
}

async fn reads_and_acks_batched(server: &RedisServer, store: std::sync::Arc<RedisStore>) {
    let mut conn = server.conn().await;
    let alice = Identity::generate();
    let readers: Vec<Identity> = (0..40).map(|_| Identity::generate()).collect();
    let queued = |i: usize| i % 3 + 1;
    for (i, reader) in readers.iter().enumerate() {
        for n in 1..=queued(i) {
            store
                .insert(&envelope(&alice, reader.public_key(), n as u32, NOW), NOW)
                .await
                .unwrap();
        }
    }
    let inboxes: Vec<whispr::protocol::InboxId> =
        readers.iter().map(|r| r.public_key().into()).collect();
    redis_do(&mut conn, &["CONFIG", "RESETSTAT"]).await;

    let batches = futures::future::join_all(
        inboxes
            .iter()
            .map(|inbox| store.fetch(inbox, None, 10, NOW)),
    )
    .await;
    let calls = command_calls(&server.url, "evalsha").await;
    assert!(
        calls <= 10,
        "40 reads pending at once took {calls} script calls"
    );
    let mut epochs = Vec::new();
    for (i, batch) in batches.into_iter().enumerate() {
        let batch = batch.unwrap();
        let bodies: Vec<_> = batch
            .messages
            .iter()
            .map(|m| m.envelope.body.clone())
            .collect();
        let wanted: Vec<_> = (1..=queued(i))
            .map(|n| format!("body {n}").into_bytes())
            .collect();
        assert_eq!(bodies, wanted, "reader {i} gets its own messages in order");
        assert!(batch
            .messages
            .iter()
            .all(|m| m.envelope.recipient == readers[i].public_key()));
        epochs.push(batch.epoch);
    }

    // Acks alone (even readers, everything) and acks with a read (odd readers, the first
    // message), pending at once, the same inbox twice among them.
    redis_do(&mut conn, &["CONFIG", "RESETSTAT"]).await;
    let cursor = |i: usize, seq: u64| Cursor {
        epoch: epochs[i],
        seq,
    };
    let store = &store;
    let ops = inboxes.iter().enumerate().map(|(i, inbox)| async move {
        if i % 2 == 0 {
            let acked = store.ack(inbox, cursor(i, queued(i) as u64)).await.unwrap();
            assert_eq!(acked, queued(i) as u64, "reader {i} acked everything");
            None
        } else {
            let batch = store
                .ack_and_fetch(inbox, cursor(i, 1), Some(cursor(i, 1)), 10, NOW)
                .await
                .unwrap();
            Some(batch.messages.iter().map(|m| m.seq).collect::<Vec<_>>())
        }
    });
    let again = store.fetch(&inboxes[1], Some(cursor(1, 1)), 10, NOW);
    let (answers, again) = tokio::join!(futures::future::join_all(ops), again);
    assert!(command_calls(&server.url, "evalsha").await <= 10);
    for (i, answer) in answers.into_iter().enumerate() {
        if let Some(seqs) = answer {
            assert_eq!(
                seqs,
                (2..=queued(i) as u64).collect::<Vec<_>>(),
                "reader {i}"
            );
        }
    }
    assert_eq!(again.unwrap().messages.len(), queued(1) - 1);
    for (i, inbox) in inboxes.iter().enumerate() {
        let left = store.fetch(inbox, None, 10, NOW).await.unwrap();
        let wanted = if i % 2 == 0 { 0 } else { queued(i) - 1 };
        assert_eq!(left.messages.len(), wanted, "reader {i} after the acks");
    }
}

#[tokio::test]
async fn in_one_batched_call_an_operation_that_fails_or_notices_a_loss_does_so_alone() {
    let Some(server) = RedisServer::start().await else {
        return;
    };
    let store = store_on(&server).await;
    let mut conn = server.conn().await;
    let alice = Identity::generate();
    let (broken, ahead, fine, spare) = (
        Identity::generate(),
        Identity::generate(),
        Identity::generate(),
        Identity::generate(),
    );
    let id = |who: &Identity| -> whispr::protocol::InboxId { who.public_key().into() };
    for who in [&ahead, &fine] {
        store
            .insert(&envelope(&alice, who.public_key(), 1, NOW), NOW)
            .await
            .unwrap();
    }
    let ahead_epoch = store.fetch(&id(&ahead), None, 10, NOW).await.unwrap().epoch;
    // A key of the wrong type: every operation on this inbox meets WRONGTYPE.
    redis_do(
        &mut conn,
        &["SET", &inbox_key(&broken, "meta"), "not a hash"],
    )
    .await;
    redis_do(&mut conn, &["CONFIG", "RESETSTAT"]).await;

    // Pending at once, so one call each for the reads and the inserts: a read of the
    // broken inbox, an ack past the head of another (a witness of lost history), a read
    // of a third; an insert into the broken inbox and one into a fourth (not the third,
    // whose read may run before or after it: the two calls race).
    let cursor = Cursor {
        epoch: ahead_epoch,
        seq: 5,
    };
    let (to_broken, to_spare) = (
        envelope(&alice, broken.public_key(), 2, NOW),
        envelope(&alice, spare.public_key(), 2, NOW),
    );
    let (broken_id, ahead_id, fine_id) = (id(&broken), id(&ahead), id(&fine));
    let (broken_read, ahead_ack, fine_read, broken_insert, spare_insert) = tokio::join!(
        store.fetch(&broken_id, None, 10, NOW),
        store.ack(&ahead_id, cursor),
        store.fetch(&fine_id, None, 10, NOW),
        store.insert(&to_broken, NOW),
        store.insert(&to_spare, NOW),
    );
    assert_eq!(
        command_calls(&server.url, "evalsha").await,
        2,
        "one call each"
    );
    for err in [broken_read.unwrap_err(), broken_insert.unwrap_err()] {
        assert!(err.to_string().contains("WRONGTYPE"), "{err}");
    }
    assert_eq!(
        ahead_ack.unwrap(),
        0,
        "an ack past the head deletes nothing"
    );
    let fine_read = fine_read.unwrap();
    assert_eq!(fine_read.gap, None, "the loss was another inbox's");
    assert_eq!(fine_read.messages.len(), 1);
    assert!(matches!(
        spare_insert.unwrap(),
        InsertOutcome::Stored { seq: 1, .. }
    ));
    assert_eq!(
        store.events().history_lost_total(HistoryLoss::CursorAhead),
        1,
        "counted once, for its own inbox"
    );
    let moved = store.fetch(&id(&ahead), None, 10, NOW).await.unwrap();
    assert_ne!(moved.epoch, ahead_epoch, "the witnessed inbox moved on");
    assert_eq!(moved.messages.len(), 1, "keeping what it had");
    let fine_again = store.fetch(&id(&fine), None, 10, NOW).await.unwrap();
    assert_eq!(fine_again.epoch, fine_read.epoch, "the other did not");
}

#[tokio::test]
async fn an_insert_that_fails_after_recording_its_id_forgets_it_so_the_retry_is_stored() {
    let Some(server) = RedisServer::start().await else {
        return;
    };
    let store = store_on(&server).await;
    let mut conn = server.conn().await;
    let (alice, bob) = (Identity::generate(), Identity::generate());
    store
        .insert(&envelope(&alice, bob.public_key(), 1, NOW), NOW)
        .await
        .unwrap();
    // The queue of the wrong type: the insert records the id, then its ZADD fails.
    let queue = inbox_key(&bob, "queue");
    redis_do(&mut conn, &["DEL", &queue]).await;
    redis_do(&mut conn, &["SET", &queue, "not a sorted set"]).await;
    let second = envelope(&alice, bob.public_key(), 2, NOW);
    let err = store.insert(&second, NOW).await.unwrap_err();
    assert!(err.to_string().contains("WRONGTYPE"), "{err}");
    // Mended, the sender's retry of the same message is stored, not taken for a duplicate.
    redis_do(&mut conn, &["DEL", &queue]).await;
    assert!(matches!(
        store.insert(&second, NOW).await.unwrap(),
        InsertOutcome::Stored { .. }
    ));
}

#[tokio::test]
async fn migrated_inboxes_keep_expiry_in_order_and_an_earlier_relay_remaking_metadata_is_caught() {
    let Some(server) = RedisServer::start().await else {
        return;
    };
    let store = store_on(&server).await;
    let mut conn = server.conn().await;
    let alice = Identity::generate();
    let (frank, erin) = (Identity::generate(), Identity::generate());

    // Frank's oldest message lost its expiry to an eviction: it expires with the next
    // one, not a full life later, so it holds nothing behind it past its TTL.
    legacy_insert(&mut conn, &alice, &frank, 1..=2).await;
    redis_do(&mut conn, &["ZREM", &inbox_key(&frank, "exp"), "1"]).await;
    let late = NOW + LIMITS.message_ttl_ms + 1;
    let batch = store
        .fetch(&frank.public_key().into(), None, 10, late)
        .await
        .unwrap();
    assert!(batch.messages.is_empty(), "both expired");
    assert_eq!(batch.gap, Some(whispr::protocol::GapReason::Expired));

    // Erin's inbox is in the new layout with three messages; her metadata goes (expired
    // or evicted), and a relay of the earlier layout makes it anew with a message of its
    // own, numbering from its own keys.
    for n in 1..=3 {
        store
            .insert(&envelope(&alice, erin.public_key(), n, NOW), NOW)
            .await
            .unwrap();
    }
    redis_do(&mut conn, &["DEL", &inbox_key(&erin, "meta")]).await;
    legacy_insert(&mut conn, &alice, &erin, 4..=4).await;
    let erin_inbox = erin.public_key().into();
    let batch = store.fetch(&erin_inbox, None, 10, NOW + 1).await.unwrap();
    let seqs: Vec<u64> = batch.messages.iter().map(|m| m.seq).collect();
    let unique: std::collections::BTreeSet<u64> = seqs.iter().copied().collect();
    assert_eq!(batch.messages.len(), 4, "every message kept: {seqs:?}");
    assert_eq!(unique.len(), 4, "no seq twice: {seqs:?}");
    assert_eq!(
        store
            .events()
            .history_lost_total(HistoryLoss::MixedVersions),
        1
    );
    // The next message numbers past every one still queued.
    let Ok(InsertOutcome::Stored { seq, .. }) = store
        .insert(&envelope(&alice, erin.public_key(), 5, NOW + 2), NOW + 2)
        .await
    else {
        panic!("stored");
    };
    assert!(seq > *unique.last().unwrap(), "{seq} after {unique:?}");
}
