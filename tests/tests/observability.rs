//! The chart's Grafana dashboard and alerting rules against what tollgate-proxy exports.
//!
//! Every PromQL expression of `charts/tollgate/files/dashboards/tollgate.json` (panels and
//! template variables) and `charts/tollgate/files/alerts.yaml` (the PrometheusRule's spec, with
//! `${alerts.NAME}` replaced by the chart's default values, as the template does) must parse,
//! and every metric it selects must be one a real `Metrics::new()` exports, its
//! `_total`/`_bucket`/`_sum`/`_count` samples resolved from the exposition's `# TYPE` lines.
//! A dashboard or rule naming a metric the proxy does not export fails here.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use promql_parser::label::MatchOp;
use promql_parser::parser::{self, Expr, VectorSelector};
use tollgate_dataplane::metrics::{Metrics, RequestLabels};
use tollgate_dataplane::usage::Usage;

fn chart_file(path: &str) -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../charts/tollgate")
        .join(path);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Every sample name the proxy's exposition can carry, from its `# TYPE` lines.
fn exported() -> BTreeSet<String> {
    let m = Metrics::new();
    // Touch families so their samples appear too (checked against the TYPE-derived names).
    let l = RequestLabels {
        key_id: "k".into(),
        team: "t".into(),
        model: "m".into(),
        provider: "p".into(),
    };
    let usage = Usage {
        input_tokens: 1,
        output_tokens: 1,
        ..Default::default()
    };
    m.completed(&l, 200, &usage, 1, false, true);
    m.timings(&l, Some(0.1), 0.2);
    m.denial("unknown_key", "", "");
    m.unpriced("m");
    m.budget_spend("b", 1, 2);
    m.threshold_crossed("b", 50);
    m.ledger_error("admit");
    m.reload("applied", true, 1);
    m.mcp_tool_call("k", "t", "s", "tool", "ok");
    m.fallback("p", true);
    m.ejected("p");
    let text = m.encode();

    let mut names = BTreeSet::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let (name, kind) = rest.split_once(' ').expect("# TYPE name kind");
        let suffixes: &[&str] = match kind {
            "counter" => &["_total", "_created"],
            "histogram" => &["_bucket", "_sum", "_count", "_created"],
            "summary" => &["", "_sum", "_count", "_created"],
            "info" => &["_info"],
            "gauge" | "unknown" | "stateset" => &[""],
            other => panic!("unexpected metric type {other} in {line}"),
        };
        for s in suffixes {
            names.insert(format!("{name}{s}"));
        }
    }
    // The derivation holds for every sample actually written.
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let name = line.split(['{', ' ']).next().unwrap_or_default();
        assert!(
            names.contains(name),
            "sample {name} not derived from a # TYPE line"
        );
    }
    for needle in [
        "tollgate_requests_total",
        "tollgate_upstream_ttfb_seconds_bucket",
        "tollgate_key_info",
        "tollgate_build_info",
        "tollgate_policy_revision_info",
        "tollgate_audit_sink_lag_records",
        "tollgate_ledger_outbox_dropped_total",
    ] {
        assert!(names.contains(needle), "{needle} missing from {names:?}");
    }
    names
}

fn selector_name(vs: &VectorSelector) -> Option<String> {
    vs.name.clone().or_else(|| {
        vs.matchers
            .matchers
            .iter()
            .find(|m| m.name == "__name__" && matches!(m.op, MatchOp::Equal))
            .map(|m| m.value.clone())
    })
}

/// The metric names an expression selects, walking the whole AST.
fn metric_names(expr: &Expr, out: &mut BTreeSet<String>) {
    match expr {
        Expr::Aggregate(a) => {
            metric_names(&a.expr, out);
            if let Some(p) = &a.param {
                metric_names(p, out);
            }
        }
        Expr::Unary(u) => metric_names(&u.expr, out),
        Expr::Binary(b) => {
            metric_names(&b.lhs, out);
            metric_names(&b.rhs, out);
        }
        Expr::Paren(p) => metric_names(&p.expr, out),
        Expr::Subquery(s) => metric_names(&s.expr, out),
        Expr::VectorSelector(vs) => {
            out.insert(selector_name(vs).expect("a selector without a metric name"));
        }
        Expr::MatrixSelector(ms) => {
            out.insert(selector_name(&ms.vs).expect("a selector without a metric name"));
        }
        Expr::Call(c) => {
            for a in &c.args.args {
                metric_names(a, out);
            }
        }
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
    }
}

