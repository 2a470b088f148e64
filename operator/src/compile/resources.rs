//! Per-kind compilation: each resource becomes its policy entry or a `Ready=False` reason.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use kube::ResourceExt;
use tollgate_dataplane::policy::document::{self as doc, PolicyDocument};
use tollgate_dataplane::policy::validate::validate;

use super::status::{self, Kind, Readiness, StatusUpdate, ready_condition, usd};
use super::{Settings, World};
use crate::crd::{
    self, AuditSink, Budget, BudgetStatus, CaptureMode, CredentialRef, McpServer, ModelProvider, ModelRoute,
    Period, ProviderKind, ResourceStatus, ScopeKind, TeamStatus, VirtualKey, VirtualKeyStatus,
};
use crate::{credentials, secrets};

/// Identifies a resource: kind, namespace (VirtualKeys only), name.
pub(super) type ResourceId = (Kind, Option<String>, String);

/// A compiled key and the VirtualKey it came from.
pub(super) struct CompiledKey {
    pub key: doc::VirtualKey,
}

/// Everything but the keys' sharding.
pub(super) struct Output {
    /// The document without organization and keys.
    pub document: PolicyDocument,
    /// Compiled keys.
    pub keys: Vec<CompiledKey>,
    /// Why each resource is or is not compiled.
    pub readiness: BTreeMap<ResourceId, Readiness>,
}

/// The most bytes one compiled key may take in a shard (a realistic key takes about 400; the
/// CRD's bounds alone would allow a megabyte of MCP grant patterns).
pub const MAX_KEY_BYTES: usize = 32 * 1024;

