//! The sidecar injection webhook: an HTTPS endpoint (rustls) answering pod AdmissionReviews
//! with the patch [`crate::inject`] builds, and the certificate handling behind it.

pub mod certificates;
pub mod certs;
pub mod review;
pub mod server;
pub mod tls;

pub use certificates::{CertSource, SelfManaged};
pub use server::{Webhook, serve};
