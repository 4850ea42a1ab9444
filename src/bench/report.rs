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
        let l = &self.latency_ms;
        writeln!(
            f,
            "  latency ms  p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}",
            l.p50, l.p90, l.p99, l.p999, l.max
        )?;
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
