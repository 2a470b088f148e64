//! Response-body types shared by every handler (the proxy, the tool guard, the MCP gateway and
//! the provider modules). A leaf module: it depends on nothing else in the crate, so the
//! handlers can all use it without importing each other.

use bytes::Bytes;
use http_body_util::{BodyExt, Either, Full};

/// The body of every proxy response: a small gateway answer, or a stream (a metered upstream
/// body, possibly tool-policy-guarded or transcoded from a provider's wire format, or an MCP
/// listen stream).
pub type ProxyBody = Either<Full<Bytes>, BoxedBody>;

/// A boxed streaming response body.
pub type BoxedBody = http_body_util::combinators::UnsyncBoxBody<Bytes, StreamError>;

/// Why a streamed response body ended early (a concrete type: `Either` boxes it again).
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct StreamError(pub Box<dyn std::error::Error + Send + Sync>);

/// Boxes a streaming body.
pub fn boxed<B>(body: B) -> BoxedBody
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    body.map_err(|e| StreamError(e.into())).boxed_unsync()
}
