//! Table tests of the compiler: every invalid reference, determinism, sharding.

use std::collections::BTreeMap;

use kube::ResourceExt;
use kube::api::ObjectMeta;
use tollgate_dataplane::policy::document::{self as doc, PolicyDocument};

use super::*;
use crate::crd::*;
use crate::secrets::{generated_name, key_sha256};

fn meta(ns: Option<&str>, name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: ns.map(str::to_owned),
        uid: Some(format!("uid-{}-{name}", ns.unwrap_or("-"))),
        generation: Some(1),
        ..Default::default()
    }
}

/// A team admitting keys from every namespace.
fn team(name: &str) -> Team {
    Team {
        metadata: meta(None, name),
        spec: TeamSpec {
            allowed_namespaces: Some(AllowedNamespaces {
                from: NamespacesFrom::All,
                selector: None,
            }),
            ..Default::default()
        },
        status: None,
    }
}

fn key(ns: &str, name: &str, team: Option<&str>) -> VirtualKey {
    VirtualKey {
        metadata: meta(Some(ns), name),
        spec: VirtualKeySpec {
            team: team.map(str::to_owned),
            owner: Some(format!("{name}@acme.example")),
            enabled: true,
            ..Default::default()
        },
        status: None,
    }
}

fn provider(name: &str, kind: ProviderKind) -> ModelProvider {
    ModelProvider {
        metadata: meta(None, name),
        spec: ModelProviderSpec {
            kind,
            endpoint: "https://api.anthropic.com".into(),
            credential: Some(CredentialRef {
                secret_key_ref: Some(SecretKeyRef {
                    name: "anthropic".into(),
                    key: "api-key".into(),
                }),
                env: None,
            }),
            ..Default::default()
        },
        status: None,
    }
}

fn route(name: &str, m: &str, provider: &str, priority: i32) -> ModelRoute {
    ModelRoute {
        metadata: meta(None, name),
        spec: ModelRouteSpec {
            match_: m.into(),
            priority,
            targets: vec![RouteTarget {
                provider: provider.into(),
                model: None,
                ..Default::default()
            }],
        },
        status: None,
    }
}

fn budget(name: &str, kind: ScopeKind, subject: &str, ns: Option<&str>) -> Budget {
    Budget {
        metadata: meta(None, name),
        spec: BudgetSpec {
            scope: BudgetScope {
                kind,
                name: subject.into(),
                namespace: ns.map(str::to_owned),
            },
            limit_usd: Some("100".into()),
            period: Period::Monthly,
            ..Default::default()
        },
        status: None,
    }
}

fn mcp(name: &str, url: &str) -> McpServer {
    McpServer {
        metadata: meta(None, name),
        spec: McpServerSpec {
            url: url.into(),
            credential: None,
        },
        status: None,
    }
}

/// Adds the generated Secret of `k` to the world, as the operator would have created it.
fn with_secret(w: &mut World, k: &VirtualKey) {
    let ns = k.metadata.namespace.clone().unwrap();
    let name = k.metadata.name.clone().unwrap();
    w.secrets.insert(
        (ns.clone(), generated_name(&name)),
        SecretDigest {
            digests: BTreeMap::from([("key".to_owned(), Some(key_sha256(&format!("tg_{ns}_{name}"))))]),
            owner_uids: vec![k.metadata.uid.clone().unwrap()],
        },
    );
}

/// A valid world: one team, two keys, a provider, a route, a budget, an MCP server.
fn world() -> World {
    let mut w = World {
        now: "2026-11-15T12:00:00Z".parse().unwrap(),
        teams: vec![team("platform")],
        providers: vec![provider("anthropic", ProviderKind::Anthropic)],
        routes: vec![route("claude", "claude-*", "anthropic", 100)],
        budgets: vec![budget("platform-monthly", ScopeKind::Team, "platform", None)],
        mcp_servers: vec![mcp("github", "https://mcp.github.example/mcp")],
        credential_secrets: ["anthropic".to_owned()].into(),
        ..Default::default()
    };
    for k in [
        key("team-a", "alice", Some("platform")),
        key("team-b", "bob", None),
    ] {
        with_secret(&mut w, &k);
        w.keys.push(k);
    }
    w
}

fn bob_secret(w: &mut World) -> &mut SecretDigest {
    w.secrets
        .get_mut(&("team-b".to_owned(), generated_name("bob")))
        .unwrap()
}

/// The operator's settings, with teamless keys allowed (bob has no team); the default, deny,
/// has its own tests.
fn settings() -> Settings {
    Settings {
        organization: Some("acme".into()),
        teamless_keys: TeamlessKeys::Allow,
        ..Default::default()
    }
}

fn ready(c: &Compiled, kind: Kind, name: &str) -> (bool, String) {
    let s = c
        .statuses
        .iter()
        .find(|s| s.kind == kind && s.name == name)
        .unwrap_or_else(|| panic!("no status for {kind:?} {name}"));
    (s.readiness.ready, s.readiness.reason.to_owned())
}

/// Loads the ConfigMaps the way the proxy does: one file each in a directory.
fn load_as_proxy(c: &Compiled) -> PolicyDocument {
    let dir = tempfile::tempdir().unwrap();
    for cm in &c.config_maps {
        std::fs::write(dir.path().join(&cm.file), &cm.content).unwrap();
    }
    let loaded = tollgate_dataplane::policy::load::load(dir.path()).unwrap();
    tollgate_dataplane::policy::validate::validate(&loaded.document).unwrap();
    loaded.document
}

#[test]
fn a_valid_world_compiles_into_a_document_the_proxy_loads() {
    let c = compile(&world(), &settings()).unwrap();
    assert!(
        c.statuses.iter().all(|s| s.readiness.ready),
        "{:?}",
        c.not_ready()
    );
    let d = load_as_proxy(&c);
    assert_eq!(d.organization.unwrap().name, "acme");
    let ids: Vec<_> = d.keys.iter().map(|k| k.id.as_str()).collect();
    assert_eq!(ids, ["team-a/alice", "team-b/bob"]);
    assert_eq!(d.keys[0].sha256, key_sha256("tg_team-a_alice"));
    assert_eq!(
        d.providers[0].credential.as_ref().unwrap().file.as_deref(),
        Some("/var/run/tollgate/credentials/anthropic_api-key")
    );
    assert_eq!(d.budgets[0].limit_micro_usd, 100_000_000);
    assert_eq!(c.config_maps[0].name, "tollgate-policy");
    assert_eq!(c.config_maps[1].name, "tollgate-policy-keys-00");
    // No secret value anywhere in what is written.
    for cm in &c.config_maps {
        assert!(!cm.content.contains("tg_"), "{}", cm.content);
    }
}

