//! Each audit sink against a faithful receiver of its wire format (S3 against `moto`), and
//! delivery guarantees: a sink down for a while gets every record, in order, none twice after
//! de-duplication by id; a restart resumes from the acknowledged offset.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tollgate_dataplane::audit::verify::{VerifyOptions, verify};
use tollgate_dataplane::audit::{Audit, AuditMetrics, Event};
use tollgate_dataplane::policy::document::{
    AuditBatch, AuditConfig, AuditRetry, AuditSink, CredentialSource,
};
use tollgate_dataplane::upstream::build_client;
use tollgate_tests::sinks::moto::Moto;
use tollgate_tests::sinks::{Format, Receiver};

const AKID: &str = "AKIDEXAMPLE";
const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";

fn secret_file(dir: &Path, name: &str, value: &str) -> Option<CredentialSource> {
    let p = dir.join(name);
    std::fs::write(&p, value).unwrap();
    Some(CredentialSource {
        file: Some(p.display().to_string()),
        env: None,
    })
}

fn sink(name: &str, kind: &str, endpoint: &str) -> AuditSink {
    AuditSink {
        name: name.into(),
        kind: kind.into(),
        endpoint: endpoint.into(),
        batch: AuditBatch {
            max_records: 7,
            max_bytes: 1 << 20,
            max_wait_ms: 20,
        },
        retry: AuditRetry {
            initial_backoff_ms: 20,
            max_backoff_ms: 200,
            timeout_ms: 5000,
        },
        ..Default::default()
    }
}

fn open(dir: &Path, sinks: Vec<AuditSink>) -> Audit {
    let cfg = AuditConfig {
        sinks,
        ..Default::default()
    };
    Audit::open(dir, Some(&cfg), AuditMetrics::default(), build_client().unwrap()).unwrap()
}

fn record_n(a: &Audit, from: usize, n: usize) {
    for i in from..from + n {
        a.record(Event::now(
            "model_request",
            &json!({"request_id": format!("req_{i}"), "key_id": "alice", "text": "qu\"ote\nnewline é"}),
        ));
    }
}

async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every record 1..=head exactly once, in order, after de-duplication by id.
fn assert_complete_in_order(records: &[Value], head: u64) {
    let seqs: Vec<u64> = records.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=head).collect::<Vec<_>>());
    for r in records {
        let id = r["id"].as_str().unwrap();
        assert!(id.ends_with(&format!("_{}", r["seq"])), "{id}");
    }
}

