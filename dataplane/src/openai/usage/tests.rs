use super::*;
use crate::pricing::{PicoUsd, PriceTable};

/// Everything observable about a tap, for comparing feeds.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Summary {
    usage: Option<Usage>,
    completed: bool,
    error: Option<String>,
    content_bytes: u64,
    final_usage: bool,
    model: Option<String>,
    events_seen: u64,
    malformed_events: u64,
    incomplete: bool,
}

trait Probe: StreamTap + Default {
    fn summary(&self) -> Summary;
    fn held(&self) -> usize;
}

impl Probe for ResponsesTap {
    fn summary(&self) -> Summary {
        Summary {
            usage: self.usage(),
            completed: self.completed(),
            error: self.stream_error(),
            content_bytes: self.content_bytes(),
            final_usage: self.final_usage(),
            model: self.model().map(str::to_owned),
            events_seen: self.events_seen(),
            malformed_events: self.malformed_events(),
            incomplete: self.incomplete(),
        }
    }
    fn held(&self) -> usize {
        self.framer.held_len()
    }
}

impl Probe for ChatTap {
    fn summary(&self) -> Summary {
        Summary {
            usage: self.usage(),
            completed: self.completed(),
            error: self.stream_error(),
            content_bytes: self.content_bytes(),
            final_usage: self.final_usage(),
            model: self.model().map(str::to_owned),
            events_seen: self.events_seen(),
            malformed_events: self.malformed_events(),
            incomplete: false,
        }
    }
    fn held(&self) -> usize {
        self.framer.held_len()
    }
}

fn feed<'a, T: Probe>(chunks: impl IntoIterator<Item = &'a [u8]>) -> Summary {
    let mut tap = T::default();
    for chunk in chunks {
        tap.feed(chunk);
    }
    tap.summary()
}

/// What feeding the stream whole reads, checked equal for every split into two chunks, for
/// one byte at a time, and with CRLF and CR line endings.
fn read_at_every_split<T: Probe>(stream: &str) -> Summary {
    let expected = feed::<T>([stream.as_bytes()]);
    for variant in [
        stream.to_owned(),
        stream.replace('\n', "\r\n"),
        stream.replace('\n', "\r"),
    ] {
        let bytes = variant.as_bytes();
        assert_eq!(feed::<T>([bytes]), expected, "line endings of {variant:?}");
        for at in 0..=bytes.len() {
            let (a, b) = bytes.split_at(at);
            assert_eq!(feed::<T>([a, b]), expected, "split at byte {at}");
        }
        assert_eq!(feed::<T>(bytes.chunks(1)), expected, "1-byte chunks");
    }
    expected
}

/// A Codex CLI turn on the Responses API, trimmed.
const RESPONSES_STREAM: &str = r#"event: response.created
data: {"type":"response.created","sequence_number":0,"response":{"id":"resp_1","object":"response","status":"in_progress","model":"gpt-5.3-codex","instructions":"You are Codex","usage":null}}

event: response.in_progress
data: {"type":"response.in_progress","sequence_number":1,"response":{"id":"resp_1","status":"in_progress","usage":null}}

: keep-alive

event: response.output_item.added
data: {"type":"response.output_item.added","sequence_number":2,"output_index":0,"item":{"type":"reasoning","id":"rs_1","summary":[]}}

event: response.reasoning_summary_text.delta
data: {"type":"response.reasoning_summary_text.delta","sequence_number":3,"item_id":"rs_1","output_index":0,"summary_index":0,"delta":"**Plan**"}

event: response.output_text.delta
data: {"type":"response.output_text.delta","sequence_number":4,"item_id":"msg_1","output_index":1,"content_index":0,"delta":"Hello \"w\u00f6rld\""}

event: response.function_call_arguments.delta
data: {"type":"response.function_call_arguments.delta","sequence_number":5,"item_id":"fc_1","output_index":2,"delta":"{\"cmd\":[\"ls\"]}"}

event: response.custom_tool_call_input.delta
data: {"type":"response.custom_tool_call_input.delta","sequence_number":6,"item_id":"ct_1","output_index":3,"delta":"*** Begin Patch"}

event: response.web_search_call.completed
data: {"type":"response.web_search_call.completed","sequence_number":7,"item_id":"ws_1","output_index":4}

