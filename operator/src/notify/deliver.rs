//! The notifier: claims notifications through the Budget's status (a JSON Patch conditional on
//! `metadata.resourceVersion`), records Events, delivers to the targets and records the outcome.
//! One task per budget at a time, off the reconcile loop (a slow receiver never delays the
//! policy).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use tracing::{info, warn};

use super::{
    Attempt, Plan, Subject, claimed_records, payload, plan, record_attempt, slack_body, webhook_request,
};
use crate::compile::BudgetSpend;
use crate::crd::{Budget, CredentialRef, NotificationRecord, NotifyTarget};
use crate::secrets::MANAGER;

/// The field manager of the notifier's status writes (not the reconciler's server-side apply).
pub const FIELD_MANAGER: &str = "tollgate-operator-notifier";

/// How many times a conditional write is re-read and retried after losing a race.
const CONFLICT_RETRIES: usize = 8;

/// How the notifier runs.
#[derive(Debug, Clone)]
pub struct NotifySettings {
    /// The operator's namespace: where target Secrets are read (labelled
    /// `tollgate.dev/credential=true`), and the `namespace` of payloads.
    pub namespace: String,
    /// This replica's name (claims carry it).
    pub instance: String,
    /// The cluster's name for payloads, if given.
    pub cluster: Option<String>,
    /// Another replica's unfinished claim is taken over after this long without progress.
    pub take_over_after: Duration,
    /// Timeout of one delivery.
    pub timeout: Duration,
    /// Targets every budget notifies (the chart's `notifications.*`), before its own.
    pub defaults: Vec<NotifyTarget>,
}

/// Delivers budget notifications.
pub struct Notifier {
    client: Client,
    http: tollgate_dataplane::upstream::HttpClient,
    reporter: Reporter,
    settings: NotifySettings,
    inflight: Mutex<HashSet<String>>,
}

fn is_lost_race(e: &kube::Error) -> bool {
    // 409: a resourceVersion conflict; 422: the `test` operation failed (the object changed).
    matches!(e, kube::Error::Api(s) if s.code == 409 || s.code == 422)
}

impl Notifier {
    /// A notifier using `client`.
    pub fn new(client: Client, settings: NotifySettings) -> anyhow::Result<Self> {
        let reporter = Reporter {
            controller: MANAGER.to_owned(),
            instance: Some(settings.instance.clone()),
        };
        Ok(Self {
            client,
            http: tollgate_dataplane::upstream::build_client()?,
            reporter,
            settings,
            inflight: Mutex::new(HashSet::new()),
        })
    }

    /// Starts a task for `budget` when, by the cached copy, something is due and no task for it
    /// runs. The task decides again from the object as the API server has it.
    pub fn kick(self: &Arc<Self>, budget: &Budget, spend: &BudgetSpend) {
        let records = budget
            .status
            .as_ref()
            .map(|s| s.notifications.as_slice())
            .unwrap_or_default();
        let due = plan(
            &budget.spec.thresholds,
            spend,
            records,
            &self.settings.instance,
            Timestamp::now(),
            self.settings.take_over_after,
        );
        if due.is_empty() {
            return;
        }
        let name = budget.name_any();
        if !self.inflight.lock().expect("inflight lock").insert(name.clone()) {
            return;
        }
        let this = self.clone();
        let spend = spend.clone();
        tokio::spawn(async move {
            if let Err(e) = this.run(&name, &spend).await {
                warn!(budget = %name, error = %e, "budget notification failed; retrying later");
            }
            this.inflight.lock().expect("inflight lock").remove(&name);
        });
    }

    fn api(&self) -> Api<Budget> {
        Api::all(self.client.clone())
    }

    /// Writes `records` as `status.notifications` if the Budget is still at `rv`.
    async fn write_records(&self, b: &Budget, records: &[NotificationRecord]) -> Result<Budget, kube::Error> {
        let rv = b.resource_version().unwrap_or_default();
        let mut ops = vec![json!({"op": "test", "path": "/metadata/resourceVersion", "value": rv})];
        ops.push(if b.status.is_some() {
            json!({"op": "add", "path": "/status/notifications", "value": records})
        } else {
            json!({"op": "add", "path": "/status", "value": {"notifications": records}})
        });
        let patch: json_patch::Patch =
            serde_json::from_value(serde_json::Value::Array(ops)).map_err(kube::Error::SerdeError)?;
        let pp = PatchParams {
            field_manager: Some(FIELD_MANAGER.to_owned()),
            ..Default::default()
        };
        self.api()
            .patch_status(&b.name_any(), &pp, &Patch::Json::<()>(patch))
            .await
    }

