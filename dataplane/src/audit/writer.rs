//! The spool writer: one thread that drains the bounded queue, assigns sequence numbers,
//! chains, appends to the current segment, fsyncs per policy, writes checkpoints, rotates
//! segments and applies retention.
//!
//! # When records cannot be kept
//!
//! Nothing is lost silently: every loss is counted in `tollgate_audit_records_dropped_total`,
//! logged, and sealed into the chain as a `gap` record ([`super::events::Gap`]) that `audit verify`
//! reports:
//!
//! * **Retention** deleting segments a sink has not shipped (the spool's size cap): a `gap`
//!   naming the deleted sequence range and the sinks that were behind.
//! * **A full queue** (the writer fell behind the request path): a `gap` with the count, once
//!   the writer catches up.
//! * **An unwritable spool** (a full disk, an I/O error): sealed records wait in a buffer of
//!   at most [`MAX_PENDING_BYTES`] and the write is retried every 100 ms; events arriving while
//!   it is full are dropped (the request path never waits and requests are not refused), and
//!   once a write succeeds the buffer is written, then a `gap` with their count and time span.
//!   A shutdown while the spool is still unwritable loses the buffer (logged and counted).

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use tokio::sync::watch;

use super::AuditError;
use super::checkpoint::{Signer, unsigned_body};
use super::events::{Event, Gap};
use super::metrics::AuditMetrics;
use super::record::seal;
use super::spool::{self, CHECKPOINTS_FILE, Tail};
use crate::policy::document::{AuditSpool, FsyncPolicy};

/// Most events appended per write (one fsync covers them all).
const MAX_BATCH: usize = 4096;

/// Most bytes of sealed records held while the spool cannot be written (8 MiB); past it,
/// events are dropped and later accounted for by a `gap` record.
pub const MAX_PENDING_BYTES: usize = 8 << 20;

/// What the writer is told.
pub(crate) enum Msg {
    /// Append an event.
    Event(Event),
    /// Reply with the head sequence number once everything before this is written.
    Flush(SyncSender<u64>),
    /// Write a final checkpoint, sync and stop.
    Shutdown(SyncSender<u64>),
}

/// Writer settings that may change on a policy reload.
#[derive(Debug, Default)]
pub struct WriterSettings {
    /// Spool durability, rotation and retention.
    pub spool: AuditSpool,
    /// Checkpoint signer (unsigned checkpoints when absent).
    pub signer: Option<Arc<Signer>>,
    /// A checkpoint after at most this many records.
    pub checkpoint_every_records: u64,
    /// A checkpoint at least this often while records arrive.
    pub checkpoint_every: Duration,
}

impl WriterSettings {
    /// Defaults: every batch fsynced, unsigned checkpoints every 1000 records or 60 s.
    pub fn with_spool(spool: AuditSpool) -> Self {
        Self {
            spool,
            signer: None,
            checkpoint_every_records: 1000,
            checkpoint_every: Duration::from_secs(60),
        }
    }
}

/// The acknowledged offset of every running sink (the writer keeps unshipped segments).
#[derive(Debug, Default)]
pub struct Acks(Mutex<HashMap<String, u64>>);

impl Acks {
    /// Records `sink`'s acknowledged offset.
    pub fn set(&self, sink: &str, seq: u64) {
        if let Ok(mut m) = self.0.lock() {
            m.insert(sink.to_owned(), seq);
        }
    }

    /// Forgets a removed sink.
    pub fn remove(&self, sink: &str) {
        if let Ok(mut m) = self.0.lock() {
            m.remove(sink);
        }
    }

    /// The lowest acknowledged offset, or `None` without sinks.
    pub fn min(&self) -> Option<u64> {
        self.0.lock().ok().and_then(|m| m.values().copied().min())
    }

