//! Runs the real Codex CLI and Gemini CLI (pinned in `e2e/package.json`, installed by `make
//! test`) headless, the way an engineer's non-interactive session would: an empty project, an
//! empty home, no update checks or telemetry, and only the environment a test gives them.
//!
//! * Codex CLI ignores `OPENAI_BASE_URL` for its built-in provider (it goes to its own host), so
//!   [`run_codex`] writes a custom provider into a temporary `CODEX_HOME/config.toml`:
//!   `model_provider = "tollgate"`, `[model_providers.tollgate] base_url = <OPENAI_BASE_URL>,
//!   env_key = "OPENAI_API_KEY", wire_api = "responses"`, and runs `codex exec
//!   --skip-git-repo-check --dangerously-bypass-approvals-and-sandbox --color never -o FILE
//!   PROMPT`.
//! * Gemini CLI takes `GEMINI_API_KEY` and `GOOGLE_GEMINI_BASE_URL`; [`run_gemini`] adds a
//!   temporary `HOME/.gemini/settings.json` selecting API-key auth, and runs `gemini -p PROMPT
//!   --approval-mode yolo --skip-trust --output-format json`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// How long one CLI run may take by default.
pub const TIMEOUT: Duration = Duration::from_secs(180);

/// The model [`run_codex`] configures unless `CODEX_MODEL` is given.
pub const CODEX_DEFAULT_MODEL: &str = "gpt-5";

fn e2e_bin(name: &str, what: &str) -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../e2e/node_modules/.bin")
        .join(name);
    if p.exists() {
        return Some(p);
    }
    let msg = format!("{what} is not installed: run `npm ci --prefix e2e` (make test does)");
    assert!(std::env::var_os("CI").is_none(), "{msg}");
    println!("SKIPPED: {msg}");
    None
}

/// `e2e/node_modules/.bin/codex`, or `None` with a printed reason when it is not installed.
/// Under CI (`CI` set) its absence fails the calling test instead.
pub fn codex_bin() -> Option<PathBuf> {
    e2e_bin("codex", "Codex CLI")
}

/// `e2e/node_modules/.bin/gemini`, or `None` with a printed reason when it is not installed.
/// Under CI (`CI` set) its absence fails the calling test instead.
pub fn gemini_bin() -> Option<PathBuf> {
    e2e_bin("gemini", "Gemini CLI")
}

/// What one CLI run printed, and how it ended.
#[derive(Debug, Clone)]
pub struct AgentRun {
    /// Exit code (`None` when killed by a signal or by the timeout).
    pub code: Option<i32>,
    /// All of stdout.
    pub stdout: String,
    /// All of stderr.
    pub stderr: String,
    /// Codex: the content of its `--output-last-message` file (`None` when it wrote none).
    /// Gemini: the `response` of its JSON output.
    pub last_message: Option<String>,
    /// Gemini: the JSON object printed with `--output-format json` (`Null` for Codex or when none
    /// was printed).
    pub json: Value,
    /// Wall time of the run.
    pub elapsed: Duration,
    /// Whether the run was killed at its timeout.
    pub timed_out: bool,
}

impl AgentRun {
    /// The final reply text: the last agent message if there was one, else stdout, trimmed.
    pub fn final_text(&self) -> String {
        self.last_message
            .clone()
            .unwrap_or_else(|| self.stdout.clone())
            .trim()
            .to_owned()
    }

    /// Whether the CLI exited with 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// The error message Gemini CLI put in its JSON output (`error.message`), if any.
    pub fn json_error(&self) -> Option<&str> {
        self.json.get("error")?.get("message")?.as_str()
    }

    /// Exit code, stdout and stderr, for assertion messages.
    pub fn output(&self) -> String {
        format!(
            "exit {:?} after {:?}{}\nstdout {}\nstderr {}",
            self.code,
            self.elapsed,
            if self.timed_out { " (timed out)" } else { "" },
            self.stdout,
            self.stderr
        )
    }
}

/// Options of [`run_codex_with`].
#[derive(Debug, Clone)]
pub struct CodexOptions {
    /// `request_max_retries` of the provider (Codex's default is 4): how often a failed HTTP
    /// request is retried.
    pub request_max_retries: Option<u32>,
    /// `stream_max_retries` of the provider (Codex's default is 5): how often a broken stream is
    /// retried.
    pub stream_max_retries: Option<u32>,
    /// `stream_idle_timeout_ms` of the provider.
    pub stream_idle_timeout_ms: Option<u64>,
    /// Extra HTTP headers Codex sends to the provider (`http_headers`).
    pub http_headers: Vec<(String, String)>,
    /// How long the run may take.
    pub timeout: Duration,
}

impl Default for CodexOptions {
    /// Codex's own retry defaults, no extra headers, [`TIMEOUT`].
    fn default() -> Self {
        Self {
            request_max_retries: None,
            stream_max_retries: None,
            stream_idle_timeout_ms: None,
            http_headers: Vec::new(),
            timeout: TIMEOUT,
        }
    }
}

