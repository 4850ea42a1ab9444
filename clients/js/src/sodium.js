// The one place that loads libsodium. Its WebAssembly module initialises
// asynchronously, so every entry point of the library awaits `ready()` once; after that
// `sodium()` hands out the initialised module synchronously.

import libsodium from 'libsodium-wrappers';

let loaded = null;

/** Resolves once libsodium is usable. Safe to call any number of times. */
export async function ready() {
  if (!loaded) {
    await libsodium.ready;
    loaded = libsodium;
  }
  return loaded;
}

/** The initialised libsodium; throws if `ready()` has not resolved yet. */
export function sodium() {
  if (!loaded) throw new Error('whispr-client: await ready() before using the library');
  return loaded;
}
