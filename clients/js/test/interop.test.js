// The library and the `whispr` command line on one relay: a message from the library
// reaches `whispr listen` and decrypts, a message from `whispr send` reaches the
// library, and identity files move both ways between `whispr keygen` and the library.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';

import { ready, Identity, WhisprClient } from '../src/index.js';
import { loadIdentity, saveIdentity, FileStorage } from '../src/node.js';
import { startRelay, tempDir, whispr, listen, nextEvent, inbox } from './support.js';

await ready();

async function started(t, relay, identity, options = {}) {
  const c = new WhisprClient({ relay: relay.ws, identity, ...options });
  t.after(() => c.close());
  const live = nextEvent(c, 'ready');
  await c.start();
  await live;
  return c;
}

test('a `whispr keygen` identity loads in the library with the address keygen printed', async () => {
  const dir = await tempDir();
  const path = join(dir, 'bob.json');
  const printed = (await whispr(['keygen', '--out', path])).trim();
  const bob = await loadIdentity(path);
  assert.equal(bob.address, printed);
});

test('a message from the library reaches `whispr listen` and decrypts', async (t) => {
  const relay = await startRelay(t);
  const dir = await tempDir();
  const key = join(dir, 'bob.json');
  const bobAddress = (await whispr(['keygen', '--out', key])).trim();
  const listener = listen(t, relay.url, key);
  await listener.until(() => /connected/.test(listener.stderr), 'connection');
  const alice = await started(t, relay, Identity.generate());
  const accepted = await alice.send(bobAddress, 'hello from JavaScript');
  await listener.until(() => listener.messages.length >= 1, 'message');
  const [m] = listener.messages;
  assert.equal(m.text, 'hello from JavaScript');
  assert.equal(m.from, alice.address);
  assert.equal(m.id, accepted.id);
});

test('a message from `whispr send` reaches the library, which reads a keygen identity', async (t) => {
  const relay = await startRelay(t);
  const dir = await tempDir();
  const aliceKey = join(dir, 'alice.json');
  const bobKey = join(dir, 'bob.json');
  const aliceAddress = (await whispr(['keygen', '--out', aliceKey])).trim();
  await whispr(['keygen', '--out', bobKey]);
  const bob = await started(t, relay, await loadIdentity(bobKey), { storage: new FileStorage(join(dir, 'bob.state')), codec: 'msgpack' });
  const got = inbox(bob);
  const id = (await whispr(['send', '--server', relay.url, '--key', aliceKey, '--to', bob.address, 'hello from the CLI'])).trim();
  const [m] = await got.until(1);
  assert.equal(m.text, 'hello from the CLI');
  assert.equal(m.from, aliceAddress);
  assert.equal(m.id, id);
  await bob.close(); // waits for the message's processing: its save and ack
  const state = JSON.parse(await readFile(join(dir, 'bob.state'), 'utf8'));
  assert.deepEqual(state.recent_ids, [id]);
});

test('an identity saved by the library works in `whispr` (mode 0600, never overwritten)', async (t) => {
  const relay = await startRelay(t);
  const dir = await tempDir();
  const key = join(dir, 'carol.json');
  const carol = Identity.generate();
  await saveIdentity(key, carol);
  assert.equal((await stat(key)).mode & 0o777, 0o600);
  await assert.rejects(saveIdentity(key, Identity.generate()), /EEXIST/);
  assert.equal((await loadIdentity(key)).address, carol.address);

  const listener = listen(t, relay.url, key);
  await listener.until(() => /connected/.test(listener.stderr), 'connection');
  const dave = join(dir, 'dave.json');
  await whispr(['keygen', '--out', dave]);
  await whispr(['send', '--server', relay.url, '--key', dave, '--to', carol.address], { input: 'to a library key\n' });
  await listener.until(() => listener.messages.length >= 1, 'message');
  assert.equal(listener.messages[0].text, 'to a library key');
});
