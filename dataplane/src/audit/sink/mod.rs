//! Shipping: one task per sink reads the spool from the sink's acknowledged offset, batches,
//! delivers with retries (exponential backoff with jitter, forever: at-least-once), and
//! persists the new offset only after the sink accepted the batch. Records carry their event
//! id, which each sink uses for de-duplication where the wire format allows (Elasticsearch
//! `_id`, S3 object key by sequence range).

mod encode;
mod file;
mod http;
mod s3;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

pub use self::encode::{datadog_body, elasticsearch_bulk, splunk_body, webhook_body, webhook_signature};
use super::AuditError;
use super::config::SinkKind;
use super::metrics::AuditMetrics;
use super::spool::{self, SpoolReader, Spooled};
use super::writer::Acks;
use crate::policy::SystemCredentials;
use crate::policy::document::{AuditSink, CredentialSource};
use crate::policy::snapshot::read_credential;
use crate::secret::Secret;
use crate::upstream::HttpClient;

/// A running sink task.
pub struct RunningSink {
    /// The configuration it runs with.
    pub(crate) config: AuditSink,
    task: tokio::task::JoinHandle<()>,
}

impl RunningSink {
    /// Stops the task (its offset file keeps what was acknowledged).
    pub(crate) fn stop(&self) {
        self.task.abort();
    }
}

/// What a delivery needs besides the batch.
pub(crate) struct Target {
    pub(crate) config: AuditSink,
    pub(crate) kind: SinkKind,
    pub(crate) chain_id: String,
    pub(crate) client: HttpClient,
}

impl Target {
    /// Reads a credential at delivery time, so a rotated Secret is picked up.
    pub(crate) fn secret(&self, src: Option<&CredentialSource>) -> Result<Option<Secret>, AuditError> {
        match src {
            None => Ok(None),
            Some(s) => read_credential(Some(s), &SystemCredentials)
                .map(Some)
                .map_err(|e| self.err(e)),
        }
    }

    pub(crate) fn err(&self, detail: impl Into<String>) -> AuditError {
        AuditError::Sink {
            sink: self.config.name.clone(),
            detail: detail.into(),
        }
    }

    /// Delivers one batch; `Ok` means the sink durably accepted every record.
    pub(crate) async fn deliver(&self, batch: &[Spooled]) -> Result<(), AuditError> {
        match self.kind {
            SinkKind::Webhook => http::webhook(self, batch).await,
            SinkKind::Elasticsearch => http::elasticsearch(self, batch).await,
            SinkKind::Splunk => http::splunk(self, batch).await,
            SinkKind::Datadog => http::datadog(self, batch).await,
            SinkKind::S3 => s3::put(self, batch).await,
            SinkKind::File => file::append(self, batch).await,
        }
    }
}

/// Starts the task shipping to `config`.
pub(crate) fn spawn(
    config: AuditSink,
    dir: &Path,
    chain_id: &str,
    committed: watch::Receiver<u64>,
    acks: Arc<Acks>,
    metrics: AuditMetrics,
    client: HttpClient,
) -> Result<RunningSink, AuditError> {
    let kind = SinkKind::parse(&config.kind)
        .ok_or_else(|| AuditError::Config(format!("unknown sink kind {:?}", config.kind)))?;
    let acked = spool::read_offset(dir, &config.name).unwrap_or(0);
    acks.set(&config.name, acked);
    let target = Target {
        config: config.clone(),
        kind,
        chain_id: chain_id.to_owned(),
        client,
    };
    tracing::info!(sink = %config.name, kind = %config.kind, acked, "audit sink started");
    let task = tokio::spawn(ship(target, dir.to_owned(), acked, committed, acks, metrics));
    Ok(RunningSink { config, task })
}

/// Waits until the writer's head reaches `target`; returns early if the writer is gone.
async fn wait_for(rx: &mut watch::Receiver<u64>, target: u64) {
    while *rx.borrow_and_update() < target {
        if rx.changed().await.is_err() {
            tokio::time::sleep(Duration::from_millis(200)).await;
            return;
        }
    }
}

