//! Which namespaces may hold which keys. A VirtualKey is namespaced and a Team cluster-scoped,
//! so without a check anyone who can create a VirtualKey in some namespace could join any team
//! by naming it: inherit its MCP grants and spend its budget. A team admits namespaces
//! (`Team.spec.allowedNamespaces`, by label selector), and a key without a team, which escapes
//! every team limit, is compiled only where the operator's `--teamless-keys` allows.
//!
//! Namespace labels are the trust anchor: whoever may label a namespace may move it into a
//! team. Tenants usually cannot (labelling a Namespace needs cluster-scoped `patch`), and
//! `kubernetes.io/metadata.name` is set by the API server itself.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use kube::ResourceExt;

use super::World;
use super::status::Readiness;
use crate::crd::{LabelSelector, NamespacesFrom, Team};

/// The label the API server sets on every namespace, to its name.
pub const NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// Where keys without a team are compiled (`--teamless-keys`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum TeamlessKeys {
    /// Nowhere: every key must name a team that admits its namespace.
    #[default]
    Deny,
    /// In every namespace.
    Allow,
    /// In the namespaces whose labels match.
    Selector(LabelSelector),
}

impl FromStr for TeamlessKeys {
    type Err = String;

    /// `deny`, `allow`, or a label selector in `kubectl --selector` syntax.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "deny" => Ok(TeamlessKeys::Deny),
            "allow" => Ok(TeamlessKeys::Allow),
            "" => Err("expected deny, allow or a namespace label selector".to_owned()),
            selector => selector
                .parse()
                .map(TeamlessKeys::Selector)
                .map_err(|e| format!("not deny, allow or a label selector: {e}")),
        }
    }
}

impl fmt::Display for TeamlessKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TeamlessKeys::Deny => f.write_str("deny"),
            TeamlessKeys::Allow => f.write_str("allow"),
            TeamlessKeys::Selector(s) => s.fmt(f),
        }
    }
}

/// The labels of namespace `ns`, with [`NAME_LABEL`] even when the namespace was not seen (a
/// key can be listed before its namespace, and offline compiles need no Namespace manifests).
pub fn namespace_labels(world: &World, ns: &str) -> BTreeMap<String, String> {
    let mut labels = world.namespaces.get(ns).cloned().unwrap_or_default();
    labels.insert(NAME_LABEL.to_owned(), ns.to_owned());
    labels
}

/// Why `team.spec.allowedNamespaces` cannot be used, if it cannot.
pub(super) fn allowed_namespaces_problem(team: &Team) -> Option<String> {
    let allowed = team.spec.allowed_namespaces.as_ref()?;
    match (allowed.from, &allowed.selector) {
        (NamespacesFrom::All, None) => None,
        (NamespacesFrom::Selector, Some(s)) => {
            s.problem().map(|p| format!("allowedNamespaces.selector: {p}"))
        }
        _ => Some(
            "allowedNamespaces: selector is required with from: Selector and only allowed with it".into(),
        ),
    }
}

/// Whether the key namespace `ns` may hold a key of `team` (`None`: a key without a team).
pub(super) fn admit(
    team: Option<&Team>,
    ns: &str,
    world: &World,
    teamless: &TeamlessKeys,
) -> Result<(), Readiness> {
    let labels = namespace_labels(world, ns);
    let refused = |message: String| Err(Readiness::fail("NamespaceNotAllowed", message));
    match team {
        Some(t) => match &t.spec.allowed_namespaces {
            None => refused(format!(
                "Team {:?} admits no namespace (it sets no spec.allowedNamespaces); the key is left out",
                t.name_any()
            )),
            Some(a) => match (a.from, &a.selector) {
                (NamespacesFrom::All, _) => Ok(()),
                (NamespacesFrom::Selector, Some(s)) if s.matches(&labels) => Ok(()),
                (NamespacesFrom::Selector, _) => refused(format!(
                    "Team {:?} does not admit namespace {ns:?} (its labels do not match spec.allowedNamespaces.selector); the key is left out",
                    t.name_any()
                )),
            },
        },
        None => match teamless {
            TeamlessKeys::Allow => Ok(()),
            TeamlessKeys::Selector(s) if s.matches(&labels) => Ok(()),
            TeamlessKeys::Deny => refused(
                "a key without a team escapes every team limit and the operator runs with --teamless-keys=deny; set spec.team to a team that admits this namespace".to_owned(),
            ),
            TeamlessKeys::Selector(s) => refused(format!(
                "keys without a team are allowed only in namespaces matching --teamless-keys={s}; set spec.team to a team that admits namespace {ns:?}"
            )),
        },
    }
}

