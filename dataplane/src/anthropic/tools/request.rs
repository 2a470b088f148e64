//! The request half of the tool policy: which entries of `tools` reach the provider, and
//! whether an MCP connector request may be forwarded at all (see the [parent](super) module
//! for the policy names).
//!
//! Only `tools`, `tool_choice`, `mcp_servers` and `stream` are read. Removing tools splices
//! bytes: every kept tool, and every byte outside the array, reaches the provider byte for
//! byte (prompt caching keeps working for the kept prefix). Anything that cannot be judged is
//! refused: a body that is not JSON, duplicate keys where the gateway reads (the API and the
//! gateway might read different values), a tool without a name, a connector server without
//! an `https` URL or a toolset naming a server that is not declared.

use std::borrow::Cow;
use std::collections::BTreeMap;

use bytes::{Bytes, BytesMut};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::{ToolJudge, connector_location, connector_prefix, type_family};

/// What the filter made of a request it may forward.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Filtered {
    /// The body to forward; `None` when nothing was cut (forward the original).
    pub body: Option<Bytes>,
    /// The tools removed, by declared name (the type family for an unnamed typed tool).
    pub removed: Vec<String>,
    /// Whether the request asked for a stream.
    pub stream: bool,
    /// The request's MCP connector servers: name -> location (see
    /// [`connector_location`](super::connector_location)), for the response guard.
    pub connector: BTreeMap<String, String>,
}

/// Why a request may not be forwarded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// It cannot be judged (a 400): what is wrong.
    Invalid(String),
    /// It asks for tools the policy does not permit (a 403): what they are.
    NotPermitted(String),
}

#[derive(Deserialize)]
struct Top<'a> {
    #[serde(borrow, default)]
    tools: Option<&'a RawValue>,
    #[serde(borrow, default)]
    tool_choice: Option<&'a RawValue>,
    #[serde(borrow, default)]
    mcp_servers: Option<&'a RawValue>,
    #[serde(default)]
    stream: Option<bool>,
}

#[derive(Deserialize)]
struct ToolHead<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    name: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct ChoiceHead<'a> {
    #[serde(borrow, default)]
    name: Option<Cow<'a, str>>,
}

/// An `mcp_toolset` entry of `tools` (MCP connector, `mcp-client-2025-11-20`).
#[derive(Deserialize)]
struct Toolset {
    mcp_server_name: String,
    #[serde(default)]
    default_config: Option<ToolConfig>,
    #[serde(default)]
    configs: Option<ConfigList>,
}

#[derive(Deserialize, Default)]
struct ToolConfig {
    #[serde(default)]
    enabled: Option<bool>,
}

/// `configs` as every (tool, config) pair written, duplicates kept: a tool counts as enabled
/// if any of its entries enables it, whichever one the API reads.
struct ConfigList(Vec<(String, ToolConfig)>);

impl<'de> Deserialize<'de> for ConfigList {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Pairs;
        impl<'de> serde::de::Visitor<'de> for Pairs {
            type Value = ConfigList;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object of tool configurations")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<ConfigList, A::Error> {
                let mut pairs = Vec::new();
                while let Some(pair) = map.next_entry::<String, ToolConfig>()? {
                    pairs.push(pair);
                }
                Ok(ConfigList(pairs))
            }
        }
        d.deserialize_map(Pairs)
    }
}

/// An entry of `mcp_servers`.
#[derive(Deserialize)]
struct ServerDecl<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    url: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    name: Option<Cow<'a, str>>,
    /// The deprecated `mcp-client-2025-04-04` shape.
    #[serde(default)]
    tool_configuration: Option<LegacyConfig>,
}

#[derive(Deserialize)]
struct LegacyConfig {
    #[serde(default)]
    enabled: Option<bool>,
    #[serde(default)]
    allowed_tools: Option<Vec<String>>,
}

/// The tools an MCP connector server may expose to the model.
#[derive(Debug, PartialEq, Eq)]
enum Exposed {
    /// Whatever it lists: unknown to the gateway.
    All,
    /// Only these.
    Named(Vec<String>),
}

impl Exposed {
    fn union(self, other: Exposed) -> Exposed {
        match (self, other) {
            (Exposed::Named(mut a), Exposed::Named(b)) => {
                a.extend(b);
                Exposed::Named(a)
            }
            _ => Exposed::All,
        }
    }
}

