//! The settlement outbox: settlements the ledger did not take (it was unreachable through
//! every retry of the request path) wait here, in order, and are replayed once it answers
//! again. Settlements are idempotent by request id (see the [module docs](super)), so a
//! replay of one whose first attempt did land changes nothing.
//!
//! # Guarantees and limits
//!
//! * **Bounded**: at most `capacity` settlements wait ([`DEFAULT_CAPACITY`], 10,000). One
//!   that finds the outbox full is dropped, logged with its cost and counted in
//!   `tollgate_ledger_outbox_dropped_total` and `..._dropped_micro_usd_total`: never silently.
//! * **Persisted** when given a file (`--ledger-outbox`; by default `PATH.outbox` beside an
//!   embedded ledger's journal `file:PATH`): JSON lines `{"op":"add",...}` and
//!   `{"op":"done","id":..}`, fsynced as written, compacted on open and emptied once nothing
//!   waits. A restart replays what a crash left. Without a file (`memory` and Redis ledgers
//!   unless `--ledger-outbox` is given) the outbox lives and dies with the process.
//! * **Replay**: in order, as soon as a settlement is added and then every 5 s while any
//!   wait, backing off up to 30 s while the ledger still fails. A replay carries the replay
//!   time as `now_ms` (the ledger's clock for expiries). Replayed settlements move spend,
//!   not thresholds: soft budget thresholds crossed by them are not reported.
//! * A replay later than [`super::SETTLEMENT_ID_TTL_MS`] after a first attempt whose reply
//!   was lost (applied, but the caller never knew) counts twice; within it, once.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use super::{Admission, Ledger, LedgerError, Settlement};

/// Default bound on waiting settlements.
pub const DEFAULT_CAPACITY: usize = 10_000;

/// How often waiting settlements are retried while the ledger answers nothing else.
const REPLAY_EVERY: Duration = Duration::from_secs(5);
/// The longest wait between replay attempts while the ledger keeps failing.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// A settlement waiting for the ledger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    /// The admission it settles (its request id is the idempotency id).
    pub admission: Admission,
    /// What the request used.
    pub settlement: Settlement,
    /// When it was queued, unix ms.
    pub queued_at_ms: i64,
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum Line {
    Add(Pending),
    Done { id: String },
}

/// The outbox's metrics (registered under `tollgate_ledger_outbox_`).
#[derive(Clone, Default)]
pub struct OutboxMetrics {
    pending: Gauge,
    replayed: Counter,
    dropped: Counter,
    dropped_micro_usd: Counter,
}

impl OutboxMetrics {
    /// Registers every metric under `ledger_outbox_`.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("ledger_outbox");
        r.register(
            "pending",
            "Settlements waiting for the ledger to answer again",
            self.pending.clone(),
        );
        r.register(
            "replayed",
            "Settlements applied from the outbox after the ledger came back",
            self.replayed.clone(),
        );
        r.register(
            "dropped",
            "Settlements lost because the outbox was full (each logged with its cost)",
            self.dropped.clone(),
        );
        r.register(
            "dropped_micro_usd",
            "Spend of the settlements lost because the outbox was full",
            self.dropped_micro_usd.clone(),
        );
    }
}

struct State {
    entries: VecDeque<Pending>,
    /// The persisted log, when there is one.
    file: Option<File>,
}

/// Settlements waiting for the ledger (cheap to share behind an `Arc`).
pub struct Outbox {
    state: Mutex<State>,
    path: Option<PathBuf>,
    capacity: usize,
    wake: Notify,
    metrics: OutboxMetrics,
}

impl Outbox {
    /// An outbox in memory only.
    pub fn memory(capacity: usize, metrics: OutboxMetrics) -> Outbox {
        Outbox {
            state: Mutex::new(State {
                entries: VecDeque::new(),
                file: None,
            }),
            path: None,
            capacity: capacity.max(1),
            wake: Notify::new(),
            metrics,
        }
    }

