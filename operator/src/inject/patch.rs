//! Builds the JSON Patch for one pod: the mutated copy is made on the raw JSON and diffed
//! against the original, so the patch touches only what injection changes.

use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapProjection, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource,
    HTTPGetAction, KeyToPath, Probe, ProjectedVolumeSource, SeccompProfile, SecretKeySelector,
    SecretVolumeSource, SecurityContext, Volume, VolumeMount, VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::{Map, Value};

use super::{Injector, KEY_SECRET_ANNOTATION, PORT_ANNOTATION, STATUS_ANNOTATION, annotation};
use crate::compile::shard_name;
use crate::crd::common::DEFAULT_SECRET_KEY;

/// Name of the injected container.
pub const SIDECAR_NAME: &str = "tollgate-proxy";
const POLICY_VOLUME: &str = "tollgate-policy";
const CREDENTIALS_VOLUME: &str = "tollgate-credentials";
const DATA_VOLUME: &str = "tollgate-data";
const POLICY_DIR: &str = "/etc/tollgate/policy";
const DATA_DIR: &str = "/var/lib/tollgate";

/// Why a pod cannot be injected as written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatchError {
    /// The pod is not an object with a `spec.containers` list.
    #[error("the pod has no spec.containers")]
    NotAPod,
    /// An agent container already uses a port the sidecar needs.
    #[error(
        "container '{container}' uses port {port}, which the tollgate-proxy sidecar needs; set the annotation {PORT_ANNOTATION} to a free port"
    )]
    PortConflict {
        /// The container.
        container: String,
        /// The port.
        port: u16,
    },
    /// A volume name the sidecar needs is taken.
    #[error("the pod already has a volume named '{0}'")]
    VolumeConflict(String),
    /// The pod shares the node's network: a loopback proxy would be the node's.
    #[error(
        "pods with hostNetwork cannot get the sidecar; opt the pod out with tollgate.dev/inject: \"false\""
    )]
    HostNetwork,
    /// A plain (non-native) sidecar never exits, so a pod meant to run to completion (a Job's)
    /// would never complete.
    #[error(
        "the pod has restartPolicy {0}, but on this cluster the tollgate-proxy sidecar is a plain container (injection.nativeSidecar is off: native sidecars need Kubernetes 1.29+), which never exits, so the pod would never complete; run it on Kubernetes 1.29+ with native sidecars, or opt the pod out with the annotation tollgate.dev/inject: \"false\" and point it at the shared gateway"
    )]
    RunsToCompletion(String),
    /// An annotation has an unusable value.
    #[error("annotation {name}: {message}")]
    BadAnnotation {
        /// The annotation.
        name: &'static str,
        /// What is wrong.
        message: String,
    },
}

/// The JSON Patch injecting the sidecar into `pod`.
pub fn build_patch(injector: &Injector, pod: &Value) -> Result<json_patch::Patch, PatchError> {
    let mut mutated = pod.clone();
    inject(injector, &mut mutated)?;
    Ok(json_patch::diff(pod, &mutated))
}

/// The JSON Patch for a pod that already carries the sidecar: the webhook re-invoked
/// (`reinvocationPolicy: IfNeeded`) after a later webhook added containers, or a pod created
/// from an injected pod's spec. Every agent container gets the agent environment, pointing at
/// the port the existing sidecar listens on; nothing else changes. `None` when nothing is
/// missing (so a re-invocation on its own result changes nothing) or when the sidecar's port
/// cannot be read from its `--listen` argument.
pub fn build_env_patch(injector: &Injector, pod: &Value) -> Result<Option<json_patch::Patch>, PatchError> {
    let Some(port) = existing_sidecar_port(pod) else {
        return Ok(None);
    };
    let agent_env = agent_env(injector, port, key_secret(pod)?);
    let mut mutated = pod.clone();
    let containers = mutated
        .pointer_mut("/spec/containers")
        .and_then(Value::as_array_mut)
        .ok_or(PatchError::NotAPod)?;
    for c in containers.iter_mut().filter(|c| c["name"] != SIDECAR_NAME) {
        set_env(c, &agent_env);
    }
    let patch = json_patch::diff(pod, &mutated);
    Ok((!patch.0.is_empty()).then_some(patch))
}

