//! The whole controller loop against a stand-in API server (kmock plus a shim, see
//! `tests/support/kmock_shim.py` for what it does not emulate).

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use tollgate_operator::compile::{BudgetSpend, Settings, TeamlessKeys};
use tollgate_operator::crd::*;
use tollgate_operator::metrics::Metrics;
use tollgate_operator::reconcile::{Config, Reconciler};
use tollgate_operator::secrets::key_sha256;
use tollgate_operator::spend::{SpendFuture, SpendSource};

use support::{ApiServer, eventually};

const NS: &str = "tollgate-system";
const WAIT: Duration = Duration::from_secs(20);

struct FixedSpend;

impl SpendSource for FixedSpend {
    fn fetch(&self) -> SpendFuture<'_> {
        Box::pin(async {
            Ok(BTreeMap::from([(
                "platform-monthly".to_owned(),
                BudgetSpend {
                    spent_micro_usd: 12_340_000,
                    reserved_micro_usd: 0,
                    limit_micro_usd: 100_000_000,
                    window_start: "2026-11-01T00:00:00Z".into(),
                    resets_at: "2026-12-01T00:00:00Z".into(),
                },
            )]))
        })
    }
}

fn named(name: &str, ns: Option<&str>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: ns.map(Into::into),
        ..Default::default()
    }
}

fn ready_of(conditions: &[Condition]) -> Option<(String, String)> {
    conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| (c.status.clone(), c.reason.clone()))
}

