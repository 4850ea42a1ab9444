//! The store's Lua scripts. Each runs atomically on the three keys of one inbox (one hash
//! slot); the module doc of [`super`] explains the schema and the history checks, and
//! [`super::fence`] why each script knows which Redis process it runs on.
//!
//! Every script is built for one Redis process: its `run_id` is written into the script's
//! text (`local run = '…'`), so the script's SHA differs per process and a script can run
//! only on the process it was built and loaded for (see [`super::fence`]). No script asks
//! Redis for `INFO server` (about 11 µs inside Lua, per call, before this).
//!
//! Every script takes the same first three `ARGV`s, so the prelude can serve them all:
//! `ARGV[1]` a fresh random epoch (used only if the inbox must move to a new epoch),
//! `ARGV[2]` `1` when the guard verified this process's persistence lossless and `0`
//! otherwise, `ARGV[3]` how long the inbox's keys must live at least (ms). The batched
//! scripts (insert, reads) send `ARGV[1]` and `ARGV[3]` empty and take both per
//! operation instead. Script-specific arguments follow from `ARGV[4]`.
//!
//! Each operation of a batched script runs under `pcall`: one that meets an error (a key
//! of the wrong type) answers `{'err', message, lost}` alone and the others go on. Redis
//! does not undo what a failed operation wrote before its error; each is written so that
//! what it leaves is safe (an insert forgets the dedupe id it recorded).
//!
//! The insert takes many messages at once, and the reads script many reads and acks
//! (group commit: see [`super::writer`]); the sweep's expire works on one inbox.
//!
//! # What a message costs inside Redis
//!
//! Each `redis.call` costs about 0.5–2 µs on this project's benchmark box, against 2–8 µs
//! for the script call itself (the prelude's closures are made anew on every call), so
//! the scripts are written to make few calls, and one call carries many operations. A
//! message is one member of one sorted set (`queue`: its seq, expiry and payload), so a
//! stored message costs three calls in the insert (the dedupe check and record in one
//! `ZADD NX`, the message's `ZADD`, one `HSET` of `meta`'s head and count), plus, once
//! per inbox and call, one `HMGET` of `meta` and the key lives' `PTTL`; a read costs
//! four (`HMGET`, the eviction check's `ZCARD`, the expiry probe of the front, the
//! range), and an ack two more (`ZREMRANGEBYSCORE`, one `HSET`). What used to run on
//! every call and now runs less often, each argued where it runs: the key lives are
//! renewed once per sixteenth of their length, dedupe ids past their window are forgotten
//! on every sixteenth message, and the insert expires messages only when the inbox is
//! full.
//!
//! Script flags (Redis 7): the insert declares no `allow-oom`, so Redis refuses it at
//! once when it is at `maxmemory` (that refusal is the 507 answer). Reads (with acks) and expire declare
//! `allow-oom`: they only delete or write a few bytes of metadata, and they are what frees a
//! full Redis, so they must run exactly then. Insert and reads declare
//! `allow-cross-slot-keys` for the calls spread over a cluster master's slots (`here`).

/// Shared by every script: names the keys and arguments and defines `entry`, `expire`,
/// `forget`, `keep`, `renew`, `migrate`, `open`, `ack_through` and `recount`.
const PRELUDE: &str = r#"
-- The inbox being worked on, set by `bind`: its three keys, the epoch it moves to if it
-- must, how long its keys must live, and why its history may be incomplete when a
-- check below noticed it. The functions below act on it.
local meta, queue, ids, new_epoch, keep_ms
local lost = ''
-- The fields of `meta` as `open` read them (epoch, head, lost, acked, n; strings), kept
-- current by every function that writes one, so each is read once per call.
local cur = {}
-- Messages this call expired, for the relay's counters.
local expired = 0
-- Where the keys are named. A call on one hash slot declares them (`KEYS`, three per
-- operation), and Redis checks that it serves them before the script runs. A call
-- spread over the slots of one cluster master (see `writer`) cannot declare them: Redis
-- refuses a call whose declared keys hash to several slots (`allow-cross-slot-keys`
-- lifts that only for keys a script names itself). Then `ARGV[3]` counts the
-- operations, their keys follow their nine arguments each, and `here` checks each
-- operation's keys before it touches them. (`expire` always declares its keys.)
local spread = #KEYS == 0
local ops, named = #KEYS / 3, KEYS
if spread then
  ops = tonumber(ARGV[3])
  named = {}
  for k = 1, 3 * ops do named[k] = ARGV[3 + 9 * ops + k] end
