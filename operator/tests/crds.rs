//! `crds/*.yaml` must be what the Rust types generate, and the CEL rules in them must accept
//! good objects and reject bad ones (evaluated locally with kube's `cel` feature).

use kube::CustomResourceExt;
use kube::core::cel::Validator;
use serde_json::{Value, json};
use tollgate_operator::crd::{
    self, AuditSink, Budget, McpServer, ModelProvider, ModelRoute, Team, VirtualKey,
};

#[test]
fn checked_in_crds_match_the_types() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../crds");
    let mut expected: Vec<String> = Vec::new();
    for (file, crd) in crd::all() {
        expected.push(file.to_owned());
        let generated = crd::to_yaml(&crd).unwrap();
        let checked_in = std::fs::read_to_string(format!("{dir}/{file}")).unwrap_or_default();
        assert!(
            generated == checked_in,
            "crds/{file} is out of date: run `cargo run -p tollgate-operator --bin crdgen -- --out crds`"
        );
    }
    let mut present: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    present.sort();
    assert_eq!(present, expected, "crds/ holds a file no type generates");
}

fn schema<K: CustomResourceExt>() -> Value {
    let crd = K::crd();
    serde_json::to_value(
        crd.spec.versions[0]
            .schema
            .as_ref()
            .unwrap()
            .open_api_v3_schema
            .as_ref()
            .unwrap(),
    )
    .unwrap()
}

/// The messages of the CEL rules `object` breaks.
fn broken<K: CustomResourceExt>(object: Value) -> Vec<String> {
    match Validator::new().validate(&schema::<K>(), &object, None) {
        Ok(()) => vec![],
        Err(errors) => errors.iter().map(|e| e.message.clone()).collect(),
    }
}

fn budget(spec: Value) -> Value {
    json!({"apiVersion": "tollgate.dev/v1alpha1", "kind": "Budget", "metadata": {"name": "b"}, "spec": spec})
}

#[test]
fn budget_rules() {
    let ok = json!({"scope": {"kind": "team", "name": "platform"}, "limitUsd": "250.00", "period": "monthly", "thresholds": [50, 80, 100]});
    assert_eq!(broken::<Budget>(budget(ok)), Vec::<String>::new());
    let cases = [
        (
            json!({"scope": {"kind": "team", "name": "t"}, "period": "daily"}),
            "set exactly one of limitUsd or limitMicroUsd",
        ),
        (
            json!({"scope": {"kind": "team", "name": "t"}, "limitUsd": "1", "limitMicroUsd": 1, "period": "daily"}),
            "set exactly one of limitUsd or limitMicroUsd",
        ),
        (
            json!({"scope": {"kind": "team", "name": "t"}, "limitUsd": "1.2345678", "period": "daily"}),
            "a decimal number of US dollars",
        ),
        (
            json!({"scope": {"kind": "team", "name": "t"}, "limitUsd": "1", "period": "rolling"}),
            "rollingSeconds is required",
        ),
        (
            json!({"scope": {"kind": "team", "name": "t"}, "limitUsd": "1", "period": "daily", "rollingSeconds": 60}),
            "rollingSeconds is required",
        ),
        (
            json!({"scope": {"kind": "team", "name": "t"}, "limitUsd": "1", "period": "rolling", "rollingSeconds": 0}),
            "must be greater than 0",
        ),
        (
            json!({"scope": {"kind": "key", "name": "k"}, "limitUsd": "1", "period": "daily"}),
            "namespace is required",
        ),
        (
            json!({"scope": {"kind": "team", "name": "t", "namespace": "x"}, "limitUsd": "1", "period": "daily"}),
            "namespace is required",
        ),
        (
            json!({"scope": {"kind": "team", "name": ""}, "limitUsd": "1", "period": "daily"}),
            "name is required",
        ),
        (
            json!({"scope": {"kind": "team", "name": "t"}, "limitUsd": "1", "period": "daily", "thresholds": [0]}),
            "percentages from 1 to 100",
        ),
    ];
    for (spec, message) in cases {
        let errors = broken::<Budget>(budget(spec.clone()));
        assert!(
            errors.iter().any(|e| e.contains(message)),
            "{spec}: expected {message:?}, got {errors:?}"
        );
    }
    let org = json!({"scope": {"kind": "organization"}, "limitMicroUsd": 5, "period": "yearly"});
    assert_eq!(broken::<Budget>(budget(org)), Vec::<String>::new());
}

