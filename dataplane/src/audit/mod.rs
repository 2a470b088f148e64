//! The audit trail: hash-chained, append-only records of what the gateway did, spooled
//! locally and shipped to the SIEMs compliance teams already run.
//!
//! # Records
//!
//! One record per model request, denial, policy reload, budget threshold crossed and MCP tool
//! call (and per checkpoint, below); a `gap` record for records the proxy could not keep
//! (see [`writer`]) and a `denials_suppressed` record for refusals of unauthenticated
//! requests beyond the rate recorded one by one (see [`limiter`]). Values a client chooses
//! are clipped ([`events::clip`]), so a record's size never depends on a request. On disk and
//! on the wire a record is one JSON object:
//!
//! ```json
//! {"body":{...},"hash":"<hex>","id":"tga_<chain>_<seq>","kind":"model_request",
//!  "prev_hash":"<hex>","seq":42,"time":"2026-11-29T20:18:35.123456789Z","v":1}
//! ```
//!
//! * `seq`: 1, 2, 3, ... with no gaps within a chain.
//! * `id`: stable event id, `tga_<chain id>_<seq>`; sinks use it as the idempotency key
//!   (Elasticsearch `_id`), so re-sent records de-duplicate.
//! * `prev_hash`: the `hash` of record `seq - 1`; 64 zeros for `seq` 1.
//! * `hash`: `SHA-256(prev_hash as 32 raw bytes || canonical bytes)`, lower-case hex.
//!
//! # Canonical encoding
//!
//! The canonical bytes of a record are its JSON object *without the `hash` member*, encoded
//! as follows (this is RFC 8785 JCS restricted to integers, which is all records contain):
//! no whitespace; object members sorted by key, comparing the keys' UTF-8 bytes; numbers are
//! integers in plain decimal (no exponent, no fraction: a float is an encoding error);
//! strings in UTF-8 with `"` and `\` escaped with a backslash, U+0008, U+0009, U+000A,
//! U+000C and U+000D as `\b` `\t` `\n` `\f` `\r`, other code points below U+0020 as
//! `\u00xx` (lower-case hex), and everything else literal. Each spooled line is the
//! canonical encoding of the whole record (with `hash`), so to re-verify a line: parse it,
//! check that re-encoding it gives exactly the line's bytes (anything else, such as another
//! escape or a duplicate member, is not a record), remove `hash`, re-encode, and hash with the
//! previous record's hash. See [`record`] and [`verify`].
//!
//! # Checkpoints
//!
//! Every `every_records` records or `every_secs` seconds (and at clean shutdown) the writer
//! appends a `checkpoint` record whose body signs the chain head it follows:
//! `{"alg","key_id","covers_seq","covers_hash","sig"}`, where `sig` is HMAC-SHA256 or
//! Ed25519 over `tollgate-audit-checkpoint/v1\n<chain id>\n<covers_seq>\n<covers_hash>`. The
//! checkpoint is a chain record itself (so sinks ship it to an external witness) and is also
//! appended to `checkpoints.jsonl`. A checkpoint that attests a record the chain no longer
//! has reveals truncation; a bad signature reveals a rewritten chain. See [`checkpoint`].
//! A key the policy names must be readable when the trail opens (else opening fails: no
//! unsigned checkpoints by accident), and a verifier given a key fails unsigned ones.
//!
//! # Spool
//!
//! `--audit-dir` holds `chain.id`, segment files `seg-<first seq, 20 digits>.jsonl`,
//! `checkpoints.jsonl` and one `sink-<name>.offset` per sink (its last acknowledged `seq`).
//! The request path hands an [`Event`] to a bounded queue and never waits; one writer thread
//! assigns sequence numbers, appends, fsyncs per policy and rotates; one task per sink ships
//! from its own acknowledged offset with batching, retries with backoff and jitter
//! (at-least-once). See [`spool`], [`writer`] and [`sink`].
//!
//! `tollgate-proxy audit verify DIR` re-walks a spool ([`verify`]).

pub mod canonical;
pub mod checkpoint;
pub mod cli;
pub mod config;
pub mod events;
mod handle;
pub mod limiter;
pub mod metrics;
pub mod record;
pub mod sink;
pub mod spool;
pub mod verify;
pub mod writer;

pub use events::Event;
pub use handle::{Audit, ExchangeAudit, ExchangeEnd, session_id};
pub use metrics::AuditMetrics;
pub use record::Record;

/// Everything that can go wrong in the audit trail.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// A spool file could not be read or written.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, naming the file.
        context: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A value cannot be encoded canonically.
    #[error("cannot encode canonically: {0}")]
    Canonical(String),
    /// A record or checkpoint is malformed.
    #[error("malformed: {0}")]
    Malformed(String),
    /// A checkpoint key could not be read or used.
    #[error("checkpoint key: {0}")]
    Key(String),
    /// A sink refused or failed a delivery.
    #[error("sink {sink}: {detail}")]
    Sink {
        /// Sink name.
        sink: String,
        /// What went wrong (never a credential).
        detail: String,
    },
    /// The configuration is invalid.
    #[error("configuration: {0}")]
    Config(String),
}

impl AuditError {
    /// An I/O error with its context.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        AuditError::Io {
            context: context.into(),
            source,
        }
    }
}
