//! Budgets and rate limits: window arithmetic, admission planning, cost estimates and the
//! output history they learn from.

pub mod history;
pub mod plan;
pub mod window;
