// Type declarations of whispr-client (hand-written; the source is plain ES modules).

/** Resolves once libsodium is initialised; every other call needs it. */
export function ready(): Promise<unknown>;

export class Identity {
  constructor(seed: Uint8Array);
  static generate(): Identity;
  readonly seed: Uint8Array;
  readonly publicKey: Uint8Array;
  readonly secretKey: Uint8Array;
  /** 64 lowercase hex characters: the address others send to. */
  readonly address: string;
  sign(message: Uint8Array): Uint8Array;
}

export interface Envelope {
  recipient: Uint8Array;
  sender: Uint8Array;
  timestamp: number;
  ephemeral: boolean;
  body: Uint8Array;
  signature: Uint8Array;
}

export interface Cursor {
  epoch: number;
  seq: number;
}

export type ErrorCode =
  | 'malformed' | 'unknown_frame' | 'unsupported_media_type' | 'invalid_key' | 'bad_signature'
  | 'stale_timestamp' | 'too_large' | 'unauthorized' | 'forbidden' | 'auth_required'
  | 'already_authenticated' | 'not_found' | 'method_not_allowed' | 'cursor_ahead' | 'rate_limited'
  | 'too_many_connections' | 'inbox_full' | 'store_full' | 'unavailable' | 'internal' | 'timeout'
  | 'disconnected' | 'closed' | 'replaced' | 'origin_mismatch' | 'unreachable' | 'undecryptable' | 'unexpected';

export class WhisprError extends Error {
  readonly code: ErrorCode;
  readonly detail: string;
  /** With `rate_limited`: milliseconds to wait before sending again. */
  readonly retryAfterMs?: number;
  /** The HTTP status, for an answer over HTTP. */
  readonly status?: number;
  /** The WebSocket close code, when a close caused it. */
  readonly closeCode?: number;
  /** Whether the same envelope may be accepted later. */
  readonly temporary: boolean;
}

export class WireError extends Error {
  readonly code: 'malformed' | 'unknown_frame' | 'too_large' | 'invalid_key';
  readonly detail: string;
}

export const ERROR_STATUS: Record<string, number>;
export const CLOSE_CODES: Record<string, number>;
export const DEFAULT_MAX_SKEW_MS: number;
export const DEFAULT_MAX_FRAME_BYTES: number;
export const SUBPROTOCOLS: { json: 'whispr.v1.json'; msgpack: 'whispr.v1.msgpack' };

export function toHex(bytes: Uint8Array): string;
export function fromHex(text: string, field?: string): Uint8Array;
export function toBase64(bytes: Uint8Array): string;
export function fromBase64(text: string, field?: string): Uint8Array;

export function envelopeSigningBytes(envelope: Omit<Envelope, 'signature'>): Uint8Array;
export function messageId(signingBytes: Uint8Array): Promise<Uint8Array>;
export function signEnvelope(identity: Identity, recipient: Uint8Array, body: Uint8Array, options?: { timestamp?: number; ephemeral?: boolean }): Envelope;
export function verifySignature(publicKey: Uint8Array, message: Uint8Array, signature: Uint8Array): boolean;
export function checkEnvelope(envelope: Envelope, options?: { nowMs?: number | null; maxSkewMs?: number }): ErrorCode | null;
export function checkDelivery(envelope: Envelope, id: Uint8Array, me: Uint8Array): Promise<string | null>;
export function checkSkew(timestamp: number, nowMs: number, maxSkewMs?: number): 'stale_timestamp' | null;
export function authSigningBytes(nonce: Uint8Array, key: Uint8Array, timestamp: number, origin: string): Uint8Array;
export function httpSigningBytes(key: Uint8Array, timestamp: number, origin: string, method: string, pathAndQuery: string): Uint8Array;
export function authorizationHeader(identity: Identity, request: { timestamp?: number; origin: string; method: string; pathAndQuery: string }): string;
export function originOf(url: string): string;
export function parseAddress(text: string): Uint8Array;
export function checkAuthFrame(frame: object, relay: { nonce: Uint8Array; origin: string; nowMs?: number; maxSkewMs?: number }): ErrorCode | null;
export function checkAuthorization(value: string, request: { method: string; pathAndQuery: string; origin: string; nowMs?: number; maxSkewMs?: number }): 'unauthorized' | 'invalid_key' | 'bad_signature' | 'stale_timestamp' | null;

export class Codec {
  constructor(name: 'json' | 'msgpack', options?: { maxFrameBytes?: number });
  static forSubprotocol(subprotocol: string, options?: { maxFrameBytes?: number }): Codec | null;
  readonly name: 'json' | 'msgpack';
  readonly binary: boolean;
  readonly subprotocol: string;
  readonly contentType: string;
  encodeFrame(frame: { type: string; [member: string]: unknown }): string | Uint8Array;
  decodeFrame(data: string | Uint8Array): { type: string; [member: string]: any };
  encodeBody(kind: 'envelope' | 'sendResult' | 'inboxPage', value: object): string | Uint8Array;
  decodeBody(kind: 'envelope' | 'sendResult' | 'inboxPage', data: string | Uint8Array): any;
}

