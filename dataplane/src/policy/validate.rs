//! Validation of a merged policy document. Every error names the offending field by its
//! path in the document (e.g. `keys[2].team`), so `tollgate-proxy check` and the reload log
//! point at what to fix.

use std::collections::HashSet;
use std::fmt;

use super::document::{
    Budget, CredentialSource, POLICY_VERSION, PolicyDocument, Provider, ProviderKind, ScopeKind,
};

/// One problem in a policy document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Path of the offending field, e.g. `keys[2].sha256`.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// All problems found in one document.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ValidationErrors(pub Vec<FieldError>);

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        write!(f, "{}", parts.join("; "))
    }
}

/// Provider kinds this proxy version can forward to.
pub const SUPPORTED_PROVIDER_KINDS: &[ProviderKind] = &[
    ProviderKind::Anthropic,
    ProviderKind::Bedrock,
    ProviderKind::Vertex,
    ProviderKind::Foundry,
    ProviderKind::Openai,
    ProviderKind::Gemini,
    ProviderKind::Tollgate,
];

#[derive(Default)]
struct Collector(Vec<FieldError>);

impl Collector {
    fn err(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError {
            field: field.into(),
            message: message.into(),
        });
    }

    /// Reports empty ids and duplicates among `ids`, found at `list[i].field`.
    fn unique_ids<'a>(&mut self, list: &str, field: &str, ids: impl Iterator<Item = &'a str>) {
        let mut seen = HashSet::new();
        for (i, id) in ids.enumerate() {
            if id.trim().is_empty() {
                self.err(format!("{list}[{i}].{field}"), "must not be empty");
            } else if !seen.insert(id) {
                self.err(
                    format!("{list}[{i}].{field}"),
                    format!("duplicate {field} {id:?}"),
                );
            }
        }
    }
}

/// Validates a merged document; `Ok` means it can be compiled into a snapshot.
pub fn validate(doc: &PolicyDocument) -> Result<(), ValidationErrors> {
    let mut c = Collector::default();
    if doc.version != POLICY_VERSION {
        c.err(
            "version",
            format!(
                "unsupported version {}; this proxy reads version {POLICY_VERSION}",
                doc.version
            ),
        );
    }
    if let Some(org) = &doc.organization {
        if org.name.trim().is_empty() {
            c.err("organization.name", "must not be empty");
        }
    }
    c.unique_ids("teams", "id", doc.teams.iter().map(|t| t.id.as_str()));
    c.unique_ids("keys", "id", doc.keys.iter().map(|k| k.id.as_str()));
    c.unique_ids("budgets", "id", doc.budgets.iter().map(|b| b.id.as_str()));
    c.unique_ids("providers", "id", doc.providers.iter().map(|p| p.id.as_str()));
    c.unique_ids(
        "mcp_servers",
        "name",
        doc.mcp_servers.iter().map(|m| m.name.as_str()),
    );
    validate_keys(doc, &mut c);
    for (i, b) in doc.budgets.iter().enumerate() {
        validate_budget(doc, i, b, &mut c);
    }
    for (i, p) in doc.providers.iter().enumerate() {
        validate_provider(i, p, &mut c);
    }
    validate_routes(doc, &mut c);
    validate_mcp(doc, &mut c);
    validate_mcp_gateway(doc, &mut c);
    if let Some(audit) = &doc.audit {
        for (field, message) in crate::audit::config::validate(audit) {
            c.err(field, message);
        }
    }
    if let Err(e) = crate::pricing::PriceTable::from_entries(&doc.prices) {
        c.err("prices", e.to_string());
    }
    if c.0.is_empty() {
        Ok(())
    } else {
        Err(ValidationErrors(c.0))
    }
}

