//! Types shared by several resources: model access lists, rate limits, credential references
//! and the status conditions every resource reports.

use std::collections::BTreeMap;

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

use super::bounds;

/// Allow and deny globs for model names (`*` any run, `?` one character). An empty `allow`
/// allows every routed model; `deny` always wins.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelAccess {
    /// Model names or globs this subject may use, e.g. `claude-sonnet-*`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = bounds::PATTERNS), inner(length(max = bounds::PATTERN)), extend("x-kubernetes-list-type" = "atomic"))]
    #[x_kube(validation = Rule::new("self.all(p, size(p) > 0)").message("patterns must not be empty"))]
    pub allow: Vec<String>,
    /// Model names or globs this subject may never use, even when `allow` matches.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = bounds::PATTERNS), inner(length(max = bounds::PATTERN)), extend("x-kubernetes-list-type" = "atomic"))]
    #[x_kube(validation = Rule::new("self.all(p, size(p) > 0)").message("patterns must not be empty"))]
    pub deny: Vec<String>,
}

/// Allow and deny globs for tool names.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PatternList {
    /// Tool name globs allowed (empty: all).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = bounds::PATTERNS), inner(length(max = bounds::PATTERN)), extend("x-kubernetes-list-type" = "atomic"))]
    #[x_kube(validation = Rule::new("self.all(p, size(p) > 0)").message("patterns must not be empty"))]
    pub allow: Vec<String>,
    /// Tool name globs denied; deny wins.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = bounds::PATTERNS), inner(length(max = bounds::PATTERN)), extend("x-kubernetes-list-type" = "atomic"))]
    #[x_kube(validation = Rule::new("self.all(p, size(p) > 0)").message("patterns must not be empty"))]
    pub deny: Vec<String>,
}

/// MCP tools granted on one McpServer (to a key, or to every key of a team).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct McpGrant {
    /// The McpServer's name.
    #[schemars(length(max = bounds::NAME))]
    pub server: String,
    /// Tool name globs allowed (empty: all).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = bounds::PATTERNS), inner(length(max = bounds::PATTERN)), extend("x-kubernetes-list-type" = "atomic"))]
    #[x_kube(validation = Rule::new("self.all(p, size(p) > 0)").message("patterns must not be empty"))]
    pub allow: Vec<String>,
    /// Tool name globs denied; deny wins.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = bounds::PATTERNS), inner(length(max = bounds::PATTERN)), extend("x-kubernetes-list-type" = "atomic"))]
    #[x_kube(validation = Rule::new("self.all(p, size(p) > 0)").message("patterns must not be empty"))]
    pub deny: Vec<String>,
}

/// A label selector, as `metav1.LabelSelector` but bounded: an object matches when every
/// `matchLabels` pair and every `matchExpressions` requirement holds. Unlike
/// `metav1.LabelSelector`, an empty selector is refused rather than matching everything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("(has(self.matchLabels) && size(self.matchLabels) > 0) || (has(self.matchExpressions) && size(self.matchExpressions) > 0)").message("a selector needs matchLabels or matchExpressions"))]
pub struct LabelSelector {
    /// Labels that must all be present with these values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = bounds::SELECTOR_TERMS, "additionalProperties" = {"type": "string", "maxLength": bounds::LABEL_VALUE}))]
    pub match_labels: BTreeMap<String, String>,
    /// Requirements that must all hold.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = bounds::SELECTOR_TERMS), extend("x-kubernetes-list-type" = "atomic"))]
    pub match_expressions: Vec<LabelSelectorRequirement>,
}

/// One requirement of a [`LabelSelector`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("(self.operator == 'In' || self.operator == 'NotIn') == (has(self.values) && size(self.values) > 0)").message("values must be non-empty for In and NotIn, and absent for Exists and DoesNotExist"))]
pub struct LabelSelectorRequirement {
    /// The label key, e.g. `tollgate.dev/team`.
    #[schemars(length(max = bounds::LABEL_KEY))]
    #[x_kube(validation = Rule::new("size(self) > 0").message("must not be empty"))]
    pub key: String,
    /// `In`, `NotIn`, `Exists` or `DoesNotExist`.
    pub operator: SelectorOperator,
    /// The values of `In` and `NotIn`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = bounds::SELECTOR_VALUES), inner(length(max = bounds::LABEL_VALUE)), extend("x-kubernetes-list-type" = "atomic"))]
    pub values: Vec<String>,
}

