//! Private: key names, the Lua scripts and reply parsing shared by the queue and the
//! worker.
//!
//! Every multi-step change runs as one Lua script so that it is atomic on the server:
//! the gated XADD, the ack/retry/dead/release batch, the promotion of due retries, the
//! reclaim of idle entries, the lease renewal and the dead-letter requeue.

use std::sync::LazyLock;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Script, Value};

use crate::Error;

/// The longest time passed to Redis as a `BLOCK` timeout or an `XAUTOCLAIM` min-idle
/// time, in milliseconds: 2^62 ms, about 146 million years. Redis reads these as signed
/// 64-bit numbers of milliseconds (and adds the current time to a `BLOCK` timeout);
/// longer durations are clamped to this, the same in practice.
pub(crate) const MAX_REDIS_MS: u64 = 1 << 62;

/// `d` in whole milliseconds, clamped to [`MAX_REDIS_MS`].
pub(crate) fn redis_ms(d: Duration) -> u64 {
    d.as_millis().min(u128::from(MAX_REDIS_MS)) as u64
}

/// `now + d`, or, if that instant cannot be represented (`d` is about `Duration::MAX`),
/// an instant about 30 years on: later than anything this crate waits for.
pub(crate) fn deadline_after(now: tokio::time::Instant, d: Duration) -> tokio::time::Instant {
    now.checked_add(d)
        .unwrap_or_else(|| now + Duration::from_secs(30 * 365 * 86_400))
}

/// The consumer group every worker of a queue joins.
pub(crate) const GROUP: &str = "workers";

/// The Redis keys of one queue. They share the hash tag `{name}`, so one queue lives in
/// one cluster slot and the scripts may touch all of them.
#[derive(Clone, Debug)]
pub(crate) struct Keys {
    pub name: String,
    /// The work stream (consumer group [`GROUP`]).
    pub stream: String,
    /// Sorted set of retries waiting for their backoff to pass (score = due time, ms).
    pub delayed: String,
    /// The dead-letter stream.
    pub dead: String,
    /// Prefix of the result keys (`<prefix><job id>`).
    pub result_prefix: String,
    /// Counter of accepted submissions.
    pub submitted: String,
    /// Counter of acknowledged successful runs.
    pub completed: String,
}

impl Keys {
    pub(crate) fn new(name: &str) -> Result<Self, Error> {
        validate_name("queue name", name)?;
        let base = format!("nbq:{{{name}}}");
        Ok(Keys {
            name: name.to_owned(),
            stream: format!("{base}:jobs"),
            delayed: format!("{base}:delayed"),
            dead: format!("{base}:dead"),
            result_prefix: format!("{base}:result:"),
            submitted: format!("{base}:submitted"),
            completed: format!("{base}:completed"),
        })
    }
}

/// Queue and task names: 1..=200 bytes, no braces (they would break the hash tag), no
/// control characters or spaces.
pub(crate) fn validate_name(what: &str, name: &str) -> Result<(), Error> {
    if name.is_empty() {
        return Err(Error::InvalidName(format!("{what} is empty")));
    }
    if name.len() > 200 {
        return Err(Error::InvalidName(format!(
            "{what} is {} bytes long (at most 200)",
            name.len()
        )));
    }
    if let Some(c) = name
        .chars()
        .find(|c| *c == '{' || *c == '}' || c.is_control() || c.is_whitespace())
    {
        return Err(Error::InvalidName(format!(
            "{what} {name:?} contains {c:?} (braces, spaces and control characters are not allowed)"
        )));
    }
    Ok(())
}

/// Opens a multiplexed connection that reconnects by itself after a loss. The first
/// connection must succeed (so a bad URL or a server that is not there fails fast); later
/// losses are retried by the caller's loops.
pub(crate) async fn connect(
    url: &str,
    response_timeout: Duration,
) -> Result<(redis::Client, ConnectionManager), Error> {
    let client = redis::Client::open(url)?;
    let conn = manager(&client, response_timeout).await?;
    Ok((client, conn))
}

