//! `tollgate-operator compile`: the operator's compile step without a cluster. It reads
//! manifests (the seven Tollgate kinds, plus Secrets for key digests and credential labels and
//! Namespaces for their labels), compiles them exactly as the operator would with the same
//! settings flags, prints the policy document it would write, and reports every resource's
//! `Ready` condition. For CI: `--strict` fails when any resource would be `Ready=False`.
//!
//! Exit status: 0 compiled (and, with `--strict`, everything ready); 1 with `--strict`, some
//! resource would not be ready; 2 the input could not be read or compiled at all.

pub mod manifests;
pub mod report;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, ValueEnum};

use crate::cli::SettingsArgs;
use crate::compile;

/// Stands in for `--gateway-url` offline: the URL only appears in the sidecar copies.
const PLACEHOLDER_GATEWAY_URL: &str = "http://tollgate-gateway.invalid:8080";

/// `tollgate-operator compile` flags.
#[derive(Debug, Clone, Args)]
pub struct CompileArgs {
    /// Manifest files or directories (YAML or JSON, multi-document, `kind: List` too); `-`
    /// reads standard input. Repeatable.
    #[arg(short = 'f', long = "filename", required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Read directories recursively.
    #[arg(short = 'R', long)]
    pub recursive: bool,
    /// Exit 1 if any resource would be `Ready=False`.
    #[arg(long)]
    pub strict: bool,
    /// What goes to standard output: `policy`, the merged policy document (JSON), with the
    /// readiness table on standard error; `json`, one object `{"policy": ..., "resources":
    /// [...]}`; `table`, only the readiness table.
    #[arg(short, long, value_enum, default_value = "policy")]
    pub output: Output,
    /// Namespace of VirtualKeys and Secrets that name none.
    #[arg(short, long, default_value = "default")]
    pub namespace: String,
    /// The operator's namespace: Secrets there labelled `tollgate.dev/credential=true` may be
    /// named by credentials.
    #[arg(long, env = "TOLLGATE_POLICY_NAMESPACE", default_value = "tollgate-system")]
    pub policy_namespace: String,
    /// A credential Secret (labelled `tollgate.dev/credential=true` in the operator's
    /// namespace) that exists in the cluster but not among the manifests; repeatable.
    #[arg(long = "credential-secret", value_name = "NAME", value_delimiter = ',')]
    pub credential_secrets: Vec<String>,
    /// The instant expiries are judged at (RFC 3339); default: now.
    #[arg(long, value_name = "TIME")]
    pub now: Option<jiff::Timestamp>,
    /// The operator's settings (in gateway mode without `--gateway-url`, a placeholder URL
    /// stands in: it appears only in the sidecar copies, which are checked but not printed).
    #[command(flatten)]
    pub settings: SettingsArgs,
}

/// `--output` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// The policy document on stdout, the readiness table on stderr.
    Policy,
    /// The policy document and every resource's readiness as one JSON object on stdout.
    Json,
    /// Only the readiness table, on stdout.
    Table,
}

/// Runs the subcommand, writing to standard output and error.
pub fn run(args: &CompileArgs) -> ExitCode {
    let (stdout, stderr) = (std::io::stdout(), std::io::stderr());
    match execute(args, &mut stdout.lock(), &mut stderr.lock()) {
        Ok(code) => code,
        Err(e) => {
            let _ = writeln!(stderr.lock(), "error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn execute(args: &CompileArgs, out: &mut dyn Write, err: &mut dyn Write) -> anyhow::Result<ExitCode> {
    let settings = args.settings.settings(Some(PLACEHOLDER_GATEWAY_URL))?;
    let docs = manifests::read(&args.paths, args.recursive)?;
    let options = manifests::Options {
        namespace: args.namespace.clone(),
        policy_namespace: args.policy_namespace.clone(),
        credential_secrets: args.credential_secrets.clone(),
    };
    let mut m = manifests::world(&docs, &options)?;
    m.world.now = args.now.unwrap_or_else(jiff::Timestamp::now);
    let compiled = compile::compile(&m.world, &settings)?;
    if let compile::SidecarMode::Gateway { .. } = settings.sidecar {
        // Every agent namespace's copy, as the operator would write it.
        for ns in m
            .world
            .keys
            .iter()
            .filter_map(|k| k.metadata.namespace.as_deref())
        {
            compiled.config_maps_for(ns, &args.policy_namespace)?;
        }
    }
    let rows = report::rows(&compiled);
    let mut notes = Vec::new();
    if !m.placeholders.is_empty() {
        notes.push(format!(
            "{} key(s) without secretRef get a placeholder sha256 (the operator generates their Secrets): {}",
            m.placeholders.len(),
            m.placeholders.join(", ")
        ));
    }
    if !m.ignored.is_empty() {
        notes.push(format!("{} document(s) of other kinds ignored", m.ignored.len()));
    }
    match args.output {
        Output::Policy => {
            serde_json::to_writer_pretty(&mut *out, &compiled.document)?;
            writeln!(out)?;
            err.write_all(report::table(&rows, &notes).as_bytes())?;
        }
        Output::Json => {
            let report = serde_json::json!({
                "policy": compiled.document,
                "resources": rows,
                "notes": notes,
            });
            serde_json::to_writer_pretty(&mut *out, &report)?;
            writeln!(out)?;
        }
        Output::Table => out.write_all(report::table(&rows, &notes).as_bytes())?,
    }
    let not_ready = rows.iter().any(|r| !r.ready);
    if args.strict && not_ready {
        writeln!(
            err,
            "--strict: not ready: {}",
            report::not_ready_summary(&compiled)
        )?;
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}
