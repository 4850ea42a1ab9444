//! The optional analytics event log (the operator guide's "file-based analytics"):
//! JSON lines of counts and sizes, appended to `analytics_log_path`. No keys unless
//! `analytics_include_keys` is set, never bodies, signatures or client addresses.
//!
//! Recording never blocks the relay: events go through a bounded queue to one writer
//! task; when the queue is full (the disk is slower than the traffic) events are dropped
//! and counted, and the count is written as its own event.

use serde::Serialize;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::protocol::PublicKey;

/// Events buffered between the relay and the writer.
const QUEUE: usize = 16 * 1024;

/// One line of the log.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    MessageAccepted {
        kind: &'static str,
        bytes: usize,
        #[serde(skip_serializing_if = "Option::is_none")]
        sender: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        recipient: Option<String>,
    },
    MessageRefused {
        reason: &'static str,
    },
    MessageDelivered {
        kind: &'static str,
        bytes: usize,
        queue_ms: u64,
    },
    SessionClosed {
        codec: &'static str,
        seconds: u64,
        reason: &'static str,
    },
    EventsDropped {
        count: u64,
    },
}

#[derive(Serialize)]
struct Line<'a> {
    ts_ms: u64,
    #[serde(flatten)]
    event: &'a Event,
}

/// The handle the relay records through. Disabled when no path is configured.
#[derive(Clone, Default)]
pub struct Analytics {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    tx: mpsc::Sender<(u64, Event)>,
    dropped: AtomicU64,
    include_keys: bool,
}

impl Analytics {
    pub fn disabled() -> Self {
        Analytics { inner: None }
    }

    /// Opens (appends to) `path` and starts the writer; it stops when `stop` is
    /// cancelled, after writing what is queued.
    pub async fn open(
        path: PathBuf,
        include_keys: bool,
        stop: CancellationToken,
    ) -> std::io::Result<(Self, tokio::task::JoinHandle<()>)> {
        let file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .await?;
        let (tx, rx) = mpsc::channel(QUEUE);
        let inner = Arc::new(Inner {
            tx,
            dropped: AtomicU64::new(0),
            include_keys,
        });
        let writer = tokio::spawn(write_lines(file, rx, inner.clone(), stop));
        Ok((Analytics { inner: Some(inner) }, writer))
    }

    pub fn enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// A key as it may appear in the log: only when configured.
    pub fn key(&self, key: &PublicKey) -> Option<String> {
        self.inner
            .as_ref()
            .filter(|i| i.include_keys)
            .map(|_| key.to_hex())
    }

    pub fn record(&self, now_ms: u64, event: Event) {
        if let Some(inner) = &self.inner {
            if inner.tx.try_send((now_ms, event)).is_err() {
                inner.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

async fn write_lines(
    file: tokio::fs::File,
    mut rx: mpsc::Receiver<(u64, Event)>,
    inner: Arc<Inner>,
    stop: CancellationToken,
) {
    let mut out = tokio::io::BufWriter::new(file);
    let mut flush = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            Some((ts_ms, event)) = rx.recv() => {
                if let Ok(mut line) = serde_json::to_vec(&Line { ts_ms, event: &event }) {
                    line.push(b'\n');
                    if let Err(e) = out.write_all(&line).await {
                        tracing::warn!(error = %e, "analytics log write failed");
                    }
                }
            }
            _ = flush.tick() => {
                let dropped = inner.dropped.swap(0, Ordering::Relaxed);
                if dropped > 0 {
                    let now = crate::clock::Clock::system().now_ms();
                    if let Ok(mut line) = serde_json::to_vec(&Line { ts_ms: now, event: &Event::EventsDropped { count: dropped } }) {
                        line.push(b'\n');
                        let _ = out.write_all(&line).await;
                    }
                }
                let _ = out.flush().await;
            }
            _ = stop.cancelled() => {
                while let Ok((ts_ms, event)) = rx.try_recv() {
                    if let Ok(mut line) = serde_json::to_vec(&Line { ts_ms, event: &event }) {
                        line.push(b'\n');
                        let _ = out.write_all(&line).await;
                    }
                }
                let _ = out.flush().await;
                return;
            }
        }
    }
}
