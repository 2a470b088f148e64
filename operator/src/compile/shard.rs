//! Sharding virtual keys over several ConfigMaps (each holds at most 1 MiB).
//!
//! A key's shard is `fnv1a64(key id) % shard_count`, so adding or removing one key rewrites one
//! ConfigMap, not all that follow it. The shard count is the smallest power of two that keeps
//! every shard under the byte limit; it only changes when the key set grows or shrinks by a
//! factor of two.

use tollgate_dataplane::policy::document::VirtualKey;

/// Why the keys could not be sharded.
#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    /// A key could not be serialized.
    #[error("serializing key {id}: {source}")]
    Serialize {
        /// The key id.
        id: String,
        /// The cause.
        source: serde_json::Error,
    },
}

/// The shard documents, and the keys that did not fit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sharded {
    /// One JSON document per shard.
    pub docs: Vec<String>,
    /// Ids of keys left out because their shard was full at the largest shard count, largest
    /// first: a shard that cannot fit drops its biggest keys (which is where a tenant padding
    /// keys to crowd others out lands) rather than failing the whole policy.
    pub dropped: Vec<String>,
}

/// The size limits of sharding.
#[derive(Debug, Clone, Copy)]
pub struct ShardLimits {
    /// Aim for shards of about this many bytes (leaves room to grow before resharding).
    pub target_bytes: usize,
    /// A shard never exceeds this many bytes (under the 1 MiB ConfigMap limit, with room for
    /// metadata).
    pub max_bytes: usize,
    /// At most this many shards; the proxy's projected volume lists this many ConfigMaps.
    pub max_shards: usize,
}

impl Default for ShardLimits {
    fn default() -> Self {
        Self {
            target_bytes: 512 * 1024,
            max_bytes: 900 * 1024,
            max_shards: 16,
        }
    }
}

/// FNV-1a, 64 bit: stable across Rust versions and platforms, unlike `DefaultHasher`.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

const HEADER: &str = "{\"version\":1,\"keys\":[\n";
const FOOTER: &str = "\n]}\n";
const EMPTY: &str = "{\"version\":1}\n";

/// Splits `keys` (sorted by id) into shard documents: one JSON document per shard, one key per
/// line so a diff of the ConfigMap shows which keys changed.
pub fn shard_keys(keys: &[VirtualKey], limits: ShardLimits) -> Result<Sharded, ShardError> {
    let mut lines = Vec::with_capacity(keys.len());
    for k in keys {
        let line = serde_json::to_string(k).map_err(|source| ShardError::Serialize {
            id: k.id.clone(),
            source,
        })?;
        lines.push((fnv1a64(k.id.as_bytes()), k.id.as_str(), line));
    }
    let total: usize = lines.iter().map(|(_, _, l)| l.len() + 2).sum();
    let mut count = total
        .div_ceil(limits.target_bytes.max(1))
        .max(1)
        .next_power_of_two();
    loop {
        let last = count >= limits.max_shards.max(1);
        let count_now = count.min(limits.max_shards.max(1));
        let mut buckets: Vec<Vec<(&str, &str)>> = vec![Vec::new(); count_now];
        for (h, id, line) in &lines {
            // `count_now` is at most max_shards, so the remainder fits a usize.
            let i = usize::try_from(h % count_now as u64).unwrap_or(0);
            buckets[i].push((id, line));
        }
        let mut dropped = Vec::new();
        if last {
            for bucket in &mut buckets {
                dropped.extend(fit(bucket, limits.max_bytes));
            }
        }
        let docs: Vec<String> = buckets.iter().map(|b| document(b)).collect();
        if last || docs.iter().all(|d| d.len() <= limits.max_bytes) {
            return Ok(Sharded { docs, dropped });
        }
        count *= 2;
    }
}

fn document(bucket: &[(&str, &str)]) -> String {
    if bucket.is_empty() {
        return EMPTY.to_owned();
    }
    let lines: Vec<&str> = bucket.iter().map(|(_, l)| *l).collect();
    format!("{HEADER}{}{FOOTER}", lines.join(",\n"))
}

/// The length of [`document`] for `bucket`, without building it.
fn document_len(bucket: &[(&str, &str)]) -> usize {
    if bucket.is_empty() {
        return EMPTY.len();
    }
    let lines: usize = bucket.iter().map(|(_, l)| l.len()).sum();
    HEADER.len() + lines + 2 * (bucket.len() - 1) + FOOTER.len()
}

/// Removes the largest keys (ties: the greatest id) from `bucket` until its document fits in
/// `max_bytes`; returns their ids.
fn fit(bucket: &mut Vec<(&str, &str)>, max_bytes: usize) -> Vec<String> {
    let mut len = document_len(bucket);
    if len <= max_bytes {
        return Vec::new();
    }
    let mut by_size: Vec<usize> = (0..bucket.len()).collect();
    by_size.sort_by_key(|&i| std::cmp::Reverse((bucket[i].1.len(), bucket[i].0)));
    let mut drop = std::collections::BTreeSet::new();
    for i in by_size {
        if len <= max_bytes {
            break;
        }
        len -= bucket[i].1.len() + 2;
        drop.insert(i);
    }
    let dropped = drop.iter().map(|&i| bucket[i].0.to_owned()).collect();
    let mut i = 0;
    bucket.retain(|_| {
        i += 1;
        !drop.contains(&(i - 1))
    });
    dropped
}
