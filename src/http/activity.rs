//! The deadlines of one HTTP connection that hyper has no timer for: a connection
//! whose answer the client has not read for `http_write_timeout_seconds` (every
//! write blocked) is stalled, and one with no request in progress and nothing to write
//! that has sent nothing for `http_keep_alive_timeout_seconds` is idle; either is
//! closed.
//!
//! hyper's own timer (`header_read_timeout`) bounds the time to a complete request
//! head, but cannot tell an idle keep-alive connection from a slow head, and nothing
//! in hyper bounds a write to a client that stopped reading (a download it never
//! takes would hold its in-flight attachment bytes for ever). So the connection is
//! watched here: [`Watched`] wraps the socket and notes each read and each blocked
//! write, [`Activity::begin`] marks a request in progress from its head until its
//! response body is dropped ([`Tracked`]), and [`Activity::expired`] resolves when a
//! deadline passes. What a request in progress waits for otherwise is bounded
//! elsewhere: its body by the route's deadline, its handler by the store's.

use axum::body::Body;
use axum::body::Bytes;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::Instant;

/// The two deadlines (`http_keep_alive_timeout_seconds`, `http_write_timeout_seconds`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadlines {
    pub keep_alive: Duration,
    pub write: Duration,
}

/// Why a connection is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    Idle,
    WriteStalled,
}

impl Expiry {
    pub fn label(self) -> &'static str {
        match self {
            Expiry::Idle => "idle",
            Expiry::WriteStalled => "write",
        }
    }
}

/// A connection's state at one moment, in milliseconds since it was accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Snapshot {
    /// The last byte read or request finished.
    last_ms: u64,
    in_progress: usize,
    /// Since when every write has been blocked, if one is.
    blocked_since_ms: Option<u64>,
}

/// What to wait for: a deadline (ms since the accept) and what passing it means, or
/// only the next change (a request in progress, writes flowing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wait {
    Until(u64, Expiry),
    Change,
}

/// The one rule, pure.
fn wait(s: Snapshot, d: Deadlines) -> Wait {
    let ms = |d: Duration| d.as_millis() as u64;
    // A blocked write counts even after the last response body was handed to hyper:
    // its bytes may still sit in hyper's buffer, unsent.
    match (s.blocked_since_ms, s.in_progress) {
        (Some(since), _) => Wait::Until(since + ms(d.write), Expiry::WriteStalled),
        (None, 0) => Wait::Until(s.last_ms + ms(d.keep_alive), Expiry::Idle),
        (None, _) => Wait::Change,
    }
}

/// No write is blocked.
const NOT_BLOCKED: u64 = u64::MAX;

/// What one connection has been doing.
#[derive(Debug)]
pub struct Activity {
    start: Instant,
    last_ms: AtomicU64,
    in_progress: AtomicUsize,
    /// `NOT_BLOCKED`, or since when every write has been blocked.
    blocked_since_ms: AtomicU64,
    /// Told when the last request in progress finishes and when writes block.
    changed: Notify,
}

impl Activity {
    pub fn new() -> Arc<Self> {
        Arc::new(Activity {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
            in_progress: AtomicUsize::new(0),
            blocked_since_ms: AtomicU64::new(NOT_BLOCKED),
            changed: Notify::new(),
        })
    }

    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    fn touch(&self) {
        self.last_ms.fetch_max(self.now_ms(), Ordering::AcqRel);
    }