    /// An outbox persisted at `path`: what a previous process left there waits again
    /// (compacted: settlements marked done are dropped).
    pub fn open(path: &Path, capacity: usize, metrics: OutboxMetrics) -> Result<Outbox, LedgerError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let mut entries: VecDeque<Pending> = VecDeque::new();
        if path.exists() {
            for line in BufReader::new(File::open(path)?).lines() {
                // A torn last line (crash mid-write) is skipped.
                match serde_json::from_str::<Line>(&line?) {
                    Ok(Line::Add(p)) => {
                        if !entries
                            .iter()
                            .any(|e| e.admission.request_id == p.admission.request_id)
                        {
                            entries.push_back(p);
                        }
                    }
                    Ok(Line::Done { id }) => entries.retain(|e| e.admission.request_id != id),
                    Err(_) => {}
                }
            }
        }
        let tmp = path.with_extension("compacting");
        {
            let mut f = File::create(&tmp)?;
            for e in &entries {
                writeln!(
                    f,
                    "{}",
                    serde_json::to_string(&Line::Add(e.clone())).unwrap_or_default()
                )?;
            }
            f.sync_all()?;
        }
        std::fs::rename(&tmp, path)?;
        let file = OpenOptions::new().append(true).open(path)?;
        if !entries.is_empty() {
            tracing::warn!(
                outbox = %path.display(),
                settlements = entries.len(),
                "ledger outbox: settlements left by the previous run will be replayed"
            );
        }
        metrics.pending.set(entries.len() as i64);
        Ok(Outbox {
            state: Mutex::new(State {
                entries,
                file: Some(file),
            }),
            path: Some(path.to_owned()),
            capacity: capacity.max(1),
            wake: Notify::new(),
            metrics,
        })
    }

    /// Settlements waiting.
    pub fn len(&self) -> usize {
        self.state.lock().map_or(0, |s| s.entries.len())
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Queues a settlement the ledger did not take. False (logged and counted) when the
    /// outbox is full and it is dropped.
    pub fn push(&self, admission: Admission, settlement: Settlement) -> bool {
        let Ok(mut st) = self.state.lock() else {
            return false;
        };
        if st
            .entries
            .iter()
            .any(|e| e.admission.request_id == admission.request_id)
        {
            return true;
        }
        if st.entries.len() >= self.capacity {
            drop(st);
            self.metrics.dropped.inc();
            self.metrics.dropped_micro_usd.inc_by(settlement.actual_micro_usd);
            tracing::error!(
                request_id = %admission.request_id,
                cost_micro_usd = settlement.actual_micro_usd,
                capacity = self.capacity,
                "ledger outbox full: settlement dropped, its spend is not recorded in the ledger"
            );
            return false;
        }
        let p = Pending {
            admission,
            settlement,
            queued_at_ms: jiff::Timestamp::now().as_millisecond(),
        };
        self.persist(&mut st, &Line::Add(p.clone()));
        st.entries.push_back(p);
        self.metrics.pending.set(st.entries.len() as i64);
        drop(st);
        self.wake.notify_one();
        true
    }

    /// Appends a line to the persisted log (best effort: the entry stays in memory).
    fn persist(&self, st: &mut State, line: &Line) {
        let Some(f) = st.file.as_mut() else { return };
        let mut bytes = serde_json::to_vec(line).unwrap_or_default();
        bytes.push(b'\n');
        if let Err(e) = f.write_all(&bytes).and_then(|_| f.sync_data()) {
            tracing::error!(
                outbox = %self.path.as_deref().map(|p| p.display().to_string()).unwrap_or_default(),
                error = %e,
                "ledger outbox not persisted: a restart before the replay would lose it"
            );
        }
    }

    /// Replays waiting settlements in order until one fails or none is left; returns how
    /// many were applied.
    pub async fn replay(&self, ledger: &dyn Ledger) -> Result<usize, LedgerError> {
        let mut applied = 0;
        loop {
            let next = self.state.lock().ok().and_then(|s| s.entries.front().cloned());
            let Some(mut p) = next else {
                return Ok(applied);
            };
            p.admission.now_ms = jiff::Timestamp::now().as_millisecond();
            ledger.settle(&p.admission, p.settlement).await?;
            applied += 1;
            self.metrics.replayed.inc();
            tracing::info!(
                request_id = %p.admission.request_id,
                cost_micro_usd = p.settlement.actual_micro_usd,
                waited_ms = p.admission.now_ms - p.queued_at_ms,
                "ledger outbox: settlement replayed"
            );
            let Ok(mut st) = self.state.lock() else {
                return Ok(applied);
            };
            let id = p.admission.request_id;
            st.entries.retain(|e| e.admission.request_id != id);
            if st.entries.is_empty() {
                if let Some(f) = st.file.as_mut() {
                    // Nothing waits: start the log afresh.
                    let _ = f.set_len(0).and_then(|_| f.sync_data());
                }
            } else {
                self.persist(&mut st, &Line::Done { id });
            }
            self.metrics.pending.set(st.entries.len() as i64);
        }
    }

    /// Replays for as long as the process runs: when a settlement is queued, every 5 s while
    /// any wait, backing off while the ledger fails.
    pub async fn run(self: Arc<Self>, ledger: Arc<dyn Ledger>) {
        let mut backoff = REPLAY_EVERY;
        loop {
            if self.is_empty() {
                self.wake.notified().await;
            }
            match self.replay(&*ledger).await {
                Ok(_) => backoff = REPLAY_EVERY,
                Err(e) => {
                    tracing::warn!(
                        error = %e,
                        waiting = self.len(),
                        retry_in_s = backoff.as_secs(),
                        "ledger outbox: the ledger still fails"
                    );
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            }
            if !self.is_empty() {
                tokio::time::sleep(backoff).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;
    use crate::ledger::conformance::admission;
    use crate::ledger::memory::MemoryLedger;
    use crate::ledger::{BudgetState, LedgerFuture};

    /// The embedded ledger, failing its next `fail` settlements.
    struct Flaky {
        inner: MemoryLedger,
        fail: AtomicU32,
    }

    impl Ledger for Flaky {
        fn admit<'a>(&'a self, a: &'a Admission) -> LedgerFuture<'a, Result<(), crate::ledger::Refusal>> {
            self.inner.admit(a)
        }

        fn settle<'a>(&'a self, a: &'a Admission, s: Settlement) -> LedgerFuture<'a, Vec<u64>> {
            if self
                .fail
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
            {
                return Box::pin(async { Err(LedgerError::Unavailable("down (test)".into())) });
            }
            self.inner.settle(a, s)
        }

        fn budget_states<'a>(&'a self, c: &'a [String], now: i64) -> LedgerFuture<'a, Vec<BudgetState>> {
            self.inner.budget_states(c, now)
        }

        fn kind(&self) -> &'static str {
            "flaky"
        }
    }

    const EXP: i64 = 4_000_000_000_000;

    fn s(usd: u64) -> Settlement {
        Settlement {
            actual_micro_usd: usd,
            actual_tokens: 0,
        }
    }

    async fn spent(l: &dyn Ledger) -> u64 {
        l.budget_states(&["b:o".into()], 0).await.unwrap()[0].spent
    }

    #[tokio::test]
    async fn replays_in_order_once_the_ledger_answers_and_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.outbox");
        let ledger = Flaky {
            inner: MemoryLedger::ephemeral(),
            fail: AtomicU32::new(1),
        };
        let o = Outbox::open(&path, 10, OutboxMetrics::default()).unwrap();
        for (id, usd) in [("r1", 100), ("r2", 20), ("r3", 3)] {
            assert!(o.push(admission(id, 0, &[("b:o", 1_000_000, EXP)], 0), s(usd)));
        }
        assert!(
            o.push(admission("r1", 0, &[("b:o", 1_000_000, EXP)], 0), s(100)),
            "queued once"
        );
        assert_eq!(o.len(), 3);
        assert!(o.replay(&ledger).await.is_err(), "still down");
        assert_eq!(o.len(), 3, "nothing lost while it fails");
        assert_eq!(o.replay(&ledger).await.unwrap(), 3);
        assert_eq!(spent(&ledger).await, 123);
        assert!(o.is_empty());
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0, "emptied");

        // A crash with settlements waiting: the next process replays them.
        let o = Outbox::open(&path, 10, OutboxMetrics::default()).unwrap();
        o.push(admission("r4", 0, &[("b:o", 1_000_000, EXP)], 0), s(4000));
        o.push(admission("r5", 0, &[("b:o", 1_000_000, EXP)], 0), s(50000));
        drop(o);
        let o = Outbox::open(&path, 10, OutboxMetrics::default()).unwrap();
        assert_eq!(o.len(), 2, "persisted across the restart");
        assert_eq!(o.replay(&ledger).await.unwrap(), 2);
        assert_eq!(spent(&ledger).await, 54_123);
        // Replayed again (say the done line was lost): idempotent, nothing changes.
        o.push(admission("r5", 0, &[("b:o", 1_000_000, EXP)], 0), s(50000));
        assert_eq!(o.replay(&ledger).await.unwrap(), 1);
        assert_eq!(spent(&ledger).await, 54_123);
    }

    #[tokio::test]
    async fn a_full_outbox_drops_and_counts() {
        let metrics = OutboxMetrics::default();
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        let o = Outbox::memory(2, metrics);
        assert!(o.push(admission("a", 0, &[], 0), s(1)));
        assert!(o.push(admission("b", 0, &[], 0), s(2)));
        assert!(!o.push(admission("c", 0, &[], 0), s(700)));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(text.contains("ledger_outbox_dropped_total 1"), "{text}");
        assert!(
            text.contains("ledger_outbox_dropped_micro_usd_total 700"),
            "{text}"
        );
        assert!(text.contains("ledger_outbox_pending 2"), "{text}");
    }

    #[tokio::test]
    async fn the_replay_task_applies_what_is_queued() {
        let ledger: Arc<dyn Ledger> = Arc::new(MemoryLedger::ephemeral());
        let o = Arc::new(Outbox::memory(10, OutboxMetrics::default()));
        let task = tokio::spawn(o.clone().run(ledger.clone()));
        o.push(admission("q", 0, &[("b:o", 1_000_000, EXP)], 0), s(77));
        for _ in 0..200 {
            if spent(&*ledger).await == 77 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(spent(&*ledger).await, 77);
        assert!(o.is_empty());
        task.abort();
    }
}
