//! The pure heart of the operator: a snapshot of the cluster (a [`World`]) compiles into the
//! policy document shards and a status for every resource.
//!
//! Deterministic: inputs are sorted before use, so the same world gives byte-identical
//! ConfigMaps and statuses whatever order the API server listed things in. Each resource is
//! judged on its own, by the operator's checks and then by the proxy's own validation of its
//! entry: one that is invalid, refers to something missing (a key naming a missing team), or
//! sits in a namespace its team does not admit is left out with `Ready=False` and a reason,
//! and the rest of the policy still compiles. Nothing here does I/O.

mod resources;
pub mod shard;
pub mod sidecar;
pub mod status;
pub mod tenancy;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use jiff::Timestamp;
use tollgate_dataplane::policy::document::{self as doc, PolicyDocument};
use tollgate_dataplane::policy::validate::{ValidationErrors, validate};

use crate::crd::{AuditSink, Budget, McpServer, ModelProvider, ModelRoute, Team, VirtualKey};
pub use shard::{ShardError, ShardLimits, Sharded};
pub use status::{Kind, Readiness, StatusUpdate};
pub use tenancy::TeamlessKeys;

/// Operator-wide settings that shape the document.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The organization name (the organization budget scope); none leaves it out.
    pub organization: Option<String>,
    /// Default audit content capture; with no AuditSink and no capture the section is omitted.
    pub audit_capture: Option<doc::CaptureMode>,
    /// Where the proxy mounts the credentials Secret: files `<dir>/<secret>_<key>`.
    pub credentials_dir: String,
    /// Name of the main policy ConfigMap; key shards are `<name>-keys-NN`.
    pub policy_name: String,
    /// Sharding limits.
    pub limits: ShardLimits,
    /// What the sidecars in agent namespaces get.
    pub sidecar: SidecarMode,
    /// Where keys without a team are compiled.
    pub teamless_keys: TeamlessKeys,
}

/// What the sidecars in agent namespaces get.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum SidecarMode {
    /// The full policy, and the credentials it references: only for namespaces whose pod
    /// creators would be trusted with the provider keys.
    #[default]
    Direct,
    /// A policy that sends everything to the gateway at this URL (see [`sidecar`]); no
    /// credential of any kind.
    Gateway {
        /// The gateway's base URL, e.g. `http://tollgate-gateway.tollgate-system.svc:8080`.
        url: String,
    },
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            organization: None,
            audit_capture: None,
            credentials_dir: "/var/run/tollgate/credentials".to_owned(),
            policy_name: "tollgate-policy".to_owned(),
            limits: ShardLimits::default(),
            sidecar: SidecarMode::Direct,
            teamless_keys: TeamlessKeys::Deny,
        }
    }
}

/// What the operator knows about one Secret: SHA-256 digests of its data values (never the
/// values) and who owns it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecretDigest {
    /// Data key -> lower-case hex SHA-256 of the trimmed value; `None` when the value is empty
    /// or not UTF-8 (unusable as a key).
    pub digests: BTreeMap<String, Option<String>>,
    /// UIDs of the objects in its `ownerReferences`.
    pub owner_uids: Vec<String>,
}

/// Spend of one budget in its current window, summed over the proxy replicas.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BudgetSpend {
    /// Spent, micro-USD.
    pub spent_micro_usd: u64,
    /// Reserved by requests in flight, micro-USD.
    pub reserved_micro_usd: u64,
    /// The limit the ledger enforces, micro-USD.
    pub limit_micro_usd: u64,
    /// Window start (RFC 3339).
    pub window_start: String,
    /// Window end (RFC 3339).
    pub resets_at: String,
}

/// A snapshot of everything the policy depends on.
#[derive(Debug, Clone, Default)]
pub struct World {
    /// The time statuses are stamped with when a condition changes.
    pub now: Timestamp,
    /// Teams.
    pub teams: Vec<Team>,
    /// Virtual keys.
    pub keys: Vec<VirtualKey>,
    /// Budgets.
    pub budgets: Vec<Budget>,
    /// Model providers.
    pub providers: Vec<ModelProvider>,
    /// Model routes.
    pub routes: Vec<ModelRoute>,
    /// MCP servers.
    pub mcp_servers: Vec<McpServer>,
    /// Audit sinks.
    pub audit_sinks: Vec<AuditSink>,
    /// Labels of every namespace, by name (which namespaces a team admits).
    pub namespaces: BTreeMap<String, BTreeMap<String, String>>,
    /// Virtual-key Secrets by (namespace, name).
    pub secrets: BTreeMap<(String, String), SecretDigest>,
    /// Names of the Secrets in the release namespace labelled
    /// [`crate::credentials::CREDENTIAL_LABEL`]`=true`: the only ones a credential may name.
    pub credential_secrets: std::collections::BTreeSet<String>,
    /// Ledger spend by budget id; absent budgets show no spend.
    pub spend: BTreeMap<String, BudgetSpend>,
}

