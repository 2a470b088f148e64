use std::time::Duration;

use jiff::Timestamp;
use sha2::{Digest, Sha256};

use super::*;
use crate::crd::{BudgetScope, NotificationRecord, Period, ScopeKind};

const ME: &str = "operator-0";
const OTHER: &str = "operator-1";
const TAKE_OVER: Duration = Duration::from_secs(300);

fn spend(spent: u64, window: &str) -> BudgetSpend {
    BudgetSpend {
        spent_micro_usd: spent,
        reserved_micro_usd: 0,
        limit_micro_usd: 100_000_000,
        window_start: window.into(),
        resets_at: "2026-12-01T00:00:00Z".into(),
    }
}

fn now() -> Timestamp {
    "2026-11-15T12:00:00Z".parse().unwrap()
}

const NOV: &str = "2026-11-01T00:00:00Z";
const OCT: &str = "2026-10-01T00:00:00Z";
const DEC: &str = "2026-12-01T00:00:00Z";

/// Claims what `plan` says and marks it delivered, as one replica would.
fn notify_all(
    records: &[NotificationRecord],
    thresholds: &[u8],
    s: &BudgetSpend,
) -> (Vec<u8>, Vec<NotificationRecord>) {
    let p = plan(thresholds, s, records, ME, now(), TAKE_OVER);
    let mut out = claimed_records(records, thresholds, &s.window_start, &p, ME, now());
    for t in &p.claim {
        record_attempt(&mut out, &s.window_start, *t, ME, &Attempt::default(), now());
    }
    (p.claim, out)
}

#[test]
fn crossing_is_spent_against_the_limit_in_percent() {
    assert_eq!(crossed(&[50, 80, 100], 49_999_999, 100_000_000), Vec::<u8>::new());
    assert_eq!(crossed(&[50, 80, 100], 50_000_000, 100_000_000), vec![50]);
    assert_eq!(
        crossed(&[100, 80, 50, 80], 100_000_000, 100_000_000),
        vec![50, 80, 100]
    );
    assert_eq!(
        crossed(&[50], 10, 0),
        Vec::<u8>::new(),
        "a zero limit crosses nothing"
    );
    assert_eq!(crossed(&[1], u64::MAX, u64::MAX), vec![1], "no overflow");
}

#[test]
fn crossing_several_thresholds_at_once_notifies_each_once() {
    let thresholds = [50, 80, 100];
    let (claimed, records) = notify_all(&[], &thresholds, &spend(85_000_000, NOV));
    assert_eq!(claimed, vec![50, 80]);
    assert_eq!(records.len(), 2);
    assert!(records.iter().all(|r| r.sent_at.is_some() && r.claimed_by == ME));
    // Read again: nothing more until the next threshold.
    let (claimed, records) = notify_all(&records, &thresholds, &spend(90_000_000, NOV));
    assert!(claimed.is_empty());
    let (claimed, records) = notify_all(&records, &thresholds, &spend(100_000_000, NOV));
    assert_eq!(claimed, vec![100]);
    assert_eq!(records.len(), 3);
}

#[test]
fn spend_going_down_does_not_notify_again() {
    let thresholds = [50, 80];
    let (_, records) = notify_all(&[], &thresholds, &spend(85_000_000, NOV));
    // A refund, or a replica's spend missing for a moment, then back up.
    let (claimed, records) = notify_all(&records, &thresholds, &spend(10_000_000, NOV));
    assert!(claimed.is_empty());
    let (claimed, _) = notify_all(&records, &thresholds, &spend(85_000_000, NOV));
    assert!(claimed.is_empty());
}

#[test]
fn a_new_window_rearms_and_prunes_the_old_one() {
    let thresholds = [50, 80];
    let (_, records) = notify_all(&[], &thresholds, &spend(85_000_000, OCT));
    let (claimed, records) = notify_all(&records, &thresholds, &spend(60_000_000, NOV));
    assert_eq!(claimed, vec![50]);
    assert_eq!(records.len(), 1, "October's records are pruned: {records:?}");
    assert_eq!(records[0].window, NOV);
}

#[test]
fn spend_of_an_older_window_than_a_record_does_nothing() {
    let thresholds = [50];
    let (_, records) = notify_all(&[], &thresholds, &spend(60_000_000, DEC));
    // A replica reading the gateway just before the reset.
    let p = plan(
        &thresholds,
        &spend(60_000_000, NOV),
        &records,
        OTHER,
        now(),
        TAKE_OVER,
    );
    assert!(p.is_empty(), "{p:?}");
}

