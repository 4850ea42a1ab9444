// Byte helpers shared by the protocol, the codecs and the client: hex and base64 in the
// exact forms of PROTOCOL.md section 4.1, concatenation, u64 big-endian.
//
// Owns: turning bytes into wire text and back, strictly (a lenient decoder would accept
// what the relay refuses). Does not: any cryptography (that is libsodium's).

import { sodium } from './sodium.js';

/** Thrown for anything that is not in the protocol's encoding; `code` is a PROTOCOL §9 code. */
export class WireError extends Error {
  constructor(code, detail) {
    super(`${code}: ${detail}`);
    this.name = 'WireError';
    this.code = code;
    this.detail = detail;
  }
}

const HEX = /^(?:[0-9a-f]{2})*$/;

/** Lowercase hex of `bytes`. */
export function toHex(bytes) {
  return sodium().to_hex(bytes);
}

/** Bytes of lowercase hex; anything else (uppercase, odd length) is `malformed`. */
export function fromHex(text, field = 'value') {
  if (typeof text !== 'string' || !HEX.test(text)) {
    throw new WireError('malformed', `${field} must be lowercase hex`);
  }
  return sodium().from_hex(text);
}

/** Standard base64 with padding (RFC 4648 section 4). */
export function toBase64(bytes) {
  return sodium().to_base64(bytes, sodium().base64_variants.ORIGINAL);
}

const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

const ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';

/**
 * Bytes of padded standard base64 (PROTOCOL 4.1); unpadded or URL-safe text, and text
 * whose unused trailing bits are not zero (a second spelling of the same bytes, RFC 4648
 * section 3.5), is `malformed`.
 */
export function fromBase64(text, field = 'value') {
  // The pattern and the trailing-bits rule are the check: libsodium's decoder is the
  // conversion, but the protocol names the exact form, and refusing other forms here
  // keeps the client honest.
  if (typeof text !== 'string' || !BASE64.test(text)) {
    throw new WireError('malformed', `${field} must be padded standard base64`);
  }
  if (text === '') return new Uint8Array(0);
  // Before `==` the last digit carries 4 unused bits, before `=` it carries 2.
  const pad = text.endsWith('==') ? 2 : text.endsWith('=') ? 1 : 0;
  if (pad > 0 && ALPHABET.indexOf(text[text.length - pad - 1]) % (pad === 2 ? 16 : 4) !== 0) {
    throw new WireError('malformed', `${field} has non-zero unused bits in its last base64 digit`);
  }
  return sodium().from_base64(text, sodium().base64_variants.ORIGINAL);
}

/** One array of all `parts` in order. */
export function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/**
 * `n` as 8 bytes, big-endian: a non-negative safe integer, or a BigInt below 2^64 (a
 * received `ts` may be any u64).
 */
export function u64be(n) {
  const ok = typeof n === 'bigint' ? n >= 0n && n < 1n << 64n : Number.isSafeInteger(n) && n >= 0;
  if (!ok) {
    throw new WireError('malformed', `${n} is not an unsigned integer below 2^53`);
  }
  const out = new Uint8Array(8);
  new DataView(out.buffer).setBigUint64(0, BigInt(n));
  return out;
}

/** UTF-8 bytes of a string. */
export function utf8(text) {
  return new TextEncoder().encode(text);
}

/** Whether two byte arrays are equal (public data only: not constant-time). */
export function equalBytes(a, b) {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}
