//! The worst-case cost kube-apiserver estimates for a CRD's `x-kubernetes-validations` rules
//! when the CRD is created, re-implemented for the subset of CEL the Tollgate CRDs use.
//!
//! Sources (Kubernetes 1.29+, cel-go v0.17+):
//! - "Resource use by validation functions" in the Kubernetes docs (CRD validation rules): rules
//!   are costed statically against the schema's `maxLength`, `maxItems` and `maxProperties`;
//!   without them the largest value a request could hold is assumed.
//! - `apiextensions-apiserver/pkg/apis/apiextensions/validation/validation.go`:
//!   `StaticEstimatedCostLimit = 10_000_000` per rule, `StaticEstimatedCRDCostLimit =
//!   100_000_000` for the CRD; a rule's cost is its estimate times the maximum cardinality of
//!   the node it sits on (the product of the bounds of every enclosing list and map).
//! - `apiserver/pkg/cel/common/schemas.go`: a string's size is `maxLength * 4` (bytes, a code
//!   point takes up to 4), otherwise `3 MiB - 2`; an unbounded list holds
//!   `(3 MiB - 2) / (minSerializedSize(item) + 1)` items, an unbounded map
//!   `(3 MiB - 2) / (minSerializedSize(value) + 6)` entries; an object's minimum serialized
//!   size is `2 + Σ(len(name) + min(prop) + 4)` over its required properties without default.
//! - `cel-go/checker/cost.go`: identifiers and selections cost 1, literals 0, list literals 10,
//!   map literals 30; a comprehension costs `range + init + result + size(range) * (cond +
//!   step)`; `&&`/`||` cost both sides, `?:` the condition plus the dearer branch; `==`, `!=`
//!   and string ordering cost `ceil(0.1 * min(size(l), size(r)))`; `matches` costs
//!   `ceil(0.1 * (size(s) + 1)) * ceil(0.25 * size(regex))`; `startsWith`/`endsWith`
//!   `ceil(0.1 * size(arg))`; `contains` `ceil(0.1 * size(s)) * ceil(0.1 * size(sub))`; `in`
//!   the list's size; every other call 1. All plus the cost of the arguments.
//!
//! A function outside this table is an error, not a guess: add it from cel-go's table first.

use cel::common::ast::{Expr, IdedExpr, LiteralValue};
use kube::core::cel::cel;
use serde_json::{Value, json};

/// kube-apiserver's default maximum request size (`DefaultMaxRequestSizeBytes`).
pub const MAX_REQUEST_BYTES: u64 = 3 * 1024 * 1024;
/// The largest estimated cost of one rule, times its cardinality.
pub const PER_RULE_LIMIT: u64 = 10_000_000;
/// The largest estimated cost of all rules of one CRD version.
pub const PER_CRD_LIMIT: u64 = 100_000_000;
/// cel-go's `StringTraversalCostFactor`.
const STRING_TRAVERSAL: f64 = 0.1;
/// cel-go's `RegexStringLengthCostFactor`.
const REGEX_LENGTH: f64 = 0.25;
/// `MaxDatetimeSizeJSON` and `MaxDurationSizeJSON` (apiserver/pkg/cel/limits.go).
const MAX_DATETIME_SIZE: u64 = 32;
/// `JSONDateSize`.
const DATE_SIZE: u64 = 12;

/// One rule's estimate.
#[derive(Debug, Clone)]
pub struct RuleCost {
    /// JSON path of the schema node the rule sits on.
    pub path: String,
    /// The rule's source.
    pub rule: String,
    /// cel-go's worst-case cost of one evaluation.
    pub per_call: u64,
    /// How many times the rule can run for one object.
    pub cardinality: u64,
}

impl RuleCost {
    /// What the API server compares with [`PER_RULE_LIMIT`] and adds up for the CRD.
    pub fn total(&self) -> u64 {
        self.per_call.saturating_mul(self.cardinality)
    }
}

/// Estimates every rule under `root` (an `openAPIV3Schema`).
pub fn estimate_schema(root: &Value) -> Result<Vec<RuleCost>, String> {
    let root = with_type_and_object_meta(root);
    let mut out = Vec::new();
    walk(&root, "", 1, &mut out)?;
    Ok(out)
}

/// The API server exposes `apiVersion`, `kind` and `metadata.name`/`generateName` to rules at a
/// resource's root even when the schema omits them (`WithTypeAndObjectMeta`).
fn with_type_and_object_meta(root: &Value) -> Value {
    let mut root = root.clone();
    if let Some(props) = root.get_mut("properties").and_then(Value::as_object_mut) {
        props.entry("apiVersion").or_insert(json!({"type": "string"}));
        props.entry("kind").or_insert(json!({"type": "string"}));
        props.entry("metadata").or_insert(json!({
            "type": "object",
            "properties": {"name": {"type": "string"}, "generateName": {"type": "string"}}
        }));
    }
    root
}

