//! `ofa predictor`: build an accuracy dataset from a package, fit a predictor, evaluate one.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};
use ofa_package::measure::{measure, MeasureOptions, Recalibration};
use ofa_package::Package;
use ofa_predictors::dataset::{self, Measured};
use ofa_predictors::fit::{evaluate, fit, FitOptions};
use ofa_predictors::AccuracyPredictor;
use ofa_space::{Choices, Encoding};

/// Arguments of `ofa predictor`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    what: What,
}

#[derive(Debug, clap::Subcommand)]
enum What {
    /// Measure random subnets of a package (BN recalibration + top-1), one JSON line each;
    /// resumable: archs already in the file are skipped.
    Dataset(DatasetArgs),
    /// Fit the accuracy predictor (MLP) on a dataset file; prints RMSE, MAE, Kendall τ, Spearman ρ.
    Fit(FitArgs),
    /// Score a predictor on a dataset file.
    Eval(EvalArgs),
}

#[derive(Debug, clap::Args)]
struct DatasetArgs {
    /// Supernet package (folder with supernet.safetensors, calibration.safetensors, card.json).
    #[arg(long)]
    package: PathBuf,
    /// Distinct archs wanted in the file.
    #[arg(long)]
    samples: usize,
    /// Dataset file (JSON lines), created or extended.
    #[arg(long)]
    out: PathBuf,
    /// Images for BN recalibration (at most the package's; reference 2000).
    #[arg(long, default_value_t = 2000)]
    calibration_images: usize,
    /// Held-out images evaluated per arch (at most the split's).
    #[arg(long, default_value_t = 10_000)]
    eval_images: usize,
    /// Split to measure on: the run's held-out validation split, or the test split.
    #[arg(long, value_enum, default_value = "val")]
    split: SplitArg,
    /// Dataset directory (default: the one named in the package's card).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Batch size of recalibration and evaluation (recalibration statistics depend on it: the
    /// default is the one `ofa extract` and `ofa serve` cut with, so records match served subnets).
    #[arg(long, default_value_t = Recalibration::default().batch)]
    batch: usize,
    /// Seed of the arch sequence.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu", value_parser = super::device_arg)]
    device: tch::Device,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum SplitArg {
    Val,
    Test,
}

#[derive(Debug, clap::Args)]
struct FitArgs {
    /// Dataset file from `ofa predictor dataset`.
    #[arg(long)]
    data: PathBuf,
    /// Package whose space the dataset samples (its encoding); the predictor is written into it
    /// unless --out is given.
    #[arg(long, required_unless_present = "space")]
    package: Option<PathBuf>,
    /// Or: the search space (preset name or JSON file).
    #[arg(long, conflicts_with = "package")]
    space: Option<String>,
    /// Output file (default: PACKAGE/accuracy.safetensors).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Passes over the training split.
    #[arg(long, default_value_t = FitOptions::default().epochs)]
    epochs: usize,
    /// Hidden width.
    #[arg(long, default_value_t = 400)]
    hidden: usize,
    /// Hidden layers.
    #[arg(long, default_value_t = 3)]
    layers: usize,
    /// Adam learning rate.
    #[arg(long, default_value_t = 1e-3)]
    lr: f64,
    /// Seed of the split, init and batch order.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
struct EvalArgs {
    /// Predictor file.
    #[arg(long)]
    predictor: PathBuf,
    /// Dataset file.
    #[arg(long)]
    data: PathBuf,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

/// Run `ofa predictor`.
pub fn run(a: Args) -> anyhow::Result<()> {
    match a.what {
        What::Dataset(d) => build(d),
        What::Fit(f) => fit_cmd(f),
        What::Eval(e) => eval_cmd(e),
    }
}

fn build(a: DatasetArgs) -> anyhow::Result<()> {
    if a.samples == 0 {
        bail!("--samples must be positive");
    }
    let device = a.device;
    let pkg = Package::open(&a.package, device)?;
    let splits = ofa_trainer::package::splits(&pkg, a.data.as_deref())?;
    let split = match a.split {
        SplitArg::Val => splits.val,
        SplitArg::Test => splits
            .test
            .context("the package's dataset has no test split")?
            .load()?,
    };
    let opts = MeasureOptions {
        recalibration: Recalibration {
            images: a.calibration_images,
            batch: a.batch.max(1),
            seed: 0,
        },
        eval_images: a.eval_images,
        batch: a.batch.max(1),
    };
    let space = pkg.space().clone();
    let choices = Choices::all(&space);
    let bar = if std::io::stderr().is_terminal() {
        ProgressBar::new(a.samples as u64)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} archs · {msg} · ETA {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let started = Instant::now();
    let mut done_here = 0usize;
    let calib_n = a.calibration_images.min(pkg.calib.len());
    let eval_n = a.eval_images.min(split.len());
    let measured = dataset::build(
        &space,
        &choices,
        &a.out,
        a.samples,
        a.seed,
        |arch| -> anyhow::Result<Measured> {
            let top1 = measure(pkg.net(), arch, &pkg.calib, &split, &pkg.augment, &opts)?;
            Ok(Measured {
                top1: top1 * 100.0,
                calibration_images: calib_n,
                eval_images: eval_n,
            })
        },
        |p| {
            done_here += 1;
            let per_min = done_here as f64 / started.elapsed().as_secs_f64().max(1e-9) * 60.0;
            bar.set_position(p.done as u64);
            bar.set_message(format!("{per_min:.1} subnets/min"));
        },
    )
    .map_err(|e| match e {
        dataset::BuildError::Predictor(p) => anyhow::Error::from(p),
        dataset::BuildError::Measure(m) => m,
    })?;
    bar.finish_and_clear();
    eprintln!(
        "{}: {} archs measured now, {} in the file ({:.1} s, {:.1} subnets/min)",
        a.out.display(),
        measured,
        a.samples,
        started.elapsed().as_secs_f64(),
        measured as f64 / started.elapsed().as_secs_f64().max(1e-9) * 60.0
    );
    Ok(())
}

fn space_of(package: Option<&Path>, space: Option<&str>) -> anyhow::Result<ofa_space::SearchSpace> {
    match (package, space) {
        (Some(p), _) => {
            let sn = p.join("supernet.safetensors");
            let f = ofa_supernet::checkpoint::read_safetensors(&sn)?;
            let j = f
                .metadata
                .get("space")
                .with_context(|| format!("{}: no `space` in the metadata", sn.display()))?;
            Ok(ofa_space::SearchSpace::from_json(j)?)
        }
        (None, Some(s)) => super::read_space(s),
        (None, None) => bail!("give --package or --space"),
    }
}

fn fit_cmd(a: FitArgs) -> anyhow::Result<()> {
    let space = space_of(a.package.as_deref(), a.space.as_deref())?;
    let out = match (&a.out, &a.package) {
        (Some(o), _) => o.clone(),
        (None, Some(p)) => p.join("accuracy.safetensors"),
        (None, None) => bail!("give --out (or --package to write PACKAGE/accuracy.safetensors)"),
    };
    let records = dataset::read(&a.data)?;
    for (i, r) in records.iter().enumerate() {
        r.arch.validate(&space).with_context(|| {
            format!(
                "{}:{}: the arch does not fit the space `{}`",
                a.data.display(),
                i + 1,
                space.name
            )
        })?;
    }
    let opts = FitOptions {
        hidden: a.hidden,
        layers: a.layers,
        epochs: a.epochs,
        lr: a.lr,
        seed: a.seed,
        ..FitOptions::default()
    };
    let (mut p, report) = fit(Encoding::library(&space), &records, &opts)?;
    p.metadata.insert("space".into(), space.name.clone());
    p.metadata
        .insert("metrics".into(), serde_json::to_string(&report)?);
    p.metadata
        .insert("dataset".into(), a.data.display().to_string());
    p.save(&out)?;
    if a.json {
        outln!("{}", serde_json::to_string(&report)?);
    } else {
        outln!(
            "accuracy predictor: {} train / {} test archs, {:.1} s → {}",
            report.n_train,
            report.n_test,
            report.seconds,
            out.display()
        );
        outln!(
            "  {:<6} {:>10} {:>10} {:>10} {:>10}",
            "split",
            "RMSE (pt)",
            "MAE (pt)",
            "Kendall τ",
            "Spearman ρ"
        );
        for (name, q) in [("train", report.train), ("test", report.test)] {
            outln!(
                "  {:<6} {:>10.3} {:>10.3} {:>10.3} {:>10.3}",
                name,
                q.rmse,
                q.mae,
                q.kendall_tau,
                q.spearman_rho
            );
        }
    }
    Ok(())
}

fn eval_cmd(a: EvalArgs) -> anyhow::Result<()> {
    let p = AccuracyPredictor::load(&a.predictor, None)?;
    let records = dataset::read(&a.data)?;
    let q = evaluate(&p, &records)?;
    if a.json {
        outln!("{}", serde_json::to_string(&q)?);
    } else {
        outln!(
            "{} on {} ({} archs): RMSE {:.3} pt, MAE {:.3} pt, Kendall τ {:.3}, Spearman ρ {:.3}",
            a.predictor.display(),
            a.data.display(),
            q.n,
            q.rmse,
            q.mae,
            q.kendall_tau,
            q.spearman_rho
        );
    }
    Ok(())
}
