//! The built-in tool policy for Gemini requests: which entries of `tools[]` reach the model.
//!
//! **Policy names** (the same `tools` allow/deny globs as for Claude Code; deny wins, an
//! empty allow list permits everything not denied):
//! - a function the client declares (`tools[].functionDeclarations[]`): its `name`. Gemini
//!   CLI's built-in tools (google-gemini/gemini-cli at 5411f11,
//!   `packages/core/src/tools/definitions/base-declarations.ts`): `run_shell_command`,
//!   `read_file`, `read_many_files`, `write_file`, `replace` (edit), `glob`, `grep_search`
//!   (formerly `search_file_content`), `list_directory`, `web_fetch`, `google_web_search`,
//!   `write_todos`, `save_memory`, `activate_skill`, `ask_user`, `enter_plan_mode`,
//!   `exit_plan_mode`, `get_internal_docs`, `read_mcp_resource`, `list_mcp_resources`,
//!   `invoke_agent`, `complete_task`, `update_topic`, `tracker_*`; its MCP tools are
//!   `mcp_<server>_<tool>` (one underscore, unlike Claude Code's `mcp__<server>__<tool>`);
//! - a tool Google runs (every other key of a `tools[]` object): the key, in lowerCamelCase
//!   (`googleSearch`, `googleSearchRetrieval`, `codeExecution`, `urlContext`, `computerUse`,
//!   `fileSearch`, `googleMaps`, `retrieval`, `enterpriseWebSearch`, and any key not known
//!   yet). Gemini CLI's `google_web_search` and `web_fetch` run as their own requests with
//!   `tools: [{googleSearch: {}}]` and `[{urlContext: {}}]`.
//!
//! **What it does.** [`filter_tools`] cuts what the policy does not permit out of `tools[]`
//! by splicing bytes (everything else, each kept declaration included, reaches the provider
//! byte for byte); a `tools[]` entry left empty is dropped. A
//! `toolConfig.functionCallingConfig.allowedFunctionNames` naming a removed function is
//! refused (400), as is anything that cannot be judged while a policy applies: a body that
//! is not a JSON object, a field given twice (in either proto3 JSON spelling, e.g. `tools`
//! and `tools`, or `functionDeclarations` and `function_declarations`), a declaration
//! without a string `name`, and `cachedContent` (a cached content can hold tools the request
//! does not show).
//!
//! **What it does not guarantee.** As for Claude Code (see [`crate::anthropic::tools`]): the
//! agent runs function calls on the engineer's machine, a permitted tool can reach what a
//! removed one does, earlier turns in `contents` are left as they are, and function calls in
//! the answer are not checked. A `:countTokens` body (tools inside
//! `generateContentRequest`) is not filtered: nothing runs, only the count may differ.

use bytes::{Bytes, BytesMut};
use serde_json::value::RawValue;

use super::json::{Members, lower_camel};
use crate::anthropic::tools::{Refused, ToolJudge};
use crate::denial::Denial;
use crate::policy::KeyEntry;

/// What the filter made of a request it may forward.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Filtered {
    /// The body to forward; `None` when nothing was cut (forward the original).
    pub body: Option<Bytes>,
    /// The tools removed: function names and built-in tool keys, in request order.
    pub removed: Vec<String>,
}

/// Applies the key's tool policy to a Gemini request body (see the module docs). Bodies of
/// keys without a tool policy pass through untouched (not even parsed), as do bodies where
/// nothing is cut.
pub fn filter_request(key: &KeyEntry, body: Bytes) -> Result<Bytes, Denial> {
    if !key.has_tool_policy() {
        return Ok(body);
    }
    match filter_tools(&body, key) {
        Ok(Filtered { body: Some(cut), .. }) => Ok(cut),
        Ok(Filtered { body: None, .. }) => Ok(body),
        Err(Refused::Invalid(detail)) => Err(Denial::InvalidRequest { detail }),
        Err(Refused::NotPermitted(what)) => Err(Denial::ToolNotAllowed {
            key: key.id.clone(),
            what,
        }),
    }
}

