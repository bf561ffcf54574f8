//! `ofa finetune`: train one subnet of a package further (or from scratch, the control arm),
//! resumable, as one process or the ranks of a data-parallel job.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use ofa_extractor::pipeline::{choose, cut, Target};
use ofa_extractor::specialiser::space_of_supernet;
use ofa_extractor::Specialiser;
use ofa_package::measure::Recalibration;
use ofa_package::Package;
use ofa_schema::finetune::{FinetuneRecord, Init, Teacher};
use ofa_supernet::Subnet;
use ofa_trainer::finetune::{finetune, resume, Base, Outcome, Settings};
use ofa_trainer::run::{Observer, Silent, TrainOptions};

use super::train::{stop_on_signals, Render};

/// How long the other local ranks may take to end on their own after one fails.
const RANK_GRACE: Duration = Duration::from_secs(30);

/// Arguments of `ofa finetune`.
#[derive(Debug, clap::Args)]
// a resumed run keeps the settings it was started with: giving others is an error, not ignored
#[command(group(
    clap::ArgGroup::new("new_run_settings")
        .multiple(true)
        .args([
            "subnet", "arch", "epochs", "steps", "teacher", "from_scratch", "lr", "batch",
            "warmup_epochs", "calibration_images", "hardware", "max_latency_ms", "max_macs_m",
            "max_params_m", "population", "generations", "seed", "strategy", "budget",
        ])
        .conflicts_with("resume")
))]
pub struct Args {
    /// The supernet package the subnet comes from (its training data, recipe and teacher).
    #[arg(long, required_unless_present = "resume", conflicts_with = "resume")]
    package: Option<PathBuf>,
    /// The subnet: a subnet file of the package (`ofa extract`'s subnet.safetensors) …
    #[arg(long, conflicts_with = "arch")]
    subnet: Option<PathBuf>,
    /// … or an arch (JSON file, `largest` or `smallest`), cut from the package and recalibrated
    /// as `ofa extract` does; without either, the subnet the search picks for the budget below.
    #[arg(long)]
    arch: Option<PathBuf>,
    #[command(flatten)]
    budget: super::search::Budget,
    /// Epochs of the training split (fractions allowed).
    #[arg(long, required_unless_present_any = ["resume", "steps"], conflicts_with = "steps")]
    epochs: Option<f64>,
    /// Or optimiser steps.
    #[arg(long)]
    steps: Option<u64>,
    /// The run folder to create.
    #[arg(long, required_unless_present = "resume", conflicts_with = "resume")]
    out: Option<PathBuf>,
    /// Continue the fine-tuning run in this folder from its last checkpoint.
    #[arg(long)]
    resume: Option<PathBuf>,
    /// Soft labels from the package's largest subnet (distillation, as in progressive shrinking),
    /// or none.
    #[arg(long, value_enum, default_value = "largest")]
    teacher: Teacher,
    /// Re-initialise the architecture as the reference does (he_fout) instead of inheriting the
    /// supernet's weights: the control arm.
    #[arg(long)]
    from_scratch: bool,
    /// Peak learning rate (default: the package recipe's first elastic phase's; from scratch,
    /// its first phase's).
    #[arg(long)]
    lr: Option<f64>,
    /// Global batch size (default: the recipe's).
    #[arg(long)]
    batch: Option<usize>,
    /// Warm-up epochs (default: none; from scratch, the recipe's first phase's).
    #[arg(long)]
    warmup_epochs: Option<f64>,
    /// Images for the BN recalibration of a cut subnet (reference 2000).
    #[arg(long, default_value_t = 2000)]
    calibration_images: usize,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu", value_parser = super::device_arg)]
    device: tch::Device,
    /// Dataset folder (default: the one named in the package's card, or the run's).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Stop (checkpoint saved) after this many steps; resume later.
    #[arg(long)]
    stop_after: Option<u64>,
    /// Print the result as JSON (the `finetune` record of subnet.safetensors).
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    ranks: super::launch::RankArgs,
}

