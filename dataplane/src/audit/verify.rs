//! Re-walking a chain: every line is byte for byte the canonical encoding of its record (so
//! no other spelling, member order or duplicate member passes), every record's sequence
//! number, `prev_hash` link and hash, every checkpoint's coverage and signature, and the
//! checkpoints kept beside the chain (which reveal a truncated tail). Reports the first
//! broken link by sequence number, and every `gap` record (records the proxy knows it lost).
//!
//! With a key (`VerifyOptions::verifier`), every checkpoint must be signed with it: an
//! unsigned one (`alg: none`) is what a rewrite without the key would produce, so it fails.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::AuditError;
use super::canonical;
use super::checkpoint::Verifier;
use super::record::{GENESIS, Record, event_id};
use super::spool::{self, CHAIN_ID_FILE, CHECKPOINTS_FILE};

/// What to check besides the chain itself.
#[derive(Default)]
pub struct VerifyOptions {
    /// Checks checkpoint signatures (without it they are reported unchecked).
    pub verifier: Option<Verifier>,
    /// More checkpoint files (e.g. checkpoints exported from a SIEM: an external witness).
    pub checkpoint_files: Vec<PathBuf>,
}

/// The first broken link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Broken {
    /// Sequence number of the first record that is missing, altered or out of place.
    pub seq: u64,
    /// What is wrong.
    pub reason: String,
    /// File and line where it was found.
    pub at: String,
}

/// A `gap` record found in the chain: records the proxy could not keep, and says so.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GapFound {
    /// Sequence number of the gap record.
    pub seq: u64,
    /// Why (`retention`, `queue_full`, `spool_unwritable`).
    pub reason: String,
    /// How many records are missing.
    pub records: u64,
    /// For retention: the deleted range.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_seq: Option<u64>,
    /// For retention: the deleted range.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_seq: Option<u64>,
}

/// The result of a verification.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// Chain id.
    pub chain_id: String,
    /// First sequence number present.
    pub first_seq: u64,
    /// Last sequence number of the intact prefix.
    pub last_seq: u64,
    /// Records checked.
    pub records: u64,
    /// Checkpoint records in the chain.
    pub checkpoints: u64,
    /// Checkpoints whose signature was verified (in the chain or beside it).
    pub signatures_verified: u64,
    /// Checkpoints without a signature, or not checked for want of a key.
    pub signatures_unchecked: u64,
    /// The last checkpoint's sequence number (records after it rely on the hash chain only).
    pub last_checkpoint_seq: Option<u64>,
    /// Records the proxy lost and recorded as lost (`gap` records), in chain order.
    pub gaps: Vec<GapFound>,
    /// Refusals of unauthenticated requests counted in `denials_suppressed` records instead
    /// of recorded one by one (the rate limit).
    pub refusals_suppressed: u64,
    /// Notes that are not failures.
    pub notes: Vec<String>,
    /// The first broken link, if any.
    pub broken: Option<Broken>,
}

impl Report {
    /// Whether the chain verified.
    pub fn ok(&self) -> bool {
        self.broken.is_none()
    }

    /// Records the gap records say are missing.
    pub fn records_lost(&self) -> u64 {
        self.gaps.iter().map(|g| g.records).sum()
    }
}

struct Walk<'a> {
    opts: &'a VerifyOptions,
    report: Report,
    expected: Option<u64>,
    prev: [u8; 32],
    hashes: Vec<[u8; 32]>,
}

