//! The hot-reloading policy store: an atomically swapped `Arc<Snapshot>`, the reload step
//! (read, validate, compile, swap or keep the last good one) and the directory watcher.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use notify::Watcher;
use serde::Serialize;

use super::load;
use super::snapshot::{Snapshot, SystemCredentials};
use crate::pricing::PriceTable;

/// What a reload attempt did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// A new snapshot is live.
    Applied {
        /// Its revision.
        revision: String,
    },
    /// The sources did not change.
    Unchanged,
    /// The new document was rejected; the previous snapshot (if any) stays live.
    Rejected {
        /// Why, naming the file or field.
        error: String,
    },
}

/// Reload state reported by `/readyz` and the metrics.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReloadStatus {
    /// Whether the newest sources were accepted.
    pub last_reload_ok: bool,
    /// Why the newest sources were rejected.
    pub last_error: Option<String>,
    /// Revision of the live snapshot.
    pub live_revision: Option<String>,
    /// When the live snapshot was compiled.
    pub live_since: Option<String>,
    /// Revision of the newest sources seen (live or rejected).
    #[serde(skip)]
    pub seen_revision: Option<String>,
    /// Applied reloads since start.
    pub applied: u64,
    /// Rejected reloads since start.
    pub rejected: u64,
}

/// Holds the live snapshot; requests take an `Arc` and keep it for their whole life.
pub struct PolicyStore {
    path: PathBuf,
    prices: PriceTable,
    live: ArcSwapOption<Snapshot>,
    status: Mutex<ReloadStatus>,
}

impl PolicyStore {
    /// Creates a store for `path` (file or directory) and attempts the first load.
    pub fn open(path: &Path, prices: PriceTable) -> (Arc<Self>, ReloadOutcome) {
        let store = Arc::new(Self {
            path: path.to_owned(),
            prices,
            live: ArcSwapOption::empty(),
            status: Mutex::new(ReloadStatus::default()),
        });
        let outcome = store.reload(false);
        (store, outcome)
    }

    /// The live snapshot, if any document was ever accepted.
    pub fn snapshot(&self) -> Option<Arc<Snapshot>> {
        self.live.load_full()
    }

    /// A copy of the reload status.
    pub fn status(&self) -> ReloadStatus {
        self.status.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Reads the sources and, when they changed (or `force`, to re-read credentials),
    /// validates, compiles and swaps. A rejected document leaves the live snapshot in place.
    pub fn reload(&self, force: bool) -> ReloadOutcome {
        let outcome = self.try_reload(force);
        match &outcome {
            ReloadOutcome::Applied { revision } => {
                tracing::info!(revision = %revision, path = %self.path.display(), "policy applied")
            }
            ReloadOutcome::Rejected { error } => tracing::error!(
                error = %error,
                path = %self.path.display(),
                "policy rejected; keeping the last good policy"
            ),
            ReloadOutcome::Unchanged => {}
        }
        outcome
    }

    fn try_reload(&self, force: bool) -> ReloadOutcome {
        let sources = match load::read_sources(&self.path) {
            Ok(s) => s,
            Err(e) => return self.reject(None, e.to_string()),
        };
        let loaded = match load::parse_sources(&sources) {
            Ok(l) => l,
            Err(e) => return self.reject(None, e.to_string()),
        };
        let seen = self.status().seen_revision;
        if !force && seen.as_deref() == Some(loaded.revision.as_str()) {
            return ReloadOutcome::Unchanged;
        }
        let revision = loaded.revision.clone();
        match Snapshot::compile(loaded, &self.prices, &SystemCredentials) {
            Ok(snapshot) if self.status().live_revision.as_deref() == Some(revision.as_str()) => {
                // A forced refresh of unchanged sources: new credentials, same policy.
                self.live.store(Some(Arc::new(snapshot)));
                ReloadOutcome::Unchanged
            }
            Ok(snapshot) => {
                let live_since = snapshot.loaded_at.to_string();
                self.live.store(Some(Arc::new(snapshot)));
                if let Ok(mut st) = self.status.lock() {
                    st.last_reload_ok = true;
                    st.last_error = None;
                    st.live_revision = Some(revision.clone());
                    st.seen_revision = Some(revision.clone());
                    st.live_since = Some(live_since);
                    st.applied += 1;
                }
                ReloadOutcome::Applied { revision }
            }
            Err(e) => self.reject(Some(revision), e.to_string()),
        }
    }

    fn reject(&self, revision: Option<String>, error: String) -> ReloadOutcome {
        if let Ok(mut st) = self.status.lock() {
            // The same failure is reported once, not on every poll.
            if !st.last_reload_ok && st.last_error.as_deref() == Some(error.as_str()) {
                return ReloadOutcome::Unchanged;
            }
            st.last_reload_ok = false;
            st.last_error = Some(error.clone());
            st.seen_revision = revision;
            st.rejected += 1;
        }
        ReloadOutcome::Rejected { error }
    }

    /// Watches the policy path and reloads on change: file events from the directory (which
    /// sees Kubernetes' `..data` symlink swap) debounced by `debounce`, plus a poll every
    /// `poll` as a safety net and a forced recompile every `refresh` to pick up rotated
    /// credentials. `on_reload` sees every outcome (metrics). Runs until the task is dropped.
    pub async fn watch(
        self: Arc<Self>,
        debounce: Duration,
        poll: Duration,
        refresh: Duration,
        on_reload: impl Fn(&ReloadOutcome, &ReloadStatus) + Send + 'static,
    ) {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
        let _watcher = self.start_watcher(tx);
        let mut poll_tick = tokio::time::interval(poll);
        let mut refresh_tick = tokio::time::interval(refresh);
        poll_tick.tick().await;
        refresh_tick.tick().await;
        loop {
            let force = tokio::select! {
                Some(()) = rx.recv() => {
                    tokio::time::sleep(debounce).await;
                    while rx.try_recv().is_ok() {}
                    false
                }
                _ = poll_tick.tick() => false,
                _ = refresh_tick.tick() => true,
            };
            let store = self.clone();
            let outcome = tokio::task::spawn_blocking(move || store.reload(force))
                .await
                .unwrap_or_else(|e| ReloadOutcome::Rejected {
                    error: format!("reload task failed: {e}"),
                });
            on_reload(&outcome, &self.status());
        }
    }

    fn start_watcher(
        &self,
        tx: tokio::sync::mpsc::UnboundedSender<()>,
    ) -> Option<notify::RecommendedWatcher> {
        let dir = if self.path.is_dir() {
            self.path.clone()
        } else {
            self.path
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_else(|| PathBuf::from("."))
        };
        // Reading the policy raises access events in the watched directory; reacting to them
        // would make every reload trigger the next one.
        let handler = move |res: notify::Result<notify::Event>| {
            if res.is_ok_and(|e| !matches!(e.kind, notify::EventKind::Access(_))) {
                let _ = tx.send(());
            }
        };
        let mut watcher = match notify::recommended_watcher(handler) {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(error = %e, "file watching unavailable; relying on polling");
                return None;
            }
        };
        if let Err(e) = watcher.watch(&dir, notify::RecursiveMode::NonRecursive) {
            tracing::warn!(error = %e, dir = %dir.display(), "cannot watch policy directory; relying on polling");
            return None;
        }
        Some(watcher)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "version: 1\nteams: [{id: a}]\n";
    const GOOD2: &str = "version: 1\nteams: [{id: a}, {id: b}]\n";
    const BAD: &str = "version: 1\nkeys: [{id: k, sha256: nothex, team: ghost}]\n";

    #[test]
    fn invalid_document_keeps_last_good_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("policy.yaml");
        std::fs::write(&f, GOOD).unwrap();
        let (store, first) = PolicyStore::open(&f, PriceTable::builtin());
        assert!(matches!(first, ReloadOutcome::Applied { .. }));
        let rev1 = store.snapshot().unwrap().revision.clone();

        std::fs::write(&f, BAD).unwrap();
        let ReloadOutcome::Rejected { error } = store.reload(false) else {
            panic!("bad doc accepted")
        };
        assert!(
            error.contains("keys[0].sha256") && error.contains("keys[0].team"),
            "{error}"
        );
        assert_eq!(
            store.snapshot().unwrap().revision,
            rev1,
            "last good snapshot stays"
        );
        let st = store.status();
        assert!(!st.last_reload_ok && st.rejected == 1 && st.live_revision.as_deref() == Some(rev1.as_str()));
        assert_eq!(
            store.reload(false),
            ReloadOutcome::Unchanged,
            "a rejected revision is not re-logged"
        );

        std::fs::write(&f, GOOD2).unwrap();
        assert!(matches!(store.reload(false), ReloadOutcome::Applied { .. }));
        assert!(store.status().last_reload_ok);
        assert_ne!(store.snapshot().unwrap().revision, rev1);
    }

