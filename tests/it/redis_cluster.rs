//! A three-master Redis Cluster started by the test (`redis-server --cluster-enabled yes`
//! three times, then `redis-cli --cluster create`): the store's conformance suite on it,
//! and two relay nodes on it delivering to inboxes whose keys live on different masters.

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::Duration;

use whispr::protocol::{Identity, PublicKey};
use whispr::testing::redis_link::RedisTarget;
use whispr::testing::store::conformance::{envelope, run_all};
use whispr::testing::store::{MessageStore, RedisStore, SharedStore};

use crate::support::{
    assert_silent, config_with, drain_until_synced, have_program, receive, scratch_dir, TestRelay,
};
use crate::support::{free_port, inbox_key, plain_conn, RedisServer};

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
    let store = RedisStore::connect(
        &cluster.target(),
        whispr::testing::store::conformance::LIMITS,
    )
    .await
    .unwrap();
    let alice = Identity::generate();
    let now = 1_800_000_000_000;
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
