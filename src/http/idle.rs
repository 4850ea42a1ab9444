//! The keep-alive idle deadline of one HTTP connection: closed when no request is in
//! progress and the client has sent nothing for `http_keep_alive_timeout_seconds`.
//!
//! hyper's own timer (`header_read_timeout`) bounds the time to a complete request
//! head, but cannot tell an idle keep-alive connection from a slow head, and it knows
//! nothing of the time a connection sits between requests when it is shorter. So the
//! connection's bytes are watched here: [`Watched`] wraps the socket and notes each
//! read, [`Activity::begin`] marks a request in progress from its head until its
//! response body is dropped ([`Tracked`]), and [`Activity::idle`] resolves once the
//! connection has been quiet for the deadline with nothing in progress. A request in
//! progress is bounded elsewhere: its body by the route's deadline, its handler by
//! the store's.

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

/// What one connection has been doing.
#[derive(Debug)]
pub struct Activity {
    start: Instant,
    /// Milliseconds after `start` of the last byte read or request finished.
    last_ms: AtomicU64,
    in_progress: AtomicUsize,
    /// Told when the last request in progress finishes.
    finished: Notify,
}

impl Activity {
    pub fn new() -> Arc<Self> {
        Arc::new(Activity {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
            in_progress: AtomicUsize::new(0),
            finished: Notify::new(),
        })
    }

    fn touch(&self) {
        let ms = self.start.elapsed().as_millis() as u64;
        self.last_ms.fetch_max(ms, Ordering::AcqRel);
    }

    /// A request is in progress until the returned guard is dropped.
    pub fn begin(self: &Arc<Self>) -> InProgress {
        self.in_progress.fetch_add(1, Ordering::AcqRel);
        InProgress(self.clone())
    }

    /// Resolves once nothing was in progress and nothing was read for `deadline`.
    pub async fn idle(&self, deadline: Duration) {
        loop {
            if self.in_progress.load(Ordering::Acquire) > 0 {
                // `notify_one` keeps a permit, so a finish between the load and this
                // wait is not missed.
                self.finished.notified().await;
                continue;
            }
            let until =
                self.start + Duration::from_millis(self.last_ms.load(Ordering::Acquire)) + deadline;
            if Instant::now() >= until {
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep_until(until) => {}
                _ = self.finished.notified() => {}
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
            activity.finished.notify_one();
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
        Pin::new(&mut self.inner).poll_write(cx, buf)
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
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const KEEP_ALIVE: Duration = Duration::from_secs(5);

    /// Whether `idle` has resolved after letting paused time run for `secs`.
    async fn idle_after(activity: &Arc<Activity>, secs: u64) -> bool {
        let a = activity.clone();
        let idle = tokio::spawn(async move { a.idle(KEEP_ALIVE).await });
        tokio::time::sleep(Duration::from_secs(secs)).await;
        tokio::task::yield_now().await;
        let done = idle.is_finished();
        idle.abort();
        done
    }

    #[tokio::test(start_paused = true)]
    async fn a_quiet_connection_is_idle_after_the_deadline() {
        let activity = Activity::new();
        assert!(!idle_after(&activity, 4).await);
        assert!(idle_after(&activity, 1).await);
    }

    #[tokio::test(start_paused = true)]
    async fn a_byte_read_starts_the_deadline_again() {
        let activity = Activity::new();
        let (client, server) = tokio::io::duplex(64);
        let (mut client, mut server) = (client, Watched::new(server, activity.clone()));
        tokio::time::sleep(Duration::from_secs(4)).await;
        client.write_all(b"G").await.unwrap();
        let mut byte = [0u8; 1];
        server.read_exact(&mut byte).await.unwrap();
        assert!(!idle_after(&activity, 4).await, "4 s after the byte");
        assert!(idle_after(&activity, 5).await, "5 s after the byte");
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_in_progress_is_never_idle_and_its_end_restarts_the_deadline() {
        let activity = Activity::new();
        let request = activity.begin();
        let a = activity.clone();
        let idle = tokio::spawn(async move { a.idle(KEEP_ALIVE).await });
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(!idle.is_finished(), "a minute into a request");
        drop(request);
        tokio::time::sleep(Duration::from_secs(4)).await;
        tokio::task::yield_now().await;
        assert!(!idle.is_finished(), "4 s after the response");
        tokio::time::sleep(Duration::from_secs(1)).await;
        idle.await.unwrap();
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