fn validate_keys(doc: &PolicyDocument, c: &mut Collector) {
    let teams: HashSet<&str> = doc.teams.iter().map(|t| t.id.as_str()).collect();
    let servers: HashSet<&str> = doc.mcp_servers.iter().map(|m| m.name.as_str()).collect();
    let mut hashes = HashSet::new();
    for (i, k) in doc.keys.iter().enumerate() {
        let at = format!("keys[{i}]");
        if !is_sha256_hex(&k.sha256) {
            c.err(
                format!("{at}.sha256"),
                "must be 64 lower-case hex characters (the SHA-256 of the key, never the key)",
            );
        } else if !hashes.insert(k.sha256.as_str()) {
            c.err(
                format!("{at}.sha256"),
                format!("the same key hash is used by another key (key {:?})", k.id),
            );
        }
        if let Some(team) = &k.team {
            if !teams.contains(team.as_str()) {
                c.err(
                    format!("{at}.team"),
                    format!("team {team:?} is not defined in teams"),
                );
            }
        }
        for (j, g) in k.mcp.iter().enumerate() {
            if !servers.contains(g.server.as_str()) {
                c.err(
                    format!("{at}.mcp[{j}].server"),
                    format!("MCP server {:?} is not defined in mcp_servers", g.server),
                );
            }
        }
        check_patterns(c, &format!("{at}.models.allow"), &k.models.allow);
        check_patterns(c, &format!("{at}.models.deny"), &k.models.deny);
    }
}

fn check_patterns(c: &mut Collector, at: &str, patterns: &[String]) {
    for (j, p) in patterns.iter().enumerate() {
        if p.is_empty() {
            c.err(format!("{at}[{j}]"), "pattern must not be empty");
        }
    }
}

fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn validate_budget(doc: &PolicyDocument, i: usize, b: &Budget, c: &mut Collector) {
    let at = format!("budgets[{i}]");
    let name = b.scope.name.as_str();
    let known = match b.scope.kind {
        ScopeKind::Organization => doc.organization.as_ref().is_some_and(|o| o.name == name),
        ScopeKind::Team => doc.teams.iter().any(|t| t.id == name),
        ScopeKind::Key => doc.keys.iter().any(|k| k.id == name),
        ScopeKind::User => !name.trim().is_empty(),
    };
    if !known {
        c.err(
            format!("{at}.scope.name"),
            format!("{:?} does not name a defined {:?}", name, b.scope.kind).to_lowercase(),
        );
    }
    for (j, t) in b.thresholds.iter().enumerate() {
        if *t == 0 || *t > 100 {
            c.err(
                format!("{at}.thresholds[{j}]"),
                "must be a percentage from 1 to 100",
            );
        }
    }
    if let super::document::BudgetPeriod::Rolling { seconds: 0 } = b.period {
        c.err(format!("{at}.period.rolling.seconds"), "must be greater than 0");
    }
    if let Some(tz) = &b.time_zone {
        if let Err(e) = jiff::tz::TimeZone::get(tz) {
            c.err(
                format!("{at}.time_zone"),
                format!("unknown time zone {tz:?}: {e}"),
            );
        }
    }
}

