//! Keeps the webhook's serving certificate loaded: from a mounted directory (cert-manager) or
//! self-managed (a CA and certificate in a Secret, `caBundle` patched into the
//! MutatingWebhookConfiguration, renewed before expiry). Every replica runs this; concurrent
//! renewals are settled by the Secret's resourceVersion (the loser re-reads).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use tracing::{info, warn};

use super::certs::{self, Lifetimes, Plan, Stored};
use super::tls::{SwappableCert, certified_key};
use crate::metrics::Metrics;
use crate::secrets::{MANAGED_BY_LABEL, MANAGER};

/// Where the serving certificate comes from.
#[derive(Debug, Clone)]
pub enum CertSource {
    /// `tls.crt` and `tls.key` in a directory (a mounted cert-manager Secret), re-read
    /// periodically.
    Files(PathBuf),
    /// Generated and renewed by the operator.
    SelfManaged(SelfManaged),
}

/// Names for self-managed mode.
#[derive(Debug, Clone)]
pub struct SelfManaged {
    /// Namespace of the Secret and the webhook Service.
    pub namespace: String,
    /// The Secret holding CA and serving certificate.
    pub secret: String,
    /// The MutatingWebhookConfiguration whose `caBundle`s are patched.
    pub configuration: String,
    /// The webhook Service (its DNS names go into the certificate).
    pub service: String,
    /// Certificate lifetimes.
    pub lifetimes: Lifetimes,
}

/// Errors of one certificate round.
#[derive(Debug, thiserror::Error)]
pub enum CertRoundError {
    /// A Kubernetes API call failed.
    #[error("{what}: {source}")]
    Api {
        /// The call.
        what: &'static str,
        /// The error.
        #[source]
        source: kube::Error,
    },
    /// Generating or loading a certificate failed.
    #[error(transparent)]
    Cert(#[from] certs::CertError),
    /// The certificate does not load into rustls.
    #[error(transparent)]
    Tls(#[from] super::tls::TlsError),
    /// The caBundle patch could not be built.
    #[error("building the caBundle patch: {0}")]
    Patch(String),
    /// Reading the mounted files failed.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

fn api(what: &'static str) -> impl FnOnce(kube::Error) -> CertRoundError {
    move |source| CertRoundError::Api { what, source }
}

/// The Secret content as [`Stored`] (non-UTF-8 values are dropped, which forces renewal).
pub fn stored_of(secret: &Secret) -> Stored {
    Stored {
        data: secret
            .data
            .iter()
            .flatten()
            .filter_map(|(k, v)| Some((k.clone(), String::from_utf8(v.0.clone()).ok()?)))
            .collect(),
        annotations: secret.metadata.annotations.clone().unwrap_or_default(),
    }
}

fn secret_of(stored: &Stored, meta: ObjectMeta) -> Secret {
    Secret {
        metadata: ObjectMeta {
            annotations: Some(stored.annotations.clone()),
            labels: Some(BTreeMap::from([(
                MANAGED_BY_LABEL.to_owned(),
                MANAGER.to_owned(),
            )])),
            ..meta
        },
        type_: Some("kubernetes.io/tls".to_owned()),
        data: Some(
            stored
                .data
                .iter()
                .map(|(k, v)| (k.clone(), ByteString(v.clone().into_bytes())))
                .collect(),
        ),
        ..Default::default()
    }
}

/// The JSON Patch setting every webhook's `caBundle` to `bundle_b64`, guarded by the
/// object's resourceVersion; `None` when all already match.
pub fn ca_bundle_patch(configuration: &Value, bundle_b64: &str) -> Option<Value> {
    let webhooks = configuration["webhooks"].as_array()?;
    let mut ops = vec![json!({
        "op": "test",
        "path": "/metadata/resourceVersion",
        "value": configuration.pointer("/metadata/resourceVersion")?,
    })];
    for (i, w) in webhooks.iter().enumerate() {
        if w.pointer("/clientConfig/caBundle").and_then(Value::as_str) != Some(bundle_b64) {
            ops.push(json!({"op": "add", "path": format!("/webhooks/{i}/clientConfig/caBundle"), "value": bundle_b64}));
        }
    }
    (ops.len() > 1).then_some(Value::Array(ops))
}

/// One self-managed round: make sure the Secret holds valid certificates, serve them, and
/// make sure the webhook configuration trusts their CA. Returns whether the cert changed.
pub async fn self_managed_round(
    client: &Client,
    cfg: &SelfManaged,
    cert: &SwappableCert,
    now: jiff::Timestamp,
) -> Result<bool, CertRoundError> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &cfg.namespace);
    let names = certs::service_dns_names(&cfg.service, &cfg.namespace);
    let existing = secrets
        .get_opt(&cfg.secret)
        .await
        .map_err(api("reading the webhook Secret"))?;
    let stored = existing.as_ref().map(stored_of).unwrap_or_default();
    let plan = certs::plan(&stored, now, &names, cfg.lifetimes);
    let stored = if plan == Plan::Keep {
        stored
    } else {
        let next = certs::execute(plan, &stored, now, &names, cfg.lifetimes)?;
        let meta = ObjectMeta {
            name: Some(cfg.secret.clone()),
            namespace: Some(cfg.namespace.clone()),
            resource_version: existing.as_ref().and_then(|s| s.resource_version()),
            ..Default::default()
        };
        let secret = secret_of(&next, meta);
        let written = match &existing {
            None => secrets.create(&PostParams::default(), &secret).await,
            Some(_) => {
                secrets
                    .replace(&cfg.secret, &PostParams::default(), &secret)
                    .await
            }
        };
        match written {
            Ok(_) => info!(secret = %cfg.secret, ?plan, "webhook certificate written"),
            // Another replica renewed first: serve what it wrote.
            Err(kube::Error::Api(e)) if e.code == 409 => {
                let s = secrets
                    .get(&cfg.secret)
                    .await
                    .map_err(api("re-reading the webhook Secret"))?;
                return load(cert, &stored_of(&s)).map(|_| true);
            }
            Err(e) => return Err(api("writing the webhook Secret")(e)),
        }
        next
    };
    let changed = load(cert, &stored)?;
    patch_ca_bundle(client, &cfg.configuration, &certs::ca_bundle(&stored)).await?;
    Ok(changed || plan != Plan::Keep)
}

fn load(cert: &SwappableCert, stored: &Stored) -> Result<bool, CertRoundError> {
    let get = |k: &str| stored.data.get(k).map(String::as_bytes).unwrap_or_default();
    let key = certified_key(get(certs::TLS_CERT), get(certs::TLS_KEY))?;
    let was_loaded = cert.is_loaded();
    cert.store(key);
    Ok(!was_loaded)
}

async fn patch_ca_bundle(client: &Client, name: &str, bundle: &str) -> Result<(), CertRoundError> {
    let configs: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let current = configs
        .get(name)
        .await
        .map_err(api("reading the webhook configuration"))?;
    let value = serde_json::to_value(&current).unwrap_or(Value::Null);
    let b64 = base64::engine::general_purpose::STANDARD.encode(bundle);
    let Some(ops) = ca_bundle_patch(&value, &b64) else {
        return Ok(());
    };
    let patch: json_patch::Patch =
        serde_json::from_value(ops).map_err(|e| CertRoundError::Patch(e.to_string()))?;
    configs
        .patch(name, &PatchParams::default(), &Patch::Json::<()>(patch))
        .await
        .map_err(api("patching the webhook caBundle"))?;
    info!(configuration = %name, "webhook caBundle updated");
    Ok(())
}

/// Loads `tls.crt`/`tls.key` from `dir` when they changed since `last`.
pub fn files_round(
    dir: &std::path::Path,
    cert: &SwappableCert,
    last: &mut Vec<u8>,
) -> Result<bool, CertRoundError> {
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read(&path).map_err(|source| CertRoundError::Io {
            path: path.display().to_string(),
            source,
        })
    };
    let (crt, key) = (read("tls.crt")?, read("tls.key")?);
    let mut both = crt.clone();
    both.extend_from_slice(&key);
    if *last == both {
        return Ok(false);
    }
    cert.store(certified_key(&crt, &key)?);
    *last = both;
    Ok(true)
}

