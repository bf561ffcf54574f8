//! Results kept in memory (LRU-like, bounded in bytes) and, with `--cache-dir`, on disk.
//!
//! Disk entries are written atomically (temporary file, fsync, rename) and start with a line that
//! names the format and the SHA-256 of the payload, so a truncated or corrupted file is detected on
//! read, deleted and recomputed, never served. Keys are content hashes, so replicas sharing one
//! folder agree on every entry.

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use moka::future::Cache;
use ofa_supernet::checkpoint::write_atomic;
use tokio::sync::watch;

use crate::budget::DiskBudget;
use crate::error::ApiError;

const MAGIC: &str = "ofa-cache/2";

/// The kinds of cached things; each has its own folder and memory budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Subnet records by id.
    Subnet,
    /// Search results (subnet records) by request hash.
    Search,
    /// Pareto fronts (JSON) by request hash.
    Front,
    /// BN-recalibrated weights (safetensors) by subnet id.
    Weights,
    /// The SHA-256 of a download (weights by subnet id, ONNX by its key).
    Etag,
    /// ONNX files by subnet id, opset and BN folding.
    Onnx,
}

impl Kind {
    /// Every kind.
    pub const ALL: [Kind; 6] = [
        Kind::Subnet,
        Kind::Search,
        Kind::Front,
        Kind::Weights,
        Kind::Etag,
        Kind::Onnx,
    ];

    /// The kind whose folder is named `name`.
    pub fn from_name(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// Its name in metrics and folder names.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Subnet => "subnet",
            Kind::Search => "search",
            Kind::Front => "front",
            Kind::Weights => "weights",
            Kind::Etag => "etag",
            Kind::Onnx => "onnx",
        }
    }
}

/// Bytes of a cached entry, shared.
pub type Blob = Arc<bytes::Bytes>;

/// The outcome of a computation, shared by everyone waiting for it.
type Outcome = Option<Result<Blob, ApiError>>;

/// Computations running now, by key: a caller of a key being computed waits on it.
type Running = Arc<Mutex<HashMap<(Kind, String), (watch::Receiver<Outcome>, Waiters)>>>;

/// How many requests wait on a computation now. A detached computation can ask, and the model
/// thread drops a queued cut that nobody waits for any more (see `worker`).
#[derive(Debug, Clone, Default)]
pub struct Waiters(Arc<AtomicUsize>);

impl Waiters {
    /// Whether any request still waits.
    pub fn any(&self) -> bool {
        self.0.load(Ordering::SeqCst) > 0
    }

    pub(crate) fn wait(&self) -> Waiting {
        self.0.fetch_add(1, Ordering::SeqCst);
        Waiting(self.clone())
    }
}

/// One request's wait, counted while it lasts (a timed-out or disconnected request drops it).
pub(crate) struct Waiting(Waiters);