/// Applies the policy `judge` to a Messages body; see the module docs.
pub fn filter_tools(body: &[u8], judge: &dyn ToolJudge) -> Result<Filtered, Refused> {
    let invalid = |detail: String| Refused::Invalid(detail);
    let top: Top<'_> =
        serde_json::from_slice(body).map_err(|e| invalid(format!("body is not a valid JSON object: {e}")))?;
    let tools: Vec<&RawValue> = match top.tools {
        None => Vec::new(),
        Some(raw) => serde_json::from_str::<Option<Vec<&RawValue>>>(raw.get())
            .map_err(|e| invalid(format!("tools: must be an array: {e}")))?
            .unwrap_or_default(),
    };
    let mut kept = Vec::with_capacity(tools.len());
    let mut removed = Vec::new();
    let mut toolsets = Vec::new();
    for (i, t) in tools.iter().enumerate() {
        let head: ToolHead<'_> = serde_json::from_str(t.get()).map_err(|e| {
            invalid(format!(
                "tools[{i}]: must be an object with a string name and type: {e}"
            ))
        })?;
        let names: Vec<&str> = match (head.kind.as_deref(), head.name.as_deref()) {
            (Some("mcp_toolset"), _) => {
                let set: Toolset = serde_json::from_str(t.get())
                    .map_err(|e| invalid(format!("tools[{i}]: not a valid mcp_toolset: {e}")))?;
                toolsets.push(set);
                kept.push(*t);
                continue;
            }
            (None | Some("custom"), Some(name)) => vec![name],
            (None | Some("custom"), None) => {
                return Err(invalid(format!(
                    "tools[{i}]: a tool without a name cannot be checked against the tool policy"
                )));
            }
            (Some(kind), name) => {
                let family = type_family(kind);
                std::iter::once(family)
                    .chain(name.filter(|n| *n != family))
                    .collect()
            }
        };
        if names.iter().all(|n| judge.permits(n)) {
            kept.push(*t);
        } else {
            removed.push(head.name.as_deref().unwrap_or(names[0]).to_owned());
        }
    }
    let connector = judge_connector(top.mcp_servers, &toolsets, judge)?;
    if let Some(choice) = top.tool_choice {
        if let Ok(ChoiceHead { name: Some(n) }) = serde_json::from_str::<ChoiceHead<'_>>(choice.get()) {
            if removed.iter().any(|r| *r == n) {
                return Err(invalid(format!(
                    "tool_choice names tool '{n}', which the tool policy of this virtual key removes"
                )));
            }
        }
    }
    let stream = top.stream.unwrap_or(false);
    let body = match (removed.is_empty(), top.tools) {
        (false, Some(raw_tools)) => Some(splice(body, raw_tools, &kept)),
        _ => None,
    };
    Ok(Filtered {
        body,
        removed,
        stream,
        connector,
    })
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

/// Judges the MCP connector part of a request: every tool each declared server may expose
/// must be permitted. Returns the servers' locations by name.
fn judge_connector(
    raw_servers: Option<&RawValue>,
    toolsets: &[Toolset],
    judge: &dyn ToolJudge,
) -> Result<BTreeMap<String, String>, Refused> {
    let invalid = |detail: String| Refused::Invalid(detail);
    let servers: Vec<ServerDecl<'_>> = match raw_servers {
        None => Vec::new(),
        Some(raw) => serde_json::from_str::<Option<Vec<ServerDecl<'_>>>>(raw.get())
            .map_err(|e| {
                invalid(format!(
                    "mcp_servers: must be an array of MCP server objects: {e}"
                ))
            })?
            .unwrap_or_default(),
    };
    for set in toolsets {
        if !servers
            .iter()
            .any(|s| s.name.as_deref() == Some(set.mcp_server_name.as_str()))
        {
            return Err(invalid(format!(
                "tools: an mcp_toolset names MCP server '{}', which mcp_servers does not declare",
                set.mcp_server_name
            )));
        }
    }
    let mut locations = BTreeMap::new();
    for (i, server) in servers.iter().enumerate() {
        if server.kind.as_deref() != Some("url") {
            return Err(invalid(format!(
                "mcp_servers[{i}].type: only \"url\" servers can be checked against the tool policy"
            )));
        }
        let name = server
            .name
            .as_deref()
            .ok_or_else(|| invalid(format!("mcp_servers[{i}].name: required")))?;
        let url = server
            .url
            .as_deref()
            .ok_or_else(|| invalid(format!("mcp_servers[{i}].url: required")))?;
        let location =
            connector_location(url).map_err(|why| invalid(format!("mcp_servers[{i}].url: {why}")))?;
        let prefix = connector_prefix(&location);
        let exposed = exposed_tools(server, name, toolsets);
        let denied = match &exposed {
            Exposed::All => (!judge.permits_every_name_with_prefix(&prefix)).then(|| {
                format!(
                    "the MCP connector server '{name}' at {location} with all its tools \
                     (named {prefix}<tool>; enable only permitted ones with an mcp_toolset \
                     default_config.enabled: false and configs)"
                )
            }),
            Exposed::Named(tools) => tools
                .iter()
                .find(|t| !judge.permits(&format!("{prefix}{t}")))
                .map(|t| format!("tool '{prefix}{t}' of the MCP connector server '{name}'")),
        };
        if let Some(what) = denied {
            return Err(Refused::NotPermitted(what));
        }
        locations.insert(name.to_owned(), location);
    }
    Ok(locations)
}

