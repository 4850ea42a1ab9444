// The library against a real relay (`whispr serve` on a free port): sessions, sends,
// backlog and resumption, acknowledgement after the handler, takeover, ephemeral
// messages, rate limits, epoch changes and the HTTP polling fallback.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';

import { ready, Identity, WhisprClient, MemoryStorage, WhisprError } from '../src/index.js';
import { startRelay, tempDir, nextEvent, inbox, upgradeRefusingFront } from './support.js';

await ready();

/** A started client; closed when the test ends. */
async function client(t, relay, options) {
  const c = new WhisprClient({ relay: relay.ws, identity: Identity.generate(), ...options });
  t.after(() => c.close());
  const live = nextEvent(c, 'ready');
  await c.start();
  await live;
  return c;
}

test('two clients chat, in JSON and in MessagePack', async (t) => {
  const relay = await startRelay(t);
  const alice = await client(t, relay, { codec: 'json' });
  const bob = await client(t, relay, { codec: 'msgpack' });
  const bobInbox = inbox(bob);
  const aliceInbox = inbox(alice);
  const accepted = await alice.send(bob.address, 'hello, bob');
  assert.match(accepted.id, /^[0-9a-f]{64}$/);
  assert.equal(accepted.duplicate, false);
  const [m] = await bobInbox.until(1);
  assert.equal(m.text, 'hello, bob');
  assert.equal(m.from, alice.address);
  assert.equal(m.id, accepted.id);
  assert.equal(m.ephemeral, false);
  assert.ok(m.seq >= 1);
  await bob.send(alice.address, 'hi alice, ünïcødé 😀');
  const [r] = await aliceInbox.until(1);
  assert.equal(r.text, 'hi alice, ünïcødé 😀');
  assert.equal(r.from, bob.address);
});

test('the backlog arrives before synced, and a restart with the storage shows nothing twice', async (t) => {
  const relay = await startRelay(t);
  const alice = await client(t, relay);
  const identity = Identity.generate();
  for (const text of ['one', 'two', 'three']) await alice.send(identity.address, text);

  const storage = new MemoryStorage();
  const first = new WhisprClient({ relay: relay.ws, identity, storage });
  const seen = inbox(first);
  const synced = nextEvent(first, 'synced');
  await first.start();
  await synced;
  assert.deepEqual(seen.messages.map((m) => m.text), ['one', 'two', 'three']);
  await first.close();

  await alice.send(identity.address, 'four');
  const second = new WhisprClient({ relay: relay.ws, identity, storage });
  t.after(() => second.close());
  const again = inbox(second);
  await second.start();
  await again.until(1);
  await nextEvent(second, 'synced').catch(() => {}); // may have come already
  assert.deepEqual(again.messages.map((m) => m.text), ['four']);
  assert.equal(second.cursor.seq, 4);
});

test('a message is acknowledged only after the handler returned', async (t) => {
  const relay = await startRelay(t);
  const alice = await client(t, relay);
  const identity = Identity.generate();
  const storage = new MemoryStorage();
  await alice.send(identity.address, 'keep me');

  // The handler never finishes: the message must not be acknowledged.
  const stuck = new WhisprClient({ relay: relay.ws, identity, storage });
  const arrived = new Promise((resolve) => stuck.on('message', (m) => { resolve(m); return new Promise(() => {}); }));
  await stuck.start();
  assert.equal((await arrived).text, 'keep me');
  stuck.close(); // does not wait for the stuck handler's chain

  // A failing handler: not acknowledged either; the session ends and it comes again.
  const flaky = new WhisprClient({ relay: relay.ws, identity, storage, backoff: { initialMs: 20, maxMs: 50 } });
  t.after(() => flaky.close());
  let calls = 0;
  const failed = nextEvent(flaky, 'handlerError');
  const handled = new Promise((resolve) => flaky.on('message', (m) => {
    calls += 1;
    if (calls === 1) throw new Error('disk full');
    resolve(m);
  }));
  await flaky.start();
  await failed;
  const m = await handled;
  assert.equal(m.text, 'keep me');
  assert.equal(calls, 2);
});

test('a second session with the same key takes over: the first is told 4001 and stops', async (t) => {
  const relay = await startRelay(t);
  const identity = Identity.generate();
  const first = await client(t, relay, { identity });
  const replaced = nextEvent(first, 'replaced');
  const closed = nextEvent(first, 'status', (s) => s.status === 'closed');
  await client(t, relay, { identity });
  assert.equal((await replaced).code, 4001);
  await closed;
  assert.equal(first.status, 'closed');
});

test('ephemeral messages reach a live session and are dropped when nobody is there', async (t) => {
  const relay = await startRelay(t);
  const alice = await client(t, relay);
  const bob = await client(t, relay);
  const bobInbox = inbox(bob);
  const online = await alice.send(bob.address, 'typing…', { ephemeral: true });
  assert.equal(online.online, true);
  const [m] = await bobInbox.until(1);
  assert.equal(m.ephemeral, true);
  assert.equal(m.seq, undefined);
  assert.equal(m.text, 'typing…');
  const nobody = await alice.send(Identity.generate().address, 'anyone?', { ephemeral: true });
  assert.equal(nobody.online, false);
});

