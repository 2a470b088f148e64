//! `tollgate-proxy`: the gateway binary.

use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use tollgate_dataplane::audit::{self, Audit};
use tollgate_dataplane::ledger::Ledger;
use tollgate_dataplane::ledger::memory::MemoryLedger;
use tollgate_dataplane::ledger::outbox::{self, Outbox};
use tollgate_dataplane::ledger::redis::RedisLedger;
use tollgate_dataplane::metrics::Metrics;
use tollgate_dataplane::policy::{self, PolicyStore, ReloadOutcome};
use tollgate_dataplane::pricing::PriceTable;
use tollgate_dataplane::server::admin::{Admin, AdminApi};
use tollgate_dataplane::server::{self, admission::Ledgers, proxy::Gateway};
use tollgate_dataplane::upstream::build_client;

#[derive(Parser)]
#[command(
    name = "tollgate-proxy",
    version,
    about = "Governance gateway for AI coding agents"
)]
#[command(args_conflicts_with_subcommands = true)]
// A flag given twice takes its last value, so settings appended to a fixed command line (an
// injected sidecar's extra arguments) override it.
#[command(args_override_self = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway (the default).
    Serve(ServeArgs),
    /// Validate a policy file or directory offline, then exit.
    Check {
        /// Policy file or directory.
        path: PathBuf,
        /// Price table in LiteLLM's JSON shape (default: the built-in table).
        #[arg(long)]
        prices: Option<PathBuf>,
    },
    /// Print the policy document's JSON Schema.
    Schema,
    /// Print the SHA-256 of a virtual key read from standard input (for `keys[].sha256`).
    HashKey,
    /// Generate a new virtual key and print it with its SHA-256.
    Keygen,
    /// Audit trail tools: verify a chain, generate a checkpoint key.
    #[command(subcommand)]
    Audit(audit::cli::AuditCommand),
}

#[derive(Args, Clone)]
struct ServeArgs {
    /// Policy file or directory (a mounted ConfigMap).
    #[arg(long, env = "TOLLGATE_POLICY", default_value = "examples/policy.yaml")]
    policy: PathBuf,
    /// Address of the proxy listener; `[::]:PORT` is every address of both IPv4 and IPv6.
    #[arg(long, env = "TOLLGATE_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Address of the admin listener (health, readiness, metrics); `[::]:PORT` is every
    /// address of both IPv4 and IPv6 (what the kubelet's probes need on any cluster).
    #[arg(long, env = "TOLLGATE_ADMIN_LISTEN", default_value = "127.0.0.1:9090")]
    admin_listen: SocketAddr,
    /// Who may use the admin API (`/admin/spend`: every budget and its owner) on the admin
    /// listener: `loopback` peers only (the pod itself), `all` (behind a NetworkPolicy: the
    /// chart's gateway, whose spend the operator reads) or `off`. `/metrics` and the probes
    /// answer every peer in any case.
    #[arg(long, env = "TOLLGATE_ADMIN_API", value_enum, default_value = "loopback")]
    admin_api: AdminApi,
    /// Price table in LiteLLM's JSON shape (default: the built-in table).
    #[arg(long, env = "TOLLGATE_PRICES")]
    prices: Option<PathBuf>,
    /// Largest accepted request body in bytes.
    #[arg(long, default_value_t = server::proxy::DEFAULT_MAX_BODY_BYTES)]
    max_body_bytes: usize,
    /// Where spend and rate counters live: `file:PATH` (embedded, persisted), `memory`
    /// (embedded, forgotten on exit) or `redis://HOST:PORT` (shared by replicas).
    #[arg(long, env = "TOLLGATE_LEDGER", default_value = "file:tollgate-ledger.journal")]
    ledger: String,
    /// File persisting settlements the ledger did not take (replayed when it answers again).
    /// Default: `PATH.outbox` beside a `file:PATH` ledger's journal; in memory otherwise.
    #[arg(long, env = "TOLLGATE_LEDGER_OUTBOX")]
    ledger_outbox: Option<PathBuf>,
    /// Runtime worker threads (default: available CPUs).
    #[arg(long, env = "TOLLGATE_WORKERS")]
    workers: Option<usize>,
    /// Log format.
    #[arg(long, env = "TOLLGATE_LOG_FORMAT", default_value = "json", value_parser = ["json", "text"])]
    log_format: String,
    /// Audit spool directory; audit records are written (and shipped to the policy's sinks)
    /// only when it is set.
    #[arg(long, env = "TOLLGATE_AUDIT_DIR")]
    audit_dir: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        None => serve(cli.serve),
        Some(Command::Serve(args)) => serve(args),
        Some(Command::Check { path, prices }) => check(&path, prices.as_deref()),
        Some(Command::Schema) => {
            println!("{}", serde_json::to_string_pretty(&policy::json_schema())?);
            Ok(())
        }
        Some(Command::HashKey) => {
            let mut key = String::new();
            std::io::stdin().read_to_string(&mut key)?;
            println!("{}", hex::encode(policy::hash_key(key.trim())));
            Ok(())
        }
        Some(Command::Audit(cmd)) => match audit::cli::run(cmd)? {
            0 => Ok(()),
            code => std::process::exit(code),
        },
        Some(Command::Keygen) => {
            let key = generate_key()?;
            println!("key:    {key}\nsha256: {}", hex::encode(policy::hash_key(&key)));
            Ok(())
        }
    }
}

