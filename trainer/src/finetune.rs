//! A fine-tuning run (`ofa finetune`): one subnet of a package trained alone on the package's
//! training split, at its resolution, with the recipe's augmentation, distilled from the
//! package's largest subnet, held-out top-1 after every epoch. The run folder holds
//! `finetune.json` (the settings), `checkpoint.safetensors` (weights, momentum buffers, where the
//! run stands), `metrics.jsonl`, `net.config.json`, `subnet.safetensors` (the best held-out
//! epoch, the file to deploy) and `last.safetensors`. Every random draw derives from (seed, step),
//! so a resumed run continues exactly; ranks of a data-parallel job share the work as in
//! [`crate::run`].

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Instant;

use ofa_dist::ProcessGroup;
use ofa_package::measure::top1;
use ofa_package::Package;
use ofa_schema::files::{METRICS_FILE, NET_CONFIG_FILE};
use ofa_schema::finetune::{
    EpochRecord, FinetuneRecord, FinetuneSpec, FinetuneState, Init, Schedule, Teacher, BEST_FILE,
    FINETUNE_FILE, FINETUNE_FORMAT, LAST_FILE,
};
use ofa_schema::metrics::{EpochLine, MetricsLine, StepLine};
use ofa_space::ArchConfig;
use ofa_supernet::checkpoint::{
    read_safetensors, sha256_hex, source_metadata, write_atomic, write_safetensors,
};
use ofa_supernet::{channels_last, Layout, Subnet, SubnetConfig};
use tch::Tensor;

use crate::data::Split;
use crate::loader::{mix, BatchPlan, Loader, Stream, TrainData};
use crate::recipe::Recipe;
use crate::run::{
    append_metrics, is_lead, lock_run, ranks, repair_metrics, run_err, EvalSet, LogWindow,
    Observer, Silent, TrainError, TrainOptions, LOCK_FILE,
};
use crate::step::{lr_at, subnet_step, Params, Sgd, StepConfig};
use crate::student::Student;

/// The batch plan's phase for fine-tuning: a seed part that sets its batch order, augmentation
/// and dropout masks apart from every progressive-shrinking phase's.
const PHASE: u64 = 1 << 20;

/// The checkpoint file of a fine-tuning run.
const CHECKPOINT_FILE: &str = "checkpoint.safetensors";

/// How a fine-tuning run trains; `None` takes the default documented on each field.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Epochs of the training split (fractions allowed); exactly one of this and `steps`.
    pub epochs: Option<f64>,
    /// Or optimiser steps.
    pub steps: Option<u64>,
    /// Where the weights start.
    pub init: Init,
    /// Where the soft labels come from.
    pub teacher: Teacher,
    /// Peak learning rate. Default, inherited: the package recipe's first elastic phase's (the
    /// rate progressive shrinking started training subnets at; on the shipped package one epoch
    /// at 3 ms gained 0.08 test points at its last phase's 0.01, 0.47 at 0.04, 0.60 at this 0.09);
    /// from scratch: its first phase's (the rate its full network was trained at from scratch).
    pub lr: Option<f64>,
    /// Global batch. Default: the recipe's (the BN statistics the weights were trained with).
    pub batch_size: Option<usize>,
    /// Linear warm-up, in epochs. Default, inherited: none (trained weights need no protection
    /// from the first large steps); from scratch: the recipe's first phase's.
    pub warmup_epochs: Option<f64>,
    /// Seed of the batch order, augmentation, dropout and (from scratch) the initialisation.
    pub seed: u64,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            epochs: Some(1.0),
            steps: None,
            init: Init::Inherited,
            teacher: Teacher::Largest,
            lr: None,
            batch_size: None,
            warmup_epochs: None,
            seed: 0,
        }
    }
}

/// The subnet a run starts from: its architecture in the package's space and its weights (as
/// `ofa extract` cuts them: BN recalibrated).
#[derive(Debug)]
pub struct Base {
    /// The weights.
    pub subnet: Subnet,
    /// The architecture.
    pub arch: ArchConfig,
}

/// How a call to [`finetune`] or [`resume`] ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Every step done: the record of `subnet.safetensors` (the best held-out epoch).
    Finished(Box<FinetuneRecord>),
    /// Stopped on request after saving a checkpoint.
    Interrupted {
        /// Steps done so far.
        step: u64,
    },
}

