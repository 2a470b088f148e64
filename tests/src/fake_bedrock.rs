//! The fake Amazon Bedrock runtime (`e2e/fakes/bedrock.py`) as a process: SigV4 checked with
//! botocore, Bearer API keys, STS web identity and container credentials, model calls answered
//! by an upstream fake Anthropic and re-encoded as Bedrock answers. Killed on drop.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::mcp::{e2e_dir, free_port, python};

/// How the fake is started.
#[derive(Debug, Clone)]
pub struct FakeBedrockOptions {
    /// Base URL of the fake Anthropic it forwards to.
    pub upstream: String,
    /// The `x-api-key` the upstream expects.
    pub upstream_key: String,
    /// The region signatures must be scoped to.
    pub region: String,
    /// The static access key id it accepts.
    pub access_key_id: String,
    /// Its secret.
    pub secret_access_key: String,
    /// A Bedrock API key accepted as `Bearer`.
    pub api_key: Option<String>,
    /// The file holding the web identity token its STS accepts (read at each call).
    pub web_identity_token_file: Option<PathBuf>,
    /// The `Authorization` value its container-credentials endpoint accepts.
    pub container_token: Option<String>,
}

impl FakeBedrockOptions {
    /// Static credentials `AKIDFAKEBEDROCK` / `fake-bedrock-secret` in `us-east-1`, forwarding to
    /// `upstream` with `upstream_key`.
    pub fn new(upstream: impl Into<String>, upstream_key: impl Into<String>) -> Self {
        Self {
            upstream: upstream.into(),
            upstream_key: upstream_key.into(),
            region: "us-east-1".into(),
            access_key_id: "AKIDFAKEBEDROCK".into(),
            secret_access_key: "fake-bedrock-secret".into(),
            api_key: None,
            web_identity_token_file: None,
            container_token: None,
        }
    }
}

/// A running fake Bedrock.
pub struct FakeBedrock {
    child: Mutex<Child>,
    port: u16,
    record: PathBuf,
    _dir: tempfile::TempDir,
    /// The options it was started with.
    pub options: FakeBedrockOptions,
}

impl FakeBedrock {
    /// Starts the fake on a free port and waits until it accepts connections; panics when it
    /// cannot start (a test fixture).
    pub fn start(options: FakeBedrockOptions) -> FakeBedrock {
        let dir = tempfile::tempdir().expect("temp dir");
        let record = dir.path().join("bedrock-requests.jsonl");
        let port = free_port();
        let mut cmd = Command::new(python());
        cmd.arg(e2e_dir().join("fakes/bedrock.py"))
            .args(["--port", &port.to_string()])
            .args([
                "--upstream",
                &options.upstream,
                "--upstream-key",
                &options.upstream_key,
            ])
            .args(["--region", &options.region])
            .args(["--access-key-id", &options.access_key_id])
            .args(["--secret-access-key", &options.secret_access_key])
            .arg("--record")
            .arg(&record);
        if let Some(k) = &options.api_key {
            cmd.args(["--api-key", k]);
        }
        if let Some(f) = &options.web_identity_token_file {
            cmd.arg("--web-identity-token-file").arg(f);
        }
        if let Some(t) = &options.container_token {
            cmd.args(["--container-token", t]);
        }
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn e2e/fakes/bedrock.py");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("fake Bedrock exited at start: {status}");
            }
            assert!(Instant::now() < deadline, "fake Bedrock did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        FakeBedrock {
            child: Mutex::new(child),
            port,
            record,
            _dir: dir,
            options,
        }
    }

    /// `http://127.0.0.1:PORT` (the Bedrock endpoint; STS is `{base_url}/sts/`, container
    /// credentials `{base_url}/container-credentials`).
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Every request it received so far, one JSON object each (see the script's docs).
    pub fn records(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.record)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

impl Drop for FakeBedrock {
    fn drop(&mut self) {
        if let Ok(mut c) = self.child.lock() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
