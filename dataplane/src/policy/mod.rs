//! The policy: document types (the operator contract), loading, validation, compilation into
//! immutable snapshots, and the hot-reloading store the request path reads from.

pub mod document;
pub mod glob;
pub mod load;
pub mod providers;
pub mod snapshot;
pub mod store;
pub mod validate;

pub use document::{POLICY_VERSION, PolicyDocument};
pub use snapshot::{
    CompiledBudget, CredentialReader, KeyEntry, McpServerEntry, OTHER_LABEL, ProviderEntry, Snapshot,
    SystemCredentials, Target, hash_key,
};
pub use store::{PolicyStore, ReloadOutcome};

/// The JSON Schema of [`PolicyDocument`], as checked in at `dataplane/schema/policy.schema.json`.
pub fn json_schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(PolicyDocument)).unwrap_or_default()
}

/// Loads, validates and compiles the document at `path` once (the `check` command).
pub fn check(path: &std::path::Path, prices: &crate::pricing::PriceTable) -> anyhow::Result<Snapshot> {
    let loaded = load::load(path)?;
    Ok(Snapshot::compile(loaded, prices, &SystemCredentials)?)
}

#[cfg(test)]
mod tests {
    /// The checked-in schema must equal the one generated from the types.
    /// Regenerate with `cargo run -p tollgate-dataplane --bin tollgate-proxy -- schema > dataplane/schema/policy.schema.json`.
    #[test]
    fn checked_in_schema_matches_the_types() {
        let generated = serde_json::to_string_pretty(&super::json_schema()).unwrap() + "\n";
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/schema/policy.schema.json");
        let checked_in = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            generated == checked_in,
            "dataplane/schema/policy.schema.json is out of date: run \
             `cargo run -p tollgate-dataplane --bin tollgate-proxy -- schema > dataplane/schema/policy.schema.json`"
        );
    }

    /// Every example policy in the repository validates.
    #[test]
    fn example_policies_validate() {
        let root = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples"));
        let mut seen = 0;
        for entry in std::fs::read_dir(root).unwrap() {
            let path = entry.unwrap().path();
            if path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("policy"))
            {
                let loaded = super::load::load(&path).unwrap();
                super::validate::validate(&loaded.document)
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                seen += 1;
            }
        }
        assert!(seen >= 2, "examples/policy*.yaml not found");
    }
}
