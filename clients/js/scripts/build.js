// Bundles the library for the web page: web/whispr-client.js, one ES module with
// libsodium and MessagePack inside. `ws` (Node's WebSocket) stays out: a browser has
// its own, and the library only imports `ws` where there is no global WebSocket.

import { build } from 'esbuild';

await build({
  entryPoints: [new URL('../src/index.js', import.meta.url).pathname],
  outfile: new URL('../web/whispr-client.js', import.meta.url).pathname,
  bundle: true,
  format: 'esm',
  platform: 'browser',
  target: ['es2022'],
  external: ['ws'],
  minify: true,
  sourcemap: true,
  legalComments: 'linked',
  logLevel: 'warning',
});
