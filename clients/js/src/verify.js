// The relay's checks of the two signed requests, in its order: a WebSocket `auth` frame
// (PROTOCOL 6.2 step 6) and an `Authorization` header (8.3). A client never needs them
// for itself; they are here so that a JavaScript relay, a test double or a debugging tool
// checks exactly what whispr checks, and the negative vectors prove the signing side.

import { fromBase64, fromHex } from './bytes.js';
import { authSigningBytes, checkSkew, DEFAULT_MAX_SKEW_MS, httpSigningBytes, KEY_LEN, SIGNATURE_LEN, verifySignature } from './protocol.js';

/**
 * Checks a decoded first frame against the relay's own `nonce` and `origin`. Returns
 * `null` or the error code the relay answers before closing with 4003.
 */
export function checkAuthFrame(frame, { nonce, origin, nowMs = Date.now(), maxSkewMs = DEFAULT_MAX_SKEW_MS }) {
  if (frame.type !== 'auth') return 'auth_required';
  if (frame.key.length !== KEY_LEN) return 'invalid_key';
  if (frame.signature.length !== SIGNATURE_LEN) return 'bad_signature';
  const bytes = authSigningBytes(nonce, frame.key, frame.timestamp, origin);
  if (!verifySignature(frame.key, bytes, frame.signature)) return 'bad_signature';
  return checkSkew(frame.timestamp, nowMs, maxSkewMs);
}

/** The parameters of a `Whispr key=…, ts=…, sig=…` value, or `null` if it is not one. */
function parseParameters(value) {
  if (typeof value !== 'string' || !value.startsWith('Whispr ')) return null;
  const params = {};
  for (const part of value.slice('Whispr '.length).split(',')) {
    const item = part.trim();
    const eq = item.indexOf('=');
    if (eq <= 0) return null;
    const name = item.slice(0, eq);
    if (!['key', 'ts', 'sig'].includes(name) || name in params) return null;
    params[name] = item.slice(eq + 1);
  }
  return params.key !== undefined && params.ts !== undefined && params.sig !== undefined ? params : null;
}

/**
 * Checks an `Authorization` value for a request. Returns `null` or the failing check:
 * `unauthorized` (not the scheme's form), `invalid_key`, `bad_signature`,
 * `stale_timestamp`. The relay answers any of them with 401 `unauthorized`.
 */
export function checkAuthorization(value, { method, pathAndQuery, origin, nowMs = Date.now(), maxSkewMs = DEFAULT_MAX_SKEW_MS }) {
  const params = parseParameters(value);
  if (!params || !/^[0-9]{1,16}$/.test(params.ts)) return 'unauthorized';
  let key;
  let sig;
  try {
    key = fromHex(params.key.toLowerCase(), 'key');
    sig = fromBase64(params.sig, 'sig');
  } catch {
    return 'unauthorized';
  }
  if (key.length !== KEY_LEN) return 'invalid_key';
  if (sig.length !== SIGNATURE_LEN) return 'bad_signature';
  const ts = Number(params.ts);
  if (!verifySignature(key, httpSigningBytes(key, ts, origin, method, pathAndQuery), sig)) return 'bad_signature';
  return checkSkew(ts, nowMs, maxSkewMs);
}