pub(crate) async fn manager(
    client: &redis::Client,
    response_timeout: Duration,
) -> Result<ConnectionManager, Error> {
    let cfg = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(3)))
        .set_response_timeout(Some(response_timeout))
        .set_number_of_retries(2)
        .set_min_delay(Duration::from_millis(50))
        .set_max_delay(Duration::from_secs(1));
    Ok(client.get_connection_manager_with_config(cfg).await?)
}

/// Redis's default `proto-max-bulk-len` (512 MB): the argument limit assumed when the
/// server's cannot be read (`CONFIG` disabled or not allowed).
pub(crate) const DEFAULT_MAX_ARG: u64 = 512 * 1024 * 1024;

/// The longest argument the server takes (`proto-max-bulk-len`), or [`DEFAULT_MAX_ARG`]
/// if it cannot be read. A longer one makes Redis close the connection, which is shared.
///
/// Cancel safety: it only reads.
pub(crate) async fn max_arg_len(conn: &mut ConnectionManager) -> u64 {
    config_get(conn, "proto-max-bulk-len")
        .await
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|n| *n > 0)
        .unwrap_or(DEFAULT_MAX_ARG)
}

/// The most bytes of records one acknowledgement call (FINISH) carries, whatever the
/// server: it bounds the memory one call takes on the server and the time it takes to
/// send. Only records over 16 KB on average fill it before the batch's count limit does.
pub(crate) const MAX_FINISH_BYTES: u64 = 4 * 1024 * 1024;

/// The byte budget of one acknowledgement call (and of one batch of submissions, see
/// `queue::submitter`): [`MAX_FINISH_BYTES`], or a quarter of
/// the server's client eviction limit (`maxmemory-clients`, in bytes or as a percentage
/// of `maxmemory`) if that is smaller. With that limit set, Redis closes the connection
/// of the client holding the most memory once all clients together hold more, and a
/// call's arguments count while Redis reads them. (`client-query-buffer-limit` does not
/// apply: parsed arguments leave the query buffer.) Read once; `CONFIG` refused means no
/// limit known.
///
/// Cancel safety: it only reads.
pub(crate) async fn finish_budget(conn: &mut ConnectionManager) -> u64 {
    let limit = match config_get(conn, "maxmemory-clients").await {
        Some(v) => match v.strip_suffix('%') {
            Some(pct) => match (pct.parse::<u64>(), config_get(conn, "maxmemory").await) {
                (Ok(pct), Some(max)) => max
                    .parse::<u64>()
                    .map_or(0, |max| max.saturating_mul(pct) / 100),
                _ => 0,
            },
            None => v.parse::<u64>().unwrap_or(0),
        },
        None => 0,
    };
    if limit == 0 {
        MAX_FINISH_BYTES
    } else {
        (limit / 4).clamp(1, MAX_FINISH_BYTES)
    }
}

/// One value of `CONFIG GET name`, or `None` if it cannot be read (`CONFIG` disabled or
/// not allowed, or no such parameter).
///
/// Cancel safety: it only reads.
async fn config_get(conn: &mut ConnectionManager, name: &str) -> Option<String> {
    let r: redis::RedisResult<Value> = redis::cmd("CONFIG")
        .arg("GET")
        .arg(name)
        .query_async(conn)
        .await;
    match &r {
        Ok(Value::Map(m)) => m.first().and_then(|(_, v)| string(v)),
        Ok(v) => array(v).get(1).and_then(string),
        Err(_) => None,
    }
}

