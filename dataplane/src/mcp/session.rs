//! Gateway MCP sessions: created by `initialize`, bound to the virtual key that created them,
//! expired after a period without use, each holding its own upstream sessions.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::broadcast;

use super::upstream::UpstreamConn;
use crate::policy::McpServerEntry;
use crate::upstream::HttpClient;

/// Sessions unused for this long are forgotten (the client gets 404 and initializes again).
pub const DEFAULT_IDLE_TTL: Duration = Duration::from_secs(30 * 60);

/// Most sessions held at once; beyond it `initialize` is refused until some expire.
pub const MAX_SESSIONS: usize = 10_000;

/// Most sessions one key holds at once; beyond it that key's `initialize` is refused (429)
/// until one of its sessions ends (`DELETE`) or expires, so one key cannot take the table
/// from the others. Claude Code holds one per configured gateway server per running agent.
pub const MAX_SESSIONS_PER_KEY: usize = 64;

/// Why a session could not be created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoRoom {
    /// The whole table is full of live sessions.
    Table,
    /// The key holds [`MAX_SESSIONS_PER_KEY`] live sessions.
    Key {
        /// The quota.
        limit: usize,
        /// When the key's oldest idle session expires (if none is used meanwhile).
        retry_after: Duration,
    },
}

/// One client session.
pub struct Session {
    /// The id the client echoes in `Mcp-Session-Id`.
    pub id: String,
    /// The key that created it; other keys cannot use it.
    pub key_id: String,
    /// Negotiated protocol revision.
    pub version: String,
    /// `list_changed` notifications for the client's GET listen stream.
    pub events: broadcast::Sender<Bytes>,
    last_used: Mutex<Instant>,
    upstreams: Mutex<HashMap<String, Arc<UpstreamConn>>>,
    /// Policy revision whose tool list the client last saw.
    pub listed_revision: Mutex<Option<String>>,
    /// Which server listed each resource URI, for `resources/read`.
    pub resource_servers: Mutex<HashMap<String, String>>,
    closed: std::sync::atomic::AtomicBool,
}

impl Session {
    fn new(id: String, key_id: String, version: String, now: Instant) -> Self {
        Self {
            id,
            key_id,
            version,
            events: broadcast::channel(64).0,
            last_used: Mutex::new(now),
            upstreams: Mutex::new(HashMap::new()),
            listed_revision: Mutex::new(None),
            resource_servers: Mutex::new(HashMap::new()),
            closed: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Marks the session used now.
    pub fn touch(&self, now: Instant) {
        if let Ok(mut t) = self.last_used.lock() {
            *t = now;
        }
    }

    fn idle_since(&self) -> Instant {
        self.last_used
            .lock()
            .map(|t| *t)
            .unwrap_or_else(|_| Instant::now())
    }

    /// This session's connection to `entry`, made on first use (and again when a policy
    /// reload changed the server's URL or credential).
    pub fn upstream(&self, entry: &Arc<McpServerEntry>, client: &HttpClient) -> Arc<UpstreamConn> {
        let Ok(mut map) = self.upstreams.lock() else {
            return Arc::new(UpstreamConn::new(
                entry.clone(),
                client.clone(),
                self.events.clone(),
            ));
        };
        if let Some(c) = map.get(&entry.name) {
            if same_target(c.entry(), entry) {
                return c.clone();
            }
            c.close();
        }
        let conn = Arc::new(UpstreamConn::new(
            entry.clone(),
            client.clone(),
            self.events.clone(),
        ));
        map.insert(entry.name.clone(), conn.clone());
        conn
    }

    /// Whether the session was ended (DELETE or expiry); its listen stream stops.
    pub fn is_closed(&self) -> bool {
        self.closed.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Ends every upstream session.
    pub fn close(&self) {
        self.closed.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Ok(mut map) = self.upstreams.lock() {
            for (_, c) in map.drain() {
                c.close();
            }
        }
    }
}

/// Whether two compilations of a server reach the same endpoint with the same credential
/// (every reload recompiles; only a real change should cost the upstream session).
fn same_target(a: &McpServerEntry, b: &McpServerEntry) -> bool {
    a.url == b.url && a.credential == b.credential
}

/// The session table.
pub struct Sessions {
    table: Mutex<Table>,
    ttl: Duration,
    per_key: usize,
}

#[derive(Default)]
struct Table {
    map: HashMap<String, Arc<Session>>,
    /// Live `initialize`d sessions per key (the stateless per-key session is not counted).
    per_key: HashMap<String, usize>,
}

impl Table {
    fn counted(s: &Session) -> bool {
        !s.id.starts_with(STATELESS_PREFIX)
    }

    fn insert(&mut self, s: Arc<Session>) {
        if Self::counted(&s) {
            *self.per_key.entry(s.key_id.clone()).or_default() += 1;
        }
        self.map.insert(s.id.clone(), s);
    }

    fn remove(&mut self, id: &str) -> Option<Arc<Session>> {
        let s = self.map.remove(id)?;
        s.close();
        if Self::counted(&s) {
            if let Some(n) = self.per_key.get_mut(&s.key_id) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.per_key.remove(&s.key_id);
                }
            }
        }
        Some(s)
    }
}

/// Id prefix of the per-key session of stateless requests.
const STATELESS_PREFIX: &str = "stateless:";

/// Why a session id did not resolve.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup {
    /// Never issued, ended, or expired.
    Unknown,
    /// Issued to another key.
    OtherKey,
}

