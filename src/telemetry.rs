//! Tracing setup: text or JSON lines on stderr. Bodies and signatures are never logged:
//! their types print only placeholders.
//!
//! Colour only when a person reads the log: stderr is a terminal, `NO_COLOR` is unset,
//! and systemd's journal (`JOURNAL_STREAM`) is not the reader. A file or the journal
//! gets plain text, without `^[[2m` sequences.
//!
//! Failures a client causes (a TLS handshake that fails, a sign-in that is refused) are
//! what an operator looks for when clients cannot connect, but a scanner can cause them
//! by the thousand: they are logged at info through [`client_failure`], at most
//! `log_client_failures_per_minute` lines a minute per kind, and the next line admitted
//! says how many were left out.

use std::ffi::OsString;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tracing_subscriber::EnvFilter;

use crate::config::{require, Config, Invalid, LogFormat};

/// `log_level` must be a filter tracing can use.
pub(crate) fn validate(c: &Config) -> Result<(), Invalid> {
    require(
        EnvFilter::try_new(&c.log_level).is_ok(),
        "log_level",
        "not a valid filter (try `info` or `whispr=debug,info`)",
    )
}

/// Installs the global subscriber. `RUST_LOG`, when set, overrides `log_level`.
pub fn init(config: &Config) {
    FAILURE_LINES_PER_MINUTE.store(config.log_client_failures_per_minute, Ordering::Relaxed);
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.log_level));
    let ansi = use_colour(
        std::io::stderr().is_terminal(),
        std::env::var_os("NO_COLOR"),
        std::env::var_os("JOURNAL_STREAM").is_some(),
    );
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let result = match config.log_format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    // A second init (tests starting several relays) keeps the first subscriber.
    let _ = result;
}

/// Whether log lines carry ANSI colour: only for a terminal, unless `NO_COLOR` is set
/// to anything but the empty string (no-color.org) or the journal reads stderr (a
/// unit's stderr may be a terminal-less stream that journald stores verbatim).
fn use_colour(stderr_is_terminal: bool, no_color: Option<OsString>, journal: bool) -> bool {
    stderr_is_terminal && no_color.is_none_or(|v| v.is_empty()) && !journal
}

/// A kind of failure caused by a client, logged at a bounded rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientFailure {
    /// A TLS handshake that failed or missed its deadline.
    TlsHandshake,
    /// A WebSocket sign-in (`auth`) that was refused.
    SignIn,
}

/// `log_client_failures_per_minute`, set by [`init`]; before it (unit tests), the default.
static FAILURE_LINES_PER_MINUTE: AtomicU32 = AtomicU32::new(10);

static TLS_WINDOW: Mutex<Option<Window>> = Mutex::new(None);
static SIGN_IN_WINDOW: Mutex<Option<Window>> = Mutex::new(None);

/// Whether a failure of `kind` may be logged now: `Some(n)` with the number of lines of
/// this kind left out since the last one admitted, `None` when over the rate.
pub fn client_failure(kind: ClientFailure) -> Option<u64> {
    let per_minute = FAILURE_LINES_PER_MINUTE.load(Ordering::Relaxed);
    let window = match kind {
        ClientFailure::TlsHandshake => &TLS_WINDOW,
        ClientFailure::SignIn => &SIGN_IN_WINDOW,
    };
    // Held for a few instructions, never across an await.
    let mut guard = window
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let now = Instant::now();
    guard
        .get_or_insert_with(|| Window::new(now))
        .admit(now, per_minute)
}

/// A fixed one-minute window of log lines: the pure core of [`client_failure`].
#[derive(Debug)]
struct Window {
    start: Instant,
    logged: u32,
    suppressed: u64,
}

impl Window {
    const LENGTH: Duration = Duration::from_secs(60);

    fn new(now: Instant) -> Self {
        Window {
            start: now,
            logged: 0,
            suppressed: 0,
        }
    }

    fn admit(&mut self, now: Instant, per_minute: u32) -> Option<u64> {
        if now.duration_since(self.start) >= Self::LENGTH {
            self.start = now;
            self.logged = 0;
        }
        if self.logged >= per_minute {
            self.suppressed += 1;
            return None;
        }
        self.logged += 1;
        Some(std::mem::take(&mut self.suppressed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_only_for_a_terminal_without_no_color_or_the_journal() {
        assert!(use_colour(true, None, false));
        assert!(!use_colour(false, None, false), "a file or a pipe");
        assert!(!use_colour(true, Some("1".into()), false), "NO_COLOR");
        assert!(
            use_colour(true, Some("".into()), false),
            "an empty NO_COLOR is unset"
        );
        assert!(!use_colour(true, None, true), "journald");
    }

    #[test]
    fn a_window_admits_its_rate_then_counts_what_it_left_out() {
        let start = Instant::now();
        let mut w = Window::new(start);
        assert_eq!(w.admit(start, 2), Some(0));
        assert_eq!(w.admit(start, 2), Some(0));
        assert_eq!(w.admit(start, 2), None);
        assert_eq!(w.admit(start + Duration::from_secs(59), 2), None);
        let next = start + Duration::from_secs(60);
        assert_eq!(w.admit(next, 2), Some(2), "the first line of a new minute");
        assert_eq!(w.admit(next, 2), Some(0));
        assert_eq!(w.admit(next, 0), None, "0: none at info");
    }
}
