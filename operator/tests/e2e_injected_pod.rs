//! End to end, the way a platform team rolls Tollgate out: a namespace labelled for
//! injection, a provider credential in a Secret, a VirtualKey; the operator (against the
//! stand-in API server) mirrors policy and credentials into the namespace; the webhook's
//! patch turns a developer's plain Claude Code pod into a governed one. Then a small
//! "kubelet" runs that patched pod for real: it materializes the pod's volumes from the API
//! objects, starts the sidecar with exactly the patched args and env (the real
//! `tollgate-proxy`), waits for its startup probe, and runs the real Claude Code with the
//! agent container's patched env. Nothing in between is hand-written.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use kube::api::{Api, ObjectMeta, PostParams};
use serde_json::{Value, json};
use tollgate_operator::compile::Settings;
use tollgate_operator::crd::*;
use tollgate_operator::inject::{InjectionConfig, Injector, Mode, Outcome, review};
use tollgate_operator::metrics::Metrics;
use tollgate_operator::reconcile::{Config, Reconciler};
use tollgate_tests::fake_anthropic::{DEFAULT_REPLY, FakeAnthropic, FakeConfig};
use tollgate_tests::harness::send;
use tollgate_tests::policy::PROVIDER_KEY;

use support::agents::proxy_bin;
use support::{ApiServer, eventually};
use tollgate_tests::claude::{claude_bin, run_claude};

const NS: &str = "tollgate-system";
const APP_NS: &str = "dev-tools";
const WAIT: Duration = Duration::from_secs(20);

fn meta(name: &str, ns: Option<&str>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: ns.map(Into::into),
        ..Default::default()
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap()
}

async fn create_world(client: &kube::Client, upstream: &str) {
    let pp = PostParams::default();
    let mut ns = Namespace {
        metadata: meta(APP_NS, None),
        ..Default::default()
    };
    ns.metadata.labels = Some(BTreeMap::from([("tollgate.dev/inject".into(), "enabled".into())]));
    Api::<Namespace>::all(client.clone())
        .create(&pp, &ns)
        .await
        .unwrap();
    let mut provider_meta = meta("fake-provider", Some(NS));
    provider_meta.labels = Some(BTreeMap::from([(
        tollgate_operator::credentials::CREDENTIAL_LABEL.to_owned(),
        "true".to_owned(),
    )]));
    let provider_secret = Secret {
        metadata: provider_meta,
        data: Some(BTreeMap::from([(
            "api-key".into(),
            k8s_openapi::ByteString(PROVIDER_KEY.as_bytes().to_vec()),
        )])),
        ..Default::default()
    };
    Api::<Secret>::namespaced(client.clone(), NS)
        .create(&pp, &provider_secret)
        .await
        .unwrap();
    let provider = ModelProvider {
        metadata: meta("fake", None),
        spec: ModelProviderSpec {
            kind: ProviderKind::Anthropic,
            endpoint: upstream.into(),
            credential: Some(CredentialRef {
                env: None,
                secret_key_ref: Some(SecretKeyRef {
                    name: "fake-provider".into(),
                    key: "api-key".into(),
                }),
            }),
            ..Default::default()
        },
        status: None,
    };
    Api::<ModelProvider>::all(client.clone())
        .create(&pp, &provider)
        .await
        .unwrap();
    let route = ModelRoute {
        metadata: meta("claude", None),
        spec: ModelRouteSpec {
            match_: "claude-*".into(),
            priority: 100,
            targets: vec![RouteTarget {
                provider: "fake".into(),
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
    let team = Team {
        metadata: meta("platform", None),
        spec: TeamSpec {
            allowed_namespaces: Some(AllowedNamespaces {
                from: NamespacesFrom::All,
                selector: None,
            }),
            ..Default::default()
        },
        status: None,
    };
    Api::<Team>::all(client.clone()).create(&pp, &team).await.unwrap();
    let key = VirtualKey {
        metadata: meta("alice", Some(APP_NS)),
        spec: VirtualKeySpec {
            team: Some("platform".into()),
            owner: Some("alice@acme.example".into()),
            enabled: true,
            ..Default::default()
        },
        status: None,
    };
    Api::<VirtualKey>::namespaced(client.clone(), APP_NS)
        .create(&pp, &key)
        .await
        .unwrap();
}

/// The pod a developer writes: Claude Code, its key named by annotation, nothing else.
fn developer_pod(proxy_port: u16) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "claude", "namespace": APP_NS, "annotations": {
            "tollgate.dev/virtual-key-secret": "tollgate-vk-alice",
            "tollgate.dev/proxy-port": proxy_port.to_string(),
        }},
        "spec": {"containers": [{"name": "claude", "image": "node:20-slim",
                                 "command": ["claude", "-p", "say hi"]}]}
    })
}

