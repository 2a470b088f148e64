//! `bench-gateway`: the latency, throughput and memory benchmark of `tollgate-proxy` against a
//! plain HAProxy reverse proxy and against no proxy at all, in one run (`make bench`).
//!
//! ```text
//! bench-gateway [--seconds N] [--rounds N] [--warmup S] [--quick] [--rates R1,R2] [--connections N]
//!               [--concurrency N] [--tollgate-workers N] [--haproxy-threads N] [--tollgate-log LEVEL]
//!               [--paths direct,haproxy,tollgate,bedrock-direct,tollgate-bedrock] [--modes json,sse]
//! ```
//!
//! Five paths reach the same `fake-anthropic --no-record` process: `direct`, `haproxy` (Debian's
//! HAProxy, `mode http`, `http-reuse always`) and `tollgate` (one virtual key, one provider, a
//! `claude-*` passthrough route, default `info` JSON logging to a file) on its Anthropic Messages
//! API; `bedrock-direct` and `tollgate-bedrock` on its Bedrock InvokeModel paths
//! (`fake_anthropic::bedrock`). Each is driven with the 76 KB Claude Code request fixture as
//! JSON (`"stream": false`) and as SSE (`"stream": true`) at fixed open-loop rates (latency from
//! the scheduled send time) and in a closed loop for maximum throughput. `tollgate-proxy` and
//! `fake-anthropic` are found next to this executable.
//!
//! **The Bedrock target.** `bedrock-direct` is the baseline of the Bedrock wire format: the load
//! generator sends the fake exactly the body tollgate sends Bedrock (made with the gateway's own
//! body edit: no `model`/`stream`/`service_tier`, `anthropic_version: bedrock-2023-05-31`, the
//! `anthropic-beta` header as `anthropic_beta`) to `/model/{id}/invoke` or
//! `/invoke-with-response-stream`, with a static dummy SigV4 `authorization` and `x-amz-date`
//! (the fake checks their shape only), and reads the JSON or the AWS event stream to its end.
//! `tollgate-bedrock` is a second `tollgate-proxy` process, identical to the first but for its
//! provider (`kind: bedrock`, static AWS credentials, route `claude-*` to a cross-region
//! inference profile); the client sends it the same Anthropic request as `tollgate`. It adds
//! what a Bedrock target costs: the body edit, a SigV4 signature over the 76 KB body, and for
//! SSE the event stream decoded and transcoded to SSE. A second process rather than a second
//! route in the first: the client request stays byte-identical (a route is chosen by the model
//! name, which would differ), the Anthropic `tollgate` line keeps the exact configuration of
//! earlier runs, and each target gets its own CPU and memory readings. The extra process idles
//! while the other paths are measured. The table after the main one sets the added latency and
//! CPU of both targets side by side.
//!
//! Each cell's measured time is split into rounds that interleave the paths (rotating their
//! order), so that whatever else the machine does meanwhile hits every path alike; the table
//! also shows the CPU each component used per request and how much CPU other processes took
//! meanwhile (`noise`), since on a small shared machine that decides the tail latencies.
//!
//! Choices: HAProxy runs with `nbthread 1` and tollgate-proxy with `--workers 1`, one core each
//! on the same footing. On the two-CPU reference machine, where the load generator and the fake
//! share the same CPUs, two threads each measured worse for both (more contention, not more
//! capacity); `--tollgate-workers 2 --haproxy-threads 2` reproduces that comparison.

#[path = "../bench/load.rs"]
mod load;
#[path = "../bench/procs.rs"]
mod procs;
#[path = "../bench/report.rs"]
mod report;

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path as FsPath, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Uri};

use load::{Outcome, Pool, RequestSpec};
use procs::{Fake, Haproxy, Machine, RssSampler, Target, Tollgate, status_kb};
use report::{Cell, Load, Mode, Path};
use tollgate_dataplane::providers::bedrock::{self, eventstream};

/// Provider key the fake expects (sent by `direct` and `haproxy`, injected by tollgate).
const PROVIDER_KEY: &str = "sk-ant-bench-upstream-0123456789abcdef";
/// The virtual key tollgate knows by its SHA-256.
const VIRTUAL_KEY: &str = "tg_bench_virtual_key_0123456789abcdef0123456789abcdef";
/// The Bedrock model tollgate-bedrock routes to (a cross-region inference profile).
const BEDROCK_MODEL: &str = "us.anthropic.claude-sonnet-4-5-20250929-v1:0";
/// The AWS access key id of tollgate-bedrock (the fake checks the signature's shape only).
const AWS_KEY_ID: &str = "AKIDBENCHGATEWAY0000";
/// Its secret access key.
const AWS_SECRET: &str = "bench-gateway-secret-access-key-0123456789";
/// The static `authorization` of `bedrock-direct`: a SigV4 header in shape, not a signature.
const DUMMY_SIGV4: &str = "AWS4-HMAC-SHA256 Credential=AKIDBENCHGATEWAY0000/20260101/us-east-1/bedrock/aws4_request, \
     SignedHeaders=accept;content-type;host;x-amz-date, \
     Signature=0000000000000000000000000000000000000000000000000000000000000000";