event: response.completed
data: {"type":"response.completed","sequence_number":8,"response":{"id":"resp_1","object":"response","status":"completed","model":"gpt-5.3-codex","output":[{"type":"message","content":[{"type":"output_text","text":"usage: {\"input_tokens\": 1}"}]},{"type":"web_search_call","id":"ws_1"}],"usage":{"input_tokens":10000,"input_tokens_details":{"cached_tokens":8000},"output_tokens":1500,"output_tokens_details":{"reasoning_tokens":1000},"total_tokens":11500}}}

"#;

/// Reading of [`RESPONSES_STREAM`]: 8 + 20 + 18 + 15 content bytes.
fn responses_expected() -> Summary {
    Summary {
        usage: Some(Usage {
            input_tokens: 2000,
            output_tokens: 1500,
            cache_read_tokens: 8000,
            web_search_requests: 1,
            ..Usage::default()
        }),
        completed: true,
        error: None,
        content_bytes: 61,
        final_usage: true,
        model: Some("gpt-5.3-codex".into()),
        events_seen: 9,
        malformed_events: 0,
        incomplete: false,
    }
}

/// A Chat Completions stream with `stream_options.include_usage`, trimmed.
const CHAT_STREAM: &str = r#"data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-4.1-2025-04-14","choices":[{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"finish_reason":null}],"usage":null}

data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-4.1-2025-04-14","choices":[{"index":0,"delta":{"content":"Hi \"there\""},"finish_reason":null}],"usage":null}

data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-4.1-2025-04-14","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"get_weather","arguments":""}}]},"finish_reason":null}],"usage":null}

data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-4.1-2025-04-14","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"city\":\"Paris\"}"}}]},"finish_reason":null}],"usage":null}

data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-4.1-2025-04-14","choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}],"usage":null}

data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-4.1-2025-04-14","choices":[],"usage":{"prompt_tokens":5000,"completion_tokens":300,"total_tokens":5300,"prompt_tokens_details":{"cached_tokens":1024,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0}}}

data: [DONE]

"#;

/// Reading of [`CHAT_STREAM`]: 12 + 11 + 20 content bytes.
fn chat_expected() -> Summary {
    Summary {
        usage: Some(Usage {
            input_tokens: 3976,
            output_tokens: 300,
            cache_read_tokens: 1024,
            ..Usage::default()
        }),
        completed: true,
        error: None,
        content_bytes: 43,
        final_usage: true,
        model: Some("gpt-4.1-2025-04-14".into()),
        events_seen: 7,
        malformed_events: 0,
        incomplete: false,
    }
}

#[test]
fn responses_stream_reads_usage_deltas_and_searches_at_every_split() {
    assert_eq!(
        read_at_every_split::<ResponsesTap>(RESPONSES_STREAM),
        responses_expected()
    );
}