/// Start a fine-tuning run of `base` (a subnet of the package in `package`) in `dir` (created;
/// must not hold a run already).
pub fn finetune(
    package: &Path,
    base: Base,
    settings: &Settings,
    dir: &Path,
    opts: TrainOptions,
) -> Result<Outcome, TrainError> {
    let group = opts.group.clone();
    let created = Run::create(package, &base, settings, dir, opts);
    let run = ranks::all_ok(group.as_deref(), SETUP, created)?;
    let device = run.opts.device;
    let student = match settings.init {
        Init::Inherited => Student::new(&base.subnet, Layout::ChannelsLast, device),
        Init::Scratch => Student::scratch(
            base.subnet.config().clone(),
            mix(&[settings.seed, PHASE, Stream::Init.tag()]),
            device,
            Layout::ChannelsLast,
        ),
    };
    let student = ranks::all_ok(group.as_deref(), SETUP, student.map_err(TrainError::from))?;
    ranks::all_ok(group.as_deref(), SETUP, run.start(&student))?;
    run.go(student, FinetuneState::default(), None)
}

/// Continue the fine-tuning run in `dir` from its last checkpoint.
pub fn resume(dir: &Path, opts: TrainOptions) -> Result<Outcome, TrainError> {
    let group = opts.group.clone();
    let opened = Run::open(dir, opts);
    let (run, loaded) = ranks::all_ok(group.as_deref(), SETUP, opened)?;
    run.go(loaded.student, loaded.state, Some(loaded.momentum))
}

/// What [`ranks::all_ok`] names when a rank fails before training.
const SETUP: &str = "while setting up";

/// An open fine-tuning run.
struct Run {
    /// The lead's lock on the folder, held for the run.
    _lock: Option<std::fs::File>,
    spec: FinetuneSpec,
    dir: PathBuf,
    pkg: Package,
    recipe: Recipe,
    train: TrainData,
    val: Split,
    test: Option<EvalSet>,
    opts: TrainOptions,
}

/// What a checkpoint holds.
struct Loaded {
    student: Student,
    state: FinetuneState,
    momentum: HashMap<String, Tensor>,
}

/// The package, its recipe and the data split as its run split it, checked against each other.
struct Opened {
    pkg: Package,
    recipe: Recipe,
    train: TrainData,
    val: Split,
    test: Option<EvalSet>,
    data: PathBuf,
}

fn open_package(
    package: &Path,
    data: Option<&Path>,
    opts: &TrainOptions,
) -> Result<Opened, TrainError> {
    let pkg = Package::open(package, opts.device)?;
    let recipe = crate::package::recipe(&pkg)?;
    let data = match data {
        Some(d) => d.to_path_buf(),
        None => crate::package::dataset(&pkg)?,
    };
    let sp = crate::package::splits(&pkg, Some(&data))?;
    let space = pkg.space();
    if sp.n_classes != space.n_classes as usize {
        return Err(run_err(
            &data,
            format!(
                "has {} classes; the package's network has {}: fine-tune on the data the package was trained on",
                sp.n_classes, space.n_classes
            ),
        ));
    }
    let (have, want) = (sp.val.images.size()[1], pkg.calib.images.size()[1]);
    if have != want {
        return Err(run_err(
            &data,
            format!(
                "holds {have}-channel images; the package was trained on {want}-channel images"
            ),
        ));
    }
    Ok(Opened {
        pkg,
        recipe,
        train: sp.train,
        val: sp.val,
        test: sp.test,
        data,
    })
}

impl Run {
    fn assemble(
        lock: Option<std::fs::File>,
        spec: FinetuneSpec,
        dir: &Path,
        o: Opened,
        opts: TrainOptions,
    ) -> Run {
        Run {
            _lock: lock,
            spec,
            dir: dir.to_path_buf(),
            pkg: o.pkg,
            recipe: o.recipe,
            train: o.train,
            val: o.val,
            test: o.test,
            opts,
        }
    }

