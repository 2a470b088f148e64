//! Validation of the policy document's `audit` section (called by
//! [`crate::policy::validate`]), and the sink kinds.

use std::collections::HashSet;

use crate::policy::document::{AuditConfig, CredentialSource};

/// Sink kinds this proxy ships to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkKind {
    /// HTTP POST of a JSON array, signed with an HMAC header.
    Webhook,
    /// Elasticsearch / OpenSearch `_bulk`.
    Elasticsearch,
    /// Splunk HTTP Event Collector.
    Splunk,
    /// Datadog logs intake (v2).
    Datadog,
    /// S3-compatible object storage: gzip JSON-lines objects.
    S3,
    /// A local JSON-lines file.
    File,
}

impl SinkKind {
    /// Parses a `kind` field (`opensearch` is an alias of `elasticsearch`).
    pub fn parse(s: &str) -> Option<SinkKind> {
        Some(match s {
            "webhook" => SinkKind::Webhook,
            "elasticsearch" | "opensearch" => SinkKind::Elasticsearch,
            "splunk" => SinkKind::Splunk,
            "datadog" => SinkKind::Datadog,
            "s3" => SinkKind::S3,
            "file" => SinkKind::File,
            _ => return None,
        })
    }
}

fn check_credential(out: &mut Vec<(String, String)>, at: &str, c: &CredentialSource) {
    if c.file.is_some() == c.env.is_some() {
        out.push((at.to_owned(), "set exactly one of file or env".into()));
    }
}

/// Problems in an `audit` section, as (field path, message).
pub fn validate(a: &AuditConfig) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut names = HashSet::new();
    for (i, s) in a.sinks.iter().enumerate() {
        let at = format!("audit.sinks[{i}]");
        if s.name.is_empty()
            || !s
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            out.push((
                format!("{at}.name"),
                "use letters, digits, '-' and '_' only".into(),
            ));
        } else if !names.insert(s.name.as_str()) {
            out.push((format!("{at}.name"), format!("duplicate sink name {:?}", s.name)));
        }
        let Some(kind) = SinkKind::parse(&s.kind) else {
            out.push((
                format!("{at}.kind"),
                format!(
                    "unknown kind {:?}: expected webhook, elasticsearch, opensearch, splunk, datadog, s3 or file",
                    s.kind
                ),
            ));
            continue;
        };
        if kind == SinkKind::File {
            if s.endpoint.trim().is_empty() {
                out.push((format!("{at}.endpoint"), "a file sink needs a path".into()));
            }
        } else {
            match url::Url::parse(&s.endpoint) {
                Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
                _ => out.push((
                    format!("{at}.endpoint"),
                    format!("{:?} is not an http(s) URL", s.endpoint),
                )),
            }
        }
        if let Some(c) = &s.credential {
            check_credential(&mut out, &format!("{at}.credential"), c);
        }
        if let Some(c) = &s.access_key_id {
            check_credential(&mut out, &format!("{at}.access_key_id"), c);
        }
        let needs_credential = matches!(kind, SinkKind::Splunk | SinkKind::Datadog | SinkKind::S3);
        if needs_credential && s.credential.is_none() {
            out.push((
                format!("{at}.credential"),
                format!("a {} sink needs a credential", s.kind),
            ));
        }
        if kind == SinkKind::S3 {
            if s.bucket.as_deref().is_none_or(str::is_empty) {
                out.push((format!("{at}.bucket"), "an s3 sink needs a bucket".into()));
            }
            if s.access_key_id.is_none() {
                out.push((
                    format!("{at}.access_key_id"),
                    "an s3 sink needs an access key id".into(),
                ));
            }
        }
        if s.batch.max_records == 0 {
            out.push((format!("{at}.batch.max_records"), "must be greater than 0".into()));
        }
        if s.retry.initial_backoff_ms == 0 || s.retry.max_backoff_ms < s.retry.initial_backoff_ms {
            out.push((
                format!("{at}.retry"),
                "need 0 < initial_backoff_ms <= max_backoff_ms".into(),
            ));
        }
    }
    if let Some(cp) = &a.checkpoint {
        check_credential(&mut out, "audit.checkpoint.key", &cp.key);
    }
    if let Some(sp) = &a.spool {
        if sp.queue_capacity == 0 {
            out.push((
                "audit.spool.queue_capacity".into(),
                "must be greater than 0".into(),
            ));
        }
        if sp.segment_max_bytes == 0 {
            out.push((
                "audit.spool.segment_max_bytes".into(),
                "must be greater than 0".into(),
            ));
        }
    }
    out
}
