//! A three-master Redis Cluster started by the test (`redis-server --cluster-enabled yes`
//! three times, then `redis-cli --cluster create`): the store's conformance suite on it,
//! and two relay nodes on it delivering to inboxes whose keys live on different masters.

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::Duration;

use whispr::protocol::{Identity, PublicKey};
use whispr::testing::redis_link::RedisTarget;
use whispr::testing::store::conformance::{envelope, run_all};
use whispr::testing::store::{InsertOutcome, MessageStore, RedisStore, SharedStore};

use crate::support::{
    assert_silent, config_with, drain_until_synced, have_program, receive, scratch_dir, TestRelay,
};
use crate::support::{free_port, inbox_key, plain_conn, RedisServer};

/// The store's clock in these tests (Unix ms).
const NOW: u64 = 1_800_000_000_000;

/// Three masters, no replicas; each server is killed on drop.
struct Cluster {
    nodes: Vec<RedisServer>,
}

impl Cluster {
    async fn start() -> Option<Cluster> {
        if !have_program("redis-server") || !have_program("redis-cli") {
            return None;
        }
        let mut nodes = Vec::new();
        for _ in 0..3 {
            let dir = scratch_dir("redis-cluster");
            let bus = free_port().to_string();
            let node = RedisServer::start_in(
                free_port(),
                &dir,
                &[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-port",
                    &bus,
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "2000",
                ],
            )
            .await?;
            nodes.push(node);
        }
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let status = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .status()
            .expect("run redis-cli --cluster create");
        assert!(status.success(), "redis-cli --cluster create failed");
        let cluster = Cluster { nodes };
        cluster.wait_ok().await;
        Some(cluster)
    }

    /// Waits until every node reports `cluster_state:ok`.
    async fn wait_ok(&self) {
        for _ in 0..200 {
            let mut ok = 0;
            for node in &self.nodes {
                let client = redis::Client::open(node.url.as_str()).unwrap();
                if let Ok(mut conn) = client.get_multiplexed_async_connection().await {
                    let info: String = redis::cmd("CLUSTER")
                        .arg("INFO")
                        .query_async(&mut conn)
                        .await
                        .unwrap_or_default();
                    if info.contains("cluster_state:ok") {
                        ok += 1;
                    }
                }
            }
            if ok == self.nodes.len() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the test cluster did not reach cluster_state:ok within 10 s");
    }

    fn urls(&self) -> String {
        let urls: Vec<&str> = self.nodes.iter().map(|n| n.url.as_str()).collect();
        urls.join(",")
    }

    fn target(&self) -> RedisTarget {
        RedisTarget::cluster(self.nodes.iter().map(|n| n.url.clone()).collect())
    }

    /// A store on the cluster with the conformance limits.
    async fn store(&self) -> std::sync::Arc<RedisStore> {
        RedisStore::connect(&self.target(), whispr::testing::store::conformance::LIMITS)
            .await
            .expect("connect to the test cluster")
    }

    /// Empties every master.
    async fn flush(&self) {
        for node in &self.nodes {
            let mut conn = plain_conn(&node.url).await;
            let _: () = redis::cmd("FLUSHALL").query_async(&mut conn).await.unwrap();
        }
    }

    /// The port of the master holding `key`'s slot, from `CLUSTER KEYSLOT` and
    /// `CLUSTER NODES` (`<id> <ip:port@bus> <flags> <master> <ping> <pong> <epoch>
    /// <link> <slot ranges...>`).
    async fn owner(&self, key: &str) -> u16 {
        let mut conn = plain_conn(&self.nodes[0].url).await;
        let slot: u16 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query_async(&mut conn)
            .await
            .unwrap();
        let nodes: String = redis::cmd("CLUSTER")
            .arg("NODES")
            .query_async(&mut conn)
            .await
            .unwrap();
        for line in nodes.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let serves = fields
                .iter()
                .skip(8)
                .any(|range| match range.split_once('-') {
                    Some((lo, hi)) => match (lo.parse::<u16>(), hi.parse::<u16>()) {
                        (Ok(lo), Ok(hi)) => (lo..=hi).contains(&slot),
                        _ => false,
                    },
                    None => range.parse() == Ok(slot),
                });
            if serves {
                let addr = fields[1].split('@').next().unwrap();
                return addr.rsplit_once(':').unwrap().1.parse().unwrap();
            }
        }
        panic!("no master serves slot {slot} of {key}");
    }
}

