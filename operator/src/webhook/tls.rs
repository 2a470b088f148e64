//! The webhook's TLS: a rustls server whose certificate can be swapped while it serves
//! (renewal in self-managed mode, cert-manager rotating the mounted Secret in files mode).

use std::fmt;
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// Why a PEM certificate and key pair cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// No certificate in the PEM text.
    #[error("no certificate in the PEM data")]
    NoCertificate,
    /// The PEM text does not parse.
    #[error("reading PEM: {0}")]
    Pem(String),
    /// The key is not usable with the certificate.
    #[error("loading the private key: {0}")]
    Key(#[from] rustls::Error),
}

/// Parses a PEM certificate chain and private key into a servable key.
pub fn certified_key(cert_pem: &[u8], key_pem: &[u8]) -> Result<CertifiedKey, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Pem(e.to_string()))?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate);
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| TlsError::Pem(e.to_string()))?;
    let provider = CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()));
    let signer = provider.key_provider.load_private_key(key)?;
    let ck = CertifiedKey::new(chain, signer);
    ck.keys_match()?;
    Ok(ck)
}

/// Serves whatever certificate was stored last; none yet means handshakes fail.
#[derive(Default)]
pub struct SwappableCert {
    current: ArcSwapOption<CertifiedKey>,
}

impl fmt::Debug for SwappableCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SwappableCert")
            .field("loaded", &self.current.load().is_some())
            .finish()
    }
}

impl SwappableCert {
    /// Replaces the served certificate.
    pub fn store(&self, key: CertifiedKey) {
        self.current.store(Some(Arc::new(key)));
    }

    /// Whether a certificate is loaded (readiness).
    pub fn is_loaded(&self) -> bool {
        self.current.load().is_some()
    }
}

impl ResolvesServerCert for SwappableCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.load_full()
    }
}

/// A rustls server config over `cert` (HTTP/1.1 only).
pub fn server_config(cert: Arc<SwappableCert>) -> Arc<rustls::ServerConfig> {
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_cert_resolver(cert);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}
