//! The built-in tool policy (see [`crate::anthropic::tools`] for the policy itself) applied to
//! the `tools` and `tool_choice` of a Responses or Chat Completions request.
//!
//! **Policy names.** Each entry of `tools` is judged by name (deny wins; an empty allow list
//! permits everything not denied):
//! - a tool the client defines: its name. Responses: `{"type":"function","name"}` and
//!   `{"type":"custom","name"}` (Codex's freeform `apply_patch`); Chat:
//!   `{"type":"function","function":{"name"}}` and `{"type":"custom","custom":{"name"}}`.
//!   Codex CLI's tools are `shell`/`exec_command`, `apply_patch`, `update_plan`,
//!   `view_image`, its MCP tools, ...
//! - a tool OpenAI defines, by its `type` without a `_YYYY_MM_DD` version and without
//!   `_preview`: `web_search` (`web_search`, `web_search_preview`,
//!   `web_search_preview_2025_03_11`, `web_search_2025_08_26`), `local_shell`, `shell`,
//!   `apply_patch`, `file_search`, `code_interpreter`, `image_generation`, `computer_use`
//!   (`computer_use_preview`), and any type not known yet. So the built-in `apply_patch` and
//!   `shell` tools share the names of Codex's own;
//! - a remote MCP server that OpenAI calls (`{"type":"mcp"}`): the name `mcp`, *and* every
//!   tool it may expose as `mcp_connector__<host[:port]/path>__<tool>` (after its
//!   `server_url`, as for the Anthropic MCP connector; `openai/<connector_id>` in place of
//!   the location for an OpenAI connector): the tools its `allowed_tools` names, or all of
//!   them (a policy must permit every name with that prefix) when it names none.
//!
//! **What it does.** Tools the policy does not permit are cut out of `tools` by splicing bytes:
//! every kept tool and every byte outside the array reach the provider unchanged, and a body
//! with nothing cut is returned as it came (the same bytes). A `tool_choice` that forces a tool
//! the policy does not permit (a named function or custom tool, a built-in type, an MCP server
//! whose entry was cut, or any of an `allowed_tools` list) is refused with a 400, as the
//! Anthropic filter does: forwarding it would make the provider fail less clearly. A request
//! the filter cannot judge while a policy applies (not a JSON object, duplicate `tools` or
//! `tool_choice`, a tool without a type or name) is refused with a 400 rather than forwarded
//! unfiltered.
//!
//! **What it does not guarantee.** As for Anthropic: it governs what the model is offered, not
//! what the agent runs locally; earlier turns in `input`/`messages` are not judged. Tools a
//! request does not list are not seen: a Responses `prompt` (a stored prompt template) can
//! bring its own tools, and is not judged.

use std::borrow::Cow;

use bytes::{Bytes, BytesMut};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::Api;
use crate::anthropic::tools::{ToolJudge, connector_location, connector_prefix};
use crate::denial::Denial;
use crate::policy::KeyEntry;

/// What the filter made of a request it may forward.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Filtered {
    /// The body to forward; `None` when nothing was cut (forward the original).
    pub body: Option<Bytes>,
    /// The tools removed, by policy name (an MCP server by `mcp:<server_label>`).
    pub removed: Vec<String>,
}

/// Applies the key's tool policy to a request body of `api`: the body to forward (the same
/// bytes when nothing is cut), or the refusal. Bodies of keys without a tool policy pass
/// through untouched (not even parsed).
pub fn filter_request(key: &KeyEntry, api: Api, body: Bytes) -> Result<Bytes, Denial> {
    if !key.has_tool_policy() {
        return Ok(body);
    }
    let filtered = filter_tools(api, &body, key).map_err(|detail| Denial::InvalidRequest { detail })?;
    Ok(filtered.body.unwrap_or(body))
}