/// The static `x-amz-date` of `bedrock-direct`.
const DUMMY_AMZ_DATE: &str = "20260101T000000Z";
/// The content type of a Bedrock response stream.
const EVENT_STREAM: &str = "application/vnd.amazon.eventstream";
/// The request fixture, relative to the workspace root.
const FIXTURE: &str = "tests/fixtures/messages-request-claude-code.json";
/// What Claude Code sends in `anthropic-beta`.
const ANTHROPIC_BETA: &str =
    "claude-code-20250219,interleaved-thinking-2025-05-14,fine-grained-tool-streaming-2025-05-14";
/// Idle-RSS target for tollgate-proxy.
const IDLE_RSS_TARGET_MIB: f64 = 15.0;
/// Peak-RSS target for tollgate-proxy at the highest fixed rate.
const PEAK_RSS_TARGET_MIB: f64 = 64.0;
/// RSS sampling period.
const RSS_EVERY: Duration = Duration::from_millis(20);

const USAGE: &str = "\
usage: bench-gateway [options]

  --seconds N            measured seconds per cell and path (default 5)
  --rounds N             split them into N interleaved rounds (default 5)
  --warmup S             warm-up seconds per path before each cell (default 1)
  --quick                smoke mode: 1 s cells in 1 round, 0.3 s warm-up
  --rates R1,R2,...      open-loop rates in requests/s (default 1000,2000)
  --connections N        most keep-alive connections in open-loop cells (default 64)
  --concurrency N        connections of the closed-loop (max throughput) cells (default 32)
  --tollgate-workers N   tollgate-proxy --workers (default 1)
  --haproxy-threads N    HAProxy nbthread (default 1)
  --tollgate-log LEVEL   TOLLGATE_LOG for tollgate-proxy (default: unset, i.e. info as in production)
  --paths P1,P2,...      only these of direct,haproxy,tollgate,bedrock-direct,tollgate-bedrock
                         (default all)
  --modes M1,M2          only these of json,sse (default both)

Needs tollgate-proxy and fake-anthropic next to this executable (make bench builds them) and
haproxy (apt-get install -y haproxy).";

/// Command-line options.
struct Options {
    seconds: f64,
    warmup: f64,
    grace: f64,
    rates: Vec<f64>,
    connections: usize,
    concurrency: usize,
    tollgate_workers: usize,
    tollgate_log: Option<String>,
    haproxy_threads: usize,
    rounds: usize,
    paths: Vec<Path>,
    modes: Vec<Mode>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            seconds: 5.0,
            warmup: 1.0,
            grace: 2.0,
            rates: vec![1000.0, 2000.0],
            connections: 64,
            concurrency: 32,
            tollgate_workers: 1,
            tollgate_log: None,
            haproxy_threads: 1,
            rounds: 5,
            paths: Path::ALL.to_vec(),
            modes: vec![Mode::Json, Mode::Sse],
        }
    }
}

