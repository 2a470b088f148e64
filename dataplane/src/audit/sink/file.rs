//! The local file sink: records appended as JSON lines, fsynced after each batch.

use std::io::Write;

use super::Target;
use crate::audit::AuditError;
use crate::audit::spool::Spooled;

pub(crate) async fn append(t: &Target, batch: &[Spooled]) -> Result<(), AuditError> {
    let path = t.config.endpoint.clone();
    let mut buf = Vec::with_capacity(batch.iter().map(|r| r.line.len() + 1).sum());
    for r in batch {
        buf.extend_from_slice(&r.line);
        buf.push(b'\n');
    }
    let result = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?;
        f.write_all(&buf)?;
        f.sync_data()
    })
    .await
    .map_err(|e| t.err(e.to_string()))?;
    result.map_err(|e| t.err(format!("{}: {e}", t.config.endpoint)))
}