    fn create(
        package: &Path,
        base: &Base,
        settings: &Settings,
        dir: &Path,
        opts: TrainOptions,
    ) -> Result<Run, TrainError> {
        let bad = |reason: String| run_err(dir, reason);
        match (settings.epochs, settings.steps) {
            (Some(e), None) if e.is_finite() && e > 0.0 => {}
            (Some(e), None) => return Err(bad(format!("epochs must be above 0, got {e}"))),
            (None, Some(0)) => return Err(bad("steps must be at least 1".into())),
            (None, Some(_)) => {}
            _ => return Err(bad("give epochs or steps (one of them)".into())),
        }
        for (what, v) in [
            ("lr", settings.lr),
            ("warmup epochs", settings.warmup_epochs),
        ] {
            if let Some(v) = v {
                if !v.is_finite() || v < 0.0 || (what == "lr" && v == 0.0) {
                    return Err(bad(format!("{what} must be a positive number, got {v}")));
                }
            }
        }
        let lead = is_lead(opts.group.as_deref());
        let lock = if lead {
            std::fs::create_dir_all(dir).map_err(|e| run_err(dir, e.to_string()))?;
            let lock = lock_run(dir)?;
            refuse_existing(dir)?;
            Some(lock)
        } else {
            None
        };
        let o = open_package(package, opts.data.as_deref(), &opts)?;
        let space = o.pkg.space();
        base.arch.validate(space)?;
        let config = SubnetConfig::from_arch(space, &base.arch);
        if *base.subnet.config() != config {
            return Err(bad(format!(
                "the subnet's layers are not those of its arch {} in this package's space",
                base.arch.to_json()
            )));
        }
        let t = &o.recipe.train;
        let batch_size = settings.batch_size.unwrap_or(t.batch_size);
        let world = opts.group.as_deref().map_or(1, ProcessGroup::world);
        if batch_size == 0 || batch_size % world != 0 {
            return Err(bad(format!(
                "a batch of {batch_size} does not split evenly between {world} ranks"
            )));
        }
        let nb = plan_for(
            batch_size,
            &base.arch,
            &o.pkg,
            &o.recipe,
            settings.seed,
            None,
        )
        .batches_per_epoch(o.train.len());
        let steps = match (settings.steps, settings.epochs) {
            (Some(s), _) => s,
            (None, Some(e)) => steps_of(e, nb),
            (None, None) => unreachable!("checked above"),
        };
        let Some(first) = o.recipe.phases.first() else {
            return Err(bad("the package's recipe has no phases".into()));
        };
        // the first elastic phase's rate (the full network's for a recipe with one phase)
        let elastic = o.recipe.phases.get(1).unwrap_or(first);
        let (default_lr, default_warmup) = match settings.init {
            Init::Inherited => (elastic.lr, 0),
            Init::Scratch => (first.lr, first.warmup(nb)),
        };
        let warmup_steps = settings
            .warmup_epochs
            .map_or(default_warmup, |w| (w * nb as f64).round() as u64)
            .min(steps.saturating_sub(1));
        let kd_ratio = match settings.teacher {
            Teacher::Largest => t.kd_ratio,
            Teacher::None => 0.0,
        };
        let spec = FinetuneSpec {
            // absolute, so that a resume from another working directory finds them
            package: absolute(package).display().to_string(),
            package_sha256: o.pkg.supernet_sha256().to_string(),
            data: absolute(&o.data).display().to_string(),
            arch: base.arch.clone(),
            base_sha256: sha256_hex(&base.subnet.to_safetensors(&BTreeMap::new())?),
            init: settings.init,
            teacher: settings.teacher,
            schedule: Schedule {
                steps,
                batches_per_epoch: nb,
                batch_size,
                lr: settings.lr.unwrap_or(default_lr),
                warmup_steps,
                momentum: t.momentum,
                weight_decay: t.weight_decay,
                label_smoothing: t.label_smoothing,
                kd_ratio,
                seed: settings.seed,
            },
            epochs: settings.epochs,
            device: format!("{:?}", opts.device),
            world_size: world,
        };
        Ok(Run::assemble(lock, spec, dir, o, opts))
    }

    /// Write the run's first files (lead only): `net.config.json`, a checkpoint of the starting
    /// weights at step 0 and, last, `finetune.json`. A folder with `finetune.json` then always
    /// has a checkpoint to resume from; one killed before it holds only files a new start
    /// overwrites (see [`refuse_existing`]).
    fn start(&self, student: &Student) -> Result<(), TrainError> {
        if !self.lead() {
            return Ok(());
        }
        let config = student.net().config();
        write_atomic(
            &self.dir.join(NET_CONFIG_FILE),
            ofa_schema::to_json_pretty(&config.to_net_config()).as_bytes(),
        )?;
        self.save_checkpoint(student, Vec::new(), &FinetuneState::default())?;
        write_atomic(
            &self.dir.join(FINETUNE_FILE),
            ofa_schema::to_json_pretty(&self.spec).as_bytes(),
        )?;
        Ok(())
    }

