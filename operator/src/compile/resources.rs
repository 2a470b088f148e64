//! Per-kind compilation: each resource becomes its policy entry or a `Ready=False` reason.
//!
//! Kinds compile in dependency order (providers, routes, MCP servers, audit sinks, teams, keys,
//! budgets), each resource on its own: after the operator's own checks, its entry is judged by
//! the proxy's validation in a document holding only that entry and what it refers to (already
//! compiled), so a resource the proxy would refuse is left out with the proxy's message instead
//! of making the merged document invalid and freezing every policy update.

use std::collections::{BTreeMap, HashMap};

use kube::ResourceExt;
use tollgate_dataplane::policy::document::{self as doc, PolicyDocument};
use tollgate_dataplane::policy::validate::validate;

use super::status::{self, Kind, Readiness, StatusUpdate, ready_condition, usd};
use super::{Settings, World, tenancy};
use crate::crd::{
    self, AuditSink, Budget, BudgetStatus, CaptureMode, CredentialRef, McpServer, ModelProvider, ModelRoute,
    Period, ResourceStatus, ScopeKind, Team, TeamStatus, VirtualKey, VirtualKeyStatus,
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

fn patterns(p: &crd::PatternList) -> doc::PatternList {
    doc::PatternList {
        allow: p.allow.clone(),
        deny: p.deny.clone(),
    }
}

fn grants(g: &[crd::McpGrant]) -> Vec<doc::McpGrant> {
    g.iter()
        .map(|g| doc::McpGrant {
            server: g.server.clone(),
            allow: g.allow.clone(),
            deny: g.deny.clone(),
        })
        .collect()
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

/// `CredentialNotAllowed` when a credential names a Secret not labelled as one.
fn credentials_allowed<'c>(
    refs: impl IntoIterator<Item = &'c CredentialRef>,
    world: &World,
) -> Result<(), Readiness> {
    match refs
        .into_iter()
        .find_map(|c| credentials::refusal(c, &world.credential_secrets))
    {
        Some(why) => Err(Readiness::fail("CredentialNotAllowed", why)),
        None => Ok(()),
    }
}

/// Judges an entry by the proxy's own validation. `doc` holds the entry, at `at` (e.g.
/// `keys[0].`), and only what it refers to, already judged: any problem is the entry's own.
/// Field names are given as the resource spells them (`accessKeyId`, not `access_key_id`).
fn proxy_check(doc: PolicyDocument, at: &str) -> Result<(), Readiness> {
    let Err(errors) = validate(&doc) else {
        return Ok(());
    };
    let problems: Vec<String> = errors
        .0
        .iter()
        .map(|f| {
            format!(
                "{}: {}",
                camel_case(f.field.strip_prefix(at).unwrap_or(&f.field)),
                f.message
            )
        })
        .collect();
    Err(Readiness::fail("InvalidSpec", problems.join("; ")))
}

/// `access_key_id` -> `accessKeyId`, segment by segment of a field path.
fn camel_case(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut upper = false;
    for c in path.chars() {
        match c {
            '_' => upper = true,
            c if upper => {
                out.extend(c.to_uppercase());
                upper = false;
            }
            c => out.push(c),
        }
    }
    out
}

fn document() -> PolicyDocument {
    PolicyDocument {
        version: doc::POLICY_VERSION,
        ..Default::default()
    }
}

/// Why a resource named by another (`what`: "key", "route", ...) is not in the policy:
/// `<Kind>NotReady` when it exists (its own status says why), `<Kind>NotFound` when it does not.
fn missing(kind: Kind, name: &str, exists: bool, what: &str) -> Readiness {
    let reason = match (kind, exists) {
        (Kind::Team, true) => "TeamNotReady",
        (Kind::Team, false) => "TeamNotFound",
        (Kind::McpServer, true) => "McpServerNotReady",
        (Kind::McpServer, false) => "McpServerNotFound",
        (_, true) => "ProviderNotReady",
        (_, false) => "ProviderNotFound",
    };
    let state = if exists { "is not ready" } else { "does not exist" };
    Readiness::fail(
        reason,
        format!("{} {name:?} {state}; the {what} is left out", kind.as_str()),
    )
}

/// A compiled team as the context of another entry's check: its id is all that is referred to
/// (the team itself was judged already).
fn reference(t: &doc::Team) -> doc::Team {
    doc::Team {
        id: t.id.clone(),
        ..Default::default()
    }
}

/// One compilation pass: the document so far, and every resource's readiness.
struct Pass<'w> {
    world: &'w World,
    settings: &'w Settings,
    document: PolicyDocument,
    readiness: BTreeMap<ResourceId, Readiness>,
}

