// Unit tests of the pure pieces: the session state machine, the close-code rules, the
// inbox state, backoff, sealed boxes, the identity file format, canonical keys and base64.

import { test } from 'node:test';
import assert from 'node:assert/strict';

import {
  ready, Identity, SessionCore, closeAction, InboxState, MemoryStorage, Backoff, sealText, openText,
  formatKeyFile, parseKeyFile, fromHex, toHex, authSigningBytes, verifySignature, relayUrl, originOf,
} from '../src/index.js';

await ready();

const alice = new Identity(new Uint8Array(32).fill(1));
const bob = new Identity(new Uint8Array(32).fill(2));
const nonce = Uint8Array.from({ length: 32 }, (_, i) => i);

test('session: challenge -> auth with cursor, signed over the dialled origin and the relay clock', () => {
  const core = new SessionCore({ identity: bob, origin: '127.0.0.1:8000', cursor: { epoch: 7, seq: 3 } });
  const { send, events } = core.onFrame({ type: 'challenge', nonce, origin: '127.0.0.1:8000', timestamp: 1700000001000 });
  assert.deepEqual(events, []);
  assert.equal(send.length, 1);
  const auth = send[0];
  assert.equal(auth.type, 'auth');
  assert.deepEqual(auth.cursor, { epoch: 7, seq: 3 });
  assert.equal(auth.timestamp, 1700000001000);
  assert.ok(verifySignature(bob.publicKey, authSigningBytes(nonce, bob.publicKey, auth.timestamp, '127.0.0.1:8000'), auth.signature));
  assert.equal(core.phase, 'authenticating');
  const ready_ = core.onFrame({ type: 'ready', key: bob.publicKey, epoch: 7, window: 256 });
  assert.deepEqual(ready_.events, [{ kind: 'ready', epoch: 7, window: 256 }]);
});

test('session: a challenge for another origin is never answered', () => {
  const core = new SessionCore({ identity: bob, origin: '127.0.0.1:8000', cursor: null });
  const { send, events } = core.onFrame({ type: 'challenge', nonce, origin: 'evil.example.com', timestamp: 1 });
  assert.deepEqual(send, []);
  assert.equal(events[0].kind, 'fatal');
  assert.equal(events[0].code, 'origin_mismatch');
});

test('session: no cursor means no cursor member; an auth error is a refusal', () => {
  const core = new SessionCore({ identity: bob, origin: 'relay.example.com', cursor: null });
  const [auth] = core.onFrame({ type: 'challenge', nonce, origin: 'relay.example.com', timestamp: 5 }).send;
  assert.equal('cursor' in auth, false);
  const { events } = core.onFrame({ type: 'error', code: 'stale_timestamp', detail: 'clock' });
  assert.deepEqual(events, [{ kind: 'refused', code: 'stale_timestamp', detail: 'clock' }]);
});

test('session: live frames become events; a gap moves the epoch of later deliveries', () => {
  const core = new SessionCore({ identity: bob, origin: 'o', cursor: null });
  core.onFrame({ type: 'challenge', nonce, origin: 'o', timestamp: 5 });
  core.onFrame({ type: 'ready', key: bob.publicKey, epoch: 1, window: 2 });
  const id = new Uint8Array(32);
  assert.equal(core.onFrame({ type: 'deliver', seq: 4, id, envelope: {} }).events[0].epoch, 1);
  assert.deepEqual(core.onFrame({ type: 'gap', epoch: 9, seq: 0, reason: 'epoch_changed' }).events[0], { kind: 'gap', epoch: 9, seq: 0, reason: 'epoch_changed' });
  assert.equal(core.onFrame({ type: 'deliver', seq: 1, id, envelope: {} }).events[0].epoch, 9);
  assert.deepEqual(core.onFrame({ type: 'error', code: 'rate_limited', detail: 'd', ref: 3, retry_after_ms: 101 }).events[0], {
    kind: 'refused', ref: 3, code: 'rate_limited', detail: 'd', retryAfterMs: 101,
  });
  assert.equal(core.onFrame({ type: 'error', code: 'cursor_ahead', detail: 'd' }).events[0].kind, 'notice');
  assert.equal(core.onFrame({ type: 'accepted', ref: 3, id, duplicate: true }).events[0].duplicate, true);
  assert.deepEqual(core.onFrame({ type: 'ready', key: bob.publicKey, epoch: 5, window: 1 }), { send: [], events: [] });
});

test('close codes: 4001, 4003 and 4008 stop, 4007 reconnects at once, the rest back off', () => {
  assert.deepEqual(closeAction(4001), { action: 'stop', reason: 'replaced' });
  assert.equal(closeAction(4003).action, 'stop');
  assert.deepEqual(closeAction(4008), { action: 'stop', reason: 'bad_signatures' });
  assert.equal(closeAction(4007).action, 'now');
  for (const code of [1001, 1006, 1011, 4002, 4004, 4005, 4006]) assert.equal(closeAction(code).action, 'backoff', code);
});

