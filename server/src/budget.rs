//! The disk cache's size bound: least recently used entries go first, across every replica on the
//! folder (recency is a file's modification time, which a disk hit renews), and temporary files
//! left by killed writes are removed at start-up.
//!
//! Entries served from this process's memory count as just used (their files are never renewed
//! by a memory hit). Each replica counts its own writes on top of the folder's size at its last
//! scan, and rescans
//! (true sizes, every replica's files) when that count passes the bound or every
//! [`RESCAN_EVERY`] writes: the folder stays within the bound plus what other replicas wrote since
//! the last scan. Over the bound, the oldest files are removed until [`LOW_WATER`] of it is used,
//! so scans stay rare.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

/// Writes between two scans of the folder.
pub const RESCAN_EVERY: u64 = 32;

/// The share of the bound an eviction brings the folder down to.
pub const LOW_WATER: f64 = 0.9;

/// A temporary file older than this was left by a killed write (a live write takes seconds).
const STALE_TEMP: Duration = Duration::from_secs(600);

/// Whether the entry at a path is in use in memory now (its file then counts as just used).
pub type Hot = Box<dyn Fn(&Path) -> bool + Send + Sync>;

/// The bound on the files under some folders.
pub struct DiskBudget {
    folders: Vec<PathBuf>,
    max_bytes: u64,
    /// The folder's bytes at the last scan plus this process's writes since.
    used: AtomicU64,
    writes: AtomicU64,
    /// The last scan could not get under the bound (files it may not remove): scan again only
    /// every [`RESCAN_EVERY`] writes, not on each.
    stuck: AtomicBool,
    /// One scan at a time in this process.
    scanning: Mutex<()>,
    hot: Hot,
}

impl std::fmt::Debug for DiskBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiskBudget")
            .field("folders", &self.folders)
            .field("max_bytes", &self.max_bytes)
            .field("used", &self.used)
            .finish_non_exhaustive()
    }
}

struct Entry {
    hot: bool,
    path: PathBuf,
    bytes: u64,
    used: SystemTime,
}

impl DiskBudget {
    /// The bound over the files in `folders`: removes stale temporary files, then enforces it.
    /// `hot` says which files back entries in use in memory: served from there, their files
    /// would otherwise look unused and go first.
    pub fn open(folders: Vec<PathBuf>, max_bytes: u64, hot: Hot) -> DiskBudget {
        let budget = DiskBudget {
            folders,
            max_bytes,
            used: AtomicU64::new(0),
            writes: AtomicU64::new(0),
            stuck: AtomicBool::new(false),
            scanning: Mutex::new(()),
            hot,
        };
        let now = SystemTime::now();
        for f in &budget.folders {
            for e in std::fs::read_dir(f).into_iter().flatten().flatten() {
                let name = e.file_name();
                // (a modification time in the future is no age: such a file is not stale)
                let stale = e
                    .metadata()
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| now.duration_since(t).unwrap_or_default() > STALE_TEMP);
                // cache keys never start with a dot; `write_atomic`'s temporary files do
                if name.to_string_lossy().starts_with(".tmp")
                    && stale
                    && std::fs::remove_file(e.path()).is_ok()
                {
                    metrics::counter!("ofa_cache_stale_temp_files_total").increment(1);
                }
            }
        }
        budget.enforce();
        budget
    }

    /// The bound, bytes.
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// A file of `bytes` was written: enforce the bound when this process's count passes it, or
    /// every [`RESCAN_EVERY`] writes (to see the other replicas' files). Blocking I/O.
    pub fn wrote(&self, bytes: u64) {
        let used = self.used.fetch_add(bytes, Ordering::Relaxed) + bytes;
        let writes = self.writes.fetch_add(1, Ordering::Relaxed) + 1;
        let over = used > self.max_bytes && !self.stuck.load(Ordering::Relaxed);
        if over || writes % RESCAN_EVERY == 0 {
            self.enforce();
        }
    }

    /// `path` was read: it becomes the most recently used. Best effort (a file another user wrote
    /// may not be ours to touch).
    pub fn touched(path: &Path) {
        if let Ok(f) = std::fs::File::options().write(true).open(path) {
            let _ = f.set_modified(SystemTime::now());
        }
    }

    /// Scan the folders; over the bound, remove the least recently used files down to
    /// [`LOW_WATER`] of it.
    fn enforce(&self) {
        // another thread is scanning: it will bring the folder under the bound
        let Ok(_scan) = self.scanning.try_lock() else {
            return;
        };
        let mut entries: Vec<Entry> = Vec::new();
        for f in &self.folders {
            for e in std::fs::read_dir(f).into_iter().flatten().flatten() {
                if e.file_name().to_string_lossy().starts_with('.') {
                    continue;
                }
                let Ok(m) = e.metadata() else { continue };
                if !m.is_file() {
                    continue;
                }
                let path = e.path();
                entries.push(Entry {
                    // an entry served from memory is in use, however old its file looks
                    hot: (self.hot)(&path),
                    path,
                    bytes: m.len(),
                    used: m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                });
            }
        }
        let mut total: u64 = entries.iter().map(|e| e.bytes).sum();
        if total > self.max_bytes {
            let target = (self.max_bytes as f64 * LOW_WATER) as u64;
            // files of entries held in memory last, each group oldest first
            entries.sort_by_key(|e| (e.hot, e.used));
            let mut evicted = 0u64;
            for e in &entries {
                if total <= target {
                    break;
                }
                // gone already (another replica evicted it) counts as gone
                match std::fs::remove_file(&e.path) {
                    Ok(()) => evicted += 1,
                    Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                    Err(_) => continue,
                }
                total = total.saturating_sub(e.bytes);
            }
            metrics::counter!("ofa_cache_evictions_total").increment(evicted);
        }
        self.stuck.store(total > self.max_bytes, Ordering::Relaxed);
        self.used.store(total, Ordering::Relaxed);
        metrics::gauge!("ofa_cache_disk_bytes").set(total as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn aged(path: &Path, bytes: usize, secs_ago: u64) {
        std::fs::write(path, vec![0u8; bytes]).expect("a file");
        let t = SystemTime::now() - Duration::from_secs(secs_ago);
        std::fs::File::options()
            .write(true)
            .open(path)
            .and_then(|f| f.set_modified(t))
            .expect("an mtime");
    }

    #[test]
    fn the_oldest_files_go_first_but_not_those_held_in_memory() {
        let dir = tempfile::tempdir().expect("a folder");
        let d = dir.path().to_path_buf();
        aged(&d.join("held"), 400, 300);
        aged(&d.join("old"), 400, 200);
        aged(&d.join("new"), 400, 100);
        aged(&d.join(".tmpKilled"), 400, 3600);
        // 1,200 bytes of entries in a bound of 1,000: one file goes (down to 900)
        let b = DiskBudget::open(vec![d.clone()], 1000, Box::new(|p| p.ends_with("held")));
        assert!(
            !d.join(".tmpKilled").exists(),
            "a stale temporary file stayed"
        );
        assert!(d.join("held").exists(), "an entry in memory was evicted");
        assert!(
            !d.join("old").exists(),
            "the least recently used file stayed"
        );
        assert!(d.join("new").exists());
        // a write past the bound evicts again, the held entry still last
        aged(&d.join("newer"), 400, 0);
        b.wrote(400);
        assert!(d.join("held").exists());
        assert!(!d.join("new").exists());
        assert!(d.join("newer").exists());
    }
}