impl Sessions {
    /// An empty table expiring sessions idle for `ttl`, at most [`MAX_SESSIONS_PER_KEY`] per key.
    pub fn new(ttl: Duration) -> Self {
        Self::with_quota(ttl, MAX_SESSIONS_PER_KEY)
    }

    /// An empty table with a per-key quota of `per_key` sessions.
    pub fn with_quota(ttl: Duration, per_key: usize) -> Self {
        Self {
            table: Mutex::new(Table::default()),
            ttl,
            per_key: per_key.max(1),
        }
    }

    /// Creates a session, unless the table or the key's quota is full of live sessions.
    pub fn create(&self, key_id: &str, version: &str, now: Instant) -> Result<Arc<Session>, NoRoom> {
        let mut t = self.table.lock().map_err(|_| NoRoom::Table)?;
        // Sessions clients abandon without DELETE are ended here (at most MAX_SESSIONS to scan).
        self.sweep(&mut t, now);
        if t.per_key.get(key_id).copied().unwrap_or(0) >= self.per_key {
            let oldest = t
                .map
                .values()
                .filter(|s| s.key_id == key_id && Table::counted(s))
                .map(|s| s.idle_since())
                .min()
                .unwrap_or(now);
            return Err(NoRoom::Key {
                limit: self.per_key,
                retry_after: (oldest + self.ttl).saturating_duration_since(now),
            });
        }
        if t.map.len() >= MAX_SESSIONS {
            return Err(NoRoom::Table);
        }
        let s = Arc::new(Session::new(new_id(), key_id.to_owned(), version.to_owned(), now));
        t.insert(s.clone());
        Ok(s)
    }

    /// The session for `id` presented by `key_id`, touched; expired ones are removed.
    pub fn get(&self, id: &str, key_id: &str, now: Instant) -> Result<Arc<Session>, Lookup> {
        let mut t = self.table.lock().map_err(|_| Lookup::Unknown)?;
        let s = t.map.get(id).cloned().ok_or(Lookup::Unknown)?;
        if now.saturating_duration_since(s.idle_since()) > self.ttl {
            t.remove(id);
            return Err(Lookup::Unknown);
        }
        if s.key_id != key_id {
            return Err(Lookup::OtherKey);
        }
        s.touch(now);
        Ok(s)
    }

    /// The shared session of a key's stateless (2026-07-28 style) requests, made on first use.
    pub fn stateless(&self, key_id: &str, now: Instant) -> Option<Arc<Session>> {
        let id = format!("{STATELESS_PREFIX}{key_id}");
        if let Ok(s) = self.get(&id, key_id, now) {
            return Some(s);
        }
        let mut t = self.table.lock().ok()?;
        let s = Arc::new(Session::new(id, key_id.to_owned(), "2026-07-28".into(), now));
        t.insert(s.clone());
        Some(s)
    }