/// Parses the arguments; `Err("")` asks for the usage text.
fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Options, String> {
    fn num<T: std::str::FromStr>(flag: &str, v: &str) -> Result<T, String> {
        v.parse().map_err(|_| format!("{flag}: bad number {v:?}"))
    }
    let mut o = Options::default();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_owned(), Some(v.to_owned())),
            _ => (arg, None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match flag.as_str() {
            "--seconds" => o.seconds = num(&flag, &value()?)?,
            "--warmup" => o.warmup = num(&flag, &value()?)?,
            "--quick" => {
                o.seconds = 1.0;
                o.rounds = 1;
                o.warmup = 0.3;
                o.grace = 1.0;
            }
            "--rates" => {
                o.rates = value()?
                    .split(',')
                    .map(|r| num(&flag, r.trim()))
                    .collect::<Result<_, _>>()?;
            }
            "--connections" => o.connections = num(&flag, &value()?)?,
            "--concurrency" => o.concurrency = num(&flag, &value()?)?,
            "--tollgate-workers" => o.tollgate_workers = num(&flag, &value()?)?,
            "--haproxy-threads" => o.haproxy_threads = num(&flag, &value()?)?,
            "--tollgate-log" => o.tollgate_log = Some(value()?),
            "--rounds" => o.rounds = num(&flag, &value()?)?,
            "--paths" => {
                o.paths = value()?
                    .split(',')
                    .map(|p| {
                        Path::ALL
                            .into_iter()
                            .find(|x| x.name() == p.trim())
                            .ok_or_else(|| format!("--paths: unknown path {p:?}"))
                    })
                    .collect::<Result<_, _>>()?;
            }
            "--modes" => {
                o.modes = value()?
                    .split(',')
                    .map(|m| {
                        [Mode::Json, Mode::Sse]
                            .into_iter()
                            .find(|x| x.name() == m.trim())
                            .ok_or_else(|| format!("--modes: unknown mode {m:?}"))
                    })
                    .collect::<Result<_, _>>()?;
            }
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if o.seconds <= 0.0 || o.warmup < 0.0 || o.rates.iter().any(|r| *r <= 0.0) {
        return Err("durations and rates must be positive".into());
    }
    if o.rounds == 0
        || o.connections == 0
        || o.concurrency == 0
        || o.tollgate_workers == 0
        || o.haproxy_threads == 0
    {
        return Err("counts must be at least 1".into());
    }
    Ok(o)
}

fn main() -> ExitCode {
    let options = match parse_args(std::env::args().skip(1)) {
        Ok(o) => o,
        Err(e) if e.is_empty() => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("bench-gateway: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let Some(haproxy) = procs::find_haproxy() else {
        eprintln!(
            "bench-gateway: haproxy is not on PATH; it is the baseline. Install it with:\n\n    \
             apt-get install -y haproxy\n"
        );
        return ExitCode::from(3);
    };
    // The load generator runs on one thread: it is cheaper than the two servers it drives, and
    // on a two-CPU machine every thread it adds competes with them.
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bench-gateway: cannot build the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(options, &haproxy)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench-gateway: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Binaries next to this executable.
fn sibling(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("locating this executable")?;
    let dir = exe.parent().context("executable has no directory")?;
    let path = dir.join(name);
    if !path.is_file() {
        bail!(
            "{} not found; build it with `cargo build --release -p tollgate-dataplane -p tollgate-tests`",
            path.display()
        );
    }
    Ok(path)
}

/// The workspace root: two levels above `target/<profile>/`, else the compile-time location.
fn workspace_root() -> PathBuf {
    let from_exe = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.parent()?.to_path_buf()));
    match from_exe {
        Some(root) if root.join(FIXTURE).is_file() => root,
        _ => PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/..")),
    }
}

/// The fixture with `"stream": true` (as captured) and with `"stream": false`.
fn bodies(root: &FsPath) -> anyhow::Result<(Bytes, Bytes)> {
    let path = root.join(FIXTURE);
    let sse = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    let needle = br#""stream": true"#;
    let at = sse
        .windows(needle.len())
        .rposition(|w| w == needle)
        .context("the fixture has no \"stream\": true")?;
    let mut json = Vec::with_capacity(sse.len() + 1);
    json.extend_from_slice(&sse[..at]);
    json.extend_from_slice(br#""stream": false"#);
    json.extend_from_slice(&sse[at + needle.len()..]);
    for (body, stream) in [(&sse, true), (&json, false)] {
        let v: serde_json::Value = serde_json::from_slice(body).context("fixture is not JSON")?;
        if v["stream"] != stream {
            bail!("fixture body variant has stream = {}", v["stream"]);
        }
    }
    Ok((Bytes::from(sse), Bytes::from(json)))
}

/// The Bedrock InvokeModel body tollgate sends for the fixture, made with the gateway's own
/// body edit (the same for JSON and SSE: the operation is in the path).
fn bedrock_body(anthropic_body: &Bytes) -> anyhow::Result<Bytes> {
    use tollgate_dataplane::providers::body_edit::{BodyEdit, edit};
    let betas: Vec<&str> = ANTHROPIC_BETA.split(',').map(str::trim).collect();
    let body = edit(
        anthropic_body,
        &BodyEdit {
            remove: &["model", "stream", "service_tier"],
            set: vec![("anthropic_beta", serde_json::Value::from(betas))],
            default: vec![("anthropic_version", bedrock::ANTHROPIC_VERSION.into())],
        },
    )
    .map_err(|e| anyhow::anyhow!("editing the fixture into a Bedrock body: {e}"))?;
    let v: serde_json::Value = serde_json::from_slice(&body).context("Bedrock body is not JSON")?;
    if v.get("model").is_some() || v.get("stream").is_some() || v["anthropic_version"].is_null() {
        bail!("the Bedrock body edit did not apply");
    }
    Ok(body)
}

/// The request bodies: the fixture as JSON and SSE, and its Bedrock form.
struct Bodies {
    json: Bytes,
    sse: Bytes,
    bedrock: Bytes,
}

/// The request of one path and mode: as Claude Code sends it, or for `bedrock-direct` as
/// tollgate sends it to Bedrock (with a dummy SigV4 header).
fn spec(path: Path, mode: Mode, addr: SocketAddr, bodies: &Bodies) -> anyhow::Result<RequestSpec> {
    let mut headers = HeaderMap::new();
    let mut set = |name: &'static str, value: &str| -> anyhow::Result<()> {
        headers.insert(HeaderName::from_static(name), HeaderValue::from_str(value)?);
        Ok(())
    };
    set("host", &addr.to_string())?;
    match path {
        Path::BedrockDirect => {
            set("authorization", DUMMY_SIGV4)?;
            set("x-amz-date", DUMMY_AMZ_DATE)?;
            set("content-type", "application/json")?;
            let (op, accept) = match mode {
                Mode::Json => ("invoke", "application/json"),
                Mode::Sse => ("invoke-with-response-stream", EVENT_STREAM),
            };
            set("accept", accept)?;
            let uri = format!("/model/{}/{op}", bedrock::encode_label(BEDROCK_MODEL));
            return Ok(RequestSpec {
                uri: uri.parse()?,
                headers,
                body: bodies.bedrock.clone(),
            });
        }
        Path::Tollgate | Path::TollgateBedrock => set("authorization", &format!("Bearer {VIRTUAL_KEY}"))?,
        Path::Direct | Path::Haproxy => set("x-api-key", PROVIDER_KEY)?,
    }
    set("anthropic-version", "2023-06-01")?;
    set("anthropic-beta", ANTHROPIC_BETA)?;
    set("content-type", "application/json")?;
    set("accept", "application/json")?;
    set("user-agent", "claude-cli/2.0.0 (external, cli)")?;
    set("x-app", "cli")?;
    Ok(RequestSpec {
        uri: Uri::from_static("/v1/messages?beta=true"),
        headers,
        body: match mode {
            Mode::Json => bodies.json.clone(),
            Mode::Sse => bodies.sse.clone(),
        },
    })
}

/// The type of the last Anthropic event in a Bedrock event stream, decoded with the gateway's
/// own decoder; an error if the stream does not decode or carries anything but `chunk` events.
fn last_bedrock_event(body: &[u8]) -> anyhow::Result<String> {
    use base64::Engine as _;
    let mut decoder = eventstream::Decoder::new();
    decoder.feed(body);
    let mut last = String::new();
    while let Some(msg) = decoder.next_message()? {
        if msg.header_str(":event-type") != Some("chunk") {
            bail!("unexpected event-stream message {:?}", msg.headers);
        }
        let chunk: serde_json::Value = serde_json::from_slice(&msg.payload)?;
        let json = base64::engine::general_purpose::STANDARD
            .decode(chunk["bytes"].as_str().context("chunk without bytes")?)?;
        let event: serde_json::Value = serde_json::from_slice(&json)?;
        last = event["type"].as_str().unwrap_or_default().to_owned();
    }
    if decoder.pending() != 0 {
        bail!("the event stream ends inside a message");
    }
    Ok(last)
}

/// Checks that a path answers the fixture correctly before measuring it.
async fn check(path: Path, mode: Mode, addr: SocketAddr, spec: &RequestSpec) -> anyhow::Result<()> {
    let (status, content_type, body) = load::probe(addr, spec)
        .await
        .with_context(|| format!("probing {} ({})", path.name(), mode.name()))?;
    let text = String::from_utf8_lossy(&body);
    let ok = status == 200
        && match (path, mode) {
            (Path::BedrockDirect, Mode::Sse) => {
                content_type.starts_with(EVENT_STREAM)
                    && last_bedrock_event(&body).is_ok_and(|t| t == "message_stop")
            }
            (_, Mode::Json) => {
                content_type.starts_with("application/json")
                    && serde_json::from_slice::<serde_json::Value>(&body)
                        .is_ok_and(|v| v["type"] == "message")
            }
            (_, Mode::Sse) => {
                content_type.starts_with("text/event-stream") && text.contains("event: message_stop")
            }
        };
    if !ok {
        bail!(
            "{} ({}) answered {status} {content_type}: {}",
            path.name(),
            mode.name(),
            text.chars().take(500).collect::<String>()
        );
    }
    Ok(())
}

/// Everything running during the bench.
struct Rig {
    fake: Fake,
    haproxy: Haproxy,
    tollgate: Tollgate,
    tollgate_bedrock: Tollgate,
    pools: [Arc<Pool>; 5],
    specs: Vec<((Path, Mode), Arc<RequestSpec>)>,
}

impl Rig {
    fn addr(&self, path: Path) -> SocketAddr {
        match path {
            Path::Direct | Path::BedrockDirect => self.fake.addr,
            Path::Haproxy => self.haproxy.addr,
            Path::Tollgate => self.tollgate.addr,
            Path::TollgateBedrock => self.tollgate_bedrock.addr,
        }
    }

    fn pool(&self, path: Path) -> &Arc<Pool> {
        &self.pools[path as usize]
    }

    fn spec(&self, path: Path, mode: Mode) -> anyhow::Result<&Arc<RequestSpec>> {
        self.specs
            .iter()
            .find(|(k, _)| *k == (path, mode))
            .map(|(_, s)| s)
            .context("no request spec")
    }

    /// CPU ticks used so far by this process and the four servers.
    fn our_ticks(&self) -> u64 {
        [
            std::process::id(),
            self.fake.pid(),
            self.haproxy.pid(),
            self.tollgate.pid(),
            self.tollgate_bedrock.pid(),
        ]
        .into_iter()
        .filter_map(procs::cpu_ticks)
        .sum()
    }

    fn pid(&self, path: Path) -> Option<u32> {
        match path {
            Path::Direct | Path::BedrockDirect => None,
            Path::Haproxy => Some(self.haproxy.pid()),
            Path::Tollgate => Some(self.tollgate.pid()),
            Path::TollgateBedrock => Some(self.tollgate_bedrock.pid()),
        }
    }
}

/// Memory readings of one proxy, in kB.
#[derive(Default)]
struct Memory {
    idle: Option<u64>,
    peak_rate: Option<u64>,
    peak_max: Option<u64>,
    hwm: Option<u64>,
}

fn max_opt(a: Option<u64>, b: u64) -> Option<u64> {
    Some(a.map_or(b, |a| a.max(b)))
}

async fn run(o: Options, haproxy_bin: &FsPath) -> anyhow::Result<()> {
    let tollgate_bin = sibling("tollgate-proxy")?;
    let fake_bin = sibling("fake-anthropic")?;
    let root = workspace_root();
    let (sse_body, json_body) = bodies(&root)?;
    let bodies = Bodies {
        bedrock: bedrock_body(&sse_body)?,
        json: json_body,
        sse: sse_body,
    };
    let machine = Machine::read();
    let load_average = procs::load_average();

    let fake = Fake::start(&fake_bin, PROVIDER_KEY)?;
    let haproxy = Haproxy::start(haproxy_bin, fake.addr, o.haproxy_threads)?;
    let tollgate = Tollgate::start(
        &tollgate_bin,
        fake.addr,
        &Target::Anthropic {
            provider_key: PROVIDER_KEY,
        },
        VIRTUAL_KEY,
        o.tollgate_workers,
        o.tollgate_log.as_deref(),
    )?;
    let tollgate_bedrock = Tollgate::start(
        &tollgate_bin,
        fake.addr,
        &Target::Bedrock {
            access_key_id: AWS_KEY_ID,
            secret_access_key: AWS_SECRET,
            model: BEDROCK_MODEL,
        },
        VIRTUAL_KEY,
        o.tollgate_workers,
        o.tollgate_log.as_deref(),
    )?;
    let mut rig = Rig {
        pools: [
            Pool::new(fake.addr),
            Pool::new(haproxy.addr),
            Pool::new(tollgate.addr),
            Pool::new(fake.addr),
            Pool::new(tollgate_bedrock.addr),
        ],
        fake,
        haproxy,
        tollgate,
        tollgate_bedrock,
        specs: Vec::new(),
    };
    for path in Path::ALL {
        for mode in [Mode::Json, Mode::Sse] {
            let spec = spec(path, mode, rig.addr(path), &bodies)?;
            rig.specs.push(((path, mode), Arc::new(spec)));
        }
    }

    // One warm request through each proxy, then its idle RSS; then every other probe.
    let mut memory: [Memory; 5] = Default::default();
    for path in Path::ALL {
        check(path, Mode::Json, rig.addr(path), rig.spec(path, Mode::Json)?).await?;
        if let Some(pid) = rig.pid(path) {
            tokio::time::sleep(Duration::from_millis(200)).await;
            memory[path as usize].idle = status_kb(pid, "VmRSS");
        }
    }
    for path in Path::ALL {
        check(path, Mode::Sse, rig.addr(path), rig.spec(path, Mode::Sse)?).await?;
    }

    let header = header(&o, &machine, load_average, &rig, &root, &bodies);
    print!("{header}");
    flush();

    let top_rate = o.rates.iter().copied().fold(0.0, f64::max);
    let mut loads: Vec<Load> = o.rates.iter().map(|r| Load::Rate(*r)).collect();
    loads.push(Load::Max(o.concurrency));
    let mut cells = Vec::new();
    let slice = o.seconds / o.rounds as f64;
    for &mode in &o.modes {
        for &load in &loads {
            let watch_rss = match load {
                Load::Rate(r) => r == top_rate,
                Load::Max(_) => true,
            };
            for &path in &o.paths {
                let _ = run_load(&o, load, rig.pool(path), rig.spec(path, mode)?, o.warmup).await;
            }
            // Interleaved rounds, rotating the order, so that whatever else the machine does
            // meanwhile hits every path alike.
            let mut totals: Vec<Totals> = o.paths.iter().map(|_| Totals::default()).collect();
            for round in 0..o.rounds {
                for i in 0..o.paths.len() {
                    let at = (i + round) % o.paths.len();
                    let part = measure(&o, &rig, o.paths[at], mode, load, slice, watch_rss).await?;
                    totals[at].add(part);
                }
            }
            for (&path, mut t) in o.paths.iter().zip(totals) {
                if let Some(peak) = t.peak_rss {
                    let m = &mut memory[path as usize];
                    match load {
                        Load::Rate(_) => m.peak_rate = max_opt(m.peak_rate, peak),
                        Load::Max(_) => m.peak_max = max_opt(m.peak_max, peak),
                    }
                }
                t.outcome.sort();
                let f = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.3}"));
                eprintln!(
                    "  {:<4} {:<8} {:<16} {:>7.0} req/s  p50 {:>7} ms  p99 {:>7} ms  errors {} unsent {}  \
                     send lag p50 {} p99 {} ms",
                    mode.name(),
                    load.name(),
                    path.name(),
                    t.outcome.rps(),
                    f(t.outcome.percentile_ms(0.5)),
                    f(t.outcome.percentile_ms(0.99)),
                    t.outcome.errors,
                    t.outcome.not_sent,
                    f(t.outcome.send_lag_ms(0.5)),
                    f(t.outcome.send_lag_ms(0.99)),
                );
                let sent = t.outcome.ok() + t.outcome.errors;
                let per_request = |ticks: Option<u64>| {
                    (sent > 0)
                        .then(|| ticks.map(|t| t as f64 * 10_000.0 / sent as f64))
                        .flatten()
                };
                let wall_ticks = t.wall.as_secs_f64() * 100.0;
                cells.push(Cell {
                    mode,
                    load,
                    path,
                    proxy_cpu_us: per_request(t.proxy_ticks),
                    fake_cpu_us: per_request(t.fake_ticks),
                    ours_pct: (wall_ticks > 0.0).then(|| 100.0 * t.our_ticks as f64 / wall_ticks),
                    noise_pct: (wall_ticks > 0.0).then(|| 100.0 * t.other_ticks as f64 / wall_ticks),
                    outcome: t.outcome,
                });
            }
        }
    }
    for path in [Path::Haproxy, Path::Tollgate, Path::TollgateBedrock] {
        if let Some(pid) = rig.pid(path) {
            memory[path as usize].hwm = status_kb(pid, "VmHWM");
        }
    }
    let fake_hwm = status_kb(rig.fake.pid(), "VmHWM");
    println!("{}", report::table(&cells));
    let comparison = report::bedrock_comparison(&cells);
    if !comparison.is_empty() {
        println!("{comparison}");
    }
    print!("{}", footer(&cells, &memory, fake_hwm, top_rate, &rig));
    flush();
    Ok(())
}