/// How a [`LabelSelectorRequirement`] relates its key to its values.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum SelectorOperator {
    /// The label is present with one of the values.
    #[default]
    In,
    /// The label is absent, or present with none of the values.
    NotIn,
    /// The label is present.
    Exists,
    /// The label is absent.
    DoesNotExist,
}

impl LabelSelector {
    /// Whether an object with `labels` matches. A selector that matches nothing by
    /// construction (empty, or `In` without values) matches nothing.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        if self.match_labels.is_empty() && self.match_expressions.is_empty() {
            return false;
        }
        let pairs = self.match_labels.iter().all(|(k, v)| labels.get(k) == Some(v));
        pairs
            && self.match_expressions.iter().all(|r| {
                let value = labels.get(&r.key);
                match r.operator {
                    SelectorOperator::In => value.is_some_and(|v| r.values.contains(v)),
                    SelectorOperator::NotIn => value.is_none_or(|v| !r.values.contains(v)),
                    SelectorOperator::Exists => value.is_some(),
                    SelectorOperator::DoesNotExist => value.is_none(),
                }
            })
    }

    /// Why the selector cannot be used, if it cannot (what the CRD's rules refuse, for objects
    /// stored before they existed or compiled offline).
    pub fn problem(&self) -> Option<String> {
        if self.match_labels.is_empty() && self.match_expressions.is_empty() {
            return Some("a selector needs matchLabels or matchExpressions".to_owned());
        }
        self.match_expressions.iter().find_map(|r| {
            let wants_values = matches!(r.operator, SelectorOperator::In | SelectorOperator::NotIn);
            (r.key.is_empty() || wants_values == r.values.is_empty()).then(|| {
                format!(
                    "requirement on {:?}: a key, and values for In and NotIn only",
                    r.key
                )
            })
        })
    }
}

impl std::fmt::Display for LabelSelector {
    /// The `kubectl --selector` syntax, e.g. `team=platform,env in (dev,staging),!legacy`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut terms: Vec<String> = self
            .match_labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        for r in &self.match_expressions {
            terms.push(match r.operator {
                SelectorOperator::In => format!("{} in ({})", r.key, r.values.join(",")),
                SelectorOperator::NotIn => format!("{} notin ({})", r.key, r.values.join(",")),
                SelectorOperator::Exists => r.key.clone(),
                SelectorOperator::DoesNotExist => format!("!{}", r.key),
            });
        }
        f.write_str(&terms.join(","))
    }
}

impl std::str::FromStr for LabelSelector {
    type Err = String;

    /// Parses the `kubectl --selector` syntax: comma-separated `key`, `!key`, `key=value`,
    /// `key==value`, `key!=value`, `key in (a,b)` and `key notin (a,b)`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut sel = LabelSelector::default();
        let mut rest = s.trim();
        while !rest.is_empty() {
            // A term ends at the first comma outside parentheses.
            let mut depth = 0i32;
            let end = rest
                .char_indices()
                .find(|&(_, c)| {
                    match c {
                        '(' => depth += 1,
                        ')' => depth -= 1,
                        _ => {}
                    }
                    c == ',' && depth == 0
                })
                .map_or(rest.len(), |(i, _)| i);
            let term = rest[..end].trim();
            rest = rest[end..].trim_start_matches(',').trim_start();
            parse_term(term, &mut sel).map_err(|e| format!("{term:?}: {e}"))?;
        }
        match sel.problem() {
            Some(p) => Err(p),
            None => Ok(sel),
        }
    }
}

