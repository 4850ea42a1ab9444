// The two encodings of PROTOCOL.md section 4: JSON (text frames) and MessagePack (binary
// frames), for every frame of section 7 and the HTTP bodies of section 8.
//
// One schema table drives both directions and both encodings, so a member cannot be
// hex in one place and base64 in another. Decoding is as strict as the relay: a missing
// or mistyped member is `malformed`, an unknown member inside `envelope` or `cursor` is
// `malformed`, an unknown frame type is `unknown_frame`; unknown top-level members are
// ignored (section 7). The encoder writes members in the relay's order, so its output
// is byte for byte the vectors'.
//
// Integers are JavaScript numbers: the protocol keeps epochs, and clients keep refs,
// below 2^53 (section 4.1); a larger integer is refused rather than rounded.

import { decode as msgpackDecode, encode as msgpackEncode } from '@msgpack/msgpack';
import { fromBase64, fromHex, toBase64, toHex, WireError } from './bytes.js';

/** The relay's default `max_frame_bytes` (PROTOCOL 4.4). */
export const DEFAULT_MAX_FRAME_BYTES = 89432;

// Member kinds: hex / b64 are byte strings in JSON (bin in MessagePack); flag is a
// boolean omitted when false; the rest are what they say.
const ENVELOPE = [
  ['recipient', 'hex'],
  ['sender', 'hex'],
  ['timestamp', 'u64'],
  ['ephemeral', 'flag'],
  ['body', 'b64'],
  ['signature', 'b64'],
];
const CURSOR = [
  ['epoch', 'u64'],
  ['seq', 'u64'],
];
const MESSAGE = [
  ['seq', 'u64'],
  ['id', 'hex'],
  ['envelope', 'envelope'],
];

/** Frame members by `type`, in the relay's order; `?` marks optional members. */
const FRAMES = {
  // client to relay
  auth: [['key', 'hex'], ['timestamp', 'u64'], ['signature', 'b64'], ['cursor?', 'cursor']],
  send: [['ref?', 'u64'], ['envelope', 'envelope']],
  ack: [['seq', 'u64']],
  // relay to client
  challenge: [['nonce', 'hex'], ['origin', 'str'], ['timestamp', 'u64']],
  ready: [['key', 'hex'], ['epoch', 'u64'], ['window', 'u64']],
  gap: [['epoch', 'u64'], ['seq', 'u64'], ['reason', 'reason']],
  deliver: [['seq?', 'u64'], ['id', 'hex'], ['envelope', 'envelope']],
  synced: [['epoch', 'u64'], ['seq', 'u64']],
  accepted: [['ref?', 'u64'], ['id', 'hex'], ['duplicate', 'flag'], ['online?', 'bool']],
  error: [['code', 'str'], ['detail', 'str'], ['ref?', 'u64'], ['retry_after_ms?', 'u64']],
};

/** HTTP bodies (no `type` member). */
const BODIES = {
  envelope: ENVELOPE,
  // POST /v1/send answer: `duplicate` is always present there.
  sendResult: [['id', 'hex'], ['duplicate', 'bool'], ['online?', 'bool']],
  // GET /v1/inbox answer.
  inboxPage: [
    ['epoch', 'u64'],
    ['gap', 'bool'],
    ['gap_reason?', 'reason'],
    ['messages', 'messages'],
    ['next', 'cursor'],
    ['more', 'bool'],
  ],
};

const REASONS = new Set(['expired', 'epoch_changed']);

/** The encodings by subprotocol name. */
export const SUBPROTOCOLS = { json: 'whispr.v1.json', msgpack: 'whispr.v1.msgpack' };

function malformed(detail) {
  return new WireError('malformed', detail);
}

function readMember(kind, value, binary, field) {
  switch (kind) {
    case 'hex':
    case 'b64':
      if (binary) {
        if (!(value instanceof Uint8Array)) throw malformed(`${field} must be MessagePack bin`);
        return value;
      }
      return kind === 'hex' ? fromHex(value, field) : fromBase64(value, field);
    case 'u64':
      if (!Number.isSafeInteger(value) || value < 0) {
        throw malformed(`${field} must be an unsigned integer below 2^53`);
      }
      return value;
    case 'str':
      if (typeof value !== 'string') throw malformed(`${field} must be a string`);
      return value;
    case 'bool':
    case 'flag':
      if (typeof value !== 'boolean') throw malformed(`${field} must be a boolean`);
      return value;
    case 'reason':
      if (!REASONS.has(value)) throw malformed(`${field} must be expired or epoch_changed`);
      return value;
    case 'envelope':
      return readObject(ENVELOPE, value, binary, field, true);
    case 'cursor':
      return readObject(CURSOR, value, binary, field, true);
    case 'messages':
      if (!Array.isArray(value)) throw malformed(`${field} must be an array`);
      return value.map((m, i) => readObject(MESSAGE, m, binary, `${field}[${i}]`, false));
    default:
      throw new Error(`unknown member kind ${kind}`);
  }
}

