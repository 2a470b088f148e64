//! The audit chain against tampering: a 1-byte change, a deleted record, a reordered pair, a
//! truncated tail and a rewritten chain are each reported at the right sequence number, by
//! the library and by `tollgate-proxy audit verify`; a torn write left by a crash is repaired
//! on open and the chain continues.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use tollgate_dataplane::audit::checkpoint::Verifier;
use tollgate_dataplane::audit::record::{chain_hash, seal};
use tollgate_dataplane::audit::spool::list_segments;
use tollgate_dataplane::audit::verify::{VerifyOptions, verify};
use tollgate_dataplane::audit::{Audit, AuditMetrics, Event};
use tollgate_dataplane::policy::document::{
    AuditCheckpoint, AuditConfig, CheckpointAlgorithm, CredentialSource,
};
use tollgate_dataplane::upstream::build_client;

const KEY: &str = "0123456789abcdef-test-checkpoint-key";

fn config(key_file: &Path) -> AuditConfig {
    AuditConfig {
        checkpoint: Some(AuditCheckpoint {
            algorithm: CheckpointAlgorithm::HmacSha256,
            key: CredentialSource {
                file: Some(key_file.display().to_string()),
                env: None,
            },
            every_records: 10,
            every_secs: 3600,
        }),
        ..Default::default()
    }
}

/// A spool with `n` events (checkpoints after every 10 and at shutdown).
async fn build(n: usize) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let key = tmp.path().join("checkpoint.key");
    std::fs::write(&key, KEY).unwrap();
    let dir = tmp.path().join("spool");
    append(&dir, &key, 0, n).await;
    (tmp, dir)
}

async fn append(dir: &Path, key: &Path, from: usize, n: usize) {
    let a = Audit::open(
        dir,
        Some(&config(key)),
        AuditMetrics::default(),
        build_client().unwrap(),
    )
    .unwrap();
    for i in from..from + n {
        a.record(Event::now(
            "denial",
            &json!({"i": i, "reason": "model_not_allowed", "message": "no"}),
        ));
    }
    a.shutdown(Duration::from_secs(1)).await;
}

fn opts() -> VerifyOptions {
    VerifyOptions {
        verifier: Some(Verifier::from_secret(CheckpointAlgorithm::HmacSha256, KEY).unwrap()),
        ..Default::default()
    }
}

