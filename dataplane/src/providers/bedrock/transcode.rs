//! Bedrock response bodies as Anthropic ones: the event stream of
//! `invoke-with-response-stream` as Anthropic SSE, and small JSON answers converted whole.
//!
//! **The stream.** Each `chunk` event carries one Anthropic stream event, base64-encoded; it is
//! written as `event: <its type>` and `data: <its JSON, byte for byte>` (members Bedrock adds,
//! such as `amazon-bedrock-invocationMetrics` on `message_stop`, stay). Events decoded from one
//! upstream read leave as one chunk, and nothing waits for more input to fill a buffer. An
//! exception or error message, or a stream that cannot be decoded, becomes an Anthropic SSE
//! `error` event and ends the body. While the upstream is silent a `ping` event is sent every
//! [`PING_EVERY`]; after `idle` of silence the body ends with an error.

use std::borrow::Cow;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http_body::{Body, Frame};
use tokio::time::{Instant, Sleep};

use super::errors;
use super::eventstream::{Decoder, Message};

/// Boxed error of the bodies here.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Upstream silence after which a ping is sent (Claude Code gives up on streams silent for
/// 300 s; proxies in between often after 60 s).
pub const PING_EVERY: Duration = Duration::from_secs(15);

/// What Anthropic sends as a keep-alive.
pub const PING: &[u8] = b"event: ping\ndata: {\"type\": \"ping\"}\n\n";

/// An Anthropic SSE `error` event.
pub fn sse_error(error_type: &str, message: &str) -> Vec<u8> {
    // Members in Anthropic's order (`json!` would sort them).
    let quote = |s: &str| serde_json::Value::from(s).to_string();
    format!(
        "event: error\ndata: {{\"type\":\"error\",\"error\":{{\"type\":{},\"message\":{}}}}}\n\n",
        quote(error_type),
        quote(message)
    )
    .into_bytes()
}

/// Appends `data` as an SSE event named `name` (a JSON text with line breaks outside strings
/// becomes several `data` lines, which SSE joins back with LF).
fn push_event(out: &mut Vec<u8>, name: &str, data: &[u8]) {
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(name.as_bytes());
    out.push(b'\n');
    if !data.contains(&b'\n') && !data.contains(&b'\r') {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(data);
        out.push(b'\n');
    } else {
        let text = String::from_utf8_lossy(data);
        for line in text.lines() {
            out.extend_from_slice(b"data: ");
            out.extend_from_slice(line.trim_end_matches('\r').as_bytes());
            out.push(b'\n');
        }
    }
    out.push(b'\n');
}

/// What one decoded message asks for.
enum Step {
    Continue,
    End,
}

/// Appends the SSE for `msg`; sets `stopped` on the `message_stop` event.
fn transcode_message(msg: &Message, out: &mut Vec<u8>, stopped: &mut bool) -> Step {
    match msg.header_str(":message-type") {
        Some("event") => {
            if msg.header_str(":event-type") != Some("chunk") {
                return Step::Continue;
            }
            match chunk_event(&msg.payload) {
                Ok((name, json)) => {
                    *stopped |= name == "message_stop";
                    push_event(out, &name, &json);
                    Step::Continue
                }
                Err(why) => {
                    out.extend(sse_error("api_error", &why));
                    Step::End
                }
            }
        }
        Some("exception") => {
            let name = msg.header_str(":exception-type").unwrap_or("unknown");
            let error_type = errors::lookup(name)
                .filter(|m| !m.credentials)
                .map_or("api_error", |m| m.error_type);
            let message = exception_message(&msg.payload)
                .unwrap_or_else(|| format!("Bedrock {name} during the stream"));
            out.extend(sse_error(error_type, &message));
            Step::End
        }
        Some("error") => {
            let code = msg.header_str(":error-code").unwrap_or("unknown");
            let message = msg.header_str(":error-message").unwrap_or("");
            out.extend(sse_error(
                "api_error",
                &format!("Bedrock stream error {code}: {message}"),
            ));
            Step::End
        }
        // Unknown message types are ignored, as the AWS SDKs do.
        _ => Step::Continue,
    }
}

