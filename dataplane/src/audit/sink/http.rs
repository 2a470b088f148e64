//! The HTTP sinks: webhook, Elasticsearch / OpenSearch, Splunk HEC, Datadog. All go through
//! the dataplane's one HTTP client.

use bytes::Bytes;
use http::{HeaderValue, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};

use super::Target;
use super::encode;
use crate::audit::AuditError;
use crate::audit::spool::Spooled;

/// Sends a request; returns the status and (at most 1 MiB of) the body.
pub(crate) async fn send(
    t: &Target,
    method: Method,
    url: &str,
    headers: &[(&str, String)],
    body: Bytes,
) -> Result<(StatusCode, Bytes), AuditError> {
    let mut req = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        let v = HeaderValue::from_str(v).map_err(|_| t.err(format!("invalid {k} header value")))?;
        req = req.header(*k, v);
    }
    let req = req.body(Full::new(body)).map_err(|e| t.err(e.to_string()))?;
    let resp = t
        .client
        .request(req)
        .await
        .map_err(|e| t.err(crate::upstream::error_chain(&e)))?;
    let status = resp.status();
    let body = Limited::new(resp.into_body(), 1 << 20)
        .collect()
        .await
        .map_err(|e| t.err(format!("reading the response: {e}")))?
        .to_bytes();
    Ok((status, body))
}

fn url(t: &Target, path: &str) -> String {
    format!("{}{path}", t.config.endpoint.trim_end_matches('/'))
}

fn refused(t: &Target, status: StatusCode, body: &[u8]) -> AuditError {
    let snippet: String = String::from_utf8_lossy(body).chars().take(300).collect();
    t.err(format!("status {status}: {snippet}"))
}

/// Host name for sinks that label records with one.
pub(crate) fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "tollgate-proxy".into())
}

pub(crate) async fn webhook(t: &Target, batch: &[Spooled]) -> Result<(), AuditError> {
    let body = encode::webhook_body(batch);
    let mut headers = vec![
        ("content-type", "application/json".to_owned()),
        ("x-tollgate-chain-id", t.chain_id.clone()),
        ("x-tollgate-first-seq", batch[0].seq.to_string()),
        ("x-tollgate-last-seq", batch[batch.len() - 1].seq.to_string()),
    ];
    if let Some(secret) = t.secret(t.config.credential.as_ref())? {
        let now = jiff::Timestamp::now().as_second().max(0) as u64;
        headers.push((
            "x-tollgate-signature",
            encode::webhook_signature(secret.expose().as_bytes(), now, &body),
        ));
    }
    let (status, resp) = send(t, Method::POST, &t.config.endpoint, &headers, body).await?;
    if status.is_success() {
        Ok(())
    } else {
        Err(refused(t, status, &resp))
    }
}

pub(crate) async fn elasticsearch(t: &Target, batch: &[Spooled]) -> Result<(), AuditError> {
    let index = t.config.index.as_deref().unwrap_or("tollgate-audit");
    let body = encode::elasticsearch_bulk(index, batch);
    let mut headers = vec![("content-type", "application/x-ndjson".to_owned())];
    if let Some(key) = t.secret(t.config.credential.as_ref())? {
        headers.push(("authorization", format!("ApiKey {}", key.expose())));
    }
    let (status, resp) = send(t, Method::POST, &url(t, "/_bulk"), &headers, body).await?;
    if !status.is_success() {
        return Err(refused(t, status, &resp));
    }
    let v: serde_json::Value =
        serde_json::from_slice(&resp).map_err(|e| t.err(format!("bulk response is not JSON: {e}")))?;
    if v["errors"].as_bool() == Some(true) {
        // 409: already indexed under this event id, i.e. a re-send. Anything else: retry.
        let items = v["items"].as_array().cloned().unwrap_or_default();
        for item in &items {
            let op = &item["create"];
            let s = op["status"].as_u64().unwrap_or(0);
            if !(200..300).contains(&s) && s != 409 {
                return Err(t.err(format!(
                    "bulk item {} failed with {s}: {}",
                    op["_id"], op["error"]
                )));
            }
        }
    }
    Ok(())
}

pub(crate) async fn splunk(t: &Target, batch: &[Spooled]) -> Result<(), AuditError> {
    let token = t
        .secret(t.config.credential.as_ref())?
        .ok_or_else(|| t.err("no HEC token configured"))?;
    let sourcetype = t.config.source.as_deref().unwrap_or("tollgate:audit");
    let body = encode::splunk_body(batch, sourcetype, t.config.index.as_deref(), &hostname());
    let headers = [
        ("content-type", "application/json".to_owned()),
        ("authorization", format!("Splunk {}", token.expose())),
    ];
    let (status, resp) = send(
        t,
        Method::POST,
        &url(t, "/services/collector/event"),
        &headers,
        body,
    )
    .await?;
    if !status.is_success() {
        return Err(refused(t, status, &resp));
    }
    let v: serde_json::Value = serde_json::from_slice(&resp).unwrap_or_default();
    match v["code"].as_i64() {
        Some(0) | None => Ok(()),
        Some(_) => Err(refused(t, status, &resp)),
    }
}

pub(crate) async fn datadog(t: &Target, batch: &[Spooled]) -> Result<(), AuditError> {
    let key = t
        .secret(t.config.credential.as_ref())?
        .ok_or_else(|| t.err("no API key configured"))?;
    let source = t.config.source.as_deref().unwrap_or("tollgate");
    let body = encode::datadog_body(batch, source, &hostname(), &t.chain_id);
    let headers = [
        ("content-type", "application/json".to_owned()),
        ("dd-api-key", key.expose().to_owned()),
    ];
    let (status, resp) = send(t, Method::POST, &url(t, "/api/v2/logs"), &headers, body).await?;
    if status.is_success() {
        Ok(())
    } else {
        Err(refused(t, status, &resp))
    }
}
