// The HTTP side of the relay from a client: `POST /v1/send` and the signed poll
// `GET /v1/inbox` (PROTOCOL.md 8.2-8.4), over the platform's `fetch`.
//
// In a browser these requests are subject to CORS: the relay sends no CORS headers, so
// they work only from a page served on the relay's own origin (the nginx layout of the
// README, "Web clients"). The WebSocket needs no CORS and works from anywhere.

import { Codec } from './codec.js';
import { toHex } from './bytes.js';
import { authorizationHeader, originOf } from './protocol.js';
import { WhisprError } from './errors.js';

/** `base` (http, https, ws or wss) with the scheme for `kind` ('http' or 'ws'). */
export function relayUrl(base, kind, path) {
  const url = new URL(base);
  const secure = url.protocol === 'https:' || url.protocol === 'wss:';
  if (!['http:', 'https:', 'ws:', 'wss:'].includes(url.protocol)) {
    throw new TypeError(`relay URL ${base}: the scheme is not http, https, ws or wss`);
  }
  const scheme = kind === 'ws' ? (secure ? 'wss:' : 'ws:') : secure ? 'https:' : 'http:';
  return `${scheme}//${url.host}${path}`;
}

export class RelayHttp {
  constructor(base, { fetch, codec = new Codec('json') } = {}) {
    this.base = relayUrl(base, 'http', '');
    this.origin = originOf(this.base);
    // A browser's fetch must be called on the window, never as a method of this object
    // ("Illegal invocation"): wrap it rather than store it.
    this.fetch = fetch ?? ((url, init) => globalThis.fetch(url, init));
    this.codec = codec;
  }

  /** `POST /v1/send`: resolves with `{id, duplicate, online}` once the relay stored it. */
  async send(envelope) {
    const response = await this.#request(`${this.base}/v1/send`, {
      method: 'POST',
      headers: { 'Content-Type': this.codec.contentType, Accept: this.codec.contentType },
      body: this.codec.encodeBody('envelope', envelope),
    });
    const result = this.codec.decodeBody('sendResult', await this.#body(response));
    return { id: toHex(result.id), duplicate: result.duplicate, online: result.online };
  }

  /** `GET /v1/inbox` after `cursor` (acknowledging through it), signed by `identity`. */
  async poll(identity, cursor, { limit } = {}) {
    const params = [];
    if (cursor) params.push(`epoch=${cursor.epoch}`, `since=${cursor.seq}`);
    if (limit !== undefined) params.push(`limit=${limit}`);
    const pathAndQuery = `/v1/inbox${params.length ? `?${params.join('&')}` : ''}`;
    const authorization = authorizationHeader(identity, { origin: this.origin, method: 'GET', pathAndQuery });
    const response = await this.#request(`${this.base}${pathAndQuery}`, {
      method: 'GET',
      headers: { Authorization: authorization, Accept: this.codec.contentType },
    });
    return this.codec.decodeBody('inboxPage', await this.#body(response));
  }

  async #request(url, init) {
    let response;
    try {
      response = await this.fetch(url, { ...init, cache: 'no-store' });
    } catch (e) {
      throw new WhisprError('unreachable', `no answer from ${this.base}: ${e.cause?.message ?? e.message}`);
    }
    if (!response.ok) throw await errorOf(response);
    return response;
  }

  async #body(response) {
    return this.codec.binary ? new Uint8Array(await response.arrayBuffer()) : response.text();
  }
}

/** The relay's JSON error body as a WhisprError (error bodies are always JSON, 8.1). */
async function errorOf(response) {
  const text = await response.text();
  let body = null;
  try {
    body = JSON.parse(text);
  } catch {
    // Not the relay's answer (a proxy's error page, say): keep the start of it.
  }
  if (body && typeof body.error === 'string') {
    return new WhisprError(body.error, String(body.detail ?? ''), { status: response.status, retryAfterMs: body.retry_after_ms });
  }
  return new WhisprError('unexpected', `HTTP ${response.status}: ${text.slice(0, 200)}`, { status: response.status });
}
