//! The shared ledger: counters in one Redis (or Valkey) primary, so every `tollgate-proxy`
//! replica admits against the same truth.
//!
//! # Operations
//!
//! Each [`Ledger`] operation is one Lua script run with `EVALSHA` (one round trip; after a
//! `SCRIPT FLUSH` or a Redis restart the `NOSCRIPT` answer makes the client `SCRIPT LOAD` the
//! script and retry, transparently). A script runs atomically, so the check of every counter
//! and the charge of all of them cannot interleave with another replica's admission:
//!
//! * **admit** checks every budget (settled spend + unexpired reservations + estimate <=
//!   limit), every request counter (count + 1 <= limit), token counter (used < limit) and
//!   concurrency set (live slots + 1 <= limit); only if all pass does it reserve the estimate
//!   on every budget, count the request and its estimated tokens, and take the slots.
//! * **settle** drops the reservation, adds the actual cost to every budget and returns the
//!   spend after, corrects token counters (minus what the admission added, plus the actual
//!   tokens) and frees the concurrency slots. It first looks up the request id's settlement
//!   marker: a settlement already applied (a retry after a lost reply, an outbox replay)
//!   returns the recorded answer and changes nothing; otherwise the marker is written in the
//!   same script, so applying and remembering cannot be separated.
//! * **budget states** reads spend and unexpired reservations without writing.
//!
//! The clock inside the scripts is the caller's (`Admission::now_ms`), never Redis `TIME`:
//! replicas decide with the time they were given, and tests control it.
//!
//! # Keys
//!
//! With the configurable prefix `P` (default [`DEFAULT_PREFIX`]):
//!
//! | key | type | content | expires |
//! | --- | --- | --- | --- |
//! | `P{budget counter}` | hash | `s` settled spend, `r` sum of outstanding reservations, `x` window expiry and `l` latest lease end (unix ms), `q:{request id}` reserved amount | at max(`x`, `l`) |
//! | `P{budget counter}:leases` | sorted set | request id scored by its lease end (unix ms) | with the hash |
//! | `P{requests or tokens counter}` | hash | `v` count, `e` window end (unix ms), `t:{request id}` tokens added at admission | window end + 60 s |
//! | `P{concurrency counter}` | sorted set | request id scored by its lease end | after the longest lease |
//! | `Psettled:{request id}` | string | the settlement's answer, the spend after per budget, comma-separated | [`super::SETTLEMENT_ID_TTL_MS`] after the settlement |
//!
//! Lapsed reservations (lease end <= now) are pruned by the next admission on that budget and
//! subtracted from `r`, so a replica that died mid-request holds nothing past its lease, and
//! the cost of an admission does not grow with the number of requests in flight
//! (O(log n) per counter). Expiries are set relative to the caller's clock (`PEXPIRE`
//! `deadline - now_ms`, the deadline only ever growing), so a skew between the replicas'
//! and Redis's clocks cannot make a live counter vanish early.
//!
//! Deviation from the embedded ledger, by design: the token correction at settlement
//! subtracts what the admission added to *that* counter (`t:{request id}`), where the
//! embedded ledger subtracts the first token counter's amount from all of them; the two
//! agree whenever an admission's token counters carry the same amount, as they do.
//!
//! # Deployment notes
//!
//! * **Single primary only.** The admission script touches keys of several budgets and rate
//!   limits at once; Redis Cluster requires all keys of one script in one hash slot, which
//!   these keys are not. This implementation targets one Redis/Valkey primary (optionally
//!   with replicas and Sentinel-style failover in front of the URL), not Cluster.
//! * Run Redis with `maxmemory-policy noeviction` (or without `maxmemory`): evicting one key
//!   of a budget's pair would lose reservations early.
//! * Amounts are exact up to 2^53 (Lua numbers are doubles): 9 billion USD in micro-USD.
//! * A Redis script is atomic but not transactional: if a command inside it fails (a key of
//!   the wrong type, an out-of-memory refusal), writes done before the failure stay. The
//!   check phase only prunes lapsed reservations, so a failure there charges nothing.
//!
//! # Failures
//!
//! [`RedisLedger::connect`] returns at once, even when Redis is down: the connection is made
//! on first use and re-made automatically after a failure. Every operation is bounded by
//! [`RedisLedgerOptions::op_timeout`]; a timeout, a refused connection or a server error
//! becomes [`LedgerError::Unavailable`] naming the operation and the endpoint, whose
//! credentials are redacted. What to do then (fail closed with 503, or fail open with local
//! limits) is the caller's policy.