/// One policy ConfigMap: a single file (data key) holding one document shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyConfigMap {
    /// ConfigMap name.
    pub name: String,
    /// Data key, i.e. the file name in the proxy's policy directory.
    pub file: String,
    /// The document shard (JSON).
    pub content: String,
}

/// The result of a compilation.
#[derive(Debug, Clone)]
pub struct Compiled {
    /// The merged document, as the proxy will see it after loading every shard.
    pub document: PolicyDocument,
    /// The ConfigMaps: the main one first, then the key shards in order.
    pub config_maps: Vec<PolicyConfigMap>,
    /// Gateway mode: what agent namespaces get instead of `config_maps` (see
    /// [`Compiled::config_maps_for`]).
    pub sidecar: Option<SidecarPolicy>,
    /// A status for every resource, sorted by kind, namespace and name.
    pub statuses: Vec<StatusUpdate>,
}

impl Compiled {
    /// The statuses that differ from what the cluster shows.
    pub fn changed_statuses(&self) -> impl Iterator<Item = &StatusUpdate> {
        self.statuses.iter().filter(|s| s.changed)
    }

    /// How many resources of each kind are left out of the policy.
    pub fn not_ready(&self) -> BTreeMap<Kind, usize> {
        let mut m = BTreeMap::new();
        for s in &self.statuses {
            if !s.readiness.ready {
                *m.entry(s.kind).or_insert(0) += 1;
            }
        }
        m
    }
}