fn walk(node: &Value, path: &str, cardinality: u64, out: &mut Vec<RuleCost>) -> Result<(), String> {
    for rule in node
        .get("x-kubernetes-validations")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let source = rule
            .get("rule")
            .and_then(Value::as_str)
            .ok_or(format!("{path}: a validation without a rule"))?;
        let per_call = estimate_rule(source, node).map_err(|e| format!("{path}: {source}: {e}"))?;
        out.push(RuleCost {
            path: if path.is_empty() { ".".into() } else { path.into() },
            rule: source.into(),
            per_call,
            cardinality,
        });
    }
    if let Some(props) = node.get("properties").and_then(Value::as_object) {
        for (name, child) in props {
            walk(child, &format!("{path}.{name}"), cardinality, out)?;
        }
    }
    if let Some(items) = node.get("items") {
        let card = cardinality.saturating_mul(max_elements(node));
        walk(items, &format!("{path}[]"), card, out)?;
    }
    if let Some(values) = node.get("additionalProperties").filter(|v| v.is_object()) {
        let card = cardinality.saturating_mul(max_elements(node));
        walk(values, &format!("{path}{{}}"), card, out)?;
    }
    Ok(())
}

/// The most elements (list items, map entries, string bytes) a node can hold.
pub fn max_elements(node: &Value) -> u64 {
    let bound = |key: &str| node.get(key).and_then(Value::as_u64);
    match type_of(node) {
        "array" => bound("maxItems").unwrap_or_else(|| {
            let item = node.get("items").map_or(1, min_serialized_size);
            (MAX_REQUEST_BYTES - 2) / (item + 1)
        }),
        "object" => bound("maxProperties").unwrap_or_else(|| {
            let value = node.get("additionalProperties").map_or(1, min_serialized_size);
            (MAX_REQUEST_BYTES - 2) / (value + 6)
        }),
        "string" => match node.get("format").and_then(Value::as_str) {
            Some("date-time" | "duration") => MAX_DATETIME_SIZE,
            Some("date") => DATE_SIZE,
            Some("byte") => bound("maxLength").unwrap_or(MAX_REQUEST_BYTES - 2),
            _ => bound("maxLength").map_or(MAX_REQUEST_BYTES - 2, |n| n.saturating_mul(4)),
        },
        _ => 1,
    }
}

fn type_of(node: &Value) -> &str {
    if node.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true)) {
        return "string";
    }
    node.get("type").and_then(Value::as_str).unwrap_or("")
}

/// `MinSerializedSize` of the CEL declaration type the API server derives from a node.
pub fn min_serialized_size(node: &Value) -> u64 {
    if node.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true)) {
        return 1;
    }
    match type_of(node) {
        "string" => 2,
        "boolean" => 4,
        "integer" | "number" => 1,
        "array" => 2,
        "object" => {
            let required = crate::structural::string_list(&node["required"]);
            let props = node.get("properties").and_then(Value::as_object);
            2 + props
                .into_iter()
                .flatten()
                .filter(|(name, prop)| required.contains(&name.as_str()) && prop.get("default").is_none())
                .map(|(name, prop)| name.len() as u64 + min_serialized_size(prop) + 4)
                .sum::<u64>()
        }
        _ => 1,
    }
}

/// What an expression evaluates to, as far as sizes go.
#[derive(Clone, Debug)]
enum Shape<'s> {
    /// A value the schema declares.
    Node(&'s Value),
    /// A value of known maximum size (a literal, or a computed string).
    Sized(u64),
    /// A list literal whose elements have this shape.
    List(u64, Box<Shape<'s>>),
}

impl Shape<'_> {
    fn size(&self) -> u64 {
        match self {
            Shape::Node(node) => max_elements(node),
            Shape::Sized(n) | Shape::List(n, _) => *n,
        }
    }

    fn is_string(&self) -> bool {
        matches!(self, Shape::Node(n) if type_of(n) == "string")
    }
}

/// `ceil(size * factor)`, as cel-go's `MultiplyByCostFactor`.
fn factor(size: u64, f: f64) -> u64 {
    if size == u64::MAX {
        return u64::MAX;
    }
    (size as f64 * f).ceil() as u64
}

/// Estimates one rule evaluated with `self` bound to `node`.
pub fn estimate_rule(source: &str, node: &Value) -> Result<u64, String> {
    let program = cel::Program::compile(source).map_err(|e| format!("does not parse: {e}"))?;
    let mut scope = Scope {
        vars: vec![
            ("self".into(), Shape::Node(node)),
            ("oldSelf".into(), Shape::Node(node)),
        ],
    };
    scope.cost(program.expression()).map(|(cost, _)| cost)
}

