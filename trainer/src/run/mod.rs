//! A training run: the phase schedule of a recipe over a dataset, in a run directory that survives
//! interruption (atomic rolling checkpoints holding weights, teacher, momentum buffers and
//! counters; every random draw derives from (seed, phase, step), so a resumed run continues
//! exactly), with metrics and the final supernet package.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use ofa_dist::ProcessGroup;
use ofa_schema::files::{METRICS_FILE, RUN_INFO_FILE};
use ofa_schema::metrics::{
    BadFile, DataLine, MetricsLine, PhaseTable, RanksLine, StepLine, ValidationRow,
};
use ofa_schema::run::{DataLoading, RunInfo};
use ofa_space::{sample, ArchConfig, Choices, SearchSpace};
use ofa_supernet::checkpoint::write_atomic;
use ofa_supernet::{channels_last, Layout, Supernet};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tch::{Device, Tensor};

use crate::data::Split;
use crate::loader::{mix, BatchPlan, Loader, Stream, TrainData};
use crate::recipe::{Phase, Recipe};
use crate::step::{lr_at, train_step, Sgd, StepConfig};

mod branch;
mod checkpoint;
mod package;
pub(crate) mod ranks;
mod splits;
mod validate;

pub use branch::branch;
pub use checkpoint::{Branched, RunState, RUN_FORMAT};
pub use ranks::weights_fingerprint;
pub use splits::{load_splits, resolve_space, EvalSet, Splits};

pub use crate::error::TrainError;

pub(crate) fn run_err(path: &Path, reason: impl Into<String>) -> TrainError {
    TrainError::Run {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// What a run reports as it goes. The CLI draws progress bars and tables; the default methods do
/// nothing.
pub trait Observer: Send + Sync {
    /// Phase `index` of `phases` starts (or resumes) at step `from` of `total`.
    fn phase_start(&self, _index: usize, _phases: usize, _name: &str, _from: u64, _total: u64) {}
    /// Step `step` of the current phase ended.
    fn step(&self, _step: u64, _loss: f64, _lr: f64) {}
    /// The current phase's steps ended; `finished` is false when the run stops inside it.
    fn phase_steps_end(&self, _finished: bool) {}
    /// The phase-end validation table.
    fn validation(&self, _phase: &str, _rows: &[ValidationRow]) {}
    /// A fine-tuning run's held-out evaluation; `best`: the best so far.
    fn epoch(&self, _record: &ofa_schema::finetune::EpochRecord, _best: bool) {}
}

/// An [`Observer`] that ignores everything.
#[derive(Debug, Clone, Copy, Default)]
pub struct Silent;

impl Observer for Silent {}

/// How a call to [`train`] ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Every phase done; the package is in the run directory.
    Finished,
    /// Stopped on request (Ctrl-C) after saving a checkpoint.
    Interrupted {
        /// Steps done so far.
        global_step: u64,
    },
}

/// Everything a run needs besides its recipe.
#[derive(Clone)]
pub struct TrainOptions {
    /// Dataset directory (default: the recipe's).
    pub data: Option<PathBuf>,
    /// Compute device.
    pub device: Device,
    /// Told about progress and phase-end tables.
    pub observer: Arc<dyn Observer>,
    /// Set to stop after the current step (checkpoint first).
    pub stop: Arc<AtomicBool>,
    /// Stop (as if interrupted) after this many global steps; for tests and time-boxed runs.
    pub stop_after: Option<u64>,
    /// The job this process is a rank of (`None`: a single-process run). Every rank trains on its
    /// shard of each global batch; gradients are averaged across ranks before each optimiser
    /// step; rank 0 alone writes the run directory and reports to the observer.
    pub group: Option<Arc<ProcessGroup>>,
}

impl std::fmt::Debug for TrainOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrainOptions")
            .field("data", &self.data)
            .field("device", &self.device)
            .field("stop", &self.stop)
            .field("stop_after", &self.stop_after)
            .field("group", &self.group)
            .finish_non_exhaustive()
    }
}