    fn open(dir: &Path, opts: TrainOptions) -> Result<(Run, Loaded), TrainError> {
        let path = dir.join(FINETUNE_FILE);
        if !path.is_file() {
            let why = if dir.join("recipe.toml").is_file() {
                "is a training run, not a fine-tuning run: continue it with `ofa train --resume`"
            } else {
                "is not a fine-tuning run (no finetune.json)"
            };
            return Err(run_err(dir, why));
        }
        let lock = if is_lead(opts.group.as_deref()) {
            let lock = lock_run(dir)?;
            repair_metrics(&dir.join(METRICS_FILE))?;
            Some(lock)
        } else {
            None
        };
        let spec: FinetuneSpec =
            ofa_schema::read_json(&path).map_err(|e| run_err(&path, e.to_string()))?;
        let data = opts
            .data
            .clone()
            .unwrap_or_else(|| PathBuf::from(&spec.data));
        let o = open_package(Path::new(&spec.package), Some(&data), &opts)?;
        if o.pkg.supernet_sha256() != spec.package_sha256 {
            return Err(run_err(
                &path,
                format!(
                    "the package at {} has changed since this run started (its supernet's SHA-256 is {}, the run's {})",
                    spec.package,
                    o.pkg.supernet_sha256(),
                    spec.package_sha256
                ),
            ));
        }
        let world = opts.group.as_deref().map_or(1, ProcessGroup::world);
        if spec.schedule.batch_size % world != 0 {
            return Err(run_err(
                dir,
                format!(
                    "its batch of {} does not split evenly between {world} ranks: resume with a world size that divides it",
                    spec.schedule.batch_size
                ),
            ));
        }
        let config = SubnetConfig::from_arch(o.pkg.space(), &spec.arch);
        let ck = dir.join(CHECKPOINT_FILE);
        if !ck.is_file() {
            return Err(run_err(
                dir,
                "has no checkpoint.safetensors: the run stopped before its first one; start it again in a new folder",
            ));
        }
        let f = read_safetensors(&ck)?;
        if f.metadata.get("format").map(String::as_str) != Some(FINETUNE_FORMAT) {
            return Err(run_err(
                &ck,
                format!("not a fine-tuning checkpoint (format {FINETUNE_FORMAT} expected)"),
            ));
        }
        let state: FinetuneState = f
            .metadata
            .get("state")
            .ok_or_else(|| run_err(&ck, "metadata has no `state`"))
            .and_then(|s| {
                serde_json::from_str(s).map_err(|e| run_err(&ck, format!("metadata `state`: {e}")))
            })?;
        let (mut net, mut momentum) = (HashMap::new(), HashMap::new());
        for (k, t) in f.tensors {
            match k.strip_prefix("net.") {
                Some(n) => {
                    net.insert(n.to_string(), t);
                }
                None => {
                    momentum.insert(k, t);
                }
            }
        }
        let sub = Subnet::from_tensors(config.clone(), net, opts.device)
            .map_err(|e| run_err(&ck, e.to_string()))?;
        let student = Student::new(&sub, Layout::ChannelsLast, opts.device)?;
        let run = Run::assemble(lock, spec, dir, o, opts);
        Ok((
            run,
            Loaded {
                student,
                state,
                momentum,
            },
        ))
    }

    fn group(&self) -> Option<&ProcessGroup> {
        self.opts.group.as_deref()
    }

    fn lead(&self) -> bool {
        is_lead(self.group())
    }

    fn world(&self) -> usize {
        self.group().map_or(1, ProcessGroup::world)
    }

    fn log(&self, line: &MetricsLine) -> Result<(), TrainError> {
        if self.lead() {
            append_metrics(&self.dir.join(METRICS_FILE), line)?;
        }
        Ok(())
    }