    fn write_blocked(&self) {
        let first = self
            .blocked_since_ms
            .compare_exchange(
                NOT_BLOCKED,
                self.now_ms(),
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok();
        if first {
            self.changed.notify_one();
        }
    }

    fn wrote(&self) {
        self.blocked_since_ms.store(NOT_BLOCKED, Ordering::Release);
    }

    fn snapshot(&self) -> Snapshot {
        let blocked = self.blocked_since_ms.load(Ordering::Acquire);
        Snapshot {
            last_ms: self.last_ms.load(Ordering::Acquire),
            in_progress: self.in_progress.load(Ordering::Acquire),
            blocked_since_ms: (blocked != NOT_BLOCKED).then_some(blocked),
        }
    }

    /// A request is in progress until the returned guard is dropped.
    pub fn begin(self: &Arc<Self>) -> InProgress {
        self.in_progress.fetch_add(1, Ordering::AcqRel);
        InProgress(self.clone())
    }

    /// Resolves when a deadline has passed, saying which.
    pub async fn expired(&self, deadlines: Deadlines) -> Expiry {
        loop {
            // `notify_one` keeps a permit, so a change between the snapshot and the
            // wait below is not missed.
            match wait(self.snapshot(), deadlines) {
                Wait::Until(ms, expiry) => {
                    let until = self.start + Duration::from_millis(ms);
                    if Instant::now() >= until {
                        return expiry;
                    }
                    tokio::select! {
                        _ = tokio::time::sleep_until(until) => {}
                        _ = self.changed.notified() => {}
                    }
                }
                Wait::Change => self.changed.notified().await,
            }
        }
    }
}

/// One request in progress (see [`Activity::begin`]).
#[derive(Debug)]
pub struct InProgress(Arc<Activity>);

impl Drop for InProgress {
    fn drop(&mut self) {
        let activity = &self.0;
        activity.touch();
        if activity.in_progress.fetch_sub(1, Ordering::AcqRel) == 1 {
            activity.changed.notify_one();
        }
    }
}

/// A response body that keeps its request in progress until hyper drops it (sent, or
/// abandoned by the client).
pub struct Tracked {
    inner: Body,
    _request: InProgress,
}

impl Tracked {
    pub fn new(inner: Body, request: InProgress) -> Self {
        Tracked {
            inner,
            _request: request,
        }
    }
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// A socket whose reads count as activity.
pub struct Watched<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S> Watched<S> {
    pub fn new(inner: S, activity: Arc<Activity>) -> Self {
        Watched { inner, activity }
    }
}

impl<S> Watched<S> {
    fn note_write(&self, polled: &Poll<io::Result<usize>>) {
        match polled {
            Poll::Pending => self.activity.write_blocked(),
            Poll::Ready(_) => self.activity.wrote(),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.note_write(&polled);
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.note_write(&polled);
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const DEADLINES: Deadlines = Deadlines {
        keep_alive: Duration::from_secs(5),
        write: Duration::from_secs(30),
    };

    #[test]
    fn the_rule() {
        let at = |last_ms, in_progress, blocked_since_ms| {
            wait(
                Snapshot {
                    last_ms,
                    in_progress,
                    blocked_since_ms,
                },
                DEADLINES,
            )
        };
        assert_eq!(at(1000, 0, None), Wait::Until(6000, Expiry::Idle));
        assert_eq!(
            at(1000, 0, Some(2000)),
            Wait::Until(32000, Expiry::WriteStalled),
            "the last answer is still being written"
        );
        assert_eq!(at(1000, 1, None), Wait::Change, "a request being handled");
        assert_eq!(
            at(1000, 2, Some(2000)),
            Wait::Until(32000, Expiry::WriteStalled)
        );
    }

    /// What `expired` resolved to after letting paused time run for `secs`.
    async fn expired_after(activity: &Arc<Activity>, secs: u64) -> Option<Expiry> {
        let a = activity.clone();
        let watch = tokio::spawn(async move { a.expired(DEADLINES).await });
        tokio::time::sleep(Duration::from_secs(secs)).await;
        tokio::task::yield_now().await;
        if watch.is_finished() {
            Some(watch.await.unwrap())
        } else {
            watch.abort();
            None
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_quiet_connection_is_idle_after_the_deadline() {
        let activity = Activity::new();
        assert_eq!(expired_after(&activity, 4).await, None);
        assert_eq!(expired_after(&activity, 1).await, Some(Expiry::Idle));
    }

    #[tokio::test(start_paused = true)]
    async fn a_byte_read_starts_the_deadline_again() {
        let activity = Activity::new();
        let (mut client, server) = tokio::io::duplex(64);
        let mut server = Watched::new(server, activity.clone());
        tokio::time::sleep(Duration::from_secs(4)).await;
        client.write_all(b"G").await.unwrap();
        let mut byte = [0u8; 1];
        server.read_exact(&mut byte).await.unwrap();
        assert_eq!(
            expired_after(&activity, 4).await,
            None,
            "4 s after the byte"
        );
        assert_eq!(
            expired_after(&activity, 5).await,
            Some(Expiry::Idle),
            "5 s after the byte"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_in_progress_is_never_idle_and_its_end_restarts_the_deadline() {
        let activity = Activity::new();
        let request = activity.begin();
        let a = activity.clone();
        let watch = tokio::spawn(async move { a.expired(DEADLINES).await });
        tokio::time::sleep(Duration::from_secs(600)).await;
        assert!(!watch.is_finished(), "ten minutes into a request");
        drop(request);
        tokio::time::sleep(Duration::from_secs(4)).await;
        tokio::task::yield_now().await;
        assert!(!watch.is_finished(), "4 s after the response");
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(watch.await.unwrap(), Expiry::Idle);
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_the_client_does_not_read_stalls() {
        let activity = Activity::new();
        let _request = activity.begin();
        let (client, server) = tokio::io::duplex(16);
        let mut server = Watched::new(server, activity.clone());
        let a = activity.clone();
        let watch = tokio::spawn(async move { a.expired(DEADLINES).await });
        // More than the pipe holds, and the client reads nothing: the write blocks.
        let writer = tokio::spawn(async move { server.write_all(&[0; 64]).await });
        tokio::time::sleep(Duration::from_secs(29)).await;
        tokio::task::yield_now().await;
        assert!(!watch.is_finished(), "29 s blocked");
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(watch.await.unwrap(), Expiry::WriteStalled);
        writer.abort();
        drop(client);
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_keeps_reading_never_stalls() {
        let activity = Activity::new();
        let _request = activity.begin();
        let (mut client, server) = tokio::io::duplex(16);
        let mut server = Watched::new(server, activity.clone());
        let a = activity.clone();
        let watch = tokio::spawn(async move { a.expired(DEADLINES).await });
        let writer = tokio::spawn(async move { server.write_all(&[0; 1024]).await });
        // 16 bytes every 20 s: every write waits, none for 30 s.
        let mut got = 0;
        while got < 1024 {
            tokio::time::sleep(Duration::from_secs(20)).await;
            let mut chunk = [0u8; 16];
            got += client.read(&mut chunk).await.unwrap();
        }
        writer.await.unwrap().unwrap();
        assert!(!watch.is_finished());
    }

    #[tokio::test(start_paused = true)]
    async fn a_response_body_holds_its_request_until_dropped() {
        let activity = Activity::new();
        let body = Tracked::new(Body::from("x"), activity.begin());
        assert_eq!(activity.in_progress.load(Ordering::Acquire), 1);
        drop(body);
        assert_eq!(activity.in_progress.load(Ordering::Acquire), 0);
    }
}