/// A tiny kubelet: volumes from API objects into directories, env resolved from Secrets.
struct Kubelet {
    client: kube::Client,
    namespace: String,
    root: tempfile::TempDir,
    /// mountPath -> host directory (a mount path that is already a host path maps to itself).
    mounts: Vec<(String, PathBuf)>,
}

impl Kubelet {
    async fn secret_value(&self, name: &str, key: &str) -> String {
        let s = Api::<Secret>::namespaced(self.client.clone(), &self.namespace)
            .get(name)
            .await
            .unwrap();
        String::from_utf8(s.data.unwrap()[key].0.clone()).unwrap()
    }

    async fn write_volume(&self, volume: &Value, dir: &Path) {
        std::fs::create_dir_all(dir).unwrap();
        if let Some(sources) = volume.pointer("/projected/sources").and_then(Value::as_array) {
            for src in sources {
                let name = src["configMap"]["name"].as_str().unwrap();
                let optional = src["configMap"]["optional"] == true;
                let cm = Api::<ConfigMap>::namespaced(self.client.clone(), &self.namespace)
                    .get_opt(name)
                    .await
                    .unwrap();
                match cm {
                    Some(cm) => {
                        let data = cm.data.unwrap_or_default();
                        // As the kubelet: with `items`, only the listed keys, at their paths.
                        match src["configMap"]["items"].as_array() {
                            Some(items) => {
                                for item in items {
                                    let (key, path) =
                                        (item["key"].as_str().unwrap(), item["path"].as_str().unwrap());
                                    match data.get(key) {
                                        Some(content) => std::fs::write(dir.join(path), content).unwrap(),
                                        None => assert!(optional, "ConfigMap {name} has no key {key}"),
                                    }
                                }
                            }
                            None => {
                                for (file, content) in data {
                                    std::fs::write(dir.join(file), content).unwrap();
                                }
                            }
                        }
                    }
                    None => assert!(optional, "required ConfigMap {name} is missing"),
                }
            }
        } else if let Some(secret) = volume.get("secret") {
            let name = secret["secretName"].as_str().unwrap();
            let s = Api::<Secret>::namespaced(self.client.clone(), &self.namespace)
                .get_opt(name)
                .await
                .unwrap();
            match s {
                Some(s) => {
                    for (file, v) in s.data.unwrap_or_default() {
                        std::fs::write(dir.join(file), v.0).unwrap();
                    }
                }
                None => assert!(secret["optional"] == true, "required Secret {name} is missing"),
            }
        } else {
            assert!(volume.get("emptyDir").is_some(), "unexpected volume {volume}");
        }
    }

    /// Materializes the volumes `container` mounts.
    async fn mount(&mut self, pod: &Value, container: &Value) {
        let volumes = pod["spec"]["volumes"].as_array().unwrap();
        for m in container["volumeMounts"].as_array().into_iter().flatten() {
            let name = m["name"].as_str().unwrap();
            let path = m["mountPath"].as_str().unwrap().to_owned();
            let volume = volumes
                .iter()
                .find(|v| v["name"] == name)
                .expect("mounted volume exists");
            let host = if Path::new(&path).starts_with(std::env::temp_dir()) {
                PathBuf::from(&path)
            } else {
                self.root.path().join(name)
            };
            self.write_volume(volume, &host).await;
            self.mounts.push((path, host));
        }
    }