/// `XGROUP CREATE <stream> workers 0 MKSTREAM`, tolerating an existing group. The group
/// starts at id 0 so that jobs submitted before the first worker are delivered.
pub(crate) async fn ensure_group(conn: &mut ConnectionManager, keys: &Keys) -> Result<(), Error> {
    let r: redis::RedisResult<Value> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&keys.stream)
        .arg(GROUP)
        .arg("0")
        .arg("MKSTREAM")
        .query_async(conn)
        .await;
    match r {
        Ok(_) => Ok(()),
        Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// KEYS: stream, delayed, submitted. ARGV: max_len (0 = none), then triples of task,
/// payload, result ttl (0 = no result). Adds the jobs in order while the queue holds fewer
/// than `max_len` unfinished jobs (waiting, in flight or delayed) and returns, per job,
/// its entry id or nil (full). The `submitted` count is best effort (`pcall`).
pub(crate) static SUBMIT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local max = tonumber(ARGV[1])
local len = 0
if max > 0 then
  len = redis.call('XLEN', KEYS[1]) + redis.call('ZCARD', KEYS[2])
end
local out = {}
local added = 0
local i = 2
while i + 2 <= #ARGV do
  if max > 0 and len >= max then
    out[#out + 1] = false
  else
    if ARGV[i + 2] ~= '0' then
      out[#out + 1] = redis.call('XADD', KEYS[1], '*', 't', ARGV[i], 'p', ARGV[i + 1], 'r', ARGV[i + 2])
    else
      out[#out + 1] = redis.call('XADD', KEYS[1], '*', 't', ARGV[i], 'p', ARGV[i + 1])
    end
    len = len + 1
    added = added + 1
  end
  i = i + 3
end
if added > 0 then
  -- Best effort, as FINISH's counts: a `submitted` key someone broke must not make a
  -- submit whose jobs were added report an error (a retry would add them again).
  redis.pcall('INCRBY', KEYS[3], added)
end
return out
"#,
    )
});

/// The longest result TTL, in seconds (`u32::MAX`, about 136 years): `SET ... EX` takes
/// it, and a retry record's JSON keeps it exactly (cjson writes 14 significant digits).
/// Submits with a longer TTL are refused; [`FINISH`] clamps the TTL of entries written by
/// others to it.
pub(crate) const MAX_RESULT_TTL_SECS: u64 = u32::MAX as u64;

/// Number of ARGV slots per record of [`FINISH`].
pub(crate) const FINISH_ARITY: usize = 8;

/// KEYS: stream, delayed, dead, completed. ARGV: group, result prefix, consumer, then
/// records of [`FINISH_ARITY`] fields: kind, entry id, job id, task, payload, attempt,
/// result ttl, extra. Kinds: `A` ack (extra = result json, stored if the ttl is not 0), `R`
/// retry (extra = delay ms), `D` dead (extra = reason), `X` clear (an entry deleted under
/// us). Returns how many successes were recorded.
///
/// A record is applied only if its entry is pending under `consumer`, the worker that
/// ran it (`XPENDING key group id id 1 consumer`); then its outcome is written (the
/// `completed` count and the result of A, the retry of R, the dead letter and error
/// result of D) and the entry is acknowledged and deleted. Any other record does nothing
/// at all: the entry is not this run's to finish.
/// - A re-sent batch (after a lost reply) records nothing twice: the entry is no longer
///   pending.
/// - A worker whose lease lapsed while another worker reclaimed its entry (`XAUTOCLAIM`
///   moves it to the reclaimer) records nothing, whether or not the reclaimer has
///   finished: the reclaimer owns the entry, and its own run records the outcome. So each
///   entry gets one outcome, from the run of the worker that holds it.
/// - Ids restart from the clock when the stream is lost (Redis restarted without
///   persistence, a `FLUSHALL`, a [`purge`](crate::RedisQueue::purge)), so a job
///   submitted then, in the same millisecond as one still running, gets that job's id.
///   The running job's late acknowledgement must neither delete the new job while it
///   waits (redis/RELIABILITY.md, finding 59) nor, once another worker has read it, record
///   its own outcome for it and delete it while it runs (finding 65): the new entry is
///   pending under the worker that read it, not under the one acknowledging. (If the
///   same worker read it, this check cannot tell the two apart: the worker does, and
///   sends no record for a run whose id a read entry took, whether the run was still
///   going or had ended with its record not yet sent (finding 67); a call already on
///   its way when the new entry is read is the one case left.)
///
/// An outcome is written before its entry is acknowledged (checked with `XPENDING`, in
/// the same script, so nothing comes between): a write that fails (the dead-letter or
/// delayed key overwritten with another type: `WRONGTYPE`) stops the script with the
/// entry still pending, so it is delivered again after the lease instead of being lost.
/// What the script did before such a failure is complete, counts included: a success
/// with a result is counted in `completed` with its own ack. Without the group (after
/// [`purge`](crate::RedisQueue::purge)), nothing is pending and nothing is recorded.
///
/// Plain acks (A without a result) have no outcome but the count: they are checked by the
/// same rule (with one `XPENDING` of the consumer's entries between their lowest and
/// highest id), and those pending under `consumer` are acknowledged and deleted together
/// (one `XACK` and one `XDEL`) and counted.
///
/// The script must not fail on one record: Redis runs it up to the error without rolling
/// back, and the plain acks come last, so a failure would leave every plain ack of the
/// batch unsent. The result TTL (the entry's `r` field, which anyone writing to the stream
/// controls) is therefore read as 0 unless it is a positive number, and clamped to
/// [`MAX_RESULT_TTL_SECS`]; the worker also re-sends a failed batch one record at a time.
///
/// The `completed` count is best effort: its `INCRBY`s go through `pcall`, so a counter
/// key that holds something other than an integer (overwritten by hand) is left as it
/// is and never stops an acknowledgement (it would make successful jobs run again and
/// end in the dead letters); those successes are then not counted.
pub(crate) static FINISH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        &r#"
local s, z, d = KEYS[1], KEYS[2], KEYS[3]
local g, rp, me = ARGV[1], ARGV[2], ARGV[3]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
-- Whether the entry is pending under this consumer: the run being acknowledged is the
-- one that holds it. (pcall: without the group, after a purge, nothing is pending.)
local function mine(sid)
  local p = redis.pcall('XPENDING', s, g, sid, sid, 1, me)
  return type(p) == 'table' and p.err == nil and #p == 1
end
local plain = {}
local queued = {}
local done = 0
local i = 4
while i + 7 <= #ARGV do
  local kind, sid, job, task, payload, att, rttl, extra =
    ARGV[i], ARGV[i+1], ARGV[i+2], ARGV[i+3], ARGV[i+4], ARGV[i+5], ARGV[i+6], ARGV[i+7]
  local ttl = tonumber(rttl) or 0
  -- Not NaN, not negative, a whole number EX accepts.
  if ttl ~= ttl or ttl < 1 then
    ttl = 0
  else
    ttl = math.floor(math.min(ttl, MAX_RESULT_TTL))
  end
  if kind == 'A' and ttl == 0 then
    -- Plain acks are checked and acknowledged together below (once each).
    if not queued[sid] then
      queued[sid] = true
      plain[#plain + 1] = sid
    end
  elseif mine(sid) then
    -- Not pending under this consumer: acknowledged already (a re-sent batch), taken
    -- over by another worker (our lease lapsed), or another entry with the same id:
    -- nothing to do. The outcome is written before the entry is acknowledged: if that
    -- write fails, the script stops here and the entry stays pending, to be delivered
    -- again.
    if kind == 'A' then
      redis.call('SET', rp .. job, '{"ok":' .. extra .. '}', 'EX', ttl)
      -- Counted with its ack, not at the end: a later record's failure stops the
      -- script, and the re-sent record would find this one acknowledged. pcall: a
      -- counter that cannot be incremented (not an integer) must not stop the script
      -- before the XACK (the job would run again and end dead-lettered).
      redis.pcall('INCRBY', KEYS[4], 1)
      done = done + 1
    elseif kind == 'R' then
      local m = cjson.encode({j = job, t = task, p = payload, a = tonumber(att), r = ttl})
      redis.call('ZADD', z, now + (tonumber(extra) or 0), m)
    elseif kind == 'D' then
      redis.call('XADD', d, '*', 'j', job, 't', task, 'p', payload, 'a', att, 'r', ttl,
        'reason', extra, 'at', now)
      if ttl > 0 then
        redis.call('SET', rp .. job, cjson.encode({err = extra}), 'EX', ttl)
      end
    end
    redis.call('XACK', s, g, sid)
    redis.call('XDEL', s, sid)
  end
  i = i + 8
end
-- The plain acks pending under this consumer: one XPENDING of the consumer's entries
-- between the lowest and the highest id (the consumer holds about its concurrency),
-- instead of one per id; if that page is full, the ids not on it are asked one by one.
local acks = {}
if #plain > 0 then
  -- The range is in whole milliseconds (XPENDING reads `<ms>` as `<ms>-0` at the start
  -- and as the last id of that millisecond at the end), compared as decimal strings
  -- (shorter is smaller; Redis writes no leading zeros), not as Lua numbers (doubles).
  local function ms(sid)
    local dash = string.find(sid, '-', 1, true)
    if dash then return string.sub(sid, 1, dash - 1) end
    return sid
  end
  local function less(a, b)
    return #a < #b or (#a == #b and a < b)
  end
  local lo = ms(plain[1])
  local hi = lo
  for k = 2, #plain do
    local m = ms(plain[k])
    if less(m, lo) then lo = m end
    if less(hi, m) then hi = m end
  end
  local p = redis.pcall('XPENDING', s, g, lo, hi, PLAIN_PAGE, me)
  if type(p) == 'table' and p.err == nil then
    local held = {}
    for _, e in ipairs(p) do held[e[1]] = true end
    for _, sid in ipairs(plain) do
      if held[sid] or (#p >= PLAIN_PAGE and mine(sid)) then
        acks[#acks + 1] = sid
      end
    end
  end
end
if #acks > 0 then
  -- Every one was pending under this consumer when checked, and nothing runs between
  -- (a record above with the same id may have acknowledged it since: XACK's count says).
  local n = redis.call('XACK', s, g, unpack(acks))
  redis.call('XDEL', s, unpack(acks))
  if n > 0 then
    -- pcall: as above, a broken counter is not worth an error (the acks are sent).
    redis.pcall('INCRBY', KEYS[4], n)
  end
  done = done + n
end
return done
"#
        .replace("MAX_RESULT_TTL", &MAX_RESULT_TTL_SECS.to_string())
        .replace("PLAIN_PAGE", &FINISH_PLAIN_PAGE.to_string()),
    )
});

/// Most entries the one `XPENDING` of [`FINISH`]'s plain acks lists (the consumer's
/// entries between the lowest and highest id acknowledged); past that, the ids not
/// listed are checked one by one.
const FINISH_PLAIN_PAGE: usize = 4096;

/// KEYS: stream, delayed, dead. ARGV: max count. Moves due retries back into the stream,
/// up to that many; returns how many it moved.
///
/// A delayed entry that cannot be decoded (written by someone else) goes to the dead
/// letters. If that write fails (the dead-letter key overwritten with another type:
/// `WRONGTYPE`), the entry stays in the delayed set, due again in
/// [`PROMOTE_RETRY_MS`] ms, and the other due retries are still promoted: the script
/// reads on past the entries it kept (they are no longer due), examining at most
/// [`PROMOTE_EXAMINE_FACTOR`] times the max count in one call, so that many such entries
/// cannot fill every call's window. It then returns the error (after its writes: Redis
/// does not roll them back), so that the worker reports it.
pub(crate) static PROMOTE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        &r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local limit = tonumber(ARGV[1])
local cap = limit * EXAMINE_FACTOR
local moved, kept, examined, err = 0, 0, 0, nil
-- Every entry read is either removed or moved past `now`, so each read finds new ones.
while moved < limit and examined < cap do
local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0,
  math.min(limit - moved, cap - examined))
if #due == 0 then break end
for _, m in ipairs(due) do
  examined = examined + 1
  local ok, e = pcall(cjson.decode, m)
  if ok and type(e) == 'table' and type(e.t) == 'string' and type(e.p) == 'string' then
    redis.call('XADD', KEYS[1], '*', 't', e.t, 'p', e.p, 'j', tostring(e.j or ''),
      'a', tostring(e.a or 0), 'r', tostring(e.r or 0))
    redis.call('ZREM', KEYS[2], m)
    moved = moved + 1
  else
    -- pcall: a dead letter Redis refuses must not stop the retries due after this entry.
    local r = redis.pcall('XADD', KEYS[3], '*', 'j', '', 't', '', 'p', m, 'a', '0', 'r', '0',
      'reason', 'undecodable delayed entry', 'at', now)
    if type(r) == 'table' and r.err then
      -- Kept (not lost), out of the way of the due retries, tried again later.
      redis.call('ZADD', KEYS[2], 'XX', now + RETRY_MS, m)
      kept = kept + 1
      err = r.err
    else
      redis.call('ZREM', KEYS[2], m)
    end
  end
end
end
if err then
  return redis.error_reply(err .. ' (dead-lettering ' .. kept .. ' undecodable delayed ' ..
    'entries: kept in the delayed set, tried again in RETRY_MS ms; ' .. moved ..
    ' due retries promoted)')
end
return moved
"#
        .replace("RETRY_MS", &PROMOTE_RETRY_MS.to_string())
        .replace("EXAMINE_FACTOR", &PROMOTE_EXAMINE_FACTOR.to_string()),
    )
});

