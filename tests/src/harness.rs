//! Process harness: runs a real `tollgate-proxy` binary on loopback with its logs captured,
//! and a small HTTP client for tests.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// A running `tollgate-proxy` process; killed on drop.
pub struct Proxy {
    child: Child,
    /// Proxy listener.
    pub addr: SocketAddr,
    /// Admin listener.
    pub admin: SocketAddr,
    log_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Proxy {
    /// Starts `bin --policy POLICY` on ephemeral ports and waits until it listens.
    pub fn start(bin: &Path, policy: &Path, env: &[(&str, &str)]) -> anyhow::Result<Proxy> {
        Self::start_with_args(bin, policy, env, &[])
    }

    /// Like [`Proxy::start`] with extra command-line arguments.
    pub fn start_with_args(
        bin: &Path,
        policy: &Path,
        env: &[(&str, &str)],
        args: &[&str],
    ) -> anyhow::Result<Proxy> {
        let dir = tempfile::tempdir()?;
        let log_path = dir.path().join("proxy.log");
        let log = std::fs::File::create(&log_path)?;
        let mut cmd = Command::new(bin);
        if !args.contains(&"--ledger") {
            cmd.arg("--ledger")
                .arg(format!("file:{}", dir.path().join("ledger.journal").display()));
        }
        cmd.arg("--policy")
            .arg(policy)
            .args([
                "--listen",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
                "--workers",
                "2",
            ])
            .args(args)
            .env("TOLLGATE_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("spawning {}", bin.display()))?;
        let mut proxy = Proxy {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            admin: SocketAddr::from(([127, 0, 0, 1], 0)),
            log_path,
            _dir: dir,
        };
        proxy.wait_listening()?;
        Ok(proxy)
    }

    fn wait_listening(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            for line in self.logs().lines() {
                let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                    continue;
                };
                if v["fields"]["message"] == "tollgate-proxy listening" {
                    self.addr = parse_addr(&v["fields"]["listen"])?;
                    self.admin = parse_addr(&v["fields"]["admin"])?;
                    return Ok(());
                }
            }
            if let Some(status) = self.child.try_wait()? {
                bail!("tollgate-proxy exited with {status}; logs:\n{}", self.logs());
            }
            if Instant::now() > deadline {
                bail!("tollgate-proxy did not start; logs:\n{}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `http://127.0.0.1:ADMIN_PORT`.
    pub fn admin_url(&self) -> String {
        format!("http://{}", self.admin)
    }

    /// Everything the proxy logged so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The `/metrics` text.
    pub async fn metrics(&self) -> anyhow::Result<String> {
        let r = send("GET", &format!("{}/metrics", self.admin_url()), &[], Bytes::new()).await?;
        Ok(String::from_utf8_lossy(&r.body).into_owned())
    }

    /// Sends SIGTERM and waits for the process to exit.
    pub fn terminate(mut self) -> anyhow::Result<std::process::ExitStatus> {
        Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()?;
        Ok(self.child.wait()?)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn parse_addr(v: &serde_json::Value) -> anyhow::Result<SocketAddr> {
    v.as_str()
        .context("address field missing")?
        .parse()
        .context("bad address in log")
}

/// A buffered HTTP response.
#[derive(Debug)]
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// Headers.
    pub headers: http::HeaderMap,
    /// Body.
    pub body: Bytes,
}

impl Reply {
    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// A header's value, when present and text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Sends one request and reads the whole reply.
pub async fn send(method: &str, url: &str, headers: &[(&str, &str)], body: Bytes) -> anyhow::Result<Reply> {
    let resp = open(method, url, headers, body).await?;
    let (parts, body) = resp.into_parts();
    let body = body.collect().await?.to_bytes();
    Ok(Reply {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body,
    })
}

/// Sends one request and returns the streaming response.
pub async fn open(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> anyhow::Result<http::Response<hyper::body::Incoming>> {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut req = http::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(body))?;
    Ok(client.request(req).await?)
}
