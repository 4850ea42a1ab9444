// The web chat page: an identity kept in this browser, the relay's address, one
// conversation list, and a compose box. Everything the protocol needs is in the library
// (whispr-client.js, bundled by `npm run build`); this file is only the page.
//
// localStorage keys (per browser profile):
//   whispr.identity          the identity file's text (the secret seed: whoever reads it is you)
//   whispr.relay             the relay URL the user chose
//   whispr.to                the last recipient
//   whispr.state.<address>   the library's cursor and recent ids
//   whispr.history.<address> what the page shows, so a reload shows it again
// A message is added to the history before the handler returns, and the library
// acknowledges it only then: a reload shows nothing twice and loses nothing.

import { ready, Identity, WhisprClient, WebStorage, parseKeyFile, formatKeyFile, parseAddress } from './whispr-client.js';

const HISTORY_LIMIT = 500;
const $ = (id) => document.getElementById(id);

/** Out of the box: the relay of a page served over https is the page's own host
 * (nginx in front of both); otherwise the relay's default address. `?relay=` wins. */
function defaultRelay() {
  const asked = new URLSearchParams(location.search).get('relay');
  if (asked) return asked;
  const saved = localStorage.getItem('whispr.relay');
  if (saved) return saved;
  return location.protocol === 'https:' ? `wss://${location.host}` : 'ws://127.0.0.1:8000';
}

let identity = null;
let client = null;
let history = [];
const nodes = new WeakMap(); // entry -> its <li>, kept out of the saved history

function historyKey() {
  return `whispr.history.${identity.address}`;
}

function saveHistory() {
  history = history.slice(-HISTORY_LIMIT);
  localStorage.setItem(historyKey(), JSON.stringify(history));
}

function short(address) {
  return `${address.slice(0, 8)}…${address.slice(-4)}`;
}

function when(ms) {
  const d = new Date(ms);
  const today = new Date().toDateString() === d.toDateString();
  return today ? d.toLocaleTimeString() : d.toLocaleString();
}

function render(entry) {
  const li = document.createElement('li');
  li.dataset.id = entry.id ?? '';
  if (entry.kind === 'system') {
    li.className = 'system';
    li.dataset.testid = 'system';
    li.textContent = entry.text;
    return li;
  }
  li.className = entry.kind === 'sent' ? 'mine' : 'theirs';
  if (entry.ephemeral) li.classList.add('ephemeral');
  li.dataset.testid = entry.kind === 'sent' ? 'sent' : 'received';
  const meta = document.createElement('span');
  meta.className = 'meta';
  const who = document.createElement('span');
  who.className = 'from';
  const peer = entry.kind === 'sent' ? entry.to : entry.from;
  who.textContent = entry.kind === 'sent' ? `to ${short(peer)}` : short(peer);
  who.title = `${peer} (click to reply)`;
  who.dataset.testid = 'peer';
  who.onclick = () => {
    $('to').value = peer;
    $('text').focus();
  };
  meta.append(who, ` · ${when(entry.timestamp)}`);
  if (entry.kind === 'sent') {
    const state = document.createElement('span');
    state.className = `state ${entry.state}`;
    state.dataset.testid = 'send-state';
    state.textContent = { sending: ' · sending…', sent: ' · sent ✓', failed: ` · not sent: ${entry.error}` }[entry.state];
    meta.append(state);
  }
  const text = document.createElement('span');
  text.className = 'text';
  text.dataset.testid = 'text';
  text.textContent = entry.text; // never innerHTML: the text is the sender's
  li.append(meta, text);
  return li;
}

function show(entry, { persist = true } = {}) {
  if (persist) {
    history.push(entry);
    saveHistory();
  }
  const list = $('messages');
  const node = render(entry);
  nodes.set(entry, node);
  list.append(node);
  node.scrollIntoView({ block: 'end' });
}

function update(entry) {
  const node = render(entry);
  nodes.get(entry).replaceWith(node);
  nodes.set(entry, node);
  saveHistory();
}

function system(text) {
  show({ kind: 'system', text, timestamp: Date.now() });
}

function setStatus(state, text) {
  const badge = $('status');
  badge.dataset.state = state;
  badge.textContent = text;
}

const GAP_REASONS = {
  expired: 'some messages expired on the relay before they were read',
  epoch_changed: 'the relay lost its stored messages',
};

function explain(error) {
  switch (error.code) {
    case 'rate_limited':
      return `too many messages; try again in ${Math.ceil((error.retryAfterMs ?? 1000) / 1000)} s`;
    case 'inbox_full':
      return "the recipient's inbox is full until they read it";
    case 'invalid_key':
      return 'that is not a valid address (64 hex characters)';
    case 'stale_timestamp':
      return "this computer's clock is wrong";
    case 'disconnected':
      return 'no connection to the relay';
    default:
      return `${error.code}: ${error.detail ?? error.message}`;
  }
}