/// Applies the policy `judge` to a Gemini request body; see the module docs.
pub fn filter_tools(body: &[u8], judge: &dyn ToolJudge) -> Result<Filtered, Refused> {
    let invalid = Refused::Invalid;
    let top: Members<'_> =
        serde_json::from_slice(body).map_err(|e| invalid(format!("body is not a valid JSON object: {e}")))?;
    if top.get("cachedContent", "").map_err(invalid)?.is_some() {
        return Err(invalid(
            "cachedContent: a request using cached content cannot be checked against the tool \
             policy of this virtual key (the cache can hold tools the request does not show)"
                .into(),
        ));
    }
    let Some(raw_tools) = top.get("tools", "").map_err(invalid)? else {
        return Ok(Filtered::default());
    };
    let tools: Vec<&RawValue> = serde_json::from_str(raw_tools.get())
        .map_err(|e| invalid(format!("tools: must be an array: {e}")))?;
    let mut removed = Vec::new();
    let mut kept: Vec<Vec<u8>> = Vec::with_capacity(tools.len());
    for (i, tool) in tools.iter().enumerate() {
        if let Some(entry) = filter_tool(tool, i, judge, &mut removed)? {
            kept.push(entry);
        }
    }
    check_allowed_names(&top, &removed)?;
    if removed.is_empty() {
        return Ok(Filtered::default());
    }
    let mut array = Vec::with_capacity(raw_tools.get().len());
    array.push(b'[');
    array.extend_from_slice(&kept.join(&b","[..]));
    array.push(b']');
    let body = splice(body, raw_tools, &array).ok_or_else(|| invalid("tools: cannot be located".into()))?;
    Ok(Filtered {
        body: Some(body),
        removed,
    })
}

/// One `tools[]` entry as it is forwarded: its original bytes when nothing in it is cut, a
/// rebuilt object when something is, `None` when nothing is left.
fn filter_tool(
    tool: &RawValue,
    i: usize,
    judge: &dyn ToolJudge,
    removed: &mut Vec<String>,
) -> Result<Option<Vec<u8>>, Refused> {
    let invalid = Refused::Invalid;
    let path = format!("tools[{i}]");
    let members = Members::of(tool, &path).map_err(invalid)?;
    let mut seen: Vec<String> = Vec::new();
    let mut out: Vec<(&str, Vec<u8>)> = Vec::new();
    let mut cut = false;
    for (name, value) in &members.0 {
        let camel = lower_camel(name).into_owned();
        if seen.contains(&camel) {
            return Err(invalid(format!("{path}.{camel}: given more than once")));
        }
        seen.push(camel.clone());
        if value.get() == "null" {
            // An unset field enables nothing.
            out.push((name, value.get().as_bytes().to_vec()));
        } else if camel == "functionDeclarations" {
            let (kept, n_removed) = filter_declarations(value, &path, judge, removed)?;
            if n_removed == 0 {
                out.push((name, value.get().as_bytes().to_vec()));
            } else {
                cut = true;
                if !kept.is_empty() {
                    let mut list = b"[".to_vec();
                    list.extend_from_slice(&kept.join(&b","[..]));
                    list.push(b']');
                    out.push((name, list));
                }
            }
        } else if judge.permits(&camel) {
            out.push((name, value.get().as_bytes().to_vec()));
        } else {
            cut = true;
            removed.push(camel);
        }
    }
    if !cut {
        return Ok(Some(tool.get().as_bytes().to_vec()));
    }
    if out.iter().all(|(_, v)| v == b"null") {
        return Ok(None);
    }
    let mut object = b"{".to_vec();
    for (n, (name, value)) in out.iter().enumerate() {
        if n > 0 {
            object.push(b',');
        }
        object.extend_from_slice(serde_json::Value::from(*name).to_string().as_bytes());
        object.push(b':');
        object.extend_from_slice(value);
    }
    object.push(b'}');
    Ok(Some(object))
}

