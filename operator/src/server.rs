//! The operator's HTTP endpoints: `/healthz` (the process runs), `/readyz` (a standby
//! replica, or a leader that has reconciled at least once) and `/metrics`.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tracing::{debug, info};

use crate::metrics::Metrics;

/// What the endpoints report on.
#[derive(Clone)]
pub struct Health {
    /// Metrics to encode.
    pub metrics: Arc<Metrics>,
    /// Whether this replica leads.
    pub leader: Arc<AtomicBool>,
    /// Whether the leader has reconciled once.
    pub reconciled: Arc<AtomicBool>,
}

fn reply(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        r.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    r
}

fn route(health: &Health, path: &str) -> Response<Full<Bytes>> {
    match path {
        "/healthz" => reply(StatusCode::OK, "text/plain", "ok\n".into()),
        "/readyz" => {
            let leader = health.leader.load(Ordering::Relaxed);
            let reconciled = health.reconciled.load(Ordering::Relaxed);
            let body = format!("{{\"leader\":{leader},\"reconciled\":{reconciled}}}\n");
            let status = if !leader || reconciled {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            reply(status, "application/json", body)
        }
        "/metrics" => reply(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            health.metrics.encode(),
        ),
        _ => reply(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
    }
}

/// Serves the endpoints on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    health: Health,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let addr: SocketAddr = listener.local_addr()?;
    info!(%addr, "serving /healthz, /readyz and /metrics");
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let h = health.clone();
                let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let r = route(&h, req.uri().path());
                    async move { Ok::<_, Infallible>(r) }
                });
                let conn = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc);
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        debug!(error = %e, "health connection ended");
                    }
                });
            }
        }
    }
    graceful.shutdown().await;
    Ok(())
}
