//! Provider wire formats, one module per format. Each module says how it authenticates,
//! builds the upstream request from an Anthropic Messages request, and turns its answer
//! (JSON, stream and errors) into what an Anthropic client expects, which is also what the
//! meter reads usage from.
//!
//! This module depends only on leaf modules (the HTTP client, secrets, body types, the
//! Anthropic error format): the policy compiles into a [`Wire`], the server dispatches through
//! it.

pub mod anthropic;
pub mod bedrock;
pub mod body_edit;
pub mod cloud_errors;
pub mod foundry;
pub mod gemini;
pub mod oauth;
pub mod openai;
pub mod vertex;

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body_util::{Either, Full};
use hyper::body::Incoming;

use crate::body::BoxedBody;
use crate::upstream::HttpClient;

pub use anthropic::{AnthropicApi, ProviderAuth};
pub use gemini::GeminiApi;
pub use openai::OpenAiApi;

/// The API a client's request speaks (and a provider must speak to serve it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiFormat {
    /// Anthropic Messages (Claude Code).
    Anthropic,
    /// OpenAI Responses (Codex CLI).
    OpenAiResponses,
    /// OpenAI Chat Completions.
    OpenAiChat,
    /// The Gemini API (Gemini CLI).
    Gemini(crate::gemini::Method),
}

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

/// An upstream answer's body as the client gets it: the provider's own (Anthropic format), or
/// converted from the provider's format.
pub type UpstreamBody = Either<Incoming, BoxedBody>;

/// One request to a provider.
#[derive(Debug)]
pub struct Call<'a> {
    /// The API the client speaks.
    pub format: ApiFormat,
    /// Messages (streaming or not) or count_tokens.
    pub op: Operation,
    /// The upstream model id.
    pub model: &'a str,
    /// The client's path and query: without the `/anthropic` prefix for Anthropic requests
    /// (`/v1/messages?beta=true`), whole for the others (`/openai/v1/responses`; a `tollgate`
    /// provider gets it as it is), never with a `key` query parameter.
    pub path_and_query: &'a str,
    /// The client's headers.
    pub headers: &'a HeaderMap,
    /// The virtual key the client authenticated with (forwarded to a `tollgate` provider).
    pub client_key: Option<&'a str>,
    /// The Anthropic Messages body, its model already the upstream model.
    pub body: Bytes,
}

/// Why a provider request could not be built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// The client's request cannot be expressed in the provider's format: a 400 for the
    /// client, and no failure of the provider (a tenant must not be able to eject a shared
    /// provider, or spend its retry budget, with requests no provider would accept).
    Request(String),
    /// The provider cannot be called (its credential, its configuration): its failure.
    Provider(String),
}

/// A provider's wire format with its credentials (compiled from the policy).
pub enum Wire {
    /// The Anthropic Messages API as is (`anthropic`, `tollgate`).
    Anthropic(AnthropicApi),
    /// Anthropic models on Amazon Bedrock (InvokeModel, SigV4).
    Bedrock(bedrock::Bedrock),
    /// Anthropic models on Google Vertex AI.
    Vertex(vertex::Vertex),
    /// Anthropic models on Azure AI Foundry.
    Foundry(foundry::Foundry),
    /// The OpenAI API or a compatible one (Responses, Chat Completions).
    OpenAi(OpenAiApi),
    /// The Gemini API.
    Gemini(GeminiApi),
}

impl std::fmt::Debug for Wire {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Wire::Anthropic(api) => f.debug_tuple("Anthropic").field(api).finish(),
            Wire::Bedrock(_) => f.write_str("Bedrock"),
            Wire::Vertex(_) => f.write_str("Vertex"),
            Wire::Foundry(_) => f.write_str("Foundry"),
            Wire::OpenAi(api) => f.debug_tuple("OpenAi").field(api).finish(),
            Wire::Gemini(api) => f.debug_tuple("Gemini").field(api).finish(),
        }
    }
}

/// 401 and 403: the provider refused the gateway's credential or its account (on the
/// OpenAI and Gemini routes; an Anthropic 403 is about the request, and passes).
fn refused_credential(status: http::StatusCode) -> bool {
    matches!(status.as_u16(), 401 | 403)
}

/// A 502 whose body `body` writes in the client's format, naming the provider.
fn refusal_of_credential(
    provider: &str,
    status: http::StatusCode,
    body: impl Fn(&str) -> Bytes,
) -> Response<BoxedBody> {
    tracing::error!(
        provider,
        status = status.as_u16(),
        "the provider refused the gateway's credential or account"
    );
    let message = format!(
        "tollgate: provider '{provider}' refused the gateway's credential or account ({status}); tell the platform team"
    );
    let mut out = Response::new(crate::body::boxed(Full::new(body(&message))));
    *out.status_mut() = http::StatusCode::BAD_GATEWAY;
    out.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    out
}

impl Wire {
    /// The upstream request for `call`; the error is one line without a secret, and says
    /// whether the request or the provider is at fault.
    pub async fn request(
        &self,
        client: &HttpClient,
        call: Call<'_>,
    ) -> Result<Request<Full<Bytes>>, CallError> {
        if !matches!(self, Wire::Anthropic(_)) {
            // The model id becomes one URL path segment: what cannot be one is the request's
            // fault (a pass-through route serves names the client chose), not the provider's.
            vertex::segment(call.model).map_err(|e| CallError::Request(format!("model: {e}")))?;
        }
        self.build(client, call).await.map_err(CallError::Provider)
    }