impl CodexOptions {
    /// No retries at all: errors surface at once.
    pub fn no_retries() -> Self {
        Self {
            request_max_retries: Some(0),
            stream_max_retries: Some(0),
            ..Self::default()
        }
    }
}

/// A TOML basic string.
fn toml_string(s: &str) -> String {
    // A JSON string is a valid TOML basic string for the characters we pass.
    Value::String(s.to_owned()).to_string()
}

/// The `config.toml` [`run_codex`] writes.
pub fn codex_config(base_url: &str, model: &str, options: &CodexOptions) -> String {
    let mut provider = format!(
        "[model_providers.tollgate]\nname = \"Tollgate\"\nbase_url = {}\nenv_key = \"OPENAI_API_KEY\"\n\
         wire_api = \"responses\"\n",
        toml_string(base_url)
    );
    for (key, value) in [
        ("request_max_retries", options.request_max_retries.map(u64::from)),
        ("stream_max_retries", options.stream_max_retries.map(u64::from)),
        ("stream_idle_timeout_ms", options.stream_idle_timeout_ms),
    ] {
        if let Some(v) = value {
            provider.push_str(&format!("{key} = {v}\n"));
        }
    }
    if !options.http_headers.is_empty() {
        let headers: Vec<String> = options
            .http_headers
            .iter()
            .map(|(k, v)| format!("{} = {}", toml_string(k), toml_string(v)))
            .collect();
        provider.push_str(&format!("http_headers = {{ {} }}\n", headers.join(", ")));
    }
    format!(
        "model = {}\nmodel_provider = \"tollgate\"\napproval_policy = \"never\"\n\
         check_for_update_on_startup = false\n\n[analytics]\nenabled = false\n\n{provider}",
        toml_string(model)
    )
}

/// Runs `codex exec` headless with Codex's default retries; see [`run_codex_with`].
pub fn run_codex(codex: &Path, prompt: &str, env: &[(&str, &str)], workdir: Option<&Path>) -> AgentRun {
    run_codex_with(codex, prompt, env, workdir, &CodexOptions::default())
}

/// Runs `codex exec --skip-git-repo-check --dangerously-bypass-approvals-and-sandbox --color
/// never -o FILE PROMPT` with a clean environment (`PATH`, a temporary `HOME` and `CODEX_HOME`)
/// plus `env`, in `workdir` (a fresh temporary directory when `None`).
///
/// `env` must hold `OPENAI_BASE_URL` (the Responses base, e.g. `http://127.0.0.1:PORT/v1`;
/// Codex posts to `{base}/responses`) and `OPENAI_API_KEY` (sent as `Authorization: Bearer`); an
/// optional `CODEX_MODEL` replaces [`CODEX_DEFAULT_MODEL`]. The sandbox is bypassed because
/// bubblewrap needs user namespaces that containers often lack, and the commands come from a
/// fake. Blocks; call it off the async runtime (`tokio::task::spawn_blocking`). A run still
/// going at `options.timeout` is killed (`timed_out`).
pub fn run_codex_with(
    codex: &Path,
    prompt: &str,
    env: &[(&str, &str)],
    workdir: Option<&Path>,
    options: &CodexOptions,
) -> AgentRun {
    let home = tempfile::tempdir().expect("a temporary home");
    let scratch = tempfile::tempdir().expect("a temporary project");
    let codex_home = home.path().join(".codex");
    std::fs::create_dir_all(&codex_home).expect("CODEX_HOME");
    let get = |k: &str| env.iter().find(|(n, _)| *n == k).map(|(_, v)| *v);
    let base_url = get("OPENAI_BASE_URL").unwrap_or("http://127.0.0.1:9/v1");
    let model = get("CODEX_MODEL").unwrap_or(CODEX_DEFAULT_MODEL);
    std::fs::write(
        codex_home.join("config.toml"),
        codex_config(base_url, model, options),
    )
    .expect("write config.toml");
    let last = home.path().join("last-message.txt");
    let mut cmd = Command::new(codex);
    cmd.args([
        "exec",
        "--skip-git-repo-check",
        "--dangerously-bypass-approvals-and-sandbox",
        "--color",
        "never",
        "-o",
    ])
    .arg(&last)
    .arg("--")
    .arg(prompt)
    .current_dir(workdir.unwrap_or(scratch.path()))
    .env_clear()
    .env("PATH", std::env::var("PATH").unwrap_or_default())
    .env("HOME", home.path())
    .env("CODEX_HOME", &codex_home)
    .env("TERM", "dumb")
    .env("NO_COLOR", "1")
    .envs(
        env.iter()
            .filter(|(k, _)| !matches!(*k, "OPENAI_BASE_URL" | "CODEX_MODEL"))
            .copied(),
    );
    let mut run = wait(cmd, "codex", options.timeout);
    run.last_message = std::fs::read_to_string(&last).ok();
    run
}