impl Walk<'_> {
    fn fail(&mut self, seq: u64, reason: impl Into<String>, at: String) {
        if self.report.broken.is_none() {
            self.report.broken = Some(Broken {
                seq,
                reason: reason.into(),
                at,
            });
        }
    }

    fn hash_at(&self, seq: u64) -> Option<[u8; 32]> {
        let i = seq.checked_sub(self.report.first_seq)?;
        self.hashes.get(usize::try_from(i).ok()?).copied()
    }

    fn check_signature(&mut self, chain_id: &str, rec: &Record, at: &str) -> bool {
        let body = rec.body();
        if body["alg"] == "none" {
            if self.opts.verifier.is_some() {
                self.fail(
                    rec.seq,
                    "checkpoint is unsigned (alg none) but a key was given: a rewrite without the key would look like this",
                    at.to_owned(),
                );
                return false;
            }
            self.report.signatures_unchecked += 1;
            return true;
        }
        match &self.opts.verifier {
            None => {
                self.report.signatures_unchecked += 1;
                true
            }
            Some(v) => match v.verify(chain_id, body) {
                Ok(()) => {
                    self.report.signatures_verified += 1;
                    true
                }
                Err(e) => {
                    self.fail(rec.seq, format!("checkpoint: {e}"), at.to_owned());
                    false
                }
            },
        }
    }

    /// Checks one line; false stops the walk.
    fn line(&mut self, chain_id: &mut String, raw: &[u8], at: String) -> bool {
        let expected = self.expected;
        let rec = match Record::parse(raw) {
            Ok(r) => r,
            Err(e) => {
                let seq = expected.unwrap_or(self.report.first_seq.max(1));
                self.fail(seq, format!("record unreadable ({e})"), at);
                return false;
            }
        };
        // The hash covers the parsed value; only the exact canonical bytes are the record
        // (another spelling, order or a duplicate member would parse to the same value).
        if canonical::encode(&rec.value).ok().as_deref() != Some(raw) {
            let seq = match expected {
                Some(e) if rec.seq != e => e,
                _ => rec.seq,
            };
            self.fail(
                seq,
                "line is not in canonical form (whitespace, member order, escapes or a duplicate member differ from the canonical encoding)",
                at,
            );
            return false;
        }
        match expected {
            Some(e) if rec.seq > e => {
                self.fail(
                    e,
                    format!("record {e} is missing (found {} in its place)", rec.seq),
                    at,
                );
                return false;
            }
            Some(e) if rec.seq < e => {
                self.fail(
                    e,
                    format!("out of order: found record {} where {e} belongs", rec.seq),
                    at,
                );
                return false;
            }
            Some(_) => {}
            None => {
                self.report.first_seq = rec.seq;
                if rec.seq == 1 {
                    self.prev = GENESIS;
                } else {
                    self.prev = rec.prev_hash;
                    self.report.notes.push(format!(
                        "chain starts at seq {}: earlier records were removed by retention (anchored on its prev_hash)",
                        rec.seq
                    ));
                }
                if chain_id.is_empty() {
                    if let Some(c) = rec
                        .id
                        .strip_prefix("tga_")
                        .and_then(|s| s.rsplit_once('_'))
                        .map(|(c, _)| c)
                    {
                        *chain_id = c.to_owned();
                    }
                }
            }
        }
        if rec.prev_hash != self.prev {
            self.fail(
                rec.seq,
                format!("prev_hash does not match the hash of record {}", rec.seq - 1),
                at,
            );
            return false;
        }
        match rec.recompute(&self.prev) {
            Ok(h) if h == rec.hash => {}
            Ok(_) => {
                self.fail(rec.seq, "content does not match its hash (altered)", at);
                return false;
            }
            Err(e) => {
                self.fail(rec.seq, format!("cannot re-encode: {e}"), at);
                return false;
            }
        }
        if rec.id != event_id(chain_id, rec.seq) {
            self.fail(
                rec.seq,
                format!("event id {} does not belong to chain {chain_id}", rec.id),
                at,
            );
            return false;
        }
        if rec.kind == "checkpoint" {
            let body = rec.body();
            let covers_ok = body["covers_seq"].as_u64() == Some(rec.seq - 1)
                && body["covers_hash"].as_str() == Some(hex::encode(self.prev).as_str());
            if !covers_ok {
                self.fail(rec.seq, "checkpoint does not cover the record before it", at);
                return false;
            }
            if !self.check_signature(chain_id, &rec, &at) {
                return false;
            }
            self.report.checkpoints += 1;
            self.report.last_checkpoint_seq = Some(rec.seq);
        }
        match rec.kind.as_str() {
            "gap" => {
                let b = rec.body();
                self.report.gaps.push(GapFound {
                    seq: rec.seq,
                    reason: b["reason"].as_str().unwrap_or_default().to_owned(),
                    records: b["records"].as_u64().unwrap_or(0),
                    first_seq: b["first_seq"].as_u64(),
                    last_seq: b["last_seq"].as_u64(),
                });
            }
            "denials_suppressed" => {
                self.report.refusals_suppressed += rec.body()["suppressed"].as_u64().unwrap_or(0);
            }
            _ => {}
        }
        self.prev = rec.hash;
        self.hashes.push(rec.hash);
        self.expected = Some(rec.seq + 1);
        self.report.last_seq = rec.seq;
        self.report.records += 1;
        true
    }

    /// Walks one file of lines; false stops the walk.
    fn file(&mut self, chain_id: &mut String, path: &Path) -> Result<bool, AuditError> {
        let data =
            std::fs::read(path).map_err(|e| AuditError::io(format!("reading {}", path.display()), e))?;
        let mut lines = data.split(|&b| b == b'\n').peekable();
        let mut n = 0usize;
        while let Some(line) = lines.next() {
            n += 1;
            let last = lines.peek().is_none();
            if last && line.is_empty() {
                break;
            }
            let at = format!("{}:{n}", path.display());
            if last {
                let seq = self.expected.unwrap_or(1);
                self.fail(
                    seq,
                    "torn last line (an interrupted write: the proxy repairs it on start)",
                    at,
                );
                return Ok(false);
            }
            if !self.line(chain_id, line, at) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Checks checkpoints kept outside the chain against it.
    fn external(&mut self, chain_id: &str, path: &Path) -> Result<(), AuditError> {
        let data = match std::fs::read(path) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(AuditError::io(format!("reading {}", path.display()), e)),
        };
        for (i, line) in data.split(|&b| b == b'\n').enumerate() {
            if line.is_empty() {
                continue;
            }
            let at = format!("{}:{}", path.display(), i + 1);
            let Ok(cp) = Record::parse(line) else {
                self.report
                    .notes
                    .push(format!("{at}: unreadable checkpoint skipped"));
                continue;
            };
            if cp.kind != "checkpoint" || cp.recompute(&cp.prev_hash).ok() != Some(cp.hash) {
                self.report
                    .notes
                    .push(format!("{at}: not a valid checkpoint record, skipped"));
                continue;
            }
            if cp.seq < self.report.first_seq {
                continue;
            }
            if cp.body()["alg"] == "none" && self.opts.verifier.is_some() {
                self.fail(
                    cp.seq,
                    "checkpoint is unsigned (alg none) but a key was given",
                    at,
                );
                return Ok(());
            }
            if cp.body()["alg"] != "none" {
                if let Some(v) = &self.opts.verifier {
                    if let Err(e) = v.verify(chain_id, cp.body()) {
                        self.report.notes.push(format!("{at}: checkpoint ignored: {e}"));
                        continue;
                    }
                    self.report.signatures_verified += 1;
                }
            }
            if cp.seq > self.report.last_seq {
                let seq = self.report.last_seq + 1;
                self.fail(
                    seq,
                    format!(
                        "chain truncated: it ends at seq {} but a checkpoint attests record {}",
                        self.report.last_seq, cp.seq
                    ),
                    at,
                );
                return Ok(());
            }
            if self.hash_at(cp.seq) != Some(cp.hash) {
                self.fail(cp.seq, "record differs from the one its checkpoint attests", at);
                return Ok(());
            }
        }
        Ok(())
    }
}

