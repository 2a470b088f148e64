//! The OTLP exporter's HTTP transport: the proxy's own hyper client (one HTTP client in the
//! process, its TLS roots and timeouts), instead of the reqwest client the exporter defaults
//! to.
//!
//! The SDK's batch processor exports from its own thread, outside the Tokio runtime, while
//! the hyper client needs the runtime: each export is spawned onto the runtime captured at
//! start, and the export thread waits on its join handle. Requests are never involved.

use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full, Limited};
use opentelemetry_http::HttpError;

use crate::upstream::HttpClient;

/// A collector's whole exchange (connect, send, read the answer) must end within this: the
/// OTLP default export timeout.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest collector answer read (an OTLP answer is a few bytes, or a partial-success note).
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// [`opentelemetry_http::HttpClient`] over the proxy's hyper client.
#[derive(Debug, Clone)]
pub struct HyperExport {
    client: HttpClient,
    runtime: tokio::runtime::Handle,
}

impl HyperExport {
    /// Sends through `client`, on `runtime`.
    pub fn new(client: HttpClient, runtime: tokio::runtime::Handle) -> Self {
        Self { client, runtime }
    }
}

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for HyperExport {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let client = self.client.clone();
        let request = request.map(Full::new);
        let exchange = async move {
            let resp = client.request(request).await?;
            let (parts, body) = resp.into_parts();
            let body = Limited::new(body, MAX_ANSWER_BYTES).collect().await?.to_bytes();
            Ok::<_, HttpError>(Response::from_parts(parts, body))
        };
        let task = self
            .runtime
            .spawn(async move { tokio::time::timeout(EXPORT_TIMEOUT, exchange).await });
        let resp = match task.await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(format!("no answer from the collector within {EXPORT_TIMEOUT:?}").into()),
            Err(e) => Err(Box::new(e) as HttpError),
        };
        // The SDK's own diagnostics are compiled out: say here why spans are not arriving.
        match &resp {
            Ok(r) if !r.status().is_success() => {
                tracing::warn!(
                    status = r.status().as_u16(),
                    "OpenTelemetry collector refused a batch of spans"
                );
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "OpenTelemetry spans not exported"),
        }
        resp
    }
}
