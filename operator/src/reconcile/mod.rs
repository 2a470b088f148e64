//! The reconcile loop: caches of every input (watches), one global reconciliation debounced
//! after any change, on a resync timer and after each spend read. A reconciliation reads
//! the caches, calls [`crate::compile::compile`], and applies only the difference: unchanged
//! ConfigMaps and statuses are not written.

pub mod apply;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::Error;
use crate::compile::{self, BudgetSpend, Compiled, Kind, SecretDigest, Settings, World};
use crate::crd::{AuditSink, Budget, McpServer, ModelProvider, ModelRoute, Team, VirtualKey};
use crate::metrics::{KindLabel, Metrics, ResultLabel};
use crate::secrets::{self, KEY_LABEL, MANAGED_BY_LABEL, MANAGER};
use crate::spend::SpendSource;
use apply::{POLICY_LABEL, SecretCreated};

/// How the loop runs.
#[derive(Debug, Clone)]
pub struct Config {
    /// What shapes the document.
    pub settings: Settings,
    /// Namespace the policy ConfigMaps are written to (where the proxies run).
    pub policy_namespace: String,
    /// Wait this long after a change for more changes before reconciling.
    pub debounce: Duration,
    /// Reconcile at least this often.
    pub resync: Duration,
    /// Read spend this often (when a spend source is configured).
    pub spend_interval: Duration,
    /// Name of this replica, for Events.
    pub instance: String,
    /// Namespace label enabling sidecar injection (`enabled` / `opt-in`); those namespaces
    /// get copies of the policy ConfigMaps and the credentials Secret. Empty: none.
    pub inject_namespace_label: String,
    /// Name of the credentials Secret assembled from the Secret keys the policy references.
    pub credentials_secret: String,
    /// Extra Secret keys of the policy namespace copied into the credentials Secret.
    pub extra_credentials: Vec<crate::credentials::SecretKey>,
    /// The cluster's name in budget notifications (`--cluster-name`).
    pub cluster_name: Option<String>,
    /// Another replica's unfinished budget notification is taken over after this long.
    pub notify_take_over: Duration,
    /// Timeout of one notification delivery.
    pub notify_timeout: Duration,
    /// Notification targets of every budget (the chart's `notifications.*`).
    pub notify_defaults: Vec<crate::crd::NotifyTarget>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            settings: Settings::default(),
            policy_namespace: "tollgate-system".to_owned(),
            debounce: Duration::from_millis(200),
            resync: Duration::from_secs(300),
            spend_interval: Duration::from_secs(30),
            instance: MANAGER.to_owned(),
            inject_namespace_label: String::new(),
            credentials_secret: "tollgate-credentials".to_owned(),
            extra_credentials: Vec::new(),
            cluster_name: None,
            notify_take_over: Duration::from_secs(300),
            notify_timeout: Duration::from_secs(10),
            notify_defaults: Vec::new(),
        }
    }
}

/// The caches the world is read from.
struct Stores {
    teams: Store<Team>,
    keys: Store<VirtualKey>,
    budgets: Store<Budget>,
    providers: Store<ModelProvider>,
    routes: Store<ModelRoute>,
    mcp_servers: Store<McpServer>,
    audit_sinks: Store<AuditSink>,
    secrets: Store<Secret>,
    /// Policy ConfigMaps in every namespace (the operator's, by label).
    config_maps: Store<ConfigMap>,
    /// Credentials Secrets the operator wrote, data stripped (by label).
    credentials: Store<Secret>,
    /// Every namespace, metadata only: labels decide which teams admit it and whether it is
    /// injected.
    namespaces: Store<PartialObjectMeta<Namespace>>,
    /// Secrets of the policy namespace, metadata only (which are labelled credentials).
    policy_secrets: Store<Secret>,
}

type Trigger = std::pin::Pin<Box<dyn Stream<Item = ()> + Send>>;

/// Watches `api` into a cache; the stream yields once per change and must be polled.
fn cache<K>(api: Api<K>, cfg: watcher::Config, modify: fn(&mut K)) -> (Store<K>, Trigger)
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone + Send + Sync,
{
    let (reader, writer) = reflector::store();
    let kind = K::kind(&K::DynamicType::default()).into_owned();
    let stream = watcher(api, cfg)
        .default_backoff()
        .modify(modify)
        .reflect(writer)
        .filter_map(move |ev| {
            let kind = kind.clone();
            async move {
                match ev {
                    Ok(_) => Some(()),
                    Err(e) => {
                        warn!(%kind, error = %e, "watch failed; retrying");
                        None
                    }
                }
            }
        });
    (reader, Box::pin(stream))
}

/// Namespaces are cached as their names, labels and deletion timestamps only (one entry per
/// namespace of the cluster, so the cache stays small).
fn namespace_labels_only(n: &mut PartialObjectMeta<Namespace>) {
    n.metadata.annotations = None;
    n.metadata.managed_fields = None;
    n.metadata.owner_references = None;
    n.metadata.finalizers = None;
}