/// What one path accumulated over the rounds of a cell.
#[derive(Default)]
struct Totals {
    outcome: Outcome,
    /// CPU ticks of the proxy (none for `direct`).
    proxy_ticks: Option<u64>,
    /// CPU ticks of the fake upstream.
    fake_ticks: Option<u64>,
    /// CPU ticks of the bench, the fake and both proxies.
    our_ticks: u64,
    /// CPU ticks of other processes on the machine, plus steal.
    other_ticks: u64,
    /// Time measured.
    wall: Duration,
    /// Largest VmRSS of the proxy, when sampled.
    peak_rss: Option<u64>,
}

impl Totals {
    fn add(&mut self, part: Totals) {
        self.outcome.absorb(part.outcome);
        let sum = |a: Option<u64>, b: Option<u64>| match (a, b) {
            (Some(a), Some(b)) => Some(a + b),
            (a, b) => a.or(b),
        };
        self.proxy_ticks = sum(self.proxy_ticks, part.proxy_ticks);
        self.fake_ticks = sum(self.fake_ticks, part.fake_ticks);
        self.our_ticks += part.our_ticks;
        self.other_ticks += part.other_ticks;
        self.wall += part.wall;
        self.peak_rss = match (self.peak_rss, part.peak_rss) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
    }
}

