// The client against a scripted relay (a `ws` server speaking the protocol with the
// library's own codec and the relay's checks from verify.js), for what a real relay
// cannot be made to do on demand: close 4007 mid-session, close 4008, name another origin, deliver
// a forged or repeated message.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { WebSocketServer } from 'ws';

import {
  ready, Identity, WhisprClient, Codec, checkAuthFrame, signEnvelope, sealText, messageId, envelopeSigningBytes,
} from '../src/index.js';
import { nextEvent, inbox } from './support.js';

await ready();
const json = new Codec('json');

/**
 * A relay that runs `script(session)` for each connection. `session.next()` resolves
 * with the next decoded frame from the client, `session.send(frame)` writes one.
 */
async function fakeRelay(t, script) {
  const server = new WebSocketServer({ host: '127.0.0.1', port: 0, handleProtocols: () => 'whispr.v1.json' });
  await new Promise((resolve) => server.once('listening', resolve));
  const origin = `127.0.0.1:${server.address().port}`;
  const sessions = [];
  server.on('connection', (socket) => {
    const frames = [];
    const waiting = [];
    socket.on('message', (data) => {
      const frame = json.decodeFrame(data.toString());
      if (waiting.length) waiting.shift()(frame);
      else frames.push(frame);
    });
    const session = {
      origin,
      index: sessions.length,
      send: (frame) => socket.send(json.encodeFrame(frame)),
      next: () => (frames.length ? Promise.resolve(frames.shift()) : new Promise((resolve) => waiting.push(resolve))),
      close: (code) => socket.close(code),
      ping: () => socket.ping(),
      closed: new Promise((resolve) => socket.on('close', resolve)),
      received: frames,
    };
    sessions.push(session);
    script(session);
  });
  t.after(() => new Promise((resolve) => { for (const c of server.clients) c.terminate(); server.close(resolve); }));
  return { url: `ws://${origin}`, origin, sessions };
}

const nonce = new Uint8Array(32).fill(7);

/** The relay side of authentication; resolves with the client's verified auth frame. */
async function authenticate(session, epoch) {
  session.send({ type: 'challenge', nonce, origin: session.origin, timestamp: Date.now() });
  const auth = await session.next();
  assert.equal(checkAuthFrame(auth, { nonce, origin: session.origin }), null, 'the relay accepts the auth');
  session.send({ type: 'ready', key: auth.key, epoch, window: 256 });
  return auth;
}

async function deliverable(from, to, text, seq) {
  const envelope = signEnvelope(from, to.publicKey, sealText(from, to.publicKey, text));
  return { type: 'deliver', seq, id: await messageId(envelopeSigningBytes(envelope)), envelope };
}

test('close 4007: the client reconnects at once with its cursor and takes the new epoch', async (t) => {
  const alice = Identity.generate();
  const bob = Identity.generate();
  const auths = [];
  const relay = await fakeRelay(t, async (session) => {
    if (session.index === 0) {
      auths.push(await authenticate(session, 5));
      session.send(await deliverable(alice, bob, 'first', 1));
      assert.deepEqual(await session.next(), { type: 'ack', seq: 1 });
      session.close(4007);
    } else {
      auths.push(await authenticate(session, 6));
      session.send({ type: 'gap', epoch: 6, seq: 0, reason: 'epoch_changed' });
      session.send(await deliverable(alice, bob, 'second', 1));
    }
  });
  // A backoff this long would fail the test's deadlines: 4007 must not wait for it.
  const client = new WhisprClient({ relay: relay.url, identity: bob, backoff: { initialMs: 60000, maxMs: 60000 } });
  t.after(() => client.close());
  const got = inbox(client);
  const disconnected = nextEvent(client, 'disconnected');
  const changed = nextEvent(client, 'epochChanged');
  await client.start();
  const d = await disconnected;
  assert.equal(d.code, 4007);
  assert.equal(d.retryInMs, 0);
  assert.deepEqual(await changed, { from: 5, to: 6 });
  assert.deepEqual((await got.until(2)).map((m) => [m.text, m.epoch, m.seq]), [['first', 5, 1], ['second', 6, 1]]);
  assert.equal(auths[0].cursor, undefined);
  assert.deepEqual(auths[1].cursor, { epoch: 5, seq: 1 });
});

