//! Wall-clock time in Unix milliseconds, injectable so tests can move time forward
//! (TTL expiry, clock skew) without sleeping.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// The relay's clock. `system()` in production; `manual()` in tests.
#[derive(Clone, Debug, Default)]
pub struct Clock {
    manual: Option<Arc<AtomicU64>>,
}

impl Clock {
    pub fn system() -> Self {
        Clock { manual: None }
    }

    /// A clock that starts at the current time and only moves when told.
    pub fn manual() -> Self {
        Clock {
            manual: Some(Arc::new(AtomicU64::new(system_now_ms()))),
        }
    }

    pub fn now_ms(&self) -> u64 {
        match &self.manual {
            Some(t) => t.load(Ordering::Relaxed),
            None => system_now_ms(),
        }
    }

    /// Moves a manual clock forward; a system clock ignores this.
    pub fn advance_ms(&self, ms: u64) {
        if let Some(t) = &self.manual {
            t.fetch_add(ms, Ordering::Relaxed);
        }
    }
}

fn system_now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
