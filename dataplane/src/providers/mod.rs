//! Provider wire formats, one module per format. Each module says how it authenticates,
//! builds the upstream request from an Anthropic Messages request, reads usage (by
//! converting its answer to the Anthropic format the meter reads) and maps its errors to
//! Anthropic errors.

pub mod body_edit;

/// What the client asked the provider for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// `POST /v1/messages`; `stream` is the body's `stream` field.
    Messages {
        /// Whether the client asked for a stream.
        stream: bool,
    },
    /// `POST /v1/messages/count_tokens`.
    CountTokens,
}
