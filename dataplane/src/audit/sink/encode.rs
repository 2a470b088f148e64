//! Wire encodings of a batch, one function per sink format (pure: tested without sockets).

use bytes::Bytes;
use ring::hmac;

use crate::audit::spool::Spooled;

/// Webhook body: a JSON array of the records, each exactly as spooled.
pub fn webhook_body(batch: &[Spooled]) -> Bytes {
    let mut out = Vec::with_capacity(batch.iter().map(|r| r.line.len() + 1).sum::<usize>() + 2);
    out.push(b'[');
    for (i, r) in batch.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(&r.line);
    }
    out.push(b']');
    Bytes::from(out)
}

/// The `x-tollgate-signature` header: `t=<unix seconds>,v1=<hex HMAC-SHA256(secret,
/// "<t>.<body>")>`. Receivers recompute it and reject stale timestamps (replays).
pub fn webhook_signature(secret: &[u8], timestamp: u64, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let mut ctx = hmac::Context::with_key(&key);
    ctx.update(timestamp.to_string().as_bytes());
    ctx.update(b".");
    ctx.update(body);
    format!("t={timestamp},v1={}", hex::encode(ctx.sign()))
}

fn json_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// Elasticsearch / OpenSearch `_bulk` NDJSON: a `create` action with `_id` = event id per
/// record (a re-sent record conflicts with 409 instead of duplicating).
pub fn elasticsearch_bulk(index: &str, batch: &[Spooled]) -> Bytes {
    let mut out = Vec::new();
    for r in batch {
        out.extend_from_slice(
            format!(
                "{{\"create\":{{\"_index\":{},\"_id\":{}}}}}\n",
                json_str(index),
                json_str(&r.id)
            )
            .as_bytes(),
        );
        out.extend_from_slice(&r.line);
        out.push(b'\n');
    }
    Bytes::from(out)
}

/// Event time as epoch seconds with milliseconds, as Splunk wants it.
fn epoch(time: &str) -> String {
    match time.parse::<jiff::Timestamp>() {
        Ok(t) => {
            let ms = t.as_millisecond();
            format!("{}.{:03}", ms.div_euclid(1000), ms.rem_euclid(1000))
        }
        Err(_) => "0".into(),
    }
}

/// Splunk HEC `/services/collector/event` body: concatenated event objects.
pub fn splunk_body(batch: &[Spooled], sourcetype: &str, index: Option<&str>, host: &str) -> Bytes {
    let mut out = Vec::new();
    for r in batch {
        out.extend_from_slice(
            format!(
                "{{\"time\":{},\"host\":{},\"source\":\"tollgate-proxy\",\"sourcetype\":{}{},\"event\":",
                epoch(&r.time),
                json_str(host),
                json_str(sourcetype),
                index
                    .map(|i| format!(",\"index\":{}", json_str(i)))
                    .unwrap_or_default()
            )
            .as_bytes(),
        );
        out.extend_from_slice(&r.line);
        out.push(b'}');
    }
    Bytes::from(out)
}

/// Datadog logs intake v2 body: a JSON array of log entries; `message` is the record.
pub fn datadog_body(batch: &[Spooled], source: &str, host: &str, chain_id: &str) -> Bytes {
    let mut out = Vec::new();
    out.push(b'[');
    for (i, r) in batch.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let message = String::from_utf8_lossy(&r.line);
        out.extend_from_slice(
            format!(
                "{{\"ddsource\":{},\"service\":\"tollgate-proxy\",\"hostname\":{},\"ddtags\":{},\"event_id\":{},\"message\":{}}}",
                json_str(source),
                json_str(host),
                json_str(&format!("chain_id:{chain_id}")),
                json_str(&r.id),
                json_str(&message)
            )
            .as_bytes(),
        );
    }
    out.push(b']');
    Bytes::from(out)
}

/// Gzip JSON lines: the S3 object body.
pub fn gzip_lines(batch: &[Spooled]) -> std::io::Result<Vec<u8>> {
    use std::io::Write;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    for r in batch {
        gz.write_all(&r.line)?;
        gz.write_all(b"\n")?;
    }
    gz.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(seq: u64) -> Spooled {
        Spooled {
            seq,
            id: format!("tga_c_{seq}"),
            time: "2026-01-02T03:04:05.678Z".into(),
            line: Bytes::from(format!("{{\"seq\":{seq}}}")),
        }
    }

    #[test]
    fn encodings_are_valid_json() {
        let b = [rec(1), rec(2)];
        let w: serde_json::Value = serde_json::from_slice(&webhook_body(&b)).unwrap();
        assert_eq!(w[1]["seq"], 2);
        let es = String::from_utf8(elasticsearch_bulk("idx", &b).to_vec()).unwrap();
        let lines: Vec<serde_json::Value> = es.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines[2]["create"]["_id"], "tga_c_2");
        assert!(es.ends_with('\n'));
        let sp = splunk_body(&b, "tollgate:audit", Some("main"), "h");
        let events: Vec<serde_json::Value> = serde_json::Deserializer::from_slice(&sp)
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert_eq!(events[0]["time"].as_f64(), Some(1767323045.678));
        assert_eq!(events[1]["event"]["seq"], 2);
        let dd: serde_json::Value = serde_json::from_slice(&datadog_body(&b, "tollgate", "h", "c")).unwrap();
        assert_eq!(dd[0]["message"], "{\"seq\":1}");
        let sig = webhook_signature(b"secret", 5, b"[]");
        assert!(sig.starts_with("t=5,v1=") && sig.len() == "t=5,v1=".len() + 64);
    }
}