use std::fmt;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{FromRedisValue, Script, ScriptInvocation};

use super::{
    Admission, BudgetState, Ledger, LedgerError, LedgerFuture, RateKind, Refusal, SETTLEMENT_ID_TTL_MS,
    Settlement,
};

/// The key prefix used when none is configured.
pub const DEFAULT_PREFIX: &str = "tollgate:";

/// How long a requests or tokens counter outlives its window (as in the embedded ledger), so
/// a settlement arriving shortly after the window ends still corrects it.
const RATE_MARGIN_MS: i64 = 60_000;

/// `retry_after_ms` of a concurrency refusal (as in the embedded ledger).
const CONCURRENCY_RETRY_MS: i64 = 1_000;

/// Tuning of the Redis connection.
#[derive(Debug, Clone)]
pub struct RedisLedgerOptions {
    /// The longest one ledger operation may take, connecting included; past it the
    /// operation fails with [`LedgerError::Unavailable`]. Default 500 ms.
    pub op_timeout: Duration,
    /// The longest one TCP connect (and handshake) attempt may take. Default 500 ms.
    pub connect_timeout: Duration,
    /// Extra connection attempts (jittered exponential backoff from 50 ms, at most 1 s
    /// apart) before a connection round fails. Default 0: a refused connection fails the
    /// waiting operations at once (a fail-closed gateway answers 503 in a millisecond, not
    /// after the timeout) and the next operation starts a new round, so recovery is as soon
    /// as Redis is back.
    pub reconnect_retries: usize,
}

impl Default for RedisLedgerOptions {
    fn default() -> Self {
        Self {
            op_timeout: Duration::from_millis(500),
            connect_timeout: Duration::from_millis(500),
            reconnect_retries: 0,
        }
    }
}

/// Why a Redis operation failed; becomes [`LedgerError::Unavailable`] with this message.
#[derive(Debug, thiserror::Error)]
enum RedisLedgerError {
    #[error("invalid Redis URL {url}: {source}")]
    BadUrl {
        url: String,
        #[source]
        source: redis::RedisError,
    },
    #[error("Redis ledger for {url}: no Tokio runtime (connect must be called inside one)")]
    NoRuntime { url: String },
    #[error("Redis ledger for {url}: setting up the connection: {source}")]
    Setup {
        url: String,
        #[source]
        source: redis::RedisError,
    },
    #[error("redis {op} on {url}: no answer within {timeout:?}")]
    Timeout {
        op: &'static str,
        url: String,
        timeout: Duration,
    },
    #[error("redis {op} on {url}: {source}")]
    Command {
        op: &'static str,
        url: String,
        #[source]
        source: redis::RedisError,
    },
    #[error("redis {op} on {url}: unexpected script reply {reply:?}")]
    BadReply {
        op: &'static str,
        url: String,
        reply: Vec<i64>,
    },
}

/// The shared ledger in Redis. Cheap to share behind an `Arc`; all replicas pointing at the
/// same Redis and prefix see the same counters. See the [module docs](self) for the keys,
/// the scripts and the single-primary requirement (no Redis Cluster).
pub struct RedisLedger {
    conn: ConnectionManager,
    prefix: String,
    opts: RedisLedgerOptions,
    /// The URL with its credentials redacted, for messages.
    endpoint: String,
    /// The URL's password, scrubbed from any message that would echo it.
    secret: Option<String>,
    admit: Script,
    settle: Script,
    states: Script,
}

impl fmt::Debug for RedisLedger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisLedger")
            .field("endpoint", &self.endpoint)
            .field("prefix", &self.prefix)
            .field("opts", &self.opts)
            .finish_non_exhaustive()
    }
}

impl RedisLedger {
    /// A ledger on the Redis at `url` (`redis://[user:password@]host[:port][/db]`) with keys
    /// under `prefix` (e.g. [`DEFAULT_PREFIX`]), with [`RedisLedgerOptions::default`].
    ///
    /// Returns at once without contacting Redis (it may be down; the first operation
    /// connects). Fails only on a malformed URL or outside a Tokio runtime.
    pub fn connect(url: &str, prefix: &str) -> Result<Self, LedgerError> {
        Self::connect_with(url, prefix, RedisLedgerOptions::default())
    }