#[test]
fn virtual_key_rules() {
    let vk = |name: &str, spec: Value| json!({"apiVersion": "tollgate.dev/v1alpha1", "kind": "VirtualKey", "metadata": {"name": name, "namespace": "ns"}, "spec": spec});
    assert_eq!(
        broken::<VirtualKey>(vk(
            "alice",
            json!({"team": "platform", "models": {"allow": ["claude-*"]}})
        )),
        Vec::<String>::new()
    );
    let long = "a".repeat(201);
    let cases = [
        (vk(&long, json!({})), "name must be at most 200 characters"),
        (
            vk("a", json!({"models": {"allow": [""]}})),
            "patterns must not be empty",
        ),
        (
            vk("a", json!({"mcp": [{"server": "gh"}, {"server": "gh"}]})),
            "each MCP server may be granted once",
        ),
        (
            vk("a", json!({"rateLimits": {"requestsPerMinute": 0}})),
            "must be greater than 0",
        ),
        (vk("a", json!({"secretRef": {"name": ""}})), "must not be empty"),
    ];
    for (obj, message) in cases {
        let errors = broken::<VirtualKey>(obj.clone());
        assert!(
            errors.iter().any(|e| e.contains(message)),
            "{obj}: expected {message:?}, got {errors:?}"
        );
    }
}

#[test]
fn provider_and_mcp_rules() {
    let p = |spec: Value| json!({"apiVersion": "tollgate.dev/v1alpha1", "kind": "ModelProvider", "metadata": {"name": "p"}, "spec": spec});
    assert_eq!(
        broken::<ModelProvider>(p(
            json!({"kind": "anthropic", "endpoint": "https://api.anthropic.com", "credential": {"env": "K"}})
        )),
        Vec::<String>::new()
    );
    let errors = broken::<ModelProvider>(p(json!({"kind": "anthropic", "endpoint": "ftp://x"})));
    assert!(errors.iter().any(|e| e.contains("http(s) URL")), "{errors:?}");
    let errors = broken::<ModelProvider>(p(
        json!({"kind": "anthropic", "endpoint": "https://x", "credential": {}}),
    ));
    assert!(
        errors
            .iter()
            .any(|e| e.contains("exactly one of secretKeyRef or env")),
        "{errors:?}"
    );
    let errors = broken::<ModelProvider>(p(
        json!({"kind": "anthropic", "endpoint": "https://x", "credential": {"env": "A", "secretKeyRef": {"name": "s", "key": "k"}}}),
    ));
    assert!(
        errors
            .iter()
            .any(|e| e.contains("exactly one of secretKeyRef or env")),
        "{errors:?}"
    );
    let m = json!({"apiVersion": "tollgate.dev/v1alpha1", "kind": "McpServer", "metadata": {"name": "x".repeat(49)}, "spec": {"url": "https://mcp.example"}});
    let errors = broken::<McpServer>(m);
    assert!(errors.iter().any(|e| e.contains("at most 48")), "{errors:?}");
}

fn object(kind: &str, name: &str, spec: Value) -> Value {
    json!({"apiVersion": "tollgate.dev/v1alpha1", "kind": kind, "metadata": {"name": name}, "spec": spec})
}

/// Asserts that `spec` passes, and each of `cases` breaks a rule with that message.
fn check_rules<K: CustomResourceExt>(kind: &str, ok: &[Value], cases: &[(Value, &str)]) {
    for spec in ok {
        assert_eq!(
            broken::<K>(object(kind, "x", spec.clone())),
            Vec::<String>::new(),
            "{spec}"
        );
    }
    for (spec, message) in cases {
        let errors = broken::<K>(object(kind, "x", spec.clone()));
        assert!(
            errors.iter().any(|e| e.contains(message)),
            "{spec}: expected {message:?}, got {errors:?}"
        );
    }
}

