//! The embedded ledger: counters in memory behind one mutex, settled spend journaled to a
//! file so a restart keeps it.
//!
//! The journal is JSON lines holding absolute values, so replay is "last line per counter
//! wins"; it is compacted on open:
//!
//! * `{"c":counter,"s":spent,"x":expires_at_ms}`: a budget counter's settled spend;
//! * `{"d":request id,"r":[spent after, per budget],"x":until_ms}`: a settled request id and
//!   its answer, so a settlement repeated after a restart (an outbox replay) is not applied
//!   again (see [`super::SETTLEMENT_ID_TTL_MS`]).
//!
//! A settlement is journaled *before* it changes the counters, in one write: if the write
//! fails nothing changed (the partial line is cut off) and a retry is safe. Lines survive a
//! process crash once written (the kernel holds them) and are fsynced by
//! [`MemoryLedger::sync`], which the server calls every second and at shutdown.

use std::collections::{HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::{
    Admission, BudgetState, Ledger, LedgerError, LedgerFuture, RateKind, Refusal, SETTLEMENT_ID_TTL_MS,
    Settlement,
};

#[derive(Debug, Default)]
struct Budget {
    spent: u64,
    expires_at_ms: i64,
    /// request id -> (amount, lease expiry ms)
    reservations: HashMap<String, (u64, i64)>,
}

impl Budget {
    fn reserved(&mut self, now_ms: i64) -> u64 {
        self.reservations.retain(|_, (_, exp)| *exp > now_ms);
        self.reservations.values().map(|(a, _)| a).sum()
    }
}

#[derive(Debug, Default)]
struct Rate {
    value: u64,
    window_end_ms: i64,
}

#[derive(Debug, Default)]
struct State {
    budgets: HashMap<String, Budget>,
    rates: HashMap<String, Rate>,
    /// counter -> request id -> lease expiry ms
    slots: HashMap<String, HashMap<String, i64>>,
    /// request id -> tokens added at admission, per token counter (for the correction)
    admitted_tokens: HashMap<String, u64>,
    /// Settled request ids: their answer and until when (ledger clock, ms) it is kept.
    settled: HashMap<String, (Vec<u64>, i64)>,
    /// Settled ids in the order they expire (the TTL is constant, the clock never goes back).
    settled_order: VecDeque<(i64, String)>,
    /// The latest `now_ms` a caller passed: the ledger's clock for forgetting settled ids.
    clock: i64,
}

impl State {
    fn forget_settled(&mut self) {
        while let Some((until, _)) = self.settled_order.front() {
            if *until > self.clock {
                break;
            }
            if let Some((_, id)) = self.settled_order.pop_front() {
                if self.settled.get(&id).is_some_and(|(_, u)| *u <= self.clock) {
                    self.settled.remove(&id);
                }
            }
        }
    }

    fn remember_settled(&mut self, id: &str, after: Vec<u64>, until: i64) {
        self.settled.insert(id.to_owned(), (after, until));
        self.settled_order.push_back((until, id.to_owned()));
    }
}

/// A journal line as read: a counter (`c`) or a settled request id (`d`).
#[derive(Deserialize)]
struct JournalLine {
    #[serde(default)]
    c: Option<String>,
    #[serde(default)]
    s: u64,
    x: i64,
    #[serde(default)]
    d: Option<String>,
    #[serde(default)]
    r: Vec<u64>,
}

#[derive(Serialize)]
struct CounterLine<'a> {
    c: &'a str,
    s: u64,
    x: i64,
}

#[derive(Serialize)]
struct SettledLine<'a> {
    d: &'a str,
    r: &'a [u64],
    x: i64,
}

/// The open journal and its length (a failed append is cut back to it).
struct Journal {
    file: File,
    len: u64,
    /// Tests: fail this many appends, as a full disk would.
    #[cfg(test)]
    fail_appends: u32,
}

