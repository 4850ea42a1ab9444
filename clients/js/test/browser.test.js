// The web page in a real browser: Debian's Chromium, headless, driven by playwright-core.
// Two pages chat, a page chats with the `whispr` command line, and reloading or
// reopening a page keeps its place in the inbox (nothing shown twice, nothing lost).
// A screenshot is saved under test-artifacts/ for a person to look at.
//
// The second test serves the page from the shipped nginx/whispr.conf (its /chat/
// location) over https, so the page's default relay is wss:// through nginx.
//
// Without /usr/bin/chromium (or nginx and openssl for the second test) a test skips loudly, or fails under WHISPR_TEST_STRICT=1
// (as .ci/run sets), like the relay's tests for their external programs.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { createConnection } from 'node:net';
import { existsSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { spawn, spawnSync, execFileSync } from 'node:child_process';
import { extname, join, normalize } from 'node:path';
import { fileURLToPath } from 'node:url';

import { startRelay, tempDir, whispr, listen, freePort, upgradeRefusingFront } from './support.js';

const CHROMIUM = process.env.WHISPR_CHROMIUM ?? '/usr/bin/chromium';
const WEB = fileURLToPath(new URL('../web/', import.meta.url));
const ARTIFACTS = fileURLToPath(new URL('../test-artifacts/', import.meta.url));
const STRICT = process.env.WHISPR_TEST_STRICT === '1';

/** Why the test cannot run here, or null. `programs` are more executables it needs. */
function unavailable(programs = []) {
  if (!existsSync(CHROMIUM)) return `${CHROMIUM} is missing (apt-get install chromium)`;
  if (!existsSync(join(WEB, 'whispr-client.js'))) return 'web/whispr-client.js is not built (npm run build)';
  for (const p of programs) {
    if (spawnSync('sh', ['-c', `command -v ${p}`]).status !== 0) return `${p} is missing (apt-get install ${p})`;
  }
  return null;
}

/** Skips loudly, or fails under WHISPR_TEST_STRICT=1, when something is missing. */
function skipped(t, programs) {
  const missing = unavailable(programs);
  if (!missing) return false;
  if (STRICT) assert.fail(`browser test: ${missing} (WHISPR_TEST_STRICT=1)`);
  console.error(`\n*** SKIPPED the browser test: ${missing} ***\n`);
  t.skip(missing);
  return true;
}

/**
 * Debian's Chromium, headless. Playwright gives it a fresh temporary profile
 * (--user-data-dir) of its own; each context is a separate storage partition.
 */
async function launch(t, extraArgs = []) {
  const { chromium } = await import('playwright-core');
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync', ...extraArgs],
  });
  t.after(() => browser.close());
  return browser;
}

const TYPES = { '.html': 'text/html', '.js': 'text/javascript', '.css': 'text/css', '.map': 'application/json' };

/** The html block of the README's "Ten-line example", as a page. */
async function readmeExample() {
  const readme = await readFile(new URL('../README.md', import.meta.url), 'utf8');
  const section = readme.slice(readme.indexOf('## Ten-line example'));
  const block = /```html\n([\s\S]*?)```/.exec(section)[1];
  assert.ok(block.split('\n').filter((l) => l.trim() && !l.includes('script')).length <= 10, 'ten lines');
  return block;
}

/** Serves web/ (as nginx would serve the folder), plus `extra` pages by path. */
function webHandler(extra = {}) {
  return async (req, res) => {
    const pathname = new URL(req.url, 'http://x').pathname;
    if (pathname in extra) {
      res.writeHead(200, { 'Content-Type': 'text/html' });
      res.end(extra[pathname]());
      return;
    }
    const path = normalize(decodeURIComponent(pathname)).replace(/^(\.\.[/\\])+/, '');
    const file = join(WEB, path.endsWith('/') ? `${path}index.html` : path);
    try {
      const body = await readFile(file);
      res.writeHead(200, { 'Content-Type': TYPES[extname(file)] ?? 'application/octet-stream' });
      res.end(body);
    } catch {
      res.writeHead(404).end('not found');
    }
  };
}

/** A static file server on 127.0.0.1 for web/ and `extra` pages; resolves with its URL. */
async function serveWeb(t, extra = {}) {
  const server = createServer(webHandler(extra));
  const port = await freePort();
  await new Promise((resolve) => server.listen(port, '127.0.0.1', resolve));
  t.after(() => new Promise((resolve) => { server.closeAllConnections(); server.close(resolve); }));
  return `http://127.0.0.1:${port}`;
}