/// The ModelProvider `anthropic` with `credential`.
async fn create_anthropic_provider(client: &kube::Client, credential: CredentialRef) {
    let provider = ModelProvider {
        metadata: named("anthropic", None),
        spec: ModelProviderSpec {
            kind: ProviderKind::Anthropic,
            endpoint: "https://api.anthropic.com".into(),
            credential: Some(credential),
            ..Default::default()
        },
        status: None,
    };
    Api::<ModelProvider>::all(client.clone())
        .create(&PostParams::default(), &provider)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controller_compiles_resources_into_configmaps_and_reports_status() {
    let server = ApiServer::start();
    let client = server.client();
    let pp = PostParams::default();

    Api::<Team>::all(client.clone())
        .create(
            &pp,
            &Team {
                metadata: named("platform", None),
                spec: TeamSpec {
                    allowed_namespaces: Some(AllowedNamespaces {
                        from: NamespacesFrom::All,
                        selector: None,
                    }),
                    ..Default::default()
                },
                status: None,
            },
        )
        .await
        .unwrap();
    create_anthropic_provider(
        &client,
        CredentialRef {
            env: Some("ANTHROPIC_API_KEY".into()),
            secret_key_ref: None,
        },
    )
    .await;
    Api::<ModelRoute>::all(client.clone())
        .create(
            &pp,
            &ModelRoute {
                metadata: named("claude", None),
                spec: ModelRouteSpec {
                    match_: "claude-*".into(),
                    priority: 100,
                    targets: vec![RouteTarget {
                        provider: "anthropic".into(),
                        model: None,
                        ..Default::default()
                    }],
                },
                status: None,
            },
        )
        .await
        .unwrap();
    Api::<Budget>::all(client.clone())
        .create(
            &pp,
            &Budget {
                metadata: named("platform-monthly", None),
                spec: BudgetSpec {
                    scope: BudgetScope {
                        kind: ScopeKind::Team,
                        name: "platform".into(),
                        namespace: None,
                    },
                    limit_usd: Some("100".into()),
                    period: Period::Monthly,
                    ..Default::default()
                },
                status: None,
            },
        )
        .await
        .unwrap();
    // Argo CD's tracking label and annotation must not spread to what the operator creates.
    let mut alice_meta = named("alice", Some("team-a"));
    alice_meta.labels = Some(BTreeMap::from([(
        "app.kubernetes.io/instance".into(),
        "tollgate-keys".into(),
    )]));
    alice_meta.annotations = Some(BTreeMap::from([(
        "argocd.argoproj.io/tracking-id".into(),
        "tollgate-keys:tollgate.dev/VirtualKey:team-a/alice".into(),
    )]));
    let keys_a: Api<VirtualKey> = Api::namespaced(client.clone(), "team-a");
    let alice_spec = VirtualKeySpec {
        team: Some("platform".into()),
        owner: Some("alice@acme.example".into()),
        enabled: true,
        ..Default::default()
    };
    keys_a
        .create(
            &pp,
            &VirtualKey {
                metadata: alice_meta,
                spec: alice_spec.clone(),
                status: None,
            },
        )
        .await
        .unwrap();
    keys_a
        .create(
            &pp,
            &VirtualKey {
                metadata: named("stray", Some("team-a")),
                spec: VirtualKeySpec {
                    team: Some("ghost".into()),
                    enabled: true,
                    ..Default::default()
                },
                status: None,
            },
        )
        .await
        .unwrap();

    let metrics = Arc::new(Metrics::new());
    let config = Config {
        settings: Settings {
            organization: Some("acme".into()),
            ..Settings::default()
        },
        policy_namespace: NS.into(),
        debounce: Duration::from_millis(50),
        resync: Duration::from_millis(700),
        spend_interval: Duration::from_millis(300),
        ..Config::default()
    };
    let running = Running::start(Reconciler::new(
        client.clone(),
        config,
        metrics.clone(),
        Some(Arc::new(FixedSpend)),
    ));

    // The generated Secret: a tg_ key, owned by the VirtualKey, no Argo CD metadata.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "team-a");
    let secret = eventually("the generated key Secret", WAIT, || async {
        secrets.get_opt("tollgate-vk-alice").await.unwrap()
    })
    .await;
    let key = String::from_utf8(secret.data.as_ref().unwrap()["key"].0.clone()).unwrap();
    assert!(key.starts_with("tg_") && key.len() == 67);
    let owner = &secret.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str(), owner.controller),
        ("VirtualKey", "alice", Some(true))
    );
    let labels = secret.metadata.labels.clone().unwrap_or_default();
    assert!(!labels.contains_key("app.kubernetes.io/instance"), "{labels:?}");
    let annotations = secret.metadata.annotations.unwrap_or_default();
    assert_eq!(
        annotations.keys().collect::<Vec<_>>(),
        [tollgate_operator::secrets::KEY_NAME_ANNOTATION],
        "only the operator's own annotation"
    );

    // The policy ConfigMaps: alice's hash, never her key; no Argo CD metadata.
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), NS);
    let sha = key_sha256(&key);
    let shard = eventually("alice in the key shard", WAIT, || async {
        let cm = cms.get_opt("tollgate-policy-keys-00").await.unwrap()?;
        let text = cm.data.as_ref()?.get("keys-00.json")?.clone();
        text.contains(&sha).then_some(cm)
    })
    .await;
    let text = &shard.data.as_ref().unwrap()["keys-00.json"];
    assert!(!text.contains(&key) && !text.contains("tollgate-vk-"), "{text}");
    assert!(
        !text.contains("team-a/stray"),
        "the key naming a missing team is left out"
    );
    let main = cms.get("tollgate-policy").await.unwrap();
    assert!(main.data.as_ref().unwrap()["policy.json"].contains("\"platform-monthly\""));
    for cm in [&shard, &main] {
        let l = cm.metadata.labels.clone().unwrap_or_default();
        assert_eq!(
            l.get("app.kubernetes.io/managed-by").map(String::as_str),
            Some("tollgate-operator")
        );
        assert!(!l.contains_key("app.kubernetes.io/instance"));
    }

    // Statuses: Ready with reasons, observedGeneration; spend on the budget.
    let alice = eventually("alice Ready", WAIT, || async {
        let k = keys_a.get("alice").await.unwrap();
        let st = k.status.clone()?;
        (ready_of(&st.conditions)? == ("True".into(), "Compiled".into())).then_some(k)
    })
    .await;
    let st = alice.status.clone().unwrap();
    assert_eq!(st.observed_generation, alice.metadata.generation);
    assert_eq!(st.key_id.as_deref(), Some("team-a/alice"));
    assert_eq!(st.config_map.as_deref(), Some("tollgate-policy-keys-00"));
    assert_eq!(alice.spec, alice_spec, "the spec is never mutated");
    eventually("stray Ready=False TeamNotFound", WAIT, || async {
        let st = keys_a.get("stray").await.unwrap().status?;
        (ready_of(&st.conditions)? == ("False".into(), "TeamNotFound".into())).then_some(())
    })
    .await;
    let budgets: Api<Budget> = Api::all(client.clone());
    let b = eventually("budget spend", WAIT, || async {
        let st = budgets.get("platform-monthly").await.unwrap().status?;
        st.spent.is_some().then_some(st)
    })
    .await;
    assert_eq!(b.spent.as_deref(), Some("$12.34"));
    assert_eq!(b.remaining.as_deref(), Some("$87.66"));
    assert_eq!(b.resets_at.as_deref(), Some("2026-12-01T00:00:00Z"));
    let teams: Api<Team> = Api::all(client.clone());
    assert_eq!(teams.get("platform").await.unwrap().status.unwrap().keys, 1);

    // An unchanged world writes nothing, through several resyncs and spend reads.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (cm_writes, status_writes) = (metrics.config_map_writes.get(), metrics.status_writes.get());
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert_eq!(
        metrics.config_map_writes.get(),
        cm_writes,
        "ConfigMaps rewritten with nothing changed"
    );
    assert_eq!(
        metrics.status_writes.get(),
        status_writes,
        "statuses rewritten with nothing changed"
    );
    assert!(
        metrics
            .reconciles
            .get_or_create(&tollgate_operator::metrics::ResultLabel { result: "ok".into() })
            .get()
            >= 3
    );

    // Deleting the VirtualKey removes it from the policy at once (and its Secret goes with it).
    keys_a.delete("alice", &DeleteParams::default()).await.unwrap();
    eventually("alice out of the policy", WAIT, || async {
        let cm = cms.get("tollgate-policy-keys-00").await.unwrap();
        (!cm.data?.get("keys-00.json")?.contains(&sha)).then_some(())
    })
    .await;
    assert!(secrets.get_opt("tollgate-vk-alice").await.unwrap().is_none());

    running.stop().await;
}

