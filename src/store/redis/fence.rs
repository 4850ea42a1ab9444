//! Which Redis process a script runs on, known without asking Redis in every call.
//!
//! The history checks (module doc of [`super`]) compare the process that last wrote an
//! inbox (`meta.run`) with the process the script runs on. Asking Redis (`INFO server`
//! inside the script) cost about 11 µs per call, the largest single cost of a read.
//! Instead, every script is built for one process: its run id is written into the
//! script's text (`scripts`), so each process has scripts of its own, with SHAs of their
//! own, and the store calls them by SHA (`EVALSHA`, never `EVAL`).
//!
//! # Why no script runs on a process it was not built for
//!
//! A script built for process X runs only where it is loaded, and it is loaded only into
//! X. It is loaded only here, by [`Fence::learn`], between two `INFO server` replies that
//! both name X, all three commands sent to one address (the one server, or on a cluster
//! the master at one `host:port`, routed by address, never by slot). The processes at
//! one address follow each other in time and a run id is never reused (40 random hex
//! digits), so the process that ran the load came after the first X and before the
//! second: it was X. If the two replies differ, Redis restarted in between, and the
//! store loads again.
//!
//! Nothing else puts a script into a process: Redis 7 (the guard refuses older ones)
//! neither writes the script cache to the AOF or RDB nor replicates `SCRIPT LOAD`, so a
//! restarted process, a replica promoted by a failover (its own run id; durability
//! `second_repl_offset` makes it lossy, see [`super::guard`]) and every other master of a
//! cluster start without X's scripts (`tests/it/redis_store.rs` checks both). A call
//! that reaches any other process therefore fails with `NOSCRIPT` before it reads or
//! writes anything, and the store learns that process (loading *its* scripts, built with
//! *its* run id) and calls again. Several relay nodes change nothing: each loads only
//! scripts built for a run id it has just read from that same address.
//!
//! What the scripts still take per call is whether the guard verified the process's
//! persistence lossless (`ARGV[2]`), as before from the guard's latest check, which
//! [`Fence::learn`] runs for every process it learns; a process it did not see is lossy.
//!
//! # Cost
//!
//! Per Redis process and relay node: one `CLUSTER SLOTS` (on a cluster), two `INFO
//! server`, the guard's check and four `SCRIPT LOAD`, on the first call and after each
//! restart or failover. On a cluster the scripts learnt for one slot serve every slot of
//! that master.

use redis::cluster_routing::Slot;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use super::guard::{info_field, Guard};
use super::scripts::Scripts;
use crate::redis_link::RedisLink;
use crate::store::StoreError;

/// Where an inbox's scripts run: `None` on the one server, its slot on a cluster.
pub(super) type Place = Option<Slot>;

/// How often [`Fence::learn`] loads again when Redis restarts during a load.
const ATTEMPTS: usize = 3;

/// The scripts each place runs, as learnt.
#[derive(Default)]
pub(super) struct Fence {
    by_place: RwLock<HashMap<Place, Arc<Scripts>>>,
    /// One load at a time: many calls meeting one restart load its scripts once.
    learning: tokio::sync::Mutex<()>,
}

fn unavailable(e: redis::RedisError) -> StoreError {
    StoreError::Unavailable(format!("redis: {e}"))
}

/// The run id of the process at `at`.
async fn run_id(link: &RedisLink, at: Option<&(String, u16)>) -> Result<String, StoreError> {
    let reply = link
        .query_at(at, redis::cmd("INFO").arg("server"))
        .await
        .map_err(unavailable)?;
    let text: String = redis::FromRedisValue::from_redis_value(reply)
        .map_err(|e| StoreError::Unavailable(format!("redis: INFO server: {e}")))?;
    Ok(info_field(&text, "run_id").unwrap_or_default().to_owned())
}

impl Fence {
    /// The scripts learnt for `place`, if any.
    pub fn scripts(&self, place: Place) -> Option<Arc<Scripts>> {
        let map = self.by_place.read().unwrap_or_else(|e| e.into_inner());
        map.get(&place).cloned()
    }

    /// Learns the process serving `place` and loads its scripts (see the module doc).
    /// `stale`: the scripts a call just found missing (`NOSCRIPT`), if any; when another
    /// call has learnt newer ones meanwhile, those are the answer.
    pub async fn learn(
        &self,
        link: &RedisLink,
        guard: &Guard,
        place: Place,
        stale: Option<&Arc<Scripts>>,
    ) -> Result<Arc<Scripts>, StoreError> {
        let _one = self.learning.lock().await;
        if let Some(now) = self.scripts(place) {
            if stale.is_none_or(|s| !Arc::ptr_eq(s, &now)) {
                return Ok(now);
            }
        }
        for _ in 0..ATTEMPTS {
            let owner = match place {
                // On a cluster every command here goes to one address, never by slot.
                Some(slot) => Some(
                    link.master_of(slot)
                        .await
                        .map_err(unavailable)?
                        .ok_or_else(|| {
                            StoreError::Unavailable(
                                "no redis cluster master serves the inbox's slot".into(),
                            )
                        })?,
                ),
                None => None,
            };
            let at = owner.as_ref().map(|o| &o.node);
            let first = run_id(link, at).await?;
            let mut scripts = Scripts::for_run(&first).ok_or_else(|| {
                StoreError::Unavailable(format!("redis gave an unusable run_id {first:?}"))
            })?;
            scripts.at = at.cloned();
            let scripts = Arc::new(scripts);
            if !first.is_empty() {
                tracing::info!(run_id = %first, "loading the store's scripts into this redis process");
            }
            guard.check(link).await?;
            for script in scripts.all() {
                let load = redis::cmd("SCRIPT").arg("LOAD").arg(&script.body).clone();
                link.query_at(at, &load).await.map_err(unavailable)?;
            }
            if run_id(link, at).await? != first {
                continue;
            }
            let mut map = self.by_place.write().unwrap_or_else(|e| e.into_inner());
            map.insert(place, scripts.clone());
            // The same master's other slots run the same process's scripts. Where that
            // guess is wrong (slots moved), the call meets NOSCRIPT and learns again.
            for (lo, hi) in owner.iter().flat_map(|o| o.slots.iter()) {
                for slot in (*lo..=*hi).filter_map(Slot::new) {
                    map.insert(Some(slot), scripts.clone());
                }
            }
            return Ok(scripts);
        }
        Err(StoreError::Unavailable(
            "redis restarted again each time the store loaded its scripts".into(),
        ))
    }
}
