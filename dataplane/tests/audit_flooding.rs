//! The audit trail under flooding: refusals anyone can trigger write bounded, rate-limited
//! records (and say how many they left out); retention that deletes records no sink has
//! shipped leaves a `gap` record in the chain; a full disk keeps the writer's memory bounded
//! and what it could not write is a `gap` record once the disk takes writes again.

use std::path::Path;
use std::time::{Duration, Instant};

use prometheus_client::registry::Registry;
use serde_json::{Value, json};
use tollgate_dataplane::audit::spool::list_segments;
use tollgate_dataplane::audit::verify::{VerifyOptions, verify};
use tollgate_dataplane::audit::{Audit, AuditMetrics, Event};
use tollgate_dataplane::denial::Denial;
use tollgate_dataplane::policy::document::{AuditBatch, AuditConfig, AuditRetry, AuditSink, AuditSpool};
use tollgate_dataplane::upstream::build_client;

fn spooled(dir: &Path) -> Vec<Value> {
    let mut out = Vec::new();
    for (_, seg) in list_segments(dir).unwrap() {
        for line in std::fs::read_to_string(seg).unwrap().lines() {
            out.push(serde_json::from_str(line).unwrap());
        }
    }
    out
}

fn kind<'a>(records: &'a [Value], k: &str) -> Vec<&'a Value> {
    records.iter().filter(|r| r["kind"] == k).collect()
}

fn registered() -> (AuditMetrics, Registry) {
    let metrics = AuditMetrics::default();
    let mut registry = Registry::default();
    metrics.register(&mut registry);
    (metrics, registry)
}

fn metric(registry: &Registry, series: &str) -> Option<u64> {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse::<f64>().ok()))
        .map(|v| v as u64)
}

#[tokio::test(flavor = "multi_thread")]
async fn unauthenticated_refusals_are_bounded_rate_limited_and_counted() {
    let tmp = tempfile::tempdir().unwrap();
    let a = Audit::open(tmp.path(), None, AuditMetrics::default(), build_client().unwrap()).unwrap();
    let path = format!("/{}", "a".repeat(100_000));
    let session = "s\u{e9}".repeat(20_000);
    let sent = 5_000u64;
    let started = Instant::now();
    for i in 0..sent {
        let d = if i % 2 == 0 {
            Denial::NotFound { path: path.clone() }
        } else {
            Denial::UnknownKey
        };
        a.denial(&d, &format!("req_{i}"), None, Some(&session));
    }
    let elapsed = started.elapsed();
    a.shutdown(Duration::from_secs(1)).await;

    let records = spooled(tmp.path());
    for r in &records {
        let line = r.to_string();
        assert!(
            line.len() < 4096,
            "a {} record of {} bytes",
            r["kind"],
            line.len()
        );
    }
    let denials = kind(&records, "denial");
    let first = denials[0]["body"].clone();
    let sid = first["session_id"].as_str().unwrap();
    assert_eq!(sid.chars().count(), 257, "256 characters and the elision mark");
    assert!(
        sid.ends_with('\u{2026}') && sid.starts_with("s\u{e9}s\u{e9}"),
        "{sid}"
    );
    let message = first["message"].as_str().unwrap();
    assert!(message.ends_with('\u{2026}') && message.len() < 2048, "{message}");

    // Rate-limited: a burst, then a steady trickle; the rest is counted, not written.
    let allowed = 200 + 50 * (elapsed.as_secs() + 2);
    assert!(
        (denials.len() as u64) <= allowed,
        "{} individual refusal records in {elapsed:?}",
        denials.len()
    );
    let summaries = kind(&records, "denials_suppressed");
    assert!(!summaries.is_empty(), "suppressed refusals are not silent");
    let suppressed: u64 = summaries
        .iter()
        .map(|s| s["body"]["suppressed"].as_u64().unwrap())
        .sum();
    assert_eq!(
        denials.len() as u64 + suppressed,
        sent,
        "every refusal is a record or counted in one"
    );
    let by_reason: u64 = summaries
        .iter()
        .flat_map(|s| s["body"]["reasons"].as_object().unwrap().values())
        .map(|n| n.as_u64().unwrap())
        .sum();
    assert_eq!(by_reason, suppressed);
    assert!(verify(tmp.path(), &VerifyOptions::default()).unwrap().ok());
}

