//! The admin listener: `/healthz` (process alive), `/readyz` (a policy is live; the body
//! reports whether the newest sources were rejected), `/metrics` (Prometheus text), and the
//! admin API under `/admin/` (`/admin/spend`: every budget, its scope and owner).
//!
//! The probes and `/metrics` answer whoever reaches the port (the kubelet probes the pod IP,
//! Prometheus scrapes it). The admin API answers as [`AdminApi`] says: by default only peers
//! on loopback, i.e. the pod itself (an injected sidecar's admin port listens on every
//! address of the pod); the shared gateway, whose spend the operator reads through a Service,
//! runs with `all` behind a NetworkPolicy.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;

use super::Peer;
use crate::ledger::Ledger;
use crate::limits::window::window_at;
use crate::metrics::Metrics;
use crate::policy::PolicyStore;

/// Who may use the admin API (`/admin/*`) on the admin listener (`--admin-api`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum AdminApi {
    /// Peers on loopback only (the pod's own containers, `kubectl port-forward`).
    #[default]
    Loopback,
    /// Every peer that reaches the port (protect it with a NetworkPolicy).
    All,
    /// Nobody: `/admin/*` is 404.
    Off,
}

impl AdminApi {
    /// The flag's value, for messages.
    pub fn as_str(self) -> &'static str {
        match self {
            AdminApi::Loopback => "loopback",
            AdminApi::All => "all",
            AdminApi::Off => "off",
        }
    }

    /// Whether `peer` may use the admin API; `Err` is the status to refuse with.
    pub fn admits(self, peer: Option<SocketAddr>) -> Result<(), StatusCode> {
        match self {
            AdminApi::All => Ok(()),
            AdminApi::Off => Err(StatusCode::NOT_FOUND),
            // `[::]` listeners see IPv4 peers as `::ffff:a.b.c.d`.
            AdminApi::Loopback => match peer.map(|p| p.ip().to_canonical()) {
                Some(ip) if ip.is_loopback() => Ok(()),
                _ => Err(StatusCode::FORBIDDEN),
            },
        }
    }
}

/// Shared state of the admin listener.
pub struct Admin {
    /// The policy store.
    pub store: Arc<PolicyStore>,
    /// The metrics registry.
    pub metrics: Arc<Metrics>,
    /// The ledger, for `/admin/spend`.
    pub ledger: Arc<dyn Ledger>,
    /// Who may use `/admin/*`.
    pub api: AdminApi,
}

impl Admin {
    /// Serves one admin request.
    pub async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
    ) -> Result<Response<Full<Bytes>>, Infallible> {
        let path = req.uri().path();
        if path == "/admin" || path.starts_with("/admin/") {
            let peer = req.extensions().get::<Peer>().map(|p| p.0);
            if let Err(status) = self.api.admits(peer) {
                return Ok(self.refuse_api(status));
            }
        }
        Ok(match path {
            "/healthz" => text(StatusCode::OK, "text/plain", "ok\n".into()),
            "/readyz" => self.readyz(),
            "/metrics" => text(StatusCode::OK, "text/plain; version=0.0.4", self.metrics.encode()),
            "/admin/spend" => self.spend().await,
            _ => text(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
        })
    }

    fn refuse_api(&self, status: StatusCode) -> Response<Full<Bytes>> {
        let error = if status == StatusCode::NOT_FOUND {
            "the admin API is off on this listener (--admin-api off)".to_owned()
        } else {
            format!(
                "the admin API answers loopback peers only (--admin-api {}); use --admin-api all behind a NetworkPolicy to serve it to others",
                self.api.as_str()
            )
        };
        text(
            status,
            "application/json",
            serde_json::json!({ "error": error }).to_string(),
        )
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_admin_api_answers_whom_the_flag_says() {
        let peer = |s: &str| Some(s.parse::<SocketAddr>().unwrap());
        let lo = AdminApi::Loopback;
        assert_eq!(lo.admits(peer("127.0.0.1:5000")), Ok(()));
        assert_eq!(lo.admits(peer("127.8.9.10:5000")), Ok(()));
        assert_eq!(lo.admits(peer("[::1]:5000")), Ok(()));
        // An IPv4 peer on a dual-stack `[::]` listener.
        assert_eq!(lo.admits(peer("[::ffff:127.0.0.1]:5000")), Ok(()));
        assert_eq!(lo.admits(peer("10.1.2.3:5000")), Err(StatusCode::FORBIDDEN));
        assert_eq!(
            lo.admits(peer("[::ffff:10.1.2.3]:5000")),
            Err(StatusCode::FORBIDDEN)
        );
        assert_eq!(lo.admits(peer("[fd00::2]:5000")), Err(StatusCode::FORBIDDEN));
        assert_eq!(
            lo.admits(None),
            Err(StatusCode::FORBIDDEN),
            "unknown peer: refused"
        );
        assert_eq!(AdminApi::All.admits(peer("10.1.2.3:5000")), Ok(()));
        assert_eq!(
            AdminApi::Off.admits(peer("127.0.0.1:5000")),
            Err(StatusCode::NOT_FOUND)
        );
        assert_eq!(AdminApi::default(), AdminApi::Loopback, "safe for sidecars");
    }
}