/// Parses `expr` and returns the metric names it selects.
fn names_in(what: &str, expr: &str) -> BTreeSet<String> {
    let ast = parser::parse(expr).unwrap_or_else(|e| panic!("{what}: does not parse: {e}\n{expr}"));
    let mut names = BTreeSet::new();
    metric_names(&ast, &mut names);
    assert!(!names.is_empty(), "{what}: selects no metric:\n{expr}");
    names
}

/// Grafana's variables replaced by what they stand for: `$__rate_interval`, `$__range` and
/// `$__interval` by a duration, `$job` / `${team}` / `${team:regex}` (only ever inside label
/// matcher strings) by a plain value.
fn grafana_expand(expr: &str) -> String {
    let mut out = String::new();
    let mut rest = expr;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let (name, len) = if let Some(braced) = after.strip_prefix('{') {
            let end = braced.find('}').expect("unclosed ${");
            (braced[..end].split(':').next().unwrap_or_default(), end + 2)
        } else {
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            (&after[..end], end)
        };
        assert!(!name.is_empty(), "a bare $ in {expr}");
        out.push_str(if name.starts_with("__") { "5m" } else { "x" });
        rest = &after[len..];
    }
    out.push_str(rest);
    out
}

/// Every `expr` string in the dashboard JSON (rows nest panels), with where it is.
fn dashboard_exprs(v: &serde_json::Value, path: &str, out: &mut Vec<(String, String)>) {
    match v {
        serde_json::Value::Object(o) => {
            let here = o
                .get("title")
                .and_then(|t| t.as_str())
                .map_or_else(|| path.to_owned(), |t| format!("{path}/{t}"));
            for (k, item) in o {
                if k == "expr" {
                    out.push((here.clone(), item.as_str().expect("expr is a string").to_owned()));
                } else {
                    dashboard_exprs(item, &here, out);
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|i| dashboard_exprs(i, path, out)),
        _ => {}
    }
}

fn check_exported(what: &str, names: &BTreeSet<String>, exported: &BTreeSet<String>) -> Vec<String> {
    names
        .iter()
        .filter(|n| !exported.contains(*n))
        .map(|n| format!("{what}: {n} is not a metric tollgate-proxy exports"))
        .collect()
}

#[test]
fn the_dashboard_names_only_exported_metrics() {
    let exported = exported();
    let dashboard: serde_json::Value =
        serde_json::from_str(&chart_file("files/dashboards/tollgate.json")).expect("dashboard JSON");
    let mut exprs = Vec::new();
    dashboard_exprs(&dashboard["panels"], "panels", &mut exprs);
    assert!(exprs.len() >= 30, "only {} panel queries", exprs.len());
    // Template variables: `label_values(SELECTOR, label)`.
    for var in dashboard["templating"]["list"]
        .as_array()
        .expect("templating.list")
    {
        if let Some(q) = var["query"]["query"].as_str() {
            let inner = q
                .strip_prefix("label_values(")
                .and_then(|r| r.rsplit_once(','))
                .map(|(sel, _)| sel.to_owned())
                .unwrap_or_else(|| panic!("variable {}: unexpected query {q}", var["name"]));
            exprs.push((format!("variable {}", var["name"]), inner));
        }
    }
    let mut problems = Vec::new();
    let mut seen = BTreeSet::new();
    for (what, expr) in &exprs {
        let names = names_in(what, &grafana_expand(expr));
        problems.extend(check_exported(what, &names, &exported));
        seen.extend(names);
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // The panels the dashboard promises.
    for needle in [
        "tollgate_cost_micro_usd_total",
        "tollgate_key_info",
        "tollgate_budget_spent_micro_usd",
        "tollgate_budget_limit_micro_usd",
        "tollgate_denials_total",
        "tollgate_upstream_ttfb_seconds_bucket",
        "tollgate_upstream_duration_seconds_bucket",
        "tollgate_tokens_total",
        "tollgate_mcp_tool_calls_total",
        "tollgate_audit_sink_lag_records",
        "tollgate_audit_records_dropped_total",
        "tollgate_policy_last_reload_success",
        "tollgate_upstream_fallbacks_total",
        "tollgate_provider_ejections_total",
    ] {
        assert!(seen.contains(needle), "no dashboard panel uses {needle}");
    }
    // The datasource is a variable, never a fixed uid.
    let text = chart_file("files/dashboards/tollgate.json");
    for (i, _) in text.match_indices("\"uid\": \"") {
        let uid = &text[i + 8..i + 8 + text[i + 8..].find('"').unwrap()];
        assert!(
            uid == "${datasource}" || uid == "tollgate-overview",
            "fixed datasource uid {uid}"
        );
    }
}

/// `${alerts.NAME}` replaced by the value of `alerts.NAME` in values.yaml, as
/// templates/prometheusrule.yaml does.
fn rules_with_defaults() -> String {
    let values: serde_yaml::Value = serde_yaml::from_str(&chart_file("values.yaml")).expect("values.yaml");
    let alerts = values["alerts"].as_mapping().expect("values.yaml has alerts");
    let mut text = chart_file("files/alerts.yaml");
    for (k, v) in alerts {
        let value = match v {
            serde_yaml::Value::String(s) => s.clone(),
            serde_yaml::Value::Number(n) => n.to_string(),
            _ => continue,
        };
        text = text.replace(&format!("${{alerts.{}}}", k.as_str().unwrap()), &value);
    }
    assert!(!text.contains("${"), "a placeholder without a value: {text}");
    text
}

#[test]
fn every_alert_rule_parses_and_names_exported_metrics() {
    let exported = exported();
    let rules: serde_yaml::Value = serde_yaml::from_str(&rules_with_defaults()).expect("alerts.yaml");
    let mut problems = Vec::new();
    let mut alerts = BTreeMap::new();
    for group in rules["groups"].as_sequence().expect("groups") {
        for rule in group["rules"].as_sequence().expect("rules") {
            let name = rule["alert"].as_str().expect("every rule is an alert").to_owned();
            let expr = rule["expr"].as_str().expect("expr");
            problems.extend(check_exported(&name, &names_in(&name, expr), &exported));
            let for_ = rule["for"].as_str().unwrap_or_else(|| panic!("{name}: no for"));
            parser::parse(&format!("vector(1)[{for_}:]"))
                .unwrap_or_else(|e| panic!("{name}: for {for_} is no duration: {e}"));
            let severity = rule["labels"]["severity"].as_str().unwrap_or_default();
            assert!(
                ["critical", "warning", "info"].contains(&severity),
                "{name}: severity {severity:?}"
            );
            for a in ["summary", "description"] {
                assert!(
                    rule["annotations"][a].as_str().is_some_and(|s| !s.is_empty()),
                    "{name}: no {a}"
                );
            }
            assert!(
                alerts.insert(name.clone(), expr.to_owned()).is_none(),
                "{name} twice"
            );
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    for wanted in [
        "TollgateBudgetThresholdCrossed",
        "TollgateBudgetExhausted",
        "TollgatePolicyReloadFailing",
        "TollgateLedgerErrors",
        "TollgateAuditRecordsDropped",
        "TollgateAuditSinkLagGrowing",
        "TollgateProviderErrorRate",
        "TollgateSidecarPolicyBehind",
    ] {
        assert!(alerts.contains_key(wanted), "no alert {wanted}");
    }
}

#[test]
fn a_metric_the_proxy_does_not_export_is_caught() {
    let exported = exported();
    for (expr, wrong) in [
        ("sum(rate(tollgate_request_total[5m]))", "tollgate_request_total"),
        (
            "tollgate_budget_spent_usd / tollgate_budget_limit_micro_usd",
            "tollgate_budget_spent_usd",
        ),
        (
            "histogram_quantile(0.9, sum by (le) (rate(tollgate_upstream_ttfb_seconds_bucket[5m]))) > on() group_left() tollgate_key_info_total",
            "tollgate_key_info_total",
        ),
        (r#"{__name__="tollgate_tokens"}"#, "tollgate_tokens"),
    ] {
        let problems = check_exported("probe", &names_in("probe", expr), &exported);
        assert_eq!(problems.len(), 1, "{expr}: {problems:?}");
        assert!(problems[0].contains(wrong), "{problems:?}");
    }
    assert!(std::panic::catch_unwind(|| names_in("probe", "sum(rate(tollgate_requests_total[5m])")).is_err());
    assert_eq!(
        grafana_expand(r#"rate(x{job=~"$job", team=~"${team:regex}"}[$__rate_interval])"#),
        r#"rate(x{job=~"x", team=~"x"}[5m])"#
    );
}
