// Protocol v1 without I/O: identities, the three signed structures (envelope, WebSocket
// auth, HTTP request), message ids, strict verification and the clock-skew window.
// PROTOCOL.md sections 2, 3, 6.2 and 8.3; `test/vectors.test.js` pins every byte.
//
// All cryptography is libsodium's (`crypto_sign_*`), except SHA-256 for message ids,
// which the standard libsodium.js build does not include: that is the platform's Web
// Crypto (`crypto.subtle`, in every browser and in Node).
//
// Owns: bytes that are signed or hashed. Does not: encode frames (codec.js), encrypt
// (seal.js), or talk to a relay (client.js, http.js).

import { sodium } from './sodium.js';
import { concat, equalBytes, fromHex, toHex, u64be, utf8, WireError } from './bytes.js';

export const KEY_LEN = 32;
export const SIGNATURE_LEN = 64;
export const NONCE_LEN = 32;
/** The relay's default clock-skew window (`max_clock_skew_seconds` = 300). */
export const DEFAULT_MAX_SKEW_MS = 300_000;

const ENVELOPE_TAG = utf8('whispr-envelope-v1\0');
const AUTH_TAG = utf8('whispr-auth-v1\0');
const HTTP_TAG = utf8('whispr-http-v1\0');

/** An Ed25519 key pair: the user's identity and inbox address. */
export class Identity {
  /** @param {Uint8Array} seed the 32-byte secret seed (RFC 8032). */
  constructor(seed) {
    if (!(seed instanceof Uint8Array) || seed.length !== 32) {
      throw new TypeError('an identity seed is 32 bytes');
    }
    const pair = sodium().crypto_sign_seed_keypair(seed);
    this.seed = Uint8Array.from(seed);
    this.publicKey = pair.publicKey;
    this.secretKey = pair.privateKey;
    Object.freeze(this);
  }

  /** A new random identity (libsodium's CSPRNG). */
  static generate() {
    return new Identity(sodium().randombytes_buf(32));
  }

  /** The address others send to: 64 lowercase hex characters. */
  get address() {
    return toHex(this.publicKey);
  }

  /** Detached Ed25519 signature of `message`. */
  sign(message) {
    return sodium().crypto_sign_detached(message, this.secretKey);
  }
}

/** The bytes an envelope's signature covers (PROTOCOL 3.2). */
export function envelopeSigningBytes(envelope) {
  const { recipient, sender, timestamp, ephemeral, body } = envelope;
  return concat(ENVELOPE_TAG, recipient, sender, u64be(timestamp), [ephemeral ? 1 : 0], body);
}

/** The message id: SHA-256 of the signing bytes (PROTOCOL 3.3). */
export async function messageId(signingBytes) {
  return new Uint8Array(await globalThis.crypto.subtle.digest('SHA-256', signingBytes));
}

/** A signed envelope from `identity` to `recipient` (32 bytes) carrying `body`. */
export function signEnvelope(identity, recipient, body, { timestamp = Date.now(), ephemeral = false } = {}) {
  const envelope = {
    recipient: Uint8Array.from(recipient),
    sender: identity.publicKey,
    timestamp,
    ephemeral,
    body: Uint8Array.from(body),
  };
  envelope.signature = identity.sign(envelopeSigningBytes(envelope));
  return envelope;
}

/**
 * Whether a 32-byte key encoding is canonical (PROTOCOL 2.1): its y, the low 255 bits
 * read little-endian, is below p = 2^255 - 19. The 19 values p … 2^255 - 1 are
 * `ed…ff 7f` to `ff…ff 7f` (the sign bit, bit 255, is not part of y).
 */
export function isCanonicalKey(key) {
  if (key.length !== KEY_LEN) return false;
  if ((key[31] & 0x7f) !== 0x7f) return true;
  for (let i = 30; i >= 1; i--) if (key[i] !== 0xff) return true;
  return key[0] < 0xed;
}

/**
 * Strict Ed25519 verification (PROTOCOL 2.2). libsodium's verifier refuses small-order
 * keys and R values and non-canonical S and keys, which is every rule of `verify_strict`
 * that an honest signature can meet; the vectors check the dishonest ones. The key's
 * canonical encoding (2.1, `sender_y_not_canonical`) is checked here too, so the rule
 * does not rest on one libsodium build.
 */
