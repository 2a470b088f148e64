//! Reading policy documents from a file or a directory (a mounted ConfigMap).
//!
//! A directory may hold several documents (`*.json`, `*.yaml`, `*.yml`; hidden names such as
//! Kubernetes' `..data` are skipped): their lists are concatenated in file-name order, so an
//! operator can shard keys over several ConfigMaps projected into one volume. Singular
//! sections (`organization`, `audit`, `limits`, `mcp_gateway`) may be set by at most one file.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::document::PolicyDocument;

/// Why a policy could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A file or directory could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A file is not a well-formed policy document.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Parser message with line and column.
        message: String,
    },
    /// The directory holds no policy file.
    #[error("{0}: no policy files (*.json, *.yaml, *.yml) found")]
    Empty(PathBuf),
    /// Two shards set the same singular section or disagree on the version.
    #[error("{path}: {message}")]
    Merge {
        /// The file that conflicts.
        path: PathBuf,
        /// What conflicts.
        message: String,
    },
}

/// The raw material of one load: the merged document and a revision id of its bytes.
#[derive(Debug, Clone)]
pub struct LoadedDocument {
    /// All shards merged.
    pub document: PolicyDocument,
    /// Hex SHA-256 over the file names and bytes: equal revisions mean identical input.
    pub revision: String,
}

