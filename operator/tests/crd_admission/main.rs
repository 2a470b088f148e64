//! Would a real kube-apiserver accept the generated CRDs? No API server runs here, so this
//! checks what it checks at CRD creation, from its documented rules: structural schemas, list
//! types, size bounds, and the static cost of every CEL rule (see `cost.rs` for the model and
//! its sources). Each check also runs on a deliberately broken schema, so a check that can no
//! longer fail is noticed.

mod cost;
mod structural;

use kube::core::cel::{ScopeContext, WarningKind, analyze_rule, compile_schema};
use serde_json::{Value, json};
use tollgate_operator::crd;

/// Every served version's `openAPIV3Schema`, named `<crd>/<version>`.
fn schemas() -> Vec<(String, Value)> {
    crd::all()
        .into_iter()
        .flat_map(|(_, crd)| {
            let name = crd.metadata.name.clone().unwrap_or_default();
            crd.spec.versions.into_iter().map(move |v| {
                let schema = v
                    .schema
                    .and_then(|s| s.open_api_v3_schema)
                    .expect("every version has a schema");
                (
                    format!("{name}/{}", v.name),
                    serde_json::to_value(schema).expect("schema serializes"),
                )
            })
        })
        .collect()
}

fn report(findings: Vec<(String, Vec<String>)>) -> String {
    findings
        .into_iter()
        .filter(|(_, f)| !f.is_empty())
        .map(|(name, f)| format!("{name}:\n  {}", f.join("\n  ")))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn every_schema_is_structural() {
    let found = report(
        schemas()
            .into_iter()
            .map(|(n, s)| (n, structural::structural_violations(&s)))
            .collect(),
    );
    assert!(found.is_empty(), "non-structural schemas:\n{found}");
}

#[test]
fn every_string_list_and_map_is_bounded() {
    let found = report(
        schemas()
            .into_iter()
            .map(|(n, s)| (n, structural::unbounded_fields(&s)))
            .collect(),
    );
    assert!(
        found.is_empty(),
        "unbounded fields (add a bound from operator/src/crd/bounds.rs):\n{found}"
    );
}

#[test]
fn every_list_has_a_valid_list_type() {
    let found = report(
        schemas()
            .into_iter()
            .map(|(n, s)| (n, structural::list_type_violations(&s)))
            .collect(),
    );
    assert!(found.is_empty(), "list types:\n{found}");
}

#[test]
fn status_conditions_merge_by_type() {
    for (name, schema) in schemas() {
        let conditions = &schema["properties"]["status"]["properties"]["conditions"];
        assert_eq!(conditions["x-kubernetes-list-type"], "map", "{name}");
        assert_eq!(
            conditions["x-kubernetes-list-map-keys"],
            json!(["type"]),
            "{name}"
        );
        assert_eq!(
            conditions["items"]["properties"]["status"]["enum"],
            json!(["True", "False", "Unknown"]),
            "{name}"
        );
    }
}

#[test]
fn no_enum_is_nullable_and_narrow_integers_are_bounded() {
    let found = report(
        schemas()
            .into_iter()
            .map(|(n, s)| {
                let mut f = structural::nullable_enum_violations(&s);
                f.extend(structural::unbounded_narrow_integers(&s));
                f.extend(structural::message_expressions(&s));
                (n, f)
            })
            .collect(),
    );
    assert!(found.is_empty(), "{found}");
}

/// kube-cel compiles every rule and finds no variable outside the CRD scope, no list it would
/// cost with its default size, and no rule over its (coarser, 1,000,000) budget.
#[test]
fn every_rule_compiles_and_passes_kube_cel_analysis() {
    let mut problems = Vec::new();
    for (name, schema) in schemas() {
        let compiled = compile_schema(&schema);
        let mut errors = Vec::new();
        collect_compile_errors(&compiled, &mut errors);
        problems.extend(errors.into_iter().map(|e| format!("{name}: {e}")));
        walk_rules(&schema, "", &mut |node, path, rule| {
            let node_compiled = compile_schema(node);
            // kube-cel 0.8 reports comprehension variables (`p` in `self.all(p, ...)`) as out of
            // scope; those are bound by the rule itself and are left out.
            let bound = cost::comprehension_variables(rule);
            for w in analyze_rule(rule, &node_compiled, ScopeContext::CrdValidation) {
                let own_variable = w.kind == WarningKind::WrongScope
                    && bound
                        .iter()
                        .any(|v| w.message.starts_with(&format!("variable '{v}' ")));
                if !own_variable {
                    problems.push(format!("{name}{path}: {rule}: {}", w.message));
                }
            }
        });
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

fn collect_compile_errors(node: &kube::core::cel::CompiledSchema, out: &mut Vec<String>) {
    out.extend(node.compilation_errors().into_iter().map(|e| e.to_string()));
    for child in node.properties.values() {
        collect_compile_errors(child, out);
    }
    for child in node.items.iter().chain(node.additional_properties.iter()) {
        collect_compile_errors(child, out);
    }
}

fn walk_rules(node: &Value, path: &str, f: &mut dyn FnMut(&Value, &str, &str)) {
    for rule in node
        .get("x-kubernetes-validations")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(source) = rule.get("rule").and_then(Value::as_str) {
            f(node, path, source);
        }
    }
    structural::for_each_child(node, path, &mut |child, child_path| {
        walk_rules(child, child_path, f)
    });
}

/// The check the API server runs when the CRD is created: each rule's estimated cost times its
/// cardinality within 10,000,000, all rules of a version within 100,000,000. Prints the table.
#[test]
fn every_rule_fits_the_api_server_cost_budget() {
    let mut failures = Vec::new();
    println!(
        "{:<40} {:<36} {:>10} {:>6} {:>10}",
        "schema node", "rule", "per call", "times", "cost"
    );
    for (name, schema) in schemas() {
        let costs = cost::estimate_schema(&schema).unwrap_or_else(|e| panic!("{name}: {e}"));
        let mut total = 0u64;
        for c in &costs {
            let short: String = c.rule.chars().take(36).collect();
            println!(
                "{:<40} {short:<36} {:>10} {:>6} {:>10}",
                format!("{name}{}", c.path),
                c.per_call,
                c.cardinality,
                c.total()
            );
            if c.total() > cost::PER_RULE_LIMIT {
                failures.push(format!(
                    "{name}{}: {} costs {} (limit {})",
                    c.path,
                    c.rule,
                    c.total(),
                    cost::PER_RULE_LIMIT
                ));
            }
            total = total.saturating_add(c.total());
        }
        println!("{name}: total {total} of {}", cost::PER_CRD_LIMIT);
        if total > cost::PER_CRD_LIMIT {
            failures.push(format!(
                "{name}: all rules cost {total} (limit {})",
                cost::PER_CRD_LIMIT
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Removes every bound, as the CRDs were before bounds were added.
fn strip_bounds(node: &mut Value) {
    if let Some(obj) = node.as_object_mut() {
        for key in ["maxLength", "maxItems", "maxProperties"] {
            obj.remove(key);
        }
        for (_, child) in obj.iter_mut() {
            strip_bounds(child);
        }
    } else if let Some(list) = node.as_array_mut() {
        list.iter_mut().for_each(strip_bounds);
    }
}

/// The failure the issue reported: without bounds, the rule on `.spec.mcp[].allow` (inside the
/// unbounded `.spec.mcp`) is estimated far over the limit, and the bounds check names the fields.
#[test]
fn without_bounds_the_checks_fail_as_the_api_server_would() {
    let (_, mut schema) = schemas()
        .into_iter()
        .find(|(n, _)| n.starts_with("virtualkeys."))
        .expect("virtualkeys");
    strip_bounds(&mut schema);
    let unbounded = structural::unbounded_fields(&schema);
    assert!(
        unbounded.iter().any(|f| f == ".spec.mcp: no maxItems"),
        "{unbounded:?}"
    );
    assert!(
        unbounded.iter().any(|f| f == ".spec.mcp[].allow[]: no maxLength"),
        "{unbounded:?}"
    );
    let costs = cost::estimate_schema(&schema).expect("estimates");
    let grants = costs
        .iter()
        .find(|c| c.rule.starts_with("self.mcp.all"))
        .expect("the rule on .spec.mcp");
    // Unbounded .spec.mcp: an item is at least {"server":""} (2 + 6 + 2 + 4 = 14 bytes), so the
    // nested comprehension runs (3 MiB - 2) / 15 times over as many items.
    let items = (cost::MAX_REQUEST_BYTES - 2) / 15;
    assert!(grants.total() > items * items, "{grants:?}");
    let allow = costs
        .iter()
        .find(|c| c.path == ".spec.models.allow")
        .expect("the rule on models.allow");
    assert!(allow.total() > cost::PER_RULE_LIMIT / 2, "{allow:?}");
}

#[test]
fn the_structural_checks_catch_what_the_api_server_refuses() {
    let schema = json!({
        "type": "object",
        "properties": {
            "metadata": {"type": "object", "properties": {"labels": {"type": "object"}}},
            "spec": {
                "type": "object",
                "properties": {"a": {"$ref": "#/x"}, "b": {}},
                "additionalProperties": {"type": "string"},
                "anyOf": [{"type": "object", "properties": {"c": {"type": "string"}}}]
            },
            "list": {"type": "array", "items": {"type": "object", "properties": {"k": {"type": "string"}}},
                     "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["k"]},
            "tags": {"type": "array", "items": {"type": "object"}, "x-kubernetes-list-type": "set"},
            "mode": {"type": "string", "enum": ["a", null], "nullable": true},
            "rank": {"type": "integer", "format": "int32"}
        }
    });
    let found = structural::structural_violations(&schema).join("\n");
    for expected in [
        ".metadata.labels: only name and generateName",
        ".spec.a: $ref is not allowed",
        ".spec.b: no type",
        ".spec: properties and additionalProperties are exclusive",
        ".spec.anyOf[0]: type is not allowed inside a junctor",
        ".spec.anyOf[0]: field c is not declared outside the junctor",
    ] {
        assert!(found.contains(expected), "missing {expected:?} in\n{found}");
    }
    let lists = structural::list_type_violations(&schema).join("\n");
    assert!(
        lists.contains(".list: map key k must be required or defaulted"),
        "{lists}"
    );
    assert!(
        lists.contains(".tags: a set needs scalar or atomic items"),
        "{lists}"
    );
    let enums = structural::nullable_enum_violations(&schema);
    assert_eq!(
        enums,
        vec![".mode: nullable enum (null would be refused)".to_owned()]
    );
    let ints = structural::unbounded_narrow_integers(&schema);
    assert_eq!(
        ints,
        vec![".rank: a narrow integer without minimum and maximum".to_owned()]
    );
}

/// The estimator against costs worked out by hand from cel-go's table.
#[test]
fn the_cost_model_matches_cel_go_by_hand() {
    let strings = json!({"type": "array", "maxItems": 64, "items": {"type": "string", "maxLength": 256}});
    // self (1) + init true (0) + result @result (1) + 64 × (cond @not_strictly_false(@result) (2)
    // + step @result && size(p) > 0 (1 + 1 + 1 + 1 + 0 = 4)).
    assert_eq!(
        cost::estimate_rule("self.all(p, size(p) > 0)", &strings),
        Ok(1 + 1 + 64 * 6)
    );
    let string = json!({"type": "string", "maxLength": 32});
    // matches: ceil(0.1 × (32 × 4 + 1)) × ceil(0.25 × 27 characters) = 13 × 7, plus self (1).
    assert_eq!(
        cost::estimate_rule(r"self.matches('^[0-9]{1,12}(\\.[0-9]{1,6})?$')", &string),
        Ok(13 * 7 + 1)
    );
    let url = json!({"type": "string", "maxLength": 2048});
    // Two startsWith (ceil(0.1 × 8) + 1 and ceil(0.1 × 7) + 1) joined by ||.
    assert_eq!(
        cost::estimate_rule("self.startsWith('https://') || self.startsWith('http://')", &url),
        Ok(2 + 2)
    );
    // String equality: ceil(0.1 × min(4 × 253, 4 × 253)) = 102, plus the two selections (2 each).
    let pair = json!({"type": "object", "properties": {"a": {"type": "string", "maxLength": 253}, "b": {"type": "string", "maxLength": 253}}});
    assert_eq!(cost::estimate_rule("self.a == self.b", &pair), Ok(102 + 4));
    assert!(
        cost::estimate_rule("self.a.lowerAscii() == 'x'", &pair).is_err(),
        "unknown functions are refused"
    );
}