#[test]
fn every_invalid_reference_is_a_ready_false_reason_and_the_rest_compiles() {
    type Mutation = fn(&mut World);
    let cases: Vec<(&str, Mutation, Kind, &str, &str)> = vec![
        (
            "key names a missing team",
            |w| w.keys[0].spec.team = Some("ghost".into()),
            Kind::VirtualKey,
            "alice",
            "TeamNotFound",
        ),
        (
            "key names an invalid team",
            |w| {
                w.teams[0].spec.models = Some(ModelAccess {
                    allow: vec![String::new()],
                    deny: vec![],
                });
            },
            Kind::VirtualKey,
            "alice",
            "TeamNotReady",
        ),
        (
            "key grants a missing MCP server",
            |w| {
                w.keys[1].spec.mcp = vec![McpGrant {
                    server: "ghost".into(),
                    ..Default::default()
                }];
            },
            Kind::VirtualKey,
            "bob",
            "McpServerNotFound",
        ),
        (
            "key's secretRef Secret is missing",
            |w| {
                w.keys[1].spec.secret_ref = Some(SecretKeyRef {
                    name: "nope".into(),
                    key: "key".into(),
                });
            },
            Kind::VirtualKey,
            "bob",
            "SecretNotFound",
        ),
        (
            "key's Secret lacks the data key",
            |w| {
                w.keys[1].spec.secret_ref = Some(SecretKeyRef {
                    name: generated_name("bob"),
                    key: "other".into(),
                });
            },
            Kind::VirtualKey,
            "bob",
            "SecretKeyMissing",
        ),
        (
            "key's Secret value is empty",
            |w| {
                bob_secret(w).digests.insert("key".into(), None);
            },
            Kind::VirtualKey,
            "bob",
            "SecretKeyInvalid",
        ),
        (
            "generated Secret not created yet",
            |w| {
                w.secrets.remove(&("team-b".to_owned(), generated_name("bob")));
            },
            Kind::VirtualKey,
            "bob",
            "SecretPending",
        ),
        (
            "generated Secret owned by someone else",
            |w| {
                bob_secret(w).owner_uids = vec!["intruder".into()];
            },
            Kind::VirtualKey,
            "bob",
            "SecretConflict",
        ),
        (
            "two keys share one secret",
            |w| {
                w.keys[1].spec.secret_ref = Some(SecretKeyRef {
                    name: generated_name("bob"),
                    key: "key".into(),
                });
                let alice = w.secrets[&("team-a".to_owned(), generated_name("alice"))].clone();
                w.secrets.insert(("team-b".into(), generated_name("bob")), alice);
            },
            Kind::VirtualKey,
            "bob",
            "DuplicateKey",
        ),
        (
            "bad expiresAt",
            |w| w.keys[1].spec.expires_at = Some("next tuesday".into()),
            Kind::VirtualKey,
            "bob",
            "InvalidSpec",
        ),
        (
            "empty model pattern",
            |w| w.keys[1].spec.models.deny = vec![String::new()],
            Kind::VirtualKey,
            "bob",
            "InvalidSpec",
        ),
        (
            "budget on a missing team",
            |w| w.budgets[0].spec.scope.name = "ghost".into(),
            Kind::Budget,
            "platform-monthly",
            "ScopeNotFound",
        ),
        (
            "budget on a missing key",
            |w| {
                w.budgets[0].spec.scope = BudgetScope {
                    kind: ScopeKind::Key,
                    name: "ghost".into(),
                    namespace: Some("team-a".into()),
                };
            },
            Kind::Budget,
            "platform-monthly",
            "ScopeNotFound",
        ),
        (
            "budget on a key left out",
            |w| {
                w.keys[0].spec.team = Some("ghost".into());
                w.budgets[0].spec.scope = BudgetScope {
                    kind: ScopeKind::Key,
                    name: "alice".into(),
                    namespace: Some("team-a".into()),
                };
            },
            Kind::Budget,
            "platform-monthly",
            "ScopeNotFound",
        ),
        (
            "budget on another organization",
            |w| {
                w.budgets[0].spec.scope = BudgetScope {
                    kind: ScopeKind::Organization,
                    name: "globex".into(),
                    namespace: None,
                };
            },
            Kind::Budget,
            "platform-monthly",
            "ScopeNotFound",
        ),
        (
            "budget with a bad time zone",
            |w| w.budgets[0].spec.time_zone = Some("Mars/Olympus".into()),
            Kind::Budget,
            "platform-monthly",
            "InvalidSpec",
        ),
        (
            "budget with a bad limit",
            |w| w.budgets[0].spec.limit_usd = Some("lots".into()),
            Kind::Budget,
            "platform-monthly",
            "InvalidSpec",
        ),
        (
            "budget with both limits",
            |w| w.budgets[0].spec.limit_micro_usd = Some(1),
            Kind::Budget,
            "platform-monthly",
            "InvalidSpec",
        ),
        (
            "rolling budget without seconds",
            |w| w.budgets[0].spec.period = Period::Rolling,
            Kind::Budget,
            "platform-monthly",
            "InvalidSpec",
        ),
        (
            "route to a missing provider",
            |w| w.routes[0].spec.targets[0].provider = "ghost".into(),
            Kind::ModelRoute,
            "claude",
            "ProviderNotFound",
        ),
        (
            "route to an unsupported provider",
            |w| w.providers[0].spec.kind = ProviderKind::Unsupported,
            Kind::ModelRoute,
            "claude",
            "ProviderNotReady",
        ),
        (
            "provider kind the proxy cannot speak",
            |w| w.providers[0].spec.kind = ProviderKind::Unsupported,
            Kind::ModelProvider,
            "anthropic",
            "UnsupportedKind",
        ),
        (
            "provider with a bad endpoint",
            |w| w.providers[0].spec.endpoint = "ftp://x".into(),
            Kind::ModelProvider,
            "anthropic",
            "InvalidSpec",
        ),
        (
            "MCP server with a bad URL",
            |w| w.mcp_servers[0].spec.url = "not a url".into(),
            Kind::McpServer,
            "github",
            "InvalidSpec",
        ),
    ];
    for (what, mutate, kind, name, reason) in cases {
        let mut w = world();
        mutate(&mut w);
        let c = compile(&w, &settings()).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(ready(&c, kind, name), (false, reason.to_owned()), "{what}");
        // The rest still compiles, and what is written loads in the proxy.
        let d = load_as_proxy(&c);
        let not_ready: usize = c.not_ready().values().sum();
        assert!(
            not_ready <= 3,
            "{what}: only the broken resource and its dependants are out: {:?}",
            c.not_ready()
        );
        assert!(!d.keys.is_empty(), "{what}");
    }
}

#[test]
fn organization_budget_needs_an_organization() {
    let mut w = world();
    w.budgets[0].spec.scope = BudgetScope {
        kind: ScopeKind::Organization,
        name: String::new(),
        namespace: None,
    };
    let c = compile(&w, &Settings::default()).unwrap();
    assert_eq!(
        ready(&c, Kind::Budget, "platform-monthly"),
        (false, "OrganizationNotConfigured".into())
    );
    let c = compile(&w, &settings()).unwrap();
    assert!(ready(&c, Kind::Budget, "platform-monthly").0);
    assert_eq!(c.document.budgets[0].scope.name, "acme");
}

#[test]
fn disabled_and_expired_keys_stay_in_the_policy_and_are_refused_by_the_proxy() {
    let mut w = world();
    w.keys[0].spec.enabled = false;
    w.keys[1].spec.expires_at = Some("2026-01-01T00:00:00Z".into());
    let c = compile(&w, &settings()).unwrap();
    assert_eq!(ready(&c, Kind::VirtualKey, "alice"), (true, "Disabled".into()));
    assert_eq!(ready(&c, Kind::VirtualKey, "bob"), (true, "Expired".into()));
    assert!(!c.document.keys[0].enabled);
}

#[test]
fn a_deleted_key_leaves_the_policy() {
    let mut w = world();
    w.keys.remove(0);
    let c = compile(&w, &settings()).unwrap();
    assert!(c.document.keys.iter().all(|k| k.id != "team-a/alice"));
}

/// A route falling back to another model of the same provider, around another provider.
#[test]
fn a_route_may_name_a_provider_twice() {
    let mut w = world();
    w.providers.push(provider("foundry", ProviderKind::Foundry));
    let mut r = route("opus", "gw-opus", "anthropic", 10);
    for (provider, model) in [("foundry", "claude-opus-4-8"), ("anthropic", "claude-opus-4-1")] {
        r.spec.targets.push(RouteTarget {
            provider: provider.into(),
            model: Some(model.into()),
            ..Default::default()
        });
    }
    w.routes.push(r);
    let c = compile(&w, &settings()).unwrap();
    assert_eq!(ready(&c, Kind::ModelRoute, "opus"), (true, "Compiled".into()));
    assert_eq!(c.document.routes[0].targets.len(), 3);
}

#[test]
fn routes_follow_priority_then_name() {
    let mut w = world();
    w.routes = vec![
        route("z-catch-all", "claude-*", "anthropic", 100),
        route("b-opus", "gw-opus", "anthropic", 10),
        route("a-sonnet", "gw-sonnet", "anthropic", 10),
    ];
    let c = compile(&w, &settings()).unwrap();
    let order: Vec<_> = c.document.routes.iter().map(|r| r.match_.as_str()).collect();
    assert_eq!(order, ["gw-sonnet", "gw-opus", "claude-*"]);
}

#[test]
fn output_is_deterministic_whatever_the_listing_order() {
    let w = world();
    let a = compile(&w, &settings()).unwrap();
    let mut shuffled = w.clone();
    shuffled.keys.reverse();
    shuffled.teams.reverse();
    let b = compile(&shuffled, &settings()).unwrap();
    assert_eq!(a.config_maps, b.config_maps);
    assert_eq!(a.statuses, b.statuses);
}

