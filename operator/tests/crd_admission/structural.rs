//! What kube-apiserver checks of a CRD's `openAPIV3Schema` before any rule is costed:
//! structural schemas, list types for server-side apply, and (Tollgate's own rule) a size bound
//! on every string, list and map.
//!
//! Structural schema rules, from "Specifying a structural schema" (Kubernetes docs,
//! apiextensions.k8s.io/v1) and `apiextensions-apiserver/pkg/apiserver/schema/validation.go`:
//! 1. every node has a non-empty `type`, except `x-kubernetes-int-or-string: true` and
//!    `x-kubernetes-preserve-unknown-fields: true` nodes;
//! 2. a field or item named inside `allOf`/`anyOf`/`oneOf`/`not` is also declared outside;
//! 3. inside those junctors there is no `description`, `type`, `default`,
//!    `additionalProperties` or `nullable`;
//! 4. root `metadata` restricts only `name` and `generateName`;
//! 5. no `$ref`, no `additionalProperties: false`, no `uniqueItems: true`, `properties` and
//!    `additionalProperties` are exclusive, `items` is one schema.
//!
//! List types (`x-kubernetes-list-type`, "Merge strategy" in the CRD docs): `atomic`, `set`
//! (scalar or atomic items) or `map` (object items whose `x-kubernetes-list-map-keys` are
//! required scalar properties); `x-kubernetes-list-map-keys` only with `map`.

use serde_json::{Map, Value};

const JUNCTORS: [&str; 4] = ["allOf", "anyOf", "oneOf", "not"];
const FORBIDDEN_IN_JUNCTORS: [&str; 5] = [
    "description",
    "type",
    "default",
    "additionalProperties",
    "nullable",
];

fn flag(node: &Value, key: &str) -> bool {
    node.get(key) == Some(&Value::Bool(true))
}

/// Violations of the structural-schema rules under `root`.
pub fn structural_violations(root: &Value) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(meta) = root.get("properties").and_then(|p| p.get("metadata")) {
        let allowed = ["name", "generateName"];
        for key in meta
            .get("properties")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .map(|(k, _)| k)
        {
            if !allowed.contains(&key.as_str()) {
                out.push(format!(
                    ".metadata.{key}: only name and generateName may be restricted"
                ));
            }
        }
    }
    structural(root, "", &mut out);
    out
}

fn structural(node: &Value, path: &str, out: &mut Vec<String>) {
    let Some(obj) = node.as_object() else {
        out.push(format!("{path}: a schema must be an object"));
        return;
    };
    let typed = obj
        .get("type")
        .and_then(Value::as_str)
        .is_some_and(|t| !t.is_empty());
    if !typed
        && !flag(node, "x-kubernetes-int-or-string")
        && !flag(node, "x-kubernetes-preserve-unknown-fields")
    {
        out.push(format!("{path}: no type"));
    }
    for key in [
        "$ref",
        "definitions",
        "$schema",
        "patternProperties",
        "dependencies",
    ] {
        if obj.contains_key(key) {
            out.push(format!("{path}: {key} is not allowed"));
        }
    }
    if obj.get("additionalProperties") == Some(&Value::Bool(false)) {
        out.push(format!("{path}: additionalProperties: false is not allowed"));
    }
    if flag(node, "uniqueItems") {
        out.push(format!("{path}: uniqueItems: true is not allowed"));
    }
    if obj.contains_key("properties") && obj.contains_key("additionalProperties") {
        out.push(format!(
            "{path}: properties and additionalProperties are exclusive"
        ));
    }
    if obj.get("items").is_some_and(Value::is_array) {
        out.push(format!("{path}: items must be one schema"));
    }
    for junctor in JUNCTORS {
        for (i, branch) in junctor_branches(obj, junctor).into_iter().enumerate() {
            in_junctor(branch, obj, &format!("{path}.{junctor}[{i}]"), out);
        }
    }
    for_each_child(node, path, &mut |child, child_path| {
        structural(child, child_path, out)
    });
}

fn junctor_branches<'v>(obj: &'v Map<String, Value>, junctor: &str) -> Vec<&'v Value> {
    match obj.get(junctor) {
        Some(Value::Array(branches)) => branches.iter().collect(),
        Some(single @ Value::Object(_)) => vec![single],
        _ => vec![],
    }
}

