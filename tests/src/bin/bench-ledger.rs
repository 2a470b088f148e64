//! `bench-ledger`: admissions and settlements per second through the Redis ledger, beside the
//! embedded [`MemoryLedger`] as a baseline, with 1, 8 and 64 concurrent tasks.
//!
//! ```text
//! bench-ledger [--seconds S] [--tasks 1,8,64] [--redis-url URL]
//! ```
//!
//! Each task loops: admit one request (4 budgets: org, team, user, key; 6 rate limits:
//! requests, tokens and concurrency per key and per team; every counter shared by all tasks,
//! as one team's traffic is), then settle it. Without `--redis-url` a `redis-server` is
//! started on a free loopback port (the Debian package). Prints a table: requests/s (one
//! admission plus one settlement each), ledger ops/s (both counted), and admission and
//! settlement latency percentiles in microseconds.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use tollgate_dataplane::ledger::memory::MemoryLedger;
use tollgate_dataplane::ledger::redis::RedisLedger;
use tollgate_dataplane::ledger::{Admission, BudgetCharge, Ledger, RateCharge, RateKind, Settlement};
use tollgate_tests::redis_server::RedisServer;

const USAGE: &str = "\
usage: bench-ledger [--seconds S] [--tasks 1,8,64] [--redis-url URL]

  --seconds S      measured time per row (default 3; plus 0.5 s warm-up)
  --tasks LIST     concurrent tasks per row (default 1,8,64)
  --redis-url URL  an existing Redis (default: start redis-server on a free loopback port)";

