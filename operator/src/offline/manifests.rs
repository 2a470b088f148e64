//! Reading manifests (files, directories, standard input; multi-document YAML or JSON) into
//! the [`World`] the compiler takes, as the operator would see it in a cluster.
//!
//! What the cluster would add is made up where the compile depends on it: a uid for every
//! resource, and for each VirtualKey without `secretRef` the Secret the operator would generate
//! (with a placeholder digest, so the printed policy holds a stand-in `sha256` for such keys).
//! What the API server would refuse is an error here too where it is cheap to tell: a field the
//! CRD schema does not declare (a typo the API server would drop or refuse), an object defined
//! twice, an unknown Tollgate kind. CEL rules and bounds are not evaluated: `kubectl apply
//! --dry-run=server` does that.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Namespace, Secret};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::compile::{SecretDigest, World};
use crate::crd::{self, VirtualKey};
use crate::{credentials, secrets};

/// A problem with the input, naming where it is (`path#document`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{location}: {message}")]
pub struct ManifestError {
    /// `path`, or `path#N` for the N-th document of a file (from 0).
    pub location: String,
    /// What is wrong.
    pub message: String,
}

fn error(location: &str, message: impl Into<String>) -> ManifestError {
    ManifestError {
        location: location.to_owned(),
        message: message.into(),
    }
}

/// One parsed document and where it came from.
#[derive(Debug, Clone)]
pub struct Document {
    /// `path#N`.
    pub location: String,
    /// The document.
    pub value: Value,
}

/// Reads every document of `paths`: files, directories (their `.yaml`, `.yml` and `.json`
/// files, sorted; subdirectories too when `recursive`), or `-` for standard input.
pub fn read(paths: &[PathBuf], recursive: bool) -> Result<Vec<Document>, ManifestError> {
    let mut docs = Vec::new();
    for path in paths {
        if path.as_os_str() == "-" {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|e| error("-", format!("reading standard input: {e}")))?;
            docs.extend(parse("-", &text)?);
            continue;
        }
        let mut files = Vec::new();
        collect(path, recursive, true, &mut files)?;
        for file in files {
            let location = file.display().to_string();
            let text = std::fs::read_to_string(&file).map_err(|e| error(&location, e.to_string()))?;
            docs.extend(parse(&location, &text)?);
        }
    }
    Ok(docs)
}

/// The largest manifest file read (a file of 16 MiB of YAML is not a manifest).
const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;