impl Pass<'_> {
    fn record(&mut self, kind: Kind, ns: Option<String>, name: String, r: Result<Readiness, Readiness>) {
        self.readiness
            .insert((kind, ns, name), r.unwrap_or_else(|fail| fail));
    }

    fn providers(&mut self) {
        for p in sorted(&self.world.providers) {
            let r = compile_provider(p, self.world, self.settings).map(|entry| {
                self.document.providers.push(entry);
                Readiness::ok("Compiled", "in the policy")
            });
            self.record(Kind::ModelProvider, None, p.name_any(), r);
        }
    }

    fn routes(&mut self) {
        let mut routes: Vec<&ModelRoute> = self.world.routes.iter().collect();
        routes.sort_by_key(|a| (a.spec.priority, a.name_any()));
        for r in routes {
            let res = compile_route(r, self.world, &self.document).map(|entry| {
                self.document.routes.push(entry);
                Readiness::ok("Compiled", "in the policy")
            });
            self.record(Kind::ModelRoute, None, r.name_any(), res);
        }
    }

    fn mcp_servers(&mut self) {
        for m in sorted(&self.world.mcp_servers) {
            let r = compile_mcp_server(m, self.world, self.settings).map(|entry| {
                self.document.mcp_servers.push(entry);
                Readiness::ok("Compiled", "in the policy")
            });
            self.record(Kind::McpServer, None, m.name_any(), r);
        }
    }

    fn audit_sinks(&mut self) {
        let mut sinks = Vec::new();
        for a in sorted(&self.world.audit_sinks) {
            let r = compile_audit_sink(a, self.world, self.settings).map(|entry| {
                sinks.push(entry);
                Readiness::ok("Compiled", "in the policy")
            });
            self.record(Kind::AuditSink, None, a.name_any(), r);
        }
        if !sinks.is_empty() || self.settings.audit_capture.is_some() {
            self.document.audit = Some(doc::AuditConfig {
                capture: self.settings.audit_capture.unwrap_or_default(),
                sinks,
                ..Default::default()
            });
        }
    }

    fn teams(&mut self) {
        for t in sorted(&self.world.teams) {
            let r = compile_team(t, self.world, &self.document).map(|entry| {
                self.document.teams.push(entry);
                Readiness::ok("Compiled", tenancy::team_message(t))
            });
            self.record(Kind::Team, None, t.name_any(), r);
        }
    }

    /// Keys whose id is in `refused` are left out with that readiness.
    fn keys(&mut self, refused: &BTreeMap<String, Readiness>) -> Vec<CompiledKey> {
        let mut keys = Vec::new();
        let mut by_hash: HashMap<String, String> = HashMap::new();
        let teams: HashMap<String, &Team> = self.world.teams.iter().map(|t| (t.name_any(), t)).collect();
        // The oldest key keeps a secret two keys share (a newcomer cannot take it over by
        // sorting first); ties by id.
        let mut by_age = sorted(&self.world.keys);
        by_age.sort_by_key(|k| k.metadata.creation_timestamp.as_ref().map(|t| t.0));
        for k in by_age {
            let (ns, name) = (k.namespace().unwrap_or_default(), k.name_any());
            let id = key_id(&ns, &name);
            let res = match refused.get(&id) {
                Some(r) => Err(r.clone()),
                None => {
                    let context = KeyContext {
                        world: self.world,
                        settings: self.settings,
                        compiled: &self.document,
                        teams: &teams,
                    };
                    compile_key(k, &id, &context, &mut by_hash)
                }
            };
            let res = res.map(|key| {
                let r = match &key.expires_at {
                    _ if !key.enabled => Readiness::ok("Disabled", "disabled: the proxy refuses it with 403"),
                    Some(t) if *t <= self.world.now => Readiness::ok(
                        "Expired",
                        format!("expired at {t}: the proxy refuses it with 403"),
                    ),
                    _ => Readiness::ok("Compiled", "in the policy"),
                };
                keys.push(CompiledKey { key });
                r
            });
            self.record(Kind::VirtualKey, Some(ns), name, res);
        }
        keys
    }

    fn budgets(&mut self, keys: &[CompiledKey]) {
        let by_id: BTreeMap<&str, &doc::VirtualKey> =
            keys.iter().map(|k| (k.key.id.as_str(), &k.key)).collect();
        for b in sorted(&self.world.budgets) {
            let r = compile_budget(b, self.settings, &self.document, &by_id).map(|entry| {
                self.document.budgets.push(entry);
                Readiness::ok("Compiled", "in the policy")
            });
            self.record(Kind::Budget, None, b.name_any(), r);
        }
    }
}

