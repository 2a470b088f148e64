//! Budget notifications across racing operator replicas, against the kmock stand-in API server:
//! each (budget, window, threshold) is delivered once, signed, with one Event.

mod support;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ObjectMeta, PostParams};
use sha2::{Digest, Sha256};
use tollgate_operator::compile::{BudgetSpend, Settings};
use tollgate_operator::crd::*;
use tollgate_operator::metrics::Metrics;
use tollgate_operator::reconcile::{Config, Reconciler};
use tollgate_operator::spend::{SpendFuture, SpendSource};

use support::{ApiServer, eventually};

const NS: &str = "tollgate-system";
const WAIT: Duration = Duration::from_secs(30);
const SECRET: &str = "hook-s3cret";
const BUDGET: &str = "org-monthly";

/// Spend the test moves: `spent` micro-USD of a $100 limit in November.
struct MovingSpend(Arc<AtomicU64>);

impl SpendSource for MovingSpend {
    fn fetch(&self) -> SpendFuture<'_> {
        let spent = self.0.load(Ordering::SeqCst);
        Box::pin(async move {
            Ok(BTreeMap::from([(
                BUDGET.to_owned(),
                BudgetSpend {
                    spent_micro_usd: spent,
                    reserved_micro_usd: 0,
                    limit_micro_usd: 100_000_000,
                    window_start: "2026-11-01T00:00:00Z".into(),
                    resets_at: "2026-12-01T00:00:00Z".into(),
                },
            )]))
        })
    }
}

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Received {
    path: String,
    headers: http::HeaderMap,
    body: String,
}

/// A local HTTP receiver answering 200 to everything; returns its base URL.
async fn receiver(log: Arc<Mutex<Vec<Received>>>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let log = log.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let log = log.clone();
                    async move {
                        let (parts, body) = req.into_parts();
                        let body = body
                            .collect()
                            .await
                            .map(|b| b.to_bytes().to_vec())
                            .unwrap_or_default();
                        let body = String::from_utf8_lossy(&body).into_owned();
                        log.lock().unwrap().push(Received {
                            path: parts.uri.path().to_owned(),
                            headers: parts.headers,
                            body,
                        });
                        Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from_static(b"ok"))))
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    format!("http://{addr}")
}

/// HMAC-SHA256 from RFC 2104, independent of the operator's signer.
fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    let mut k = [0u8; 64];
    k[..key.len()].copy_from_slice(key);
    let pad = |b: u8| k.iter().map(|x| x ^ b).collect::<Vec<u8>>();
    let inner = Sha256::new().chain_update(pad(0x36)).chain_update(msg).finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

/// Checks `x-tollgate-signature: t=<ts>,v1=<hex>` against the body.
fn signature_valid(r: &Received) -> bool {
    let Some(sig) = r
        .headers
        .get("x-tollgate-signature")
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let Some((t, v1)) = sig.strip_prefix("t=").and_then(|rest| rest.split_once(",v1=")) else {
        return false;
    };
    let ts = r
        .headers
        .get("x-tollgate-timestamp")
        .and_then(|v| v.to_str().ok());
    let mut signed = format!("{t}.").into_bytes();
    signed.extend_from_slice(r.body.as_bytes());
    ts == Some(t) && hex::encode(hmac_sha256(SECRET.as_bytes(), &signed)) == v1
}

fn running(client: kube::Client, instance: &str, spend: Arc<AtomicU64>) -> Running {
    let config = Config {
        settings: Settings {
            organization: Some("acme".into()),
            ..Settings::default()
        },
        policy_namespace: NS.into(),
        debounce: Duration::from_millis(20),
        resync: Duration::from_millis(300),
        spend_interval: Duration::from_millis(100),
        instance: instance.into(),
        cluster_name: Some("kmock".into()),
        ..Config::default()
    };
    Running::start(Reconciler::new(
        client,
        config,
        Arc::new(Metrics::new()),
        Some(Arc::new(MovingSpend(spend))),
    ))
}

