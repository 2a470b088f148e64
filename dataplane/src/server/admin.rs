//! The admin listener: `/healthz` (process alive), `/readyz` (a policy is live; the body
//! reports whether the newest sources were rejected), `/metrics` (Prometheus text).

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;

use crate::metrics::Metrics;
use crate::policy::PolicyStore;

/// Shared state of the admin listener.
pub struct Admin {
    /// The policy store.
    pub store: Arc<PolicyStore>,
    /// The metrics registry.
    pub metrics: Arc<Metrics>,
}

impl Admin {
    /// Serves one admin request.
    pub async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
    ) -> Result<Response<Full<Bytes>>, Infallible> {
        Ok(match req.uri().path() {
            "/healthz" => text(StatusCode::OK, "text/plain", "ok\n".into()),
            "/readyz" => self.readyz(),
            "/metrics" => text(StatusCode::OK, "text/plain; version=0.0.4", self.metrics.encode()),
            _ => text(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
        })
    }

    /// Ready when a policy is live. A rejected newer document does not take the proxy out
    /// of service (the last good policy keeps serving); it shows as `last_reload_ok: false`
    /// here and as `tollgate_policy_last_reload_success 0`.
    fn readyz(&self) -> Response<Full<Bytes>> {
        let status = self.store.status();
        let live = self.store.snapshot().is_some();
        let body = serde_json::json!({
            "ready": live,
            "policy": status,
        });
        let code = if live {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        text(code, "application/json", body.to_string())
    }
}

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(http::header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}
