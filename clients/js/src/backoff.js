// Reconnection delays: exponential backoff with "equal jitter", as the Rust client's
// (src/client/backoff.rs). Each delay is drawn from [d/2, d] for a nominal d that doubles
// up to a cap: when a relay restarts every client sees the same close at the same
// instant, and without jitter they would all come back in the same millisecond.

export class Backoff {
  /** `initialMs` doubling up to `maxMs` (raised to `initialMs` if smaller). */
  constructor({ initialMs = 1000, maxMs = 30000 } = {}) {
    this.initialMs = initialMs;
    this.maxMs = Math.max(maxMs, initialMs);
    this.nominalMs = initialMs;
  }

  /** The delay before the next attempt; doubles the one after. `random` is in [0, 1). */
  next(random = Math.random) {
    const nominal = this.nominalMs;
    this.nominalMs = Math.min(nominal * 2, this.maxMs);
    const half = nominal / 2;
    return Math.round(half + random() * half);
  }

  /** Back to the initial delay, after a connection that worked. */
  reset() {
    this.nominalMs = this.initialMs;
  }
}