#[test]
fn an_unchanged_world_changes_no_status() {
    let mut w = world();
    let first = compile(&w, &settings()).unwrap();
    assert!(first.changed_statuses().count() > 0);
    // Write the statuses back, as the cluster would show them, an hour later.
    for s in &first.statuses {
        let v = s.status.clone();
        match s.kind {
            Kind::VirtualKey => {
                let k = w
                    .keys
                    .iter_mut()
                    .find(|k| k.metadata.name.as_deref() == Some(&s.name))
                    .unwrap();
                k.status = Some(serde_json::from_value(v).unwrap());
            }
            Kind::Team => w.teams[0].status = Some(serde_json::from_value(v).unwrap()),
            Kind::Budget => w.budgets[0].status = Some(serde_json::from_value(v).unwrap()),
            Kind::ModelProvider => w.providers[0].status = Some(serde_json::from_value(v).unwrap()),
            Kind::ModelRoute => w.routes[0].status = Some(serde_json::from_value(v).unwrap()),
            Kind::McpServer => w.mcp_servers[0].status = Some(serde_json::from_value(v).unwrap()),
            Kind::AuditSink => {}
        }
    }
    w.now = "2026-11-15T13:00:00Z".parse().unwrap();
    let second = compile(&w, &settings()).unwrap();
    assert_eq!(second.changed_statuses().count(), 0);
    assert_eq!(first.config_maps, second.config_maps);
}

#[test]
fn budget_status_shows_spend_from_the_ledger() {
    let mut w = world();
    w.spend.insert(
        "platform-monthly".into(),
        BudgetSpend {
            spent_micro_usd: 1_234,
            reserved_micro_usd: 1_000,
            limit_micro_usd: 100_000_000,
            window_start: "2026-11-01T00:00:00Z".into(),
            resets_at: "2026-12-01T00:00:00Z".into(),
        },
    );
    let c = compile(&w, &settings()).unwrap();
    let s = c.statuses.iter().find(|s| s.kind == Kind::Budget).unwrap();
    let st: BudgetStatus = serde_json::from_value(s.status.clone()).unwrap();
    assert_eq!(st.spent.as_deref(), Some("$0.001234"));
    assert_eq!(st.remaining_micro_usd, Some(99_997_766));
    assert_eq!(st.limit.as_deref(), Some("$100.00"));
    assert_eq!(st.resets_at.as_deref(), Some("2026-12-01T00:00:00Z"));
}

/// A world with `n` keys over 10 teams, each with a few model patterns (about 400 bytes a key).
pub(crate) fn big_world(n: usize) -> World {
    let mut w = world();
    w.keys.clear();
    w.secrets.clear();
    w.teams = (0..10).map(|i| team(&format!("team-{i}"))).collect();
    for i in 0..n {
        let mut k = key(
            &format!("ns-{}", i % 50),
            &format!("engineer-{i:05}"),
            Some(&format!("team-{}", i % 10)),
        );
        k.spec.models.allow = vec![
            "gw-haiku".into(),
            "gw-sonnet".into(),
            "claude-haiku-*".into(),
            "claude-sonnet-*".into(),
        ];
        k.spec.models.deny = vec!["*opus*".into()];
        k.spec.rate_limits = Some(RateLimits {
            requests_per_minute: Some(60),
            tokens_per_minute: Some(400_000),
            concurrent: Some(4),
        });
        with_secret(&mut w, &k);
        w.keys.push(k);
    }
    w.budgets.clear();
    w
}

#[test]
fn five_thousand_keys_shard_under_the_configmap_limit_and_load_in_the_proxy() {
    let w = big_world(5_000);
    let c = compile(&w, &settings()).unwrap();
    let shards = &c.config_maps[1..];
    assert!(shards.len() >= 2, "{} shards", shards.len());
    for cm in &c.config_maps {
        assert!(
            cm.content.len() <= 900 * 1024,
            "{} is {} bytes",
            cm.name,
            cm.content.len()
        );
    }
    let d = load_as_proxy(&c);
    assert_eq!(d.keys.len(), 5_000);
    assert!(c.statuses.iter().all(|s| s.readiness.ready));
}

#[test]
fn adding_one_key_rewrites_one_shard() {
    let mut w = big_world(3_000);
    let before = compile(&w, &settings()).unwrap();
    let k = key("ns-new", "newcomer", Some("team-1"));
    with_secret(&mut w, &k);
    w.keys.push(k);
    let after = compile(&w, &settings()).unwrap();
    assert_eq!(before.config_maps.len(), after.config_maps.len());
    let changed = before
        .config_maps
        .iter()
        .zip(&after.config_maps)
        .filter(|(a, b)| a != b)
        .count();
    assert_eq!(changed, 1);
}

#[test]
fn a_full_policy_leaves_out_the_largest_keys_with_a_reason_not_every_change() {
    let mut w = big_world(2_000);
    // A tenant pads its keys to crowd the others out.
    for k in w.keys.iter_mut().take(30) {
        k.spec.models.allow = (0..60).map(|i| format!("{i}-{}", "x".repeat(200))).collect();
    }
    let padded: Vec<String> = w.keys.iter().take(30).map(|k| k.name_any()).collect();
    let mut s = settings();
    s.limits = ShardLimits {
        target_bytes: 64 * 1024,
        max_bytes: 100 * 1024,
        max_shards: 4,
    };
    let c = compile(&w, &s).unwrap();
    assert!(c.config_maps.iter().all(|m| m.content.len() <= 100 * 1024));
    let full: Vec<&StatusUpdate> = c
        .statuses
        .iter()
        .filter(|st| st.readiness.reason == "PolicyFull")
        .collect();
    assert!(!full.is_empty(), "something had to give");
    assert!(full.iter().all(|st| !st.readiness.ready));
    // The padded keys go first: every padded key in an overflowing shard is out before any
    // ordinary key is.
    let dropped_ordinary = full.iter().filter(|st| !padded.contains(&st.name)).count();
    let kept_padded = c
        .document
        .keys
        .iter()
        .filter(|k| padded.iter().any(|p| k.id.ends_with(p)))
        .count();
    assert!(
        dropped_ordinary == 0 || kept_padded == 0,
        "{dropped_ordinary} ordinary dropped, {kept_padded} padded kept"
    );
    assert!(c.document.keys.len() + full.len() == 2_000);
    load_as_proxy(&c);
}

#[test]
fn an_oversized_key_is_refused_alone() {
    let mut w = world();
    w.mcp_servers = (0..32)
        .map(|i| mcp(&format!("s{i}"), "https://mcp.example/mcp"))
        .collect();
    w.keys[0].spec.mcp = (0..32)
        .map(|i| McpGrant {
            server: format!("s{i}"),
            allow: (0..64).map(|j| format!("{j}{}", "t".repeat(250))).collect(),
            deny: vec![],
        })
        .collect();
    let c = compile(&w, &settings()).unwrap();
    let (ready, reason) = ready(&c, Kind::VirtualKey, "alice");
    assert_eq!((ready, reason.as_str()), (false, "KeyTooLarge"));
    assert!(ready_is(&c, "bob"));
}

fn ready_is(c: &Compiled, key: &str) -> bool {
    ready(c, Kind::VirtualKey, key).0
}

/// Prints how long compiling 1,000 and 5,000 keys takes:
/// `cargo test -p tollgate-operator --release -- --ignored --nocapture compile_time`.
#[test]
#[ignore = "a measurement, not a check"]
fn compile_time() {
    println!(
        "{:>6} {:>8} {:>10} {:>12}",
        "keys", "shards", "bytes", "compile ms"
    );
    for n in [1_000, 5_000] {
        let w = big_world(n);
        let runs = 5;
        let start = std::time::Instant::now();
        let mut c = None;
        for _ in 0..runs {
            c = Some(compile(&w, &settings()).unwrap());
        }
        let ms = start.elapsed().as_secs_f64() * 1000.0 / f64::from(runs);
        let c = c.unwrap();
        let bytes: usize = c.config_maps.iter().map(|m| m.content.len()).sum();
        println!("{n:>6} {:>8} {bytes:>10} {ms:>12.1}", c.config_maps.len() - 1);
    }
}