struct Args {
    seconds: f64,
    tasks: Vec<usize>,
    redis_url: Option<String>,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        seconds: 3.0,
        tasks: vec![1, 8, 64],
        redis_url: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--seconds" => args.seconds = value()?.parse().context("--seconds")?,
            "--tasks" => {
                args.tasks = value()?
                    .split(',')
                    .map(|t| t.trim().parse::<usize>())
                    .collect::<Result<_, _>>()
                    .context("--tasks")?
            }
            "--redis-url" => args.redis_url = Some(value()?),
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    if args.tasks.is_empty() || args.tasks.contains(&0) || args.seconds <= 0.0 {
        bail!("--tasks must be positive counts and --seconds positive\n{USAGE}");
    }
    Ok(args)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// One request of team `platform`, user `alice`, key `k1`: every counter has ample room, so
/// the benchmark measures the ledger, not refusals.
fn request(id: String, now: i64) -> Admission {
    let day_end = now + 86_400_000;
    let minute_end = now - now % 60_000 + 60_000;
    let budgets = ["b:org:acme", "b:team:platform", "b:user:alice", "b:key:k1"]
        .into_iter()
        .map(|c| BudgetCharge {
            counter: c.to_owned(),
            limit_micro_usd: 1_000_000_000_000_000,
            expires_at_ms: day_end,
        })
        .collect();
    let rate = |counter: &str, kind, amount| RateCharge {
        counter: format!("{counter}:{}", minute_end / 60_000),
        kind,
        limit: 1_000_000_000_000,
        amount,
        window_end_ms: minute_end,
    };
    let conc = |counter: &str| RateCharge {
        counter: counter.to_owned(),
        kind: RateKind::Concurrent,
        limit: 1_000_000,
        amount: 1,
        window_end_ms: 0,
    };
    Admission {
        request_id: id,
        estimate_micro_usd: 5_000,
        budgets,
        rates: vec![
            rate("r:key:k1:rpm", RateKind::Requests, 1),
            rate("r:key:k1:tpm", RateKind::Tokens, 1_200),
            conc("c:key:k1"),
            rate("r:team:platform:rpm", RateKind::Requests, 1),
            rate("r:team:platform:tpm", RateKind::Tokens, 1_200),
            conc("c:team:platform"),
        ],
        now_ms: now,
        lease_ms: 600_000,
    }
}

struct Row {
    backend: &'static str,
    tasks: usize,
    requests: u64,
    elapsed: Duration,
    admit_us: Vec<u32>,
    settle_us: Vec<u32>,
    errors: u64,
}

struct TaskResult {
    requests: u64,
    admit_us: Vec<u32>,
    settle_us: Vec<u32>,
    errors: u64,
}

async fn run_row<L: Ledger>(
    backend: &'static str,
    ledger: Arc<L>,
    tasks: usize,
    seconds: f64,
) -> anyhow::Result<Row> {
    let warmup = Duration::from_millis(500);
    let measured = Duration::from_secs_f64(seconds);
    let start = Instant::now();
    let measure_from = start + warmup;
    let stop_at = measure_from + measured;
    let handles: Vec<_> = (0..tasks)
        .map(|t| {
            let l = ledger.clone();
            tokio::spawn(async move {
                let mut r = TaskResult {
                    requests: 0,
                    admit_us: Vec::new(),
                    settle_us: Vec::new(),
                    errors: 0,
                };
                let mut i: u64 = 0;
                loop {
                    let now = Instant::now();
                    if now >= stop_at {
                        break;
                    }
                    i += 1;
                    let a = request(format!("{backend}-{tasks}-{t}-{i}"), now_ms());
                    let t0 = Instant::now();
                    let admitted = l.admit(&a).await;
                    let t1 = Instant::now();
                    let ok = matches!(admitted, Ok(Ok(())));
                    let settled = if ok {
                        l.settle(
                            &a,
                            Settlement {
                                actual_micro_usd: 3_000,
                                actual_tokens: 900,
                            },
                        )
                        .await
                        .is_ok()
                    } else {
                        false
                    };
                    let t2 = Instant::now();
                    if t0 >= measure_from && t2 <= stop_at {
                        if ok && settled {
                            r.requests += 1;
                            r.admit_us
                                .push((t1 - t0).as_micros().min(u32::MAX as u128) as u32);
                            r.settle_us
                                .push((t2 - t1).as_micros().min(u32::MAX as u128) as u32);
                        } else {
                            r.errors += 1;
                        }
                    }
                }
                r
            })
        })
        .collect();
    let mut row = Row {
        backend,
        tasks,
        requests: 0,
        elapsed: measured,
        admit_us: Vec::new(),
        settle_us: Vec::new(),
        errors: 0,
    };
    for h in handles {
        let r = h.await.context("benchmark task panicked")?;
        row.requests += r.requests;
        row.errors += r.errors;
        row.admit_us.extend(r.admit_us);
        row.settle_us.extend(r.settle_us);
    }
    row.admit_us.sort_unstable();
    row.settle_us.sort_unstable();
    Ok(row)
}

fn pct(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn print_table(rows: &[Row]) {
    println!(
        "{:<8} {:>6} {:>12} {:>14} {:>10} {:>10} {:>11} {:>7}",
        "backend", "tasks", "requests/s", "ledger ops/s", "admit p50", "admit p99", "settle p50", "errors"
    );
    for r in rows {
        let secs = r.elapsed.as_secs_f64();
        let rps = r.requests as f64 / secs;
        println!(
            "{:<8} {:>6} {:>12.0} {:>14.0} {:>8}µs {:>8}µs {:>9}µs {:>7}",
            r.backend,
            r.tasks,
            rps,
            2.0 * rps,
            pct(&r.admit_us, 0.50),
            pct(&r.admit_us, 0.99),
            pct(&r.settle_us, 0.50),
            r.errors
        );
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let (_server, url) = match &args.redis_url {
        Some(u) => (None, u.clone()),
        None => {
            let s =
                RedisServer::start().context("starting redis-server (apt-get install -y redis-server)")?;
            let url = s.url();
            (Some(s), url)
        }
    };
    let version = redis_version(_server.as_ref());
    println!(
        "bench-ledger: {} s per row after 0.5 s warm-up; 4 budgets + 6 rate limits per request; \
         {} CPUs; redis {}",
        args.seconds,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        version
    );
    let mut rows = Vec::new();
    for &tasks in &args.tasks {
        let memory = Arc::new(MemoryLedger::ephemeral());
        rows.push(run_row("memory", memory, tasks, args.seconds).await?);
        let redis = Arc::new(
            RedisLedger::connect(&url, &format!("bench:{tasks}:{}:", now_ms()))
                .map_err(|e| anyhow::anyhow!("{e}"))?,
        );
        redis.ping().await.map_err(|e| anyhow::anyhow!("{e}"))?;
        rows.push(run_row("redis", redis, tasks, args.seconds).await?);
    }
    print_table(&rows);
    Ok(())
}

fn redis_version(server: Option<&RedisServer>) -> String {
    let Some(s) = server else {
        return "(external)".to_owned();
    };
    s.command(&["INFO", "server"])
        .ok()
        .and_then(|r| r.as_text())
        .and_then(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("redis_version:").map(|v| v.trim().to_owned()))
        })
        .unwrap_or_else(|| "?".to_owned())
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("bench-ledger: {e:#}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bench-ledger: tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench-ledger: {e:#}");
            ExitCode::FAILURE
        }
    }
}
