//! The response body handed to the client: upstream frames pass through one by one as they
//! arrive (no buffering), while a tap reads usage on the side. When the body ends, fails,
//! goes idle too long or is dropped (client gone), the exchange is accounted exactly once.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::Sleep;

use super::accounting::{Completion, Outcome};
use crate::usage::{SseUsageTap, Usage, usage_from_json};

/// Largest non-streaming body kept aside for reading usage.
const JSON_TAP_LIMIT: usize = 16 << 20;

/// How usage is read from a response.
pub enum Tap {
    /// An SSE stream.
    Sse(Box<SseUsageTap>),
    /// A JSON body, kept aside up to a limit.
    Json(Vec<u8>),
    /// Not read (errors, count_tokens).
    Off,
}

impl Tap {
    /// Chooses the tap from the response content type.
    pub fn for_content_type(content_type: Option<&str>, enabled: bool) -> Tap {
        match content_type {
            _ if !enabled => Tap::Off,
            Some(ct) if ct.starts_with("text/event-stream") => Tap::Sse(Box::default()),
            Some(ct) if ct.starts_with("application/json") => Tap::Json(Vec::new()),
            _ => Tap::Off,
        }
    }

    fn feed(&mut self, data: &[u8]) {
        match self {
            Tap::Sse(t) => t.feed(data),
            Tap::Json(buf) if buf.len() + data.len() <= JSON_TAP_LIMIT => buf.extend_from_slice(data),
            Tap::Json(buf) => *buf = Vec::new(),
            Tap::Off => {}
        }
    }

    /// Usage read so far, and whether the response was complete.
    fn result(&self, ended: bool) -> (Option<Usage>, bool, Option<String>) {
        match self {
            Tap::Sse(t) => {
                let err = t.stream_error().map(|e| format!("{e:?}"));
                let usage = (t.events_seen() > 0).then(|| t.usage());
                (usage, t.completed() && err.is_none(), err)
            }
            Tap::Json(buf) => match usage_from_json(buf) {
                Some((u, _)) => (Some(u), ended, None),
                None => (None, ended, None),
            },
            Tap::Off => (None, ended, None),
        }
    }
}

/// A pass-through body that meters what flows through it.
pub struct MeteredBody {
    inner: Incoming,
    tap: Tap,
    idle_limit: Duration,
    idle: Pin<Box<Sleep>>,
    first_byte: Option<Instant>,
    completion: Option<Completion>,
}

/// Error ending a metered body early.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The upstream connection failed mid-body.
    #[error("upstream body error: {0}")]
    Upstream(#[from] hyper::Error),
    /// The upstream sent nothing for too long.
    #[error("upstream stream idle for more than {0:?}")]
    Idle(Duration),
}

impl MeteredBody {
    /// Wraps an upstream body.
    pub fn new(inner: Incoming, tap: Tap, idle_limit: Duration, completion: Completion) -> Self {
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
            let (usage, complete, stream_error) = self.tap.result(ended);
            c.finish(usage, complete, stream_error, self.first_byte, outcome);
        }
    }
}

impl Body for MeteredBody {
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
                Poll::Ready(Some(Err(BodyError::Upstream(e))))
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

impl Drop for MeteredBody {
    fn drop(&mut self) {
        let outcome = if self.inner.is_end_stream() {
            Outcome::Ended
        } else {
            Outcome::ClientGone
        };
        self.finish(outcome);
    }
}
