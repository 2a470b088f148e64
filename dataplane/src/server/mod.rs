//! The two listeners: the proxy (Anthropic API) and the admin port (health, readiness,
//! metrics), both HTTP/1.1 with keep-alive and graceful shutdown, bound by [`listen::bind`].

pub mod accounting;
pub mod admin;
pub mod admission;
pub mod listen;
pub mod metered;
pub mod proxy;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::Request;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

/// The address of the peer a request came from (a request extension every listener sets).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer(pub SocketAddr);

/// How long in-flight requests (streams included) may run on after a shutdown signal.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Accepts connections on `listener` and serves them with `handler` until `shutdown`
/// completes, then drains open connections for up to [`DRAIN_TIMEOUT`]. Every request
/// carries its connection's [`Peer`] address.
pub async fn serve<H, F, B>(listener: TcpListener, handler: H, shutdown: impl Future<Output = ()>)
where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<hyper::Response<B>, std::convert::Infallible>> + Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        let conn = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(Duration::from_secs(30))
            .serve_connection(
                TokioIo::new(stream),
                service_fn(move |mut req: Request<Incoming>| {
                    req.extensions_mut().insert(Peer(peer));
                    handler(req)
                }),
            );
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("drain timeout: closing remaining connections");
    }
}

/// Serves the proxy listener.
pub async fn serve_proxy(
    listener: TcpListener,
    gateway: Arc<proxy::Gateway>,
    shutdown: impl Future<Output = ()>,
) {
    serve(listener, move |req| gateway.clone().handle(req), shutdown).await;
}
