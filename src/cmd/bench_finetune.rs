//! `ofa bench finetune`: a fine-tuning step of one subnet (its own weights) next to a
//! progressive-shrinking step of the same subnet (the supernet's sliced weights), on the same
//! batch, alternating so both see the same machine.

use std::path::PathBuf;
use std::time::Instant;

use ofa_package::Package;
use ofa_schema::bench::{BenchReport, FinetuneReport, StepThroughput, Summary};
use ofa_space::{ArchConfig, Choices};
use ofa_supernet::{channels_last, Layout};
use ofa_trainer::step::{subnet_step, train_step, Precision, Sgd, StepConfig};
use ofa_trainer::student::Student;
use tch::{Device, Kind, Tensor};

/// Arguments of `ofa bench finetune`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The package (its supernet, teacher and space).
    #[arg(long, default_value = "checkpoints/fashion-mnist")]
    package: PathBuf,
    /// The subnet (JSON file, `largest` or `smallest`; default: the middle choice everywhere,
    /// at the largest resolution).
    #[arg(long)]
    arch: Option<PathBuf>,
    /// Images per step.
    #[arg(long, default_value_t = 256)]
    batch: i64,
    /// Timed steps of each kind (after 3 warm-up steps of each).
    #[arg(long, default_value_t = 10)]
    steps: usize,
    /// No distillation (label-smoothed cross-entropy alone) in both steps.
    #[arg(long)]
    no_teacher: bool,
    /// One JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

/// Run `ofa bench finetune`.
pub fn run(a: Args) -> anyhow::Result<()> {
    anyhow::ensure!(
        a.steps > 0 && a.batch > 0,
        "steps and batch must be positive"
    );
    let device = Device::Cpu;
    let pkg = Package::open(&a.package, device)?;
    let space = pkg.space().clone();
    let arch = match &a.arch {
        Some(spec) => super::arch_arg(spec, &space)?,
        None => Choices::all(&space).middle(&space),
    };
    arch.validate(&space)?;
    let cfg = StepConfig {
        kd_ratio: if a.no_teacher { 0.0 } else { 1.0 },
        label_smoothing: 0.1,
        precision: Precision::Fp32,
    };
    let r = i64::from(arch.r);
    let x = channels_last(&Tensor::randn(
        [a.batch, i64::from(space.in_channels), r, r],
        (Kind::Float, device),
    ));
    let y = Tensor::randint(i64::from(space.n_classes), [a.batch], (Kind::Int64, device));
    // `ofa train`: the supernet (channels-last, as the trainer holds it) and its copy as teacher.
    let net = pkg.net().to_layout(Layout::ChannelsLast)?;
    let supernet_teacher = net.deep_clone()?;
    let mut net_opt = Sgd::new(&net, 0.9, 3e-5);
    // `ofa finetune`: the subnet's own weights, the largest subnet as teacher.
    let student = Student::new(&pkg.net().extract(&arch)?, Layout::ChannelsLast, device)?;
    let mut largest = ArchConfig::largest(&space);
    largest.r = arch.r;
    let teacher = pkg.net().extract(&largest)?.to_layout(Layout::ChannelsLast);
    let mut opt = Sgd::new(&student, 0.9, 3e-5);
    let archs = [arch.clone()];
    let (mut ft_ms, mut tr_ms) = (Vec::new(), Vec::new());
    const WARMUP: usize = 3;
    for i in 0..a.steps + WARMUP {
        let t = Instant::now();
        subnet_step(&student, Some(&teacher), &mut opt, &x, &y, &cfg, 0.01, None)?;
        let ft = t.elapsed().as_secs_f64() * 1e3;
        let t = Instant::now();
        train_step(
            &net,
            Some(&supernet_teacher),
            &mut net_opt,
            &x,
            &y,
            &archs,
            &cfg,
            0.01,
            None,
        )?;
        let tr = t.elapsed().as_secs_f64() * 1e3;
        if i >= WARMUP {
            ft_ms.push(ft);
            tr_ms.push(tr);
        }
    }
    let through = |ms: Vec<f64>| {
        let s = Summary::of(ms);
        StepThroughput {
            images_per_s: a.batch as f64 / (s.median_ms / 1e3),
            step_ms: s,
        }
    };
    let (finetune, train) = (through(ft_ms), through(tr_ms));
    let report = FinetuneReport {
        package: a.package.display().to_string(),
        arch,
        batch: a.batch,
        threads: tch::get_num_threads(),
        teacher: !a.no_teacher,
        ratio: finetune.images_per_s / train.images_per_s,
        finetune,
        train,
    };
    if a.json {
        super::bench::print_json(BenchReport::Finetune(report));
        return Ok(());
    }
    outln!(
        "one subnet {} at batch {}, {} threads, {}",
        report.arch.to_json(),
        report.batch,
        report.threads,
        if report.teacher {
            "distilled from the largest subnet"
        } else {
            "no teacher"
        }
    );
    outln!(
        "{:<22} {:>10} {:>12} {:>10} {:>10}",
        "step",
        "images/s",
        "median ms",
        "p10 ms",
        "p90 ms"
    );
    for (name, s) in [
        ("finetune (subnet)", &report.finetune),
        ("train (supernet)", &report.train),
    ] {
        outln!(
            "{:<22} {:>10.1} {:>12.1} {:>10.1} {:>10.1}",
            name,
            s.images_per_s,
            s.step_ms.median_ms,
            s.step_ms.p10_ms,
            s.step_ms.p90_ms
        );
    }
    outln!("finetune / train: {:.2}x", report.ratio);
    Ok(())
}