impl Journal {
    fn append(&mut self, lines: &[u8]) -> Result<(), LedgerError> {
        #[cfg(test)]
        if self.fail_appends > 0 {
            self.fail_appends -= 1;
            // Half the bytes land, as with ENOSPC mid-write.
            let _ = self.file.write_all(&lines[..lines.len() / 2]);
            let _ = self.file.set_len(self.len);
            return Err(LedgerError::Journal(std::io::Error::other(
                "no space left (test)",
            )));
        }
        if let Err(e) = self.file.write_all(lines) {
            // Cut the partial line, so the next append does not run into it.
            let _ = self.file.set_len(self.len);
            return Err(e.into());
        }
        self.len += lines.len() as u64;
        Ok(())
    }
}

/// The embedded ledger.
pub struct MemoryLedger {
    state: Mutex<State>,
    journal: Option<Mutex<Journal>>,
}

impl MemoryLedger {
    /// A ledger that forgets everything on exit (tests, and the fail-open local fallback).
    pub fn ephemeral() -> Self {
        Self {
            state: Mutex::new(State::default()),
            journal: None,
        }
    }

    /// Opens (or creates) the journal at `path`, replays it and compacts it.
    pub fn open(path: &Path, now_ms: i64) -> Result<Self, LedgerError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let mut state = State::default();
        if path.exists() {
            for line in BufReader::new(File::open(path)?).lines() {
                // A torn last line (crash mid-write) is skipped.
                let Ok(l) = serde_json::from_str::<JournalLine>(&line?) else {
                    continue;
                };
                if l.x <= now_ms {
                    continue;
                }
                if let Some(c) = l.c {
                    let b = state.budgets.entry(c).or_default();
                    b.spent = l.s;
                    b.expires_at_ms = l.x;
                } else if let Some(d) = l.d {
                    state.remember_settled(&d, l.r, l.x);
                }
            }
        }
        state.clock = now_ms;
        // Journal order is settlement order, so expiries are already sorted but for ties.
        state.settled_order.make_contiguous().sort();
        compact(path, &state)?;
        let file = OpenOptions::new().append(true).create(true).open(path)?;
        let len = file.metadata()?.len();
        Ok(Self {
            state: Mutex::new(state),
            journal: Some(Mutex::new(Journal {
                file,
                len,
                #[cfg(test)]
                fail_appends: 0,
            })),
        })
    }

    /// Flushes the journal to stable storage.
    pub fn sync(&self) -> Result<(), LedgerError> {
        if let Some(j) = &self.journal {
            let j = j.lock().map_err(|_| poisoned())?;
            j.file.sync_data()?;
        }
        Ok(())
    }

    /// Tests: the next `n` journal appends fail as on a full disk.
    #[cfg(test)]
    fn fail_next_appends(&self, n: u32) {
        if let Some(j) = &self.journal {
            j.lock().unwrap().fail_appends = n;
        }
    }

    fn admit_now(&self, a: &Admission) -> Result<Result<(), Refusal>, LedgerError> {
        let mut st = self.state.lock().map_err(|_| poisoned())?;
        st.clock = st.clock.max(a.now_ms);
        let now = a.now_ms;
        for (index, b) in a.budgets.iter().enumerate() {
            let counter = st.budgets.entry(b.counter.clone()).or_default();
            let reserved = counter.reserved(now);
            if counter
                .spent
                .saturating_add(reserved)
                .saturating_add(a.estimate_micro_usd)
                > b.limit_micro_usd
            {
                return Ok(Err(Refusal::Budget {
                    index,
                    spent: counter.spent,
                    reserved,
                }));
            }
        }
        for (index, r) in a.rates.iter().enumerate() {
            let full = match r.kind {
                RateKind::Requests | RateKind::Tokens => {
                    let rate = st.rates.entry(r.counter.clone()).or_default();
                    if rate.window_end_ms <= now {
                        *rate = Rate {
                            value: 0,
                            window_end_ms: r.window_end_ms,
                        };
                    }
                    if r.kind == RateKind::Requests {
                        rate.value + 1 > r.limit
                    } else {
                        rate.value >= r.limit
                    }
                }
                RateKind::Concurrent => {
                    let slots = st.slots.entry(r.counter.clone()).or_default();
                    slots.retain(|_, exp| *exp > now);
                    slots.len() as u64 + 1 > r.limit
                }
            };
            if full {
                let retry_after_ms = match r.kind {
                    RateKind::Concurrent => 1000,
                    _ => (r.window_end_ms - now).max(1),
                };
                return Ok(Err(Refusal::Rate {
                    index,
                    retry_after_ms,
                }));
            }
        }
        let lease_end = now + a.lease_ms;
        for b in &a.budgets {
            let counter = st.budgets.entry(b.counter.clone()).or_default();
            counter.expires_at_ms = counter.expires_at_ms.max(b.expires_at_ms);
            counter
                .reservations
                .insert(a.request_id.clone(), (a.estimate_micro_usd, lease_end));
        }
        for r in &a.rates {
            match r.kind {
                RateKind::Requests | RateKind::Tokens => {
                    if let Some(rate) = st.rates.get_mut(&r.counter) {
                        rate.value = rate.value.saturating_add(r.amount);
                    }
                }
                RateKind::Concurrent => {
                    st.slots
                        .entry(r.counter.clone())
                        .or_default()
                        .insert(a.request_id.clone(), lease_end);
                }
            }
        }
        if a.rates.iter().any(|r| r.kind == RateKind::Tokens) {
            let tokens = a
                .rates
                .iter()
                .find(|r| r.kind == RateKind::Tokens)
                .map_or(0, |r| r.amount);
            st.admitted_tokens.insert(a.request_id.clone(), tokens);
        }
        // Forget windows that ended, so memory stays bounded.
        st.rates.retain(|_, r| r.window_end_ms > now - 60_000);
        Ok(Ok(()))
    }

    fn settle_now(&self, a: &Admission, s: Settlement) -> Result<Vec<u64>, LedgerError> {
        let mut st = self.state.lock().map_err(|_| poisoned())?;
        st.clock = st.clock.max(a.now_ms);
        st.forget_settled();
        if let Some((after, _)) = st.settled.get(&a.request_id) {
            return Ok(after.clone());
        }
        // What every counter becomes (an admission names each counter once, but add up
        // correctly if one came twice).
        let mut next: Vec<(u64, i64)> = Vec::with_capacity(a.budgets.len());
        for (i, b) in a.budgets.iter().enumerate() {
            let earlier = a.budgets[..i].iter().rposition(|e| e.counter == b.counter);
            let (spent, expires) = match earlier {
                Some(j) => next[j],
                None => st
                    .budgets
                    .get(&b.counter)
                    .map_or((0, 0), |c| (c.spent, c.expires_at_ms)),
            };
            next.push((
                spent.saturating_add(s.actual_micro_usd),
                expires.max(b.expires_at_ms),
            ));
        }
        let after: Vec<u64> = next.iter().map(|(spent, _)| *spent).collect();
        let until = st.clock.saturating_add(SETTLEMENT_ID_TTL_MS);
        // Journal first: if the write fails, nothing has changed and a retry is safe.
        if let (Some(j), true) = (&self.journal, s.actual_micro_usd > 0) {
            let mut lines = Vec::new();
            for (b, (spent, x)) in a.budgets.iter().zip(&next) {
                let line = CounterLine {
                    c: &b.counter,
                    s: *spent,
                    x: *x,
                };
                serde_json::to_writer(&mut lines, &line).map_err(std::io::Error::from)?;
                lines.push(b'\n');
            }
            let done = SettledLine {
                d: &a.request_id,
                r: &after,
                x: until,
            };
            serde_json::to_writer(&mut lines, &done).map_err(std::io::Error::from)?;
            lines.push(b'\n');
            j.lock().map_err(|_| poisoned())?.append(&lines)?;
        }
        for (b, (spent, x)) in a.budgets.iter().zip(&next) {
            let counter = st.budgets.entry(b.counter.clone()).or_default();
            counter.reservations.remove(&a.request_id);
            counter.spent = *spent;
            counter.expires_at_ms = *x;
        }
        let admitted = st.admitted_tokens.remove(&a.request_id).unwrap_or(0);
        for r in &a.rates {
            match r.kind {
                RateKind::Tokens => {
                    if let Some(rate) = st.rates.get_mut(&r.counter) {
                        rate.value = rate
                            .value
                            .saturating_sub(admitted)
                            .saturating_add(s.actual_tokens);
                    }
                }
                RateKind::Concurrent => {
                    if let Some(slots) = st.slots.get_mut(&r.counter) {
                        slots.remove(&a.request_id);
                    }
                }
                RateKind::Requests => {}
            }
        }
        st.remember_settled(&a.request_id, after.clone(), until);
        Ok(after)
    }

    fn states_now(&self, counters: &[String], now_ms: i64) -> Result<Vec<BudgetState>, LedgerError> {
        let mut st = self.state.lock().map_err(|_| poisoned())?;
        Ok(counters
            .iter()
            .map(|c| match st.budgets.get_mut(c) {
                Some(b) => BudgetState {
                    spent: b.spent,
                    reserved: b.reserved(now_ms),
                },
                None => BudgetState::default(),
            })
            .collect())
    }
}