/// The port in the `--listen` argument of the pod's sidecar container, if it has one.
fn existing_sidecar_port(pod: &Value) -> Option<u16> {
    let sidecar = ["/spec/initContainers", "/spec/containers"]
        .iter()
        .filter_map(|p| pod.pointer(p).and_then(Value::as_array))
        .flatten()
        .find(|c| c["name"] == SIDECAR_NAME)?;
    let args = sidecar["args"].as_array()?;
    let listen = args
        .windows(2)
        .find(|w| w[0] == "--listen")
        .and_then(|w| w[1].as_str())?;
    listen.parse::<std::net::SocketAddr>().ok().map(|a| a.port())
}

/// A plain sidecar keeps a pod that should run to completion alive forever.
fn check_restart_policy(injector: &Injector, pod: &Value) -> Result<(), PatchError> {
    if injector.config.native_sidecar {
        return Ok(());
    }
    // The API server defaults restartPolicy to Always before mutating admission runs.
    match pod.pointer("/spec/restartPolicy").and_then(Value::as_str) {
        Some(p @ ("Never" | "OnFailure")) => Err(PatchError::RunsToCompletion(p.to_owned())),
        _ => Ok(()),
    }
}

fn inject(injector: &Injector, pod: &mut Value) -> Result<(), PatchError> {
    if pod.pointer("/spec/hostNetwork") == Some(&Value::Bool(true)) {
        return Err(PatchError::HostNetwork);
    }
    check_restart_policy(injector, pod)?;
    let port = proxy_port(injector, pod)?;
    let key_secret = key_secret(pod)?;
    let spec = pod
        .get_mut("spec")
        .and_then(Value::as_object_mut)
        .ok_or(PatchError::NotAPod)?;
    let containers = spec
        .get("containers")
        .and_then(Value::as_array)
        .ok_or(PatchError::NotAPod)?;
    check_ports(
        containers,
        spec.get("initContainers"),
        [port, injector.config.admin_port],
    )?;

    let volumes = list(spec, "volumes");
    for v in volumes.iter() {
        let name = v["name"].as_str().unwrap_or_default();
        if [POLICY_VOLUME, CREDENTIALS_VOLUME, DATA_VOLUME].contains(&name) {
            return Err(PatchError::VolumeConflict(name.to_owned()));
        }
    }
    volumes.extend(sidecar_volumes(injector).iter().map(to_value));

    let agent_env = agent_env(injector, port, key_secret);
    for c in list(spec, "containers").iter_mut() {
        set_env(c, &agent_env);
    }
    let sidecar = to_value(&sidecar(injector, port));
    if injector.config.native_sidecar {
        list(spec, "initContainers").insert(0, sidecar);
    } else {
        list(spec, "containers").push(sidecar);
    }
    let annotations = object(pod, "metadata").and_then(|m| object_in(m, "annotations"));
    if let Some(a) = annotations {
        a.insert(STATUS_ANNOTATION.to_owned(), Value::String("injected".to_owned()));
    }
    Ok(())
}

fn proxy_port(injector: &Injector, pod: &Value) -> Result<u16, PatchError> {
    match annotation(pod, PORT_ANNOTATION) {
        None => Ok(injector.config.port),
        Some(s) => match s.trim().parse::<u16>() {
            Ok(p) if p != 0 && p != injector.config.admin_port => Ok(p),
            _ => Err(PatchError::BadAnnotation {
                name: PORT_ANNOTATION,
                message: format!(
                    "'{s}' is not a port number other than the admin port {}",
                    injector.config.admin_port
                ),
            }),
        },
    }
}

/// `NAME` or `NAME/KEY` of the pod's virtual-key Secret.
fn key_secret(pod: &Value) -> Result<Option<(String, String)>, PatchError> {
    let Some(v) = annotation(pod, KEY_SECRET_ANNOTATION) else {
        return Ok(None);
    };
    let (name, key) = v.trim().split_once('/').unwrap_or((v.trim(), DEFAULT_SECRET_KEY));
    if name.is_empty() || key.is_empty() {
        return Err(PatchError::BadAnnotation {
            name: KEY_SECRET_ANNOTATION,
            message: "expected NAME or NAME/KEY of a Secret".to_owned(),
        });
    }
    Ok(Some((name.to_owned(), key.to_owned())))
}

fn check_ports(containers: &[Value], init: Option<&Value>, taken: [u16; 2]) -> Result<(), PatchError> {
    let init = init
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    for c in containers.iter().chain(init) {
        let ports = c["ports"].as_array().map(Vec::as_slice).unwrap_or_default();
        for p in ports {
            let n = p["containerPort"].as_u64().unwrap_or(0);
            if let Some(&port) = taken.iter().find(|&&t| u64::from(t) == n) {
                return Err(PatchError::PortConflict {
                    container: c["name"].as_str().unwrap_or("?").to_owned(),
                    port,
                });
            }
        }
    }
    Ok(())
}

