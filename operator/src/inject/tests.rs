//! Table tests of the injection decision and patch over real pod specs: each case applies the
//! patch to the pod (as the API server would) and checks the result.

use serde_json::{Value, json};

use super::*;

fn injector(native: bool) -> Injector {
    let config = InjectionConfig::parse(&format!(
        "image: ghcr.io/tollgate-dev/tollgate-proxy:0.1.0\nnativeSidecar: {native}\n\
         resources: {{requests: {{cpu: 50m, memory: 32Mi}}, limits: {{memory: 128Mi}}}}\n\
         ledger: {{secretKey: redis-ledger_url}}\n"
    ))
    .expect("config parses");
    Injector {
        config,
        policy_name: "tollgate-policy".into(),
        max_key_shards: 16,
        credentials_secret: "tollgate-credentials".into(),
        credentials_dir: "/var/run/tollgate/credentials".into(),
        direct: true,
    }
}

/// A Claude Code pod as a developer would write it (what `kubectl run` plus a Deployment's
/// template produce, with the fields the API server defaults before mutation).
fn claude_pod() -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"generateName": "agent-7d9f-", "namespace": "dev-tools",
                     "labels": {"app": "agent"}},
        "spec": {
            "containers": [{
                "name": "claude",
                "image": "node:20-slim",
                "command": ["sleep", "infinity"],
                "env": [{"name": "HOME", "value": "/work"}],
                "resources": {},
                "terminationMessagePath": "/dev/termination-log",
                "imagePullPolicy": "IfNotPresent"
            }],
            "restartPolicy": "Always",
            "dnsPolicy": "ClusterFirst",
            "serviceAccountName": "default",
            "futureFieldThisBuildDoesNotKnow": {"keep": true}
        }
    })
}

fn apply(pod: &Value, outcome: &Outcome) -> Value {
    let Outcome::Inject(patch) = outcome else {
        panic!("expected an injection, got {outcome:?}");
    };
    let mut out = pod.clone();
    json_patch::patch(&mut out, patch).expect("patch applies to the original pod");
    out
}

fn env_of<'a>(container: &'a Value, name: &str) -> Option<&'a Value> {
    container["env"].as_array()?.iter().find(|e| e["name"] == name)
}

fn annotate(mut pod: Value, k: &str, v: &str) -> Value {
    pod["metadata"]["annotations"] = json!({ k: v });
    pod
}