#[test]
fn failed_deliveries_are_retried_with_backoff_by_the_claimer() {
    let thresholds = [50];
    let s = spend(60_000_000, NOV);
    let p = plan(&thresholds, &s, &[], ME, now(), TAKE_OVER);
    let mut records = claimed_records(&[], &thresholds, NOV, &p, ME, now());
    let failed = Attempt {
        delivered: vec!["slack/1".into()],
        error: Some("webhook/0: status 503".into()),
    };
    assert!(record_attempt(&mut records, NOV, 50, ME, &failed, now()));
    assert_eq!(records[0].last_error.as_deref(), Some("webhook/0: status 503"));
    assert_eq!(records[0].delivered_to, ["slack/1"]);
    assert!(records[0].sent_at.is_none());
    // Not before the backoff, then by the claimer only; nobody claims it again.
    assert!(plan(&thresholds, &s, &records, ME, now(), TAKE_OVER).is_empty());
    let later = now() + jiff::SignedDuration::from_secs(31);
    let p = plan(&thresholds, &s, &records, ME, later, TAKE_OVER);
    assert_eq!((p.claim.clone(), p.retry.clone()), (vec![], vec![50]));
    assert!(plan(&thresholds, &s, &records, OTHER, later, TAKE_OVER).is_empty());
    assert!(record_attempt(
        &mut records,
        NOV,
        50,
        ME,
        &Attempt::default(),
        later
    ));
    assert!(records[0].sent_at.is_some() && records[0].last_error.is_none());
    assert_eq!(records[0].attempts, 2);
}

#[test]
fn a_stalled_claim_is_taken_over_after_the_grace_period() {
    let thresholds = [50];
    let s = spend(60_000_000, NOV);
    let p = plan(&thresholds, &s, &[], OTHER, now(), TAKE_OVER);
    let records = claimed_records(&[], &thresholds, NOV, &p, OTHER, now());
    assert!(plan(&thresholds, &s, &records, ME, now(), TAKE_OVER).is_empty());
    let later = now() + jiff::SignedDuration::from_secs(301);
    let p = plan(&thresholds, &s, &records, ME, later, TAKE_OVER);
    assert_eq!(p.take_over, vec![50]);
    let taken = claimed_records(&records, &thresholds, NOV, &p, ME, later);
    assert_eq!(taken.len(), 1);
    assert_eq!(taken[0].claimed_by, ME);
    // The old claimer's late outcome does not touch the record it lost.
    let mut taken2 = taken.clone();
    assert!(!record_attempt(
        &mut taken2,
        NOV,
        50,
        OTHER,
        &Attempt::default(),
        later
    ));
    assert_eq!(taken2, taken);
}

#[test]
fn records_stay_within_the_thresholds_bound() {
    let thresholds: Vec<u8> = (1..=10).map(|t| t * 10).collect();
    let (_, records) = notify_all(&[], &thresholds, &spend(100_000_000, NOV));
    assert_eq!(records.len(), 10);
    // Thresholds replaced mid-window: records of removed thresholds go.
    let other: Vec<u8> = (1..=10).map(|t| t * 10 - 5).collect();
    let (claimed, records) = notify_all(&records, &other, &spend(100_000_000, NOV));
    assert_eq!(claimed.len(), 10);
    assert_eq!(records.len(), 10);
    assert!(records.len() <= crate::crd::bounds::NOTIFICATIONS as usize);
}

fn subject_scope() -> BudgetScope {
    BudgetScope {
        kind: ScopeKind::Team,
        name: "platform".into(),
        namespace: None,
    }
}

fn sample() -> Payload {
    let scope = subject_scope();
    let subject = Subject {
        budget: "platform-monthly",
        uid: "0d5c-uid",
        scope: &scope,
        period: Period::Monthly,
        cluster: Some("prod-eu"),
        namespace: "tollgate-system",
    };
    payload(&subject, &spend(83_400_000, NOV), 80, "2026-11-15T12:00:00Z")
}