/// The tools `server` may expose: what its toolsets (and a deprecated `tool_configuration`)
/// enable; everything when nothing says.
fn exposed_tools(server: &ServerDecl<'_>, name: &str, toolsets: &[Toolset]) -> Exposed {
    let mut sources = Vec::new();
    if let Some(legacy) = &server.tool_configuration {
        sources.push(match (legacy.enabled, &legacy.allowed_tools) {
            (Some(false), _) => Exposed::Named(Vec::new()),
            (_, Some(allowed)) => Exposed::Named(allowed.clone()),
            (_, None) => Exposed::All,
        });
    }
    for set in toolsets.iter().filter(|s| s.mcp_server_name == name) {
        let default_enabled = set
            .default_config
            .as_ref()
            .and_then(|c| c.enabled)
            .unwrap_or(true);
        sources.push(if default_enabled {
            Exposed::All
        } else {
            let configs = set.configs.as_ref().map(|c| c.0.as_slice()).unwrap_or_default();
            Exposed::Named(
                configs
                    .iter()
                    .filter(|(_, c)| c.enabled == Some(true))
                    .map(|(t, _)| t.clone())
                    .collect(),
            )
        });
    }
    sources.into_iter().reduce(Exposed::union).unwrap_or(Exposed::All)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::glob::AllowDeny;

    fn policy(allow: &[&str], deny: &[&str]) -> AllowDeny {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        AllowDeny::new(&s(allow), &s(deny))
    }

    fn text(b: &Option<Bytes>) -> &str {
        std::str::from_utf8(b.as_ref().unwrap()).unwrap()
    }

    #[test]
    fn removes_only_denied_tools_and_keeps_other_bytes() {
        let body = br#"{"model":"m", "tools" : [ {"name":"Bash","x":1}, {"name":"Read" ,"input_schema":{"a":[1, 2]}},{"name":"Wr\u0069te"} ], "tool_choice":{"type":"auto"}}"#;
        let f = filter_tools(body, &policy(&[], &["Bash", "Write"])).unwrap();
        assert_eq!(f.removed, vec!["Bash".to_string(), "Write".to_string()]);
        assert_eq!(
            text(&f.body),
            r#"{"model":"m", "tools" : [{"name":"Read" ,"input_schema":{"a":[1, 2]}}], "tool_choice":{"type":"auto"}}"#
        );
        let f = filter_tools(body, &policy(&[], &[])).unwrap();
        assert!(f.body.is_none() && f.removed.is_empty());
        let f = filter_tools(body, &policy(&["nothing"], &[])).unwrap();
        assert!(text(&f.body).contains(r#""tools" : []"#));
    }

    #[test]
    fn tool_choice_of_a_removed_tool_and_bad_bodies_are_refused() {
        let deny_bash = policy(&[], &["Bash"]);
        let body = br#"{"tools":[{"name":"Bash"}],"tool_choice":{"type":"tool","name":"Bash"}}"#;
        assert!(matches!(filter_tools(body, &deny_bash), Err(Refused::Invalid(_))));
        let open = policy(&[], &[]);
        assert!(filter_tools(b"{nope", &open).is_err());
        assert!(filter_tools(br#"{"tools":{"a":1}}"#, &open).is_err());
        assert!(
            filter_tools(br#"{"tools":[{"name":"a"}],"tools":[]}"#, &open).is_err(),
            "duplicate keys are refused, not forwarded unfiltered"
        );
        assert!(filter_tools(br#"{"tools":[{"name":"a","name":"Bash"}]}"#, &deny_bash).is_err());
        assert!(
            matches!(filter_tools(br#"{"tools":[{"input_schema":{}}]}"#, &open), Err(Refused::Invalid(m)) if m.contains("without a name")),
            "a tool without a name cannot be judged"
        );
        assert_eq!(filter_tools(br#"{"tools":null}"#, &deny_bash).unwrap().body, None);
        assert!(filter_tools(br#"{"stream":true}"#, &open).unwrap().stream);
    }

    #[test]
    fn anthropic_defined_tools_are_judged_by_type_family_and_name() {
        let body = br#"{"tools":[
            {"type":"web_search_20250305","name":"web_search","max_uses":5},
            {"type":"web_fetch_20250910","name":"web_fetch"},
            {"type":"code_execution_20250825","name":"code_execution"},
            {"type":"bash_20250124","name":"bash"},
            {"type":"text_editor_20250728","name":"str_replace_based_edit_tool"},
            {"type":"computer_20250124","name":"computer","display_width_px":1024,"display_height_px":768},
            {"type":"memory_20250818","name":"memory"},
            {"type":"code_execution_20250825","name":"Read"},
            {"type":"future_tool_20300101","name":"future_tool"},
            {"name":"Read","input_schema":{"type":"object"}}]}"#;
        // `Read` only: every typed tool goes, the code execution tool named `Read` too.
        let f = filter_tools(body, &policy(&["Read"], &[])).unwrap();
        assert_eq!(
            f.removed,
            [
                "web_search",
                "web_fetch",
                "code_execution",
                "bash",
                "str_replace_based_edit_tool",
                "computer",
                "memory",
                "Read",
                "future_tool"
            ]
        );
        let kept: serde_json::Value = serde_json::from_slice(f.body.as_ref().unwrap()).unwrap();
        assert_eq!(
            kept["tools"],
            serde_json::json!([{"name":"Read","input_schema":{"type":"object"}}])
        );
        // Allowed by family: the text editor needs its family and its fixed name.
        let f = filter_tools(
            body,
            &policy(&["Read", "web_search", "text_editor", "code_execution"], &[]),
        )
        .unwrap();
        assert!(!f.removed.iter().any(|r| r == "web_search"));
        assert!(f.removed.iter().any(|r| r == "str_replace_based_edit_tool"));
        let f = filter_tools(body, &policy(&[], &["web_*", "memory"])).unwrap();
        assert_eq!(f.removed, ["web_search", "web_fetch", "memory"]);
    }

    const CONNECTOR: &str = r#"{"model":"m","max_tokens":10,"messages":[],
        "mcp_servers":[{"type":"url","url":"https://attacker.example/mcp","name":"fs","authorization_token":"t"}],
        "tools":[{"type":"mcp_toolset","mcp_server_name":"fs"},{"name":"Read"}]}"#;

    #[test]
    fn mcp_connector_needs_every_tool_it_can_expose_permitted() {
        // The reported bypass: allow [Read] and an attacker's connector.
        let r = filter_tools(CONNECTOR.as_bytes(), &policy(&["Read"], &[]));
        assert!(
            matches!(&r, Err(Refused::NotPermitted(m)) if m.contains("'fs' at attacker.example/mcp") && m.contains("mcp_connector__attacker.example/mcp__<tool>")),
            "{r:?}"
        );
        // A policy allowing the agent's own MCP tools says nothing about a connector named alike.
        assert!(
            filter_tools(
                CONNECTOR.as_bytes(),
                &policy(&["Read", "mcp__fs__*", "mcp__*"], &[])
            )
            .is_err()
        );
        // Deny rules that could match one of its tools refuse a server exposing all of them.
        assert!(filter_tools(CONNECTOR.as_bytes(), &policy(&[], &["*delete*"])).is_err());
        // Permitted: by a glob over the server's location, or by an open policy.
        let f = filter_tools(
            CONNECTOR.as_bytes(),
            &policy(&["Read", "mcp_connector__attacker.example/*"], &[]),
        )
        .unwrap();
        assert_eq!(f.body, None, "nothing cut");
        assert_eq!(
            f.connector.get("fs").map(String::as_str),
            Some("attacker.example/mcp")
        );
        assert!(filter_tools(CONNECTOR.as_bytes(), &policy(&[], &["Bash"])).is_ok());
        // Without the toolset (the deprecated shape, or no beta at all) it is judged the same.
        let legacy = r#"{"mcp_servers":[{"type":"url","url":"https://attacker.example/mcp","name":"fs"}]}"#;
        assert!(filter_tools(legacy.as_bytes(), &policy(&["Read"], &[])).is_err());
    }

    #[test]
    fn mcp_connector_allowlists_are_judged_tool_by_tool() {
        let body = |configs: &str| {
            format!(
                r#"{{"mcp_servers":[{{"type":"url","url":"https://mcp.example.com/sse","name":"docs"}}],
                "tools":[{{"type":"mcp_toolset","mcp_server_name":"docs","default_config":{{"enabled":false}},"configs":{configs}}}]}}"#
            )
        };
        let p = policy(&["mcp_connector__mcp.example.com/sse__search*"], &[]);
        assert!(
            filter_tools(
                body(r#"{"search":{"enabled":true},"delete":{"defer_loading":true}}"#).as_bytes(),
                &p
            )
            .is_ok()
        );
        let r = filter_tools(
            body(r#"{"search":{"enabled":true},"delete":{"enabled":true}}"#).as_bytes(),
            &p,
        );
        assert!(
            matches!(&r, Err(Refused::NotPermitted(m)) if m.contains("mcp_connector__mcp.example.com/sse__delete")),
            "{r:?}"
        );
        // Duplicate keys: enabled if any entry enables it.
        let dup = body(r#"{"delete":{"enabled":true},"delete":{"enabled":false}}"#);
        assert!(filter_tools(dup.as_bytes(), &p).is_err());
        // The deprecated allowed_tools list.
        let legacy = |tools: &str| {
            format!(
                r#"{{"mcp_servers":[{{"type":"url","url":"https://mcp.example.com/sse","name":"docs","tool_configuration":{{"allowed_tools":{tools}}}}}]}}"#
            )
        };
        assert!(filter_tools(legacy(r#"["search_all"]"#).as_bytes(), &p).is_ok());
        assert!(filter_tools(legacy(r#"["search","rm"]"#).as_bytes(), &p).is_err());
        let off = r#"{"mcp_servers":[{"type":"url","url":"https://x.example/","name":"x","tool_configuration":{"enabled":false}}]}"#;
        assert!(
            filter_tools(off.as_bytes(), &p).is_ok(),
            "a server with its tools off exposes none"
        );
    }

    #[test]
    fn mcp_connector_requests_that_cannot_be_judged_are_refused() {
        let open = policy(&[], &[]);
        for body in [
            r#"{"mcp_servers":[{"type":"url","url":"http://plain.example/","name":"p"}]}"#,
            r#"{"mcp_servers":[{"type":"stdio","command":"sh","name":"p"}]}"#,
            r#"{"mcp_servers":[{"type":"url","name":"p"}]}"#,
            r#"{"mcp_servers":[{"type":"url","url":"https://h.example/"}]}"#,
            r#"{"mcp_servers":{"type":"url"}}"#,
            r#"{"tools":[{"type":"mcp_toolset","mcp_server_name":"ghost"}]}"#,
            r#"{"mcp_servers":[{"type":"url","url":"https://h.example/","name":"p","url":"https://evil.example/"}]}"#,
        ] {
            assert!(
                matches!(filter_tools(body.as_bytes(), &open), Err(Refused::Invalid(_))),
                "{body}"
            );
        }
        assert!(filter_tools(br#"{"mcp_servers":null}"#, &open).is_ok());
        assert!(filter_tools(br#"{"mcp_servers":[]}"#, &policy(&["Read"], &[])).is_ok());
    }
}