#[test]
fn injects_a_native_sidecar_first_with_volumes_and_agent_env() {
    let pod = claude_pod();
    let out = apply(&pod, &review(&injector(true), Mode::Enabled, &pod));
    let init = out["spec"]["initContainers"].as_array().expect("initContainers");
    assert_eq!(init[0]["name"], SIDECAR_NAME);
    assert_eq!(init[0]["restartPolicy"], "Always");
    assert_eq!(init[0]["image"], "ghcr.io/tollgate-dev/tollgate-proxy:0.1.0");
    assert_eq!(init[0]["resources"]["limits"]["memory"], "128Mi");
    assert_eq!(init[0]["startupProbe"]["httpGet"]["path"], "/readyz");
    let args: Vec<&str> = init[0]["args"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        args.windows(2).any(|w| w == ["--listen", "127.0.0.1:16080"]),
        "{args:?}"
    );
    assert!(args.windows(2).any(|w| w == ["--policy", "/etc/tollgate/policy"]));
    // The ledger URL comes from the credentials Secret, never a literal.
    let ledger = env_of(&init[0], "TOLLGATE_LEDGER").unwrap();
    assert_eq!(
        ledger["valueFrom"]["secretKeyRef"]["name"],
        "tollgate-credentials"
    );
    assert_eq!(ledger["valueFrom"]["secretKeyRef"]["key"], "redis-ledger_url");

    let claude = &out["spec"]["containers"][0];
    assert_eq!(
        env_of(claude, "ANTHROPIC_BASE_URL").unwrap()["value"],
        "http://127.0.0.1:16080/anthropic"
    );
    assert_eq!(
        env_of(claude, "TOLLGATE_MCP_URL").unwrap()["value"],
        "http://127.0.0.1:16080/mcp"
    );
    // Codex CLI and Gemini CLI reach the same sidecar.
    assert_eq!(
        env_of(claude, "OPENAI_BASE_URL").unwrap()["value"],
        "http://127.0.0.1:16080/openai/v1"
    );
    assert_eq!(
        env_of(claude, "GOOGLE_GEMINI_BASE_URL").unwrap()["value"],
        "http://127.0.0.1:16080/gemini"
    );
    assert_eq!(
        env_of(claude, "HOME").unwrap()["value"],
        "/work",
        "existing env kept"
    );
    assert!(env_of(claude, "ANTHROPIC_AUTH_TOKEN").is_none());
    // Policy and credentials are mounted into the sidecar only.
    assert!(claude.get("volumeMounts").is_none(), "agent got mounts: {claude}");
    let vols: Vec<&str> = out["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    assert_eq!(vols, ["tollgate-policy", "tollgate-credentials", "tollgate-data"]);
    let sources = out["spec"]["volumes"][0]["projected"]["sources"]
        .as_array()
        .unwrap();
    assert_eq!(sources.len(), 17, "main policy + 16 optional shards");
    assert_eq!(sources[16]["configMap"]["name"], "tollgate-policy-keys-15");
    assert_eq!(sources[16]["configMap"]["optional"], true);
    assert_eq!(out["metadata"]["annotations"][STATUS_ANNOTATION], "injected");
    assert_eq!(
        out["spec"]["futureFieldThisBuildDoesNotKnow"],
        json!({"keep": true})
    );
}

#[test]
fn the_patch_touches_only_what_injection_adds() {
    let pod = claude_pod();
    let Outcome::Inject(patch) = review(&injector(true), Mode::Enabled, &pod) else {
        panic!("expected injection")
    };
    for op in &patch.0 {
        let path = op.path().to_string();
        assert!(
            path.starts_with("/spec/initContainers")
                || path.starts_with("/spec/volumes")
                || path.starts_with("/spec/containers/0/env")
                || path.starts_with("/metadata/annotations"),
            "unexpected patch path {path}"
        );
        assert!(
            !matches!(op, json_patch::PatchOperation::Remove(_)),
            "removes something: {op:?}"
        );
    }
}

#[test]
fn existing_init_containers_run_after_the_sidecar() {
    let mut pod = claude_pod();
    pod["spec"]["initContainers"] = json!([{"name": "clone-repo", "image": "alpine/git"}]);
    let out = apply(&pod, &review(&injector(true), Mode::Enabled, &pod));
    let names: Vec<&str> = out["spec"]["initContainers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(names, [SIDECAR_NAME, "clone-repo"]);
    assert!(env_of(&out["spec"]["initContainers"][1], "ANTHROPIC_BASE_URL").is_none());
}

#[test]
fn every_container_gets_the_env_and_existing_values_are_replaced() {
    let mut pod = claude_pod();
    pod["spec"]["containers"] = json!([
        {"name": "claude", "image": "node:20", "env": [
            {"name": "ANTHROPIC_BASE_URL", "value": "https://api.anthropic.com"},
            {"name": "A", "value": "1"}]},
        {"name": "codex", "image": "node:20"}
    ]);
    let out = apply(&pod, &review(&injector(true), Mode::Enabled, &pod));
    for c in out["spec"]["containers"].as_array().unwrap() {
        assert_eq!(
            env_of(c, "ANTHROPIC_BASE_URL").unwrap()["value"],
            "http://127.0.0.1:16080/anthropic"
        );
    }
    let env = out["spec"]["containers"][0]["env"].as_array().unwrap();
    assert_eq!(env.len(), 5, "replaced in place, not duplicated: {env:?}");
    assert_eq!(env[0]["name"], "ANTHROPIC_BASE_URL");
}

#[test]
fn plain_container_fallback_for_older_clusters() {
    let pod = claude_pod();
    let out = apply(&pod, &review(&injector(false), Mode::Enabled, &pod));
    assert!(out["spec"].get("initContainers").is_none());
    let containers = out["spec"]["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 2);
    assert_eq!(
        containers[0]["name"], "claude",
        "the agent stays the default container"
    );
    assert_eq!(containers[1]["name"], SIDECAR_NAME);
    assert!(containers[1].get("restartPolicy").is_none());
}

#[test]
fn annotations_select_port_and_virtual_key_secret() {
    let mut pod = claude_pod();
    pod["metadata"]["annotations"] = json!({
        PORT_ANNOTATION: "18080",
        KEY_SECRET_ANNOTATION: "tollgate-vk-alice",
    });
    let out = apply(&pod, &review(&injector(true), Mode::Enabled, &pod));
    let claude = &out["spec"]["containers"][0];
    assert_eq!(
        env_of(claude, "ANTHROPIC_BASE_URL").unwrap()["value"],
        "http://127.0.0.1:18080/anthropic"
    );
    for name in ["ANTHROPIC_AUTH_TOKEN", "OPENAI_API_KEY", "GEMINI_API_KEY"] {
        let token = env_of(claude, name).unwrap();
        assert_eq!(
            token["valueFrom"]["secretKeyRef"],
            json!({"name": "tollgate-vk-alice", "key": "key"}),
            "{name}: every agent gets the same virtual key"
        );
    }
    assert_eq!(out["metadata"]["annotations"][PORT_ANNOTATION], "18080", "kept");

    let pod = annotate(claude_pod(), KEY_SECRET_ANNOTATION, "team-keys/bob");
    let out = apply(&pod, &review(&injector(true), Mode::Enabled, &pod));
    let token = env_of(&out["spec"]["containers"][0], "ANTHROPIC_AUTH_TOKEN").unwrap();
    assert_eq!(
        token["valueFrom"]["secretKeyRef"],
        json!({"name": "team-keys", "key": "bob"})
    );
}

#[test]
fn decisions() {
    let inj = injector(true);
    let injected = {
        let p = claude_pod();
        apply(&p, &review(&inj, Mode::Enabled, &p))
    };
    let mut copied_spec = claude_pod();
    copied_spec["spec"]["initContainers"] = json!([{"name": SIDECAR_NAME, "image": "x"}]);
    let cases: Vec<(&str, Mode, Value, &str)> = vec![
        ("enabled namespace", Mode::Enabled, claude_pod(), "inject"),
        (
            "opted out",
            Mode::Enabled,
            annotate(claude_pod(), INJECT_ANNOTATION, "false"),
            "skip",
        ),
        (
            "opted out, any case",
            Mode::Enabled,
            annotate(claude_pod(), INJECT_ANNOTATION, "False"),
            "skip",
        ),
        (
            "explicit true in enabled",
            Mode::Enabled,
            annotate(claude_pod(), INJECT_ANNOTATION, "true"),
            "inject",
        ),
        (
            "opt-in namespace, no annotation",
            Mode::OptIn,
            claude_pod(),
            "skip",
        ),
        (
            "opt-in namespace, opted in",
            Mode::OptIn,
            annotate(claude_pod(), INJECT_ANNOTATION, "true"),
            "inject",
        ),
        (
            "opt-in namespace, opted out",
            Mode::OptIn,
            annotate(claude_pod(), INJECT_ANNOTATION, "false"),
            "skip",
        ),
        ("already injected", Mode::Enabled, injected, "skip"),
        (
            "spec copied from an injected pod",
            Mode::Enabled,
            copied_spec,
            "skip",
        ),
    ];
    for (name, mode, pod, want) in cases {
        let got = match review(&inj, mode, &pod) {
            Outcome::Inject(_) => "inject",
            Outcome::Skip(_) => "skip",
            Outcome::Deny(_) => "deny",
        };
        assert_eq!(got, want, "case: {name}");
    }
}

#[test]
fn pods_that_cannot_be_governed_are_refused_with_a_reason() {
    let inj = injector(true);
    let mut port_clash = claude_pod();
    port_clash["spec"]["containers"][0]["ports"] = json!([{"containerPort": 16080}]);
    let mut admin_clash = claude_pod();
    admin_clash["spec"]["containers"][0]["ports"] = json!([{"containerPort": 16090}]);
    let mut volume_clash = claude_pod();
    volume_clash["spec"]["volumes"] = json!([{"name": "tollgate-data", "emptyDir": {}}]);
    let mut host = claude_pod();
    host["spec"]["hostNetwork"] = json!(true);
    let mut no_containers = claude_pod();
    no_containers["spec"] = json!({});
    let cases = [
        ("port clash", port_clash, "uses port 16080"),
        ("admin port clash", admin_clash, "uses port 16090"),
        ("volume clash", volume_clash, "volume named 'tollgate-data'"),
        ("host network", host, "hostNetwork"),
        (
            "bad port annotation",
            annotate(claude_pod(), PORT_ANNOTATION, "http"),
            "tollgate.dev/proxy-port",
        ),
        (
            "admin port as proxy port",
            annotate(claude_pod(), PORT_ANNOTATION, "16090"),
            "admin port",
        ),
        (
            "empty key secret",
            annotate(claude_pod(), KEY_SECRET_ANNOTATION, "/key"),
            "NAME/KEY",
        ),
        ("not a pod", no_containers, "spec.containers"),
    ];
    for (name, pod, want) in cases {
        match review(&inj, Mode::Enabled, &pod) {
            Outcome::Deny(msg) => assert!(msg.contains(want), "case {name}: {msg}"),
            other => panic!("case {name}: expected a denial, got {other:?}"),
        }
    }
    // A clash with the default port is solved by the annotation.
    let mut moved = claude_pod();
    moved["spec"]["containers"][0]["ports"] = json!([{"containerPort": 16080}]);
    let moved = annotate(moved, PORT_ANNOTATION, "15080");
    assert!(matches!(review(&inj, Mode::Enabled, &moved), Outcome::Inject(_)));
}

#[test]
fn config_files_are_checked() {
    let bad = [
        ("image: ''", "image"),
        ("image: x\nimagePullPolicy: Sometimes", "imagePullPolicy"),
        ("image: x\nport: 16090", "port"),
        ("image: x\nlogFormat: xml", "logFormat"),
        ("image: x\nledger: {url: 'redis://:pw@redis:6379'}", "ledger.url"),
        ("image: x\nledger: {url: 'redis://r', secretKey: k}", "ledger"),
        ("image: x\nunknownField: 1", "unknown field"),
    ];
    for (text, want) in bad {
        let err = InjectionConfig::parse(text).expect_err(text).to_string();
        assert!(err.contains(want), "{text}: {err}");
    }
    let c = InjectionConfig::parse("image: x").unwrap();
    assert_eq!(
        (c.port, c.admin_port, c.native_sidecar, c.audit),
        (16080, 16090, true, true)
    );
    assert_eq!(c.ledger, LedgerConfig::default());
}

#[test]
fn without_a_shared_ledger_the_sidecar_journals_on_its_empty_dir() {
    let mut inj = injector(true);
    inj.config.ledger = LedgerConfig::default();
    let pod = claude_pod();
    let out = apply(&pod, &review(&inj, Mode::Enabled, &pod));
    let ledger = env_of(&out["spec"]["initContainers"][0], "TOLLGATE_LEDGER").unwrap();
    assert_eq!(ledger["value"], "file:/var/lib/tollgate/ledger.journal");
}

fn args_of(container: &Value) -> Vec<&str> {
    container["args"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// The injected container, wherever the mode put it.
fn sidecar_of(pod: &Value) -> &Value {
    ["/spec/initContainers", "/spec/containers"]
        .iter()
        .filter_map(|p| pod.pointer(p).and_then(Value::as_array))
        .flatten()
        .find(|c| c["name"] == SIDECAR_NAME)
        .expect("the sidecar")
}

fn flag<'a>(container: &'a Value, name: &str) -> Option<&'a str> {
    let args = args_of(container);
    args.windows(2).find(|w| w[0] == name).map(|w| w[1])
}

#[test]
fn default_ports_stay_clear_of_the_ports_agents_use() {
    // Dev servers, notebooks and Prometheus exporters in agent containers take these.
    const COMMON: [u16; 8] = [3000, 5000, 8000, 8080, 8443, 8888, 9090, 9100];
    let c = InjectionConfig::parse("image: x").unwrap();
    assert!(!COMMON.contains(&c.port), "proxy port {}", c.port);
    assert!(!COMMON.contains(&c.admin_port), "admin port {}", c.admin_port);
    assert_eq!((c.port, c.admin_port), (DEFAULT_PORT, DEFAULT_ADMIN_PORT));

    let pod = claude_pod();
    let out = apply(&pod, &review(&injector(true), Mode::Enabled, &pod));
    let sidecar = &out["spec"]["initContainers"][0];
    assert_eq!(flag(sidecar, "--listen"), Some("127.0.0.1:16080"));
    assert_eq!(
        env_of(&out["spec"]["containers"][0], "ANTHROPIC_BASE_URL").unwrap()["value"],
        "http://127.0.0.1:16080/anthropic"
    );
    assert_eq!(sidecar["ports"][0]["containerPort"], 16090);
    assert_eq!(sidecar["readinessProbe"]["httpGet"]["port"], 16090);
    // An agent that listens on 8080 or 9090 is now injected without any annotation.
    let mut busy = claude_pod();
    busy["spec"]["containers"][0]["ports"] = json!([{"containerPort": 8080}, {"containerPort": 9090}]);
    assert!(matches!(
        review(&injector(true), Mode::Enabled, &busy),
        Outcome::Inject(_)
    ));
}

#[test]
fn the_admin_listener_covers_ipv4_and_ipv6_pod_ips() {
    // The kubelet probes the pod IP, which is IPv6 on IPv6-only and may be on dual-stack
    // clusters: `0.0.0.0` would refuse those probes. `[::]` is dual-stack in the proxy.
    let pod = claude_pod();
    for native in [true, false] {
        let out = apply(&pod, &review(&injector(native), Mode::Enabled, &pod));
        let sidecar = sidecar_of(&out);
        let admin: std::net::SocketAddr = flag(sidecar, "--admin-listen")
            .expect("--admin-listen")
            .parse()
            .expect("a socket address");
        assert!(
            admin.is_ipv6() && admin.ip().is_unspecified(),
            "native {native}: admin listens on {admin}, not on every address of both families"
        );
        assert_eq!(admin.port(), DEFAULT_ADMIN_PORT);
        // The proxy itself stays on loopback: only the pod's own containers reach it.
        assert_eq!(flag(sidecar, "--listen"), Some("127.0.0.1:16080"));
        // And so does the admin API (/admin/spend: budgets and owners) on the admin port.
        assert_eq!(
            flag(sidecar, "--admin-api"),
            Some("off"),
            "the agent shares the pod's loopback"
        );
    }
}

#[test]
fn a_plain_sidecar_refuses_pods_that_run_to_completion() {
    for policy in ["Never", "OnFailure"] {
        let mut job = claude_pod();
        job["spec"]["restartPolicy"] = json!(policy);
        match review(&injector(false), Mode::Enabled, &job) {
            Outcome::Deny(msg) => {
                for want in [policy, "never exits", "1.29", "tollgate.dev/inject: \"false\""] {
                    assert!(msg.contains(want), "{policy}: '{want}' not in: {msg}");
                }
            }
            other => panic!("{policy}: expected a denial, got {other:?}"),
        }
        // A native sidecar stops after the agent's containers: the Job completes.
        assert!(
            matches!(review(&injector(true), Mode::Enabled, &job), Outcome::Inject(_)),
            "{policy} with a native sidecar"
        );
    }
    // Long-running pods get the plain sidecar as before.
    let pod = claude_pod();
    assert!(matches!(
        review(&injector(false), Mode::Enabled, &pod),
        Outcome::Inject(_)
    ));
}

/// A container a later mutating webhook added (a log shipper, another agent).
fn added_by_a_later_webhook(mut pod: Value) -> Value {
    let late = json!({"name": "late-agent", "image": "node:20", "env": [{"name": "A", "value": "1"}]});
    pod["spec"]["containers"]
        .as_array_mut()
        .expect("containers")
        .insert(1, late);
    pod
}

#[test]
fn reinvocation_is_idempotent_and_completes_containers_added_later() {
    for native in [true, false] {
        let inj = injector(native);
        let pod = annotate(claude_pod(), KEY_SECRET_ANNOTATION, "tollgate-vk-alice");
        let injected = apply(&pod, &review(&inj, Mode::Enabled, &pod));
        // Re-invoked on its own result: nothing to change.
        assert_eq!(
            review(&inj, Mode::Enabled, &injected),
            Outcome::Skip("already injected"),
            "native {native}"
        );

        let later = added_by_a_later_webhook(injected.clone());
        let outcome = review(&inj, Mode::Enabled, &later);
        let Outcome::Inject(patch) = &outcome else {
            panic!("native {native}: expected an env patch, got {outcome:?}")
        };
        for op in &patch.0 {
            let path = op.path().to_string();
            assert!(
                path.starts_with("/spec/containers/1/env"),
                "native {native}: the re-invocation touches {path}"
            );
        }
        let out = apply(&later, &outcome);
        let late = &out["spec"]["containers"][1];
        assert_eq!(
            env_of(late, "ANTHROPIC_BASE_URL").unwrap()["value"],
            "http://127.0.0.1:16080/anthropic"
        );
        assert_eq!(
            env_of(late, "TOLLGATE_MCP_URL").unwrap()["value"],
            "http://127.0.0.1:16080/mcp"
        );
        assert_eq!(
            env_of(late, "ANTHROPIC_AUTH_TOKEN").unwrap()["valueFrom"]["secretKeyRef"]["name"],
            "tollgate-vk-alice"
        );
        assert_eq!(env_of(late, "A").unwrap()["value"], "1", "its own env kept");
        // Once completed, a further re-invocation changes nothing.
        assert_eq!(
            review(&inj, Mode::Enabled, &out),
            Outcome::Skip("already injected")
        );
        let sidecars = ["/spec/initContainers", "/spec/containers"]
            .iter()
            .filter_map(|p| out.pointer(p).and_then(Value::as_array))
            .flatten()
            .filter(|c| c["name"] == SIDECAR_NAME)
            .count();
        assert_eq!(sidecars, 1, "native {native}: one sidecar");
        assert!(
            env_of(sidecar_of(&out), "ANTHROPIC_BASE_URL").is_none(),
            "native {native}: the sidecar got the agent's env"
        );
    }
}

#[test]
fn reinvocation_points_added_containers_at_the_existing_sidecar_port() {
    let inj = injector(true);
    // Injected with the annotation's port ...
    let pod = annotate(claude_pod(), PORT_ANNOTATION, "18080");
    let injected = apply(&pod, &review(&inj, Mode::Enabled, &pod));
    let out = apply(
        &added_by_a_later_webhook(injected.clone()),
        &review(&inj, Mode::Enabled, &added_by_a_later_webhook(injected)),
    );
    assert_eq!(
        env_of(&out["spec"]["containers"][1], "ANTHROPIC_BASE_URL").unwrap()["value"],
        "http://127.0.0.1:18080/anthropic"
    );
    // ... or by an older release whose default port differed: the sidecar's own --listen wins.
    let mut old = claude_pod();
    old["metadata"]["annotations"] = json!({STATUS_ANNOTATION: "injected"});
    old["spec"]["initContainers"] = json!([{"name": SIDECAR_NAME, "image": "x", "restartPolicy": "Always",
        "args": ["--policy", "/etc/tollgate/policy", "--listen", "127.0.0.1:8080"]}]);
    let out = apply(&old, &review(&inj, Mode::Enabled, &old));
    assert_eq!(
        env_of(&out["spec"]["containers"][0], "ANTHROPIC_BASE_URL").unwrap()["value"],
        "http://127.0.0.1:8080/anthropic"
    );
}

/// The sidecar projects only the operator's files: a key someone adds to the mirrored policy
/// ConfigMap in the agent namespace never reaches the proxy's policy directory.
#[test]
fn the_policy_volume_projects_only_the_operators_files() {
    let injector = injector(true);
    let volumes = super::patch::sidecar_volumes(&injector);
    let sources = volumes[0]
        .projected
        .as_ref()
        .and_then(|p| p.sources.as_ref())
        .unwrap();
    for (i, source) in sources.iter().enumerate() {
        let cm = source.config_map.as_ref().unwrap();
        let items = cm.items.as_ref().expect("explicit items");
        assert_eq!(items.len(), 1, "{}", cm.name);
        let want = if i == 0 {
            crate::compile::MAIN_FILE.to_owned()
        } else {
            crate::compile::shard_file(i - 1)
        };
        assert_eq!(
            (items[0].key.as_str(), items[0].path.as_str()),
            (want.as_str(), want.as_str())
        );
    }
}

/// Gateway mode: the injected sidecar mounts no credentials Secret, reads no ledger URL from
/// one, and writes no audit spool (the gateway does all three).
#[test]
fn a_gateway_mode_sidecar_holds_no_credential() {
    let mut injector = injector(true);
    injector.direct = false;
    injector.config.ledger.secret_key = "redis_url".into();
    let volumes = super::patch::sidecar_volumes(&injector);
    assert!(volumes.iter().all(|v| v.secret.is_none()), "{volumes:?}");
    let pod = claude_pod();
    let patched = apply(&pod, &review(&injector, Mode::Enabled, &pod));
    let text = patched.to_string();
    assert!(!text.contains("tollgate-credentials"), "{text}");
    assert!(
        !text.contains("redis_url") && !text.contains("--audit-dir"),
        "{text}"
    );
    assert!(text.contains("file:/var/lib/tollgate/ledger.journal"), "{text}");
}