/// Runs one slice of a cell on one path, with CPU accounting and, if asked, RSS sampling.
async fn measure(
    o: &Options,
    rig: &Rig,
    path: Path,
    mode: Mode,
    load: Load,
    seconds: f64,
    watch_rss: bool,
) -> anyhow::Result<Totals> {
    let (pool, spec) = (rig.pool(path), rig.spec(path, mode)?);
    let sampler = rig
        .pid(path)
        .filter(|_| watch_rss)
        .map(|pid| RssSampler::start(pid, RSS_EVERY));
    let proxy0 = rig.pid(path).and_then(procs::cpu_ticks);
    let fake0 = procs::cpu_ticks(rig.fake.pid());
    let machine0 = procs::machine_ticks();
    let ours0 = rig.our_ticks();
    let wall = std::time::Instant::now();

    let outcome = run_load(o, load, pool, spec, seconds).await;

    let wall = wall.elapsed();
    let delta = |before: Option<u64>, after: Option<u64>| after?.checked_sub(before?);
    let proxy_ticks = delta(proxy0, rig.pid(path).and_then(procs::cpu_ticks));
    let fake_ticks = delta(fake0, procs::cpu_ticks(rig.fake.pid()));
    let ours = rig.our_ticks().saturating_sub(ours0);
    let other_ticks = match (machine0, procs::machine_ticks()) {
        (Some((busy0, steal0)), Some((busy1, steal1))) => {
            busy1.saturating_sub(busy0).saturating_sub(ours) + steal1.saturating_sub(steal0)
        }
        _ => 0,
    };
    Ok(Totals {
        outcome,
        proxy_ticks,
        fake_ticks,
        our_ticks: ours,
        other_ticks,
        wall,
        peak_rss: sampler.map(RssSampler::stop),
    })
}

