// Node-only helpers (the `whispr-client/node` entry): identity files and a state file
// on disk, in the same formats and with the same care as the `whispr` command.
//
// The identity file is created with mode 0600 and never replaces an existing one unless
// asked, exactly as `whispr keygen`. The state file is replaced atomically (write a
// temporary file, then rename), so a crash leaves the old state or the new one.

import { open, readFile, rename, writeFile } from 'node:fs/promises';
import { ready } from './sodium.js';
import { formatKeyFile, parseKeyFile } from './keyfile.js';

/** Reads a `whispr keygen` identity file. */
export async function loadIdentity(path) {
  await ready();
  const text = await readFile(path, 'utf8');
  try {
    return parseKeyFile(text);
  } catch (e) {
    throw new TypeError(`${path}: ${e.message}`);
  }
}

/** Writes `identity` to `path` (mode 0600); an existing file is an error unless `force`. */
export async function saveIdentity(path, identity, { force = false } = {}) {
  const text = formatKeyFile(identity);
  if (!force) {
    // The exclusive create is the existence check: no window between checking and creating.
    const file = await open(path, 'wx', 0o600);
    try {
      await file.writeFile(text);
      await file.sync();
    } finally {
      await file.close();
    }
    return;
  }
  const tmp = `${path}.tmp`;
  await writeFile(tmp, text, { mode: 0o600 });
  await rename(tmp, path);
}

/** Keeps the client's state (cursor, recent ids) in a file, replaced atomically. */
export class FileStorage {
  constructor(path) {
    this.path = path;
  }

  async load() {
    try {
      return await readFile(this.path, 'utf8');
    } catch (e) {
      if (e.code === 'ENOENT') return null;
      throw e;
    }
  }

  async save(text) {
    const tmp = `${this.path}.tmp`;
    await writeFile(tmp, text, { mode: 0o600 });
    await rename(tmp, this.path);
  }
}

export * from './index.js';
