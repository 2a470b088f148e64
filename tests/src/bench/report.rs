//! The printed report: the results table, the memory table and the targets.

use std::fmt::Write as _;

use crate::load::Outcome;

/// Request body variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `"stream": false`, a JSON reply.
    Json,
    /// `"stream": true`, an SSE reply read to its end.
    Sse,
}

impl Mode {
    /// Short name for the table.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Json => "json",
            Mode::Sse => "sse",
        }
    }
}

/// Load shape of a cell.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Load {
    /// Open loop at this many requests per second.
    Rate(f64),
    /// Closed loop with this many connections.
    Max(usize),
}

impl Load {
    /// Short name for the table.
    pub fn name(self) -> String {
        match self {
            Load::Rate(r) => format!("{r:.0}/s"),
            Load::Max(c) => format!("max/{c}c"),
        }
    }
}

/// Which way requests reach the fake upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    /// Client to fake (Anthropic Messages API).
    Direct,
    /// Client to HAProxy to fake.
    Haproxy,
    /// Client to tollgate-proxy (Anthropic target) to fake.
    Tollgate,
    /// Client to the fake's Bedrock paths, with the body tollgate would send there.
    BedrockDirect,
    /// Client (Anthropic request) to tollgate-proxy (Bedrock target) to the fake's Bedrock paths.
    TollgateBedrock,
}

impl Path {
    /// Every path, in measuring order.
    pub const ALL: [Path; 5] = [
        Path::Direct,
        Path::Haproxy,
        Path::Tollgate,
        Path::BedrockDirect,
        Path::TollgateBedrock,
    ];

    /// Short name for the table.
    pub fn name(self) -> &'static str {
        match self {
            Path::Direct => "direct",
            Path::Haproxy => "haproxy",
            Path::Tollgate => "tollgate",
            Path::BedrockDirect => "bedrock-direct",
            Path::TollgateBedrock => "tollgate-bedrock",
        }
    }

    /// The path this one's added latency is measured against: `direct` for the proxies of the
    /// Anthropic wire format, `bedrock-direct` for `tollgate-bedrock`; none for the baselines.
    pub fn baseline(self) -> Option<Path> {
        match self {
            Path::Direct | Path::BedrockDirect => None,
            Path::Haproxy | Path::Tollgate => Some(Path::Direct),
            Path::TollgateBedrock => Some(Path::BedrockDirect),
        }
    }
}

/// One measured cell.
pub struct Cell {
    /// Body variant.
    pub mode: Mode,
    /// Load shape.
    pub load: Load,
    /// Path.
    pub path: Path,
    /// What was observed (latencies sorted).
    pub outcome: Outcome,
    /// CPU time of the proxy (none for `direct`) per request, in microseconds.
    pub proxy_cpu_us: Option<f64>,
    /// CPU time of the fake upstream per request, in microseconds.
    pub fake_cpu_us: Option<f64>,
    /// CPU used by the bench, the fake and the proxies, in % of one CPU.
    pub ours_pct: Option<f64>,
    /// CPU used meanwhile by other processes of the machine (plus steal), in % of one CPU.
    pub noise_pct: Option<f64>,
}

impl Cell {
    fn p(&self, q: f64) -> Option<f64> {
        self.outcome.percentile_ms(q)
    }
}

/// The largest ratio of tollgate-added to HAProxy-added latency that meets the target.
pub const RATIO_TARGET: f64 = 1.5;

/// HAProxy-added latency below this (ms) makes the ratio meaningless (noise).
const MIN_BASE_MS: f64 = 0.005;

/// `tollgate added / haproxy added` for quantile `q`, when both are measurable.
fn ratio(cells: &[Cell], mode: Mode, load: Load, q: f64) -> Option<f64> {
    let tg = added(cells, mode, load, Path::Tollgate, q)?;
    let hap = added(cells, mode, load, Path::Haproxy, q)?;
    if hap < MIN_BASE_MS {
        return None;
    }
    Some(tg / hap)
}

fn find(cells: &[Cell], mode: Mode, load: Load, path: Path) -> Option<&Cell> {
    cells
        .iter()
        .find(|c| c.mode == mode && c.load == load && c.path == path)
}

/// Latency quantile `q` of `path` minus that of its [`Path::baseline`], same mode and load.
fn added(cells: &[Cell], mode: Mode, load: Load, path: Path, q: f64) -> Option<f64> {
    let base = find(cells, mode, load, path.baseline()?)?.p(q)?;
    Some(find(cells, mode, load, path)?.p(q)? - base)
}