/// Identities whose inboxes live on three different masters.
async fn spread(cluster: &Cluster) -> Vec<Identity> {
    let mut seen = BTreeSet::new();
    let mut picked = Vec::new();
    while picked.len() < 3 {
        let who = Identity::generate();
        if seen.insert(cluster.owner(&inbox_key(&who, "q")).await) {
            picked.push(who);
        }
    }
    picked
}

#[tokio::test]
async fn the_store_passes_conformance_on_a_three_master_cluster() {
    let Some(cluster) = Cluster::start().await else {
        return;
    };
    let cluster = &cluster;
    run_all(|limits| async move {
        cluster.flush().await;
        RedisStore::connect(&cluster.target(), limits)
            .await
            .expect("connect to the test cluster") as SharedStore
    })
    .await;

    // Depth and sweep visit every master: inboxes on all three are counted.
    cluster.flush().await;
    let (store, alice, now) = (cluster.store().await, Identity::generate(), NOW);
    for (n, who) in spread(cluster).await.iter().enumerate() {
        for m in 0..=n as u32 {
            store
                .insert(&envelope(&alice, who.public_key(), m, now), now)
                .await
                .unwrap();
        }
    }
    assert_eq!(store.depth().await.unwrap(), 1 + 2 + 3);
    let later = now + whispr::testing::store::conformance::LIMITS.message_ttl_ms + 1;
    assert_eq!(store.sweep(later).await.unwrap().expired, 6);
    assert_eq!(store.depth().await.unwrap(), 0);
}