/// The event name and JSON of a `chunk` payload (`{"bytes":"<base64>"}`).
fn chunk_event(payload: &[u8]) -> Result<(String, Vec<u8>), String> {
    #[derive(serde::Deserialize)]
    struct Chunk<'a> {
        #[serde(borrow)]
        bytes: Cow<'a, str>,
    }
    #[derive(serde::Deserialize)]
    struct Typed<'a> {
        #[serde(borrow, rename = "type")]
        kind: Cow<'a, str>,
    }
    let chunk: Chunk<'_> =
        serde_json::from_slice(payload).map_err(|e| format!("unreadable chunk from Bedrock: {e}"))?;
    let json = base64::engine::general_purpose::STANDARD
        .decode(chunk.bytes.as_bytes())
        .map_err(|e| format!("unreadable chunk from Bedrock: {e}"))?;
    let typed: Typed<'_> =
        serde_json::from_slice(&json).map_err(|e| format!("unreadable event from Bedrock: {e}"))?;
    let name = typed.kind.into_owned();
    if name.is_empty() || name.contains(['\n', '\r']) {
        return Err("event from Bedrock with an unusable type".into());
    }
    Ok((name, json))
}

/// The `message` of an exception payload.
fn exception_message(payload: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct E {
        #[serde(alias = "Message")]
        message: Option<String>,
    }
    match serde_json::from_slice::<E>(payload) {
        Ok(E { message: Some(m) }) => Some(m),
        Ok(_) => None,
        Err(_) if !payload.is_empty() => Some(String::from_utf8_lossy(payload).into_owned()),
        Err(_) => None,
    }
}

/// Why the stream body ended early.
#[derive(Debug, thiserror::Error)]
#[error("Bedrock sent nothing for {0:?}")]
pub struct IdleTimeout(pub Duration);

/// The ping timer and the idle timer.
type Timers = (Pin<Box<Sleep>>, Pin<Box<Sleep>>);

/// The transcoding body; see the module docs.
pub struct Transcoder<B> {
    inner: Pin<Box<B>>,
    decoder: Decoder,
    ping_every: Duration,
    idle: Duration,
    /// Created at the first poll (a timer needs the runtime).
    timers: Option<Timers>,
    done: bool,
    /// `message_stop` went out: the message is complete.
    stopped: bool,
}

impl<B> Transcoder<B> {
    /// Transcodes `inner`, pinging every [`PING_EVERY`] of silence, ending after `idle`.
    pub fn new(inner: B, idle: Duration) -> Self {
        Self::with_ping(inner, PING_EVERY, idle)
    }

    /// Like [`Transcoder::new`] with another ping interval (tests).
    pub fn with_ping(inner: B, ping_every: Duration, idle: Duration) -> Self {
        Self {
            inner: Box::pin(inner),
            decoder: Decoder::new(),
            ping_every,
            idle,
            timers: None,
            done: false,
            stopped: false,
        }
    }
}

/// Appends the SSE of every complete message; `true` when the stream must end.
fn drain(decoder: &mut Decoder, out: &mut Vec<u8>, stopped: &mut bool) -> bool {
    loop {
        match decoder.next_message() {
            Ok(Some(msg)) => {
                if let Step::End = transcode_message(&msg, out, stopped) {
                    return true;
                }
            }
            Ok(None) => return false,
            Err(e) => {
                out.extend(sse_error(
                    "api_error",
                    &format!("unreadable stream from Bedrock: {e}"),
                ));
                return true;
            }
        }
    }
}

