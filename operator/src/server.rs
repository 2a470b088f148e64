//! The operator's HTTP endpoints: `/healthz` (the process runs), `/readyz` (a standby
//! replica, or a leader that has reconciled at least once; with the webhook on, only once
//! its certificate is loaded) and `/metrics`.

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
    /// The webhook's certificate, when this replica serves the webhook: not ready until one
    /// is loaded (the Service must not send AdmissionReviews to a replica failing TLS).
    pub webhook_cert: Option<Arc<crate::webhook::tls::SwappableCert>>,
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
            let cert = health.webhook_cert.as_ref().is_none_or(|c| c.is_loaded());
            let body = format!(
                "{{\"leader\":{leader},\"reconciled\":{reconciled},\"webhook_certificate\":{cert}}}\n"
            );
            let status = if (!leader || reconciled) && cert {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webhook::certs::{self, Lifetimes, Plan, Stored};
    use crate::webhook::tls::{SwappableCert, certified_key};

    #[test]
    fn a_webhook_replica_is_ready_only_with_a_certificate() {
        let cert = Arc::new(SwappableCert::default());
        let health = Health {
            metrics: Arc::new(Metrics::new()),
            leader: Arc::new(AtomicBool::new(false)),
            reconciled: Arc::new(AtomicBool::new(false)),
            webhook_cert: Some(cert.clone()),
        };
        assert_eq!(
            route(&health, "/readyz").status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        let names = vec!["tollgate-webhook.tollgate-system.svc".to_owned()];
        let s = certs::execute(
            Plan::NewCa,
            &Stored::default(),
            jiff::Timestamp::now(),
            &names,
            Lifetimes::default(),
        )
        .unwrap();
        let _ = rustls::crypto::ring::default_provider().install_default();
        cert.store(
            certified_key(
                s.data[certs::TLS_CERT].as_bytes(),
                s.data[certs::TLS_KEY].as_bytes(),
            )
            .unwrap(),
        );
        assert_eq!(
            route(&health, "/readyz").status(),
            StatusCode::OK,
            "standby with a certificate"
        );
        health.leader.store(true, Ordering::Relaxed);
        assert_eq!(
            route(&health, "/readyz").status(),
            StatusCode::SERVICE_UNAVAILABLE,
            "leader before reconciling"
        );
    }
}
