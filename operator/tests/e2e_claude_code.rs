//! End to end: manifests -> the operator against the stand-in API server -> policy
//! ConfigMaps -> a directory like the proxy's projected volume -> the real `tollgate-proxy`
//! -> the real Claude Code: allowed with the generated key, refused once the VirtualKey is
//! deleted.

mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::Value;
use tollgate_operator::compile::Settings;
use tollgate_operator::metrics::Metrics;
use tollgate_operator::reconcile::{Config, Reconciler};
use tollgate_tests::fake_anthropic::{DEFAULT_REPLY, FakeAnthropic, FakeConfig};
use tollgate_tests::harness::{Proxy, send};
use tollgate_tests::policy::{PROVIDER_KEY, PROVIDER_KEY_ENV, write_atomically};

use support::agents::proxy_bin;
use support::{ApiServer, eventually};
use tollgate_tests::claude::{claude_bin, run_claude};

const NS: &str = "tollgate-system";

/// Copies the policy ConfigMaps into `dir` as the kubelet does for a projected volume
/// (each file replaced by rename; files of vanished ConfigMaps removed). Returns whether
/// anything changed.
async fn sync(client: &kube::Client, dir: &Path) -> bool {
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), NS);
    let list = cms
        .list(&ListParams::default().labels("tollgate.dev/policy=tollgate-policy"))
        .await
        .unwrap();
    let mut wanted = std::collections::BTreeSet::new();
    let mut changed = false;
    for cm in list.items {
        for (file, content) in cm.data.unwrap_or_default() {
            let path = dir.join(&file);
            if std::fs::read_to_string(&path).ok().as_deref() != Some(content.as_str()) {
                write_atomically(&path, &content).unwrap();
                changed = true;
            }
            wanted.insert(file);
        }
    }
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if !wanted.contains(&p.file_name().unwrap().to_string_lossy().into_owned()) {
            std::fs::remove_file(p).unwrap();
            changed = true;
        }
    }
    changed
}

async fn claude(bin: &Path, base_url: &str, key: &str) -> (Option<i32>, Value, String) {
    let (b, u, k) = (bin.to_owned(), base_url.to_owned(), key.to_owned());
    let base = format!("{u}/anthropic");
    let env = [
        ("ANTHROPIC_BASE_URL", base.as_str()),
        ("ANTHROPIC_AUTH_TOKEN", k.as_str()),
    ];
    let run = tokio::task::block_in_place(|| run_claude(&b, &["-p", "say hi"], &env, None));
    (run.code, run.json, run.stdout)
}

fn manifests(upstream: &str) -> String {
    format!(
        r#"
apiVersion: tollgate.dev/v1alpha1
kind: ModelProvider
metadata: {{name: fake}}
spec:
  kind: anthropic
  endpoint: "{upstream}"
  credential: {{env: {PROVIDER_KEY_ENV}}}
---
apiVersion: tollgate.dev/v1alpha1
kind: ModelRoute
metadata: {{name: claude}}
spec:
  match: "claude-*"
  targets: [{{provider: fake}}]
---
apiVersion: tollgate.dev/v1alpha1
kind: Team
metadata: {{name: platform}}
spec: {{allowedNamespaces: {{from: Selector, selector: {{matchLabels: {{kubernetes.io/metadata.name: team-a}}}}}}}}
---
apiVersion: tollgate.dev/v1alpha1
kind: VirtualKey
metadata: {{name: alice, namespace: team-a}}
spec:
  owner: alice@acme.example
  team: platform
"#
    )
}