/// Applies the policy `judge` to a request body of `api` (see the module docs); the error is a
/// message for a 400.
pub fn filter_tools(api: Api, body: &[u8], judge: &dyn ToolJudge) -> Result<Filtered, String> {
    // serde would also read `Top` from an array, in field order.
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err("body is not a valid JSON object: the request body must be an object".into());
    }
    let top: Top<'_> =
        serde_json::from_slice(body).map_err(|e| format!("body is not a valid JSON object: {e}"))?;
    let tools: Vec<&RawValue> = match top.tools {
        None => Vec::new(),
        Some(raw) => serde_json::from_str::<Option<Vec<&RawValue>>>(raw.get())
            .map_err(|e| format!("tools: must be an array: {e}"))?
            .unwrap_or_default(),
    };
    let mut kept = Vec::with_capacity(tools.len());
    let mut removed = Vec::new();
    let mut removed_servers = Vec::new();
    for (i, raw) in tools.iter().enumerate() {
        let tool = judge_tool(api, raw, judge).map_err(|e| format!("tools[{i}]: {e}"))?;
        match tool {
            Judged::Keep => kept.push(*raw),
            Judged::Remove { name, server_label } => {
                if let Some(label) = server_label {
                    removed_servers.push(label);
                }
                removed.push(name);
            }
        }
    }
    if let Some(choice) = top.tool_choice {
        judge_choice(api, choice, judge, &removed_servers)?;
    }
    legacy_functions(&top, judge)?;
    let body = match (removed.is_empty(), top.tools) {
        (false, Some(raw_tools)) => Some(splice(body, raw_tools, &kept)),
        _ => None,
    };
    Ok(Filtered { body, removed })
}

#[derive(Deserialize)]
struct Top<'a> {
    #[serde(borrow, default)]
    tools: Option<&'a RawValue>,
    #[serde(borrow, default)]
    tool_choice: Option<&'a RawValue>,
    /// Chat Completions' deprecated `functions` and `function_call`.
    #[serde(borrow, default)]
    functions: Option<&'a RawValue>,
    #[serde(borrow, default)]
    function_call: Option<&'a RawValue>,
}

/// Chat Completions' deprecated `functions` / `function_call`: a function the policy does not
/// permit is refused (400), not cut, since the old form has no `tool_choice` that could be
/// checked against a cut list.
fn legacy_functions(top: &Top<'_>, judge: &dyn ToolJudge) -> Result<(), String> {
    #[derive(Deserialize)]
    struct Function {
        #[serde(default)]
        name: Option<String>,
    }
    if let Some(raw) = top.functions {
        let functions: Option<Vec<Function>> = serde_json::from_str(raw.get())
            .map_err(|e| format!("functions: must be an array of functions: {e}"))?;
        for (i, f) in functions.unwrap_or_default().iter().enumerate() {
            let name = f.name.as_deref().ok_or_else(|| {
                format!("functions[{i}]: a function without a name cannot be checked against the tool policy")
            })?;
            if !judge.permits(name) {
                return Err(format!(
                    "functions[{i}]: the tool policy of this key does not permit '{name}'"
                ));
            }
        }
    }
    if let Some(raw) = top.function_call {
        if let Ok(Function { name: Some(name) }) = serde_json::from_str::<Function>(raw.get()) {
            if !judge.permits(&name) {
                return Err(format!(
                    "function_call: the tool policy of this key does not permit '{name}'"
                ));
            }
        }
    }
    Ok(())
}

/// The fields of a tool (or a `tool_choice`) that name it, for both APIs.
#[derive(Deserialize)]
struct ToolHead<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    function: Option<NameOnly<'a>>,
    #[serde(borrow, default)]
    custom: Option<NameOnly<'a>>,
    #[serde(borrow, default)]
    server_label: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    server_url: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    connector_id: Option<Cow<'a, str>>,
    #[serde(default)]
    allowed_tools: Option<McpAllowed>,
    /// The tools of a `namespace`.
    #[serde(borrow, default)]
    tools: Option<Vec<&'a RawValue>>,
}

#[derive(Deserialize)]
struct NameOnly<'a> {
    #[serde(borrow, default)]
    name: Option<Cow<'a, str>>,
}

/// An MCP tool's `allowed_tools`: a list of names, or a filter that may name them.
#[derive(Deserialize)]
#[serde(untagged)]
enum McpAllowed {
    Names(Vec<String>),
    Filter {
        #[serde(default)]
        tool_names: Option<Vec<String>>,
    },
}

enum Judged {
    Keep,
    Remove {
        name: String,
        server_label: Option<String>,
    },
}

/// What a tool entry is, for the policy.
enum Named<'a> {
    /// A client-defined or built-in tool: its policy name.
    Tool(Cow<'a, str>),
    /// A remote MCP server.
    Mcp(&'a ToolHead<'a>),
}