async fn ships_everything(format: Format, kind: &str, configure: impl FnOnce(&mut AuditSink, &Path)) {
    let tmp = tempfile::tempdir().unwrap();
    let rx = Receiver::start(format).await.unwrap();
    let mut s = sink("s", kind, &rx.base_url());
    configure(&mut s, tmp.path());
    let a = open(&tmp.path().join("spool"), vec![s]);
    record_n(&a, 0, 50);
    let head = a.flush_async().await.unwrap();
    assert_eq!(head, 50);
    eventually("every record", || rx.unique_records().len() as u64 >= head).await;
    assert_complete_in_order(&rx.unique_records(), head);
    assert_eq!(
        rx.records().len(),
        rx.unique_records().len(),
        "nothing sent twice"
    );
    assert!(rx.violations().is_empty(), "{:?}", rx.violations());
    assert_eq!(rx.records()[3]["body"]["text"], "qu\"ote\nnewline é");
    a.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn webhook_sink_signs_json_batches() {
    ships_everything(
        Format::Webhook(Some("whsec-test-0123456789".into())),
        "webhook",
        |s, d| {
            s.credential = secret_file(d, "wh", "whsec-test-0123456789\n");
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn webhook_with_wrong_secret_is_refused_and_retried() {
    let tmp = tempfile::tempdir().unwrap();
    let rx = Receiver::start(Format::Webhook(Some("right-secret".into())))
        .await
        .unwrap();
    let mut s = sink("s", "webhook", &rx.base_url());
    s.credential = secret_file(tmp.path(), "wh", "wrong-secret");
    let a = open(&tmp.path().join("spool"), vec![s]);
    record_n(&a, 0, 3);
    eventually("retries", || rx.requests() >= 3).await;
    assert!(rx.records().is_empty());
    // Rotating the mounted Secret fixes it without a restart (credentials are read per delivery).
    std::fs::write(tmp.path().join("wh"), "right-secret").unwrap();
    eventually("delivery after rotation", || rx.unique_records().len() == 3).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn elasticsearch_sink_uses_bulk_create_with_event_ids() {
    ships_everything(
        Format::Elasticsearch(Some("es-api-key".into())),
        "elasticsearch",
        |s, d| {
            s.credential = secret_file(d, "es", "es-api-key");
            s.index = Some("audit-test".into());
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn elasticsearch_resend_is_idempotent() {
    let tmp = tempfile::tempdir().unwrap();
    let spool = tmp.path().join("spool");
    let rx = Receiver::start(Format::Elasticsearch(None)).await.unwrap();
    let a = open(&spool, vec![sink("es", "elasticsearch", &rx.base_url())]);
    record_n(&a, 0, 20);
    a.shutdown(Duration::from_secs(5)).await;
    let head = verify(&spool, &VerifyOptions::default()).unwrap().last_seq;
    eventually("first delivery", || rx.records().len() as u64 == head).await;
    // Lose the offset: everything is sent again; the 409 conflicts count as delivered.
    std::fs::remove_file(spool.join("sink-es.offset")).unwrap();
    let accepted = rx.accepted();
    let a = open(&spool, vec![sink("es", "elasticsearch", &rx.base_url())]);
    eventually("re-send acknowledged", || {
        std::fs::read_to_string(spool.join("sink-es.offset")).is_ok_and(|s| s.trim() == head.to_string())
    })
    .await;
    assert!(rx.accepted() > accepted);
    assert_eq!(rx.records().len() as u64, head, "no document twice");
    assert!(rx.violations().is_empty(), "{:?}", rx.violations());
    a.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn splunk_sink_speaks_hec() {
    ships_everything(Format::Splunk("hec-token-1".into()), "splunk", |s, d| {
        s.credential = secret_file(d, "hec", "hec-token-1");
        s.index = Some("audit".into());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn datadog_sink_speaks_logs_intake() {
    ships_everything(Format::Datadog("dd-key-1".into()), "datadog", |s, d| {
        s.credential = secret_file(d, "dd", "dd-key-1");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn file_sink_output_verifies_as_a_chain() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("audit.jsonl");
    let a = open(
        &tmp.path().join("spool"),
        vec![sink("f", "file", out.to_str().unwrap())],
    );
    record_n(&a, 0, 30);
    let head = a.flush_async().await.unwrap();
    eventually("file written", || {
        std::fs::read_to_string(&out).is_ok_and(|s| s.lines().count() as u64 == head)
    })
    .await;
    let r = verify(&out, &VerifyOptions::default()).unwrap();
    assert!(r.ok() && r.records == head, "{r:?}");
    a.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn s3_sink_writes_gzip_json_lines_objects_to_moto() {
    let moto = Moto::start().await.unwrap();
    moto.create_bucket("audit").await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let mut s = sink("s3", "s3", &moto.endpoint());
    s.bucket = Some("audit".into());
    s.region = Some("eu-west-1".into());
    s.prefix = Some("tg/".into());
    s.access_key_id = secret_file(tmp.path(), "akid", AKID);
    s.credential = secret_file(tmp.path(), "sk", SECRET);
    s.batch.max_records = 10;
    let a = open(&tmp.path().join("spool"), vec![s]);
    record_n(&a, 0, 25);
    let head = a.flush_async().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let records = loop {
        let r = moto.records("audit", "eu-west-1", AKID, SECRET).await.unwrap();
        if r.len() as u64 >= head || Instant::now() > deadline {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_complete_in_order(&records, head);
    let keys = moto.keys("audit", "eu-west-1", AKID, SECRET).await.unwrap();
    assert_eq!(keys.len(), 3, "{keys:?}");
    assert!(
        keys[0].starts_with(&format!("tg/{}/00000000000000000001-", a.chain_id())),
        "{keys:?}"
    );
    assert!(keys.iter().all(|k| k.ends_with(".jsonl.gz")));
    a.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sink_outage_loses_nothing_and_keeps_order() {
    let tmp = tempfile::tempdir().unwrap();
    let rx = Receiver::start(Format::Webhook(None)).await.unwrap();
    let a = open(
        &tmp.path().join("spool"),
        vec![sink("wh", "webhook", &rx.base_url())],
    );
    record_n(&a, 0, 10);
    eventually("first records", || rx.unique_records().len() == 10).await;
    rx.set_down(true);
    let before = rx.requests();
    record_n(&a, 10, 40);
    eventually("failed attempts", || rx.requests() >= before + 4).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    record_n(&a, 50, 20);
    rx.set_down(false);
    record_n(&a, 70, 30);
    let head = a.flush_async().await.unwrap();
    assert_eq!(head, 100);
    eventually("every record after the outage", || {
        rx.unique_records().len() as u64 == head
    })
    .await;
    assert_complete_in_order(&rx.unique_records(), head);
    // Arrival order of the raw stream (duplicates included) never goes backwards past a gap.
    a.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn restart_resumes_from_the_acknowledged_offset() {
    let tmp = tempfile::tempdir().unwrap();
    let spool = tmp.path().join("spool");
    let rx = Receiver::start(Format::Webhook(None)).await.unwrap();
    let a = open(&spool, vec![sink("wh", "webhook", &rx.base_url())]);
    record_n(&a, 0, 20);
    let head = a.flush_async().await.unwrap();
    eventually("first run shipped", || rx.unique_records().len() as u64 >= head).await;
    a.shutdown(Duration::from_secs(5)).await;
    let first_run = rx.records().len();
    // Records written while the sink was away (another sink set) are shipped on return.
    let a = open(&spool, vec![]);
    record_n(&a, 20, 15);
    a.shutdown(Duration::from_secs(1)).await;
    let a = open(&spool, vec![sink("wh", "webhook", &rx.base_url())]);
    record_n(&a, 35, 15);
    let head = a.flush_async().await.unwrap();
    eventually("second run shipped", || rx.unique_records().len() as u64 >= head).await;
    a.shutdown(Duration::from_secs(5)).await;
    let head = verify(&spool, &VerifyOptions::default()).unwrap().last_seq;
    eventually("final checkpoint shipped", || {
        rx.unique_records().len() as u64 == head
    })
    .await;
    assert_complete_in_order(&rx.unique_records(), head);
    assert_eq!(
        rx.records().len(),
        rx.unique_records().len(),
        "clean restarts re-send nothing"
    );
    assert!(first_run > 0);
}