    /// One pass over a budget: claim, record Events, deliver, record the outcome.
    async fn run(&self, name: &str, spend: &BudgetSpend) -> Result<(), kube::Error> {
        let me = self.settings.instance.clone();
        let mut claimed: Option<(Budget, Plan)> = None;
        for _ in 0..CONFLICT_RETRIES {
            let Some(b) = self.api().get_opt(name).await? else {
                return Ok(());
            };
            let records = b
                .status
                .as_ref()
                .map(|s| s.notifications.clone())
                .unwrap_or_default();
            let now = Timestamp::now();
            let due = plan(
                &b.spec.thresholds,
                spend,
                &records,
                &me,
                now,
                self.settings.take_over_after,
            );
            if due.is_empty() {
                return Ok(());
            }
            if due.claim.is_empty() && due.take_over.is_empty() {
                claimed = Some((b, due));
                break;
            }
            let new = claimed_records(&records, &b.spec.thresholds, &spend.window_start, &due, &me, now);
            match self.write_records(&b, &new).await {
                Ok(written) => {
                    info!(budget = %name, window = %spend.window_start, claimed = ?due.claim, taken_over = ?due.take_over, "budget notifications claimed");
                    claimed = Some((written, due));
                    break;
                }
                Err(e) if is_lost_race(&e) => continue,
                Err(e) => return Err(e),
            }
        }
        let Some((b, due)) = claimed else {
            return Ok(());
        };
        let records = b
            .status
            .as_ref()
            .map(|s| s.notifications.clone())
            .unwrap_or_default();
        let uid = b.uid().unwrap_or_default();
        let subject = Subject {
            budget: name,
            uid: &uid,
            scope: &b.spec.scope,
            period: b.spec.period,
            cluster: self.settings.cluster.as_deref(),
            namespace: &self.settings.namespace,
        };
        let reference = b.object_ref(&());
        let mut outcomes = Vec::new();
        let mut sends: Vec<u8> = due
            .claim
            .iter()
            .chain(&due.retry)
            .chain(&due.take_over)
            .copied()
            .collect();
        sends.sort_unstable();
        for t in sends {
            let Some(record) = records
                .iter()
                .find(|r| r.window == spend.window_start && r.threshold == t)
            else {
                continue;
            };
            let p = payload(&subject, spend, t, &record.claimed_at);
            if due.claim.contains(&t) {
                self.event(&reference, &p).await;
            }
            let attempt = self.deliver(&b, &p, &record.delivered_to).await;
            if let Some(e) = &attempt.error {
                warn!(budget = %name, threshold = t, error = %e, "budget notification not delivered");
                self.publish(
                    &reference,
                    EventType::Warning,
                    "BudgetNotificationFailed",
                    format!("threshold {t}%: {e}"),
                )
                .await;
            } else {
                info!(budget = %name, threshold = t, id = %p.id, "budget notification delivered");
            }
            outcomes.push((t, attempt));
        }
        if outcomes.is_empty() {
            return Ok(());
        }
        // The outcome, on the live object (other records may have changed meanwhile).
        for _ in 0..CONFLICT_RETRIES {
            let Some(b) = self.api().get_opt(name).await? else {
                return Ok(());
            };
            let mut records = b
                .status
                .as_ref()
                .map(|s| s.notifications.clone())
                .unwrap_or_default();
            let now = Timestamp::now();
            let mut changed = false;
            for (t, attempt) in &outcomes {
                changed |= record_attempt(&mut records, &spend.window_start, *t, &me, attempt, now);
            }
            if !changed {
                return Ok(());
            }
            match self.write_records(&b, &records).await {
                Ok(_) => return Ok(()),
                Err(e) if is_lost_race(&e) => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    async fn event(&self, reference: &k8s_openapi::api::core::v1::ObjectReference, p: &super::Payload) {
        let type_ = if p.threshold >= 100 {
            EventType::Warning
        } else {
            EventType::Normal
        };
        self.publish(reference, type_, p.reason(), p.message()).await;
    }

    async fn publish(
        &self,
        reference: &k8s_openapi::api::core::v1::ObjectReference,
        type_: EventType,
        reason: &str,
        note: String,
    ) {
        let ev = Event {
            type_,
            reason: reason.to_owned(),
            note: Some(crate::names::truncate(&note, 1024)),
            action: "Notify".to_owned(),
            secondary: None,
        };
        // A Recorder of its own: a shared one folds Events of the same reason and action into
        // one series keeping the first note, and each notification is an Event of its own.
        let recorder = Recorder::new(self.client.clone(), self.reporter.clone());
        if let Err(e) = recorder.publish(&ev, reference).await {
            warn!(error = %e, reason, "publishing an event failed");
        }
    }

    /// Every target of `b` (defaults first) with its id.
    fn targets<'a>(&'a self, b: &'a Budget) -> Vec<(String, &'a NotifyTarget)> {
        let kind = |t: &NotifyTarget| if t.webhook.is_some() { "webhook" } else { "slack" };
        self.settings
            .defaults
            .iter()
            .enumerate()
            .map(|(i, t)| (format!("default/{}/{i}", kind(t)), t))
            .chain(
                b.spec
                    .notify
                    .iter()
                    .enumerate()
                    .map(|(i, t)| (format!("{}/{i}", kind(t)), t)),
            )
            .collect()
    }

    /// Sends `p` to every target not in `done`.
    async fn deliver(&self, b: &Budget, p: &super::Payload, done: &[String]) -> Attempt {
        let mut out = Attempt::default();
        for (id, target) in self.targets(b) {
            if done.contains(&id) {
                continue;
            }
            let result = match (&target.webhook, &target.slack) {
                (Some(w), _) => match self.secret(&w.secret).await {
                    Ok(secret) => {
                        let now = Timestamp::now().as_second().max(0) as u64;
                        let req = webhook_request(p, &secret, now);
                        self.post(&w.url, &req.headers, req.body, false).await
                    }
                    Err(e) => Err(e),
                },
                (None, Some(s)) => match self.secret(&s.webhook_url).await {
                    Ok(url) => {
                        let url = String::from_utf8_lossy(&url).trim().to_owned();
                        let headers = [("content-type", "application/json".to_owned())];
                        self.post(&url, &headers, slack_body(p), true).await
                    }
                    Err(e) => Err(e),
                },
                (None, None) => Err("no webhook or slack".to_owned()),
            };
            match result {
                Ok(()) => out.delivered.push(id),
                Err(e) => {
                    out.error.get_or_insert(format!("{id}: {e}"));
                }
            }
        }
        out
    }

    /// A secret value: a key of a Secret in the operator's namespace labelled as a credential.
    async fn secret(&self, c: &CredentialRef) -> Result<Vec<u8>, String> {
        let Some(r) = &c.secret_key_ref else {
            return Err("the secret must be a secretKeyRef".to_owned());
        };
        let ns = &self.settings.namespace;
        match crate::reconcile::apply::read_secret_data(&self.client, ns, &r.name).await {
            Ok(Some((labels, data))) if crate::credentials::is_credential(Some(&labels)) => data
                .get(&r.key)
                .cloned()
                .ok_or_else(|| format!("Secret {ns}/{} has no key {:?}", r.name, r.key)),
            Ok(Some(_)) => Err(format!(
                "Secret {ns}/{} is not labelled {}=true",
                r.name,
                crate::credentials::CREDENTIAL_LABEL
            )),
            Ok(None) => Err(format!("Secret {ns}/{} not found", r.name)),
            Err(e) => Err(format!("reading Secret {ns}/{}: {e}", r.name)),
        }
    }

    /// POSTs `body`; 2xx is success. `secret_url`: the URL is a credential and never appears
    /// in an error.
    async fn post(
        &self,
        url: &str,
        headers: &[(&'static str, String)],
        body: Vec<u8>,
        secret_url: bool,
    ) -> Result<(), String> {
        let shown = if secret_url { "<secret URL>" } else { url };
        let uri: http::Uri = url.parse().map_err(|_| format!("invalid URL {shown}"))?;
        let mut req = http::Request::post(uri);
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        let req = req
            .body(Full::new(Bytes::from(body)))
            .map_err(|_| format!("invalid request to {shown}"))?;
        let work = async {
            let resp = self.http.request(req).await.map_err(|e| {
                if secret_url {
                    "request failed".to_owned()
                } else {
                    format!("POST {shown}: {e}")
                }
            })?;
            let status = resp.status();
            // The answer is not needed: a bounded read (a receiver must not be able to stream
            // gigabytes into the operator), then dropped.
            let _ = http_body_util::Limited::new(resp.into_body(), 64 << 10)
                .collect()
                .await;
            if status.is_success() {
                Ok(())
            } else {
                Err(format!("POST {shown}: status {status}"))
            }
        };
        tokio::time::timeout(self.settings.timeout, work)
            .await
            .map_err(|_| format!("POST {shown}: no answer within {:?}", self.settings.timeout))?
    }
}
