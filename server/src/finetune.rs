//! Fine-tuning jobs: `POST /v1/subnets/{id}/finetune` queues a job on the package's own job
//! thread (one job at a time per package, never on a request's path; a queue of `--max-jobs`
//! beyond the running one, then 503); `GET /v1/jobs/{job}` follows it and `DELETE` cancels it.
//! A finished job is a new subnet record whose id hashes the base subnet's id, the cut it starts
//! from and the settings; its run folder (`--cache-dir`/finetune/<id>, or a temporary folder)
//! holds the weights it serves and the record, so both survive a restart. A job's id is its
//! result's id: asking again for the same fine-tune is the same job.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use ofa_extractor::pipeline::cut;
use ofa_package::measure::Recalibration;
use ofa_package::Package;
use ofa_schema::finetune::{EpochRecord, FinetuneRecord, Init, Teacher, BEST_FILE, FINETUNE_FILE};
use ofa_trainer::finetune::{finetune, resume, Base, Outcome, Settings};
use ofa_trainer::run::{Observer, TrainOptions};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::api::SubnetRecord;
use crate::error::ApiError;
use crate::state::content_id;

/// The record a finished job keeps in its run folder.
pub const RECORD_FILE: &str = "record.json";
/// A fine-tuning run's checkpoint (removed once the job has succeeded).
const CHECKPOINT_FILE: &str = "checkpoint.safetensors";

/// Body of `POST /v1/subnets/{id}/finetune`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FinetuneRequest {
    /// Epochs of the package's training split (fractions allowed; above 0, at most 1000).
    pub epochs: f64,
    /// `largest` (distillation from the package's largest subnet, the default) or `none`.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub teacher: Option<Teacher>,
}

impl FinetuneRequest {
    /// The settings, checked (422 `invalid_finetune`).
    pub fn settings(&self) -> Result<Settings, ApiError> {
        if !(self.epochs.is_finite() && self.epochs > 0.0 && self.epochs <= 1000.0) {
            return Err(ApiError::unprocessable(
                "invalid_finetune",
                format!(
                    "epochs must be above 0 and at most 1000, got {}",
                    self.epochs
                ),
            ));
        }
        Ok(Settings {
            epochs: Some(self.epochs),
            steps: None,
            init: Init::Inherited,
            teacher: self.teacher.unwrap_or(Teacher::Largest),
            ..Settings::default()
        })
    }
}

/// How a fine-tuned subnet was made (in its record).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FinetunedInfo {
    /// The subnet it started from.
    pub base: String,
    /// Epochs asked.
    pub epochs: f64,
    /// Where the soft labels came from.
    #[schema(value_type = String)]
    pub teacher: Teacher,
    /// Held-out top-1 of the weights served (the best epoch), percent.
    pub heldout_top1: f64,
    /// The epoch they are from (0: the starting weights were never beaten).
    pub best_epoch: f64,
    /// Test top-1 of the weights served, percent, where the dataset has a test split.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_top1: Option<f64>,
}

impl FinetunedInfo {
    /// The request that made it.
    pub fn request(&self) -> FinetuneRequest {
        FinetuneRequest {
            epochs: self.epochs,
            teacher: Some(self.teacher),
        }
    }
}

/// Where a job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Waiting for the package's job thread.
    Queued,
    /// Training.
    Running,
    /// Done: its subnet is served.
    Succeeded,
    /// Stopped by an error (`error` says which).
    Failed,
    /// Cancelled; asking again continues from its last checkpoint.
    Cancelled,
}

