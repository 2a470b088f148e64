//! A TLS client for the webhook tests: trusts only the given CA, as kube-apiserver trusts
//! only the webhook's `caBundle`.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::Value;

/// The name kube-apiserver connects to: the webhook Service's DNS name.
pub const SERVICE_DNS: &str = "tollgate-webhook.tollgate-system.svc";

/// A client config trusting only the PEM certificates in `ca_pem`.
pub fn client_config(ca_pem: &str) -> Arc<rustls::ClientConfig> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.expect("a PEM certificate")).expect("a usable CA");
    }
    Arc::new(
        rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// POSTs `body` over a new HTTPS connection to `addr` for [`SERVICE_DNS`], trusting only
/// `ca_pem`; returns the status and JSON body, or the handshake/request error.
pub async fn post(
    addr: SocketAddr,
    ca_pem: &str,
    path: &str,
    body: Vec<u8>,
) -> Result<(StatusCode, Value), String> {
    let connector = tokio_rustls::TlsConnector::from(client_config(ca_pem));
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let name = ServerName::try_from(SERVICE_DNS).expect("a DNS name");
    let tls = connector.connect(name, tcp).await.map_err(|e| e.to_string())?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = Request::post(path)
        .header("content-type", "application/json")
        .header("host", SERVICE_DNS)
        .body(Full::new(Bytes::from(body)))
        .expect("a request");
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, serde_json::from_slice(&bytes).unwrap_or(Value::Null)))
}

/// An AdmissionReview shaped as kube-apiserver 1.33 sends it for `kubectl apply` of a pod.
pub fn admission_review(uid: &str, pod: Value) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "kind": "AdmissionReview",
        "apiVersion": "admission.k8s.io/v1",
        "request": {
            "uid": uid,
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "name": pod.pointer("/metadata/name").cloned().unwrap_or(Value::Null),
            "namespace": pod.pointer("/metadata/namespace").cloned().unwrap_or(Value::Null),
            "operation": "CREATE",
            "userInfo": {"username": "alice", "groups": ["system:authenticated"]},
            "object": pod,
            "oldObject": null,
            "dryRun": false,
            "options": {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1", "fieldManager": "kubectl-client-side-apply"}
        }
    }))
    .expect("JSON")
}