fn validate_provider(i: usize, p: &Provider, c: &mut Collector) {
    let at = format!("providers[{i}]");
    if !SUPPORTED_PROVIDER_KINDS.contains(&p.kind) {
        c.err(
            format!("{at}.kind"),
            format!(
                "{} is not supported by this tollgate-proxy yet (supported: {})",
                kind_name(p.kind),
                SUPPORTED_PROVIDER_KINDS
                    .iter()
                    .map(|k| kind_name(*k))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        );
    }
    let derived_endpoint = matches!(p.kind, ProviderKind::Bedrock | ProviderKind::Vertex);
    if !(derived_endpoint && p.endpoint.is_empty()) {
        if let Err(msg) = check_url(&p.endpoint) {
            c.err(format!("{at}.endpoint"), msg);
        }
    }
    validate_cloud(&at, p, c);
    match (&p.credential, p.kind) {
        (Some(_), ProviderKind::Tollgate) => c.err(
            format!("{at}.credential"),
            "a tollgate provider takes no credential: the client's virtual key is forwarded and \
             the gateway holds the provider keys; remove it",
        ),
        (Some(cred), _) => check_credential(c, &format!("{at}.credential"), cred),
        (None, _) => {}
    }
    let t = &p.timeouts;
    for (name, v) in [
        ("response_headers_ms", t.response_headers_ms),
        ("stream_idle_ms", t.stream_idle_ms),
    ] {
        if v == 0 {
            c.err(format!("{at}.timeouts.{name}"), "must be greater than 0");
        }
    }
}

/// The cloud fields of a provider: region and project where the kind needs them (they become
/// part of a host name, so only DNS-label characters), and each credential form only on its
/// own kind, one form at a time.
fn validate_cloud(at: &str, p: &Provider, c: &mut Collector) {
    let label = |v: &str| {
        !v.is_empty()
            && v.len() <= 63
            && v.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !v.starts_with('-')
            && !v.ends_with('-')
    };
    let needs_region = matches!(p.kind, ProviderKind::Bedrock | ProviderKind::Vertex);
    match (&p.region, needs_region) {
        (None, true) => c.err(
            format!("{at}.region"),
            format!("a {} provider needs a region", kind_name(p.kind)),
        ),
        (Some(r), _) if !label(r) => c.err(
            format!("{at}.region"),
            "must be a region name of lowercase letters, digits and '-' (e.g. us-east-1)",
        ),
        _ => {}
    }
    match (&p.project, p.kind) {
        (None, ProviderKind::Vertex) => c.err(format!("{at}.project"), "a vertex provider needs a project"),
        (Some(_), kind) if kind != ProviderKind::Vertex => {
            c.err(format!("{at}.project"), "only a vertex provider has a project")
        }
        (Some(v), _) if !label(v) => c.err(
            format!("{at}.project"),
            "must be a Google Cloud project id of lowercase letters, digits and '-'",
        ),
        _ => {}
    }
    let only_on = |c: &mut Collector, field: &str, set: bool, kind: ProviderKind| {
        if set && p.kind != kind {
            c.err(
                format!("{at}.{field}"),
                format!("only a {} provider takes {field}", kind_name(kind)),
            );
        } else if set && p.credential.is_some() {
            c.err(
                format!("{at}.{field}"),
                format!("set either credential or {field}, not both"),
            );
        }
    };
    only_on(c, "aws", p.aws.is_some(), ProviderKind::Bedrock);
    only_on(c, "gcp", p.gcp.is_some(), ProviderKind::Vertex);
    only_on(c, "azure", p.azure.is_some(), ProviderKind::Foundry);
    if let Some(aws) = &p.aws {
        validate_aws(&format!("{at}.aws"), aws, c);
    }
    if let Some(key) = p.gcp.as_ref().and_then(|g| g.service_account_key.as_ref()) {
        check_credential(c, &format!("{at}.gcp.service_account_key"), key);
    }
    if let Some(az) = &p.azure {
        if let Some(secret) = &az.client_secret {
            check_credential(c, &format!("{at}.azure.client_secret"), secret);
        }
        if let Some(url) = &az.authority_host {
            if let Err(msg) = check_url(url) {
                c.err(format!("{at}.azure.authority_host"), msg);
            }
        }
    }
    if let Some(b) = &p.retry_budget {
        if b.percent > 100 {
            c.err(format!("{at}.retry_budget.percent"), "must be from 0 to 100");
        }
    }
}

fn validate_aws(at: &str, aws: &super::document::AwsCredentials, c: &mut Collector) {
    let static_keys = aws.access_key_id.is_some() || aws.secret_access_key.is_some();
    let forms = [static_keys, aws.web_identity.is_some(), aws.container.is_some()];
    match forms.iter().filter(|f| **f).count() {
        0 => c.err(
            at,
            "set one of access_key_id with secret_access_key, web_identity or container \
             (or leave aws out for the standard AWS environment chain)",
        ),
        1 => {}
        _ => c.err(at, "set only one of static keys, web_identity or container"),
    }
    if static_keys && (aws.access_key_id.is_none() || aws.secret_access_key.is_none()) {
        c.err(at, "access_key_id and secret_access_key go together");
    }
    if aws.session_token.is_some() && !static_keys {
        c.err(
            format!("{at}.session_token"),
            "only static keys have a session token",
        );
    }
    for (name, cred) in [
        ("access_key_id", &aws.access_key_id),
        ("secret_access_key", &aws.secret_access_key),
        ("session_token", &aws.session_token),
    ] {
        if let Some(cred) = cred {
            check_credential(c, &format!("{at}.{name}"), cred);
        }
    }
    if let Some(w) = &aws.web_identity {
        if w.role_arn.is_empty() || w.token_file.is_empty() {
            c.err(format!("{at}.web_identity"), "needs role_arn and token_file");
        }
        if let Some(Err(msg)) = w.sts_endpoint.as_deref().map(check_url) {
            c.err(format!("{at}.web_identity.sts_endpoint"), msg);
        }
    }
    if let Some(k) = &aws.container {
        if let Err(msg) = check_url(&k.uri) {
            c.err(format!("{at}.container.uri"), msg);
        }
    }
}

/// A provider kind as written in the document (`anthropic`, `tollgate`, ...).
fn kind_name(kind: ProviderKind) -> String {
    serde_json::to_value(kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("{kind:?}").to_lowercase())
}

fn check_credential(c: &mut Collector, at: &str, cred: &CredentialSource) {
    match (&cred.file, &cred.env) {
        (Some(_), Some(_)) => c.err(at, "set either file or env, not both"),
        (None, None) => c.err(at, "set file or env"),
        (Some(f), None) if f.trim().is_empty() => c.err(format!("{at}.file"), "must not be empty"),
        (None, Some(e)) if e.trim().is_empty() => c.err(format!("{at}.env"), "must not be empty"),
        _ => {}
    }
}

/// Checks an absolute http(s) URL with a host.
fn check_url(s: &str) -> Result<(), String> {
    let uri: http::Uri = s.parse().map_err(|e| format!("not a valid URL: {e}"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => {
            return Err(format!(
                "{s:?} must start with https:// (or http:// for local tests)"
            ));
        }
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(format!("{s:?} has no host"));
    }
    if uri.query().is_some() {
        return Err(format!("{s:?} must not have a query string"));
    }
    Ok(())
}

fn validate_routes(doc: &PolicyDocument, c: &mut Collector) {
    let providers: HashSet<&str> = doc.providers.iter().map(|p| p.id.as_str()).collect();
    for (i, r) in doc.routes.iter().enumerate() {
        if r.match_.is_empty() {
            c.err(format!("routes[{i}].match"), "must not be empty");
        }
        if r.targets.is_empty() {
            c.err(format!("routes[{i}].targets"), "needs at least one target");
        }
        for (j, t) in r.targets.iter().enumerate() {
            if t.weight.is_some_and(|w| !(1..=10_000).contains(&w)) {
                c.err(
                    format!("routes[{i}].targets[{j}].weight"),
                    "must be from 1 to 10000",
                );
            }
            if !providers.contains(t.provider.as_str()) {
                c.err(
                    format!("routes[{i}].targets[{j}].provider"),
                    format!("provider {:?} is not defined in providers", t.provider),
                );
            }
            if t.model.as_deref().is_some_and(str::is_empty) {
                c.err(
                    format!("routes[{i}].targets[{j}].model"),
                    "must not be empty when set",
                );
            }
        }
    }
}

fn validate_mcp(doc: &PolicyDocument, c: &mut Collector) {
    for (i, m) in doc.mcp_servers.iter().enumerate() {
        let legal = m
            .name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !legal || m.name.contains("__") || m.name.len() > 48 {
            c.err(
                format!("mcp_servers[{i}].name"),
                "use 1-48 characters of [A-Za-z0-9_-] without \"__\" (it prefixes tool names)",
            );
        }
        if let Err(msg) = check_url(&m.url) {
            c.err(format!("mcp_servers[{i}].url"), msg);
        }
        if let Some(cred) = &m.credential {
            check_credential(c, &format!("mcp_servers[{i}].credential"), cred);
        }
    }
    let servers: HashSet<&str> = doc.mcp_servers.iter().map(|m| m.name.as_str()).collect();
    let grants = doc
        .teams
        .iter()
        .enumerate()
        .map(|(i, t)| (format!("teams[{i}]"), &t.mcp, &t.tools))
        .chain(
            doc.keys
                .iter()
                .enumerate()
                .map(|(i, k)| (format!("keys[{i}]"), &k.mcp, &k.tools)),
        );
    for (at, mcp, tools) in grants {
        for (j, g) in mcp.iter().enumerate() {
            if at.starts_with("teams") && !servers.contains(g.server.as_str()) {
                c.err(
                    format!("{at}.mcp[{j}].server"),
                    format!("MCP server {:?} is not defined in mcp_servers", g.server),
                );
            }
            check_patterns(c, &format!("{at}.mcp[{j}].allow"), &g.allow);
            check_patterns(c, &format!("{at}.mcp[{j}].deny"), &g.deny);
        }
        if let Some(t) = tools {
            check_patterns(c, &format!("{at}.tools.allow"), &t.allow);
            check_patterns(c, &format!("{at}.tools.deny"), &t.deny);
        }
    }
}

/// `mcp_gateway` names a `tollgate` provider, and then this proxy aggregates no MCP server
/// itself (the gateway does, authoritatively).
fn validate_mcp_gateway(doc: &PolicyDocument, c: &mut Collector) {
    let Some(id) = &doc.mcp_gateway else {
        return;
    };
    match doc.providers.iter().find(|p| &p.id == id) {
        None => c.err(
            "mcp_gateway",
            format!("provider {id:?} is not defined in providers"),
        ),
        Some(p) if p.kind != ProviderKind::Tollgate => c.err(
            "mcp_gateway",
            format!(
                "provider {id:?} is of kind {}; mcp_gateway must name a provider of kind tollgate",
                kind_name(p.kind)
            ),
        ),
        Some(_) => {}
    }
    if !doc.mcp_servers.is_empty() {
        c.err(
            "mcp_servers",
            "must be empty when mcp_gateway is set: the gateway aggregates the MCP servers",
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::document::*;

    fn valid() -> PolicyDocument {
        PolicyDocument {
            version: 1,
            organization: Some(Organization { name: "acme".into() }),
            teams: vec![Team {
                id: "platform".into(),
                ..Default::default()
            }],
            keys: vec![VirtualKey {
                id: "alice".into(),
                sha256: "a".repeat(64),
                team: Some("platform".into()),
                enabled: true,
                ..Default::default()
            }],
            providers: vec![Provider {
                id: "anthropic".into(),
                kind: ProviderKind::Anthropic,
                endpoint: "https://api.anthropic.com".into(),
                credential: Some(CredentialSource {
                    env: Some("ANTHROPIC_API_KEY".into()),
                    file: None,
                }),
                ..Default::default()
            }],
            routes: vec![Route {
                match_: "claude-*".into(),
                targets: vec![RouteTarget {
                    provider: "anthropic".into(),
                    model: None,
                    ..Default::default()
                }],
            }],
            ..Default::default()
        }
    }

    fn fields(doc: &PolicyDocument) -> Vec<String> {
        match validate(doc) {
            Ok(()) => vec![],
            Err(e) => e.0.into_iter().map(|f| f.field).collect(),
        }
    }

    #[test]
    fn valid_document_passes() {
        assert_eq!(fields(&valid()), Vec::<String>::new());
    }

    #[test]
    fn each_error_names_its_field() {
        type Mutation = fn(&mut PolicyDocument);
        let cases: Vec<(Mutation, &str)> = vec![
            (|d| d.version = 2, "version"),
            (|d| d.keys[0].sha256 = "ABC".into(), "keys[0].sha256"),
            (|d| d.keys[0].sha256 = "g".repeat(64), "keys[0].sha256"),
            (|d| d.keys[0].team = Some("ghost".into()), "keys[0].team"),
            (|d| d.keys.push(d.keys[0].clone()), "keys[1].id"),
            (
                |d| d.keys[0].models.allow = vec!["".into()],
                "keys[0].models.allow[0]",
            ),
            (
                |d| {
                    d.keys[0].mcp = vec![McpGrant {
                        server: "nope".into(),
                        ..Default::default()
                    }]
                },
                "keys[0].mcp[0].server",
            ),
            (|d| d.teams[0].id = " ".into(), "teams[0].id"),
            (
                |d| d.providers[0].endpoint = "ftp://x".into(),
                "providers[0].endpoint",
            ),
            (
                |d| d.providers[0].endpoint = "not a url".into(),
                "providers[0].endpoint",
            ),
            (
                |d| {
                    d.providers[0].kind = ProviderKind::Bedrock;
                    d.providers[0].credential = None;
                },
                "providers[0].region",
            ),
            (
                |d| {
                    d.providers[0].kind = ProviderKind::Bedrock;
                    d.providers[0].region = Some("x.evil.example/".into());
                },
                "providers[0].region",
            ),
            (
                |d| {
                    d.providers[0].kind = ProviderKind::Vertex;
                    d.providers[0].region = Some("global".into());
                },
                "providers[0].project",
            ),
            (
                |d| d.providers[0].project = Some("p".into()),
                "providers[0].project",
            ),
            (
                |d| {
                    d.providers[0].credential = None;
                    d.providers[0].aws = Some(super::super::document::AwsCredentials {
                        web_identity: Some(Default::default()),
                        ..Default::default()
                    });
                },
                "providers[0].aws",
            ),
            (
                |d| {
                    d.providers[0].kind = ProviderKind::Bedrock;
                    d.providers[0].region = Some("us-east-1".into());
                    d.providers[0].credential = None;
                    d.providers[0].aws = Some(super::super::document::AwsCredentials {
                        access_key_id: Some(CredentialSource {
                            env: Some("K".into()),
                            file: None,
                        }),
                        ..Default::default()
                    });
                },
                "providers[0].aws",
            ),
            (
                |d| {
                    d.providers[0].retry_budget = Some(super::super::document::RetryBudget {
                        percent: 101,
                        min_per_second: 1,
                    })
                },
                "providers[0].retry_budget.percent",
            ),
            (
                |d| d.routes[0].targets[0].weight = Some(0),
                "routes[0].targets[0].weight",
            ),
            (
                |d| d.providers[0].credential = Some(CredentialSource::default()),
                "providers[0].credential",
            ),
            (
                |d| d.providers[0].timeouts.stream_idle_ms = 0,
                "providers[0].timeouts.stream_idle_ms",
            ),
            (
                |d| d.routes[0].targets[0].provider = "other".into(),
                "routes[0].targets[0].provider",
            ),
            (|d| d.routes[0].targets.clear(), "routes[0].targets"),
            (|d| d.routes[0].match_.clear(), "routes[0].match"),
            (
                |d| {
                    d.budgets.push(Budget {
                        id: "b".into(),
                        scope: BudgetScope {
                            kind: ScopeKind::Team,
                            name: "ghost".into(),
                        },
                        ..Default::default()
                    })
                },
                "budgets[0].scope.name",
            ),
            (
                |d| {
                    d.budgets.push(Budget {
                        id: "b".into(),
                        scope: BudgetScope {
                            kind: ScopeKind::Organization,
                            name: "acme".into(),
                        },
                        thresholds: vec![0],
                        ..Default::default()
                    })
                },
                "budgets[0].thresholds[0]",
            ),
            (
                |d| {
                    d.mcp_servers.push(McpServer {
                        name: "a.b".into(),
                        url: "http://127.0.0.1:1/mcp".into(),
                        credential: None,
                    })
                },
                "mcp_servers[0].name",
            ),
        ];
        for (mutate, field) in cases {
            let mut doc = valid();
            mutate(&mut doc);
            let got = fields(&doc);
            assert!(
                got.iter().any(|f| f == field),
                "expected an error at {field}, got {got:?}"
            );
        }
    }

    /// A sidecar's document: one provider of kind tollgate (the gateway), MCP relayed to it.
    fn sidecar() -> PolicyDocument {
        let mut doc = valid();
        doc.providers = vec![Provider {
            id: "gateway".into(),
            kind: ProviderKind::Tollgate,
            endpoint: "http://tollgate-gateway.tollgate-system.svc:8080".into(),
            ..Default::default()
        }];
        doc.routes[0].targets[0].provider = "gateway".into();
        doc.mcp_gateway = Some("gateway".into());
        doc
    }

    fn messages(doc: &PolicyDocument) -> Vec<String> {
        match validate(doc) {
            Ok(()) => vec![],
            Err(e) => e.0.into_iter().map(|f| f.to_string()).collect(),
        }
    }

    #[test]
    fn a_sidecar_document_with_a_tollgate_provider_passes() {
        assert_eq!(messages(&sidecar()), Vec::<String>::new());
    }

    #[test]
    fn a_tollgate_provider_with_a_credential_is_refused() {
        let mut doc = sidecar();
        doc.providers[0].credential = Some(CredentialSource {
            env: Some("ANTHROPIC_API_KEY".into()),
            file: None,
        });
        let got = messages(&doc);
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(
            got[0].starts_with("providers[0].credential: a tollgate provider takes no credential"),
            "{got:?}"
        );
    }

    #[test]
    fn mcp_gateway_must_name_a_tollgate_provider_and_replace_mcp_servers() {
        let mut doc = sidecar();
        doc.mcp_gateway = Some("ghost".into());
        assert_eq!(
            messages(&doc),
            ["mcp_gateway: provider \"ghost\" is not defined in providers"]
        );

        let mut doc = valid();
        doc.mcp_gateway = Some("anthropic".into());
        assert_eq!(
            messages(&doc),
            [
                "mcp_gateway: provider \"anthropic\" is of kind anthropic; mcp_gateway must name a \
                 provider of kind tollgate"
            ]
        );

        let mut doc = sidecar();
        doc.mcp_servers.push(McpServer {
            name: "fs".into(),
            url: "http://127.0.0.1:1/mcp".into(),
            credential: None,
        });
        let got = messages(&doc);
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(
            got[0].starts_with("mcp_servers: must be empty when mcp_gateway is set"),
            "{got:?}"
        );
    }

    #[test]
    fn every_document_kind_is_supported() {
        // The operator's CRD enum is kept equal to this list by a test; a kind added to the
        // document must be implemented before it is admitted.
        for kind in [
            ProviderKind::Anthropic,
            ProviderKind::Bedrock,
            ProviderKind::Vertex,
            ProviderKind::Foundry,
            ProviderKind::Openai,
            ProviderKind::Gemini,
            ProviderKind::Tollgate,
        ] {
            assert!(SUPPORTED_PROVIDER_KINDS.contains(&kind), "{kind:?}");
        }
    }

    #[test]
    fn all_errors_are_reported_together() {
        let mut doc = valid();
        doc.version = 9;
        doc.keys[0].team = Some("ghost".into());
        let err = validate(&doc).unwrap_err();
        assert_eq!(err.0.len(), 2, "{err}");
        let text = err.to_string();
        assert!(text.contains("version: unsupported version 9"), "{text}");
        assert!(
            text.contains("keys[0].team: team \"ghost\" is not defined"),
            "{text}"
        );
    }
}