/// A reconciler running on its own task until [`Running::stop`].
struct Running {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), tollgate_operator::Error>>,
}

impl Running {
    fn start(reconciler: Reconciler) -> Self {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(reconciler.run(async move {
            let _ = stopped.await;
        }));
        Self { stop, task }
    }

    /// Stops it and checks it ended cleanly, within 5 s.
    async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
}

fn labelled_namespace(name: &str, inject: Option<&str>) -> k8s_openapi::api::core::v1::Namespace {
    let mut meta = named(name, None);
    meta.labels = inject.map(|v| BTreeMap::from([("tollgate.dev/inject".to_owned(), v.to_owned())]));
    k8s_openapi::api::core::v1::Namespace {
        metadata: meta,
        ..Default::default()
    }
}

fn secret(name: &str, ns: &str, data: &[(&str, &str)]) -> Secret {
    Secret {
        metadata: named(name, Some(ns)),
        data: Some(
            data.iter()
                .map(|(k, v)| ((*k).to_owned(), k8s_openapi::ByteString(v.as_bytes().to_vec())))
                .collect(),
        ),
        ..Default::default()
    }
}

/// A Secret labelled as a credential (`tollgate.dev/credential=true`).
fn credential_secret(name: &str, ns: &str, data: &[(&str, &str)]) -> Secret {
    let mut s = secret(name, ns, data);
    s.metadata.labels = Some(BTreeMap::from([(
        tollgate_operator::credentials::CREDENTIAL_LABEL.to_owned(),
        "true".to_owned(),
    )]));
    s
}