/// `GET /v1/jobs/{job}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct JobStatus {
    /// The job's id (the id its subnet gets).
    pub id: String,
    /// Where it stands.
    pub state: JobState,
    /// The supernet.
    pub supernet: String,
    /// The subnet it fine-tunes.
    pub base: String,
    /// What was asked.
    pub request: FinetuneRequest,
    /// Steps done.
    pub step: u64,
    /// Steps in all (once running).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps: Option<u64>,
    /// Epochs done.
    pub epoch: f64,
    /// The last held-out top-1, percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heldout_top1: Option<f64>,
    /// Seconds left at the current pace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eta_s: Option<f64>,
    /// A cancellation was asked for (a running job stops after its current step).
    pub cancel_requested: bool,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// `job`, and `subnet` (the record, served once the job has succeeded).
    pub links: JobLinks,
}

/// A job's links.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct JobLinks {
    /// This job.
    pub job: String,
    /// The subnet it makes.
    pub subnet: String,
}

/// A job: what it was asked, its status and its stop flag.
#[derive(Debug)]
pub struct Job {
    status: Mutex<JobStatus>,
    stop: Arc<AtomicBool>,
    /// The base subnet's record (the new record starts from it).
    base: SubnetRecord,
    started: Mutex<Option<(Instant, u64)>>,
}

impl Job {
    /// Its status now.
    pub fn status(&self) -> JobStatus {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn update(&self, f: impl FnOnce(&mut JobStatus)) {
        f(&mut self.status.lock().unwrap_or_else(|e| e.into_inner()));
    }
}

/// What a run tells its job.
struct Progress(Arc<Job>);

impl Observer for Progress {
    fn phase_start(&self, _index: usize, _phases: usize, _name: &str, from: u64, total: u64) {
        *self.0.started.lock().unwrap_or_else(|e| e.into_inner()) = Some((Instant::now(), from));
        self.0.update(|s| {
            s.steps = Some(total);
            s.step = from;
        });
    }

    fn step(&self, step: u64, _loss: f64, _lr: f64) {
        let pace = *self.0.started.lock().unwrap_or_else(|e| e.into_inner());
        self.0.update(|s| {
            s.step = step;
            if let (Some((t0, from)), Some(total)) = (pace, s.steps) {
                let done = step.saturating_sub(from).max(1) as f64;
                s.eta_s =
                    Some(t0.elapsed().as_secs_f64() / done * total.saturating_sub(step) as f64);
            }
        });
    }

    fn epoch(&self, r: &EpochRecord, _best: bool) {
        self.0.update(|s| {
            s.epoch = r.epoch;
            s.heldout_top1 = Some(r.heldout_top1);
        });
    }
}

/// What a package's job thread needs.
#[derive(Debug, Clone)]
pub struct JobConfig {
    /// The package.
    pub dir: PathBuf,
    /// Device of the runs.
    pub device: tch::Device,
    /// The BN recalibration of the starting cut (the served weights').
    pub recalibration: Recalibration,
    /// libtorch intra-op threads of the job thread.
    pub threads: i32,
}

/// The fine-tuning jobs of every package.
#[derive(Debug)]
pub struct Jobs {
    root: PathBuf,
    /// A temporary root, without `--cache-dir`: made by the first job, removed with the server.
    _temp: Option<RemoveOnDrop>,
    max_jobs: usize,
    queues: HashMap<String, Sender<Arc<Job>>>,
    jobs: Mutex<HashMap<String, Arc<Job>>>,
}

impl Jobs {
    /// Job threads for `packages` (name → config), run folders under `root` (a temporary folder
    /// when `None`), at most `max_jobs` waiting per package.
    pub fn new(
        root: Option<PathBuf>,
        max_jobs: usize,
        packages: Vec<(String, JobConfig)>,
    ) -> std::io::Result<Jobs> {
        let (root, temp) = match root {
            Some(r) => {
                std::fs::create_dir_all(&r)?;
                (r, None)
            }
            None => {
                // Named now, made by the first job: a server that never fine-tunes (or is killed
                // before its Drop runs) leaves no empty folder behind.
                let nanos = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.subsec_nanos());
                let t = std::env::temp_dir()
                    .join(format!("ofa-finetune-{}-{nanos:09}", std::process::id()));
                (t.clone(), Some(RemoveOnDrop(t)))
            }
        };
        let mut queues = HashMap::new();
        for (name, cfg) in packages {
            // the channel holds the waiting jobs (and cancelled ones, skipped); the running one
            // has left it. `submit` bounds the waiting ones by counting them.
            let (tx, rx) = channel::<Arc<Job>>();
            let runs = root.clone();
            std::thread::Builder::new()
                .name(format!("ofa-finetune-{name}"))
                .spawn(move || {
                    tch::set_num_threads(cfg.threads);
                    for job in rx {
                        work(&job, &cfg, &runs);
                    }
                })?;
            queues.insert(name, tx);
        }
        Ok(Jobs {
            root,
            _temp: temp,
            max_jobs,
            queues,
            jobs: Mutex::new(HashMap::new()),
        })
    }