fn webhooks(log: &Mutex<Vec<Received>>) -> Vec<Received> {
    log.lock()
        .unwrap()
        .iter()
        .filter(|r| r.path == "/hook")
        .cloned()
        .collect()
}

fn slacks(log: &Mutex<Vec<Received>>) -> Vec<Received> {
    log.lock()
        .unwrap()
        .iter()
        .filter(|r| r.path == "/slack")
        .cloned()
        .collect()
}

fn threshold_of(r: &Received) -> u64 {
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    v["threshold"].as_u64().unwrap()
}

async fn budget_events(client: &kube::Client, reason: &str) -> Vec<Event> {
    let events: Api<Event> = Api::all(client.clone());
    events
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some(reason))
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(BUDGET))
        .collect()
}

/// Three replicas all reconcile the same Budget (as if leader election had failed over and two
/// or more believed they led). Spend jumps across 50 % and 80 % at once, then reaches 100 %:
/// each threshold is delivered exactly once to the webhook and to Slack, signed, and recorded
/// as exactly one Event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_racing_replicas_notify_each_threshold_once() {
    let server = ApiServer::start();
    let client = server.client();
    let log = Arc::new(Mutex::new(Vec::new()));
    let base = receiver(log.clone()).await;

    let mut secret = Secret {
        metadata: ObjectMeta {
            name: Some("budget-hooks".into()),
            namespace: Some(NS.into()),
            labels: Some(BTreeMap::from([(
                "tollgate.dev/credential".into(),
                "true".into(),
            )])),
            ..Default::default()
        },
        ..Default::default()
    };
    secret.data = Some(BTreeMap::from([
        ("hmac".into(), k8s_openapi::ByteString(SECRET.as_bytes().to_vec())),
        (
            "slack".into(),
            k8s_openapi::ByteString(format!("{base}/slack").into_bytes()),
        ),
    ]));
    Api::<Secret>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let key_ref = |key: &str| CredentialRef {
        secret_key_ref: Some(SecretKeyRef {
            name: "budget-hooks".into(),
            key: key.into(),
        }),
        env: None,
    };
    let budget = Budget {
        metadata: ObjectMeta {
            name: Some(BUDGET.into()),
            ..Default::default()
        },
        spec: BudgetSpec {
            scope: BudgetScope {
                kind: ScopeKind::Organization,
                name: "acme".into(),
                namespace: None,
            },
            limit_usd: Some("100".into()),
            period: Period::Monthly,
            thresholds: vec![50, 80, 100],
            notify: vec![
                NotifyTarget {
                    webhook: Some(WebhookTarget {
                        url: format!("{base}/hook"),
                        secret: key_ref("hmac"),
                    }),
                    slack: None,
                },
                NotifyTarget {
                    webhook: None,
                    slack: Some(SlackTarget {
                        webhook_url: key_ref("slack"),
                    }),
                },
            ],
            ..Default::default()
        },
        status: None,
    };
    let budgets: Api<Budget> = Api::all(client.clone());
    budgets.create(&PostParams::default(), &budget).await.unwrap();

    // 10 %: below every threshold. Three replicas, each with its own connection.
    let spent = Arc::new(AtomicU64::new(10_000_000));
    let replicas: Vec<Running> = (0..3)
        .map(|i| running(server.client(), &format!("operator-{i}"), spent.clone()))
        .collect();
    eventually("spend on the budget status", WAIT, || async {
        let st = budgets.get(BUDGET).await.unwrap().status?;
        (st.spent.as_deref() == Some("$10.00")).then_some(())
    })
    .await;
    assert!(log.lock().unwrap().is_empty(), "nothing crossed yet");

    // 85 %: 50 and 80 crossed at once.
    spent.store(85_000_000, Ordering::SeqCst);
    eventually("two webhooks and two Slack messages", WAIT, || async {
        (webhooks(&log).len() >= 2 && slacks(&log).len() >= 2).then_some(())
    })
    .await;
    // Several more spend reads and resyncs by every replica: nothing more is sent.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let hooks = webhooks(&log);
    let mut thresholds: Vec<u64> = hooks.iter().map(threshold_of).collect();
    thresholds.sort_unstable();
    assert_eq!(
        thresholds,
        [50, 80],
        "exactly one webhook per threshold: {hooks:?}"
    );
    assert_eq!(slacks(&log).len(), 2, "exactly one Slack message per threshold");
    for h in &hooks {
        assert!(signature_valid(h), "signature of {h:?}");
        let v: serde_json::Value = serde_json::from_str(&h.body).unwrap();
        assert_eq!(v["budget"], BUDGET);
        assert_eq!(v["scope"]["kind"], "organization");
        assert_eq!(v["spent"], "$85.00");
        assert_eq!(v["limit"], "$100.00");
        assert_eq!(v["window_start"], "2026-11-01T00:00:00Z");
        assert_eq!(v["resets_at"], "2026-12-01T00:00:00Z");
        assert_eq!(v["cluster"], "kmock");
        assert_eq!(v["namespace"], NS);
        assert_eq!(
            h.headers.get("x-tollgate-delivery").unwrap().to_str().unwrap(),
            v["id"].as_str().unwrap()
        );
    }
    for s in slacks(&log) {
        let v: serde_json::Value = serde_json::from_str(&s.body).unwrap();
        assert!(v["text"].as_str().unwrap().contains(BUDGET), "{v}");
    }
    let crossed = budget_events(&client, "BudgetThresholdCrossed").await;
    let mut notes: Vec<String> = crossed.iter().filter_map(|e| e.note.clone()).collect();
    notes.sort();
    assert_eq!(notes.len(), 2, "one Event per threshold: {notes:?}");
    assert!(
        notes[0].contains("crossed 50%") && notes[1].contains("crossed 80%"),
        "{notes:?}"
    );
    assert!(notes.iter().all(|n| n.contains("resets at 2026-12-01T00:00:00Z")));

    // The claims in the status: one record per threshold, delivered.
    let st = budgets.get(BUDGET).await.unwrap().status.unwrap();
    let mut recorded: Vec<(u8, bool)> = st
        .notifications
        .iter()
        .map(|r| (r.threshold, r.sent_at.is_some() && r.delivered_to.len() == 2))
        .collect();
    recorded.sort_unstable();
    assert_eq!(recorded, [(50, true), (80, true)], "{:?}", st.notifications);

    // 100 %: exhausted, once.
    spent.store(100_000_000, Ordering::SeqCst);
    eventually("the exhausted webhook", WAIT, || async {
        (webhooks(&log).len() >= 3 && slacks(&log).len() >= 3).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let hooks = webhooks(&log);
    assert_eq!(hooks.len(), 3);
    assert_eq!(slacks(&log).len(), 3);
    let last = hooks.iter().find(|h| threshold_of(h) == 100).unwrap();
    assert!(signature_valid(last));
    assert_eq!(last.headers.get("x-tollgate-event").unwrap(), "budget.exhausted");
    assert_eq!(budget_events(&client, "BudgetExhausted").await.len(), 1);
    assert_eq!(budget_events(&client, "BudgetThresholdCrossed").await.len(), 2);

    // No secret in Events or status.
    let all: Api<Event> = Api::all(client.clone());
    let events = serde_json::to_string(&all.list(&Default::default()).await.unwrap().items).unwrap();
    let status = serde_json::to_string(&budgets.get(BUDGET).await.unwrap().status).unwrap();
    for text in [&events, &status] {
        assert!(!text.contains(SECRET) && !text.contains("/slack"), "{text}");
    }

    for r in replicas {
        r.stop().await;
    }
}

/// A reconciler running on its own task until [`Running::stop`].
struct Running {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), tollgate_operator::Error>>,
}

impl Running {
    fn start(reconciler: Reconciler) -> Self {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(reconciler.run(async move {
            let _ = stopped.await;
        }));
        Self { stop, task }
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
}
