// What a reader remembers between deliveries and between runs: its cursor and the ids
// of the messages it processed recently (the Rust client's src/client/state.rs, in the
// same JSON record, `{"version":1,"cursor":{…}|null,"recent_ids":[hex…]}`).
//
// The cursor lets the relay resume without redelivering (presenting it acknowledges
// through it). The ids make delivery exactly-once for the user: the relay may deliver a
// message twice (a takeover, an epoch change, a reload between showing and
// acknowledging), and only the id tells. The set is bounded.
//
// InboxState is pure. A storage keeps its text: MemoryStorage, WebStorage (a browser's
// localStorage), or FileStorage in node.js. Any object with `load()` returning the saved
// text (or null) and `save(text)` works; both may return promises.

export const RECENT_IDS = 512;

export class InboxState {
  constructor({ cursor = null, recentIds = [], capacity = RECENT_IDS } = {}) {
    this.cursor = cursor;
    this.capacity = Math.max(1, capacity);
    this.recent = new Set();
    for (const id of recentIds) this.#remember(id);
  }

  /** Whether the message `id` (hex) was processed already. */
  isDuplicate(id) {
    return this.recent.has(id);
  }

  /** Records that `id` (stored as `seq` of `epoch`, or ephemeral: seq undefined) was processed. */
  processed(epoch, seq, id) {
    this.#remember(id);
    if (seq !== undefined) this.advance({ epoch, seq });
  }

  /** Moves the cursor to `cursor` if it is ahead, or of another epoch. */
  advance(cursor) {
    const c = this.cursor;
    if (c && c.epoch === cursor.epoch && c.seq >= cursor.seq) return;
    this.cursor = { epoch: cursor.epoch, seq: cursor.seq };
  }

  /** Takes the position a gap reported, as the protocol asks (PROTOCOL 5). */
  adopt(cursor) {
    this.cursor = { epoch: cursor.epoch, seq: cursor.seq };
  }

  /** After `ready`: a reader without a cursor stands at `{epoch, 0}` (PROTOCOL 13.3). */
  onReady(epoch) {
    if (!this.cursor) this.cursor = { epoch, seq: 0 };
  }

  #remember(id) {
    if (this.recent.has(id)) return;
    this.recent.add(id);
    if (this.recent.size > this.capacity) this.recent.delete(this.recent.values().next().value);
  }

  toText() {
    return JSON.stringify({ version: 1, cursor: this.cursor, recent_ids: [...this.recent] });
  }

  /** The state saved as `text`, or a fresh one for `null`. */
  static fromText(text, capacity = RECENT_IDS) {
    if (text === null || text === undefined) return new InboxState({ capacity });
    let record;
    try {
      record = JSON.parse(text);
    } catch (e) {
      throw new TypeError(`the saved state is corrupt (${e.message}); delete it to start over (queued messages are then shown again)`);
    }
    if (record?.version !== 1) throw new TypeError(`the saved state has version ${record?.version}, not 1`);
    return new InboxState({ cursor: record.cursor ?? null, recentIds: record.recent_ids ?? [], capacity });
  }
}

/** Keeps the state in memory only: a reload starts from the relay's queue again. */
export class MemoryStorage {
  constructor(text = null) {
    this.text = text;
  }

  load() {
    return this.text;
  }

  save(text) {
    this.text = text;
  }
}

/** Keeps the state in a Web Storage area (`localStorage` by default) under `key`. */
export class WebStorage {
  constructor(key, area = globalThis.localStorage) {
    if (!area) throw new TypeError('WebStorage needs localStorage (a browser) or another Storage area');
    this.key = key;
    this.area = area;
  }

  load() {
    return this.area.getItem(this.key);
  }

  save(text) {
    this.area.setItem(this.key, text);
  }
}
