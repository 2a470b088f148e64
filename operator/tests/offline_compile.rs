//! `tollgate-operator compile`, the built binary, as CI runs it: on examples/k8s (every
//! resource ready, the policy printed) and on broken manifests (non-zero with `--strict`, each
//! reason printed).

mod support;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::Value;
use tollgate_dataplane::policy::document::PolicyDocument;

/// The Secrets examples/k8s asks the reader to create (see examples.rs).
const CLUSTER_SECRETS: &str = r#"
apiVersion: v1
kind: Secret
metadata: {name: ci-bot-key, namespace: team-platform, labels: {tollgate.dev/virtual-key: ci-bot}}
stringData: {key: tg_example_ci_bot}
"#;

fn compile(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tollgate-operator"))
        .arg("compile")
        .args(args)
        .env_remove("TOLLGATE_GATEWAY_URL")
        .env_remove("TOLLGATE_ORGANIZATION")
        .env_remove("TOLLGATE_TEAMLESS_KEYS")
        .env_remove("TOLLGATE_POLICY_NAMESPACE")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tollgate-operator");
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The columns of the table row of resource `name`.
fn row<'t>(table: &'t str, name: &str) -> Vec<&'t str> {
    table
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|cols| cols.get(2) == Some(&name))
        .unwrap_or_else(|| panic!("no row for {name} in\n{table}"))
}

fn write(dir: &Path, name: &str, content: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    path.display().to_string()
}

#[test]
fn the_examples_compile_offline_with_every_resource_ready() {
    let examples = support::operator_dir()
        .join("../examples/k8s")
        .display()
        .to_string();
    let dir = tempfile::tempdir().unwrap();
    let secrets = write(dir.path(), "secrets.yaml", CLUSTER_SECRETS);
    let out = compile(
        &[
            "-f",
            &examples,
            "-f",
            &secrets,
            "--credential-secret",
            "anthropic-api,siem-token",
            "--organization",
            "acme",
            "--now",
            "2026-11-15T00:00:00Z",
            "--strict",
        ],
        None,
    );
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    // stdout: the policy document, exactly as the proxy validates it.
    let doc: PolicyDocument = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    tollgate_dataplane::policy::validate::validate(&doc).unwrap();
    assert_eq!(doc.organization.unwrap().name, "acme");
    let ids: Vec<&str> = doc.keys.iter().map(|k| k.id.as_str()).collect();
    assert_eq!(
        ids,
        ["team-interns/bob", "team-platform/alice", "team-platform/ci-bot"]
    );
    assert_eq!(
        doc.keys[2].sha256,
        tollgate_operator::secrets::key_sha256("tg_example_ci_bot")
    );
    // stderr: the table, every row ready, and the note on placeholder keys.
    assert!(stderr.starts_with("KIND "), "{stderr}");
    let rows: Vec<&str> = stderr.lines().skip(1).take_while(|l| !l.is_empty()).collect();
    assert!(rows.len() >= 15, "{stderr}");
    assert!(rows.iter().all(|r| r.contains(" True ")), "{stderr}");
    assert!(stderr.contains(" 0 not ready"), "{stderr}");
    assert!(
        stderr.contains("placeholder sha256") && stderr.contains("team-platform/alice"),
        "{stderr}"
    );
}