/// Compiles every resource; keys whose id is in `refused` are left out with that readiness
/// (the second pass after the policy turned out too large to shard).
pub(super) fn compile_resources(
    world: &World,
    settings: &Settings,
    refused: &BTreeMap<String, Readiness>,
) -> Output {
    let mut pass = Pass {
        world,
        settings,
        document: document(),
        readiness: BTreeMap::new(),
    };
    pass.providers();
    pass.routes();
    pass.mcp_servers();
    pass.audit_sinks();
    pass.teams();
    let keys = pass.keys(refused);
    pass.budgets(&keys);
    Output {
        document: pass.document,
        keys,
        readiness: pass.readiness,
    }
}

fn compile_provider(
    p: &ModelProvider,
    world: &World,
    settings: &Settings,
) -> Result<doc::Provider, Readiness> {
    let s = &p.spec;
    credentials_allowed(s.credential_refs(), world)?;
    let supported = || {
        let kinds: Vec<String> = tollgate_dataplane::policy::validate::SUPPORTED_PROVIDER_KINDS
            .iter()
            .filter(|k| **k != doc::ProviderKind::Tollgate)
            .filter_map(|k| serde_json::to_value(k).ok()?.as_str().map(str::to_owned))
            .collect();
        kinds.join(", ")
    };
    let Some(kind) = s.kind.document_kind() else {
        return Err(Readiness::fail(
            "UnsupportedKind",
            format!(
                "kind is not one tollgate-proxy implements (supported: {})",
                supported()
            ),
        ));
    };
    let mut timeouts = doc::Timeouts::default();
    if let Some(t) = &s.timeouts {
        timeouts.response_headers_ms = t.response_headers_ms.unwrap_or(timeouts.response_headers_ms);
        timeouts.stream_idle_ms = t.stream_idle_ms.unwrap_or(timeouts.stream_idle_ms);
    }
    let entry = doc::Provider {
        id: p.name_any(),
        kind,
        endpoint: s.endpoint.clone(),
        region: s.region.clone(),
        project: s.project.clone(),
        credential: s.credential.as_ref().map(|c| credential(c, settings)),
        aws: s.aws.as_ref().map(|a| aws_credentials(a, settings)),
        gcp: s.gcp.as_ref().map(|g| doc::GcpCredentials {
            service_account_key: Some(credential(&g.service_account_key, settings)),
        }),
        azure: s.azure.as_ref().map(|a| doc::AzureCredentials {
            tenant_id: a.tenant_id.clone(),
            client_id: a.client_id.clone(),
            client_secret: a.client_secret.as_ref().map(|c| credential(c, settings)),
            federated_token_file: a.federated_token_file.clone(),
            authority_host: a.authority_host.clone(),
        }),
        retry_budget: s.retry_budget.as_ref().map(|b| {
            let default = doc::RetryBudget::default();
            doc::RetryBudget {
                percent: b.percent.unwrap_or(default.percent),
                min_per_second: b.min_per_second.unwrap_or(default.min_per_second),
            }
        }),
        timeouts,
    };
    let check = proxy_check(
        PolicyDocument {
            providers: vec![entry.clone()],
            ..document()
        },
        "providers[0].",
    );
    match check {
        Err(r) if r.message.starts_with("kind:") => Err(Readiness::fail("UnsupportedKind", r.message)),
        other => other.map(|()| entry),
    }
}