/// How long [`PROMOTE`] leaves an undecodable delayed entry it could not dead-letter
/// before it tries again, in milliseconds.
pub(crate) const PROMOTE_RETRY_MS: u64 = 1000;

/// How many delayed entries [`PROMOTE`] examines at most in one call, as a multiple of
/// the retries it may move (500 a call, every 250 ms: up to 20,000 entries a second).
pub(crate) const PROMOTE_EXAMINE_FACTOR: u64 = 10;

/// KEYS: stream. ARGV: group, consumer, min idle ms, cursor, count. XAUTOCLAIMs idle
/// entries and returns `{next cursor, entries, delivery counts}`.
pub(crate) static RECLAIM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local r = redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4], 'COUNT', ARGV[5])
local counts = {}
for i, e in ipairs(r[2]) do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], e[1], e[1], 1)
  if p[1] then counts[i] = p[1][4] else counts[i] = 1 end
end
return {r[1], r[2], counts}
"#,
    )
});

/// KEYS: stream. ARGV: group, consumer, ids... Resets the idle time of the ids still
/// pending under this consumer (XCLAIM JUSTID does not bump the delivery count). Returns
/// how many were renewed (0 without the group, after a purge).
pub(crate) static RENEW: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local n = 0
for i = 3, #ARGV do
  -- pcall: without the group (after a purge) nothing is pending, nothing to renew.
  local p = redis.pcall('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if type(p) == 'table' and p.err == nil and p[1] and p[1][2] == ARGV[2] then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
    n = n + 1
  end
end
return n
"#,
    )
});