/// Sidecars in app namespaces need the policy and credentials next to them: the operator
/// copies both into every namespace labelled for injection, keeps the copies current, and
/// removes them when the label goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_and_credentials_are_mirrored_into_labelled_namespaces() {
    use k8s_openapi::api::core::v1::Namespace;
    let server = ApiServer::start();
    let client = server.client();
    let pp = PostParams::default();
    let namespaces: Api<Namespace> = Api::all(client.clone());
    for (name, label) in [
        ("dev-tools", Some("enabled")),
        ("ml", Some("opt-in")),
        ("plain", None),
    ] {
        namespaces
            .create(&pp, &labelled_namespace(name, label))
            .await
            .unwrap();
    }
    let system_secrets: Api<Secret> = Api::namespaced(client.clone(), NS);
    system_secrets
        .create(
            &pp,
            &credential_secret(
                "anthropic",
                NS,
                &[("api-key", "sk-ant-first"), ("unrelated", "do-not-copy")],
            ),
        )
        .await
        .unwrap();
    system_secrets
        .create(
            &pp,
            &secret("redis-ledger", NS, &[("url", "redis://:pw@redis:6379")]),
        )
        .await
        .unwrap();
    create_anthropic_provider(
        &client,
        CredentialRef {
            env: None,
            secret_key_ref: Some(SecretKeyRef {
                name: "anthropic".into(),
                key: "api-key".into(),
            }),
        },
    )
    .await;

    let config = Config {
        policy_namespace: NS.into(),
        debounce: Duration::from_millis(50),
        resync: Duration::from_secs(300),
        inject_namespace_label: "tollgate.dev/inject".into(),
        extra_credentials: vec![("redis-ledger".into(), "url".into())],
        ..Config::default()
    };
    let metrics = Arc::new(Metrics::new());
    let running = Running::start(Reconciler::new(client.clone(), config, metrics.clone(), None));

    let value = |s: &Secret, k: &str| {
        s.data
            .as_ref()
            .and_then(|d| d.get(k))
            .map(|v| String::from_utf8_lossy(&v.0).into_owned())
    };
    for ns in [NS, "dev-tools", "ml"] {
        let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
        let cm = eventually(&format!("the policy in {ns}"), WAIT, || async {
            cms.get_opt("tollgate-policy").await.unwrap()
        })
        .await;
        let doc = &cm.data.as_ref().unwrap()["policy.json"];
        assert!(
            doc.contains("/var/run/tollgate/credentials/anthropic_api-key"),
            "{doc}"
        );
        assert!(
            !doc.contains("sk-ant-first"),
            "a secret value reached a ConfigMap"
        );
        let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
        let creds = eventually(&format!("credentials in {ns}"), WAIT, || async {
            secrets.get_opt("tollgate-credentials").await.unwrap()
        })
        .await;
        assert_eq!(
            value(&creds, "anthropic_api-key").as_deref(),
            Some("sk-ant-first")
        );
        assert_eq!(
            value(&creds, "redis-ledger_url").as_deref(),
            Some("redis://:pw@redis:6379")
        );
        assert_eq!(
            creds.data.as_ref().unwrap().len(),
            2,
            "only referenced keys are copied"
        );
        assert_eq!(
            creds.metadata.labels.as_ref().unwrap()["app.kubernetes.io/managed-by"],
            "tollgate-operator"
        );
    }
    let plain: Api<ConfigMap> = Api::namespaced(client.clone(), "plain");
    assert!(
        plain.get_opt("tollgate-policy").await.unwrap().is_none(),
        "unlabelled namespace got the policy"
    );

    // A rotated provider key reaches the copies (the policy namespace's Secrets are watched).
    let rotated = serde_json::json!({"data": {"api-key": "c2stYW50LXJvdGF0ZWQ="}}); // sk-ant-rotated
    system_secrets
        .patch("anthropic", &PatchParams::default(), &Patch::Merge(rotated))
        .await
        .unwrap();
    let dev_secrets: Api<Secret> = Api::namespaced(client.clone(), "dev-tools");
    eventually("the rotated key in dev-tools", WAIT, || async {
        let s = dev_secrets.get("tollgate-credentials").await.unwrap();
        (value(&s, "anthropic_api-key").as_deref() == Some("sk-ant-rotated")).then_some(())
    })
    .await;

    // Turning injection off removes the copies.
    let off = serde_json::json!({"metadata": {"labels": {"tollgate.dev/inject": "disabled"}}});
    namespaces
        .patch("ml", &PatchParams::default(), &Patch::Merge(off))
        .await
        .unwrap();
    let ml_cms: Api<ConfigMap> = Api::namespaced(client.clone(), "ml");
    let ml_secrets: Api<Secret> = Api::namespaced(client.clone(), "ml");
    eventually("copies removed from ml", WAIT, || async {
        let gone = ml_cms.get_opt("tollgate-policy").await.unwrap().is_none()
            && ml_secrets
                .get_opt("tollgate-credentials")
                .await
                .unwrap()
                .is_none();
        gone.then_some(())
    })
    .await;
    assert!(metrics.mirror_writes.get() >= 5);

    running.stop().await;
}