struct Scope<'s> {
    vars: Vec<(String, Shape<'s>)>,
}

type Costed<'s> = Result<(u64, Shape<'s>), String>;

impl<'s> Scope<'s> {
    fn cost(&mut self, e: &'s IdedExpr) -> Costed<'s> {
        match &e.expr {
            Expr::Literal(lit) => Ok((0, Shape::Sized(literal_size(lit)))),
            Expr::Ident(name) => {
                let shape = self
                    .vars
                    .iter()
                    .rev()
                    .find(|(n, _)| n == name)
                    .map(|(_, s)| s.clone())
                    .ok_or(format!("unknown variable {name}"))?;
                Ok((1, shape))
            }
            Expr::Select(sel) => {
                let (operand, shape) = self.cost(&sel.operand)?;
                if sel.test {
                    // has(): the presence test's cost (1 without PresenceTestHasCost(false)).
                    return Ok((operand.saturating_add(1), Shape::Sized(1)));
                }
                Ok((operand.saturating_add(1), select(&shape, &sel.field)?))
            }
            Expr::List(list) => {
                let mut sum = 10u64;
                let mut element = Shape::Sized(0);
                for item in &list.elements {
                    let (c, s) = self.cost(item)?;
                    sum = sum.saturating_add(c);
                    element = union(element, s);
                }
                Ok((sum, Shape::List(list.elements.len() as u64, Box::new(element))))
            }
            Expr::Map(map) => {
                let mut sum = 30u64;
                for entry in &map.entries {
                    if let cel::common::ast::EntryExpr::MapEntry(m) = &entry.expr {
                        sum = sum
                            .saturating_add(self.cost(&m.key)?.0)
                            .saturating_add(self.cost(&m.value)?.0);
                    }
                }
                Ok((sum, Shape::Sized(map.entries.len() as u64)))
            }
            Expr::Comprehension(comp) => {
                let (range, range_shape) = self.cost(&comp.iter_range)?;
                let (init, init_shape) = self.cost(&comp.accu_init)?;
                self.vars.push((comp.accu_var.clone(), init_shape));
                self.vars.push((comp.iter_var.clone(), element(&range_shape)?));
                let (cond, _) = self.cost(&comp.loop_cond)?;
                let (step, _) = self.cost(&comp.loop_step)?;
                self.vars.pop();
                let (result, result_shape) = self.cost(&comp.result)?;
                self.vars.pop();
                let loop_cost = range_shape.size().saturating_mul(cond.saturating_add(step));
                let total = range
                    .saturating_add(init)
                    .saturating_add(result)
                    .saturating_add(loop_cost);
                Ok((total, result_shape))
            }
            Expr::Call(call) => self.call(call),
            other => Err(format!("no cost model for {other:?}")),
        }
    }

    fn call(&mut self, call: &'s cel::common::ast::CallExpr) -> Costed<'s> {
        let mut target = None;
        let mut sum = 0u64;
        if let Some(t) = &call.target {
            let (c, s) = self.cost(t)?;
            sum = c;
            target = Some(s);
        }
        let mut args = Vec::new();
        let mut arg_costs = Vec::new();
        for a in &call.args {
            let (c, s) = self.cost(a)?;
            arg_costs.push(c);
            args.push(s);
        }
        let arg_sum = arg_costs.iter().fold(0u64, |a, c| a.saturating_add(*c));
        let (own, shape) = match (call.func_name.as_str(), target.as_ref(), args.as_slice()) {
            ("_&&_" | "_||_", None, [_, _]) => (0, Shape::Sized(1)),
            ("_?_:_", None, [_, t, f]) => {
                let branches = arg_costs[1].max(arg_costs[2]);
                return Ok((
                    sum.saturating_add(arg_costs[0]).saturating_add(branches),
                    union(t.clone(), f.clone()),
                ));
            }
            ("_==_" | "_!=_", None, [l, r]) => {
                (factor(l.size().min(r.size()), STRING_TRAVERSAL), Shape::Sized(1))
            }
            ("_<_" | "_<=_" | "_>_" | "_>=_", None, [l, r]) if l.is_string() || r.is_string() => {
                (factor(l.size().min(r.size()), STRING_TRAVERSAL), Shape::Sized(1))
            }
            ("_<_" | "_<=_" | "_>_" | "_>=_" | "_-_" | "_*_" | "_/_" | "_%_" | "!_" | "-_", None, _) => {
                (1, Shape::Sized(1))
            }
            ("_+_", None, [l, r]) if l.is_string() || r.is_string() => {
                let size = l.size().saturating_add(r.size());
                (factor(size, STRING_TRAVERSAL), Shape::Sized(size))
            }
            ("_+_", None, [l, r])
                if matches!(l, Shape::List(..))
                    || matches!(r, Shape::List(..))
                    || is_list(l)
                    || is_list(r) =>
            {
                (1, Shape::Sized(l.size().saturating_add(r.size())))
            }
            ("_+_", None, [_, _]) => (1, Shape::Sized(1)),
            ("@in", None, [_, list]) => (list.size(), Shape::Sized(1)),
            (
                "@not_strictly_false"
                | "size"
                | "int"
                | "uint"
                | "double"
                | "type"
                | "timestamp"
                | "duration",
                _,
                _,
            ) => (1, Shape::Sized(1)),
            ("_[_]", None, [container, _]) => (1, element(container)?),
            ("matches", Some(s), [regex]) => {
                let string = factor(s.size().saturating_add(1), STRING_TRAVERSAL);
                (
                    string.saturating_mul(factor(regex.size(), REGEX_LENGTH)),
                    Shape::Sized(1),
                )
            }
            ("startsWith" | "endsWith", Some(_), [prefix]) => {
                (factor(prefix.size(), STRING_TRAVERSAL), Shape::Sized(1))
            }
            ("contains", Some(s), [sub]) => (
                factor(s.size(), STRING_TRAVERSAL).saturating_mul(factor(sub.size(), STRING_TRAVERSAL)),
                Shape::Sized(1),
            ),
            (name, _, _) => return Err(format!("no cost model for function {name}")),
        };
        Ok((sum.saturating_add(own).saturating_add(arg_sum), shape))
    }
}

fn is_list(shape: &Shape) -> bool {
    matches!(shape, Shape::Node(n) if type_of(n) == "array")
}

fn literal_size(lit: &LiteralValue) -> u64 {
    match lit {
        LiteralValue::String(s) => s.inner().chars().count() as u64,
        LiteralValue::Bytes(b) => b.inner().len() as u64,
        _ => 1,
    }
}

/// The shape of field `field` of `shape`.
fn select<'s>(shape: &Shape<'s>, field: &str) -> Result<Shape<'s>, String> {
    let Shape::Node(node) = shape else {
        return Err(format!("cannot select {field} from a literal"));
    };
    if let Some(child) = node.get("properties").and_then(|p| p.get(field)) {
        return Ok(Shape::Node(child));
    }
    if let Some(values) = node.get("additionalProperties").filter(|v| v.is_object()) {
        return Ok(Shape::Node(values));
    }
    // CEL escapes names that collide with keywords: `namespace` is `__namespace__`.
    if let Some(unescaped) = field.strip_prefix("__").and_then(|f| f.strip_suffix("__")) {
        return select(shape, unescaped);
    }
    Err(format!("the schema has no field {field}"))
}

