//! The response body handed to the client: upstream frames pass through one by one as they
//! arrive (no buffering), while a tap reads usage, and measures the content delivered, on
//! the side. When the body ends, fails, goes idle too long or is dropped (client gone), the
//! exchange is accounted exactly once: by its final usage, or when that never came, by what
//! it delivered ([`crate::usage::delivered`]).

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::Sleep;

use super::accounting::{Completion, Outcome};
use crate::providers::ApiFormat;
use crate::usage::{Delivered, SseUsageTap, StreamTap, Usage, usage_from_json};

/// Largest non-streaming body kept aside for reading usage; a larger one is charged by its
/// size (see [`crate::usage::delivered`]).
const JSON_TAP_LIMIT: usize = 16 << 20;

/// How usage is read from a response.
pub enum Tap {
    /// A stream, read by its format's tap (Anthropic, OpenAI or Gemini SSE).
    Stream(Box<dyn StreamTap>),
    /// A JSON body, kept aside up to a limit (dropped past it), its size so far, and how its
    /// format states usage.
    Json(Vec<u8>, u64, JsonUsage),
    /// Not read (errors, count_tokens).
    Off,
}

/// Reads the usage of a whole JSON answer.
pub type JsonUsage = fn(&[u8]) -> Option<Usage>;

fn anthropic_json_usage(body: &[u8]) -> Option<Usage> {
    usage_from_json(body).map(|(u, _)| u)
}

fn responses_json_usage(body: &[u8]) -> Option<Usage> {
    crate::openai::usage::usage_from_json(crate::openai::Api::Responses, body)
}

fn chat_json_usage(body: &[u8]) -> Option<Usage> {
    crate::openai::usage::usage_from_json(crate::openai::Api::Chat, body)
}

/// What a tap read when the body ended.
pub struct TapResult {
    /// Usage read, if any.
    pub usage: Option<Usage>,
    /// Whether the response was complete.
    pub complete: bool,
    /// An `event: error` in the stream.
    pub stream_error: Option<String>,
    /// What it delivered; `None` when the body is not metered.
    pub delivered: Option<Delivered>,
}

impl Tap {
    /// The Anthropic tap for a response of this content type.
    pub fn for_content_type(content_type: Option<&str>, enabled: bool) -> Tap {
        Self::for_response(ApiFormat::Anthropic, content_type, enabled)
    }

    /// The tap for a response in `format` with this content type (`enabled`: the response is
    /// a successful generation whose usage is charged).
    pub fn for_response(format: ApiFormat, content_type: Option<&str>, enabled: bool) -> Tap {
        let stream = content_type.is_some_and(|ct| ct.starts_with("text/event-stream"));
        let json = content_type.is_some_and(|ct| ct.starts_with("application/json"));
        match format {
            _ if !enabled => Tap::Off,
            ApiFormat::Anthropic if stream => Tap::Stream(Box::<SseUsageTap>::default()),
            ApiFormat::Anthropic if json => Tap::Json(Vec::new(), 0, anthropic_json_usage),
            ApiFormat::OpenAiResponses if stream => {
                Tap::Stream(Box::<crate::openai::usage::ResponsesTap>::default())
            }
            ApiFormat::OpenAiResponses if json => Tap::Json(Vec::new(), 0, responses_json_usage),
            ApiFormat::OpenAiChat if stream => Tap::Stream(Box::<crate::openai::usage::ChatTap>::default()),
            ApiFormat::OpenAiChat if json => Tap::Json(Vec::new(), 0, chat_json_usage),
            ApiFormat::Gemini(_) if stream => Tap::Stream(Box::<crate::gemini::usage::GeminiTap>::default()),
            ApiFormat::Gemini(_) if json => Tap::Json(Vec::new(), 0, crate::gemini::usage::usage_from_json),
            _ => Tap::Off,
        }
    }

    fn feed(&mut self, data: &[u8]) {
        match self {
            Tap::Stream(t) => t.feed(data),
            Tap::Json(buf, seen, _) => {
                let fits = *seen as usize + data.len() <= JSON_TAP_LIMIT;
                *seen += data.len() as u64;
                if fits {
                    buf.extend_from_slice(data);
                } else {
                    *buf = Vec::new();
                }
            }
            Tap::Off => {}
        }
    }

