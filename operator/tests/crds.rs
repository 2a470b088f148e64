//! `crds/*.yaml` must be what the Rust types generate, and the CEL rules in them must accept
//! good objects and reject bad ones (evaluated locally with kube's `cel` feature).

use kube::CustomResourceExt;
use kube::core::cel::Validator;
use serde_json::{Value, json};
use tollgate_operator::crd::{self, Budget, McpServer, ModelProvider, VirtualKey};

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
