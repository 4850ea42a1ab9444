// Type declarations of whispr-client/node: everything of whispr-client, plus files.
export * from './index.js';
import { Identity, Storage } from './index.js';

/** Reads a `whispr keygen` identity file. */
export function loadIdentity(path: string): Promise<Identity>;
/** Writes an identity file (mode 0600); an existing file is an error unless `force`. */
export function saveIdentity(path: string, identity: Identity, options?: { force?: boolean }): Promise<void>;
/** The client's state in a file, replaced atomically. */
export class FileStorage implements Storage {
  constructor(path: string);
  readonly path: string;
  load(): Promise<string | null>;
  save(text: string): Promise<void>;
}
