//! `examples/k8s/*.yaml` and `examples/crds/*.yaml` (the cloud providers) validate against the generated CRD schemas (jsonschema, strict about
//! unknown fields), pass the CRDs' CEL rules, and compile into a policy with every resource
//! Ready (with the Secrets the examples tell the reader to create).

mod support;

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::{Value, json};
use tollgate_operator::compile::{self, Settings};
use tollgate_operator::crd;
use tollgate_operator::offline::manifests;

fn yaml_files(dir: &str) -> Vec<std::path::PathBuf> {
    let dir = support::operator_dir().join("..").join(dir);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

fn examples() -> Vec<(String, Value)> {
    let mut files = yaml_files("examples/k8s");
    assert!(files.len() >= 4, "examples/k8s/*.yaml not found");
    let clouds = yaml_files("examples/crds");
    assert!(clouds.len() >= 2, "examples/crds/*.yaml not found");
    files.extend(clouds);
    let mut out = Vec::new();
    for f in files {
        for (i, doc) in support::yaml_documents(&f).into_iter().enumerate() {
            out.push((format!("{}#{i}", f.file_name().unwrap().to_string_lossy()), doc));
        }
    }
    out
}

fn schemas() -> BTreeMap<String, Value> {
    crd::all()
        .into_iter()
        .map(|(_, c)| {
            let s = c.spec.versions[0]
                .schema
                .as_ref()
                .unwrap()
                .open_api_v3_schema
                .as_ref()
                .unwrap();
            (c.spec.names.kind.clone(), serde_json::to_value(s).unwrap())
        })
        .collect()
}

#[test]
fn examples_validate_against_the_crd_schemas_and_cel_rules() {
    let schemas = schemas();
    let mut cases = Vec::new();
    for (name, doc) in examples() {
        if doc["apiVersion"]
            .as_str()
            .is_some_and(|v| v.starts_with("tollgate.dev/"))
        {
            let kind = doc["kind"].as_str().unwrap();
            let schema = schemas
                .get(kind)
                .unwrap_or_else(|| panic!("{name}: unknown kind {kind}"));
            if let Err(e) = kube::core::cel::Validator::new().validate(schema, &doc, None) {
                panic!("{name}: CEL: {e}");
            }
            cases.push(json!({"name": name, "schema": schema, "object": doc}));
        }
    }
    assert!(cases.len() >= 10);
    let (ok, out) = validate(&cases);
    assert!(ok, "{out}");

    // The validator does catch a typo.
    let mut bad = cases[0].clone();
    bad["object"]["spec"]["tyop"] = json!(1);
    assert!(!validate(&[bad]).0);

    // Bounds (operator/src/crd/bounds.rs) refuse an over-long list or glob with the field named.
    let key = |spec: Value| {
        json!({"name": "vk", "schema": schemas["VirtualKey"], "object": {
            "apiVersion": "tollgate.dev/v1alpha1", "kind": "VirtualKey",
            "metadata": {"name": "k", "namespace": "ns"}, "spec": spec}})
    };
    let many: Vec<String> = (0..65).map(|i| format!("m{i}")).collect();
    let (ok, out) = validate(&[key(json!({"models": {"allow": many}}))]);
    assert!(!ok && out.contains("models.allow"), "{out}");
    let (ok, out) = validate(&[key(json!({"mcp": [{"server": "gh", "deny": ["x".repeat(257)]}]}))]);
    assert!(!ok && out.contains("mcp.0.deny.0"), "{out}");
    let (ok, out) = validate(&[key(json!({"capture": "full", "owner": "a".repeat(320)}))]);
    assert!(ok, "{out}");
}

/// Runs `validate_schemas.py` on `cases`: whether all passed, and what it printed.
fn validate(cases: &[Value]) -> (bool, String) {
    let mut child = Command::new(support::python())
        .arg(support::operator_dir().join("tests/support/validate_schemas.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&serde_json::to_vec(cases).unwrap())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// The Secrets examples/k8s tells the reader to create (none is shipped): the two credentials,
/// labelled, in the operator's namespace, and ci-bot's key, labelled, in its own.
const CLUSTER_SECRETS: &str = r#"
apiVersion: v1
kind: Secret
metadata: {name: anthropic-api, namespace: tollgate-system, labels: {tollgate.dev/credential: "true"}}
stringData: {api-key: sk-ant-example}
---
apiVersion: v1
kind: Secret
metadata: {name: siem-token, namespace: tollgate-system, labels: {tollgate.dev/credential: "true"}}
stringData: {token: example}
---
apiVersion: v1
kind: Secret
metadata: {name: ci-bot-key, namespace: team-platform, labels: {tollgate.dev/virtual-key: ci-bot}}
stringData: {key: tg_example_ci_bot}
"#;

/// Read the way `tollgate-operator compile` reads them (namespaces, secrets, generated keys).
#[test]
fn examples_compile_with_every_resource_ready() {
    let c = compile_examples(&[]);
    assert_eq!(c.document.keys.len(), 3);
    assert_eq!(c.document.routes[0].match_, "gw-haiku");
}

/// Each cloud example, applied over examples/k8s as its comments say, compiles with every
/// resource Ready, its tiers routed to the provider's own model ids before the passthrough.
#[test]
fn cloud_examples_compile_with_every_resource_ready() {
    for (file, kind, providers) in [
        ("bedrock.yaml", "bedrock", ["bedrock-us", "bedrock-us-west"]),
        ("vertex.yaml", "vertex", ["vertex-global", "vertex-us-east5"]),
    ] {
        let c = compile_examples(&[support::operator_dir().join("../examples/crds").join(file)]);
        for id in providers {
            let p = c.document.providers.iter().find(|p| p.id == id).unwrap();
            assert_eq!(serde_json::to_value(p.kind).unwrap(), kind, "{file}");
        }
        let sonnet = c
            .document
            .routes
            .iter()
            .find(|r| r.match_ == "claude-sonnet-*")
            .unwrap_or_else(|| panic!("{file}: no sonnet route"));
        let weights: Vec<_> = sonnet.targets.iter().map(|t| (t.priority, t.weight)).collect();
        assert_eq!(weights.len(), 3, "{file}");
        assert_eq!(sonnet.targets[2].provider, "anthropic", "{file}: the fallback");
        // The cloud routes come before the claude-* passthrough.
        let position = |m: &str| c.document.routes.iter().position(|r| r.match_ == m).unwrap();
        assert!(position("claude-opus-*") < position("claude-*"), "{file}");
    }
}

/// examples/k8s plus `extra`, with the Secrets the examples tell the reader to create; every
/// resource must be Ready.
fn compile_examples(extra: &[std::path::PathBuf]) -> compile::Compiled {
    let mut paths = vec![support::operator_dir().join("../examples/k8s")];
    paths.extend(extra.iter().cloned());
    let mut docs = manifests::read(&paths, false).unwrap();
    docs.extend(manifests::parse("cluster-secrets.yaml", CLUSTER_SECRETS).unwrap());
    let options = manifests::Options {
        namespace: "default".into(),
        policy_namespace: "tollgate-system".into(),
        credential_secrets: vec![],
    };
    let mut m = manifests::world(&docs, &options).unwrap();
    assert!(m.ignored.is_empty(), "{:?}", m.ignored);
    m.world.now = "2026-11-15T00:00:00Z".parse().unwrap();
    let settings = Settings {
        organization: Some("acme".into()),
        ..Settings::default()
    };
    let c = compile::compile(&m.world, &settings).unwrap();
    let not_ready: Vec<_> = c
        .statuses
        .iter()
        .filter(|s| !s.readiness.ready)
        .map(|s| format!("{:?} {}: {}", s.kind, s.display_name(), s.readiness.message))
        .collect();
    assert!(not_ready.is_empty(), "{not_ready:#?}");
    c
}
