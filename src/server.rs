//! Builds the relay from a config and serves it on a listener until a shutdown future
//! resolves: stop accepting, close sessions with 1001, wait a bounded grace period,
//! then let the store persist what it holds.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::analytics::Analytics;
use crate::blobs::{Attachments, BlobError, BlobLimits, MemoryBlobs, RedisBlobs, SharedBlobs};
use crate::clock::Clock;
use crate::config::{Config, StoreKind};
use crate::http::{self, Admission, App, Endpoint, Gate, HttpLimits};
use crate::metrics::Metrics;
use crate::notify;
use crate::protocol::Envelope;
use crate::redis_link::{RedisLink, RedisNodes, RedisTarget};
use crate::registry::Registry;
use crate::relay::Relay;
use crate::signal;
use crate::store::{
    MemoryStore, MessageStore, RedisOptions, RedisStore, SharedStore, StoreError, StoreLimits,
};
use crate::tls::{ReloadableTls, TlsError, TlsFiles};

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("serving HTTP failed: {0}")]
    Serve(#[from] std::io::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("store = redis: cannot use Redis at {url}: {source} (start Redis, check redis_url, or use store = \"auto\")")]
    Redis { url: String, source: StoreError },
    #[error(
        "the message store is Redis, but the attachment store cannot use Redis at {url}: {source}"
    )]
    RedisBlobs { url: String, source: BlobError },
    #[error("cannot open the analytics log {path}: {source}")]
    Analytics {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// The Redis side of a Redis-backed relay: the shared connection (rate limits,
/// ephemeral envelopes) and the store, whose watch task the server runs.
struct OnRedis {
    link: RedisLink,
    store: Arc<RedisStore>,
}

/// A relay ready to serve.
pub struct Server {
    config: Arc<Config>,
    clock: Clock,
    reload: Arc<Notify>,
}

impl Server {
    pub fn new(config: Config) -> Self {
        Server {
            config: Arc::new(config),
            clock: Clock::system(),
            reload: Arc::new(Notify::new()),
        }
    }

    /// Uses `clock` instead of the system clock (tests move time forward with it).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Notifying this reloads the TLS certificate (the binary wires SIGHUP to it).
    pub fn reload_handle(&self) -> Arc<Notify> {
        self.reload.clone()
    }

    /// The message store, and the Redis connection when the store is Redis (then the
    /// rate limits and the cross-node notifications use Redis too).
    async fn build_store(&self) -> Result<(SharedStore, Option<OnRedis>), ServerError> {
        let c = &self.config;
        let limits = StoreLimits::from_config(c);
        let memory = || -> Result<SharedStore, StoreError> {
            Ok(match &c.memory_snapshot_path {
                None => MemoryStore::new(limits),
                Some(path) => MemoryStore::open(limits, path.clone())?,
            })
        };
        let target = RedisTarget::from_config(c);
        let redacted = target.redacted();
        let unusable = |source: StoreError| ServerError::Redis {
            url: redacted.clone(),
            source,
        };
        let options = RedisOptions::from_config(c);
        let link = match c.store {
            StoreKind::Memory => return Ok((memory()?, None)),
            StoreKind::Redis => RedisLink::connect_with_timeout(&target, options.response_timeout)
                .await
                .map_err(|e| {
                    unusable(StoreError::Unavailable(format!(
                        "cannot connect to redis: {e}"
                    )))
                })?,
            StoreKind::Auto => {
                match RedisLink::connect_with_timeout(&target, options.response_timeout).await {
                    Ok(link) => link,
                    // Only "nothing answers there" falls back: a wrong password, a TLS
                    // failure or a refused SELECT is a Redis the operator meant to use.
                    Err(e) if e.is_connection_refusal() || e.is_timeout() => {
                        tracing::warn!(redis = %redacted, error = %e, "store = auto: nothing answers at the Redis address; using the in-memory store (queued messages do not survive a crash)");
                        return Ok((memory()?, None));
                    }
                    Err(e) => {
                        return Err(unusable(StoreError::Unavailable(format!(
                            "redis answered but cannot be used: {e}"
                        ))))
                    }
                }
            }
        };
        let store = Arc::new(
            RedisStore::open(link.clone(), limits, options)
                .await
                .map_err(unusable)?,
        );
        tracing::info!(redis = %redacted, store = store.kind(), "queued messages, rate limits and wake-ups live in Redis");
        let shared: SharedStore = store.clone();
        Ok((shared, Some(OnRedis { link, store })))
    }

    /// The attachment store: on the message store's Redis when that is Redis (so every
    /// node sees every attachment), else in memory.
    async fn build_blobs(&self, shared: bool) -> Result<SharedBlobs, ServerError> {
        let c = &self.config;
        if !shared {
            return Ok(MemoryBlobs::new(BlobLimits::from_config(c)));
        }
        let target = RedisTarget::from_config(c);
        let blobs = RedisBlobs::connect(&target, BlobLimits::from_config(c))
            .await
            .map_err(|source| ServerError::RedisBlobs {
                url: target.redacted(),
                source,
            })?;
        Ok(blobs)
    }

    /// The `/signal` rooms; with a shared (Redis) store and v1 on, their cross-node task.
    fn signal_rooms(
        &self,
        relay: &Relay,
        shared: bool,
        tracker: &TaskTracker,
        token: &CancellationToken,
    ) -> Result<Arc<signal::Rooms>, ServerError> {
        let c = &self.config;
        let gauges = signal::Gauges {
            rooms: relay.metrics().signal_rooms.clone(),
            members: relay.metrics().signal_members.clone(),
        };
        let limits = signal::RoomLimits::from_config(c);
        if !(shared && c.compat_whispr_v1) {
            return Ok(signal::Rooms::new(limits, gauges, None));
        }
        let (remote, commands) = tokio::sync::mpsc::unbounded_channel();
        let rooms = signal::Rooms::new(limits, gauges, Some(remote));
        // On a cluster, classic pub/sub on any one node reaches every node (Redis
        // forwards PUBLISH over the cluster bus), so rooms use the first seed node.
        let target = RedisTarget::from_config(c);
        let url = match &target.nodes {
            RedisNodes::Single(url) => url,
            RedisNodes::Cluster(urls) => &urls[0],
        };
        let client = target.client(url).map_err(|e| ServerError::Redis {
            url: target.redacted(),
            source: StoreError::Unavailable(e.to_string()),
        })?;
        signal::redis::start(client, rooms.clone(), commands, tracker, token.clone());
        Ok(rooms)
    }

    /// Serves on `listener` until `shutdown` resolves, then drains.
    pub async fn run(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        let config = self.config.clone();
        raise_fd_limit(&config);
        if config.origin.is_none() && !config.listen.ip().is_loopback() {
            tracing::warn!(
                "`origin` is not set: authentication binds whatever Host header a request carries, \
                 so another server could relay your users' sign-ins here; set origin = \"your.host\""
            );
        }
        // Everything that can fail on bad configuration fails before we serve.
        let tls = TlsFiles::from_config(&config)
            .map(ReloadableTls::new)
            .transpose()?;
        let (store, redis) = self.build_store().await?;
        let shared = redis.is_some();
        let blobs = self.build_blobs(shared).await?;
        let (remote, commands) = tokio::sync::mpsc::unbounded_channel();
        let registry = Arc::new(if shared {
            Registry::with_remote(remote)
        } else {
            Registry::new()
        });
        let store_kind = store.kind();
        // The analytics writer outlives the sessions (it records their close), so it
        // has its own stop signal, given after they are gone.
        let analytics_stop = CancellationToken::new();
        let (analytics, analytics_writer) = if let Some(path) = config.analytics_log_path.clone() {
            let (analytics, writer) = Analytics::open(
                path.clone(),
                config.analytics_include_keys,
                analytics_stop.clone(),
            )
            .await
            .map_err(|source| ServerError::Analytics { path, source })?;
            (analytics, Some(writer))
        } else {
            (Analytics::disabled(), None)
        };
        let mut relay = Relay::builder(store, registry, self.clock.clone()).analytics(analytics);
        if let Some(on_redis) = &redis {
            relay = relay.shared_with_nodes(on_redis.link.clone());
        }
        let relay = relay.build(&config);
        let relay = Arc::new(relay);
        let token = CancellationToken::new();
        let tracker = TaskTracker::new();
        let signal = self.signal_rooms(&relay, shared, &tracker, &token)?;
        let limits = HttpLimits::from_config(&config);
        let app = Arc::new(App {
            relay: relay.clone(),
            config: config.clone(),
            shutdown: token.clone(),
            tracker: tracker.clone(),
            admission: Admission::new(
                config.max_connections,
                config.max_connections_per_ip,
                config.max_new_connections_per_second,
            ),
            http_gate: Gate::new(limits.caps),
            blobs: Attachments::new(
                blobs.clone(),
                config.max_attachment_inflight_bytes,
                relay.metrics().blobs_busy.clone(),
            ),
            signal,
        });

        tracker.spawn(sweeper(
            relay.clone(),
            blobs,
            Duration::from_secs(config.sweep_interval_seconds),
            token.clone(),
        ));
        tracker.spawn(reloader(
            self.reload.clone(),
            tls.clone(),
            relay.metrics().clone(),
            token.clone(),
        ));
        if let Some(OnRedis { store, .. }) = redis {
            let stop = token.clone();
            tracker.spawn(async move { store.watch(stop).await });
        }
        if shared {
            // Other nodes share the store: wake-ups and takeovers cross nodes.
            // An ephemeral envelope from another node is checked again there; its
            // timestamp window is wider by the hop and the nodes' clock difference, so
            // an envelope accepted on one node is not refused on the next.
            let (clock, max_skew_ms) = (relay.clock().clone(), relay.max_skew_ms() + 30_000);
            let verify: notify::Verifier =
                Arc::new(move |e: Envelope| e.verify(clock.now_ms(), max_skew_ms).ok());
            notify::start(
                &RedisTarget::from_config(&config),
                relay.registry().clone(),
                verify,
                commands,
                &tracker,
                token.clone(),
            )
            .await
            .map_err(|e| ServerError::Redis {
                url: RedisTarget::from_config(&config).redacted(),
                source: StoreError::Unavailable(e.to_string()),
            })?;
            tracker.spawn(notify::catch_up(
                relay.registry().clone(),
                Duration::from_secs(config.ws_catch_up_seconds),
                token.clone(),
            ));
        }
        let trigger = token.clone();
        tokio::spawn(async move {
            shutdown.await;
            trigger.cancel();
        });
        if let Some(addr) = config.metrics_listen {
            let metrics = TcpListener::bind(addr)
                .await
                .map_err(|source| ServerError::Bind {
                    what: "metrics_listen",
                    addr,
                    source,
                })?;
            tracing::info!(%addr, "metrics listening");
            // Its own counts: a flood on `listen` cannot take the scrape's places.
            let endpoint = Endpoint {
                router: http::metrics_router(app.clone()),
                gate: Gate::new(limits.caps),
                tls: None,
                limits,
            };
            tracker.spawn(http::serve(metrics, endpoint, app.clone()));
        }

        let addr = listener.local_addr()?;
        if config.compat_whispr_v1 {
            tracing::warn!("{}", http::v1::STARTUP_WARNING);
        }
        let endpoint = Endpoint {
            router: http::router(app.clone()),
            gate: app.http_gate.clone(),
            tls: tls.clone(),
            limits,
        };
        tracing::info!(%addr, tls = tls.is_some(), store = store_kind, "whispr relay listening");
        http::serve(listener, endpoint, app).await;

        // Accepting has stopped. HTTP connections finish the request they are in and
        // close; upgraded sessions saw the token and are sending Close 1001. Both are
        // tracked, and waited for within the grace period.
        tracker.close();
        let grace = Duration::from_secs(config.shutdown_grace_seconds);
        if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
            tracing::warn!(
                sessions = tracker.len(),
                "grace period over; dropping remaining sessions"
            );
        }
        analytics_stop.cancel();
        if let Some(writer) = analytics_writer {
            let _ = writer.await;
        }
        // Nothing writes to the store any more: let it persist what it holds.
        relay.store().shutdown().await?;
        tracing::info!("relay stopped");
        Ok(())
    }
}

