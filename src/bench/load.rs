//! The load itself: sign, connect, send on a schedule, receive, drain, count.

use futures::stream::{self, StreamExt};
use hdrhistogram::Histogram;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::report::{rss_kib, Latency, Report};
use super::{BenchConfig, BenchError};
use crate::client::{Tls, WsClient};
use crate::protocol::{Envelope, ErrorCode, Identity, ServerFrame};

/// Unanswered sends one sender keeps in flight at most (max-rate mode).
const MAX_OUTSTANDING: u64 = 512;
/// Connections opened at once while setting up: well below the relay's default
/// `http_max_connections_per_ip` (256), because each handshake holds one of those
/// places until its upgrade, and the generator is one IP.
const CONNECT_PARALLELISM: usize = 128;
/// Receivers acknowledge every this many deliveries (and when idle).
const ACK_EVERY: u64 = 16;

/// Counters shared by every task of a run.
struct Shared {
    start: Instant,
    /// Per message: nanoseconds after `start` when its frame was written (0: not yet).
    sent_at: Vec<AtomicU64>,
    accepted: Vec<AtomicBool>,
    deliveries: Vec<AtomicU8>,
    sent: AtomicU64,
    accepted_count: AtomicU64,
    delivered_count: AtomicU64,
    duplicates: AtomicU64,
    errors: Mutex<BTreeMap<String, u64>>,
    latency: Mutex<Histogram<u64>>,
    last_delivery_ns: AtomicU64,
}

impl Shared {
    fn error(&self, kind: &str) {
        if let Ok(mut e) = self.errors.lock() {
            *e.entry(kind.to_string()).or_default() += 1;
        }
    }

    fn since_start_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
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

pub(super) async fn run(cfg: BenchConfig) -> Result<Report, BenchError> {
    let tls = Tls::from_option(cfg.ca.as_deref())?;
    let recipients: Vec<Identity> = (0..cfg.connections).map(|_| Identity::generate()).collect();
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
    let (online_ids, offline_ids) = recipients.split_at(cfg.connections - offline);
    let stop = CancellationToken::new();

    let rss_start = cfg.relay_pid.and_then(rss_kib);
    let rss_peak = Arc::new(AtomicU64::new(rss_start.unwrap_or(0)));
    let sampler = cfg
        .relay_pid
        .map(|pid| tokio::spawn(sample_rss(pid, rss_peak.clone(), stop.clone())));
    let mut receivers = connect_all(&cfg, &cfg.server, online_ids, &tls).await?;
    let send_via = cfg.send_via.as_deref().unwrap_or(&cfg.server);
    let mut sender_sessions = connect_all(&cfg, send_via, &senders, &tls).await?;
    let shared = Arc::new(Shared {
        start: Instant::now(),
        sent_at: (0..total).map(|_| AtomicU64::new(0)).collect(),
        accepted: (0..total).map(|_| AtomicBool::new(false)).collect(),
        deliveries: (0..total).map(|_| AtomicU8::new(0)).collect(),
        sent: AtomicU64::new(0),
        accepted_count: AtomicU64::new(0),
        delivered_count: AtomicU64::new(0),
        duplicates: AtomicU64::new(0),
        errors: Mutex::new(BTreeMap::new()),
        latency: Mutex::new(histogram()),
        last_delivery_ns: AtomicU64::new(0),
    });

    let mut receiving = Vec::new();
    for ws in receivers.drain(..) {
        receiving.push(tokio::spawn(receive(ws, shared.clone(), stop.clone())));
    }
    let progress = cfg
        .progress
        .then(|| tokio::spawn(progress(shared.clone(), total as u64, stop.clone())));
    let mut sending = Vec::new();
    for (s, ws) in sender_sessions.drain(..).enumerate() {
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
    let send_s = shared.start.elapsed().as_secs_f64();

    // The offline share connects now and drains its queue.
    for ws in connect_all(&cfg, &cfg.server, offline_ids, &tls).await? {
        receiving.push(tokio::spawn(receive(ws, shared.clone(), stop.clone())));
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

fn report(cfg: &BenchConfig, shared: &Shared, send_s: f64, signing_s: f64) -> Report {
    let accepted = shared.accepted_count.load(Ordering::Relaxed);
    let delivered = shared.delivered_count.load(Ordering::Relaxed);
    let lost = (0..shared.accepted.len())
        .filter(|&i| {
            shared.accepted[i].load(Ordering::Relaxed)
                && shared.deliveries[i].load(Ordering::Relaxed) == 0
        })
        .count() as u64;
    let deliver_s =
        (shared.last_delivery_ns.load(Ordering::Relaxed) as f64 / 1e9).max(f64::MIN_POSITIVE);
    let latency = shared
        .latency
        .lock()
        .map(|h| Latency::from_histogram(&h))
        .unwrap_or_default();
    Report {
        connections: cfg.connections,
        senders: cfg.senders,
        target_rate: cfg.rate,
        size: cfg.size,
        codec: cfg.codec.subprotocol().to_string(),
        offline_share: cfg.offline_share,
        messages: shared.accepted.len() as u64,
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
        latency_ms: latency,
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
) -> Result<Vec<WsClient>, BenchError> {
    let results: Vec<_> = stream::iter(ids.iter())
        .map(|id| async move {
            WsClient::connect_with(server, id, None, cfg.codec, Some(tls))
                .await
                .map(|(ws, _)| ws)
        })
        .buffer_unordered(CONNECT_PARALLELISM)
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
                    self.shared.sent_at[i].store(self.shared.since_start_ns().max(1), Ordering::Relaxed);
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
            .then(|| self.shared.start + Duration::from_secs_f64(i as f64 / self.rate as f64))
    }

    /// Counts an answer; returns how many sends it answered.
    fn on_answer(&self, frame: ServerFrame) -> usize {
        match frame {
            ServerFrame::Accepted {
                reference: Some(i), ..
            } => {
                if let Some(flag) = self.shared.accepted.get(i as usize) {
                    flag.store(true, Ordering::Relaxed);
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

/// One recipient session: records deliveries and acknowledges them.
async fn receive(mut ws: WsClient, shared: Arc<Shared>, stop: CancellationToken) {
    let mut local = histogram();
    let (mut last_seq, mut acked) = (0u64, 0u64);
    loop {
        let frame = tokio::select! {
            _ = stop.cancelled() => break,
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
        let now = shared.since_start_ns();
        if let Some(i) = envelope
            .body
            .get(..8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_be_bytes)
        {
            if let Some(count) = shared.deliveries.get(i as usize) {
                if count.fetch_add(1, Ordering::Relaxed) == 0 {
                    shared.delivered_count.fetch_add(1, Ordering::Relaxed);
                    shared.last_delivery_ns.fetch_max(now, Ordering::Relaxed);
                    let sent = shared.sent_at[i as usize].load(Ordering::Relaxed);
                    let _ = local.record(now.saturating_sub(sent) / 1000);
                } else {
                    shared.duplicates.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        last_seq = seq;
        if last_seq - acked >= ACK_EVERY {
            if ws.ack(last_seq).await.is_err() {
                break;
            }
            acked = last_seq;
        }
    }
    if let Ok(mut h) = shared.latency.lock() {
        let _ = h.add(&local);
    }
    ws.close().await;
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
            shared.start.elapsed().as_secs_f64(),
            shared.sent.load(Ordering::Relaxed),
            shared.accepted_count.load(Ordering::Relaxed),
            shared.delivered_count.load(Ordering::Relaxed),
            shared.duplicates.load(Ordering::Relaxed),
        );
    }
}