struct Ctx {
    /// The lead's exclusive lock on the run folder, held for the run (see [`lock_run`]).
    _lock: Option<std::fs::File>,
    recipe: Recipe,
    space: SearchSpace,
    dir: PathBuf,
    train: TrainData,
    val: Split,
    test: Option<EvalSet>,
    calib: Split,
    dataset: String,
    opts: TrainOptions,
}

/// Start a new run of `recipe` in `dir` (created; must not hold a run already).
pub fn train(recipe: Recipe, dir: &Path, opts: TrainOptions) -> Result<Outcome, TrainError> {
    let group = opts.group.clone();
    let ctx = ranks::all_ok(group.as_deref(), SETUP, Ctx::create(recipe, dir, opts))?;
    let net = ctx.fresh_net()?;
    ctx.run_from(net, None, RunState::default(), None)
}
/// Continue the run in `dir` from its last checkpoint (or from the start if it has none).
pub fn resume(dir: &Path, opts: TrainOptions) -> Result<Outcome, TrainError> {
    let group = opts.group.clone();
    let opened = (|| {
        let text = std::fs::read_to_string(dir.join("recipe.toml"))
            .map_err(|_| run_err(dir, "not a run directory (no recipe.toml)"))?;
        // the lead holds the folder for the run; the other ranks of its job share it
        let lock = if is_lead(opts.group.as_deref()) {
            let lock = lock_run(dir)?;
            repair_metrics(&dir.join(METRICS_FILE))?;
            Some(lock)
        } else {
            None
        };
        let recipe = Recipe::from_toml(&text, &dir.join("recipe.toml").display().to_string())?;
        let mut opts = opts;
        if opts.data.is_none() {
            // run folders from before run.json existed use the recipe's data folder
            let info = dir.join(RUN_INFO_FILE);
            let saved = if info.exists() {
                ofa_schema::read_json::<RunInfo>(&info)
                    .map_err(|e| run_err(&info, e.to_string()))?
                    .data
            } else {
                recipe.data.clone()
            };
            opts.data = Some(PathBuf::from(saved));
        }
        let mut ctx = Ctx::new(recipe, dir, opts)?;
        ctx._lock = lock;
        let ck = dir.join("checkpoint.safetensors");
        let loaded = if ck.exists() {
            Some(ctx.load_checkpoint(&ck)?)
        } else {
            None
        };
        Ok((ctx, loaded))
    })();
    let (ctx, loaded) = ranks::all_ok(group.as_deref(), SETUP, opened)?;
    match loaded {
        None => {
            let net = ctx.fresh_net()?;
            ctx.run_from(net, None, RunState::default(), None)
        }
        Some(l) => ctx.run_from(l.net, l.teacher, l.state, Some(l.momentum)),
    }
}

/// The lock file of a run folder.
pub(crate) const LOCK_FILE: &str = ".lock";

/// Take the run folder `dir` for this process: an exclusive `flock` on `dir/.lock`, released when
/// the process ends however it ends. A second launch into the folder (a new run or a resume)
/// fails at once instead of writing the same checkpoint.
pub(crate) fn lock_run(dir: &Path) -> Result<std::fs::File, TrainError> {
    let path = dir.join(LOCK_FILE);
    let f = std::fs::File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| run_err(&path, e.to_string()))?;
    use std::os::fd::AsRawFd;
    // (`File::try_lock` does this from Rust 1.89, above this workspace's 1.85)
    #[allow(unsafe_code)]
    // SAFETY: `flock` on a file descriptor that `f` owns and keeps open for the call.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(f);
    }
    let e = std::io::Error::last_os_error();
    if e.kind() == std::io::ErrorKind::WouldBlock {
        return Err(run_err(
            dir,
            "another `ofa train` or `ofa finetune` is running in this folder (it holds .lock): wait \
             for it, or choose another --out",
        ));
    }
    // A file system without `flock` (Lustre mounted without `-o flock`, some FUSE mounts): the
    // run goes on unlocked, as it did before the lock existed, and says so.
    if matches!(
        e.raw_os_error(),
        Some(libc::ENOSYS | libc::EOPNOTSUPP | libc::ENOLCK)
    ) {
        tracing::warn!(path = %path.display(), error = %e, "this file system cannot lock the run folder: two launches into it would not be stopped");
        return Ok(f);
    }
    Err(run_err(&path, e.to_string()))
}