/// The kept declarations of a `functionDeclarations` list (raw bytes) and how many were
/// removed (their names pushed to `removed`).
fn filter_declarations<'a>(
    list: &'a RawValue,
    path: &str,
    judge: &dyn ToolJudge,
    removed: &mut Vec<String>,
) -> Result<(Vec<&'a [u8]>, usize), Refused> {
    let invalid = Refused::Invalid;
    let declarations: Vec<&RawValue> = serde_json::from_str(list.get())
        .map_err(|e| invalid(format!("{path}.functionDeclarations: must be an array: {e}")))?;
    let mut kept = Vec::with_capacity(declarations.len());
    let mut n_removed = 0;
    for (j, declaration) in declarations.iter().enumerate() {
        let at = format!("{path}.functionDeclarations[{j}]");
        let fields = Members::of(declaration, &at).map_err(invalid)?;
        let name = fields
            .get("name", &format!("{at}."))
            .map_err(invalid)?
            .and_then(|raw| serde_json::from_str::<String>(raw.get()).ok())
            .ok_or_else(|| {
                invalid(format!(
                    "{at}.name: a function without a string name cannot be checked against the tool policy"
                ))
            })?;
        if judge.permits(&name) {
            kept.push(declaration.get().as_bytes());
        } else {
            n_removed += 1;
            removed.push(name);
        }
    }
    Ok((kept, n_removed))
}

/// Refuses a `toolConfig.functionCallingConfig.allowedFunctionNames` naming a removed tool.
fn check_allowed_names(top: &Members<'_>, removed: &[String]) -> Result<(), Refused> {
    let invalid = Refused::Invalid;
    let Some(config) = top.get("toolConfig", "").map_err(invalid)? else {
        return Ok(());
    };
    let config = Members::of(config, "toolConfig").map_err(invalid)?;
    let Some(calling) = config
        .get("functionCallingConfig", "toolConfig.")
        .map_err(invalid)?
    else {
        return Ok(());
    };
    let path = "toolConfig.functionCallingConfig";
    let calling = Members::of(calling, path).map_err(invalid)?;
    let Some(names) = calling
        .get("allowedFunctionNames", &format!("{path}."))
        .map_err(invalid)?
    else {
        return Ok(());
    };
    let names: Vec<String> = serde_json::from_str(names.get()).map_err(|e| {
        invalid(format!(
            "{path}.allowedFunctionNames: must be an array of strings: {e}"
        ))
    })?;
    match names.iter().find(|n| removed.contains(n)) {
        Some(n) => Err(invalid(format!(
            "{path}.allowedFunctionNames names tool '{n}', which the tool policy of this virtual key removes"
        ))),
        None => Ok(()),
    }
}

