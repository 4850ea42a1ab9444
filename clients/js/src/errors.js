// What can go wrong, named as the relay names it: the error codes of PROTOCOL.md
// section 9 with their HTTP statuses, the WebSocket close codes of section 6.9, and the
// one error class the library rejects promises with.

/** Every error code with the HTTP status it is answered with (errors.json). */
export const ERROR_STATUS = {
  malformed: 400,
  unknown_frame: 400,
  unsupported_media_type: 415,
  invalid_key: 422,
  bad_signature: 422,
  stale_timestamp: 422,
  too_large: 413,
  unauthorized: 401,
  forbidden: 403,
  auth_required: 401,
  already_authenticated: 403,
  not_found: 404,
  method_not_allowed: 405,
  cursor_ahead: 409,
  rate_limited: 429,
  too_many_connections: 429,
  inbox_full: 507,
  store_full: 507,
  unavailable: 503,
  internal: 500,
  timeout: 408,
};

/** The close codes the relay uses, by name (errors.json, PROTOCOL 6.9). */
export const CLOSE_CODES = {
  going_away: 1001,
  protocol_error: 1002,
  invalid_payload: 1007,
  too_big: 1009,
  internal_error: 1011,
  replaced: 4001,
  slow_consumer: 4002,
  auth_failed: 4003,
  auth_timeout: 4004,
  ping_timeout: 4005,
  unavailable: 4006,
  epoch_changed: 4007,
  bad_signatures: 4008,
};

/** Codes worth retrying later (PROTOCOL 6.4): the same envelope may be accepted then. */
const TEMPORARY = new Set(['rate_limited', 'inbox_full', 'store_full', 'unavailable', 'too_many_connections', 'timeout', 'unreachable']);

/**
 * A refusal or failure. `code` is a protocol error code (an unknown one reads as
 * `internal`, as section 9 asks) or one of the library's own: `disconnected` (no answer
 * came, the connection ended first), `closed` (the client was closed), `replaced`,
 * `origin_mismatch`, `unreachable`, `undecryptable`, `unexpected` (an answer that is not the relay's).
 */
export class WhisprError extends Error {
  constructor(code, detail, { retryAfterMs, status, closeCode } = {}) {
    super(`${code}: ${detail}`);
    this.name = 'WhisprError';
    this.code = code in ERROR_STATUS || !isProtocolCode(code) ? code : 'internal';
    this.detail = detail;
    if (retryAfterMs !== undefined) this.retryAfterMs = retryAfterMs;
    if (status !== undefined) this.status = status;
    if (closeCode !== undefined) this.closeCode = closeCode;
  }

  /** Whether sending the same envelope again later may succeed. */
  get temporary() {
    return TEMPORARY.has(this.code) || this.code === 'disconnected';
  }
}

const LIBRARY_CODES = new Set(['disconnected', 'closed', 'replaced', 'origin_mismatch', 'unreachable', 'undecryptable', 'unexpected']);

function isProtocolCode(code) {
  return !LIBRARY_CODES.has(code);
}