#[test]
fn responses_events_without_event_lines_read_the_same() {
    let unnamed: String = RESPONSES_STREAM
        .lines()
        .filter(|l| !l.starts_with("event:"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(
        read_at_every_split::<ResponsesTap>(&unnamed),
        responses_expected()
    );
}

#[test]
fn responses_stream_cut_before_its_terminal_event_is_not_final() {
    let cut = &RESPONSES_STREAM[..RESPONSES_STREAM.find("event: response.completed").unwrap()];
    let got = read_at_every_split::<ResponsesTap>(cut);
    assert_eq!(
        got,
        Summary {
            usage: Some(Usage {
                web_search_requests: 1,
                ..Usage::default()
            }),
            completed: false,
            final_usage: false,
            model: None,
            events_seen: 8,
            ..responses_expected()
        }
    );
    assert_eq!(
        feed::<ResponsesTap>([&b"event: response.created\ndata: {}\n\n"[..]]).usage,
        None
    );
}

#[test]
fn responses_incomplete_is_billed_but_not_completed() {
    let stream = r#"event: response.output_text.delta
data: {"type":"response.output_text.delta","delta":"abc"}

event: response.incomplete
data: {"type":"response.incomplete","response":{"status":"incomplete","incomplete_details":{"reason":"max_output_tokens"},"model":"gpt-5.4","usage":{"input_tokens":100,"input_tokens_details":{"cached_tokens":0},"output_tokens":64,"output_tokens_details":{"reasoning_tokens":60}}}}

"#;
    let got = read_at_every_split::<ResponsesTap>(stream);
    assert_eq!(
        got,
        Summary {
            usage: Some(Usage {
                input_tokens: 100,
                output_tokens: 64,
                ..Usage::default()
            }),
            completed: false,
            error: None,
            content_bytes: 3,
            final_usage: true,
            model: Some("gpt-5.4".into()),
            events_seen: 2,
            malformed_events: 0,
            incomplete: true,
        }
    );
}

#[test]
fn responses_failures_and_error_events_are_stream_errors() {
    let failed = r#"event: response.failed
data: {"type":"response.failed","response":{"status":"failed","error":{"code":"server_error","message":"The model failed"},"usage":null}}

"#;
    let got = read_at_every_split::<ResponsesTap>(failed);
    assert_eq!(got.error.as_deref(), Some("server_error: The model failed"));
    assert_eq!((got.usage, got.final_usage, got.completed), (None, false, false));
    // A failure that still reports usage is billed for it.
    let billed = failed.replace(
        r#""usage":null"#,
        r#""usage":{"input_tokens":7,"output_tokens":2}"#,
    );
    let got = feed::<ResponsesTap>([billed.as_bytes()]);
    assert_eq!(
        (got.usage.map(|u| u.total_tokens()), got.final_usage),
        (Some(9), true)
    );
    let no_error = r#"event: response.failed
data: {"type":"response.failed","response":{"status":"failed"}}

"#;
    assert_eq!(
        feed::<ResponsesTap>([no_error.as_bytes()]).error.as_deref(),
        Some("response.failed")
    );
    for (data, want) in [
        (
            r#"{"type":"error","code":"rate_limit_exceeded","message":"Slow down","param":null,"sequence_number":3}"#,
            "rate_limit_exceeded: Slow down",
        ),
        (
            r#"{"type":"error","error":{"type":"invalid_request_error","code":null,"message":"Bad"}}"#,
            "invalid_request_error: Bad",
        ),
        (r#"{"type":"error","message":"Only a message"}"#, "Only a message"),
    ] {
        let stream = format!("event: error\ndata: {data}\n\n");
        assert_eq!(
            read_at_every_split::<ResponsesTap>(&stream).error.as_deref(),
            Some(want)
        );
        // Unnamed, the data's type says it is an error.
        let unnamed = format!("data: {data}\n\n");
        assert_eq!(
            feed::<ResponsesTap>([unnamed.as_bytes()]).error.as_deref(),
            Some(want)
        );
    }
}

#[test]
fn responses_malformed_events_are_counted_and_deltas_still_charged() {
    let stream = "event: response.output_text.delta\ndata: {\"delta\":\"abc\n\n\
                  event: response.completed\ndata: {not json\n\n\
                  event: response.output_text.delta\ndata: {\"delta\":null}\n\n\
                  event: response.output_text.delta\ndata: {\"delta\":[1,2]}\n\n\
                  event: response.created\ndata: {not json but not read\n\n\
                  data: {\"type\":\n\n";
    let got = read_at_every_split::<ResponsesTap>(stream);
    assert_eq!(got.malformed_events, 3);
    // The unreadable delta counts whole (13 bytes), the array raw (5).
    assert_eq!(got.content_bytes, 13 + 5);
    assert!(!got.completed && got.usage.is_none());
}

#[test]
fn chat_stream_reads_usage_and_content_at_every_split() {
    assert_eq!(read_at_every_split::<ChatTap>(CHAT_STREAM), chat_expected());
}

#[test]
fn chat_stream_is_complete_only_with_its_usage_and_done() {
    let usage_chunk = CHAT_STREAM.find("data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4.1-2025-04-14\",\"choices\":[],").unwrap();
    let done = CHAT_STREAM.find("data: [DONE]").unwrap();
    // No usage chunk (the client did not ask, the gateway did not add it): never complete.
    let without_usage = format!("{}{}", &CHAT_STREAM[..usage_chunk], &CHAT_STREAM[done..]);
    let got = read_at_every_split::<ChatTap>(&without_usage);
    assert_eq!((got.usage, got.final_usage, got.completed), (None, false, false));
    // Cut before [DONE]: the final usage, not complete.
    let got = read_at_every_split::<ChatTap>(&CHAT_STREAM[..done]);
    assert_eq!(
        got,
        Summary {
            completed: false,
            events_seen: 6,
            ..chat_expected()
        }
    );
    // A later usage (servers that send it on every chunk) replaces the earlier one.
    let twice = CHAT_STREAM.replace(
        "data: [DONE]",
        r#"data: {"choices":[],"usage":{"prompt_tokens":6000,"completion_tokens":301}}

data: [DONE]"#,
    );
    let got = feed::<ChatTap>([twice.as_bytes()]);
    assert_eq!(
        got.usage,
        Some(Usage {
            input_tokens: 6000,
            output_tokens: 301,
            ..Usage::default()
        })
    );
}

#[test]
fn chat_errors_and_malformed_chunks() {
    let stream = r#"data: {"choices":[{"delta":{"content":"ab","reasoning_content":"cd","refusal":"e"}}]}

data: {"error":{"message":"The server had an error while processing your request.","type":"server_error","param":null,"code":null}}

data: {broken

"#;
    let got = read_at_every_split::<ChatTap>(stream);
    assert_eq!(
        got.error.as_deref(),
        Some("server_error: The server had an error while processing your request.")
    );
    assert_eq!((got.malformed_events, got.content_bytes), (1, 5 + 7));
    let named = "event: error\ndata: {\"message\":\"overloaded\",\"code\":\"503\"}\n\n";
    assert_eq!(
        feed::<ChatTap>([named.as_bytes()]).error.as_deref(),
        Some("503: overloaded")
    );
    let raw = "event: error\ndata: upstream went away\n\n";
    assert_eq!(
        feed::<ChatTap>([raw.as_bytes()]).error.as_deref(),
        Some("upstream went away")
    );
}

#[test]
fn json_bodies_of_both_apis() {
    let responses = br#"{"id":"resp_1","object":"response","status":"completed","model":"gpt-5.6-sol",
        "output":[{"type":"web_search_call","id":"ws_1","status":"completed"},{"type":"web_search_call","id":"ws_2"},
                  {"type":"message","content":[{"type":"output_text","text":"{\"usage\":{\"input_tokens\":9}}"}]}, 7],
        "usage":{"input_tokens":6000,"input_tokens_details":{"cached_tokens":0,"cache_write_tokens":3207},"output_tokens":100,"output_tokens_details":{"reasoning_tokens":40},"total_tokens":6100}}"#;
    assert_eq!(
        usage_from_json(Api::Responses, responses),
        Some(Usage {
            input_tokens: 2793,
            output_tokens: 100,
            cache_write_5m_tokens: 3207,
            web_search_requests: 2,
            ..Usage::default()
        })
    );
    let chat = br#"{"id":"chatcmpl-1","object":"chat.completion","model":"o4-mini-2025-04-16",
        "choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],
        "usage":{"prompt_tokens":3000,"completion_tokens":700,"total_tokens":3700,
                 "prompt_tokens_details":{"cached_tokens":2048},"completion_tokens_details":{"reasoning_tokens":512}}}"#;
    assert_eq!(
        usage_from_json(Api::Chat, chat),
        Some(Usage {
            input_tokens: 952,
            output_tokens: 700,
            cache_read_tokens: 2048,
            ..Usage::default()
        })
    );
    // Not a response of that API, or no usage: nothing.
    assert_eq!(usage_from_json(Api::Chat, responses), None);
    assert_eq!(usage_from_json(Api::Responses, chat), None);
    for body in [
        &br#"{"error":{"message":"x","type":"invalid_request_error","param":null,"code":null}}"#[..],
        br#"{"object":"response","status":"queued","usage":null}"#,
        br#"{"usage":[1]}"#,
        b"not json",
        b"[]",
    ] {
        assert_eq!(usage_from_json(Api::Responses, body), None);
        assert_eq!(usage_from_json(Api::Chat, body), None);
    }
    // Odd counts read as 0; a cached count above the total leaves no uncached input.
    let odd = br#"{"usage":{"prompt_tokens":10,"completion_tokens":"5","prompt_tokens_details":{"cached_tokens":12}}}"#;
    assert_eq!(
        usage_from_json(Api::Chat, odd),
        Some(Usage {
            cache_read_tokens: 12,
            ..Usage::default()
        })
    );
}

/// Usage to exact cost with the built-in prices: input, cached input, cache writes, output
/// (reasoning included once), web searches and a prompt-length tier, from JSON and from
/// streams of both APIs.
#[test]
fn usage_costs_exact_pico_usd_with_builtin_prices() {
    let table = PriceTable::builtin();
    let cost = |model: &str, usage: Usage| table.get(model).unwrap_or_else(|| panic!("{model}")).cost(&usage);
    let stream = |tap: &mut dyn StreamTap, s: &str| {
        tap.feed(s.as_bytes());
        tap.usage().unwrap()
    };
    // gpt-5.3-codex, Responses stream: 2000 x $1.75/M + 8000 x $0.175/M + 1500 x $14/M
    // + 1 search x $0.01.
    let usage = stream(&mut ResponsesTap::new(), RESPONSES_STREAM);
    assert_eq!(
        cost("gpt-5.3-codex", usage),
        PicoUsd(3_500_000_000 + 1_400_000_000 + 21_000_000_000 + 10_000_000_000)
    );
    // gpt-4.1, Chat stream: 3976 x $2/M + 1024 x $0.50/M + 300 x $8/M.
    let usage = stream(&mut ChatTap::new(), CHAT_STREAM);
    assert_eq!(
        cost("gpt-4.1-2025-04-14", usage),
        PicoUsd(7_952_000_000 + 512_000_000 + 2_400_000_000)
    );
    // o4-mini, Chat JSON: 952 x $1.10/M + 2048 x $0.275/M + 700 x $4.40/M.
    let chat = br#"{"object":"chat.completion","usage":{"prompt_tokens":3000,"completion_tokens":700,
        "prompt_tokens_details":{"cached_tokens":2048},"completion_tokens_details":{"reasoning_tokens":512}}}"#;
    let usage = usage_from_json(Api::Chat, chat).unwrap();
    assert_eq!(
        cost("o4-mini", usage),
        PicoUsd(1_047_200_000 + 563_200_000 + 3_080_000_000)
    );
    // gpt-5.6-sol, Responses JSON with cache writes: 2793 x $4/M + 3207 x $5/M + 100 x $20/M.
    let responses = br#"{"object":"response","usage":{"input_tokens":6000,
        "input_tokens_details":{"cached_tokens":0,"cache_write_tokens":3207},"output_tokens":100}}"#;
    let usage = usage_from_json(Api::Responses, responses).unwrap();
    assert_eq!(
        cost("gpt-5.6-sol", usage),
        PicoUsd(11_172_000_000 + 16_035_000_000 + 2_000_000_000)
    );
    // gpt-5.4 above 272k prompt tokens, Responses stream: the tier's $5/M, $0.50/M, $22.50/M.
    let long = r#"event: response.completed