impl Ctx {
    /// A new run directory for `recipe` (refused where one exists), its recipe and run.json written.
    fn create(recipe: Recipe, dir: &Path, opts: TrainOptions) -> Result<Ctx, TrainError> {
        let mut opts = opts;
        if opts.data.is_none() {
            opts.data = Some(PathBuf::from(&recipe.data));
        }
        if !is_lead(opts.group.as_deref()) {
            // Rank 0 checks and creates the directory; the others only read the data.
            return Ctx::new(recipe, dir, opts);
        }
        std::fs::create_dir_all(dir).map_err(|e| run_err(dir, e.to_string()))?;
        // locked before it is checked: of two launches into one folder, one starts
        let lock = lock_run(dir)?;
        if dir.join("recipe.toml").exists() {
            return Err(run_err(
                dir,
                "already holds a run: resume it with --resume, or choose another --out",
            ));
        }
        let mut ctx = Ctx::new(recipe, dir, opts)?;
        ctx._lock = Some(lock);
        write_atomic(&dir.join("recipe.toml"), ctx.recipe.to_toml().as_bytes())?;
        let info = RunInfo {
            data: ctx.dataset.clone(),
            device: format!("{:?}", ctx.opts.device),
            data_loading: match ctx.train {
                TrainData::Memory(_) => DataLoading::Memory,
                TrainData::Stream(_) => DataLoading::Stream,
            },
            train_images: ctx.train.len(),
            world_size: ctx.world(),
            backend: ctx.backend().map(str::to_string),
        };
        write_atomic(
            &dir.join(RUN_INFO_FILE),
            ofa_schema::to_json(&info).as_bytes(),
        )?;
        Ok(ctx)
    }

    fn new(recipe: Recipe, dir: &Path, opts: TrainOptions) -> Result<Ctx, TrainError> {
        let data_dir = opts
            .data
            .clone()
            .unwrap_or_else(|| PathBuf::from(&recipe.data));
        if let Some(g) = opts.group.as_deref() {
            let b = recipe.train.batch_size;
            if b % g.world() != 0 {
                return Err(run_err(
                    dir,
                    format!(
                        "a batch of {b} does not split evenly between {} ranks: choose a `train.batch_size` that the world size divides, so each step's averaged gradient is the whole batch's",
                        g.world()
                    ),
                ));
            }
        }
        let sp = load_splits(&recipe, &data_dir)?;
        let space = resolve_space(&recipe, sp.n_classes)?;
        let (train, val, calib) = (sp.train, sp.val, sp.calib);
        Ok(Ctx {
            _lock: None,
            space,
            dir: dir.to_path_buf(),
            train,
            val,
            test: sp.test,
            calib,
            dataset: data_dir.display().to_string(),
            recipe,
            opts,
        })
    }

    /// The process group, in a data-parallel run.
    fn group(&self) -> Option<&ProcessGroup> {
        self.opts.group.as_deref()
    }

    /// Whether this process writes the run directory and reports progress (rank 0, or the only
    /// process).
    fn lead(&self) -> bool {
        is_lead(self.group())
    }

    /// Ranks in the job (1 on one process).
    fn world(&self) -> usize {
        self.group().map_or(1, ProcessGroup::world)
    }