#[tokio::test]
async fn two_relays_on_a_cluster_deliver_across_nodes_and_slots() {
    let Some(cluster) = Cluster::start().await else {
        return;
    };
    // The periodic catch-up is slow, so delivery before its first run shows the sharded
    // pub/sub wake-up.
    let config = config_with(&format!(
        "store = \"redis\"\nredis_cluster_urls = {:?}\nws_catch_up_seconds = 60\n\
         max_messages_per_second = 1\nburst_messages = 4",
        cluster.urls()
    ));
    let (a, b) = TestRelay::pair(config).await;
    let alice = Identity::generate();
    let recipients = spread(&cluster).await;

    let mut sessions = Vec::new();
    for who in &recipients {
        let (mut ws, _) = b.connect(who).await;
        assert!(drain_until_synced(&mut ws, true).await.is_empty());
        sessions.push(ws);
    }
    for (who, ws) in recipients.iter().zip(sessions.iter_mut()) {
        let body = format!("to {}", &who.public_key().to_hex()[..8]);
        a.http()
            .send(&a.seal(&alice, who.public_key(), &body))
            .await
            .unwrap();
        let got = b.before_catch_up(receive(ws, 1, true)).await;
        assert_eq!(got, vec![(1, body)]);
    }
    for ws in &mut sessions {
        assert_silent(ws, 200).await;
    }

    // The sender's bucket (burst 4) is shared by both nodes on the cluster too.
    let bob: PublicKey = recipients[0].public_key();
    b.http().send(&b.seal(&alice, bob, "4th")).await.unwrap();
    let refused = a.http().send(&a.seal(&alice, bob, "5th")).await;
    assert!(
        matches!(
            refused,
            Err(whispr::client::ClientError::Refused {
                status: Some(429),
                ..
            })
        ),
        "got {refused:?}"
    );

    // A session on node a takes the first inbox over from node b.
    let (mut newer, _) = a.connect(&recipients[0]).await;
    let code = loop {
        match tokio::time::timeout(Duration::from_secs(5), sessions[0].next_frame())
            .await
            .expect("the older session is closed within 5 s")
        {
            Err(whispr::client::ClientError::Closed { code, .. }) => break code,
            Err(other) => panic!("expected a close, got {other}"),
            Ok(_) => continue,
        }
    };
    assert_eq!(code, 4001);
    let got = drain_until_synced(&mut newer, true).await;
    assert_eq!(got, vec![(2, "4th".to_owned())]);

    newer.close().await;
    for ws in sessions.into_iter().skip(1) {
        ws.close().await;
    }
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn signal_rooms_span_relays_on_a_cluster() {
    let Some(cluster) = Cluster::start().await else {
        return;
    };
    let config = config_with(&format!(
        "store = \"redis\"\nredis_cluster_urls = {:?}",
        cluster.urls()
    ));
    let (a, b) = TestRelay::pair(config).await;
    // Watched through another node than the relays publish to: Redis forwards it.
    let (mut caller, mut callee) =
        crate::signal::cross_pair(&cluster.nodes[2].url, &a, &b, "cluster-call").await;
    let offer = serde_json::json!({"type": "offer", "sdp": "v=0\r\n"});
    crate::signal::signal(&mut caller, "cluster-call", offer.clone()).await;
    assert_eq!(
        crate::signal::next(&mut callee).await,
        crate::signal::signalled("cluster-call", offer)
    );
    let answer = serde_json::json!({"type": "answer", "sdp": "v=0\r\n"});
    crate::signal::signal(&mut callee, "cluster-call", answer.clone()).await;
    assert_eq!(
        crate::signal::next(&mut caller).await,
        crate::signal::signalled("cluster-call", answer)
    );
    a.stop().await;
    b.stop().await;
}

/// `CLUSTER MYID` of the node at `port`.
async fn node_id(cluster: &Cluster, port: u16) -> String {
    let node = cluster.nodes.iter().find(|n| n.port == port).unwrap();
    let mut conn = plain_conn(&node.url).await;
    redis::cmd("CLUSTER")
        .arg("MYID")
        .query_async(&mut conn)
        .await
        .unwrap()
}

/// `EVALSHA` calls every master has run since its last `CONFIG RESETSTAT`, summed.
async fn script_calls(cluster: &Cluster) -> u64 {
    let mut calls = 0;
    for node in &cluster.nodes {
        let mut conn = plain_conn(&node.url).await;
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query_async(&mut conn)
            .await
            .unwrap();
        let line = info.lines().find(|l| l.starts_with("cmdstat_evalsha:"));
        calls += line.map_or(0, |l| {
            let field = l
                .split([':', ','])
                .find(|f| f.starts_with("calls="))
                .unwrap();
            field["calls=".len()..].parse::<u64>().unwrap()
        });
        let _: () = redis::cmd("CONFIG")
            .arg("RESETSTAT")
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    calls
}

/// Moves `key`'s slot, with its keys, from its master to another one, the way
/// `redis-cli --cluster reshard` does (IMPORTING, MIGRATING, MIGRATE, then NODE on every
/// master).
async fn reshard(cluster: &Cluster, key: &str) {
    let from = cluster.owner(key).await;
    let to = cluster.nodes.iter().find(|n| n.port != from).unwrap().port;
    let (from_id, to_id) = (node_id(cluster, from).await, node_id(cluster, to).await);
    let url = |port: u16| &cluster.nodes.iter().find(|n| n.port == port).unwrap().url;
    let (mut source, mut target) = (plain_conn(url(from)).await, plain_conn(url(to)).await);
    let slot: u16 = redis::cmd("CLUSTER")
        .arg("KEYSLOT")
        .arg(key)
        .query_async(&mut source)
        .await
        .unwrap();
    let setslot = |state: &str, id: &str| {
        redis::cmd("CLUSTER")
            .arg("SETSLOT")
            .arg(slot)
            .arg(state)
            .arg(id)
            .clone()
    };
    let _: () = setslot("IMPORTING", &from_id)
        .query_async(&mut target)
        .await
        .unwrap();
    let _: () = setslot("MIGRATING", &to_id)
        .query_async(&mut source)
        .await
        .unwrap();
    let keys: Vec<String> = redis::cmd("CLUSTER")
        .arg("GETKEYSINSLOT")
        .arg(slot)
        .arg(100)
        .query_async(&mut source)
        .await
        .unwrap();
    assert!(!keys.is_empty(), "the slot of {key} holds no keys to move");
    let _: () = redis::cmd("MIGRATE")
        .arg("127.0.0.1")
        .arg(to)
        .arg("")
        .arg(0)
        .arg(5000)
        .arg("KEYS")
        .arg(&keys)
        .query_async(&mut source)
        .await
        .unwrap();
    for node in &cluster.nodes {
        let mut conn = plain_conn(&node.url).await;
        let _: () = setslot("NODE", &to_id)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    assert_eq!(cluster.owner(key).await, to);
}

#[tokio::test]
async fn inserts_on_many_slots_share_one_call_per_master_and_survive_a_reshard_and_a_script_flush()
{
    let Some(cluster) = Cluster::start().await else {
        return;
    };
    let (store, alice, now) = (cluster.store().await, Identity::generate(), NOW);
    // One insert per master teaches the store every master's slots.
    for who in spread(&cluster).await {
        store
            .insert(&envelope(&alice, who.public_key(), 0, now), now)
            .await
            .unwrap();
    }
    let recipients: Vec<Identity> = (0..60).map(|_| Identity::generate()).collect();
    let slots: std::collections::HashSet<_> = recipients
        .iter()
        .map(|who| redis::cluster_routing::Slot::for_key(inbox_key(who, "q")))
        .collect();
    assert!(
        slots.len() > 50,
        "the inboxes share too few slots: {slots:?}"
    );
    script_calls(&cluster).await;

    // Every round is sent at once: one call per master carries it (where each master's
    // part spans many slots); after the reshard, the inbox whose slot moved is answered
    // from its new master; after the flush, every call is sent again.
    let round = |n: u32| {
        let store = &store;
        let alice = &alice;
        futures::future::join_all(recipients.iter().map(move |who| async move {
            store
                .insert(&envelope(alice, who.public_key(), n, now), now)
                .await
                .unwrap()
        }))
    };
    let stored = |seq: u64| move |outcome: &InsertOutcome| matches!(outcome, InsertOutcome::Stored { seq: s, .. } if *s == seq);
    let first = round(1).await;
    assert!(first.iter().all(stored(1)), "{first:?}");
    let calls = script_calls(&cluster).await;
    assert!(
        calls <= 6,
        "60 inserts on three masters took {calls} script calls"
    );

    reshard(&cluster, &inbox_key(&recipients[0], "q")).await;
    let second = round(2).await;
    assert!(second.iter().all(stored(2)), "{second:?}");

    for node in &cluster.nodes {
        let mut conn = plain_conn(&node.url).await;
        let _: () = redis::cmd("SCRIPT")
            .arg("FLUSH")
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    let third = round(3).await;
    assert!(third.iter().all(stored(3)), "{third:?}");

    let reads = futures::future::join_all(recipients.iter().map(|who| {
        let store = &store;
        async move {
            store
                .fetch(&who.public_key().into(), None, 10, now)
                .await
                .unwrap()
        }
    }))
    .await;
    for batch in reads {
        let got: Vec<(u64, Vec<u8>)> = batch
            .messages
            .iter()
            .map(|m| (m.seq, m.envelope.body.clone()))
            .collect();
        let want: Vec<(u64, Vec<u8>)> = (1..=3)
            .map(|n| (n as u64, format!("body {n}").into_bytes()))
            .collect();
        assert_eq!(got, want);
    }
}