fn segment(dir: &Path) -> PathBuf {
    let segs = list_segments(dir).unwrap();
    assert_eq!(segs.len(), 1, "one segment expected");
    segs[0].1.clone()
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn write_lines(path: &Path, lines: &[String]) {
    let mut s = lines.join("\n");
    s.push('\n');
    std::fs::write(path, s).unwrap();
}

fn broken_at(dir: &Path) -> (u64, String) {
    let r = verify(dir, &opts()).unwrap();
    let b = r
        .broken
        .clone()
        .unwrap_or_else(|| panic!("tampering not detected: {r:?}"));
    (b.seq, b.reason)
}

fn cli(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tollgate-proxy"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn intact_chain_verifies_with_signed_checkpoints() {
    let (_t, dir) = build(35).await;
    let r = verify(&dir, &opts()).unwrap();
    assert!(r.ok(), "{r:?}");
    // 35 events, a checkpoint after each 10 (3) and one at shutdown.
    assert_eq!(r.records, 39);
    assert_eq!(r.checkpoints, 4);
    assert_eq!(
        r.signatures_verified,
        4 + 4,
        "in the chain and in checkpoints.jsonl: {r:?}"
    );
    assert_eq!(r.last_checkpoint_seq, Some(39));
    // Without a key the chain still verifies, signatures reported unchecked.
    let r = verify(&dir, &VerifyOptions::default()).unwrap();
    assert!(
        r.ok() && r.signatures_unchecked == 4 && r.signatures_verified == 0,
        "{r:?}"
    );
    // A wrong key fails at the first checkpoint.
    let wrong = VerifyOptions {
        verifier: Some(
            Verifier::from_secret(CheckpointAlgorithm::HmacSha256, "another-key-0123456789").unwrap(),
        ),
        ..Default::default()
    };
    assert_eq!(verify(&dir, &wrong).unwrap().broken.unwrap().seq, 11);
}

#[tokio::test(flavor = "multi_thread")]
async fn one_byte_change_is_found_at_its_record() {
    let (_t, dir) = build(30).await;
    let seg = segment(&dir);
    let mut l = lines(&seg);
    // Change one byte of record 7's body.
    assert!(l[6].contains("\"seq\":7,"));
    l[6] = l[6].replacen("model_not_allowed", "model_not_allowwd", 1);
    write_lines(&seg, &l);
    let (seq, reason) = broken_at(&dir);
    assert_eq!(seq, 7, "{reason}");
    assert!(reason.contains("altered"), "{reason}");

    // A one-byte change in a stored hash, or in a sequence number, is found there too.
    let (_t, dir) = build(30).await;
    let seg = segment(&dir);
    let mut bytes = std::fs::read(&seg).unwrap();
    let at = lines(&seg)[..12].iter().map(|s| s.len() + 1).sum::<usize>() + 10;
    bytes[at] = if bytes[at] == b'a' { b'b' } else { b'a' };
    std::fs::write(&seg, &bytes).unwrap();
    assert_eq!(broken_at(&dir).0, 13);
    let (_t, dir) = build(30).await;
    let seg = segment(&dir);
    let mut l = lines(&seg);
    l[4] = l[4].replacen("\"seq\":5,", "\"seq\":6,", 1);
    write_lines(&seg, &l);
    assert_eq!(broken_at(&dir).0, 5);
}

#[tokio::test(flavor = "multi_thread")]
async fn deleted_record_is_found_at_its_sequence_number() {
    let (_t, dir) = build(30).await;
    let seg = segment(&dir);
    let mut l = lines(&seg);
    l.remove(8); // seq 9
    write_lines(&seg, &l);
    let (seq, reason) = broken_at(&dir);
    assert_eq!(seq, 9, "{reason}");
    assert!(reason.contains("missing"), "{reason}");
    // The very first record too.
    let (_t, dir) = build(5).await;
    let seg = segment(&dir);
    let mut l = lines(&seg);
    l.remove(0);
    write_lines(&seg, &l);
    assert_eq!(broken_at(&dir).0, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn reordered_pair_is_found_at_the_first_of_the_pair() {
    let (_t, dir) = build(30).await;
    let seg = segment(&dir);
    let mut l = lines(&seg);
    l.swap(14, 15); // seq 15 and 16
    write_lines(&seg, &l);
    let (seq, reason) = broken_at(&dir);
    assert_eq!(seq, 15, "{reason}");
    assert!(
        reason.contains("out of order") || reason.contains("missing"),
        "{reason}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn truncated_tail_is_found_through_the_checkpoints() {
    let (_t, dir) = build(30).await;
    let seg = segment(&dir);
    let l = lines(&seg);
    assert_eq!(l.len(), 33);
    // Cut the last 6 records (the last checkpoint among them): what remains is a valid chain.
    write_lines(&seg, &l[..27]);
    let (seq, reason) = broken_at(&dir);
    assert_eq!(seq, 28, "{reason}");
    assert!(reason.contains("truncated"), "{reason}");
    // A checkpoint exported elsewhere (a SIEM) reveals it even when checkpoints.jsonl is cut too.
    let exported = dir.parent().unwrap().join("exported-checkpoints.jsonl");
    std::fs::copy(dir.join("checkpoints.jsonl"), &exported).unwrap();
    std::fs::write(dir.join("checkpoints.jsonl"), "").unwrap();
    assert!(
        verify(&dir, &opts()).unwrap().ok(),
        "nothing left to reveal it locally"
    );
    let with_export = VerifyOptions {
        checkpoint_files: vec![exported],
        ..opts()
    };
    assert_eq!(verify(&dir, &with_export).unwrap().broken.unwrap().seq, 28);
}

#[tokio::test(flavor = "multi_thread")]
async fn rewritten_chain_fails_at_its_first_checkpoint() {
    let (_t, dir) = build(30).await;
    let seg = segment(&dir);
    // An attacker without the key alters record 3 and re-chains everything after it,
    // checkpoint coverage included.
    let mut prev = [0u8; 32];
    let mut out = Vec::new();
    for line in lines(&seg) {
        let mut v: Value = serde_json::from_str(&line).unwrap();
        let seq = v["seq"].as_u64().unwrap();
        if seq == 3 {
            v["body"]["reason"] = "nothing_to_see".into();
        }
        if v["kind"] == "checkpoint" {
            v["body"]["covers_hash"] = hex::encode(prev).into();
        }
        v.as_object_mut().unwrap().remove("hash");
        v["prev_hash"] = hex::encode(prev).into();
        let chain_id = v["id"].as_str().unwrap().split('_').nth(1).unwrap().to_owned();
        let (l, h) = seal(
            &chain_id,
            seq,
            v["time"].as_str().unwrap(),
            v["kind"].as_str().unwrap(),
            &v["body"],
            &prev,
        )
        .unwrap();
        assert_eq!(h, chain_hash(&prev, &v).unwrap());
        out.push(String::from_utf8(l).unwrap().trim_end().to_owned());
        prev = h;
    }
    write_lines(&seg, &out);
    let (seq, reason) = broken_at(&dir);
    assert_eq!(seq, 11, "{reason}");
    assert!(reason.contains("signature"), "{reason}");
}

#[tokio::test(flavor = "multi_thread")]
async fn torn_write_is_repaired_on_open_and_the_chain_continues() {
    let (t, dir) = build(12).await;
    let seg = segment(&dir);
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes.extend_from_slice(b"{\"body\":{\"i\":99");
    std::fs::write(&seg, &bytes).unwrap();
    let (seq, reason) = broken_at(&dir);
    assert!(reason.contains("torn"), "{reason}");
    assert_eq!(seq, 15);
    append(&dir, &t.path().join("checkpoint.key"), 12, 12).await;
    let r = verify(&dir, &opts()).unwrap();
    assert!(r.ok(), "{r:?}");
    assert_eq!(r.records, 14 + 12 + 2);
    assert_eq!(
        list_segments(&dir).unwrap().len(),
        2,
        "a restart starts a new segment"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_command_reports_the_first_broken_link() {
    let (t, dir) = build(20).await;
    let key = t.path().join("checkpoint.key");
    let (code, out) = cli(&[
        "audit",
        "verify",
        dir.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("ok: chain "), "{out}");
    let seg = segment(&dir);
    let mut l = lines(&seg);
    l.remove(6);
    write_lines(&seg, &l);
    let (code, out) = cli(&[
        "audit",
        "verify",
        dir.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("BROKEN at seq 7: record 7 is missing"), "{out}");
    let (code, out) = cli(&["audit", "verify", dir.to_str().unwrap(), "--json"]);
    assert_eq!(code, 1);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["broken"]["seq"], 7);
    // Ed25519: keygen, then verification with the public key alone.
    let (code, out) = cli(&["audit", "keygen", "--algorithm", "ed25519"]);
    assert_eq!(code, 0);
    let field = |name: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|s| s.trim().to_owned())
            .unwrap()
    };
    let (secret, public) = (field("secret:"), field("public_key:"));
    let key2 = t.path().join("ed.key");
    std::fs::write(&key2, &secret).unwrap();
    let dir2 = t.path().join("spool-ed");
    let cfg = AuditConfig {
        checkpoint: Some(AuditCheckpoint {
            algorithm: CheckpointAlgorithm::Ed25519,
            key: CredentialSource {
                file: Some(key2.display().to_string()),
                env: None,
            },
            every_records: 5,
            every_secs: 3600,
        }),
        ..Default::default()
    };
    let a = Audit::open(
        &dir2,
        Some(&cfg),
        AuditMetrics::default(),
        build_client().unwrap(),
    )
    .unwrap();
    for i in 0..12 {
        a.record(Event::now("denial", &json!({"i": i})));
    }
    a.shutdown(Duration::from_secs(1)).await;
    let (code, out) = cli(&["audit", "verify", dir2.to_str().unwrap(), "--public-key", &public]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("3 checkpoints, 6 signatures verified"), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_queue_drops_counted_never_silently_and_never_blocks() {
    use prometheus_client::registry::Registry;
    use tollgate_dataplane::policy::document::AuditSpool;
    let tmp = tempfile::tempdir().unwrap();
    let metrics = AuditMetrics::default();
    let mut registry = Registry::default();
    metrics.register(&mut registry);
    let cfg = AuditConfig {
        spool: Some(AuditSpool {
            queue_capacity: 1,
            ..Default::default()
        }),
        ..Default::default()
    };
    let a = Audit::open(tmp.path(), Some(&cfg), metrics, build_client().unwrap()).unwrap();
    let n = 20_000u64;
    let started = std::time::Instant::now();
    for i in 0..n {
        a.record(Event::now("denial", &json!({ "i": i })));
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "recording must never wait on the writer"
    );
    a.shutdown(Duration::from_secs(1)).await;
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    let value = |series: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse::<f64>().ok()))
            .unwrap_or(0.0) as u64
    };
    let dropped = value("audit_records_dropped_total{reason=\"queue_full\"}");
    let spooled = value("audit_records_total{kind=\"denial\"}");
    assert!(dropped > 0, "{text}");
    assert_eq!(
        spooled + dropped,
        n,
        "every event is either spooled or counted as dropped"
    );
    let r = verify(tmp.path(), &VerifyOptions::default()).unwrap();
    assert!(r.ok(), "{r:?}");
    // And the chain says so itself: gap records account for every dropped event.
    assert!(r.gaps.iter().all(|g| g.reason == "queue_full"), "{:?}", r.gaps);
    assert_eq!(r.records_lost(), dropped, "{:?}", r.gaps);
}

/// A spool whose checkpoints are unsigned (`alg: none`): no checkpoint key configured.
async fn build_unsigned(n: usize) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("spool");
    let a = Audit::open(&dir, None, AuditMetrics::default(), build_client().unwrap()).unwrap();
    for i in 0..n {
        a.record(Event::now("denial", &json!({"i": i})));
    }
    a.shutdown(Duration::from_secs(1)).await;
    (tmp, dir)
}

#[tokio::test(flavor = "multi_thread")]
async fn with_a_key_an_unsigned_checkpoint_fails() {
    let (t, dir) = build_unsigned(5).await;
    // Without a key an unsigned chain verifies (its checkpoints reported unchecked).
    let r = verify(&dir, &VerifyOptions::default()).unwrap();
    assert!(r.ok() && r.signatures_unchecked > 0, "{r:?}");
    // With a key, `alg: none` is what someone who rewrote the chain without the key would
    // write: it must fail, in the chain and beside it.
    let (seq, reason) = broken_at(&dir);
    assert_eq!(seq, 6, "the shutdown checkpoint follows 5 records: {reason}");
    assert!(reason.contains("unsigned"), "{reason}");
    let key = t.path().join("k");
    std::fs::write(&key, KEY).unwrap();
    let (code, out) = cli(&[
        "audit",
        "verify",
        dir.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("BROKEN at seq 6") && out.contains("unsigned"),
        "{out}"
    );
    let s = tollgate_dataplane::audit::checkpoint::Signer::from_secret(
        CheckpointAlgorithm::Ed25519,
        &"11".repeat(32),
    )
    .unwrap();
    let (code, out) = cli(&[
        "audit",
        "verify",
        dir.to_str().unwrap(),
        "--public-key",
        &s.public_key_hex().unwrap(),
    ]);
    assert_eq!(code, 1, "{out}");

    // A signed chain with an unsigned checkpoint slipped into checkpoints.jsonl beside it.
    let (_t, dir) = build(12).await;
    let seg = segment(&dir);
    let last: Value = serde_json::from_str(lines(&seg).last().unwrap()).unwrap();
    let seq = last["seq"].as_u64().unwrap();
    let mut forged = last.clone();
    forged["body"] =
        json!({"alg": "none", "covers_seq": seq - 1, "covers_hash": last["body"]["covers_hash"]});
    forged.as_object_mut().unwrap().remove("hash");
    let prev: [u8; 32] = hex::decode(last["prev_hash"].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    let chain_id = last["id"].as_str().unwrap().split('_').nth(1).unwrap().to_owned();
    let (line, _) = seal(
        &chain_id,
        seq,
        last["time"].as_str().unwrap(),
        "checkpoint",
        &forged["body"],
        &prev,
    )
    .unwrap();
    let cps = dir.join("checkpoints.jsonl");
    let mut text = std::fs::read_to_string(&cps).unwrap();
    text.push_str(std::str::from_utf8(&line).unwrap());
    std::fs::write(&cps, text).unwrap();
    let (seq_broken, reason) = broken_at(&dir);
    assert_eq!(seq_broken, seq, "{reason}");
    assert!(reason.contains("unsigned"), "{reason}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_line_not_in_canonical_form_fails_even_when_its_hash_matches() {
    // Each rewrite parses to the same value, so re-encoding gives the same hash; only a
    // byte-for-byte comparison with the canonical encoding sees them.
    type Rewrite = fn(&str) -> String;
    let rewrites: [(&str, Rewrite); 4] = [
        ("whitespace", |l| l.replacen("{\"body\":{", "{\"body\": {", 1)),
        ("duplicate key", |l| {
            l.replacen("{\"body\":{", "{\"kind\":\"policy_reload\",\"body\":{", 1)
        }),
        ("escaped letter", |l| {
            l.replacen("\"denial\"", "\"\\u0064enial\"", 1)
        }),
        ("reordered members", |l| {
            let v: Value = serde_json::from_str(l).unwrap();
            let m = v.as_object().unwrap();
            let mut keys: Vec<&String> = m.keys().collect();
            keys.reverse();
            let parts: Vec<String> = keys
                .iter()
                .map(|k| format!("{}:{}", serde_json::to_string(k).unwrap(), m[*k]))
                .collect();
            format!("{{{}}}", parts.join(","))
        }),
    ];
    for (what, rewrite) in rewrites {
        let (_t, dir) = build(6).await;
        let seg = segment(&dir);
        let mut l = lines(&seg);
        assert!(l[3].contains("\"seq\":4,"));
        let changed = rewrite(&l[3]);
        assert_ne!(changed, l[3], "{what}: the rewrite changed nothing");
        l[3] = changed;
        write_lines(&seg, &l);
        let (seq, reason) = broken_at(&dir);
        assert_eq!(seq, 4, "{what}: {reason}");
        assert!(reason.contains("canonical"), "{what}: {reason}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreadable_checkpoint_key_is_a_start_up_error() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("no-such.key");
    let r = Audit::open(
        &tmp.path().join("spool"),
        Some(&config(&missing)),
        AuditMetrics::default(),
        build_client().unwrap(),
    );
    let err = r
        .err()
        .expect("a spool that would write unsigned checkpoints was opened");
    assert!(err.to_string().contains("checkpoint key"), "{err}");
    // A key too short to be one is refused the same way.
    std::fs::write(&missing, "short").unwrap();
    let r = Audit::open(
        &tmp.path().join("spool"),
        Some(&config(&missing)),
        AuditMetrics::default(),
        build_client().unwrap(),
    );
    assert!(r.is_err());
}