    /// The sinks that have not acknowledged record `seq`, by name.
    pub fn behind(&self, seq: u64) -> Vec<String> {
        let mut names: Vec<String> = self
            .0
            .lock()
            .map(|m| {
                m.iter()
                    .filter(|(_, a)| **a < seq)
                    .map(|(n, _)| n.clone())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }
}

/// Events lost before they had a sequence number, by reason, until a `gap` record says so.
#[derive(Debug, Default)]
pub(crate) struct Losses(Mutex<HashMap<&'static str, Loss>>);

#[derive(Debug, Clone, Copy)]
struct Loss {
    records: u64,
    since: jiff::Timestamp,
    until: jiff::Timestamp,
}

impl Losses {
    /// Counts one event lost for `reason`, which happened at `time`.
    pub(crate) fn add(&self, reason: &'static str, time: jiff::Timestamp) {
        if let Ok(mut m) = self.0.lock() {
            m.entry(reason)
                .and_modify(|l| {
                    l.records += 1;
                    l.since = l.since.min(time);
                    l.until = l.until.max(time);
                })
                .or_insert(Loss {
                    records: 1,
                    since: time,
                    until: time,
                });
        }
    }

    fn take(&self) -> Vec<(&'static str, Loss)> {
        let mut out: Vec<_> = self.0.lock().map(|mut m| m.drain().collect()).unwrap_or_default();
        out.sort_by_key(|(r, _)| *r);
        out
    }
}

struct Segment {
    file: File,
    len: u64,
    opened: Instant,
}

/// The writer's state.
pub(crate) struct Writer {
    dir: PathBuf,
    chain_id: String,
    seq: u64,
    head: [u8; 32],
    segment: Option<Segment>,
    checkpoints: File,
    checkpoints_len: u64,
    /// Sealed lines not written to the segment yet (bounded by [`MAX_PENDING_BYTES`]).
    pending: Vec<u8>,
    /// Checkpoint lines not written to `checkpoints.jsonl` yet.
    pending_cp: Vec<u8>,
    /// Gaps found by retention, to seal into the chain.
    gaps: Vec<Gap>,
    /// Events lost here (the spool was unwritable) or by the queue, for the next `gap`.
    losses: Arc<Losses>,
    /// Since when writes fail (logged once, and again when they succeed).
    failing_since: Option<Instant>,
    since_checkpoint: u64,
    last_checkpoint: Instant,
    last_sync: Instant,
    unsynced: bool,
    last_retention: Instant,
    settings: Arc<ArcSwap<WriterSettings>>,
    acks: Arc<Acks>,
    committed: watch::Sender<u64>,
    metrics: AuditMetrics,
}

impl Writer {
    /// Opens the spool at `dir` (creating it), recovering the chain's end.
    pub(crate) fn open(
        dir: &Path,
        settings: Arc<ArcSwap<WriterSettings>>,
        acks: Arc<Acks>,
        losses: Arc<Losses>,
        metrics: AuditMetrics,
    ) -> Result<(Writer, watch::Receiver<u64>), AuditError> {
        fs::create_dir_all(dir).map_err(|e| AuditError::io(format!("creating {}", dir.display()), e))?;
        let chain_id = spool::chain_id(dir)?;
        let Tail { seq, hash } = spool::recover(dir)?;
        let cp_path = dir.join(CHECKPOINTS_FILE);
        let checkpoints = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&cp_path)
            .map_err(|e| AuditError::io(format!("opening {}", cp_path.display()), e))?;
        let checkpoints_len = checkpoints.metadata().map(|m| m.len()).unwrap_or(0);
        let (committed, rx) = watch::channel(seq);
        metrics.head(seq);
        tracing::info!(dir = %dir.display(), chain_id = %chain_id, head_seq = seq, "audit spool open");
        Ok((
            Writer {
                dir: dir.to_owned(),
                chain_id,
                seq,
                head: hash,
                segment: None,
                checkpoints,
                checkpoints_len,
                pending: Vec::with_capacity(1 << 20),
                pending_cp: Vec::new(),
                gaps: Vec::new(),
                losses,
                failing_since: None,
                since_checkpoint: 0,
                last_checkpoint: Instant::now(),
                last_sync: Instant::now(),
                unsynced: false,
                last_retention: Instant::now() - Duration::from_secs(3600),
                settings,
                acks,
                committed,
                metrics,
            },
            rx,
        ))
    }

    /// The chain id.
    pub(crate) fn chain_id(&self) -> &str {
        &self.chain_id
    }

    /// Runs until told to shut down or every sender is gone.
    pub(crate) fn run(mut self, rx: Receiver<Msg>) {
        let mut waiting: Vec<SyncSender<u64>> = Vec::new();
        loop {
            let mut stop: Option<SyncSender<u64>> = None;
            let mut msgs = Vec::new();
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(m) => {
                    msgs.push(m);
                    while msgs.len() < MAX_BATCH {
                        match rx.try_recv() {
                            Ok(m) => msgs.push(m),
                            Err(_) => break,
                        }
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => stop = Some(std::sync::mpsc::sync_channel(1).0),
            }
            let settings = self.settings.load_full();
            self.seal_gaps();
            for m in msgs {
                match m {
                    Msg::Event(e) => {
                        self.metrics.queue_depth().dec();
                        if self.pending.len() >= MAX_PENDING_BYTES {
                            // The spool has not taken a write for a while: keep memory bounded.
                            self.metrics.dropped("spool_unwritable", 1);
                            self.losses.add("spool_unwritable", e.time);
                            continue;
                        }
                        self.append(&e);
                        if self.since_checkpoint >= settings.checkpoint_every_records.max(1) {
                            self.checkpoint(&settings);
                        }
                    }
                    Msg::Flush(reply) => waiting.push(reply),
                    Msg::Shutdown(reply) => stop = Some(reply),
                }
            }
            let timed =
                self.since_checkpoint > 0 && self.last_checkpoint.elapsed() >= settings.checkpoint_every;
            if timed || (stop.is_some() && self.since_checkpoint > 0) {
                self.checkpoint(&settings);
            }
            let written = self.write(&settings.spool);
            self.metrics.pending_bytes(self.pending.len());
            if written {
                if self.unsynced
                    && settings.spool.fsync == FsyncPolicy::Interval
                    && self.last_sync.elapsed() >= Duration::from_millis(settings.spool.fsync_interval_ms)
                {
                    self.sync();
                }
                self.committed.send_replace(self.seq);
                self.metrics.head(self.seq);
                for w in waiting.drain(..) {
                    let _ = w.try_send(self.seq);
                }
                self.maybe_rotate(&settings.spool);
                if self.last_retention.elapsed() >= Duration::from_secs(30) {
                    self.retention(&settings.spool);
                }
            }
            if let Some(reply) = stop {
                if written && !self.gaps.is_empty() {
                    // Retention ran in this last round: its gap goes into the chain too.
                    self.seal_gaps();
                    self.write(&settings.spool);
                }
                self.sync();
                let unwritten = self.pending.iter().filter(|&&b| b == b'\n').count() as u64;
                if unwritten > 0 {
                    self.metrics.dropped("spool_unwritable", unwritten);
                    tracing::error!(
                        records = unwritten,
                        "audit spool unwritable at shutdown: sealed records lost"
                    );
                }
                tracing::info!(head_seq = self.seq, "audit spool closed");
                let _ = reply.try_send(self.seq);
                return;
            }
            if !written {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    /// Seals `gap` records: retention's at once, lost events' once the spool takes writes
    /// again (so the gap follows what was held back).
    fn seal_gaps(&mut self) {
        for g in std::mem::take(&mut self.gaps) {
            self.seal_event("gap", &g);
        }
        if !self.pending.is_empty() {
            return;
        }
        for (reason, loss) in self.losses.take() {
            let gap = Gap {
                reason,
                records: loss.records,
                first_seq: None,
                last_seq: None,
                sinks: Vec::new(),
                since: Some(loss.since.to_string()),
                until: Some(loss.until.to_string()),
            };
            tracing::error!(
                reason,
                records = loss.records,
                "audit records lost: sealing a gap record"
            );
            self.seal_event("gap", &gap);
        }
    }

    fn seal_event(&mut self, kind: &'static str, body: &impl serde::Serialize) {
        self.append(&Event::now(kind, body));
    }

    fn append(&mut self, e: &Event) {
        let time = e.time.to_string();
        match seal(&self.chain_id, self.seq + 1, &time, e.kind, &e.body, &self.head) {
            Ok((line, hash)) => {
                self.pending.extend_from_slice(&line);
                self.seq += 1;
                self.head = hash;
                self.since_checkpoint += 1;
                self.metrics.spooled(e.kind);
            }
            Err(err) => {
                self.metrics.dropped("encode", 1);
                tracing::error!(kind = e.kind, error = %err, "audit event cannot be encoded: dropped");
            }
        }
    }

    fn checkpoint(&mut self, settings: &WriterSettings) {
        let body = match &settings.signer {
            Some(s) => s.checkpoint_body(&self.chain_id, self.seq, &self.head),
            None => unsigned_body(self.seq, &self.head),
        };
        let time = jiff::Timestamp::now().to_string();
        if let Ok((line, hash)) = seal(
            &self.chain_id,
            self.seq + 1,
            &time,
            "checkpoint",
            &body,
            &self.head,
        ) {
            self.pending.extend_from_slice(&line);
            self.pending_cp.extend_from_slice(&line);
            self.seq += 1;
            self.head = hash;
            self.metrics.spooled("checkpoint");
        }
        self.since_checkpoint = 0;
        self.last_checkpoint = Instant::now();
    }

    /// Writes what is pending; false while the spool refuses writes (the lines stay pending).
    fn write(&mut self, spool: &AuditSpool) -> bool {
        match self.try_write(spool) {
            Ok(()) => {
                if let Some(since) = self.failing_since.take() {
                    tracing::warn!(
                        failed_for_ms = since.elapsed().as_millis() as u64,
                        "audit spool writable again"
                    );
                }
                true
            }
            Err(e) => {
                self.metrics.failure("spool");
                if self.failing_since.is_none() {
                    self.failing_since = Some(Instant::now());
                    tracing::error!(
                        error = %e,
                        pending_bytes = self.pending.len(),
                        "audit spool write failed; retrying every 100 ms, holding at most {MAX_PENDING_BYTES} bytes, then dropping events (they become a gap record)"
                    );
                }
                false
            }
        }
    }

    fn try_write(&mut self, spool: &AuditSpool) -> Result<(), AuditError> {
        if !self.pending.is_empty() {
            if self.segment.is_none() {
                // Name the segment by the first pending record.
                let first = first_seq_of(&self.pending).unwrap_or(self.seq);
                let path = self.dir.join(spool::segment_name(first));
                let file = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .map_err(|e| AuditError::io(format!("opening {}", path.display()), e))?;
                spool::sync_dir(&self.dir);
                self.segment = Some(Segment {
                    len: file.metadata().map(|m| m.len()).unwrap_or(0),
                    file,
                    opened: Instant::now(),
                });
            }
            let Some(seg) = self.segment.as_mut() else {
                return Ok(());
            };
            if let Err(e) = seg.file.write_all(&self.pending) {
                // Cut a partial append so the retry writes whole lines, and reopen then (the
                // file may be gone or replaced by the time there is room).
                let _ = seg.file.set_len(seg.len);
                self.segment = None;
                return Err(AuditError::io("appending to the audit segment", e));
            }
            seg.len += self.pending.len() as u64;
            self.pending.clear();
            self.unsynced = true;
        }
        if !self.pending_cp.is_empty() {
            // The chain holds the checkpoints already; this copy is retried on its own.
            match self.checkpoints.write_all(&self.pending_cp) {
                Ok(()) => {
                    self.checkpoints_len += self.pending_cp.len() as u64;
                    self.pending_cp.clear();
                }
                Err(e) => {
                    let _ = self.checkpoints.set_len(self.checkpoints_len);
                    if self.pending_cp.len() > MAX_PENDING_BYTES {
                        self.pending_cp.clear();
                    }
                    tracing::error!(error = %e, "appending to checkpoints.jsonl failed; will retry");
                }
            }
        }
        if spool.fsync == FsyncPolicy::EveryBatch {
            self.sync();
        }
        Ok(())
    }

    fn sync(&mut self) {
        if !self.unsynced {
            return;
        }
        let started = Instant::now();
        if let Some(seg) = &self.segment {
            if let Err(e) = seg.file.sync_data() {
                tracing::error!(error = %e, "audit segment fsync failed");
            }
        }
        let _ = self.checkpoints.sync_data();
        self.metrics.fsync(started.elapsed().as_secs_f64());
        self.unsynced = false;
        self.last_sync = Instant::now();
    }

    fn maybe_rotate(&mut self, spool: &AuditSpool) {
        let Some(seg) = &self.segment else { return };
        if seg.len >= spool.segment_max_bytes.max(1)
            || seg.opened.elapsed() >= Duration::from_secs(spool.segment_max_age_secs.max(1))
        {
            self.sync();
            self.segment = None;
            self.retention(spool);
        }
    }

    /// Deletes closed segments every sink has shipped once they are older than the retention
    /// period, and the oldest closed segments (shipped or not) past the size cap; records no
    /// sink had shipped become a `gap` record.
    fn retention(&mut self, spool: &AuditSpool) {
        self.last_retention = Instant::now();
        let Ok(segs) = spool::list_segments(&self.dir) else {
            return;
        };
        let shipped = self.acks.min().unwrap_or(self.seq);
        // A segment is closed when a later one exists or when no segment is open.
        let open_first = self.segment.as_ref().and_then(|_| segs.last().map(|s| s.0));
        let mut sized: Vec<(u64, u64, PathBuf, u64, SystemTime)> = Vec::new();
        for (i, (first, path)) in segs.iter().enumerate() {
            let last = segs.get(i + 1).map_or(self.seq, |n| n.0 - 1);
            let meta = fs::metadata(path).ok();
            let len = meta.as_ref().map_or(0, |m| m.len());
            let mtime = meta.and_then(|m| m.modified().ok()).unwrap_or(SystemTime::now());
            sized.push((*first, last, path.clone(), len, mtime));
        }
        let mut total: u64 = sized.iter().map(|s| s.3).sum();
        let retention = Duration::from_secs(spool.retention_secs);
        for (first, last, path, len, mtime) in &sized {
            if Some(*first) == open_first || (*first > self.seq) {
                continue;
            }
            let old = mtime.elapsed().unwrap_or_default() >= retention;
            let over = total > spool.max_bytes;
            let fully_shipped = *last <= shipped;
            if (old && fully_shipped) || over {
                if fs::remove_file(path).is_ok() {
                    total = total.saturating_sub(*len);
                    if !fully_shipped {
                        let from = (shipped + 1).max(*first);
                        let lost = last + 1 - from;
                        self.metrics.dropped("retention", lost);
                        let sinks = self.acks.behind(*last);
                        tracing::error!(
                            segment = %path.display(),
                            records = lost,
                            first_seq = from,
                            last_seq = *last,
                            sinks = ?sinks,
                            "audit spool over its size cap: deleted records no sink has shipped yet (a gap record follows)"
                        );
                        self.gaps.push(Gap {
                            reason: "retention",
                            records: lost,
                            first_seq: Some(from),
                            last_seq: Some(*last),
                            sinks,
                            since: None,
                            until: None,
                        });
                    }
                }
            } else {
                break;
            }
        }
    }
}

/// The sequence number of the first line of a batch.
fn first_seq_of(buf: &[u8]) -> Option<u64> {
    let end = buf.iter().position(|&b| b == b'\n')?;
    #[derive(serde::Deserialize)]
    struct Seq {
        seq: u64,
    }
    serde_json::from_slice::<Seq>(&buf[..end]).ok().map(|s| s.seq)
}