test('close 4008 (too many bad signatures): the client stops instead of reconnecting', async (t) => {
  const relay = await fakeRelay(t, async (session) => {
    await authenticate(session, 1);
    const send = await session.next();
    assert.equal(send.type, 'send');
    session.send({ type: 'error', code: 'bad_signature', detail: 'signature does not verify', ref: send.ref });
    session.close(4008);
  });
  // A short backoff: a reconnect would show up as a second session at once.
  const client = new WhisprClient({ relay: relay.url, identity: Identity.generate(), backoff: { initialMs: 10, maxMs: 10 } });
  t.after(() => client.close());
  const failed = nextEvent(client, 'error');
  await client.start();
  await assert.rejects(client.send(Identity.generate().address, 'hello'), (e) => e.code === 'bad_signature');
  const { error } = await failed;
  assert.equal(error.code, 'bad_signature');
  assert.equal(error.closeCode, 4008);
  assert.equal(client.status, 'closed');
  await new Promise((resolve) => setTimeout(resolve, 200));
  assert.equal(relay.sessions.length, 1, 'no reconnect after 4008');
});

test('a challenge naming another origin is not answered, and the client stops', async (t) => {
  let session;
  const relay = await fakeRelay(t, (s) => {
    session = s;
    s.send({ type: 'challenge', nonce, origin: 'evil.example.com', timestamp: Date.now() });
  });
  const client = new WhisprClient({ relay: relay.url, identity: Identity.generate() });
  t.after(() => client.close());
  const failed = nextEvent(client, 'error');
  await client.start();
  assert.equal((await failed).error.code, 'origin_mismatch');
  await session.closed;
  assert.deepEqual(session.received, [], 'no auth was sent');
  assert.equal(client.status, 'closed');
});

test('forged, misaddressed and repeated deliveries: rejected or dropped, and all acknowledged', async (t) => {
  const alice = Identity.generate();
  const bob = Identity.generate();
  const acks = [];
  const relay = await fakeRelay(t, async (session) => {
    await authenticate(session, 1);
    const good = await deliverable(alice, bob, 'genuine', 1);
    const forged = await deliverable(alice, bob, 'forged', 2);
    forged.envelope.body = sealText(alice, bob.publicKey, 'swapped body'); // signature no longer covers it
    const wrongId = await deliverable(alice, bob, 'wrong id', 3);
    wrongId.id = new Uint8Array(32);
    const notForBob = await deliverable(alice, alice, 'for alice', 4);
    const again = { ...good, seq: 5 };
    for (const f of [good, forged, wrongId, notForBob, again]) session.send(f);
    for (let i = 0; i < 5; i++) acks.push((await session.next()).seq);
    session.send(await deliverable(alice, bob, 'last', 6));
  });
  const client = new WhisprClient({ relay: relay.url, identity: bob });
  t.after(() => client.close());
  const rejected = [];
  client.on('rejected', (r) => rejected.push(r.reason));
  const got = inbox(client);
  await client.start();
  assert.deepEqual((await got.until(2)).map((m) => m.text), ['genuine', 'last']);
  assert.deepEqual(acks, [1, 2, 3, 4, 5]);
  assert.equal(rejected.length, 3);
  assert.match(rejected[0], /bad_signature/);
  assert.match(rejected[1], /id does not match/);
  assert.match(rejected[2], /another key/);
});

test('under Node, a relay that pinged and then went silent is given up after idleTimeoutMs', async (t) => {
  const relay = await fakeRelay(t, async (session) => {
    await authenticate(session, 1);
    session.ping();
    // ...and nothing more: no frames, no pings, and the TCP connection stays open.
  });
  const client = new WhisprClient({ relay: relay.url, identity: Identity.generate(), idleTimeoutMs: 300, backoff: { initialMs: 60000 } });
  t.after(() => client.close());
  const gone = nextEvent(client, 'disconnected');
  await client.start();
  const d = await gone;
  assert.equal(d.code, 1006);
  assert.match(d.reason, /sent nothing for 300 ms/);
});
