//! What the API server accepts as object names, label values and annotation keys, so every
//! name the operator derives from a user's resource fits where it is written. A value that
//! does not fit would be refused with 422, for that object only; deriving it safely here
//! keeps that from ever happening.

use sha2::{Digest, Sha256};

/// Longest object name (DNS-1123 subdomain).
pub const MAX_NAME: usize = 253;
/// Longest label value.
pub const MAX_LABEL_VALUE: usize = 63;

/// A DNS-1123 subdomain: lower-case alphanumerics, `-` and `.`, starting and ending with an
/// alphanumeric, at most 253 characters (Secret, ConfigMap and most object names).
pub fn is_dns1123_subdomain(s: &str) -> bool {
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    !s.is_empty()
        && s.len() <= MAX_NAME
        && s.chars().all(|c| alnum(c) || c == '-' || c == '.')
        && s.starts_with(alnum)
        && s.ends_with(alnum)
}

/// A label value: empty, or at most 63 characters of alphanumerics, `-`, `_` and `.`,
/// starting and ending with an alphanumeric.
pub fn is_label_value(s: &str) -> bool {
    let alnum = |c: char| c.is_ascii_alphanumeric();
    s.is_empty()
        || (s.len() <= MAX_LABEL_VALUE
            && s.chars().all(|c| alnum(c) || matches!(c, '-' | '_' | '.'))
            && s.starts_with(alnum)
            && s.ends_with(alnum))
}

/// A qualified name (label and annotation keys): an optional DNS subdomain prefix and `/`,
/// then at most 63 characters shaped like a label value (non-empty).
pub fn is_qualified_name(s: &str) -> bool {
    let (prefix, name) = match s.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    prefix.is_none_or(is_dns1123_subdomain) && !name.is_empty() && is_label_value(name)
}

/// `value` itself when it is a valid label value, otherwise `h-` and the first 40 hex
/// characters of its SHA-256: unique in practice, valid, and the same every time.
pub fn label_value(value: &str) -> String {
    if is_label_value(value) {
        return value.to_owned();
    }
    let digest = hex::encode(Sha256::digest(value.as_bytes()));
    format!("h-{}", &digest[..40])
}

/// At most `max` bytes of `s`, cut on a character boundary, with `…` when something was cut.
pub fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let ellipsis = '…';
    let mut end = max.saturating_sub(ellipsis.len_utf8());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{ellipsis}", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subdomains() {
        assert!(is_dns1123_subdomain("tollgate-vk-alice.dev"));
        assert!(is_dns1123_subdomain(&"a".repeat(253)));
        for bad in ["", "A", "-a", "a-", "a_b", &"a".repeat(254)] {
            assert!(!is_dns1123_subdomain(bad), "{bad}");
        }
    }

    #[test]
    fn label_values() {
        assert!(is_label_value(""));
        assert!(is_label_value("Alice_1.x"));
        assert!(is_label_value(&"a".repeat(63)));
        for bad in ["-a", "a.", "a b", "a/b", &"a".repeat(64)] {
            assert!(!is_label_value(bad), "{bad}");
        }
    }

    #[test]
    fn qualified_names() {
        assert!(is_qualified_name("tollgate.dev/virtual-key"));
        assert!(is_qualified_name("app.kubernetes.io/managed-by"));
        assert!(!is_qualified_name("Tollgate.dev/x"));
        assert!(!is_qualified_name("tollgate.dev/"));
    }

    #[test]
    fn long_or_odd_values_become_a_stable_valid_label() {
        let long = "a.b-".repeat(60) + "z";
        let v = label_value(&long);
        assert!(is_label_value(&v) && v.starts_with("h-"), "{v}");
        assert_eq!(v, label_value(&long), "stable");
        assert_ne!(
            v,
            label_value(&(long.clone() + "y")),
            "distinct inputs, distinct values"
        );
        assert_eq!(label_value("alice"), "alice");
    }

    #[test]
    fn truncation_keeps_characters_whole() {
        assert_eq!(truncate("short", 10), "short");
        let t = truncate(&"é".repeat(600), 1024);
        assert!(t.len() <= 1024 && t.ends_with('…'), "{}", t.len());
    }
}
