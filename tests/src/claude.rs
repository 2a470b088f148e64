//! Runs the real Claude Code (pinned in `e2e/package.json`, installed by `make test`) the
//! way an engineer's headless session would: an empty project, an empty home, telemetry and
//! retries off, and only the environment a test gives it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long one `claude -p` run may take.
pub const TIMEOUT: Duration = Duration::from_secs(120);

/// `e2e/node_modules/.bin/claude`, or `None` with a printed reason when it is not installed.
/// Under CI (`CI` set) its absence fails the calling test instead.
pub fn claude_bin() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../e2e/node_modules/.bin/claude");
    if p.exists() {
        return Some(p);
    }
    let msg = "Claude Code is not installed: run `npm ci --prefix e2e` (make test does)";
    assert!(std::env::var_os("CI").is_none(), "{msg}");
    println!("SKIPPED: {msg}");
    None
}

/// What `claude ... --output-format json` printed, and its exit code.
#[derive(Debug, Clone)]
pub struct ClaudeRun {
    /// Exit code (`None` when killed by a signal).
    pub code: Option<i32>,
    /// The last JSON line of stdout (the result object), or `Null`.
    pub json: Value,
    /// All of stdout.
    pub stdout: String,
    /// All of stderr.
    pub stderr: String,
}

impl ClaudeRun {
    /// The `result` text.
    pub fn result(&self) -> &str {
        self.json["result"].as_str().unwrap_or_default()
    }

    /// Whether Claude Code reported an error (or printed no result).
    pub fn is_error(&self) -> bool {
        self.json["is_error"].as_bool().unwrap_or(true)
    }

    /// stdout and stderr, for assertion messages.
    pub fn output(&self) -> String {
        format!("stdout {}\nstderr {}", self.stdout, self.stderr)
    }
}

/// Runs `claude ARGS --output-format json` with a clean environment plus `env`, in `project`
/// (a fresh temporary directory when `None`). Blocks; call it off the async runtime
/// (`tokio::task::block_in_place`). Panics after [`TIMEOUT`].
pub fn run_claude(claude: &Path, args: &[&str], env: &[(&str, &str)], project: Option<&Path>) -> ClaudeRun {
    let home = tempfile::tempdir().expect("a temporary home");
    let scratch = tempfile::tempdir().expect("a temporary project");
    let mut cmd = Command::new(claude);
    cmd.args(args)
        .args(["--output-format", "json"])
        .current_dir(project.unwrap_or(scratch.path()))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", home.path())
        .env("TERM", "dumb")
        .env("DISABLE_TELEMETRY", "1")
        .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
        .env("DISABLE_AUTOUPDATER", "1")
        .env("CLAUDE_CODE_MAX_RETRIES", "0")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn claude");
    let deadline = Instant::now() + TIMEOUT;
    while child.try_wait().expect("waiting for claude").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("claude did not finish within {TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().expect("claude's output");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let json = stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str::<Value>(l).ok())
        .unwrap_or(Value::Null);
    ClaudeRun {
        code: out.status.code(),
        json,
        stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}
