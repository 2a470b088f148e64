//! `fake-gemini`: the fake Gemini API upstream (generateContent, SSE, countTokens, Vertex paths) as a process, for end-to-end tests and manual runs of the real CLIs.
//!
//! ```text
//! fake-gemini --listen 127.0.0.1:PORT --api-key KEY [--no-record] [--max-recorded N]
//! ```
//!
//! Prints `listening on IP:PORT` on stdout once ready (with the real port when PORT is 0) and
//! serves until interrupted. `GET /_fake/requests` returns the recorded requests as JSON and
//! `POST /_fake/clear` forgets them.

use std::io::Write as _;
use std::net::SocketAddr;
use std::process::ExitCode;

use tollgate_tests::fake_gemini::{FakeGemini, FakeGeminiConfig};

const USAGE: &str = "\
usage: fake-gemini --listen IP:PORT --api-key KEY [--no-record] [--max-recorded N]

  --listen IP:PORT      address to bind (default 127.0.0.1:0; port 0 picks a free port)
  --api-key KEY         key expected in x-goog-api-key / ?key= (Vertex: Bearer) (required)
  --no-record           do not record requests (benchmarks)
  --max-recorded N      keep at most N recorded requests (default 4096)

Prints `listening on IP:PORT` when ready. Control: GET /_fake/requests, POST /_fake/clear.";

fn parse_args(args: impl IntoIterator<Item = String>) -> Result<FakeGeminiConfig, String> {
    let mut config = FakeGeminiConfig::default();
    let mut api_key = None;
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_owned(), Some(v.to_owned())),
            _ => (arg, None),
        };
        let mut value = |name: &str| {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match flag.as_str() {
            "--listen" => {
                let v = value("--listen")?;
                let addr: SocketAddr = v
                    .parse()
                    .map_err(|e| format!("--listen {v:?}: {e} (expected IP:PORT)"))?;
                config.addr = Some(addr);
            }
            "--api-key" => api_key = Some(value("--api-key")?),
            "--no-record" => config.record = false,
            "--max-recorded" => {
                let v = value("--max-recorded")?;
                config.max_recorded = v.parse().map_err(|e| format!("--max-recorded {v:?}: {e}"))?;
            }
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    config.api_key = api_key.ok_or("--api-key is required")?;
    Ok(config)
}

#[tokio::main]
async fn main() -> ExitCode {
    let config = match parse_args(std::env::args().skip(1)) {
        Ok(c) => c,
        Err(e) if e.is_empty() => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("fake-gemini: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let fake = match FakeGemini::start(config).await {
        Ok(f) => f,
        Err(e) => {
            eprintln!("fake-gemini: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "listening on {}", fake.addr());
    let _ = stdout.flush();
    drop(stdout);

    if let Err(e) = tokio::signal::ctrl_c().await {
        eprintln!("fake-gemini: cannot wait for ctrl-c ({e}); serving forever");
        std::future::pending::<()>().await;
    }
    drop(fake);
    ExitCode::SUCCESS
}