    /// The collective backend's name (`None` on one process).
    fn backend(&self) -> Option<&'static str> {
        self.group().map(|g| g.backend().name())
    }

    fn plan(&self, phase: usize) -> BatchPlan {
        BatchPlan {
            seed: self.recipe.train.seed,
            phase: phase as u64,
            batch_size: self.recipe.train.batch_size,
            resolutions: self.space.resolutions.clone(),
            channels: i64::from(self.space.in_channels),
            augment: self.recipe.augment.clone(),
            shard: self.group().map(|g| (g.rank(), g.world())),
        }
    }

    /// A freshly initialised supernet in the training layout (channels-last weights).
    fn fresh_net(&self) -> Result<Supernet, TrainError> {
        let t = &self.recipe.train;
        let net = Supernet::new_with(&self.space, t.seed, self.opts.device, t.init)?;
        Ok(net.to_layout(Layout::ChannelsLast)?)
    }

    fn run_from(
        &self,
        mut net: Supernet,
        mut teacher: Option<Supernet>,
        mut state: RunState,
        mut momentum: Option<HashMap<String, Tensor>>,
    ) -> Result<Outcome, TrainError> {
        let t = &self.recipe.train;
        let cfg = StepConfig {
            kd_ratio: t.kd_ratio,
            label_smoothing: t.label_smoothing,
            precision: t.precision,
        };
        // Every rank starts from rank 0's weights, at the same place in the run.
        let group = self.group();
        ranks::agree(
            group,
            "the run (recipe, data sizes, phase, step, teacher)",
            ranks::hash_of((
                self.recipe.to_toml(),
                [self.train.len(), self.val.len(), self.calib.len()],
                self.space.n_classes,
                (
                    state.phase,
                    state.step,
                    state.global_step,
                    teacher.is_some(),
                ),
            )),
        )?;
        ranks::broadcast_from_first(group, &net)?;
        if let Some(t) = &teacher {
            ranks::broadcast_from_first(group, t)?;
        }
        if state.world_size != 0 && state.world_size != self.world() {
            tracing::warn!(
                saved = state.world_size, now = self.world(),
                "resuming with another world size: the optimisation continues, but BatchNorm's batch statistics come from shards of another size, so the run will not equal an uninterrupted one bit for bit"
            );
        }
        state.world_size = self.world();
        state.backend = self.backend().map(str::to_string);
        let silent = Silent;
        let obs: &dyn Observer = if self.lead() {
            self.opts.observer.as_ref()
        } else {
            &silent
        };
        let session_start = Instant::now();
        let elapsed_before = state.elapsed_s;
        while state.phase < self.recipe.phases.len() {
            let pi = state.phase;
            let phase = &self.recipe.phases[pi];
            let plan = self.plan(pi);
            let nb = plan.batches_per_epoch(self.train.len());
            let total = phase.total_steps(nb);
            let warmup = phase.warmup(nb);
            if state.step == 0 {
                if let Some(stage) = phase.sort_channels {
                    tracing::info!(phase = %phase.name, stage, "channel importance sorting");
                    net.sort_channels(stage);
                }
            }
            // A fresh optimiser per phase (each reference phase is its own run); restored
            // momentum when resuming mid-phase.
            let mut opt = Sgd::new(&net, t.momentum, t.weight_decay);
            if let Some(m) = momentum.take() {
                opt.load_state(&net, &m);
            }
            let choices = phase.choices(&self.space);
            tracing::info!(
                phase = %phase.name, steps = total, from = state.step, warmup, lr = phase.lr,
                subnets = phase.subnets_per_step, "phase start"
            );
            // once per phase (and so after a resume): every rank reduces the same buckets
            ranks::agree(
                group,
                "the gradient bucket layout (trainable tensors, shapes, types, in order)",
                ranks::bucket_layout(&net),
            )?;
            obs.phase_start(pi, self.recipe.phases.len(), &phase.name, state.step, total);
            let mut loader =
                Loader::new(&self.train, &plan, state.step, total, t.workers, t.prefetch);
            let mut window = LogWindow::new();
            let use_teacher = if pi > 0 { teacher.as_ref() } else { None };
            while state.step < total {
                let Some(batch) = loader.next() else {
                    return Err(run_err(
                        &self.dir,
                        format!("the data loader stopped at step {} of {total}", state.step),
                    ));
                };
                let batch = batch?;
                let step = state.step;
                // Dropout masks: each rank draws its own for its shard.
                let dropout_seed = match group {
                    None => mix(&[t.seed, pi as u64, step, Stream::Dropout.tag()]),
                    Some(g) => mix(&[
                        t.seed,
                        pi as u64,
                        step,
                        Stream::Dropout.tag(),
                        g.rank() as u64,
                    ]),
                };
                let archs = step_archs(
                    &self.space,
                    &choices,
                    phase,
                    [t.seed, pi as u64, step],
                    batch.resolution,
                );
                let lr = lr_at(step, total, warmup, phase.lr);
                let x = channels_last(&batch.x.to_device(self.opts.device));
                let y = batch.y.to_device(self.opts.device);
                let stats = ofa_supernet::rng::with_seed(dropout_seed, || {
                    train_step(&net, use_teacher, &mut opt, &x, &y, &archs, &cfg, lr, group)
                })?;
                let asked = self.opts.stop.load(Ordering::SeqCst);
                let (loss, top1, asked) =
                    ranks::step_consensus(group, stats.loss, stats.top1, asked)?;
                state.step += 1;
                state.global_step += 1;
                window.add(loss, top1, x.size()[0] as usize * self.world());
                obs.step(state.step, loss, lr);
                if state.step % t.log_every.max(1) == 0 || state.step == total {
                    let secs = window.start.elapsed().as_secs_f64().max(1e-9);
                    self.log(&MetricsLine::Step(StepLine {
                        phase: phase.name.clone(),
                        step: state.step,
                        global_step: state.global_step,
                        loss: window.loss / window.steps as f64,
                        top1: window.top1 / window.steps as f64,
                        lr,
                        images_per_s: window.images as f64 / secs,
                        data_wait_s: loader.waited().as_secs_f64(),
                        elapsed_s: elapsed_before + session_start.elapsed().as_secs_f64(),
                    }))?;
                    window = LogWindow::new();
                }
                let stop_now =
                    asked || self.opts.stop_after.is_some_and(|s| state.global_step >= s);
                let saved = if state.step < total
                    && (state.global_step % t.checkpoint_every.max(1) == 0 || stop_now)
                {
                    state.elapsed_s = elapsed_before + session_start.elapsed().as_secs_f64();
                    self.save_checkpoint(&net, teacher.as_ref(), Some(&opt), &state)
                } else {
                    Ok(())
                };
                if stop_now && state.step < total {
                    // Every rank returns once rank 0's checkpoint is on disk (or with its error).
                    ranks::all_ok(group, "saving the stop checkpoint", saved)?;
                    obs.phase_steps_end(false);
                    return Ok(Outcome::Interrupted {
                        global_step: state.global_step,
                    });
                }
                saved?;
            }
            drop(loader);
            if let TrainData::Stream(stream) = &self.train {
                // Skipped images are counted in the metrics, not only in the log: every rank's
                // count (each skips within its own shards), and rank 0's files by name.
                let bad = stream.bad_files();
                let per_rank = match group {
                    Some(g) => g.exchange(bad.len() as i64)?,
                    None => vec![bad.len() as i64],
                };
                if per_rank.iter().any(|&n| n > 0) {
                    self.log(&MetricsLine::Data(DataLine {
                        phase: phase.name.clone(),
                        bad_images: per_rank.iter().sum::<i64>(),
                        limit: t.max_bad_images as u64,
                        files: bad
                            .iter()
                            .map(|(p, why)| BadFile {
                                path: p.display().to_string(),
                                reason: why.clone(),
                            })
                            .collect(),
                        bad_images_per_rank: group.is_some().then(|| per_rank.clone()),
                    }))?;
                }
            }
            obs.phase_steps_end(true);
            if pi == 0 {
                // The trained full network becomes the teacher.
                teacher = Some(net.deep_clone()?);
            }
            let table = self.validate(&net, pi)?;
            let table = PhaseTable {
                phase: phase.name.clone(),
                rows: table,
            };
            self.log(&MetricsLine::Validation(table.clone()))?;
            if let Some(g) = group {
                let fingerprint = weights_fingerprint(&net);
                ranks::agree(Some(g), "the weights (fingerprints)", fingerprint)?;
                self.log(&MetricsLine::Ranks(RanksLine {
                    phase: phase.name.clone(),
                    global_step: state.global_step,
                    world_size: g.world(),
                    backend: g.backend().name().to_string(),
                    weights_fingerprint: format!("{fingerprint:016x}"),
                }))?;
            }
            obs.validation(&phase.name, &table.rows);
            state.tables.push(table);
            state.phase += 1;
            state.step = 0;
            state.elapsed_s = elapsed_before + session_start.elapsed().as_secs_f64();
            let saved = self.save_checkpoint(&net, teacher.as_ref(), None, &state);
            ranks::all_ok(group, "saving the phase-end checkpoint", saved)?;
            let asked = ranks::any_stop(group, self.opts.stop.load(Ordering::SeqCst))?;
            let stop_now = asked || self.opts.stop_after.is_some_and(|s| state.global_step >= s);
            if stop_now && state.phase < self.recipe.phases.len() {
                return Ok(Outcome::Interrupted {
                    global_step: state.global_step,
                });
            }
        }
        let written = self.write_package(&net, &state);
        ranks::all_ok(group, "writing the package", written)?;
        Ok(Outcome::Finished)
    }

    /// Append a line to `metrics.jsonl` (rank 0 alone).
    fn log(&self, line: &MetricsLine) -> Result<(), TrainError> {
        if !self.lead() {
            return Ok(());
        }
        append_metrics(&self.dir.join(METRICS_FILE), line)
    }
}