/// Why no policy could be produced at all (a single bad resource never causes this).
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    /// The keys do not fit in the allowed number of ConfigMaps.
    #[error(transparent)]
    Shard(#[from] ShardError),
    /// The compiled document failed the proxy's own validation: a bug in the compiler, caught
    /// before anything is written.
    #[error("the compiled policy is invalid: {0}")]
    Invalid(#[from] ValidationErrors),
    /// The main document could not be serialized.
    #[error("serializing the policy: {0}")]
    Serialize(#[from] serde_json::Error),
}

/// The file name of the main document.
pub const MAIN_FILE: &str = "policy.json";

/// The data key (file name) of key shard `i`.
pub fn shard_file(i: usize) -> String {
    format!("keys-{i:02}.json")
}

/// The ConfigMap name of key shard `i`.
pub fn shard_name(policy_name: &str, i: usize) -> String {
    format!("{policy_name}-keys-{i:02}")
}

/// Whether `name` is one of the policy ConfigMaps the operator writes: the main one or a key
/// shard below `max_shards`.
pub fn is_policy_config_map(policy_name: &str, max_shards: usize, name: &str) -> bool {
    name == policy_name || (0..max_shards).any(|i| shard_name(policy_name, i) == name)
}

/// Compiles the world into policy ConfigMaps and statuses.
pub fn compile(world: &World, settings: &Settings) -> Result<Compiled, CompileError> {
    let mut out = resources::compile_resources(world, settings, &BTreeMap::new());
    let mut keys = std::mem::take(&mut out.keys);
    keys.sort_by(|a, b| a.key.id.cmp(&b.key.id));
    let mut doc_keys: Vec<doc::VirtualKey> = keys.iter().map(|k| k.key.clone()).collect();
    let mut sharded = shard::shard_keys(&doc_keys, settings.limits)?;
    if !sharded.dropped.is_empty() {
        // The policy is full: those keys (and budgets naming them) are left out with a reason,
        // and everything else still compiles, rather than no change applying anywhere.
        let full: BTreeMap<String, Readiness> = sharded
            .dropped
            .iter()
            .map(|id| (id.clone(), Readiness::fail("PolicyFull", format!(
                "the policy's {} key ConfigMaps are full and this is among the largest keys of its shard; shrink its patterns or raise --max-key-shards",
                settings.limits.max_shards
            ))))
            .collect();
        out = resources::compile_resources(world, settings, &full);
        keys = std::mem::take(&mut out.keys);
        keys.sort_by(|a, b| a.key.id.cmp(&b.key.id));
        doc_keys = keys.iter().map(|k| k.key.clone()).collect();
        sharded = shard::shard_keys(&doc_keys, settings.limits)?;
    }
    let shards = sharded.docs;

    let main = PolicyDocument {
        version: doc::POLICY_VERSION,
        organization: settings
            .organization
            .as_ref()
            .map(|name| doc::Organization { name: name.clone() }),
        keys: Vec::new(),
        ..out.document
    };
    let mut config_maps = vec![PolicyConfigMap {
        name: settings.policy_name.clone(),
        file: MAIN_FILE.to_owned(),
        content: serde_json::to_string_pretty(&main)? + "\n",
    }];
    let mut shard_of_key = BTreeMap::new();
    let count = shards.len() as u64;
    for (i, content) in shards.into_iter().enumerate() {
        config_maps.push(PolicyConfigMap {
            name: shard_name(&settings.policy_name, i),
            file: shard_file(i),
            content,
        });
    }
    for k in &keys {
        let i = shard::fnv1a64(k.key.id.as_bytes()) % count;
        shard_of_key.insert(k.key.id.clone(), shard_name(&settings.policy_name, i as usize));
    }

    let sidecar = match &settings.sidecar {
        SidecarMode::Direct => None,
        SidecarMode::Gateway { url } => Some(SidecarPolicy::new(&main, &doc_keys, url, settings)?),
    };
    let document = PolicyDocument {
        keys: doc_keys,
        ..main
    };
    validate(&document)?;

    let statuses = resources::statuses(world, &out.readiness, &shard_of_key);
    Ok(Compiled {
        document,
        config_maps,
        sidecar,
        statuses,
    })
}

/// The gateway-mode sidecar policy: one main document for every agent namespace, and the keys,
/// of which each namespace gets only its own (so no tenant sees another's key ids, owners or
/// hashes; a key used outside its namespace is refused by that sidecar, never let through).
#[derive(Debug, Clone)]
pub struct SidecarPolicy {
    main: PolicyConfigMap,
    keys: Vec<doc::VirtualKey>,
    policy_name: String,
    limits: ShardLimits,
}

impl SidecarPolicy {
    fn new(
        main: &PolicyDocument,
        keys: &[doc::VirtualKey],
        gateway_url: &str,
        settings: &Settings,
    ) -> Result<Self, CompileError> {
        let doc_main = sidecar::document(main, gateway_url);
        let keys: Vec<doc::VirtualKey> = keys.iter().map(sidecar::key).collect();
        validate(&PolicyDocument {
            keys: keys.clone(),
            ..doc_main.clone()
        })?;
        Ok(Self {
            main: PolicyConfigMap {
                name: settings.policy_name.clone(),
                file: MAIN_FILE.to_owned(),
                content: serde_json::to_string_pretty(&doc_main)? + "\n",
            },
            keys,
            policy_name: settings.policy_name.clone(),
            limits: settings.limits,
        })
    }

    /// The ConfigMaps of namespace `ns`: the main document and shards of its own keys.
    pub fn config_maps(&self, ns: &str) -> Result<Vec<PolicyConfigMap>, CompileError> {
        let prefix = format!("{ns}/");
        let own: Vec<doc::VirtualKey> = self
            .keys
            .iter()
            .filter(|k| k.id.starts_with(&prefix))
            .cloned()
            .collect();
        let mut maps = vec![self.main.clone()];
        for (i, content) in shard::shard_keys(&own, self.limits)?.docs.into_iter().enumerate() {
            maps.push(PolicyConfigMap {
                name: shard_name(&self.policy_name, i),
                file: shard_file(i),
                content,
            });
        }
        Ok(maps)
    }
}

impl Compiled {
    /// The ConfigMaps namespace `ns` gets: the full policy in the release namespace (and
    /// everywhere in direct mode), the sidecar policy in agent namespaces in gateway mode.
    pub fn config_maps_for(
        &self,
        ns: &str,
        release_namespace: &str,
    ) -> Result<Vec<PolicyConfigMap>, CompileError> {
        match &self.sidecar {
            Some(sidecar) if ns != release_namespace => sidecar.config_maps(ns),
            _ => Ok(self.config_maps.clone()),
        }
    }
}
