//! The OpenAI wire formats as the gateway needs them: the Responses API (`POST /v1/responses`,
//! what Codex CLI speaks) and Chat Completions (`POST /v1/chat/completions`, what most other
//! OpenAI-compatible clients speak).
//!
//! Pure building blocks, no I/O:
//! - [`request`]: reads model, stream and output limit from a request body in one pass, renames
//!   the model by splicing bytes, and asks a Chat stream for its usage chunk.
//! - [`usage`]: token usage read on the side of a response, streamed ([`usage::ResponsesTap`],
//!   [`usage::ChatTap`], both [`crate::usage::StreamTap`]s) or whole
//!   ([`usage::usage_from_json`]).
//! - [`error`]: OpenAI's error body, and every gateway refusal ([`crate::denial::Denial`]) in it,
//!   with the status OpenAI would send.
//! - [`tools`]: the key's tool policy applied to a request's `tools` and `tool_choice`.

pub mod error;
pub mod request;
pub mod tools;
pub mod usage;

/// Which OpenAI API a request speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Api {
    /// The Responses API, `POST /v1/responses` (Codex CLI).
    Responses,
    /// Chat Completions, `POST /v1/chat/completions`.
    Chat,
}

impl Api {
    /// The API's endpoint path.
    pub fn path(self) -> &'static str {
        match self {
            Api::Responses => "/v1/responses",
            Api::Chat => "/v1/chat/completions",
        }
    }
}