/// The policy name of a tool (or forced tool) entry of `api`; the error says why it has none.
fn named<'a>(api: Api, head: &'a ToolHead<'a>) -> Result<Named<'a>, String> {
    let kind = head
        .kind
        .as_deref()
        .ok_or("a tool without a type cannot be checked against the tool policy")?;
    let client_name = match (api, kind) {
        (Api::Responses, "function" | "custom") => head.name.as_deref(),
        (Api::Chat, "function") => head.function.as_ref().and_then(|f| f.name.as_deref()),
        (Api::Chat, "custom") => head.custom.as_ref().and_then(|f| f.name.as_deref()),
        (_, "mcp") => return Ok(Named::Mcp(head)),
        (_, builtin) => return Ok(Named::Tool(Cow::Borrowed(builtin_name(builtin)))),
    };
    client_name
        .map(|n| Named::Tool(Cow::Borrowed(n)))
        .ok_or_else(|| format!("a {kind} tool without a name cannot be checked against the tool policy"))
}

fn judge_tool(api: Api, raw: &RawValue, judge: &dyn ToolJudge) -> Result<Judged, String> {
    let head: ToolHead<'_> =
        serde_json::from_str(raw.get()).map_err(|e| format!("must be a tool object: {e}"))?;
    // A namespace (Codex's `multi_agent_v1`) groups tools: kept only when its name and every
    // tool in it are permitted, since one entry cannot be cut in part here.
    if head.kind.as_deref() == Some("namespace") {
        let name = head.name.as_deref().unwrap_or("namespace").to_owned();
        let inner = head.tools.as_deref().unwrap_or_default();
        let mut keep = judge.permits(&name);
        for (i, t) in inner.iter().enumerate() {
            let judged = judge_tool(api, t, judge).map_err(|e| format!("tools[{i}]: {e}"))?;
            keep &= matches!(judged, Judged::Keep);
        }
        return Ok(if keep {
            Judged::Keep
        } else {
            Judged::Remove {
                name,
                server_label: None,
            }
        });
    }
    Ok(match named(api, &head)? {
        Named::Tool(name) if judge.permits(&name) => Judged::Keep,
        Named::Tool(name) => Judged::Remove {
            name: name.into_owned(),
            server_label: None,
        },
        Named::Mcp(head) if mcp_permitted(head, judge) => Judged::Keep,
        Named::Mcp(head) => {
            let label = head.server_label.as_deref().unwrap_or("").to_owned();
            Judged::Remove {
                name: format!("mcp:{label}"),
                server_label: Some(label),
            }
        }
    })
}

/// Whether a remote MCP tool entry is permitted: `mcp` and every tool it may expose. One whose
/// location cannot be told (no `https` URL, no connector) is not.
fn mcp_permitted(head: &ToolHead<'_>, judge: &dyn ToolJudge) -> bool {
    if !judge.permits("mcp") {
        return false;
    }
    let location = match (head.server_url.as_deref(), head.connector_id.as_deref()) {
        (Some(url), _) => match connector_location(url) {
            Ok(location) => location,
            Err(_) => return false,
        },
        (None, Some(id)) if !id.is_empty() => format!("openai/{id}"),
        _ => return false,
    };
    let prefix = connector_prefix(&location);
    let names = match &head.allowed_tools {
        Some(McpAllowed::Names(names)) => Some(names),
        Some(McpAllowed::Filter { tool_names }) => tool_names.as_ref(),
        None => None,
    };
    match names {
        Some(names) => names.iter().all(|t| judge.permits(&format!("{prefix}{t}"))),
        None => judge.permits_every_name_with_prefix(&prefix),
    }
}