    /// The teacher: the package's largest subnet at the student's resolution.
    fn teacher(&self) -> Result<Option<Subnet>, TrainError> {
        if self.spec.teacher == Teacher::None || self.spec.schedule.kd_ratio == 0.0 {
            return Ok(None);
        }
        let mut largest = ArchConfig::largest(self.pkg.space());
        largest.r = self.spec.arch.r;
        Ok(Some(
            self.pkg
                .net()
                .extract(&largest)?
                .to_layout(Layout::ChannelsLast),
        ))
    }

    /// Held-out top-1 (percent) of the student's current weights.
    fn heldout(&self, student: &Student) -> Result<f64, TrainError> {
        let v = &self.recipe.validation;
        let acc = tch::no_grad(|| {
            top1(
                student.net(),
                &self.val,
                self.spec.arch.r,
                &self.pkg.augment,
                v.batch_size,
                v.images,
            )
        })?;
        Ok(acc * 100.0)
    }

    /// Score the student after `state.step` steps and record it on every rank (rank 0 scores,
    /// the others take its figure), then (rank 0) write `last.safetensors` (after the first step)
    /// and, for a new best, `subnet.safetensors`.
    fn evaluate(
        &self,
        student: &Student,
        state: &mut FinetuneState,
        obs: &dyn Observer,
        started: Instant,
        before: f64,
    ) -> Result<(), TrainError> {
        let group = self.group();
        let scored = if self.lead() {
            self.heldout(student)
        } else {
            Ok(0.0)
        };
        let mut top1 = ranks::all_ok(group, "scoring an epoch", scored)?;
        if let Some(g) = group {
            // rank 0's figure on every rank (the others add 0), so every rank keeps the history
            top1 = g.sum_f64(&[top1])?[0];
        }
        let nb = self.spec.schedule.batches_per_epoch;
        let record = EpochRecord {
            epoch: state.step as f64 / nb as f64,
            step: state.step,
            heldout_top1: top1,
        };
        let best = state
            .best()
            .is_none_or(|b| record.heldout_top1 > b.heldout_top1);
        state.epochs.push(record.clone());
        state.elapsed_s = before + started.elapsed().as_secs_f64();
        let written = (|| {
            if !self.lead() {
                return Ok(());
            }
            let weights = student.snapshot();
            if best {
                self.write_subnet(&weights, BEST_FILE, &record, state, None)?;
            }
            if state.step > 0 {
                self.write_subnet(&weights, LAST_FILE, &record, state, None)?;
            }
            self.log(&MetricsLine::Epoch(EpochLine {
                epoch: record.epoch,
                global_step: record.step,
                heldout_top1: record.heldout_top1,
                best,
                elapsed_s: state.elapsed_s,
            }))
        })();
        ranks::all_ok(group, "writing the epoch's subnet files", written)?;
        obs.epoch(&record, best);
        Ok(())
    }

    /// The record of a subnet file holding the weights of evaluation `chosen`.
    fn record(
        &self,
        chosen: &EpochRecord,
        state: &FinetuneState,
        test_top1: Option<f64>,
    ) -> FinetuneRecord {
        FinetuneRecord {
            base_sha256: self.spec.base_sha256.clone(),
            init: self.spec.init,
            teacher: self.spec.teacher,
            schedule: self.spec.schedule.clone(),
            epochs: state.step as f64 / self.spec.schedule.batches_per_epoch as f64,
            chosen: chosen.clone(),
            history: state.epochs.clone(),
            test_top1,
            train_s: state.elapsed_s,
        }
    }

    fn write_subnet(
        &self,
        weights: &Subnet,
        file: &str,
        chosen: &EpochRecord,
        state: &FinetuneState,
        test_top1: Option<f64>,
    ) -> Result<FinetuneRecord, TrainError> {
        let record = self.record(chosen, state, test_top1);
        let mut meta = source_metadata(
            &self.spec.arch,
            self.pkg.space(),
            self.pkg.supernet_sha256(),
        );
        meta.insert("augment".into(), ofa_schema::to_json(&self.pkg.augment));
        meta.insert("finetune".into(), ofa_schema::to_json(&record));
        weights.save(&self.dir.join(file), &meta)?;
        Ok(record)
    }