fn aws_credentials(a: &crd::AwsCredentials, settings: &Settings) -> doc::AwsCredentials {
    let source = |c: &Option<CredentialRef>| c.as_ref().map(|c| credential(c, settings));
    doc::AwsCredentials {
        access_key_id: source(&a.access_key_id),
        secret_access_key: source(&a.secret_access_key),
        session_token: source(&a.session_token),
        web_identity: a.web_identity.as_ref().map(|w| doc::AwsWebIdentity {
            role_arn: w.role_arn.clone(),
            token_file: w.token_file.clone(),
            session_name: w.session_name.clone(),
            sts_endpoint: w.sts_endpoint.clone(),
        }),
        container: a.container.as_ref().map(|k| doc::AwsContainerCredentials {
            uri: k.uri.clone(),
            token_file: k.token_file.clone(),
        }),
    }
}

fn compile_route(r: &ModelRoute, world: &World, compiled: &PolicyDocument) -> Result<doc::Route, Readiness> {
    if r.spec.match_.is_empty() || r.spec.targets.is_empty() {
        return Err(Readiness::fail(
            "InvalidSpec",
            "match and at least one target are required",
        ));
    }
    let mut providers = Vec::new();
    for t in &r.spec.targets {
        match compiled.providers.iter().find(|p| p.id == t.provider) {
            // A provider may be a route's fallback to itself (another model of it).
            Some(p) if providers.iter().any(|q: &doc::Provider| q.id == p.id) => {}
            Some(p) => providers.push(p.clone()),
            None => {
                let exists = world.providers.iter().any(|p| p.name_any() == t.provider);
                return Err(missing(Kind::ModelProvider, &t.provider, exists, "route"));
            }
        }
    }
    let entry = doc::Route {
        match_: r.spec.match_.clone(),
        targets: r
            .spec
            .targets
            .iter()
            .map(|t| doc::RouteTarget {
                provider: t.provider.clone(),
                model: t.model.clone(),
                // The schema admits no negative value; one stored before reads as 0 (priority)
                // or is refused by the proxy's check (weight 0).
                priority: t.priority.map(|p| u32::try_from(p).unwrap_or(0)),
                weight: t.weight.map(|w| u32::try_from(w).unwrap_or(0)),
            })
            .collect(),
    };
    proxy_check(
        PolicyDocument {
            providers,
            routes: vec![entry.clone()],
            ..document()
        },
        "routes[0].",
    )?;
    Ok(entry)
}

fn compile_mcp_server(
    m: &McpServer,
    world: &World,
    settings: &Settings,
) -> Result<doc::McpServer, Readiness> {
    credentials_allowed(&m.spec.credential, world)?;
    let entry = doc::McpServer {
        name: m.name_any(),
        url: m.spec.url.clone(),
        credential: m.spec.credential.as_ref().map(|c| credential(c, settings)),
    };
    proxy_check(
        PolicyDocument {
            mcp_servers: vec![entry.clone()],
            ..document()
        },
        "mcp_servers[0].",
    )?;
    Ok(entry)
}

