//! Sidecar injection, the pure part: given a pod as the API server sent it (raw JSON, so
//! fields this build does not know survive untouched) decide whether to inject, and build the
//! JSON Patch that adds the tollgate-proxy sidecar, its volumes and the agent's environment.
//! A pod that already carries the sidecar (the webhook re-invoked after a later webhook, or a
//! pod created from an injected spec) gets no second one, only the agent environment on
//! containers that lack it; on its own result the review changes nothing.
//!
//! The webhook ([`crate::webhook`]) only parses the AdmissionReview, calls [`review`] and
//! encodes the answer.

pub mod config;
mod patch;
#[cfg(test)]
mod tests;

pub use config::{ConfigError, DEFAULT_ADMIN_PORT, DEFAULT_PORT, InjectionConfig, Injector, LedgerConfig};
pub use patch::{SIDECAR_NAME, build_env_patch, build_patch};

use serde_json::Value;

/// Pod annotation: `"false"` opts a pod out; `"true"` opts it in (namespaces in opt-in mode).
pub const INJECT_ANNOTATION: &str = "tollgate.dev/inject";
/// Pod annotation the webhook sets on the pods it injected.
pub const STATUS_ANNOTATION: &str = "tollgate.dev/status";
/// Pod annotation moving the proxy's loopback port (when the agent uses the default one).
pub const PORT_ANNOTATION: &str = "tollgate.dev/proxy-port";
/// Pod annotation naming the Secret (`NAME` or `NAME/KEY`, default key `key`) with the
/// pod's virtual key; the webhook sets `ANTHROPIC_AUTH_TOKEN` from it in the agent containers.
pub const KEY_SECRET_ANNOTATION: &str = "tollgate.dev/virtual-key-secret";

/// How the namespace chose injection (its `tollgate.dev/inject` label value, which selects
/// the webhook path).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `enabled`: every pod unless it opts out.
    Enabled,
    /// `opt-in`: only pods annotated `tollgate.dev/inject: "true"`.
    OptIn,
}

/// The webhook's answer for one pod.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Admit with this JSON Patch.
    Inject(json_patch::Patch),
    /// Admit unchanged, for this reason.
    Skip(&'static str),
    /// Refuse the pod with this message (it cannot be governed as written).
    Deny(String),
}

fn annotation<'a>(pod: &'a Value, name: &str) -> Option<&'a str> {
    pod.pointer("/metadata/annotations")
        .and_then(|a| a.get(name))
        .and_then(Value::as_str)
}

/// Whether a pod already carries the sidecar (re-invocation, or created from an injected
/// pod's spec).
fn already_injected(pod: &Value) -> bool {
    let named = |list: &str| {
        pod.pointer(list)
            .and_then(Value::as_array)
            .is_some_and(|cs| cs.iter().any(|c| c["name"] == SIDECAR_NAME))
    };
    annotation(pod, STATUS_ANNOTATION).is_some() || named("/spec/initContainers") || named("/spec/containers")
}

/// An already-injected pod: only containers added since (by a later webhook, before this
/// one is re-invoked) may lack the agent environment.
fn complete(injector: &Injector, pod: &Value) -> Outcome {
    match build_env_patch(injector, pod) {
        Ok(Some(p)) => Outcome::Inject(p),
        Ok(None) => Outcome::Skip("already injected"),
        Err(e) => Outcome::Deny(format!("tollgate sidecar injection: {e}")),
    }
}

/// Decides and, when injecting, builds the patch. Idempotent: reviewing a pod this produced
/// (the API server re-invokes the webhook when a later webhook changed the pod) yields at most
/// the agent environment for containers added since, never a second sidecar.
pub fn review(injector: &Injector, mode: Mode, pod: &Value) -> Outcome {
    let wish = annotation(pod, INJECT_ANNOTATION).map(str::to_ascii_lowercase);
    match (mode, wish.as_deref()) {
        (_, Some("false")) => return Outcome::Skip("opted out by annotation"),
        (Mode::OptIn, Some("true")) => {}
        (Mode::OptIn, _) => return Outcome::Skip("namespace is opt-in and the pod did not opt in"),
        (Mode::Enabled, _) => {}
    }
    if already_injected(pod) {
        return complete(injector, pod);
    }
    match build_patch(injector, pod) {
        Ok(p) => Outcome::Inject(p),
        Err(e) => Outcome::Deny(format!("tollgate sidecar injection: {e}")),
    }
}