export const PAYLOAD_VERSION: 1;
export function encryptionKey(edPublicKey: Uint8Array): Uint8Array;
export function sealText(sender: Identity, recipient: Uint8Array, text: string): Uint8Array;
export function openText(identity: Identity, signedSender: Uint8Array, body: Uint8Array): { v: 1; from: string; text: string };

export const KEYFILE_VERSION: 1;
export function formatKeyFile(identity: Identity): string;
export function parseKeyFile(text: string): Identity;

/** Anything that keeps the client's state as text. */
export interface Storage {
  load(): string | null | Promise<string | null>;
  save(text: string): void | Promise<void>;
}
export class MemoryStorage implements Storage {
  constructor(text?: string | null);
  load(): string | null;
  save(text: string): void;
}
export class WebStorage implements Storage {
  constructor(key: string, area?: globalThis.Storage);
  load(): string | null;
  save(text: string): void;
}
export const RECENT_IDS: number;
export class InboxState {
  constructor(options?: { cursor?: Cursor | null; recentIds?: string[]; capacity?: number });
  cursor: Cursor | null;
  isDuplicate(id: string): boolean;
  processed(epoch: number, seq: number | undefined, id: string): void;
  advance(cursor: Cursor): void;
  adopt(cursor: Cursor): void;
  onReady(epoch: number): void;
  toText(): string;
  static fromText(text: string | null, capacity?: number): InboxState;
}

export class Backoff {
  constructor(options?: { initialMs?: number; maxMs?: number });
  nominalMs: number;
  next(random?: () => number): number;
  reset(): void;
}

export class SessionCore {
  constructor(options: { identity: Identity; origin: string; cursor: Cursor | null });
  readonly phase: 'challenge' | 'authenticating' | 'live';
  onFrame(frame: object): { send: object[]; events: Array<{ kind: string; [member: string]: any }> };
}
export function closeAction(code: number): { action: 'stop' | 'now' | 'backoff'; reason: string };

export function relayUrl(base: string, kind: 'http' | 'ws', path: string): string;
export class RelayHttp {
  constructor(base: string, options?: { fetch?: typeof fetch; codec?: Codec });
  send(envelope: Envelope): Promise<SendResult>;
  poll(identity: Identity, cursor: Cursor | null, options?: { limit?: number }): Promise<any>;
}

export interface Message {
  /** The message id, 64 hex. */
  id: string;
  /** Its place in the inbox; undefined for an ephemeral message. */
  seq?: number;
  epoch: number;
  /** The sender's address, checked against the signature. */
  from: string;
  /** Milliseconds since the epoch, on the sender's clock. */
  timestamp: number;
  text: string;
  ephemeral: boolean;
}

export interface SendResult {
  id: string;
  duplicate: boolean;
  /** Ephemeral messages only: whether a live session took it. */
  online?: boolean;
}

export type Status = 'idle' | 'connecting' | 'live' | 'polling' | 'waiting' | 'closed';

export interface ClientEvents {
  /** A new message; it is acknowledged once every listener's promise resolved. */
  message: Message;
  status: { status: Status };
  ready: { transport: 'websocket' | 'polling'; epoch: number; window?: number };
  synced: { epoch: number; seq: number };
  gap: { epoch: number; seq: number; reason: 'expired' | 'epoch_changed' };
  epochChanged: { from: number | null; to: number };
  replaced: { code: 4001 };
  rateLimited: { retryAfterMs: number };
  disconnected: { code?: number; reason: string; retryInMs: number };
  rejected: { id: string; reason: string };
  notice: { code: string; detail: string };
  handlerError: { id: string; error: unknown };
  error: { error: WhisprError | Error };
}

export interface ClientOptions {
  /** ws://, wss://, http:// or https:// URL of the relay. */
  relay: string;
  identity: Identity;
  storage?: Storage;
  onMessage?: (message: Message) => unknown;
  codec?: 'json' | 'msgpack';
  transport?: 'auto' | 'websocket' | 'polling';
  pollIntervalMs?: number;
  websocketRetryMs?: number;
  wsFailuresBeforePolling?: number;
  sendTimeoutMs?: number;
  idleTimeoutMs?: number;
  maxFrameBytes?: number;
  backoff?: { initialMs?: number; maxMs?: number };
  /** A WebSocket constructor (the browser's by default; `ws` under Node). */
  WebSocket?: unknown;
  fetch?: typeof fetch;
}

export const DEFAULTS: Required<Omit<ClientOptions, 'relay' | 'identity' | 'storage' | 'onMessage' | 'WebSocket' | 'fetch'>>;

export class WhisprClient {
  constructor(options: ClientOptions);
  readonly identity: Identity;
  readonly address: string;
  readonly status: Status;
  readonly cursor: Cursor | null;
  start(): Promise<this>;
  on<E extends keyof ClientEvents>(event: E, listener: (payload: ClientEvents[E]) => unknown): () => void;
  once<E extends keyof ClientEvents>(event: E, predicate?: (payload: ClientEvents[E]) => boolean): Promise<ClientEvents[E]>;
  send(to: string, text: string, options?: { ephemeral?: boolean }): Promise<SendResult>;
  sendEnvelope(envelope: Envelope): Promise<SendResult>;
  close(): Promise<void>;
}
