//! Minimal glob patterns for model and tool names: `*` matches any run, `?` one character.

/// A compiled glob pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob {
    pattern: String,
    literal: bool,
}

impl Glob {
    /// Compiles a pattern; every string is a valid pattern.
    pub fn new(pattern: &str) -> Self {
        Self {
            literal: !pattern.contains(['*', '?']),
            pattern: pattern.to_owned(),
        }
    }

    /// The pattern text.
    pub fn as_str(&self) -> &str {
        &self.pattern
    }

    /// Whether the pattern has no wildcard.
    pub fn is_literal(&self) -> bool {
        self.literal
    }

    /// Whether `name` matches the whole pattern.
    pub fn matches(&self, name: &str) -> bool {
        if self.literal {
            return self.pattern == name;
        }
        wildcard_match(self.pattern.as_bytes(), name.as_bytes())
    }

    /// Whether the pattern matches `prefix` followed by anything at all: some prefix of
    /// `prefix` matches the pattern without a trailing `*`. (Sufficient, and exact for the
    /// patterns policies use: `*`, `mcp_connector__*`, `mcp_connector__host/path__*`.)
    pub fn matches_every_extension_of(&self, prefix: &str) -> bool {
        let Some(head) = self.pattern.as_bytes().strip_suffix(b"*") else {
            return false;
        };
        let prefix = prefix.as_bytes();
        (0..=prefix.len()).any(|k| wildcard_match(head, &prefix[..k]))
    }

    /// Whether the pattern matches at least one name that starts with `prefix`: the pattern,
    /// read over `prefix`, is still alive (any remaining pattern can be completed).
    pub fn matches_some_extension_of(&self, prefix: &str) -> bool {
        let p = self.pattern.as_bytes();
        // live[i]: the pattern's first i bytes can match what was read so far.
        let mut live = vec![false; p.len() + 1];
        live[0] = true;
        close_stars(p, &mut live);
        for &c in prefix.as_bytes() {
            let mut next = vec![false; p.len() + 1];
            for i in (0..p.len()).filter(|&i| live[i]) {
                match p[i] {
                    b'*' => next[i] = true,
                    b'?' => next[i + 1] = true,
                    b if b == c => next[i + 1] = true,
                    _ => {}
                }
            }
            close_stars(p, &mut next);
            if !next.contains(&true) {
                return false;
            }
            live = next;
        }
        true
    }
}

/// A `*` may match nothing: a live position before a star makes the one after it live.
fn close_stars(p: &[u8], live: &mut [bool]) {
    for i in 0..p.len() {
        if live[i] && p[i] == b'*' {
            live[i + 1] = true;
        }
    }
}