    /// Save the weights, the optimiser's `momentum` buffers and `state` (lead only).
    fn save_checkpoint(
        &self,
        student: &Student,
        momentum: Vec<(String, Tensor)>,
        state: &FinetuneState,
    ) -> Result<(), TrainError> {
        if !self.lead() {
            return Ok(());
        }
        let mut tensors: Vec<(String, Tensor)> = student
            .params()
            .iter()
            .map(|(s, t)| (format!("net.{}", s.name), t.shallow_clone()))
            .collect();
        tensors.extend(momentum);
        let mut meta = BTreeMap::new();
        meta.insert("format".to_string(), FINETUNE_FORMAT.to_string());
        meta.insert("state".to_string(), ofa_schema::to_json(state));
        write_safetensors(&self.dir.join(CHECKPOINT_FILE), &tensors, &meta)?;
        Ok(())
    }

    /// Train from `state` to the end (or a stop).
    fn go(
        &self,
        student: Student,
        mut state: FinetuneState,
        momentum: Option<HashMap<String, Tensor>>,
    ) -> Result<Outcome, TrainError> {
        let s = &self.spec.schedule;
        let group = self.group();
        // every rank's settings but its own device (rank k trains on cuda:k)
        let shared = FinetuneSpec {
            device: String::new(),
            ..self.spec.clone()
        };
        ranks::agree(
            group,
            "the fine-tuning run (settings, data sizes, step)",
            ranks::hash_of((
                ofa_schema::to_json(&shared),
                [self.train.len(), self.val.len()],
                state.step,
            )),
        )?;
        ranks::broadcast_from_first(group, &student)?;
        ranks::agree(
            group,
            "the gradient bucket layout (trainable tensors, shapes, types, in order)",
            ranks::bucket_layout(&student),
        )?;
        if state.world_size != 0 && state.world_size != self.world() {
            tracing::warn!(
                saved = state.world_size, now = self.world(),
                "resuming with another world size: BatchNorm's batch statistics come from shards of another size, so the run will not equal an uninterrupted one bit for bit"
            );
        }
        state.world_size = self.world();
        let teacher = ranks::all_ok(group, "cutting the teacher", self.teacher())?;
        let mut opt = Sgd::new(&student, s.momentum, s.weight_decay);
        if let Some(m) = &momentum {
            opt.load_state(&student, m);
        }
        let cfg = StepConfig {
            kd_ratio: s.kd_ratio,
            label_smoothing: s.label_smoothing,
            precision: self.recipe.train.precision,
        };
        let silent = Silent;
        let obs: &dyn Observer = if self.lead() {
            self.opts.observer.as_ref()
        } else {
            &silent
        };
        let started = Instant::now();
        let before = state.elapsed_s;
        // a resumed run's last evaluation, shown again once the observer knows the phase
        let resumed = state.epochs.last().cloned();
        if state.epochs.is_empty() {
            // the starting point is the first candidate: a run that never beats it deploys it
            self.evaluate(&student, &mut state, obs, started, before)?;
            let saved = self.save_checkpoint(&student, opt.state(&student), &state);
            ranks::all_ok(group, "saving the first checkpoint", saved)?;
        }
        let total = s.steps;
        if state.step < total && self.opts.stop_after.is_some_and(|n| state.step >= n) {
            return Ok(Outcome::Interrupted { step: state.step });
        }
        obs.phase_start(0, 1, "finetune", state.step, total);
        if let Some(last) = &resumed {
            let best = state.best().is_some_and(|b| b.step == last.step);
            obs.epoch(last, best);
        }
        let t = &self.recipe.train;
        let plan = plan_for(
            s.batch_size,
            &self.spec.arch,
            &self.pkg,
            &self.recipe,
            s.seed,
            group.map(|g| (g.rank(), g.world())),
        );
        let mut loader = Loader::new(&self.train, &plan, state.step, total, t.workers, t.prefetch);
        let mut window = LogWindow::new();
        while state.step < total {
            let Some(batch) = loader.next() else {
                return Err(run_err(
                    &self.dir,
                    format!("the data loader stopped at step {} of {total}", state.step),
                ));
            };
            let batch = batch?;
            let step = state.step;
            let mut parts = vec![s.seed, PHASE, step, Stream::Dropout.tag()];
            if let Some(g) = group {
                parts.push(g.rank() as u64);
            }
            let lr = lr_at(step, total, s.warmup_steps, s.lr);
            let x = channels_last(&batch.x.to_device(self.opts.device));
            let y = batch.y.to_device(self.opts.device);
            let stats = ofa_supernet::rng::with_seed(mix(&parts), || {
                subnet_step(
                    &student,
                    teacher.as_ref(),
                    &mut opt,
                    &x,
                    &y,
                    &cfg,
                    lr,
                    group,
                )
            })?;
            let asked = self.opts.stop.load(Ordering::SeqCst);
            let (loss, top1, asked) = ranks::step_consensus(group, stats.loss, stats.top1, asked)?;
            state.step += 1;
            window.add(loss, top1, x.size()[0] as usize * self.world());
            obs.step(state.step, loss, lr);
            if state.step % t.log_every.max(1) == 0 || state.step == total {
                let secs = window.start.elapsed().as_secs_f64().max(1e-9);
                self.log(&MetricsLine::Step(StepLine {
                    phase: "finetune".into(),
                    step: state.step,
                    global_step: state.step,
                    loss: window.loss / window.steps as f64,
                    top1: window.top1 / window.steps as f64,
                    lr,
                    images_per_s: window.images as f64 / secs,
                    data_wait_s: loader.waited().as_secs_f64(),
                    elapsed_s: before + started.elapsed().as_secs_f64(),
                }))?;
                window = LogWindow::new();
            }
            let epoch_end = state.step % s.batches_per_epoch == 0 || state.step == total;
            if epoch_end {
                // the ranks still hold bit-identical weights (the run fails otherwise)
                ranks::agree(
                    group,
                    "the weights (fingerprints)",
                    ranks::weights_fingerprint(&student),
                )?;
                self.evaluate(&student, &mut state, obs, started, before)?;
            }
            let stop_now = asked || self.opts.stop_after.is_some_and(|n| state.step >= n);
            let saved = if epoch_end
                || (state.step < total && (state.step % t.checkpoint_every.max(1) == 0 || stop_now))
            {
                state.elapsed_s = before + started.elapsed().as_secs_f64();
                self.save_checkpoint(&student, opt.state(&student), &state)
            } else {
                Ok(())
            };
            if stop_now && state.step < total {
                ranks::all_ok(group, "saving the stop checkpoint", saved)?;
                obs.phase_steps_end(false);
                return Ok(Outcome::Interrupted { step: state.step });
            }
            saved?;
        }
        drop(loader);
        obs.phase_steps_end(true);
        let finished = self.finish(&student, &state);
        Ok(Outcome::Finished(Box::new(ranks::all_ok(
            group,
            "writing the fine-tuned subnet",
            finished,
        )?)))
    }