test('a refusal rejects send() with the relay code and retry_after_ms', async (t) => {
  const dir = await tempDir();
  const config = join(dir, 'whispr.toml');
  await writeFile(config, 'max_messages_per_second = 1\nburst_messages = 2\n');
  const relay = await startRelay(t, ['--config', config]);
  const alice = await client(t, relay);
  const bob = Identity.generate().address;
  const limited = nextEvent(alice, 'rateLimited');
  const results = await Promise.allSettled([1, 2, 3, 4].map((n) => alice.send(bob, `n${n}`)));
  const refused = results.filter((r) => r.status === 'rejected').map((r) => r.reason);
  assert.ok(refused.length >= 1, 'the burst of 2 must refuse some of 4 sends');
  for (const e of refused) {
    assert.ok(e instanceof WhisprError);
    assert.equal(e.code, 'rate_limited');
    assert.ok(e.retryAfterMs > 0, `retryAfterMs ${e.retryAfterMs}`);
    assert.equal(e.temporary, true);
  }
  assert.ok((await limited).retryAfterMs > 0);
  await assert.rejects(alice.send('zz', 'x'), (e) => e.code === 'invalid_key');
});

test('a cursor past the inbox head moves it to a new epoch: gap and epochChanged', async (t) => {
  const relay = await startRelay(t);
  const alice = await client(t, relay);
  const identity = Identity.generate();
  const probe = await client(t, relay, { identity });
  const epoch = probe.cursor.epoch;
  await probe.close();
  await alice.send(identity.address, 'after the loss');

  const storage = new MemoryStorage(JSON.stringify({ version: 1, cursor: { epoch, seq: 999 }, recent_ids: [] }));
  const bob = new WhisprClient({ relay: relay.ws, identity, storage });
  t.after(() => bob.close());
  const gap = nextEvent(bob, 'gap');
  const changed = nextEvent(bob, 'epochChanged');
  const got = inbox(bob);
  await bob.start();
  const g = await gap;
  assert.equal(g.reason, 'epoch_changed');
  assert.notEqual(g.epoch, epoch);
  assert.deepEqual(await changed, { from: epoch, to: g.epoch });
  const [m] = await got.until(1);
  assert.equal(m.text, 'after the loss');
  assert.equal(m.epoch, g.epoch);
});

test('polling only: receive, acknowledge through the next poll, send over HTTP', async (t) => {
  const relay = await startRelay(t);
  const alice = await client(t, relay);
  const identity = Identity.generate();
  await alice.send(identity.address, 'polled');
  const storage = new MemoryStorage();
  const poller = await client(t, relay, { identity, storage, transport: 'polling', pollIntervalMs: 50 });
  assert.equal(poller.status, 'polling');
  const got = inbox(poller);
  await got.until(1);
  assert.equal(got.messages[0].text, 'polled');
  const aliceInbox = inbox(alice);
  const sent = await poller.send(alice.address, 'from a poller');
  assert.equal(sent.duplicate, false);
  assert.equal((await aliceInbox.until(1))[0].text, 'from a poller');
  await poller.close();
  // The next session presents the saved cursor: the polled message is not shown again.
  const after = await client(t, relay, { identity, storage });
  const none = inbox(after);
  await alice.send(identity.address, 'next');
  await none.until(1);
  assert.deepEqual(none.messages.map((m) => m.text), ['next']);
});

test('a refused WebSocket upgrade falls back to HTTP polling', async (t) => {
  const relay = await startRelay(t);
  const alice = await client(t, relay);
  const proxied = `ws://127.0.0.1:${await upgradeRefusingFront(t, relay)}`;
  const identity = Identity.generate();
  await alice.send(identity.address, 'through the proxy');
  const bob = new WhisprClient({ relay: proxied, identity, pollIntervalMs: 50 });
  t.after(() => bob.close());
  const notice = nextEvent(bob, 'notice', (n) => n.code === 'polling');
  const live = nextEvent(bob, 'ready');
  const got = inbox(bob);
  await bob.start();
  assert.match((await notice).detail, /HTTP 403/);
  assert.equal((await live).transport, 'polling');
  assert.equal((await got.until(1))[0].text, 'through the proxy');
});

test('the relay going away: the client reconnects with jittered backoff and resumes', async (t) => {
  const relay = await startRelay(t);
  const fast = { backoff: { initialMs: 50, maxMs: 200 } };
  const alice = await client(t, relay, fast);
  const bob = await client(t, relay, fast);
  const got = inbox(bob);
  await alice.send(bob.address, 'before');
  await got.until(1);
  const down = nextEvent(bob, 'disconnected');
  await relay.stop();
  const d = await down;
  assert.equal(d.code, 1001);
  assert.ok(d.retryInMs >= 25 && d.retryInMs <= 50, `jittered first delay ${d.retryInMs}`);

  // A new relay on the same address (its memory store is a new epoch): both come back.
  const back = nextEvent(bob, 'ready', () => true, 20000);
  const gap = nextEvent(bob, 'gap', () => true, 20000);
  const aliceBack = nextEvent(alice, 'ready', () => true, 20000);
  await startRelay(t, [], { port: relay.port });
  await back;
  assert.equal((await gap).reason, 'epoch_changed');
  await aliceBack;
  await alice.send(bob.address, 'after');
  assert.deepEqual((await got.until(2)).map((m) => m.text), ['before', 'after']);
});
