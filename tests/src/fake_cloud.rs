//! Faithful fakes of Google Vertex AI and Azure AI Foundry with their token services
//! (`e2e/fakes/gcp_azure.py`, on the pinned venv's PyJWT and cryptography), in front of the
//! fake Anthropic upstream. See the script's doc for what each checks.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::mcp::{e2e_dir, free_port, python};

/// How the fake Vertex AI runs.
#[derive(Debug, Clone)]
pub struct VertexOptions {
    /// The project it serves.
    pub project: String,
    /// The region it serves (`global` or e.g. `us-east5`).
    pub region: String,
    /// Lifetime of the access tokens it issues, in seconds.
    pub token_expires_in: u64,
}

impl Default for VertexOptions {
    fn default() -> Self {
        Self {
            project: "tollgate-test".into(),
            region: "us-east5".into(),
            token_expires_in: 3600,
        }
    }
}

/// How the fake Foundry runs.
#[derive(Debug, Clone)]
pub struct FoundryOptions {
    /// The Entra tenant id.
    pub tenant: String,
    /// The app registration's client id.
    pub client_id: String,
    /// The client secret it accepts.
    pub client_secret: Option<String>,
    /// The federated token (client assertion) it accepts.
    pub federated_token: Option<String>,
    /// The resource API key it accepts.
    pub api_key: Option<String>,
    /// Lifetime of the access tokens it issues, in seconds.
    pub token_expires_in: u64,
}

impl Default for FoundryOptions {
    fn default() -> Self {
        Self {
            tenant: "00000000-0000-0000-0000-00000000a2a2".into(),
            client_id: "11111111-1111-1111-1111-111111111111".into(),
            client_secret: Some("fake-client-secret".into()),
            federated_token: Some("fake-federated-token".into()),
            api_key: Some("fake-foundry-key".into()),
            token_expires_in: 3600,
        }
    }
}

/// A running fake process; killed on drop.
struct Process {
    child: Mutex<Child>,
    port: u16,
    record: PathBuf,
    _dir: tempfile::TempDir,
}

impl Process {
    fn spawn(mode: &str, args: &[String], dir: tempfile::TempDir) -> Process {
        let port = free_port();
        let record = dir.path().join("requests.jsonl");
        let child = Command::new(python())
            .arg(e2e_dir().join("fakes/gcp_azure.py"))
            .arg(mode)
            .args(["--port", &port.to_string()])
            .arg("--record")
            .arg(&record)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn e2e/fakes/gcp_azure.py");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "fake {mode} did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Process {
            child: Mutex::new(child),
            port,
            record,
            _dir: dir,
        }
    }

    fn records(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.record)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Ok(mut c) = self.child.lock() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The fake Vertex AI, Google token endpoint and metadata server, on one port.
pub struct FakeVertex {
    process: Process,
    sa_key: PathBuf,
    /// The options it runs with.
    pub options: VertexOptions,
}

impl FakeVertex {
    /// Starts it in front of the fake Anthropic at `upstream` (which expects `upstream_key`).
    pub fn start(upstream: &str, upstream_key: &str, options: VertexOptions) -> FakeVertex {
        let dir = tempfile::tempdir().expect("temp dir");
        let sa_key = dir.path().join("service-account.json");
        let args = vec![
            "--upstream".into(),
            upstream.into(),
            "--upstream-key".into(),
            upstream_key.into(),
            "--project".into(),
            options.project.clone(),
            "--region".into(),
            options.region.clone(),
            "--token-expires-in".into(),
            options.token_expires_in.to_string(),
            "--write-sa-key".into(),
            sa_key.display().to_string(),
        ];
        FakeVertex {
            process: Process::spawn("vertex", &args, dir),
            sa_key,
            options,
        }
    }

    /// `http://127.0.0.1:PORT`: the Vertex endpoint, the token endpoint (`/token`) and the
    /// metadata server.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.process.port)
    }

    /// `127.0.0.1:PORT`, for `GCE_METADATA_HOST`.
    pub fn metadata_host(&self) -> String {
        format!("127.0.0.1:{}", self.process.port)
    }

    /// The service account JSON key file (its `token_uri` points at this fake).
    pub fn sa_key_path(&self) -> &Path {
        &self.sa_key
    }

    /// Every request received, one JSON object each (`kind`: token, metadata or vertex;
    /// `method`, `path`, `headers`, `body`, `status`).
    pub fn records(&self) -> Vec<Value> {
        self.process.records()
    }
}

/// The fake Azure AI Foundry and Entra ID token endpoint, on one port.
pub struct FakeFoundry {
    process: Process,
    /// The options it runs with.
    pub options: FoundryOptions,
}

impl FakeFoundry {
    /// Starts it in front of the fake Anthropic at `upstream` (which expects `upstream_key`).
    pub fn start(upstream: &str, upstream_key: &str, options: FoundryOptions) -> FakeFoundry {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut args: Vec<String> = vec![
            "--upstream".into(),
            upstream.into(),
            "--upstream-key".into(),
            upstream_key.into(),
            "--tenant".into(),
            options.tenant.clone(),
            "--client-id".into(),
            options.client_id.clone(),
            "--token-expires-in".into(),
            options.token_expires_in.to_string(),
        ];
        for (flag, value) in [
            ("--client-secret", &options.client_secret),
            ("--federated-token", &options.federated_token),
            ("--api-key", &options.api_key),
        ] {
            if let Some(v) = value {
                args.push(flag.into());
                args.push(v.clone());
            }
        }
        FakeFoundry {
            process: Process::spawn("foundry", &args, dir),
            options,
        }
    }

    /// `http://127.0.0.1:PORT`: the Entra authority host.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.process.port)
    }

    /// `http://127.0.0.1:PORT/anthropic`: the Foundry endpoint.
    pub fn endpoint(&self) -> String {
        format!("{}/anthropic", self.base_url())
    }

    /// Every request received, one JSON object each (`kind`: entra or foundry).
    pub fn records(&self) -> Vec<Value> {
        self.process.records()
    }
}
