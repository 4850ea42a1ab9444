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

/**
 * The parameters of a `Whispr key=…, ts=…, sig=…` value, or `null` if it is not one,
 * read exactly as PROTOCOL 8.3 (and the relay's `HttpAuth::parse`) reads it: the scheme
 * and one space, then `name=value` items separated by commas, with spaces (only spaces)
 * allowed around the commas and nowhere else, nothing around the `=`, each of `key`,
 * `ts` and `sig` exactly once and no other.
 */
function parseParameters(value) {
  if (typeof value !== 'string' || !value.startsWith('Whispr ')) return null;
  const params = {};
  const parts = value.slice('Whispr '.length).split(',');
  const last = parts.length - 1;
  for (let i = 0; i <= last; i++) {
    let item = parts[i];
    if (i > 0) item = item.replace(/^ +/, '');
    if (i < last) item = item.replace(/ +$/, '');
    const eq = item.indexOf('=');
    if (eq < 0) return null;
    const name = item.slice(0, eq);
    if (!['key', 'ts', 'sig'].includes(name) || name in params) return null;
    params[name] = item.slice(eq + 1);
  }
  return params.key !== undefined && params.ts !== undefined && params.sig !== undefined ? params : null;
}

const LOWER_HEX = /^[0-9a-f]*$/;
// Decimal digits without sign or leading zeros (`0` itself is allowed).
const DECIMAL = /^(?:0|[1-9][0-9]*)$/;
const U64_LIMIT = 1n << 64n;

/**
 * Checks an `Authorization` value for a request, in the relay's order (key, ts, sig,
 * signature, clock). Returns `null` or the failing check: `unauthorized` (not the
 * scheme's exact form), `invalid_key`, `bad_signature`, `stale_timestamp`. The relay
 * answers any of them with 401 `unauthorized`.
 */
export function checkAuthorization(value, { method, pathAndQuery, origin, nowMs = Date.now(), maxSkewMs = DEFAULT_MAX_SKEW_MS }) {
  const params = parseParameters(value);
  if (!params) return 'unauthorized';
  // key: lowercase hex only (uppercase is refused here, unlike in frames); an odd or
  // wrong length is `invalid_key`, as everywhere.
  if (!LOWER_HEX.test(params.key)) return 'unauthorized';
  if (params.key.length !== KEY_LEN * 2) return 'invalid_key';
  const key = fromHex(params.key, 'key');
  if (!DECIMAL.test(params.ts)) return 'unauthorized';
  const bigTs = BigInt(params.ts);
  if (bigTs >= U64_LIMIT) return 'unauthorized';
  let sig;
  try {
    sig = fromBase64(params.sig, 'sig');
  } catch {
    return 'unauthorized';
  }
  if (sig.length !== SIGNATURE_LEN) return 'bad_signature';
  // A ts above 2^53 is still a u64 the relay reads (and then finds stale).
  const ts = bigTs <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(bigTs) : bigTs;
  if (!verifySignature(key, httpSigningBytes(key, ts, origin, method, pathAndQuery), sig)) return 'bad_signature';
  return checkSkew(Number(bigTs), nowMs, maxSkewMs);
}
