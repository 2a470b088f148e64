//! What keys and models recently produced: the output tokens of settled responses, so the
//! budget estimate of the next request can reserve what a response of this key and model
//! actually needs instead of its whole `max_tokens` (see [`super::plan`]).
//!
//! Per process and in memory: a restart, or a replica that has not seen a key yet, starts
//! from the conservative estimate again. Bounded: [`WINDOW`] samples per key and model, at
//! most [`MAX_ENTRIES`] entries (past it the history is forgotten and learned again).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

/// Recent responses remembered per key and model.
pub const WINDOW: usize = 32;
/// Responses needed before the history is trusted.
pub const MIN_SAMPLES: usize = 4;
/// The percentile of recent output reserved.
pub const PERCENTILE: usize = 95;
/// Most key-and-model entries held.
pub const MAX_ENTRIES: usize = 10_000;

/// Most requests of one key admitted at once on a learned (below worst-case) estimate, per
/// process. Past it a request reserves its worst case, so a key that taught the history small
/// answers cannot turn that into an unbounded burst: the overshoot is at most this many
/// requests' (worst case − learned estimate) per key and process (see `plan.rs`).
pub const MAX_OPTIMISTIC_IN_FLIGHT: usize = 8;

/// One remembered response: its output tokens and the `max_tokens` it was allowed.
#[derive(Debug, Clone, Copy)]
struct Sample {
    output_tokens: u64,
    max_tokens: u64,
}

/// Recent settled output tokens by key and model, and the keys' optimistic requests in flight.
#[derive(Debug, Default)]
pub struct OutputHistory {
    entries: Mutex<HashMap<(String, String), VecDeque<Sample>>>,
    optimistic: Mutex<HashMap<String, usize>>,
}

impl OutputHistory {
    /// An empty history.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records the output of a complete response of `key_id` on `model` that was allowed
    /// `max_tokens`. A response cut by `max_tokens` says nothing about what the key needs and
    /// is not learned.
    pub fn record(&self, key_id: &str, model: &str, output_tokens: u64, max_tokens: u64) {
        if output_tokens >= max_tokens {
            return;
        }
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        let entry = (key_id.to_owned(), model.to_owned());
        if !entries.contains_key(&entry) && entries.len() >= MAX_ENTRIES {
            // Forgotten and learned again, only when a new entry would not fit.
            entries.clear();
        }
        let samples = entries.entry(entry).or_default();
        if samples.len() == WINDOW {
            samples.pop_front();
        }
        samples.push_back(Sample {
            output_tokens,
            max_tokens,
        });
    }

    /// The [`PERCENTILE`]th percentile (nearest rank) of the recent output of `key_id` on
    /// `model`, among responses allowed at least `max_tokens` (answers to small requests say
    /// nothing about a large one); `None` while fewer than [`MIN_SAMPLES`] qualify. Only the
    /// key's own history counts: another key cannot lower its estimate.
    pub fn typical_output(&self, key_id: &str, model: &str, max_tokens: u64) -> Option<u64> {
        let entries = self.entries.lock().ok()?;
        let samples = entries.get(&(key_id.to_owned(), model.to_owned()))?;
        let outputs: Vec<u64> = samples
            .iter()
            .filter(|s| s.max_tokens >= max_tokens)
            .map(|s| s.output_tokens)
            .collect();
        (outputs.len() >= MIN_SAMPLES).then(|| percentile(outputs))
    }

    /// A slot for one more request of `key_id` on a learned estimate, if the key has fewer
    /// than [`MAX_OPTIMISTIC_IN_FLIGHT`] in flight; the slot is given back when dropped.
    pub fn optimistic_slot(self: &std::sync::Arc<Self>, key_id: &str) -> Option<OptimisticSlot> {
        let mut counts = self.optimistic.lock().ok()?;
        let n = counts.entry(key_id.to_owned()).or_default();
        if *n >= MAX_OPTIMISTIC_IN_FLIGHT {
            return None;
        }
        *n += 1;
        Some(OptimisticSlot {
            history: self.clone(),
            key_id: key_id.to_owned(),
        })
    }
}