/// A credential may only name a Secret labelled `tollgate.dev/credential=true`: anything else
/// in the release namespace (the webhook's CA key, the ledger password) is refused on the
/// resource's status, left out of the policy, and never among the keys to copy.
#[test]
fn credentials_must_name_labelled_secrets() {
    let mut w = world();
    let mut p = provider("sneaky", ProviderKind::Anthropic);
    if let Some(c) = p.spec.credential.as_mut() {
        c.secret_key_ref = Some(SecretKeyRef {
            name: "webhook-ca".into(),
            key: "tls.key".into(),
        });
    }
    w.providers.push(p);
    let sink = AuditSink {
        metadata: meta(None, "siem"),
        spec: AuditSinkSpec {
            kind: SinkKind::Webhook,
            endpoint: "https://siem.example".into(),
            credential: Some(CredentialRef {
                secret_key_ref: Some(SecretKeyRef {
                    name: "redis".into(),
                    key: "password".into(),
                }),
                env: None,
            }),
            ..Default::default()
        },
        status: None,
    };
    w.audit_sinks.push(sink);
    let c = compile(&w, &settings()).unwrap();
    for (kind, name) in [(Kind::ModelProvider, "sneaky"), (Kind::AuditSink, "siem")] {
        let s = c
            .statuses
            .iter()
            .find(|s| s.kind == kind && s.name == name)
            .unwrap();
        assert_eq!(
            (s.readiness.ready, s.readiness.reason),
            (false, "CredentialNotAllowed"),
            "{name}"
        );
        assert!(
            s.readiness.message.contains("tollgate.dev/credential=true"),
            "{}",
            s.readiness.message
        );
    }
    assert!(ready(&c, Kind::ModelProvider, "anthropic").0);
    assert!(c.document.providers.iter().all(|p| p.id != "sneaky"));
    let wanted = crate::credentials::referenced(&w);
    assert_eq!(
        wanted.into_iter().collect::<Vec<_>>(),
        [("anthropic".to_owned(), "api-key".to_owned())]
    );
    // Labelled, the same references compile.
    w.credential_secrets
        .extend(["webhook-ca".to_owned(), "redis".to_owned()]);
    let c = compile(&w, &settings()).unwrap();
    assert!(ready(&c, Kind::ModelProvider, "sneaky").0);
    assert!(ready(&c, Kind::AuditSink, "siem").0);
}

/// Gateway mode: agent namespaces get a policy that names only the gateway, with no credential,
/// budget, rate limit, MCP server or audit sink, and the same keys (hashes, allowlists) for the
/// sidecar's local checks; the release namespace keeps the full policy.
#[test]
fn gateway_mode_sidecars_get_a_credential_free_policy_naming_only_the_gateway() {
    let mut w = world();
    w.keys[0].spec.rate_limits = Some(RateLimits {
        requests_per_minute: Some(5),
        ..Default::default()
    });
    let mut s = settings();
    s.sidecar = SidecarMode::Gateway {
        url: "http://tollgate-gateway.tollgate-system.svc:8080/".into(),
    };
    let direct = compile(&w, &settings()).unwrap();
    let c = compile(&w, &s).unwrap();
    assert_eq!(
        c.config_maps, direct.config_maps,
        "the gateway's own policy is unchanged"
    );
    assert_eq!(
        c.config_maps_for("tollgate-system", "tollgate-system").unwrap(),
        c.config_maps
    );
    let team_a = c.config_maps_for("team-a", "tollgate-system").unwrap();
    assert_eq!(team_a[0].name, "tollgate-policy");
    let all: String = team_a.iter().map(|m| m.content.as_str()).collect();
    // Only the namespace's own keys: bob (team-b) is not in team-a's copy.
    assert!(
        all.contains("team-a/alice") && !all.contains("team-b/bob"),
        "{all}"
    );
    for absent in [
        "credentials",
        "api-key",
        "budgets",
        "rate_limits",
        "mcp.github",
        "audit",
    ] {
        assert!(!all.contains(absent), "{absent:?} in the sidecar policy:\n{all}");
    }
    let dir = tempfile::tempdir().unwrap();
    for cm in &team_a {
        std::fs::write(dir.path().join(&cm.file), &cm.content).unwrap();
    }
    let loaded = tollgate_dataplane::policy::load::load(dir.path()).unwrap();
    tollgate_dataplane::policy::validate::validate(&loaded.document).unwrap();
    let d = loaded.document;
    assert_eq!(d.providers.len(), 1);
    let gw = &d.providers[0];
    assert_eq!(
        gw.kind,
        tollgate_dataplane::policy::document::ProviderKind::Tollgate
    );
    assert_eq!(gw.endpoint, "http://tollgate-gateway.tollgate-system.svc:8080");
    assert!(gw.credential.is_none());
    assert_eq!(d.mcp_gateway.as_deref(), Some(sidecar::GATEWAY_PROVIDER));
    assert!(d.budgets.is_empty() && d.mcp_servers.is_empty() && d.audit.is_none());
    assert_eq!(
        d.routes.iter().map(|r| r.match_.as_str()).collect::<Vec<_>>(),
        direct
            .document
            .routes
            .iter()
            .map(|r| r.match_.as_str())
            .collect::<Vec<_>>()
    );
    assert!(
        d.routes
            .iter()
            .all(|r| r.targets.len() == 1 && r.targets[0].model.is_none())
    );
    // The same keys, by hash and allowlist, for the local checks.
    let hashes = |keys: &[tollgate_dataplane::policy::document::VirtualKey]| {
        keys.iter()
            .map(|k| (k.id.clone(), k.sha256.clone(), k.models.clone(), k.enabled))
            .collect::<Vec<_>>()
    };
    let alice: Vec<_> = direct
        .document
        .keys
        .iter()
        .filter(|k| k.id == "team-a/alice")
        .cloned()
        .collect();
    assert_eq!(hashes(&d.keys), hashes(&alice));
    assert!(d.keys.iter().all(|k| k.rate_limits.is_none() && k.mcp.is_empty()));
}

fn sink(name: &str, kind: SinkKind, endpoint: &str) -> AuditSink {
    AuditSink {
        metadata: meta(None, name),
        spec: AuditSinkSpec {
            kind,
            endpoint: endpoint.into(),
            ..Default::default()
        },
        status: None,
    }
}

fn env_credential(name: &str) -> Option<CredentialRef> {
    Some(CredentialRef {
        secret_key_ref: None,
        env: Some(name.into()),
    })
}

fn status_of<'c>(c: &'c Compiled, kind: Kind, name: &str) -> &'c StatusUpdate {
    c.statuses
        .iter()
        .find(|s| s.kind == kind && s.name == name)
        .unwrap_or_else(|| panic!("no status for {kind:?} {name}"))
}