/// One cell (or warm-up) of the given load shape.
async fn run_load(
    o: &Options,
    load: Load,
    pool: &Arc<Pool>,
    spec: &Arc<RequestSpec>,
    seconds: f64,
) -> Outcome {
    let duration = Duration::from_secs_f64(seconds);
    let grace = Duration::from_secs_f64(o.grace);
    if duration.is_zero() {
        return Outcome::default();
    }
    match load {
        Load::Rate(rate) => load::open_loop(pool, spec, rate, duration, o.connections, grace).await,
        Load::Max(connections) => load::closed_loop(pool, spec, duration, connections, grace).await,
    }
}

fn flush() {
    let _ = std::io::stdout().flush();
}

/// Machine, versions and method.
fn header(
    o: &Options,
    m: &Machine,
    load_average: Option<f64>,
    rig: &Rig,
    root: &FsPath,
    bodies: &Bodies,
) -> String {
    let git = procs::command_first_line(
        FsPath::new("git"),
        &["-C", &root.to_string_lossy(), "describe", "--always", "--dirty"],
    )
    .unwrap_or_else(|| "unknown".into());
    let rates: Vec<String> = o.rates.iter().map(|r| format!("{r:.0}")).collect();
    format!(
        "Tollgate gateway benchmark (bench-gateway, tollgate-tests {pkg}, commit {git})\n\
         machine:   {cpus} CPUs (nproc), {model}, {mem} MiB RAM, Linux {kernel}, load average {load} at start\n\
         \x20          the load generator (1 thread), fake-anthropic, HAProxy and tollgate-proxy all share\n\
         \x20          these {cpus} CPUs: absolute numbers include that contention; compare paths, not machines\n\
         upstream:  fake-anthropic --no-record (separate process, tokio multi-thread runtime)\n\
         haproxy:   {haproxy}\n\
         \x20          mode http, plain reverse proxy, http-reuse always, nbthread {threads}, no logging\n\
         tollgate:  {tollgate}; --workers {workers}, 1 key, 1 anthropic provider, route claude-* passthrough,\n\
         \x20          {logging}\n\
         bedrock:   bedrock-direct = the fake's Bedrock paths, POST /model/{{id}}/invoke | /invoke-with-response-stream,\n\
         \x20          body as tollgate sends it ({bedrock_len} B: no model/stream, anthropic_version,\n\
         \x20          anthropic_beta), static dummy SigV4 header (the fake checks its shape only);\n\
         \x20          tollgate-bedrock = a 2nd tollgate-proxy, same settings, 1 bedrock provider (static AWS\n\
         \x20          keys, SigV4 per request), route claude-* -> {BEDROCK_MODEL},\n\
         \x20          sent the same requests as tollgate; SSE = AWS event stream transcoded to SSE\n\
         body:      {FIXTURE} ({body_len} B), as JSON (\"stream\": false)\n\
         \x20          and SSE (\"stream\": true, whole stream read); POST /v1/messages?beta=true with\n\
         \x20          Claude Code's headers\n\
         loads:     open loop at {rates} req/s over <= {conns} keep-alive connections, latency from the\n\
         \x20          scheduled send time (no coordinated omission); closed loop with {conc} connections\n\
         cells:     {secs} s measured per path, in {rounds} rounds interleaving the paths, after {warm} s warm-up\n\
         columns:   unsent = scheduled but not sent within {grace} s after the schedule\n\
         \x20          +p50/+p99 = latency added over direct (tollgate-bedrock: over bedrock-direct) at the\n\
         \x20          same mode and load\n\
         \x20          tg/hap = tollgate-added / haproxy-added (target <= {target}x; info only for max cells)\n\
         \x20          proxy/fake cpu = CPU time per request of the proxy and of the fake\n\
         \x20          ours = CPU used by the bench, the fake and the proxies; noise = CPU used meanwhile by\n\
         \x20          other processes plus hypervisor steal; both in % of one CPU (ours + noise near {full}%\n\
         \x20          = CPU-bound; high noise = unreliable cell)\n\n",
        pkg = env!("CARGO_PKG_VERSION"),
        body_len = bodies.sse.len(),
        bedrock_len = bodies.bedrock.len(),
        cpus = m.cpus,
        model = m.cpu_model,
        mem = m.mem_mib,
        kernel = m.kernel,
        load = load_average.map_or_else(|| "?".into(), |l| format!("{l:.2}")),
        haproxy = rig.haproxy.version,
        threads = o.haproxy_threads,
        tollgate = rig.tollgate.version,
        workers = o.tollgate_workers,
        logging = match &o.tollgate_log {
            None => format!(
                "default info JSON logging (one line per request) to a file in {}",
                std::env::temp_dir().display()
            ),
            Some(level) => format!("TOLLGATE_LOG={level} (NOT the production default), to a file"),
        },
        rates = rates.join(" and "),
        conns = o.connections,
        conc = o.concurrency,
        secs = o.seconds,
        rounds = o.rounds,
        full = 100 * m.cpus,
        warm = o.warmup,
        grace = o.grace,
        target = report::RATIO_TARGET,
    )
}