    fn run_dir(&self, id: &str) -> PathBuf {
        self.root.join(id)
    }

    /// The record a finished job kept (`None`: none under that id).
    pub fn kept_record(&self, id: &str) -> Option<Vec<u8>> {
        std::fs::read(self.run_dir(id).join(RECORD_FILE)).ok()
    }

    /// The weights file a finished job serves.
    pub fn weights_path(&self, id: &str) -> PathBuf {
        self.run_dir(id).join(BEST_FILE)
    }

    /// The job `id`: in memory, or a finished one kept on disk.
    pub fn get(&self, id: &str) -> Option<JobStatus> {
        if let Some(j) = self.lock().get(id) {
            return Some(j.status());
        }
        let rec: SubnetRecord = serde_json::from_slice(&self.kept_record(id)?).ok()?;
        let f = rec.finetuned?;
        let request = f.request();
        Some(JobStatus {
            id: id.to_string(),
            state: JobState::Succeeded,
            supernet: rec.supernet,
            base: f.base,
            request,
            step: 0,
            steps: None,
            epoch: f.epochs,
            heldout_top1: Some(f.heldout_top1),
            eta_s: None,
            cancel_requested: false,
            error: None,
            links: links(id),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Job>>> {
        self.jobs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queue the fine-tune `id` of `base` (unless it is queued, running or done): its status.
    pub fn submit(
        &self,
        id: &str,
        base: SubnetRecord,
        request: FinetuneRequest,
    ) -> Result<JobStatus, ApiError> {
        if let Some(done) = self.get(id).filter(|s| s.state == JobState::Succeeded) {
            return Ok(done);
        }
        let mut jobs = self.lock();
        if let Some(j) = jobs.get(id) {
            let st = j.status();
            match st.state {
                JobState::Running if st.cancel_requested => {
                    return Err(ApiError::Conflict {
                        code: "job_stopping",
                        message: format!(
                            "the job `{id}` is stopping after a cancellation: ask again once it is cancelled (it continues from its checkpoint)"
                        ),
                    })
                }
                JobState::Queued | JobState::Running => return Ok(st),
                _ => {}
            }
        }
        let queue = self
            .queues
            .get(&base.supernet)
            .ok_or_else(|| ApiError::Internal(format!("no job thread for `{}`", base.supernet)))?;
        let job = Arc::new(Job {
            status: Mutex::new(JobStatus {
                id: id.to_string(),
                state: JobState::Queued,
                supernet: base.supernet.clone(),
                base: base.id.clone(),
                request,
                step: 0,
                steps: None,
                epoch: 0.0,
                heldout_top1: None,
                eta_s: None,
                cancel_requested: false,
                error: None,
                links: links(id),
            }),
            stop: Arc::new(AtomicBool::new(false)),
            base,
            started: Mutex::new(None),
        });
        // waiting for this package's thread (a cancelled job no longer waits)
        let waiting = jobs
            .values()
            .map(|j| j.status())
            .filter(|st| st.state == JobState::Queued && st.supernet == job.base.supernet)
            .count();
        if waiting >= self.max_jobs {
            metrics::counter!("ofa_rejected_total", "reason" => "jobs_full").increment(1);
            return Err(ApiError::Overloaded(self.max_jobs));
        }
        if queue.send(job.clone()).is_err() {
            return Err(ApiError::Internal("the job thread has stopped".into()));
        }
        metrics::counter!("ofa_finetune_jobs_total").increment(1);
        let st = job.status();
        jobs.insert(id.to_string(), job);
        Ok(st)
    }

    /// Cancel job `id`: a queued job at once, a running one after its current step.
    pub fn cancel(&self, id: &str) -> Result<JobStatus, ApiError> {
        let job = self.lock().get(id).cloned();
        let Some(job) = job else {
            return match self.get(id) {
                Some(_) => Err(finished(id)),
                None => Err(unknown_job(id)),
            };
        };
        job.update(|s| match s.state {
            JobState::Queued => {
                job.stop.store(true, Ordering::SeqCst);
                s.state = JobState::Cancelled;
                s.cancel_requested = true;
            }
            JobState::Running => {
                job.stop.store(true, Ordering::SeqCst);
                s.cancel_requested = true;
            }
            _ => {}
        });
        let st = job.status();
        match st.state {
            JobState::Succeeded | JobState::Failed => Err(finished(id)),
            _ => Ok(st),
        }
    }
}

fn links(id: &str) -> JobLinks {
    JobLinks {
        job: format!("/v1/jobs/{id}"),
        subnet: format!("/v1/subnets/{id}"),
    }
}

/// 404 for a job that does not exist here.
pub fn unknown_job(id: &str) -> ApiError {
    ApiError::not_found("unknown_job", format!("no fine-tuning job `{id}` here"))
}

fn finished(id: &str) -> ApiError {
    ApiError::Conflict {
        code: "job_finished",
        message: format!("the job `{id}` has already ended: there is nothing to cancel"),
    }
}

/// The id of the fine-tune `request` of subnet `base` cut as `cut` describes.
pub fn finetune_id(base: &str, cut: &str, request: &FinetuneRequest) -> String {
    let teacher = request.teacher.unwrap_or(Teacher::Largest);
    let settings = format!("epochs={} teacher={teacher:?}", request.epochs);
    content_id(&[
        b"finetune/1",
        base.as_bytes(),
        cut.as_bytes(),
        settings.as_bytes(),
    ])
}

/// Whether the package's training data is where its card says (409 `no_training_data` if not).
pub fn training_data(package: &Path) -> Result<(), ApiError> {
    let card = package.join(ofa_schema::files::CARD_FILE);
    let data = ofa_schema::read_json::<ofa_schema::run::RunCard<serde::de::IgnoredAny>>(&card)
        .map(|c| PathBuf::from(c.dataset))
        .map_err(|e| ApiError::Conflict {
            code: "no_training_data",
            message: format!("this package's training data cannot be found: {e}"),
        })?;
    if !data.is_dir() {
        return Err(ApiError::Conflict {
            code: "no_training_data",
            message: format!(
                "this package's training data is not on this server (its card names {})",
                data.display()
            ),
        });
    }
    Ok(())
}

/// Run `job` on the calling (job) thread.
fn work(job: &Arc<Job>, cfg: &JobConfig, runs: &Path) {
    // queued → running in one step under the status lock, so a cancellation is either seen here
    // (the job never starts) or finds it running (it stops after a step)
    let mut start = false;
    job.update(|s| {
        if s.state == JobState::Queued && !job.stop.load(Ordering::SeqCst) {
            s.state = JobState::Running;
            start = true;
        }
    });
    if !start {
        return; // cancelled while queued
    }
    let t = Instant::now();
    let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(job, cfg, runs)))
        .unwrap_or_else(|_| Err("the fine-tuning run panicked".into()));
    metrics::histogram!("ofa_finetune_job_seconds").record(t.elapsed().as_secs_f64());
    job.update(|s| {
        s.eta_s = None;
        match out {
            Ok(Some(_)) => s.state = JobState::Succeeded,
            Ok(None) => s.state = JobState::Cancelled,
            Err(e) => {
                s.state = JobState::Failed;
                s.error = Some(e);
            }
        }
    });
}

/// A folder removed (with what it holds) when this is dropped; it need not exist.
#[derive(Debug)]
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The run of `job`: a new one, or the continuation of a cancelled one. `Ok(None)`: cancelled.
fn run(job: &Arc<Job>, cfg: &JobConfig, runs: &Path) -> Result<Option<SubnetRecord>, String> {
    std::fs::create_dir_all(runs).map_err(|e| format!("cannot make {}: {e}", runs.display()))?;
    let st = job.status();
    let dir = runs.join(&st.id);
    let opts = TrainOptions {
        data: None,
        device: cfg.device,
        observer: Arc::new(Progress(job.clone())),
        stop: job.stop.clone(),
        stop_after: None,
        group: None,
    };
    fn err(e: &(dyn std::error::Error + 'static)) -> String {
        ofa_space::chain(e)
    }
    // A cancelled or interrupted run continues from its checkpoint (a folder with finetune.json
    // always has one). One killed before it wrote finetune.json starts again: the trainer
    // takes the folder's lock first, so a replica on the same --cache-dir that is running the
    // job makes this one fail with a named error instead of losing its folder.
    let outcome = if dir.join(FINETUNE_FILE).is_file() {
        resume(&dir, opts).map_err(|e| err(&e))?
    } else {
        let settings = st.request.settings().map_err(|e| e.to_string())?;
        let pkg = Package::open(&cfg.dir, cfg.device).map_err(|e| err(&e))?;
        let subnet = cut(&pkg, &job.base.arch, &cfg.recalibration).map_err(|e| err(&e))?;
        drop(pkg);
        let base = Base {
            subnet,
            arch: job.base.arch.clone(),
        };
        finetune(&cfg.dir, base, &settings, &dir, opts).map_err(|e| err(&e))?
    };
    let record = match outcome {
        Outcome::Interrupted { .. } => return Ok(None),
        Outcome::Finished(r) => r,
    };
    let rec = result_record(&job.base, &st, &record);
    let bytes = ofa_schema::to_json_pretty(&rec);
    ofa_supernet::checkpoint::write_atomic(&dir.join(RECORD_FILE), bytes.as_bytes())
        .map_err(|e| err(&e))?;
    // done: the weights served stay; the checkpoint (weights and momentum) is not needed again
    if let Err(e) = std::fs::remove_file(dir.join(CHECKPOINT_FILE)) {
        tracing::warn!(dir = %dir.display(), error = %e, "a finished job's checkpoint stays");
    }
    Ok(Some(rec))
}

/// The record of a finished fine-tune: the base's, under the new id, with how it was made.
fn result_record(base: &SubnetRecord, st: &JobStatus, r: &FinetuneRecord) -> SubnetRecord {
    let id = &st.id;
    let mut rec = base.clone();
    rec.id = id.clone();
    rec.hardware = None;
    rec.predicted.latency_ms = None;
    rec.search = None;
    rec.links = crate::api::Links {
        record: format!("/v1/subnets/{id}"),
        weights: format!("/v1/subnets/{id}/weights"),
        net_config: format!("/v1/subnets/{id}/net-config"),
        onnx: format!("/v1/subnets/{id}/model.onnx"),
    };
    rec.finetuned = Some(FinetunedInfo {
        base: base.id.clone(),
        epochs: st.request.epochs,
        teacher: r.teacher,
        heldout_top1: r.chosen.heldout_top1,
        best_epoch: r.chosen.epoch,
        test_top1: r.test_top1,
    });
    rec
}
