//! The bench report: a table for people, one JSON line for scripts.

use hdrhistogram::Histogram;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt;

/// End-to-end latency percentiles in milliseconds (send frame written to deliver
/// frame read, both on the generator's clock).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Latency {
    pub fn from_histogram(h: &Histogram<u64>) -> Self {
        let ms = |us: u64| us as f64 / 1000.0;
        Latency {
            p50: ms(h.value_at_quantile(0.5)),
            p90: ms(h.value_at_quantile(0.9)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
        }
    }
}

/// One second of send time: how its messages fared.
#[derive(Debug, Clone, Serialize)]
pub struct Window {
    /// Seconds after the start.
    pub second: u64,
    /// Messages sent in this second and delivered.
    pub messages: u64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// A reconnect storm: every online receiver dropped its connection at `at_s` and
/// connected again at once (as after a relay restart), while sending went on.
#[derive(Debug, Clone, Serialize)]
pub struct Storm {
    pub at_s: f64,
    pub receivers: usize,
    pub reconnected: usize,
    /// From the storm until the last receiver was authenticated again.
    pub all_reconnected_after_s: Option<f64>,
    /// From the storm until every later 100 ms window of send time had its p99 under
    /// 5 ms and all its messages delivered; `None`: not before sending ended.
    pub p99_under_5ms_after_s: Option<f64>,
    /// Messages sent from the storm on (their latency includes the time their
    /// recipient was away).
    pub latency_ms: Latency,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub connections: usize,
    pub senders: usize,
    pub target_rate: u64,
    pub size: usize,
    pub codec: String,
    pub offline_share: f64,
    pub messages: u64,
    pub sent: u64,
    pub accepted: u64,
    pub delivered: u64,
    pub accepted_per_s: f64,
    pub delivered_per_s: f64,
    pub send_seconds: f64,
    pub signing_seconds: f64,
    /// Accepted by the relay but never delivered.
    pub lost: u64,
    /// Deliveries of a message beyond its first.
    pub duplicates: u64,
    pub errors: BTreeMap<String, u64>,
    pub latency_ms: Latency,
    /// Send frame written to `accepted` read, on the sender's session: the relay's
    /// answer path alone, beside `latency_ms`, which adds the recipient's.
    pub accept_latency_ms: Latency,
    /// With `--rate`: how late each send frame left against its schedule, the
    /// generator's own delay. Latencies are counted from the frame's real send time, so
    /// this is not in them; but a generator that stalls sends its backlog in a burst,
    /// which then queues in the relay. A tail here explains a tail above.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub send_lag_ms: Option<Latency>,
    /// The first `warmup_seconds` of sending, reported apart so a transient right after
    /// the sessions connect is never hidden in (nor hides) the rest.
    pub warmup_seconds: f64,
    pub warmup_latency_ms: Latency,
    pub after_warmup_latency_ms: Latency,
    /// Each second of sending.
    pub timeline: Vec<Window>,
    pub storm: Option<Storm>,
    /// The relay's RSS at the end of the run.
    pub relay_rss_kib: Option<u64>,
    /// Before the bench connected anything.
    pub relay_rss_start_kib: Option<u64>,
    /// The highest RSS sampled (every 100 ms) during the run.
    pub relay_rss_peak_kib: Option<u64>,
    /// How the values the user left at their defaults were fitted to the relay's
    /// published limits, one sentence each.
    pub adjusted: Vec<String>,
    /// `--verify-ceiling`: signatures per second this machine verifies, measured
    /// just before the run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verify_ceiling: Option<super::ceiling::Ceiling>,
}

/// Resident memory of a process, from /proc (Linux).
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let rate = if self.target_rate == 0 {
            "max".to_string()
        } else {
            format!("{}/s", self.target_rate)
        };
        writeln!(
            f,
            "whispr bench: {} connections ({:.0}% offline), {} senders, rate {rate}, {} B bodies, {}",
            self.connections,
            self.offline_share * 100.0,
            self.senders,
            self.size,
            self.codec
        )?;
        for note in &self.adjusted {
            writeln!(f, "  fitted: {note}")?;
        }
        writeln!(
            f,
            "  messages    {:>12}  (signed in {:.1} s before the clock started)",
            self.messages, self.signing_seconds
        )?;
        writeln!(f, "  sent        {:>12}", self.sent)?;
        writeln!(
            f,
            "  accepted    {:>12}  {:>10.0} msg/s over {:.2} s",
            self.accepted, self.accepted_per_s, self.send_seconds
        )?;
        writeln!(
            f,
            "  delivered   {:>12}  {:>10.0} msg/s",
            self.delivered, self.delivered_per_s
        )?;
        writeln!(f, "  lost        {:>12}", self.lost)?;
        writeln!(f, "  duplicates  {:>12}", self.duplicates)?;
        let line = |f: &mut fmt::Formatter, name: &str, l: &Latency| {
            writeln!(
                f,
                "  {name:<11} p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}",
                l.p50, l.p90, l.p99, l.p999, l.max
            )
        };
        line(f, "latency ms", &self.latency_ms)?;
        line(
            f,
            &format!("  first {:.0} s", self.warmup_seconds),
            &self.warmup_latency_ms,
        )?;
        line(f, "  after", &self.after_warmup_latency_ms)?;
        line(f, "accepted ms", &self.accept_latency_ms)?;
        if let Some(lag) = &self.send_lag_ms {
            line(f, "send lag ms", lag)?;
        }
        let p99s: Vec<String> = self
            .timeline
            .iter()
            .map(|w| format!("{:.1}", w.p99_ms))
            .collect();
        writeln!(f, "  p99 by s    {}", p99s.join(" "))?;
        if let Some(s) = &self.storm {
            writeln!(
                f,
                "  storm       at {:.1} s: {}/{} reconnected{}; p99 under 5 ms {}",
                s.at_s,
                s.reconnected,
                s.receivers,
                s.all_reconnected_after_s
                    .map_or(String::new(), |t| format!(" within {t:.2} s")),
                s.p99_under_5ms_after_s.map_or_else(
                    || "not again before sending ended".to_string(),
                    |t| format!("{t:.1} s after it")
                ),
            )?;
            line(f, "  since", &s.latency_ms)?;
        }
        if self.errors.is_empty() {
            writeln!(f, "  errors      none")?;
        } else {
            for (kind, n) in &self.errors {
                writeln!(f, "  error       {n:>12}  {kind}")?;
            }
        }
        if let (Some(start), Some(peak), Some(end)) = (
            self.relay_rss_start_kib,
            self.relay_rss_peak_kib,
            self.relay_rss_kib,
        ) {
            let per_conn = peak.saturating_sub(start) as f64 / self.connections.max(1) as f64;
            writeln!(
                f,
                "  relay RSS   start {start} KiB, peak {peak} KiB, end {end} KiB ({per_conn:.1} KiB per connection at peak)"
            )?;
        }
        if let Some(c) = &self.verify_ceiling {
            // The relay's rate is what was both accepted and delivered.
            let rate = self.accepted_per_s.min(self.delivered_per_s);
            writeln!(
                f,
                "  verify ceiling (signatures/s; 1 core | {} cores; the relay's rate as a ratio):",
                c.threads
            )?;
            for (name, one, all) in [
                (
                    "verify_strict",
                    c.verify_strict_one_core,
                    c.verify_strict_all_cores,
                ),
                ("single ZIP-215", c.single_one_core, c.single_all_cores),
                ("batch of 64", c.batch_one_core, c.batch_all_cores),
            ] {
                writeln!(
                    f,
                    "    {name:<15} {one:>9.0} | {all:>9.0}   relay {:.2}x | {:.2}x",
                    rate / one,
                    rate / all
                )?;
            }
        }
        Ok(())
    }
}