/// One resource of each kind that the proxy's own validation refuses (audit sinks above all:
/// these used to pass the operator's checks and then make the merged document invalid, so no
/// policy update applied anywhere). The resource is left out with the proxy's message, and the
/// rest still compiles: a new key gets in, a revoked key stays in as disabled, and the merged
/// document passes the proxy's validation.
#[test]
fn a_resource_the_proxy_would_refuse_is_left_out_alone_and_every_other_change_applies() {
    type Mutation = fn(&mut World);
    let cases: Vec<(&str, Mutation, Kind, &str, &str, &str)> = vec![
        (
            "audit sink named with a dot",
            |w| {
                w.audit_sinks
                    .push(sink("siem.prod", SinkKind::Webhook, "https://siem.example"))
            },
            Kind::AuditSink,
            "siem.prod",
            "InvalidSpec",
            "name: use letters, digits",
        ),
        (
            "s3 sink without a bucket",
            |w| {
                let mut s = sink("archive", SinkKind::S3, "https://s3.eu-west-1.amazonaws.com");
                s.spec.credential = env_credential("S3_SECRET");
                s.spec.access_key_id = env_credential("S3_KEY_ID");
                w.audit_sinks.push(s);
            },
            Kind::AuditSink,
            "archive",
            "InvalidSpec",
            "bucket: an s3 sink needs a bucket",
        ),
        (
            "s3 sink without an access key id",
            |w| {
                let mut s = sink("archive", SinkKind::S3, "https://s3.eu-west-1.amazonaws.com");
                s.spec.credential = env_credential("S3_SECRET");
                s.spec.bucket = Some("audit".into());
                w.audit_sinks.push(s);
            },
            Kind::AuditSink,
            "archive",
            "InvalidSpec",
            "accessKeyId: an s3 sink needs an access key id",
        ),
        (
            "splunk sink without a credential",
            |w| {
                w.audit_sinks
                    .push(sink("splunk", SinkKind::Splunk, "https://splunk.example:8088"))
            },
            Kind::AuditSink,
            "splunk",
            "InvalidSpec",
            "credential: a splunk sink needs a credential",
        ),
        (
            "webhook sink whose endpoint is not a URL",
            |w| {
                w.audit_sinks
                    .push(sink("hook", SinkKind::Webhook, "siem.example/ingest"))
            },
            Kind::AuditSink,
            "hook",
            "InvalidSpec",
            "endpoint:",
        ),
        (
            "sink retrying with its longest backoff under its first",
            |w| {
                let mut s = sink("hook", SinkKind::Webhook, "https://siem.example");
                s.spec.retry = Some(AuditRetry {
                    max_backoff_ms: Some(100),
                    ..Default::default()
                });
                w.audit_sinks.push(s);
            },
            Kind::AuditSink,
            "hook",
            "InvalidSpec",
            "retry: need 0 < initial_backoff_ms <= max_backoff_ms",
        ),
        (
            "sink with a zero delivery timeout",
            |w| {
                let mut s = sink("hook", SinkKind::Webhook, "https://siem.example");
                s.spec.retry = Some(AuditRetry {
                    timeout_ms: Some(0),
                    ..Default::default()
                });
                w.audit_sinks.push(s);
            },
            Kind::AuditSink,
            "hook",
            "InvalidSpec",
            "timeoutMs",
        ),
        (
            "provider of a kind the proxy does not implement",
            |w| w.providers.push(provider("cohere", ProviderKind::Unsupported)),
            Kind::ModelProvider,
            "cohere",
            "UnsupportedKind",
            "supported: anthropic, bedrock, vertex, foundry, openai, gemini",
        ),
        (
            "provider with a zero timeout",
            |w| {
                let mut p = provider("slow", ProviderKind::Anthropic);
                p.spec.timeouts = Some(Timeouts {
                    response_headers_ms: Some(0),
                    stream_idle_ms: None,
                });
                w.providers.push(p);
            },
            Kind::ModelProvider,
            "slow",
            "InvalidSpec",
            "timeouts.responseHeadersMs: must be greater than 0",
        ),
        (
            "route with an empty target model",
            |w| {
                let mut r = route("broken", "gw-opus", "anthropic", 10);
                r.spec.targets[0].model = Some(String::new());
                w.routes.push(r);
            },
            Kind::ModelRoute,
            "broken",
            "InvalidSpec",
            "targets[0].model: must not be empty",
        ),
        (
            "MCP server named with a dot",
            |w| {
                w.mcp_servers
                    .push(mcp("jira.internal", "https://jira.example/mcp"))
            },
            Kind::McpServer,
            "jira.internal",
            "InvalidSpec",
            "name: use 1-48 characters",
        ),
        (
            "team with an empty tool pattern",
            |w| {
                let mut t = team("sandbox");
                t.spec.tools = Some(PatternList {
                    allow: vec![],
                    deny: vec![String::new()],
                });
                w.teams.push(t);
            },
            Kind::Team,
            "sandbox",
            "InvalidSpec",
            "tools.deny[0]: pattern must not be empty",
        ),
        (
            "team granting an empty MCP pattern",
            |w| {
                let mut t = team("sandbox");
                t.spec.mcp = vec![McpGrant {
                    server: "github".into(),
                    allow: vec![String::new()],
                    deny: vec![],
                }];
                w.teams.push(t);
            },
            Kind::Team,
            "sandbox",
            "InvalidSpec",
            "mcp[0].allow[0]: pattern must not be empty",
        ),
        (
            "team with a selector matching nothing",
            |w| {
                let mut t = team("sandbox");
                t.spec.allowed_namespaces = Some(AllowedNamespaces {
                    from: NamespacesFrom::Selector,
                    selector: None,
                });
                w.teams.push(t);
            },
            Kind::Team,
            "sandbox",
            "InvalidSpec",
            "selector is required",
        ),
        (
            "key granting an empty MCP pattern",
            |w| {
                let mut k = key("team-b", "mallory", None);
                k.spec.mcp = vec![McpGrant {
                    server: "github".into(),
                    allow: vec![],
                    deny: vec![String::new()],
                }];
                with_secret(w, &k);
                w.keys.push(k);
            },
            Kind::VirtualKey,
            "mallory",
            "InvalidSpec",
            "mcp[0].deny[0]: pattern must not be empty",
        ),
        (
            "budget in a time zone that does not exist",
            |w| {
                let mut b = budget("mars", ScopeKind::User, "bob@acme.example", None);
                b.spec.time_zone = Some("Mars/Olympus_Mons".into());
                w.budgets.push(b);
            },
            Kind::Budget,
            "mars",
            "InvalidSpec",
            "timeZone",
        ),
    ];
    for (what, mutate, kind, name, reason, message) in cases {
        let mut w = world();
        // A key revoked and a key added in the same change as the broken resource.
        w.keys[0].spec.enabled = false;
        let newcomer = key("team-a", "newcomer", Some("platform"));
        with_secret(&mut w, &newcomer);
        w.keys.push(newcomer);
        mutate(&mut w);

        let c = compile(&w, &settings()).unwrap_or_else(|e| panic!("{what}: the whole policy failed: {e}"));
        let s = status_of(&c, kind, name);
        assert_eq!(
            (s.readiness.ready, s.readiness.reason),
            (false, reason),
            "{what}: {}",
            s.readiness.message
        );
        assert!(
            s.readiness.message.contains(message),
            "{what}: {:?} lacks {message:?}",
            s.readiness.message
        );
        assert_eq!(
            ready(&c, Kind::VirtualKey, "newcomer"),
            (true, "Compiled".into()),
            "{what}"
        );
        assert_eq!(
            ready(&c, Kind::VirtualKey, "alice"),
            (true, "Disabled".into()),
            "{what}"
        );
        let alice = c.document.keys.iter().find(|k| k.id == "team-a/alice");
        assert!(alice.is_some_and(|k| !k.enabled), "{what}: the revocation is in");
        tollgate_dataplane::policy::validate::validate(&c.document)
            .unwrap_or_else(|e| panic!("{what}: the merged document is invalid: {e}"));
        let d = load_as_proxy(&c);
        assert!(d.keys.iter().any(|k| k.id == "team-a/newcomer"), "{what}");
        let not_ready: Vec<_> = c
            .statuses
            .iter()
            .filter(|s| !s.readiness.ready)
            .map(|s| &s.name)
            .collect();
        assert_eq!(not_ready, [name], "{what}: only the broken resource is out");
    }
}

fn admitting(name: &str, selector: &str) -> Team {
    let mut t = team(name);
    t.spec.allowed_namespaces = Some(AllowedNamespaces {
        from: NamespacesFrom::Selector,
        selector: Some(selector.parse().unwrap()),
    });
    t
}

/// A key in a namespace its team does not admit is left out with `NamespaceNotAllowed`, and so
/// is every budget on it; a team without `allowedNamespaces` admits no namespace.
#[test]
fn a_key_compiles_only_in_a_namespace_its_team_admits() {
    let mut w = world();
    w.teams = vec![admitting("platform", "tollgate.dev/team=platform")];
    w.namespaces.insert(
        "team-a".into(),
        BTreeMap::from([("tollgate.dev/team".to_owned(), "platform".to_owned())]),
    );
    // mallory, in team-b, names the platform team to use its grants and spend its budget.
    let mallory = key("team-b", "mallory", Some("platform"));
    with_secret(&mut w, &mallory);
    w.keys.push(mallory);
    w.budgets
        .push(budget("mallory-daily", ScopeKind::Key, "mallory", Some("team-b")));
    let c = compile(&w, &settings()).unwrap();
    assert_eq!(ready(&c, Kind::VirtualKey, "alice"), (true, "Compiled".into()));
    let s = status_of(&c, Kind::VirtualKey, "mallory");
    assert_eq!(
        (s.readiness.ready, s.readiness.reason),
        (false, "NamespaceNotAllowed")
    );
    assert!(
        s.readiness.message.contains("\"team-b\""),
        "{}",
        s.readiness.message
    );
    assert!(c.document.keys.iter().all(|k| k.id != "team-b/mallory"));
    assert_eq!(
        ready(&c, Kind::Budget, "mallory-daily"),
        (false, "ScopeNotFound".into())
    );
    assert_eq!(status_of(&c, Kind::Team, "platform").status["keys"], 1);

    // Labelling team-b into the team admits mallory.
    w.namespaces.insert(
        "team-b".into(),
        BTreeMap::from([("tollgate.dev/team".to_owned(), "platform".to_owned())]),
    );
    let c = compile(&w, &settings()).unwrap();
    assert!(ready(&c, Kind::VirtualKey, "mallory").0);

    // By name, with the label the API server sets on every namespace (even one not seen yet).
    w.namespaces.clear();
    w.teams = vec![admitting("platform", "kubernetes.io/metadata.name in (team-a)")];
    let c = compile(&w, &settings()).unwrap();
    assert!(ready(&c, Kind::VirtualKey, "alice").0);
    assert_eq!(
        ready(&c, Kind::VirtualKey, "mallory"),
        (false, "NamespaceNotAllowed".into())
    );

    // No allowedNamespaces: the team is in the policy, its keys are not, and both say why.
    w.teams[0].spec.allowed_namespaces = None;
    let c = compile(&w, &settings()).unwrap();
    let t = status_of(&c, Kind::Team, "platform");
    assert!(t.readiness.ready && t.readiness.message.contains("admits no namespace"));
    let s = status_of(&c, Kind::VirtualKey, "alice");
    assert_eq!(s.readiness.reason, "NamespaceNotAllowed");
    assert!(
        s.readiness.message.contains("admits no namespace"),
        "{}",
        s.readiness.message
    );
    load_as_proxy(&c);
}