/// The shape of one element of a list (or key of a map) a comprehension iterates.
fn element<'s>(shape: &Shape<'s>) -> Result<Shape<'s>, String> {
    match shape {
        Shape::List(_, element) => Ok((**element).clone()),
        Shape::Node(node) if type_of(node) == "array" => node
            .get("items")
            .map(Shape::Node)
            .ok_or("an array without items".into()),
        Shape::Node(node) if type_of(node) == "object" => {
            // Map keys are strings of unknown length.
            Ok(Shape::Sized(MAX_REQUEST_BYTES - 2))
        }
        other => Err(format!("cannot iterate {other:?}")),
    }
}

fn union<'s>(a: Shape<'s>, b: Shape<'s>) -> Shape<'s> {
    match (&a, &b) {
        (Shape::Sized(0), _) => b,
        (Shape::Node(x), Shape::Node(y)) if std::ptr::eq(*x, *y) => a,
        _ => Shape::Sized(a.size().max(b.size())),
    }
}

/// The variables a rule's comprehensions bind (`p` in `self.all(p, size(p) > 0)`).
pub fn comprehension_variables(source: &str) -> Vec<String> {
    fn collect(e: &IdedExpr, out: &mut Vec<String>) {
        match &e.expr {
            Expr::Comprehension(c) => {
                out.push(c.iter_var.clone());
                for child in [&c.iter_range, &c.accu_init, &c.loop_cond, &c.loop_step, &c.result] {
                    collect(child, out);
                }
            }
            Expr::Call(call) => call
                .target
                .iter()
                .map(|t| &**t)
                .chain(&call.args)
                .for_each(|a| collect(a, out)),
            Expr::Select(s) => collect(&s.operand, out),
            Expr::List(l) => l.elements.iter().for_each(|a| collect(a, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    if let Ok(program) = cel::Program::compile(source) {
        collect(program.expression(), &mut out);
    }
    out
}