/// The array at `key` of `obj`, created when missing (or not an array).
fn list<'a>(obj: &'a mut Map<String, Value>, key: &str) -> &'a mut Vec<Value> {
    let slot = obj.entry(key).or_insert_with(|| Value::Array(Vec::new()));
    if !slot.is_array() {
        *slot = Value::Array(Vec::new());
    }
    match slot {
        Value::Array(a) => a,
        _ => unreachable!("just made an array"),
    }
}

fn object<'a>(v: &'a mut Value, key: &str) -> Option<&'a mut Map<String, Value>> {
    v.as_object_mut().map(|o| object_in(o, key)).unwrap_or(None)
}

fn object_in<'a>(obj: &'a mut Map<String, Value>, key: &str) -> Option<&'a mut Map<String, Value>> {
    let slot = obj.entry(key).or_insert_with(|| Value::Object(Map::new()));
    if slot.is_null() {
        *slot = Value::Object(Map::new());
    }
    slot.as_object_mut()
}

fn to_value<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// Sets (or replaces) each variable in a container's `env`, keeping the rest in order.
fn set_env(container: &mut Value, vars: &[EnvVar]) {
    let Some(c) = container.as_object_mut() else {
        return;
    };
    let env = list(c, "env");
    for var in vars {
        let value = to_value(var);
        match env.iter_mut().find(|e| e["name"] == var.name.as_str()) {
            Some(existing) => *existing = value,
            None => env.push(value),
        }
    }
}

fn env(name: &str, value: String) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value),
        value_from: None,
    }
}

fn env_from_secret(name: &str, secret: &str, key: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: None,
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.to_owned(),
                key: key.to_owned(),
                optional: None,
            }),
            ..Default::default()
        }),
    }
}

/// The environment each agent reads to reach the sidecar: Claude Code
/// (`ANTHROPIC_BASE_URL`, `ANTHROPIC_AUTH_TOKEN`), Codex CLI and OpenAI SDKs
/// (`OPENAI_BASE_URL`, `OPENAI_API_KEY`), Gemini CLI (`GOOGLE_GEMINI_BASE_URL`,
/// `GEMINI_API_KEY`); each key variable holds the same virtual key.
fn agent_env(injector: &Injector, port: u16, key_secret: Option<(String, String)>) -> Vec<EnvVar> {
    let base = format!("http://127.0.0.1:{port}");
    let mut vars = vec![
        env("ANTHROPIC_BASE_URL", format!("{base}/anthropic")),
        env("OPENAI_BASE_URL", format!("{base}/openai/v1")),
        env("GOOGLE_GEMINI_BASE_URL", format!("{base}/gemini")),
    ];
    if !injector.config.mcp_url_env.is_empty() {
        vars.push(env(
            &injector.config.mcp_url_env,
            format!("http://127.0.0.1:{port}/mcp"),
        ));
    }
    if let Some((secret, key)) = key_secret {
        for name in ["ANTHROPIC_AUTH_TOKEN", "OPENAI_API_KEY", "GEMINI_API_KEY"] {
            vars.push(env_from_secret(name, &secret, &key));
        }
    }
    vars
}

/// Projects exactly one file of a ConfigMap: a key someone else added to the mirrored copy
/// (another policy file, say) never reaches the proxy's policy directory.
fn only(file: &str) -> Option<Vec<KeyToPath>> {
    Some(vec![KeyToPath {
        key: file.to_owned(),
        path: file.to_owned(),
        mode: None,
    }])
}

