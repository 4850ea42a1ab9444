// Every vector in proto/vectors/ reproduced by the library: signing bytes, signatures,
// ids, Authorization values, the exact JSON text and MessagePack bytes of every frame,
// and the refusal (with the relay's code) of every negative vector. No test counts the
// vectors: each file must be non-empty, and every vector in it must pass, so a
// regenerated file is checked in full without editing this one.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';

import {
  ready, Identity, Codec, envelopeSigningBytes, messageId, checkEnvelope, checkSkew,
  authSigningBytes, httpSigningBytes, authorizationHeader, verifySignature, checkAuthFrame,
  checkAuthorization, toHex, fromHex,
} from '../src/index.js';

await ready();

const load = (name) => JSON.parse(readFileSync(new URL(`../../../proto/vectors/${name}`, import.meta.url)));
const json = new Codec('json');
const msgpack = new Codec('msgpack');

/** Both encodings of `vector` decode to the same frame and re-encode to the exact bytes. */
function roundTrips(vector, kind = 'frame') {
  const fromJson = kind === 'frame' ? json.decodeFrame(vector.json) : json.decodeBody(kind, vector.json);
  const bin = fromHex(vector.msgpack_hex);
  const fromMsgpack = kind === 'frame' ? msgpack.decodeFrame(bin) : msgpack.decodeBody(kind, bin);
  assert.deepEqual(fromMsgpack, fromJson, `${vector.name ?? kind}: the encodings disagree`);
  const encode = (codec, value) => (kind === 'frame' ? codec.encodeFrame(value) : codec.encodeBody(kind, value));
  assert.equal(encode(json, fromJson), vector.json);
  assert.equal(toHex(encode(msgpack, fromJson)), vector.msgpack_hex);
  return fromJson;
}

test('envelopes: signing bytes, signature, id and every frame', async () => {
  const { vectors } = load('envelopes.json');
  assert.ok(vectors.length > 0, 'the file has vectors');
  for (const v of vectors) {
    const sender = new Identity(fromHex(v.sender_seed_hex));
    const recipient = new Identity(fromHex(v.recipient_seed_hex));
    assert.equal(sender.address, v.sender_hex);
    assert.equal(recipient.address, v.recipient_hex);
    const envelope = {
      recipient: recipient.publicKey, sender: sender.publicKey, timestamp: v.timestamp,
      ephemeral: v.ephemeral, body: fromHex(v.body_hex),
    };
    const bytes = envelopeSigningBytes(envelope);
    assert.equal(toHex(bytes), v.signing_bytes_hex, v.name);
    envelope.signature = sender.sign(bytes);
    assert.equal(toHex(envelope.signature), v.signature_hex, v.name);
    assert.equal(toHex(await messageId(bytes)), v.id_hex, v.name);
    assert.equal(checkEnvelope(envelope, { nowMs: v.timestamp }), null, v.name);

    assert.deepEqual(roundTrips(v.envelope, 'envelope'), envelope, v.name);
    const send = roundTrips(v.send);
    assert.deepEqual(send, { type: 'send', ref: v.send.ref, envelope });
    const accepted = roundTrips(v.accepted);
    assert.equal(toHex(accepted.id), v.id_hex);
    assert.equal(accepted.duplicate, v.accepted.duplicate);
    assert.equal(accepted.online, v.accepted.online ?? undefined);
    const deliver = roundTrips(v.deliver);
    assert.equal(deliver.seq, v.deliver.seq ?? undefined);
    assert.deepEqual(deliver.envelope, envelope);
  }
});

test('auth: challenge, signing bytes, signature, auth and ready frames', () => {
  const { vectors } = load('auth.json');
  assert.ok(vectors.length > 0, 'the file has vectors');
  for (const v of vectors) {
    const me = new Identity(fromHex(v.seed_hex));
    assert.equal(me.address, v.key_hex);
    const challenge = roundTrips(v.challenge);
    assert.equal(toHex(challenge.nonce), v.challenge.nonce_hex);
    assert.equal(challenge.origin, v.origin);
    const bytes = authSigningBytes(challenge.nonce, me.publicKey, v.timestamp, v.origin);
    assert.equal(toHex(bytes), v.signing_bytes_hex, v.name);
    const signature = me.sign(bytes);
    assert.equal(toHex(signature), v.signature_hex, v.name);
    const auth = roundTrips(v.auth);
    assert.deepEqual(auth, {
      type: 'auth', key: me.publicKey, timestamp: v.timestamp, signature,
      ...(v.cursor ? { cursor: v.cursor } : {}),
    });
    assert.equal(checkAuthFrame(auth, { nonce: challenge.nonce, origin: v.origin, nowMs: v.timestamp }), null);
    const readyFrame = roundTrips(v.ready);
    assert.equal(readyFrame.epoch, v.ready.epoch);
    assert.equal(readyFrame.window, v.ready.window);
  }
});