/// Creates every manifest through the API, as `kubectl apply` would.
async fn apply_manifests(client: &kube::Client, text: &str) {
    for d in serde_yaml::Deserializer::from_str(text) {
        let doc: Value = serde::Deserialize::deserialize(d).unwrap();
        let kind = doc["kind"].as_str().unwrap().to_owned();
        let pp = PostParams::default();
        let ns = doc["metadata"]["namespace"].as_str().map(str::to_owned);
        let c = client.clone();
        use tollgate_operator::crd::*;
        match kind.as_str() {
            "ModelProvider" => drop(
                Api::<ModelProvider>::all(c)
                    .create(&pp, &serde_json::from_value(doc).unwrap())
                    .await
                    .unwrap(),
            ),
            "ModelRoute" => drop(
                Api::<ModelRoute>::all(c)
                    .create(&pp, &serde_json::from_value(doc).unwrap())
                    .await
                    .unwrap(),
            ),
            "Team" => drop(
                Api::<Team>::all(c)
                    .create(&pp, &serde_json::from_value(doc).unwrap())
                    .await
                    .unwrap(),
            ),
            "VirtualKey" => drop(
                Api::<VirtualKey>::namespaced(c, &ns.unwrap())
                    .create(&pp, &serde_json::from_value(doc).unwrap())
                    .await
                    .unwrap(),
            ),
            other => panic!("unexpected kind {other}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claude_code_is_allowed_with_a_generated_key_and_refused_once_the_virtual_key_is_deleted() {
    let Some(claude_bin) = claude_bin() else { return };
    let proxy_bin = proxy_bin();
    let fake = FakeAnthropic::start(FakeConfig::new(PROVIDER_KEY)).await.unwrap();
    let server = ApiServer::start();
    let client = server.client();
    apply_manifests(&client, &manifests(&fake.base_url())).await;

    let config = Config {
        settings: Settings {
            organization: Some("acme".into()),
            ..Settings::default()
        },
        policy_namespace: NS.into(),
        debounce: Duration::from_millis(50),
        ..Config::default()
    };
    let reconciler = Reconciler::new(client.clone(), config, Arc::new(Metrics::new()), None);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let operator = tokio::spawn(reconciler.run(async move {
        let _ = stopped.await;
    }));

    // The key the engineer is given: from the generated Secret.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "team-a");
    let key = eventually("the generated Secret", Duration::from_secs(20), || async {
        let s = secrets.get_opt("tollgate-vk-alice").await.unwrap()?;
        String::from_utf8(s.data?.get("key")?.0.clone()).ok()
    })
    .await;

    // The projected volume: wait until alice's hash is in it.
    let dir = tempfile::tempdir().unwrap();
    let sha = tollgate_operator::secrets::key_sha256(&key);
    eventually("the policy with alice", Duration::from_secs(20), || async {
        sync(&client, dir.path()).await;
        let all: String = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
            .collect();
        (all.contains(&sha) && all.contains("\"fake\"")).then_some(())
    })
    .await;

    let proxy = Proxy::start(&proxy_bin, dir.path(), &[(PROVIDER_KEY_ENV, PROVIDER_KEY)]).unwrap();
    let (code, json, stdout) = claude(&claude_bin, &proxy.base_url(), &key).await;
    assert_eq!(
        json["is_error"],
        Value::Bool(false),
        "{stdout}\nproxy logs:\n{}",
        proxy.logs()
    );
    assert_eq!(code, Some(0));
    assert!(
        json["result"]
            .as_str()
            .unwrap_or_default()
            .contains(DEFAULT_REPLY),
        "{stdout}"
    );
    assert!(
        proxy.logs().contains("\"key_id\":\"team-a/alice\""),
        "{}",
        proxy.logs()
    );
    assert!(!proxy.logs().contains(&key), "the key is never logged");

    // Delete the VirtualKey: the operator rewrites the shard, the volume follows, the proxy
    // reloads and refuses the key.
    let keys: Api<tollgate_operator::crd::VirtualKey> = Api::namespaced(client.clone(), "team-a");
    keys.delete("alice", &DeleteParams::default()).await.unwrap();
    let url = format!("{}/anthropic/v1/models", proxy.base_url());
    let auth = format!("Bearer {key}");
    eventually("the proxy refusing alice", Duration::from_secs(20), || async {
        sync(&client, dir.path()).await;
        let r = send("GET", &url, &[("authorization", &auth)], bytes::Bytes::new())
            .await
            .unwrap();
        (r.status == 401).then_some(())
    })
    .await;
    let upstream_before = fake.requests().len();
    let (_, json, stdout) = claude(&claude_bin, &proxy.base_url(), &key).await;
    assert_eq!(json["is_error"], Value::Bool(true), "{stdout}");
    let result = json["result"].as_str().unwrap_or_default();
    assert!(
        result.contains("401") && result.contains("invalid virtual key"),
        "{stdout}"
    );
    assert_eq!(
        fake.requests().len(),
        upstream_before,
        "nothing reached the upstream"
    );

    let _ = stop.send(());
    operator.await.unwrap().unwrap();
}
