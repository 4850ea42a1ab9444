//! The load itself: sign, connect, send on a schedule, receive, drain, count.
//!
//! Every message's stages are timestamped on the generator's clock (frame written,
//! `accepted` read, first `deliver` read), so the report can split the latency into the
//! sender's round trip and the delivery, and into time windows: the warm-up, the rest,
//! each second, and the seconds after a reconnect storm. Nothing is timed per
//! connection, so 10,000 receivers cost the generator no more at start than 100.

use futures::stream::{self, StreamExt};
use hdrhistogram::Histogram;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::report::{rss_kib, Latency, Report, Storm, Window};
use super::{BenchConfig, BenchError};
use crate::client::{Tls, WsClient};
use crate::protocol::{Cursor, Envelope, ErrorCode, Identity, ServerFrame};

/// Unanswered sends one sender keeps in flight at most (max-rate mode).
const MAX_OUTSTANDING: u64 = 512;
/// Connections opened at once while setting up (and while reconnecting after a
/// storm): well below the relay's default `http_max_connections_per_ip` (256), because
/// each handshake holds one of those places until its upgrade, and the generator is
/// one IP.
const CONNECT_PARALLELISM: usize = 128;
/// Receivers acknowledge every this many deliveries (and when idle).
const ACK_EVERY: u64 = 16;
/// The windows the report cuts a run into after a storm, and the p99 a window must
/// stay under for the relay to count as recovered.
const STORM_WINDOW: Duration = Duration::from_millis(100);
const RECOVERED_P99_MS: f64 = 5.0;

/// Counters shared by every task of a run. Times are nanoseconds after `epoch`; 0 is
/// "not yet".
struct Shared {
    epoch: Instant,
    /// When the schedule started (after every receiver was running).
    start_ns: AtomicU64,
    sent_at: Vec<AtomicU64>,
    accepted_at: Vec<AtomicU64>,
    /// The first delivery of each message.
    delivered_at: Vec<AtomicU64>,
    deliveries: Vec<AtomicU8>,
    sent: AtomicU64,
    accepted_count: AtomicU64,
    delivered_count: AtomicU64,
    duplicates: AtomicU64,
    errors: Mutex<BTreeMap<String, u64>>,
    /// Receivers polled at least once (the clock starts when all are).
    running: AtomicUsize,
    /// Receivers connected again after the storm.
    reconnected: AtomicUsize,
    reconnected_at: AtomicU64,
}

impl Shared {
    fn new(total: usize) -> Self {
        let times = || (0..total).map(|_| AtomicU64::new(0)).collect();
        Shared {
            epoch: Instant::now(),
            start_ns: AtomicU64::new(0),
            sent_at: times(),
            accepted_at: times(),
            delivered_at: times(),
            deliveries: (0..total).map(|_| AtomicU8::new(0)).collect(),
            sent: AtomicU64::new(0),
            accepted_count: AtomicU64::new(0),
            delivered_count: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            errors: Mutex::new(BTreeMap::new()),
            running: AtomicUsize::new(0),
            reconnected: AtomicUsize::new(0),
            reconnected_at: AtomicU64::new(0),
        }
    }

    fn error(&self, kind: &str) {
        if let Ok(mut e) = self.errors.lock() {
            *e.entry(kind.to_string()).or_default() += 1;
        }
    }

    /// Now, never 0 (0 means "not yet").
    fn now_ns(&self) -> u64 {
        (self.epoch.elapsed().as_nanos() as u64).max(1)
    }

    fn start(&self) -> Instant {
        self.epoch + Duration::from_nanos(self.start_ns.load(Ordering::Relaxed))
    }

    fn elapsed_s(&self) -> f64 {
        self.start().elapsed().as_secs_f64()
    }
}

fn histogram() -> Histogram<u64> {
    // Microseconds, up to 10 minutes, 3 significant digits.
    Histogram::new_with_bounds(1, 600_000_000, 3)
        .unwrap_or_else(|_| Histogram::new(3).expect("histogram"))
}

