//! tollgate-operator: compiles Tollgate's custom resources into the policy ConfigMaps that
//! `tollgate-proxy` loads, generates virtual-key Secrets, and reports status and spend.
//!
//! The work is split so the interesting part is pure: [`compile::compile`] turns a snapshot
//! of the cluster (a [`compile::World`]) into policy shards and per-resource statuses; the
//! [`reconcile`] loop only reads the world, calls it, and applies the difference.

#![warn(missing_docs)]

pub mod cli;
pub mod compile;
pub mod crd;
pub mod credentials;
pub mod error;
pub mod inject;
pub mod metrics;
pub mod names;
pub mod notify;
pub mod offline;
pub mod reconcile;
pub mod secrets;
pub mod spend;
pub mod webhook;

pub use error::Error;
pub mod server;
