//! Fuzz targets: one function per parser that reads bytes from outside, each taking any bytes
//! and panicking only when a property that must hold does not. They are run by libFuzzer
//! (`make fuzz`, crate `dataplane/fuzz`) and replayed over the committed corpus and crash
//! reproducers by `dataplane/tests/fuzz_regressions.rs` in every `cargo test`.
//!
//! Targets that read a stream take the first input byte as the seed of how the rest is split
//! into chunks, and check that the split changes nothing.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use serde_json::Value;

use crate::anthropic::request;
use crate::anthropic::tools::response::Judged;
use crate::anthropic::tools::{Refused, StreamCheck, Verdict, filter_tools};
use crate::mcp::{jsonrpc, names};
use crate::policy::glob::{AllowDeny, Glob};
use crate::policy::load::parse_sources;
use crate::policy::snapshot::CredentialReader;
use crate::policy::validate::validate;
use crate::policy::{PolicyDocument, Snapshot};
use crate::pricing::PriceTable;
use crate::sse::{self, DataReader, Event, Framer, Handler};
use crate::usage::SseUsageTap;

/// A fuzz target: any bytes in; a panic means a property broke.
pub type Target = fn(&[u8]);

/// Every target by name (the names of the `dataplane/fuzz` binaries and corpus directories).
pub const TARGETS: &[(&str, Target)] = &[
    ("sse_framer", sse_framer),
    ("sse_usage", sse_usage),
    ("tool_filter", tool_filter),
    ("tool_guard", tool_guard),
    ("request_inspect", request_inspect),
    ("policy_load", policy_load),
    ("mcp_jsonrpc", mcp_jsonrpc),
];

/// Splits `data` into its seed byte and the stream, and the stream into chunks by the seed.
fn chunks(data: &[u8]) -> (&[u8], Vec<&[u8]>) {
    let Some((&seed, stream)) = data.split_first() else {
        return (&[], Vec::new());
    };
    let mut state = u64::from(seed) | 1;
    let mut out = Vec::new();
    let mut rest = stream;
    while !rest.is_empty() {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let max = usize::from(seed % 32) + 1;
        let n = 1 + (state >> 33) as usize % max;
        let (a, b) = rest.split_at(n.min(rest.len()));
        out.push(a);
        rest = b;
    }
    (stream, out)
}

/// One dispatched event: name, and data (`Err(true)` when too large, `Err(false)` skipped).
type FramedEvent = (Option<Vec<u8>>, Result<Vec<u8>, bool>);

/// What a framer dispatched.
#[derive(Debug, Default, PartialEq, Eq)]
struct Framed {
    events: Vec<FramedEvent>,
    blanks: usize,
}

impl Handler for Framed {
    fn on_event(&mut self, event: Option<Event<'_>>, _end: usize) {
        self.blanks += 1;
        if let Some(e) = event {
            let data = match e.data {
                sse::Data::Kept(d) => Ok(d.to_vec()),
                sse::Data::TooLarge => Err(true),
                sse::Data::Skipped => Err(false),
            };
            self.events.push((e.name.map(<[u8]>::to_vec), data));
        }
    }
}

/// The SSE framer: chunking never matters, the bound holds, and with room to spare it reads
/// exactly what the straightforward reading of the WHATWG rules reads.
pub fn sse_framer(data: &[u8]) {
    let (stream, parts) = chunks(data);
    for max in [1 << 20, 64] {
        let mut whole = Framed::default();
        Framer::new(max).feed(stream, &mut whole);
        let mut framer = Framer::new(max);
        let mut split = Framed::default();
        for p in &parts {
            framer.feed(p, &mut split);
            // The data, plus a data line's field name or an event line held across chunks.
            let bound = max + 7 + sse::MAX_NAME_BYTES;
            assert!(
                framer.held_len() <= bound,
                "held {} over {max}",
                framer.held_len()
            );
        }
        assert_eq!(whole, split, "chunking changed the events");
        let reference = sse::reference_events(stream);
        assert_eq!(
            whole.events.len(),
            reference.len(),
            "event count differs from the reference"
        );
        for ((name, got), (ref_name, ref_data)) in whole.events.iter().zip(&reference) {
            match (name, got) {
                (Some(n), _) => assert_eq!(n, ref_name),
                (None, _) => assert!(ref_name.len() > sse::MAX_NAME_BYTES),
            }
            match got {
                Ok(d) => assert_eq!(d, ref_data),
                Err(_) => assert!(
                    ref_data.len() + 8 > max,
                    "refused an event of {} bytes",
                    ref_data.len()
                ),
            }
        }
    }
    let mut reader = DataReader::new(64);
    for p in &parts {
        if reader.feed(p).is_err() {
            break;
        }
    }
}

