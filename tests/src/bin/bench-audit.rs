//! `bench-audit`: what the audit trail costs.
//!
//! ```text
//! bench-audit [--records N] [--seconds S] [--rounds K] [--rate R]
//! ```
//!
//! 1. Spool throughput: `N` `model_request`-sized events pushed from 4 threads through the
//!    bounded queue into the writer, until all are written; with fsync after every batch
//!    (group commit, the default) and without fsync; then the rate a webhook sink ships them
//!    to the in-process fake receiver.
//! 2. The proxy's added latency: two `tollgate-proxy` processes (audit off; audit on with
//!    signed checkpoints and a webhook sink) in front of one `fake-anthropic --no-record`, driven
//!    alternately with the Claude Code fixture (JSON and SSE) at a fixed open-loop rate by the
//!    load generator of `bench-gateway` (`tests/src/bench/load.rs`); p50/p99 and the difference.
//!
//! `tollgate-proxy` and `fake-anthropic` are found next to this executable
//! (`cargo build --release -p tollgate-dataplane -p tollgate-tests`).

#[allow(dead_code)]
#[path = "../bench/load.rs"]
mod load;
#[allow(dead_code)]
#[path = "../bench/procs.rs"]
mod procs;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Uri};
use prometheus_client::registry::Registry;
use serde_json::json;
use tollgate_dataplane::audit::{Audit, AuditMetrics, Event};
use tollgate_dataplane::policy::document::{AuditBatch, AuditConfig, AuditSink, AuditSpool, FsyncPolicy};
use tollgate_dataplane::upstream::build_client;
use tollgate_tests::harness::Proxy;
use tollgate_tests::policy::{KEY_ALICE, PROVIDER_KEY, PROVIDER_KEY_ENV, standard_policy};
use tollgate_tests::sinks::{Format, Receiver};

use load::{Outcome, Pool, RequestSpec};

const FIXTURE: &str = "tests/fixtures/messages-request-claude-code.json";

struct Args {
    records: usize,
    seconds: u64,
    rounds: u64,
    rate: f64,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut a = Args {
        records: 200_000,
        seconds: 6,
        rounds: 3,
        rate: 200.0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--records" => a.records = value()?.parse()?,
            "--seconds" => a.seconds = value()?.parse()?,
            "--rounds" => a.rounds = value()?.parse()?,
            "--rate" => a.rate = value()?.parse()?,
            _ => bail!("usage: bench-audit [--records N] [--seconds S] [--rounds K] [--rate R]"),
        }
    }
    Ok(a)
}

fn sibling(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let path = exe.parent().context("no directory")?.join(name);
    if !path.is_file() {
        bail!(
            "{} not found: cargo build --release -p tollgate-dataplane -p tollgate-tests",
            path.display()
        );
    }
    Ok(path)
}

fn event(i: usize) -> Event {
    Event::now(
        "model_request",
        &json!({
            "request_id": format!("req_tg_{i:024x}"), "key_id": "alice", "user": "alice@acme.example",
            "team": "platform", "session_id": "5f0c9a0e-6a3b-4a53-8a8e-0f5d8c2b7c11",
            "model": "claude-sonnet-4-5", "upstream_model": "claude-sonnet-4-5", "provider": "anthropic",
            "status": 200, "outcome": "ended", "complete": true,
            "tokens": {"input": 1234, "output": 456, "cache_write_5m": 0, "cache_write_1h": 0, "cache_read": 20000},
            "cost_micro_usd": 12345, "latency_ms": 2345, "ttfb_ms": 456, "capture": "none",
        }),
    )
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>()
        + 0.0
}