fn compile_audit_sink(
    a: &AuditSink,
    world: &World,
    settings: &Settings,
) -> Result<doc::AuditSink, Readiness> {
    let s = &a.spec;
    credentials_allowed(s.credential.iter().chain(&s.access_key_id), world)?;
    let (batch, retry) = (doc::AuditBatch::default(), doc::AuditRetry::default());
    let b = s.batch.clone().unwrap_or_default();
    let r = s.retry.clone().unwrap_or_default();
    let entry = doc::AuditSink {
        name: a.name_any(),
        kind: s.kind.as_str().to_owned(),
        endpoint: s.endpoint.clone(),
        credential: s.credential.as_ref().map(|c| credential(c, settings)),
        access_key_id: s.access_key_id.as_ref().map(|c| credential(c, settings)),
        index: s.index.clone(),
        bucket: s.bucket.clone(),
        region: s.region.clone(),
        prefix: s.prefix.clone(),
        source: s.source.clone(),
        batch: doc::AuditBatch {
            max_records: b.max_records.unwrap_or(batch.max_records),
            max_bytes: b.max_bytes.unwrap_or(batch.max_bytes),
            max_wait_ms: b.max_wait_ms.unwrap_or(batch.max_wait_ms),
        },
        retry: doc::AuditRetry {
            initial_backoff_ms: r.initial_backoff_ms.unwrap_or(retry.initial_backoff_ms),
            max_backoff_ms: r.max_backoff_ms.unwrap_or(retry.max_backoff_ms),
            timeout_ms: r.timeout_ms.unwrap_or(retry.timeout_ms),
        },
    };
    // The proxy's own checks, and the two it leaves to the CRD: a zero timeout or byte limit.
    proxy_check(
        PolicyDocument {
            audit: Some(doc::AuditConfig {
                sinks: vec![entry.clone()],
                ..Default::default()
            }),
            ..document()
        },
        "audit.sinks[0].",
    )?;
    if entry.retry.timeout_ms == 0 || entry.batch.max_bytes == 0 {
        return Err(Readiness::fail(
            "InvalidSpec",
            "retry.timeoutMs and batch.maxBytes must be greater than 0",
        ));
    }
    Ok(entry)
}

/// The compiled MCP servers `g` grants, or why one is missing (`what`: "key" or "team").
fn granted_servers(
    g: &[crd::McpGrant],
    world: &World,
    compiled: &PolicyDocument,
    what: &str,
) -> Result<Vec<doc::McpServer>, Readiness> {
    let mut servers: Vec<doc::McpServer> = Vec::new();
    for grant in g {
        if servers.iter().any(|s| s.name == grant.server) {
            return Err(Readiness::fail(
                "InvalidSpec",
                format!("McpServer {:?} is granted twice", grant.server),
            ));
        }
        match compiled.mcp_servers.iter().find(|s| s.name == grant.server) {
            Some(s) => servers.push(s.clone()),
            None => {
                let exists = world.mcp_servers.iter().any(|m| m.name_any() == grant.server);
                return Err(missing(Kind::McpServer, &grant.server, exists, what));
            }
        }
    }
    Ok(servers)
}

fn compile_team(t: &Team, world: &World, compiled: &PolicyDocument) -> Result<doc::Team, Readiness> {
    let s = &t.spec;
    if s.models
        .as_ref()
        .is_some_and(|m| empty_pattern(&[&m.allow, &m.deny]))
    {
        return Err(Readiness::fail(
            "InvalidSpec",
            "models: patterns must not be empty",
        ));
    }
    if let Some(problem) = tenancy::allowed_namespaces_problem(t) {
        return Err(Readiness::fail("InvalidSpec", problem));
    }
    let servers = granted_servers(&s.mcp, world, compiled, "team")?;
    let entry = doc::Team {
        id: t.name_any(),
        rate_limits: s.rate_limits.as_ref().map(rate_limits),
        models: s.models.as_ref().map(models),
        mcp: grants(&s.mcp),
        tools: s.tools.as_ref().map(patterns),
    };
    proxy_check(
        PolicyDocument {
            teams: vec![entry.clone()],
            mcp_servers: servers,
            ..document()
        },
        "teams[0].",
    )?;
    Ok(entry)
}

/// What a key is compiled against.
struct KeyContext<'a> {
    world: &'a World,
    settings: &'a Settings,
    /// The document so far: teams and MCP servers are compiled before keys.
    compiled: &'a PolicyDocument,
    /// Every Team by name, compiled or not.
    teams: &'a HashMap<String, &'a Team>,
}

