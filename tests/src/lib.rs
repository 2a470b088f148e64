//! Test kit for Tollgate.
//!
//! * [`fake_anthropic`]: a faithful, fast fake of the Anthropic Messages API upstream, used by
//!   integration tests, end-to-end tests with the real Claude Code CLI, and benchmarks. The same
//!   server is available out of process as the `fake-anthropic` binary.
//! * [`policy`]: the standard test policy and its keys.
//! * [`harness`]: runs a real `tollgate-proxy` process on loopback, with a small HTTP client.
//! * [`sinks`]: faithful fake receivers of the audit sinks' wire formats, and `moto` (S3).
//! * [`claude`]: runs the real Claude Code headless against a proxy.
//! * [`mcp`]: upstream MCP servers and an MCP client on the official Python SDK.
//! * [`redis_server`]: runs a real `redis-server` on loopback for the Redis ledger's tests.
//! * [`fake_bedrock`]: a faithful fake of the Amazon Bedrock runtime (Python, botocore-checked
//!   SigV4, real AWS event streams), forwarding to a fake Anthropic.
//! * [`fake_cloud`]: faithful fakes of Vertex AI (with Google's token endpoint and metadata
//!   server) and Azure AI Foundry (with Entra ID), forwarding to a fake Anthropic.
//! * [`fake_openai`]: a faithful fake of the OpenAI API (Responses, Chat Completions, models),
//!   complete enough for the real Codex CLI's tool loop.
//! * [`fake_gemini`]: a faithful fake of the Gemini API (generateContent, SSE streaming,
//!   countTokens, the Vertex publisher paths), complete enough for the real Gemini CLI's tool
//!   loop.
//! * [`agents`]: runs the real Codex CLI and Gemini CLI headless against a base URL.

#![warn(missing_docs)]

pub mod agents;
pub mod claude;
pub mod fake_anthropic;
pub mod fake_bedrock;
pub mod fake_cloud;
pub mod fake_gemini;
pub mod fake_openai;
pub mod harness;
pub mod mcp;
pub mod policy;
pub mod redis_server;
pub mod sinks;