impl<B> Body for Transcoder<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        let (ping_every, idle) = (this.ping_every, this.idle);
        let timers = this.timers.get_or_insert_with(|| {
            let now = Instant::now();
            (
                Box::pin(tokio::time::sleep_until(now + ping_every)),
                Box::pin(tokio::time::sleep_until(now + idle)),
            )
        });
        loop {
            match this.inner.as_mut().poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    let Ok(data) = frame.into_data() else { continue };
                    if data.is_empty() {
                        continue;
                    }
                    let now = Instant::now();
                    timers.0.as_mut().reset(now + ping_every);
                    timers.1.as_mut().reset(now + idle);
                    this.decoder.feed(&data);
                    let mut out = Vec::new();
                    if drain(&mut this.decoder, &mut out, &mut this.stopped) {
                        this.done = true;
                    }
                    if !out.is_empty() {
                        return Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))));
                    }
                    if this.done {
                        return Poll::Ready(None);
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(e.into())));
                }
                Poll::Ready(None) => {
                    this.done = true;
                    let cut = if this.decoder.pending() > 0 {
                        "Bedrock's event stream ended in the middle of a message"
                    } else if !this.stopped {
                        // A clean end without `message_stop` is a cut answer: say so, as the
                        // Anthropic API's own streams end with an error event.
                        "Bedrock's event stream ended before message_stop"
                    } else {
                        return Poll::Ready(None);
                    };
                    return Poll::Ready(Some(Ok(Frame::data(Bytes::from(sse_error("api_error", cut))))));
                }
                Poll::Pending => {
                    if timers.1.as_mut().poll(cx).is_ready() {
                        this.done = true;
                        return Poll::Ready(Some(Err(Box::new(IdleTimeout(idle)))));
                    }
                    if timers.0.as_mut().poll(cx).is_ready() {
                        timers.0.as_mut().reset(Instant::now() + ping_every);
                        return Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(PING)))));
                    }
                    return Poll::Pending;
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }
}

/// A conversion of a whole (small) answer.
pub type Convert = Box<dyn FnOnce(Bytes) -> Result<Bytes, String> + Send>;

/// A body that reads its upstream whole (up to a bound) and sends the conversion of it.
pub struct Converted<B> {
    inner: Pin<Box<B>>,
    buf: Vec<u8>,
    limit: usize,
    convert: Option<Convert>,
}

impl<B> Converted<B> {
    /// Converts `inner`'s bytes (at most `limit` of them are read) with `convert`.
    pub fn new(inner: B, limit: usize, convert: Convert) -> Self {
        Self {
            inner: Box::pin(inner),
            buf: Vec::new(),
            limit,
            convert: Some(convert),
        }
    }
}

/// Why a converted body failed.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConvertError(pub String);

