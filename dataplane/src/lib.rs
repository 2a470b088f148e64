//! tollgate-dataplane: the proxy every agent request passes through.
//!
//! Layout, in request order:
//! - [`policy`]: the policy document (the contract with the operator), its validation,
//!   compilation into an immutable [`policy::Snapshot`] and hot reload.
//! - [`auth`]: virtual key authentication by SHA-256 lookup.
//! - [`routing`]: the order a request tries its targets in (priority, weight, passive
//!   health) and the retry budgets that bound fallbacks.
//! - [`providers`]: one module per provider wire format (Anthropic, Bedrock, Vertex AI,
//!   Foundry): authentication, request building, response and error conversion.
//! - [`anthropic`]: the Anthropic wire format: error bodies, request body model rewrite.
//! - [`upstream`]: the one HTTP client (rustls) and provider credentials.
//! - [`mcp`]: the MCP gateway (`/mcp`): upstream MCP servers aggregated and filtered per key.
//! - [`limits`] and [`ledger`]: budgets and rate limits, and the counters behind them.
//! - [`sse`]: the one bounded Server-Sent Events framer (usage tap, tool guard, MCP).
//! - [`usage`]: token usage read on the side of a response (incremental SSE parser).
//! - [`pricing`]: the price table and exact integer cost.
//! - [`server`]: the listeners, the request handler and the metered response body.
//! - [`audit`]: hash-chained audit records, the local spool and the sinks that ship them.
//! - [`metrics`]: Prometheus metrics.

pub mod anthropic;
pub mod audit;
pub mod auth;
pub mod body;
pub mod denial;
#[doc(hidden)]
pub mod fuzz;
pub mod gemini;
pub mod ledger;
pub mod limits;
pub mod mcp;
pub mod metrics;
pub mod openai;
pub mod policy;
pub mod pricing;
pub mod providers;
pub mod routing;
pub mod secret;
pub mod server;
pub mod sse;
pub mod telemetry;
pub mod upstream;
pub mod usage;
