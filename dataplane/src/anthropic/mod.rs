//! The Anthropic Messages wire format as the gateway needs it: error bodies in Anthropic's
//! shape, and a request-body reader that finds and renames the model without re-serialising.

pub mod error;
pub mod request;
pub mod tools;
