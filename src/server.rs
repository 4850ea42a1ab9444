//! Builds the relay from a config and serves it on a listener until a shutdown future
//! resolves: stop accepting, close sessions with 1001, wait a bounded grace period.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clock::Clock;
use crate::config::{Config, StoreKind};
use crate::http::{self, App};
use crate::registry::Registry;
use crate::relay::Relay;
use crate::store::{MemoryStore, SharedStore, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("serving HTTP failed: {0}")]
    Serve(#[from] std::io::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A relay ready to serve.
pub struct Server {
    config: Arc<Config>,
    clock: Clock,
}

impl Server {
    pub fn new(config: Config) -> Self {
        Server {
            config: Arc::new(config),
            clock: Clock::system(),
        }
    }

    /// Uses `clock` instead of the system clock (tests move time forward with it).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    fn build_store(&self) -> Result<SharedStore, StoreError> {
        let limits = self.config.store_limits();
        Ok(match self.config.store {
            StoreKind::Memory if self.config.memory_snapshot_path.is_empty() => {
                MemoryStore::new(limits)
            }
            StoreKind::Memory => {
                MemoryStore::open(limits, self.config.memory_snapshot_path.clone().into())?
            }
        })
    }

    /// Serves on `listener` until `shutdown` resolves, then drains.
    pub async fn run(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        let config = self.config.clone();
        let store = self.build_store()?;
        let registry = Arc::new(Registry::new());
        let relay = Arc::new(Relay::new(&config, store, registry, self.clock.clone()));
        let token = CancellationToken::new();
        let tracker = TaskTracker::new();
        let app = Arc::new(App {
            relay: relay.clone(),
            config: config.clone(),
            shutdown: token.clone(),
            tracker: tracker.clone(),
        });

        tracker.spawn(sweeper(
            relay.clone(),
            Duration::from_secs(config.sweep_interval_seconds),
            token.clone(),
        ));
        let trigger = token.clone();
        tokio::spawn(async move {
            shutdown.await;
            trigger.cancel();
        });

        let addr = listener.local_addr()?;
        tracing::info!(%addr, store = ?config.store, "whispr relay listening");
        let service = http::router(app).into_make_service_with_connect_info::<SocketAddr>();
        axum::serve(listener, service)
            .with_graceful_shutdown(token.clone().cancelled_owned())
            .await?;

        // axum stops accepting and finishes HTTP requests; upgraded sessions are ours
        // to wait for. They saw the token and are sending Close 1001.
        tracker.close();
        let grace = Duration::from_secs(config.shutdown_grace_seconds);
        if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
            tracing::warn!(
                sessions = tracker.len(),
                "grace period over; dropping remaining sessions"
            );
        }
        // Nothing writes to the store any more: let it persist what it holds.
        relay.store.shutdown().await?;
        tracing::info!("relay stopped");
        Ok(())
    }
}

/// Expires messages and prunes idle rate-limit buckets until shutdown.
async fn sweeper(relay: Arc<Relay>, every: Duration, token: CancellationToken) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = token.cancelled() => return,
            _ = tick.tick() => {}
        }
        match relay.store.sweep(relay.clock.now_ms()).await {
            Ok(stats) if stats.expired > 0 => {
                tracing::info!(expired = stats.expired, "expired messages past their TTL")
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "sweep failed"),
        }
        relay.prune();
    }
}
