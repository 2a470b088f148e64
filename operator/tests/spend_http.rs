//! The HTTP spend source against local stubs of the proxy's `GET /admin/spend`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tollgate_operator::spend::{HttpSpendSource, SpendError, SpendSource};

/// Serves `body` with `status` on every request, on an ephemeral loopback port.
async fn stub(status: u16, body: &'static str) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| async move {
                    assert_eq!(req.uri().path(), "/admin/spend");
                    Ok::<_, Infallible>(
                        hyper::Response::builder()
                            .status(status)
                            .header("content-type", "application/json")
                            .body(Full::new(Bytes::from_static(body.as_bytes())))
                            .unwrap(),
                    )
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

const REPLICA_A: &str = r#"{"budgets":[{"id":"b1","scope":{"kind":"team","name":"platform"},"period":"monthly","window_start":"2026-11-01T00:00:00Z","resets_at":"2026-12-01T00:00:00Z","limit_micro_usd":100000000,"spent_micro_usd":1234,"reserved_micro_usd":0,"remaining_micro_usd":99998766}]}"#;
const REPLICA_B: &str = r#"{"budgets":[{"id":"b1","scope":{"kind":"team","name":"platform"},"period":"monthly","window_start":"2026-11-01T00:00:00Z","resets_at":"2026-12-01T00:00:00Z","limit_micro_usd":100000000,"spent_micro_usd":766,"reserved_micro_usd":500,"remaining_micro_usd":99998734},
{"id":"b2","scope":{"kind":"key","name":"ns/k"},"period":"daily","window_start":"2026-11-15T00:00:00Z","resets_at":"2026-11-16T00:00:00Z","limit_micro_usd":5000000,"spent_micro_usd":7,"reserved_micro_usd":0,"remaining_micro_usd":4999993}]}"#;
/// A replica still on October's window: its spend must not be added to November's.
const REPLICA_STALE: &str = r#"{"budgets":[{"id":"b1","scope":{"kind":"team","name":"platform"},"period":"monthly","window_start":"2026-10-01T00:00:00Z","resets_at":"2026-11-01T00:00:00Z","limit_micro_usd":100000000,"spent_micro_usd":99999,"reserved_micro_usd":0,"remaining_micro_usd":0}]}"#;

#[tokio::test]
async fn spend_is_summed_over_replicas_for_the_newest_window() {
    let urls: Vec<String> = [
        stub(200, REPLICA_A).await,
        stub(200, REPLICA_B).await,
        stub(200, REPLICA_STALE).await,
    ]
    .iter()
    .map(|a| format!("http://{a}"))
    .collect();
    let src = HttpSpendSource::new(&urls, Duration::from_secs(2)).unwrap();
    let spend = src.fetch().await.unwrap();
    let b1 = &spend["b1"];
    assert_eq!(b1.spent_micro_usd, 2_000);
    assert_eq!(b1.reserved_micro_usd, 500);
    assert_eq!(b1.limit_micro_usd, 100_000_000);
    assert_eq!(b1.resets_at, "2026-12-01T00:00:00Z");
    assert_eq!(spend["b2"].spent_micro_usd, 7);
}

#[tokio::test]
async fn a_failing_replica_fails_the_fetch_rather_than_under_reporting() {
    let ok = stub(200, REPLICA_A).await;
    let bad = stub(500, "oops").await;
    let garbage = stub(200, "{\"not\":\"spend\"}").await;
    let src = HttpSpendSource::new(
        &[format!("http://{ok}"), format!("http://{bad}")],
        Duration::from_secs(2),
    )
    .unwrap();
    assert!(matches!(src.fetch().await, Err(SpendError::Request { .. })));
    let src = HttpSpendSource::new(&[format!("http://{garbage}")], Duration::from_secs(2)).unwrap();
    assert!(matches!(src.fetch().await, Err(SpendError::Body { .. })));
    // Nothing listens on port 1.
    let src = HttpSpendSource::new(&["http://127.0.0.1:1".to_owned()], Duration::from_secs(2)).unwrap();
    assert!(src.fetch().await.is_err());
}