/// A broken manifest: a key in a namespace its team does not admit, a key without a team, and
/// an S3 sink the proxy would refuse. Everything else compiles; `--strict` fails and names each.
#[test]
fn broken_manifests_fail_strict_with_every_reason_printed() {
    let dir = tempfile::tempdir().unwrap();
    let manifests = write(
        dir.path(),
        "broken.yaml",
        r#"
apiVersion: v1
kind: Namespace
metadata: {name: team-a, labels: {tollgate.dev/team: platform}}
---
apiVersion: tollgate.dev/v1alpha1
kind: Team
metadata: {name: platform}
spec:
  allowedNamespaces: {from: Selector, selector: {matchLabels: {tollgate.dev/team: platform}}}
  tools: {deny: [Bash]}
---
apiVersion: tollgate.dev/v1alpha1
kind: VirtualKey
metadata: {name: alice, namespace: team-a}
spec: {team: platform}
---
apiVersion: tollgate.dev/v1alpha1
kind: VirtualKey
metadata: {name: mallory, namespace: team-b}
spec: {team: platform}
---
apiVersion: tollgate.dev/v1alpha1
kind: VirtualKey
metadata: {name: drifter}
spec: {}
---
apiVersion: tollgate.dev/v1alpha1
kind: AuditSink
metadata: {name: archive}
spec: {kind: s3, endpoint: "https://s3.amazonaws.com", credential: {env: S3_SECRET}, accessKeyId: {env: S3_KEY_ID}}
"#,
    );
    let out = compile(&["-f", &manifests, "--strict", "--sidecar-mode", "direct"], None);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(
        row(&stderr, "mallory")[..5],
        ["VirtualKey", "team-b", "mallory", "False", "NamespaceNotAllowed"]
    );
    assert_eq!(
        row(&stderr, "drifter")[..5],
        ["VirtualKey", "default", "drifter", "False", "NamespaceNotAllowed"]
    );
    assert_eq!(row(&stderr, "alice")[3..5], ["True", "Compiled"]);
    assert_eq!(
        row(&stderr, "archive")[..5],
        ["AuditSink", "-", "archive", "False", "InvalidSpec"]
    );
    for expected in [
        "bucket: an s3 sink needs a bucket",
        "--teamless-keys=deny",
        "--strict: not ready: 1 AuditSink, 2 VirtualKey",
    ] {
        assert!(stderr.contains(expected), "{expected:?} not in\n{stderr}");
    }
    // The rest compiled: alice is in the printed policy, the others are not.
    let doc: PolicyDocument = serde_json::from_slice(&out.stdout).unwrap();
    let ids: Vec<&str> = doc.keys.iter().map(|k| k.id.as_str()).collect();
    assert_eq!(ids, ["team-a/alice"]);
    assert!(doc.audit.is_none());

    // Without --strict: the same report, exit 0. With --teamless-keys allow, drifter is in.
    let out = compile(
        &["-f", &manifests, "--teamless-keys", "allow", "-o", "json"],
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let not_ready: Vec<(&str, &str)> = report["resources"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["ready"] == false)
        .map(|r| (r["name"].as_str().unwrap(), r["reason"].as_str().unwrap()))
        .collect();
    assert_eq!(
        not_ready,
        [("archive", "InvalidSpec"), ("mallory", "NamespaceNotAllowed")]
    );
    assert_eq!(report["policy"]["keys"].as_array().unwrap().len(), 2);
    // In gateway mode (the default, no --gateway-url needed offline) the team's tool policy
    // reaches the sidecar copies too; they are checked, the gateway's own policy printed.
    assert_eq!(report["policy"]["teams"][0]["tools"]["deny"][0], "Bash");
}

#[test]
fn input_errors_exit_2_naming_the_document() {
    let typo = "apiVersion: tollgate.dev/v1alpha1\nkind: Team\nmetadata: {name: t}\nspec: {allowedNamespace: {from: All}}\n";
    let out = compile(&["-f", "-", "--output", "table"], Some(typo));
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("-#0") && stderr.contains("spec.allowedNamespace"),
        "{stderr}"
    );
    let out = compile(&["-f", "/nonexistent/manifests"], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("/nonexistent/manifests"));
    // Standard input, table only on stdout.
    let ok = "apiVersion: tollgate.dev/v1alpha1\nkind: Team\nmetadata: {name: t}\nspec: {allowedNamespaces: {from: All}}\n";
    let out = compile(&["-f", "-", "-o", "table", "--strict"], Some(ok));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert_eq!(row(&stdout, "t")[..5], ["Team", "-", "t", "True", "Compiled"]);
}