data: {"type":"response.completed","response":{"usage":{"input_tokens":300000,"input_tokens_details":{"cached_tokens":200000},"output_tokens":1000}}}

"#;
    let usage = stream(&mut ResponsesTap::new(), long);
    assert_eq!(
        cost("gpt-5.4", usage),
        PicoUsd(500_000_000_000 + 100_000_000_000 + 22_500_000_000)
    );
}

#[test]
fn builtin_prices_have_the_codex_models() {
    let table = PriceTable::builtin();
    for model in [
        "gpt-5.6-sol",
        "gpt-5.6-terra",
        "gpt-5.6-luna",
        "gpt-5.5",
        "gpt-5.4",
        "gpt-5.4-mini",
        "gpt-5.3-codex",
        "gpt-5.2-codex",
        "gpt-5.1-codex-max",
        "gpt-5.1-codex-mini",
        "gpt-5-codex",
        "gpt-5",
        "gpt-4.1",
        "gpt-4.1-mini",
        "o3",
        "o4-mini",
    ] {
        let price = table.get(model).unwrap_or_else(|| panic!("{model} missing"));
        assert!(price.base().cache_read < price.base().input, "{model}");
        assert!(price.max_output_tokens().is_some(), "{model}");
    }
    // Dated snapshots resolve by name.
    assert!(table.resolve("gpt-5.4-2026-03-05").is_some());
}