/// Append `line` to the metrics file at `path` (created if missing).
pub(crate) fn append_metrics(path: &Path, line: &MetricsLine) -> Result<(), TrainError> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| run_err(path, e.to_string()))?;
    // one write per line: a kill leaves at most a torn last line, which readers tell apart
    f.write_all(format!("{}\n", line.to_line()).as_bytes())
        .map_err(|e| run_err(path, e.to_string()))
}

/// Cut a torn last line (a run killed while appending it) off the metrics file at `path`, so
/// that what a resumed run appends follows whole lines. A missing file stays missing. (The
/// steps after the last checkpoint are logged again by the resumed run: readers let the later
/// lines replace the earlier ones.)
pub(crate) fn repair_metrics(path: &Path) -> Result<(), TrainError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(run_err(path, e.to_string())),
    };
    if bytes.last().is_none_or(|b| *b == b'\n') {
        return Ok(());
    }
    let whole = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    tracing::warn!(
        path = %path.display(),
        bytes = bytes.len() - whole,
        "the metrics file ends in a torn line (the run was killed while writing it): cut off"
    );
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|f| f.set_len(whole as u64))
        .map_err(|e| run_err(path, e.to_string()))
}

/// The steps since the last metrics line: sums of their loss and top-1, their count, when the
/// window opened and the images trained (over all ranks).
pub(crate) struct LogWindow {
    pub(crate) loss: f64,
    pub(crate) top1: f64,
    pub(crate) steps: usize,
    pub(crate) start: Instant,
    pub(crate) images: usize,
}

