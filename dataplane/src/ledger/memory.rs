//! The embedded ledger: counters in memory behind one mutex, settled spend journaled to a
//! file so a restart keeps it.
//!
//! The journal is JSON lines `{"c":counter,"s":spent,"x":expires_at_ms}` holding absolute
//! values, so replay is "last line per counter wins"; it is compacted on open. Lines are
//! written at settlement (they survive a process crash: the kernel holds them) and fsynced
//! by [`MemoryLedger::sync`], which the server calls periodically and at shutdown.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::{Admission, BudgetState, Ledger, LedgerError, LedgerFuture, RateKind, Refusal, Settlement};

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
}

#[derive(Serialize, Deserialize)]
struct JournalLine {
    c: String,
    s: u64,
    x: i64,
}

/// The embedded ledger.
pub struct MemoryLedger {
    state: Mutex<State>,
    journal: Option<Mutex<File>>,
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
                if l.x > now_ms {
                    let b = state.budgets.entry(l.c).or_default();
                    b.spent = l.s;
                    b.expires_at_ms = l.x;
                }
            }
        }
        compact(path, &state)?;
        let file = OpenOptions::new().append(true).create(true).open(path)?;
        Ok(Self {
            state: Mutex::new(state),
            journal: Some(Mutex::new(file)),
        })
    }

    /// Flushes the journal to stable storage.
    pub fn sync(&self) -> Result<(), LedgerError> {
        if let Some(j) = &self.journal {
            let f = j.lock().map_err(|_| poisoned())?;
            f.sync_data()?;
        }
        Ok(())
    }

    fn admit_now(&self, a: &Admission) -> Result<Result<(), Refusal>, LedgerError> {
        let mut st = self.state.lock().map_err(|_| poisoned())?;
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
        let mut after = Vec::with_capacity(a.budgets.len());
        let mut lines = String::new();
        for b in &a.budgets {
            let counter = st.budgets.entry(b.counter.clone()).or_default();
            counter.reservations.remove(&a.request_id);
            counter.spent = counter.spent.saturating_add(s.actual_micro_usd);
            counter.expires_at_ms = counter.expires_at_ms.max(b.expires_at_ms);
            after.push(counter.spent);
            if self.journal.is_some() && s.actual_micro_usd > 0 {
                let line = JournalLine {
                    c: b.counter.clone(),
                    s: counter.spent,
                    x: counter.expires_at_ms,
                };
                lines.push_str(&serde_json::to_string(&line).unwrap_or_default());
                lines.push('\n');
            }
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
        if let (Some(j), false) = (&self.journal, lines.is_empty()) {
            let mut f = j.lock().map_err(|_| poisoned())?;
            f.write_all(lines.as_bytes())?;
        }
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
            let line = JournalLine {
                c: c.clone(),
                s: b.spent,
                x: b.expires_at_ms,
            };
            writeln!(f, "{}", serde_json::to_string(&line).unwrap_or_default())?;
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
        assert_eq!(journal.lines().count(), 1, "compacted: {journal}");
    }
}
