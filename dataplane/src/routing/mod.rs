//! Which of a route's permitted targets a request tries, in which order, and whether it may
//! move on to the next one.
//!
//! - [`order`]: targets by ascending priority; targets of equal priority share the load by
//!   weight (a weighted shuffle), the rest of the group being the next fallbacks. Providers
//!   that keep failing are tried last (passive health, [`health`]).
//! - [`health`]: per provider, outlier ejection after consecutive failures, and a retry
//!   budget: the share of its requests that may fall back to another target, so that a
//!   failing provider cannot double the load on the others (and the attempts per request).
//!
//! State lives in [`Routing`], owned by the gateway and keyed by provider id, so it survives
//! policy reloads.

pub mod health;
pub mod order;

pub use health::{Health, ProviderHealth};
pub use order::{Candidate, attempt_order};
