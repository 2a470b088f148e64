//! The `tollgate-proxy audit` subcommands, and opening the audit trail at start-up.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Subcommand, ValueEnum};

use super::checkpoint::{Signer, Verifier, generate_secret};
use super::verify::{VerifyOptions, verify};
use super::{Audit, AuditError};
use crate::metrics::Metrics;
use crate::policy::document::CheckpointAlgorithm;
use crate::policy::{PolicyStore, ReloadOutcome};
use crate::upstream::HttpClient;

/// Checkpoint algorithms on the command line.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Algorithm {
    /// HMAC-SHA256.
    HmacSha256,
    /// Ed25519.
    Ed25519,
}

impl From<Algorithm> for CheckpointAlgorithm {
    fn from(a: Algorithm) -> Self {
        match a {
            Algorithm::HmacSha256 => CheckpointAlgorithm::HmacSha256,
            Algorithm::Ed25519 => CheckpointAlgorithm::Ed25519,
        }
    }
}

/// `tollgate-proxy audit ...`
#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// Re-walk a spool directory (or a file of records) and its checkpoints; report the first
    /// broken link by sequence number, and the gap records (records the proxy lost and
    /// recorded as lost). Exits 1 when the chain is broken, 2 when it is intact but has gaps.
    /// With `--key` or `--public-key` every checkpoint must carry a valid signature.
    Verify {
        /// Spool directory (`--audit-dir`) or a JSON-lines file of records.
        path: PathBuf,
        /// Checkpoint key file: the HMAC secret, or the Ed25519 seed (hex).
        #[arg(long)]
        key: Option<PathBuf>,
        /// Algorithm of `--key`.
        #[arg(long, value_enum, default_value = "hmac-sha256")]
        algorithm: Algorithm,
        /// Ed25519 public key (hex) instead of `--key`.
        #[arg(long, conflicts_with = "key")]
        public_key: Option<String>,
        /// More checkpoint files to check the chain against (e.g. exported from a SIEM).
        #[arg(long)]
        checkpoints: Vec<PathBuf>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Generate a checkpoint key: prints the secret for the key file (and the Ed25519 public key).
    Keygen {
        /// Algorithm.
        #[arg(long, value_enum, default_value = "ed25519")]
        algorithm: Algorithm,
    },
}

/// Exit status of `audit verify` for an intact chain with gap records.
pub const EXIT_GAPS: i32 = 2;

/// Runs an audit subcommand; returns the exit status: 0, 1 when a chain failed verification,
/// [`EXIT_GAPS`] when it verified but records are missing (and recorded as missing).
pub fn run(cmd: AuditCommand) -> anyhow::Result<i32> {
    match cmd {
        AuditCommand::Verify {
            path,
            key,
            algorithm,
            public_key,
            checkpoints,
            json,
        } => {
            let verifier = match (key, public_key) {
                (Some(k), _) => {
                    let secret = std::fs::read_to_string(&k)
                        .with_context(|| format!("reading key {}", k.display()))?;
                    Some(Verifier::from_secret(algorithm.into(), &secret)?)
                }
                (None, Some(pk)) => Some(Verifier::ed25519_public(&pk)?),
                (None, None) => None,
            };
            let report = verify(
                &path,
                &VerifyOptions {
                    verifier,
                    checkpoint_files: checkpoints,
                },
            )?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                match &report.broken {
                    None => println!(
                        "ok: chain {} seq {}..{} ({} records, {} checkpoints, {} signatures verified, {} unchecked)",
                        report.chain_id,
                        report.first_seq,
                        report.last_seq,
                        report.records,
                        report.checkpoints,
                        report.signatures_verified,
                        report.signatures_unchecked
                    ),
                    Some(b) => println!("BROKEN at seq {}: {} ({})", b.seq, b.reason, b.at),
                }
                for g in &report.gaps {
                    let range = match (g.first_seq, g.last_seq) {
                        (Some(a), Some(b)) => format!(" (seq {a}..{b})"),
                        _ => String::new(),
                    };
                    println!(
                        "GAP at seq {}: {} records lost{range}: {}",
                        g.seq, g.records, g.reason
                    );
                }
                for n in &report.notes {
                    println!("note: {n}");
                }
            }
            Ok(if !report.ok() {
                1
            } else if report.gaps.is_empty() {
                0
            } else {
                EXIT_GAPS
            })
        }
        AuditCommand::Keygen { algorithm } => {
            let secret = generate_secret(algorithm.into())?;
            let signer = Signer::from_secret(algorithm.into(), &secret)?;
            println!("secret:     {secret}");
            println!("key_id:     {}", signer.key_id());
            if let Some(pk) = signer.public_key_hex() {
                println!("public_key: {pk}");
            }
            Ok(0)
        }
    }
}

/// Opens the audit trail when `dir` is set and records the first policy load; warns when the
/// policy configures audit but no spool directory was given.
pub fn open_for(
    dir: Option<&Path>,
    store: &PolicyStore,
    first: &ReloadOutcome,
    metrics: &Metrics,
    client: &HttpClient,
) -> Result<Option<Audit>, AuditError> {
    let snapshot = store.snapshot();
    let config = snapshot.as_deref().and_then(|s| s.audit.as_ref());
    let Some(dir) = dir else {
        if config.is_some() {
            tracing::error!("the policy configures audit but --audit-dir is not set: audit records are OFF");
        }
        return Ok(None);
    };
    let audit = Audit::open(dir, config, metrics.audit().clone(), client.clone())?;
    audit.reloaded(first, store);
    Ok(Some(audit))
}

impl Audit {
    /// Records a reload outcome (nothing for an unchanged one) and applies its settings.
    pub fn reloaded(&self, outcome: &ReloadOutcome, store: &PolicyStore) {
        let snapshot = store.snapshot();
        match outcome {
            ReloadOutcome::Applied { .. } => self.policy_reload("applied", None, snapshot.as_deref()),
            ReloadOutcome::Rejected { error } => {
                self.policy_reload("rejected", Some(error.clone()), snapshot.as_deref())
            }
            ReloadOutcome::Unchanged => {}
        }
    }
}
