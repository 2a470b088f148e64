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

/// Recent settled output tokens by key and model, and by model across keys.
#[derive(Debug, Default)]
pub struct OutputHistory {
    entries: Mutex<HashMap<(String, String), VecDeque<u64>>>,
}

impl OutputHistory {
    /// An empty history.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records the output tokens of a complete response of `key_id` on `model`.
    pub fn record(&self, key_id: &str, model: &str, output_tokens: u64) {
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        if entries.len() + 2 > MAX_ENTRIES {
            entries.clear();
        }
        // The key's own history, and the model's across keys (empty key id).
        for key in [key_id, ""] {
            let samples = entries.entry((key.to_owned(), model.to_owned())).or_default();
            if samples.len() == WINDOW {
                samples.pop_front();
            }
            samples.push_back(output_tokens);
        }
    }

    /// The [`PERCENTILE`]th percentile (nearest rank) of the recent output of `key_id` on
    /// `model`; of `model` across keys while the key has fewer than [`MIN_SAMPLES`]; `None`
    /// while neither has.
    pub fn typical_output(&self, key_id: &str, model: &str) -> Option<u64> {
        let entries = self.entries.lock().ok()?;
        [key_id, ""].into_iter().find_map(|key| {
            let samples = entries.get(&(key.to_owned(), model.to_owned()))?;
            (samples.len() >= MIN_SAMPLES).then(|| percentile(samples))
        })
    }
}

fn percentile(samples: &VecDeque<u64>) -> u64 {
    let mut sorted: Vec<u64> = samples.iter().copied().collect();
    sorted.sort_unstable();
    let rank = (sorted.len() * PERCENTILE).div_ceil(100).max(1);
    sorted[rank - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learns_a_high_percentile_per_key_then_per_model() {
        let h = OutputHistory::new();
        assert_eq!(h.typical_output("k", "m"), None);
        for out in [100, 200, 300] {
            h.record("k", "m", out);
        }
        assert_eq!(h.typical_output("k", "m"), None, "too few samples");
        h.record("k", "m", 50);
        assert_eq!(h.typical_output("k", "m"), Some(300));
        // Another key on the same model starts from the model's history.
        assert_eq!(h.typical_output("other", "m"), Some(300));
        assert_eq!(h.typical_output("k", "other-model"), None);
        // 31 small answers and one long one: the 95th percentile of 32 is the 31st.
        for _ in 0..31 {
            h.record("k", "m", 10);
        }
        h.record("k", "m", 5_000);
        assert_eq!(h.typical_output("k", "m"), Some(10));
        h.record("k", "m", 4_000);
        assert_eq!(h.typical_output("k", "m"), Some(4_000), "two long ones in 32");
    }

    #[test]
    fn the_window_slides_and_memory_is_bounded() {
        let h = OutputHistory::new();
        for _ in 0..WINDOW {
            h.record("k", "m", 9_000);
        }
        for _ in 0..WINDOW {
            h.record("k", "m", 7);
        }
        assert_eq!(h.typical_output("k", "m"), Some(7), "old answers forgotten");
        for i in 0..MAX_ENTRIES {
            h.record(&format!("key-{i}"), "m", 1);
        }
        assert!(h.entries.lock().unwrap().len() <= MAX_ENTRIES);
    }
}