impl Drop for Waiting {
    fn drop(&mut self) {
        (self.0).0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The two-level cache.
#[derive(Debug, Clone)]
pub struct Store {
    dir: Option<PathBuf>,
    small: Cache<(Kind, String), Blob>,
    weights: Cache<(Kind, String), Blob>,
    running: Running,
    /// The bound on the folder, with one.
    budget: Option<Arc<DiskBudget>>,
}

/// Takes a finished (or panicked) computation off the running map, whatever ends its task.
struct Finished {
    running: Running,
    key: (Kind, String),
}

impl Drop for Finished {
    fn drop(&mut self) {
        // a poisoned lock still holds a usable map: the entry must go, or the key waits forever
        let mut map = self
            .running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.remove(&self.key);
    }
}

fn weigh(_: &(Kind, String), v: &Blob) -> u32 {
    u32::try_from(v.len() + 64).unwrap_or(u32::MAX)
}

impl Store {
    /// A store keeping at most `memory_bytes` of weights and `memory_bytes / 8` of JSON in memory,
    /// and, when `dir` is given (created if needed), everything under it within `disk_bytes`.
    pub fn new(
        dir: Option<&Path>,
        memory_bytes: u64,
        disk_bytes: u64,
    ) -> Result<Store, std::io::Error> {
        let small: Cache<(Kind, String), Blob> = Cache::builder()
            .max_capacity((memory_bytes / 8).max(1 << 20))
            .weigher(weigh)
            .build();
        let weights: Cache<(Kind, String), Blob> = Cache::builder()
            .max_capacity(memory_bytes.max(1 << 20))
            .weigher(weigh)
            .build();
        let budget = match dir {
            Some(d) => {
                for k in Kind::ALL {
                    std::fs::create_dir_all(d.join(k.name()))?;
                }
                let folders = Kind::ALL.iter().map(|k| d.join(k.name())).collect();
                let (s, w) = (small.clone(), weights.clone());
                // `<kind>/<key>` backs an entry held in memory now
                let hot = move |p: &Path| -> bool {
                    let kind = p
                        .parent()
                        .and_then(Path::file_name)
                        .and_then(|n| Kind::from_name(&n.to_string_lossy()));
                    let key = p.file_name().map(|n| n.to_string_lossy().into_owned());
                    match (kind, key) {
                        (Some(k @ (Kind::Weights | Kind::Onnx)), Some(key)) => {
                            w.contains_key(&(k, key))
                        }
                        (Some(k), Some(key)) => s.contains_key(&(k, key)),
                        _ => false,
                    }
                };
                Some(Arc::new(DiskBudget::open(
                    folders,
                    disk_bytes,
                    Box::new(hot),
                )))
            }
            None => None,
        };
        Ok(Store {
            dir: dir.map(Path::to_path_buf),
            small,
            weights,
            running: Arc::default(),
            budget,
        })
    }

    fn mem(&self, kind: Kind) -> &Cache<(Kind, String), Blob> {
        match kind {
            Kind::Weights | Kind::Onnx => &self.weights,
            _ => &self.small,
        }
    }

    /// Where `key` is kept on disk, if the store has a folder and `key` is a plain file name.
    /// Every key is checked here, whatever its source (a request, a value read back from disk):
    /// `../x` or `/abs` never becomes a path; such a key lives in memory only, and is counted.
    fn path(&self, kind: Kind, key: &str) -> Option<PathBuf> {
        let d = self.dir.as_ref()?;
        if !valid_key(key) {
            tracing::warn!(
                kind = kind.name(),
                "a cache key that is not a plain file name stays in memory"
            );
            metrics::counter!("ofa_cache_invalid_keys_total").increment(1);
            return None;
        }
        Some(d.join(kind.name()).join(key))
    }

    /// The entry in memory or on disk, without computing it.
    pub async fn peek(&self, kind: Kind, key: &str) -> Option<Blob> {
        self.peek_checked(kind, key, |_| true).await
    }

    /// [`Store::peek`], where an entry read from disk (written by another process, maybe of
    /// another version) must also pass `check` before it is served or kept in memory. Entries in
    /// memory were put by this process or passed the check already: a memory hit costs nothing
    /// more.
    pub async fn peek_checked(
        &self,
        kind: Kind,
        key: &str,
        check: impl FnOnce(&[u8]) -> bool,
    ) -> Option<Blob> {
        let k = (kind, key.to_string());
        if let Some(v) = self.mem(kind).get(&k).await {
            metrics::counter!("ofa_cache_hits_total", "kind" => kind.name(), "layer" => "memory")
                .increment(1);
            return Some(v);
        }
        let v = self.read_disk(kind, key).await?;
        if !check(&v) {
            return None;
        }
        self.mem(kind).insert(k, v.clone()).await;
        Some(v)
    }

    /// Put an entry in memory and on disk.
    pub async fn put(&self, kind: Kind, key: &str, value: Blob) {
        self.write_disk(kind, key, &value).await;
        self.mem(kind).insert((kind, key.to_string()), value).await;
    }

    /// The entry, or `compute` it, once: concurrent callers of one missing key share one
    /// computation (counted in `ofa_computations_total`; the callers that waited for it in
    /// `ofa_shared_computations_total`). The result goes to memory and disk.
    ///
    /// The computation runs detached from its callers: a caller that times out or hangs up stops
    /// waiting, never the work, which still fills the cache (a cut slower than the request
    /// timeout is served on the next request), and a caller arriving meanwhile waits on the same
    /// computation instead of starting another.
    ///
    /// `compute` is given the computation's [`Waiters`].
    pub async fn get_or_compute<C, F>(
        &self,
        kind: Kind,
        key: &str,
        compute: C,
    ) -> Result<Blob, ApiError>
    where
        C: FnOnce(Waiters) -> F,
        F: Future<Output = Result<Blob, ApiError>> + Send + 'static,
    {
        let k = (kind, key.to_string());
        if let Some(v) = self.mem(kind).get(&k).await {
            metrics::counter!("ofa_cache_hits_total", "kind" => kind.name(), "layer" => "memory")
                .increment(1);
            return Ok(v);
        }
        let (mut rx, _waiting) = {
            let mut running = self
                .running
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some((rx, waiters)) = running.get(&k) {
                metrics::counter!("ofa_shared_computations_total", "kind" => kind.name())
                    .increment(1);
                (rx.clone(), waiters.wait())
            } else {
                let (tx, rx) = watch::channel(None);
                let waiters = Waiters::default();
                let waiting = waiters.wait();
                running.insert(k.clone(), (rx.clone(), waiters.clone()));
                let compute = compute(waiters);
                let store = self.clone();
                let finished = Finished {
                    running: self.running.clone(),
                    key: k,
                };
                tokio::spawn(async move {
                    let out = store.fill(kind, &finished.key.1, compute).await;
                    // off the map before the waiters wake: the value is in memory by now
                    drop(finished);
                    let _ = tx.send(Some(out));
                });
                (rx, waiting)
            }
        };
        // the sender goes only with a result sent, or with a task that panicked or was dropped
        let out = rx
            .wait_for(Option::is_some)
            .await
            .ok()
            .and_then(|o| o.clone());
        out.unwrap_or_else(|| {
            Err(ApiError::Internal(
                "a computation ended without a result".into(),
            ))
        })
    }

    /// Memory (another computation may have just filled it), disk, else `compute`; the result
    /// goes to disk and memory.
    async fn fill<F>(&self, kind: Kind, key: &str, compute: F) -> Result<Blob, ApiError>
    where
        F: Future<Output = Result<Blob, ApiError>>,
    {
        let k = (kind, key.to_string());
        if let Some(v) = self.mem(kind).get(&k).await {
            return Ok(v);
        }
        if let Some(v) = self.read_disk(kind, key).await {
            self.mem(kind).insert(k, v.clone()).await;
            return Ok(v);
        }
        metrics::counter!("ofa_cache_misses_total", "kind" => kind.name()).increment(1);
        metrics::counter!("ofa_computations_total", "kind" => kind.name()).increment(1);
        let v = compute.await?;
        self.write_disk(kind, key, &v).await;
        self.mem(kind).insert(k, v.clone()).await;
        Ok(v)
    }

    async fn read_disk(&self, kind: Kind, key: &str) -> Option<Blob> {
        let path = self.path(kind, key)?;
        let key = key.to_string();
        let read = tokio::task::spawn_blocking(move || -> Option<bytes::Bytes> {
            let raw = std::fs::read(&path).ok()?;
            match decode(kind, &key, &raw) {
                Some(payload) => {
                    DiskBudget::touched(&path);
                    Some(bytes::Bytes::copy_from_slice(payload))
                }
                None => {
                    tracing::warn!(path = %path.display(), "corrupt cache file: removed, recomputing");
                    metrics::counter!("ofa_cache_corrupt_total").increment(1);
                    let _ = std::fs::remove_file(&path);
                    None
                }
            }
        })
        .await
        .ok()
        .flatten()?;
        metrics::counter!("ofa_cache_hits_total", "kind" => kind.name(), "layer" => "disk")
            .increment(1);
        Some(Arc::new(read))
    }

    async fn write_disk(&self, kind: Kind, key: &str, value: &Blob) {
        let Some(path) = self.path(kind, key) else {
            return;
        };
        let value = value.clone();
        let key = key.to_string();
        let budget = self.budget.clone();
        let done = tokio::task::spawn_blocking(move || {
            let bytes = encode(kind, &key, &value);
            write_atomic(&path, &bytes)?;
            if let Some(b) = budget {
                b.wrote(bytes.len() as u64);
            }
            Ok::<_, ofa_supernet::SupernetError>(())
        })
        .await;
        if let Ok(Err(e)) = done {
            tracing::warn!("cannot write the cache: {}", ofa_space::chain(&e));
            metrics::counter!("ofa_cache_write_errors_total").increment(1);
        }
    }
}

/// The checksum of an entry: SHA-256 over its kind, its key and its payload, so a file copied
/// or renamed to another key (or kind) does not verify.
fn checksum(kind: Kind, key: &str, payload: &[u8]) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(kind.name().as_bytes());
    h.update(b"\n");
    h.update(key.as_bytes());
    h.update(b"\n");
    h.update(payload);
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// `ofa-cache/2 <checksum of kind, key and payload>\n` + payload.
fn encode(kind: Kind, key: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!("{MAGIC} {}\n", checksum(kind, key, payload)).into_bytes();
    out.extend_from_slice(payload);
    out
}

/// The payload of an encoded entry whose hash matches; `None` for anything else.
fn decode<'a>(kind: Kind, key: &str, raw: &'a [u8]) -> Option<&'a [u8]> {
    let nl = raw.iter().position(|&b| b == b'\n')?;
    let head = std::str::from_utf8(&raw[..nl]).ok()?;
    let digest = head.strip_prefix(MAGIC)?.strip_prefix(' ')?;
    let payload = &raw[nl + 1..];
    (digest.len() == 64 && checksum(kind, key, payload) == digest).then_some(payload)
}