impl<B> Body for Converted<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if this.convert.is_none() {
            return Poll::Ready(None);
        }
        loop {
            let finished = this.buf.len() >= this.limit;
            if !finished {
                match this.inner.as_mut().poll_frame(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Some(Err(e))) => {
                        this.convert = None;
                        return Poll::Ready(Some(Err(e.into())));
                    }
                    Poll::Ready(Some(Ok(frame))) => {
                        if let Ok(data) = frame.into_data() {
                            let room = this.limit - this.buf.len();
                            this.buf.extend_from_slice(&data[..data.len().min(room)]);
                        }
                        continue;
                    }
                    Poll::Ready(None) => {}
                }
            }
            let Some(convert) = this.convert.take() else {
                return Poll::Ready(None);
            };
            return Poll::Ready(Some(match convert(Bytes::from(std::mem::take(&mut this.buf))) {
                Ok(out) => Ok(Frame::data(out)),
                Err(why) => Err(Box::new(ConvertError(why))),
            }));
        }
    }

    fn is_end_stream(&self) -> bool {
        self.convert.is_none()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use http_body_util::BodyExt;

    use super::super::eventstream::{HeaderValue, encode};
    use super::*;

    /// A body of given chunks, then a pause (pending forever) or the end.
    struct Chunks {
        chunks: VecDeque<Bytes>,
        hang: bool,
    }

    impl Body for Chunks {
        type Data = Bytes;
        type Error = std::convert::Infallible;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            match self.chunks.pop_front() {
                Some(c) => Poll::Ready(Some(Ok(Frame::data(c)))),
                None if self.hang => Poll::Pending,
                None => Poll::Ready(None),
            }
        }
    }

    fn body(chunks: Vec<Vec<u8>>) -> Chunks {
        Chunks {
            chunks: chunks.into_iter().map(Bytes::from).collect(),
            hang: false,
        }
    }

    fn s(v: &str) -> HeaderValue {
        HeaderValue::String(v.into())
    }

    fn chunk(json: &str) -> Vec<u8> {
        let b64 = base64::engine::general_purpose::STANDARD.encode(json);
        encode(
            &[
                (":event-type", s("chunk")),
                (":content-type", s("application/json")),
                (":message-type", s("event")),
            ],
            format!(r#"{{"bytes":"{b64}","p":"abcdefghij"}}"#).as_bytes(),
        )
    }

    fn exception(kind: &str, message: &str) -> Vec<u8> {
        encode(
            &[
                (":exception-type", s(kind)),
                (":content-type", s("application/json")),
                (":message-type", s("exception")),
            ],
            serde_json::json!({ "message": message }).to_string().as_bytes(),
        )
    }

    const EVENTS: [&str; 6] = [
        r#"{"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","model":"claude","content":[],"stop_reason":null,"usage":{"input_tokens":12,"output_tokens":1}}}"#,
        r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
        r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"héllo \u2603 \"q\""}}"#,
        r#"{"type":"content_block_stop","index":0}"#,
        r#"{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":5}}"#,
        r#"{"type":"message_stop","amazon-bedrock-invocationMetrics":{"inputTokenCount":12,"outputTokenCount":5,"invocationLatency":100,"firstByteLatency":50}}"#,
    ];

    fn expected_sse() -> String {
        EVENTS
            .iter()
            .map(|e| {
                let v: serde_json::Value = serde_json::from_str(e).unwrap();
                format!("event: {}\ndata: {e}\n\n", v["type"].as_str().unwrap())
            })
            .collect()
    }

    async fn collect(b: impl Body<Data = Bytes, Error = BoxError>) -> (Vec<Bytes>, Option<String>) {
        let mut b = std::pin::pin!(b);
        let mut out = Vec::new();
        while let Some(f) = b.frame().await {
            match f {
                Ok(f) => out.extend(f.into_data().ok()),
                Err(e) => return (out, Some(e.to_string())),
            }
        }
        (out, None)
    }

    fn text(chunks: &[Bytes]) -> String {
        chunks
            .iter()
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect()
    }

    #[tokio::test]
    async fn a_clean_end_before_message_stop_is_an_error_event() {
        // Everything but message_stop: the client learns the answer was cut.
        let stream: Vec<u8> = EVENTS[..5].iter().flat_map(|e| chunk(e)).collect();
        let (chunks, err) = collect(Transcoder::new(body(vec![stream]), Duration::from_secs(5))).await;
        assert_eq!(err, None);
        let out = text(&chunks);
        assert!(out.starts_with("event: message_start"), "{out}");
        assert!(
            out.ends_with("event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"api_error\",\"message\":\"Bedrock's event stream ended before message_stop\"}}\n\n"),
            "{out}"
        );
    }

    #[tokio::test]
    async fn round_trip_split_at_every_byte() {
        let stream: Vec<u8> = EVENTS.iter().flat_map(|e| chunk(e)).collect();
        let want = expected_sse();
        for i in 0..=stream.len() {
            let t = Transcoder::new(
                body(vec![stream[..i].to_vec(), stream[i..].to_vec()]),
                Duration::from_secs(5),
            );
            let (chunks, err) = collect(t).await;
            assert_eq!(err, None);
            assert_eq!(text(&chunks), want, "split at {i}");
        }
        let bytes: Vec<Vec<u8>> = stream.iter().map(|b| vec![*b]).collect();
        let (chunks, _) = collect(Transcoder::new(body(bytes), Duration::from_secs(5))).await;
        assert_eq!(text(&chunks), want, "byte by byte");
    }

    #[tokio::test]
    async fn events_of_one_read_leave_as_one_chunk() {
        let stream: Vec<u8> = EVENTS.iter().flat_map(|e| chunk(e)).collect();
        let (chunks, _) = collect(Transcoder::new(body(vec![stream]), Duration::from_secs(5))).await;
        assert_eq!(chunks.len(), 1);
        assert_eq!(text(&chunks), expected_sse());
    }

    #[tokio::test]
    async fn exceptions_become_sse_errors_and_end_the_stream() {
        for (kind, error_type) in [
            ("throttlingException", "rate_limit_error"),
            ("modelStreamErrorException", "api_error"),
            ("internalServerException", "api_error"),
            ("serviceUnavailableException", "overloaded_error"),
            ("validationException", "invalid_request_error"),
            ("modelTimeoutException", "timeout_error"),
            ("somethingNewException", "api_error"),
        ] {
            let mut stream = chunk(EVENTS[0]);
            stream.extend(exception(kind, "it broke"));
            stream.extend(chunk(EVENTS[1]));
            let (chunks, err) = collect(Transcoder::new(body(vec![stream]), Duration::from_secs(5))).await;
            assert_eq!(err, None);
            let got = text(&chunks);
            let tail = format!(
                "event: error\ndata: {{\"type\":\"error\",\"error\":{{\"type\":\"{error_type}\",\"message\":\"it broke\"}}}}\n\n"
            );
            assert!(got.ends_with(&tail), "{kind}: {got}");
            assert!(
                !got.contains("content_block_start"),
                "nothing after the exception"
            );
        }
        let error = encode(
            &[
                (":message-type", s("error")),
                (":error-code", s("InternalFailure")),
                (":error-message", s("oops")),
            ],
            b"",
        );
        let (chunks, _) = collect(Transcoder::new(body(vec![error]), Duration::from_secs(5))).await;
        assert!(text(&chunks).contains("Bedrock stream error InternalFailure: oops"));
    }

    #[tokio::test]
    async fn garbage_truncation_and_bad_chunks_end_with_an_error_event() {
        let mut corrupt = chunk(EVENTS[0]);
        let n = corrupt.len();
        corrupt[n - 1] ^= 1;
        let truncated = chunk(EVENTS[0])[..20].to_vec();
        let not_base64 = encode(
            &[(":message-type", s("event")), (":event-type", s("chunk"))],
            br#"{"bytes":"!!!"}"#,
        );
        let no_type = chunk(r#"{"x":1}"#);
        for (stream, why) in [
            (corrupt, "checksum"),
            (truncated, "in the middle of a message"),
            (not_base64, "unreadable chunk"),
            (no_type, "unreadable event"),
        ] {
            let (chunks, err) = collect(Transcoder::new(body(vec![stream]), Duration::from_secs(5))).await;
            assert_eq!(err, None);
            let got = text(&chunks);
            assert!(
                got.starts_with("event: error\n") && got.contains(why),
                "{why}: {got}"
            );
        }
    }

    #[tokio::test]
    async fn silence_brings_pings_then_an_error() {
        let b = Chunks {
            chunks: VecDeque::from([Bytes::from(chunk(EVENTS[0]))]),
            hang: true,
        };
        let t = Transcoder::with_ping(b, Duration::from_millis(40), Duration::from_millis(190));
        let started = std::time::Instant::now();
        let (chunks, err) = collect(t).await;
        assert!(text(&chunks[..1]).starts_with("event: message_start"));
        let pings = chunks[1..].iter().filter(|c| &c[..] == PING).count();
        assert_eq!(pings, chunks.len() - 1, "only pings after the silence began");
        assert!((3..=5).contains(&pings), "{pings} pings");
        assert!(err.unwrap().contains("Bedrock sent nothing"));
        assert!(started.elapsed() >= Duration::from_millis(190));
    }

    #[tokio::test]
    async fn converted_bodies_read_whole_and_fail_on_unconvertible_answers() {
        let conv: Convert = Box::new(|b| Ok(Bytes::from(format!("<{}>", String::from_utf8_lossy(&b)))));
        let (chunks, err) = collect(Converted::new(
            body(vec![b"ab".to_vec(), b"cd".to_vec()]),
            3,
            conv,
        ))
        .await;
        assert_eq!((text(&chunks), err), ("<abc>".to_owned(), None));
        let conv: Convert = Box::new(|_| Err("not JSON".into()));
        let (_, err) = collect(Converted::new(body(vec![b"x".to_vec()]), 10, conv)).await;
        assert_eq!(err.as_deref(), Some("not JSON"));
    }

    #[test]
    fn multi_line_json_becomes_several_data_lines() {
        let mut out = Vec::new();
        push_event(&mut out, "x", b"{\n\"a\":1\r\n}");
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "event: x\ndata: {\ndata: \"a\":1\ndata: }\n\n"
        );
    }
}