    /// Like [`RedisLedger::connect`] with explicit options.
    pub fn connect_with(url: &str, prefix: &str, opts: RedisLedgerOptions) -> Result<Self, LedgerError> {
        let endpoint = redact_url(url);
        let secret = url_password(url);
        let scrub = |e: RedisLedgerError| scrubbed(e, secret.as_deref());
        let client = redis::Client::open(url).map_err(|source| {
            scrub(RedisLedgerError::BadUrl {
                url: endpoint.clone(),
                source,
            })
        })?;
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(scrub(RedisLedgerError::NoRuntime { url: endpoint }));
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(opts.connect_timeout))
            .set_response_timeout(Some(opts.op_timeout))
            .set_number_of_retries(opts.reconnect_retries)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_secs(1));
        let conn = ConnectionManager::new_lazy_with_config(client, config).map_err(|source| {
            scrub(RedisLedgerError::Setup {
                url: endpoint.clone(),
                source,
            })
        })?;
        Ok(Self {
            conn,
            prefix: prefix.to_owned(),
            opts,
            endpoint,
            secret,
            admit: Script::new(&format!(
                "{LUA_PRELUDE}local RATE_MARGIN = {RATE_MARGIN_MS}\n{ADMIT_BODY}"
            )),
            settle: Script::new(&format!("{LUA_PRELUDE}{SETTLE_BODY}")),
            states: Script::new(STATES_BODY),
        })
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The Redis URL with its credentials redacted (for logs).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The Redis key holding budget counter `counter` (a hash; see the module docs).
    pub fn budget_key(&self, counter: &str) -> String {
        format!("{}{counter}", self.prefix)
    }

    /// The Redis key holding the reservation leases of budget counter `counter`.
    pub fn leases_key(&self, counter: &str) -> String {
        format!("{}{counter}:leases", self.prefix)
    }

    /// The Redis key holding rate counter `counter`.
    pub fn rate_key(&self, counter: &str) -> String {
        format!("{}{counter}", self.prefix)
    }

    /// The Redis key marking request `request_id`'s settlement as applied.
    pub fn settled_key(&self, request_id: &str) -> String {
        format!("{}settled:{request_id}", self.prefix)
    }

    /// Round-trips a `PING` within the operation timeout (readiness checks).
    pub async fn ping(&self) -> Result<(), LedgerError> {
        let mut conn = self.conn.clone();
        let ping = redis::cmd("PING");
        match tokio::time::timeout(self.opts.op_timeout, ping.query_async::<String>(&mut conn)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(source)) => Err(self.fail(RedisLedgerError::Command {
                op: "ping",
                url: self.endpoint.clone(),
                source,
            })),
            Err(_) => Err(self.timeout("ping")),
        }
    }

    fn fail(&self, e: RedisLedgerError) -> LedgerError {
        scrubbed(e, self.secret.as_deref())
    }

    fn timeout(&self, op: &'static str) -> LedgerError {
        self.fail(RedisLedgerError::Timeout {
            op,
            url: self.endpoint.clone(),
            timeout: self.opts.op_timeout,
        })
    }

    fn bad_reply(&self, op: &'static str, reply: Vec<i64>) -> LedgerError {
        self.fail(RedisLedgerError::BadReply {
            op,
            url: self.endpoint.clone(),
            reply,
        })
    }

    /// Runs a script invocation within the operation timeout.
    async fn run<T: FromRedisValue>(
        &self,
        op: &'static str,
        inv: &ScriptInvocation<'_>,
    ) -> Result<T, LedgerError> {
        let mut conn = self.conn.clone();
        match tokio::time::timeout(self.opts.op_timeout, inv.invoke_async::<T>(&mut conn)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(source)) => Err(self.fail(RedisLedgerError::Command {
                op,
                url: self.endpoint.clone(),
                source,
            })),
            Err(_) => Err(self.timeout(op)),
        }
    }

    /// KEYS: per budget its hash and leases set, then per rate its counter. Shared by admit
    /// and settle.
    fn keys_of(&self, a: &Admission, inv: &mut ScriptInvocation<'_>) {
        for b in &a.budgets {
            inv.key(self.budget_key(&b.counter))
                .key(self.leases_key(&b.counter));
        }
        for r in &a.rates {
            inv.key(self.rate_key(&r.counter));
        }
    }

    async fn admit_once(&self, a: &Admission) -> Result<Result<(), Refusal>, LedgerError> {
        let mut inv = self.admit.prepare_invoke();
        self.keys_of(a, &mut inv);
        inv.arg(&a.request_id)
            .arg(a.estimate_micro_usd)
            .arg(a.now_ms)
            .arg(a.lease_ms)
            .arg(a.budgets.len())
            .arg(a.rates.len());
        for b in &a.budgets {
            inv.arg(b.limit_micro_usd).arg(b.expires_at_ms);
        }
        for r in &a.rates {
            inv.arg(kind_code(r.kind))
                .arg(r.limit)
                .arg(r.amount)
                .arg(r.window_end_ms);
        }
        let reply: Vec<i64> = self.run("admit", &inv).await?;
        match reply.as_slice() {
            [0] => Ok(Ok(())),
            &[1, index, spent, reserved] if (0..a.budgets.len() as i64).contains(&index) => {
                Ok(Err(Refusal::Budget {
                    index: index as usize,
                    spent: spent.max(0) as u64,
                    reserved: reserved.max(0) as u64,
                }))
            }
            &[2, index] if (0..a.rates.len() as i64).contains(&index) => {
                let r = &a.rates[index as usize];
                let retry_after_ms = match r.kind {
                    RateKind::Concurrent => CONCURRENCY_RETRY_MS,
                    RateKind::Requests | RateKind::Tokens => (r.window_end_ms - a.now_ms).max(1),
                };
                Ok(Err(Refusal::Rate {
                    index: index as usize,
                    retry_after_ms,
                }))
            }
            _ => Err(self.bad_reply("admit", reply)),
        }
    }

    async fn settle_once(&self, a: &Admission, s: Settlement) -> Result<Vec<u64>, LedgerError> {
        let mut inv = self.settle.prepare_invoke();
        self.keys_of(a, &mut inv);
        inv.key(self.settled_key(&a.request_id));
        inv.arg(&a.request_id)
            .arg(s.actual_micro_usd)
            .arg(s.actual_tokens)
            .arg(a.now_ms)
            .arg(a.budgets.len())
            .arg(a.rates.len())
            .arg(SETTLEMENT_ID_TTL_MS);
        for b in &a.budgets {
            inv.arg(b.expires_at_ms);
        }
        for r in &a.rates {
            inv.arg(kind_code(r.kind));
        }
        let reply: Vec<i64> = self.run("settle", &inv).await?;
        if reply.len() != a.budgets.len() {
            return Err(self.bad_reply("settle", reply));
        }
        Ok(reply.into_iter().map(|v| v.max(0) as u64).collect())
    }

    async fn states_once(&self, counters: &[String], now_ms: i64) -> Result<Vec<BudgetState>, LedgerError> {
        if counters.is_empty() {
            return Ok(Vec::new());
        }
        let mut inv = self.states.prepare_invoke();
        for c in counters {
            inv.key(self.budget_key(c)).key(self.leases_key(c));
        }
        inv.arg(now_ms);
        let reply: Vec<i64> = self.run("budget_states", &inv).await?;
        if reply.len() != 2 * counters.len() {
            return Err(self.bad_reply("budget_states", reply));
        }
        Ok(reply
            .chunks_exact(2)
            .map(|p| BudgetState {
                spent: p[0].max(0) as u64,
                reserved: p[1].max(0) as u64,
            })
            .collect())
    }
}