    /// The final files: test top-1 of the best and the last weights in their metadata.
    fn finish(
        &self,
        student: &Student,
        state: &FinetuneState,
    ) -> Result<FinetuneRecord, TrainError> {
        let (Some(best), Some(last)) = (state.best(), state.epochs.last()) else {
            return Err(run_err(&self.dir, "the run ended without an evaluation"));
        };
        if !self.lead() {
            // rank 0 scores the test split and writes the files
            return Ok(self.record(best, state, None));
        }
        let last_weights = student.snapshot();
        let best_path = self.dir.join(BEST_FILE);
        let (best, best_weights) = if best.step == last.step {
            (best, None)
        } else {
            let f = Subnet::load(&best_path, self.opts.device)?;
            // The file holds the weights of the evaluation its own record names. A resume that
            // was not bit-exact (another world size, a GPU) may have scored an epoch again
            // differently: the labels follow the file, never another epoch's figure.
            let held = f
                .metadata
                .get("finetune")
                .and_then(|m| serde_json::from_str::<FinetuneRecord>(m).ok())
                .and_then(|r| state.epochs.iter().find(|e| e.step == r.chosen.step));
            match held {
                Some(e) => (e, Some(f.net)),
                None => {
                    return Err(run_err(
                        &best_path,
                        "its `finetune` record names no evaluation of this run",
                    ))
                }
            }
        };
        let best_net = best_weights.as_ref().unwrap_or(&last_weights);
        let test = |net: &Subnet| -> Result<Option<f64>, TrainError> {
            let Some(t) = &self.test else { return Ok(None) };
            let v = &self.recipe.validation;
            let acc =
                tch::no_grad(|| t.top1(net, self.spec.arch.r, &self.pkg.augment, v.batch_size))?;
            Ok(Some(acc * 100.0))
        };
        let last_test = test(&last_weights)?;
        let best_test = match &best_weights {
            None => last_test,
            Some(w) => test(w)?,
        };
        if last.step > 0 {
            self.write_subnet(&last_weights, LAST_FILE, last, state, last_test)?;
        }
        self.write_subnet(best_net, BEST_FILE, best, state, best_test)
    }
}