#[test]
fn audit_sink_rules_are_the_proxys_per_kind() {
    let cred = json!({"env": "TOKEN"});
    check_rules::<AuditSink>(
        "AuditSink",
        &[
            json!({"kind": "webhook", "endpoint": "https://siem.example"}),
            json!({"kind": "file", "endpoint": "/var/log/tollgate/audit.jsonl"}),
            json!({"kind": "splunk", "endpoint": "https://splunk:8088", "credential": cred, "index": "sec", "source": "tg"}),
            json!({"kind": "opensearch", "endpoint": "https://os:9200", "index": "audit"}),
            json!({"kind": "s3", "endpoint": "https://s3.amazonaws.com", "credential": cred, "accessKeyId": cred,
                   "bucket": "b", "region": "eu-west-1", "prefix": "p/",
                   "batch": {"maxRecords": 10, "maxBytes": 1024, "maxWaitMs": 0},
                   "retry": {"initialBackoffMs": 100, "maxBackoffMs": 100, "timeoutMs": 5000}}),
        ],
        &[
            (
                json!({"kind": "webhook", "endpoint": "siem.example"}),
                "endpoint must be an http(s) URL",
            ),
            (
                json!({"kind": "splunk", "endpoint": "https://s"}),
                "need a credential",
            ),
            (
                json!({"kind": "datadog", "endpoint": "https://d"}),
                "need a credential",
            ),
            (
                json!({"kind": "s3", "endpoint": "https://s3", "credential": cred, "accessKeyId": cred}),
                "kind s3 needs bucket and accessKeyId",
            ),
            (
                json!({"kind": "s3", "endpoint": "https://s3", "credential": cred, "bucket": "b"}),
                "kind s3 needs bucket and accessKeyId",
            ),
            (
                json!({"kind": "s3", "endpoint": "https://s3", "credential": cred, "accessKeyId": cred, "bucket": ""}),
                "must not be empty",
            ),
            (
                json!({"kind": "webhook", "endpoint": "https://w", "bucket": "b"}),
                "for kind s3 only",
            ),
            (
                json!({"kind": "webhook", "endpoint": "https://w", "index": "i"}),
                "index is for kinds",
            ),
            (
                json!({"kind": "elasticsearch", "endpoint": "https://e", "source": "s"}),
                "source is for kinds",
            ),
            (
                json!({"kind": "webhook", "endpoint": "https://w", "retry": {"maxBackoffMs": 100}}),
                "initialBackoffMs must not exceed maxBackoffMs",
            ),
            (
                json!({"kind": "webhook", "endpoint": "https://w", "retry": {"timeoutMs": 0}}),
                "must be greater than 0",
            ),
            (
                json!({"kind": "webhook", "endpoint": "https://w", "batch": {"maxRecords": 0}}),
                "must be greater than 0",
            ),
        ],
    );
    let dotted = json!({"apiVersion": "tollgate.dev/v1alpha1", "kind": "AuditSink", "metadata": {"name": "siem.prod"},
                        "spec": {"kind": "webhook", "endpoint": "https://w"}});
    let errors = broken::<AuditSink>(dotted);
    assert!(
        errors.iter().any(|e| e.contains("must not contain '.'")),
        "{errors:?}"
    );
}

