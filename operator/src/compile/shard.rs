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
    /// More keys than `max_shards` ConfigMaps can hold.
    #[error("{bytes} bytes of keys do not fit in {max_shards} ConfigMaps of {max_bytes} bytes")]
    TooLarge {
        /// Serialized size of all keys.
        bytes: usize,
        /// The shard limit.
        max_shards: usize,
        /// The per-shard byte limit.
        max_bytes: usize,
    },
    /// A key could not be serialized.
    #[error("serializing key {id}: {source}")]
    Serialize {
        /// The key id.
        id: String,
        /// The cause.
        source: serde_json::Error,
    },
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
pub fn shard_keys(keys: &[VirtualKey], limits: ShardLimits) -> Result<Vec<String>, ShardError> {
    let mut lines = Vec::with_capacity(keys.len());
    for k in keys {
        let line = serde_json::to_string(k).map_err(|source| ShardError::Serialize {
            id: k.id.clone(),
            source,
        })?;
        lines.push((fnv1a64(k.id.as_bytes()), line));
    }
    let total: usize = lines.iter().map(|(_, l)| l.len() + 2).sum();
    let mut count = total
        .div_ceil(limits.target_bytes.max(1))
        .max(1)
        .next_power_of_two();
    loop {
        if count > limits.max_shards {
            return Err(ShardError::TooLarge {
                bytes: total,
                max_shards: limits.max_shards,
                max_bytes: limits.max_bytes,
            });
        }
        let mut buckets: Vec<Vec<&str>> = vec![Vec::new(); count];
        for (h, line) in &lines {
            // `count` is at most max_shards, so the remainder fits a usize.
            let i = usize::try_from(h % count as u64).unwrap_or(0);
            buckets[i].push(line);
        }
        let docs: Vec<String> = buckets
            .iter()
            .map(|b| {
                if b.is_empty() {
                    EMPTY.to_owned()
                } else {
                    format!("{HEADER}{}{FOOTER}", b.join(",\n"))
                }
            })
            .collect();
        if docs.iter().all(|d| d.len() <= limits.max_bytes) {
            return Ok(docs);
        }
        count *= 2;
    }
}