#[tokio::test(flavor = "multi_thread")]
async fn retention_deleting_unshipped_records_leaves_a_gap_record() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("spool");
    let cfg = AuditConfig {
        spool: Some(AuditSpool {
            segment_max_bytes: 2048,
            max_bytes: 8192,
            ..Default::default()
        }),
        // A sink that never acknowledges anything: nothing is ever shipped.
        sinks: vec![AuditSink {
            name: "down".into(),
            kind: "webhook".into(),
            endpoint: "http://127.0.0.1:9/hook".into(),
            batch: AuditBatch {
                max_records: 10,
                max_bytes: 1 << 20,
                max_wait_ms: 10,
            },
            retry: AuditRetry {
                initial_backoff_ms: 1000,
                max_backoff_ms: 1000,
                timeout_ms: 100,
            },
            ..Default::default()
        }],
        ..Default::default()
    };
    let a = Audit::open(&dir, Some(&cfg), AuditMetrics::default(), build_client().unwrap()).unwrap();
    for batch in 0..20 {
        for i in 0..10 {
            a.record(Event::now(
                "denial",
                &json!({"i": batch * 10 + i, "pad": "x".repeat(150)}),
            ));
        }
        a.flush_async().await.unwrap();
    }
    a.shutdown(Duration::from_millis(10)).await;

    let records = spooled(&dir);
    let first = records[0]["seq"].as_u64().unwrap();
    assert!(first > 1, "the size cap deleted the oldest segments");
    let gaps = kind(&records, "gap");
    assert!(
        !gaps.is_empty(),
        "records 1..{first} were deleted unshipped without a trace"
    );
    // Each gap names its range; the newest ends where the chain now begins (older gap
    // records may have been deleted by the same cap since).
    for g in &gaps {
        let b = &g["body"];
        assert_eq!(b["reason"], "retention", "{g}");
        let (from, to) = (b["first_seq"].as_u64().unwrap(), b["last_seq"].as_u64().unwrap());
        assert_eq!(b["records"].as_u64().unwrap(), to - from + 1, "{g}");
        assert_eq!(b["sinks"], json!(["down"]), "{g}");
    }
    let newest = gaps.last().unwrap();
    assert_eq!(
        newest["body"]["last_seq"].as_u64().unwrap(),
        first - 1,
        "{newest}"
    );
    let lost: u64 = gaps.iter().map(|g| g["body"]["records"].as_u64().unwrap()).sum();
    let r = verify(&dir, &VerifyOptions::default()).unwrap();
    assert!(r.ok(), "{r:?}");
    let text = serde_json::to_value(&r).unwrap();
    let reported: u64 = text["gaps"]
        .as_array()
        .expect("verify reports gaps")
        .iter()
        .map(|g| g["records"].as_u64().unwrap())
        .sum();
    assert_eq!(reported, lost, "{text}");
    // `audit verify` says so, and exits 2: intact, but with records lost.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate-proxy"))
        .args(["audit", "verify", dir.to_str().unwrap()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{stdout}");
    assert!(stdout.starts_with("ok: chain "), "{stdout}");
    assert!(
        stdout.contains(&format!(
            "records lost (seq {}..{}): retention",
            newest["body"]["first_seq"],
            first - 1
        )),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_bounds_the_writer_and_leaves_a_gap_record() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("spool");
    let (metrics, registry) = registered();
    let a = Audit::open(&dir, None, metrics, build_client().unwrap()).unwrap();
    // The first segment is /dev/full: every write fails with ENOSPC.
    let seg = dir.join("seg-00000000000000000001.jsonl");
    std::os::unix::fs::symlink("/dev/full", &seg).unwrap();
    let n = 1_500u64;
    let pad = "p".repeat(16 << 10);
    let mut peak = 0;
    for i in 0..n {
        a.record(Event::now("denial", &json!({"i": i, "pad": pad})));
        if i % 100 == 99 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let pending = metric(&registry, "audit_spool_pending_bytes").expect("pending bytes gauge");
            peak = peak.max(pending);
        }
    }
    // The writer drops what it cannot hold (or, on a loaded machine, the queue in front of it
    // fills first): either way records are dropped, never held without bound. Polled, not slept.
    let dropped = || {
        ["spool_unwritable", "queue_full"]
            .iter()
            .map(|r| {
                metric(
                    &registry,
                    &format!("audit_records_dropped_total{{reason=\"{r}\"}}"),
                )
                .unwrap_or(0)
            })
            .sum::<u64>()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while dropped() == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(dropped() > 0, "a full disk dropped nothing: memory grew instead");
    assert!(peak <= (8 << 20) + (17 << 10), "the writer held {peak} bytes");

    // The disk has room again: what was held is written, then a gap record for the rest.
    std::fs::remove_file(&seg).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(&registry, "audit_spool_pending_bytes").unwrap_or(1) > 0 {
        assert!(Instant::now() < deadline, "the writer did not recover");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    a.record(Event::now("denial", &json!({"i": "after"})));
    a.shutdown(Duration::from_secs(1)).await;
    let dropped = metric(
        &registry,
        "audit_records_dropped_total{reason=\"spool_unwritable\"}",
    )
    .unwrap();

    let records = spooled(&dir);
    let written = kind(&records, "denial").len() as u64;
    assert_eq!(written + dropped, n + 1, "every event is written or counted");
    let gaps = kind(&records, "gap");
    assert_eq!(gaps.len(), 1, "{gaps:?}");
    assert_eq!(gaps[0]["body"]["reason"], "spool_unwritable");
    assert_eq!(gaps[0]["body"]["records"], dropped);
    let r = verify(&dir, &VerifyOptions::default()).unwrap();
    assert!(r.ok(), "{r:?}");
}