/// One namespace refusing writes (a ResourceQuota) does not stop the others, the statuses, or
/// a key whose name is too long for a label value; a credential reference naming an
/// unlabelled Secret (the webhook's CA key, say) is refused on the resource's status and the
/// Secret is never copied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_refusing_namespace_does_not_stop_the_rest_and_unlabelled_secrets_stay_put() {
    use k8s_openapi::api::core::v1::Namespace;
    let server = ApiServer::start();
    let client = server.client();
    let pp = PostParams::default();
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(&pp, &labelled_namespace("good", Some("enabled")))
        .await
        .unwrap();
    let mut quota = labelled_namespace("quota", Some("enabled"));
    quota.metadata.annotations = Some(BTreeMap::from([(
        "kmock.test/refuse".to_owned(),
        "configmaps,secrets".to_owned(),
    )]));
    namespaces.create(&pp, &quota).await.unwrap();
    let system_secrets: Api<Secret> = Api::namespaced(client.clone(), NS);
    system_secrets
        .create(
            &pp,
            &credential_secret("anthropic", NS, &[("api-key", "sk-ant-ok")]),
        )
        .await
        .unwrap();
    system_secrets
        .create(&pp, &secret("webhook-ca", NS, &[("tls.key", "CA-PRIVATE-KEY")]))
        .await
        .unwrap();
    create_anthropic_provider(
        &client,
        CredentialRef {
            env: None,
            secret_key_ref: Some(SecretKeyRef {
                name: "anthropic".into(),
                key: "api-key".into(),
            }),
        },
    )
    .await;
    let sneaky = ModelProvider {
        metadata: named("sneaky", None),
        spec: ModelProviderSpec {
            kind: ProviderKind::Anthropic,
            endpoint: "https://attacker.example".into(),
            credential: Some(CredentialRef {
                env: None,
                secret_key_ref: Some(SecretKeyRef {
                    name: "webhook-ca".into(),
                    key: "tls.key".into(),
                }),
            }),
            ..Default::default()
        },
        status: None,
    };
    Api::<ModelProvider>::all(client.clone())
        .create(&pp, &sneaky)
        .await
        .unwrap();
    // 200 characters: too long for a label value (63), fine for the Secret name (212).
    let long_name = format!("{}.{}", "a".repeat(120), "b".repeat(79));
    let key = VirtualKey {
        metadata: named(&long_name, Some("good")),
        spec: VirtualKeySpec {
            enabled: true,
            ..Default::default()
        },
        status: None,
    };
    Api::<VirtualKey>::namespaced(client.clone(), "good")
        .create(&pp, &key)
        .await
        .unwrap();

    let config = Config {
        settings: Settings {
            teamless_keys: TeamlessKeys::Allow,
            ..Settings::default()
        },
        policy_namespace: NS.into(),
        debounce: Duration::from_millis(50),
        resync: Duration::from_secs(300),
        inject_namespace_label: "tollgate.dev/inject".into(),
        ..Config::default()
    };
    let metrics = Arc::new(Metrics::new());
    let running = Running::start(Reconciler::new(client.clone(), config, metrics.clone(), None));

    // The key, despite its name, reaches the policy and reports Ready.
    let keys: Api<VirtualKey> = Api::namespaced(client.clone(), "good");
    eventually("the long-named key Ready", WAIT, || async {
        let k = keys.get(&long_name).await.unwrap();
        let ready = ready_of(&k.status?.conditions)?;
        (ready.0 == "True").then_some(())
    })
    .await;
    let generated = Api::<Secret>::namespaced(client.clone(), "good")
        .get(&format!("tollgate-vk-{long_name}"))
        .await
        .unwrap();
    let labels = generated.metadata.labels.unwrap_or_default();
    let label = &labels[tollgate_operator::secrets::KEY_LABEL];
    assert!(tollgate_operator::names::is_label_value(label), "{label}");
    assert_eq!(
        generated.metadata.annotations.unwrap_or_default()[tollgate_operator::secrets::KEY_NAME_ANNOTATION],
        long_name
    );

    // The good namespace gets its copies although the quota namespace refuses them.
    let good_cms: Api<ConfigMap> = Api::namespaced(client.clone(), "good");
    eventually("the policy in good", WAIT, || async {
        good_cms.get_opt("tollgate-policy").await.unwrap()
    })
    .await;
    let creds = eventually("credentials in good", WAIT, || async {
        Api::<Secret>::namespaced(client.clone(), "good")
            .get_opt("tollgate-credentials")
            .await
            .unwrap()
    })
    .await;
    let data = creds.data.unwrap_or_default();
    assert!(data.contains_key("anthropic_api-key"), "{:?}", data.keys());
    assert!(
        !data.contains_key("webhook-ca_tls.key"),
        "an unlabelled Secret was copied"
    );
    let quota_cms: Api<ConfigMap> = Api::namespaced(client.clone(), "quota");
    assert!(quota_cms.get_opt("tollgate-policy").await.unwrap().is_none());

    // A tenant makes its copy of the key shard immutable and labels an object of its own like
    // the operator's: a revocation still reaches the copy, and the foreign object is left be.
    let shard = "tollgate-policy-keys-00";
    let freeze = serde_json::json!({"immutable": true});
    good_cms
        .patch(shard, &PatchParams::default(), &Patch::Merge(freeze))
        .await
        .unwrap();
    let mut foreign = ConfigMap {
        metadata: named("tenant-notes", Some("good")),
        ..Default::default()
    };
    foreign.metadata.labels = Some(BTreeMap::from([
        (
            "app.kubernetes.io/managed-by".to_owned(),
            "tollgate-operator".to_owned(),
        ),
        ("tollgate.dev/policy".to_owned(), "tollgate-policy".to_owned()),
    ]));
    good_cms.create(&pp, &foreign).await.unwrap();
    let off = serde_json::json!({"spec": {"enabled": false}});
    keys.patch(&long_name, &PatchParams::default(), &Patch::Merge(off))
        .await
        .unwrap();
    eventually("the revocation in good's immutable copy", WAIT, || async {
        // Replaced by delete and create: absent for a moment.
        let cm = good_cms.get_opt(shard).await.unwrap()?;
        cm.data?
            .get("keys-00.json")?
            .contains("\"enabled\":false")
            .then_some(())
    })
    .await;
    assert!(
        good_cms.get_opt("tenant-notes").await.unwrap().is_some(),
        "not the operator's to delete"
    );

    // The refusal is on the provider's status, with the reason.
    let providers: Api<ModelProvider> = Api::all(client.clone());
    let status = eventually("sneaky refused", WAIT, || async {
        let p = providers.get("sneaky").await.unwrap();
        let c = p.status?.conditions.into_iter().find(|c| c.type_ == "Ready")?;
        (c.reason == "CredentialNotAllowed").then_some(c)
    })
    .await;
    assert_eq!(status.status, "False");
    assert!(
        status.message.contains("tollgate.dev/credential=true"),
        "{}",
        status.message
    );
    let policy = Api::<ConfigMap>::namespaced(client.clone(), NS)
        .get("tollgate-policy")
        .await
        .unwrap();
    assert!(!policy.data.unwrap_or_default()["policy.json"].contains("attacker.example"));

    // And the failing namespace is named in an Event.
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::all(client.clone());
    eventually("an Event on the quota namespace", WAIT, || async {
        let list = events.list(&Default::default()).await.unwrap();
        list.items
            .into_iter()
            .find(|e| {
                e.reason.as_deref() == Some("PolicyMirrorFailed")
                    && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("quota")
            })
            .map(|e| assert!(e.note.unwrap_or_default().contains("exceeded quota")))
    })
    .await;

    running.stop().await;
}