test('http: signing bytes, signature and the Authorization value', () => {
  const { vectors } = load('http.json');
  assert.ok(vectors.length > 0, 'the file has vectors');
  for (const v of vectors) {
    const me = new Identity(fromHex(v.seed_hex));
    const bytes = httpSigningBytes(me.publicKey, v.timestamp, v.origin, v.method, v.path_and_query);
    assert.equal(toHex(bytes), v.signing_bytes_hex, v.name);
    assert.equal(toHex(me.sign(bytes)), v.signature_hex, v.name);
    const header = authorizationHeader(me, {
      timestamp: v.timestamp, origin: v.origin, method: v.method, pathAndQuery: v.path_and_query,
    });
    assert.equal(header, v.authorization, v.name);
    const request = { method: v.method, pathAndQuery: v.path_and_query, origin: v.origin, nowMs: v.timestamp };
    assert.equal(checkAuthorization(header, request), null, v.name);
  }
});

test('frames: every other frame in both encodings', () => {
  const { vectors } = load('frames.json');
  assert.ok(vectors.length > 0, 'the file has vectors');
  for (const v of vectors) roundTrips(v);
  const limited = json.decodeFrame(vectors.find((v) => v.name === 'error_rate_limited').json);
  assert.equal(limited.retry_after_ms, 101);
  assert.equal(limited.ref, 7);
});

test('clock skew: inclusive at the boundary, both directions', () => {
  const { vectors } = load('clock_skew.json');
  assert.ok(vectors.length > 0, 'the file has vectors');
  for (const v of vectors) assert.equal(checkSkew(v.timestamp, v.now_ms, v.max_skew_ms), v.error, v.name);
});

test('negative envelopes are refused with the relay\'s code', () => {
  const { vectors } = load('negative_envelopes.json');
  assert.ok(vectors.length > 0, 'the file has vectors');
  for (const v of vectors) {
    let code;
    try {
      const envelope = json.decodeBody('envelope', v.json);
      code = checkEnvelope(envelope, { nowMs: v.now_ms, maxSkewMs: v.max_skew_ms });
    } catch (e) {
      code = e.code;
    }
    assert.equal(code, v.error, v.name);
  }
});

test('libsodium refuses the small-order key that lax verifiers accept', () => {
  const v = load('negative_envelopes.json').vectors.find((x) => x.name === 'small_order_sender');
  assert.equal(v.lax_verify_accepts, true);
  const envelope = json.decodeBody('envelope', v.json);
  assert.equal(verifySignature(envelope.sender, envelopeSigningBytes(envelope), envelope.signature), false);
});

// torsion.json: the envelopes whose verdict changed when the relay moved to the
// cofactored (ZIP-215) equation (PROTOCOL 2.2). The relay accepts every one; libsodium's
// verify is cofactorless, like the relay's old verify_strict, and refuses each one whose
// `verify_strict_accepts` is false. Said per vector, so a vector libsodium accepted, or
// one the relay stopped accepting, fails here by name instead of being skipped.
test('torsion envelopes: the relay accepts them, libsodium (cofactorless) refuses them', () => {
  const { vectors } = load('torsion.json');
  assert.ok(vectors.length > 0, 'the file has vectors');
  for (const v of vectors) {
    const envelope = json.decodeBody('envelope', v.json);
    const libsodium = verifySignature(envelope.sender, envelopeSigningBytes(envelope), envelope.signature);
    assert.equal(
      libsodium,
      v.verify_strict_accepts,
      `${v.name} (torsion on ${v.torsion}): the relay accepts it; libsodium ${v.verify_strict_accepts ? 'must accept' : 'refuses'} it, as the cofactorless rule does`,
    );
    // This client's own check is libsodium's, so it refuses what only a misbehaving key
    // owner makes; the relay's acceptance is checked by proto/tests/vectors.rs.
    const code = checkEnvelope(envelope, { nowMs: v.now_ms, maxSkewMs: v.max_skew_ms });
    assert.equal(code, v.verify_strict_accepts ? null : 'bad_signature', `${v.name}: checkEnvelope`);
  }
});

