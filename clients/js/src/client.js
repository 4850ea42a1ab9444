// WhisprClient: the I/O shell around the pure pieces. It owns the WebSocket (or the
// HTTP polling fallback), the timers, the storage and the application's handlers; what
// the protocol means is decided in session.js, what is remembered in state.js.
//
// The promise of "nothing shown twice, nothing lost" rests on one order: a delivery is
// verified, dropped if its id was processed before, decrypted, handed to every
// `message` listener, and only when they have all returned is it recorded (id and
// cursor) in the storage and acknowledged to the relay. A reload before the ack means
// a redelivery, which the saved id recognises; never a loss.
//
// Frames are processed one at a time, in arrival order, through one promise chain
// shared by every session, so a slow handler delays but never reorders, and a delivery
// of a session that has ended is skipped (the next session delivers it again).

import { ready } from './sodium.js';
import { toHex } from './bytes.js';
import { Codec } from './codec.js';
import { checkDelivery, originOf, parseAddress, signEnvelope } from './protocol.js';
import { openText, sealText } from './seal.js';
import { InboxState, MemoryStorage } from './state.js';
import { Backoff } from './backoff.js';
import { SessionCore, closeAction } from './session.js';
import { RelayHttp, relayUrl } from './http.js';
import { openSocket } from './socket.js';
import { WhisprError } from './errors.js';

/** Option defaults; each is documented in the README ("Web clients", options). */
export const DEFAULTS = {
  codec: 'json',
  transport: 'auto',
  pollIntervalMs: 2000,
  websocketRetryMs: 300_000,
  wsFailuresBeforePolling: 3,
  sendTimeoutMs: 30_000,
  idleTimeoutMs: 90_000,
  maxFrameBytes: 1 << 20,
  backoff: { initialMs: 1000, maxMs: 30_000 },
};

export class WhisprClient {
  #listeners = new Map();
  #state = null;
  #status = 'idle';
  #chain = Promise.resolve();
  #generation = 0;
  #link = null;
  #linkCodec = null; // the encoding the relay answered for #link (PROTOCOL 4.3: use it)
  #live = false;
  #pending = new Map();
  #nextRef = 0;
  #closed = false;
  #wake = null;
  #fatal = null;

  /**
   * @param options.relay     the relay's URL: ws://, wss://, http:// or https://
   * @param options.identity  an Identity (see Identity.generate, parseKeyFile)
   * @param options.storage   where the cursor and recent ids live (MemoryStorage by default)
   * @param options.onMessage an async handler; the message is acknowledged after it returns
   */
  constructor(options) {
    const o = { ...DEFAULTS, ...options, backoff: { ...DEFAULTS.backoff, ...options.backoff } };
    if (!o.relay) throw new TypeError('WhisprClient needs options.relay (for example ws://127.0.0.1:8000)');
    if (!o.identity) throw new TypeError('WhisprClient needs options.identity');
    if (!['auto', 'websocket', 'polling'].includes(o.transport)) {
      throw new TypeError(`options.transport is ${o.transport}: auto, websocket or polling`);
    }
    this.options = o;
    this.identity = o.identity;
    this.address = o.identity.address;
    this.storage = o.storage ?? new MemoryStorage();
    this.codec = new Codec(o.codec, { maxFrameBytes: o.maxFrameBytes });
    this.wsUrl = relayUrl(o.relay, 'ws', '/v1/ws');
    this.origin = originOf(this.wsUrl);
    this.http = new RelayHttp(o.relay, { fetch: o.fetch });
    this.backoff = new Backoff(o.backoff);
    this.transport = o.transport === 'polling' ? 'polling' : 'websocket';
    if (o.onMessage) this.on('message', o.onMessage);
  }