/// Memory table, targets and the tollgate log volume.
fn footer(cells: &[Cell], memory: &[Memory; 5], fake_hwm: Option<u64>, top_rate: f64, rig: &Rig) -> String {
    use report::mib_cell;
    let mut out = String::new();
    out.push_str(&format!(
        "Memory (RSS, MiB)          {:>8} {:>15} {:>10} {:>12}\n",
        "idle",
        format!("peak@{top_rate:.0}/s"),
        "peak@max",
        "VmHWM (run)"
    ));
    for (path, name) in [
        (Path::Tollgate, "tollgate-proxy"),
        (Path::TollgateBedrock, "tollgate-proxy (bedrock)"),
        (Path::Haproxy, "haproxy"),
    ] {
        let m = &memory[path as usize];
        out.push_str(&format!(
            "  {name:<24} {:>8} {:>15} {:>10} {:>12}\n",
            mib_cell(m.idle),
            mib_cell(m.peak_rate),
            mib_cell(m.peak_max),
            mib_cell(m.hwm)
        ));
    }
    out.push_str(&format!(
        "  {:<24} {:>8} {:>15} {:>10} {:>12}\n",
        "fake-anthropic",
        "-",
        "-",
        "-",
        mib_cell(fake_hwm)
    ));
    out.push_str("  (idle: VmRSS after start and one request; peaks: VmRSS sampled every 20 ms)\n\n");

    let (passed, total, failures) = report::ratio_verdicts(cells);
    out.push_str("Targets\n");
    out.push_str(&format!(
        "  {:<44} {passed:>3} of {total} cells   {}\n",
        format!("added latency tollgate/haproxy <= {}x", report::RATIO_TARGET),
        if passed == total { "PASS" } else { "FAIL" }
    ));
    for f in failures {
        out.push_str(&format!("      {f}\n"));
    }
    for (path, name) in [
        (Path::Tollgate, "tollgate-proxy"),
        (Path::TollgateBedrock, "tollgate-bedrock"),
    ] {
        let m = &memory[path as usize];
        out.push_str(&report::target_line(
            &format!("{name} idle RSS"),
            m.idle,
            IDLE_RSS_TARGET_MIB,
        ));
        out.push('\n');
        out.push_str(&report::target_line(
            &format!("{name} peak RSS at {top_rate:.0} req/s"),
            m.peak_rate,
            PEAK_RSS_TARGET_MIB,
        ));
        out.push('\n');
    }

    for (tollgate, name) in [
        (&rig.tollgate, "tollgate-proxy"),
        (&rig.tollgate_bedrock, "tollgate-proxy (bedrock)"),
    ] {
        let logs = tollgate.logs();
        let lines = logs.lines().count();
        let completed: Vec<&str> = logs
            .lines()
            .filter(|l| l.contains(r#""message":"request completed""#))
            .collect();
        let per_request =
            completed.iter().map(|l| l.len() + 1).sum::<usize>() as f64 / completed.len().max(1) as f64;
        let noisy = logs
            .lines()
            .filter(|l| l.contains(r#""level":"WARN""#) || l.contains(r#""level":"ERROR""#))
            .count();
        out.push_str(&format!(
            "\n{name} log: {lines} lines ({:.1} MiB) for the whole run, warm-ups included; {} \"request completed\"\n\
             \x20 lines of {per_request:.0} B each on average; {noisy} WARN/ERROR lines\n",
            logs.len() as f64 / (1024.0 * 1024.0),
            completed.len(),
        ));
    }
    out
}