fn compile_key(
    k: &VirtualKey,
    id: &str,
    cx: &KeyContext<'_>,
    by_hash: &mut HashMap<String, String>,
) -> Result<doc::VirtualKey, Readiness> {
    let (world, compiled) = (cx.world, cx.compiled);
    let s = &k.spec;
    let ns = k.namespace().unwrap_or_default();
    if let Some(bytes) = k.annotations().get(secrets::OVERSIZED_ANNOTATION) {
        return Err(Readiness::fail(
            "KeyTooLarge",
            format!(
                "the key's spec takes {bytes} bytes, over the {MAX_KEY_BYTES} a key may compile to; shrink its patterns or MCP grants"
            ),
        ));
    }
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
    let team = match &s.team {
        None => None,
        Some(name) => match compiled.teams.iter().find(|t| t.id == *name) {
            Some(entry) => Some(reference(entry)),
            None => return Err(missing(Kind::Team, name, cx.teams.contains_key(name), "key")),
        },
    };
    let team_resource = s.team.as_ref().and_then(|name| cx.teams.get(name).copied());
    tenancy::admit(team_resource, &ns, world, &cx.settings.teamless_keys)?;
    let servers = granted_servers(&s.mcp, world, compiled, "key")?;
    let sha256 = key_hash(k, &ns, world)?;
    if let Some(other) = by_hash.get(&sha256) {
        // Another namespace's key is not named: that would tell a tenant whose key it guessed.
        let same_namespace = other.split_once('/').is_some_and(|(other_ns, _)| other_ns == ns);
        let holder = if same_namespace {
            format!("VirtualKey {other}")
        } else {
            "an older VirtualKey".to_owned()
        };
        return Err(Readiness::fail(
            "DuplicateKey",
            format!("the same secret key is already used by {holder}; the key is left out"),
        ));
    }
    let entry = doc::VirtualKey {
        id: id.to_owned(),
        sha256: sha256.clone(),
        user: s.owner.clone(),
        team: s.team.clone(),
        enabled: s.enabled,
        expires_at,
        models: models(&s.models),
        rate_limits: s.rate_limits.as_ref().map(rate_limits),
        mcp: grants(&s.mcp),
        tools: s.tools.as_ref().map(patterns),
        capture: s.capture.map(capture),
    };
    let bytes = serde_json::to_vec(&entry).map_or(usize::MAX, |v| v.len());
    if bytes > MAX_KEY_BYTES {
        return Err(Readiness::fail(
            "KeyTooLarge",
            format!(
                "the key compiles to {bytes} bytes, over the {MAX_KEY_BYTES} a key may take in the policy; shrink its patterns or MCP grants"
            ),
        ));
    }
    proxy_check(
        PolicyDocument {
            teams: team.into_iter().collect(),
            mcp_servers: servers,
            keys: vec![entry.clone()],
            ..document()
        },
        "keys[0].",
    )?;
    by_hash.insert(sha256, id.to_owned());
    Ok(entry)
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
    compiled: &PolicyDocument,
    keys: &BTreeMap<&str, &doc::VirtualKey>,
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
            if !compiled.teams.iter().any(|t| t.id == scope.name) {
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
            if !keys.contains_key(id.as_str()) {
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
    let entry = doc::Budget {
        id: b.name_any(),
        scope: doc::BudgetScope { kind, name },
        limit_micro_usd: limit,
        period,
        time_zone: s.time_zone.clone(),
        thresholds,
    };
    // The subject, so the proxy's check that the scope names something passes on its own.
    let subject = &entry.scope.name;
    proxy_check(
        PolicyDocument {
            organization: (kind == doc::ScopeKind::Organization).then(|| doc::Organization {
                name: subject.clone(),
            }),
            teams: compiled
                .teams
                .iter()
                .filter(|t| kind == doc::ScopeKind::Team && t.id == *subject)
                .map(reference)
                .collect(),
            mcp_servers: Vec::new(),
            keys: keys
                .get(subject.as_str())
                .filter(|_| kind == doc::ScopeKind::Key)
                .map(|k| doc::VirtualKey {
                    team: None,
                    mcp: Vec::new(),
                    ..(*k).clone()
                })
                .into_iter()
                .collect(),
            budgets: vec![entry.clone()],
            ..document()
        },
        "budgets[0].",
    )?;
    Ok(entry)
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
            // The notifier's records, as they are: it writes them itself (with optimistic
            // concurrency), never through this status.
            notifications: b
                .status
                .as_ref()
                .map(|s| s.notifications.clone())
                .unwrap_or_default(),
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
