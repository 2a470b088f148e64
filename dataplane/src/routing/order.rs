//! The order a request tries its targets in.

use std::cell::Cell;

/// What ordering needs to know about one target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    /// Lower first.
    pub priority: u32,
    /// Share of the load among equal priorities (at least 1).
    pub weight: u32,
    /// The provider is ejected (failing): tried after every healthy target.
    pub ejected: bool,
}

/// Indices of `candidates` in the order to try them: healthy before ejected, then by ascending
/// priority; within equal priority a weighted random permutation (each next pick proportional
/// to its weight among those left), so that the first attempt spreads load by weight and the
/// others of the group are the first fallbacks. `random` yields uniform `u64`s.
pub fn order_with(candidates: &[Candidate], mut random: impl FnMut() -> u64) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..candidates.len()).collect();
    idx.sort_by_key(|&i| (candidates[i].ejected, candidates[i].priority));
    let mut out = Vec::with_capacity(idx.len());
    let mut start = 0;
    while start < idx.len() {
        let key = |i: usize| (candidates[i].ejected, candidates[i].priority);
        let group_key = key(idx[start]);
        let end = idx[start..]
            .iter()
            .position(|&i| key(i) != group_key)
            .map_or(idx.len(), |n| start + n);
        let mut group: Vec<usize> = idx[start..end].to_vec();
        while !group.is_empty() {
            let total: u64 = group
                .iter()
                .map(|&i| u64::from(candidates[i].weight.max(1)))
                .sum();
            let mut pick = random() % total;
            let at = group
                .iter()
                .position(|&i| {
                    let w = u64::from(candidates[i].weight.max(1));
                    if pick < w {
                        true
                    } else {
                        pick -= w;
                        false
                    }
                })
                .unwrap_or(0);
            out.push(group.remove(at));
        }
        start = end;
    }
    out
}

/// [`order_with`] on a per-thread xorshift generator seeded from the system's randomness.
pub fn attempt_order(candidates: &[Candidate]) -> Vec<usize> {
    if candidates.len() == 1 {
        return vec![0];
    }
    order_with(candidates, next_random)
}

thread_local! {
    static STATE: Cell<u64> = Cell::new(seed());
}

fn seed() -> u64 {
    let mut bytes = [0u8; 8];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes);
    u64::from_le_bytes(bytes) | 1
}

/// xorshift64*: fast, and good enough to spread load (not for secrets).
fn next_random() -> u64 {
    STATE.with(|s| {
        let mut x = s.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        s.set(x);
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(priority: u32, weight: u32) -> Candidate {
        Candidate {
            priority,
            weight,
            ejected: false,
        }
    }

    #[test]
    fn a_plain_list_is_an_ordered_fallback_chain() {
        let cands = [c(0, 1), c(1, 1), c(2, 1)];
        for _ in 0..50 {
            assert_eq!(attempt_order(&cands), vec![0, 1, 2]);
        }
    }

    #[test]
    fn equal_priorities_share_the_first_attempt_by_weight() {
        // 3:1 between the first two, the third always last.
        let cands = [c(0, 3), c(0, 1), c(5, 100)];
        let mut first = [0u32; 3];
        let n = 40_000;
        for _ in 0..n {
            let order = attempt_order(&cands);
            assert_eq!(order.len(), 3);
            assert_eq!(order[2], 2, "a lower priority is never tried before the group");
            first[order[0]] += 1;
        }
        // Expected 30,000 / 10,000; allow 2% of n either way.
        assert!((29_200..=30_800).contains(&first[0]), "{first:?}");
        assert!((9_200..=10_800).contains(&first[1]), "{first:?}");
        assert_eq!(first[2], 0);
    }

    #[test]
    fn ejected_providers_go_last_whatever_their_priority() {
        let mut cands = [c(0, 1), c(1, 1), c(2, 1)];
        cands[0].ejected = true;
        assert_eq!(attempt_order(&cands), vec![1, 2, 0]);
        for cand in &mut cands {
            cand.ejected = true;
        }
        assert_eq!(
            attempt_order(&cands),
            vec![0, 1, 2],
            "all ejected: the configured order"
        );
    }

    #[test]
    fn picks_follow_the_random_source_exactly() {
        // Weights 1 and 3: a draw of 0 picks the first, 1..=3 the second.
        let cands = [c(0, 1), c(0, 3)];
        assert_eq!(order_with(&cands, || 0), vec![0, 1]);
        assert_eq!(order_with(&cands, || 3), vec![1, 0]);
        assert_eq!(order_with(&cands, || 4), vec![0, 1], "4 mod 4 = 0");
    }
}
