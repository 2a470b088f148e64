//! A string that never prints: provider credentials live in memory only as [`Secret`]; and
//! where credential values are read from ([`CredentialReader`]).

use std::fmt;

/// A secret value whose `Debug` and `Display` are redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value, trimming surrounding whitespace (files often end in a newline).
    pub fn new(value: &str) -> Self {
        Self(value.trim().to_owned())
    }

    /// The secret itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Where credential values come from; tests substitute the environment.
pub trait CredentialReader: Send + Sync {
    /// Reads an environment variable.
    fn env(&self, name: &str) -> Option<String>;
    /// Reads a file.
    fn file(&self, path: &str) -> std::io::Result<String>;
}

/// Reads credentials from the process environment and the file system.
pub struct SystemCredentials;

impl CredentialReader for SystemCredentials {
    fn env(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
    fn file(&self, path: &str) -> std::io::Result<String> {
        std::fs::read_to_string(path)
    }
}

#[cfg(test)]
mod tests {
    use super::Secret;

    #[test]
    fn never_formats_its_value() {
        let s = Secret::new(" sk-ant-very-secret\n");
        assert_eq!(s.expose(), "sk-ant-very-secret");
        assert!(!format!("{s:?} {s}").contains("very-secret"));
    }
}