  /** Subscribes to an event; returns the function that unsubscribes. */
  on(event, listener) {
    if (!this.#listeners.has(event)) this.#listeners.set(event, new Set());
    this.#listeners.get(event).add(listener);
    return () => this.#listeners.get(event)?.delete(listener);
  }

  /** The next `event`'s payload (optionally the next one `predicate` accepts). */
  once(event, predicate = () => true) {
    return new Promise((resolve) => {
      const off = this.on(event, (payload) => {
        if (!predicate(payload)) return;
        off();
        resolve(payload);
      });
    });
  }

  /** 'idle', 'connecting', 'live', 'polling', 'waiting' (to reconnect) or 'closed'. */
  get status() {
    return this.#status;
  }

  /** The cursor the client would present now (null before the first `ready`). */
  get cursor() {
    return this.#state?.cursor ?? null;
  }

  /** Loads the saved state and starts connecting; events tell what happens next. */
  async start() {
    await ready();
    this.#state = InboxState.fromText(await this.storage.load());
    this.#run().catch((e) => this.#stop(new WhisprError('internal', e.stack ?? String(e))));
    return this;
  }

  /**
   * Encrypts `text` to the address `to` (64 hex) and sends it. Resolves with
   * `{id, duplicate, online}` when the relay accepted it (stored, or for an ephemeral
   * message handed to a live session or dropped); rejects with a WhisprError carrying
   * the relay's `code` (and `retryAfterMs` for `rate_limited`).
   */
  async send(to, text, { ephemeral = false } = {}) {
    await ready();
    const recipient = parseAddress(to);
    const envelope = signEnvelope(this.identity, recipient, sealText(this.identity, recipient, text), { ephemeral });
    return this.sendEnvelope(envelope);
  }

  /** Sends a signed envelope as is (see `send`). */
  sendEnvelope(envelope) {
    if (this.#closed) return Promise.reject(new WhisprError('closed', 'the client is closed'));
    const ref = ++this.#nextRef;
    return new Promise((resolve, reject) => {
      const entry = { ref, envelope, resolve, reject };
      entry.timer = setTimeout(() => {
        this.#pending.delete(ref);
        reject(new WhisprError('disconnected', `no answer from the relay within ${this.options.sendTimeoutMs} ms`));
      }, this.options.sendTimeoutMs);
      this.#pending.set(ref, entry);
      this.#dispatch(entry);
    });
  }

  /**
   * Closes the connection (unacknowledged messages stay queued on the relay). Resolves
   * once the message being processed, if any, has been handled and saved.
   */
  async close() {
    if (this.#closed) return;
    this.#closed = true;
    this.#link?.close(1000, 'bye');
    this.#wake?.();
    for (const entry of this.#pending.values()) this.#settle(entry, new WhisprError('closed', 'the client was closed'));
    await this.#chain;
    this.#setStatus('closed');
  }

  // --- the connection loop -------------------------------------------------------

  async #run() {
    let failures = 0;
    while (!this.#closed) {
      if (this.transport === 'polling') {
        await this.#runPolling();
        continue;
      }
      const result = await this.#runSession();
      if (this.#closed) return;
      if (this.#fatal) return this.#stop(this.#fatal);
      if (!result.opened) {
        failures += 1;
        if (await this.#shouldPoll(result.error, failures)) {
          failures = 0;
          this.transport = 'polling';
          this.#emit('notice', { code: 'polling', detail: `WebSocket refused (${result.error.message}); polling over HTTP` });
          continue;
        }
        await this.#retryLater(result.error.message);
        continue;
      }
      failures = 0;
      const { action, reason } = closeAction(result.code);
      if (action === 'stop') {
        const error = stopError(reason, result);
        if (reason === 'replaced') this.#emit('replaced', { code: result.code });
        return this.#stop(error);
      }
      // At once only after a session that worked: a relay closing every new session
      // with 4007 must not be hammered.
      if (action === 'now' && result.wasLive) {
        this.#emit('disconnected', { code: result.code, reason: result.reason, retryInMs: 0 });
        continue;
      }
      await this.#retryLater(`closed ${result.code}${result.reason ? `: ${result.reason}` : ''}`, result.code);
    }
  }

  /** Whether a WebSocket that did not open should give way to HTTP polling. */
  async #shouldPoll(error, failures) {
    if (this.options.transport !== 'auto') return false;
    if (error.status !== undefined) return error.status < 500 && error.status !== 429;
    if (failures < this.options.wsFailuresBeforePolling) return false;
    // A browser does not say why an upgrade failed: see whether plain HTTP works.
    try {
      await this.http.poll(this.identity, this.#state.cursor, { limit: 1 });
      return true;
    } catch {
      return false;
    }
  }

  async #retryLater(error, code) {
    const retryInMs = this.backoff.next();
    this.#setStatus('waiting');
    this.#emit('disconnected', { code, reason: error, retryInMs });
    await this.#sleep(retryInMs);
  }

  /** One WebSocket session, from opening to its close; resolves with how it ended. */
  async #runSession() {
    this.#setStatus('connecting');
    let link;
    try {
      link = await openSocket(this.wsUrl, [this.codec.subprotocol], { WebSocket: this.options.WebSocket, maxPayload: this.options.maxFrameBytes });
    } catch (error) {
      return { opened: false, error };
    }
    if (this.#closed) {
      link.close(1000, 'bye');
      return { opened: true, code: 1000, reason: 'closed' };
    }
    // No subprotocol in the answer means JSON (PROTOCOL 4.3).
    const codec = Codec.forSubprotocol(link.protocol || 'whispr.v1.json', { maxFrameBytes: this.options.maxFrameBytes });
    const generation = ++this.#generation;
    const core = new SessionCore({ identity: this.identity, origin: this.origin, cursor: this.#state.cursor });
    this.#link = link;
    this.#linkCodec = codec;
    return new Promise((resolve) => {
      let lastSeen = Date.now();
      let sawPing = false;
      const idle = setInterval(() => {
        // Only `ws` shows the relay's pings; a browser's socket has its own liveness.
        if (sawPing && Date.now() - lastSeen > this.options.idleTimeoutMs) {
          link.close(1000, 'idle');
          finish(1006, `the relay sent nothing for ${this.options.idleTimeoutMs} ms (not even a ping)`);
        }
      }, Math.min(this.options.idleTimeoutMs, 5000));
      const finish = (code, reason) => {
        clearInterval(idle);
        const wasLive = this.#link === link && this.#live;
        if (this.#link === link) {
          this.#link = null;
          this.#live = false;
        }
        this.#generation += generation === this.#generation ? 1 : 0;
        // An ephemeral envelope is never resent: it was for this moment only.
        for (const entry of this.#pending.values()) {
          if (entry.sentOn === generation) this.#settle(entry, new WhisprError('disconnected', `the connection ended (${code}) before the relay answered`, { closeCode: code }));
        }
        resolve({ opened: true, code, reason, wasLive });
      };
      const ping = () => {
        sawPing = true;
        lastSeen = Date.now();
      };
      const message = (data) => {
        lastSeen = Date.now();
        let frame;
        try {
          frame = codec.decodeFrame(data);
        } catch (e) {
          this.#emit('notice', { code: e.code ?? 'malformed', detail: `undecodable frame from the relay: ${e.message}` });
          return;
        }
        const { send, events } = core.onFrame(frame);
        for (const f of send) link.send(codec.encodeFrame(f));
        for (const event of events) this.#onSessionEvent(event, link, codec, generation);
      };
      link.attach({ message, close: finish, ping });
    });
  }

  #onSessionEvent(event, link, codec, generation) {
    switch (event.kind) {
      case 'ready':
        this.backoff.reset();
        this.#live = true;
        this.#enqueue(async () => {
          this.#state.onReady(event.epoch);
          await this.#save();
          this.#setStatus('live');
          this.#emit('ready', { transport: 'websocket', epoch: event.epoch, window: event.window });
        });
        // Sends that waited for a session (or lost theirs) go out now. Resending a
        // stored envelope is safe: the relay deduplicates it (PROTOCOL 3.5).
        for (const entry of this.#pending.values()) this.#dispatch(entry);
        return;
      case 'deliver':
        this.#enqueue(() => this.#deliver(event, generation, (seq) => link.send(codec.encodeFrame({ type: 'ack', seq }))));
        return;
      case 'gap':
        this.#enqueue(() => this.#gap(event));
        return;
      case 'synced':
        this.#enqueue(() => this.#emit('synced', { epoch: event.epoch, seq: event.seq }));
        return;
      case 'accepted':
        this.#answer(event.ref, null, { id: toHex(event.id), duplicate: event.duplicate, online: event.online });
        return;
      case 'refused':
        if (event.code === 'rate_limited') this.#emit('rateLimited', { retryAfterMs: event.retryAfterMs });
        this.#answer(event.ref, new WhisprError(event.code, event.detail, { retryAfterMs: event.retryAfterMs }));
        return;
      case 'notice':
        this.#emit('notice', { code: event.code, detail: event.detail });
        return;
      default:
        // 'fatal' (origin mismatch, a relay that is not whispr) or 'refused' auth:
        // nothing to retry, whatever the close code says.
        this.#fatal = new WhisprError(event.code, event.detail);
        link.close(1000, 'bye');
    }
  }

  // --- polling -------------------------------------------------------------------

  async #runPolling() {
    // Sends that waited for (or lost) a WebSocket go over HTTP from now on.
    for (const entry of this.#pending.values()) this.#dispatch(entry);
    const since = Date.now();
    let synced = false;
    let announced = false;
    while (!this.#closed && this.transport === 'polling') {
      if (this.options.transport === 'auto' && Date.now() - since >= this.options.websocketRetryMs) {
        this.transport = 'websocket'; // see whether the WebSocket works again
        return;
      }
      let page;
      try {
        page = await this.http.poll(this.identity, this.#state.cursor);
      } catch (error) {
        if (error.status !== undefined && error.status < 500 && error.status !== 429) return this.#stop(error);
        await this.#retryLater(error.message);
        continue;
      }
      this.backoff.reset();
      this.#setStatus('polling');
      if (!announced) {
        announced = true;
        this.#emit('ready', { transport: 'polling', epoch: page.epoch });
      }
      await this.#onPage(page);
      if (!synced && page.messages.length === 0) {
        synced = true;
        this.#emit('synced', { epoch: page.epoch, seq: this.#state.cursor?.seq ?? 0 });
      }
      if (!page.more) await this.#sleep(this.options.pollIntervalMs);
    }
  }

  /** One poll's answer: the gap, the messages (the next poll's `since` acks them). */
  async #onPage(page) {
    const generation = this.#generation;
    await this.#enqueue(async () => {
      if (page.gap) {
        // The position after the loss: before the first message that follows it.
        const seq = page.messages.length ? page.messages[0].seq - 1 : page.next.seq;
        await this.#gap({ epoch: page.epoch, seq, reason: page.gap_reason ?? 'expired' });
      } else {
        this.#state.onReady(page.epoch);
      }
      for (const m of page.messages) {
        await this.#deliver({ epoch: page.epoch, seq: m.seq, id: m.id, envelope: m.envelope }, generation, null);
      }
      if (page.messages.length === 0) this.#state.advance(page.next);
      await this.#save();
    });
  }

  // --- deliveries ------------------------------------------------------------------

  async #deliver(d, generation, ack) {
    if (generation !== this.#generation || this.#closed) return; // redelivered next session
    const id = toHex(d.id);
    const done = async () => {
      this.#state.processed(d.epoch, d.seq, id);
      await this.#save();
      if (ack && d.seq !== undefined && generation === this.#generation) ack(d.seq);
    };
    const invalid = await checkDelivery(d.envelope, d.id, this.identity.publicKey);
    if (invalid) {
      this.#emit('rejected', { id, reason: invalid });
      return done();
    }
    if (this.#state.isDuplicate(id)) return done();
    let payload;
    try {
      payload = openText(this.identity, d.envelope.sender, d.envelope.body);
    } catch (e) {
      // Retrying would fail the same way forever: report it and count it processed.
      this.#emit('rejected', { id, reason: e.detail ?? e.message });
      return done();
    }
    const message = {
      id,
      seq: d.seq,
      epoch: d.epoch,
      from: payload.from,
      timestamp: d.envelope.timestamp,
      text: payload.text,
      ephemeral: d.envelope.ephemeral,
    };
    try {
      await Promise.all([...(this.#listeners.get('message') ?? [])].map((fn) => fn(message)));
    } catch (error) {
      // Not processed: no ack. A cumulative ack for a later message would cover this
      // one too, so the session ends and the next one delivers it again.
      this.#emit('handlerError', { id, error });
      this.#generation += 1;
      this.#link?.close(1000, 'handler failed');
      return;
    }
    return done();
  }

  async #gap({ epoch, seq, reason }) {
    const previous = this.#state.cursor;
    this.#state.adopt({ epoch, seq });
    await this.#save();
    this.#emit('gap', { epoch, seq, reason });
    if (reason === 'epoch_changed') this.#emit('epochChanged', { from: previous?.epoch ?? null, to: epoch });
  }

  // --- sends -----------------------------------------------------------------------

  /** Puts a pending send on the current transport, if there is one. */
  #dispatch(entry) {
    if (this.transport === 'polling') {
      if (entry.http) return;
      entry.http = true;
      this.http.send(entry.envelope).then(
        (result) => this.#answer(entry.ref, null, result),
        (error) => {
          if (error.code === 'rate_limited') this.#emit('rateLimited', { retryAfterMs: error.retryAfterMs });
          this.#answer(entry.ref, error);
        },
      );
      return;
    }
    if (this.#live && this.#link) {
      this.#link.send(this.#linkCodec.encodeFrame({ type: 'send', ref: entry.ref, envelope: entry.envelope }));
      if (entry.envelope.ephemeral) entry.sentOn = this.#generation;
    }
  }

  #answer(ref, error, value) {
    const entry = this.#pending.get(ref);
    if (entry) this.#settle(entry, error, value);
  }

  #settle(entry, error, value) {
    clearTimeout(entry.timer);
    this.#pending.delete(entry.ref);
    if (error) entry.reject(error);
    else entry.resolve(value);
  }

  // --- plumbing --------------------------------------------------------------------

  #enqueue(task) {
    const run = this.#chain.then(task);
    this.#chain = run.catch((error) => this.#emit('error', { error }));
    return run;
  }

  async #save() {
    await this.storage.save(this.#state.toText());
  }

  #sleep(ms) {
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, ms);
      this.#wake = () => {
        clearTimeout(timer);
        resolve();
      };
    });
  }

  #setStatus(status) {
    if (this.#status === status || this.#status === 'closed') return;
    this.#status = status;
    this.#emit('status', { status });
  }

  #stop(error) {
    this.#closed = true;
    for (const entry of this.#pending.values()) this.#settle(entry, error);
    this.#emit('error', { error });
    this.#setStatus('closed');
  }

  #emit(event, payload) {
    for (const fn of this.#listeners.get(event) ?? []) {
      try {
        fn(payload);
      } catch {
        // A failing listener must not break the client; `message` handlers are awaited
        // separately (#deliver), where a failure has a meaning.
      }
    }
  }
}

/** Why the client stops after a close that `closeAction` says not to retry. */
function stopError(reason, { code, reason: text }) {
  switch (reason) {
    case 'replaced':
      return new WhisprError('replaced', 'another session with this key took over (close 4001); not reconnecting, or two readers would take turns forever', { closeCode: code });
    case 'bad_signatures':
      return new WhisprError('bad_signature', `the relay closed the session after too many envelopes with bad signatures (close ${code}${text ? `: ${text}` : ''}); not reconnecting: fix the signing code`, { closeCode: code });
    default:
      return new WhisprError('unauthorized', `the relay refused the authentication (close ${code}: ${text})`, { closeCode: code });
  }
}