fn collect(path: &Path, recursive: bool, top: bool, out: &mut Vec<PathBuf>) -> Result<(), ManifestError> {
    let location = path.display().to_string();
    // Inside a directory, symbolic links are not followed: a link out of the tree, a loop, or
    // one to /dev/zero in a pull request must not decide what CI reads.
    let meta = if top {
        std::fs::metadata(path)
    } else {
        std::fs::symlink_metadata(path)
    }
    .map_err(|e| error(&location, e.to_string()))?;
    if meta.file_type().is_symlink() {
        return Err(error(
            &location,
            "a symbolic link inside a directory is not followed".to_owned(),
        ));
    }
    if !meta.is_dir() {
        if !meta.is_file() || meta.len() > MAX_FILE_BYTES {
            return Err(error(
                &location,
                format!("not a regular file of at most {MAX_FILE_BYTES} bytes"),
            ));
        }
        out.push(path.to_owned());
        return Ok(());
    }
    if !top && !recursive {
        return Ok(());
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|e| error(&location, e.to_string()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for entry in entries {
        let manifest = entry
            .extension()
            .is_some_and(|e| e == "yaml" || e == "yml" || e == "json");
        let is_dir = std::fs::symlink_metadata(&entry).is_ok_and(|m| m.is_dir());
        if is_dir || manifest {
            collect(&entry, recursive, false, out)?;
        }
    }
    Ok(())
}

/// Parses a multi-document YAML (or JSON) stream; `kind: List` documents contribute their
/// items.
pub fn parse(location: &str, text: &str) -> Result<Vec<Document>, ManifestError> {
    let mut out = Vec::new();
    for (i, d) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let at = format!("{location}#{i}");
        let value: Value = serde::Deserialize::deserialize(d).map_err(|e| error(&at, e.to_string()))?;
        if value.is_null() {
            continue;
        }
        if value["kind"] == "List" {
            for (j, item) in value["items"].as_array().into_iter().flatten().enumerate() {
                out.push(Document {
                    location: format!("{at}.items[{j}]"),
                    value: item.clone(),
                });
            }
        } else {
            out.push(Document { location: at, value });
        }
    }
    Ok(out)
}

/// How documents without a namespace, and Secrets, are read.
#[derive(Debug, Clone)]
pub struct Options {
    /// The namespace of a VirtualKey or Secret that names none (kubectl's `--namespace`).
    pub namespace: String,
    /// The operator's namespace: Secrets there labelled `tollgate.dev/credential=true` may be
    /// named by credentials.
    pub policy_namespace: String,
    /// Credential Secrets that exist in the cluster but are not among the manifests.
    pub credential_secrets: Vec<String>,
}

/// The world the manifests describe, and what was not read.
#[derive(Debug, Clone, Default)]
pub struct Manifests {
    /// The snapshot to compile.
    pub world: World,
    /// `apiVersion kind name` of documents of other kinds, which the compile does not read.
    pub ignored: Vec<String>,
    /// `namespace/name` of the VirtualKeys given a placeholder generated Secret.
    pub placeholders: Vec<String>,
}

/// Builds the world from `docs`.
pub fn world(docs: &[Document], options: &Options) -> Result<Manifests, ManifestError> {
    let schemas: BTreeMap<String, Value> = crd::all()
        .into_iter()
        .filter_map(|(_, c)| {
            let kind = c.spec.names.kind.clone();
            let schema = c.spec.versions.into_iter().next()?.schema?.open_api_v3_schema?;
            Some((kind, serde_json::to_value(schema).ok()?))
        })
        .collect();
    let mut m = Manifests::default();
    let mut seen = BTreeSet::new();
    let api_version = format!("{}/{}", crd::GROUP, crd::VERSION);
    for doc in docs {
        let at = doc.location.as_str();
        let v = &doc.value;
        let (version, kind) = (
            v["apiVersion"].as_str().unwrap_or(""),
            v["kind"].as_str().unwrap_or(""),
        );
        let name = v["metadata"]["name"].as_str().unwrap_or("");
        if version.is_empty() || kind.is_empty() {
            return Err(error(at, "not a Kubernetes object (no apiVersion or kind)"));
        }
        let tollgate = version.split('/').next() == Some(crd::GROUP);
        let core = version == "v1" && matches!(kind, "Secret" | "Namespace");
        if !tollgate && !core {
            m.ignored.push(format!("{version} {kind} {name}"));
            continue;
        }
        if tollgate && version != api_version {
            return Err(error(at, format!("{version} is not served; use {api_version}")));
        }
        if name.is_empty() {
            return Err(error(at, format!("{kind} without metadata.name")));
        }
        let namespaced = matches!(kind, "VirtualKey" | "Secret");
        let ns = namespaced.then(|| {
            v["metadata"]["namespace"]
                .as_str()
                .unwrap_or(&options.namespace)
                .to_owned()
        });
        if !seen.insert((kind.to_owned(), ns.clone(), name.to_owned())) {
            let id = ns.as_ref().map_or(name.to_owned(), |ns| format!("{ns}/{name}"));
            return Err(error(at, format!("{kind} {id} is defined twice")));
        }
        let mut value = v.clone();
        if let Some(ns) = &ns {
            value["metadata"]["namespace"] = Value::String(ns.clone());
        }
        if tollgate {
            let schema = schemas
                .get(kind)
                .ok_or_else(|| error(at, format!("{kind} is not a Tollgate kind")))?;
            let mut unknown = Vec::new();
            // The schema leaves out what every object has.
            let mut declared = value.clone();
            if let Some(root) = declared.as_object_mut() {
                for implicit in ["apiVersion", "kind", "metadata"] {
                    root.remove(implicit);
                }
            }
            unknown_fields(&declared, schema, "", &mut unknown);
            if !unknown.is_empty() {
                return Err(error(
                    at,
                    format!(
                        "{kind} {name}: unknown field(s) {} (not in the CRD schema)",
                        unknown.join(", ")
                    ),
                ));
            }
            if value["metadata"]["uid"].is_null() {
                let id = ns.as_ref().map_or(name.to_owned(), |ns| format!("{ns}/{name}"));
                value["metadata"]["uid"] = Value::String(format!("offline:{kind}/{id}"));
            }
        }
        let w = &mut m.world;
        match kind {
            "Team" => w.teams.push(typed(at, value)?),
            "VirtualKey" => w.keys.push(typed(at, value)?),
            "Budget" => w.budgets.push(typed(at, value)?),
            "ModelProvider" => w.providers.push(typed(at, value)?),
            "ModelRoute" => w.routes.push(typed(at, value)?),
            "McpServer" => w.mcp_servers.push(typed(at, value)?),
            "AuditSink" => w.audit_sinks.push(typed(at, value)?),
            "Namespace" => {
                let n: Namespace = typed(at, value)?;
                w.namespaces
                    .insert(name.to_owned(), n.metadata.labels.unwrap_or_default());
            }
            "Secret" => {
                let s: Secret = typed(at, value)?;
                let ns = ns.unwrap_or_default();
                let labels = s.metadata.labels.as_ref();
                // As the operator sees them: key Secrets by their label, credentials by theirs.
                if labels.is_some_and(|l| l.contains_key(secrets::KEY_LABEL)) {
                    w.secrets
                        .insert((ns.clone(), name.to_owned()), secrets::digest_of(&s));
                }
                if ns == options.policy_namespace && credentials::is_credential(labels) {
                    w.credential_secrets.insert(name.to_owned());
                }
            }
            other => return Err(error(at, format!("{other} is not a Tollgate kind"))),
        }
    }
    m.world
        .credential_secrets
        .extend(options.credential_secrets.iter().cloned());
    m.placeholders = generated_secrets(&mut m.world);
    Ok(m)
}

fn typed<K: DeserializeOwned>(at: &str, value: Value) -> Result<K, ManifestError> {
    serde_json::from_value(value).map_err(|e| error(at, e.to_string()))
}

/// Adds the Secret the operator would generate for each VirtualKey without `secretRef` whose
/// Secret is not among the manifests; returns those keys.
fn generated_secrets(world: &mut World) -> Vec<String> {
    let mut placeholders = Vec::new();
    for k in &world.keys {
        if k.spec.secret_ref.is_some() {
            continue;
        }
        let (ns, name) = key_name(k);
        let secret = (ns.clone(), secrets::generated_name(&name));
        if world.secrets.contains_key(&secret) {
            continue;
        }
        // The hash of a fresh random key, so nobody holds a key that matches it (a digest of
        // anything derived from the key's name could be used by whoever knows that name).
        let digest = secrets::generate_key()
            .map(|k| secrets::key_sha256(&k))
            .unwrap_or_else(|_| "0".repeat(64));
        world.secrets.insert(
            secret,
            SecretDigest {
                digests: BTreeMap::from([(crd::common::DEFAULT_SECRET_KEY.to_owned(), Some(digest))]),
                owner_uids: vec![k.metadata.uid.clone().unwrap_or_default()],
            },
        );
        placeholders.push(format!("{ns}/{name}"));
    }
    placeholders
}

fn key_name(k: &VirtualKey) -> (String, String) {
    (
        k.metadata.namespace.clone().unwrap_or_default(),
        k.metadata.name.clone().unwrap_or_default(),
    )
}

/// The paths of fields in `value` that `schema` (a structural CRD schema) does not declare.
fn unknown_fields(value: &Value, schema: &Value, path: &str, out: &mut Vec<String>) {
    let additional = schema.get("additionalProperties");
    match value {
        Value::Object(map) => {
            let props = schema.get("properties").and_then(Value::as_object);
            let open = schema.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true))
                || additional == Some(&Value::Bool(true));
            for (k, v) in map {
                let at = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match (props.and_then(|p| p.get(k)), additional.filter(|a| a.is_object())) {
                    (Some(s), _) | (None, Some(s)) => unknown_fields(v, s, &at, out),
                    (None, None) if open || props.is_none() => {}
                    (None, None) => out.push(at),
                }
            }
        }
        Value::Array(items) => {
            if let Some(s) = schema.get("items") {
                for (i, v) in items.iter().enumerate() {
                    unknown_fields(v, s, &format!("{path}[{i}]"), out);
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> Options {
        Options {
            namespace: "default".into(),
            policy_namespace: "tollgate-system".into(),
            credential_secrets: vec![],
        }
    }

    fn world_of(text: &str) -> Result<Manifests, ManifestError> {
        world(&parse("test.yaml", text)?, &options())
    }

    #[test]
    fn documents_become_the_world_the_operator_would_see() {
        let m = world_of(
            r#"
apiVersion: v1
kind: Namespace
metadata: {name: team-a, labels: {tollgate.dev/team: platform}}
---
apiVersion: tollgate.dev/v1alpha1
kind: VirtualKey
metadata: {name: alice}
spec: {team: platform}
---
apiVersion: v1
kind: List
items:
  - apiVersion: tollgate.dev/v1alpha1
    kind: VirtualKey
    metadata: {name: ci, namespace: team-a}
    spec: {team: platform, secretRef: {name: ci-key}}
  - apiVersion: v1
    kind: Secret
    metadata: {name: ci-key, namespace: team-a, labels: {tollgate.dev/virtual-key: ci}}
    stringData: {key: tg_ci}
---
apiVersion: v1
kind: Secret
metadata: {name: unlabelled, namespace: team-a}
stringData: {key: tg_x}
---
apiVersion: v1
kind: Secret
metadata: {name: anthropic, namespace: tollgate-system, labels: {tollgate.dev/credential: "true"}}
stringData: {api-key: sk-ant}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
"#,
        )
        .unwrap();
        let w = &m.world;
        assert_eq!(w.namespaces["team-a"]["tollgate.dev/team"], "platform");
        assert_eq!(w.keys.len(), 2);
        assert_eq!(w.keys[0].metadata.namespace.as_deref(), Some("default"));
        assert_eq!(
            w.keys[0].metadata.uid.as_deref(),
            Some("offline:VirtualKey/default/alice")
        );
        let ci = &w.secrets[&("team-a".to_owned(), "ci-key".to_owned())];
        assert_eq!(
            ci.digests["key"].as_deref(),
            Some(secrets::key_sha256("tg_ci").as_str())
        );
        assert!(
            !w.secrets
                .contains_key(&("team-a".to_owned(), "unlabelled".to_owned()))
        );
        assert_eq!(w.credential_secrets, ["anthropic".to_owned()].into());
        // alice's generated Secret is a placeholder the key owns.
        assert_eq!(m.placeholders, ["default/alice"]);
        let generated = &w.secrets[&("default".to_owned(), secrets::generated_name("alice"))];
        assert_eq!(generated.owner_uids, ["offline:VirtualKey/default/alice"]);
        assert_eq!(m.ignored, ["apps/v1 Deployment web"]);
    }

    #[test]
    fn what_the_api_server_would_refuse_is_an_error_naming_the_document() {
        let typo = "apiVersion: tollgate.dev/v1alpha1\nkind: VirtualKey\nmetadata: {name: a}\nspec: {team: t, modles: {allow: [x]}}\n";
        let e = world_of(typo).unwrap_err();
        assert_eq!(e.location, "test.yaml#0");
        assert!(e.message.contains("spec.modles"), "{e}");
        let nested = "apiVersion: tollgate.dev/v1alpha1\nkind: AuditSink\nmetadata: {name: s}\nspec: {kind: s3, endpoint: 'https://s3', retry: {maxBackof: 1}}\n";
        assert!(
            world_of(nested)
                .unwrap_err()
                .message
                .contains("spec.retry.maxBackof")
        );
        let team = "apiVersion: tollgate.dev/v1alpha1\nkind: Team\nmetadata: {name: t}\nspec: {}\n";
        let twice = format!("{team}---\n{team}");
        let e = world_of(&twice).unwrap_err();
        assert_eq!(e.location, "test.yaml#1");
        assert!(e.message.contains("defined twice"), "{e}");
        for (text, message) in [
            (
                "apiVersion: tollgate.dev/v1alpha1\nkind: Gadget\nmetadata: {name: g}\n",
                "not a Tollgate kind",
            ),
            (
                "apiVersion: tollgate.dev/v1\nkind: Team\nmetadata: {name: t}\n",
                "not served",
            ),
            (
                "apiVersion: tollgate.dev/v1alpha1\nkind: Team\nmetadata: {}\n",
                "without metadata.name",
            ),
            (
                "apiVersion: tollgate.dev/v1alpha1\nkind: ModelProvider\nmetadata: {name: p}\nspec: {endpoint: \"https://x\"}\n",
                "kind",
            ),
            ("just: a map\n", "not a Kubernetes object"),
            ("a: [\n", "test.yaml#0"),
        ] {
            let e = world_of(text).unwrap_err();
            assert!(e.to_string().contains(message), "{text}: {e}");
        }
    }

    #[test]
    fn directories_are_read_in_order_and_only_their_manifests() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("b.yaml"),
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: b}\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("a.yml"),
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("notes.md"), "not yaml: [").unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(
            dir.path().join("sub/c.json"),
            r#"{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "c"}}"#,
        )
        .unwrap();
        let names = |docs: Vec<Document>| -> Vec<String> {
            docs.iter()
                .map(|d| d.value["metadata"]["name"].as_str().unwrap().to_owned())
                .collect()
        };
        assert_eq!(names(read(&[dir.path().to_owned()], false).unwrap()), ["a", "b"]);
        assert_eq!(
            names(read(&[dir.path().to_owned()], true).unwrap()),
            ["a", "b", "c"]
        );
        let missing = read(&[dir.path().join("nope.yaml")], false).unwrap_err();
        assert!(missing.location.ends_with("nope.yaml"), "{missing}");
    }

    /// A pull request cannot make CI read outside the tree or something endless.
    #[cfg(unix)]
    #[test]
    fn links_inside_a_directory_and_special_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("a.yaml"),
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n",
        )
        .unwrap();
        std::os::unix::fs::symlink("/dev/zero", dir.path().join("zero.yaml")).unwrap();
        let e = read(&[dir.path().to_owned()], false).unwrap_err();
        assert!(
            e.location.ends_with("zero.yaml") && e.to_string().contains("symbolic link"),
            "{e}"
        );
        std::fs::remove_file(dir.path().join("zero.yaml")).unwrap();
        std::os::unix::fs::symlink(dir.path(), dir.path().join("loop.yaml")).unwrap();
        assert!(read(&[dir.path().to_owned()], true).is_err());
        // Named directly, a device is not a manifest either.
        assert!(read(&[PathBuf::from("/dev/zero")], false).is_err());
    }
}