export function verifySignature(publicKey, message, signature) {
  if (publicKey.length !== KEY_LEN || signature.length !== SIGNATURE_LEN) return false;
  if (!isCanonicalKey(publicKey)) return false;
  try {
    return sodium().crypto_sign_verify_detached(signature, message, publicKey);
  } catch {
    return false;
  }
}

/** `null` when `timestamp` is within `maxSkewMs` of `nowMs` (inclusive), else `stale_timestamp`. */
export function checkSkew(timestamp, nowMs, maxSkewMs = DEFAULT_MAX_SKEW_MS) {
  return Math.abs(nowMs - timestamp) <= maxSkewMs ? null : 'stale_timestamp';
}

/**
 * The relay's checks of PROTOCOL 3.4 after decoding, in its order: key lengths,
 * signature length, strict signature, clock window. Returns `null` or the error code.
 * Pass `nowMs: null` to skip the window (a reader of stored mail: a message may be
 * days old when it is read).
 */
export function checkEnvelope(envelope, { nowMs = Date.now(), maxSkewMs = DEFAULT_MAX_SKEW_MS } = {}) {
  if (envelope.recipient.length !== KEY_LEN || envelope.sender.length !== KEY_LEN) return 'invalid_key';
  if (envelope.signature.length !== SIGNATURE_LEN) return 'bad_signature';
  if (!verifySignature(envelope.sender, envelopeSigningBytes(envelope), envelope.signature)) {
    return 'bad_signature';
  }
  return nowMs === null ? null : checkSkew(envelope.timestamp, nowMs, maxSkewMs);
}

/**
 * What a client checks of a delivery (PROTOCOL 10): strict signature, addressed to
 * `me`, and the relay's id is the envelope's. Returns `null` or a reason.
 */
export async function checkDelivery(envelope, id, me) {
  if (!equalBytes(envelope.recipient, me)) return 'addressed to another key';
  const code = checkEnvelope(envelope, { nowMs: null });
  if (code) return `the envelope fails verification (${code})`;
  if (!equalBytes(await messageId(envelopeSigningBytes(envelope)), id)) {
    return "the relay's id does not match the envelope";
  }
  return null;
}

/** The bytes an `auth` signature covers (PROTOCOL 6.2 step 4). */
export function authSigningBytes(nonce, key, timestamp, origin) {
  return concat(AUTH_TAG, nonce, key, u64be(timestamp), utf8(origin));
}

/** The bytes a signed HTTP request's signature covers (PROTOCOL 8.3). */
export function httpSigningBytes(key, timestamp, origin, method, pathAndQuery) {
  return concat(HTTP_TAG, key, u64be(timestamp), utf8(origin), [0], utf8(method), [0], utf8(pathAndQuery));
}

/** The `Authorization` header value of a signed request, in the form of the vectors. */
export function authorizationHeader(identity, { timestamp = Date.now(), origin, method, pathAndQuery }) {
  const sig = identity.sign(httpSigningBytes(identity.publicKey, timestamp, origin, method, pathAndQuery));
  return `Whispr key=${identity.address}, ts=${timestamp}, sig=${sodium().to_base64(sig, sodium().base64_variants.ORIGINAL)}`;
}

/**
 * The origin a client dialled (PROTOCOL 6.2 step 2): host, lowercase, IPv6 in brackets,
 * `:port` only when it is not the scheme's default. WHATWG URL's `host` is exactly that
 * for http, https, ws and wss.
 */
export function originOf(url) {
  return new URL(url).host;
}

/** A public key from 64 hex characters, refusing keys libsodium cannot use. */
export function parseAddress(text) {
  const hex = typeof text === 'string' ? text.trim().toLowerCase() : '';
  if (!/^[0-9a-f]{64}$/.test(hex)) {
    throw new WireError('invalid_key', 'an address is 64 hex characters (the key `whispr keygen` printed)');
  }
  return fromHex(hex, 'address');
}