/// KEYS: stream. ARGV: group, consumer, then pairs of id and delivery count. Undoes the
/// delivery that [`RECLAIM`] counted for entries the worker was still running (its
/// renewals had failed for longer than the lease, and its own reclaim took them): each
/// entry still pending under `consumer` with that count gets it back less one
/// (`XCLAIM ... RETRYCOUNT n JUSTID`, which also renews it). Returns how many were fixed.
pub(crate) static UNCOUNT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local n = 0
for i = 3, #ARGV - 1, 2 do
  local p = redis.pcall('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1, ARGV[2])
  local c = tonumber(ARGV[i + 1])
  if type(p) == 'table' and p.err == nil and #p == 1 and p[1][4] == c and c > 1 then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'RETRYCOUNT', c - 1, 'JUSTID')
    n = n + 1
  end
end
return n
"#,
    )
});

/// KEYS: stream. ARGV: group, consumer, ids... Returns, per id, 1 if the entry is
/// pending under `consumer`, else 0 (also without the group, after a purge). Changes
/// nothing. Used by the lease keeper (entries whose record was given up) and by the
/// acker before it sends a record again after a lost call (finding 70).
pub(crate) static OWNED: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local out = {}
for i = 3, #ARGV do
  local p = redis.pcall('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1, ARGV[2])
  if type(p) == 'table' and p.err == nil and #p == 1 then
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
return out
"#,
    )
});