impl LogWindow {
    pub(crate) fn new() -> LogWindow {
        LogWindow {
            loss: 0.0,
            top1: 0.0,
            steps: 0,
            start: Instant::now(),
            images: 0,
        }
    }

    pub(crate) fn add(&mut self, loss: f64, top1: f64, images: usize) {
        self.loss += loss;
        self.top1 += top1;
        self.steps += 1;
        self.images += images;
    }
}

/// The stage [`ranks::all_ok`] names when a rank fails before training.
const SETUP: &str = "while setting up";

/// Whether a process of `group` writes the run directory.
pub(crate) fn is_lead(group: Option<&ProcessGroup>) -> bool {
    group.is_none_or(|g| g.rank() == 0)
}

/// The subnets one step trains, all at the batch's resolution: `subnets_per_step` seeded draws
/// from `choices` (seed parts `[seed, phase, step]`), or with the sandwich rule the phase's
/// largest first, its smallest last and draws between.
fn step_archs(
    space: &SearchSpace,
    choices: &Choices,
    phase: &Phase,
    [seed, pi, step]: [u64; 3],
    resolution: u32,
) -> Vec<ArchConfig> {
    let n = phase.subnets_per_step;
    (0..n)
        .map(|k| {
            let mut a = if phase.sandwich && k == 0 {
                choices.largest(space)
            } else if phase.sandwich && k + 1 == n {
                choices.smallest(space)
            } else {
                let s = mix(&[seed, pi, step, Stream::Subnets.tag(), k as u64]);
                sample(space, choices, &mut ChaCha8Rng::seed_from_u64(s))
            };
            a.r = resolution;
            a
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::branch::branch_mismatch;
    use super::*;

    #[test]
    fn a_torn_last_metrics_line_is_cut_off_before_a_resume_appends() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(METRICS_FILE);
        repair_metrics(&path).unwrap();
        assert!(!path.exists(), "a missing file stays missing");
        let whole = "{\"a\":1}\n{\"b\":2}\n";
        std::fs::write(&path, format!("{whole}{{\"c\":")).unwrap();
        repair_metrics(&path).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), whole);
        repair_metrics(&path).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            whole,
            "whole lines stay"
        );
        std::fs::write(&path, "{\"torn\"").unwrap();
        repair_metrics(&path).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "");
    }

    #[test]
    fn the_no_ps_ablation_branches_from_an_fmnist_full_network() {
        let ps = Recipe::load("fmnist").unwrap();
        let no_ps = Recipe::load("fmnist-no-ps").unwrap();
        assert_eq!(branch_mismatch(&ps, &no_ps, 1), None);
        assert!(branch_mismatch(&ps, &no_ps, 2).unwrap().contains("phase 2"));
        // equal steps and subnet-epochs after the full network
        let work = |r: &Recipe| -> (f64, f64) {
            r.phases[1..].iter().fold((0.0, 0.0), |(e, se), p| {
                let ep = p.epochs.unwrap();
                (e + ep, se + ep * p.subnets_per_step as f64)
            })
        };
        assert_eq!(work(&ps), work(&no_ps));
        assert_eq!(work(&ps), (20.0, 50.0));
    }

    #[test]
    fn the_short_ablation_branches_from_an_fmnist_short_full_network() {
        let ps = Recipe::load("fmnist-short").unwrap();
        let no_ps = Recipe::load("fmnist-short-no-ps").unwrap();
        assert_eq!(branch_mismatch(&ps, &no_ps, 1), None);
        assert!(branch_mismatch(&ps, &no_ps, 2).unwrap().contains("phase 2"));
        // 195 batches per epoch (50,000 training images, batch 256): the full network's 6 epochs
        // end at step 1,170, and both arms then train equal steps and subnet-steps.
        assert_eq!(ps.phases[0].total_steps(195), 1170);
        let work = |r: &Recipe| -> (u64, u64) {
            r.phases[1..].iter().fold((0, 0), |(s, ss), p| {
                let n = p.total_steps(195);
                (s + n, ss + n * p.subnets_per_step as u64)
            })
        };
        assert_eq!(work(&ps), work(&no_ps));
        assert_eq!(work(&ps), (735, 1815));
    }

    #[test]
    fn sandwich_trains_the_phase_extremes_and_draws_between() {
        let space = SearchSpace::preset("ofa-mbv3-small32").unwrap();
        let recipe = Recipe::load("smoke").unwrap();
        let mut phase = recipe.phases.last().unwrap().clone();
        phase.subnets_per_step = 4;
        let choices = phase.choices(&space);
        let plain = step_archs(&space, &choices, &phase, [0, 5, 9], 24);
        phase.sandwich = true;
        let sw = step_archs(&space, &choices, &phase, [0, 5, 9], 24);
        assert_eq!(sw.len(), 4);
        assert!(sw.iter().all(|a| a.r == 24));
        fn max<T: Copy + Ord>(l: &[T]) -> T {
            *l.iter().max().unwrap()
        }
        fn min<T: Copy + Ord>(l: &[T]) -> T {
            *l.iter().min().unwrap()
        }
        assert!(sw[0].ks.iter().all(|k| *k == max(&phase.ks)));
        assert!(sw[0].e.iter().all(|e| *e == max(&phase.expand)));
        assert!(sw[0].d.iter().all(|d| *d == max(&phase.depth)));
        assert!(sw[3].ks.iter().all(|k| *k == min(&phase.ks)));
        assert!(sw[3].e.iter().all(|e| *e == min(&phase.expand)));
        assert!(sw[3].d.iter().all(|d| *d == min(&phase.depth)));
        // The draws between are the plain rule's draws for the same slots, so switching the
        // rule on changes nothing else about a run's randomness.
        assert_eq!(sw[1..3], plain[1..3]);
        assert_ne!(plain[0], sw[0]);
    }
}
