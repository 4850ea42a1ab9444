//! The store's Lua scripts. Each runs atomically on the five keys of one inbox (one hash
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
//! of the wrong type) answers `{'err', message}` alone and the others go on.
//!
//! The insert takes many messages at once, and the reads script many reads and acks
//! (group commit: see [`super::writer`]); the sweep's expire works on one inbox.
//!
//! # What a message costs inside Redis
//!
//! Each `redis.call` costs about 2–4 µs on this project's benchmark box, against 5 µs for
//! the script call itself, whatever the command does; so the scripts are written to make
//! few calls. A stored message costs ten in the insert (one `HMGET` for all of `meta`,
//! the dedupe check and record in one `ZADD NX`, the cap's `ZCARD`, `HINCRBY`, three
//! writes, and the key lives: one `PTTL`, one `PEXPIRE`, one `PERSIST`); a read six
//! (`HMGET`, the expiry probe, the eviction check's two counts, the range, one `HMGET`
//! of the payloads); an ack six. What used to run on every call and now runs less
//! often, each argued where it runs: the key lives are
//! renewed once per sixteenth of their length, dedupe ids past their window are forgotten
//! on every sixteenth message, and the insert expires messages only when the inbox is
//! full.
//!
//! Script flags (Redis 7): the insert declares none, so Redis refuses it at once when it
//! is at `maxmemory` (that refusal is the 507 answer). Reads (with acks) and expire declare
//! `allow-oom`: they only delete or write a few bytes of metadata, and they are what
//! frees a full Redis, so they must run exactly then.

/// Shared by every script: names the keys and arguments and defines `remove`, `expire`,
/// `forget`, `keep`, `renew`, `open`, `ack_through` and `repair`.
const PRELUDE: &str = r#"
-- The inbox being worked on, set by `bind`: its five keys, the epoch it moves to if it
-- must, how long its keys must live, and why its history may be incomplete when a
-- check below noticed it. The functions below act on it.
local meta, q, m, exp, ids, new_epoch, keep_ms
local lost = ''
-- The fields of `meta` as `open` read them (epoch, head, lost, acked; strings), kept
-- current by every function that writes one, so each is read once per call.
local cur = {}
-- Messages this call expired, for the relay's counters.
local expired = 0
local function bind(k, epoch, keep)
  meta, q, m, exp, ids = KEYS[k], KEYS[k + 1], KEYS[k + 2], KEYS[k + 3], KEYS[k + 4]
  new_epoch, keep_ms, lost, expired, cur = epoch, tonumber(keep), '', 0, {}
end
local function int(n) return string.format('%d', n) end
-- What a `pcall` caught, as text: `redis.call` raises a table with `err`, Lua a string.
local function failure(e)
  if type(e) == 'table' then return tostring(e.err) end
  return tostring(e)
