//! Reconnection delays: exponential backoff with jitter.
//!
//! Owns only the arithmetic (pure, unit-tested); the listener does the sleeping. The
//! jitter matters when a relay restarts: every client sees the same close at the same
//! instant, and without it they would all come back in the same millisecond.

use rand::Rng;
use std::time::Duration;

/// Exponential backoff: `initial`, doubling up to `max`, each delay drawn uniformly from
/// `[d/2, d]` ("equal jitter"), so a retry never comes sooner than half the nominal delay.
#[derive(Clone, Debug)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    /// The nominal delay of the next attempt (before jitter).
    next: Duration,
}

impl Default for Backoff {
    /// 1 s doubling to 30 s: quick enough to ride out a relay restart, slow enough not to
    /// hammer a relay that is down for longer.
    fn default() -> Self {
        Backoff::new(Duration::from_secs(1), Duration::from_secs(30))
    }
}

impl Backoff {
    /// A backoff starting at `initial` and capped at `max` (`max` is raised to `initial`
    /// if it is smaller).
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max: max.max(initial),
            next: initial,
        }
    }

    /// The nominal (un-jittered) delay the next failure will wait.
    pub fn nominal(&self) -> Duration {
        self.next
    }

    /// The delay to wait after a failure, jittered with `rng`; doubles the next one.
    pub fn next_delay_with(&mut self, rng: &mut impl Rng) -> Duration {
        let nominal = self.next;
        self.next = (self.next * 2).min(self.max);
        let half = nominal / 2;
        let jitter_ms = rng.gen_range(0..=half.as_millis() as u64);
        half + Duration::from_millis(jitter_ms)
    }

    /// [`Backoff::next_delay_with`] using the thread's random generator.
    pub fn next_delay(&mut self) -> Duration {
        self.next_delay_with(&mut rand::thread_rng())
    }

    /// Back to the initial delay, after a connection that worked.
    pub fn reset(&mut self) {
        self.next = self.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn doubles_up_to_the_cap_with_jitter_in_the_upper_half() {
        let mut backoff = Backoff::default();
        let mut rng = StdRng::seed_from_u64(7);
        let nominal = [1, 2, 4, 8, 16, 30, 30, 30];
        for secs in nominal {
            let full = Duration::from_secs(secs);
            assert_eq!(backoff.nominal(), full);
            let delay = backoff.next_delay_with(&mut rng);
            assert!(
                delay >= full / 2 && delay <= full,
                "{delay:?} not in [{:?}, {full:?}]",
                full / 2
            );
        }
    }

    #[test]
    fn reset_starts_again_from_the_initial_delay() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        for _ in 0..5 {
            backoff.next_delay();
        }
        assert_eq!(backoff.nominal(), Duration::from_secs(1));
        backoff.reset();
        assert_eq!(backoff.nominal(), Duration::from_millis(100));
    }

    #[test]
    fn jitter_spreads_clients_apart() {
        let mut rng = StdRng::seed_from_u64(1);
        let delays: std::collections::HashSet<Duration> = (0..20)
            .map(|_| Backoff::default().next_delay_with(&mut rng))
            .collect();
        assert!(delays.len() > 10, "jitter produced {delays:?}");
    }
}
