//! A training run: the phase schedule of a recipe over a dataset, in a run directory that survives
//! interruption (atomic rolling checkpoints holding weights, teacher, momentum buffers and
//! counters; every random draw derives from (seed, phase, step), so a resumed run continues
//! exactly), with metrics and the final supernet package.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use ofa_package::measure::{recalibrated, subset, top1, Recalibration};
use ofa_space::{sample, ArchConfig, Choices, SearchSpace, N_STAGES};
use ofa_supernet::checkpoint::{read_safetensors, write_atomic, write_safetensors};
use ofa_supernet::{channels_last, Layout, Provenance, Supernet, SupernetError};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tch::{Device, Tensor};

use crate::data::{is_image_folder, load_any, DataError, Split};
use crate::folder::{scan, FolderStream, JpegDecoder};
use crate::loader::{mix, BatchPlan, Loader, TrainData};
use crate::recipe::{DataLoading, Phase, Recipe, RecipeError, AUTO_STREAM_BYTES};
use crate::step::{lr_at, train_step, Sgd, StepConfig};

/// `format` of a run checkpoint.
pub const RUN_FORMAT: &str = "ofa-run/1";

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// Recipe problems.
    #[error(transparent)]
    Recipe(#[from] RecipeError),
    /// Dataset problems.
    #[error(transparent)]
    Data(#[from] DataError),
    /// Network or checkpoint problems.
    #[error(transparent)]
    Net(#[from] SupernetError),
    /// Package or measurement problems.
    #[error(transparent)]
    Package(#[from] ofa_package::PackageError),
    /// Space problems.
    #[error(transparent)]
    Space(#[from] ofa_space::SpaceError),
    /// Run directory problems.
    #[error("{path}: {reason}")]
    Run {
        /// The path.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

fn run_err(path: &Path, reason: impl Into<String>) -> TrainError {
    TrainError::Run {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Where a run stands (saved in every checkpoint).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunState {
    /// Phase being trained (== number of phases when done).
    pub phase: usize,
    /// Steps done in that phase.
    pub step: u64,
    /// Steps done in the whole run.
    pub global_step: u64,
    /// Phase-end validation tables so far.
    pub tables: Vec<Value>,
    /// Seconds of training so far (over all sessions).
    pub elapsed_s: f64,
    /// The checkpoint this run branched from ([`branch`]), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branched_from: Option<Branched>,
}

/// Where a branched run came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Branched {
    /// The checkpoint file, as given.
    pub checkpoint: String,
    /// Its recipe's name.
    pub recipe: String,
    /// Phases it had completed (shared with this run).
    pub phases: usize,
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
    /// The phase-end validation table: rows `{subnet, resolution, val_top1[, test_top1]}`.
    fn validation(&self, _phase: &str, _rows: &[Value]) {}
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
}

impl std::fmt::Debug for TrainOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrainOptions")
            .field("data", &self.data)
            .field("device", &self.device)
            .field("stop", &self.stop)
            .field("stop_after", &self.stop_after)
            .finish_non_exhaustive()
    }
}

struct Ctx {
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

/// The data of a run, split as the run splits it.
#[derive(Debug)]
pub struct Splits {
    /// Training images (the holdout removed), in memory or streamed.
    pub train: TrainData,
    /// The held-out validation split (taken from train, seeded).
    pub val: Split,
    /// The test split, where the format has one.
    pub test: Option<EvalSet>,
    /// The BN-recalibration subset of `train`.
    pub calib: Split,
    /// Classes in the dataset.
    pub n_classes: usize,
}

/// An evaluation split: decoded in memory, or an image folder's file list decoded a chunk at a
/// time when it is scored (ImageNet's 50,000 validation images would take 9.8 GB at 256 px).
#[derive(Debug)]
pub enum EvalSet {
    /// In memory.
    Memory(Split),
    /// Image files, decoded at `size` (short side resized, centre-cropped) when used.
    Folder {
        /// The files.
        stream: Arc<FolderStream>,
        /// Decoded size.
        size: u32,
    },
}

/// Images an [`EvalSet::Folder`] decodes at a time when it is scored.
const EVAL_CHUNK: usize = 1024;

impl EvalSet {
    /// Number of images.
    pub fn len(&self) -> usize {
        match self {
            EvalSet::Memory(s) => s.len(),
            EvalSet::Folder { stream, .. } => stream.len(),
        }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// All of it in memory.
    pub fn load(&self) -> Result<Split, DataError> {
        match self {
            EvalSet::Memory(s) => Ok(Split {
                images: s.images.shallow_clone(),
                labels: s.labels.shallow_clone(),
            }),
            EvalSet::Folder { stream, size } => {
                let idx: Vec<usize> = (0..stream.len()).collect();
                stream.eval_images(&idx, *size, 1.0)
            }
        }
    }

    /// Top-1 (fraction) of `net` at resolution `r` over the whole set; a folder is decoded
    /// [`EVAL_CHUNK`] images at a time, so memory does not grow with the set.
    pub fn top1(
        &self,
        net: &ofa_supernet::Subnet,
        r: u32,
        aug: &crate::augment::AugmentConfig,
        batch: usize,
    ) -> Result<f64, TrainError> {
        match self {
            EvalSet::Memory(s) => Ok(top1(net, s, r, aug, batch, usize::MAX)?),
            EvalSet::Folder { stream, size } => {
                let (mut correct, mut n) = (0.0f64, 0usize);
                let all: Vec<usize> = (0..stream.len()).collect();
                for chunk in all.chunks(EVAL_CHUNK) {
                    let split = stream.eval_images(chunk, *size, 1.0)?;
                    if split.is_empty() {
                        continue;
                    }
                    let acc = top1(net, &split, r, aug, batch, usize::MAX)?;
                    correct += (acc * split.len() as f64).round();
                    n += split.len();
                }
                if n == 0 {
                    return Err(ofa_package::PackageError::EmptySplit.into());
                }
                Ok(correct / n as f64)
            }
        }
    }
}

/// Load `data_dir` and split it exactly as a run of `recipe` does (same holdout, same seed), so
/// that a package's held-out split can be rebuilt later. An image folder is streamed or decoded
/// into memory as `train.data_loading` says (the choice is logged); either way the held-out and
/// calibration images are the same files, decoded the same way.
pub fn load_splits(recipe: &Recipe, data_dir: &Path) -> Result<Splits, TrainError> {
    // Image folders are decoded at the size the eval transform needs.
    let max_r = resolve_space(recipe, 1)?
        .resolutions
        .iter()
        .copied()
        .max()
        .unwrap_or(224);
    let folder_size = (f64::from(max_r) / recipe.augment.eval_crop).ceil() as u32;
    let v = &recipe.validation;
    let seed = recipe.train.seed;
    let too_small = |n: usize| {
        run_err(
            data_dir,
            format!(
                "{n} training images cannot spare a holdout of {}",
                v.holdout
            ),
        )
    };
    if is_image_folder(data_dir) {
        let index = scan(data_dir)?;
        let n = index.train.len();
        let decoded = n as u64 * 3 * u64::from(folder_size) * u64::from(folder_size);
        let stream = match recipe.train.data_loading {
            DataLoading::Stream => true,
            DataLoading::Memory => false,
            DataLoading::Auto => decoded > AUTO_STREAM_BYTES,
        };
        tracing::info!(
            images = n,
            classes = index.classes.len(),
            skipped_formats = index.skipped,
            decoded_mib = decoded >> 20,
            mode = if stream { "stream" } else { "memory" },
            setting = ?recipe.train.data_loading,
            "image folder"
        );
        if stream {
            if n <= v.holdout {
                return Err(too_small(n));
            }
            let (rest, held) = ofa_package::holdout_indices(n, v.holdout, seed);
            let pick = |ix: &[i64]| {
                ix.iter()
                    .map(|&i| index.train[i as usize].clone())
                    .collect()
            };
            let train_files: Vec<_> = pick(&rest);
            // Bad files among the held-out and calibration images are skipped too, each
            // stream counting against the same limit.
            let max_bad = recipe.train.max_bad_images;
            let held = FolderStream::new(pick(&held), JpegDecoder::default(), max_bad);
            let all_held: Vec<usize> = (0..held.len()).collect();
            let val = held.eval_images(&all_held, folder_size, 1.0)?;
            let k = v.calibration_images.min(train_files.len());
            let (_, calib_ix) = ofa_package::holdout_indices(train_files.len(), k, mix(&[seed, 7]));
            let calib_files = calib_ix
                .iter()
                .map(|&i| train_files[i as usize].clone())
                .collect();
            let calib = FolderStream::new(calib_files, JpegDecoder::default(), max_bad);
            let calib =
                calib.eval_images(&(0..calib.len()).collect::<Vec<_>>(), folder_size, 1.0)?;
            let test = index.test.map(|t| EvalSet::Folder {
                stream: Arc::new(FolderStream::new(t, JpegDecoder::default(), max_bad)),
                size: folder_size,
            });
            return Ok(Splits {
                train: TrainData::Stream(Arc::new(FolderStream::new(
                    train_files,
                    JpegDecoder::default(),
                    max_bad,
                ))),
                val,
                test,
                calib,
                n_classes: index.classes.len(),
            });
        }
    }
    let ds = load_any(data_dir, folder_size, false)?;
    if ds.train.len() <= v.holdout {
        return Err(too_small(ds.train.len()));
    }
    let (train, val) = ds.train.split_validation(v.holdout, seed);
    let calib = subset(
        &train,
        v.calibration_images.min(train.len()),
        mix(&[seed, 7]),
    );
    Ok(Splits {
        train: TrainData::Memory(train),
        val,
        test: ds.test.map(EvalSet::Memory),
        calib,
        n_classes: ds.n_classes,
    })
}

/// The space a recipe trains, given the dataset's class count.
pub fn resolve_space(recipe: &Recipe, n_classes: usize) -> Result<SearchSpace, TrainError> {
    let mut space = if Path::new(&recipe.space).is_file() {
        let text = std::fs::read_to_string(&recipe.space)
            .map_err(|e| run_err(Path::new(&recipe.space), e.to_string()))?;
        SearchSpace::from_json(&text)?
    } else {
        SearchSpace::preset(&recipe.space)?
    };
    space.n_classes = recipe.n_classes.unwrap_or(n_classes as u32);
    space.dropout_rate = recipe.train.dropout;
    if let Some(r) = &recipe.resolutions {
        space.resolutions = r.clone();
    }
    space.validate()?;
    for p in &recipe.phases {
        let c = Choices {
            ks: p.ks.clone(),
            e: p.expand.clone(),
            d: p.depth.clone(),
            r: space.resolutions.clone(),
        };
        c.validate(&space).map_err(|e| {
            TrainError::Recipe(RecipeError::Invalid {
                origin: recipe.name.clone(),
                message: format!("phase `{}`: {e}", p.name),
            })
        })?;
    }
    Ok(space)
}

/// Start a new run of `recipe` in `dir` (created; must not hold a run already).
pub fn train(recipe: Recipe, dir: &Path, opts: TrainOptions) -> Result<Outcome, TrainError> {
    let ctx = Ctx::create(recipe, dir, opts)?;
    let net = ctx.fresh_net()?;
    ctx.run_from(net, None, RunState::default(), None)
}

/// Start a new run of `recipe` in `dir` from another run's checkpoint `from`, saved at a phase
/// boundary: the phases done there must be the first phases of `recipe`, and every other setting
/// the same. Both runs then share their trained full network (and teacher), as the arms of an
/// ablation do. The source run's metrics up to the boundary are copied when they lie beside the
/// checkpoint.
pub fn branch(
    recipe: Recipe,
    dir: &Path,
    from: &Path,
    opts: TrainOptions,
) -> Result<Outcome, TrainError> {
    let f = read_safetensors(from)?;
    let state = checkpoint_state(from, &f.metadata)?;
    let source = match f.metadata.get("recipe") {
        Some(t) => Recipe::from_toml(t, &format!("{}: metadata `recipe`", from.display()))?,
        None => {
            // Checkpoints before the recipe was stored in them: the run's own recipe.toml.
            let p = from.with_file_name("recipe.toml");
            let text = std::fs::read_to_string(&p).map_err(|_| {
                run_err(from, "records no recipe, and no recipe.toml lies beside it")
            })?;
            Recipe::from_toml(&text, &p.display().to_string())?
        }
    };
    drop(f);
    let done = state.phase;
    if state.step != 0 || done == 0 || done >= source.phases.len() {
        return Err(run_err(
            from,
            format!(
                "not at a phase boundary (phase {} of {}, step {}): branch from the checkpoint saved as a phase ends (`--stop-after` its last step)",
                done + 1,
                source.phases.len(),
                state.step
            ),
        ));
    }
    if let Some(why) = branch_mismatch(&source, &recipe, done) {
        return Err(run_err(
            from,
            format!("recipe `{}` cannot continue it: {why}", recipe.name),
        ));
    }
    let ctx = Ctx::create(recipe, dir, opts)?;
    let src_metrics = from.with_file_name("metrics.jsonl");
    if let Ok(text) = std::fs::read_to_string(&src_metrics) {
        let mut validations = 0;
        for line in text.lines() {
            let Ok(v) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            let within = v["global_step"]
                .as_u64()
                .is_some_and(|g| g <= state.global_step);
            if v["kind"] == "validation" {
                if validations == done {
                    break;
                }
                validations += 1;
                ctx.log(&v)?;
            } else if within {
                ctx.log(&v)?;
            }
        }
    }
    let mut state = state;
    state.branched_from = Some(Branched {
        checkpoint: from.display().to_string(),
        recipe: source.name.clone(),
        phases: done,
    });
    ctx.log(
        &json!({"kind": "branch", "from": from.display().to_string(), "recipe": source.name,
                    "phases": done, "global_step": state.global_step}),
    )?;
    let (net, teacher, _, _) = ctx.load_checkpoint(from)?;
    ctx.run_from(net, teacher, state, None)
}

/// Why `to` cannot continue a run of `from` after its first `done` phases (`None`: it can).
fn branch_mismatch(from: &Recipe, to: &Recipe, done: usize) -> Option<String> {
    let same = [
        ("space", from.space == to.space),
        ("n_classes", from.n_classes == to.n_classes),
        ("resolutions", from.resolutions == to.resolutions),
        ("[train]", from.train == to.train),
        ("[augment]", from.augment == to.augment),
        ("[validation]", from.validation == to.validation),
    ];
    if let Some((what, _)) = same.iter().find(|(_, eq)| !eq) {
        return Some(format!("its {what} differs from the source run's"));
    }
    if to.phases.len() <= done {
        return Some(format!(
            "it has {} phases, and the checkpoint has done {done}",
            to.phases.len()
        ));
    }
    (0..done)
        .find(|&i| from.phases[i] != to.phases[i])
        .map(|i| {
            format!(
                "its phase {} (`{}`) differs from the source run's (`{}`)",
                i + 1,
                to.phases[i].name,
                from.phases[i].name
            )
        })
}

/// The [`RunState`] in a run checkpoint's metadata.
fn checkpoint_state(path: &Path, meta: &BTreeMap<String, String>) -> Result<RunState, TrainError> {
    if meta.get("format").map(String::as_str) != Some(RUN_FORMAT) {
        return Err(run_err(
            path,
            format!("not a run checkpoint (format {RUN_FORMAT} expected)"),
        ));
    }
    meta.get("state")
        .and_then(|s| serde_json::from_str(s).ok())
        .ok_or_else(|| run_err(path, "metadata has no readable `state`"))
}

/// Continue the run in `dir` from its last checkpoint (or from the start if it has none).
pub fn resume(dir: &Path, opts: TrainOptions) -> Result<Outcome, TrainError> {
    let text = std::fs::read_to_string(dir.join("recipe.toml"))
        .map_err(|_| run_err(dir, "not a run directory (no recipe.toml)"))?;
    let recipe = Recipe::from_toml(&text, &dir.join("recipe.toml").display().to_string())?;
    let mut opts = opts;
    if opts.data.is_none() {
        let saved: Option<String> = std::fs::read_to_string(dir.join("run.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<Value>(&t).ok())
            .and_then(|v| v["data"].as_str().map(str::to_string));
        opts.data = Some(PathBuf::from(saved.unwrap_or_else(|| recipe.data.clone())));
    }
    let ctx = Ctx::new(recipe, dir, opts)?;
    let ck = dir.join("checkpoint.safetensors");
    if !ck.exists() {
        let net = ctx.fresh_net()?;
        return ctx.run_from(net, None, RunState::default(), None);
    }
    let (net, teacher, state, momentum) = ctx.load_checkpoint(&ck)?;
    ctx.run_from(net, teacher, state, Some(momentum))
}

impl Ctx {
    /// A new run directory for `recipe` (refused where one exists), its recipe and run.json written.
    fn create(recipe: Recipe, dir: &Path, opts: TrainOptions) -> Result<Ctx, TrainError> {
        if dir.join("recipe.toml").exists() {
            return Err(run_err(
                dir,
                "already holds a run: resume it with --resume, or choose another --out",
            ));
        }
        std::fs::create_dir_all(dir).map_err(|e| run_err(dir, e.to_string()))?;
        let mut opts = opts;
        if opts.data.is_none() {
            opts.data = Some(PathBuf::from(&recipe.data));
        }
        let ctx = Ctx::new(recipe, dir, opts)?;
        write_atomic(&dir.join("recipe.toml"), ctx.recipe.to_toml().as_bytes())?;
        let loading = match ctx.train {
            TrainData::Memory(_) => "memory",
            TrainData::Stream(_) => "stream",
        };
        let meta = json!({
            "data": ctx.dataset, "device": format!("{:?}", ctx.opts.device),
            "data_loading": loading, "train_images": ctx.train.len(),
        });
        write_atomic(&dir.join("run.json"), meta.to_string().as_bytes())?;
        Ok(ctx)
    }

    fn new(recipe: Recipe, dir: &Path, opts: TrainOptions) -> Result<Ctx, TrainError> {
        let data_dir = opts
            .data
            .clone()
            .unwrap_or_else(|| PathBuf::from(&recipe.data));
        let sp = load_splits(&recipe, &data_dir)?;
        let space = resolve_space(&recipe, sp.n_classes)?;
        let (train, val, calib) = (sp.train, sp.val, sp.calib);
        Ok(Ctx {
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

    fn plan(&self, phase: usize) -> BatchPlan {
        BatchPlan {
            seed: self.recipe.train.seed,
            phase: phase as u64,
            batch_size: self.recipe.train.batch_size,
            resolutions: self.space.resolutions.clone(),
            channels: i64::from(self.space.in_channels),
            augment: self.recipe.augment.clone(),
            shard: None,
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
        net: Supernet,
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
            let choices = Choices {
                ks: phase.ks.clone(),
                e: phase.expand.clone(),
                d: phase.depth.clone(),
                r: self.space.resolutions.clone(),
            };
            tracing::info!(
                phase = %phase.name, steps = total, from = state.step, warmup, lr = phase.lr,
                subnets = phase.subnets_per_step, "phase start"
            );
            let obs = &self.opts.observer;
            obs.phase_start(pi, self.recipe.phases.len(), &phase.name, state.step, total);
            let mut loader =
                Loader::new(&self.train, &plan, state.step, total, t.workers, t.prefetch);
            let mut window = (0.0f64, 0.0f64, 0usize, Instant::now(), 0usize);
            let use_teacher = if pi > 0 { teacher.as_ref() } else { None };
            while state.step < total {
                let Some(batch) = loader.next() else { break };
                let batch = batch?;
                let step = state.step;
                tch::manual_seed(mix(&[t.seed, pi as u64, step, 4]) as i64);
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
                let stats = train_step(&net, use_teacher, &mut opt, &x, &y, &archs, &cfg, lr)?;
                state.step += 1;
                state.global_step += 1;
                window.0 += stats.loss;
                window.1 += stats.top1;
                window.2 += 1;
                window.4 += x.size()[0] as usize;
                obs.step(state.step, stats.loss, lr);
                if state.step % t.log_every.max(1) == 0 || state.step == total {
                    let secs = window.3.elapsed().as_secs_f64().max(1e-9);
                    self.log(&json!({
                        "kind": "step", "phase": phase.name, "step": state.step, "global_step": state.global_step,
                        "loss": window.0 / window.2 as f64, "top1": window.1 / window.2 as f64, "lr": lr,
                        "images_per_s": window.4 as f64 / secs, "data_wait_s": loader.waited().as_secs_f64(),
                        "elapsed_s": elapsed_before + session_start.elapsed().as_secs_f64(),
                    }))?;
                    window = (0.0, 0.0, 0, Instant::now(), 0);
                }
                let stop_now = self.opts.stop.load(Ordering::SeqCst)
                    || self.opts.stop_after.is_some_and(|s| state.global_step >= s);
                if state.step < total
                    && (state.global_step % t.checkpoint_every.max(1) == 0 || stop_now)
                {
                    state.elapsed_s = elapsed_before + session_start.elapsed().as_secs_f64();
                    self.save_checkpoint(&net, teacher.as_ref(), Some(&opt), &state)?;
                }
                if stop_now && state.step < total {
                    obs.phase_steps_end(false);
                    return Ok(Outcome::Interrupted {
                        global_step: state.global_step,
                    });
                }
            }
            drop(loader);
            if let TrainData::Stream(stream) = &self.train {
                // Skipped images are counted in the metrics, not only in the log.
                let bad = stream.bad_files();
                if !bad.is_empty() {
                    let files: Vec<Value> = bad
                        .iter()
                        .map(|(p, why)| json!({"path": p.display().to_string(), "reason": why}))
                        .collect();
                    self.log(&json!({
                        "kind": "data", "phase": phase.name, "bad_images": bad.len(),
                        "limit": t.max_bad_images, "files": files,
                    }))?;
                }
            }
            obs.phase_steps_end(true);
            if pi == 0 {
                // The trained full network becomes the teacher.
                teacher = Some(net.deep_clone()?);
            }
            let table = self.validate(&net, pi)?;
            self.log(&json!({"kind": "validation", "phase": phase.name, "rows": table}))?;
            obs.validation(&phase.name, &table);
            state
                .tables
                .push(json!({"phase": phase.name, "rows": table}));
            state.phase += 1;
            state.step = 0;
            state.elapsed_s = elapsed_before + session_start.elapsed().as_secs_f64();
            self.save_checkpoint(&net, teacher.as_ref(), None, &state)?;
            let stop_now = self.opts.stop.load(Ordering::SeqCst)
                || self.opts.stop_after.is_some_and(|s| state.global_step >= s);
            if stop_now && state.phase < self.recipe.phases.len() {
                return Ok(Outcome::Interrupted {
                    global_step: state.global_step,
                });
            }
        }
        self.write_package(&net, &state)?;
        Ok(Outcome::Finished)
    }

    fn log(&self, v: &Value) -> Result<(), TrainError> {
        let path = self.dir.join("metrics.jsonl");
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| run_err(&path, e.to_string()))?;
        writeln!(f, "{v}").map_err(|e| run_err(&path, e.to_string()))
    }

    /// min / mid / max subnets of a phase's choices at the smallest and largest resolution, each
    /// after BN recalibration, scored on the validation split.
    fn validate(&self, net: &Supernet, pi: usize) -> Result<Vec<Value>, TrainError> {
        let phase = &self.recipe.phases[pi];
        let n = self.space.n_elastic_blocks();
        let pick = |l: &[u32], which: usize| {
            let mut v = l.to_vec();
            v.sort_unstable();
            match which {
                0 => v[0],
                1 => v[v.len() / 2],
                _ => v[v.len() - 1],
            }
        };
        let res = &self.space.resolutions;
        let rs = [
            *res.iter().min().unwrap_or(&32),
            *res.iter().max().unwrap_or(&32),
        ];
        let v = &self.recipe.validation;
        let mut rows = Vec::new();
        let mut seen: Vec<(ArchConfig, Value)> = Vec::new();
        for (which, label) in [(0, "min"), (1, "mid"), (2, "max")] {
            for &r in rs.iter() {
                let arch = ArchConfig {
                    ks: vec![pick(&phase.ks, which); n],
                    e: vec![pick(&phase.expand, which); n],
                    d: vec![pick(&phase.depth, which); N_STAGES],
                    r,
                };
                // min, mid and max coincide where a phase has one choice: measure once.
                if let Some(prev) = seen.iter().find(|(a, _)| *a == arch).map(|(_, row)| row) {
                    let mut row: Value = prev.clone();
                    row["subnet"] = json!(label);
                    rows.push(row);
                    if rs[0] == rs[1] {
                        break;
                    }
                    continue;
                }
                let sub = recalibrated(
                    net,
                    &arch,
                    &self.calib,
                    &self.recipe.augment,
                    &Recalibration {
                        images: usize::MAX,
                        batch: v.batch_size,
                        seed: self.recipe.train.seed,
                    },
                )?;
                let acc = top1(
                    &sub,
                    &self.val,
                    r,
                    &self.recipe.augment,
                    v.batch_size,
                    v.images,
                )?;
                let mut row = json!({"subnet": label, "resolution": r, "val_top1": acc * 100.0});
                if pi + 1 == self.recipe.phases.len() {
                    if let Some(test) = &self.test {
                        let t = test.top1(&sub, r, &self.recipe.augment, v.batch_size)?;
                        row["test_top1"] = json!(t * 100.0);
                    }
                }
                seen.push((arch, row.clone()));
                rows.push(row);
                if rs[0] == rs[1] {
                    break;
                }
            }
        }
        Ok(rows)
    }

    fn save_checkpoint(
        &self,
        net: &Supernet,
        teacher: Option<&Supernet>,
        opt: Option<&Sgd>,
        state: &RunState,
    ) -> Result<(), TrainError> {
        let mut tensors: Vec<(String, Tensor)> = net
            .tensors()
            .iter()
            .map(|(s, t)| (format!("net.{}", s.name), t.shallow_clone()))
            .collect();
        if let Some(te) = teacher {
            tensors.extend(
                te.tensors()
                    .iter()
                    .map(|(s, t)| (format!("teacher.{}", s.name), t.shallow_clone())),
            );
        }
        if let Some(o) = opt {
            tensors.extend(o.state(net));
        }
        let mut meta = BTreeMap::new();
        meta.insert("format".to_string(), RUN_FORMAT.to_string());
        meta.insert("space".to_string(), self.space.to_json());
        meta.insert(
            "state".to_string(),
            serde_json::to_string(state).unwrap_or_default(),
        );
        meta.insert("recipe".to_string(), self.recipe.to_toml());
        write_safetensors(&self.dir.join("checkpoint.safetensors"), &tensors, &meta)?;
        Ok(())
    }

    #[allow(clippy::type_complexity)]
    fn load_checkpoint(
        &self,
        path: &Path,
    ) -> Result<
        (
            Supernet,
            Option<Supernet>,
            RunState,
            HashMap<String, Tensor>,
        ),
        TrainError,
    > {
        let f = read_safetensors(path)?;
        let state = checkpoint_state(path, &f.metadata)?;
        let (mut netm, mut teachm, mut mom) = (HashMap::new(), HashMap::new(), HashMap::new());
        for (k, t) in f.tensors {
            if let Some(n) = k.strip_prefix("net.") {
                netm.insert(n.to_string(), t);
            } else if let Some(n) = k.strip_prefix("teacher.") {
                teachm.insert(n.to_string(), t);
            } else {
                mom.insert(k, t);
            }
        }
        let device = self.opts.device;
        // Training runs on channels-last weights (faster oneDNN convolutions); files are NCHW.
        let cl = Layout::ChannelsLast;
        let net = Supernet::from_tensors(&self.space, netm, device)?.to_layout(cl)?;
        let teacher = if teachm.is_empty() {
            None
        } else {
            Some(Supernet::from_tensors(&self.space, teachm, device)?.to_layout(cl)?)
        };
        Ok((net, teacher, state, mom))
    }

    fn write_package(&self, net: &Supernet, state: &RunState) -> Result<(), TrainError> {
        let prov = Provenance {
            dataset: Some(self.dataset.clone()),
            recipe: Some(self.recipe.name.clone()),
            phase: self.recipe.phases.last().map(|p| p.name.clone()),
            step: Some(state.global_step),
            seed: Some(self.recipe.train.seed),
            source: Some("ofa train".into()),
        };
        let metrics = json!({"tables": state.tables});
        net.save(
            &self.dir.join("supernet.safetensors"),
            &prov,
            Some(&metrics),
        )?;
        let mut meta = BTreeMap::new();
        meta.insert("format".to_string(), "ofa-calibration/1".to_string());
        meta.insert(
            "augment".to_string(),
            serde_json::to_string(&self.recipe.augment).unwrap_or_default(),
        );
        write_safetensors(
            &self.dir.join("calibration.safetensors"),
            &[
                ("images".to_string(), self.calib.images.shallow_clone()),
                ("labels".to_string(), self.calib.labels.shallow_clone()),
            ],
            &meta,
        )?;
        let card = json!({
            "name": self.recipe.name,
            "space": self.space,
            "dataset": self.dataset,
            "recipe": self.recipe,
            "steps": state.global_step,
            "train_seconds": state.elapsed_s,
            "validation": state.tables,
            "branched_from": state.branched_from,
            "files": {"supernet": "supernet.safetensors", "calibration": "calibration.safetensors"},
        });
        write_atomic(
            &self.dir.join("card.json"),
            serde_json::to_string_pretty(&card)
                .unwrap_or_default()
                .as_bytes(),
        )?;
        Ok(())
    }
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
                let s = mix(&[seed, pi, step, 5, k as u64]);
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
    use super::*;

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
        let choices = Choices {
            ks: phase.ks.clone(),
            e: phase.expand.clone(),
            d: phase.depth.clone(),
            r: space.resolutions.clone(),
        };
        let plain = step_archs(&space, &choices, &phase, [0, 5, 9], 24);
        phase.sandwich = true;
        let sw = step_archs(&space, &choices, &phase, [0, 5, 9], 24);
        assert_eq!(sw.len(), 4);
        assert!(sw.iter().all(|a| a.r == 24));
        let max = |l: &[u32]| *l.iter().max().unwrap();
        let min = |l: &[u32]| *l.iter().min().unwrap();
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