/// Signs every envelope up front on all cores: message `i` goes from sender `i % S`
/// to recipient `i % N`, and its body starts with `i`.
fn sign_all(
    cfg: &BenchConfig,
    senders: &[Identity],
    recipients: &[Identity],
    now_ms: u64,
) -> Vec<Envelope> {
    let total = cfg.total_messages() as usize;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = total.div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..total)
            .step_by(chunk)
            .map(|from| {
                scope.spawn(move || {
                    (from..(from + chunk).min(total))
                        .map(|i| {
                            let mut body = vec![0x2a; cfg.size];
                            body[..8].copy_from_slice(&(i as u64).to_be_bytes());
                            let to = recipients[i % recipients.len()].public_key();
                            Envelope::seal(&senders[i % senders.len()], to, now_ms, false, body)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    })
}

/// What a receiver needs to reconnect in a storm.
#[derive(Clone)]
struct Reconnect {
    server: String,
    codec: crate::protocol::Codec,
    tls: Tls,
    storm: CancellationToken,
    permits: Arc<Semaphore>,
}

pub(super) async fn run(cfg: BenchConfig) -> Result<Report, BenchError> {
    let tls = Tls::from_option(cfg.ca.as_deref())?;
    let recipients: Arc<Vec<Identity>> =
        Arc::new((0..cfg.connections).map(|_| Identity::generate()).collect());
    let senders: Vec<Identity> = (0..cfg.senders).map(|_| Identity::generate()).collect();
    let signing = std::time::Instant::now();
    let envelopes = Arc::new(sign_all(
        &cfg,
        &senders,
        &recipients,
        crate::clock::Clock::system().now_ms(),
    ));
    let signing_s = signing.elapsed().as_secs_f64();
    let total = envelopes.len();

    let offline = ((cfg.connections as f64) * cfg.offline_share).round() as usize;
    let online = cfg.connections - offline;
    let (online_ids, offline_ids) = recipients.split_at(online);
    let stop = CancellationToken::new();

    let rss_start = cfg.relay_pid.and_then(rss_kib);
    let rss_peak = Arc::new(AtomicU64::new(rss_start.unwrap_or(0)));
    let sampler = cfg
        .relay_pid
        .map(|pid| tokio::spawn(sample_rss(pid, rss_peak.clone(), stop.clone())));
    let receivers = connect_all(&cfg, &cfg.server, online_ids, &tls).await?;
    let send_via = cfg.send_via.as_deref().unwrap_or(&cfg.server);
    let mut sender_sessions = connect_all(&cfg, send_via, &senders, &tls).await?;
    let shared = Arc::new(Shared::new(total));
    let reconnect = Reconnect {
        server: cfg.server.clone(),
        codec: cfg.codec,
        tls: tls.clone(),
        storm: CancellationToken::new(),
        permits: Arc::new(Semaphore::new(CONNECT_PARALLELISM)),
    };

    let mut receiving = Vec::new();
    for (index, (ws, ready)) in receivers.into_iter().enumerate() {
        let receiver = Receiver {
            ids: recipients.clone(),
            index,
            epoch: ready.epoch,
            shared: shared.clone(),
            stop: stop.clone(),
            reconnect: Some(reconnect.clone()),
        };
        receiving.push(tokio::spawn(receiver.run(ws)));
    }
    // The clock starts once every receiver is reading: a receiver's first poll is
    // work the generator would otherwise do inside the measured window.
    while shared.running.load(Ordering::Relaxed) < online {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    shared.start_ns.store(shared.now_ns(), Ordering::Relaxed);
    let progress = cfg
        .progress
        .then(|| tokio::spawn(progress(shared.clone(), total as u64, stop.clone())));
    let storm = (cfg.storm_at > Duration::ZERO).then(|| {
        let (shared, storm, at) = (shared.clone(), reconnect.storm.clone(), cfg.storm_at);
        let say = cfg.progress;
        tokio::spawn(async move {
            tokio::time::sleep_until(shared.start() + at).await;
            if say {
                eprintln!(
                    "[{:>5.1}s] storm: every receiver drops and reconnects",
                    shared.elapsed_s()
                );
            }
            storm.cancel();
        })
    });
    let mut sending = Vec::new();
    for (s, (ws, _)) in sender_sessions.drain(..).enumerate() {
        let job = SendJob {
            index: s,
            senders: cfg.senders,
            rate: cfg.rate,
            envelopes: envelopes.clone(),
            shared: shared.clone(),
        };
        sending.push(tokio::spawn(job.run(ws)));
    }
    for task in sending {
        let _ = task.await;
    }
    let send_s = shared.elapsed_s();
    if let Some(s) = storm {
        let _ = s.await;
    }

    // The offline share connects now and drains its queue.
    let late = connect_all(&cfg, &cfg.server, offline_ids, &tls).await?;
    for (index, (ws, ready)) in late.into_iter().enumerate() {
        let receiver = Receiver {
            ids: recipients.clone(),
            index: online + index,
            epoch: ready.epoch,
            shared: shared.clone(),
            stop: stop.clone(),
            reconnect: None,
        };
        receiving.push(tokio::spawn(receiver.run(ws)));
    }
    let deadline = Instant::now() + cfg.drain;
    while shared.delivered_count.load(Ordering::Relaxed)
        < shared.accepted_count.load(Ordering::Relaxed)
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.cancel();
    for task in receiving {
        let _ = task.await;
    }
    if let Some(p) = progress {
        let _ = p.await;
    }
    if let Some(s) = sampler {
        let _ = s.await;
    }
    let mut report = report(&cfg, &shared, send_s, signing_s);
    report.relay_rss_start_kib = rss_start;
    report.relay_rss_peak_kib = cfg.relay_pid.map(|_| rss_peak.load(Ordering::Relaxed));
    Ok(report)
}

/// Latencies of the messages sent in `[from_ns, to_ns)` after the start, as a histogram
/// of microseconds: `sent → delivered`, or `sent → accepted` with `accept`.
fn latencies(shared: &Shared, from_ns: u64, to_ns: u64, accept: bool) -> Histogram<u64> {
    let start = shared.start_ns.load(Ordering::Relaxed);
    let mut h = histogram();
    for i in 0..shared.sent_at.len() {
        let sent = shared.sent_at[i].load(Ordering::Relaxed);
        if sent == 0 || sent < start + from_ns || sent >= start.saturating_add(to_ns) {
            continue;
        }
        let at = if accept {
            &shared.accepted_at[i]
        } else {
            &shared.delivered_at[i]
        };
        let at = at.load(Ordering::Relaxed);
        if at != 0 {
            let _ = h.record(at.saturating_sub(sent) / 1000);
        }
    }
    h
}

/// With a schedule (`rate` > 0): how late each send left against it, in microseconds.
fn send_lag(rate: u64, shared: &Shared) -> Option<Histogram<u64>> {
    if rate == 0 {
        return None;
    }
    let start = shared.start_ns.load(Ordering::Relaxed);
    let mut h = histogram();
    for (i, sent) in shared.sent_at.iter().enumerate() {
        let sent = sent.load(Ordering::Relaxed);
        if sent == 0 {
            continue;
        }
        // As `SendJob::due` computes it.
        let due = start + Duration::from_secs_f64(i as f64 / rate as f64).as_nanos() as u64;
        let _ = h.record(sent.saturating_sub(due) / 1000);
    }
    Some(h)
}

/// One-second windows of send time, from the start to the last send.
fn timeline(shared: &Shared, send_s: f64) -> Vec<Window> {
    let seconds = send_s.ceil().max(1.0) as u64;
    (0..seconds)
        .map(|s| {
            let h = latencies(shared, s * 1_000_000_000, (s + 1) * 1_000_000_000, false);
            Window {
                second: s,
                messages: h.len(),
                p99_ms: Latency::from_histogram(&h).p99,
                max_ms: Latency::from_histogram(&h).max,
            }
        })
        .collect()
}

/// After the storm: how long until every 100 ms window of send time (to the end of
/// sending) has its p99 under 5 ms and all its messages delivered.
fn storm(cfg: &BenchConfig, shared: &Shared, send_ns: u64) -> Option<Storm> {
    let at = cfg.storm_at.as_nanos() as u64;
    if at == 0 || at >= send_ns {
        return None;
    }
    let start = shared.start_ns.load(Ordering::Relaxed);
    let step = STORM_WINDOW.as_nanos() as u64;
    let mut recovered_ns = 0;
    let mut last_bad = false;
    let mut from = at;
    while from < send_ns {
        let h = latencies(shared, from, from + step, false);
        let sent = (0..shared.sent_at.len())
            .filter(|&i| {
                let t = shared.sent_at[i].load(Ordering::Relaxed);
                t != 0 && t >= start + from && t < start + from + step
            })
            .count() as u64;
        let bad = h.len() < sent || Latency::from_histogram(&h).p99 >= RECOVERED_P99_MS;
        if bad {
            recovered_ns = from + step - at;
        }
        last_bad = bad;
        from += step;
    }
    let reconnected = shared.reconnected_at.load(Ordering::Relaxed);
    Some(Storm {
        at_s: cfg.storm_at.as_secs_f64(),
        receivers: cfg.connections
            - ((cfg.connections as f64) * cfg.offline_share).round() as usize,
        reconnected: shared.reconnected.load(Ordering::Relaxed),
        all_reconnected_after_s: (reconnected != 0)
            .then(|| reconnected.saturating_sub(start + at) as f64 / 1e9),
        p99_under_5ms_after_s: (!last_bad).then_some(recovered_ns as f64 / 1e9),
        latency_ms: Latency::from_histogram(&latencies(shared, at, send_ns, false)),
    })
}

fn report(cfg: &BenchConfig, shared: &Shared, send_s: f64, signing_s: f64) -> Report {
    let accepted = shared.accepted_count.load(Ordering::Relaxed);
    let delivered = shared.delivered_count.load(Ordering::Relaxed);
    let lost = (0..shared.accepted_at.len())
        .filter(|&i| {
            shared.accepted_at[i].load(Ordering::Relaxed) != 0
                && shared.deliveries[i].load(Ordering::Relaxed) == 0
        })
        .count() as u64;
    let start = shared.start_ns.load(Ordering::Relaxed);
    let last_delivery = shared
        .delivered_at
        .iter()
        .map(|t| t.load(Ordering::Relaxed))
        .max()
        .unwrap_or(0)
        .saturating_sub(start);
    let deliver_s = (last_delivery as f64 / 1e9).max(f64::MIN_POSITIVE);
    let send_ns = (send_s * 1e9) as u64;
    let warmup_ns = (cfg.warmup.as_nanos() as u64).min(send_ns);
    let all = |accept| Latency::from_histogram(&latencies(shared, 0, u64::MAX, accept));
    Report {
        connections: cfg.connections,
        senders: cfg.senders,
        target_rate: cfg.rate,
        size: cfg.size,
        codec: cfg.codec.subprotocol().to_string(),
        offline_share: cfg.offline_share,
        messages: shared.sent_at.len() as u64,
        sent: shared.sent.load(Ordering::Relaxed),
        accepted,
        delivered,
        accepted_per_s: accepted as f64 / send_s.max(f64::MIN_POSITIVE),
        delivered_per_s: delivered as f64 / deliver_s,
        send_seconds: send_s,
        signing_seconds: signing_s,
        lost,
        duplicates: shared.duplicates.load(Ordering::Relaxed),
        errors: shared.errors.lock().map(|e| e.clone()).unwrap_or_default(),
        latency_ms: all(false),
        accept_latency_ms: all(true),
        send_lag_ms: send_lag(cfg.rate, shared).map(|h| Latency::from_histogram(&h)),
        warmup_seconds: cfg.warmup.as_secs_f64(),
        warmup_latency_ms: Latency::from_histogram(&latencies(shared, 0, warmup_ns, false)),
        after_warmup_latency_ms: Latency::from_histogram(&latencies(
            shared,
            warmup_ns,
            u64::MAX,
            false,
        )),
        timeline: timeline(shared, send_s),
        storm: storm(cfg, shared, send_ns),
        relay_rss_kib: cfg.relay_pid.and_then(rss_kib),
        relay_rss_start_kib: None,
        relay_rss_peak_kib: None,
        adjusted: Vec::new(),
        verify_ceiling: None,
    }
}

/// Connects and authenticates every identity, a few hundred at a time.
async fn connect_all(
    cfg: &BenchConfig,
    server: &str,
    ids: &[Identity],
    tls: &Tls,
) -> Result<Vec<(WsClient, crate::client::Ready)>, BenchError> {
    let results: Vec<_> =
        stream::iter(ids.iter())
            .map(|id| async move {
                WsClient::connect_with(server, id, None, cfg.codec, Some(tls)).await
            })
            .buffered(CONNECT_PARALLELISM)
            .collect()
            .await;
    results
        .into_iter()
        .map(|r| r.map_err(BenchError::from))
        .collect()
}

/// One sender session's share of the schedule.
struct SendJob {
    index: usize,
    senders: usize,
    rate: u64,
    envelopes: Arc<Vec<Envelope>>,
    shared: Arc<Shared>,
}

impl SendJob {
    async fn run(self, mut ws: WsClient) {
        let mine: Vec<usize> = (self.index..self.envelopes.len())
            .step_by(self.senders)
            .collect();
        let (mut next, mut answered) = (0usize, 0usize);
        while answered < mine.len() {
            let due = mine.get(next).and_then(|&i| self.due(i));
            let can_send = next < mine.len()
                && (self.rate > 0 || ((next - answered) as u64) < MAX_OUTSTANDING);
            tokio::select! {
                biased;
                frame = ws.next_frame() => match frame {
                    Ok(f) => answered += self.on_answer(f),
                    Err(e) => {
                        self.shared.error(&format!("sender connection: {e}"));
                        return;
                    }
                },
                _ = sleep_until_opt(due), if can_send => {
                    let i = mine[next];
                    next += 1;
                    self.shared.sent_at[i].store(self.shared.now_ns(), Ordering::Relaxed);
                    self.shared.sent.fetch_add(1, Ordering::Relaxed);
                    if ws.send(&self.envelopes[i], Some(i as u64)).await.is_err() {
                        self.shared.error("sender connection: write failed");
                        return;
                    }
                }
            }
        }
        ws.close().await;
    }

    /// When message `i` is due: on the open-loop schedule, or now in max-rate mode.
    fn due(&self, i: usize) -> Option<Instant> {
        (self.rate > 0)
            .then(|| self.shared.start() + Duration::from_secs_f64(i as f64 / self.rate as f64))
    }

    /// Counts an answer; returns how many sends it answered.
    fn on_answer(&self, frame: ServerFrame) -> usize {
        match frame {
            ServerFrame::Accepted {
                reference: Some(i), ..
            } => {
                if let Some(at) = self.shared.accepted_at.get(i as usize) {
                    at.store(self.shared.now_ns(), Ordering::Relaxed);
                    self.shared.accepted_count.fetch_add(1, Ordering::Relaxed);
                }
                1
            }
            ServerFrame::Error {
                code,
                reference: Some(_),
                ..
            } => {
                self.shared.error(ErrorCode::as_str(code));
                1
            }
            _ => 0,
        }
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    if let Some(at) = at {
        tokio::time::sleep_until(at).await;
    }
}

/// One recipient session: records deliveries and acknowledges them; in a storm it
/// drops its connection and connects again, resuming after what it processed.
struct Receiver {
    ids: Arc<Vec<Identity>>,
    index: usize,
    epoch: u64,
    shared: Arc<Shared>,
    stop: CancellationToken,
    reconnect: Option<Reconnect>,
}

impl Receiver {
    async fn run(mut self, mut ws: WsClient) {
        self.shared.running.fetch_add(1, Ordering::Relaxed);
        let (mut last_seq, mut acked) = (0u64, 0u64);
        let storm = self.reconnect.as_ref().map(|r| r.storm.clone());
        let mut stormed = false;
        loop {
            let frame = tokio::select! {
                _ = self.stop.cancelled() => break,
                _ = cancelled_opt(storm.as_ref()), if !stormed => {
                    stormed = true;
                    drop(ws);
                    match self.connect_again(last_seq).await {
                        Some(again) => ws = again,
                        None => return,
                    }
                    acked = last_seq;
                    continue;
                }
                _ = tokio::time::sleep(Duration::from_millis(20)), if last_seq > acked => {
                    if ws.ack(last_seq).await.is_err() { break; }
                    acked = last_seq;
                    continue;
                }
                f = ws.next_frame() => f,
            };
            let Ok(ServerFrame::Deliver {
                seq: Some(seq),
                envelope,
                ..
            }) = frame
            else {
                if frame.is_err() {
                    break;
                }
                continue;
            };
            let now = self.shared.now_ns();
            self.on_delivery(&envelope.body, now);
            last_seq = seq;
            if last_seq - acked >= ACK_EVERY {
                if ws.ack(last_seq).await.is_err() {
                    break;
                }
                acked = last_seq;
            }
        }
        ws.close().await;
    }

    fn on_delivery(&self, body: &[u8], now: u64) {
        let shared = &self.shared;
        let Some(i) = body
            .get(..8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_be_bytes)
        else {
            return;
        };
        let Some(count) = shared.deliveries.get(i as usize) else {
            return;
        };
        if count.fetch_add(1, Ordering::Relaxed) == 0 {
            shared.delivered_count.fetch_add(1, Ordering::Relaxed);
            shared.delivered_at[i as usize].store(now, Ordering::Relaxed);
        } else {
            shared.duplicates.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Connects again after everything through `processed`, as a client does after
    /// losing its connection: the relay deletes those and sends the rest.
    async fn connect_again(&mut self, processed: u64) -> Option<WsClient> {
        let r = self.reconnect.as_ref()?;
        let _permit = r.permits.acquire().await.ok()?;
        let cursor = (processed > 0).then_some(Cursor {
            epoch: self.epoch,
            seq: processed,
        });
        match WsClient::connect_with(
            &r.server,
            &self.ids[self.index],
            cursor,
            r.codec,
            Some(&r.tls),
        )
        .await
        {
            Ok((ws, ready)) => {
                self.epoch = ready.epoch;
                self.shared.reconnected.fetch_add(1, Ordering::Relaxed);
                self.shared
                    .reconnected_at
                    .fetch_max(self.shared.now_ns(), Ordering::Relaxed);
                Some(ws)
            }
            Err(e) => {
                self.shared.error(&format!("reconnect: {e}"));
                None
            }
        }
    }
}

async fn cancelled_opt(token: Option<&CancellationToken>) {
    match token {
        Some(t) => t.cancelled().await,
        None => std::future::pending().await,
    }
}

/// Samples the relay's resident memory every 100 ms, keeping the peak.
async fn sample_rss(pid: u32, peak: Arc<AtomicU64>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Some(kib) = rss_kib(pid) {
            peak.fetch_max(kib, Ordering::Relaxed);
        }
    }
}

/// A progress line on stderr every second.
async fn progress(shared: Arc<Shared>, total: u64, stop: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let errors: u64 = shared.errors.lock().map(|e| e.values().sum()).unwrap_or(0);
        eprintln!(
            "[{:>5.1}s] sent {}/{total}  accepted {}  delivered {}  duplicates {}  errors {errors}",
            shared.elapsed_s(),
            shared.sent.load(Ordering::Relaxed),
            shared.accepted_count.load(Ordering::Relaxed),
            shared.delivered_count.load(Ordering::Relaxed),
            shared.duplicates.load(Ordering::Relaxed),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn send_lag_is_each_send_against_its_own_slot_of_the_schedule() {
        // 1,000 msgs/s from 1 s after the epoch: message i is due at 1 s + i ms.
        let shared = Shared::new(5);
        let start = 1_000_000_000;
        shared.start_ns.store(start, Ordering::Relaxed);
        let ms = 1_000_000;
        // Late by 0, 2, 0 and 7 ms; message 3 was never sent.
        for (i, late) in [(0, 0), (1, 2 * ms), (2, 0), (4, 7 * ms)] {
            shared.sent_at[i].store(start + i as u64 * ms + late, Ordering::Relaxed);
        }
        let lag = send_lag(1000, &shared).expect("a schedule");
        assert_eq!(lag.len(), 4, "unsent messages are not counted");
        assert_eq!(lag.value_at_quantile(0.5), 0);
        assert!(lag.equivalent(lag.max(), 7_000), "max {} µs", lag.max());
        assert!(lag.equivalent(lag.value_at_quantile(0.7), 2_000));
        assert!(send_lag(0, &shared).is_none(), "max rate has no schedule");
    }
}