fn poisoned() -> LedgerError {
    LedgerError::Unavailable("ledger state lock poisoned".into())
}

/// Rewrites the journal with one line per live counter, atomically.
fn compact(path: &Path, state: &State) -> Result<(), LedgerError> {
    let tmp: PathBuf = path.with_extension("compacting");
    {
        let mut f = File::create(&tmp)?;
        let mut counters: Vec<_> = state.budgets.iter().collect();
        counters.sort_by(|a, b| a.0.cmp(b.0));
        for (c, b) in counters {
            let line = CounterLine {
                c,
                s: b.spent,
                x: b.expires_at_ms,
            };
            writeln!(f, "{}", serde_json::to_string(&line).unwrap_or_default())?;
        }
        for (until, id) in &state.settled_order {
            if let Some((after, _)) = state.settled.get(id) {
                let line = SettledLine {
                    d: id,
                    r: after,
                    x: *until,
                };
                writeln!(f, "{}", serde_json::to_string(&line).unwrap_or_default())?;
            }
        }
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    Ok(())
}

impl Ledger for MemoryLedger {
    fn admit<'a>(&'a self, a: &'a Admission) -> LedgerFuture<'a, Result<(), Refusal>> {
        Box::pin(async move { self.admit_now(a) })
    }

    fn settle<'a>(&'a self, a: &'a Admission, s: Settlement) -> LedgerFuture<'a, Vec<u64>> {
        Box::pin(async move { self.settle_now(a, s) })
    }

    fn budget_states<'a>(
        &'a self,
        counters: &'a [String],
        now_ms: i64,
    ) -> LedgerFuture<'a, Vec<BudgetState>> {
        Box::pin(async move { self.states_now(counters, now_ms) })
    }

    fn kind(&self) -> &'static str {
        "memory"
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;
    use crate::ledger::conformance;

    #[tokio::test]
    async fn conformance_ephemeral() {
        conformance::run_all(|| async { MemoryLedger::ephemeral() }).await;
    }

    #[tokio::test]
    async fn conformance_journaled() {
        let dir = tempfile::tempdir().unwrap();
        let n = std::sync::atomic::AtomicU32::new(0);
        conformance::run_all(|| {
            let i = n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let path = dir.path().join(format!("ledger-{i}.journal"));
            async move { MemoryLedger::open(&path, 0).unwrap() }
        })
        .await;
    }

    #[tokio::test]
    async fn spend_survives_a_restart_and_expired_windows_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spend.journal");
        let now = 1_000_000;
        {
            let l = MemoryLedger::open(&path, now).unwrap();
            let a = conformance::admission(
                "r1",
                100,
                &[("b:live:0", 1_000, now + 60_000), ("b:old:0", 1_000, now + 10)],
                now,
            );
            l.admit(&a).await.unwrap().unwrap();
            l.settle(
                &a,
                Settlement {
                    actual_micro_usd: 70,
                    actual_tokens: 0,
                },
            )
            .await
            .unwrap();
            l.sync().unwrap();
        }
        // A torn line from a crash mid-write is ignored.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"{\"c\":\"b:live")
            .unwrap();
        let l = MemoryLedger::open(&path, now + 1_000).unwrap();
        let s = l
            .budget_states(&["b:live:0".into(), "b:old:0".into()], now + 1_000)
            .await
            .unwrap();
        assert_eq!(
            s[0],
            BudgetState {
                spent: 70,
                reserved: 0
            },
            "spend persisted, reservation not"
        );
        assert_eq!(s[1], BudgetState::default(), "an ended window is forgotten");
        let journal = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            journal.lines().count(),
            2,
            "compacted to the live counter and the settled request id: {journal}"
        );
    }

    /// A journal write that fails (a full disk) leaves the counters as they were, so the
    /// request path's retry charges once; a settlement replayed after a restart (from the
    /// outbox) is recognised by its request id in the journal.
    #[tokio::test]
    async fn a_failed_journal_write_changes_nothing_and_retries_charge_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spend.journal");
        let now = 1_000_000;
        let budgets = [("b:day:0", 10_000, now + 86_400_000)];
        let s = Settlement {
            actual_micro_usd: 250,
            actual_tokens: 0,
        };
        let l = MemoryLedger::open(&path, now).unwrap();
        let a = conformance::admission("r1", 400, &budgets, now);
        l.admit(&a).await.unwrap().unwrap();
        l.fail_next_appends(1);
        assert!(l.settle(&a, s).await.is_err(), "the journal write failed");
        let st = l.budget_states(&["b:day:0".into()], now).await.unwrap();
        assert_eq!(
            st[0],
            BudgetState {
                spent: 0,
                reserved: 400
            },
            "nothing applied before it was journaled"
        );
        assert_eq!(l.settle(&a, s).await.unwrap(), vec![250], "the retry");
        assert_eq!(l.settle(&a, s).await.unwrap(), vec![250], "a repeat");
        l.sync().unwrap();
        drop(l);
        let journal = std::fs::read_to_string(&path).unwrap();
        assert!(
            journal.lines().all(|l| serde_json::from_str::<Value>(l).is_ok()),
            "no torn line left by the failed write: {journal}"
        );
        // After a restart the settled id is still known: a replay changes nothing.
        let l = MemoryLedger::open(&path, now + 1_000).unwrap();
        let mut replay = a.clone();
        replay.now_ms = now + 1_000;
        assert_eq!(l.settle(&replay, s).await.unwrap(), vec![250]);
        let st = l.budget_states(&["b:day:0".into()], now + 1_000).await.unwrap();
        assert_eq!(st[0].spent, 250, "charged once across the restart");
        // Settled ids are forgotten after their time, and with them their journal lines.
        let later = now + SETTLEMENT_ID_TTL_MS + 10_000;
        drop(l);
        let l = MemoryLedger::open(&path, later).unwrap();
        assert!(l.state.lock().unwrap().settled.is_empty());
        let journal = std::fs::read_to_string(&path).unwrap();
        assert_eq!(journal.lines().count(), 1, "compacted to the counter: {journal}");
    }

    #[tokio::test]
    async fn settled_ids_are_forgotten_after_their_time() {
        let l = MemoryLedger::ephemeral();
        let now = 5_000_000;
        for i in 0..100 {
            let a = conformance::admission(&format!("r{i}"), 1, &[("b:x", 1_000, now * 10)], now);
            l.admit(&a).await.unwrap().unwrap();
            l.settle(&a, Settlement::default()).await.unwrap();
        }
        assert_eq!(l.state.lock().unwrap().settled.len(), 100);
        let a = conformance::admission("late", 1, &[("b:x", 1_000, now * 10)], now + SETTLEMENT_ID_TTL_MS);
        l.settle(&a, Settlement::default()).await.unwrap();
        assert_eq!(l.state.lock().unwrap().settled.len(), 1, "memory stays bounded");
    }
}