// ---------------------------------------------------------------------------------------------
// Robustness

/// A small deterministic generator (no test dependency on `rand`).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

/// Streams made of SSE and JSON fragments and random bytes, so the taps' parsers are reached.
fn random_stream(rng: &mut Lcg, len: usize) -> Vec<u8> {
    const PIECES: &[&str] = &[
        "data: ",
        "event: ",
        "event: response.completed\n",
        "event: response.output_text.delta\n",
        "event: error\n",
        "event: response.web_search_call.completed\n",
        "\n",
        "\r",
        "\r\n",
        "\n\n",
        "[DONE]",
        "{\"type\":\"response.completed\",\"response\":{\"usage\":{\"input_tokens\":5,\"output_tokens\":1}}}",
        "{\"delta\":\"x\\\"y\"}",
        "{\"choices\":[{\"delta\":{\"content\":\"hi\"}}],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":",
        "{\"error\":{\"message\":\"m\"}}",
        "\"",
        "{",
        "}",
        ":",
        "\u{feff}",
        "\u{e9}",
    ];
    let mut out = Vec::with_capacity(len + 64);
    while out.len() < len {
        match rng.next() % 4 {
            0 => out.push(rng.next() as u8),
            _ => out.extend_from_slice(PIECES[(rng.next() as usize) % PIECES.len()].as_bytes()),
        }
    }
    out
}