    fn remap(&self, s: &str) -> String {
        let mut out = s.to_owned();
        for (path, host) in &self.mounts {
            out = out.replace(path.as_str(), &host.display().to_string());
        }
        out
    }

    async fn env(&self, container: &Value) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for e in container["env"].as_array().into_iter().flatten() {
            let name = e["name"].as_str().unwrap().to_owned();
            let value = match (e.get("value"), e.pointer("/valueFrom/secretKeyRef")) {
                (Some(v), _) => self.remap(v.as_str().unwrap()),
                (None, Some(r)) => {
                    self.secret_value(r["name"].as_str().unwrap(), r["key"].as_str().unwrap())
                        .await
                }
                _ => panic!("unsupported env source {e}"),
            };
            out.push((name, value));
        }
        out
    }
}

impl Kubelet {
    /// Starts `sidecar` of `pod` exactly as patched (volumes, args, env) with the real
    /// `tollgate-proxy`, and waits for its startup probe as the kubelet does before starting
    /// the agent container.
    async fn start_sidecar(&mut self, pod: &Value, sidecar: &Value, proxy: &Path) -> Sidecar {
        self.mount(pod, sidecar).await;
        let args: Vec<String> = sidecar["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| self.remap(a.as_str().unwrap()))
            .collect();
        let env = self.env(sidecar).await;
        let log = self.root.path().join("sidecar.log");
        let log_file = std::fs::File::create(&log).unwrap();
        let child = Command::new(proxy)
            .args(&args)
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("start the sidecar");
        let started = Sidecar { child, log };
        let probe = &sidecar["startupProbe"]["httpGet"];
        let probe_url = format!(
            "http://127.0.0.1:{}{}",
            probe["port"],
            probe["path"].as_str().unwrap()
        );
        eventually("the sidecar's startup probe", WAIT, || async {
            let r = send("GET", &probe_url, &[], bytes::Bytes::new()).await.ok()?;
            (r.status == 200).then_some(())
        })
        .await;
        started
    }
}

struct Sidecar {
    child: Child,
    log: PathBuf,
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Sidecar {
    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_claude_code_pod_in_a_labelled_namespace_is_governed_by_its_injected_sidecar() {
    let Some(claude) = claude_bin() else { return };
    let proxy = proxy_bin();
    let fake = FakeAnthropic::start(FakeConfig::new(PROVIDER_KEY)).await.unwrap();
    let server = ApiServer::start();
    let client = server.client();
    create_world(&client, &fake.base_url()).await;

    // Credentials are files in the sidecar's credentials mount; here that path is a temp dir
    // the kubelet fills from the mirrored Secret.
    let creds_dir = tempfile::tempdir().unwrap();
    let creds_path = creds_dir.path().display().to_string();
    let config = Config {
        settings: Settings {
            credentials_dir: creds_path.clone(),
            ..Settings::default()
        },
        policy_namespace: NS.into(),
        debounce: Duration::from_millis(50),
        inject_namespace_label: "tollgate.dev/inject".into(),
        ..Config::default()
    };
    let reconciler = Reconciler::new(client.clone(), config, Arc::new(Metrics::new()), None);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let operator = tokio::spawn(reconciler.run(async move {
        let _ = stopped.await;
    }));

    // The operator's copies in the app namespace, and alice's generated key.
    let app_cms: Api<ConfigMap> = Api::namespaced(client.clone(), APP_NS);
    let app_secrets: Api<Secret> = Api::namespaced(client.clone(), APP_NS);
    eventually("policy, credentials and key in dev-tools", WAIT, || async {
        let policy = app_cms.get_opt("tollgate-policy").await.unwrap()?;
        let shard = app_cms.get_opt("tollgate-policy-keys-00").await.unwrap()?;
        let creds = app_secrets.get_opt("tollgate-credentials").await.unwrap()?;
        app_secrets.get_opt("tollgate-vk-alice").await.unwrap()?;
        let ok = policy.data?.get("policy.json")?.contains("\"fake\"")
            && shard.data?.get("keys-00.json")?.contains("dev-tools/alice")
            && creds.data?.contains_key("fake-provider_api-key");
        ok.then_some(())
    })
    .await;

    // The webhook's patch for the developer's pod.
    let admin_port = free_port();
    let proxy_port = free_port();
    let injector = Injector {
        config: InjectionConfig::parse(&format!(
            "image: tollgate-proxy:test\nadminPort: {admin_port}\nlogFormat: json"
        ))
        .unwrap(),
        policy_name: "tollgate-policy".into(),
        max_key_shards: 16,
        credentials_secret: "tollgate-credentials".into(),
        credentials_dir: creds_path.clone(),
        direct: true,
    };
    let original = developer_pod(proxy_port);
    let Outcome::Inject(patch) = review(&injector, Mode::Enabled, &original) else {
        panic!("the pod was not injected")
    };
    let mut pod = original.clone();
    json_patch::patch(&mut pod, &patch).unwrap();
    let sidecar = pod["spec"]["initContainers"][0].clone();
    let agent = pod["spec"]["containers"][0].clone();
    assert_eq!(sidecar["name"], "tollgate-proxy");
    assert!(
        agent.get("volumeMounts").is_none(),
        "the agent sees no policy or credentials"
    );

    // Run the sidecar exactly as patched.
    let mut kubelet = Kubelet {
        client: client.clone(),
        namespace: APP_NS.into(),
        root: tempfile::tempdir().unwrap(),
        mounts: Vec::new(),
    };
    let sidecar_proc = kubelet.start_sidecar(&pod, &sidecar, &proxy).await;

    // The agent container's env, resolved as the kubelet would (the key from its Secret).
    let agent_env = kubelet.env(&agent).await;
    let get = |k: &str| agent_env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    assert_eq!(
        get("ANTHROPIC_BASE_URL"),
        Some(format!("http://127.0.0.1:{proxy_port}/anthropic"))
    );
    assert!(get("ANTHROPIC_AUTH_TOKEN").is_some_and(|k| k.starts_with("tg_")));
    assert!(
        !agent_env.iter().any(|(_, v)| v.contains(PROVIDER_KEY)),
        "provider key leaked to the agent"
    );

    let env: Vec<(&str, &str)> = agent_env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let run = tokio::task::block_in_place(|| run_claude(&claude, &["-p", "say hi"], &env, None));
    assert!(
        !run.is_error(),
        "{}\nsidecar logs:\n{}",
        run.output(),
        sidecar_proc.logs()
    );
    assert_eq!(run.code, Some(0));
    assert!(run.result().contains(DEFAULT_REPLY), "{}", run.stdout);
    let logs = sidecar_proc.logs();
    assert!(logs.contains("\"key_id\":\"dev-tools/alice\""), "{logs}");
    assert!(!logs.contains(PROVIDER_KEY), "provider key logged");
    assert!(
        !fake.requests().is_empty(),
        "the fake provider was reached with the mirrored credential"
    );
    // The ledger and audit spool live on the pod's emptyDir.
    let data = kubelet
        .mounts
        .iter()
        .find(|(p, _)| p == "/var/lib/tollgate")
        .map(|(_, h)| h.clone())
        .unwrap();
    assert!(
        data.join("ledger.journal").exists(),
        "ledger journal on the emptyDir"
    );
    assert!(data.join("audit").is_dir(), "audit spool on the emptyDir");

    let _ = stop.send(());
    operator.await.unwrap().unwrap();
}

/// Gateway mode, the default: the operator mirrors only the sidecar policy into the labelled
/// namespace, the injected sidecar holds no credential and forwards Claude Code's requests
/// with its virtual key to the gateway (a real `tollgate-proxy` run from the release
/// namespace's ConfigMaps and credentials Secret), which reaches the provider.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_gateway_mode_the_injected_sidecar_holds_no_credential_and_goes_through_the_gateway() {
    use tollgate_operator::compile::SidecarMode;
    let Some(claude) = claude_bin() else { return };
    let proxy = proxy_bin();
    let fake = FakeAnthropic::start(FakeConfig::new(PROVIDER_KEY)).await.unwrap();
    let server = ApiServer::start();
    let client = server.client();
    create_world(&client, &fake.base_url()).await;

    let gateway_port = free_port();
    let gateway_url = format!("http://127.0.0.1:{gateway_port}");
    let gateway_root = tempfile::tempdir().unwrap();
    let gateway_creds = gateway_root.path().join("credentials");
    let config = Config {
        settings: Settings {
            credentials_dir: gateway_creds.display().to_string(),
            sidecar: SidecarMode::Gateway {
                url: gateway_url.clone(),
            },
            ..Settings::default()
        },
        policy_namespace: NS.into(),
        debounce: Duration::from_millis(50),
        inject_namespace_label: "tollgate.dev/inject".into(),
        ..Config::default()
    };
    let reconciler = Reconciler::new(client.clone(), config, Arc::new(Metrics::new()), None);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let operator = tokio::spawn(reconciler.run(async move {
        let _ = stopped.await;
    }));

    // The labelled namespace: the sidecar policy naming the gateway, alice's key, no other
    // Secret (no provider, ledger or sink credential).
    let app_cms: Api<ConfigMap> = Api::namespaced(client.clone(), APP_NS);
    let app_secrets: Api<Secret> = Api::namespaced(client.clone(), APP_NS);
    let sidecar_policy = eventually("the sidecar policy and key in dev-tools", WAIT, || async {
        let policy = app_cms.get_opt("tollgate-policy").await.unwrap()?;
        let shard = app_cms.get_opt("tollgate-policy-keys-00").await.unwrap()?;
        app_secrets.get_opt("tollgate-vk-alice").await.unwrap()?;
        shard
            .data?
            .get("keys-00.json")?
            .contains("dev-tools/alice")
            .then_some(())?;
        policy.data?.get("policy.json").cloned()
    })
    .await;
    assert!(sidecar_policy.contains(&gateway_url), "{sidecar_policy}");
    assert!(!sidecar_policy.contains("credentials"), "{sidecar_policy}");
    let secrets = app_secrets.list(&Default::default()).await.unwrap().items;
    let names: Vec<String> = secrets.iter().filter_map(|s| s.metadata.name.clone()).collect();
    assert_eq!(
        names,
        ["tollgate-vk-alice"],
        "only the engineer's own virtual key"
    );

    // The gateway, run from the release namespace as the chart's Deployment mounts it.
    let gateway_kubelet = Kubelet {
        client: client.clone(),
        namespace: NS.into(),
        root: tempfile::tempdir().unwrap(),
        mounts: Vec::new(),
    };
    let policy_dir = gateway_root.path().join("policy");
    let sources: Vec<Value> = std::iter::once("tollgate-policy".to_owned())
        .chain((0..16).map(|i| format!("tollgate-policy-keys-{i:02}")))
        .map(|name| json!({"configMap": {"name": name, "optional": name != "tollgate-policy"}}))
        .collect();
    gateway_kubelet
        .write_volume(&json!({"projected": {"sources": sources}}), &policy_dir)
        .await;
    gateway_kubelet
        .write_volume(
            &json!({"secret": {"secretName": "tollgate-credentials"}}),
            &gateway_creds,
        )
        .await;
    let gateway_log = gateway_root.path().join("gateway.log");
    let gateway_admin = free_port();
    let child = Command::new(&proxy)
        .args(["--policy", &policy_dir.display().to_string()])
        .args(["--listen", &format!("127.0.0.1:{gateway_port}")])
        .args(["--admin-listen", &format!("127.0.0.1:{gateway_admin}")])
        .args(["--log-format", "json"])
        .env_clear()
        .env(
            "TOLLGATE_LEDGER",
            format!("file:{}", gateway_root.path().join("ledger.journal").display()),
        )
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&gateway_log).unwrap())
        .spawn()
        .expect("start the gateway");
    let gateway = Sidecar {
        child,
        log: gateway_log,
    };
    eventually("the gateway ready", WAIT, || async {
        let r = send(
            "GET",
            &format!("http://127.0.0.1:{gateway_admin}/readyz"),
            &[],
            bytes::Bytes::new(),
        )
        .await
        .ok()?;
        (r.status == 200).then_some(())
    })
    .await;

