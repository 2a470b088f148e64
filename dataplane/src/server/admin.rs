//! The admin listener: `/healthz` (process alive), `/readyz` (a policy is live; the body
//! reports whether the newest sources were rejected), `/metrics` (Prometheus text).

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;

use crate::ledger::Ledger;
use crate::limits::window::window_at;
use crate::metrics::Metrics;
use crate::policy::PolicyStore;

/// Shared state of the admin listener.
pub struct Admin {
    /// The policy store.
    pub store: Arc<PolicyStore>,
    /// The metrics registry.
    pub metrics: Arc<Metrics>,
    /// The ledger, for `/admin/spend`.
    pub ledger: Arc<dyn Ledger>,
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
            "/admin/spend" => self.spend().await,
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

impl Admin {
    /// Spend, limit and reset time of every budget in the live policy, read from the ledger.
    async fn spend(&self) -> Response<Full<Bytes>> {
        let Some(snapshot) = self.store.snapshot() else {
            return text(
                StatusCode::SERVICE_UNAVAILABLE,
                "application/json",
                r#"{"budgets":[]}"#.into(),
            );
        };
        let now = jiff::Timestamp::now();
        let mut rows = Vec::new();
        let mut counters = Vec::new();
        for b in snapshot.budgets() {
            let Ok(w) = window_at(&b.budget.period, &b.tz, now) else {
                continue;
            };
            counters.push(format!("b:{}:{}", b.budget.id, w.start.as_second()));
            rows.push((b, w));
        }
        let states = match self.ledger.budget_states(&counters, now.as_millisecond()).await {
            Ok(s) => s,
            Err(e) => {
                let body = serde_json::json!({ "error": e.to_string() }).to_string();
                return text(StatusCode::SERVICE_UNAVAILABLE, "application/json", body);
            }
        };
        let budgets: Vec<serde_json::Value> = rows
            .iter()
            .zip(states)
            .map(|((b, w), st)| {
                let limit = b.budget.limit_micro_usd;
                serde_json::json!({
                    "id": b.budget.id,
                    "scope": b.budget.scope,
                    "period": b.budget.period,
                    "window_start": w.start.to_string(),
                    "resets_at": w.end.to_string(),
                    "limit_micro_usd": limit,
                    "spent_micro_usd": st.spent,
                    "reserved_micro_usd": st.reserved,
                    "remaining_micro_usd": limit.saturating_sub(st.spent),
                })
            })
            .collect();
        let body = serde_json::json!({ "ledger": self.ledger.kind(), "budgets": budgets });
        text(StatusCode::OK, "application/json", body.to_string())
    }
}

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(http::header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}
