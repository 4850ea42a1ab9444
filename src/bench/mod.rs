//! `whispr bench`: a load generator against any relay.
//!
//! It opens `connections` authenticated recipient sessions (a share of them only after
//! the send phase, to exercise offline queues) and `senders` sender sessions, signs
//! every envelope before the clock starts (so it measures the relay, not its own
//! signing), then sends at a target rate (open loop: the schedule does not wait for
//! answers) or as fast as the relay accepts. Each body carries its message's index, so
//! the receivers can time end-to-end latency and find losses and duplicates.

pub mod ceiling;
mod fit;
mod load;
mod report;

use std::time::Duration;

use crate::protocol::Codec;

pub use fit::{Defaulted, RelayLimits};
pub use report::Report;

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// The relay the recipients connect to (and the senders, without `send_via`).
    pub server: String,
    /// Multi-node runs: the senders connect to this relay instead, so every message
    /// crosses from one node to the other (through Redis).
    pub send_via: Option<String>,
    /// Recipient sessions.
    pub connections: usize,
    /// Sender sessions.
    pub senders: usize,
    /// Messages per second, all senders together; 0 = as fast as accepted.
    pub rate: u64,
    /// With `rate = 0`: how many messages to send.
    pub max_messages: u64,
    /// Body bytes per message (at least 8: the index).
    pub size: usize,
    pub duration: Duration,
    pub codec: Codec,
    /// Share of recipients that connect only after sending ends (0.0..=1.0).
    pub offline_share: f64,
    /// How long to wait for the last deliveries after sending ends.
    pub drain: Duration,
    /// The first part of sending reported apart (`Report::warmup_latency_ms`).
    pub warmup: Duration,
    /// When (after the start) every online receiver drops its connection and connects
    /// again at once; zero: never.
    pub storm_at: Duration,
    /// The relay's pid, to report its RSS.
    pub relay_pid: Option<u32>,
    /// PEM file to trust for wss.
    pub ca: Option<std::path::PathBuf>,
    /// Print a progress line every second on stderr.
    pub progress: bool,
    /// Which values are the command's defaults, fitted to the relay's limits.
    pub defaulted: Defaulted,
    /// Measure the machine's verification ceiling before the run (`ceiling.rs`) and
    /// report the relay's rate as ratios to it.
    pub verify_ceiling: bool,
}

impl BenchConfig {
    /// How many messages the run sends.
    pub fn total_messages(&self) -> u64 {
        if self.rate == 0 {
            self.max_messages
        } else {
            self.rate * self.duration.as_secs().max(1)
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("bench setup: {0}")]
    Setup(String),
    #[error(transparent)]
    Client(#[from] crate::client::ClientError),
}

/// Runs the benchmark and returns its report.
pub async fn run(config: BenchConfig) -> Result<Report, BenchError> {
    if config.connections == 0 || config.senders == 0 {
        return Err(BenchError::Setup(
            "connections and senders must be at least 1".into(),
        ));
    }
    if config.size < 8 {
        return Err(BenchError::Setup("size must be at least 8 bytes".into()));
    }
    if !(0.0..=1.0).contains(&config.offline_share) {
        return Err(BenchError::Setup(
            "offline share must be between 0 and 1".into(),
        ));
    }
    // Many sessions need many descriptors; raise the soft limit as far as allowed.
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let mut config = config;
    let mut adjusted = Vec::new();
    if config.defaulted != Defaulted::default() {
        adjusted = fit_to_relay(&mut config).await?;
    }
    let ceiling = if config.verify_ceiling {
        if config.progress {
            eprintln!("whispr bench: measuring the verification ceiling (6 s)");
        }
        let senders = config.senders;
        let c =
            tokio::task::spawn_blocking(move || ceiling::measure(Duration::from_secs(1), senders))
                .await
                .map_err(|e| BenchError::Setup(format!("measuring the ceiling: {e}")))?;
        Some(c)
    } else {
        None
    };
    let mut report = load::run(config).await?;
    report.adjusted = adjusted;
    report.verify_ceiling = ceiling;
    Ok(report)
}

/// Reads the relay's limits and fits the defaulted values to them (see `fit`).
async fn fit_to_relay(config: &mut BenchConfig) -> Result<Vec<String>, BenchError> {
    let tls = crate::client::Tls::from_option(config.ca.as_deref())?;
    let http = crate::client::HttpClient::with_tls(&config.server, config.codec, &tls)?;
    let info = http.info().await?;
    let limits: RelayLimits = serde_json::from_value(info["limits"].clone()).map_err(|e| {
        BenchError::Setup(format!(
            "the relay's /v1/info has no usable limits ({e}); give --connections and --rate"
        ))
    })?;
    let notes = fit::fit(config, &limits);
    if config.progress {
        for note in &notes {
            eprintln!("whispr bench: {note}");
        }
    }
    Ok(notes)
}