    async fn build(&self, client: &HttpClient, call: Call<'_>) -> Result<Request<Full<Bytes>>, String> {
        match (self, call.format) {
            (Wire::Anthropic(api), _) => api.request(
                http::Method::POST,
                call.path_and_query,
                call.headers,
                call.client_key,
                call.body,
            ),
            (Wire::Bedrock(b), ApiFormat::Anthropic) => {
                b.request(client, call.op, call.model, call.headers, &call.body)
                    .await
            }
            (Wire::Vertex(v), ApiFormat::Anthropic) => {
                v.request(client, call.op, call.model, call.headers, &call.body)
                    .await
            }
            (Wire::Foundry(f), ApiFormat::Anthropic) => {
                f.request(client, call.op, call.model, call.headers, &call.body)
                    .await
            }
            (Wire::OpenAi(api), ApiFormat::OpenAiResponses) => {
                api.request("/v1/responses", call.headers, call.body)
            }
            (Wire::OpenAi(api), ApiFormat::OpenAiChat) => {
                api.request("/v1/chat/completions", call.headers, call.body)
            }
            (Wire::Gemini(api), ApiFormat::Gemini(method)) => api.request(method, call.model, call.body),
            (Wire::Vertex(v), ApiFormat::Gemini(method)) => {
                v.gemini_request(client, method, call.model, &call.body).await
            }
            (wire, format) => Err(format!("{wire:?} does not serve {format:?} requests")),
        }
    }

    /// The client's view of an upstream answer (see [`UpstreamBody`]); `idle` bounds upstream
    /// silence inside a converted stream.
    pub async fn response(
        &self,
        op: Operation,
        resp: Response<Incoming>,
        idle: Duration,
    ) -> Response<UpstreamBody> {
        // The Gemini API answers a key it does not accept with 400 `API_KEY_INVALID`: the
        // gateway's key, not the engineer's, so a 502 (the body is small: read it to tell).
        if let (Wire::Gemini(api), 400) = (self, resp.status().as_u16()) {
            use http_body_util::BodyExt;
            let (parts, body) = resp.into_parts();
            let bytes = http_body_util::Limited::new(body, 64 << 10)
                .collect()
                .await
                .map(|c| c.to_bytes())
                .unwrap_or_default();
            if bytes.windows(15).any(|w| w == b"API_KEY_INVALID") {
                return refusal_of_credential(&api.id, parts.status, |m| {
                    crate::gemini::error::error_body(502, "UNAVAILABLE", m)
                })
                .map(Either::Right);
            }
            let mut out = Response::from_parts(parts, crate::body::boxed(Full::new(bytes)));
            out.headers_mut().remove(http::header::CONTENT_LENGTH);
            return out.map(Either::Right);
        }
        self.convert(op, resp, idle)
    }

    fn convert(&self, op: Operation, resp: Response<Incoming>, idle: Duration) -> Response<UpstreamBody> {
        let converted = |r: Response<BoxedBody>| r.map(Either::Right);
        match self {
            // The provider refused the gateway's own key: never the client's 401, which would
            // make Claude Code ask its user to log in again (a gateway's 401 is the client's).
            Wire::Anthropic(AnthropicApi {
                auth: ProviderAuth::Key(_),
                id,
                ..
            }) if resp.status() == http::StatusCode::UNAUTHORIZED => {
                converted(refusal_of_credential(id, resp.status(), |m| {
                    crate::anthropic::error::error_body("api_error", m, "req_unavailable")
                }))
            }
            Wire::Anthropic(_) => resp.map(Either::Left),
            // Their 2xx answers are Anthropic's own: only errors are converted.
            Wire::Vertex(_) | Wire::Foundry(_) if resp.status().is_success() => resp.map(Either::Left),
            Wire::Bedrock(b) => converted(b.response(op, resp, idle)),
            Wire::Vertex(v) => converted(v.response(op, resp)),
            Wire::Foundry(f) => converted(f.response(op, resp)),
            // The provider refused the gateway's own credential or account: a 502 in the
            // client's format, never its 401/403 (Codex retries those, and the engineer's key
            // is not at fault); the upstream body (org ids, key suffixes) is dropped.
            Wire::OpenAi(api) if refused_credential(resp.status()) => {
                converted(refusal_of_credential(&api.id, resp.status(), |m| {
                    crate::openai::error::error_body("server_error", None, m)
                }))
            }
            Wire::Gemini(api) if refused_credential(resp.status()) => {
                converted(refusal_of_credential(&api.id, resp.status(), |m| {
                    crate::gemini::error::error_body(502, "UNAVAILABLE", m)
                }))
            }
            // Their clients speak their format: answers pass as they are.
            Wire::OpenAi(_) | Wire::Gemini(_) => resp.map(Either::Left),
        }
    }

    /// Why the provider's credential cannot be used, when it is known without calling it.
    pub fn unusable(&self) -> Option<&str> {
        match self {
            Wire::Anthropic(AnthropicApi {
                auth: ProviderAuth::Unreadable(why),
                ..
            }) => Some(why),
            Wire::Anthropic(_)
            | Wire::Bedrock(_)
            | Wire::Vertex(_)
            | Wire::Foundry(_)
            | Wire::OpenAi(_)
            | Wire::Gemini(_) => None,
        }
    }
}