test('inbox state: the cursor only moves forward within an epoch; ids are bounded', () => {
  const s = new InboxState({ capacity: 3 });
  s.onReady(7);
  assert.deepEqual(s.cursor, { epoch: 7, seq: 0 });
  s.processed(7, 5, 'a');
  s.processed(7, 3, 'b');
  assert.deepEqual(s.cursor, { epoch: 7, seq: 5 });
  s.processed(7, undefined, 'c');
  assert.deepEqual(s.cursor, { epoch: 7, seq: 5 });
  s.processed(7, 6, 'd');
  assert.equal(s.isDuplicate('a'), false, 'the oldest id is forgotten past the capacity');
  assert.ok(s.isDuplicate('b') && s.isDuplicate('d'));
  s.adopt({ epoch: 8, seq: 0 });
  s.onReady(9);
  assert.deepEqual(s.cursor, { epoch: 8, seq: 0 });
  const back = InboxState.fromText(s.toText(), 3);
  assert.deepEqual(back.cursor, { epoch: 8, seq: 0 });
  assert.ok(back.isDuplicate('d'));
  assert.equal(InboxState.fromText(null).cursor, null);
  assert.throws(() => InboxState.fromText('{'), /corrupt.*delete it/);
  assert.throws(() => InboxState.fromText('{"version":2}'), /version 2/);
});

test('inbox state: the record is the Rust client\'s cursor file format', () => {
  const rust = '{"version":1,"cursor":{"epoch":3,"seq":4},"recent_ids":["0404040404040404040404040404040404040404040404040404040404040404"]}';
  const s = InboxState.fromText(rust);
  assert.deepEqual(s.cursor, { epoch: 3, seq: 4 });
  assert.ok(s.isDuplicate('04'.repeat(32)));
  assert.equal(s.toText(), rust);
  const m = new MemoryStorage();
  m.save(rust);
  assert.equal(m.load(), rust);
});

test('backoff doubles up to the cap, each delay in the upper half of its nominal value', () => {
  const b = new Backoff({ initialMs: 1000, maxMs: 30000 });
  for (const nominal of [1000, 2000, 4000, 8000, 16000, 30000, 30000]) {
    assert.equal(b.nominalMs, nominal);
    const low = b.next(() => 0);
    b.nominalMs = nominal;
    const high = b.next(() => 0.999999);
    assert.equal(low, nominal / 2);
    assert.ok(high <= nominal && high > nominal * 0.99);
  }
  b.reset();
  assert.equal(b.nominalMs, 1000);
  const spread = new Set(Array.from({ length: 20 }, () => new Backoff().next()));
  assert.ok(spread.size > 10, 'jitter spreads clients apart');
});

test('seal: round trip, the sender is checked, other keys cannot open', () => {
  const body = sealText(alice, bob.publicKey, 'hello, bob');
  assert.deepEqual(openText(bob, alice.publicKey, body), { v: 1, from: alice.address, text: 'hello, bob' });
  assert.throws(() => openText(bob, new Identity(new Uint8Array(32).fill(3)).publicKey, body), (e) => e.code === 'undecryptable' && /claims to be from/.test(e.detail));
  assert.throws(() => openText(alice, alice.publicKey, body), (e) => e.code === 'undecryptable');
  const small = new Uint8Array(32);
  small[0] = 1;
  assert.throws(() => sealText(alice, small, 'x'), (e) => e.code === 'invalid_key');
});

test('key file: exactly the `whispr keygen` format, and refusals', () => {
  const text = formatKeyFile(alice);
  assert.equal(text, `{"version":1,"ed25519_seed":"${'01'.repeat(32)}"}\n`);
  assert.equal(parseKeyFile(text).address, alice.address);
  assert.equal(parseKeyFile(`{"version":1,"ed25519_seed":"${'AB'.repeat(32)}"}`).address, new Identity(fromHex('ab'.repeat(32))).address);
  for (const bad of ['hello', '{"version":9,"ed25519_seed":"' + '01'.repeat(32) + '"}', '{"version":1,"ed25519_seed":"abcd"}', '{"version":1,"ed25519_seed":"' + '01'.repeat(32) + '","x":1}']) {
    assert.throws(() => parseKeyFile(bad), /not a whispr identity file/, bad);
  }
  assert.equal(toHex(Identity.generate().seed).length, 64);
});

test('relay URLs: any scheme in, the right one out; the origin keeps only non-default ports', () => {
  assert.equal(relayUrl('http://127.0.0.1:8000', 'ws', '/v1/ws'), 'ws://127.0.0.1:8000/v1/ws');
  assert.equal(relayUrl('wss://chat.example.com/', 'http', ''), 'https://chat.example.com');
  assert.throws(() => relayUrl('ftp://x', 'ws', ''), /scheme/);
  assert.equal(originOf('wss://Chat.Example.com:443/v1/ws'), 'chat.example.com');
  assert.equal(originOf('ws://[::1]:8443/v1/ws'), '[::1]:8443');
  assert.equal(originOf('ws://127.0.0.1:80/v1/ws'), '127.0.0.1');
});

test('key encodings with y >= p are not canonical; base64 has one spelling', async () => {
  const { isCanonicalKey } = await import('../src/protocol.js');
  const { fromBase64 } = await import('../src/bytes.js');
  const key = (low, top) => Uint8Array.from({ length: 32 }, (_, i) => (i === 0 ? low : i === 31 ? top : 0xff));
  assert.equal(isCanonicalKey(key(0xec, 0x7f)), true); // p - 1
  assert.equal(isCanonicalKey(key(0xed, 0x7f)), false); // p
  assert.equal(isCanonicalKey(key(0xff, 0xff)), false); // 2^255 - 1, sign bit set
  assert.equal(isCanonicalKey(key(0xed, 0x7e)), true);
  assert.deepEqual([...fromBase64('YWI=')], [0x61, 0x62]);
  for (const bad of ['YWJ=', 'YR==', 'YWI', 'YW-=', 'YWI= ']) assert.throws(() => fromBase64(bad), (e) => e.code === 'malformed', bad);
});