    /// Usage read so far, whether the response was complete, and what it delivered.
    fn result(&self, ended: bool) -> TapResult {
        match self {
            Tap::Stream(t) => {
                let err = t.stream_error();
                TapResult {
                    usage: t.usage(),
                    complete: t.completed() && err.is_none(),
                    stream_error: err,
                    delivered: Some(Delivered {
                        content_bytes: t.content_bytes(),
                        final_usage: t.final_usage(),
                    }),
                }
            }
            Tap::Json(buf, seen, read) => {
                // Over the limit the buffer was dropped: no usage, charged by size.
                let usage = read(buf);
                TapResult {
                    delivered: Some(Delivered {
                        content_bytes: *seen,
                        final_usage: usage.is_some(),
                    }),
                    usage,
                    complete: ended,
                    stream_error: None,
                }
            }
            Tap::Off => TapResult {
                usage: None,
                complete: ended,
                stream_error: None,
                delivered: None,
            },
        }
    }
}

/// A pass-through body that meters what flows through it.
pub struct MeteredBody<B: Body = Incoming> {
    inner: B,
    tap: Tap,
    idle_limit: Duration,
    idle: Pin<Box<Sleep>>,
    first_byte: Option<Instant>,
    completion: Option<Completion>,
}

/// Error ending a metered body early.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The upstream connection failed mid-body (or its conversion from the provider's
    /// format did).
    #[error("upstream body error: {0}")]
    Upstream(Box<dyn std::error::Error + Send + Sync>),
    /// The upstream sent nothing for too long.
    #[error("upstream stream idle for more than {0:?}")]
    Idle(Duration),
}

impl<B: Body> MeteredBody<B> {
    /// Wraps an upstream body.
    pub fn new(inner: B, tap: Tap, idle_limit: Duration, completion: Completion) -> Self {
        Self {
            inner,
            tap,
            idle_limit,
            idle: Box::pin(tokio::time::sleep(idle_limit)),
            first_byte: None,
            completion: Some(completion),
        }
    }

    fn finish(&mut self, outcome: Outcome) {
        if let Some(c) = self.completion.take() {
            let ended = matches!(outcome, Outcome::Ended);
            c.finish(self.tap.result(ended), self.first_byte, outcome);
        }
    }
}

impl<B> Body for MeteredBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.first_byte.get_or_insert_with(Instant::now);
                    this.tap.feed(data);
                    if let Some(c) = this.completion.as_mut() {
                        c.observe(data);
                    }
                }
                let deadline = tokio::time::Instant::now() + this.idle_limit;
                this.idle.as_mut().reset(deadline);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.finish(Outcome::UpstreamFailed);
                Poll::Ready(Some(Err(BodyError::Upstream(e.into()))))
            }
            Poll::Ready(None) => {
                this.finish(Outcome::Ended);
                Poll::Ready(None)
            }
            Poll::Pending => {
                if this.idle.as_mut().poll(cx).is_ready() {
                    this.finish(Outcome::IdleTimeout);
                    return Poll::Ready(Some(Err(BodyError::Idle(this.idle_limit))));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B: Body> Drop for MeteredBody<B> {
    fn drop(&mut self) {
        let outcome = if self.inner.is_end_stream() {
            Outcome::Ended
        } else {
            Outcome::ClientGone
        };
        self.finish(outcome);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MESSAGE: &[u8] = br#"{"type":"message","content":[{"type":"text","text":"hi"}],"usage":{"input_tokens":7,"output_tokens":2}}"#;

    #[test]
    fn a_json_body_is_read_whole_or_charged_by_its_size() {
        let mut tap = Tap::for_content_type(Some("application/json"), true);
        tap.feed(&MESSAGE[..20]);
        tap.feed(&MESSAGE[20..]);
        let r = tap.result(true);
        assert_eq!(r.usage.map(|u| (u.input_tokens, u.output_tokens)), Some((7, 2)));
        assert_eq!(
            r.delivered,
            Some(Delivered {
                content_bytes: MESSAGE.len() as u64,
                final_usage: true
            })
        );

        // Over the limit the body is dropped, and stays dropped: a later small chunk does not
        // start a partial body that could parse.
        let mut tap = Tap::for_content_type(Some("application/json"), true);
        tap.feed(&vec![b' '; JSON_TAP_LIMIT]);
        tap.feed(MESSAGE);
        let r = tap.result(true);
        assert_eq!(r.usage, None);
        let d = r.delivered.unwrap();
        assert!(!d.final_usage);
        assert_eq!(d.content_bytes, (JSON_TAP_LIMIT + MESSAGE.len()) as u64);
    }

    #[test]
    fn unmetered_bodies_deliver_nothing_to_charge() {
        let mut tap = Tap::for_content_type(Some("application/json"), false);
        tap.feed(MESSAGE);
        let r = tap.result(true);
        assert!(r.usage.is_none() && r.delivered.is_none());
        let tap = Tap::for_content_type(Some("text/event-stream"), true);
        assert_eq!(
            tap.result(false).delivered,
            Some(Delivered::default()),
            "a stream that sent nothing delivered nothing"
        );
    }
}