/// A request admitted on a learned estimate; see [`OutputHistory::optimistic_slot`].
#[derive(Debug)]
pub struct OptimisticSlot {
    history: std::sync::Arc<OutputHistory>,
    key_id: String,
}

impl Drop for OptimisticSlot {
    fn drop(&mut self) {
        if let Ok(mut counts) = self.history.optimistic.lock()
            && let Some(n) = counts.get_mut(&self.key_id)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.remove(&self.key_id);
            }
        }
    }
}

fn percentile(mut sorted: Vec<u64>) -> u64 {
    sorted.sort_unstable();
    let rank = (sorted.len() * PERCENTILE).div_ceil(100).max(1);
    sorted[rank - 1]
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn learns_a_high_percentile_of_the_keys_own_answers() {
        let h = OutputHistory::new();
        assert_eq!(h.typical_output("k", "m", 1_000), None);
        for out in [100, 200, 300] {
            h.record("k", "m", out, 1_000);
        }
        assert_eq!(h.typical_output("k", "m", 1_000), None, "too few samples");
        h.record("k", "m", 50, 1_000);
        assert_eq!(h.typical_output("k", "m", 1_000), Some(300));
        // Another key does not inherit it (it could have been taught by anyone).
        assert_eq!(h.typical_output("other", "m", 1_000), None);
        assert_eq!(h.typical_output("k", "other-model", 1_000), None);
        // 31 small answers and one long one: the 95th percentile of 32 is the 31st.
        for _ in 0..31 {
            h.record("k", "m", 10, 1_000);
        }
        h.record("k", "m", 5_000, 10_000);
        assert_eq!(h.typical_output("k", "m", 1_000), Some(10));
        h.record("k", "m", 4_000, 10_000);
        assert_eq!(
            h.typical_output("k", "m", 1_000),
            Some(4_000),
            "two long ones in 32"
        );
    }

    /// Poisoning: answers to tiny requests, or answers cut by max_tokens, never lower the
    /// estimate of a large request.
    #[test]
    fn small_or_cut_answers_teach_nothing_about_large_requests() {
        let h = OutputHistory::new();
        for _ in 0..WINDOW {
            h.record("k", "m", 1, 2);
        }
        assert_eq!(h.typical_output("k", "m", 16_384), None);
        assert_eq!(h.typical_output("k", "m", 2), Some(1));
        let cut = OutputHistory::new();
        for _ in 0..WINDOW {
            cut.record("k", "m", 16_384, 16_384);
        }
        assert_eq!(
            cut.typical_output("k", "m", 16_384),
            None,
            "truncated answers are not learned"
        );
    }

    #[test]
    fn the_window_slides_and_memory_is_bounded() {
        let h = OutputHistory::new();
        for _ in 0..WINDOW {
            h.record("k", "m", 9_000, 10_000);
        }
        for _ in 0..WINDOW {
            h.record("k", "m", 7, 10_000);
        }
        assert_eq!(
            h.typical_output("k", "m", 10_000),
            Some(7),
            "old answers forgotten"
        );
        for i in 0..MAX_ENTRIES + 5 {
            h.record(&format!("key-{i}"), "m", 1, 10);
        }
        assert!(h.entries.lock().unwrap().len() <= MAX_ENTRIES);
        // Recording for an existing entry never clears the others.
        let n = h.entries.lock().unwrap().len();
        h.record(&format!("key-{}", MAX_ENTRIES + 4), "m", 1, 10);
        assert_eq!(h.entries.lock().unwrap().len(), n);
    }

    #[test]
    fn optimistic_slots_are_bounded_per_key_and_given_back() {
        let h = Arc::new(OutputHistory::new());
        let slots: Vec<_> = (0..MAX_OPTIMISTIC_IN_FLIGHT)
            .filter_map(|_| h.optimistic_slot("k"))
            .collect();
        assert_eq!(slots.len(), MAX_OPTIMISTIC_IN_FLIGHT);
        assert!(h.optimistic_slot("k").is_none());
        assert!(h.optimistic_slot("other").is_some(), "per key");
        drop(slots);
        assert!(h.optimistic_slot("k").is_some());
    }
}