/// Refuses a `tool_choice` forcing a tool the policy does not permit.
fn judge_choice(
    api: Api,
    choice: &RawValue,
    judge: &dyn ToolJudge,
    removed_servers: &[String],
) -> Result<(), String> {
    #[derive(Deserialize)]
    struct Allowed<'a> {
        #[serde(borrow, default)]
        tools: Option<Vec<&'a RawValue>>,
    }
    #[derive(Deserialize)]
    struct Choice<'a> {
        #[serde(rename = "type", borrow, default)]
        kind: Option<Cow<'a, str>>,
        /// Responses: the list is here.
        #[serde(borrow, default)]
        tools: Option<Vec<&'a RawValue>>,
        /// Chat: the list is in `allowed_tools.tools`.
        #[serde(borrow, default)]
        allowed_tools: Option<Allowed<'a>>,
    }
    // `"none"`, `"auto"`, `"required"`: nothing forced.
    if !choice.get().starts_with('{') {
        return Ok(());
    }
    let parsed: Choice<'_> = serde_json::from_str(choice.get())
        .map_err(|e| format!("tool_choice: not a valid tool choice: {e}"))?;
    let forced: Vec<&RawValue> = if parsed.kind.as_deref() == Some("allowed_tools") {
        let list = match api {
            Api::Responses => parsed.tools,
            Api::Chat => parsed.allowed_tools.and_then(|a| a.tools),
        };
        list.unwrap_or_default()
    } else {
        vec![choice]
    };
    for raw in forced {
        let head: ToolHead<'_> = serde_json::from_str(raw.get())
            .map_err(|e| format!("tool_choice: not a valid tool choice: {e}"))?;
        let refused = match named(api, &head).map_err(|e| format!("tool_choice: {e}"))? {
            Named::Tool(name) => (!judge.permits(&name)).then(|| format!("tool '{name}'")),
            Named::Mcp(head) => {
                let label = head.server_label.as_deref().unwrap_or("");
                removed_servers
                    .iter()
                    .any(|r| r == label)
                    .then(|| format!("MCP server '{label}'"))
            }
        };
        if let Some(what) = refused {
            return Err(format!(
                "tool_choice forces {what}, which the tool policy of this virtual key removes"
            ));
        }
    }
    Ok(())
}

/// The policy name of an OpenAI-defined tool type: the type without a `_YYYY_MM_DD` version
/// and without `_preview` (`web_search_preview_2025_03_11` -> `web_search`).
pub fn builtin_name(kind: &str) -> &str {
    const DATE: &[u8] = b"_dddd_dd_dd";
    let bytes = kind.as_bytes();
    let mut name = kind;
    if let Some(at) = bytes.len().checked_sub(DATE.len()) {
        let dated = bytes[at..]
            .iter()
            .zip(DATE)
            .all(|(b, p)| if *p == b'd' { b.is_ascii_digit() } else { b == p });
        // The byte at `at` is `_` (ASCII), so `at` is a character boundary.
        if dated && at > 0 {
            name = &kind[..at];
        }
    }
    match name.strip_suffix("_preview") {
        Some(family) if !family.is_empty() => family,
        _ => name,
    }
}

