//! Compilation of a validated document into an immutable [`Snapshot`]: the form the request
//! path reads. Key hashes become a hash map, patterns become globs, route targets point at
//! their providers, credentials are read from their files or variables, prices are merged.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::document::{
    AuditConfig, Budget, CaptureMode, CredentialSource, LimitsConfig, PolicyDocument, ProviderKind,
    RateLimits, RetryBudget, ScopeKind, Timeouts,
};
use super::glob::{AllowDeny, Glob};
use super::load::LoadedDocument;
use super::providers::compile_provider;
use super::validate::{ValidationErrors, validate};
use crate::pricing::PriceTable;
#[cfg(test)]
use crate::providers::{AnthropicApi, ProviderAuth};
use crate::providers::{ApiFormat, Wire};
use crate::secret::Secret;

/// A compiled virtual key.
#[derive(Debug)]
pub struct KeyEntry {
    /// Key id (safe to log).
    pub id: String,
    /// Owning engineer.
    pub user: Option<String>,
    /// Team id.
    pub team: Option<String>,
    /// Disabled keys are refused.
    pub enabled: bool,
    /// Expiry instant.
    pub expires_at: Option<jiff::Timestamp>,
    /// The key's own rate limits.
    pub rate_limits: Option<RateLimits>,
    /// The key's own audit content capture (the audit default applies when absent).
    pub capture: Option<CaptureMode>,
    models: AllowDeny,
    team_models: Option<AllowDeny>,
    /// MCP grants by server: the key's and its team's; a tool must pass every one.
    mcp: HashMap<String, Vec<AllowDeny>>,
    /// Built-in tool policies, the key's and its team's; a tool must pass every one.
    tools: Vec<AllowDeny>,
}

impl KeyEntry {
    /// Whether the key (and its team) may request `model`, served under that name.
    pub fn may_use(&self, model: &str) -> bool {
        self.may_use_routed(model, model)
    }

    /// Whether the key (and its team) may request `requested` when a route serves it as
    /// `served`: the rules judge both names (deny wins for either; an allow list must name
    /// one of them), so a denied model cannot be reached through an alias, and an allow list
    /// of aliases still serves them.
    pub fn may_use_routed(&self, requested: &str, served: &str) -> bool {
        let ok = |rules: &AllowDeny| rules.permits_either(requested, served);
        ok(&self.models) && self.team_models.as_ref().is_none_or(ok)
    }

    /// The key's allow patterns, for error messages.
    pub fn allowed_patterns(&self) -> Vec<&str> {
        self.models.allow_patterns().collect()
    }

    /// Whether the key or its team grants the MCP server at all (servers not granted are denied).
    pub fn mcp_granted(&self, server: &str) -> bool {
        self.mcp.contains_key(server)
    }

    /// Whether the key may see and call `tool` on the MCP server `server`: the server is
    /// granted, and every grant for it (the key's and the team's) permits the tool.
    pub fn may_call_mcp(&self, server: &str, tool: &str) -> bool {
        self.mcp
            .get(server)
            .is_some_and(|grants| grants.iter().all(|g| g.permits(tool)))
    }

    /// Whether a built-in agent tool (e.g. `Bash`) stays in this key's `/v1/messages` requests.
    pub fn keeps_tool(&self, name: &str) -> bool {
        self.tools.iter().all(|t| t.permits(name))
    }

    /// Whether every tool whose name starts with `prefix` stays (the tools of an MCP connector
    /// server, which the gateway cannot list): see [`AllowDeny::permits_every_name_with_prefix`].
    pub fn keeps_every_tool_with_prefix(&self, prefix: &str) -> bool {
        self.tools
            .iter()
            .all(|t| t.permits_every_name_with_prefix(prefix))
    }

    /// Whether a built-in tool policy applies to this key at all.
    pub fn has_tool_policy(&self) -> bool {
        !self.tools.is_empty()
    }
}