function isObject(value) {
  return value !== null && typeof value === 'object' && !Array.isArray(value) && !(value instanceof Uint8Array);
}

function readObject(schema, value, binary, where, closed) {
  if (!isObject(value)) throw malformed(`${where} must be an object`);
  const out = {};
  const known = new Set();
  for (const [spec, kind] of schema) {
    const optional = spec.endsWith('?');
    const name = optional ? spec.slice(0, -1) : spec;
    known.add(name);
    const member = value[name];
    if (member === undefined || member === null) {
      if (kind === 'flag') out[name] = false;
      else if (!optional) throw malformed(`${where} has no ${name}`);
      continue;
    }
    out[name] = readMember(kind, member, binary, `${where}.${name}`);
  }
  if (closed) {
    const extra = Object.keys(value).find((k) => !known.has(k));
    if (extra !== undefined) throw malformed(`${where} has an unknown member ${extra}`);
  }
  return out;
}

function writeMember(kind, value, binary) {
  switch (kind) {
    case 'hex':
      return binary ? value : toHex(value);
    case 'b64':
      return binary ? value : toBase64(value);
    case 'envelope':
      return writeObject(ENVELOPE, value, binary);
    case 'cursor':
      return writeObject(CURSOR, value, binary);
    case 'messages':
      return value.map((m) => writeObject(MESSAGE, m, binary));
    default:
      return value;
  }
}

function writeObject(schema, value, binary, out = {}) {
  for (const [spec, kind] of schema) {
    const name = spec.endsWith('?') ? spec.slice(0, -1) : spec;
    const member = value[name];
    if (member === undefined || member === null || (kind === 'flag' && member === false)) continue;
    out[name] = writeMember(kind, member, binary);
  }
  return out;
}

/**
 * One encoding: `json` or `msgpack`. `encode*` returns a string (JSON) or a Uint8Array
 * (MessagePack); `decode*` takes either.
 */
export class Codec {
  constructor(name, { maxFrameBytes = DEFAULT_MAX_FRAME_BYTES } = {}) {
    if (!(name in SUBPROTOCOLS)) throw new TypeError(`unknown codec ${name} (json or msgpack)`);
    this.name = name;
    this.binary = name === 'msgpack';
    this.subprotocol = SUBPROTOCOLS[name];
    this.contentType = this.binary ? 'application/msgpack' : 'application/json';
    this.maxFrameBytes = maxFrameBytes;
  }

  /** The codec a subprotocol names (what the handshake answered). */
  static forSubprotocol(subprotocol, options) {
    const name = Object.keys(SUBPROTOCOLS).find((k) => SUBPROTOCOLS[k] === subprotocol);
    return name === undefined ? null : new Codec(name, options);
  }

  encodeFrame(frame) {
    const schema = FRAMES[frame.type];
    if (!schema) throw new TypeError(`unknown frame type ${frame.type}`);
    return this.#serialize(writeObject(schema, frame, this.binary, { type: frame.type }));
  }

  /** A frame of either direction, checked against its schema. */
  decodeFrame(data) {
    const value = this.#parse(data);
    if (!isObject(value)) throw malformed('a frame is an object');
    if (typeof value.type !== 'string') throw malformed('the frame has no type');
    const schema = FRAMES[value.type];
    if (!schema) throw new WireError('unknown_frame', `unknown frame type ${value.type}`);
    return { type: value.type, ...readObject(schema, value, this.binary, value.type, false) };
  }

  /** An HTTP body: `envelope`, `sendResult` or `inboxPage`. */
  encodeBody(kind, value) {
    return this.#serialize(writeObject(BODIES[kind], value, this.binary));
  }

  decodeBody(kind, data) {
    return readObject(BODIES[kind], this.#parse(data), this.binary, kind, kind === 'envelope');
  }

  #serialize(value) {
    return this.binary ? msgpackEncode(value) : JSON.stringify(value);
  }

  #parse(data) {
    const size = typeof data === 'string' ? new TextEncoder().encode(data).length : data.byteLength;
    if (size > this.maxFrameBytes) {
      throw new WireError('too_large', `${size} bytes is over max_frame_bytes (${this.maxFrameBytes})`);
    }
    // A frame is exactly one value (PROTOCOL 4.1, 4.2): `decode` refuses bytes after
    // the MessagePack value and `JSON.parse` anything but whitespace after the JSON
    // one, both as `malformed` (vectors msgpack_trailing_bytes, json_trailing_characters).
    try {
      if (this.binary) {
        if (typeof data === 'string') throw malformed('a MessagePack frame is binary');
        return msgpackDecode(data);
      }
      const text = typeof data === 'string' ? data : new TextDecoder('utf-8', { fatal: true }).decode(data);
      return JSON.parse(text);
    } catch (e) {
      if (e instanceof WireError) throw e;
      throw malformed(`not ${this.binary ? 'MessagePack' : 'JSON'}: ${e.message}`);
    }
  }
}
