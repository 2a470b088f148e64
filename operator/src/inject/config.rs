//! The sidecar injection settings: a YAML file the Helm chart renders from its values
//! (`--injection-config`), plus what the operator knows itself (policy and Secret names).

use k8s_openapi::api::core::v1::{EnvVar, ResourceRequirements, SecurityContext};
use serde::{Deserialize, Serialize};

/// How the sidecar is built, as written in the injection config file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InjectionConfig {
    /// The tollgate-proxy image.
    pub image: String,
    /// Image pull policy of the sidecar.
    #[serde(default = "default_pull_policy")]
    pub image_pull_policy: String,
    /// `true`: a native sidecar (an init container with `restartPolicy: Always`, Kubernetes
    /// 1.29+), which starts and is ready before the agent's containers and stops after them.
    /// `false`: a plain extra container for older clusters (no start ordering; pods that run
    /// to completion, `restartPolicy: Never` or `OnFailure`, are refused, since a plain
    /// sidecar never exits and the pod would never complete).
    #[serde(default = "yes")]
    pub native_sidecar: bool,
    /// Loopback port of the proxy listener; agents use `http://127.0.0.1:PORT/anthropic`.
    /// The default, [`DEFAULT_PORT`], is chosen to stay clear of the ports agents' own
    /// servers usually take (8080, 3000, 8000, ...).
    #[serde(default = "default_port")]
    pub port: u16,
    /// Port of the admin listener (health, readiness, metrics) on all interfaces of both
    /// address families (`[::]`), so the kubelet's probes reach it on IPv4, IPv6 and
    /// dual-stack pod IPs. Default [`DEFAULT_ADMIN_PORT`].
    #[serde(default = "default_admin_port")]
    pub admin_port: u16,
    /// Requests and limits of the sidecar.
    #[serde(default)]
    pub resources: Option<ResourceRequirements>,
    /// Security context of the sidecar; the default is the restricted profile.
    #[serde(default)]
    pub security_context: Option<SecurityContext>,
    /// Where the sidecar's spend ledger lives.
    #[serde(default)]
    pub ledger: LedgerConfig,
    /// Write audit records to a spool on an emptyDir (shipped to the policy's sinks).
    #[serde(default = "yes")]
    pub audit: bool,
    /// Environment variable set in agent containers to the MCP endpoint; empty: not set.
    #[serde(default = "default_mcp_env")]
    pub mcp_url_env: String,
    /// Log format of the sidecar (`json` or `text`).
    #[serde(default = "default_log_format")]
    pub log_format: String,
    /// Extra environment of the sidecar.
    #[serde(default)]
    pub extra_env: Vec<EnvVar>,
    /// Extra arguments of the sidecar, after the injected ones: a flag given again overrides
    /// its injected value (e.g. `--admin-api all` to serve `/admin/spend` beyond the pod).
    #[serde(default)]
    pub extra_args: Vec<String>,
}

/// The sidecar's ledger: a shared Redis (by URL or from the credentials Secret) or, with
/// neither, an embedded journal on the pod's emptyDir (per-pod budgets only).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LedgerConfig {
    /// A ledger URL without secrets, e.g. `redis://redis.tollgate:6379`.
    #[serde(default)]
    pub url: String,
    /// Key of the credentials Secret holding the ledger URL (when it carries a password).
    #[serde(default)]
    pub secret_key: String,
}

fn default_pull_policy() -> String {
    "IfNotPresent".to_owned()
}
fn yes() -> bool {
    true
}
/// Default loopback port of the injected proxy (not 8080: agents' own dev servers use it).
pub const DEFAULT_PORT: u16 = 16080;
/// Default admin port of the injected proxy (not 9090: Prometheus and friends use it).
pub const DEFAULT_ADMIN_PORT: u16 = 16090;

fn default_port() -> u16 {
    DEFAULT_PORT
}
fn default_admin_port() -> u16 {
    DEFAULT_ADMIN_PORT
}
fn default_mcp_env() -> String {
    "TOLLGATE_MCP_URL".to_owned()
}
fn default_log_format() -> String {
    "json".to_owned()
}

/// Why an injection config file is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Not valid YAML for [`InjectionConfig`].
    #[error("parsing the injection config: {0}")]
    Parse(#[from] serde_yaml::Error),
    /// A field has an unusable value.
    #[error("injection config: {field}: {message}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
}

impl InjectionConfig {
    /// Parses and checks a config file's text.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let c: Self = serde_yaml::from_str(text)?;
        c.check()?;
        Ok(c)
    }

    fn check(&self) -> Result<(), ConfigError> {
        let invalid = |field, message: &str| {
            Err(ConfigError::Invalid {
                field,
                message: message.to_owned(),
            })
        };
        if self.image.trim().is_empty() {
            return invalid("image", "must not be empty");
        }
        if !["Always", "IfNotPresent", "Never"].contains(&self.image_pull_policy.as_str()) {
            return invalid("imagePullPolicy", "must be Always, IfNotPresent or Never");
        }
        if self.port == 0 || self.admin_port == 0 || self.port == self.admin_port {
            return invalid("port", "port and adminPort must be non-zero and different");
        }
        if !["json", "text"].contains(&self.log_format.as_str()) {
            return invalid("logFormat", "must be json or text");
        }
        if !self.ledger.url.is_empty() && !self.ledger.secret_key.is_empty() {
            return invalid("ledger", "set url or secretKey, not both");
        }
        if self.ledger.url.contains('@') {
            return invalid(
                "ledger.url",
                "must not carry credentials; put the URL in a Secret and use secretKey",
            );
        }
        Ok(())
    }
}

/// Everything the patch builder needs: the file's settings and the operator's own names.
#[derive(Debug, Clone)]
pub struct Injector {
    /// The file's settings.
    pub config: InjectionConfig,
    /// Name of the main policy ConfigMap (shards are `NAME-keys-NN`).
    pub policy_name: String,
    /// How many key shard ConfigMaps the policy volume lists (each optional).
    pub max_key_shards: usize,
    /// Name of the credentials Secret the operator assembles in each namespace.
    pub credentials_secret: String,
    /// Where the sidecar mounts the credentials Secret.
    pub credentials_dir: String,
    /// Direct mode: the sidecar mounts the credentials Secret, uses the configured ledger and
    /// writes audit records. Gateway mode (`false`): it holds no credential, keeps no spend
    /// (the gateway does) and audits nothing (the gateway does).
    pub direct: bool,
}