    // The developer's pod, injected in gateway mode, run as patched.
    let admin_port = free_port();
    let proxy_port = free_port();
    let injector = Injector {
        config: InjectionConfig::parse(&format!(
            "image: tollgate-proxy:test\nadminPort: {admin_port}\nlogFormat: json"
        ))
        .unwrap(),
        policy_name: "tollgate-policy".into(),
        max_key_shards: 16,
        credentials_secret: "tollgate-credentials".into(),
        credentials_dir: "/var/run/tollgate/credentials".into(),
        direct: false,
    };
    let original = developer_pod(proxy_port);
    let Outcome::Inject(patch) = review(&injector, Mode::Enabled, &original) else {
        panic!("the pod was not injected")
    };
    let mut pod = original.clone();
    json_patch::patch(&mut pod, &patch).unwrap();
    assert!(
        !pod.to_string().contains("tollgate-credentials"),
        "no credentials volume"
    );
    let sidecar = pod["spec"]["initContainers"][0].clone();
    let agent = pod["spec"]["containers"][0].clone();
    let mut kubelet = Kubelet {
        client: client.clone(),
        namespace: APP_NS.into(),
        root: tempfile::tempdir().unwrap(),
        mounts: Vec::new(),
    };
    let sidecar_proc = kubelet.start_sidecar(&pod, &sidecar, &proxy).await;
    let sidecar_env = kubelet.env(&sidecar).await;
    assert!(!sidecar_env.iter().any(|(_, v)| v.contains(PROVIDER_KEY)));