/// KEYS: stream. ARGV: group, own consumer name, min idle ms. Deletes consumers of the
/// group that hold nothing and were idle that long (workers that died). Consumers with
/// pending entries are never deleted: that would make their entries unclaimable.
/// Without the stream or the group (after a purge) it removes nothing and returns 0.
pub(crate) static JANITOR: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
-- pcall: without the stream ("no such key") or the group (NOGROUP), after a purge,
-- there is nobody to remove.
local cs = redis.pcall('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])
if type(cs) ~= 'table' or cs.err then return 0 end
local n = 0
for _, c in ipairs(cs) do
  local h = {}
  for i = 1, #c, 2 do h[c[i]] = c[i + 1] end
  if h['name'] ~= ARGV[2] and h['pending'] == 0 and h['idle'] > tonumber(ARGV[3]) then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], h['name'])
    n = n + 1
  end
end
return n
"#,
    )
});

/// KEYS: dead, stream. ARGV: dead-letter id (a full stream id, `<ms>-<seq>`), result
/// prefix. Moves one dead letter back to the work stream with a fresh attempt count, and
/// deletes the job's stored result (the failure recorded when it was dead-lettered), so
/// that `wait_result` waits for the new run. Returns the new entry id, or nil if there is
/// no such dead letter.
///
/// The entry deleted is the one `XRANGE` returned (its id as Redis wrote it), not the
/// argument as given.
pub(crate) static REQUEUE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local e = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])
if #e == 0 then return false end
local f = e[1][2]
local h = {}
for i = 1, #f, 2 do h[f[i]] = f[i + 1] end
local id = redis.call('XADD', KEYS[2], '*', 't', h['t'] or '', 'p', h['p'] or '',
  'j', h['j'] or '', 'a', '0', 'r', h['r'] or '0')