async function connect() {
  await client?.close();
  const relay = $('relay').value.trim();
  localStorage.setItem('whispr.relay', relay);
  try {
    // ?transport=polling (or websocket) for networks that break WebSockets; auto by default.
    const transport = new URLSearchParams(location.search).get('transport') ?? 'auto';
    client = new WhisprClient({ relay, identity, transport, storage: new WebStorage(`whispr.state.${identity.address}`) });
  } catch (e) {
    setStatus('closed', 'bad relay URL');
    system(`Cannot use the relay URL: ${e.message}`);
    return;
  }
  client.on('message', (m) => {
    show({ kind: 'received', id: m.id, from: m.from, text: m.text, timestamp: m.timestamp, ephemeral: m.ephemeral });
  });
  client.on('status', ({ status }) => {
    const labels = { connecting: 'connecting…', live: 'connected', polling: 'connected (polling)', waiting: 'reconnecting…', closed: 'disconnected' };
    setStatus(status, labels[status] ?? status);
  });
  client.on('disconnected', ({ retryInMs, reason }) => {
    if (retryInMs > 0) setStatus('waiting', `reconnecting in ${Math.ceil(retryInMs / 1000)} s…`);
    $('status').title = reason; // why, for whoever hovers over it
  });
  client.on('gap', ({ reason }) => system(`Some messages may be missing: ${GAP_REASONS[reason] ?? reason}.`));
  client.on('replaced', () => system('This identity was opened in another tab or device, which took over. Press Connect to take it back.'));
  client.on('rejected', ({ reason }) => system(`A message could not be read and was dropped (${reason}).`));
  client.on('error', ({ error }) => {
    if (error.code !== 'replaced') system(`Disconnected: ${explain(error)}`);
  });
  try {
    await client.start();
  } catch (e) {
    // Only the saved state can make start() fail. Without it the relay's queue is read
    // from its start again: the history above may then show a message a second time.
    localStorage.removeItem(`whispr.state.${identity.address}`);
    system(`The saved inbox position was unreadable (${e.message}) and was reset.`);
    await client.start();
  }
}

async function send(event) {
  event.preventDefault();
  $('compose-error').textContent = '';
  const to = $('to').value.trim();
  const text = $('text').value;
  if (!text) return;
  try {
    parseAddress(to);
  } catch {
    $('compose-error').textContent = 'Paste the recipient’s address: 64 hex characters.';
    return;
  }
  $('text').value = '';
  localStorage.setItem('whispr.to', to);
  const entry = { kind: 'sent', to, text, timestamp: Date.now(), state: 'sending' };
  show(entry);
  try {
    const accepted = await client.send(to, text);
    entry.id = accepted.id;
    entry.state = 'sent';
  } catch (e) {
    entry.state = 'failed';
    entry.error = explain(e);
  }
  update(entry);
}

function enterChat() {
  $('setup').hidden = true;
  $('chat').hidden = false;
  $('address').textContent = identity.address;
  $('to').value = localStorage.getItem('whispr.to') ?? '';
  history = JSON.parse(localStorage.getItem(historyKey()) ?? '[]');
  $('messages').replaceChildren();
  // A send still "sending" when the page went away has an unknown fate.
  for (const entry of history) {
    if (entry.state === 'sending') {
      entry.state = 'failed';
      entry.error = 'the page was closed before the relay answered';
    }
    show(entry, { persist: false });
  }
  connect();
}

function adopt(newIdentity) {
  identity = newIdentity;
  localStorage.setItem('whispr.identity', formatKeyFile(identity));
  enterChat();
}

function download(name, text) {
  const a = document.createElement('a');
  a.href = URL.createObjectURL(new Blob([text], { type: 'application/json' }));
  a.download = name;
  a.click();
  URL.revokeObjectURL(a.href);
}

async function main() {
  await ready();
  $('relay').value = defaultRelay();
  $('create').onclick = () => adopt(Identity.generate());
  $('import-file').onchange = async () => {
    $('import-text').value = (await $('import-file').files[0]?.text()) ?? '';
  };
  $('import').onclick = () => {
    try {
      adopt(parseKeyFile($('import-text').value));
    } catch (e) {
      $('setup-error').textContent = e.message;
    }
  };
  $('copy').onclick = () => navigator.clipboard?.writeText(identity.address);
  $('export').onclick = () => download('whispr-identity.json', formatKeyFile(identity));
  $('forget').onclick = async () => {
    if (!confirm('Remove this identity from this browser? Without an exported copy it is lost.')) return;
    await client?.close();
    localStorage.removeItem('whispr.identity');
    location.reload();
  };
  $('reconnect').onclick = () => identity && connect();
  $('compose').onsubmit = send;

  const saved = localStorage.getItem('whispr.identity');
  if (saved) {
    try {
      identity = parseKeyFile(saved);
    } catch (e) {
      $('setup-error').textContent = `The saved identity is unreadable (${e.message}); create or import one.`;
    }
  }
  if (identity) enterChat();
  else $('setup').hidden = false;
}

main();