/** Opens the page in `context` and creates an identity; returns the page and its address. */
async function openChat(context, url, connected = 'connected') {
  const page = await context.newPage();
  page.on('pageerror', (e) => { throw new Error(`page error: ${e.message}`); });
  await page.goto(url);
  await page.getByTestId('create').click();
  await page.getByTestId('status').filter({ hasText: new RegExp(`^${connected.replace(/[()]/g, '\\$&')}$`) }).waitFor();
  return { page, address: await page.getByTestId('address').textContent() };
}

async function write(page, to, text) {
  await page.getByTestId('to').fill(to);
  await page.getByTestId('compose-text').fill(text);
  await page.getByTestId('send').click();
  await page.getByTestId('sent').filter({ hasText: text }).getByTestId('send-state').filter({ hasText: 'sent ✓' }).waitFor();
}

function received(page) {
  return page.getByTestId('received').getByTestId('text');
}

async function waitForReceived(page, text) {
  await page.getByTestId('received').filter({ hasText: text }).waitFor();
}

test('the web page: two pages chat, a page chats with the CLI, a reload keeps its place', async (t) => {
  if (skipped(t)) return;
  const relay = await startRelay(t);
  const example = { html: '' };
  const site = await serveWeb(t, { '/example.html': () => example.html });
  const url = `${site}/?relay=${encodeURIComponent(relay.ws)}`;
  const browser = await launch(t); // two contexts: two people, two identities
  const aliceContext = await browser.newContext({ viewport: { width: 900, height: 760 } });
  const bobContext = await browser.newContext();
  const alice = await openChat(aliceContext, url);
  const bob = await openChat(bobContext, url);
  assert.match(alice.address, /^[0-9a-f]{64}$/);
  assert.notEqual(alice.address, bob.address);

  // Two pages chat.
  await write(alice.page, bob.address, 'Hi Bob, it is Alice <b>not bold</b>');
  await waitForReceived(bob.page, 'Hi Bob, it is Alice <b>not bold</b>');
  await write(bob.page, alice.address, 'Hello Alice!');
  await waitForReceived(alice.page, 'Hello Alice!');
  assert.equal(await bob.page.locator('b').count(), 0, 'message text is never parsed as HTML');
  const peer = await bob.page.getByTestId('received').first().getByTestId('peer').getAttribute('title');
  assert.ok(peer.startsWith(alice.address));

  // A page chats with the command line.
  const dir = await tempDir();
  const carolKey = join(dir, 'carol.json');
  const carol = (await whispr(['keygen', '--out', carolKey])).trim();
  const carolListens = listen(t, relay.url, carolKey);
  await carolListens.until(() => /connected/.test(carolListens.stderr), 'connection');
  await write(alice.page, carol, 'Hi Carol, from the browser');
  await carolListens.until(() => carolListens.messages.length >= 1, 'message');
  assert.equal(carolListens.messages[0].text, 'Hi Carol, from the browser');
  assert.equal(carolListens.messages[0].from, alice.address);
  await whispr(['send', '--server', relay.url, '--key', carolKey, '--to', alice.address, 'Hi Alice, from the terminal']);
  await waitForReceived(alice.page, 'Hi Alice, from the terminal');

  await mkdir(ARTIFACTS, { recursive: true });
  await alice.page.screenshot({ path: join(ARTIFACTS, 'chat.png'), fullPage: true });

  // The README's ten-line example, as a developer would paste it, chats with the CLI.
  example.html = (await readmeExample())
    .replace('ws://127.0.0.1:8000', relay.ws)
    .replace('PASTE-THE-CLI-USER-ADDRESS', carol);
  const examplePage = await aliceContext.newPage();
  const lines = [];
  const logged = (pattern) => new Promise((resolve) => {
    const check = () => {
      const line = lines.find((l) => pattern.test(l));
      if (line) resolve(line);
      else examplePage.once('console', check);
    };
    check();
  });
  examplePage.on('console', (m) => lines.push(m.text()));
  await examplePage.goto(`${site}/example.html`);
  const [, exampleAddress] = /^my address: ([0-9a-f]{64})$/.exec(await logged(/^my address: /));
  await carolListens.until(() => carolListens.messages.some((m) => m.text === 'hello from the browser'), 'the example\'s message');
  await whispr(['send', '--server', relay.url, '--key', carolKey, '--to', exampleAddress, 'hi, example']);
  assert.equal(await logged(/hi, example$/), `${carol}: hi, example`);
  await examplePage.close();

  // A reload keeps the history and the place: the same messages, each once.
  const before = await received(alice.page).allTextContents();
  assert.deepEqual(before, ['Hello Alice!', 'Hi Alice, from the terminal']);
  await alice.page.reload();
  await alice.page.getByTestId('status').filter({ hasText: /^connected$/ }).waitFor();
  await whispr(['send', '--server', relay.url, '--key', carolKey, '--to', alice.address, 'after the reload']);
  await waitForReceived(alice.page, 'after the reload');
  assert.deepEqual(await received(alice.page).allTextContents(), [...before, 'after the reload']);

  // Closed while messages arrive, then opened again: what came meanwhile, nothing twice.
  await alice.page.close();
  await whispr(['send', '--server', relay.url, '--key', carolKey, '--to', alice.address, 'while away 1']);
  await write(bob.page, alice.address, 'while away 2');
  const again = await aliceContext.newPage();
  await again.goto(url);
  await waitForReceived(again, 'while away 2');
  await waitForReceived(again, 'while away 1');
  await again.getByTestId('status').filter({ hasText: /^connected$/ }).waitFor();
  const texts = await received(again).allTextContents();
  assert.deepEqual(texts.slice(0, 3), [...before, 'after the reload']);
  assert.deepEqual(texts.slice(3).sort(), ['while away 1', 'while away 2']);
  assert.equal(await again.getByTestId('address').textContent(), alice.address);
  await again.screenshot({ path: join(ARTIFACTS, 'after-reopen.png'), fullPage: true });

  // A `whispr keygen` file imports into the page, and the page exports it back as is.
  const frankKey = join(dir, 'frank.json');
  const frank = (await whispr(['keygen', '--out', frankKey])).trim();
  const frankFile = await readFile(frankKey, 'utf8');
  const importer = await (await browser.newContext({ acceptDownloads: true })).newPage();
  await importer.goto(url);
  await importer.getByTestId('import-text').fill('{"version":1,"ed25519_seed":"00"}');
  await importer.getByTestId('import').click();
  await importer.getByTestId('setup-error').filter({ hasText: 'ed25519_seed must be 64 hex characters' }).waitFor();
  await importer.getByTestId('import-text').fill(frankFile);
  await importer.getByTestId('import').click();
  assert.equal(await importer.getByTestId('address').textContent(), frank);
  const download = importer.waitForEvent('download');
  await importer.getByText('Export identity').click();
  assert.equal(await readFile(await (await download).path(), 'utf8'), frankFile);
});