/// Reads the files at `path` and returns their bytes, in a stable order.
pub fn read_sources(path: &Path) -> Result<Vec<(PathBuf, Vec<u8>)>, LoadError> {
    let io = |source| LoadError::Io {
        path: path.to_owned(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    let files = if meta.is_dir() {
        let mut files = Vec::new();
        for entry in std::fs::read_dir(path).map_err(io)? {
            let entry = entry.map_err(io)?;
            let p = entry.path();
            if is_policy_file(&p) {
                files.push(p);
            }
        }
        files.sort();
        if files.is_empty() {
            return Err(LoadError::Empty(path.to_owned()));
        }
        files
    } else {
        vec![path.to_owned()]
    };
    files
        .into_iter()
        .map(|f| match std::fs::read(&f) {
            Ok(bytes) => Ok((f, bytes)),
            Err(source) => Err(LoadError::Io { path: f, source }),
        })
        .collect()
}

fn is_policy_file(p: &Path) -> bool {
    let visible = p
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| !n.starts_with('.'));
    let ext_ok = matches!(
        p.extension().and_then(|e| e.to_str()),
        Some("json" | "yaml" | "yml")
    );
    // Follows symlinks: ConfigMap keys are links into the `..data` directory.
    visible && ext_ok && p.is_file()
}

/// Parses and merges sources read by [`read_sources`].
pub fn parse_sources(sources: &[(PathBuf, Vec<u8>)]) -> Result<LoadedDocument, LoadError> {
    let mut hasher = Sha256::new();
    let mut merged: Option<PolicyDocument> = None;
    for (path, bytes) in sources {
        hasher.update(path.file_name().map(|n| n.as_encoded_bytes()).unwrap_or_default());
        hasher.update([0]);
        hasher.update(bytes);
        let doc = parse_one(path, bytes)?;
        merged = Some(match merged {
            None => doc,
            Some(acc) => merge(acc, doc, path)?,
        });
    }
    let document = merged.ok_or_else(|| LoadError::Empty(PathBuf::new()))?;
    Ok(LoadedDocument {
        document,
        revision: hex::encode(hasher.finalize()),
    })
}

/// Reads, parses and merges the document at `path` (file or directory).
pub fn load(path: &Path) -> Result<LoadedDocument, LoadError> {
    parse_sources(&read_sources(path)?)
}

fn parse_one(path: &Path, bytes: &[u8]) -> Result<PolicyDocument, LoadError> {
    let parse_err = |message: String| LoadError::Parse {
        path: path.to_owned(),
        message,
    };
    if path.extension().is_some_and(|e| e == "json") {
        serde_json::from_slice(bytes).map_err(|e| parse_err(e.to_string()))
    } else {
        serde_yaml::from_slice(bytes).map_err(|e| parse_err(e.to_string()))
    }
}

fn merge(mut acc: PolicyDocument, next: PolicyDocument, path: &Path) -> Result<PolicyDocument, LoadError> {
    let conflict = |message: String| LoadError::Merge {
        path: path.to_owned(),
        message,
    };
    if acc.version != next.version {
        return Err(conflict(format!(
            "version {} differs from the other files' version {}",
            next.version, acc.version
        )));
    }
    if next.organization.is_some() {
        if acc.organization.is_some() {
            return Err(conflict("organization is set by more than one file".into()));
        }
        acc.organization = next.organization;
    }
    if next.audit.is_some() {
        if acc.audit.is_some() {
            return Err(conflict("audit is set by more than one file".into()));
        }
        acc.audit = next.audit;
    }
    if next.limits.is_some() {
        if acc.limits.is_some() {
            return Err(conflict("limits is set by more than one file".into()));
        }
        acc.limits = next.limits;
    }
    if next.mcp_gateway.is_some() {
        if acc.mcp_gateway.is_some() {
            return Err(conflict("mcp_gateway is set by more than one file".into()));
        }
        acc.mcp_gateway = next.mcp_gateway;
    }
    for (model, price) in next.prices {
        if acc.prices.insert(model.clone(), price).is_some() {
            return Err(conflict(format!("prices.{model} is set by more than one file")));
        }
    }
    acc.teams.extend(next.teams);
    acc.keys.extend(next.keys);
    acc.budgets.extend(next.budgets);
    acc.providers.extend(next.providers);
    acc.routes.extend(next.routes);
    acc.mcp_servers.extend(next.mcp_servers);
    Ok(acc)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAIN: &str = "version: 1\norganization: {name: acme}\nteams: [{id: t1}]\n";
    const SHARD: &str = r#"{"version": 1, "keys": [{"id": "k1", "sha256": "00"}]}"#;

    #[test]
    fn directory_shards_merge_and_hidden_entries_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a-main.yaml"), MAIN).unwrap();
        std::fs::write(dir.path().join("b-keys.json"), SHARD).unwrap();
        std::fs::write(dir.path().join(".hidden.yaml"), "garbage: [").unwrap();
        std::fs::write(dir.path().join("README.txt"), "ignored").unwrap();
        let loaded = load(dir.path()).unwrap();
        assert_eq!(loaded.document.organization.unwrap().name, "acme");
        assert_eq!(loaded.document.keys.len(), 1);
        assert_eq!(loaded.document.teams.len(), 1);
        assert_eq!(loaded.revision.len(), 64);
    }

    #[test]
    fn revision_changes_with_content_only() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("p.yaml");
        std::fs::write(&f, MAIN).unwrap();
        let r1 = load(&f).unwrap().revision;
        assert_eq!(r1, load(&f).unwrap().revision);
        std::fs::write(&f, format!("{MAIN}\n# comment\n")).unwrap();
        assert_ne!(r1, load(&f).unwrap().revision);
    }

    #[test]
    fn parse_errors_name_the_file_and_position() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("bad.json");
        std::fs::write(&f, "{\"version\": 1, \"kyes\": []}").unwrap();
        let err = load(&f).unwrap_err().to_string();
        assert!(
            err.contains("bad.json") && err.contains("unknown field `kyes`"),
            "{err}"
        );
        assert!(err.contains("line 1"), "{err}");
    }

    #[test]
    fn singular_sections_conflict_across_shards() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.yaml"), MAIN).unwrap();
        std::fs::write(dir.path().join("b.yaml"), MAIN).unwrap();
        let err = load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("b.yaml") && err.contains("organization"), "{err}");
    }

    #[test]
    fn mcp_gateway_is_set_by_one_shard_at_most() {
        let dir = tempfile::tempdir().unwrap();
        let gw = "version: 1\nmcp_gateway: gateway\n";
        std::fs::write(dir.path().join("a.yaml"), gw).unwrap();
        std::fs::write(dir.path().join("b-keys.json"), SHARD).unwrap();
        let loaded = load(dir.path()).unwrap();
        assert_eq!(loaded.document.mcp_gateway.as_deref(), Some("gateway"));
        std::fs::write(dir.path().join("c.yaml"), gw).unwrap();
        let err = load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("c.yaml") && err.contains("mcp_gateway"), "{err}");
    }

    #[test]
    fn empty_directory_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(load(dir.path()), Err(LoadError::Empty(_))));
    }
}