if h['j'] and h['j'] ~= '' then
  redis.call('DEL', ARGV[2] .. h['j'])
end
redis.call('XDEL', KEYS[1], e[1][1])
return id
"#,
    )
});

/// KEYS: stream. ARGV: group, consumer. Deletes the consumer from the group only if
/// nothing is pending under it: deleting a consumer drops its pending entries, which
/// then nobody can reclaim. Returns how many entries are pending under it (0: deleted,
/// or not there; also 0 without the group).
pub(crate) static LEAVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local cs = redis.pcall('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])
if type(cs) ~= 'table' or cs.err then return 0 end
for _, c in ipairs(cs) do
  local h = {}
  for i = 1, #c, 2 do h[c[i]] = c[i + 1] end
  if h['name'] == ARGV[2] then
    if h['pending'] > 0 then return h['pending'] end
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
    return 0
  end
end
return 0
"#,
    )
});

// ---- reply parsing -------------------------------------------------------------------

/// One stream entry as Redis returned it, fields kept as raw bytes so that a malformed
/// entry can be dead-lettered rather than fail the whole read.
#[derive(Debug)]
pub(crate) struct RawEntry {
    pub id: String,
    pub fields: Vec<(Vec<u8>, Vec<u8>)>,
}

impl RawEntry {
    pub(crate) fn field(&self, name: &str) -> Option<&[u8]> {
        self.fields
            .iter()
            .find(|(k, _)| k == name.as_bytes())
            .map(|(_, v)| v.as_slice())
    }
}

pub(crate) fn bytes(v: &Value) -> Option<Vec<u8>> {
    match v {
        Value::BulkString(b) => Some(b.clone()),
        Value::SimpleString(s) => Some(s.as_bytes().to_vec()),
        Value::Int(i) => Some(i.to_string().into_bytes()),
        Value::Okay => Some(b"OK".to_vec()),
        _ => None,
    }
}

pub(crate) fn string(v: &Value) -> Option<String> {
    bytes(v).and_then(|b| String::from_utf8(b).ok())
}

pub(crate) fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        other => string(other).and_then(|s| s.parse().ok()),
    }
}

pub(crate) fn array(v: &Value) -> &[Value] {
    match v {
        Value::Array(a) | Value::Set(a) => a,
        _ => &[],
    }
}

fn into_bytes(v: Value) -> Option<Vec<u8>> {
    match v {
        Value::BulkString(b) => Some(b),
        other => bytes(&other),
    }
}

fn into_array(v: Value) -> Vec<Value> {
    match v {
        Value::Array(a) | Value::Set(a) => a,
        _ => Vec::new(),
    }
}

/// Parses `[[id, [f, v, ...]], ...]`, taking the bytes out of the reply instead of copying
/// them. Entries whose field list is missing (deleted) get no fields.
pub(crate) fn parse_entries(v: Value) -> Vec<RawEntry> {
    into_array(v)
        .into_iter()
        .filter_map(|e| {
            let mut parts = into_array(e).into_iter();
            let id = String::from_utf8(into_bytes(parts.next()?)?).ok()?;
            let mut flat = parts.next().map(into_array).unwrap_or_default().into_iter();
            let mut fields = Vec::with_capacity(flat.len() / 2);
            while let (Some(k), Some(v)) = (flat.next(), flat.next()) {
                if let Some(k) = into_bytes(k) {
                    fields.push((k, into_bytes(v).unwrap_or_default()));
                }
            }
            Some(RawEntry { id, fields })
        })
        .collect()
}

