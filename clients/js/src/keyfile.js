// The identity file of `whispr keygen` (src/client/keyfile.rs), so one key works in both
// clients: one JSON object, `{"version":1,"ed25519_seed":"<64 hex>"}`, and a line break.
// The file holds the user's whole identity: the Node helpers in node.js write it with
// mode 0600, and a page should keep it out of anything it uploads.

import { fromHex, toHex } from './bytes.js';
import { Identity } from './protocol.js';

export const KEYFILE_VERSION = 1;

/** The file's text for `identity`, byte for byte what `whispr keygen` writes. */
export function formatKeyFile(identity) {
  return `${JSON.stringify({ version: KEYFILE_VERSION, ed25519_seed: toHex(identity.seed) })}\n`;
}

/** The identity in a key file's text; refuses anything `whispr` would refuse. */
export function parseKeyFile(text) {
  let file;
  try {
    file = JSON.parse(text);
  } catch (e) {
    throw new TypeError(`not a whispr identity file: ${e.message} (create one with \`whispr keygen --out FILE\`)`);
  }
  if (file === null || typeof file !== 'object' || Array.isArray(file)) {
    throw new TypeError('not a whispr identity file: not a JSON object');
  }
  const extra = Object.keys(file).find((k) => k !== 'version' && k !== 'ed25519_seed');
  if (extra !== undefined) throw new TypeError(`not a whispr identity file: unknown member ${extra}`);
  if (file.version !== KEYFILE_VERSION) {
    throw new TypeError(`not a whispr identity file: version ${file.version} is not supported (expected ${KEYFILE_VERSION})`);
  }
  if (typeof file.ed25519_seed !== 'string' || !/^[0-9a-fA-F]{64}$/.test(file.ed25519_seed)) {
    throw new TypeError('not a whispr identity file: ed25519_seed must be 64 hex characters');
  }
  return new Identity(fromHex(file.ed25519_seed.toLowerCase()));
}