#[test]
fn team_rules() {
    check_rules::<Team>(
        "Team",
        &[
            json!({}),
            json!({"allowedNamespaces": {"from": "All"}}),
            json!({"allowedNamespaces": {"from": "Selector", "selector": {"matchLabels": {"tollgate.dev/team": "platform"}}},
                   "mcp": [{"server": "github", "allow": ["read_*"]}], "tools": {"deny": ["Bash"]}}),
            json!({"allowedNamespaces": {"from": "Selector", "selector": {"matchExpressions": [
                {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["team-a"]},
                {"key": "legacy", "operator": "DoesNotExist"}]}}}),
        ],
        &[
            (
                json!({"allowedNamespaces": {"from": "Selector"}}),
                "selector is required",
            ),
            (
                json!({"allowedNamespaces": {"from": "All", "selector": {"matchLabels": {"a": "b"}}}}),
                "selector is required with from: Selector and only allowed with it",
            ),
            (
                json!({"allowedNamespaces": {"from": "Selector", "selector": {}}}),
                "a selector needs matchLabels or matchExpressions",
            ),
            (
                json!({"allowedNamespaces": {"from": "Selector", "selector": {"matchExpressions": [{"key": "a", "operator": "In"}]}}}),
                "values must be non-empty for In and NotIn",
            ),
            (
                json!({"allowedNamespaces": {"from": "Selector", "selector": {"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]}}}),
                "absent for Exists and DoesNotExist",
            ),
            (
                json!({"mcp": [{"server": "gh"}, {"server": "gh"}]}),
                "each MCP server may be granted once",
            ),
            (json!({"tools": {"deny": [""]}}), "patterns must not be empty"),
            (
                json!({"mcp": [{"server": "gh", "allow": [""]}]}),
                "patterns must not be empty",
            ),
        ],
    );
    // `from` is an enum of the two cases; there is no `Same` for a cluster-scoped Team.
    let schema = schema::<Team>();
    let from = &schema["properties"]["spec"]["properties"]["allowedNamespaces"]["properties"]["from"];
    assert_eq!(from["enum"], json!(["All", "Selector"]));
}

/// The cloud kinds' rules: what each kind needs, each credential form only on its own kind,
/// one AWS form at a time, and the route target's priority and weight ranges.
#[test]
fn cloud_provider_and_route_target_rules() {
    let irsa = json!({"webIdentity": {"roleArn": "arn:aws:iam::1:role/r", "tokenFile": "/t"}});
    let sa_key = json!({"serviceAccountKey": {"secretKeyRef": {"name": "s", "key": "k"}}});
    check_rules::<ModelProvider>(
        "ModelProvider",
        &[
            json!({"kind": "bedrock", "region": "us-east-1"}),
            json!({"kind": "bedrock", "region": "us-east-1", "aws": irsa}),
            json!({"kind": "bedrock", "region": "us-east-1", "aws": {"accessKeyId": {"env": "A"}, "secretAccessKey": {"env": "S"}, "sessionToken": {"env": "T"}}}),
            json!({"kind": "bedrock", "region": "us-east-1", "aws": {"container": {"uri": "http://169.254.170.23/v1/credentials", "tokenFile": "/t"}}}),
            json!({"kind": "bedrock", "region": "us-east-1", "credential": {"env": "BEDROCK_API_KEY"}, "retryBudget": {"percent": 0, "minPerSecond": 0}}),
            json!({"kind": "vertex", "region": "global", "project": "acme-ai", "gcp": sa_key}),
            json!({"kind": "vertex", "region": "us-east5", "project": "acme-ai", "endpoint": "https://private.example"}),
            json!({"kind": "foundry", "endpoint": "https://x", "azure": {"tenantId": "t", "clientId": "c", "federatedTokenFile": "/f"}}),
            json!({"kind": "foundry", "endpoint": "https://x", "azure": {"clientSecret": {"env": "S"}}}),
        ],
        &[
            (json!({"kind": "anthropic"}), "set endpoint"),
            (json!({"kind": "foundry"}), "set endpoint"),
            (json!({"kind": "bedrock"}), "set region"),
            (json!({"kind": "vertex", "project": "p"}), "set region"),
            (
                json!({"kind": "vertex", "region": "global"}),
                "project is required for kind vertex",
            ),
            (
                json!({"kind": "bedrock", "region": "us-east-1", "project": "p"}),
                "project is required for kind vertex and only allowed there",
            ),
            (
                json!({"kind": "vertex", "region": "global", "project": "p", "aws": irsa}),
                "aws is only for kind bedrock",
            ),
            (
                json!({"kind": "bedrock", "region": "us-east-1", "gcp": sa_key}),
                "gcp is only for kind vertex",
            ),
            (
                json!({"kind": "bedrock", "region": "us-east-1", "azure": {}}),
                "azure is only for kind foundry",
            ),
            (
                json!({"kind": "bedrock", "region": "us-east-1", "credential": {"env": "K"}, "aws": irsa}),
                "set either credential or the cloud credentials",
            ),
            (
                json!({"kind": "bedrock", "region": "us-east-1", "aws": {}}),
                "set exactly one of accessKeyId with secretAccessKey",
            ),
            (
                json!({"kind": "bedrock", "region": "us-east-1", "aws": {"accessKeyId": {"env": "A"}, "secretAccessKey": {"env": "S"}, "webIdentity": irsa["webIdentity"]}}),
                "set exactly one of",
            ),
            (
                json!({"kind": "bedrock", "region": "us-east-1", "aws": {"accessKeyId": {"env": "A"}}}),
                "accessKeyId and secretAccessKey go together",
            ),
            (
                json!({"kind": "bedrock", "region": "us-east-1", "aws": {"container": {"uri": "http://x"}, "sessionToken": {"env": "T"}}}),
                "sessionToken goes with accessKeyId",
            ),
            (
                json!({"kind": "bedrock", "region": "us-east-1", "aws": {"webIdentity": {"roleArn": "role/r", "tokenFile": "/t"}}}),
                "must be an IAM role ARN",
            ),
            (
                json!({"kind": "bedrock", "region": "us-east-1", "aws": {"webIdentity": {"roleArn": "arn:aws:iam::1:role/r", "tokenFile": "t"}}}),
                "absolute file path",
            ),
            (
                json!({"kind": "foundry", "endpoint": "https://x", "azure": {"clientSecret": {"env": "S"}, "federatedTokenFile": "/f"}}),
                "set clientSecret or federatedTokenFile",
            ),
            (
                json!({"kind": "foundry", "endpoint": "https://x", "azure": {"authorityHost": "login.example"}}),
                "http(s) URL",
            ),
        ],
    );
    // Schema bounds (checked by the API server's schema validation, not by CEL; the
    // examples test runs them): region and project are DNS labels, the ranges as the proxy's.
    let spec = &schema::<ModelProvider>()["properties"]["spec"]["properties"];
    for field in ["region", "project"] {
        assert_eq!(spec[field]["maxLength"], 63, "{field}");
        assert_eq!(
            spec[field]["pattern"], "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
            "{field}"
        );
    }
    let number = |v: &Value| v.as_f64();
    assert_eq!(
        number(&spec["retryBudget"]["properties"]["percent"]["maximum"]),
        Some(100.0)
    );
    let target =
        &schema::<ModelRoute>()["properties"]["spec"]["properties"]["targets"]["items"]["properties"];
    assert_eq!(number(&target["priority"]["minimum"]), Some(0.0));
    assert_eq!(target["priority"]["format"], "int32");
    assert_eq!(number(&target["weight"]["minimum"]), Some(1.0));
    assert_eq!(number(&target["weight"]["maximum"]), Some(10_000.0));
}

/// The CRD offers exactly the provider kinds the proxy implements, less `tollgate` (the
/// gateway as a sidecar's provider, which only the operator writes).
#[test]
fn provider_kinds_are_exactly_what_the_proxy_implements() {
    let schema = schema::<ModelProvider>();
    let offered: Vec<&str> = schema["properties"]["spec"]["properties"]["kind"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let implemented: Vec<String> = tollgate_dataplane::policy::validate::SUPPORTED_PROVIDER_KINDS
        .iter()
        .map(|k| serde_json::to_value(k).unwrap().as_str().unwrap().to_owned())
        .filter(|k| k != "tollgate")
        .collect();
    let mut offered_sorted = offered.clone();
    offered_sorted.sort();
    let mut implemented_sorted = implemented.clone();
    implemented_sorted.sort();
    assert_eq!(offered_sorted, implemented_sorted);
    for kind in &offered {
        let p: ModelProvider = serde_json::from_value(object(
            "ModelProvider",
            "p",
            json!({"kind": kind, "endpoint": "https://x"}),
        ))
        .unwrap();
        assert!(p.spec.kind.document_kind().is_some(), "{kind}");
    }
    // An object stored under the old schema still reads (and is reported), rather than failing
    // the watch of every ModelProvider.
    let old: ModelProvider = serde_json::from_value(object(
        "ModelProvider",
        "p",
        json!({"kind": "cohere", "endpoint": "https://x"}),
    ))
    .unwrap();
    assert_eq!(old.spec.kind, crd::ProviderKind::Unsupported);
    assert!(
        !offered.contains(&"tollgate"),
        "users may not declare the gateway kind"
    );
}

/// `kubectl get -o wide` shows why a resource is not ready, whatever its kind; conditions are
/// validated as `metav1.Condition` is.
#[test]
fn every_kind_shows_reason_and_message_wide_and_conditions_follow_the_api_conventions() {
    for (file, crd) in crd::all() {
        let columns = crd.spec.versions[0]
            .additional_printer_columns
            .clone()
            .unwrap_or_default();
        for (name, path) in [("Reason", "reason"), ("Message", "message")] {
            let c = columns
                .iter()
                .find(|c| c.name == name)
                .unwrap_or_else(|| panic!("{file}: no {name} column"));
            assert_eq!(c.priority, Some(1), "{file}: {name} only with -o wide");
            assert_eq!(
                c.json_path,
                format!(".status.conditions[?(@.type==\"Ready\")].{path}"),
                "{file}"
            );
        }
        let schema = serde_json::to_value(
            crd.spec.versions[0]
                .schema
                .as_ref()
                .unwrap()
                .open_api_v3_schema
                .as_ref()
                .unwrap(),
        )
        .unwrap();
        let condition = &schema["properties"]["status"]["properties"]["conditions"]["items"];
        let p = &condition["properties"];
        assert_eq!(p["lastTransitionTime"]["format"], "date-time", "{file}");
        assert_eq!(p["reason"]["minLength"], 1, "{file}");
        assert_eq!(
            p["reason"]["pattern"], "^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$",
            "{file}"
        );
        assert!(p["type"]["pattern"].is_string(), "{file}");
        assert_eq!(p["observedGeneration"]["minimum"].as_f64(), Some(0.0), "{file}");
        let mut required: Vec<&str> = condition["required"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        required.sort();
        assert_eq!(
            required,
            ["lastTransitionTime", "message", "reason", "status", "type"],
            "{file}"
        );
        assert!(
            schema["properties"]["status"]["properties"]["observedGeneration"].is_object(),
            "{file}"
        );
    }
}