/// Iterative wildcard match with single-star backtracking: O(len(p) * len(s)) worst case.
fn wildcard_match(p: &[u8], s: &[u8]) -> bool {
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        match p.get(pi) {
            Some(b'*') => {
                star = Some((pi, si));
                pi += 1;
            }
            Some(&c) if c == b'?' || c == s[si] => {
                pi += 1;
                si += 1;
            }
            _ => match star {
                Some((sp, ss)) => {
                    pi = sp + 1;
                    si = ss + 1;
                    star = Some((sp, ss + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// Deny-wins allow/deny lists: an empty allow list allows everything not denied.
#[derive(Debug, Clone, Default)]
pub struct AllowDeny {
    allow: Vec<Glob>,
    deny: Vec<Glob>,
}

impl AllowDeny {
    /// Compiles allow and deny pattern lists.
    pub fn new(allow: &[String], deny: &[String]) -> Self {
        Self {
            allow: allow.iter().map(|p| Glob::new(p)).collect(),
            deny: deny.iter().map(|p| Glob::new(p)).collect(),
        }
    }

    /// Whether `name` is permitted.
    pub fn permits(&self, name: &str) -> bool {
        self.permits_either(name, name)
    }

    /// Whether a thing known by two names (a model alias and the model it routes to) is
    /// permitted: neither name is denied, and an allow list names at least one of them.
    pub fn permits_either(&self, a: &str, b: &str) -> bool {
        let denied = |n: &str| self.deny.iter().any(|g| g.matches(n));
        let allowed = |n: &str| self.allow.iter().any(|g| g.matches(n));
        !denied(a) && !denied(b) && (self.allow.is_empty() || allowed(a) || allowed(b))
    }

    /// Whether every name starting with `prefix` is permitted: no deny pattern can match
    /// such a name, and the allow list is empty or has a pattern matching all of them. Used
    /// where the names cannot be known in advance (the tools of a remote MCP server).
    pub fn permits_every_name_with_prefix(&self, prefix: &str) -> bool {
        !self.deny.iter().any(|g| g.matches_some_extension_of(prefix))
            && (self.allow.is_empty() || self.allow.iter().any(|g| g.matches_every_extension_of(prefix)))
    }

    /// The allow patterns, for error messages.
    pub fn allow_patterns(&self) -> impl Iterator<Item = &str> {
        self.allow.iter().map(Glob::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_cases() {
        let cases = [
            ("claude-*", "claude-opus-4-8", true),
            ("claude-*", "gpt-4", false),
            ("*", "", true),
            ("", "", true),
            ("", "a", false),
            ("claude-?onnet-*", "claude-sonnet-4-5", true),
            ("*-haiku-*", "claude-haiku-4-5", true),
            ("*-haiku-*", "claude-haiku", false),
            ("a*b*c", "aXXbYYc", true),
            ("a*b*c", "aXXbYY", false),
            ("exact", "exact", true),
            ("exact", "exactly", false),
            ("**x", "yyx", true),
        ];
        for (p, s, want) in cases {
            assert_eq!(Glob::new(p).matches(s), want, "{p:?} vs {s:?}");
        }
    }

    #[test]
    fn prefix_reasoning_agrees_with_matching() {
        let prefix = "mcp_connector__mcp.example.com/mcp__";
        let every = [
            ("*", true),
            ("mcp_connector__*", true),
            ("mcp_connector__mcp.example.com/mcp__*", true),
            ("*__*", true),
            ("mcp_connector__mcp.example.com/*", true),
            ("mcp_connector__mcp.example.com/mcp__read", false),
            ("mcp_connector__other/*", false),
            ("mcp_*__x*", false),
            ("", false),
        ];
        for (p, want) in every {
            assert_eq!(Glob::new(p).matches_every_extension_of(prefix), want, "{p}");
        }
        let some = [
            ("*", true),
            ("mcp_connector__mcp.example.com/mcp__delete_*", true),
            ("*delete*", true),
            ("mcp_connector__?cp.example.com/mcp__x", true),
            ("mcp_connector__other/*", false),
            ("Bash", false),
            ("mcp__*", false),
            ("", false),
        ];
        for (p, want) in some {
            assert_eq!(Glob::new(p).matches_some_extension_of(prefix), want, "{p}");
        }
        // Cross-check against plain matching on sample names.
        let mut rng = 0x9e37_79b9_u64;
        let mut next = || {
            rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1);
            (rng >> 33) as usize
        };
        let alphabet = b"ab_*?";
        for _ in 0..3000 {
            let pat: String = (0..next() % 6).map(|_| alphabet[next() % 5] as char).collect();
            let pre: String = (0..next() % 4).map(|_| alphabet[next() % 3] as char).collect();
            let g = Glob::new(&pat);
            let tails = ["", "a", "b", "_", "ab", "ba", "a_b", "bbb", "_a_"];
            let names: Vec<String> = tails.iter().map(|t| format!("{pre}{t}")).collect();
            if g.matches_every_extension_of(&pre) {
                assert!(names.iter().all(|n| g.matches(n)), "{pat:?} {pre:?}");
            }
            if names.iter().any(|n| g.matches(n)) {
                assert!(g.matches_some_extension_of(&pre), "{pat:?} {pre:?}");
            }
        }
    }

    #[test]
    fn every_name_with_a_prefix() {
        let p = "mcp_connector__h/p__";
        let ad = |allow: &[&str], deny: &[&str]| {
            let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
            AllowDeny::new(&s(allow), &s(deny))
        };
        assert!(ad(&[], &[]).permits_every_name_with_prefix(p));
        assert!(ad(&[], &["Bash"]).permits_every_name_with_prefix(p));
        assert!(!ad(&[], &["*delete*"]).permits_every_name_with_prefix(p));
        assert!(!ad(&["Read"], &[]).permits_every_name_with_prefix(p));
        assert!(ad(&["Read", "mcp_connector__h/*"], &[]).permits_every_name_with_prefix(p));
        assert!(!ad(&["mcp_connector__h/p__read"], &[]).permits_every_name_with_prefix(p));
    }

    #[test]
    fn deny_wins_and_empty_allow_allows_all() {
        let ad = AllowDeny::new(&["claude-*".into()], &["claude-opus-*".into()]);
        assert!(ad.permits("claude-sonnet-4-5"));
        assert!(!ad.permits("claude-opus-4-8"));
        assert!(!ad.permits("gpt-5"));
        let open = AllowDeny::new(&[], &["*opus*".into()]);
        assert!(open.permits("anything"));
        assert!(!open.permits("claude-opus-4-8"));
    }

    #[test]
    fn two_names_deny_if_either_is_denied_and_allow_if_either_is_allowed() {
        let no_opus = AllowDeny::new(&[], &["claude-opus-*".into()]);
        assert!(!no_opus.permits_either("gw-opus", "claude-opus-4-8"));
        assert!(no_opus.permits_either("gw-haiku", "claude-haiku-4-5"));
        let aliases = AllowDeny::new(&["gw-haiku".into()], &[]);
        assert!(aliases.permits_either("gw-haiku", "claude-haiku-4-5"));
        assert!(!aliases.permits_either("gw-opus", "claude-opus-4-8"));
        let family = AllowDeny::new(&["claude-haiku-*".into()], &[]);
        assert!(family.permits_either("gw-haiku", "claude-haiku-4-5"));
    }
}