fn keep<K>(_: &mut K) {}

/// Only the metadata of mirrored credentials Secrets is cached (their content hash is an
/// annotation), never the values.
fn strip_data(s: &mut Secret) {
    s.data = None;
    s.string_data = None;
    if let Some(a) = s.metadata.annotations.as_mut() {
        a.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
}

/// Mirrored credentials Secrets are cached as the hash of their actual data, which replaces
/// every annotation: a copy edited (or pre-created) with a forged hash annotation still shows
/// as drift and is rewritten.
fn strip_credentials(s: &mut Secret) {
    let data = s.data.take().unwrap_or_default();
    let observed = crate::credentials::Assembled {
        data: data.into_iter().map(|(k, v)| (k, v.0)).collect(),
        missing: Vec::new(),
    }
    .content_hash();
    strip_data(s);
    s.metadata.managed_fields = None;
    s.metadata.annotations = Some(BTreeMap::from([(
        crate::credentials::CONTENT_HASH_ANNOTATION.to_owned(),
        observed,
    )]));
}

/// The operator's reconcile loop.
pub struct Reconciler {
    client: Client,
    config: Config,
    metrics: Arc<Metrics>,
    spend: Option<Arc<dyn SpendSource>>,
    recorder: Recorder,
    /// Budget notifications (none if its HTTP client could not be built).
    notifier: Option<Arc<crate::notify::deliver::Notifier>>,
    /// Spend from the last successful read.
    last_spend: BTreeMap<String, BudgetSpend>,
    /// Digests of Secrets created but not yet seen by the watch.
    created: BTreeMap<(String, String), SecretDigest>,
    /// What was last written, by ConfigMap name and by status key, so a write that the cache
    /// has not reflected yet is not repeated.
    written_config_maps: HashMap<(String, String), (String, Instant)>,
    written_credentials: HashMap<String, (String, Instant)>,
    /// Referenced credential keys that were missing at the last reconcile.
    missing_credentials: std::collections::BTreeSet<crate::credentials::SecretKey>,
    written_statuses: HashMap<(Kind, Option<String>, String), (serde_json::Value, Instant)>,
    /// Set after the first successful reconciliation (readiness).
    pub reconciled: Arc<std::sync::atomic::AtomicBool>,
}

impl Reconciler {
    /// A reconciler over `client`.
    pub fn new(
        client: Client,
        config: Config,
        metrics: Arc<Metrics>,
        spend: Option<Arc<dyn SpendSource>>,
    ) -> Self {
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: MANAGER.to_owned(),
                instance: Some(config.instance.clone()),
            },
        );
        let notifier = crate::notify::deliver::Notifier::new(
            client.clone(),
            crate::notify::deliver::NotifySettings {
                namespace: config.policy_namespace.clone(),
                instance: config.instance.clone(),
                cluster: config.cluster_name.clone(),
                take_over_after: config.notify_take_over,
                timeout: config.notify_timeout,
                defaults: config.notify_defaults.clone(),
            },
        )
        .map_err(|e| warn!(error = %e, "budget notifications disabled: no HTTP client"))
        .ok()
        .map(Arc::new);
        Self {
            client,
            config,
            metrics,
            spend,
            recorder,
            notifier,
            last_spend: BTreeMap::new(),
            created: BTreeMap::new(),
            written_config_maps: HashMap::new(),
            written_credentials: HashMap::new(),
            missing_credentials: Default::default(),
            written_statuses: HashMap::new(),
            reconciled: Arc::default(),
        }
    }

    /// Runs until `shutdown` completes.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
        let c = &self.client;
        let all = watcher::Config::default();
        let (teams, t1) = cache(Api::<Team>::all(c.clone()), all.clone(), keep);
        // Tenants write VirtualKeys and key Secrets: list them in small pages (a page of 500
        // large objects would not fit the operator's memory) and cache them trimmed.
        let paged = watcher::Config::default().page_size(LIST_PAGE);
        let (keys, t2) = cache(
            Api::<VirtualKey>::all(c.clone()),
            paged.clone(),
            secrets::trim_virtual_key,
        );
        let (budgets, t3) = cache(Api::<Budget>::all(c.clone()), all.clone(), keep);
        let (providers, t4) = cache(Api::<ModelProvider>::all(c.clone()), all.clone(), keep);
        let (routes, t5) = cache(Api::<ModelRoute>::all(c.clone()), all.clone(), keep);
        let (mcp_servers, t6) = cache(Api::<McpServer>::all(c.clone()), all.clone(), keep);
        let (audit_sinks, t7) = cache(Api::<AuditSink>::all(c.clone()), all.clone(), keep);
        // Only labelled Secrets, and only their digests are cached.
        let (secrets, t8) = cache(
            Api::<Secret>::all(c.clone()),
            paged.labels(KEY_LABEL),
            secrets::digest_in_place,
        );
        let ours = format!(
            "{MANAGED_BY_LABEL}={MANAGER},{POLICY_LABEL}={}",
            crate::names::label_value(&self.config.settings.policy_name)
        );
        // Content is replaced by its hash: the cache holds no copy of the policy per namespace.
        let (config_maps, t9) = cache(
            Api::<ConfigMap>::all(c.clone()),
            watcher::Config::default().labels(&ours),
            apply::strip_config_map,
        );
        let (credentials, t10) = cache(
            Api::<Secret>::all(c.clone()),
            watcher::Config::default().labels(&ours),
            strip_credentials,
        );
        // Any Secret change in the policy namespace (a rotated provider key) reconciles at
        // once, so the credentials copies follow; only metadata is cached.
        let (policy_secrets, t11) = cache(
            Api::<Secret>::namespaced(c.clone(), &self.config.policy_namespace),
            watcher::Config::default(),
            strip_data,
        );
        // Metadata only: `Api<PartialObjectMeta<_>>` asks the API server for no spec or status.
        let (namespaces, t12) = cache(
            Api::<PartialObjectMeta<Namespace>>::all(c.clone()),
            watcher::Config::default(),
            namespace_labels_only,
        );
        let all_triggers = vec![t1, t2, t3, t4, t5, t6, t7, t8, t9, t10, t11, t12];
        let stores = Stores {
            teams,
            keys,
            budgets,
            providers,
            routes,
            mcp_servers,
            audit_sinks,
            secrets,
            config_maps,
            credentials,
            namespaces,
            policy_secrets,
        };
        let mut triggers = futures::stream::select_all(all_triggers);

        let notify = Arc::new(tokio::sync::Notify::new());
        let n = notify.clone();
        let pump = tokio::spawn(async move {
            while triggers.next().await.is_some() {
                n.notify_one();
            }
        });
        tokio::pin!(shutdown);

        let result = async {
            tokio::select! {
                _ = &mut shutdown => return Ok(()),
                r = stores.wait_until_ready() => r?,
            }
            info!("caches synced");
            let mut resync = tokio::time::interval(self.config.resync);
            let mut spend_tick = tokio::time::interval(self.config.spend_interval);
            let mut failures = 0u32;
            loop {
                tokio::select! {
                    _ = &mut shutdown => return Ok(()),
                    _ = notify.notified() => {
                        tokio::time::sleep(self.config.debounce).await;
                    }
                    _ = resync.tick() => {}
                    _ = spend_tick.tick(), if self.spend.is_some() => self.read_spend().await,
                }
                match self.reconcile(&stores).await {
                    Ok(()) => failures = 0,
                    Err(e) => {
                        failures += 1;
                        let backoff = Duration::from_millis(500 * 2u64.pow(failures.min(6)));
                        warn!(error = %e, retry_in = ?backoff, "reconcile failed");
                        // A change (a revocation) still goes through at once; only
                        // retrying what failed waits for the backoff.
                        tokio::select! {
                            _ = &mut shutdown => return Ok(()),
                            _ = notify.notified() => notify.notify_one(),
                            _ = tokio::time::sleep(backoff) => notify.notify_one(),
                        }
                    }
                }
            }
        }
        .await;
        pump.abort();
        result
    }

    async fn read_spend(&mut self) {
        let Some(src) = &self.spend else { return };
        match src.fetch().await {
            Ok(spend) => self.last_spend = spend,
            Err(e) => {
                self.metrics.spend_errors.inc();
                warn!(error = %e, "reading budget spend failed; keeping the last values");
            }
        }
    }

    fn world(&mut self, s: &Stores) -> World {
        fn owned<K>(store: &Store<K>) -> Vec<K>
        where
            K: Resource + Clone + 'static,
            K::DynamicType: Eq + std::hash::Hash + Clone,
        {
            store.state().iter().map(|k| (**k).clone()).collect()
        }
        let mut digests: BTreeMap<(String, String), SecretDigest> = s
            .secrets
            .state()
            .iter()
            .map(|sec| {
                (
                    (sec.namespace().unwrap_or_default(), sec.name_any()),
                    secrets::cached_digest(sec),
                )
            })
            .collect();
        self.created.retain(|k, _| !digests.contains_key(k));
        for (k, v) in &self.created {
            digests.insert(k.clone(), v.clone());
        }
        World {
            now: jiff::Timestamp::now(),
            teams: owned(&s.teams),
            keys: owned(&s.keys),
            budgets: owned(&s.budgets),
            providers: owned(&s.providers),
            routes: owned(&s.routes),
            mcp_servers: owned(&s.mcp_servers),
            audit_sinks: owned(&s.audit_sinks),
            namespaces: s
                .namespaces
                .state()
                .iter()
                .map(|n| (n.name_any(), n.labels().clone()))
                .collect(),
            secrets: digests,
            credential_secrets: s
                .policy_secrets
                .state()
                .iter()
                .filter(|sec| crate::credentials::is_credential(sec.metadata.labels.as_ref()))
                .map(|sec| sec.name_any())
                .collect(),
            spend: self.last_spend.clone(),
        }
    }

    /// One reconciliation: generate missing key Secrets, compile, apply the difference. A
    /// failure writing one object (a quota in one namespace, a policy engine refusing a label)
    /// is reported on the objects it concerns and the rest carries on; the reconciliation
    /// then ends in [`Error::Partial`] and is retried with backoff.
    async fn reconcile(&mut self, s: &Stores) -> Result<(), Error> {
        let started = Instant::now();
        let span = info_span!("reconcile");
        let result = async {
            let mut failures = Failures::default();
            self.generate_secrets(s, &mut failures).await;
            let world = self.world(s);
            let t = Instant::now();
            let compiled = compile::compile(&world, &self.config.settings)?;
            self.metrics.compile_seconds.observe(t.elapsed().as_secs_f64());
            let targets = self.target_namespaces(s);
            for ns in &targets {
                if let Err(e) = self.apply_config_maps(s, &compiled, ns).await {
                    failures.record(format!("policy ConfigMaps in namespace {ns}"), &e);
                    if *ns == self.config.policy_namespace {
                        return Err(e);
                    }
                    self.namespace_event(ns, "PolicyMirrorFailed", &e).await;
                }
            }
            // The proxies in the policy namespace have the policy: the operator is ready even
            // if a mirror elsewhere keeps failing.
            self.reconciled.store(true, std::sync::atomic::Ordering::Relaxed);
            let credential_targets = self.credential_namespaces(&targets);
            self.apply_credentials(s, &world, &credential_targets, &mut failures)
                .await;
            self.delete_stale_mirrors(s, &targets, &credential_targets, &mut failures)
                .await;
            self.apply_statuses(&world, &compiled, &mut failures).await;
            self.notify_budgets(&world);
            self.record(&compiled);
            failures.into_result()
        }
        .instrument(span)
        .await;
        let label = if result.is_ok() { "ok" } else { "error" };
        self.metrics
            .reconciles
            .get_or_create(&ResultLabel {
                result: label.to_owned(),
            })
            .inc();
        self.metrics
            .reconcile_seconds
            .observe(started.elapsed().as_secs_f64());
        result
    }

    /// Starts budget notifications that are due (in the background: a slow receiver never
    /// delays the policy). Only budgets the gateway reports spend for, i.e. compiled ones.
    fn notify_budgets(&self, world: &World) {
        let Some(notifier) = &self.notifier else { return };
        for b in &world.budgets {
            if b.spec.thresholds.is_empty() || b.meta().deletion_timestamp.is_some() {
                continue;
            }
            if let Some(spend) = world.spend.get(&b.name_any()) {
                notifier.kick(b, spend);
            }
        }
    }

    /// A Warning Event on a namespace whose copy of the policy could not be written.
    async fn namespace_event(&self, ns: &str, reason: &str, e: &Error) {
        let reference = k8s_openapi::api::core::v1::ObjectReference {
            api_version: Some("v1".to_owned()),
            kind: Some("Namespace".to_owned()),
            name: Some(ns.to_owned()),
            ..Default::default()
        };
        self.event(&reference, EventType::Warning, reason, e.to_string())
            .await;
    }

    async fn generate_secrets(&mut self, s: &Stores, failures: &mut Failures) {
        // One set of the Secrets that exist, not a scan of every Secret for every key.
        let existing: std::collections::HashSet<(String, String)> = s
            .secrets
            .state()
            .iter()
            .map(|x| (x.namespace().unwrap_or_default(), x.name_any()))
            .collect();
        for vk in s.keys.state() {
            if vk.spec.secret_ref.is_some() || vk.meta().deletion_timestamp.is_some() {
                continue;
            }
            let (ns, name) = (vk.namespace().unwrap_or_default(), vk.name_any());
            let secret = secrets::generated_name(&name);
            let id = (ns.clone(), secret.clone());
            if self.created.contains_key(&id) || existing.contains(&id) {
                continue;
            }
            let span = info_span!("generate_key", virtual_key = %format!("{ns}/{name}"), secret = %secret);
            let result = async {
                match apply::create_key_secret(&self.client, &vk).await? {
                    SecretCreated::Created(sha256) => {
                        self.metrics.secrets_generated.inc();
                        info!("generated a virtual key");
                        self.created.insert(
                            id,
                            SecretDigest {
                                digests: BTreeMap::from([(
                                    crate::crd::common::DEFAULT_SECRET_KEY.to_owned(),
                                    Some(sha256),
                                )]),
                                owner_uids: vec![vk.uid().unwrap_or_default()],
                            },
                        );
                        self.event(
                            &vk.object_ref(&()),
                            EventType::Normal,
                            "KeyGenerated",
                            format!("generated a key into Secret {secret}"),
                        )
                        .await;
                    }
                    SecretCreated::AlreadyExists => {
                        debug!("Secret exists but is not labelled; see the VirtualKey status")
                    }
                }
                Ok::<_, Error>(())
            }
            .instrument(span)
            .await;
            if let Err(e) = result {
                failures.record(format!("key Secret {ns}/{secret}"), &e);
                self.event(
                    &vk.object_ref(&()),
                    EventType::Warning,
                    "KeySecretFailed",
                    e.to_string(),
                )
                .await;
            }
        }
    }

    /// Brings the policy ConfigMaps of one namespace up to date. A failed write does not stop
    /// the others there (a revocation in one shard still applies when a new shard cannot be
    /// created); the first failure is returned. A ConfigMap someone made `immutable` is
    /// deleted and written again.
    async fn apply_config_maps(&mut self, s: &Stores, compiled: &Compiled, ns: &str) -> Result<(), Error> {
        let policy = self.config.settings.policy_name.clone();
        let max_shards = self.config.settings.limits.max_shards;
        let current: HashMap<String, Arc<ConfigMap>> = s
            .config_maps
            .state()
            .into_iter()
            .filter(|cm| cm.labels().get(POLICY_LABEL) == Some(&crate::names::label_value(&policy)))
            .filter(|cm| cm.namespace().as_deref() == Some(ns))
            // Only names the operator writes: an object a tenant labelled like ours is not ours
            // to delete (and RBAC would refuse it, failing every reconcile).
            .filter(|cm| compile::is_policy_config_map(&policy, max_shards, &cm.name_any()))
            .map(|cm| (cm.name_any(), cm))
            .collect();
        // New ConfigMaps first, then updates, the main one last: a key moving between shards
        // shows up twice for a moment (which the proxy rejects, keeping its last good
        // policy) rather than not at all.
        // Agent namespaces get the sidecar policy (in gateway mode, one naming only the gateway).
        let maps = compiled.config_maps_for(ns, &self.config.policy_namespace)?;
        let mut order: Vec<&compile::PolicyConfigMap> = maps.iter().skip(1).collect();
        order.sort_by_key(|cm| current.contains_key(&cm.name));
        order.extend(maps.first());
        let mut first_error = None;
        for cm in order {
            let desired = apply::desired_config_map(cm, ns, &policy);
            if current
                .get(&cm.name)
                .is_some_and(|c| apply::config_map_up_to_date(c, &desired))
            {
                continue;
            }
            let written_key = (ns.to_owned(), cm.name.clone());
            let hash = apply::config_map_content_hash(&desired);
            if recently_written(&self.written_config_maps, &written_key, &hash) {
                // Written moments ago; the cache has not caught up yet.
                continue;
            }
            let span = info_span!("apply_config_map", namespace = %ns, config_map = %cm.name);
            match self.write_config_map(&desired).instrument(span).await {
                Ok(()) => {
                    info!(namespace = %ns, config_map = %cm.name, bytes = cm.content.len(), "policy ConfigMap written");
                    self.metrics.config_map_writes.inc();
                    if ns != self.config.policy_namespace {
                        self.metrics.mirror_writes.inc();
                    }
                    self.written_config_maps
                        .insert(written_key, (hash, Instant::now()));
                }
                Err(e) => {
                    warn!(namespace = %ns, config_map = %cm.name, error = %e, "policy ConfigMap not written");
                    first_error.get_or_insert(e);
                }
            }
        }
        let wanted: std::collections::HashSet<&str> = maps.iter().map(|c| c.name.as_str()).collect();
        for name in current.keys().filter(|n| !wanted.contains(n.as_str())) {
            let deleted = apply::delete_config_map(&self.client, ns, name)
                .instrument(info_span!("delete_config_map", namespace = %ns, config_map = %name))
                .await;
            match deleted {
                Ok(()) => {
                    info!(namespace = %ns, config_map = %name, "stale policy shard deleted");
                    self.metrics.config_map_writes.inc();
                    self.written_config_maps.remove(&(ns.to_owned(), name.clone()));
                }
                Err(e) => {
                    first_error.get_or_insert(e.into());
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Applies one policy ConfigMap; one made `immutable` (the API server refuses any change
    /// to it) is deleted and created again.
    async fn write_config_map(&self, desired: &ConfigMap) -> Result<(), Error> {
        match apply::apply_config_map(&self.client, desired).await {
            Err(kube::Error::Api(e)) if e.code == 422 && e.message.contains("immutable") => {
                let (ns, name) = (
                    desired.metadata.namespace.as_deref().unwrap_or_default(),
                    desired.metadata.name.as_deref().unwrap_or_default(),
                );
                warn!(namespace = %ns, config_map = %name, "policy ConfigMap was made immutable; replacing it");
                apply::delete_config_map(&self.client, ns, name).await?;
                Ok(apply::apply_config_map(&self.client, desired).await?)
            }
            other => Ok(other?),
        }
    }

    /// Where the credentials Secret goes: the policy namespace, and in direct mode every
    /// labelled namespace too. In gateway mode no Secret of any kind is written into an agent
    /// namespace (and copies left from direct mode are deleted).
    fn credential_namespaces(&self, targets: &BTreeSet<String>) -> BTreeSet<String> {
        match self.config.settings.sidecar {
            compile::SidecarMode::Direct => targets.clone(),
            compile::SidecarMode::Gateway { .. } => BTreeSet::from([self.config.policy_namespace.clone()]),
        }
    }

    /// The policy namespace plus every namespace labelled for injection.
    fn target_namespaces(&self, s: &Stores) -> std::collections::BTreeSet<String> {
        let label = &self.config.inject_namespace_label;
        let all = s.namespaces.state();
        crate::credentials::target_namespaces(
            all.iter()
                .filter(|n| !label.is_empty() && n.labels().contains_key(label))
                .filter(|n| n.metadata.deletion_timestamp.is_none())
                .map(|n| {
                    (
                        n.metadata.name.as_deref().unwrap_or_default(),
                        n.labels().get(label).map(String::as_str),
                    )
                }),
            &self.config.policy_namespace,
        )
    }

    /// Assembles the credentials Secret from the referenced Secret keys of the policy
    /// namespace and applies it wherever its content hash differs.
    async fn apply_credentials(
        &mut self,
        s: &Stores,
        world: &World,
        targets: &std::collections::BTreeSet<String>,
        failures: &mut Failures,
    ) {
        let mut wanted = crate::credentials::referenced(world);
        wanted.extend(self.config.extra_credentials.iter().cloned());
        let names: std::collections::BTreeSet<&String> = wanted.iter().map(|(n, _)| n).collect();
        let mut sources = BTreeMap::new();
        for name in names {
            let extra = self.config.extra_credentials.iter().any(|(n, _)| n == name);
            match apply::read_secret_data(&self.client, &self.config.policy_namespace, name).await {
                // Checked again as read: the label may have gone since the cache saw it. The
                // operator's own --extra-credential flags are the platform team's, not a
                // resource's, and need no label.
                Ok(Some((labels, data))) if extra || crate::credentials::is_credential(Some(&labels)) => {
                    sources.insert(name.clone(), data);
                }
                Ok(Some(_)) => {
                    warn!(secret = %name, "referenced Secret is not labelled {}=true; not copied", crate::credentials::CREDENTIAL_LABEL)
                }
                Ok(None) => {}
                Err(e) => {
                    // Writing without this Secret would remove a working credential: keep
                    // every copy as it is until it can be read.
                    failures.record(format!("reading Secret {name}"), &e.into());
                    return;
                }
            }
        }
        let assembled = crate::credentials::assemble(&wanted, &sources);
        // Logged when the set of missing credentials changes, not on every reconcile.
        let missing: std::collections::BTreeSet<_> = assembled.missing.iter().cloned().collect();
        if missing != self.missing_credentials {
            for (secret, key) in missing.difference(&self.missing_credentials) {
                warn!(secret = %secret, key = %key, namespace = %self.config.policy_namespace, "referenced credential not found; proxies will fail requests needing it");
            }
            self.missing_credentials = missing;
        }
        let hash = assembled.content_hash();
        let name = self.config.credentials_secret.clone();
        for ns in targets {
            let current = s
                .credentials
                .state()
                .into_iter()
                .find(|c| c.namespace().as_deref() == Some(ns.as_str()) && c.name_any() == name);
            let current_hash = current.as_ref().and_then(|c| {
                c.annotations()
                    .get(crate::credentials::CONTENT_HASH_ANNOTATION)
                    .cloned()
            });
            if current_hash.as_deref() == Some(hash.as_str())
                || recently_written(&self.written_credentials, ns, &hash)
            {
                continue;
            }
            let desired = apply::desired_credentials(
                &name,
                ns,
                &self.config.settings.policy_name,
                &assembled.data,
                &hash,
            );
            let written = apply::apply_secret(&self.client, &desired)
                .instrument(info_span!("apply_credentials", namespace = %ns, secret = %name))
                .await;
            if let Err(e) = written {
                let e = Error::from(e);
                failures.record(format!("credentials Secret in namespace {ns}"), &e);
                self.namespace_event(ns, "CredentialsMirrorFailed", &e).await;
                continue;
            }
            info!(namespace = %ns, secret = %name, keys = assembled.data.len(), "credentials Secret written");
            self.metrics.mirror_writes.inc();
            self.written_credentials
                .insert(ns.clone(), (hash.clone(), Instant::now()));
        }
    }

    /// Deletes copies in namespaces that are no longer labelled.
    async fn delete_stale_mirrors(
        &mut self,
        s: &Stores,
        targets: &BTreeSet<String>,
        credential_targets: &BTreeSet<String>,
        failures: &mut Failures,
    ) {
        let policy = &self.config.settings.policy_name;
        let max_shards = self.config.settings.limits.max_shards;
        for cm in s.config_maps.state() {
            let ns = cm.namespace().unwrap_or_default();
            if targets.contains(&ns) || !compile::is_policy_config_map(policy, max_shards, &cm.name_any()) {
                continue;
            }
            match apply::delete_config_map(&self.client, &ns, &cm.name_any()).await {
                Ok(()) => {
                    info!(namespace = %ns, config_map = %cm.name_any(), "policy copy deleted (namespace no longer labelled)");
                    self.metrics.mirror_writes.inc();
                }
                Err(e) => failures.record(format!("deleting ConfigMap {ns}/{}", cm.name_any()), &e.into()),
            }
        }
        for sec in s.credentials.state() {
            let ns = sec.namespace().unwrap_or_default();
            // Only the credentials Secret is the operator's; anything else labelled like it is
            // someone else's object.
            if sec.name_any() != self.config.credentials_secret || credential_targets.contains(&ns) {
                continue;
            }
            match apply::delete_secret(&self.client, &ns, &sec.name_any()).await {
                Ok(()) => {
                    self.written_credentials.remove(&ns);
                    info!(namespace = %ns, secret = %sec.name_any(), "credentials copy deleted");
                    self.metrics.mirror_writes.inc();
                }
                Err(e) => failures.record(format!("deleting Secret {ns}/{}", sec.name_any()), &e.into()),
            }
        }
    }

    async fn apply_statuses(&mut self, world: &World, compiled: &Compiled, failures: &mut Failures) {
        for update in compiled.changed_statuses() {
            let key = (update.kind, update.namespace.clone(), update.name.clone());
            if recently_written(&self.written_statuses, &key, &update.status) {
                continue;
            }
            let span =
                info_span!("apply_status", kind = update.kind.as_str(), resource = %update.display_name());
            if let Err(e) = apply::apply_status(&self.client, update).instrument(span).await {
                failures.record(
                    format!("status of {} {}", update.kind.as_str(), update.display_name()),
                    &e.into(),
                );
                continue;
            }
            self.metrics.status_writes.inc();
            self.written_statuses
                .insert(key, (update.status.clone(), Instant::now()));
            let now = (
                if update.readiness.ready { "True" } else { "False" },
                update.readiness.reason,
            );
            let before = update
                .previous_ready
                .as_ref()
                .map(|(s, r)| (s.as_str(), r.as_str()));
            if before != Some(now) {
                let kind = update.kind;
                if let Some(reference) = object_ref(world, kind, update.namespace.as_deref(), &update.name) {
                    let type_ = if update.readiness.ready {
                        EventType::Normal
                    } else {
                        EventType::Warning
                    };
                    self.event(
                        &reference,
                        type_,
                        update.readiness.reason,
                        update.readiness.message.clone(),
                    )
                    .await;
                }
                if update.readiness.ready {
                    info!(kind = kind.as_str(), resource = %update.display_name(), reason = update.readiness.reason, "ready");
                } else {
                    warn!(kind = kind.as_str(), resource = %update.display_name(), reason = update.readiness.reason, message = %update.readiness.message, "left out of the policy");
                }
            }
        }
    }

    /// Publishes an Event; failing to is logged, never fatal.
    async fn event(
        &self,
        reference: &k8s_openapi::api::core::v1::ObjectReference,
        type_: EventType,
        reason: &str,
        note: String,
    ) {
        let ev = Event {
            type_,
            reason: reason.to_owned(),
            // events.k8s.io/v1 refuses notes over 1 KiB.
            note: Some(crate::names::truncate(&note, MAX_EVENT_NOTE)),
            action: "Reconcile".to_owned(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&ev, reference).await {
            warn!(error = %e, reason, "publishing an event failed");
        }
    }

    fn record(&self, compiled: &Compiled) {
        let m = &self.metrics;
        m.policy_keys
            .set(i64::try_from(compiled.document.keys.len()).unwrap_or(i64::MAX));
        m.policy_shards
            .set(i64::try_from(compiled.config_maps.len().saturating_sub(1)).unwrap_or(0));
        let bytes: usize = compiled.config_maps.iter().map(|c| c.content.len()).sum();
        m.policy_bytes.set(i64::try_from(bytes).unwrap_or(i64::MAX));
        let not_ready = compiled.not_ready();
        for kind in [
            Kind::AuditSink,
            Kind::Budget,
            Kind::McpServer,
            Kind::ModelProvider,
            Kind::ModelRoute,
            Kind::Team,
            Kind::VirtualKey,
        ] {
            let n = not_ready.get(&kind).copied().unwrap_or(0);
            m.not_ready
                .get_or_create(&KindLabel {
                    kind: kind.as_str().to_owned(),
                })
                .set(i64::try_from(n).unwrap_or(0));
        }
    }
}

/// Objects per list page for the kinds tenants write (kube-runtime's default is 500).
const LIST_PAGE: u32 = 50;

/// The longest Event note the API server accepts (bytes).
const MAX_EVENT_NOTE: usize = 1024;

/// What failed during one reconciliation, while the rest carried on.
#[derive(Debug, Default)]
struct Failures(Vec<String>);

impl Failures {
    /// Logs one failure (once, with what it concerns) and keeps it for the result.
    fn record(&mut self, what: String, e: &Error) {
        warn!(object = %what, error = %e, "write failed; carrying on with the rest");
        self.0.push(format!("{what}: {e}"));
    }

    fn into_result(self) -> Result<(), Error> {
        match self.0.first() {
            None => Ok(()),
            Some(first) => Err(Error::Partial {
                count: self.0.len(),
                first: first.clone(),
            }),
        }
    }
}

/// How long a write is trusted to be on its way into the cache; after that, a cache that
/// still differs is drift (someone edited the object) and is corrected.
const WRITE_SETTLE: Duration = Duration::from_secs(10);

fn recently_written<K: std::hash::Hash + Eq, V: PartialEq>(
    written: &HashMap<K, (V, Instant)>,
    key: &K,
    value: &V,
) -> bool {
    written
        .get(key)
        .is_some_and(|(v, at)| v == value && at.elapsed() < WRITE_SETTLE)
}

fn object_ref(
    world: &World,
    kind: Kind,
    ns: Option<&str>,
    name: &str,
) -> Option<k8s_openapi::api::core::v1::ObjectReference> {
    fn find<K: Resource<DynamicType = ()>>(
        items: &[K],
        ns: Option<&str>,
        name: &str,
    ) -> Option<k8s_openapi::api::core::v1::ObjectReference> {
        items
            .iter()
            .find(|i| i.meta().name.as_deref() == Some(name) && i.meta().namespace.as_deref() == ns)
            .map(|i| i.object_ref(&()))
    }
    match kind {
        Kind::AuditSink => find(&world.audit_sinks, ns, name),
        Kind::Budget => find(&world.budgets, ns, name),
        Kind::McpServer => find(&world.mcp_servers, ns, name),
        Kind::ModelProvider => find(&world.providers, ns, name),
        Kind::ModelRoute => find(&world.routes, ns, name),
        Kind::Team => find(&world.teams, ns, name),
        Kind::VirtualKey => find(&world.keys, ns, name),
    }
}

impl Stores {
    async fn wait_until_ready(&self) -> Result<(), Error> {
        let e = |e: reflector::store::WriterDropped| Error::NotSynced(e.to_string());
        self.teams.wait_until_ready().await.map_err(e)?;
        self.keys.wait_until_ready().await.map_err(e)?;
        self.budgets.wait_until_ready().await.map_err(e)?;
        self.providers.wait_until_ready().await.map_err(e)?;
        self.routes.wait_until_ready().await.map_err(e)?;
        self.mcp_servers.wait_until_ready().await.map_err(e)?;
        self.audit_sinks.wait_until_ready().await.map_err(e)?;
        self.secrets.wait_until_ready().await.map_err(e)?;
        self.config_maps.wait_until_ready().await.map_err(e)?;
        self.credentials.wait_until_ready().await.map_err(e)?;
        self.policy_secrets.wait_until_ready().await.map_err(e)?;
        self.namespaces.wait_until_ready().await.map_err(e)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::ByteString;
    use k8s_openapi::api::core::v1::Secret;

    use super::strip_credentials;
    use crate::credentials::{Assembled, CONTENT_HASH_ANNOTATION};

    /// A tenant edits a mirrored credentials Secret but keeps (or forges) its hash annotation:
    /// the cached hash is that of the data actually there, so the edit is seen.
    #[test]
    fn a_forged_content_hash_on_a_credentials_copy_is_not_believed() {
        let genuine = Assembled {
            data: BTreeMap::from([("anthropic_api-key".to_owned(), b"sk-ant".to_vec())]),
            missing: vec![],
        };
        let mut copy = Secret {
            data: Some(BTreeMap::from([(
                "anthropic_api-key".to_owned(),
                ByteString(b"sk-evil".to_vec()),
            )])),
            ..Default::default()
        };
        copy.metadata.annotations = Some(BTreeMap::from([(
            CONTENT_HASH_ANNOTATION.to_owned(),
            genuine.content_hash(),
        )]));
        strip_credentials(&mut copy);
        assert!(copy.data.is_none());
        let cached = &copy.metadata.annotations.as_ref().unwrap()[CONTENT_HASH_ANNOTATION];
        assert_ne!(cached, &genuine.content_hash());
    }
}
