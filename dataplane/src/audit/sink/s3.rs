//! The S3-compatible sink: each batch becomes one gzip JSON-lines object whose key names its
//! sequence range (`<prefix><chain id>/<first seq>-<last seq>.jsonl.gz`), so a re-sent batch
//! overwrites itself. Requests are signed with SigV4 by `rusty-s3` (presigned URL) and sent
//! with the dataplane's HTTP client.

use std::time::Duration;

use http::Method;
use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};

use super::Target;
use super::encode::gzip_lines;
use super::http::send;
use crate::audit::AuditError;
use crate::audit::spool::Spooled;

/// The object key of a batch.
pub fn object_key(prefix: &str, chain_id: &str, first: u64, last: u64) -> String {
    format!("{prefix}{chain_id}/{first:020}-{last:020}.jsonl.gz")
}

pub(crate) async fn put(t: &Target, batch: &[Spooled]) -> Result<(), AuditError> {
    let endpoint = url::Url::parse(&t.config.endpoint).map_err(|e| t.err(format!("endpoint: {e}")))?;
    let bucket_name = t.config.bucket.clone().unwrap_or_default();
    let region = t.config.region.clone().unwrap_or_else(|| "us-east-1".into());
    let bucket = Bucket::new(endpoint, UrlStyle::Path, bucket_name, region)
        .map_err(|e| t.err(format!("bucket: {e}")))?;
    let key_id = t
        .secret(t.config.access_key_id.as_ref())?
        .ok_or_else(|| t.err("no access key id configured"))?;
    let secret = t
        .secret(t.config.credential.as_ref())?
        .ok_or_else(|| t.err("no secret access key configured"))?;
    let creds = Credentials::new(key_id.expose(), secret.expose());
    let prefix = t.config.prefix.as_deref().unwrap_or("tollgate-audit/");
    let key = object_key(prefix, &t.chain_id, batch[0].seq, batch[batch.len() - 1].seq);
    let signed = bucket
        .put_object(Some(&creds), &key)
        .sign(Duration::from_secs(300));
    let body = gzip_lines(batch).map_err(|e| t.err(format!("gzip: {e}")))?;
    let headers = [("content-type", "application/gzip".to_owned())];
    let (status, resp) = send(t, Method::PUT, signed.as_str(), &headers, body.into()).await?;
    if status.is_success() {
        Ok(())
    } else {
        let snippet: String = String::from_utf8_lossy(&resp).chars().take(300).collect();
        Err(t.err(format!("PUT {key}: status {status}: {snippet}")))
    }
}