fn ms(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.3}"))
}

fn us(v: Option<f64>) -> String {
    v.map_or_else(String::new, |v| format!("{v:.0} us"))
}

fn pct(v: Option<f64>) -> String {
    v.map_or_else(String::new, |v| format!("{v:.0}%"))
}

fn verdict(ok: bool) -> &'static str {
    if ok { "PASS" } else { "FAIL" }
}

/// The results table, one line per cell, and the first error of each failing cell.
pub fn table(cells: &[Cell]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<5} {:<8} {:<16} {:>10} {:>8} {:>8} {:>9} {:>6} {:>6} {:>8} {:>8} {:>12} {:>12} {:>9} {:>9} {:>5} {:>5}",
        "mode",
        "load",
        "path",
        "req/s",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "errors",
        "unsent",
        "+p50 ms",
        "+p99 ms",
        "tg/hap p50",
        "tg/hap p99",
        "proxy cpu",
        "fake cpu",
        "ours",
        "noise"
    );
    let mut errors = String::new();
    let mut previous: Option<(Mode, Load)> = None;
    for c in cells {
        if previous.is_some_and(|p| p != (c.mode, c.load)) {
            out.push('\n');
        }
        previous = Some((c.mode, c.load));
        let (add50, add99) = match c.path.baseline() {
            None => (String::new(), String::new()),
            Some(_) => (
                ms(added(cells, c.mode, c.load, c.path, 0.50)),
                ms(added(cells, c.mode, c.load, c.path, 0.99)),
            ),
        };
        let (r50, r99) = if c.path == Path::Tollgate {
            let show = |q| match ratio(cells, c.mode, c.load, q) {
                None => "n/a".to_owned(),
                Some(r) => match c.load {
                    Load::Rate(_) => format!("{r:.2}x {}", verdict(r <= RATIO_TARGET)),
                    Load::Max(_) => format!("{r:.2}x info"),
                },
            };
            (show(0.50), show(0.99))
        } else {
            (String::new(), String::new())
        };
        let mut rps = format!("{:.0}", c.outcome.rps());
        if let (Load::Max(_), Some(base)) = (c.load, c.path.baseline()) {
            if let Some(d) = find(cells, c.mode, c.load, base) {
                if d.outcome.rps() > 0.0 {
                    rps = format!("{rps} ({:.0}%)", 100.0 * c.outcome.rps() / d.outcome.rps());
                }
            }
        }
        let _ = writeln!(
            out,
            "{:<5} {:<8} {:<16} {:>10} {:>8} {:>8} {:>9} {:>6} {:>6} {:>8} {:>8} {:>12} {:>12} {:>9} {:>9} {:>5} {:>5}",
            c.mode.name(),
            c.load.name(),
            c.path.name(),
            rps,
            ms(c.p(0.50)),
            ms(c.p(0.99)),
            ms(c.p(0.999)),
            c.outcome.errors,
            c.outcome.not_sent,
            add50,
            add99,
            r50,
            r99,
            us(c.proxy_cpu_us),
            us(c.fake_cpu_us),
            pct(c.ours_pct),
            pct(c.noise_pct)
        );
        if let Some(e) = &c.outcome.first_error {
            let _ = writeln!(
                errors,
                "  {} {} {}: {} errors, first: {e}",
                c.mode.name(),
                c.load.name(),
                c.path.name(),
                c.outcome.errors
            );
        }
    }
    if !errors.is_empty() {
        let _ = write!(out, "\nErrors:\n{errors}");
    }
    out
}