fn never_panics_and_splits_agree<T: Probe>(stream: &[u8]) {
    let whole = feed::<T>([stream]);
    for at in 0..=stream.len() {
        let (a, b) = stream.split_at(at);
        assert_eq!(feed::<T>([a, b]), whole, "split at {at} of {stream:?}");
    }
    assert_eq!(feed::<T>(stream.chunks(1)), whole);
}

#[test]
fn random_bytes_never_panic_and_read_the_same_at_every_split() {
    let mut rng = Lcg(0x5eed);
    for round in 0..300 {
        let stream = random_stream(&mut rng, (round % 60) * 5);
        never_panics_and_splits_agree::<ResponsesTap>(&stream);
        never_panics_and_splits_agree::<ChatTap>(&stream);
    }
    // Every single-byte corruption of the real streams.
    for fixture in [RESPONSES_STREAM, CHAT_STREAM] {
        let bytes = fixture.as_bytes();
        for at in 0..bytes.len() {
            let mut mutated = bytes.to_vec();
            mutated[at] = rng.next() as u8;
            let mut r = ResponsesTap::new();
            let mut c = ChatTap::new();
            for chunk in mutated.chunks(1 + at % 13) {
                r.feed(chunk);
                c.feed(chunk);
            }
            let _ = (r.summary(), c.summary());
        }
    }
}

#[test]
fn memory_is_bounded_and_the_stream_reads_on() {
    fn check<T: Probe>(name: &str, bound: usize) -> Summary {
        let mut tap = T::default();
        tap.feed(format!("event: {name}\ndata: {{\"delta\":\"").as_bytes());
        let junk = vec![b'x'; 64 << 10];
        for _ in 0..(3 * bound / junk.len()) {
            tap.feed(&junk);
            assert!(tap.held() <= bound + 64, "held {} past {bound}", tap.held());
        }
        tap.feed(b"\"}\n\n");
        tap.summary()
    }
    let got = check::<ResponsesTap>("response.output_text.delta", RESPONSES_MAX_EVENT_BYTES);
    assert_eq!(
        (got.malformed_events, got.content_bytes),
        (1, RESPONSES_MAX_EVENT_BYTES as u64),
        "an oversize delta counts as the bound"
    );
    let got = check::<ResponsesTap>("response.completed", RESPONSES_MAX_EVENT_BYTES);
    assert_eq!(
        (got.malformed_events, got.completed, got.content_bytes),
        (1, false, 0)
    );
    let got = check::<ChatTap>("message", CHAT_MAX_EVENT_BYTES);
    assert_eq!(
        (got.malformed_events, got.content_bytes),
        (1, CHAT_MAX_EVENT_BYTES as u64)
    );
    // Events the Responses tap does not read are skipped however large, and it reads on.
    let mut tap = ResponsesTap::new();
    tap.feed(b"event: response.output_item.done\ndata: ");
    for _ in 0..200 {
        tap.feed(&[b'y'; 64 << 10]);
        assert!(tap.held() < 1024);
    }
    tap.feed(b"\n\n");
    tap.feed(RESPONSES_STREAM.as_bytes());
    let got = tap.summary();
    assert_eq!(
        (got.usage, got.completed, got.malformed_events),
        (responses_expected().usage, true, 0)
    );
}