/// Refuse a folder that already holds a run, or anything a new run would overwrite. Allowed:
/// what a start killed before it wrote `finetune.json` leaves (the lock, `net.config.json` and
/// the step-0 checkpoint), which is no run and is written again.
fn refuse_existing(dir: &Path) -> Result<(), TrainError> {
    if dir.join(FINETUNE_FILE).exists() {
        return Err(run_err(
            dir,
            "already holds a fine-tuning run: continue it with --resume, or choose another --out",
        ));
    }
    if dir.join("recipe.toml").exists() {
        return Err(run_err(
            dir,
            "holds a training run: choose another --out for the fine-tuning run",
        ));
    }
    let entries = std::fs::read_dir(dir).map_err(|e| run_err(dir, e.to_string()))?;
    let mut others = Vec::new();
    for e in entries {
        let name = e.map_err(|e| run_err(dir, e.to_string()))?.file_name();
        let name = name.to_string_lossy();
        if ![LOCK_FILE, NET_CONFIG_FILE, CHECKPOINT_FILE].contains(&name.as_ref()) {
            others.push(name.into_owned());
        }
    }
    if !others.is_empty() {
        others.sort();
        return Err(run_err(
            dir,
            format!(
                "is not empty (it holds {}): fine-tune into a new or empty --out, nothing here is overwritten",
                others.join(", ")
            ),
        ));
    }
    Ok(())
}

/// Optimiser steps of `epochs` epochs of `nb` batches: whole batches, at least one. A product
/// within rounding error of a whole number is that number (1.1 × 390 is 429.00000000000006 in
/// floating point: 429 steps, not 430).
fn steps_of(epochs: f64, nb: u64) -> u64 {
    let x = epochs * nb as f64;
    let whole = x.round();
    let steps = if (x - whole).abs() <= 1e-9 * whole.max(1.0) {
        whole
    } else {
        x.ceil()
    };
    (steps as u64).max(1)
}

/// `path` made absolute against the working directory (as given where that fails).
fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// The batches of a fine-tuning run: the recipe's augmentation at the subnet's one resolution.
fn plan_for(
    batch_size: usize,
    arch: &ArchConfig,
    pkg: &Package,
    recipe: &Recipe,
    seed: u64,
    shard: Option<(usize, usize)>,
) -> BatchPlan {
    BatchPlan {
        seed,
        phase: PHASE,
        batch_size,
        resolutions: vec![arch.r],
        channels: i64::from(pkg.space().in_channels),
        augment: recipe.augment.clone(),
        shard,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn epochs_are_whole_batches_without_a_rounding_step_more() {
        assert_eq!(
            1.1 * 390.0,
            429.00000000000006,
            "the float product this guards against"
        );
        assert_eq!(steps_of(1.1, 390), 429);
        assert_eq!(steps_of(0.3, 10), 3);
        assert_eq!(steps_of(10.0, 195), 1950);
        // a fraction of a batch is a whole batch more, and every run has a step
        assert_eq!(steps_of(1.01, 10), 11);
        assert_eq!(steps_of(1e-6, 10), 1);
    }

    #[test]
    fn only_what_a_cut_short_start_leaves_may_be_in_the_folder() {
        let dir = tempfile::tempdir().unwrap();
        for f in [LOCK_FILE, NET_CONFIG_FILE, CHECKPOINT_FILE] {
            std::fs::write(dir.path().join(f), "x").unwrap();
        }
        assert!(refuse_existing(dir.path()).is_ok());
        std::fs::write(dir.path().join("model.onnx"), "x").unwrap();
        let e = refuse_existing(dir.path()).unwrap_err().to_string();
        assert!(e.contains("is not empty (it holds model.onnx)"), "{e}");
        std::fs::write(dir.path().join(FINETUNE_FILE), "{}").unwrap();
        let e = refuse_existing(dir.path()).unwrap_err().to_string();
        assert!(e.contains("continue it with --resume"), "{e}");
    }
}
