//! Budgets and rate limits: window arithmetic, admission planning and cost estimates.

pub mod plan;
pub mod window;
