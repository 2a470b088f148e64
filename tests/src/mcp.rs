//! The real MCP processes the tests use, both on the official MCP Python SDK (pinned in
//! `e2e/requirements.txt`, installed into `e2e/.venv` by `e2e/setup-python.sh`, which
//! [`python`] runs once per test process): upstream MCP servers (`e2e/mcp/upstream_server.py`)
//! and a client that talks to a proxy's `/mcp` (`e2e/mcp/gateway_client.py`).

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long one client run may take.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(90);

/// The repository's `e2e/` directory.
pub fn e2e_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../e2e")
}

/// The venv's Python, installing the pinned packages first when needed; panics with the
/// setup script's error when that fails.
pub fn python() -> PathBuf {
    static READY: OnceLock<Result<(), String>> = OnceLock::new();
    let ready = READY.get_or_init(|| {
        let out = Command::new("bash")
            .arg(e2e_dir().join("setup-python.sh"))
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    });
    if let Err(e) = ready {
        panic!("e2e/setup-python.sh failed (Python 3 with venv and network to PyPI needed): {e}");
    }
    e2e_dir().join(".venv/bin/python")
}

/// A free loopback port (free when asked; bind it soon).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// An upstream MCP server process (`upstream_server.py`); killed on drop.
pub struct McpUpstream {
    child: Mutex<Child>,
    /// Its Streamable HTTP endpoint, `http://127.0.0.1:PORT/mcp`.
    pub url: String,
    seen: PathBuf,
}

impl McpUpstream {
    /// Starts server `name` (`alpha` or `beta`, see the script) on a free port, accepting only
    /// `Bearer <token>`, with tools/list pages of `page_size`; its log goes into `dir`.
    pub fn start(name: &str, token: &str, page_size: u32, dir: &Path) -> McpUpstream {
        Self::start_on(free_port(), name, token, page_size, dir)
    }

    /// Like [`McpUpstream::start`] on a given port (to restart a server where it was).
    pub fn start_on(port: u16, name: &str, token: &str, page_size: u32, dir: &Path) -> McpUpstream {
        let seen = dir.join(format!("{name}-seen.log"));
        let child = Command::new(python())
            .arg(e2e_dir().join("mcp/upstream_server.py"))
            .args(["--name", name, "--token", token])
            .args(["--port", &port.to_string(), "--page-size", &page_size.to_string()])
            .arg("--seen-log")
            .arg(&seen)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn upstream MCP server");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "upstream MCP server {name} did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        McpUpstream {
            child: Mutex::new(child),
            url: format!("http://127.0.0.1:{port}/mcp"),
            seen,
        }
    }

    /// Every `Authorization` header it received and every tool it ran (`call NAME`), one a line.
    pub fn seen(&self) -> String {
        std::fs::read_to_string(&self.seen).unwrap_or_default()
    }

    /// Stops the server now.
    pub fn kill(&self) {
        if let Ok(mut c) = self.child.lock() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for McpUpstream {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs `gateway_client.py` against `url` (a proxy's `/mcp`) with the virtual key `key`, the
/// SDK's `mode` (`legacy` or `auto`) and `steps` (see the script); returns its JSON report, or
/// what went wrong with its output. Blocks: call it off the async runtime.
pub fn run_client(url: &str, key: &str, steps: &Value, mode: &str) -> Result<Value, String> {
    let mut child = Command::new(python())
        .arg(e2e_dir().join("mcp/gateway_client.py"))
        .args(["--url", url, "--key", key, "--mode", mode])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawn MCP client: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(steps.to_string().as_bytes())
            .map_err(|e| format!("writing the steps: {e}"))?;
    }
    let deadline = Instant::now() + CLIENT_TIMEOUT;
    while child.try_wait().map_err(|e| e.to_string())?.is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            return Err(format!("MCP client hung for {CLIENT_TIMEOUT:?}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.trim()).map_err(|_| {
        format!(
            "MCP client failed: {}\nstdout {stdout}\nstderr {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
    })
}