/// The message of a compiled Team: which namespaces it admits.
pub(super) fn team_message(team: &Team) -> String {
    match &team.spec.allowed_namespaces {
        None => "in the policy, but it admits no namespace: its keys are left out until spec.allowedNamespaces is set".to_owned(),
        Some(a) => match (a.from, &a.selector) {
            (NamespacesFrom::All, _) => "in the policy; keys from every namespace".to_owned(),
            (NamespacesFrom::Selector, Some(s)) => format!("in the policy; keys from namespaces matching {s}"),
            (NamespacesFrom::Selector, None) => "in the policy".to_owned(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{LabelSelectorRequirement, SelectorOperator};

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn selectors_parse_from_the_kubectl_syntax_and_match_like_kubernetes() {
        let s: LabelSelector = "team=platform, env in (dev,staging),!legacy,tier!=db,owner"
            .parse()
            .unwrap();
        assert_eq!(s.match_labels, labels(&[("team", "platform")]));
        let ops: Vec<_> = s
            .match_expressions
            .iter()
            .map(|r| (r.key.as_str(), r.operator))
            .collect();
        assert_eq!(
            ops,
            [
                ("env", SelectorOperator::In),
                ("legacy", SelectorOperator::DoesNotExist),
                ("tier", SelectorOperator::NotIn),
                ("owner", SelectorOperator::Exists),
            ]
        );
        assert_eq!(s.match_expressions[0].values, ["dev", "staging"]);
        let ok = labels(&[("team", "platform"), ("env", "dev"), ("owner", "x")]);
        assert!(s.matches(&ok));
        for (k, v) in [("team", "ml"), ("env", "prod"), ("tier", "db")] {
            let mut l = ok.clone();
            l.insert(k.into(), v.into());
            assert!(!s.matches(&l), "{k}={v}");
        }
        let mut l = ok.clone();
        l.insert("legacy".into(), String::new());
        assert!(!s.matches(&l), "legacy present");
        let mut l = ok.clone();
        l.remove("owner");
        assert!(!s.matches(&l), "owner absent");
        // NotIn matches an absent label, as in Kubernetes.
        assert!(!ok.contains_key("tier") && s.matches(&ok));
        // The Display form parses back to the same selector.
        assert_eq!(s.to_string().parse::<LabelSelector>().unwrap(), s);
        for bad in ["env in dev", "env in ()", "=x", "a b", ""] {
            assert!(bad.parse::<LabelSelector>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn an_empty_selector_matches_nothing() {
        assert!(!LabelSelector::default().matches(&labels(&[("a", "b")])));
        let in_nothing = LabelSelector {
            match_expressions: vec![LabelSelectorRequirement {
                key: "a".into(),
                operator: SelectorOperator::In,
                values: vec![],
            }],
            ..Default::default()
        };
        assert!(in_nothing.problem().is_some());
        assert!(!in_nothing.matches(&labels(&[("a", "b")])));
    }

    #[test]
    fn teamless_keys_flag_values() {
        assert_eq!("deny".parse::<TeamlessKeys>(), Ok(TeamlessKeys::Deny));
        assert_eq!("allow".parse::<TeamlessKeys>(), Ok(TeamlessKeys::Allow));
        assert_eq!(TeamlessKeys::default(), TeamlessKeys::Deny);
        let TeamlessKeys::Selector(s) = "tollgate.dev/sandbox=true".parse().unwrap() else {
            panic!("a selector")
        };
        assert_eq!(s.match_labels, labels(&[("tollgate.dev/sandbox", "true")]));
        assert!("".parse::<TeamlessKeys>().is_err());
        assert!("env in".parse::<TeamlessKeys>().is_err());
    }
}