/// A compiled upstream MCP server.
#[derive(Debug)]
pub struct McpServerEntry {
    /// Server name; its tools are exposed as `<name>__<tool>`.
    pub name: String,
    /// Streamable HTTP endpoint URL.
    pub url: String,
    /// The Bearer credential sent upstream: none configured, the value, or why it could not
    /// be read (no secret in the reason).
    pub credential: Option<Result<Secret, String>>,
}

/// A compiled provider.
#[derive(Debug)]
pub struct ProviderEntry {
    /// Provider id.
    pub id: String,
    /// API kind.
    pub kind: ProviderKind,
    /// Cloud region (prices can depend on it).
    pub region: Option<String>,
    /// Its wire format, with its credentials.
    pub wire: Wire,
    /// How many requests may fall back from it.
    pub retry_budget: RetryBudget,
    /// Timeouts.
    pub timeouts: Timeouts,
}

impl ProviderEntry {
    /// What its prices are looked up by.
    pub fn pricing(&self) -> crate::pricing::ProviderPricing<'_> {
        crate::pricing::ProviderPricing {
            kind: self.kind,
            region: self.region.as_deref(),
        }
    }

    /// Why its credential cannot be used, when known before calling it.
    pub fn unusable(&self) -> Option<&str> {
        self.wire.unusable()
    }
}

/// A resolved forwarding target.
#[derive(Debug, Clone)]
pub struct Target {
    /// Where to send.
    pub provider: Arc<ProviderEntry>,
    /// The upstream model id, when it differs from the requested name.
    pub model: Option<String>,
    /// Tried by ascending priority (default: the target's position in the route).
    pub priority: u32,
    /// Share of the load among targets of equal priority (at least 1).
    pub weight: u32,
}

/// A budget with its time zone resolved.
#[derive(Debug)]
pub struct CompiledBudget {
    /// The budget as written.
    pub budget: Budget,
    /// Its time zone (UTC when absent).
    pub tz: jiff::tz::TimeZone,
}

#[derive(Debug)]
struct CompiledRoute {
    pattern: Glob,
    targets: Vec<Target>,
}

/// Why a document could not become a snapshot.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    /// The document failed validation.
    #[error("invalid policy: {0}")]
    Invalid(#[from] ValidationErrors),
}

/// An immutable, compiled policy. Requests hold an `Arc<Snapshot>` for their whole life.
#[derive(Debug)]
pub struct Snapshot {
    /// Revision id of the source bytes (hex SHA-256).
    pub revision: String,
    /// When this snapshot was compiled.
    pub loaded_at: jiff::Timestamp,
    /// Organization name.
    pub organization: Option<String>,
    /// The merged price table (file, then the document's overrides).
    pub prices: PriceTable,
    /// Enforcement settings.
    pub limits: LimitsConfig,
    /// Audit settings.
    pub audit: Option<AuditConfig>,
    keys: HashMap<[u8; 32], Arc<KeyEntry>>,
    routes: Vec<CompiledRoute>,
    providers: Vec<Arc<ProviderEntry>>,
    budgets: Vec<CompiledBudget>,
    team_rate_limits: HashMap<String, RateLimits>,
    mcp_servers: Vec<Arc<McpServerEntry>>,
    mcp_gateway: Option<Arc<ProviderEntry>>,
    /// Model names the policy knows: exact routes, route targets, priced models, names in
    /// model rules.
    known_models: HashSet<String>,
    /// The largest `max_tokens` accepted.
    output_ceiling: u64,
}

/// The metric label of a name the policy does not know (bounds label cardinality).
pub const OTHER_LABEL: &str = "other";

pub use crate::secret::{CredentialReader, SystemCredentials};