/// Raises the soft open-files limit to the hard limit, and warns when even that leaves
/// too few descriptors for every connection the caps allow: WebSockets, HTTP
/// connections with their reserve, and some spare (Redis, the listeners, files).
fn raise_fd_limit(config: &Config) {
    let wanted = (config.max_connections as u64)
        .saturating_add(config.http_max_connections as u64)
        .saturating_add(config.http_reserved_connections as u64)
        .saturating_add(256);
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) if limit < wanted => tracing::warn!(
            fd_limit = limit,
            wanted,
            "the open-files limit is below max_connections + http_max_connections + http_reserved_connections + 256; raise it (systemd: LimitNOFILE=, shell: ulimit -n) or lower those caps"
        ),
        Ok(limit) => tracing::debug!(fd_limit = limit, "open-files limit"),
        Err(e) => tracing::warn!(error = %e, "cannot read or raise the open-files limit"),
    }
}

/// Reloads the TLS certificate each time `reload` is notified.
async fn reloader(
    reload: Arc<Notify>,
    tls: Option<ReloadableTls>,
    metrics: Arc<Metrics>,
    token: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = token.cancelled() => return,
            _ = reload.notified() => {}
        }
        match &tls {
            None => tracing::info!("reload requested: nothing to reload (no TLS configured)"),
            Some(tls) => match tls.reload() {
                Ok(()) => {
                    metrics.tls_reloads.with_label_values(&["ok"]).inc();
                    tracing::info!("TLS certificate reloaded; new connections use it")
                }
                Err(e) => {
                    metrics.tls_reloads.with_label_values(&["failed"]).inc();
                    tracing::error!(error = %e, "TLS reload failed; keeping the previous certificate")
                }
            },
        }
    }
}

/// Expires messages and attachments and prunes idle rate-limit buckets until shutdown.
async fn sweeper(relay: Arc<Relay>, blobs: SharedBlobs, every: Duration, token: CancellationToken) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = token.cancelled() => return,
            _ = tick.tick() => {}
        }
        match relay.store().sweep(relay.clock().now_ms()).await {
            Ok(stats) => {
                relay.metrics().expired.inc_by(stats.expired);
                if stats.expired > 0 {
                    tracing::info!(expired = stats.expired, "expired messages past their TTL");
                }
            }
            Err(e) => {
                relay.metrics().store_errors.inc();
                tracing::warn!(error = %e, "sweep failed");
            }
        }
        match blobs.sweep(relay.clock().now_ms()).await {
            Ok(expired) => relay.metrics().blobs_expired.inc_by(expired),
            Err(e) => tracing::warn!(error = %e, "attachment sweep failed"),
        }
        relay.prune();
    }
}
