//! The real programs the end-to-end tests run: `tollgate-proxy` and Claude Code.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::operator_dir;

/// The pinned Claude Code from `e2e/node_modules`; `None` (with a printed reason) outside CI
/// when it is not installed. Under CI its absence fails the test.
pub fn claude_bin() -> Option<PathBuf> {
    let p = operator_dir().join("../e2e/node_modules/.bin/claude");
    if p.exists() {
        return Some(p);
    }
    let msg = "Claude Code is not installed: run `npm ci --prefix e2e` (make test does)";
    assert!(std::env::var_os("CI").is_none(), "{msg}");
    println!("SKIPPED: {msg}");
    None
}

/// `target/<profile>/tollgate-proxy`, built on demand (another package's binary is not built
/// for this package's tests).
pub fn proxy_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .join("tollgate-proxy");
    if !bin.exists() {
        println!(
            "note: {} is missing; running `cargo build -p tollgate-dataplane --bin tollgate-proxy`",
            bin.display()
        );
        let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["build", "-p", "tollgate-dataplane", "--bin", "tollgate-proxy"])
            .current_dir(operator_dir().join(".."))
            .status()
            .expect("running cargo build");
        assert!(status.success() && bin.exists(), "could not build tollgate-proxy");
    }
    bin
}

/// Runs `claude -p "say hi" --output-format json` with a clean environment plus `env`;
/// returns the exit code, the JSON result and stdout.
pub fn run_claude(claude: &Path, env: &[(String, String)]) -> (Option<i32>, Value, String) {
    let home = tempfile::tempdir().unwrap();
    let project = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(claude);
    cmd.args(["-p", "say hi", "--output-format", "json"])
        .current_dir(project.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", home.path())
        .env("TERM", "dumb")
        .env("DISABLE_TELEMETRY", "1")
        .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
        .env("DISABLE_AUTOUPDATER", "1")
        .env("CLAUDE_CODE_MAX_RETRIES", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn claude");
    let deadline = Instant::now() + Duration::from_secs(120);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("claude did not finish within 120 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let json = stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str::<Value>(l).ok())
        .unwrap_or(Value::Null);
    (out.status.code(), json, stdout)
}