/// `body` with the value `raw` (a slice of it) replaced by `with`; `None` if `raw` is not
/// inside `body`.
fn splice(body: &[u8], raw: &RawValue, with: &[u8]) -> Option<Bytes> {
    // A RawValue borrowed from `body` locates itself in it by address.
    let start = (raw.get().as_ptr() as usize).checked_sub(body.as_ptr() as usize)?;
    let end = start.checked_add(raw.get().len())?;
    if end > body.len() {
        return None;
    }
    let mut out = BytesMut::with_capacity(body.len());
    out.extend_from_slice(&body[..start]);
    out.extend_from_slice(with);
    out.extend_from_slice(&body[end..]);
    Some(out.freeze())
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

    /// What Gemini CLI sends: one tools entry with its function declarations.
    const CLI: &str = r#"{"contents":[{"role":"user","parts":[{"text":"hi"}]}],"systemInstruction":{"parts":[{"text":"s"}]}, "tools" : [{"functionDeclarations":[{"name":"read_file","description":"Reads","parametersJsonSchema":{"type":"object"}}, {"name":"run_shell_command","description":"Runs"},{"name":"write_file"},{"name":"mcp_github_create_issue"}]}],"generationConfig":{"temperature":0}}"#;

    #[test]
    fn removes_denied_functions_and_keeps_every_other_byte() {
        let f = filter_tools(CLI.as_bytes(), &policy(&[], &["run_shell_command", "mcp_*"])).unwrap();
        assert_eq!(f.removed, ["run_shell_command", "mcp_github_create_issue"]);
        assert_eq!(
            text(&f),
            CLI.replace(r#", {"name":"run_shell_command","description":"Runs"}"#, "")
                .replace(r#",{"name":"mcp_github_create_issue"}"#, "")
        );
        // Nothing cut: the original is forwarded.
        let f = filter_tools(CLI.as_bytes(), &policy(&[], &["Bash"])).unwrap();
        assert_eq!(f, Filtered::default());
        // Everything cut: the empty entry is dropped, the array stays.
        let f = filter_tools(CLI.as_bytes(), &policy(&["nothing"], &[])).unwrap();
        assert!(
            text(&f).contains(r#" "tools" : [],"generationConfig""#),
            "{}",
            text(&f)
        );
        assert_eq!(f.removed.len(), 4);
    }

    #[test]
    fn built_in_tools_are_judged_by_their_key() {
        let body = br#"{"tools":[{"googleSearch":{}},{"urlContext":{}},{"code_execution":{}},{"functionDeclarations":[{"name":"read_file"}],"googleSearchRetrieval":{"dynamicRetrievalConfig":{}}},{"futureTool":{"x":1}},{"googleMaps":null}]}"#;
        let f = filter_tools(body, &policy(&["read_file", "urlContext"], &[])).unwrap();
        assert_eq!(
            f.removed,
            [
                "googleSearch",
                "codeExecution",
                "googleSearchRetrieval",
                "futureTool"
            ]
        );
        assert_eq!(
            text(&f),
            r#"{"tools":[{"urlContext":{}},{"functionDeclarations":[{"name":"read_file"}]},{"googleMaps":null}]}"#
        );
        let f = filter_tools(body, &policy(&[], &["google*"])).unwrap();
        assert_eq!(f.removed, ["googleSearch", "googleSearchRetrieval"]);
        assert_eq!(
            text(&f),
            r#"{"tools":[{"urlContext":{}},{"code_execution":{}},{"functionDeclarations":[{"name":"read_file"}]},{"futureTool":{"x":1}},{"googleMaps":null}]}"#
        );
    }

    #[test]
    fn snake_case_fields_are_judged_too() {
        let body = br#"{"tools":[{"function_declarations":[{"name":"run_shell_command"},{"name":"glob"}]},{"google_search":{}}],"tool_config":{"function_calling_config":{"mode":"ANY","allowed_function_names":["glob"]}}}"#;
        let f = filter_tools(body, &policy(&[], &["run_shell_command", "googleSearch"])).unwrap();
        assert_eq!(f.removed, ["run_shell_command", "googleSearch"]);
        assert_eq!(
            text(&f),
            r#"{"tools":[{"function_declarations":[{"name":"glob"}]}],"tool_config":{"function_calling_config":{"mode":"ANY","allowed_function_names":["glob"]}}}"#
        );
    }

    #[test]
    fn allowed_function_names_of_a_removed_tool_are_refused() {
        let deny = policy(&[], &["run_shell_command"]);
        for body in [
            r#"{"tools":[{"functionDeclarations":[{"name":"run_shell_command"}]}],"toolConfig":{"functionCallingConfig":{"mode":"ANY","allowedFunctionNames":["run_shell_command"]}}}"#,
            r#"{"tools":[{"functionDeclarations":[{"name":"run_shell_command"}]}],"tool_config":{"functionCallingConfig":{"allowed_function_names":["x","run_shell_command"]}}}"#,
        ] {
            let r = filter_tools(body.as_bytes(), &deny);
            assert!(
                matches!(&r, Err(Refused::Invalid(m)) if m.contains("allowedFunctionNames names tool 'run_shell_command'")),
                "{r:?}"
            );
        }
        // Naming a kept tool is fine.
        let ok = r#"{"tools":[{"functionDeclarations":[{"name":"glob"}]}],"toolConfig":{"functionCallingConfig":{"allowedFunctionNames":["glob"]}}}"#;
        assert_eq!(filter_tools(ok.as_bytes(), &deny).unwrap(), Filtered::default());
    }

    #[test]
    fn requests_that_cannot_be_judged_are_refused() {
        let open = policy(&[], &[]);
        for (body, why) in [
            ("{nope", "not a valid JSON object"),
            ("[]", "not a valid JSON object"),
            (
                r#"{"tools":{"functionDeclarations":[]}}"#,
                "tools: must be an array",
            ),
            (r#"{"tools":[5]}"#, "tools[0]: must be an object"),
            (
                r#"{"tools":[],"tools":[{"googleSearch":{}}]}"#,
                "tools: given more than once",
            ),
            (
                r#"{"tools":[{"googleSearch":{}}],"tools":[]}"#,
                "tools: given more than once",
            ),
            (
                r#"{"tools":[{"functionDeclarations":[],"function_declarations":[{"name":"x"}]}]}"#,
                "tools[0].functionDeclarations: given more than once",
            ),
            (
                r#"{"tools":[{"functionDeclarations":{"name":"x"}}]}"#,
                "functionDeclarations: must be an array",
            ),
            (
                r#"{"tools":[{"functionDeclarations":[{"description":"x"}]}]}"#,
                "functionDeclarations[0].name",
            ),
            (
                r#"{"tools":[{"functionDeclarations":[{"name":7}]}]}"#,
                "functionDeclarations[0].name",
            ),
            (
                r#"{"tools":[{"functionDeclarations":[{"name":"a","name":"run_shell_command"}]}]}"#,
                "name: given more than once",
            ),
            (r#"{"cachedContent":"cachedContents/abc"}"#, "cachedContent"),
            (r#"{"cached_content":"cachedContents/abc"}"#, "cachedContent"),
            (
                r#"{"tools":[],"toolConfig":{"functionCallingConfig":{"allowedFunctionNames":"x"}}}"#,
                "allowedFunctionNames: must be an array of strings",
            ),
        ] {
            let r = filter_tools(body.as_bytes(), &open);
            assert!(
                matches!(&r, Err(Refused::Invalid(m)) if m.contains(why)),
                "{body}: {r:?}"
            );
        }
        for fine in [
            r#"{}"#,
            r#"{"tools":null}"#,
            r#"{"tools":[]}"#,
            r#"{"cachedContent":null}"#,
        ] {
            assert_eq!(
                filter_tools(fine.as_bytes(), &open).unwrap(),
                Filtered::default(),
                "{fine}"
            );
        }
    }

    #[test]
    fn escaped_names_are_judged_decoded() {
        let body = br#"{"tools":[{"functionDeclarations":[{"name":"run_shell_comman\u0064"}]},{"google\u0053earch":{}}]}"#;
        let f = filter_tools(body, &policy(&[], &["run_shell_command", "googleSearch"])).unwrap();
        assert_eq!(f.removed, ["run_shell_command", "googleSearch"]);
        assert_eq!(text(&f), r#"{"tools":[]}"#);
    }

    #[test]
    fn every_truncation_and_random_bytes_never_panic() {
        let deny = policy(&[], &["run_shell_command"]);
        for end in 0..=CLI.len() {
            let _ = filter_tools(&CLI.as_bytes()[..end], &deny);
        }
        let mut seed = 11u64;
        for _ in 0..500 {
            let mut bytes = CLI.as_bytes().to_vec();
            for _ in 0..4 {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let at = (seed >> 33) as usize % bytes.len();
                bytes[at] = (seed >> 20) as u8;
            }
            if let Ok(f) = filter_tools(&bytes, &deny) {
                if let Some(b) = f.body {
                    assert!(serde_json::from_slice::<serde_json::Value>(&b).is_ok());
                }
            }
        }
    }
}
