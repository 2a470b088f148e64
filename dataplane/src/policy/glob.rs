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