/// Rules 2 and 3 for one branch of a junctor on `outer`.
fn in_junctor(branch: &Value, outer: &Map<String, Value>, path: &str, out: &mut Vec<String>) {
    let int_or_string = outer.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true));
    for key in FORBIDDEN_IN_JUNCTORS {
        // The int-or-string pattern `anyOf: [{type: integer}, {type: string}]` is the exception.
        if branch.get(key).is_some() && !(int_or_string && key == "type") {
            out.push(format!("{path}: {key} is not allowed inside a junctor"));
        }
    }
    if let Some(keys) = branch
        .as_object()
        .map(|o| o.keys().filter(|k| k.starts_with("x-kubernetes-")))
    {
        for key in keys {
            out.push(format!("{path}: {key} is not allowed inside a junctor"));
        }
    }
    let outer_props = outer.get("properties").and_then(Value::as_object);
    for name in branch
        .get("properties")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .map(|(k, _)| k)
    {
        if !outer_props.is_some_and(|p| p.contains_key(name)) {
            out.push(format!(
                "{path}: field {name} is not declared outside the junctor"
            ));
        }
    }
    if branch.get("items").is_some() && !outer.contains_key("items") {
        out.push(format!("{path}: items are not declared outside the junctor"));
    }
}

/// Calls `f` on every property, items and additionalProperties schema of `node`.
pub fn for_each_child(node: &Value, path: &str, f: &mut dyn FnMut(&Value, &str)) {
    if let Some(props) = node.get("properties").and_then(Value::as_object) {
        for (name, child) in props {
            f(child, &format!("{path}.{name}"));
        }
    }
    if let Some(items) = node.get("items").filter(|i| i.is_object()) {
        f(items, &format!("{path}[]"));
    }
    if let Some(values) = node.get("additionalProperties").filter(|v| v.is_object()) {
        f(values, &format!("{path}{{}}"));
    }
}

/// Every string without `maxLength` (or an `enum`), list without `maxItems` and map without
/// `maxProperties`.
pub fn unbounded_fields(root: &Value) -> Vec<String> {
    let mut out = Vec::new();
    unbounded(root, "", &mut out);
    out
}

fn unbounded(node: &Value, path: &str, out: &mut Vec<String>) {
    let missing = match node.get("type").and_then(Value::as_str) {
        Some("string") if node.get("enum").is_none() => Some("maxLength"),
        Some("array") => Some("maxItems"),
        Some("object") if node.get("additionalProperties").is_some_and(Value::is_object) => {
            Some("maxProperties")
        }
        _ => None,
    };
    if let Some(bound) = missing.filter(|b| node.get(*b).and_then(Value::as_u64).is_none()) {
        out.push(format!("{path}: no {bound}"));
    }
    for_each_child(node, path, &mut |child, child_path| {
        unbounded(child, child_path, out)
    });
}

/// Arrays without a chosen `x-kubernetes-list-type`, and list types the API server refuses.
pub fn list_type_violations(root: &Value) -> Vec<String> {
    let mut out = Vec::new();
    list_types(root, "", &mut out);
    out
}

fn list_types(node: &Value, path: &str, out: &mut Vec<String>) {
    let list_type = node.get("x-kubernetes-list-type").and_then(Value::as_str);
    let keys = node.get("x-kubernetes-list-map-keys");
    let is_array = node.get("type").and_then(Value::as_str) == Some("array");
    let items = node.get("items").cloned().unwrap_or(Value::Null);
    let scalar = |v: &Value| {
        matches!(
            v.get("type").and_then(Value::as_str),
            Some("string" | "integer" | "number" | "boolean")
        )
    };
    match (is_array, list_type) {
        (true, None) => out.push(format!("{path}: no x-kubernetes-list-type")),
        (false, Some(_)) => out.push(format!("{path}: x-kubernetes-list-type on a non-array")),
        (true, Some("atomic")) => {}
        (true, Some("set")) => {
            let atomic_object = items.get("x-kubernetes-map-type").and_then(Value::as_str) == Some("atomic");
            if !scalar(&items) && !atomic_object {
                out.push(format!("{path}: a set needs scalar or atomic items"));
            }
        }
        (true, Some("map")) => map_list(&items, keys, path, out),
        (true, Some(other)) => out.push(format!("{path}: unknown list type {other}")),
        (false, None) => {}
    }
    if keys.is_some() && list_type != Some("map") {
        out.push(format!(
            "{path}: x-kubernetes-list-map-keys without list type map"
        ));
    }
    if matches!(list_type, Some("set" | "map")) && flag(&items, "nullable") {
        out.push(format!("{path}: items of a set or map list must not be nullable"));
    }
    for_each_child(node, path, &mut |child, child_path| {
        list_types(child, child_path, out)
    });
}