/// SHA-256 of a presented key, the form keys are indexed by.
pub fn hash_key(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

impl Snapshot {
    /// Validates and compiles a loaded document.
    pub fn compile(
        loaded: LoadedDocument,
        base_prices: &PriceTable,
        creds: &dyn CredentialReader,
    ) -> Result<Snapshot, CompileError> {
        let doc: PolicyDocument = loaded.document;
        validate(&doc)?;
        let mut prices = base_prices.clone();
        // Validation already parsed the overrides; an error here is impossible.
        if let Ok(overrides) = PriceTable::from_entries(&doc.prices) {
            prices.overlay(overrides);
        }
        let team_models: HashMap<&str, AllowDeny> = doc
            .teams
            .iter()
            .filter_map(|t| {
                t.models
                    .as_ref()
                    .map(|m| (t.id.as_str(), AllowDeny::new(&m.allow, &m.deny)))
            })
            .collect();
        let team_of = |k: &super::document::VirtualKey| {
            k.team
                .as_deref()
                .and_then(|t| doc.teams.iter().find(|team| team.id == t))
        };
        let keys = doc
            .keys
            .iter()
            .filter_map(|k| {
                let team = team_of(k);
                let mut mcp: HashMap<String, Vec<AllowDeny>> = HashMap::new();
                for g in k.mcp.iter().chain(team.iter().flat_map(|t| t.mcp.iter())) {
                    mcp.entry(g.server.clone())
                        .or_default()
                        .push(AllowDeny::new(&g.allow, &g.deny));
                }
                let tools = k
                    .tools
                    .iter()
                    .chain(team.and_then(|t| t.tools.as_ref()))
                    .map(|t| AllowDeny::new(&t.allow, &t.deny))
                    .collect();
                let hash: [u8; 32] = hex::decode(&k.sha256).ok()?.try_into().ok()?;
                let entry = KeyEntry {
                    id: k.id.clone(),
                    user: k.user.clone(),
                    team: k.team.clone(),
                    enabled: k.enabled,
                    expires_at: k.expires_at,
                    rate_limits: k.rate_limits.clone(),
                    capture: k.capture,
                    models: AllowDeny::new(&k.models.allow, &k.models.deny),
                    team_models: k.team.as_deref().and_then(|t| team_models.get(t)).cloned(),
                    mcp,
                    tools,
                };
                Some((hash, Arc::new(entry)))
            })
            .collect();
        let providers: Vec<Arc<ProviderEntry>> = doc
            .providers
            .iter()
            .map(|p| Arc::new(compile_provider(p, creds)))
            .collect();
        let routes = doc
            .routes
            .iter()
            .map(|r| CompiledRoute {
                pattern: Glob::new(&r.match_),
                targets: r
                    .targets
                    .iter()
                    .enumerate()
                    .filter_map(|(i, t)| {
                        let provider = providers.iter().find(|p| p.id == t.provider)?.clone();
                        Some(Target {
                            provider,
                            model: t.model.clone(),
                            priority: t.priority.unwrap_or(u32::try_from(i).unwrap_or(u32::MAX)),
                            weight: t.weight.unwrap_or(1).max(1),
                        })
                    })
                    .collect(),
            })
            .collect();
        let budgets = doc
            .budgets
            .iter()
            .map(|b| CompiledBudget {
                // Validation resolved every zone already.
                tz: crate::limits::window::time_zone(b.time_zone.as_deref())
                    .unwrap_or(jiff::tz::TimeZone::UTC),
                budget: b.clone(),
            })
            .collect();
        let mcp_servers = doc
            .mcp_servers
            .iter()
            .map(|m| {
                Arc::new(McpServerEntry {
                    name: m.name.clone(),
                    url: m.url.clone(),
                    credential: m.credential.as_ref().map(|c| read_credential(Some(c), creds)),
                })
            })
            .collect();
        let team_rate_limits = doc
            .teams
            .iter()
            .filter_map(|t| t.rate_limits.clone().map(|r| (t.id.clone(), r)))
            .collect();
        // Validation checked that it names a provider of kind tollgate.
        let mcp_gateway = doc
            .mcp_gateway
            .as_ref()
            .and_then(|id| providers.iter().find(|p| &p.id == id).cloned());
        // Exact names: routes, route targets, priced models, and model rules that name one
        // (a gateway-mode sidecar routes everything with `*`, yet its keys name aliases).
        let rule_names = doc
            .keys
            .iter()
            .map(|k| &k.models)
            .chain(doc.teams.iter().filter_map(|t| t.models.as_ref()))
            .flat_map(|m| m.allow.iter().chain(&m.deny))
            .filter(|p| Glob::new(p).is_literal())
            .cloned();
        let known_models = doc
            .routes
            .iter()
            .filter(|r| Glob::new(&r.match_).is_literal())
            .map(|r| r.match_.clone())
            .chain(
                doc.routes
                    .iter()
                    .flat_map(|r| r.targets.iter().filter_map(|t| t.model.clone())),
            )
            .chain(prices.model_names().map(str::to_owned))
            .chain(rule_names)
            .collect();
        let output_ceiling = prices
            .largest_output_limit()
            .unwrap_or(crate::limits::plan::DEFAULT_OUTPUT_CEILING);
        Ok(Snapshot {
            revision: loaded.revision,
            loaded_at: jiff::Timestamp::now(),
            organization: doc.organization.map(|o| o.name),
            prices,
            limits: doc.limits.unwrap_or_default(),
            audit: doc.audit,
            keys,
            routes,
            providers,
            budgets,
            team_rate_limits,
            mcp_servers,
            mcp_gateway,
            known_models,
            output_ceiling,
        })
    }

    /// Looks a presented key up by its SHA-256.
    pub fn key(&self, secret: &str) -> Option<&Arc<KeyEntry>> {
        self.keys.get(&hash_key(secret))
    }

    /// Number of keys.
    pub fn key_count(&self) -> usize {
        self.keys.len()
    }

    /// Every key, in no particular order.
    pub fn keys(&self) -> impl Iterator<Item = &Arc<KeyEntry>> + '_ {
        self.keys.values()
    }

    /// Providers, in document order.
    pub fn providers(&self) -> &[Arc<ProviderEntry>] {
        &self.providers
    }

    /// The targets of the first route matching `model`, in fallback order.
    pub fn route(&self, model: &str, format: ApiFormat) -> Option<&[Target]> {
        self.routes
            .iter()
            .find(|r| r.pattern.matches(model) && r.targets.iter().any(|t| speaks(t.provider.kind, format)))
            .map(|r| r.targets.as_slice())
    }

    /// The targets of the route serving `model` in `format` (the first route matching it with a
    /// target that speaks the format) that `key` may use and that speak it, in fallback order
    /// (see [`KeyEntry::may_use_routed`]); `None` when no route serves the model.
    ///
    /// An allow on the requested name counts for a target only when the route names that
    /// model exactly (an alias the platform team chose). Behind a glob route a client picks the
    /// requested name itself (`claude-haiku-x-opus` matching `*-opus`), so the model served
    /// must be allowed on its own.
    pub fn targets_for(&self, key: &KeyEntry, model: &str, format: ApiFormat) -> Option<Vec<Target>> {
        let route = self.routes.iter().find(|r| {
            r.pattern.matches(model) && r.targets.iter().any(|t| speaks(t.provider.kind, format))
        })?;
        let alias = route.pattern.is_literal();
        Some(
            route
                .targets
                .iter()
                .filter(|t| speaks(t.provider.kind, format))
                .filter(|t| {
                    let served = t.model.as_deref().unwrap_or(model);
                    if alias || served == model {
                        key.may_use_routed(model, served)
                    } else {
                        key.may_use_routed(model, served) && key.may_use_routed(served, served)
                    }
                })
                .cloned()
                .collect(),
        )
    }

    /// `model` as a metric label: itself when the policy knows it (an exact route, a route
    /// target, a priced model, a name in a model rule), else [`OTHER_LABEL`], so
    /// request-chosen names cannot grow the metrics without bound.
    pub fn model_label<'a>(&self, model: &'a str) -> &'a str {
        if self.known_models.contains(model) {
            model
        } else {
            OTHER_LABEL
        }
    }

    /// The largest `max_tokens` a request may ask for: the largest output limit of any model
    /// in the price table ([`crate::limits::plan::DEFAULT_OUTPUT_CEILING`] when it states none).
    pub fn output_ceiling(&self) -> u64 {
        self.output_ceiling
    }

    /// Every budget, in document order.
    pub fn budgets(&self) -> &[CompiledBudget] {
        &self.budgets
    }

    /// The budgets that apply to a request by `key`, widest scope first.
    pub fn budgets_for<'a>(&'a self, key: &'a KeyEntry) -> impl Iterator<Item = &'a CompiledBudget> + 'a {
        let mut order: Vec<&CompiledBudget> = self
            .budgets
            .iter()
            .filter(move |b| {
                let name = b.budget.scope.name.as_str();
                match b.budget.scope.kind {
                    ScopeKind::Organization => self.organization.as_deref() == Some(name),
                    ScopeKind::Team => key.team.as_deref() == Some(name),
                    ScopeKind::User => key.user.as_deref() == Some(name),
                    ScopeKind::Key => key.id == name,
                }
            })
            .collect();
        order.sort_by_key(|b| b.budget.scope.kind);
        order.into_iter()
    }

    /// Upstream MCP servers, in document order.
    pub fn mcp_servers(&self) -> &[Arc<McpServerEntry>] {
        &self.mcp_servers
    }

    /// An upstream MCP server by name.
    pub fn mcp_server(&self, name: &str) -> Option<&Arc<McpServerEntry>> {
        self.mcp_servers.iter().find(|m| m.name == name)
    }

    /// The gateway `/mcp` is relayed to (`mcp_gateway`, a provider of kind tollgate), if any.
    pub fn mcp_gateway(&self) -> Option<&Arc<ProviderEntry>> {
        self.mcp_gateway.as_ref()
    }

    /// A team's rate limits.
    pub fn team_rate_limits(&self, team: &str) -> Option<&RateLimits> {
        self.team_rate_limits.get(team)
    }

    /// Model names a key may request: exact route names, plus price-table models served by
    /// a glob route, filtered by the key's allowlist; sorted.
    pub fn models_for(&self, key: &KeyEntry, format: ApiFormat) -> Vec<String> {
        let mut names: Vec<String> = self
            .routes
            .iter()
            .filter(|r| r.pattern.is_literal())
            .map(|r| r.pattern.as_str().to_owned())
            .chain(
                self.prices
                    .model_names()
                    // Names a client asks for: not a provider's own id (`vertex_ai/…`,
                    // `bedrock/…`, Bedrock's `us.anthropic.…`), which only routes send.
                    .filter(|m| !m.contains('/') && !m.contains("anthropic."))
                    .filter(|m| self.route(m, format).is_some())
                    .map(str::to_owned),
            )
            .filter(|m| self.targets_for(key, m, format).is_some_and(|t| !t.is_empty()))
            .collect();
        names.sort();
        names.dedup();
        names
    }
}

