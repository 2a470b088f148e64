//! The ledger: where spend and rate-limit counters live. One trait, two implementations that
//! pass the same conformance suite ([`conformance`]):
//! - [`memory::MemoryLedger`]: embedded, for a single replica; spend persists across restarts
//!   in a journal file.
//! - [`redis::RedisLedger`]: shared by many replicas; every admission is one atomic script
//!   and one round trip.
//!
//! An admission reserves an estimated cost on every budget counter that applies (all or
//! nothing), counts the request against its rate limits, and takes a concurrency slot; the
//! settlement replaces the reservation with the actual cost and frees the slot. Reservations
//! and slots carry a lease, so a replica that dies mid-request cannot hold them forever.
//!
//! # Settlements are idempotent
//!
//! A settlement's idempotency id is its admission's [`Admission::request_id`]: a ledger applies
//! the first settlement of a request id and answers every repeat within
//! [`SETTLEMENT_ID_TTL_MS`] with that first answer, changing nothing. So a retry after a lost
//! reply (Redis applied the script, the answer never arrived) or after a failed journal write,
//! and a replay from the [`outbox`], never charge twice. A settlement that still fails after
//! the request path's retries waits in the [`outbox`] and is replayed when the ledger is back.

pub mod conformance;
pub mod memory;
pub mod outbox;
pub mod redis;

use std::future::Future;
use std::pin::Pin;

use serde::{Deserialize, Serialize};

/// How long a ledger remembers a settled request id, ms (1 hour): repeats within it are
/// answered, not applied. A settlement replayed later than this after one whose reply was
/// lost could count twice; the outbox replays within seconds of the ledger coming back.
pub const SETTLEMENT_ID_TTL_MS: i64 = 3_600_000;

/// A boxed future returned by ledger operations.
pub type LedgerFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, LedgerError>> + Send + 'a>>;

/// A budget counter an admission charges.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BudgetCharge {
    /// Counter key: `b:{budget id}:{window start, unix seconds}`.
    pub counter: String,
    /// The ceiling in micro-USD.
    pub limit_micro_usd: u64,
    /// When the counter may be forgotten (window end plus a grace period), unix ms.
    pub expires_at_ms: i64,
}

/// Rate-limit kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RateKind {
    /// Requests per window: admitted while `count + 1 <= limit`.
    Requests,
    /// Tokens per window: admitted while `used < limit`; the amount is added on admission
    /// and corrected to the actual tokens on settlement.
    Tokens,
    /// Requests in flight: admitted while `in_flight + 1 <= limit`; released on settlement
    /// or when the lease runs out.
    Concurrent,
}

/// A rate-limit counter an admission charges.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateCharge {
    /// Counter key, e.g. `r:key:alice:rpm:{minute}` or `c:team:platform`.
    pub counter: String,
    /// Kind of limit.
    pub kind: RateKind,
    /// The limit.
    pub limit: u64,
    /// What this request adds (1 for requests and concurrency, estimated tokens for tokens).
    pub amount: u64,
    /// End of the window (unix ms); for concurrency, unused.
    pub window_end_ms: i64,
}

/// Everything one request asks of the ledger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Admission {
    /// Unique request id: names the reservation and the concurrency slot, and is the
    /// idempotency id of the request's settlement.
    pub request_id: String,
    /// Estimated cost reserved on every budget counter.
    pub estimate_micro_usd: u64,
    /// Budget counters, all of which must have room.
    pub budgets: Vec<BudgetCharge>,
    /// Rate counters, all of which must have room.
    pub rates: Vec<RateCharge>,
    /// Now, unix ms (tests control it).
    pub now_ms: i64,
    /// How long a reservation or concurrency slot lives without settlement, ms.
    pub lease_ms: i64,
}

/// What the request actually used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Settlement {
    /// Actual cost.
    pub actual_micro_usd: u64,
    /// Actual input plus output tokens.
    pub actual_tokens: u64,
}

/// Why an admission was refused. Nothing was charged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// `budgets[index]` has no room for the estimate.
    Budget {
        /// Index into [`Admission::budgets`].
        index: usize,
        /// Settled spend in the window.
        spent: u64,
        /// Outstanding reservations in the window.
        reserved: u64,
    },
    /// `rates[index]` is at its limit.
    Rate {
        /// Index into [`Admission::rates`].
        index: usize,
        /// When trying again can succeed, ms from now.
        retry_after_ms: i64,
    },
}

/// State of one budget counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BudgetState {
    /// Settled spend.
    pub spent: u64,
    /// Outstanding, unexpired reservations.
    pub reserved: u64,
}

/// A ledger failure (the backend is unreachable or answered nonsense).
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The backend could not be reached or failed.
    #[error("ledger backend unavailable: {0}")]
    Unavailable(String),
    /// The journal could not be written or read.
    #[error("ledger journal: {0}")]
    Journal(#[from] std::io::Error),
}

/// The ledger contract; both implementations pass [`conformance::run_all`].
pub trait Ledger: Send + Sync + 'static {
    /// Atomically checks every counter of `a` and, only if all have room, charges them all.
    fn admit<'a>(&'a self, a: &'a Admission) -> LedgerFuture<'a, Result<(), Refusal>>;

    /// Replaces `a`'s reservation with the actual cost, corrects token counters and frees the
    /// concurrency slot. Returns the settled spend of each budget counter afterwards, in the
    /// order of `a.budgets`. Idempotent by `a.request_id`: a repeat within
    /// [`SETTLEMENT_ID_TTL_MS`] changes nothing and returns the first settlement's answer
    /// (whatever `s` it carries), so a caller may retry a settlement whose outcome it does
    /// not know.
    fn settle<'a>(&'a self, a: &'a Admission, s: Settlement) -> LedgerFuture<'a, Vec<u64>>;

    /// The state of budget counters (unknown counters read as zero).
    fn budget_states<'a>(&'a self, counters: &'a [String], now_ms: i64)
    -> LedgerFuture<'a, Vec<BudgetState>>;

    /// Short name for logs and metrics (`memory`, `redis`).
    fn kind(&self) -> &'static str;
}