/// Gateway mode (the default in the chart): an agent namespace gets only the sidecar policy,
/// which names the gateway as its one provider; no Secret of any kind is written there, and a
/// credentials copy left from direct mode is deleted. The release namespace keeps the full
/// policy and the credentials.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_mode_writes_no_secret_into_agent_namespaces() {
    use k8s_openapi::api::core::v1::Namespace;
    use tollgate_operator::compile::SidecarMode;
    let server = ApiServer::start();
    let client = server.client();
    let pp = PostParams::default();
    Api::<Namespace>::all(client.clone())
        .create(&pp, &labelled_namespace("dev", Some("enabled")))
        .await
        .unwrap();
    let dev_secrets: Api<Secret> = Api::namespaced(client.clone(), "dev");
    let mut leftover = secret(
        "tollgate-credentials",
        "dev",
        &[("anthropic_api-key", "sk-ant-old")],
    );
    leftover.metadata.labels = Some(BTreeMap::from([
        (
            "app.kubernetes.io/managed-by".to_owned(),
            "tollgate-operator".to_owned(),
        ),
        ("tollgate.dev/policy".to_owned(), "tollgate-policy".to_owned()),
    ]));
    dev_secrets.create(&pp, &leftover).await.unwrap();
    Api::<Secret>::namespaced(client.clone(), NS)
        .create(
            &pp,
            &credential_secret("anthropic", NS, &[("api-key", "sk-ant-live")]),
        )
        .await
        .unwrap();
    create_anthropic_provider(
        &client,
        CredentialRef {
            env: None,
            secret_key_ref: Some(SecretKeyRef {
                name: "anthropic".into(),
                key: "api-key".into(),
            }),
        },
    )
    .await;
    let route = ModelRoute {
        metadata: named("claude", None),
        spec: ModelRouteSpec {
            match_: "claude-*".into(),
            priority: 100,
            targets: vec![RouteTarget {
                provider: "anthropic".into(),
                model: None,
                ..Default::default()
            }],
        },
        status: None,
    };
    Api::<ModelRoute>::all(client.clone())
        .create(&pp, &route)
        .await
        .unwrap();
    for (ns, name) in [("team-a", "alice"), ("dev", "carol")] {
        let key = VirtualKey {
            metadata: named(name, Some(ns)),
            spec: VirtualKeySpec {
                enabled: true,
                ..Default::default()
            },
            status: None,
        };
        Api::<VirtualKey>::namespaced(client.clone(), ns)
            .create(&pp, &key)
            .await
            .unwrap();
    }

    let gateway = "http://tollgate-gateway.tollgate-system.svc:8080";
    let config = Config {
        settings: Settings {
            sidecar: SidecarMode::Gateway { url: gateway.into() },
            teamless_keys: TeamlessKeys::Allow,
            ..Settings::default()
        },
        policy_namespace: NS.into(),
        debounce: Duration::from_millis(50),
        resync: Duration::from_secs(300),
        inject_namespace_label: "tollgate.dev/inject".into(),
        ..Config::default()
    };
    let running = Running::start(Reconciler::new(
        client.clone(),
        config,
        Arc::new(Metrics::new()),
        None,
    ));

    let dev_cms: Api<ConfigMap> = Api::namespaced(client.clone(), "dev");
    let sidecar_policy = eventually("the sidecar policy in dev", WAIT, || async {
        let cm = dev_cms.get_opt("tollgate-policy").await.unwrap()?;
        cm.data?.get("policy.json").cloned()
    })
    .await;
    let doc: serde_json::Value = serde_json::from_str(&sidecar_policy).unwrap();
    assert_eq!(doc["providers"][0]["kind"], "tollgate");
    assert_eq!(doc["providers"][0]["endpoint"], gateway);
    assert!(doc["providers"][0].get("credential").is_none(), "{doc}");
    assert_eq!(doc["routes"][0]["match"], "claude-*");
    assert!(!sidecar_policy.contains("credentials"), "{sidecar_policy}");
    // dev's own key reaches its sidecar policy, by hash; another namespace's key does not.
    let shard = eventually("carol in dev's key shard", WAIT, || async {
        let cm = dev_cms.get_opt("tollgate-policy-keys-00").await.unwrap()?;
        let text = cm.data?.get("keys-00.json")?.clone();
        text.contains("dev/carol").then_some(text)
    })
    .await;
    assert!(!shard.contains("team-a/alice"), "{shard}");
    // No Secret of Tollgate's in dev: the leftover copy is gone, nothing new was written.
    eventually("the leftover credentials copy deleted", WAIT, || async {
        dev_secrets
            .get_opt("tollgate-credentials")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    // Only carol's own generated key: no provider, ledger or sink credential.
    let in_dev = dev_secrets.list(&Default::default()).await.unwrap();
    let names: Vec<_> = in_dev
        .items
        .iter()
        .filter_map(|s| s.metadata.name.clone())
        .collect();
    assert_eq!(names, ["tollgate-vk-carol"]);
    // The release namespace: the full policy (the real provider) and the credentials.
    let full = Api::<ConfigMap>::namespaced(client.clone(), NS)
        .get("tollgate-policy")
        .await
        .unwrap();
    assert!(full.data.unwrap_or_default()["policy.json"].contains("https://api.anthropic.com"));
    let creds = eventually("credentials in the release namespace", WAIT, || async {
        Api::<Secret>::namespaced(client.clone(), NS)
            .get_opt("tollgate-credentials")
            .await
            .unwrap()
    })
    .await;
    assert!(creds.data.unwrap_or_default().contains_key("anthropic_api-key"));

    running.stop().await;
}

/// A team admits keys only from the namespaces its selector matches, and a key without a team
/// is refused by default: both are `Ready=False, NamespaceNotAllowed` and out of the policy.
/// The operator watches every Namespace (metadata only): labelling one into the team brings its
/// key in without any change to the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_team_admits_keys_only_from_the_namespaces_it_selects() {
    use k8s_openapi::api::core::v1::Namespace;
    let server = ApiServer::start();
    let client = server.client();
    let pp = PostParams::default();
    let namespaces: Api<Namespace> = Api::all(client.clone());
    for (name, team) in [("team-a", Some("platform")), ("team-b", None)] {
        let mut ns = labelled_namespace(name, None);
        ns.metadata.labels = team.map(|t| BTreeMap::from([("tollgate.dev/team".to_owned(), t.to_owned())]));
        namespaces.create(&pp, &ns).await.unwrap();
    }
    let team = Team {
        metadata: named("platform", None),
        spec: TeamSpec {
            allowed_namespaces: Some(AllowedNamespaces {
                from: NamespacesFrom::Selector,
                selector: Some("tollgate.dev/team=platform".parse().unwrap()),
            }),
            ..Default::default()
        },
        status: None,
    };
    Api::<Team>::all(client.clone()).create(&pp, &team).await.unwrap();
    for (ns, name, team) in [
        ("team-a", "alice", Some("platform")),
        ("team-b", "mallory", Some("platform")),
        ("team-b", "drifter", None),
    ] {
        let key = VirtualKey {
            metadata: named(name, Some(ns)),
            spec: VirtualKeySpec {
                team: team.map(Into::into),
                enabled: true,
                ..Default::default()
            },
            status: None,
        };
        Api::<VirtualKey>::namespaced(client.clone(), ns)
            .create(&pp, &key)
            .await
            .unwrap();
    }

    let config = Config {
        policy_namespace: NS.into(),
        debounce: Duration::from_millis(50),
        resync: Duration::from_secs(300),
        ..Config::default()
    };
    let running = Running::start(Reconciler::new(
        client.clone(),
        config,
        Arc::new(Metrics::new()),
        None,
    ));

    let ready = |ns: &'static str, name: &'static str, want: (&'static str, &'static str)| {
        let keys: Api<VirtualKey> = Api::namespaced(client.clone(), ns);
        async move {
            eventually(&format!("{ns}/{name} {want:?}"), WAIT, || async {
                let st = keys.get(name).await.unwrap().status?;
                let c = st.conditions.into_iter().find(|c| c.type_ == "Ready")?;
                ((c.status.as_str(), c.reason.as_str()) == want).then_some(c.message)
            })
            .await
        }
    };
    ready("team-a", "alice", ("True", "Compiled")).await;
    let why = ready("team-b", "mallory", ("False", "NamespaceNotAllowed")).await;
    assert!(why.contains("\"team-b\""), "{why}");
    let why = ready("team-b", "drifter", ("False", "NamespaceNotAllowed")).await;
    assert!(why.contains("--teamless-keys=deny"), "{why}");
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), NS);
    let shard = |cm: Option<ConfigMap>| -> String {
        cm.and_then(|c| c.data?.get("keys-00.json").cloned())
            .unwrap_or_default()
    };
    let keys = shard(cms.get_opt("tollgate-policy-keys-00").await.unwrap());
    assert!(keys.contains("team-a/alice"), "{keys}");
    assert!(!keys.contains("team-b/"), "{keys}");

    // The namespace joins the team: its key follows, the teamless one does not.
    let join = serde_json::json!({"metadata": {"labels": {"tollgate.dev/team": "platform"}}});
    namespaces
        .patch("team-b", &PatchParams::default(), &Patch::Merge(join))
        .await
        .unwrap();
    ready("team-b", "mallory", ("True", "Compiled")).await;
    eventually("mallory in the policy", WAIT, || async {
        let keys = shard(cms.get_opt("tollgate-policy-keys-00").await.unwrap());
        keys.contains("team-b/mallory").then_some(())
    })
    .await;
    ready("team-b", "drifter", ("False", "NamespaceNotAllowed")).await;
    let teams: Api<Team> = Api::all(client.clone());
    eventually("the team counts two keys", WAIT, || async {
        (teams.get("platform").await.unwrap().status?.keys == 2).then_some(())
    })
    .await;

    running.stop().await;
}
