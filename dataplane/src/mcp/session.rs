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
    map: Mutex<HashMap<String, Arc<Session>>>,
    ttl: Duration,
}

/// Why a session id did not resolve.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup {
    /// Never issued, ended, or expired.
    Unknown,
    /// Issued to another key.
    OtherKey,
}

impl Sessions {
    /// An empty table expiring sessions idle for `ttl`.
    pub fn new(ttl: Duration) -> Self {
        Self {
            map: Mutex::new(HashMap::new()),
            ttl,
        }
    }

    /// Creates a session; `None` when the table is full of live sessions.
    pub fn create(&self, key_id: &str, version: &str, now: Instant) -> Option<Arc<Session>> {
        let mut map = self.map.lock().ok()?;
        // Sessions clients abandon without DELETE are ended here (at most MAX_SESSIONS to scan).
        self.sweep(&mut map, now);
        if map.len() >= MAX_SESSIONS {
            return None;
        }
        let id = new_id();
        let s = Arc::new(Session::new(
            id.clone(),
            key_id.to_owned(),
            version.to_owned(),
            now,
        ));
        map.insert(id, s.clone());
        Some(s)
    }

    /// The session for `id` presented by `key_id`, touched; expired ones are removed.
    pub fn get(&self, id: &str, key_id: &str, now: Instant) -> Result<Arc<Session>, Lookup> {
        let mut map = self.map.lock().map_err(|_| Lookup::Unknown)?;
        let s = map.get(id).cloned().ok_or(Lookup::Unknown)?;
        if now.saturating_duration_since(s.idle_since()) > self.ttl {
            map.remove(id);
            s.close();
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
        let id = format!("stateless:{key_id}");
        if let Ok(s) = self.get(&id, key_id, now) {
            return Some(s);
        }
        let mut map = self.map.lock().ok()?;
        let s = Arc::new(Session::new(
            id.clone(),
            key_id.to_owned(),
            "2026-07-28".into(),
            now,
        ));
        map.insert(id, s.clone());
        Some(s)
    }

    /// Ends a session; false when it was not there (or belongs to another key).
    pub fn remove(&self, id: &str, key_id: &str) -> bool {
        let Ok(mut map) = self.map.lock() else {
            return false;
        };
        match map.get(id) {
            Some(s) if s.key_id == key_id => {
                s.close();
                map.remove(id);
                true
            }
            _ => false,
        }
    }

    fn sweep(&self, map: &mut HashMap<String, Arc<Session>>, now: Instant) {
        map.retain(|_, s| {
            let live = now.saturating_duration_since(s.idle_since()) <= self.ttl;
            if !live {
                s.close();
            }
            live
        });
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
}