end
local function bind(k, epoch, keep)
  meta, queue, ids = named[k], named[k + 1], named[k + 2]
  new_epoch, keep_ms, lost, expired, cur = epoch, tonumber(keep), '', 0, {}
end
local function int(n) return string.format('%d', n) end
-- Whether the bound inbox's keys are this process's to touch now. On a spread call the
-- operation's first command names all three, and Redis's own check of a script's
-- commands fails it when this process does not serve their slot (it moved, or the relay
-- learnt the cluster's layout before it changed) or the slot is moving and a key has
-- left or is not here yet. Nothing is written before it, so such an operation is
-- answered `moved` and the relay sends it again on its own slot, where redis-rs follows
-- the redirect. Keys that are all here stay here until the script ends.
local function here()
  return not spread or pcall(redis.call, 'EXISTS', meta, queue, ids)
end
-- What a `pcall` caught, as text: `redis.call` raises a table with `err`, Lua a string.
local function failure(e)
  if type(e) == 'table' then return tostring(e.err) end
  return tostring(e)
end
-- A queued message is one member of `queue`, scored by its seq: `<seq> <expires-at>
-- <payload>`. The seq keeps two equal payloads apart; the expiry lets the front expire
-- without a second key.
local function entry(seq, expires_at, payload) return seq .. ' ' .. expires_at .. ' ' .. payload end
local function parse(e)
  local s, x = string.match(e, '^(%d+) (%d+) ')
  return tonumber(s), tonumber(x)
end
-- Messages past their TTL at the front, removed; returns how many and the highest seq.
-- Seqs are handed out in time order with one TTL, so the front expires first (a message
-- behind an unexpired one waits for it, as in the memory store). Looks at one member
-- when nothing expired, then at growing runs.
local function expire_front(now)
  local t, take, gone, high = tonumber(now), 1, 0, 0
  while true do
    local front = redis.call('ZRANGE', queue, 0, take - 1)
    local k = 0
    for _, e in ipairs(front) do
      local s, x = parse(e)
      if x > t then break end
      k, high = k + 1, s
    end
    if k > 0 then redis.call('ZREMRANGEBYRANK', queue, 0, k - 1) end
    gone = gone + k
    if k < take then return gone, high end
    take = math.min(take * 4, 1000)
  end
end
-- Messages past their TTL leave; `lost` rises to the highest of them.
local function expire(now)
  local gone, high = expire_front(now)
  if gone > 0 then
    cur.lost = int(math.max(tonumber(cur.lost), high))
    cur.n = int(math.max(tonumber(cur.n) - gone, 0))
    redis.call('HSET', meta, 'lost', cur.lost, 'n', cur.n)
    expired = expired + gone
  end
end
-- Dedupe ids past their window are forgotten by the sweep and on every sixteenth insert
-- into an inbox, to bound the set's size. Between two, an id past its window may still be
-- in the set: the insert reads its score and treats it as forgotten, so the verdict is
-- the same as if it had been removed at once.
local function forget(now)
  redis.call('ZREMRANGEBYSCORE', ids, '-inf', now)
end
-- Key lives. `meta` and `ids` live at least keep_ms past the inbox's last write, and at
-- most keep_ms + keep_ms / 16: they are renewed to that once their life left falls below
-- keep_ms, so once per sixteenth of it, not on every write. `ids` is new whenever the
-- sweep or a forget emptied it, so it takes meta's life if it has none (`NX`). `queue`
-- has no life of its own: its messages leave by ack or by their TTL (reads, full
-- inserts, the sweep), and Redis deletes it when it is empty; an inbox whose `meta`
-- expired before its messages were swept gets them expired by `open`.
local function keep()
  local left = redis.call('PTTL', meta)
  if left >= keep_ms then
    redis.call('PEXPIRE', ids, left, 'NX')
    return
  end
  local life = keep_ms + math.floor(keep_ms / 16)
  redis.call('PEXPIRE', meta, life)
  redis.call('PEXPIRE', ids, life)
end
-- The inbox moves to a new epoch: every cursor a reader holds becomes stale, so no
-- (epoch, seq) handed out from now on can be one that a reader already passed.
local function renew(reason)
  redis.call('HSET', meta, 'epoch', new_epoch)
  cur.epoch = new_epoch
  lost = reason
end
-- Relays before the single `queue` kept an inbox's messages in three keys: `q` (seqs),
-- `m` (seq -> payload) and `exp` (seq scored by its expiry). Moves what they hold into
-- `queue` and deletes them; then `cur.head` passes every seq in `queue` and `cur.n`
-- counts it (the caller writes both). Messages at or below the inbox's floor (acked or
-- expired: an ack without a clock does not migrate, so it could not delete them) are
-- deleted, not moved. Returns false when `q` and `m` disagreed (an eviction broke the
-- old inbox).
local function migrate(now)
  local stem = string.sub(meta, 1, -5)
  local q, m, exp = stem .. 'q', stem .. 'm', stem .. 'exp'
  local fields = redis.call('HGETALL', m)
  local orderly = redis.call('ZCARD', q) == #fields / 2
  local at = {}
  local x = redis.call('ZRANGE', exp, 0, -1, 'WITHSCORES')
  for i = 1, #x, 2 do at[tonumber(x[i])] = tonumber(x[i + 1]) end
  local floor = math.max(tonumber(cur.acked), tonumber(cur.lost))
  local payload, seqs = {}, {}
  for i = 1, #fields, 2 do
    local s = tonumber(fields[i])
    if s > floor then
      payload[s] = fields[i + 1]
      table.insert(seqs, s)
    end
  end
  -- Each expires no later than the seqs after it (newest first): expiry reads the front
  -- only, and an expiry later than its successors' would hold them past their TTL. A
  -- seq whose expiry was evicted takes its successor's; the newest without one gets a
  -- full life from now, as the old repair gave. (Expiries out of order came only from
  -- relays' clocks disagreeing, by that much.)
  table.sort(seqs)
  local expires, later = {}, tonumber(now) + keep_ms
  for i = #seqs, 1, -1 do
    later = math.min(later, at[seqs[i]] or later)
    expires[seqs[i]] = later
  end
  -- A `queue` already there means this layout wrote the inbox and an earlier relay then
  -- did too. One that numbered from its own keys, under metadata it made anew, used seqs
  -- this layout holds: its messages are numbered on after every seq in use, in their
  -- order (the caller moves the inbox to a new epoch, so no reader's cursor meets the
  -- new numbers). One that counted on the shared `head` numbered past them already.
  local top = redis.call('ZRANGE', queue, -1, -1)[1]
  top = top and (parse(top))
  local after = top and seqs[1] and seqs[1] <= top and math.max(tonumber(cur.head), top)
  for _, s in ipairs(seqs) do
    local at_seq = s
    if after then
      after = after + 1
      at_seq = after
    end
    redis.call('ZADD', queue, at_seq, entry(int(at_seq), int(expires[s]), payload[s]))
  end
  redis.call('DEL', q, m, exp)
  cur.n = int(redis.call('ZCARD', queue))
  local last = redis.call('ZRANGE', queue, -1, -1)[1]
  cur.head = int(math.max(tonumber(cur.head), last and (parse(last)) or 0))
  return orderly
end
-- Whether a restart into this process (its run id, `run`, is written into the script
-- above the prelude) loses nothing, as the guard last verified it.
local lossless = ARGV[2] == '1'
-- Makes the inbox's metadata trustworthy before anything reads or assigns a seq, and
-- reads it into `cur`: metadata gone while messages remain (evicted), or last written by
-- an earlier Redis process whose persistence was not verified lossless (a restart may
-- have lost its last writes, a restore or a failover may have lost more), moves the
-- inbox to a new epoch. With `now`, messages left from an inbox whose metadata expired
-- idle are expired first: they are no loss, and an inbox of the earlier schema is
-- migrated. Returns false when the inbox has no metadata and `create` is false and
-- nothing is left (without `now`: touching nothing, since leftovers cannot be told
-- apart); 'created' when it made the metadata, else true.
--
-- `meta.n` counts the messages in `queue` and `meta.h` is the head as this schema last
-- wrote it: a head that differs was moved by a relay of the earlier schema, whose
-- messages are then migrated.
local function open(create, now)
  local v = redis.call('HMGET', meta, 'epoch', 'head', 'lost', 'acked', 'run', 'n', 'h')
  if not v[1] then
    if not (create or now) then return false end
    cur = {head = '0', lost = '0', acked = '0', n = '0'}
    local stem = string.sub(meta, 1, -5)
    -- Seqs of the earlier layout without their payloads are messages lost with `meta`.
    local broken = false
    if redis.call('EXISTS', stem .. 'm', stem .. 'q') > 0 then broken = not migrate(now) end
    local n = 0
    if tonumber(cur.n) > 0 or redis.call('EXISTS', queue) == 1 then
      local gone = expire_front(now)
      expired = expired + gone
      n = redis.call('ZCARD', queue)
      for _, e in ipairs(redis.call('ZRANGE', queue, -1, -1)) do
        cur.head = int(math.max(tonumber(cur.head), (parse(e))))
      end
    end
    if not (create or n > 0 or broken) then return false end
    cur = {epoch = new_epoch, head = cur.head, lost = '0', acked = '0', n = int(n)}
    redis.call('HSET', meta, 'epoch', new_epoch, 'head', cur.head, 'lost', '0', 'acked', '0',
      'run', run, 'n', cur.n, 'h', cur.head)
    if n > 0 or broken then lost = 'metadata_missing' end
    return 'created'
  end
  cur = {epoch = v[1], head = v[2], lost = v[3], acked = v[4], n = v[6] or '0'}
  local seen = v[5]
  if seen ~= run then
    -- No run id at all: metadata written before the relay recorded one; nothing to compare.
    if seen and not lossless then renew('redis_restarted') end
    redis.call('HSET', meta, 'run', run)
  end
  if now and v[7] ~= v[2] then
    -- This layout wrote here before (`h`, or a `queue` under metadata an earlier relay
    -- made anew), then a relay of the earlier one did: its readers do not see `queue`,
    -- and their acks may pass messages they never saw.
    local mixed = v[7] or redis.call('EXISTS', queue) == 1
    local orderly = migrate(now)
    redis.call('HSET', meta, 'head', cur.head, 'h', cur.head, 'n', cur.n)
    if mixed then
      renew('mixed_versions')
    elseif not orderly then
      renew('evicted')
    end
  end
  return true
end
-- Acknowledges through (epoch, seq) of the inbox's open metadata: deletes every queued
-- seq at or below it, or, past the head (the store lost what the reader saw), deletes
-- nothing and moves the inbox to a new epoch. Returns how many were deleted, or nil
-- when the epoch is not the inbox's (nothing to do).
local function ack_through(epoch, seq)
  if cur.epoch ~= epoch then return nil end
  if tonumber(seq) > tonumber(cur.head) then
    renew('cursor_ahead')
    return nil
  end
  local gone = redis.call('ZREMRANGEBYSCORE', queue, '-inf', seq)
  local ahead = tonumber(seq) > tonumber(cur.acked)
  if ahead or gone > 0 then
    if ahead then cur.acked = seq end
    cur.n = int(math.max(tonumber(cur.n) - gone, 0))
    redis.call('HSET', meta, 'acked', cur.acked, 'n', cur.n)
  end
  return gone
end
-- `queue` must hold the `n` messages `meta` counts. Redis evicts whole keys, so fewer
-- means an eviction took `queue` (and maybe inserts began it anew); more means `meta`
-- was written by something other than these scripts: either way the inbox moves to a
-- new epoch, and `head` passes every seq still queued. One O(1) count; it runs on every
-- read and sweep, whatever the policy now: the damage of an eviction outlives the
-- policy, the process and a failover that caused it.
local function recount()
  local held = redis.call('ZCARD', queue)
  if held ~= tonumber(cur.n) then
    renew('evicted')
    cur.n = int(held)
    local top = redis.call('ZRANGE', queue, -1, -1)[1]
    cur.head = int(math.max(tonumber(cur.head), top and (parse(top)) or 0))
    redis.call('HSET', meta, 'n', cur.n, 'head', cur.head, 'h', cur.head)
  end
end
"#;

/// Many messages in one call (group commit): three KEYS per message (its inbox's, in the
/// usual order; an inbox may come more than once), and from `ARGV[4]` nine arguments per
/// message: new epoch, keep_ms, id, forget_at, now, expires_at, cap, payload, deadline
/// (Redis clock, ms; empty for none). Messages are stored in the order given. (A spread
/// call names the keys after the arguments instead: see `here`.)
/// Returns, for each message in order, its length (5) and {status, epoch, seq, expired,
/// lost}, (3) and {'err', message, lost} for a message that met an error, or (1) and
/// {'moved'} for one a spread call could not store here.
const INSERT: &str = r#"
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {}
-- Per inbox and call: its metadata once read (`cur`), and how long its keys were kept.
local opened, kept = {}, {}
-- The id the message being stored recorded, until it is stored: one that fails after
-- recording its id must forget it, or the sender's retry would be taken for a duplicate.
local recorded
-- One message, its arguments from ARGV[a]; returns its status, epoch and seq.
local function store(a)
  local id, forget_at, now, expires_at, cap, payload, deadline =
    ARGV[a + 2], ARGV[a + 3], ARGV[a + 4], ARGV[a + 5], ARGV[a + 6], ARGV[a + 7], ARGV[a + 8]
  local status, epoch, seq = 'stored', '0', '0'
  if deadline ~= '' and now_ms > tonumber(deadline) then
    status = 'late'
  else
    if opened[meta] then cur = opened[meta] else
      open(true, now)
      opened[meta] = cur
    end
    -- The dedupe check and record in one call; an id already there whose window passed
    -- (not yet forgotten) counts as new.
    local fresh = redis.call('ZADD', ids, 'NX', forget_at, id) == 1
    if not fresh and tonumber(redis.call('ZSCORE', ids, id)) <= tonumber(now) then
      redis.call('ZADD', ids, forget_at, id)
      fresh = true
    end
    if fresh then recorded = id end
    if not fresh then
      status = 'dup'
    else
      -- Expired messages still count until something expires them: only a full inbox
      -- needs to know, so only a full inbox pays for the probe (and the count).
      if tonumber(cur.n) >= tonumber(cap) then
        recount()
        expire(now)
      end
      if tonumber(cur.n) >= tonumber(cap) then
        status = 'full'
        redis.call('ZREM', ids, id)
        -- That may have emptied ids, so the next message of this inbox in this call
        -- recreates it: its life must be set again.
        kept[meta] = nil
      else
        local s = tonumber(cur.head) + 1
        seq = int(s)
        cur.head, cur.n = seq, int(tonumber(cur.n) + 1)
        redis.call('ZADD', queue, s, entry(seq, expires_at, payload))
        redis.call('HSET', meta, 'head', seq, 'h', seq, 'n', cur.n)
        recorded = nil
        if s % 16 == 0 then forget(now) end
      end
    end
    -- After the full path's checks, which may have moved the inbox to a new epoch.
    epoch = cur.epoch
    if (kept[meta] or -1) < keep_ms then
      keep()
      kept[meta] = keep_ms
    end
  end
  return status, epoch, seq
end
for i = 1, ops do
  local a = 4 + (i - 1) * 9
  bind(3 * i - 2, ARGV[a], ARGV[a + 1])
  recorded = nil
  local ok, status, epoch, seq
  if here() then ok, status, epoch, seq = pcall(store, a) end
  if ok == nil then
    -- Not this process's now: nothing touched (see `here`).
    table.insert(out, '1')
    table.insert(out, 'moved')
  elseif ok then
    table.insert(out, '5')
    table.insert(out, status)
    table.insert(out, epoch)
    table.insert(out, seq)
    table.insert(out, int(expired))
    table.insert(out, lost)
  else
    -- This message alone fails; the inbox is read afresh by its next one. What it
    -- noticed about the history before failing is still reported.
    opened[meta], kept[meta] = nil, nil
    if recorded then pcall(redis.call, 'ZREM', ids, recorded) end
    table.insert(out, '3')
    table.insert(out, 'err')
    table.insert(out, failure(status))
    table.insert(out, lost)
  end
end
return out
"#;

/// Many reads and acks in one call (group commit, see [`super::writer`]): three KEYS per
/// operation (its inbox's; an inbox may come more than once, and each operation opens it
/// anew), and from `ARGV[4]` nine arguments per operation: new epoch, keep_ms, kind
/// (`f` a read, `a` an ack), now, cursor epoch ('' for none), cursor seq, limit, and an
/// acknowledgement to apply first (a read) or to apply (an ack): its epoch ('' for none)
/// and seq. Returns, for each operation in order, its length and then
/// {epoch, head, lost_through, acked, expired, lost, entry1, entry2, ...} for a read (each
/// entry a `queue` member: seq, expiry, payload), {status, removed count, lost} for an
/// ack, {'err', message, lost} for either when it met an error, or {'moved'} for one a
/// spread call could not run here (see `here`).
const READS: &str = r#"
local out = {}
-- Appends an operation's reply, length first, and then `more` (a read's entries).
local function put(r, more)
  table.insert(out, int(#r + #more))
  for j = 1, #r do table.insert(out, r[j]) end
  for j = 1, #more do table.insert(out, more[j]) end
end
local none = {}
local function fetch(now, after_epoch, after_seq, limit, ack_epoch, ack_seq)
  if open(true, now) == 'created' then keep() end
  recount()
  expire(now)
  -- An acknowledgement that came with the read (a session acking what it was sent, then
  -- reading on): one operation instead of two.
  if ack_epoch ~= '' then ack_through(ack_epoch, ack_seq) end
  -- A cursor past the head of its own epoch is a witness that this inbox lost history.
  if after_epoch == cur.epoch and tonumber(after_seq) > tonumber(cur.head) then
    renew('cursor_ahead')
  end
  local low = cur.lost
  if after_epoch == cur.epoch then
    if tonumber(after_seq) > tonumber(low) then low = after_seq end
  elseif tonumber(cur.acked) > tonumber(low) then
    low = cur.acked
  end
  local r = {cur.epoch, cur.head, cur.lost, cur.acked, int(expired), lost}
  return r, redis.call('ZRANGEBYSCORE', queue, '(' .. low, '+inf', 'LIMIT', 0, tonumber(limit))
end
local function ack(epoch, seq)
  -- No clock here: an inbox without metadata is left to the next read or sweep, which
  -- can tell expired leftovers from evicted ones. Its epoch is gone, so the ack is stale.
  if not open(false) then return {'stale', '0', lost}, none end
  local n = ack_through(epoch, seq)
  if not n then return {'stale', '0', lost}, none end
  return {'ok', int(n), lost}, none
end
for i = 1, ops do
  local a = 4 + (i - 1) * 9
  bind(3 * i - 2, ARGV[a], ARGV[a + 1])
  local ok, r, more = true, {'moved'}, none
  if not here() then
    -- Not this process's now: nothing touched (see `here`).
  elseif ARGV[a + 2] == 'f' then
    ok, r, more = pcall(fetch, ARGV[a + 3], ARGV[a + 4], ARGV[a + 5], ARGV[a + 6], ARGV[a + 7], ARGV[a + 8])
  else
    ok, r, more = pcall(ack, ARGV[a + 7], ARGV[a + 8])
  end
  -- This operation alone fails (a key of the wrong type, say); the others go on, and
  -- what it noticed about the history before failing is still reported.
  if not ok then r, more = {'err', failure(r), lost}, none end
  put(r, more)
end
return out
"#;

/// ARGV[4..]: now. Returns {expired, lost}.
const EXPIRE: &str = r#"
bind(1, ARGV[1], ARGV[3])
local opened = open(false, ARGV[4])
if not opened then return {int(expired), lost} end
if opened == 'created' then keep() end
recount()
forget(ARGV[4])
expire(ARGV[4])
return {int(expired), lost}
"#;

/// One script built for one Redis process: its text and its SHA1 (what `EVALSHA` names).
pub(super) struct Script {
    pub body: String,
    pub sha: String,
}

impl Script {
    fn new(flags: &str, run: &str, body: &str) -> Self {
        let body = format!("{flags}\nlocal run = '{run}'\n{PRELUDE}{body}");
        Script {
            sha: redis::Script::new(&body).get_hash().to_owned(),
            body,
        }
    }
}

/// The three scripts for the Redis process `run`.
pub(super) struct Scripts {
    pub run: String,
    /// On a cluster, the address (`host`, `port`) the process was learnt at, where a
    /// call spread over its slots goes (see `writer`); `None` on the one server.
    pub at: Option<(String, u16)>,
    pub insert: Script,
    pub reads: Script,
    pub expire: Script,
}

impl Scripts {
    /// `run` must be a run id as `INFO server` gives it (hex), since it is written into
    /// Lua source; anything else is refused.
    pub fn for_run(run: &str) -> Option<Self> {
        if run.is_empty() || !run.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        Some(Scripts {
            run: run.to_owned(),
            at: None,
            insert: Script::new("#!lua flags=allow-cross-slot-keys", run, INSERT),
            reads: Script::new("#!lua flags=allow-oom,allow-cross-slot-keys", run, READS),
            expire: Script::new("#!lua flags=allow-oom", run, EXPIRE),
        })
    }

    pub fn all(&self) -> [&Script; 3] {
        [&self.insert, &self.reads, &self.expire]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_process_gets_its_own_scripts_and_only_hex_run_ids_are_written_into_lua() {
        let (a, b) = (
            Scripts::for_run("ab12").unwrap(),
            Scripts::for_run("cd34").unwrap(),
        );
        for (x, y) in a.all().into_iter().zip(b.all()) {
            assert_ne!(x.sha, y.sha);
            assert!(x.body.contains("local run = 'ab12'"));
            assert!(!x.body.contains("'INFO'"));
        }
        assert!(Scripts::for_run("").is_none());
        assert!(Scripts::for_run("ab' .. redis.call('FLUSHALL') .. '").is_none());
    }
}
