//! Tool (and prompt) namespacing: an upstream tool `read_file` of server `fs` is exposed as
//! `fs__read_file`. The separator is legal in Anthropic tool names (`.` is not), and server
//! names cannot contain it (validation), so the first `__` always splits correctly.

use std::collections::HashSet;
use std::sync::Mutex;

/// Separator between the server name and the upstream name.
pub const SEPARATOR: &str = "__";

/// Longest exposed name (MCP and the Anthropic API both cap tool names at 128 characters).
pub const MAX_NAME_LEN: usize = 128;

/// The exposed name of `name` on `server`, or `None` when it would exceed [`MAX_NAME_LEN`]
/// (such a tool could not be called through an Anthropic model, so it is not exposed).
pub fn qualify(server: &str, name: &str) -> Option<String> {
    let len = server.len() + SEPARATOR.len() + name.len();
    (len <= MAX_NAME_LEN && !name.is_empty()).then(|| format!("{server}{SEPARATOR}{name}"))
}

/// Splits an exposed name into server and upstream name.
pub fn split(exposed: &str) -> Option<(&str, &str)> {
    let (server, name) = exposed.split_once(SEPARATOR)?;
    (!server.is_empty() && !name.is_empty()).then_some((server, name))
}

/// Most tool names remembered by [`KnownTools`].
pub const MAX_KNOWN_TOOLS: usize = 10_000;

/// The tool names upstream servers listed: the only tool names a metric label carries, so a
/// client calling made-up names cannot grow the metrics (anything else is `other`).
#[derive(Debug, Default)]
pub struct KnownTools {
    names: Mutex<HashSet<(String, String)>>,
}

impl KnownTools {
    /// Remembers that `server` lists `tool` (up to [`MAX_KNOWN_TOOLS`] names).
    pub fn learn(&self, server: &str, tool: &str) {
        if let Ok(mut names) = self.names.lock() {
            if names.len() < MAX_KNOWN_TOOLS {
                names.insert((server.to_owned(), tool.to_owned()));
            }
        }
    }

    /// `tool` as a metric label: itself when `server` listed it, else `other`.
    pub fn label<'a>(&self, server: &str, tool: &'a str) -> &'a str {
        let known = self
            .names
            .lock()
            .is_ok_and(|n| n.contains(&(server.to_owned(), tool.to_owned())));
        if known { tool } else { crate::policy::OTHER_LABEL }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_listed_tools_are_labels() {
        let known = KnownTools::default();
        assert_eq!(known.label("fs", "read_file"), "other");
        known.learn("fs", "read_file");
        assert_eq!(known.label("fs", "read_file"), "read_file");
        assert_eq!(known.label("git", "read_file"), "other");
        for i in 0..MAX_KNOWN_TOOLS + 10 {
            known.learn("fs", &format!("t{i}"));
        }
        assert_eq!(known.names.lock().unwrap().len(), MAX_KNOWN_TOOLS);
    }

    #[test]
    fn round_trip_and_limits() {
        assert_eq!(qualify("fs", "read_file").as_deref(), Some("fs__read_file"));
        assert_eq!(split("fs__read_file"), Some(("fs", "read_file")));
        // Upstream names may contain the separator themselves: the first one splits.
        assert_eq!(split("fs__a__b"), Some(("fs", "a__b")));
        assert_eq!(split("nosep"), None);
        assert_eq!(split("__x"), None);
        assert_eq!(split("fs__"), None);
        let long = "t".repeat(MAX_NAME_LEN - 4);
        assert_eq!(qualify("fs", &long).map(|n| n.len()), Some(MAX_NAME_LEN));
        assert_eq!(qualify("fs", &format!("{long}x")), None);
        assert_eq!(qualify("fs", ""), None);
    }
}