pub(super) fn sidecar_volumes(injector: &Injector) -> Vec<Volume> {
    let mut sources = vec![VolumeProjection {
        config_map: Some(ConfigMapProjection {
            name: injector.policy_name.clone(),
            items: only(crate::compile::MAIN_FILE),
            optional: None,
        }),
        ..Default::default()
    }];
    sources.extend((0..injector.max_key_shards).map(|i| VolumeProjection {
        config_map: Some(ConfigMapProjection {
            name: shard_name(&injector.policy_name, i),
            items: only(&crate::compile::shard_file(i)),
            optional: Some(true),
        }),
        ..Default::default()
    }));
    let mut volumes = vec![
        Volume {
            name: POLICY_VOLUME.to_owned(),
            projected: Some(ProjectedVolumeSource {
                sources: Some(sources),
                default_mode: None,
            }),
            ..Default::default()
        },
        Volume {
            name: DATA_VOLUME.to_owned(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Default::default()
        },
    ];
    if injector.direct {
        volumes.insert(
            1,
            Volume {
                name: CREDENTIALS_VOLUME.to_owned(),
                secret: Some(SecretVolumeSource {
                    secret_name: Some(injector.credentials_secret.clone()),
                    optional: Some(true),
                    ..Default::default()
                }),
                ..Default::default()
            },
        );
    }
    volumes
}

fn probe(path: &str, port: u16, failure_threshold: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::Int(i32::from(port)),
            ..Default::default()
        }),
        period_seconds: Some(if failure_threshold > 10 { 1 } else { 10 }),
        failure_threshold: Some(failure_threshold),
        ..Default::default()
    }
}

fn restricted() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        run_as_user: Some(65532),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".to_owned()]),
            add: None,
        }),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".to_owned(),
            localhost_profile: None,
        }),
        ..Default::default()
    }
}

fn sidecar(injector: &Injector, port: u16) -> Container {
    let c = &injector.config;
    let mut args: Vec<String> = [
        "--policy",
        POLICY_DIR,
        "--listen",
        &format!("127.0.0.1:{port}"),
        // Every address of both families: the kubelet probes the pod IP, IPv4 or IPv6.
        "--admin-listen",
        &format!("[::]:{}", c.admin_port),
        // The probes and /metrics answer the pod IP; /admin/* (every budget and its owner) is
        // off: "loopback" would still answer the agent's own container (it shares the pod's
        // network) and, behind a service mesh, remote peers relayed from 127.0.0.6. Spend is
        // read from the gateway.
        "--admin-api",
        "off",
        "--log-format",
        &c.log_format,
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    if c.audit && injector.direct {
        args.extend(["--audit-dir".to_owned(), format!("{DATA_DIR}/audit")]);
    }
    args.extend(c.extra_args.iter().cloned());
    // In gateway mode the sidecar's policy has no budget or rate limit: the journal stays empty.
    let ledger = if !injector.direct {
        env("TOLLGATE_LEDGER", format!("file:{DATA_DIR}/ledger.journal"))
    } else if !c.ledger.secret_key.is_empty() {
        env_from_secret(
            "TOLLGATE_LEDGER",
            &injector.credentials_secret,
            &c.ledger.secret_key,
        )
    } else if !c.ledger.url.is_empty() {
        env("TOLLGATE_LEDGER", c.ledger.url.clone())
    } else {
        env("TOLLGATE_LEDGER", format!("file:{DATA_DIR}/ledger.journal"))
    };
    let mut env_vars = vec![ledger];
    env_vars.extend(c.extra_env.iter().cloned());
    let mount = |name: &str, path: &str, read_only: bool| VolumeMount {
        name: name.to_owned(),
        mount_path: path.to_owned(),
        read_only: Some(read_only),
        ..Default::default()
    };
    Container {
        name: SIDECAR_NAME.to_owned(),
        image: Some(c.image.clone()),
        image_pull_policy: Some(c.image_pull_policy.clone()),
        restart_policy: c.native_sidecar.then(|| "Always".to_owned()),
        args: Some(args),
        env: Some(env_vars),
        ports: Some(vec![ContainerPort {
            name: Some("tollgate-admin".to_owned()),
            container_port: i32::from(c.admin_port),
            protocol: Some("TCP".to_owned()),
            ..Default::default()
        }]),
        // A native sidecar's startup probe holds the agent's containers until the proxy has
        // loaded its policy.
        startup_probe: Some(probe("/readyz", c.admin_port, 120)),
        readiness_probe: Some(probe("/readyz", c.admin_port, 3)),
        liveness_probe: Some(probe("/healthz", c.admin_port, 3)),
        resources: c.resources.clone(),
        security_context: Some(c.security_context.clone().unwrap_or_else(restricted)),
        volume_mounts: Some(
            [
                Some(mount(POLICY_VOLUME, POLICY_DIR, true)),
                injector
                    .direct
                    .then(|| mount(CREDENTIALS_VOLUME, &injector.credentials_dir, true)),
                Some(mount(DATA_VOLUME, DATA_DIR, false)),
            ]
            .into_iter()
            .flatten()
            .collect(),
        ),
        ..Default::default()
    }
}