    /// Ends a session; false when it was not there (or belongs to another key).
    pub fn remove(&self, id: &str, key_id: &str) -> bool {
        let Ok(mut t) = self.table.lock() else {
            return false;
        };
        match t.map.get(id) {
            Some(s) if s.key_id == key_id => t.remove(id).is_some(),
            _ => false,
        }
    }

    fn sweep(&self, t: &mut Table, now: Instant) {
        let expired: Vec<String> = t
            .map
            .values()
            .filter(|s| now.saturating_duration_since(s.idle_since()) > self.ttl)
            .map(|s| s.id.clone())
            .collect();
        for id in expired {
            t.remove(&id);
        }
    }
}

/// 128 random bits from the OS as hex: session ids must be unguessable.
fn new_id() -> String {
    use ring::rand::{SecureRandom, SystemRandom};
    let mut bytes = [0u8; 16];
    if SystemRandom::new().fill(&mut bytes).is_err() {
        // The OS RNG does not fail on supported platforms; a process-unique id still works.
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        bytes[..8].copy_from_slice(&N.fetch_add(1, std::sync::atomic::Ordering::Relaxed).to_le_bytes());
    }
    hex::encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_expire_and_are_bound_to_their_key() {
        let t = Sessions::new(Duration::from_secs(60));
        let now = Instant::now();
        let s = t.create("alice", "2025-11-25", now).unwrap();
        assert_eq!(s.id.len(), 32);
        assert!(t.get(&s.id, "alice", now + Duration::from_secs(30)).is_ok());
        assert_eq!(
            t.get(&s.id, "bob", now + Duration::from_secs(30)).err(),
            Some(Lookup::OtherKey)
        );
        // Used at +30 s, so alive at +89 s, gone at +91 s.
        assert!(t.get(&s.id, "alice", now + Duration::from_secs(89)).is_ok());
        assert_eq!(
            t.get(&s.id, "alice", now + Duration::from_secs(150)).err(),
            Some(Lookup::Unknown)
        );
        assert_eq!(t.get("nope", "alice", now).err(), Some(Lookup::Unknown));
        let s2 = t.create("alice", "2025-06-18", now).unwrap();
        assert_ne!(s2.id, s.id);
        assert!(!t.remove(&s2.id, "bob"));
        assert!(t.remove(&s2.id, "alice"));
        assert!(t.get(&s2.id, "alice", now).is_err());
    }

    #[test]
    fn one_key_cannot_fill_the_table() {
        let t = Sessions::new(Duration::from_secs(60));
        let now = Instant::now();
        // A flooding key gets its quota, far short of the table.
        let mut made = Vec::new();
        while made.len() < MAX_SESSIONS {
            match t.create("flood", "2025-11-25", now) {
                Ok(s) => made.push(s),
                Err(_) => break,
            }
        }
        assert_eq!(
            made.len(),
            MAX_SESSIONS_PER_KEY,
            "one key filled the global table"
        );
        let at = now + Duration::from_secs(10);
        match t.create("flood", "2025-11-25", at) {
            Ok(_) => panic!("over quota"),
            Err(NoRoom::Key { limit, retry_after }) => {
                assert_eq!(limit, MAX_SESSIONS_PER_KEY);
                assert_eq!(retry_after, Duration::from_secs(50), "when the oldest expires");
            }
            Err(other) => panic!("{other:?}"),
        }
        // Everyone else still gets theirs.
        assert!(
            t.create("alice", "2025-11-25", at).is_ok(),
            "another key was locked out"
        );
        // The key's stateless session is not taken from its quota.
        assert!(t.stateless("flood", at).is_some());
        // Ending one makes room for one more; so does expiry.
        assert!(t.remove(&made[63].id, "flood"));
        assert!(t.create("flood", "2025-11-25", at).is_ok());
        assert!(matches!(
            t.create("flood", "2025-11-25", at),
            Err(NoRoom::Key { .. })
        ));
        let later = now + Duration::from_secs(61);
        assert!(
            t.create("flood", "2025-11-25", later).is_ok(),
            "expired ones free the quota"
        );
    }
}