#[test]
fn the_webhook_payload_names_budget_scope_threshold_spend_and_window() {
    let p = sample();
    let v = serde_json::to_value(&p).unwrap();
    assert_eq!(
        v,
        serde_json::json!({
            "type": "budget.threshold_crossed",
            "id": delivery_id("0d5c-uid", NOV, 80),
            "budget": "platform-monthly",
            "scope": {"kind": "team", "name": "platform"},
            "period": "monthly",
            "threshold": 80,
            "percent": 83.4,
            "spent_micro_usd": 83_400_000u64,
            "limit_micro_usd": 100_000_000u64,
            "spent": "$83.40",
            "limit": "$100.00",
            "window_start": NOV,
            "resets_at": "2026-12-01T00:00:00Z",
            "cluster": "prod-eu",
            "namespace": "tollgate-system",
            "detected_at": "2026-11-15T12:00:00Z",
        })
    );
    assert_eq!(p.reason(), REASON_CROSSED);
    assert_eq!(
        p.message(),
        "Budget platform-monthly (team platform) crossed 80%: $83.40 of $100.00 spent (83.4%) in the window from 2026-11-01T00:00:00Z; resets at 2026-12-01T00:00:00Z."
    );
    let mut full = p.clone();
    full.threshold = 100;
    assert_eq!(full.reason(), REASON_EXHAUSTED);
    assert!(full.message().contains("is exhausted"));
}

#[test]
fn delivery_ids_are_stable_and_distinct() {
    assert_eq!(delivery_id("u", NOV, 50), delivery_id("u", NOV, 50));
    assert_ne!(delivery_id("u", NOV, 50), delivery_id("u", NOV, 80));
    assert_ne!(delivery_id("u", NOV, 50), delivery_id("u", OCT, 50));
    assert_ne!(delivery_id("u", NOV, 50), delivery_id("v", NOV, 50));
    assert_eq!(delivery_id("u", NOV, 50).len(), 32);
}

/// HMAC-SHA256 written out from RFC 2104, independent of the signer's implementation.
pub(crate) fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let pad = |b: u8| k.iter().map(|x| x ^ b).collect::<Vec<u8>>();
    let inner = Sha256::new().chain_update(pad(0x36)).chain_update(msg).finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

#[test]
fn hmac_matches_rfc4231_case_2() {
    let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
    assert_eq!(
        hex::encode(mac),
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    );
}

#[test]
fn webhooks_are_signed_over_timestamp_and_body() {
    let p = sample();
    let req = webhook_request(&p, b"s3cret", 1_700_000_000);
    let header = |name: &str| {
        req.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.clone())
            .unwrap()
    };
    assert_eq!(header("content-type"), "application/json");
    assert_eq!(header("x-tollgate-event"), "budget.threshold_crossed");
    assert_eq!(header("x-tollgate-delivery"), p.id);
    assert_eq!(header("x-tollgate-timestamp"), "1700000000");
    let mut signed = b"1700000000.".to_vec();
    signed.extend_from_slice(&req.body);
    let expected = format!("t=1700000000,v1={}", hex::encode(hmac_sha256(b"s3cret", &signed)));
    assert_eq!(header("x-tollgate-signature"), expected);
    // The body is the payload, and a different secret does not verify.
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&req.body).unwrap(),
        serde_json::to_value(&p).unwrap()
    );
    let wrong = format!("t=1700000000,v1={}", hex::encode(hmac_sha256(b"other", &signed)));
    assert_ne!(header("x-tollgate-signature"), wrong);
}

#[test]
fn slack_gets_one_line_of_text() {
    let v: serde_json::Value = serde_json::from_slice(&slack_body(&sample())).unwrap();
    assert_eq!(v.as_object().unwrap().len(), 1);
    let text = v["text"].as_str().unwrap();
    assert!(
        text.starts_with(":warning: Budget platform-monthly (team platform) crossed 80%"),
        "{text}"
    );
    // A user scope is any string: Slack's markup is escaped, control characters dropped.
    let mut hostile = sample();
    hostile.scope.name = "<!channel> <https://evil.example|renew>\nnext".into();
    let v: serde_json::Value = serde_json::from_slice(&slack_body(&hostile)).unwrap();
    let text = v["text"].as_str().unwrap();
    assert!(
        !text.contains('<') && !text.contains('>') && !text.contains('\n'),
        "{text}"
    );
    assert!(text.contains("&lt;!channel&gt;"), "{text}");
    let mut full = sample();
    full.threshold = 100;
    let v: serde_json::Value = serde_json::from_slice(&slack_body(&full)).unwrap();
    assert!(v["text"].as_str().unwrap().starts_with(":rotating_light:"));
}
