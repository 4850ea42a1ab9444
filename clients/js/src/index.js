// whispr-client: the JavaScript client of the whispr relay, for browsers and Node.
// Module map:
//   sodium.js    loads libsodium (await ready() once)
//   bytes.js     hex, base64, u64 in the protocol's exact forms
//   protocol.js  identities, signing bytes, ids, strict verification (pure)
//   verify.js    the relay's checks of auth frames and Authorization headers (pure)
//   codec.js     JSON and MessagePack frames and bodies, one schema table (pure)
//   seal.js      sealed-box chat payloads {"v":1,"from","text"} (pure)
//   keyfile.js   the `whispr keygen` identity file format (pure)
//   state.js     cursor + recent ids, and the storages that keep them
//   backoff.js   jittered exponential backoff (pure)
//   session.js   one WebSocket session's protocol state machine (pure)
//   http.js      POST /v1/send and signed GET /v1/inbox over fetch
//   socket.js    the WebSocket: the browser's, or `ws` under Node
//   client.js    WhisprClient: the I/O shell that ties them together
//   node.js      (separate entry `whispr-client/node`) files: identity and state

export { ready } from './sodium.js';
export { toHex, fromHex, toBase64, fromBase64, WireError } from './bytes.js';
export {
  Identity, envelopeSigningBytes, messageId, signEnvelope, verifySignature, checkEnvelope, checkDelivery,
  checkSkew, authSigningBytes, httpSigningBytes, authorizationHeader, originOf, parseAddress,
  DEFAULT_MAX_SKEW_MS,
} from './protocol.js';
export { checkAuthFrame, checkAuthorization } from './verify.js';
export { Codec, SUBPROTOCOLS, DEFAULT_MAX_FRAME_BYTES } from './codec.js';
export { ERROR_STATUS, CLOSE_CODES, WhisprError } from './errors.js';
export { sealText, openText, encryptionKey, PAYLOAD_VERSION } from './seal.js';
export { formatKeyFile, parseKeyFile, KEYFILE_VERSION } from './keyfile.js';
export { InboxState, MemoryStorage, WebStorage, RECENT_IDS } from './state.js';
export { Backoff } from './backoff.js';
export { SessionCore, closeAction } from './session.js';
export { RelayHttp, relayUrl } from './http.js';
export { WhisprClient, DEFAULTS } from './client.js';