/// Whether `key` is a plain file name: 1 to 200 characters of `[0-9A-Za-z._-]`, not starting
/// with a dot (ids are 32 hex digits; ONNX keys add `.opsetN.folded`).
fn valid_key(key: &str) -> bool {
    (1..=200).contains(&key.len())
        && !key.starts_with('.')
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A computation detached from its waiters: one that gives up stops being counted, the work
    /// goes on, and a later waiter gets its value without a second computation.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_computation_outlives_its_waiters_and_counts_them() {
        let store = Store::new(None, 1 << 20, 1 << 30).expect("a store");
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let (seen, waiters) = tokio::sync::oneshot::channel::<Waiters>();
        let runs = Arc::new(AtomicUsize::new(0));
        let r = runs.clone();
        // a waiter that gives up at once: the computation is left running
        let first = tokio::time::timeout(
            std::time::Duration::from_nanos(1),
            store.get_or_compute(Kind::Weights, "k", move |w| {
                let _ = seen.send(w);
                async move {
                    r.fetch_add(1, Ordering::SeqCst);
                    let _ = released.await;
                    Ok(Arc::new(bytes::Bytes::from_static(b"cut")))
                }
            }),
        )
        .await;
        assert!(first.is_err(), "the first waiter timed out");
        let waiters = waiters.await.expect("the computation's waiters");
        assert!(!waiters.any(), "a waiter that gave up is still counted");
        // a second waiter joins the same computation
        let second = tokio::spawn({
            let store = store.clone();
            async move {
                store
                    .get_or_compute(Kind::Weights, "k", |_| async {
                        Err(ApiError::Internal("a second computation".into()))
                    })
                    .await
            }
        });
        while !waiters.any() {
            tokio::task::yield_now().await;
        }
        let _ = release.send(());
        let got = second.await.expect("the waiter").expect("the value");
        assert_eq!(got.as_ref().as_ref(), b"cut");
        assert!(!waiters.any());
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        // and it is in memory now
        assert!(store.peek(Kind::Weights, "k").await.is_some());
    }

    #[tokio::test]
    async fn no_key_becomes_a_path_outside_the_folder() {
        let root = tempfile::tempdir().expect("a folder");
        let dir = root.path().join("cache");
        let store = Store::new(Some(&dir), 1 << 20, 1 << 30).expect("a store");
        let abs = root.path().join("abs").display().to_string();
        for key in ["../../escape", abs.as_str(), "a/b", ".hidden", "", "x\\y"] {
            let blob = Arc::new(bytes::Bytes::from_static(b"{}"));
            store.put(Kind::Subnet, key, blob).await;
            assert!(
                store.peek(Kind::Subnet, key).await.is_some(),
                "kept in memory"
            );
        }
        // nothing but the store's own folders was written
        let mut outside: Vec<_> = std::fs::read_dir(root.path())
            .expect("read")
            .map(|e| e.expect("entry").file_name())
            .collect();
        outside.sort();
        assert_eq!(outside, ["cache"]);
        assert_eq!(
            std::fs::read_dir(dir.join("subnet")).expect("read").count(),
            0
        );
        // a plain key is kept on disk as before
        let id = "0123456789abcdef0123456789abcdef";
        store
            .put(Kind::Subnet, id, Arc::new(bytes::Bytes::from_static(b"{}")))
            .await;
        assert!(dir.join("subnet").join(id).is_file());
        assert!(valid_key("0123.opset17.folded") && !valid_key("..") && !valid_key("a b"));
    }

    /// A file as version 1 wrote it (a checksum of the payload alone).
    fn encode_v1(payload: &[u8]) -> Vec<u8> {
        let mut out = format!(
            "ofa-cache/1 {}\n",
            ofa_supernet::checkpoint::sha256_hex(payload)
        )
        .into_bytes();
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn entries_round_trip_and_damage_is_detected() {
        let (k, key) = (Kind::Subnet, "0123456789abcdef0123456789abcdef");
        let decode = |raw: &[u8]| decode(k, key, raw).map(<[u8]>::to_vec);
        let e = encode(k, key, b"hello");
        assert_eq!(decode(&e), Some(b"hello".to_vec()));
        // bound to its kind and key: the same bytes under another key or kind do not verify
        assert_eq!(
            super::decode(k, "ffff456789abcdef0123456789abcdef", &e),
            None
        );
        assert_eq!(super::decode(Kind::Weights, key, &e), None);
        assert_eq!(decode(&e[..e.len() - 1]), None, "truncated");
        let mut flipped = e.clone();
        *flipped.last_mut().unwrap_or(&mut 0) ^= 1;
        assert_eq!(decode(&flipped), None, "a flipped bit");
        assert_eq!(decode(b"hello"), None, "no header");
        assert_eq!(decode(&encode_v1(b"hello")), None, "a version 1 file");
        assert_eq!(decode(b""), None);
    }
}