test('libsodium accepts every honest signature (random keys, messages and lengths)', () => {
  for (let i = 0; i < 300; i++) {
    const me = Identity.generate();
    const message = new Uint8Array(i);
    globalThis.crypto.getRandomValues(message);
    assert.ok(verifySignature(me.publicKey, message, me.sign(message)), `length ${i}`);
  }
});

test('negative auth frames are refused with the relay\'s code', () => {
  const { vectors } = load('negative_auth.json');
  assert.ok(vectors.length > 0, 'the file has vectors');
  for (const v of vectors) {
    let code;
    try {
      code = checkAuthFrame(json.decodeFrame(v.json), {
        nonce: fromHex(v.nonce_hex), origin: v.origin, nowMs: v.now_ms, maxSkewMs: v.max_skew_ms,
      });
    } catch (e) {
      code = e.code;
    }
    assert.equal(code, v.error, v.name);
    assert.equal(v.close_code, 4003);
  }
});

test('negative Authorization headers are refused with the failing check', () => {
  const { vectors } = load('negative_http.json');
  assert.ok(vectors.length > 0, 'the file has vectors');
  for (const v of vectors) {
    const cause = checkAuthorization(v.authorization, {
      method: v.method, pathAndQuery: v.path_and_query, origin: v.origin, nowMs: v.now_ms, maxSkewMs: v.max_skew_ms,
    });
    assert.equal(cause, v.cause, v.name);
  }
});

test('negative frames are refused with the relay\'s code', () => {
  const { vectors } = load('negative_frames.json');
  assert.ok(vectors.length > 0, 'the file has vectors');
  for (const v of vectors) {
    const codec = new Codec(v.codec, { maxFrameBytes: v.max_frame_bytes });
    const data = v.codec === 'json' ? v.json : fromHex(v.msgpack_hex);
    assert.throws(() => codec.decodeFrame(data), (e) => e.code === v.error, v.name);
  }
});

test('errors.json: every code the client knows, with its HTTP status', async () => {
  const { ERROR_STATUS, CLOSE_CODES } = await import('../src/index.js');
  const table = load('errors.json');
  assert.deepEqual(ERROR_STATUS, Object.fromEntries(table.error_codes.map((e) => [e.code, e.http_status])));
  assert.deepEqual(CLOSE_CODES, Object.fromEntries(table.close_codes.map((c) => [c.name, c.code])));
});

test('Authorization: the permitted variations of 8.3 parse, everything else is refused', () => {
  const v = load('http.json').vectors[0];
  const me = new Identity(fromHex(v.seed_hex));
  const request = { method: v.method, pathAndQuery: v.path_and_query, origin: v.origin, nowMs: v.timestamp };
  const header = authorizationHeader(me, { timestamp: v.timestamp, origin: v.origin, method: v.method, pathAndQuery: v.path_and_query });
  const [k, t, s] = header.slice('Whispr '.length).split(', ');
  for (const ok of [`Whispr ${s},${k},${t}`, `Whispr ${t} ,  ${s}  ,${k}`, `Whispr ${k}, ${t}, ${s}`]) {
    assert.equal(checkAuthorization(ok, request), null, ok);
  }
  // `0` is a valid spelling of ts (stale here, but read).
  assert.equal(checkAuthorization(`Whispr ${k}, ts=0, ${s}`, request), 'bad_signature');
  const trailingBits = `${s.slice(0, -3)}B==`;
  for (const bad of [
    `Whispr ${k}, ts=-${v.timestamp}, ${s}`, `Whispr ${k}, ts=18446744073709551616, ${s}`, `Whispr ${k}, ts=, ${s}`,
    `Whispr\t${k}, ${t}, ${s}`, `whispr ${k}, ${t}, ${s}`, `Whispr  ${k}, ${t}, ${s}`, `Whispr ${k}, ${t}, ${s} `,
    `Whispr ${k}, ${t}, ${s},`, `Whispr ${k},, ${t}, ${s}`, `Whispr ${k}, ts= ${v.timestamp}, ${s}`,
    `Whispr ${k}, ${t}, ${trailingBits}`, `Whispr ${k}, ${t}, sig=-${s.slice(5)}`, `Whispr ${k}, ${t}, ${s}, x=1`, 'Whispr ',
  ]) {
    assert.equal(checkAuthorization(bad, request), 'unauthorized', JSON.stringify(bad));
  }
  // The largest u64 is read (and is stale); the length rules keep their own codes.
  assert.equal(checkAuthorization(`Whispr ${k}, ts=18446744073709551615, ${s}`, request), 'bad_signature');
  assert.equal(checkAuthorization(`Whispr ${k.slice(0, -1)}, ${t}, ${s}`, request), 'invalid_key');
});