fn map_list(items: &Value, keys: Option<&Value>, path: &str, out: &mut Vec<String>) {
    if items.get("type").and_then(Value::as_str) != Some("object") {
        out.push(format!("{path}: a map list needs object items"));
        return;
    }
    let keys: Vec<&str> = keys.map(string_list).unwrap_or_default();
    if keys.is_empty() {
        out.push(format!("{path}: a map list needs x-kubernetes-list-map-keys"));
    }
    let required = string_list(&items["required"]);
    for key in keys {
        let Some(prop) = items.get("properties").and_then(|p| p.get(key)) else {
            out.push(format!("{path}: map key {key} is not a property of the items"));
            continue;
        };
        if !matches!(
            prop.get("type").and_then(Value::as_str),
            Some("string" | "integer" | "number" | "boolean")
        ) {
            out.push(format!("{path}: map key {key} must be a scalar"));
        }
        if !required.contains(&key) && prop.get("default").is_none() {
            out.push(format!("{path}: map key {key} must be required or defaulted"));
        }
        if flag(prop, "nullable") {
            out.push(format!("{path}: map key {key} must not be nullable"));
        }
    }
}

/// Nullable enums: kube-openapi checks `enum` for `null` too and skips a `null` entry, so such a
/// field refuses `null` whatever the enum lists (`validate/schema.go`, `validator.go`).
pub fn nullable_enum_violations(root: &Value) -> Vec<String> {
    let mut out = Vec::new();
    nullable_enums(root, "", &mut out);
    out
}

fn nullable_enums(node: &Value, path: &str, out: &mut Vec<String>) {
    if node.get("enum").is_some() && flag(node, "nullable") {
        out.push(format!("{path}: nullable enum (null would be refused)"));
    }
    for_each_child(node, path, &mut |child, child_path| {
        nullable_enums(child, child_path, out)
    });
}

/// Integers whose Rust type is narrower than int64 without `minimum` and `maximum`: the API
/// server ignores `format: int32` (not among its supported formats), so an out-of-range value
/// would be stored and then break the operator's typed watch of every object of the kind.
pub fn unbounded_narrow_integers(root: &Value) -> Vec<String> {
    let mut out = Vec::new();
    narrow_integers(root, "", &mut out);
    out
}

fn narrow_integers(node: &Value, path: &str, out: &mut Vec<String>) {
    let narrow = matches!(
        node.get("format").and_then(Value::as_str),
        Some("int32" | "uint32" | "int16" | "uint16" | "int8" | "uint8")
    );
    if narrow && (node.get("minimum").is_none() || node.get("maximum").is_none()) {
        out.push(format!("{path}: a narrow integer without minimum and maximum"));
    }
    for_each_child(node, path, &mut |child, child_path| {
        narrow_integers(child, child_path, out)
    });
}

/// `messageExpression`s are costed and compiled by the API server too; the cost model here
/// does not cover them, so none may be used until it does.
pub fn message_expressions(root: &Value) -> Vec<String> {
    let mut out = Vec::new();
    message_exprs(root, "", &mut out);
    out
}

fn message_exprs(node: &Value, path: &str, out: &mut Vec<String>) {
    let rules = node.get("x-kubernetes-validations").and_then(Value::as_array);
    if rules
        .into_iter()
        .flatten()
        .any(|r| r.get("messageExpression").is_some())
    {
        out.push(format!(
            "{path}: messageExpression is not covered by the cost check"
        ));
    }
    for_each_child(node, path, &mut |child, child_path| {
        message_exprs(child, child_path, out)
    });
}

/// The strings of a JSON array (none for anything else).
pub fn string_list(value: &Value) -> Vec<&str> {
    value
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect()
}