/// The subnet to start from, as asked, on `device` (this rank's).
fn base(a: &Args, package: &Path, device: tch::Device) -> anyhow::Result<Base> {
    let space = space_of_supernet(&package.join(ofa_package::SUPERNET_FILE))?;
    if let Some(file) = &a.subnet {
        let f = Subnet::load(file, device)?;
        let Some(arch) = f.arch else {
            bail!(
                "{}: the file does not record its arch; give --arch instead",
                file.display()
            );
        };
        arch.validate(&space).with_context(|| {
            format!(
                "{}: its arch is outside the package's search space",
                file.display()
            )
        })?;
        return Ok(Base {
            subnet: f.net,
            arch,
        });
    }
    let target = match &a.arch {
        Some(spec) => {
            let arch = super::arch_arg(spec, &space)?;
            arch.validate(&space).with_context(|| {
                format!("{}: outside the package's search space", spec.display())
            })?;
            Target::Arch(arch)
        }
        None => Target::Search {
            constraints: a.budget.constraints(),
            search: a.budget.evolution(),
        },
    };
    let spec = match &target {
        Target::Search { .. } => Some(Specialiser::from_package(package)?),
        Target::Arch(_) => None,
    };
    let hardware = match (&a.budget.hardware, &spec) {
        (Some(h), _) => Some(h.clone()),
        (None, Some(s)) if a.budget.max_latency_ms.is_some() => a.budget.hardware(s),
        _ => None,
    };
    let choice = choose(spec.as_ref(), &space, &target, hardware.as_deref(), None)?;
    let pkg = Package::open(package, device)?;
    let recal = Recalibration {
        images: a.calibration_images,
        ..Recalibration::default()
    };
    let subnet = cut(&pkg, &choice.arch, &recal)?;
    Ok(Base {
        subnet,
        arch: choice.arch,
    })
}

/// Run `ofa finetune`.
pub fn run(a: Args) -> anyhow::Result<()> {
    if let Some(n) = a.ranks.nproc_per_node {
        return super::launch::spawn_local(n, RANK_GRACE, a.ranks.timeout());
    }
    let quiet = super::launch::is_follower();
    let stop = stop_on_signals(quiet, "step")?;
    let (group, device) = match a.ranks.join(a.device)? {
        Some((g, d)) => (Some(g), d),
        None => (None, a.device),
    };
    let observer: Arc<dyn Observer> = if quiet {
        Arc::new(Silent)
    } else {
        Arc::new(Render::new(std::io::stderr().is_terminal()))
    };
    let opts = TrainOptions {
        data: a.data.clone(),
        device,
        observer,
        stop,
        stop_after: a.stop_after,
        group,
    };
    let (dir, outcome) = match (&a.resume, &a.package, &a.out) {
        (Some(dir), _, _) => (dir.clone(), resume(dir, opts)?),
        (None, Some(package), Some(out)) => {
            let settings = Settings {
                epochs: a.epochs,
                steps: a.steps,
                init: if a.from_scratch {
                    Init::Scratch
                } else {
                    Init::Inherited
                },
                teacher: a.teacher,
                lr: a.lr,
                batch_size: a.batch,
                warmup_epochs: a.warmup_epochs,
                seed: a.budget.seed,
            };
            let base = base(&a, package, device)?;
            (out.clone(), finetune(package, base, &settings, out, opts)?)
        }
        _ => bail!("give --package and --out, or --resume RUN"),
    };
    if quiet {
        return Ok(());
    }
    match outcome {
        Outcome::Finished(record) => {
            if a.json {
                outln!("{}", ofa_schema::to_json(&record));
            } else {
                outln!("{}", summary(&record));
            }
            eprintln!(
                "done: {} holds subnet.safetensors (the best held-out epoch), last.safetensors, net.config.json",
                dir.display()
            );
            super::curves::write(&dir, &dir);
        }
        Outcome::Interrupted { step } => eprintln!(
            "stopped after step {step}; continue with: ofa finetune --resume {}",
            dir.display()
        ),
    }
    Ok(())
}

/// The run's evaluations as a table, the chosen one marked.
fn summary(r: &FinetuneRecord) -> String {
    let mut s = format!("{:>7} {:>7} {:>12}\n", "epoch", "step", "held-out %");
    for e in &r.history {
        let mark = if e.step == r.chosen.step {
            "  <- subnet.safetensors"
        } else {
            ""
        };
        s.push_str(&format!(
            "{:>7.2} {:>7} {:>12.2}{mark}\n",
            e.epoch, e.step, e.heldout_top1
        ));
    }
    if let Some(t) = r.test_top1 {
        s.push_str(&format!("test top-1 of subnet.safetensors: {t:.2} %\n"));
    }
    s.push_str(&format!("trained {:.1} s", r.train_s));
    s
}
