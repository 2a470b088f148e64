//! The response body type of the fake: a queue of pre-built chunks, optionally dripped with a delay
//! between chunks, optionally held after the first chunk until a test releases it, optionally
//! ending in an error that makes hyper abort the connection.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::sync::Semaphore;
use tokio::time::{Instant, Sleep};

/// Error type of [`FakeBody`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Response body served by the fake.
///
/// Every chunk is yielded as one data frame (for SSE: one event per frame, like the real API).
/// Bodies built with [`FakeBody::full`] advertise an exact length (so hyper sends
/// `content-length`); streamed bodies are sent with chunked transfer encoding.
pub struct FakeBody {
    chunks: VecDeque<Bytes>,
    exact_len: Option<u64>,
    /// End with an error instead of a clean end of stream: hyper then closes the connection
    /// without the terminating chunk, which is how an upstream "cut" looks on the wire.
    cut: bool,
    /// Grace period before the cut, so that hyper flushes the chunks written so far.
    cut_grace: Option<Pin<Box<Sleep>>>,
    drip: Option<Drip>,
    /// Resolves when the test releases the body; polled once the first chunk is out.
    hold: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
    /// Whether the first chunk has been yielded.
    started: bool,
}

/// How long a cut body waits, after its last chunk, before failing.
const CUT_GRACE: Duration = Duration::from_millis(20);

struct Drip {
    delay: Duration,
    sleep: Pin<Box<Sleep>>,
    armed: bool,
}

impl FakeBody {
    /// An empty body with `content-length: 0`.
    pub fn empty() -> Self {
        Self {
            chunks: VecDeque::new(),
            exact_len: Some(0),
            cut: false,
            cut_grace: None,
            drip: None,
            hold: None,
            started: false,
        }
    }

    /// A complete body of known length.
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        let bytes = bytes.into();
        let len = bytes.len() as u64;
        let mut chunks = VecDeque::with_capacity(1);
        if !bytes.is_empty() {
            chunks.push_back(bytes);
        }
        Self {
            chunks,
            exact_len: Some(len),
            cut: false,
            cut_grace: None,
            drip: None,
            hold: None,
            started: false,
        }
    }

    /// A streamed body (chunked transfer encoding), one frame per chunk.
    pub fn chunks(chunks: Vec<Bytes>) -> Self {
        Self {
            chunks: chunks.into(),
            exact_len: None,
            cut: false,
            cut_grace: None,
            drip: None,
            hold: None,
            started: false,
        }
    }

    /// After the last chunk, fail the body so that the connection is closed abruptly.
    pub fn then_cut(mut self) -> Self {
        self.cut = true;
        self.exact_len = None;
        self
    }

    /// Wait `delay` between consecutive chunks (the first chunk is sent immediately).
    /// Must be called inside a Tokio runtime.
    pub fn dripped(mut self, delay: Duration) -> Self {
        if !delay.is_zero() {
            self.drip = Some(Drip {
                delay,
                sleep: Box::pin(tokio::time::sleep(delay)),
                armed: false,
            });
        }
        self
    }
}

impl FakeBody {
    /// After the first chunk, wait for one permit of `gate` (consumed) before the rest: the
    /// upstream is provably unfinished until the test calls `gate.add_permits(1)`.
    pub fn held_after_first(mut self, gate: Arc<Semaphore>) -> Self {
        self.hold = Some(Box::pin(async move {
            if let Ok(permit) = gate.acquire_owned().await {
                permit.forget();
            }
        }));
        self
    }
}

impl Body for FakeBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let more = !this.chunks.is_empty() || this.cut;
        if this.started && more {
            if let Some(hold) = this.hold.as_mut() {
                ready!(hold.as_mut().poll(cx));
                this.hold = None;
            }
        }
        if let Some(drip) = this.drip.as_mut() {
            if drip.armed && more {
                ready!(drip.sleep.as_mut().poll(cx));
                drip.armed = false;
            }
        }
        match this.chunks.pop_front() {
            Some(chunk) => {
                this.started = true;
                if let Some(drip) = this.drip.as_mut() {
                    let deadline = Instant::now() + drip.delay;
                    drip.sleep.as_mut().reset(deadline);
                    drip.armed = true;
                }
                Poll::Ready(Some(Ok(Frame::data(chunk))))
            }
            None if this.cut => {
                // hyper aborts the connection on a body error without flushing what it buffered:
                // wait a little so the chunks before the cut reach the client.
                let grace = this
                    .cut_grace
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(CUT_GRACE)));
                ready!(grace.as_mut().poll(cx));
                this.cut = false;
                Poll::Ready(Some(Err(Box::new(std::io::Error::new(
                    std::io::ErrorKind::ConnectionAborted,
                    "fake-anthropic: connection cut on purpose (scenario cut)",
                )))))
            }
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.chunks.is_empty() && !self.cut
    }

    fn size_hint(&self) -> SizeHint {
        match self.exact_len {
            Some(len) => SizeHint::with_exact(len),
            None => SizeHint::default(),
        }
    }
}
