//! The HTTPS endpoint the API server calls: `POST /mutate/enabled` and `POST /mutate/opt-in`
//! (the two webhooks of the MutatingWebhookConfiguration, one per namespace mode).

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

use super::review::{ReviewError, Verdict, answer};
use super::tls::{SwappableCert, server_config};
use crate::inject::{Injector, Mode};
use crate::metrics::{Metrics, ResultLabel};

/// Largest AdmissionReview accepted (pods with huge inline specs are rare; etcd caps at 1.5 MiB).
pub const MAX_BODY_BYTES: usize = 8 << 20;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the endpoint needs.
#[derive(Clone)]
pub struct Webhook {
    /// Builds the patches.
    pub injector: Arc<Injector>,
    /// The served certificate.
    pub cert: Arc<SwappableCert>,
    /// Counters.
    pub metrics: Arc<Metrics>,
}

fn reply(status: StatusCode, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

fn error_reply(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    let body = serde_json::json!({"error": message}).to_string().into_bytes();
    reply(status, body)
}

async fn handle(hook: Webhook, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let mode = match req.uri().path() {
        "/mutate/enabled" => Mode::Enabled,
        "/mutate/opt-in" => Mode::OptIn,
        _ => return error_reply(StatusCode::NOT_FOUND, "no such webhook path"),
    };
    if req.method() != Method::POST {
        return error_reply(StatusCode::METHOD_NOT_ALLOWED, "POST an AdmissionReview");
    }
    let body = match Limited::new(req.into_body(), MAX_BODY_BYTES).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            warn!(error = %e, "admission review body unreadable or too large");
            count(&hook.metrics, "invalid");
            return error_reply(StatusCode::PAYLOAD_TOO_LARGE, "body unreadable or too large");
        }
    };
    match answer(&hook.injector, mode, &body) {
        Ok(a) => {
            count(&hook.metrics, a.verdict.as_str());
            match a.verdict {
                Verdict::Denied => {
                    warn!(namespace = %a.namespace, pod = %a.pod, reason = %a.reason, "pod refused")
                }
                Verdict::Injected => info!(namespace = %a.namespace, pod = %a.pod, "sidecar injected"),
                Verdict::Skipped => {
                    debug!(namespace = %a.namespace, pod = %a.pod, reason = %a.reason, "injection skipped")
                }
            }
            match serde_json::to_vec(&a.response) {
                Ok(bytes) => reply(StatusCode::OK, bytes),
                Err(e) => error_reply(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
            }
        }
        Err(e @ (ReviewError::Json(_) | ReviewError::Shape(_))) => {
            warn!(error = %e, "invalid admission review");
            count(&hook.metrics, "invalid");
            error_reply(StatusCode::BAD_REQUEST, &e.to_string())
        }
    }
}

fn count(metrics: &Metrics, result: &str) {
    metrics
        .admissions
        .get_or_create(&ResultLabel {
            result: result.to_owned(),
        })
        .inc();
}

/// Serves the webhook on `listener` until `shutdown` completes.
pub async fn serve(listener: TcpListener, hook: Webhook, shutdown: impl Future<Output = ()>) {
    let acceptor = TlsAcceptor::from(server_config(hook.cert.clone()));
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, "injection webhook listening (TLS)");
    }
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let acceptor = acceptor.clone();
        let hook = hook.clone();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => return debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => return debug!(%peer, "TLS handshake timed out"),
            };
            let service = service_fn(move |req| {
                let hook = hook.clone();
                async move { Ok::<_, Infallible>(handle(hook, req).await) }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), service)
                .await
            {
                debug!(%peer, error = %e, "webhook connection ended with an error");
            }
        });
    }
}