/// A key without a team escapes every team limit: by default (`--teamless-keys=deny`) it is
/// left out; `allow` compiles it anywhere, a selector where namespace labels match.
#[test]
fn keys_without_a_team_are_denied_by_default_and_allowed_only_where_configured() {
    let mut w = world();
    let mut s = Settings {
        organization: Some("acme".into()),
        ..Settings::default()
    };
    assert_eq!(s.teamless_keys, TeamlessKeys::Deny);
    let c = compile(&w, &s).unwrap();
    let bob = status_of(&c, Kind::VirtualKey, "bob");
    assert_eq!(
        (bob.readiness.ready, bob.readiness.reason),
        (false, "NamespaceNotAllowed")
    );
    assert!(
        bob.readiness.message.contains("--teamless-keys=deny"),
        "{}",
        bob.readiness.message
    );
    assert!(c.document.keys.iter().all(|k| k.id != "team-b/bob"));
    assert!(
        ready(&c, Kind::VirtualKey, "alice").0,
        "keys with a team are unaffected"
    );

    s.teamless_keys = "tollgate.dev/sandbox=true".parse().unwrap();
    let c = compile(&w, &s).unwrap();
    assert_eq!(
        ready(&c, Kind::VirtualKey, "bob"),
        (false, "NamespaceNotAllowed".into())
    );
    w.namespaces.insert(
        "team-b".into(),
        BTreeMap::from([("tollgate.dev/sandbox".to_owned(), "true".to_owned())]),
    );
    let c = compile(&w, &s).unwrap();
    assert!(ready(&c, Kind::VirtualKey, "bob").0);

    s.teamless_keys = TeamlessKeys::Allow;
    w.namespaces.clear();
    let c = compile(&w, &s).unwrap();
    assert!(ready(&c, Kind::VirtualKey, "bob").0);
}

/// A team's MCP and built-in tool grants reach the policy's team entry, and the proxy applies
/// them with the key's own: a server granted by either is granted, a tool must pass both
/// (deny wins). The gateway-mode sidecar gets the team's tool policy but not its MCP grants.
#[test]
fn team_grants_compile_into_the_team_and_combine_with_the_keys_deny_winning() {
    use tollgate_dataplane::policy::snapshot::{Snapshot, SystemCredentials};
    let mut w = world();
    w.mcp_servers.push(mcp("jira", "https://jira.example/mcp"));
    w.teams[0].spec.mcp = vec![
        McpGrant {
            server: "github".into(),
            allow: vec!["read_*".into(), "list_*".into()],
            deny: vec![],
        },
        McpGrant {
            server: "jira".into(),
            allow: vec![],
            deny: vec!["delete_*".into()],
        },
    ];
    w.teams[0].spec.tools = Some(PatternList {
        allow: vec![],
        deny: vec!["Bash".into()],
    });
    w.keys[0].spec.mcp = vec![McpGrant {
        server: "github".into(),
        allow: vec![],
        deny: vec!["read_secrets".into()],
    }];
    w.keys[0].spec.tools = Some(PatternList {
        allow: vec![],
        deny: vec!["Write".into()],
    });
    let mut s = settings();
    s.sidecar = SidecarMode::Gateway {
        url: "http://tollgate-gateway.tollgate-system.svc:8080".into(),
    };
    let c = compile(&w, &s).unwrap();
    assert!(
        c.statuses.iter().all(|s| s.readiness.ready),
        "{:?}",
        c.not_ready()
    );
    let t = &c.document.teams[0];
    assert_eq!(t.mcp.len(), 2);
    assert_eq!(t.mcp[0].server, "github");
    assert_eq!(t.mcp[0].allow, ["read_*", "list_*"]);
    assert_eq!(t.tools.as_ref().unwrap().deny, ["Bash"]);

    // As the proxy compiles it.
    let dir = tempfile::tempdir().unwrap();
    for cm in &c.config_maps {
        std::fs::write(dir.path().join(&cm.file), &cm.content).unwrap();
    }
    let loaded = tollgate_dataplane::policy::load::load(dir.path()).unwrap();
    let prices = tollgate_dataplane::pricing::PriceTable::builtin();
    let snapshot = Snapshot::compile(loaded, &prices, &SystemCredentials).unwrap();
    let alice = snapshot.key("tg_team-a_alice").unwrap();
    assert!(alice.may_call_mcp("github", "read_file"));
    assert!(!alice.may_call_mcp("github", "read_secrets"), "the key's deny");
    assert!(
        !alice.may_call_mcp("github", "create_issue"),
        "outside the team's allow"
    );
    assert!(
        alice.may_call_mcp("jira", "create_issue"),
        "granted by the team alone"
    );
    assert!(!alice.may_call_mcp("jira", "delete_issue"), "the team's deny");
    assert!(!alice.keeps_tool("Bash") && !alice.keeps_tool("Write") && alice.keeps_tool("Read"));

    // The sidecar: tools yes (a local check), MCP grants no (the gateway's).
    let maps = c.config_maps_for("team-a", "tollgate-system").unwrap();
    let sidecar: PolicyDocument = serde_json::from_str(&maps[0].content).unwrap();
    assert_eq!(sidecar.teams[0].tools.as_ref().unwrap().deny, ["Bash"]);
    assert!(sidecar.teams[0].mcp.is_empty());
    assert!(!maps[0].content.contains("read_*"), "{}", maps[0].content);
}

/// A team granting an MCP server that is missing (or not ready) is left out, and so are its
/// keys: they must not run without the team's limits.
#[test]
fn a_team_granting_a_missing_mcp_server_is_left_out_with_its_keys() {
    let mut w = world();
    w.teams[0].spec.mcp = vec![McpGrant {
        server: "ghost".into(),
        ..Default::default()
    }];
    let c = compile(&w, &settings()).unwrap();
    assert_eq!(
        ready(&c, Kind::Team, "platform"),
        (false, "McpServerNotFound".into())
    );
    assert_eq!(
        ready(&c, Kind::VirtualKey, "alice"),
        (false, "TeamNotReady".into())
    );
    assert!(ready(&c, Kind::VirtualKey, "bob").0);
    w.teams[0].spec.mcp[0].server = "github".into();
    w.mcp_servers[0].spec.url = "not a url".into();
    let c = compile(&w, &settings()).unwrap();
    assert_eq!(
        ready(&c, Kind::Team, "platform"),
        (false, "McpServerNotReady".into())
    );
    load_as_proxy(&c);
}

/// Every field of the policy's audit sinks can be set on an AuditSink, and reaches the policy.
#[test]
fn audit_sinks_map_every_field_of_the_policy() {
    let mut w = world();
    let mut s3 = sink("archive", SinkKind::S3, "https://s3.eu-west-1.amazonaws.com");
    s3.spec.credential = Some(CredentialRef {
        secret_key_ref: Some(SecretKeyRef {
            name: "s3".into(),
            key: "secret-access-key".into(),
        }),
        env: None,
    });
    s3.spec.access_key_id = Some(CredentialRef {
        secret_key_ref: Some(SecretKeyRef {
            name: "s3".into(),
            key: "access-key-id".into(),
        }),
        env: None,
    });
    s3.spec.bucket = Some("acme-audit".into());
    s3.spec.region = Some("eu-west-1".into());
    s3.spec.prefix = Some("tollgate/".into());
    s3.spec.batch = Some(AuditBatch {
        max_records: Some(100),
        max_bytes: None,
        max_wait_ms: Some(250),
    });
    s3.spec.retry = Some(AuditRetry {
        initial_backoff_ms: Some(500),
        max_backoff_ms: Some(60_000),
        timeout_ms: None,
    });
    let mut splunk = sink("splunk", SinkKind::Splunk, "https://splunk.example:8088");
    splunk.spec.credential = env_credential("SPLUNK_HEC_TOKEN");
    splunk.spec.index = Some("security".into());
    splunk.spec.source = Some("tollgate:audit".into());
    w.audit_sinks = vec![s3, splunk];
    w.credential_secrets.insert("s3".into());
    let c = compile(&w, &settings()).unwrap();
    assert!(
        c.statuses.iter().all(|s| s.readiness.ready),
        "{:?}",
        c.not_ready()
    );
    let d = load_as_proxy(&c);
    let sinks = &d.audit.as_ref().unwrap().sinks;
    let a = &sinks[0];
    assert_eq!((a.name.as_str(), a.kind.as_str()), ("archive", "s3"));
    assert_eq!(a.bucket.as_deref(), Some("acme-audit"));
    assert_eq!(a.region.as_deref(), Some("eu-west-1"));
    assert_eq!(a.prefix.as_deref(), Some("tollgate/"));
    assert_eq!(
        a.access_key_id.as_ref().unwrap().file.as_deref(),
        Some("/var/run/tollgate/credentials/s3_access-key-id")
    );
    assert_eq!(
        a.credential.as_ref().unwrap().file.as_deref(),
        Some("/var/run/tollgate/credentials/s3_secret-access-key")
    );
    assert_eq!((a.batch.max_records, a.batch.max_wait_ms), (100, 250));
    assert_eq!(a.batch.max_bytes, 4 << 20, "unset: the proxy's default");
    assert_eq!(
        (
            a.retry.initial_backoff_ms,
            a.retry.max_backoff_ms,
            a.retry.timeout_ms
        ),
        (500, 60_000, 30_000)
    );
    let s = &sinks[1];
    assert_eq!(
        (s.index.as_deref(), s.source.as_deref()),
        (Some("security"), Some("tollgate:audit"))
    );
    // Both S3 keys are copied into the credentials Secret.
    let wanted = crate::credentials::referenced(&w);
    assert!(
        wanted.contains(&("s3".to_owned(), "access-key-id".to_owned())),
        "{wanted:?}"
    );
    assert!(wanted.contains(&("s3".to_owned(), "secret-access-key".to_owned())));
    // The access key id names a Secret like any credential: unlabelled, the sink is refused.
    w.credential_secrets.remove("s3");
    let c = compile(&w, &settings()).unwrap();
    assert_eq!(
        ready(&c, Kind::AuditSink, "archive"),
        (false, "CredentialNotAllowed".into())
    );
}