/// Whether a provider of `kind` serves requests in `format`.
pub fn speaks(kind: ProviderKind, format: ApiFormat) -> bool {
    match format {
        ApiFormat::Anthropic => matches!(
            kind,
            ProviderKind::Anthropic
                | ProviderKind::Bedrock
                | ProviderKind::Vertex
                | ProviderKind::Foundry
                | ProviderKind::Tollgate
        ),
        ApiFormat::OpenAiResponses | ApiFormat::OpenAiChat => {
            matches!(kind, ProviderKind::Openai | ProviderKind::Tollgate)
        }
        ApiFormat::Gemini(_) => matches!(
            kind,
            ProviderKind::Gemini | ProviderKind::Vertex | ProviderKind::Tollgate
        ),
    }
}

/// Reads a credential; the error says where from, never what.
pub fn read_credential(
    src: Option<&CredentialSource>,
    creds: &dyn CredentialReader,
) -> Result<Secret, String> {
    let src = src.ok_or_else(|| "no credential configured".to_owned())?;
    let value = match (&src.file, &src.env) {
        (Some(path), _) => creds
            .file(path)
            .map_err(|e| format!("cannot read credential file {path}: {}", e.kind()))?,
        (None, Some(var)) => creds
            .env(var)
            .ok_or_else(|| format!("environment variable {var} is not set"))?,
        (None, None) => return Err("no credential configured".into()),
    };
    let secret = Secret::new(&value);
    if secret.expose().is_empty() {
        return Err("credential is empty".into());
    }
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::document::*;

    struct FakeCreds;
    impl CredentialReader for FakeCreds {
        fn env(&self, name: &str) -> Option<String> {
            (name == "UP_KEY").then(|| "sk-up\n".to_owned())
        }
        fn file(&self, path: &str) -> std::io::Result<String> {
            Err(std::io::Error::new(std::io::ErrorKind::NotFound, path.to_owned()))
        }
    }

    fn doc() -> PolicyDocument {
        let key = |id: &str, secret: &str, allow: &[&str]| VirtualKey {
            id: id.into(),
            sha256: hex::encode(hash_key(secret)),
            team: Some("t".into()),
            enabled: true,
            models: ModelAccess {
                allow: allow.iter().map(|s| s.to_string()).collect(),
                deny: vec![],
            },
            ..Default::default()
        };
        PolicyDocument {
            version: 1,
            teams: vec![Team {
                id: "t".into(),
                models: Some(ModelAccess {
                    allow: vec![],
                    deny: vec!["*opus*".into()],
                }),
                ..Default::default()
            }],
            keys: vec![key("k1", "vk-one", &[]), key("k2", "vk-two", &["gw-haiku"])],
            providers: vec![
                Provider {
                    id: "a".into(),
                    endpoint: "http://127.0.0.1:9/".into(),
                    credential: Some(CredentialSource {
                        env: Some("UP_KEY".into()),
                        file: None,
                    }),
                    ..Default::default()
                },
                Provider {
                    id: "b".into(),
                    endpoint: "http://127.0.0.1:10".into(),
                    credential: Some(CredentialSource {
                        file: Some("/nope".into()),
                        env: None,
                    }),
                    ..Default::default()
                },
            ],
            routes: vec![
                Route {
                    match_: "gw-haiku".into(),
                    targets: vec![RouteTarget {
                        provider: "b".into(),
                        model: Some("claude-haiku-4-5".into()),
                        ..Default::default()
                    }],
                },
                Route {
                    match_: "claude-*".into(),
                    targets: vec![RouteTarget {
                        provider: "a".into(),
                        model: None,
                        ..Default::default()
                    }],
                },
            ],
            ..Default::default()
        }
    }

    fn endpoint(p: &ProviderEntry) -> &str {
        match &p.wire {
            Wire::Anthropic(api) => &api.endpoint,
            other => panic!("not an Anthropic-format provider: {other:?}"),
        }
    }

    fn compile(d: PolicyDocument) -> Snapshot {
        let loaded = LoadedDocument {
            document: d,
            revision: "r".into(),
        };
        Snapshot::compile(loaded, &PriceTable::builtin(), &FakeCreds).unwrap()
    }

    #[test]
    fn key_lookup_by_hash() {
        let s = compile(doc());
        assert_eq!(s.key("vk-one").map(|k| k.id.as_str()), Some("k1"));
        assert_eq!(s.key("vk-two").map(|k| k.id.as_str()), Some("k2"));
        assert!(s.key("vk-three").is_none());
        assert!(s.key("").is_none());
        assert_eq!(s.key_count(), 2);
    }

    #[test]
    fn routes_first_match_wins_and_point_at_providers() {
        let s = compile(doc());
        let t = &s.route("gw-haiku", ApiFormat::Anthropic).unwrap()[0];
        assert_eq!(
            (t.provider.id.as_str(), t.model.as_deref()),
            ("b", Some("claude-haiku-4-5"))
        );
        let t = &s.route("claude-sonnet-4-5", ApiFormat::Anthropic).unwrap()[0];
        assert_eq!((t.provider.id.as_str(), t.model.as_deref()), ("a", None));
        assert!(s.route("gpt-5", ApiFormat::Anthropic).is_none());
        assert_eq!(endpoint(&s.providers()[0]), "http://127.0.0.1:9");
    }

    #[test]
    fn credentials_are_read_and_failures_explained_without_values() {
        let s = compile(doc());
        assert!(
            matches!(&s.providers()[0].wire, Wire::Anthropic(AnthropicApi { auth: ProviderAuth::Key(k), .. }) if k.expose() == "sk-up")
        );
        let Some(err) = s.providers()[1].unusable() else {
            panic!("{:?}", s.providers()[1].wire);
        };
        assert!(err.contains("/nope"), "{err}");
    }

    #[test]
    fn a_tollgate_provider_forwards_the_client_key_and_can_carry_mcp() {
        let mut d = doc();
        d.providers.push(Provider {
            id: "gw".into(),
            kind: ProviderKind::Tollgate,
            endpoint: "http://gateway:8080/".into(),
            ..Default::default()
        });
        let s = compile(d.clone());
        assert!(matches!(
            s.providers()[2].wire,
            Wire::Anthropic(AnthropicApi {
                auth: ProviderAuth::ForwardClientKey,
                ..
            })
        ));
        assert!(s.mcp_gateway().is_none());
        d.mcp_gateway = Some("gw".into());
        let s = compile(d);
        let gw = s.mcp_gateway().unwrap();
        assert_eq!((gw.id.as_str(), endpoint(gw)), ("gw", "http://gateway:8080"));
    }

    #[test]
    fn team_deny_applies_on_top_of_key_allow() {
        let s = compile(doc());
        let k1 = s.key("vk-one").unwrap();
        assert!(k1.may_use("claude-sonnet-4-5"));
        assert!(!k1.may_use("claude-opus-4-8"), "team denies opus");
        let k2 = s.key("vk-two").unwrap();
        assert!(k2.may_use("gw-haiku"));
        assert!(!k2.may_use("claude-sonnet-4-5"));
    }

    #[test]
    fn model_rules_judge_the_routed_model_too() {
        let mut d = doc();
        d.keys[0].models.deny = vec!["claude-haiku-*".into()];
        let s = compile(d);
        let k1 = s.key("vk-one").unwrap();
        assert!(k1.may_use("gw-haiku"), "the alias alone passes");
        assert_eq!(
            s.targets_for(k1, "gw-haiku", ApiFormat::Anthropic)
                .map(|t| t.len()),
            Some(0),
            "its model does not"
        );
        assert!(
            !s.models_for(k1, ApiFormat::Anthropic)
                .contains(&"gw-haiku".to_string())
        );
        assert_eq!(
            s.targets_for(k1, "claude-sonnet-4-5", ApiFormat::Anthropic)
                .map(|t| t.len()),
            Some(1)
        );
        assert!(
            s.targets_for(k1, "gpt-5", ApiFormat::Anthropic).is_none(),
            "no route"
        );
        // An allow list naming only the alias still serves it.
        let k2 = s.key("vk-two").unwrap();
        assert_eq!(
            s.targets_for(k2, "gw-haiku", ApiFormat::Anthropic)
                .map(|t| t.len()),
            Some(1)
        );
    }

    #[test]
    fn only_names_the_policy_knows_are_metric_labels_and_max_tokens_has_a_ceiling() {
        let s = compile(doc());
        for known in ["gw-haiku", "claude-haiku-4-5", "claude-opus-4-8"] {
            assert_eq!(s.model_label(known), known);
        }
        assert_eq!(s.model_label("claude-made-up-name"), OTHER_LABEL);
        assert_eq!(s.model_label("claude-*"), OTHER_LABEL, "a glob is not a name");
        assert_eq!(
            s.output_ceiling(),
            128_000,
            "the largest output limit in the table"
        );
    }

    #[test]
    fn models_for_lists_only_permitted_routed_models() {
        let s = compile(doc());
        let k2 = s.key("vk-two").unwrap();
        assert_eq!(
            s.models_for(k2, ApiFormat::Anthropic),
            vec!["gw-haiku".to_string()]
        );
        let k1 = s.key("vk-one").unwrap();
        let m = s.models_for(k1, ApiFormat::Anthropic);
        assert!(
            m.contains(&"gw-haiku".to_string()) && m.iter().any(|n| n.starts_with("claude-sonnet")),
            "{m:?}"
        );
        assert!(!m.iter().any(|n| n.contains("opus")), "{m:?}");
    }

    #[test]
    fn mcp_grants_inherit_from_the_team_and_deny_wins_at_every_level() {
        let mut d = doc();
        d.mcp_servers = ["fs", "db", "web"]
            .map(|n| McpServer {
                name: n.into(),
                url: "http://127.0.0.1:1/mcp".into(),
                credential: None,
            })
            .into();
        let grant = |server: &str, allow: &[&str], deny: &[&str]| McpGrant {
            server: server.into(),
            allow: allow.iter().map(|s| s.to_string()).collect(),
            deny: deny.iter().map(|s| s.to_string()).collect(),
        };
        d.teams[0].mcp = vec![
            grant("fs", &["read_*", "list_*"], &[]),
            grant("db", &[], &["drop_*"]),
        ];
        d.teams[0].tools = Some(PatternList {
            allow: vec![],
            deny: vec!["Bash".into()],
        });
        d.keys[0].mcp = vec![grant("db", &[], &["delete_*"])];
        d.keys[0].tools = Some(PatternList {
            allow: vec![],
            deny: vec!["Write".into(), "mcp__*__delete_*".into()],
        });
        let s = compile(d);
        let k = s.key("vk-one").unwrap();
        assert!(k.may_call_mcp("fs", "read_file"), "granted by the team");
        assert!(
            !k.may_call_mcp("fs", "write_file"),
            "outside the team's allow list"
        );
        assert!(k.may_call_mcp("db", "select"));
        assert!(!k.may_call_mcp("db", "delete_rows"), "the key's deny");
        assert!(!k.may_call_mcp("db", "drop_table"), "the team's deny");
        assert!(
            !k.mcp_granted("web") && !k.may_call_mcp("web", "fetch"),
            "default deny"
        );
        assert!(k.has_tool_policy());
        assert!(k.keeps_tool("Read"));
        assert!(!k.keeps_tool("Write") && !k.keeps_tool("Bash"));
        assert!(!k.keeps_tool("mcp__gw__delete_file"));
        assert_eq!(s.mcp_servers().len(), 3);
        assert!(s.mcp_server("db").is_some_and(|m| m.credential.is_none()));
        let k2 = s.key("vk-two").unwrap();
        assert!(k2.may_call_mcp("fs", "read_file") && !k2.may_call_mcp("db", "drop_x"));
        assert!(
            !k2.keeps_tool("Bash") && k2.keeps_tool("Write"),
            "team policy only"
        );
    }

    #[test]
    fn invalid_document_is_rejected() {
        let mut d = doc();
        d.keys[0].team = Some("ghost".into());
        let loaded = LoadedDocument {
            document: d,
            revision: "r".into(),
        };
        let err = Snapshot::compile(loaded, &PriceTable::builtin(), &FakeCreds).unwrap_err();
        assert!(err.to_string().contains("keys[0].team"), "{err}");
    }
}
