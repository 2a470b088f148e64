//! The spool directory: segment files, recovery after a crash, per-sink acknowledged
//! offsets, and reading records back for shipping.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use serde::Deserialize;

use super::AuditError;
use super::record::{GENESIS, Record};

/// File holding the chain id.
pub const CHAIN_ID_FILE: &str = "chain.id";
/// File every checkpoint record is also appended to.
pub const CHECKPOINTS_FILE: &str = "checkpoints.jsonl";

/// The file name of the segment whose first record is `first_seq`.
pub fn segment_name(first_seq: u64) -> String {
    format!("seg-{first_seq:020}.jsonl")
}

/// Segments in `dir`, ordered by first sequence number.
pub fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, AuditError> {
    let mut out = Vec::new();
    let entries = fs::read_dir(dir).map_err(|e| AuditError::io(format!("listing {}", dir.display()), e))?;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(seq) = name
            .strip_prefix("seg-")
            .and_then(|s| s.strip_suffix(".jsonl"))
            .and_then(|s| s.parse::<u64>().ok())
        {
            out.push((seq, entry.path()));
        }
    }
    out.sort_unstable_by_key(|(s, _)| *s);
    Ok(out)
}

/// Reads the chain id, or creates one (16 random bytes in hex) for a new spool.
pub fn chain_id(dir: &Path) -> Result<String, AuditError> {
    let path = dir.join(CHAIN_ID_FILE);
    match fs::read_to_string(&path) {
        Ok(s) if !s.trim().is_empty() => return Ok(s.trim().to_owned()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(AuditError::io(format!("reading {}", path.display()), e)),
    }
    let mut bytes = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .map_err(|_| AuditError::Key("the system random generator failed".into()))?;
    let id = hex::encode(bytes);
    write_atomically(&path, id.as_bytes())?;
    Ok(id)
}

/// Writes a small file by temp file, fsync and rename, then fsyncs the directory.
pub fn write_atomically(path: &Path, content: &[u8]) -> Result<(), AuditError> {
    let tmp = path.with_extension("tmp");
    let ctx = |what: &str| format!("{what} {}", tmp.display());
    let mut f = File::create(&tmp).map_err(|e| AuditError::io(ctx("creating"), e))?;
    f.write_all(content)
        .map_err(|e| AuditError::io(ctx("writing"), e))?;
    f.sync_all().map_err(|e| AuditError::io(ctx("syncing"), e))?;
    fs::rename(&tmp, path).map_err(|e| AuditError::io(ctx("renaming"), e))?;
    if let Some(parent) = path.parent() {
        sync_dir(parent);
    }
    Ok(())
}

/// Fsyncs a directory so a new or renamed entry survives power loss (best effort).
pub fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Where the chain ends after recovery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tail {
    /// The last record's sequence number (0 for an empty spool).
    pub seq: u64,
    /// The last record's hash.
    pub hash: [u8; 32],
}

/// Finds the end of the chain, cutting a torn last line (a write the crash interrupted,
/// never reported as written) off the newest segment.
pub fn recover(dir: &Path) -> Result<Tail, AuditError> {
    let segments = list_segments(dir)?;
    for (_, path) in segments.iter().rev() {
        let ctx = |what: &str| format!("{what} {}", path.display());
        let mut data = Vec::new();
        File::open(path)
            .and_then(|mut f| f.read_to_end(&mut data))
            .map_err(|e| AuditError::io(ctx("reading"), e))?;
        let complete = data.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        if complete < data.len() {
            tracing::warn!(
                segment = %path.display(),
                bytes = data.len() - complete,
                "audit spool: cutting a torn last line left by a crash"
            );
            let f = OpenOptions::new()
                .write(true)
                .open(path)
                .map_err(|e| AuditError::io(ctx("opening"), e))?;
            f.set_len(complete as u64)
                .and_then(|_| f.sync_all())
                .map_err(|e| AuditError::io(ctx("truncating"), e))?;
        }
        let body = &data[..complete];
        let Some(last) = body[..body.len().saturating_sub(1)]
            .split(|&b| b == b'\n')
            .rev()
            .find(|l| !l.is_empty())
        else {
            continue;
        };
        let r = Record::parse(last)
            .map_err(|e| AuditError::Malformed(format!("last record of {}: {e}", path.display())))?;
        return Ok(Tail {
            seq: r.seq,
            hash: r.hash,
        });
    }
    Ok(Tail {
        seq: 0,
        hash: GENESIS,
    })
}

fn offset_path(dir: &Path, sink: &str) -> PathBuf {
    dir.join(format!("sink-{sink}.offset"))
}

/// The last sequence number `sink` acknowledged, if it ever did.
pub fn read_offset(dir: &Path, sink: &str) -> Option<u64> {
    fs::read_to_string(offset_path(dir, sink))
        .ok()
        .and_then(|s| s.trim().parse().ok())
}

/// Durably records that `sink` acknowledged everything up to `seq`.
pub fn write_offset(dir: &Path, sink: &str, seq: u64) -> Result<(), AuditError> {
    write_atomically(&offset_path(dir, sink), format!("{seq}\n").as_bytes())
}

/// A spooled record ready to ship.
#[derive(Debug, Clone)]
pub struct Spooled {
    /// Sequence number.
    pub seq: u64,
    /// Event id.
    pub id: String,
    /// Event time (RFC 3339).
    pub time: String,
    /// The record's JSON line, without the newline.
    pub line: Bytes,
}

#[derive(Deserialize)]
struct Head {
    seq: u64,
    id: String,
    time: String,
}

/// Reads records after a given sequence number, segment by segment.
pub struct SpoolReader {
    dir: PathBuf,
    next_seq: u64,
    cursor: Option<(u64, PathBuf, u64)>,
}

/// What one read returned.
#[derive(Debug, Default)]
pub struct ReadBatch {
    /// The records, in order.
    pub records: Vec<Spooled>,
    /// Records skipped because retention deleted them before they were read.
    pub lost: u64,
}

impl SpoolReader {
    /// A reader positioned after `acked`.
    pub fn new(dir: &Path, acked: u64) -> Self {
        Self {
            dir: dir.to_owned(),
            next_seq: acked + 1,
            cursor: None,
        }
    }

    /// The next sequence number this reader returns.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Up to `max_records` records (and about `max_bytes`) with sequence numbers from the
    /// reader's position up to `upto`.
    pub fn read(&mut self, upto: u64, max_records: usize, max_bytes: usize) -> Result<ReadBatch, AuditError> {
        let mut out = ReadBatch::default();
        let mut bytes = 0usize;
        while self.next_seq <= upto && out.records.len() < max_records && bytes < max_bytes {
            let (first, path, offset) = match self.cursor.clone() {
                Some(c) => c,
                None => {
                    let segs = list_segments(&self.dir)?;
                    let found = segs
                        .iter()
                        .rev()
                        .find(|(s, _)| *s <= self.next_seq)
                        .or(segs.first());
                    let Some((first, path)) = found.cloned() else {
                        break;
                    };
                    if first > self.next_seq {
                        out.lost += first - self.next_seq;
                        self.next_seq = first;
                    }
                    (first, path, 0)
                }
            };
            let mut f = match File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    // Retention removed it under us: find the next one.
                    self.cursor = None;
                    let segs = list_segments(&self.dir)?;
                    match segs.iter().find(|(s, _)| *s > first) {
                        Some((s, _)) if *s > self.next_seq => {
                            out.lost += s - self.next_seq;
                            self.next_seq = *s;
                        }
                        Some(_) => {}
                        None => break,
                    }
                    continue;
                }
                Err(e) => return Err(AuditError::io(format!("opening {}", path.display()), e)),
            };
            let ctx = || format!("reading {}", path.display());
            f.seek(SeekFrom::Start(offset))
                .map_err(|e| AuditError::io(ctx(), e))?;
            let want = (max_bytes - bytes).max(64 << 10) as u64;
            let mut buf = Vec::new();
            (&mut f)
                .take(want)
                .read_to_end(&mut buf)
                .map_err(|e| AuditError::io(ctx(), e))?;
            if buf.len() as u64 == want && !buf.contains(&b'\n') {
                // One record longer than the read size: read the rest of the segment.
                f.read_to_end(&mut buf).map_err(|e| AuditError::io(ctx(), e))?;
            }
            let mut pos = 0usize;
            let mut progressed = false;
            let mut reached_upto = false;
            while let Some(nl) = buf[pos..].iter().position(|&b| b == b'\n') {
                let line = &buf[pos..pos + nl];
                let head: Head = serde_json::from_slice(line).map_err(|e| {
                    AuditError::Malformed(format!(
                        "{} at byte {}: {e}",
                        path.display(),
                        offset as usize + pos
                    ))
                })?;
                if head.seq > upto {
                    reached_upto = true;
                    break;
                }
                pos += nl + 1;
                progressed = true;
                if head.seq < self.next_seq {
                    continue;
                }
                self.next_seq = head.seq + 1;
                bytes += line.len();
                out.records.push(Spooled {
                    seq: head.seq,
                    id: head.id,
                    time: head.time,
                    line: Bytes::copy_from_slice(line),
                });
                if out.records.len() >= max_records || bytes >= max_bytes {
                    break;
                }
            }
            self.cursor = Some((first, path.clone(), offset + pos as u64));
            if reached_upto {
                break;
            }
            if !progressed && (buf.len() as u64) < want {
                // End of this segment: move on only if a later segment exists (this one is closed).
                let segs = list_segments(&self.dir)?;
                match segs.iter().find(|(s, _)| *s > first) {
                    Some((s, p)) => {
                        if *s > self.next_seq {
                            out.lost += s - self.next_seq;
                            self.next_seq = *s;
                        }
                        self.cursor = Some((*s, p.clone(), 0));
                    }
                    None => break,
                }
            } else if !progressed {
                break;
            }
        }
        Ok(out)
    }
}
