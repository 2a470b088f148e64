//! Budget spend, read from the ledger so Budget status answers "who spent what".
//!
//! Embedded-ledger replicas of `tollgate-proxy` each report their own windows on
//! `GET /admin/spend`; [`HttpSpendSource`] sums them per budget over the newest window.
//! (A Redis-backed reader for the shared ledger is the other planned implementation.)

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;

use crate::compile::BudgetSpend;

/// Why spend could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SpendError {
    /// A URL is not valid.
    #[error("invalid spend URL {url:?}: {message}")]
    Url {
        /// The URL.
        url: String,
        /// What is wrong.
        message: String,
    },
    /// A replica did not answer.
    #[error("{url}: {message}")]
    Request {
        /// The URL.
        url: String,
        /// What happened.
        message: String,
    },
    /// A replica answered something other than the spend JSON.
    #[error("{url}: unexpected answer: {message}")]
    Body {
        /// The URL.
        url: String,
        /// What is wrong.
        message: String,
    },
}

/// A boxed future, so the trait stays object-safe.
pub type SpendFuture<'a> =
    Pin<Box<dyn Future<Output = Result<BTreeMap<String, BudgetSpend>, SpendError>> + Send + 'a>>;

/// Where budget spend comes from.
pub trait SpendSource: Send + Sync {
    /// Spend of every budget the ledger knows, by budget id, in its current window.
    fn fetch(&self) -> SpendFuture<'_>;
}

/// The `GET /admin/spend` answer of one proxy replica.
#[derive(Debug, Clone, Deserialize)]
pub struct SpendReport {
    /// One entry per budget.
    pub budgets: Vec<SpendEntry>,
}

/// One budget's window as a replica reports it.
#[derive(Debug, Clone, Deserialize)]
pub struct SpendEntry {
    /// Budget id.
    pub id: String,
    /// Window start (RFC 3339).
    pub window_start: String,
    /// Window end (RFC 3339).
    pub resets_at: String,
    /// The limit, micro-USD.
    pub limit_micro_usd: u64,
    /// Spent, micro-USD.
    pub spent_micro_usd: u64,
    /// Reserved by requests in flight, micro-USD.
    #[serde(default)]
    pub reserved_micro_usd: u64,
}

/// Sums replica reports per budget over the newest window each reports (a replica still on
/// the previous window after a reset does not add stale spend).
pub fn aggregate(reports: &[SpendReport]) -> BTreeMap<String, BudgetSpend> {
    let mut out: BTreeMap<String, (jiff::Timestamp, BudgetSpend)> = BTreeMap::new();
    for e in reports.iter().flat_map(|r| &r.budgets) {
        let Ok(start) = e.window_start.parse::<jiff::Timestamp>() else {
            continue;
        };
        let fresh = BudgetSpend {
            spent_micro_usd: e.spent_micro_usd,
            reserved_micro_usd: e.reserved_micro_usd,
            limit_micro_usd: e.limit_micro_usd,
            window_start: e.window_start.clone(),
            resets_at: e.resets_at.clone(),
        };
        match out.get_mut(&e.id) {
            Some((s, acc)) if *s == start => {
                acc.spent_micro_usd = acc.spent_micro_usd.saturating_add(e.spent_micro_usd);
                acc.reserved_micro_usd = acc.reserved_micro_usd.saturating_add(e.reserved_micro_usd);
                acc.limit_micro_usd = acc.limit_micro_usd.max(e.limit_micro_usd);
            }
            Some((s, _)) if *s > start => {}
            _ => {
                out.insert(e.id.clone(), (start, fresh));
            }
        }
    }
    out.into_iter().map(|(k, (_, v))| (k, v)).collect()
}

/// Reads `GET <admin>/admin/spend` from every configured proxy admin URL.
pub struct HttpSpendSource {
    urls: Vec<http::Uri>,
    client: Client<HttpConnector, Empty<Bytes>>,
    timeout: Duration,
}

impl HttpSpendSource {
    /// A source over admin base URLs such as `http://tollgate-gateway-0.tollgate:9090`.
    pub fn new(admin_urls: &[String], timeout: Duration) -> Result<Self, SpendError> {
        let urls = admin_urls
            .iter()
            .map(|u| {
                format!("{}/admin/spend", u.trim_end_matches('/'))
                    .parse::<http::Uri>()
                    .map_err(|e| SpendError::Url {
                        url: u.clone(),
                        message: e.to_string(),
                    })
            })
            .collect::<Result<_, _>>()?;
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(timeout));
        Ok(Self {
            urls,
            client: Client::builder(TokioExecutor::new()).build(connector),
            timeout,
        })
    }

    async fn fetch_one(&self, uri: &http::Uri) -> Result<SpendReport, SpendError> {
        let url = uri.to_string();
        let req_err = |message: String| SpendError::Request {
            url: url.clone(),
            message,
        };
        let work = async {
            let resp = self
                .client
                .get(uri.clone())
                .await
                .map_err(|e| req_err(e.to_string()))?;
            let status = resp.status();
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| req_err(e.to_string()))?
                .to_bytes();
            if !status.is_success() {
                return Err(req_err(format!("status {status}")));
            }
            serde_json::from_slice::<SpendReport>(&body).map_err(|e| SpendError::Body {
                url: url.clone(),
                message: e.to_string(),
            })
        };
        tokio::time::timeout(self.timeout, work)
            .await
            .map_err(|_| req_err(format!("no answer within {:?}", self.timeout)))?
    }
}

impl SpendSource for HttpSpendSource {
    /// Fails when any replica fails: a partial sum would under-report spend.
    fn fetch(&self) -> SpendFuture<'_> {
        Box::pin(async move {
            let results = futures::future::join_all(self.urls.iter().map(|u| self.fetch_one(u))).await;
            let reports = results.into_iter().collect::<Result<Vec<_>, _>>()?;
            Ok(aggregate(&reports))
        })
    }
}