/** nginx/whispr.conf on this machine: ports, the relay, a self-signed certificate, web/. */
async function startNginx(t, relay) {
  const dir = await tempDir();
  const [http, https] = [await freePort(), await freePort()];
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '1',
    '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1', '-keyout', join(dir, 'key.pem'), '-out', join(dir, 'cert.pem')], { stdio: 'ignore' });
  let conf = await readFile(new URL('../../../nginx/whispr.conf', import.meta.url), 'utf8');
  const swaps = [
    ['listen 80;', `listen 127.0.0.1:${http};`],
    ['    listen [::]:80;\n', ''],
    ['listen 443 ssl http2;', `listen 127.0.0.1:${https} ssl http2;`],
    ['    listen [::]:443 ssl http2;\n', ''],
    ['server 127.0.0.1:8000 max_fails', `server 127.0.0.1:${relay.port} max_fails`],
    ['/etc/letsencrypt/live/chat.example.com/fullchain.pem', join(dir, 'cert.pem')],
    ['/etc/letsencrypt/live/chat.example.com/privkey.pem', join(dir, 'key.pem')],
    ['alias /var/www/whispr-chat/;', `alias ${WEB};`],
  ];
  for (const [from, to] of swaps) {
    assert.ok(conf.includes(from), `nginx/whispr.conf no longer contains ${from}`);
    conf = conf.replace(from, to);
  }
  await writeFile(join(dir, 'whispr.conf'), conf);
  const temp = ['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi'].map((k) => `  ${k}_temp_path ${dir}/${k};`).join('\n');
  await writeFile(join(dir, 'nginx.conf'), `pid ${dir}/nginx.pid;\nerror_log ${dir}/error.log warn;\nevents { worker_connections 256; }\nhttp {\n  access_log ${dir}/access.log;\n${temp}\n  include ${dir}/whispr.conf;\n}\n`);
  const args = ['-p', dir, '-e', join(dir, 'error.log'), '-c', join(dir, 'nginx.conf')];
  const check = spawnSync('nginx', [...args, '-t'], { encoding: 'utf8' });
  assert.equal(check.status, 0, `nginx -t: ${check.stderr}`);
  const child = spawn('nginx', [...args, '-g', 'daemon off;'], { stdio: 'ignore' });
  const exited = new Promise((resolve) => child.on('exit', resolve));
  t.after(async () => {
    child.kill('SIGTERM');
    await exited;
  });
  const base = `https://127.0.0.1:${https}`;
  for (let i = 0; ; i++) {
    try {
      await new Promise((resolve, reject) => createConnection(https, '127.0.0.1').on('connect', function () { this.end(); resolve(); }).on('error', reject));
      return base;
    } catch (e) {
      if (i > 100) throw new Error(`nginx did not start: ${await readFile(join(dir, 'error.log'), 'utf8').catch(() => e.message)}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}

test('the web page behind the shipped nginx config: https page at /chat/, wss relay by default', async (t) => {
  if (skipped(t, ['nginx', 'openssl'])) return;
  const relay = await startRelay(t);
  const base = await startNginx(t, relay);
  // The certificate is self-signed for 127.0.0.1; trust it for this browser only.
  const browser = await launch(t, ['--ignore-certificate-errors']);
  const context = await browser.newContext({ ignoreHTTPSErrors: true });
  const { page, address } = await openChat(context, `${base}/chat/`);
  assert.equal(await page.getByTestId('relay').inputValue(), base.replace('https:', 'wss:'));

  const dir = await tempDir();
  const key = join(dir, 'erin.json');
  const erin = (await whispr(['keygen', '--out', key])).trim();
  const erinListens = listen(t, relay.url, key);
  await erinListens.until(() => /connected/.test(erinListens.stderr), 'connection');
  await write(page, erin, 'through nginx');
  await erinListens.until(() => erinListens.messages.length >= 1, 'message');
  assert.equal(erinListens.messages[0].text, 'through nginx');
  await whispr(['send', '--server', relay.url, '--key', key, '--to', address, 'back through nginx']);
  await waitForReceived(page, 'back through nginx');
  await mkdir(ARTIFACTS, { recursive: true });
  await page.screenshot({ path: join(ARTIFACTS, 'behind-nginx.png'), fullPage: true });

  // On the relay's origin the HTTP fallback works from the page too (no CORS needed).
  const poller = await (await browser.newContext({ ignoreHTTPSErrors: true })).newPage();
  await poller.goto(`${base}/chat/?transport=polling`);
  await poller.getByTestId('create').click();
  await poller.getByTestId('status').filter({ hasText: 'connected (polling)' }).waitFor();
  const pollerAddress = await poller.getByTestId('address').textContent();
  await write(poller, address, 'polled through nginx');
  await waitForReceived(page, 'polled through nginx');
  await write(page, pollerAddress, 'to the poller');
  await waitForReceived(poller, 'to the poller');
});

test('the web page falls back to HTTP polling when its WebSocket is refused', async (t) => {
  if (skipped(t)) return;
  const relay = await startRelay(t);
  // The page and the relay's HTTP API on one origin, whose WebSocket upgrades fail.
  const port = await upgradeRefusingFront(t, relay, webHandler());
  const browser = await launch(t);
  const { page: stuck, address } = await openChat(await browser.newContext(), `http://127.0.0.1:${port}/?relay=ws://127.0.0.1:${port}`, 'connected (polling)');
  const other = await openChat(await browser.newContext(), `http://127.0.0.1:${port}/?relay=ws://127.0.0.1:${port}&transport=polling`, 'connected (polling)');
  await write(other.page, address, 'reached you by polling');
  await waitForReceived(stuck, 'reached you by polling');
  await write(stuck, other.address, 'and back');
  await waitForReceived(other.page, 'and back');
});