/// Spool throughput; returns (records/s, bytes per record, fsyncs, records shipped per second).
async fn spool(
    records: usize,
    fsync: FsyncPolicy,
    ship: bool,
) -> anyhow::Result<(f64, f64, f64, Option<f64>)> {
    let dir = tempfile::tempdir()?;
    let rx = Receiver::start(Format::Webhook(None)).await?;
    let cfg = AuditConfig {
        spool: Some(AuditSpool {
            fsync,
            queue_capacity: records as u64 + 16,
            ..Default::default()
        }),
        sinks: if ship {
            vec![AuditSink {
                name: "hook".into(),
                kind: "webhook".into(),
                endpoint: rx.base_url(),
                batch: AuditBatch {
                    max_records: 1000,
                    max_bytes: 4 << 20,
                    max_wait_ms: 5,
                },
                ..Default::default()
            }]
        } else {
            vec![]
        },
        ..Default::default()
    };
    let metrics = AuditMetrics::default();
    let mut registry = Registry::default();
    metrics.register(&mut registry);
    let audit = Audit::open(dir.path(), Some(&cfg), metrics.clone(), build_client()?)?;
    let started = Instant::now();
    let threads = 4;
    let per = records / threads;
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let a = audit.clone();
            std::thread::spawn(move || {
                for i in 0..per {
                    a.record(event(t * per + i));
                }
            })
        })
        .collect();
    for h in handles {
        let _ = h.join();
    }
    let head = audit.flush_async().await?;
    let written = started.elapsed();
    // The head also counts the checkpoints (one per 1000 records).
    if (head as usize) < per * threads {
        bail!("wrote {head} of {} records", per * threads);
    }
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry)?;
    let fsyncs = metric(&text, "audit_fsync_seconds_count");
    let bytes: u64 = std::fs::read_dir(dir.path())?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("seg-"))
        .filter_map(|e| e.metadata().ok().map(|m| m.len()))
        .sum();
    let shipped = if ship {
        let deadline = Instant::now() + Duration::from_secs(300);
        while (rx.count() as u64) < head {
            if Instant::now() > deadline {
                bail!("sink did not catch up");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Some(head as f64 / started.elapsed().as_secs_f64())
    } else {
        None
    };
    audit.shutdown(Duration::from_secs(1)).await;
    Ok((
        head as f64 / written.as_secs_f64(),
        bytes as f64 / head as f64,
        fsyncs,
        shipped,
    ))
}

fn bodies() -> anyhow::Result<(Bytes, Bytes)> {
    let root = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    let sse = std::fs::read(root.join(FIXTURE))?;
    let text = String::from_utf8(sse.clone())?;
    let json = text.replacen("\"stream\": true", "\"stream\": false", 1);
    if json == text {
        bail!("fixture has no \"stream\": true");
    }
    Ok((Bytes::from(sse), Bytes::from(json)))
}

fn spec(addr: SocketAddr, body: &Bytes) -> anyhow::Result<RequestSpec> {
    let mut headers = HeaderMap::new();
    for (k, v) in [
        ("host", addr.to_string()),
        ("authorization", format!("Bearer {KEY_ALICE}")),
        ("anthropic-version", "2023-06-01".into()),
        ("content-type", "application/json".into()),
        (
            "x-claude-code-session-id",
            "5f0c9a0e-6a3b-4a53-8a8e-0f5d8c2b7c11".into(),
        ),
    ] {
        headers.insert(HeaderName::from_static(k), HeaderValue::from_str(&v)?);
    }
    Ok(RequestSpec {
        uri: Uri::from_static("/v1/messages?beta=true"),
        headers,
        body: body.clone(),
    })
}

fn start_proxy(
    bin: &Path,
    dir: &Path,
    upstream: SocketAddr,
    audit: Option<&Receiver>,
) -> anyhow::Result<Proxy> {
    let mut policy = standard_policy(&format!("http://{upstream}"), true);
    let mut args = vec![];
    let spool = dir.join("spool");
    if let Some(rx) = audit {
        std::fs::write(dir.join("cp.key"), "bench-checkpoint-key-0123456789")?;
        policy.push_str(&format!(
            "audit:\n  checkpoint: {{key: {{file: \"{}\"}}}}\n  sinks: [{{name: hook, kind: webhook, endpoint: \"{}\"}}]\n",
            dir.join("cp.key").display(),
            rx.base_url()
        ));
        args = vec!["--audit-dir".to_owned(), spool.display().to_string()];
    }
    let file = dir.join(if audit.is_some() { "on.yaml" } else { "off.yaml" });
    std::fs::write(&file, policy)?;
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Proxy::start_with_args(bin, &file, &[(PROVIDER_KEY_ENV, PROVIDER_KEY)], &args)
}

async fn run() -> anyhow::Result<()> {
    let args = parse_args()?;
    println!(
        "## Audit spool ({} `model_request` records (~760 bytes spooled), 4 producer threads)\n",
        args.records
    );
    println!(
        "| fsync | records/s | bytes/record | fsyncs | records per fsync | shipped to webhook, records/s |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for (name, fsync, ship) in [
        ("every batch", FsyncPolicy::EveryBatch, false),
        ("never", FsyncPolicy::Never, false),
        ("every batch + webhook sink", FsyncPolicy::EveryBatch, true),
    ] {
        let (rps, bpr, fsyncs, shipped) = spool(args.records, fsync, ship).await?;
        println!(
            "| {name} | {rps:.0} | {bpr:.0} | {fsyncs:.0} | {} | {} |",
            if fsyncs > 0.0 {
                format!("{:.0}", args.records as f64 / fsyncs)
            } else {
                "-".into()
            },
            shipped.map_or("-".into(), |s| format!("{s:.0}"))
        );
    }

    let fake = procs::Fake::start(&sibling("fake-anthropic")?, PROVIDER_KEY)?;
    let bin = sibling("tollgate-proxy")?;
    let dir = tempfile::tempdir()?;
    let rx = Receiver::start(Format::Webhook(None)).await?;
    let off = start_proxy(&bin, &dir.path().join(""), fake.addr, None)?;
    let on_dir = dir.path().join("on");
    std::fs::create_dir_all(&on_dir)?;
    let on = start_proxy(&bin, &on_dir, fake.addr, Some(&rx))?;
    let (sse, json) = bodies()?;
    println!(
        "\n## Proxy latency, audit off vs on ({} rps open loop, {} s x {} interleaved rounds, 76 KB Claude Code request)\n",
        args.rate, args.seconds, args.rounds
    );
    println!("| mode | audit | requests | errors | p50 ms | p99 ms |");
    println!("|---|---|---:|---:|---:|---:|");
    for (mode, body) in [("json", &json), ("sse", &sse)] {
        let mut results: Vec<Outcome> = vec![Outcome::default(), Outcome::default()];
        for (i, p) in [&off, &on].iter().enumerate() {
            // Warm up each path.
            let pool = Pool::new(p.addr);
            let s = Arc::new(spec(p.addr, body)?);
            let _ = load::open_loop(
                &pool,
                &s,
                args.rate,
                Duration::from_secs(1),
                64,
                Duration::from_secs(5),
            )
            .await;
            let _ = i;
        }
        for _ in 0..args.rounds {
            for (i, p) in [&off, &on].iter().enumerate() {
                let pool = Pool::new(p.addr);
                let s = Arc::new(spec(p.addr, body)?);
                let o = load::open_loop(
                    &pool,
                    &s,
                    args.rate,
                    Duration::from_secs(args.seconds),
                    64,
                    Duration::from_secs(5),
                )
                .await;
                results[i].absorb(o);
            }
        }
        let mut p = Vec::new();
        for (name, o) in ["off", "on"].iter().zip(results.iter_mut()) {
            o.sort();
            let (p50, p99) = (
                o.percentile_ms(0.5).unwrap_or(f64::NAN),
                o.percentile_ms(0.99).unwrap_or(f64::NAN),
            );
            println!(
                "| {mode} | {name} | {} | {} | {p50:.3} | {p99:.3} |",
                o.ok(),
                o.errors
            );
            p.push((p50, p99));
        }
        println!(
            "| {mode} | **added** | | | **{:+.3}** | **{:+.3}** |",
            p[1].0 - p[0].0,
            p[1].1 - p[0].1
        );
    }
    let m = on.metrics().await?;
    println!(
        "\naudit-on proxy: {} records spooled, {} dropped, {} shipped to the webhook so far",
        metric(&m, "tollgate_audit_records_total"),
        metric(&m, "tollgate_audit_records_dropped_total"),
        metric(&m, "tollgate_audit_sink_records_shipped_total"),
    );
    Ok(())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench-audit: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