    let agent_env = kubelet.env(&agent).await;
    let env: Vec<(&str, &str)> = agent_env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let run = tokio::task::block_in_place(|| run_claude(&claude, &["-p", "say hi"], &env, None));
    assert!(
        !run.is_error(),
        "{}\nsidecar logs:\n{}\ngateway logs:\n{}",
        run.output(),
        sidecar_proc.logs(),
        gateway.logs()
    );
    assert!(run.result().contains(DEFAULT_REPLY), "{}", run.stdout);
    // The gateway authenticated alice again and used the provider key; the sidecar never saw it.
    assert!(
        gateway.logs().contains("\"key_id\":\"dev-tools/alice\""),
        "{}",
        gateway.logs()
    );
    assert!(
        !fake.requests().is_empty(),
        "the provider was reached through the gateway"
    );
    assert!(
        !sidecar_proc.logs().contains(PROVIDER_KEY),
        "provider key in the sidecar's logs"
    );
    for (_, host) in &kubelet.mounts {
        for entry in walk(host) {
            let text = std::fs::read_to_string(&entry).unwrap_or_default();
            assert!(
                !text.contains(PROVIDER_KEY),
                "provider key in the sidecar's {}",
                entry.display()
            );
        }
    }

    let _ = stop.send(());
    operator.await.unwrap().unwrap();
}

/// Every file under `dir`.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