/// A new virtual key: `tg_` and 32 random bytes in hex (256 bits from the OS CSPRNG).
fn generate_key() -> anyhow::Result<String> {
    let mut bytes = [0u8; 32];
    rustls::crypto::ring::default_provider()
        .secure_random
        .fill(&mut bytes)
        .map_err(|_| anyhow::anyhow!("the system random generator failed"))?;
    Ok(format!("tg_{}", hex::encode(bytes)))
}

fn load_prices(path: Option<&Path>) -> anyhow::Result<PriceTable> {
    let Some(path) = path else {
        return Ok(PriceTable::builtin());
    };
    let bytes = std::fs::read(path).with_context(|| format!("reading price table {}", path.display()))?;
    // LiteLLM's full table has entries this proxy cannot price exactly (float artefacts,
    // non-token modes): skip those with a warning rather than refuse to start.
    let (table, skipped) = PriceTable::from_litellm_json_lenient(&bytes)
        .with_context(|| format!("parsing price table {}", path.display()))?;
    for e in &skipped {
        tracing::warn!(error = %e, "price entry skipped");
    }
    Ok(table)
}

fn check(path: &Path, prices: Option<&Path>) -> anyhow::Result<()> {
    let prices = load_prices(prices)?;
    match policy::check(path, &prices) {
        Ok(s) => {
            println!(
                "{}: valid (revision {}, {} keys, {} providers)",
                path.display(),
                &s.revision[..12],
                s.key_count(),
                s.providers().len()
            );
            for p in s.providers() {
                if let Some(e) = p.unusable() {
                    println!("warning: provider {}: {e}", p.id);
                }
            }
            Ok(())
        }
        Err(e) => bail!("{}: {e:#}", path.display()),
    }
}

fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TOLLGATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == "json" {
        builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .init();
    } else {
        builder.init();
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    init_logging(&args.log_format);
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = args.workers {
        rt.worker_threads(n.max(1));
    }
    rt.enable_all().build()?.block_on(run(args))
}

