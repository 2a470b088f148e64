//! Tool (and prompt) namespacing: an upstream tool `read_file` of server `fs` is exposed as
//! `fs__read_file`. The separator is legal in Anthropic tool names (`.` is not), and server
//! names cannot contain it (validation), so the first `__` always splits correctly.

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

#[cfg(test)]
mod tests {
    use super::*;

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
