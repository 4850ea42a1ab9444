// The WebSocket under a session: the browser's own, or the `ws` package under Node
// (Node 20 has no stable global WebSocket), behind one small interface so that the
// client does not care which. Only `ws` can see the HTTP status of a refused upgrade
// and the relay's pings; a browser reports neither, so the client falls back to polling
// by probing instead (client.js).

/** Why a WebSocket did not open: `status` is the HTTP answer when the platform tells. */
export class SocketOpenError extends Error {
  constructor(message, status) {
    super(message);
    this.name = 'SocketOpenError';
    this.status = status;
  }
}

const isNode = typeof process !== 'undefined' && !!process.versions?.node;

/**
 * Opens `url` offering `protocols`. Resolves with a link once open:
 * `{ protocol, send(data), close(code, reason), attach({ message, close, ping }) }`.
 * Rejects with a SocketOpenError.
 */
export async function openSocket(url, protocols, { WebSocket: Impl, maxPayload = 1 << 20 } = {}) {
  if (!Impl && isNode) return openWs((await import('ws')).default, url, protocols, maxPayload);
  return openBrowser(Impl ?? globalThis.WebSocket, url, protocols);
}

function openWs(WS, url, protocols, maxPayload) {
  return new Promise((resolve, reject) => {
    const socket = new WS(url, protocols, { maxPayload, handshakeTimeout: 10000 });
    const link = newLink(socket);
    let open = false;
    socket.on('unexpected-response', (_request, response) => {
      const chunks = [];
      response.on('data', (c) => chunks.push(c));
      response.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let detail = text.slice(0, 200);
        try {
          detail = JSON.parse(text).detail ?? detail;
        } catch {
          // keep the raw text
        }
        reject(new SocketOpenError(`the relay answered the upgrade with HTTP ${response.statusCode}: ${detail}`, response.statusCode));
        socket.terminate();
      });
    });
    socket.on('open', () => {
      open = true;
      link.protocol = socket.protocol;
      resolve(link);
    });
    socket.on('error', (e) => {
      if (!open) reject(new SocketOpenError(e.message));
    });
    socket.on('message', (data, isBinary) => link.onmessage(isBinary ? new Uint8Array(data) : data.toString('utf8'), isBinary));
    socket.on('ping', () => link.onping());
    socket.on('close', (code, reason) => {
      if (open) link.onclose(code, reason.toString('utf8'));
    });
  });
}

function openBrowser(Impl, url, protocols) {
  if (!Impl) return Promise.reject(new SocketOpenError('this platform has no WebSocket'));
  return new Promise((resolve, reject) => {
    const socket = new Impl(url, protocols);
    socket.binaryType = 'arraybuffer';
    const link = newLink(socket);
    let open = false;
    socket.onopen = () => {
      open = true;
      link.protocol = socket.protocol;
      resolve(link);
    };
    socket.onmessage = (event) => {
      const binary = typeof event.data !== 'string';
      link.onmessage(binary ? new Uint8Array(event.data) : event.data, binary);
    };
    socket.onclose = (event) => {
      if (open) link.onclose(event.code, event.reason);
      // A browser hides why an upgrade failed (status, refused, DNS): all it says is 1006.
      else reject(new SocketOpenError(`the WebSocket to ${url} did not open (close ${event.code})`));
    };
  });
}

/**
 * The link handed to the client. Frames and the close that arrive before the client
 * attached its handlers (the relay's challenge often comes in the same TCP read as the
 * upgrade answer, before the opening promise's continuation runs) are kept and
 * replayed by `attach`.
 */
function newLink(socket) {
  const early = [];
  let handlers = null;
  const deliver = (kind, ...args) => (handlers ? handlers[kind](...args) : early.push([kind, args]));
  return {
    protocol: '',
    send: (data) => socket.send(data),
    close: (code, reason) => {
      try {
        socket.close(code, reason);
      } catch {
        // already closing
      }
    },
    /** Sets `{ message(data), close(code, reason), ping() }` and replays what came before. */
    attach(h) {
      handlers = h;
      for (const [kind, args] of early.splice(0)) h[kind](...args);
    },
    onmessage: (...args) => deliver('message', ...args),
    onclose: (...args) => deliver('close', ...args),
    onping: () => deliver('ping'),
  };
}