/// The policy id of a VirtualKey: `<namespace>/<name>`.
pub fn key_id(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

fn sorted<T: ResourceExt + Clone>(items: &[T]) -> Vec<&T> {
    let mut v: Vec<&T> = items.iter().collect();
    v.sort_by_key(|a| (a.namespace(), a.name_any()));
    v
}

fn capture(c: CaptureMode) -> doc::CaptureMode {
    match c {
        CaptureMode::None => doc::CaptureMode::None,
        CaptureMode::Metadata => doc::CaptureMode::Metadata,
        CaptureMode::Full => doc::CaptureMode::Full,
    }
}

fn models(m: &crd::ModelAccess) -> doc::ModelAccess {
    doc::ModelAccess {
        allow: m.allow.clone(),
        deny: m.deny.clone(),
    }
}

fn rate_limits(r: &crd::RateLimits) -> doc::RateLimits {
    doc::RateLimits {
        requests_per_minute: r.requests_per_minute,
        tokens_per_minute: r.tokens_per_minute,
        concurrent: r.concurrent,
    }
}

fn credential(c: &CredentialRef, settings: &Settings) -> doc::CredentialSource {
    match (&c.secret_key_ref, &c.env) {
        (Some(s), _) => doc::CredentialSource {
            file: Some(format!(
                "{}/{}",
                settings.credentials_dir.trim_end_matches('/'),
                crate::credentials::file_key(&s.name, &s.key)
            )),
            env: None,
        },
        (None, env) => doc::CredentialSource {
            file: None,
            env: env.clone(),
        },
    }
}

fn empty_pattern(lists: &[&[String]]) -> bool {
    lists.iter().any(|l| l.iter().any(|p| p.is_empty()))
}

/// Runs the proxy's own validation on a one-entry document and reports its first problem,
/// so providers, MCP servers and the like are judged by exactly the proxy's rules.
fn proxy_check(doc: PolicyDocument) -> Option<(String, String)> {
    validate(&doc)
        .err()
        .and_then(|e| e.0.into_iter().next())
        .map(|f| (f.field, f.message))
}

// `..Default::default()` on policy-document structs keeps this compiling as the document
// gains optional sections (audit, MCP); clippy flags it while a struct has no other field.
#[allow(clippy::needless_update)]
/// Compiles every resource; keys whose id is in `refused` are left out with that readiness
/// (the second pass after the policy turned out too large to shard).
pub(super) fn compile_resources(
    world: &World,
    settings: &Settings,
    refused: &BTreeMap<String, Readiness>,
) -> Output {
    let mut readiness: BTreeMap<ResourceId, Readiness> = BTreeMap::new();
    let mut document = PolicyDocument {
        version: doc::POLICY_VERSION,
        ..Default::default()
    };

    // Providers, then the routes that name them.
    let mut providers = BTreeSet::new();
    for p in sorted(&world.providers) {
        let name = p.name_any();
        let s = &p.spec;
        let mut timeouts = doc::Timeouts::default();
        if let Some(t) = &s.timeouts {
            timeouts.response_headers_ms = t.response_headers_ms.unwrap_or(timeouts.response_headers_ms);
            timeouts.stream_idle_ms = t.stream_idle_ms.unwrap_or(timeouts.stream_idle_ms);
        }
        let entry = doc::Provider {
            id: name.clone(),
            kind: match s.kind {
                ProviderKind::Anthropic => doc::ProviderKind::Anthropic,
                ProviderKind::Bedrock => doc::ProviderKind::Bedrock,
                ProviderKind::Vertex => doc::ProviderKind::Vertex,
                ProviderKind::Foundry => doc::ProviderKind::Foundry,
                ProviderKind::Openai => doc::ProviderKind::Openai,
            },
            endpoint: s.endpoint.clone(),
            region: s.region.clone(),
            project: s.project.clone(),
            credential: s.credential.as_ref().map(|c| credential(c, settings)),
            timeouts,
        };
        let check = proxy_check(PolicyDocument {
            version: doc::POLICY_VERSION,
            providers: vec![entry.clone()],
            ..Default::default()
        });
        let refused = s
            .credential
            .as_ref()
            .and_then(|c| credentials::refusal(c, &world.credential_secrets));
        let r = match (refused, check) {
            (Some(why), _) => Readiness::fail("CredentialNotAllowed", why),
            (None, Some((field, msg))) if field.ends_with(".kind") => Readiness::fail("UnsupportedKind", msg),
            (None, Some((field, msg))) => Readiness::fail(
                "InvalidSpec",
                format!("{}: {msg}", field.trim_start_matches("providers[0].")),
            ),
            (None, None) => {
                providers.insert(name.clone());
                document.providers.push(entry);
                Readiness::ok("Compiled", "in the policy")
            }
        };
        readiness.insert((Kind::ModelProvider, None, name), r);
    }

    let mut routes: Vec<&ModelRoute> = world.routes.iter().collect();
    routes.sort_by_key(|a| (a.spec.priority, a.name_any()));
    let provider_exists: BTreeSet<String> = world.providers.iter().map(|p| p.name_any()).collect();
    for r in routes {
        let name = r.name_any();
        let missing: Vec<&str> = r
            .spec
            .targets
            .iter()
            .map(|t| t.provider.as_str())
            .filter(|p| !providers.contains(*p))
            .collect();
        let res = if r.spec.match_.is_empty() || r.spec.targets.is_empty() {
            Readiness::fail("InvalidSpec", "match and at least one target are required")
        } else if r.spec.targets.iter().any(|t| t.model.as_deref() == Some("")) {
            Readiness::fail("InvalidSpec", "targets[].model must not be empty when set")
        } else if let Some(p) = missing.first() {
            if provider_exists.contains(*p) {
                Readiness::fail(
                    "ProviderNotReady",
                    format!("ModelProvider {p:?} is not ready; the route is left out"),
                )
            } else {
                Readiness::fail(
                    "ProviderNotFound",
                    format!("ModelProvider {p:?} does not exist; the route is left out"),
                )
            }
        } else {
            document.routes.push(doc::Route {
                match_: r.spec.match_.clone(),
                targets: r
                    .spec
                    .targets
                    .iter()
                    .map(|t| doc::RouteTarget {
                        provider: t.provider.clone(),
                        model: t.model.clone(),
                    })
                    .collect(),
            });
            Readiness::ok("Compiled", "in the policy")
        };
        readiness.insert((Kind::ModelRoute, None, name), res);
    }

    // MCP servers.
    let mut servers = BTreeSet::new();
    for m in sorted(&world.mcp_servers) {
        let name = m.name_any();
        let entry = doc::McpServer {
            name: name.clone(),
            url: m.spec.url.clone(),
            credential: m.spec.credential.as_ref().map(|c| credential(c, settings)),
        };
        let check = proxy_check(PolicyDocument {
            version: doc::POLICY_VERSION,
            mcp_servers: vec![entry.clone()],
            ..Default::default()
        });
        let refused = m
            .spec
            .credential
            .as_ref()
            .and_then(|c| credentials::refusal(c, &world.credential_secrets));
        let res = match (refused, check) {
            (Some(why), _) => Readiness::fail("CredentialNotAllowed", why),
            (None, Some((field, msg))) => Readiness::fail(
                "InvalidSpec",
                format!("{}: {msg}", field.trim_start_matches("mcp_servers[0].")),
            ),
            (None, None) => {
                servers.insert(name.clone());
                document.mcp_servers.push(entry);
                Readiness::ok("Compiled", "in the policy")
            }
        };
        readiness.insert((Kind::McpServer, None, name), res);
    }

    // Audit sinks.
    let mut sinks = Vec::new();
    for a in sorted(&world.audit_sinks) {
        let name = a.name_any();
        let refused = a
            .spec
            .credential
            .as_ref()
            .and_then(|c| credentials::refusal(c, &world.credential_secrets));
        let res = if let Some(why) = refused {
            Readiness::fail("CredentialNotAllowed", why)
        } else if a.spec.endpoint.trim().is_empty() {
            Readiness::fail("InvalidSpec", "endpoint must not be empty")
        } else if a
            .spec
            .credential
            .as_ref()
            .is_some_and(|c| c.secret_key_ref.is_some() == c.env.is_some())
        {
            Readiness::fail(
                "InvalidSpec",
                "credential: set exactly one of secretKeyRef or env",
            )
        } else {
            sinks.push(doc::AuditSink {
                name: name.clone(),
                kind: a.spec.kind.as_str().to_owned(),
                endpoint: a.spec.endpoint.clone(),
                credential: a.spec.credential.as_ref().map(|c| credential(c, settings)),
                ..Default::default()
            });
            Readiness::ok("Compiled", "in the policy")
        };
        readiness.insert((Kind::AuditSink, None, name), res);
    }
    if !sinks.is_empty() || settings.audit_capture.is_some() {
        document.audit = Some(doc::AuditConfig {
            capture: settings.audit_capture.unwrap_or_default(),
            sinks,
            ..Default::default()
        });
    }

    // Teams.
    let mut teams = BTreeSet::new();
    for t in sorted(&world.teams) {
        let name = t.name_any();
        let m = t.spec.models.as_ref();
        let res = if m.is_some_and(|m| empty_pattern(&[&m.allow, &m.deny])) {
            Readiness::fail("InvalidSpec", "models: patterns must not be empty")
        } else {
            teams.insert(name.clone());
            document.teams.push(doc::Team {
                id: name.clone(),
                rate_limits: t.spec.rate_limits.as_ref().map(rate_limits),
                models: m.map(models),
                ..Default::default()
            });
            Readiness::ok("Compiled", "in the policy")
        };
        readiness.insert((Kind::Team, None, name), res);
    }

    // Keys.
    let mut keys: Vec<CompiledKey> = Vec::new();
    let mut by_hash: HashMap<String, String> = HashMap::new();
    for k in sorted(&world.keys) {
        let (ns, name) = (k.namespace().unwrap_or_default(), k.name_any());
        let id = key_id(&ns, &name);
        if let Some(r) = refused.get(&id) {
            readiness.insert((Kind::VirtualKey, Some(ns), name), r.clone());
            continue;
        }
        let res = compile_key(k, &id, world, &teams, &servers, &mut by_hash).and_then(|key| {
            let bytes = serde_json::to_vec(&key).map_or(usize::MAX, |v| v.len());
            if bytes > MAX_KEY_BYTES {
                return Err(Readiness::fail(
                    "KeyTooLarge",
                    format!("the key compiles to {bytes} bytes, over the {MAX_KEY_BYTES} a key may take in the policy; shrink its patterns or MCP grants"),
                ));
            }
            Ok(key)
        });
        let res = res.map(|key| {
            let r = match &key.expires_at {
                _ if !key.enabled => Readiness::ok("Disabled", "disabled: the proxy refuses it with 403"),
                Some(t) if *t <= world.now => Readiness::ok(
                    "Expired",
                    format!("expired at {t}: the proxy refuses it with 403"),
                ),
                _ => Readiness::ok("Compiled", "in the policy"),
            };
            keys.push(CompiledKey { key });
            r
        });
        readiness.insert(
            (Kind::VirtualKey, Some(ns), name),
            res.unwrap_or_else(|fail| fail),
        );
    }
    let compiled_keys: BTreeSet<&str> = keys.iter().map(|k| k.key.id.as_str()).collect();

    // Budgets.
    for b in sorted(&world.budgets) {
        let name = b.name_any();
        let res = compile_budget(b, settings, &teams, &compiled_keys).map(|entry| {
            document.budgets.push(entry);
            Readiness::ok("Compiled", "in the policy")
        });
        readiness.insert((Kind::Budget, None, name), res.unwrap_or_else(|fail| fail));
    }

    Output {
        document,
        keys,
        readiness,
    }
}

fn compile_key(
    k: &VirtualKey,
    id: &str,
    world: &World,
    teams: &BTreeSet<String>,
    servers: &BTreeSet<String>,
    by_hash: &mut HashMap<String, String>,
) -> Result<doc::VirtualKey, Readiness> {
    let s = &k.spec;
    let ns = k.namespace().unwrap_or_default();
    let expires_at = match &s.expires_at {
        None => None,
        Some(t) => Some(t.parse::<jiff::Timestamp>().map_err(|e| {
            Readiness::fail(
                "InvalidSpec",
                format!("expiresAt {t:?} is not an RFC 3339 instant: {e}"),
            )
        })?),
    };
    let tool_lists: Vec<&[String]> = s
        .tools
        .iter()
        .flat_map(|t| [t.allow.as_slice(), t.deny.as_slice()])
        .collect();
    if empty_pattern(&[&s.models.allow, &s.models.deny]) || empty_pattern(&tool_lists) {
        return Err(Readiness::fail("InvalidSpec", "patterns must not be empty"));
    }
    if let Some(team) = &s.team
        && !teams.contains(team)
    {
        let reason = if world.teams.iter().any(|t| t.name_any() == *team) {
            "TeamNotReady"
        } else {
            "TeamNotFound"
        };
        return Err(Readiness::fail(
            reason,
            format!("Team {team:?} is not in the policy; the key is left out"),
        ));
    }
    let mut seen_servers = BTreeSet::new();
    for g in &s.mcp {
        if !servers.contains(&g.server) {
            return Err(Readiness::fail(
                "McpServerNotFound",
                format!(
                    "McpServer {:?} is not in the policy; the key is left out",
                    g.server
                ),
            ));
        }
        if !seen_servers.insert(&g.server) {
            return Err(Readiness::fail(
                "InvalidSpec",
                format!("McpServer {:?} is granted twice", g.server),
            ));
        }
    }
    let sha256 = key_hash(k, &ns, world)?;
    if let Some(other) = by_hash.get(&sha256) {
        return Err(Readiness::fail(
            "DuplicateKey",
            format!("the same secret key is already used by VirtualKey {other}; the key is left out"),
        ));
    }
    by_hash.insert(sha256.clone(), id.to_owned());
    Ok(doc::VirtualKey {
        id: id.to_owned(),
        sha256,
        user: s.owner.clone(),
        team: s.team.clone(),
        enabled: s.enabled,
        expires_at,
        models: models(&s.models),
        rate_limits: s.rate_limits.as_ref().map(rate_limits),
        mcp: s
            .mcp
            .iter()
            .map(|g| doc::McpGrant {
                server: g.server.clone(),
                allow: g.allow.clone(),
                deny: g.deny.clone(),
            })
            .collect(),
        tools: s.tools.as_ref().map(|t| doc::PatternList {
            allow: t.allow.clone(),
            deny: t.deny.clone(),
        }),
        capture: s.capture.map(capture),
    })
}

/// The key's SHA-256 from the digest of its Secret.
fn key_hash(k: &VirtualKey, ns: &str, world: &World) -> Result<String, Readiness> {
    let (secret, data_key, generated) = match &k.spec.secret_ref {
        Some(r) => (r.name.clone(), r.key.clone(), false),
        None => (
            secrets::generated_name(&k.name_any()),
            crd::common::DEFAULT_SECRET_KEY.to_owned(),
            true,
        ),
    };
    let Some(observed) = world.secrets.get(&(ns.to_owned(), secret.clone())) else {
        return Err(if generated {
            Readiness::fail(
                "SecretPending",
                format!("generating the key into Secret {ns}/{secret}"),
            )
        } else {
            Readiness::fail(
                "SecretNotFound",
                format!(
                    "Secret {ns}/{secret} was not found (it must carry the label {})",
                    secrets::KEY_LABEL
                ),
            )
        });
    };
    if generated {
        let uid = k.uid().unwrap_or_default();
        if !observed.owner_uids.contains(&uid) {
            return Err(Readiness::fail(
                "SecretConflict",
                format!(
                    "Secret {ns}/{secret} exists but is not owned by this VirtualKey; delete it or set secretRef"
                ),
            ));
        }
    }
    match observed.digests.get(&data_key) {
        Some(Some(h)) => Ok(h.clone()),
        Some(None) => Err(Readiness::fail(
            "SecretKeyInvalid",
            format!("Secret {ns}/{secret} key {data_key:?} is empty or not UTF-8"),
        )),
        None => Err(Readiness::fail(
            "SecretKeyMissing",
            format!("Secret {ns}/{secret} has no key {data_key:?}"),
        )),
    }
}

fn compile_budget(
    b: &Budget,
    settings: &Settings,
    teams: &BTreeSet<String>,
    keys: &BTreeSet<&str>,
) -> Result<doc::Budget, Readiness> {
    let s = &b.spec;
    let limit = match (&s.limit_usd, s.limit_micro_usd) {
        (Some(usd), None) => status::parse_usd(usd).ok_or_else(|| {
            Readiness::fail("InvalidSpec", format!("limitUsd {usd:?} is not a dollar amount"))
        })?,
        (None, Some(m)) => m,
        _ => {
            return Err(Readiness::fail(
                "InvalidSpec",
                "set exactly one of limitUsd or limitMicroUsd",
            ));
        }
    };
    let period = match (s.period, s.rolling_seconds) {
        (Period::Daily, None) => doc::BudgetPeriod::Daily,
        (Period::Weekly, None) => doc::BudgetPeriod::Weekly,
        (Period::Monthly, None) => doc::BudgetPeriod::Monthly,
        (Period::Yearly, None) => doc::BudgetPeriod::Yearly,
        (Period::Rolling, Some(seconds)) if seconds > 0 => doc::BudgetPeriod::Rolling { seconds },
        _ => {
            return Err(Readiness::fail(
                "InvalidSpec",
                "rollingSeconds (> 0) goes with period rolling, and only with it",
            ));
        }
    };
    if let Some(tz) = &s.time_zone
        && jiff::tz::db().get(tz).is_err()
    {
        return Err(Readiness::fail(
            "InvalidSpec",
            format!("timeZone {tz:?} is not an IANA time zone"),
        ));
    }
    if s.thresholds.iter().any(|t| *t == 0 || *t > 100) {
        return Err(Readiness::fail(
            "InvalidSpec",
            "thresholds are percentages from 1 to 100",
        ));
    }
    let scope = &s.scope;
    let (kind, name) = match scope.kind {
        ScopeKind::Organization => {
            let Some(org) = &settings.organization else {
                return Err(Readiness::fail(
                    "OrganizationNotConfigured",
                    "the operator runs without --organization, so there is no organization scope",
                ));
            };
            if !scope.name.is_empty() && scope.name != *org {
                return Err(Readiness::fail(
                    "ScopeNotFound",
                    format!("organization {:?} is not this organization ({org:?})", scope.name),
                ));
            }
            (doc::ScopeKind::Organization, org.clone())
        }
        ScopeKind::Team => {
            if !teams.contains(&scope.name) {
                return Err(Readiness::fail(
                    "ScopeNotFound",
                    format!(
                        "Team {:?} is not in the policy; the budget is left out",
                        scope.name
                    ),
                ));
            }
            (doc::ScopeKind::Team, scope.name.clone())
        }
        ScopeKind::User => {
            if scope.name.trim().is_empty() {
                return Err(Readiness::fail("InvalidSpec", "scope.name must name a user"));
            }
            (doc::ScopeKind::User, scope.name.clone())
        }
        ScopeKind::Key => {
            let Some(ns) = &scope.namespace else {
                return Err(Readiness::fail(
                    "InvalidSpec",
                    "scope.namespace is required for kind key",
                ));
            };
            let id = key_id(ns, &scope.name);
            if !keys.contains(id.as_str()) {
                return Err(Readiness::fail(
                    "ScopeNotFound",
                    format!("VirtualKey {id} is not in the policy; the budget is left out"),
                ));
            }
            (doc::ScopeKind::Key, id)
        }
    };
    let mut thresholds = s.thresholds.clone();
    thresholds.sort_unstable();
    thresholds.dedup();
    Ok(doc::Budget {
        id: b.name_any(),
        scope: doc::BudgetScope { kind, name },
        limit_micro_usd: limit,
        period,
        time_zone: s.time_zone.clone(),
        thresholds,
    })
}

/// Builds every resource's desired status.
pub(super) fn statuses(
    world: &World,
    readiness: &BTreeMap<ResourceId, Readiness>,
    shard_of_key: &BTreeMap<String, String>,
) -> Vec<StatusUpdate> {
    let now = world.now;
    let get = |kind: Kind, ns: Option<String>, name: String| {
        readiness
            .get(&(kind, ns, name))
            .cloned()
            .unwrap_or_else(|| Readiness::fail("Unknown", "not compiled"))
    };
    let mut out = Vec::new();

    let mut team_keys: BTreeMap<&str, u64> = BTreeMap::new();
    for k in &world.keys {
        let id = key_id(&k.namespace().unwrap_or_default(), &k.name_any());
        if let (Some(team), true) = (&k.spec.team, shard_of_key.contains_key(&id)) {
            *team_keys.entry(team.as_str()).or_insert(0) += 1;
        }
    }

    for t in sorted(&world.teams) {
        let r = get(Kind::Team, None, t.name_any());
        let prev = t
            .status
            .as_ref()
            .map(|s| s.conditions.as_slice())
            .unwrap_or_default();
        let desired = TeamStatus {
            observed_generation: t.metadata.generation,
            conditions: vec![ready_condition(prev, t.metadata.generation, now, &r)],
            keys: team_keys.get(t.name_any().as_str()).copied().unwrap_or(0),
        };
        out.push(status::update(
            Kind::Team,
            None,
            &t.name_any(),
            t.status.as_ref(),
            &desired,
            prev,
            r,
        ));
    }

    for k in sorted(&world.keys) {
        let (ns, name) = (k.namespace().unwrap_or_default(), k.name_any());
        let id = key_id(&ns, &name);
        let r = get(Kind::VirtualKey, Some(ns.clone()), name.clone());
        let prev = k
            .status
            .as_ref()
            .map(|s| s.conditions.as_slice())
            .unwrap_or_default();
        let desired = VirtualKeyStatus {
            observed_generation: k.metadata.generation,
            conditions: vec![ready_condition(prev, k.metadata.generation, now, &r)],
            config_map: shard_of_key.get(&id).cloned(),
            key_id: Some(id),
            secret_name: Some(match &k.spec.secret_ref {
                Some(s) => s.name.clone(),
                None => secrets::generated_name(&name),
            }),
        };
        out.push(status::update(
            Kind::VirtualKey,
            Some(&ns),
            &name,
            k.status.as_ref(),
            &desired,
            prev,
            r,
        ));
    }

    for b in sorted(&world.budgets) {
        let name = b.name_any();
        let r = get(Kind::Budget, None, name.clone());
        let prev = b
            .status
            .as_ref()
            .map(|s| s.conditions.as_slice())
            .unwrap_or_default();
        let limit = b
            .spec
            .limit_micro_usd
            .or_else(|| b.spec.limit_usd.as_deref().and_then(status::parse_usd));
        let mut desired = BudgetStatus {
            observed_generation: b.metadata.generation,
            conditions: vec![ready_condition(prev, b.metadata.generation, now, &r)],
            limit: limit.map(usd),
            ..Default::default()
        };
        if let (Some(spend), true) = (world.spend.get(&name), r.ready) {
            let remaining = spend
                .limit_micro_usd
                .saturating_sub(spend.spent_micro_usd.saturating_add(spend.reserved_micro_usd));
            desired.spent = Some(usd(spend.spent_micro_usd));
            desired.remaining = Some(usd(remaining));
            desired.spent_micro_usd = Some(spend.spent_micro_usd);
            desired.reserved_micro_usd = Some(spend.reserved_micro_usd);
            desired.remaining_micro_usd = Some(remaining);
            desired.window_start = Some(spend.window_start.clone());
            desired.resets_at = Some(spend.resets_at.clone());
        }
        out.push(status::update(
            Kind::Budget,
            None,
            &name,
            b.status.as_ref(),
            &desired,
            prev,
            r,
        ));
    }

    simple_statuses(
        &mut out,
        Kind::ModelProvider,
        &world.providers,
        |p: &ModelProvider| p.status.as_ref(),
        &get,
        now,
    );
    simple_statuses(
        &mut out,
        Kind::ModelRoute,
        &world.routes,
        |p: &ModelRoute| p.status.as_ref(),
        &get,
        now,
    );
    simple_statuses(
        &mut out,
        Kind::McpServer,
        &world.mcp_servers,
        |p: &McpServer| p.status.as_ref(),
        &get,
        now,
    );
    simple_statuses(
        &mut out,
        Kind::AuditSink,
        &world.audit_sinks,
        |p: &AuditSink| p.status.as_ref(),
        &get,
        now,
    );

    out.sort_by(|a, b| (a.kind, &a.namespace, &a.name).cmp(&(b.kind, &b.namespace, &b.name)));
    out
}

fn simple_statuses<T: ResourceExt + Clone>(
    out: &mut Vec<StatusUpdate>,
    kind: Kind,
    items: &[T],
    current: impl Fn(&T) -> Option<&ResourceStatus>,
    get: &impl Fn(Kind, Option<String>, String) -> Readiness,
    now: jiff::Timestamp,
) {
    for item in sorted(items) {
        let name = item.name_any();
        let r = get(kind, None, name.clone());
        let cur = current(item);
        let prev = cur.map(|s| s.conditions.as_slice()).unwrap_or_default();
        let generation = item.meta().generation;
        let desired = ResourceStatus {
            observed_generation: generation,
            conditions: vec![ready_condition(prev, generation, now, &r)],
        };
        out.push(status::update(kind, None, &name, cur, &desired, prev, r));
    }
}