/// The `settings.json` [`run_gemini`] writes into `HOME/.gemini`.
pub fn gemini_settings() -> Value {
    json!({
        "security": {"auth": {"selectedType": "gemini-api-key"}},
        "privacy": {"usageStatisticsEnabled": false},
        "telemetry": {"enabled": false},
        "general": {"disableAutoUpdate": true, "disableUpdateNag": true},
    })
}

/// Runs `gemini -p PROMPT --approval-mode yolo --skip-trust --output-format json` with a clean
/// environment (`PATH`, a temporary `HOME` holding [`gemini_settings`],
/// `GEMINI_CLI_TRUST_WORKSPACE=true`) plus `env`, in `workdir` (a fresh temporary directory when
/// `None`).
///
/// `env` must hold `GEMINI_API_KEY` (sent as `x-goog-api-key`) and `GOOGLE_GEMINI_BASE_URL`
/// (the base without `/v1beta`); `GEMINI_MODEL` picks a model instead of Gemini CLI's automatic
/// routing. Blocks; call it off the async runtime. Killed after [`TIMEOUT`] (`timed_out`).
pub fn run_gemini(gemini: &Path, prompt: &str, env: &[(&str, &str)], workdir: Option<&Path>) -> AgentRun {
    run_gemini_for(gemini, prompt, env, workdir, TIMEOUT)
}

/// [`run_gemini`] with a given timeout.
pub fn run_gemini_for(
    gemini: &Path,
    prompt: &str,
    env: &[(&str, &str)],
    workdir: Option<&Path>,
    timeout: Duration,
) -> AgentRun {
    let home = tempfile::tempdir().expect("a temporary home");
    let scratch = tempfile::tempdir().expect("a temporary project");
    let dot = home.path().join(".gemini");
    std::fs::create_dir_all(&dot).expect("HOME/.gemini");
    std::fs::write(dot.join("settings.json"), gemini_settings().to_string()).expect("settings.json");
    let mut cmd = Command::new(gemini);
    cmd.args(["-p", prompt])
        .args([
            "--approval-mode",
            "yolo",
            "--skip-trust",
            "--output-format",
            "json",
        ])
        .current_dir(workdir.unwrap_or(scratch.path()))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", home.path())
        .env("TERM", "dumb")
        .env("NO_COLOR", "1")
        .env("GEMINI_CLI_TRUST_WORKSPACE", "true")
        .envs(env.iter().copied());
    let mut run = wait(cmd, "gemini", timeout);
    run.json = run
        .stdout
        .find('{')
        .and_then(|at| serde_json::from_str::<Value>(run.stdout[at..].trim()).ok())
        .unwrap_or(Value::Null);
    run.last_message = run
        .json
        .get("response")
        .and_then(Value::as_str)
        .map(str::to_owned);
    run
}

/// Spawns `cmd` with null stdin and piped output, and waits at most `timeout` for it.
fn wait(mut cmd: Command, name: &str, timeout: Duration) -> AgentRun {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // Its own process group, so that a timeout also ends the shells and helpers it started.
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let start = Instant::now();
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {name}: {e}"));
    // Drain the pipes on threads so a chatty child never blocks on a full pipe.
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let out = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = std::io::Read::read_to_end(&mut stdout, &mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = std::io::Read::read_to_end(&mut stderr, &mut s);
        s
    });
    let mut timed_out = false;
    let status = loop {
        if let Some(status) = child
            .try_wait()
            .unwrap_or_else(|e| panic!("waiting for {name}: {e}"))
        {
            break Some(status);
        }
        if start.elapsed() > timeout {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", child.id())])
                .status();
            let _ = child.kill();
            let _ = child.wait();
            timed_out = true;
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let elapsed = start.elapsed();
    AgentRun {
        code: status.and_then(|s| s.code()),
        stdout: String::from_utf8_lossy(&out.join().unwrap_or_default()).into_owned(),
        stderr: String::from_utf8_lossy(&err.join().unwrap_or_default()).into_owned(),
        last_message: None,
        json: Value::Null,
        elapsed,
        timed_out,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codex_config_is_what_codex_reads() {
        let options = CodexOptions {
            request_max_retries: Some(0),
            http_headers: vec![("x-a".into(), "b\"c".into())],
            ..CodexOptions::default()
        };
        let toml = codex_config("http://127.0.0.1:1/v1", "gpt-5", &options);
        assert!(toml.contains("model_provider = \"tollgate\""), "{toml}");
        assert!(toml.contains("base_url = \"http://127.0.0.1:1/v1\""), "{toml}");
        assert!(toml.contains("request_max_retries = 0"), "{toml}");
        assert!(!toml.contains("stream_max_retries"), "{toml}");
        assert!(toml.contains(r#"http_headers = { "x-a" = "b\"c" }"#), "{toml}");
    }
}
