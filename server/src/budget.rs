//! The disk cache's size bound: least recently used entries go first, across every replica on the
//! folder (recency is a file's modification time, which a disk hit renews), and temporary files
//! left by killed writes are removed at start-up.
//!
//! Each replica counts its own writes on top of the folder's size at its last scan, and rescans
//! (true sizes, every replica's files) when that count passes the bound or every
//! [`RESCAN_EVERY`] writes: the folder stays within the bound plus what other replicas wrote since
//! the last scan. Over the bound, the oldest files are removed until [`LOW_WATER`] of it is used,
//! so scans stay rare.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

/// Writes between two scans of the folder.
pub const RESCAN_EVERY: u64 = 32;

/// The share of the bound an eviction brings the folder down to.
pub const LOW_WATER: f64 = 0.9;

/// A temporary file older than this was left by a killed write (a live write takes seconds).
const STALE_TEMP: Duration = Duration::from_secs(600);

/// The bound on the files under some folders.
#[derive(Debug)]
pub struct DiskBudget {
    folders: Vec<PathBuf>,
    max_bytes: u64,
    /// The folder's bytes at the last scan plus this process's writes since.
    used: AtomicU64,
    writes: AtomicU64,
    /// One scan at a time in this process.
    scanning: Mutex<()>,
}

struct Entry {
    path: PathBuf,
    bytes: u64,
    used: SystemTime,
}

impl DiskBudget {
    /// The bound over the files in `folders`: removes stale temporary files, then enforces it.
    pub fn open(folders: Vec<PathBuf>, max_bytes: u64) -> DiskBudget {
        let budget = DiskBudget {
            folders,
            max_bytes,
            used: AtomicU64::new(0),
            writes: AtomicU64::new(0),
            scanning: Mutex::new(()),
        };
        let now = SystemTime::now();
        for f in &budget.folders {
            for e in std::fs::read_dir(f).into_iter().flatten().flatten() {
                let name = e.file_name();
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
        if used > self.max_bytes || writes % RESCAN_EVERY == 0 {
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
                entries.push(Entry {
                    path: e.path(),
                    bytes: m.len(),
                    used: m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                });
            }
        }
        let mut total: u64 = entries.iter().map(|e| e.bytes).sum();
        if total > self.max_bytes {
            let target = (self.max_bytes as f64 * LOW_WATER) as u64;
            entries.sort_by_key(|e| e.used);
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
        self.used.store(total, Ordering::Relaxed);
        metrics::gauge!("ofa_cache_disk_bytes").set(total as f64);
    }
}