/// The usage tap: never panics, and reads the same whatever the chunking.
pub fn sse_usage(data: &[u8]) {
    fn summary(t: &SseUsageTap) -> String {
        format!(
            "{:?} {:?} {:?} {} {:?} {} {} {} {}",
            t.usage(),
            t.model(),
            t.stop_reason(),
            t.completed(),
            t.stream_error(),
            t.events_seen(),
            t.malformed_events(),
            t.content_bytes(),
            t.final_usage()
        )
    }
    let (stream, parts) = chunks(data);
    let mut whole = SseUsageTap::new();
    whole.feed(stream);
    let mut split = SseUsageTap::new();
    for p in parts {
        split.feed(p);
    }
    assert_eq!(
        summary(&whole),
        summary(&split),
        "chunking changed what the tap read"
    );
}

/// The policy the tool targets judge with.
fn judge() -> AllowDeny {
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    AllowDeny::new(
        &s(&[
            "Read",
            "Edit",
            "web_search",
            "text_editor",
            "str_replace_based_edit_tool",
            "mcp_connector__mcp.example.com/*",
            "mcp__*",
        ]),
        &s(&["*delete*", "mcp__*__admin_*"]),
    )
}

/// The request filter: what it forwards is JSON when what it got was (bytes outside what it
/// reads are forwarded as they came, for the API to judge), is what it would forward again
/// unchanged (so every tool left is permitted), and asks for the same stream and connector
/// servers.
pub fn tool_filter(data: &[u8]) {
    let judge = judge();
    let Ok(first) = filter_tools(data, &judge) else {
        return;
    };
    let Some(body) = &first.body else {
        return;
    };
    if serde_json::from_slice::<Value>(data).is_ok() {
        serde_json::from_slice::<Value>(body).expect("the filtered body is JSON");
    }
    match filter_tools(body, &judge) {
        Ok(again) => {
            assert_eq!(
                again.body, None,
                "a second pass still removed {:?}",
                again.removed
            );
            assert_eq!(again.stream, first.stream);
            assert_eq!(again.connector, first.connector);
        }
        Err(Refused::Invalid(e) | Refused::NotPermitted(e)) => panic!("the filtered body is refused: {e}"),
    }
}

/// The response guard: chunking never matters; what passes is a prefix of the stream
/// (followed by the guard's `error` event when it stops), and that prefix passes a second
/// check whole; a stream that is not stopped passes byte for byte.
pub fn tool_guard(data: &[u8]) {
    let mut connector = BTreeMap::new();
    connector.insert("docs".to_owned(), "mcp.example.com/sse".to_owned());
    let judged = Judged::new(Arc::new(judge()), "fuzz".into(), connector);
    let run = |parts: &[&[u8]]| {
        let mut check = StreamCheck::with_max_event(judged.clone(), 512);
        let mut out = Vec::new();
        for p in parts {
            match check.feed(p) {
                Verdict::Pass(b) => out.extend_from_slice(&b),
                Verdict::Stop(b) => {
                    out.extend_from_slice(&b);
                    return (out, true);
                }
            }
            assert!(check.held() <= 512, "held {}", check.held());
        }
        match check.finish() {
            Verdict::Pass(b) => {
                out.extend_from_slice(&b);
                (out, false)
            }
            Verdict::Stop(b) => {
                out.extend_from_slice(&b);
                (out, true)
            }
        }
    };
    let (stream, parts) = chunks(data);
    let whole = run(&[stream]);
    assert_eq!(run(&parts), whole, "chunking changed what passed");
    let (out, stopped) = whole;
    if !stopped {
        assert_eq!(out, stream, "an unstopped stream passes byte for byte");
    } else {
        let marker = b"event: error\ndata: {\"error\":{\"message\":\"tollgate: ";
        let at = out
            .windows(marker.len())
            .rposition(|w| w == marker)
            .expect("a stopped stream ends with the guard's error event");
        let prefix = &out[..at];
        assert!(
            stream.starts_with(prefix),
            "what passed is not a prefix of the stream"
        );
        assert_eq!(
            run(&[prefix]),
            (prefix.to_vec(), false),
            "what passed does not pass again"
        );
    }
    let _ = judged.forbidden_in_message(stream);
}

