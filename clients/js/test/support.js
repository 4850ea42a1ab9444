// Shared test helpers: a real relay (the `whispr` binary from the repository's cargo
// build) on a free 127.0.0.1 port, the `whispr` chat commands, temporary directories,
// and event waits with a deadline that fail the test instead of hanging it.

import { spawn, execFile } from 'node:child_process';
import { mkdtemp } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { createServer } from 'node:net';
import { createServer as createHttpServer, request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO = fileURLToPath(new URL('../../../', import.meta.url));
export const WHISPR = process.env.WHISPR_BIN ?? join(REPO, 'target/debug/whispr');

if (!existsSync(WHISPR)) {
  throw new Error(`${WHISPR} does not exist: run \`cargo build\` in ${REPO} first (npm test does it in pretest)`);
}

/** A port nobody listens on right now. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/** A temporary directory for one test. */
export function tempDir() {
  return mkdtemp(join(tmpdir(), 'whispr-js-'));
}

/**
 * Starts `whispr serve` on a free port and waits until it answers /healthz.
 * Returns `{ url, port, stop() }`; `extraArgs` are more flags of `whispr serve`.
 */
export async function startRelay(t, extraArgs = [], { port: wanted } = {}) {
  const port = wanted ?? (await freePort());
  const child = spawn(WHISPR, ['serve', '--listen', `127.0.0.1:${port}`, '--log-level', 'warn', ...extraArgs], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (d) => {
    stderr += d;
  });
  const exited = new Promise((resolve) => child.on('exit', resolve));
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 20000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`whispr serve exited with ${child.exitCode}: ${stderr}`);
    try {
      if ((await fetch(`${url}/healthz`)).ok) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) throw new Error(`whispr serve did not answer on ${url} within 20 s: ${stderr}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  const relay = {
    url,
    port,
    ws: `ws://127.0.0.1:${port}`,
    async stop() {
      if (child.exitCode === null) child.kill('SIGTERM');
      await exited;
    },
  };
  t?.after(() => relay.stop());
  return relay;
}

/** Runs a `whispr` command; resolves with stdout, rejects with stderr on failure. */
export function whispr(args, { input } = {}) {
  return new Promise((resolve, reject) => {
    const child = execFile(WHISPR, args, { timeout: 30000 }, (error, stdout, stderr) => {
      if (error) reject(new Error(`whispr ${args.join(' ')} failed (${error.code}): ${stderr}`));
      else resolve(stdout);
    });
    if (input !== undefined) child.stdin.end(input);
  });
}

/**
 * Starts `whispr listen --json` and collects its messages; `next(n)` resolves once n
 * lines arrived. `stop()` ends it with SIGTERM.
 */
export function listen(t, relayUrl, keyPath) {
  const child = spawn(WHISPR, ['listen', '--server', relayUrl, '--key', keyPath, '--json'], { stdio: ['ignore', 'pipe', 'pipe'] });
  const messages = [];
  const waiters = [];
  let buffer = '';
  let stderr = '';
  child.stderr.on('data', (d) => {
    stderr += d;
    for (const w of waiters) w.check();
  });
  child.stdout.on('data', (d) => {
    buffer += d;
    let nl;
    while ((nl = buffer.indexOf('\n')) >= 0) {
      messages.push(JSON.parse(buffer.slice(0, nl)));
      buffer = buffer.slice(nl + 1);
    }
    for (const w of waiters) w.check();
  });
  const exited = new Promise((resolve) => child.on('exit', resolve));
  const listener = {
    messages,
    get stderr() {
      return stderr;
    },
    /** Resolves when `predicate()` holds (checked on every output), within `ms`. */
    until(predicate, what, ms = 15000) {
      return new Promise((resolve, reject) => {
        const w = {
          check: () => {
            if (predicate()) {
              clearTimeout(timer);
              waiters.splice(waiters.indexOf(w), 1);
              resolve();
            }
          },
        };
        const timer = setTimeout(() => {
          waiters.splice(waiters.indexOf(w), 1);
          reject(new Error(`whispr listen: no ${what} within ${ms} ms; stderr: ${stderr}`));
        }, ms);
        waiters.push(w);
        w.check();
      });
    },
    async stop() {
      if (child.exitCode === null) child.kill('SIGTERM');
      await exited;
    },
  };
  t?.after(() => listener.stop());
  return listener;
}

/** The next `event` of `client` that `predicate` accepts, or a failure after `ms`. */
export function nextEvent(client, event, predicate = () => true, ms = 15000) {
  return Promise.race([
    client.once(event, predicate),
    new Promise((_, reject) => setTimeout(() => reject(new Error(`no ${event} event within ${ms} ms`)), ms).unref()),
  ]);
}

/** Collects the `message` events of a client in an array, and waits for a count. */
export function inbox(client) {
  const messages = [];
  const waiters = new Set();
  client.on('message', (m) => {
    messages.push(m);
    for (const w of waiters) w();
  });
  return {
    messages,
    until(count, ms = 15000) {
      return new Promise((resolve, reject) => {
        const check = () => {
          if (messages.length >= count) {
            waiters.delete(check);
            clearTimeout(timer);
            resolve(messages);
          }
        };
        const timer = setTimeout(() => {
          waiters.delete(check);
          reject(new Error(`only ${messages.length} of ${count} messages within ${ms} ms`));
        }, ms);
        waiters.add(check);
        check();
      });
    },
  };
}

/**
 * An HTTP front for `relay` that refuses every WebSocket upgrade with 403, as a proxy
 * that does not speak WebSockets would. Requests under /v1/ go to the relay (its Host
 * header unchanged, so signatures name this front); others to `other(req, res)`.
 * Resolves with its port.
 */
export async function upgradeRefusingFront(t, relay, other = (_req, res) => res.writeHead(404).end()) {
  const server = createHttpServer((req, res) => {
    if (!req.url.startsWith('/v1/')) return other(req, res);
    const upstream = request({ host: '127.0.0.1', port: relay.port, path: req.url, method: req.method, headers: req.headers }, (up) => {
      res.writeHead(up.statusCode, up.headers);
      up.pipe(res);
    });
    upstream.on('error', () => res.writeHead(502).end());
    req.pipe(upstream);
  });
  server.on('upgrade', (_req, socket) => {
    socket.end('HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nContent-Length: 18\r\n\r\nno websockets here');
  });
  const port = await freePort();
  await new Promise((resolve) => server.listen(port, '127.0.0.1', resolve));
  t.after(() => new Promise((resolve) => { server.closeAllConnections(); server.close(resolve); }));
  return port;
}