/// `body` with the array `raw_tools` (a slice of it) replaced by the `kept` entries.
fn splice(body: &[u8], raw_tools: &RawValue, kept: &[&RawValue]) -> Bytes {
    // RawValues borrow from `body`, so their addresses locate them in it.
    let start = raw_tools.get().as_ptr() as usize - body.as_ptr() as usize;
    let end = start + raw_tools.get().len();
    let mut out = BytesMut::with_capacity(body.len());
    out.extend_from_slice(&body[..start]);
    out.extend_from_slice(b"[");
    for (i, t) in kept.iter().enumerate() {
        if i > 0 {
            out.extend_from_slice(b",");
        }
        out.extend_from_slice(t.get().as_bytes());
    }
    out.extend_from_slice(b"]");
    out.extend_from_slice(&body[end..]);
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::glob::AllowDeny;

    fn policy(allow: &[&str], deny: &[&str]) -> AllowDeny {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        AllowDeny::new(&s(allow), &s(deny))
    }

    fn text(f: &Filtered) -> &str {
        std::str::from_utf8(f.body.as_ref().unwrap()).unwrap()
    }

    /// A Codex CLI request's tools, in the shapes Codex sends them.
    const CODEX: &str = r#"{"model":"gpt-5.3-codex","instructions":"x","input":[],
        "tools": [ {"type":"function","name":"shell","parameters":{"type":"object"},"strict":false},
            {"type":"custom","name":"apply_patch","format":{"type":"grammar","syntax":"lark","definition":"start: x"}} ,
            {"type":"function","name":"update_plan","parameters":{}},
            {"type":"web_search"},
            {"type":"local_shell"},
            {"type":"function","name":"mcp__docs__search","parameters":{}} ],
        "tool_choice":"auto","parallel_tool_calls":true,"stream":true}"#;

    #[test]
    fn responses_tools_are_cut_by_name_and_the_rest_kept_byte_for_byte() {
        let f = filter_tools(
            Api::Responses,
            CODEX.as_bytes(),
            &policy(&[], &["shell", "local_shell", "web_*"]),
        )
        .unwrap();
        assert_eq!(f.removed, ["shell", "web_search", "local_shell"]);
        let expected = CODEX
            .replace(
                r#"{"type":"function","name":"shell","parameters":{"type":"object"},"strict":false},
            "#,
                "",
            )
            .replace(r#"[ {"type":"custom""#, r#"[{"type":"custom""#)
            .replace(
                r#"} ,
            {"type":"function","name":"update_plan""#,
                r#"},{"type":"function","name":"update_plan""#,
            )
            .replace(
                r#",
            {"type":"web_search"},
            {"type":"local_shell"},
            {"type":"function","name":"mcp__docs__search","parameters":{}} ]"#,
                r#",{"type":"function","name":"mcp__docs__search","parameters":{}}]"#,
            );
        assert_eq!(text(&f), expected);
        let v: serde_json::Value = serde_json::from_str(text(&f)).unwrap();
        assert_eq!(v["tools"].as_array().unwrap().len(), 3);
        // Nothing cut: no new body.
        let f = filter_tools(Api::Responses, CODEX.as_bytes(), &policy(&[], &["Bash"])).unwrap();
        assert_eq!(f, Filtered::default());
        // An allow list keeps only what it names.
        let f = filter_tools(
            Api::Responses,
            CODEX.as_bytes(),
            &policy(&["apply_patch", "mcp__*"], &[]),
        )
        .unwrap();
        assert_eq!(f.removed, ["shell", "update_plan", "web_search", "local_shell"]);
    }

    #[test]
    fn chat_tools_are_named_by_their_function() {
        let body = br#"{"model":"gpt-4.1","messages":[],"tools":[
            {"type":"function","function":{"name":"get_weather","parameters":{}}},
            {"type":"function","function":{"name":"Bash","parameters":{}}},
            {"type":"custom","custom":{"name":"patch"}}]}"#;
        let f = filter_tools(Api::Chat, body, &policy(&[], &["Bash", "patch"])).unwrap();
        assert_eq!(f.removed, ["Bash", "patch"]);
        let v: serde_json::Value = serde_json::from_slice(f.body.as_ref().unwrap()).unwrap();
        assert_eq!(
            v["tools"],
            serde_json::json!([{"type":"function","function":{"name":"get_weather","parameters":{}}}])
        );
        // The Responses shape is not a Chat tool: it cannot be judged.
        let flat = br#"{"tools":[{"type":"function","name":"Bash"}]}"#;
        let err = filter_tools(Api::Chat, flat, &policy(&[], &["Bash"])).unwrap_err();
        assert!(err.contains("tools[0]: a function tool without a name"), "{err}");
    }

    #[test]
    fn builtin_types_are_named_without_version_or_preview() {
        for (kind, name) in [
            ("web_search", "web_search"),
            ("web_search_preview", "web_search"),
            ("web_search_preview_2025_03_11", "web_search"),
            ("web_search_2025_08_26", "web_search"),
            ("computer_use_preview", "computer_use"),
            ("local_shell", "local_shell"),
            ("file_search", "file_search"),
            ("code_interpreter", "code_interpreter"),
            ("image_generation", "image_generation"),
            ("apply_patch", "apply_patch"),
            ("_preview", "_preview"),
            ("_2025_01_01", "_2025_01_01"),
            ("x_2025_1_011", "x_2025_1_011"),
            ("ünï_2025_01_01", "ünï"),
            ("é", "é"),
        ] {
            assert_eq!(builtin_name(kind), name, "{kind}");
        }
        let body = br#"{"tools":[{"type":"web_search_preview_2025_03_11"},{"type":"code_interpreter","container":{"type":"auto"}},{"type":"future_tool"}]}"#;
        let f = filter_tools(Api::Responses, body, &policy(&[], &["web_search", "future_tool"])).unwrap();
        assert_eq!(f.removed, ["web_search", "future_tool"]);
    }

    #[test]
    fn tool_choice_forcing_a_removed_tool_is_refused() {
        let deny = policy(&[], &["shell", "web_search", "Bash"]);
        let refused = |api: Api, choice: &str| {
            let body = format!(r#"{{"tools":[],"tool_choice":{choice}}}"#);
            filter_tools(api, body.as_bytes(), &deny).err()
        };
        for (api, choice) in [
            (Api::Responses, r#"{"type":"function","name":"shell"}"#),
            (Api::Responses, r#"{"type":"custom","name":"shell"}"#),
            (Api::Responses, r#"{"type":"web_search_preview"}"#),
            (
                Api::Responses,
                r#"{"type":"allowed_tools","mode":"required","tools":[{"type":"function","name":"ok"},{"type":"function","name":"shell"}]}"#,
            ),
            (Api::Chat, r#"{"type":"function","function":{"name":"Bash"}}"#),
            (
                Api::Chat,
                r#"{"type":"allowed_tools","allowed_tools":{"mode":"auto","tools":[{"type":"function","function":{"name":"Bash"}}]}}"#,
            ),
        ] {
            let err = refused(api, choice).unwrap_or_else(|| panic!("{api:?} {choice} not refused"));
            assert!(
                err.starts_with("tool_choice forces ")
                    && err.ends_with("which the tool policy of this virtual key removes"),
                "{err}"
            );
        }
        for (api, choice) in [
            (Api::Responses, r#""auto""#),
            (Api::Responses, r#""required""#),
            (Api::Responses, r#"{"type":"function","name":"ok"}"#),
            (Api::Responses, r#"{"type":"file_search"}"#),
            (Api::Chat, r#""none""#),
            (Api::Chat, r#"{"type":"function","function":{"name":"ok"}}"#),
        ] {
            assert_eq!(refused(api, choice), None, "{api:?} {choice}");
        }
        assert!(
            refused(Api::Responses, r#"{"type":"function","name":"shell"}"#)
                .unwrap()
                .contains("forces tool 'shell'")
        );
    }

    #[test]
    fn remote_mcp_needs_every_tool_it_may_expose_permitted() {
        let body = |allowed: &str| {
            format!(
                r#"{{"tools":[{{"type":"mcp","server_label":"docs","server_url":"https://mcp.example.com/sse"{allowed}}},{{"type":"function","name":"f"}}],
                "tool_choice":{{"type":"mcp","server_label":"docs"}}}}"#
            )
        };
        let all = body("");
        let some = body(r#","allowed_tools":["search"]"#);
        let filter = body(r#","allowed_tools":{"tool_names":["search"],"read_only":true}"#);
        let by_search = policy(&["f", "mcp", "mcp_connector__mcp.example.com/sse__search*"], &[]);
        // All of a server's tools need a policy permitting every name it could have.
        let err = filter_tools(Api::Responses, all.as_bytes(), &by_search).unwrap_err();
        assert!(err.contains("forces MCP server 'docs'"), "{err}");
        let no_choice = all.replace(
            r#""tool_choice":{"type":"mcp","server_label":"docs"}"#,
            r#""x":1"#,
        );
        let f = filter_tools(Api::Responses, no_choice.as_bytes(), &by_search).unwrap();
        assert_eq!(f.removed, ["mcp:docs"]);
        // Named tools are judged one by one.
        for body in [&some, &filter] {
            let f = filter_tools(Api::Responses, body.as_bytes(), &by_search).unwrap();
            assert_eq!(f.body, None, "{body}");
        }
        let open = policy(&[], &[]);
        assert_eq!(
            filter_tools(Api::Responses, all.as_bytes(), &open).unwrap().body,
            None
        );
        // `mcp` itself can be denied; so can a server whose location cannot be told.
        assert!(filter_tools(Api::Responses, some.as_bytes(), &policy(&[], &["mcp"])).is_err());
        let plain = r#"{"tools":[{"type":"mcp","server_label":"p","server_url":"http://h.example/"},{"type":"mcp","server_label":"q"}]}"#;
        let f = filter_tools(Api::Responses, plain.as_bytes(), &open).unwrap();
        assert_eq!(f.removed, ["mcp:p", "mcp:q"]);
        let connector = r#"{"tools":[{"type":"mcp","server_label":"g","connector_id":"connector_gmail","allowed_tools":["read"]}]}"#;
        let only_read = policy(&["mcp", "mcp_connector__openai/connector_gmail__read"], &[]);
        assert_eq!(
            filter_tools(Api::Responses, connector.as_bytes(), &only_read)
                .unwrap()
                .body,
            None
        );
        assert!(
            filter_tools(Api::Responses, connector.as_bytes(), &policy(&["mcp"], &[]))
                .unwrap()
                .body
                .is_some()
        );
    }

    #[test]
    fn bodies_that_cannot_be_judged_are_refused() {
        let open = policy(&[], &[]);
        for (api, body, want) in [
            (Api::Responses, &b"{nope"[..], "not a valid JSON object"),
            (Api::Responses, br#"[1]"#, "not a valid JSON object"),
            (Api::Responses, br#"{"tools":{"a":1}}"#, "tools: must be an array"),
            (
                Api::Responses,
                br#"{"tools":[],"tools":[]}"#,
                "duplicate field `tools`",
            ),
            (
                Api::Responses,
                br#"{"tool_choice":"auto","tool_choice":"none"}"#,
                "duplicate field",
            ),
            (
                Api::Responses,
                br#"{"tools":[1]}"#,
                "tools[0]: must be a tool object",
            ),
            (
                Api::Responses,
                br#"{"tools":[{"name":"x"}]}"#,
                "tools[0]: a tool without a type",
            ),
            (
                Api::Responses,
                br#"{"tools":[{"type":"function"}]}"#,
                "without a name",
            ),
            (
                Api::Responses,
                br#"{"tools":[{"type":"function","name":"a","name":"b"}]}"#,
                "duplicate field `name`",
            ),
            (
                Api::Responses,
                br#"{"tool_choice":{"type":"function"}}"#,
                "tool_choice: a function tool without a name",
            ),
            (
                Api::Chat,
                br#"{"tool_choice":{"name":"x"}}"#,
                "tool_choice: a tool without a type",
            ),
        ] {
            let err = filter_tools(api, body, &open).unwrap_err();
            assert!(err.contains(want), "{}: {err}", String::from_utf8_lossy(body));
        }
        assert_eq!(
            filter_tools(Api::Chat, br#"{"tools":null,"tool_choice":null}"#, &open).unwrap(),
            Filtered::default()
        );
    }

    /// The wrapper over a compiled key: untouched without a policy, the same bytes when
    /// nothing is cut, a 400 for what cannot be judged.
    #[test]
    fn filter_request_applies_the_keys_policy() {
        use crate::policy::document::{PatternList, PolicyDocument, VirtualKey};
        use crate::policy::load::LoadedDocument;
        use crate::policy::{CredentialReader, Snapshot, hash_key};
        use crate::pricing::PriceTable;

        struct NoCreds;
        impl CredentialReader for NoCreds {
            fn env(&self, _: &str) -> Option<String> {
                None
            }
            fn file(&self, path: &str) -> std::io::Result<String> {
                Err(std::io::Error::new(std::io::ErrorKind::NotFound, path.to_owned()))
            }
        }
        let key = |id: &str, secret: &str, deny: Option<&[&str]>| VirtualKey {
            id: id.into(),
            sha256: hex::encode(hash_key(secret)),
            enabled: true,
            tools: deny.map(|d| PatternList {
                allow: vec![],
                deny: d.iter().map(|s| s.to_string()).collect(),
            }),
            ..Default::default()
        };
        let document = PolicyDocument {
            version: 1,
            keys: vec![
                key("open", "vk-open", None),
                key("strict", "vk-strict", Some(&["shell"])),
            ],
            ..Default::default()
        };
        let snapshot = Snapshot::compile(
            LoadedDocument {
                document,
                revision: "r".into(),
            },
            &PriceTable::builtin(),
            &NoCreds,
        )
        .unwrap();
        let (open, strict) = (
            snapshot.key("vk-open").unwrap(),
            snapshot.key("vk-strict").unwrap(),
        );
        let body = Bytes::from_static(CODEX.as_bytes());
        let out = filter_request(strict, Api::Responses, body.clone()).unwrap();
        assert!(!std::str::from_utf8(&out).unwrap().contains(r#""name":"shell""#));
        let not_json = Bytes::from_static(b"not json");
        assert_eq!(
            filter_request(open, Api::Responses, not_json.clone()).unwrap(),
            not_json
        );
        assert!(matches!(
            filter_request(strict, Api::Responses, not_json),
            Err(Denial::InvalidRequest { .. })
        ));
        let kept = Bytes::from_static(br#"{"tools" : [ {"type":"function","name":"ok"} ]}"#);
        let out = filter_request(strict, Api::Responses, kept.clone()).unwrap();
        assert_eq!(out.as_ptr(), kept.as_ptr(), "the same bytes, not a copy");
    }
}