/// Parses an XREADGROUP reply for one stream (RESP2 array or RESP3 map form).
pub(crate) fn parse_read_reply(v: Value) -> Vec<RawEntry> {
    match v {
        Value::Nil => Vec::new(),
        Value::Map(m) => m.into_iter().flat_map(|(_, e)| parse_entries(e)).collect(),
        other => into_array(other)
            .into_iter()
            .flat_map(|s| {
                into_array(s)
                    .into_iter()
                    .nth(1)
                    .map(parse_entries)
                    .unwrap_or_default()
            })
            .collect(),
    }
}

/// KEYS: stream. ARGV: group, consumer, mode (`deadline` or `leftover`), ids... Puts
/// each entry still pending under `consumer` back at the end of the stream as a copy
/// (same job id) and acks and deletes the original, so other workers get it at once
/// instead of after the lease. Returns how many were released.
///
/// An entry that is not pending under `consumer` (any more) is left alone: its lease
/// lapsed and another worker reclaimed it (and may be running it: taking it away would
/// make that run record nothing), or it was acknowledged already. Without the group
/// (after a purge) nothing is pending, and nothing is released.
///
/// The copy carries the runs so far. `deadline` (handlers aborted at a shutdown
/// deadline): its attempt count (`a`) grows by the deliveries of the released entry (from
/// `XPENDING`), so the next run's `attempt()` counts the runs that were cut off and
/// `max_deliveries` holds across releases; and it is marked interrupted (`i` = 1), so the
/// next run's `is_redelivery()` is true. `leftover` (entries pending under the consumer
/// that its handlers never saw, e.g. delivered by a read whose reply was lost): the last
/// delivery did not run, so `a` grows by the deliveries before it only, and the copy is
/// marked interrupted only if there were such deliveries (or the entry was marked
/// already). An attempt count that is not a whole number below 2^53 (written by someone
/// else; Lua numbers are doubles) is copied as it is; one written with a leading `+`
/// (which the worker reads as the number) is added to like any other.
pub(crate) static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local n = 0
local deadline = ARGV[3] == 'deadline'
for i = 4, #ARGV do
  local p = redis.pcall('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1, ARGV[2])
  if type(p) == 'table' and p.err == nil and #p == 1 then
    local d = tonumber(p[1][4]) or 1
    local e = redis.call('XRANGE', KEYS[1], ARGV[i], ARGV[i])
    if #e > 0 then
      local f = e[1][2]
      local args = {'XADD', KEYS[1], '*'}
      local job, att, marked = nil, nil, false
      for j = 1, #f, 2 do
        local k, v = f[j], f[j + 1]
        if k == 'j' then
          if v ~= '' then job = v end
        elseif k == 'a' then
          att = v
        elseif k == 'i' then
          marked = v == '1'
        else
          args[#args + 1] = k
          args[#args + 1] = v
        end
      end
      -- Runs of this entry: every delivery at a deadline; at a leftover release, the
      -- deliveries before the last one (which never ran).
      local runs = d
      if not deadline then runs = math.max(d - 1, 0) end
      local a = 0
      if att ~= nil then a = tonumber(att) end
      -- A leading '+' is allowed: the worker reads the count as Rust's u64 parser does.
      if att ~= nil and (a == nil or not string.match(att, '^%+?%d+$') or a + runs >= 2^53) then
        -- Not a count we can add to exactly: keep it as written.
        args[#args + 1] = 'a'
        args[#args + 1] = att
      else
        args[#args + 1] = 'a'
        args[#args + 1] = string.format('%.0f', a + runs)
      end
      args[#args + 1] = 'j'
      args[#args + 1] = job or ARGV[i]
      if marked or runs > 0 then
        args[#args + 1] = 'i'
        args[#args + 1] = '1'
      end
      redis.call(unpack(args))
      n = n + 1
    end
    redis.call('XACK', KEYS[1], ARGV[1], ARGV[i])
    redis.call('XDEL', KEYS[1], ARGV[i])
  end
end
return n
"#,
    )
});
