//! Shared by the operator's integration tests: the Python venv, the kmock stand-in API
//! server, and polling helpers.
#![allow(dead_code)]

pub mod agents;
pub mod tls;

use std::future::Future;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `operator/`.
pub fn operator_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The venv's Python, after `tests/setup-python.sh` made sure the venv is current.
pub fn python() -> PathBuf {
    let dir = operator_dir();
    let status = Command::new("bash")
        .arg(dir.join("tests/setup-python.sh"))
        .status()
        .expect("running tests/setup-python.sh");
    assert!(
        status.success(),
        "tests/setup-python.sh failed: python3 (>= 3.11, with venv) and PyPI are needed"
    );
    dir.join(".venv/bin/python")
}

/// The kmock stand-in API server (with `tests/support/kmock_shim.py`), killed on drop.
pub struct ApiServer {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
}

impl ApiServer {
    /// Starts the shim and waits for its port.
    pub fn start() -> ApiServer {
        let py = python();
        let mut child = Command::new(py)
            .arg(operator_dir().join("tests/support/kmock_shim.py"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting the kmock shim");
        let stdout = child.stdout.take().expect("shim stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("reading the shim's port");
        let port: u16 = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("shim printed {line:?}"));
        ApiServer {
            child,
            url: format!("http://127.0.0.1:{port}"),
        }
    }

    /// A client of the stand-in.
    pub fn client(&self) -> kube::Client {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut config = kube::Config::new(self.url.parse().expect("shim URL"));
        config.default_namespace = "default".into();
        kube::Client::try_from(config).expect("client")
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `f` every 50 ms until it returns `Some`, or panics after `timeout` naming `what`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Parses every YAML document of a file into JSON values.
pub fn yaml_documents(path: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .filter(|v: &serde_json::Value| !v.is_null())
        .collect()
}