/// Verifies a spool directory, or a single file of records (a segment, a file-sink output).
pub fn verify(path: &Path, opts: &VerifyOptions) -> Result<Report, AuditError> {
    let mut walk = Walk {
        opts,
        report: Report::default(),
        expected: None,
        prev: GENESIS,
        hashes: Vec::new(),
    };
    let mut chain_id = String::new();
    let mut checkpoint_files = opts.checkpoint_files.clone();
    if path.is_dir() {
        chain_id = std::fs::read_to_string(path.join(CHAIN_ID_FILE))
            .map(|s| s.trim().to_owned())
            .unwrap_or_default();
        let segments = spool::list_segments(path)?;
        if segments.is_empty() {
            walk.report.notes.push("no segments: empty chain".into());
        }
        for (first, seg) in &segments {
            if let Some(e) = walk.expected {
                if *first != e {
                    let reason = if *first > e {
                        format!(
                            "records {e}..{} are missing (segment {} starts at {first})",
                            first - 1,
                            seg.display()
                        )
                    } else {
                        format!(
                            "segment {} starts at {first}, overlapping the previous one",
                            seg.display()
                        )
                    };
                    walk.fail(e, reason, seg.display().to_string());
                    break;
                }
            }
            let before = walk.expected;
            if before.is_none() && *first == 1 {
                walk.expected = Some(1);
                walk.report.first_seq = 1;
            }
            if !walk.file(&mut chain_id, seg)? {
                break;
            }
            if before.is_none() && *first > 1 && walk.report.records > 0 && walk.report.first_seq != *first {
                walk.fail(
                    *first,
                    format!("segment {} should start at {first}", seg.display()),
                    seg.display().to_string(),
                );
                break;
            }
        }
        checkpoint_files.insert(0, path.join(CHECKPOINTS_FILE));
    } else {
        walk.file(&mut chain_id, path)?;
    }
    walk.report.chain_id = chain_id.clone();
    if walk.report.broken.is_none() {
        for f in &checkpoint_files {
            walk.external(&chain_id, f)?;
            if walk.report.broken.is_some() {
                break;
            }
        }
    }
    if walk.report.broken.is_none() && !walk.report.gaps.is_empty() {
        walk.report.notes.push(format!(
            "{} records are missing and recorded as lost by {} gap records",
            walk.report.records_lost(),
            walk.report.gaps.len()
        ));
    }
    if walk.report.broken.is_none() {
        match walk.report.last_checkpoint_seq {
            Some(c) if c < walk.report.last_seq => walk.report.notes.push(format!(
                "records {}..{} follow the last checkpoint: only the hash chain protects them",
                c + 1,
                walk.report.last_seq
            )),
            None if walk.report.records > 0 => walk
                .report
                .notes
                .push("no checkpoint in the chain: truncation cannot be detected".into()),
            _ => {}
        }
    }
    Ok(walk.report)
}