end
local function remove(seqs)
  for i = 1, #seqs, 1000 do
    local chunk = {unpack(seqs, i, math.min(i + 999, #seqs))}
    redis.call('ZREM', q, unpack(chunk))
    redis.call('HDEL', m, unpack(chunk))
    redis.call('ZREM', exp, unpack(chunk))
  end
end
-- Messages past their TTL leave; `lost` rises to the highest of them.
local function expire(now)
  local gone = redis.call('ZRANGEBYSCORE', exp, '-inf', now)
  if #gone > 0 then
    remove(gone)
    local was = tonumber(cur.lost)
    for _, s in ipairs(gone) do was = math.max(was, tonumber(s)) end
    cur.lost = int(was)
    redis.call('HSET', meta, 'lost', cur.lost)
    expired = expired + #gone
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
-- sweep or a forget emptied it, so it takes meta's life if it has none (`NX`). `q`, `m`
-- and `exp` have no lives of their own: they hold messages, which leave by ack or by
-- their TTL score (reads, full inserts, the sweep), and Redis deletes each when it is
-- empty; an inbox whose `meta` expired before its messages were swept gets them expired
-- by `open`.
local function keep()
  local left = redis.call('PTTL', meta)
  if left >= keep_ms then
    redis.call('PEXPIRE', ids, left, 'NX')
    -- A relay of the version before this one, running beside this one during an
    -- upgrade, gives q, m and exp lives on every insert (all three at once); they must
    -- not take newer messages with them.
    if redis.call('PERSIST', q) == 1 then
      redis.call('PERSIST', m)
      redis.call('PERSIST', exp)
    end
    return
  end
  local life = keep_ms + math.floor(keep_ms / 16)
  redis.call('PEXPIRE', meta, life)
  redis.call('PEXPIRE', ids, life)
  -- Relays before this one gave q, m and exp lives too: newer messages than those lives
  -- must not leave with them.
  redis.call('PERSIST', q)
  redis.call('PERSIST', m)
  redis.call('PERSIST', exp)
end
-- The inbox moves to a new epoch: every cursor a reader holds becomes stale, so no
-- (epoch, seq) handed out from now on can be one that a reader already passed.
local function renew(reason)
  redis.call('HSET', meta, 'epoch', new_epoch)
  cur.epoch = new_epoch
  lost = reason
end
-- Whether a restart into this process (its run id, `run`, is written into the script
-- above the prelude) loses nothing, as the guard last verified it.
local lossless = ARGV[2] == '1'
-- Makes the inbox's metadata trustworthy before anything reads or assigns a seq, and
-- reads it into `cur`: metadata gone while messages remain (evicted), or last written by
-- an earlier Redis process whose persistence was not verified lossless (a restart may
-- have lost its last writes, a restore or a failover may have lost more), moves the
-- inbox to a new epoch. With `now`, messages left from an inbox whose metadata expired
-- idle are expired first: they are no loss. Returns false, touching nothing more, when
-- the inbox has no metadata and `create` is false and (without `now`) whatever is left
-- cannot be told apart; 'created' when it made the metadata, else true.
local function open(create, now)
  local v = redis.call('HMGET', meta, 'epoch', 'head', 'lost', 'acked', 'run')
  if not v[1] then
    if not (create or now) then return false end
    if now then
      local gone = redis.call('ZRANGEBYSCORE', exp, '-inf', now)
      if #gone > 0 then
        remove(gone)
        expired = expired + #gone
      end
    end
    local head = 0
    for _, s in ipairs(redis.call('ZRANGE', q, -1, -1)) do head = tonumber(s) end
    local orphans = head > 0 or redis.call('EXISTS', m) == 1
    if not (create or orphans) then return false end
    if redis.call('EXISTS', m) == 1 then
      for _, s in ipairs(redis.call('HKEYS', m)) do head = math.max(head, tonumber(s)) end
    end
    redis.call('HSET', meta, 'epoch', new_epoch, 'head', int(head), 'lost', '0', 'acked', '0', 'run', run)
    cur = {epoch = new_epoch, head = int(head), lost = '0', acked = '0'}
    if orphans then lost = 'metadata_missing' end
    return 'created'
  end
  cur = {epoch = v[1], head = v[2], lost = v[3], acked = v[4]}
  local seen = v[5]
  if seen ~= run then
    -- No run id at all: metadata written before the relay recorded one; nothing to compare.
    if seen and not lossless then renew('redis_restarted') end
    redis.call('HSET', meta, 'run', run)
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
  if tonumber(seq) > tonumber(cur.acked) then
    redis.call('HSET', meta, 'acked', seq)
    cur.acked = seq
  end
  local gone = redis.call('ZRANGEBYSCORE', q, '-inf', seq)
  remove(gone)
  return #gone
end
-- q (the order) and m (the payloads) must hold the same seqs; when an eviction broke
-- that, what is left is put back in order and the inbox moves to a new epoch. Costs two
-- O(1) counts. It runs on every read and sweep, whatever the policy now: the damage of
-- an eviction outlives the policy, the process and a failover that caused it.
local function repair(now)
  if redis.call('ZCARD', q) == redis.call('HLEN', m) then return end
  local payloadless = {}
  for _, s in ipairs(redis.call('ZRANGE', q, 0, -1)) do
    if redis.call('HEXISTS', m, s) == 0 then table.insert(payloadless, s) end
  end
  if #payloadless > 0 then remove(payloadless) end
  for _, s in ipairs(redis.call('HKEYS', m)) do
    if not redis.call('ZSCORE', q, s) then
      redis.call('ZADD', q, s, s)
      redis.call('ZADD', exp, 'NX', tonumber(now) + keep_ms, s)
    end
  end
  renew('evicted')
end
"#;

/// Many messages in one call (group commit): five KEYS per message (its inbox's, in the
/// usual order; an inbox may come more than once), and from `ARGV[4]` nine arguments per
/// message: new epoch, keep_ms, id, forget_at, now, expires_at, cap, payload, deadline
/// (Redis clock, ms; empty for none). Messages are stored in the order given.
/// Returns, for each message in order, its length (5) and {status, epoch, seq, expired,
/// lost}, or (2) and {'err', message} for a message that met an error.
const INSERT: &str = r#"
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {}
-- Per inbox and call: its metadata once read (`cur`), and how long its keys were kept.
local opened, kept = {}, {}
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
    epoch = cur.epoch
    -- The dedupe check and record in one call; an id already there whose window passed
    -- (not yet forgotten) counts as new.
    local fresh = redis.call('ZADD', ids, 'NX', forget_at, id) == 1
    if not fresh and tonumber(redis.call('ZSCORE', ids, id)) <= tonumber(now) then
      redis.call('ZADD', ids, forget_at, id)
      fresh = true
    end
    if not fresh then
      status = 'dup'
    else
      -- Expired messages still count until something expires them: only a full inbox
      -- needs to know, so only a full inbox pays for the probe.
      local n = redis.call('ZCARD', q)
      if n >= tonumber(cap) then
        expire(now)
        n = redis.call('ZCARD', q)
      end
      if n >= tonumber(cap) then
        status = 'full'
        redis.call('ZREM', ids, id)
        -- That may have emptied ids, so the next message of this inbox in this call
        -- recreates it: its life must be set again.
        kept[meta] = nil
      else
        local s = redis.call('HINCRBY', meta, 'head', 1)
        seq = int(s)
        cur.head = seq
        redis.call('ZADD', q, seq, seq)
        redis.call('HSET', m, seq, payload)
        redis.call('ZADD', exp, expires_at, seq)
        if s % 16 == 0 then forget(now) end
      end
    end
    if (kept[meta] or -1) < keep_ms then
      keep()
      kept[meta] = keep_ms
    end
  end
  return status, epoch, seq
end
for i = 1, #KEYS / 5 do
  local a = 4 + (i - 1) * 9
  bind(5 * i - 4, ARGV[a], ARGV[a + 1])
  local ok, status, epoch, seq = pcall(store, a)
  if ok then
    table.insert(out, '5')
    table.insert(out, status)
    table.insert(out, epoch)
    table.insert(out, seq)
    table.insert(out, int(expired))
    table.insert(out, lost)
  else
    -- This message alone fails; the inbox is read afresh by its next one.
    opened[meta], kept[meta] = nil, nil
    table.insert(out, '2')
    table.insert(out, 'err')
    table.insert(out, failure(status))
  end
end
return out
"#;

/// Many reads and acks in one call (group commit, see [`super::writer`]): five KEYS per
/// operation (its inbox's; an inbox may come more than once, and each operation opens it
/// anew), and from `ARGV[4]` nine arguments per operation: new epoch, keep_ms, kind
/// (`f` a read, `a` an ack), now, cursor epoch ('' for none), cursor seq, limit, and an
/// acknowledgement to apply first (a read) or to apply (an ack): its epoch ('' for none)
/// and seq. Returns, for each operation in order, its length and then
/// {epoch, head, lost_through, acked, expired, lost, seq1, payload1, ...} for a read,
/// {status, removed count, lost} for an ack, or {'err', message} for either when it met an
/// error.
const READS: &str = r#"
local function fetch(now, after_epoch, after_seq, limit, ack_epoch, ack_seq)
  if open(true, now) == 'created' then keep() end
  expire(now)
  repair(now)
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
  local seqs = redis.call('ZRANGEBYSCORE', q, '(' .. low, '+inf', 'LIMIT', 0, tonumber(limit))
  for i = 1, #seqs, 1000 do
    local chunk = {unpack(seqs, i, math.min(i + 999, #seqs))}
    local payloads = redis.call('HMGET', m, unpack(chunk))
    for j, s in ipairs(chunk) do
      table.insert(r, s)
      table.insert(r, payloads[j])
    end
  end
  return r
end
local function ack(epoch, seq)
  -- No clock here: an inbox without metadata is left to the next read or sweep, which
  -- can tell expired leftovers from evicted ones. Its epoch is gone, so the ack is stale.
  if not open(false) then return {'stale', '0', lost} end
  local n = ack_through(epoch, seq)
  if not n then return {'stale', '0', lost} end
  return {'ok', int(n), lost}
end
local out = {}
for i = 1, #KEYS / 5 do
  local a = 4 + (i - 1) * 9
  bind(5 * i - 4, ARGV[a], ARGV[a + 1])
  local ok, r
  if ARGV[a + 2] == 'f' then
    ok, r = pcall(fetch, ARGV[a + 3], ARGV[a + 4], ARGV[a + 5], ARGV[a + 6], ARGV[a + 7], ARGV[a + 8])
  else
    ok, r = pcall(ack, ARGV[a + 7], ARGV[a + 8])
  end
  -- This operation alone fails (a key of the wrong type, say); the others go on.
  if not ok then r = {'err', failure(r)} end
  -- A payload HMGET found missing is false: `#` and the loop below still count it.
  table.insert(out, int(#r))
  for j = 1, #r do table.insert(out, r[j]) end
end
return out
"#;

/// ARGV[4..]: now. Returns {expired, lost}.
const EXPIRE: &str = r#"
bind(1, ARGV[1], ARGV[3])
local opened = open(false, ARGV[4])
if not opened then return {int(expired), lost} end
if opened == 'created' then keep() end
repair(ARGV[4])
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
            insert: Script::new("#!lua", run, INSERT),
            reads: Script::new("#!lua flags=allow-oom", run, READS),
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
