// End-to-end encryption of chat messages, the same as the Rust client's (src/client/
// seal.rs): a libsodium sealed box to the recipient's X25519 key, which is the
// Montgomery form of their Ed25519 identity key (crypto_sign_ed25519_pk_to_curve25519;
// the secret side is crypto_sign_ed25519_sk_to_curve25519).
//
// The plaintext is `{"v":1,"from":HEX,"text":...}`. A sealed box is anonymous, so
// `from` names the sender inside the ciphertext and the reader checks it against the
// envelope's signed sender: nobody can re-sign someone else's ciphertext as their own.
// Readers ignore unknown members, so later versions can add some.

import { sodium } from './sodium.js';
import { toHex, utf8 } from './bytes.js';
import { WhisprError } from './errors.js';

/** The payload version this code writes and reads. */
export const PAYLOAD_VERSION = 1;

/** The X25519 key of an Ed25519 key; refuses keys that are not usable curve points. */
export function encryptionKey(edPublicKey) {
  try {
    return sodium().crypto_sign_ed25519_pk_to_curve25519(edPublicKey);
  } catch {
    throw new WhisprError('invalid_key', 'the recipient key is not a usable Ed25519 public key');
  }
}

/** Seals `text` from `sender` (an Identity) to `recipient` (32 bytes): an envelope body. */
export function sealText(sender, recipient, text) {
  const plaintext = JSON.stringify({ v: PAYLOAD_VERSION, from: sender.address, text });
  return sodium().crypto_box_seal(utf8(plaintext), encryptionKey(recipient));
}

/**
 * Opens a body sealed to `identity` and checks that it was written by `signedSender`
 * (the envelope's sender, whose signature the caller verified). Returns `{v, from, text}`;
 * throws a WhisprError `undecryptable` saying why not.
 */
export function openText(identity, signedSender, body) {
  const s = sodium();
  const secret = s.crypto_sign_ed25519_sk_to_curve25519(identity.secretKey);
  const pub = s.crypto_sign_ed25519_pk_to_curve25519(identity.publicKey);
  let bytes;
  try {
    bytes = s.crypto_box_seal_open(body, pub, secret);
  } catch {
    throw new WhisprError('undecryptable', 'the message is not for this key or was altered');
  }
  let payload;
  try {
    payload = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes));
  } catch (e) {
    throw new WhisprError('undecryptable', `decrypted, but not a whispr message: ${e.message}`);
  }
  if (payload === null || typeof payload !== 'object' || typeof payload.text !== 'string' || typeof payload.from !== 'string') {
    throw new WhisprError('undecryptable', 'decrypted, but not a whispr message (no from or text)');
  }
  if (payload.v !== PAYLOAD_VERSION) {
    throw new WhisprError('undecryptable', `message format version ${payload.v} is newer than this client understands`);
  }
  const signed = toHex(signedSender);
  if (payload.from.toLowerCase() !== signed) {
    throw new WhisprError('undecryptable', `the message claims to be from ${payload.from} but was signed by ${signed}`);
  }
  return { v: payload.v, from: signed, text: payload.text };
}
