// One WebSocket session's protocol, without the socket: decoded frames in, frames to
// send and events out (PROTOCOL.md 6.2-6.5). The client (client.js) owns the socket,
// the timers and the application's handler; everything it decides about the protocol
// is decided here, and unit-tested without a relay (test/session.test.js).
//
// Phases: `challenge` (waiting for the relay's first frame) -> `authenticating` (auth
// sent) -> `live` (after `ready`). The epoch of every delivery is the session's epoch
// at the moment it arrived: `gap` can move it, and `ack` carries none (hence 4007).

import { authSigningBytes } from './protocol.js';

export class SessionCore {
  /**
   * @param identity  whose inbox this session reads
   * @param origin    the host[:port] the client dialled (PROTOCOL 6.2 step 2)
   * @param cursor    the saved cursor to resume after, or null
   */
  constructor({ identity, origin, cursor }) {
    this.identity = identity;
    this.origin = origin;
    this.cursor = cursor;
    this.phase = 'challenge';
    this.epoch = null;
    this.window = null;
  }

  /** Takes one frame; returns `{ send: frame[], events: event[] }`. */
  onFrame(frame) {
    switch (this.phase) {
      case 'challenge':
        return this.#onChallenge(frame);
      case 'authenticating':
        return this.#onAuthAnswer(frame);
      default:
        return this.#onLive(frame);
    }
  }

  #onChallenge(frame) {
    if (frame.type !== 'challenge') {
      return fatal('unexpected', `expected a challenge, got ${frame.type}`);
    }
    if (frame.origin !== this.origin) {
      // Never sign for another origin: a relaying attacker would get a signature
      // it could replay at the relay it names (PROTOCOL 6.2 step 3).
      return fatal('origin_mismatch', `the relay calls itself ${frame.origin}, but we dialled ${this.origin}`);
    }
    // Sign the relay's own clock reading: the nonce already makes the answer
    // single-use, and a client with a skewed clock still gets in (as the Rust client).
    const timestamp = frame.timestamp;
    const key = this.identity.publicKey;
    const signature = this.identity.sign(authSigningBytes(frame.nonce, key, timestamp, this.origin));
    const auth = { type: 'auth', key, timestamp, signature };
    if (this.cursor) auth.cursor = { epoch: this.cursor.epoch, seq: this.cursor.seq };
    this.phase = 'authenticating';
    return { send: [auth], events: [] };
  }

  #onAuthAnswer(frame) {
    if (frame.type === 'ready') {
      this.phase = 'live';
      this.epoch = frame.epoch;
      this.window = frame.window;
      return { send: [], events: [{ kind: 'ready', epoch: frame.epoch, window: frame.window }] };
    }
    if (frame.type === 'error') {
      return fatal(frame.code, frame.detail, 'refused');
    }
    return fatal('unexpected', `expected ready, got ${frame.type}`);
  }

  #onLive(frame) {
    switch (frame.type) {
      case 'deliver':
        return only({ kind: 'deliver', epoch: this.epoch, seq: frame.seq, id: frame.id, envelope: frame.envelope });
      case 'gap':
        this.epoch = frame.epoch;
        return only({ kind: 'gap', epoch: frame.epoch, seq: frame.seq, reason: frame.reason });
      case 'synced':
        return only({ kind: 'synced', epoch: frame.epoch, seq: frame.seq });
      case 'accepted':
        return only({ kind: 'accepted', ref: frame.ref, id: frame.id, duplicate: frame.duplicate, online: frame.online });
      case 'error':
        if (frame.ref !== undefined) {
          return only({ kind: 'refused', ref: frame.ref, code: frame.code, detail: frame.detail, retryAfterMs: frame.retry_after_ms });
        }
        return only({ kind: 'notice', code: frame.code, detail: frame.detail });
      default:
        // Nothing else means anything on a live session; ignoring it keeps a working
        // connection (a second challenge or ready would be a relay bug).
        return { send: [], events: [] };
    }
  }
}

function only(event) {
  return { send: [], events: [event] };
}

function fatal(code, detail, kind = 'fatal') {
  return { send: [], events: [{ kind, code, detail }] };
}

/**
 * What a close code from the relay means for the client (PROTOCOL 6.9):
 * `stop` (do not reconnect), `now` (reconnect at once with the cursor) or `backoff`.
 */
export function closeAction(code) {
  switch (code) {
    case 4001:
      // Another session took over the key: reconnecting would make two devices
      // sharing a key take turns forever.
      return { action: 'stop', reason: 'replaced' };
    case 4003:
      return { action: 'stop', reason: 'auth_failed' };
    case 4008:
      // Too many of our envelopes were answered bad_signature: the signing code is
      // broken, and reconnecting would only spend the budget again (PROTOCOL 6.9).
      return { action: 'stop', reason: 'bad_signatures' };
    case 4007:
      // The inbox moved to a new epoch: the relay reports the gap and delivers what
      // is stored as soon as we come back with the cursor.
      return { action: 'now', reason: 'epoch_changed' };
    default:
      return { action: 'backoff', reason: 'disconnected' };
  }
}
