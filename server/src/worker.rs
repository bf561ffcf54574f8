//! One model thread per supernet. It opens the package (supernet weights and calibration images:
//! tch tensors are `Send` but not `Sync`, so they get one owner) and serves cut requests from a
//! bounded queue. A full queue is refused at once (503 with `Retry-After`). A cut runs on for the
//! cache when its callers time out or hang up, but one that had work ahead of it in the queue and
//! that nobody waits for any more when its turn comes is skipped: a client that asks for many
//! cold cuts and hangs up costs at most the one cut already running.

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::Instant;

use ofa_extractor::calibrate::{calibrate, CalibrateOptions, Calibration};
use ofa_extractor::pipeline::{cut, Artefacts, OnnxOptions};
use ofa_extractor::Predicted;
use ofa_package::measure::Recalibration;
use ofa_package::Package;
use ofa_space::{ArchConfig, SearchSpace};
use tch::Device;
use tokio::sync::oneshot;

use crate::cache::Waiters;
use crate::error::ApiError;

/// A job taken off the queue: it counts as busy until dropped.
struct Busy(Arc<AtomicUsize>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// What the worker learnt when it opened the package.
#[derive(Debug, Clone)]
pub struct Opened {
    /// SHA-256 of `supernet.safetensors`.
    pub sha256: String,
    /// The supernet's space.
    pub space: SearchSpace,
    /// This machine's latency, when asked for (`--calibrate`): probes timed on this thread, at
    /// its libtorch thread count, before any request.
    pub calibration: Option<Calibration>,
}

struct Job {
    arch: ArchConfig,
    predicted: Predicted,
    onnx: Option<OnnxOptions>,
    /// The requests waiting on this cut, if it is a cached computation's.
    wanted: Option<Waiters>,
    /// Jobs queued or running when it was queued.
    ahead: usize,
    reply: oneshot::Sender<Result<Artefacts, ApiError>>,
}

impl Job {
    /// Nobody will take the result: the caller has gone, or it waited behind other work and no
    /// request waits for it any more.
    fn abandoned(&self) -> bool {
        self.reply.is_closed() || (self.ahead > 0 && self.wanted.as_ref().is_some_and(|w| !w.any()))
    }
}

/// The handle of a model thread.
#[derive(Debug, Clone)]
pub struct Worker {
    name: String,
    tx: SyncSender<Job>,
    queued: Arc<AtomicUsize>,
    /// Jobs queued or running.
    busy: Arc<AtomicUsize>,
    alive: Arc<AtomicBool>,
    capacity: usize,
}

impl Worker {
    /// Start the thread for the package in `dir` (libtorch on `threads` intra-op threads) and wait
    /// until it has opened it (and calibrated this machine's latency, with `calibrate`).
    pub fn spawn(
        name: &str,
        dir: &Path,
        device: Device,
        recalibration: Recalibration,
        capacity: usize,
        threads: i32,
        calibrate_with: Option<CalibrateOptions>,
    ) -> Result<(Worker, Opened), String> {
        let (tx, rx) = sync_channel::<Job>(capacity.max(1));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let queued = Arc::new(AtomicUsize::new(0));
        let busy = Arc::new(AtomicUsize::new(0));
        let alive = Arc::new(AtomicBool::new(true));
        let dir: PathBuf = dir.to_path_buf();
        let (q, a, label) = (queued.clone(), alive.clone(), name.to_string());
        let b = busy.clone();
        // A new thread starts with OpenMP's default thread count, not the one another thread
        // set: set it here, so a subnet is recalibrated (bit for bit) as `ofa extract` does with
        // the same `--threads`.
        std::thread::Builder::new()
            .name(format!("ofa-model-{name}"))
            .spawn(move || {
                tch::set_num_threads(threads);
                let pkg = match Package::open(&dir, device) {
                    Ok(p) => p,
                    Err(e) => {
                        a.store(false, Ordering::SeqCst);
                        let _ = ready_tx.send(Err(ofa_space::chain(&e)));
                        return;
                    }
                };
                let calibration = match calibrate_with.map(|o| calibrate_here(&pkg, &dir, &o)) {
                    Some(Err(e)) => {
                        a.store(false, Ordering::SeqCst);
                        let _ = ready_tx.send(Err(format!("calibration: {e}")));
                        return;
                    }
                    Some(Ok(c)) => Some(c),
                    None => None,
                };
                let _ = ready_tx.send(Ok(Opened {
                    sha256: pkg.supernet_sha256().to_string(),
                    space: pkg.space().clone(),
                    calibration,
                }));
                for job in rx {
                    let depth = q.fetch_sub(1, Ordering::SeqCst).saturating_sub(1);
                    metrics::gauge!("ofa_queue_depth", "supernet" => label.clone())
                        .set(depth as f64);
                    // done with this job, however it ends
                    let _busy = Busy(b.clone());
                    if job.abandoned() {
                        metrics::counter!("ofa_abandoned_jobs_total").increment(1);
                        let _ = job.reply.send(Err(ApiError::Abandoned));
                        continue;
                    }
                    let t = Instant::now();
                    let out = std::panic::catch_unwind(AssertUnwindSafe(|| {
                        run(&pkg, &job, &recalibration)
                    }))
                    .unwrap_or_else(|_| {
                        metrics::counter!("ofa_panics_total", "where" => "worker").increment(1);
                        Err(ApiError::Internal(
                            "the model thread panicked on this subnet".into(),
                        ))
                    });
                    metrics::histogram!("ofa_weights_job_seconds")
                        .record(t.elapsed().as_secs_f64());
                    let _ = job.reply.send(out);
                }
                a.store(false, Ordering::SeqCst);
            })
            .map_err(|e| format!("cannot start the model thread: {e}"))?;
        let opened = ready_rx
            .recv()
            .map_err(|_| "the model thread ended while opening the package".to_string())??;
        Ok((
            Worker {
                name: name.to_string(),
                tx,
                queued,
                busy,
                alive,
                capacity: capacity.max(1),
            },
            opened,
        ))
    }

    /// Whether the thread is running.
    pub fn alive(&self) -> bool {
        self.alive.load(Ordering::SeqCst)
    }

    /// Cut `arch`, recalibrate its BN and build its files (`predicted` goes into the metadata;
    /// with `onnx`, `model.onnx` too).
    pub async fn cut(
        &self,
        arch: ArchConfig,
        predicted: Predicted,
        onnx: Option<OnnxOptions>,
        wanted: Option<Waiters>,
    ) -> Result<Artefacts, ApiError> {
        let (reply, rx) = oneshot::channel();
        let depth = self.queued.fetch_add(1, Ordering::SeqCst) + 1;
        let ahead = self.busy.fetch_add(1, Ordering::SeqCst);
        match self.tx.try_send(Job {
            arch,
            predicted,
            onnx,
            wanted,
            ahead,
            reply,
        }) {
            Ok(()) => {
                metrics::gauge!("ofa_queue_depth", "supernet" => self.name.clone())
                    .set(depth as f64);
            }
            Err(e) => {
                self.queued.fetch_sub(1, Ordering::SeqCst);
                self.busy.fetch_sub(1, Ordering::SeqCst);
                return Err(match e {
                    TrySendError::Full(_) => {
                        metrics::counter!("ofa_rejected_total", "reason" => "queue_full")
                            .increment(1);
                        ApiError::Overloaded(self.capacity)
                    }
                    TrySendError::Disconnected(_) => ApiError::Internal(format!(
                        "the model thread of `{}` has stopped",
                        self.name
                    )),
                });
            }
        }
        rx.await.map_err(|_| {
            ApiError::Internal(format!(
                "the model thread of `{}` dropped the request",
                self.name
            ))
        })?
    }
}

fn run(pkg: &Package, job: &Job, recalibration: &Recalibration) -> Result<Artefacts, ApiError> {
    let t = Instant::now();
    let sub = cut(pkg, &job.arch, recalibration)?;
    metrics::histogram!("ofa_cut_recalibrate_seconds").record(t.elapsed().as_secs_f64());
    let art = Artefacts::new(
        &sub,
        pkg,
        &job.arch,
        recalibration,
        Some(&job.predicted),
        None,
    )?;
    Ok(match &job.onnx {
        Some(o) => art.with_onnx(&sub, &job.arch, o)?,
        None => art,
    })
}

/// Calibrate over the package's first latency table (its layer times are the model's base
/// features), or MACs and counts alone when it has none.
fn calibrate_here(pkg: &Package, dir: &Path, o: &CalibrateOptions) -> Result<Calibration, String> {
    let base = match ofa_package::latency_tables(dir).first() {
        Some((_, path)) => Some(
            ofa_extractor::specialiser::load_latency_table(path)
                .map_err(|e| ofa_space::chain(&e))?,
        ),
        None => None,
    };
    calibrate(pkg, base.as_ref(), o).map_err(|e| ofa_space::chain(&e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(
        ahead: usize,
        wanted: Option<Waiters>,
    ) -> (Job, oneshot::Receiver<Result<Artefacts, ApiError>>) {
        let (reply, rx) = oneshot::channel();
        let space = SearchSpace::preset("ofa-mbv3-tiny").expect("a preset");
        let job = Job {
            arch: ArchConfig::smallest(&space),
            predicted: Predicted {
                top1: 0.0,
                macs_m: 0.0,
                params_m: 0.0,
                latency_ms: None,
            },
            onnx: None,
            wanted,
            ahead,
            reply,
        };
        (job, rx)
    }

    #[test]
    fn a_queued_cut_nobody_waits_for_is_skipped_a_first_one_is_not() {
        let nobody = Waiters::default();
        // first in line: it runs for the cache even with nobody waiting (a slow cut whose
        // requests timed out is served on the next one)
        let (j, _rx) = job(0, Some(nobody.clone()));
        assert!(!j.abandoned());
        // behind other work, with nobody waiting: skipped
        let (j, _rx) = job(2, Some(nobody.clone()));
        assert!(j.abandoned());
        // behind other work, with a request waiting: runs
        let waiting = nobody.wait();
        let (j, _rx) = job(2, Some(nobody.clone()));
        assert!(!j.abandoned());
        drop(waiting);
        // a caller that has gone: skipped wherever it stands
        let (j, rx) = job(0, None);
        drop(rx);
        assert!(j.abandoned());
    }
}