/// Two keys sharing one secret: the older keeps it (a newcomer whose namespace sorts first
/// cannot take it over), and the refused one is not told which other tenant's key it matched.
#[test]
fn a_shared_secret_stays_with_the_older_key_and_names_no_other_namespace() {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    let mut w = world();
    // bob (team-b) is older than alice (team-a), whose namespace sorts first.
    w.keys[0].metadata.creation_timestamp = Some(Time("2026-11-10T00:00:00Z".parse().unwrap()));
    w.keys[1].metadata.creation_timestamp = Some(Time("2026-11-01T00:00:00Z".parse().unwrap()));
    w.keys[0].spec.secret_ref = Some(SecretKeyRef {
        name: generated_name("alice"),
        key: "key".into(),
    });
    let bob = w.secrets[&("team-b".to_owned(), generated_name("bob"))].clone();
    w.secrets.insert(("team-a".into(), generated_name("alice")), bob);
    let c = compile(&w, &settings()).unwrap();
    assert!(
        ready(&c, Kind::VirtualKey, "bob").0,
        "the older key keeps its secret"
    );
    let alice = c.statuses.iter().find(|s| s.name == "alice").unwrap();
    assert_eq!(alice.readiness.reason, "DuplicateKey");
    assert!(
        !alice.readiness.message.contains("team-b"),
        "{}",
        alice.readiness.message
    );
}

/// A key the cache trimmed for its size is refused alone, by the size it had.
#[test]
fn a_key_trimmed_by_the_cache_for_its_size_is_refused_alone() {
    let mut w = world();
    w.keys[0].metadata.annotations = Some(BTreeMap::from([(
        crate::secrets::OVERSIZED_ANNOTATION.to_owned(),
        "1100000".to_owned(),
    )]));
    let c = compile(&w, &settings()).unwrap();
    assert_eq!(
        ready(&c, Kind::VirtualKey, "alice"),
        (false, "KeyTooLarge".to_owned())
    );
    assert!(ready(&c, Kind::VirtualKey, "bob").0);
}

fn secret_ref(name: &str, key: &str) -> CredentialRef {
    CredentialRef {
        secret_key_ref: Some(SecretKeyRef {
            name: name.into(),
            key: key.into(),
        }),
        env: None,
    }
}

/// A provider of a cloud kind without endpoint or credential: each test sets its own.
fn cloud_provider(name: &str, kind: ProviderKind, region: &str) -> ModelProvider {
    let mut p = provider(name, kind);
    p.spec.endpoint = String::new();
    p.spec.credential = None;
    p.spec.region = Some(region.into());
    p
}

/// Compiles `providers` into the valid world; the document's provider of each name.
fn compile_providers(providers: Vec<ModelProvider>, secrets: &[&str]) -> (Compiled, World) {
    let mut w = world();
    w.providers.extend(providers);
    w.credential_secrets
        .extend(secrets.iter().map(|s| (*s).to_owned()));
    let c = compile(&w, &settings()).unwrap();
    (c, w)
}

fn compiled_provider<'c>(c: &'c Compiled, id: &str) -> &'c tollgate_dataplane::policy::document::Provider {
    c.document
        .providers
        .iter()
        .find(|p| p.id == id)
        .unwrap_or_else(|| panic!("{id} not compiled: {:?}", ready(c, Kind::ModelProvider, id)))
}

fn file(path: &str) -> Option<doc::CredentialSource> {
    Some(doc::CredentialSource {
        file: Some(format!("/var/run/tollgate/credentials/{path}")),
        env: None,
    })
}

#[test]
fn a_bedrock_provider_with_static_keys_compiles_and_its_keys_are_copied() {
    let mut p = cloud_provider("bedrock", ProviderKind::Bedrock, "us-east-1");
    p.spec.aws = Some(AwsCredentials {
        access_key_id: Some(secret_ref("aws-keys", "access-key-id")),
        secret_access_key: Some(secret_ref("aws-keys", "secret-access-key")),
        session_token: Some(secret_ref("aws-keys", "session-token")),
        ..Default::default()
    });
    p.spec.retry_budget = Some(RetryBudget {
        percent: Some(10),
        min_per_second: None,
    });
    let (c, w) = compile_providers(vec![p], &["aws-keys"]);
    assert_eq!(
        *compiled_provider(&c, "bedrock"),
        doc::Provider {
            id: "bedrock".into(),
            kind: doc::ProviderKind::Bedrock,
            endpoint: String::new(),
            region: Some("us-east-1".into()),
            aws: Some(doc::AwsCredentials {
                access_key_id: file("aws-keys_access-key-id"),
                secret_access_key: file("aws-keys_secret-access-key"),
                session_token: file("aws-keys_session-token"),
                ..Default::default()
            }),
            retry_budget: Some(doc::RetryBudget {
                percent: 10,
                min_per_second: 5,
            }),
            ..Default::default()
        }
    );
    let wanted: Vec<_> = crate::credentials::referenced(&w).into_iter().collect();
    let pair = |s: &str, k: &str| (s.to_owned(), k.to_owned());
    assert_eq!(
        wanted,
        [
            pair("anthropic", "api-key"),
            pair("aws-keys", "access-key-id"),
            pair("aws-keys", "secret-access-key"),
            pair("aws-keys", "session-token"),
        ]
    );
    load_as_proxy(&c);
}

#[test]
fn a_bedrock_provider_with_irsa_compiles_with_no_secret() {
    let mut p = cloud_provider("bedrock-irsa", ProviderKind::Bedrock, "eu-west-1");
    p.spec.aws = Some(AwsCredentials {
        web_identity: Some(AwsWebIdentity {
            role_arn: "arn:aws:iam::123456789012:role/tollgate".into(),
            token_file: "/var/run/secrets/eks.amazonaws.com/serviceaccount/token".into(),
            session_name: Some("tollgate-gateway".into()),
            sts_endpoint: Some("https://sts.eu-west-1.amazonaws.com".into()),
        }),
        ..Default::default()
    });
    let (c, w) = compile_providers(vec![p], &[]);
    assert_eq!(
        compiled_provider(&c, "bedrock-irsa").aws,
        Some(doc::AwsCredentials {
            web_identity: Some(doc::AwsWebIdentity {
                role_arn: "arn:aws:iam::123456789012:role/tollgate".into(),
                token_file: "/var/run/secrets/eks.amazonaws.com/serviceaccount/token".into(),
                session_name: Some("tollgate-gateway".into()),
                sts_endpoint: Some("https://sts.eu-west-1.amazonaws.com".into()),
            }),
            ..Default::default()
        })
    );
    assert_eq!(
        crate::credentials::referenced(&w).len(),
        1,
        "only anthropic's key"
    );
    load_as_proxy(&c);
}