impl Ledger for RedisLedger {
    fn admit<'a>(&'a self, a: &'a Admission) -> LedgerFuture<'a, Result<(), Refusal>> {
        Box::pin(self.admit_once(a))
    }

    fn settle<'a>(&'a self, a: &'a Admission, s: Settlement) -> LedgerFuture<'a, Vec<u64>> {
        Box::pin(self.settle_once(a, s))
    }

    fn budget_states<'a>(
        &'a self,
        counters: &'a [String],
        now_ms: i64,
    ) -> LedgerFuture<'a, Vec<BudgetState>> {
        Box::pin(self.states_once(counters, now_ms))
    }

    fn kind(&self) -> &'static str {
        "redis"
    }
}

fn kind_code(k: RateKind) -> &'static str {
    match k {
        RateKind::Requests => "q",
        RateKind::Tokens => "t",
        RateKind::Concurrent => "c",
    }
}

/// The message of `e`, with `secret` (the URL's password) replaced should the driver ever
/// echo it.
fn scrubbed(e: RedisLedgerError, secret: Option<&str>) -> LedgerError {
    let mut msg = e.to_string();
    if let Some(s) = secret.filter(|s| !s.is_empty()) {
        msg = msg.replace(s, "***");
    }
    LedgerError::Unavailable(msg)
}