/// The delay before retry `attempt` (0-based): exponential, capped, drawn from the upper half.
pub fn backoff(initial_ms: u64, max_ms: u64, attempt: u32) -> Duration {
    let ceiling = initial_ms
        .saturating_mul(1u64 << attempt.min(20))
        .min(max_ms)
        .max(1);
    let mut r = [0u8; 8];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut r);
    let half = ceiling / 2;
    Duration::from_millis(half + u64::from_le_bytes(r) % (ceiling - half + 1))
}

async fn ship(
    target: Target,
    dir: PathBuf,
    mut acked: u64,
    mut committed: watch::Receiver<u64>,
    acks: Arc<Acks>,
    metrics: AuditMetrics,
) {
    let name = target.config.name.clone();
    let batch_cfg = target.config.batch.clone();
    let retry = target.config.retry.clone();
    let mut max_records = usize::try_from(batch_cfg.max_records.max(1)).unwrap_or(usize::MAX);
    if target.kind == SinkKind::Datadog {
        max_records = max_records.min(1000); // the intake's per-request cap
    }
    let max_bytes = usize::try_from(batch_cfg.max_bytes.max(1)).unwrap_or(usize::MAX);
    let mut reader = Some(SpoolReader::new(&dir, acked));
    loop {
        metrics.lag(&name, committed.borrow().saturating_sub(acked));
        wait_for(&mut committed, acked + 1).await;
        if *committed.borrow() < acked + max_records as u64 {
            // Linger so records share a request.
            let full = acked + max_records as u64;
            let _ = tokio::time::timeout(
                Duration::from_millis(batch_cfg.max_wait_ms),
                wait_for(&mut committed, full),
            )
            .await;
        }
        let upto = *committed.borrow();
        let Some(mut r) = reader.take() else { return };
        let (r, read) = match tokio::task::spawn_blocking(move || {
            let b = r.read(upto, max_records, max_bytes);
            (r, b)
        })
        .await
        {
            Ok(x) => x,
            Err(_) => return,
        };
        let next = r.next_seq();
        reader = Some(r);
        let batch = match read {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(sink = %name, error = %e, "audit sink cannot read the spool");
                metrics.failure(&name);
                tokio::time::sleep(Duration::from_secs(1)).await;
                reader = Some(SpoolReader::new(&dir, acked));
                continue;
            }
        };
        if batch.lost > 0 {
            tracing::error!(sink = %name, records = batch.lost, "audit records deleted by retention before this sink shipped them");
        }
        if batch.records.is_empty() {
            if next > acked + 1 {
                acked = next - 1;
            } else {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            continue;
        }
        let mut attempt = 0u32;
        loop {
            let result = tokio::time::timeout(
                Duration::from_millis(retry.timeout_ms.max(1)),
                target.deliver(&batch.records),
            )
            .await
            .unwrap_or_else(|_| Err(target.err("timed out")));
            match result {
                Ok(()) => break,
                Err(e) => {
                    metrics.failure(&name);
                    let delay = backoff(retry.initial_backoff_ms, retry.max_backoff_ms, attempt);
                    tracing::warn!(
                        sink = %name,
                        error = %e,
                        attempt = attempt + 1,
                        first_seq = batch.records[0].seq,
                        records = batch.records.len(),
                        retry_in_ms = delay.as_millis() as u64,
                        "audit delivery failed; retrying"
                    );
                    tokio::time::sleep(delay).await;
                    attempt = attempt.saturating_add(1);
                }
            }
        }
        let last = batch.records.last().map_or(acked, |r| r.seq);
        let n = batch.records.len() as u64;
        let (d, s) = (dir.clone(), name.clone());
        match tokio::task::spawn_blocking(move || spool::write_offset(&d, &s, last)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::error!(sink = %name, error = %e, "audit sink offset not saved: records may be re-sent")
            }
            Err(_) => return,
        }
        acked = last;
        acks.set(&name, acked);
        metrics.shipped(&name, n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_caps() {
        for attempt in 0..30 {
            let d = backoff(100, 5000, attempt).as_millis() as u64;
            let ceiling = (100u64 << attempt.min(20)).min(5000);
            assert!(d >= ceiling / 2 && d <= ceiling, "attempt {attempt}: {d}");
        }
    }
}