async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let prices = load_prices(args.prices.as_deref())?;
    let metrics = Arc::new(Metrics::new());
    let (store, first) = PolicyStore::open(&args.policy, prices);
    record_reload(&metrics, &first, &store, None);
    let (ledger, journal) = open_ledger(&args.ledger)?;
    let client = build_client()?;
    // OpenTelemetry traces, when the OTEL_* environment asks for them (off by default).
    let telemetry = tollgate_dataplane::telemetry::init(&client)?;
    let audit = audit::cli::open_for(args.audit_dir.as_deref(), &store, &first, &metrics, &client)?;
    let proxy = server::listen::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let admin = server::listen::bind(args.admin_listen)
        .await
        .with_context(|| format!("binding {}", args.admin_listen))?;
    tracing::info!(
        listen = %proxy.local_addr()?,
        admin = %admin.local_addr()?,
        policy = %args.policy.display(),
        "tollgate-proxy listening"
    );
    let watch_metrics = metrics.clone();
    let watch_store = store.clone();
    let watch_audit = audit.clone();
    let watcher = tokio::spawn(store.clone().watch(
        Duration::from_millis(100),
        Duration::from_secs(5),
        Duration::from_secs(60),
        move |outcome, _| record_reload(&watch_metrics, outcome, &watch_store, watch_audit.as_ref()),
    ));
    let syncer = journal.clone().map(|j| tokio::spawn(sync_journal(j)));
    let outbox = Arc::new(open_outbox(&args, &metrics)?);
    let replayer = tokio::spawn(outbox.clone().run(ledger.clone()));
    let ledgers = Ledgers {
        primary: ledger.clone(),
        local: Arc::new(MemoryLedger::ephemeral()),
        outbox: outbox.clone(),
    };
    let gateway = Arc::new(
        Gateway::new(
            store.clone(),
            client,
            metrics.clone(),
            ledgers,
            args.max_body_bytes,
        )
        .with_audit(audit.clone()),
    );
    let admin_state = Arc::new(Admin {
        store,
        metrics,
        ledger,
        api: args.admin_api,
    });
    let admin_task = tokio::spawn(server::serve(
        admin,
        move |req| admin_state.clone().handle(req),
        shutdown_signal(),
    ));
    server::serve_proxy(proxy, gateway, shutdown_signal()).await;
    watcher.abort();
    admin_task.abort();
    replayer.abort();
    if !outbox.is_empty() {
        tracing::warn!(
            waiting = outbox.len(),
            persisted = args.ledger_outbox.is_some() || args.ledger.starts_with("file:"),
            "stopping with settlements in the ledger outbox"
        );
    }
    if let Some(s) = syncer {
        s.abort();
    }
    if let Some(j) = &journal {
        if let Err(e) = j.sync() {
            tracing::error!(error = %e, "final ledger journal sync failed");
        }
    }
    if let Some(a) = &audit {
        a.shutdown(Duration::from_secs(5)).await;
    }
    telemetry.shutdown().await;
    tracing::info!("tollgate-proxy stopped");
    Ok(())
}

type OpenedLedger = (Arc<dyn Ledger>, Option<Arc<MemoryLedger>>);

/// Opens the ledger named by `--ledger`.
fn open_ledger(spec: &str) -> anyhow::Result<OpenedLedger> {
    let now = jiff::Timestamp::now().as_millisecond();
    if spec == "memory" {
        return Ok((Arc::new(MemoryLedger::ephemeral()), None));
    }
    if let Some(path) = spec.strip_prefix("file:") {
        let l = Arc::new(
            MemoryLedger::open(Path::new(path), now)
                .with_context(|| format!("opening ledger journal {path}"))?,
        );
        return Ok((l.clone(), Some(l)));
    }
    if spec.starts_with("redis://") || spec.starts_with("rediss://") {
        let prefix = std::env::var("TOLLGATE_REDIS_PREFIX").unwrap_or_else(|_| "tollgate:".into());
        let l = RedisLedger::connect(spec, &prefix).context("configuring the Redis ledger")?;
        return Ok((Arc::new(l), None));
    }
    bail!("--ledger: expected file:PATH, memory or redis://HOST:PORT")
}

/// The settlement outbox: persisted at `--ledger-outbox`, or beside a `file:` ledger's journal.
fn open_outbox(args: &ServeArgs, metrics: &Metrics) -> anyhow::Result<Outbox> {
    let path = args.ledger_outbox.clone().or_else(|| {
        args.ledger
            .strip_prefix("file:")
            .map(|p| PathBuf::from(format!("{p}.outbox")))
    });
    let m = metrics.outbox().clone();
    match path {
        Some(p) => Outbox::open(&p, outbox::DEFAULT_CAPACITY, m)
            .with_context(|| format!("opening the ledger outbox {}", p.display())),
        None => Ok(Outbox::memory(outbox::DEFAULT_CAPACITY, m)),
    }
}

/// Fsyncs the embedded ledger's journal every second.
async fn sync_journal(journal: Arc<MemoryLedger>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let j = journal.clone();
        if let Ok(Err(e)) = tokio::task::spawn_blocking(move || j.sync()).await {
            tracing::error!(error = %e, "ledger journal sync failed");
        }
    }
}

fn record_reload(metrics: &Metrics, outcome: &ReloadOutcome, store: &PolicyStore, audit: Option<&Audit>) {
    if let Some(a) = audit {
        a.reloaded(outcome, store);
    }
    let result = match outcome {
        ReloadOutcome::Applied { .. } => "applied",
        ReloadOutcome::Rejected { .. } => "rejected",
        ReloadOutcome::Unchanged => return,
    };
    let live = store.snapshot();
    metrics.reload(
        result,
        store.status().last_reload_ok,
        live.as_ref().map_or(0, |s| s.key_count()),
    );
    if let Some(s) = live {
        metrics.live_policy(&s);
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => return ctrl_c.await.unwrap_or(()),
        };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