    #[test]
    fn a_held_snapshot_survives_a_swap() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("policy.yaml");
        std::fs::write(&f, GOOD).unwrap();
        let (store, _) = PolicyStore::open(&f, PriceTable::builtin());
        let held = store.snapshot().unwrap();
        std::fs::write(&f, GOOD2).unwrap();
        store.reload(false);
        assert_ne!(held.revision, store.snapshot().unwrap().revision);
        assert!(held.key_count() == 0, "the held snapshot is still usable");
    }

    #[test]
    fn missing_file_at_start_means_no_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let (store, outcome) = PolicyStore::open(&dir.path().join("absent.yaml"), PriceTable::builtin());
        assert!(matches!(outcome, ReloadOutcome::Rejected { .. }));
        assert!(store.snapshot().is_none());
    }

    /// Kubernetes updates a ConfigMap volume by swapping the `..data` symlink.
    #[cfg(unix)]
    #[tokio::test]
    async fn watcher_sees_configmap_symlink_swap() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir(d.join("..v1")).unwrap();
        std::fs::write(d.join("..v1/policy.yaml"), GOOD).unwrap();
        symlink("..v1", d.join("..data")).unwrap();
        symlink("..data/policy.yaml", d.join("policy.yaml")).unwrap();
        let (store, first) = PolicyStore::open(d, PriceTable::builtin());
        assert!(matches!(first, ReloadOutcome::Applied { .. }), "{first:?}");
        let rev1 = store.snapshot().unwrap().revision.clone();
        let long = Duration::from_secs(3600);
        let task = tokio::spawn(
            store
                .clone()
                .watch(Duration::from_millis(50), long, long, |_, _| {}),
        );
        tokio::time::sleep(Duration::from_millis(100)).await;

        std::fs::create_dir(d.join("..v2")).unwrap();
        std::fs::write(d.join("..v2/policy.yaml"), GOOD2).unwrap();
        symlink("..v2", d.join("..data_tmp")).unwrap();
        std::fs::rename(d.join("..data_tmp"), d.join("..data")).unwrap();

        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while store.snapshot().unwrap().revision == rev1 {
            assert!(tokio::time::Instant::now() < deadline, "swap not seen");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        task.abort();
    }
}