/// Keeps the certificate current until `shutdown`: every `interval` (and at once), a round;
/// failures are logged and retried sooner.
pub async fn run(
    client: Option<Client>,
    source: CertSource,
    cert: Arc<SwappableCert>,
    metrics: Arc<Metrics>,
    interval: Duration,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut last = Vec::new();
    loop {
        let result = match (&source, &client) {
            (CertSource::Files(dir), _) => files_round(dir, &cert, &mut last),
            (CertSource::SelfManaged(cfg), Some(c)) => {
                self_managed_round(c, cfg, &cert, jiff::Timestamp::now()).await
            }
            (CertSource::SelfManaged(_), None) => {
                return warn!("self-managed certificates need a Kubernetes client");
            }
        };
        let wait = match result {
            Ok(changed) => {
                if changed {
                    metrics.webhook_cert_changes.inc();
                    info!("webhook certificate loaded");
                }
                interval
            }
            Err(e) => {
                warn!(error = %e, "webhook certificate round failed; retrying");
                Duration::from_secs(5).min(interval)
            }
        };
        tokio::select! {
            _ = &mut shutdown => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webhook::certs::{Lifetimes, Plan};

    fn write(dir: &std::path::Path, s: &Stored) {
        std::fs::write(dir.join("tls.crt"), &s.data[certs::TLS_CERT]).unwrap();
        std::fs::write(dir.join("tls.key"), &s.data[certs::TLS_KEY]).unwrap();
    }

    #[test]
    fn files_mode_loads_and_reloads_only_on_change() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().unwrap();
        let cert = SwappableCert::default();
        let mut last = Vec::new();
        assert!(matches!(
            files_round(dir.path(), &cert, &mut last),
            Err(CertRoundError::Io { .. })
        ));
        assert!(!cert.is_loaded());
        let names = vec!["tollgate-webhook.tollgate-system.svc".to_owned()];
        let now = jiff::Timestamp::now();
        let first =
            certs::execute(Plan::NewCa, &Stored::default(), now, &names, Lifetimes::default()).unwrap();
        write(dir.path(), &first);
        assert!(files_round(dir.path(), &cert, &mut last).unwrap());
        assert!(cert.is_loaded());
        assert!(
            !files_round(dir.path(), &cert, &mut last).unwrap(),
            "unchanged files are not reloaded"
        );
        // cert-manager renewed the Secret: the new pair is served.
        let renewed = certs::execute(Plan::Reissue, &first, now, &names, Lifetimes::default()).unwrap();
        write(dir.path(), &renewed);
        assert!(files_round(dir.path(), &cert, &mut last).unwrap());
        // A half-written pair (key of another cert) is refused and the old one kept.
        std::fs::write(dir.path().join("tls.key"), &first.data[certs::TLS_KEY]).unwrap();
        assert!(matches!(
            files_round(dir.path(), &cert, &mut last),
            Err(CertRoundError::Tls(_))
        ));
        assert!(cert.is_loaded());
    }
}