#[test]
fn a_vertex_provider_with_a_service_account_key_compiles() {
    let mut p = cloud_provider("vertex", ProviderKind::Vertex, "global");
    p.spec.project = Some("acme-ai".into());
    p.spec.gcp = Some(GcpCredentials {
        service_account_key: secret_ref("vertex-sa", "key.json"),
    });
    p.spec.timeouts = Some(Timeouts {
        response_headers_ms: Some(120_000),
        stream_idle_ms: None,
    });
    let (c, w) = compile_providers(vec![p], &["vertex-sa"]);
    assert_eq!(
        *compiled_provider(&c, "vertex"),
        doc::Provider {
            id: "vertex".into(),
            kind: doc::ProviderKind::Vertex,
            region: Some("global".into()),
            project: Some("acme-ai".into()),
            gcp: Some(doc::GcpCredentials {
                service_account_key: file("vertex-sa_key.json"),
            }),
            timeouts: doc::Timeouts {
                response_headers_ms: 120_000,
                ..Default::default()
            },
            ..Default::default()
        }
    );
    assert!(crate::credentials::referenced(&w).contains(&("vertex-sa".to_owned(), "key.json".to_owned())));
    load_as_proxy(&c);
}

#[test]
fn a_foundry_provider_with_entra_workload_identity_compiles() {
    let mut p = provider("foundry", ProviderKind::Foundry);
    p.spec.endpoint = "https://acme.services.ai.azure.com/anthropic".into();
    p.spec.credential = None;
    p.spec.azure = Some(AzureCredentials {
        tenant_id: Some("00000000-0000-0000-0000-000000000001".into()),
        client_id: Some("00000000-0000-0000-0000-000000000002".into()),
        federated_token_file: Some("/var/run/secrets/azure/tokens/azure-identity-token".into()),
        ..Default::default()
    });
    let (c, _) = compile_providers(vec![p], &[]);
    assert_eq!(
        *compiled_provider(&c, "foundry"),
        doc::Provider {
            id: "foundry".into(),
            kind: doc::ProviderKind::Foundry,
            endpoint: "https://acme.services.ai.azure.com/anthropic".into(),
            azure: Some(doc::AzureCredentials {
                tenant_id: Some("00000000-0000-0000-0000-000000000001".into()),
                client_id: Some("00000000-0000-0000-0000-000000000002".into()),
                federated_token_file: Some("/var/run/secrets/azure/tokens/azure-identity-token".into()),
                ..Default::default()
            }),
            ..Default::default()
        }
    );
    load_as_proxy(&c);
}

#[test]
fn cloud_credential_secrets_must_be_labelled_too() {
    let mut bedrock = cloud_provider("bedrock", ProviderKind::Bedrock, "us-east-1");
    bedrock.spec.aws = Some(AwsCredentials {
        access_key_id: Some(secret_ref("aws-keys", "id")),
        secret_access_key: Some(secret_ref("webhook-ca", "tls.key")),
        ..Default::default()
    });
    let mut vertex = cloud_provider("vertex", ProviderKind::Vertex, "us-east5");
    vertex.spec.project = Some("acme-ai".into());
    vertex.spec.gcp = Some(GcpCredentials {
        service_account_key: secret_ref("redis", "password"),
    });
    let mut foundry = provider("foundry", ProviderKind::Foundry);
    foundry.spec.credential = None;
    foundry.spec.azure = Some(AzureCredentials {
        client_secret: Some(secret_ref("webhook-ca", "tls.key")),
        ..Default::default()
    });
    let (c, w) = compile_providers(vec![bedrock, vertex, foundry], &["aws-keys"]);
    for name in ["bedrock", "vertex", "foundry"] {
        assert_eq!(
            ready(&c, Kind::ModelProvider, name),
            (false, "CredentialNotAllowed".to_owned()),
            "{name}"
        );
    }
    // Unlabelled Secrets are never copied.
    let wanted: Vec<_> = crate::credentials::referenced(&w).into_iter().collect();
    assert_eq!(
        wanted,
        [
            ("anthropic".to_owned(), "api-key".to_owned()),
            ("aws-keys".to_owned(), "id".to_owned())
        ]
    );
}

#[test]
fn invalid_cloud_providers_are_reported_on_their_status() {
    type Edit = fn(&mut ModelProvider);
    let cases: [(&str, ProviderKind, Edit, &str); 6] = [
        (
            "bedrock without region",
            ProviderKind::Bedrock,
            |p| p.spec.region = None,
            "region: a bedrock provider needs a region",
        ),
        (
            "vertex without project",
            ProviderKind::Vertex,
            |_| {},
            "project: a vertex provider needs a project",
        ),
        (
            "aws on vertex",
            ProviderKind::Vertex,
            |p| {
                p.spec.project = Some("acme-ai".into());
                p.spec.aws = Some(AwsCredentials {
                    container: Some(AwsContainerCredentials {
                        uri: "http://169.254.170.23/v1/credentials".into(),
                        token_file: None,
                    }),
                    ..Default::default()
                });
            },
            "aws: only a bedrock provider takes aws",
        ),
        (
            "two aws forms",
            ProviderKind::Bedrock,
            |p| {
                p.spec.aws = Some(AwsCredentials {
                    access_key_id: Some(secret_ref("aws-keys", "id")),
                    secret_access_key: Some(secret_ref("aws-keys", "secret")),
                    container: Some(AwsContainerCredentials {
                        uri: "http://169.254.170.23/v1/credentials".into(),
                        token_file: None,
                    }),
                    ..Default::default()
                })
            },
            "aws: set only one of static keys, web_identity or container",
        ),
        (
            "half a key pair",
            ProviderKind::Bedrock,
            |p| {
                p.spec.aws = Some(AwsCredentials {
                    access_key_id: Some(secret_ref("aws-keys", "id")),
                    ..Default::default()
                })
            },
            "aws: access_key_id and secret_access_key go together",
        ),
        (
            "credential and aws",
            ProviderKind::Bedrock,
            |p| {
                p.spec.credential = Some(secret_ref("aws-keys", "api-key"));
                p.spec.aws = Some(AwsCredentials {
                    container: Some(AwsContainerCredentials {
                        uri: "http://169.254.170.23/v1/credentials".into(),
                        token_file: None,
                    }),
                    ..Default::default()
                });
            },
            "aws: set either credential or aws, not both",
        ),
    ];
    for (what, kind, edit, message) in cases {
        let mut p = cloud_provider("cloud", kind, "us-east5");
        edit(&mut p);
        let (c, _) = compile_providers(vec![p], &["aws-keys"]);
        let s = status_of(&c, Kind::ModelProvider, "cloud");
        assert_eq!(
            (s.readiness.ready, s.readiness.reason),
            (false, "InvalidSpec"),
            "{what}: {}",
            s.readiness.message
        );
        assert!(
            s.readiness.message.contains(message),
            "{what}: {}",
            s.readiness.message
        );
        assert!(c.document.providers.iter().all(|p| p.id != "cloud"), "{what}");
        // The rest still compiles.
        assert!(ready(&c, Kind::ModelProvider, "anthropic").0, "{what}");
    }
}

#[test]
fn route_targets_carry_priority_and_weight() {
    let mut w = world();
    w.providers.push(provider("foundry", ProviderKind::Foundry));
    let mut r = route("weighted", "claude-sonnet-*", "anthropic", 10);
    r.spec.targets = vec![
        RouteTarget {
            provider: "anthropic".into(),
            model: Some("claude-sonnet-4-6".into()),
            priority: Some(0),
            weight: Some(3),
        },
        RouteTarget {
            provider: "foundry".into(),
            model: Some("claude-sonnet-4-6".into()),
            priority: Some(0),
            weight: Some(1),
        },
        RouteTarget {
            provider: "anthropic".into(),
            model: Some("claude-sonnet-4-5".into()),
            priority: Some(1),
            weight: None,
        },
    ];
    w.routes.push(r);
    let c = compile(&w, &settings()).unwrap();
    let compiled = c
        .document
        .routes
        .iter()
        .find(|r| r.match_ == "claude-sonnet-*")
        .unwrap();
    let got: Vec<_> = compiled
        .targets
        .iter()
        .map(|t| (t.provider.as_str(), t.priority, t.weight))
        .collect();
    assert_eq!(
        got,
        [
            ("anthropic", Some(0), Some(3)),
            ("foundry", Some(0), Some(1)),
            ("anthropic", Some(1), None)
        ]
    );
    load_as_proxy(&c);

    // A weight the proxy refuses is reported on the route.
    let mut w = world();
    let mut r = route("zero", "claude-opus-*", "anthropic", 10);
    r.spec.targets[0].weight = Some(0);
    w.routes.push(r);
    let c = compile(&w, &settings()).unwrap();
    let s = status_of(&c, Kind::ModelRoute, "zero");
    assert_eq!((s.readiness.ready, s.readiness.reason), (false, "InvalidSpec"));
    assert!(s.readiness.message.contains("weight"), "{}", s.readiness.message);
}