/// The request-body reader: a body it accepts keeps every field but the model when the
/// model is renamed.
pub fn request_inspect(data: &[u8]) {
    let Ok(info) = request::inspect(data) else {
        return;
    };
    let body = bytes::Bytes::copy_from_slice(data);
    let renamed = info.rewrite_model(&body, "fuzz-model\u{e9}\"");
    let again = request::inspect(&renamed).expect("a renamed body is accepted");
    assert_eq!(again.model, "fuzz-model\u{e9}\"");
    assert_eq!((again.stream, again.max_tokens), (info.stream, info.max_tokens));
    let back = again.rewrite_model(&renamed, &info.model);
    assert_eq!(request::inspect(&back).expect("renamed back").model, info.model);
}

struct FuzzCreds;

impl CredentialReader for FuzzCreds {
    fn env(&self, name: &str) -> Option<String> {
        Some(format!("secret-of-{name}"))
    }

    fn file(&self, path: &str) -> std::io::Result<String> {
        Ok(format!("secret-in-{path}"))
    }
}

/// The policy loader: YAML and JSON documents parse or fail cleanly; a document that
/// validates compiles, with every key in the snapshot.
pub fn policy_load(data: &[u8]) {
    static PRICES: OnceLock<PriceTable> = OnceLock::new();
    let prices = PRICES.get_or_init(PriceTable::builtin);
    for name in ["policy.yaml", "policy.json"] {
        let Ok(loaded) = parse_sources(&[(PathBuf::from(name), data.to_vec())]) else {
            continue;
        };
        let doc: PolicyDocument = loaded.document.clone();
        let valid = validate(&doc).is_ok();
        match Snapshot::compile(loaded, prices, &FuzzCreds) {
            Ok(snapshot) => {
                assert!(valid, "compiled a document that does not validate");
                assert_eq!(snapshot.key_count(), doc.keys.len(), "a valid key was dropped");
                // Each exact route name is served by the first route matching it, with every
                // target that route lists (validation leaves none to drop).
                for route in doc.routes.iter().filter(|r| Glob::new(&r.match_).is_literal()) {
                    let first = doc
                        .routes
                        .iter()
                        .find(|r| Glob::new(&r.match_).matches(&route.match_));
                    let want = first.map(|r| r.targets.len());
                    assert_eq!(
                        snapshot
                            .route(&route.match_, crate::providers::ApiFormat::Anthropic)
                            .map(<[_]>::len),
                        want,
                        "route {}",
                        route.match_
                    );
                }
            }
            Err(_) => assert!(!valid, "a valid document did not compile"),
        }
    }
}

/// MCP JSON-RPC handling: classification of any JSON, error envelopes that are valid
/// JSON-RPC, the SSE response path, cursors and tool-name namespacing.
pub fn mcp_jsonrpc(data: &[u8]) {
    if let Ok(v) = serde_json::from_slice::<Value>(data) {
        let _ = crate::mcp::upstream::find_response(v.clone(), 1);
        match jsonrpc::classify(v) {
            Ok(jsonrpc::Message::Request { id, method, .. }) => {
                assert!(id.is_string() || id.is_number());
                let _ = method;
            }
            Ok(_) => {}
            Err(e) => {
                assert_eq!(e["jsonrpc"], "2.0");
                assert!(
                    e["error"]["code"].is_i64() && e["error"]["message"].is_string(),
                    "{e}"
                );
            }
        }
    }
    let mut reader = DataReader::new(4096);
    if let Ok(payloads) = reader.feed(data) {
        for p in payloads {
            if let Ok(v) = serde_json::from_slice::<Value>(&p) {
                let _ = jsonrpc::classify(v);
            }
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = crate::mcp::decode_cursor(text, "tools/list");
        if let Some((server, tool)) = names::split(text) {
            if let Some(q) = names::qualify(server, tool) {
                assert_eq!(q, text, "split and qualify disagree");
            }
        }
    }
}