/// `url` with its userinfo replaced by `***` and any query string (which may carry a
/// password for Unix-socket URLs) dropped: `redis://***@host:6379/0`.
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((s, r)) => (s, r),
        None => return "<redis url>".to_owned(),
    };
    let rest = rest.split(['?', '#']).next().unwrap_or_default();
    let auth_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(auth_end);
    match authority.rfind('@') {
        Some(at) => format!("{scheme}://***@{}{path}", &authority[at + 1..]),
        None => format!("{scheme}://{authority}{path}"),
    }
}

/// The password in `url`'s userinfo or `pass`/`password` query parameter, percent-decoded
/// when possible, to scrub from messages.
fn url_password(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let (before_query, query) = rest.split_once('?').unwrap_or((rest, ""));
    let authority = before_query.split('/').next().unwrap_or_default();
    let from_userinfo = authority
        .rfind('@')
        .and_then(|at| authority[..at].split_once(':').map(|(_, p)| p.to_owned()));
    let from_query = query.split('&').find_map(|kv| match kv.split_once('=') {
        Some(("pass" | "password", v)) => Some(v.to_owned()),
        _ => None,
    });
    from_userinfo
        .or(from_query)
        .filter(|p| !p.is_empty())
        .map(|p| percent_decode(&p))
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(v) = u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz"), 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Shared Lua helpers, prepended to each script.
///
/// `fmt` renders an integer without exponent (Lua would print 1e+15); `extend` sets a
/// key's time to live to at least `ttl` ms (never shortens it; no-op on a missing key).
///
/// The scripts keep `redis.call`s few (each costs about a microsecond of the single Redis
/// thread): one `HMGET` reads a counter, one `HSET` writes it, and a time to live is set
/// only when a key's deadline moves.
const LUA_PRELUDE: &str = r#"
local function fmt(n) return string.format('%d', n) end
local function extend(k, ttl)
  if ttl < 1 then ttl = 1 end
  if redis.call('PTTL', k) < ttl then redis.call('PEXPIRE', k, fmt(ttl)) end
end
"#;

/// admit. KEYS: per budget (hash, leases), then per rate its counter.
/// ARGV: request id, estimate, now ms, lease ms, #budgets, #rates, then per budget
/// (limit, expires_at ms), then per rate (kind q|t|c, limit, amount, window end ms).
/// Returns {0} admitted, {1, budget index, spent, reserved}, or {2, rate index}.
///
/// Budget hash fields: s spent, r outstanding reservations, x window expiry, l latest lease
/// end, q:{id} reserved amount; the hash and its leases set live until max(x, l).
const ADMIT_BODY: &str = r#"
local rid, est_s, now_s = ARGV[1], ARGV[2], ARGV[3]
local est, now, lease = tonumber(est_s), tonumber(now_s), tonumber(ARGV[4])
local nb, nr = tonumber(ARGV[5]), tonumber(ARGV[6])
local kb, qf = 2 * nb, 'q:' .. rid
local bs, rs = {}, {}

-- Check every counter; nothing is charged unless all have room. The only writes here drop
-- lapsed reservations (lease end <= now), which no longer count anyway.
local a = 7
for i = 1, nb do
  local h, z = KEYS[2 * i - 1], KEYS[2 * i]
  local limit = tonumber(ARGV[a])
  a = a + 2
  local f = redis.call('HMGET', h, 's', 'r', 'x', 'l', qf)
  local s, r, old = tonumber(f[1]) or 0, tonumber(f[2]) or 0, tonumber(f[5]) or 0
  local lapsed = redis.call('ZRANGEBYSCORE', z, '-inf', now_s)
  if #lapsed > 0 then
    for _, id in ipairs(lapsed) do
      local lf = 'q:' .. id
      r = r - (tonumber(redis.call('HGET', h, lf)) or 0)
      if lf == qf then old = 0 end
      redis.call('HDEL', h, lf)
    end
    redis.call('ZREMRANGEBYSCORE', z, '-inf', now_s)
    if r < 0 or redis.call('EXISTS', z) == 0 then r = 0 end
    if f[1] or f[2] or f[3] then redis.call('HSET', h, 'r', fmt(r)) end
  end
  if s + r + est > limit then return {1, i - 1, s, r} end
  bs[i] = {r = r, old = old, x = tonumber(f[3]), l = tonumber(f[4]) or 0}
end
for j = 1, nr do
  local k, kind, limit = KEYS[kb + j], ARGV[a], tonumber(ARGV[a + 1])
  a = a + 4
  if kind == 'c' then
    if redis.call('ZCOUNT', k, '(' .. now_s, '+inf') + 1 > limit then return {2, j - 1} end
  else
    local ve = redis.call('HMGET', k, 'v', 'e')
    local e, v = tonumber(ve[2]), 0
    if e and e > now then v = tonumber(ve[1]) or 0 else e = nil end
    local full
    if kind == 'q' then full = v + 1 > limit else full = v >= limit end
    if full then return {2, j - 1} end
    rs[j] = e
  end
end

-- Charge them all.
local lend = now + lease
local le = fmt(lend)
a = 7
for i = 1, nb do
  local h, z, b = KEYS[2 * i - 1], KEYS[2 * i], bs[i]
  local exp = tonumber(ARGV[a + 1])
  a = a + 2
  local x = b.x and math.max(b.x, exp) or exp
  local l = math.max(b.l, lend)
  redis.call('HSET', h, qf, est_s, 'r', fmt(b.r - b.old + est), 'x', fmt(x), 'l', fmt(l))
  redis.call('ZADD', z, le, rid)
  local deadline = math.max(x, l)
  local ttl = fmt(math.max(deadline - now, 1))
  if not b.x or deadline ~= math.max(b.x, b.l) then redis.call('PEXPIRE', h, ttl) end
  redis.call('PEXPIRE', z, ttl)
end
local fresh = {}
for j = 1, nr do
  local k, kind, amount, wend_s = KEYS[kb + j], ARGV[a], ARGV[a + 2], ARGV[a + 3]
  a = a + 4
  if kind == 'c' then
    redis.call('ZREMRANGEBYSCORE', k, '-inf', now_s)
    redis.call('ZADD', k, le, rid)
    extend(k, lease)
  else
    if not rs[j] and not fresh[k] then
      -- A new window: start it with this request, and let it go RATE_MARGIN after its end.
      fresh[k] = true
      redis.call('HSET', k, 'v', amount, 'e', wend_s)
      redis.call('PEXPIRE', k, fmt(math.max(tonumber(wend_s) - now + RATE_MARGIN, 1)))
    else
      redis.call('HINCRBY', k, 'v', amount)
    end
    if kind == 't' then redis.call('HSET', k, 't:' .. rid, amount) end
  end
end
return {0}
"#;

/// settle. KEYS as for admit, then the request's settlement marker. ARGV: request id, actual
/// micro-USD, actual tokens, now ms, #budgets, #rates, marker TTL ms, then per budget its
/// expires_at ms, then per rate its kind.
/// Returns the settled spend of each budget afterwards; for a request already settled, what
/// its first settlement returned, changing nothing.
const SETTLE_BODY: &str = r#"
local rid, now = ARGV[1], tonumber(ARGV[4])
local usd, tok = tonumber(ARGV[2]), tonumber(ARGV[3])
local nb, nr = tonumber(ARGV[5]), tonumber(ARGV[6])
local kb, qf = 2 * nb, 'q:' .. rid
local mk = KEYS[kb + nr + 1]
local done = redis.call('GET', mk)
if done then
  local prev = {}
  for v in string.gmatch(done, '[^,]+') do prev[#prev + 1] = tonumber(v) end
  return prev
end
local out = {}
local a = 8
for i = 1, nb do
  local h, z = KEYS[2 * i - 1], KEYS[2 * i]
  local exp = tonumber(ARGV[a])
  a = a + 1
  local f = redis.call('HMGET', h, 's', 'r', 'x', 'l', qf)
  local s, r = (tonumber(f[1]) or 0) + usd, tonumber(f[2]) or 0
  local old = tonumber(f[5])
  if old then
    r = math.max(r - old, 0)
    redis.call('HDEL', h, qf)
    redis.call('ZREM', z, rid)
  end
  local px, l = tonumber(f[3]), tonumber(f[4]) or 0
  local x = px and math.max(px, exp) or exp
  redis.call('HSET', h, 's', fmt(s), 'r', fmt(r), 'x', fmt(x))
  local deadline = math.max(x, l)
  if not px or deadline ~= math.max(px, l) then
    redis.call('PEXPIRE', h, fmt(math.max(deadline - now, 1)))
  end
  out[i] = s
end
for j = 1, nr do
  local k, kind = KEYS[kb + j], ARGV[a]
  a = a + 1
  if kind == 't' then
    local tf = 't:' .. rid
    local vf = redis.call('HMGET', k, 'v', tf)
    local v = tonumber(vf[1])
    if v then
      local adm = tonumber(vf[2]) or 0
      if vf[2] then redis.call('HDEL', k, tf) end
      redis.call('HSET', k, 'v', fmt(math.max(v - adm, 0) + tok))
    end
  elseif kind == 'c' then
    redis.call('ZREM', k, rid)
  end
end
local parts = {}
for i = 1, nb do parts[i] = fmt(out[i]) end
redis.call('SET', mk, table.concat(parts, ','), 'PX', ARGV[7])
return out
"#;

/// budget states, read-only. KEYS: per counter (hash, leases). ARGV: now ms.
/// Returns {spent, reserved} per counter, flattened.
const STATES_BODY: &str = r#"
local now_s = ARGV[1]
local out = {}
for i = 1, #KEYS / 2 do
  local h, z = KEYS[2 * i - 1], KEYS[2 * i]
  local sr = redis.call('HMGET', h, 's', 'r')
  local s, r = tonumber(sr[1]) or 0, tonumber(sr[2]) or 0
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', z, '-inf', now_s)) do
    r = r - (tonumber(redis.call('HGET', h, 'q:' .. id)) or 0)
  end
  if r < 0 then r = 0 end
  out[2 * i - 1] = s
  out[2 * i] = r
end
return out
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_redacted() {
        assert_eq!(redact_url("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
        assert_eq!(
            redact_url("redis://:hunter2@redis.internal:6379/2"),
            "redis://***@redis.internal:6379/2"
        );
        assert_eq!(
            redact_url("rediss://user:p@ss@host/0?protocol=resp3"),
            "rediss://***@host/0"
        );
        assert_eq!(
            redact_url("redis+unix:///run/redis.sock?pass=hunter2"),
            "redis+unix:///run/redis.sock"
        );
        assert_eq!(redact_url("hunter2"), "<redis url>");
    }

    #[test]
    fn passwords_are_found_to_scrub() {
        assert_eq!(url_password("redis://127.0.0.1"), None);
        assert_eq!(
            url_password("redis://u:hunter%402@h/0").as_deref(),
            Some("hunter@2")
        );
        assert_eq!(url_password("redis://:pw@h").as_deref(), Some("pw"));
        assert_eq!(
            url_password("redis+unix:///s.sock?db=1&pass=pw").as_deref(),
            Some("pw")
        );
        let e = scrubbed(
            RedisLedgerError::Timeout {
                op: "admit",
                url: "echo pw".into(),
                timeout: Duration::from_millis(5),
            },
            Some("pw"),
        );
        assert_eq!(
            e.to_string(),
            "ledger backend unavailable: redis admit on echo ***: no answer within 5ms"
        );
    }

    #[tokio::test]
    async fn connect_is_lazy_and_rejects_bad_urls() {
        // Nothing listens on port 1; connecting must not wait for it.
        let l = RedisLedger::connect("redis://:pw@127.0.0.1:1", DEFAULT_PREFIX).unwrap();
        assert_eq!(l.endpoint(), "redis://***@127.0.0.1:1");
        assert_eq!(l.budget_key("b:x:1"), "tollgate:b:x:1");
        assert_eq!(l.leases_key("b:x:1"), "tollgate:b:x:1:leases");
        assert!(!format!("{l:?}").contains("pw"));
        let err = RedisLedger::connect("http://:pw@x", "p:")
            .unwrap_err()
            .to_string();
        assert!(err.contains("invalid Redis URL") && !err.contains("pw"), "{err}");
    }

    #[test]
    fn connect_outside_a_runtime_is_an_error_not_a_panic() {
        let err = RedisLedger::connect("redis://127.0.0.1:1", "p:").unwrap_err();
        assert!(err.to_string().contains("no Tokio runtime"), "{err}");
    }
}