fn parse_term(term: &str, sel: &mut LabelSelector) -> Result<(), String> {
    let key_ok = |k: &str| {
        !k.is_empty()
            && k.len() <= bounds::LABEL_KEY as usize
            && k.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
    };
    let requirement =
        |key: &str, operator, values: Vec<String>| -> Result<LabelSelectorRequirement, String> {
            if !key_ok(key) {
                return Err(format!("{key:?} is not a label key"));
            }
            Ok(LabelSelectorRequirement {
                key: key.to_owned(),
                operator,
                values,
            })
        };
    let set = |list: &str| -> Result<Vec<String>, String> {
        let inner = list
            .trim()
            .strip_prefix('(')
            .and_then(|l| l.strip_suffix(')'))
            .ok_or("expected a list in parentheses, e.g. (a,b)")?;
        let values: Vec<String> = inner
            .split(',')
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
            .collect();
        if values.is_empty() {
            return Err("the list must not be empty".into());
        }
        Ok(values)
    };
    if let Some(key) = term.strip_prefix('!') {
        let r = requirement(key.trim(), SelectorOperator::DoesNotExist, vec![])?;
        sel.match_expressions.push(r);
    } else if let Some((key, value)) = term.split_once("!=") {
        let r = requirement(key.trim(), SelectorOperator::NotIn, vec![value.trim().to_owned()])?;
        sel.match_expressions.push(r);
    } else if let Some((key, value)) = term.split_once('=') {
        let (key, value) = (key.trim(), value.trim_start_matches('=').trim());
        if !key_ok(key) {
            return Err(format!("{key:?} is not a label key"));
        }
        sel.match_labels.insert(key.to_owned(), value.to_owned());
    } else if let Some((key, list)) = term.split_once(" notin ") {
        let r = requirement(key.trim(), SelectorOperator::NotIn, set(list)?)?;
        sel.match_expressions.push(r);
    } else if let Some((key, list)) = term.split_once(" in ") {
        let r = requirement(key.trim(), SelectorOperator::In, set(list)?)?;
        sel.match_expressions.push(r);
    } else {
        let r = requirement(term, SelectorOperator::Exists, vec![])?;
        sel.match_expressions.push(r);
    }
    Ok(())
}

/// Rate limits; an absent field means unlimited.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RateLimits {
    /// Requests per minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self > 0").message("must be greater than 0"))]
    pub requests_per_minute: Option<u64>,
    /// Input plus output tokens per minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self > 0").message("must be greater than 0"))]
    pub tokens_per_minute: Option<u64>,
    /// Requests in flight at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self > 0").message("must be greater than 0"))]
    pub concurrent: Option<u64>,
}

/// A key in a Secret in the same namespace as the referring resource.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret.
    #[schemars(length(max = bounds::NAME))]
    #[x_kube(validation = Rule::new("size(self) > 0").message("must not be empty"))]
    pub name: String,
    /// Key inside the Secret's data.
    #[serde(default = "default_secret_key")]
    #[schemars(length(max = bounds::SECRET_KEY))]
    pub key: String,
}

/// The data key a virtual key Secret holds its key under, unless `secretRef.key` says otherwise.
pub const DEFAULT_SECRET_KEY: &str = "key";

fn default_secret_key() -> String {
    DEFAULT_SECRET_KEY.to_owned()
}

/// Where the proxy reads a credential from. A Secret key (in the operator's namespace) is
/// copied into the credentials Secret the proxies mount, as the file
/// `<credentialsDir>/<secret name>_<key>`; values never reach a ConfigMap.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.secretKeyRef) != has(self.env)").message("set exactly one of secretKeyRef or env"))]
pub struct CredentialRef {
    /// A Secret key, mounted into the proxy as a file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_ref: Option<SecretKeyRef>,
    /// An environment variable of the proxy container holding the credential.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = bounds::ENV_NAME))]
    pub env: Option<String>,
}

/// Audit content capture.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum CaptureMode {
    /// Identity, model, tokens and cost only.
    #[default]
    None,
    /// Adds request metadata (tool names, sizes).
    Metadata,
    /// Adds prompts and completions, within size limits.
    Full,
}

/// A status condition, shaped (and validated) like `metav1.Condition` so kstatus (Flux), Argo CD
/// and `kubectl wait --for=condition=Ready` read it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Condition type; Tollgate reports `Ready`.
    #[serde(rename = "type")]
    #[schemars(length(max = bounds::CONDITION_TYPE), regex(pattern = r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$"))]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    #[schemars(extend("enum" = ["True", "False", "Unknown"]))]
    pub status: String,
    /// A CamelCase machine-readable reason, e.g. `TeamNotFound`.
    #[schemars(length(min = 1, max = bounds::CONDITION_REASON), regex(pattern = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"))]
    pub reason: String,
    /// What happened, for a human.
    #[schemars(length(max = bounds::CONDITION_MESSAGE))]
    pub message: String,
    /// When the status last changed (RFC 3339, whole seconds, as `metav1.Time`).
    #[schemars(length(max = bounds::TIMESTAMP), extend("format" = "date-time"))]
    pub last_transition_time: String,
    /// The generation this condition was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub observed_generation: Option<i64>,
}

/// The status every Tollgate resource reports.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CommonStatus {
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`: whether the resource is part of the compiled policy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = bounds::CONDITIONS), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}