/// Tollgate's added latency and CPU on its Anthropic target (`tollgate` vs `direct`) next to its
/// Bedrock target (`tollgate-bedrock` vs `bedrock-direct`), one line per mode and load; empty
/// when either path was not measured.
pub fn bedrock_comparison(cells: &[Cell]) -> String {
    let mut keys: Vec<(Mode, Load)> = Vec::new();
    for c in cells {
        if !keys.contains(&(c.mode, c.load)) {
            keys.push((c.mode, c.load));
        }
    }
    let mut lines = String::new();
    for (mode, load) in keys {
        let (Some(a), Some(b)) = (
            find(cells, mode, load, Path::Tollgate),
            find(cells, mode, load, Path::TollgateBedrock),
        ) else {
            continue;
        };
        let diff = |x: Option<f64>, y: Option<f64>| Some(y? - x?);
        let add = |p, q| added(cells, mode, load, p, q);
        let (a50, a99) = (add(Path::Tollgate, 0.50), add(Path::Tollgate, 0.99));
        let (b50, b99) = (add(Path::TollgateBedrock, 0.50), add(Path::TollgateBedrock, 0.99));
        let signed = |v: Option<f64>| v.map_or_else(|| "-".into(), |v| format!("{v:+.3}"));
        let signed_us = |v: Option<f64>| v.map_or_else(String::new, |v| format!("{v:+.0} us"));
        let _ = writeln!(
            lines,
            "{:<5} {:<8} {:>9} {:>9} {:>10} {:>9} {:>9} {:>10} {:>9} {:>9} {:>10} {:>7} {:>7}",
            mode.name(),
            load.name(),
            ms(a50),
            ms(a99),
            us(a.proxy_cpu_us),
            ms(b50),
            ms(b99),
            us(b.proxy_cpu_us),
            signed(diff(a50, b50)),
            signed(diff(a99, b99)),
            signed_us(diff(a.proxy_cpu_us, b.proxy_cpu_us)),
            a.outcome.errors,
            b.outcome.errors,
        );
    }
    let mut out = String::new();
    if lines.is_empty() {
        return out;
    }
    let _ = writeln!(
        out,
        "Bedrock target vs Anthropic target: tollgate-proxy's added latency (anthropic: tollgate vs\n\
         direct; bedrock: tollgate-bedrock vs bedrock-direct) and CPU per request, same run and settings\n\
         {:<14} {:-^30} {:-^30} {:-^30} {:-^15}\n\
         {:<5} {:<8} {:>9} {:>9} {:>10} {:>9} {:>9} {:>10} {:>9} {:>9} {:>10} {:>7} {:>7}",
        "",
        " anthropic target ",
        " bedrock target ",
        " bedrock - anthropic ",
        " errors ",
        "mode",
        "load",
        "+p50 ms",
        "+p99 ms",
        "proxy cpu",
        "+p50 ms",
        "+p99 ms",
        "proxy cpu",
        "p50 ms",
        "p99 ms",
        "cpu",
        "anthr",
        "bedr",
    );
    out.push_str(&lines);
    out
}

/// The added-latency target, evaluated on every fixed-rate cell: (passed, total, failures).
pub fn ratio_verdicts(cells: &[Cell]) -> (usize, usize, Vec<String>) {
    let mut passed = 0;
    let mut total = 0;
    let mut failures = Vec::new();
    for c in cells
        .iter()
        .filter(|c| c.path == Path::Tollgate && matches!(c.load, Load::Rate(_)))
    {
        for (q, name) in [(0.50, "p50"), (0.99, "p99")] {
            total += 1;
            match ratio(cells, c.mode, c.load, q) {
                Some(r) if r <= RATIO_TARGET => passed += 1,
                Some(r) => failures.push(format!(
                    "{} {} {name}: {r:.2}x (tollgate +{} ms, haproxy +{} ms)",
                    c.mode.name(),
                    c.load.name(),
                    ms(added(cells, c.mode, c.load, Path::Tollgate, q)),
                    ms(added(cells, c.mode, c.load, Path::Haproxy, q)),
                )),
                None => {
                    // HAProxy added (almost) nothing: pass only if tollgate did not either.
                    let tg = added(cells, c.mode, c.load, Path::Tollgate, q).unwrap_or(f64::INFINITY);
                    if tg <= MIN_BASE_MS * RATIO_TARGET {
                        passed += 1;
                    } else {
                        failures.push(format!(
                            "{} {} {name}: haproxy added ~0 ms, tollgate +{tg:.3} ms",
                            c.mode.name(),
                            c.load.name()
                        ));
                    }
                }
            }
        }
    }
    (passed, total, failures)
}

/// kB to MiB.
pub fn mib(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

/// `12.3` MiB, or `-` when unknown.
pub fn mib_cell(kb: Option<u64>) -> String {
    kb.map_or_else(|| "-".into(), |kb| format!("{:.1}", mib(kb)))
}

/// A target line: `name  value <= limit  PASS`.
pub fn target_line(name: &str, kb: Option<u64>, limit_mib: f64) -> String {
    match kb {
        Some(kb) => format!(
            "  {name:<44} {:>7.1} MiB <= {limit_mib:.0} MiB   {}",
            mib(kb),
            verdict(mib(kb) <= limit_mib)
        ),
        None => format!("  {name:<44}       - MiB <= {limit_mib:.0} MiB   FAIL (not measured)"),
    }
}
