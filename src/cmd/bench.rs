//! `ofa bench`: performance figures as a readable table, or one JSON object with `--json`.

use std::time::{Duration, Instant};

use anyhow::Context;
use ofa_schema::bench::{
    BenchReport, Breakdown, ByArch, DataWait, ExtractReport, Forward, Spread, Summary, TrainReport,
};
use ofa_supernet::timing::once_ms;

use ofa_space::{sample, ArchConfig, Choices};
use ofa_supernet::{channels_last, Layout, Mode, Supernet};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tch::{Device, Kind, Tensor};

/// Arguments of `ofa bench`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    what: What,
}

#[derive(Debug, clap::Subcommand)]
enum What {
    /// Subnet extraction time (largest, smallest, random archs) and eval forward time.
    Extract(ExtractArgs),
    /// Training throughput: full steps (teacher + sampled subnets, KD + label smoothing, SGD).
    Train(TrainArgs),
    /// Accuracy-predictor throughput (encode + predict) and efficiency predictors.
    Predict(super::bench_predict::Args),
    /// Evolutionary search time (reference defaults, MLP of the reference's size).
    Search(super::bench_search::Args),
    /// The HTTP service under wrk: cached GET / POST throughput, cold search, first download, RSS.
    Serve(super::bench_serve::Args),
    /// Decode + augment throughput of a streamed image folder into training batches.
    Data(super::bench_data::Args),
    /// Search quality on a package: each budget's pick against the predictor dataset's best
    /// measured subnet within it, top-1 and latency measured; and the measurement noise.
    Quality(super::bench_quality::Args),
    /// Onboarding a device: probes exported, a calibration here, the fit, held-out error.
    Hardware(super::bench_hardware::Args),
    /// A fine-tuning step of one subnet next to a progressive-shrinking step on the same subnet.
    Finetune(super::bench_finetune::Args),
    /// Search strategies at equal evaluation budgets: predicted top-1, regret, wall time.
    Strategies(super::bench_strategies::Args),
}

/// Arguments of `ofa bench train`.
#[derive(Debug, clap::Args)]
pub struct TrainArgs {
    /// Search space (preset name or SearchSpace JSON file); random weights.
    #[arg(long, default_value = "ofa-mbv3-w1.0")]
    space: String,
    /// Override the space's width multiplier.
    #[arg(long)]
    width_mult: Option<f64>,
    /// Override the number of classes.
    #[arg(long)]
    n_classes: Option<u32>,
    /// Images per step.
    #[arg(long, default_value_t = 32)]
    batch: i64,
    /// Input resolution.
    #[arg(long, default_value_t = 128)]
    resolution: u32,
    /// Subnets sampled per step.
    #[arg(long, default_value_t = 1)]
    subnets_per_step: usize,
    /// Timed steps (after 5 warm-up steps).
    #[arg(long, default_value_t = 20)]
    steps: usize,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu", value_parser = super::device_arg)]
    device: tch::Device,
    /// fp32 or bf16 (mixed precision).
    #[arg(long, value_enum, default_value = "fp32")]
    precision: ofa_trainer::step::Precision,
    /// Keep NCHW weights and inputs (the trainer uses channels-last).
    #[arg(long)]
    nchw: bool,
    /// Feed the steps from this image folder, streamed by the trainer's loader (random-resized
    /// crop, flip, jitter), and report the share of each step spent waiting for data.
    #[arg(long)]
    data: Option<std::path::PathBuf>,
    /// Loader worker threads with `--data`.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// One JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// Data-parallel ranks (`--nproc-per-node N`, or a launcher's variables): `--batch` is the
    /// global batch, each rank steps on its shard and the gradients are averaged across ranks.
    #[command(flatten)]
    ranks: super::launch::RankArgs,
}

/// Arguments of `ofa bench extract`.
#[derive(Debug, clap::Args)]
pub struct ExtractArgs {
    /// Search space (preset name or SearchSpace JSON file); random weights.
    #[arg(long, default_value = "ofa-mbv3-w1.0")]
    space: String,
    /// Timed extractions per kind of arch.
    #[arg(long, default_value_t = 50)]
    repeats: usize,
    /// Timed forward passes of the largest subnet.
    #[arg(long, default_value_t = 5)]
    forward_repeats: usize,
    /// Resolution of the forward benchmark.
    #[arg(long, default_value_t = 128)]
    resolution: i64,
    /// Batch of the forward benchmark.
    #[arg(long, default_value_t = 32)]
    batch: i64,
    /// One JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

/// Median and spread of timings in milliseconds.
/// Print `report` as one JSON object.
pub(crate) fn print_json(report: BenchReport) {
    outln!("{}", ofa_schema::to_json(&report));
}

fn time_ms(f: impl FnOnce()) -> f64 {
    once_ms(f).1
}

/// Run `ofa bench`.
pub fn run(a: Args) -> anyhow::Result<()> {
    match a.what {
        What::Extract(e) => extract(e),
        What::Train(t) => train(t),
        What::Predict(p) => super::bench_predict::run(p),
        What::Search(s) => super::bench_search::run(s),
        What::Serve(s) => super::bench_serve::run(s),
        What::Quality(q) => super::bench_quality::run(q),
        What::Finetune(f) => super::bench_finetune::run(f),
        What::Strategies(s) => super::bench_strategies::run(s),
        What::Hardware(h) => super::bench_hardware::run(h),
        What::Data(d) => super::bench_data::run(d),
    }
}

fn extract(a: ExtractArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        a.repeats > 0 && a.forward_repeats > 0,
        "repeats must be positive"
    );
    let space = super::read_space(&a.space)?;
    let net = Supernet::new(&space, 0, Device::Cpu)?;
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let choices = Choices::all(&space);
    let largest = ArchConfig::largest(&space);
    let smallest = ArchConfig::smallest(&space);
    // Warm up libtorch's allocator and dispatcher on every kind of arch (a different seed from
    // the timed random archs): the first extractions of new tensor shapes are several times slower.
    let mut warm_rng = ChaCha8Rng::seed_from_u64(u64::MAX);
    for i in 0..20 {
        let arch = match i % 4 {
            0 => largest.clone(),
            1 => smallest.clone(),
            _ => sample(&space, &choices, &mut warm_rng),
        };
        net.extract(&arch)?;
    }
    let mut all = Vec::new();
    let mut by_kind = Vec::new();
    for kind in ["largest", "smallest", "random"] {
        let mut ms = Vec::with_capacity(a.repeats);
        for _ in 0..a.repeats {
            let arch = match kind {
                "largest" => largest.clone(),
                "smallest" => smallest.clone(),
                _ => sample(&space, &choices, &mut rng),
            };
            let mut res = Ok(());
            ms.push(time_ms(|| res = net.extract(&arch).map(drop)));
            res?;
        }
        all.extend(ms.iter().copied());
        by_kind.push(Summary::of(ms));
    }
    let overall = Summary::of(all);
    // Eval forward of the largest extracted subnet.
    let sub = net.extract(&largest)?;
    let x = Tensor::randn(
        [
            a.batch,
            i64::from(space.in_channels),
            a.resolution,
            a.resolution,
        ],
        (Kind::Float, Device::Cpu),
    );
    let fwd = tch::no_grad(|| -> anyhow::Result<Summary> {
        let _warm = sub.forward(&x, Mode::Eval)?;
        let mut ms = Vec::new();
        for _ in 0..a.forward_repeats {
            let mut r = Ok(());
            ms.push(time_ms(|| r = sub.forward(&x, Mode::Eval).map(drop)));
            r?;
        }
        Ok(Summary::of(ms))
    })?;
    let out = ExtractReport {
        space: space.name.clone(),
        threads: tch::get_num_threads(),
        median_ms: overall.median_ms,
        spread: Spread {
            p10_ms: overall.p10_ms,
            p90_ms: overall.p90_ms,
        },
        by_arch: ByArch {
            largest: by_kind[0],
            smallest: by_kind[1],
            random: by_kind[2],
        },
        forward_largest: Forward {
            resolution: a.resolution,
            batch: a.batch,
            median_ms: fwd.median_ms,
            p10_ms: fwd.p10_ms,
            p90_ms: fwd.p90_ms,
            images_per_s: a.batch as f64 / (fwd.median_ms / 1e3),
        },
    };
    if a.json {
        print_json(BenchReport::Extract(out));
        return Ok(());
    }
    outln!(
        "extraction, space {} (random weights, {} threads)",
        space.name,
        out.threads
    );
    outln!(
        "{:<10} {:>10} {:>10} {:>10} {:>6}",
        "arch",
        "median ms",
        "p10 ms",
        "p90 ms",
        "n"
    );
    let b = &out.by_arch;
    for (kind, r) in [
        ("largest", b.largest),
        ("smallest", b.smallest),
        ("random", b.random),
    ] {
        outln!(
            "{:<10} {:>10.3} {:>10.3} {:>10.3} {:>6}",
            kind,
            r.median_ms,
            r.p10_ms,
            r.p90_ms,
            r.n
        );
    }
    outln!("{:<10} {:>10.3}", "all", out.median_ms);
    let f = &out.forward_largest;
    outln!(
        "eval forward, largest subnet, r={} batch {}: median {:.1} ms ({:.0} images/s)",
        f.resolution,
        f.batch,
        f.median_ms,
        f.images_per_s
    );
    Ok(())
}

/// Peak resident memory of this process in MiB (Linux), if known.
pub(crate) fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// The trainer's loader over the images of `dir`, streamed, at the benchmark's batch and
/// resolution.
fn streamed_batches(
    dir: &std::path::Path,
    a: &TrainArgs,
    steps: u64,
    shard: Option<(usize, usize)>,
) -> anyhow::Result<ofa_trainer::loader::Loader> {
    use ofa_trainer::folder::{scan, FolderStream, JpegDecoder};
    use ofa_trainer::loader::{BatchPlan, Loader, TrainData};
    let index = scan(dir)?;
    let stream = FolderStream::new(index.train, JpegDecoder::default(), usize::MAX);
    let plan = BatchPlan {
        seed: 0,
        phase: 0,
        batch_size: a.batch as usize,
        resolutions: vec![a.resolution],
        channels: 3,
        augment: ofa_trainer::augment::AugmentConfig::imagenet(),
        shard,
    };
    let data = TrainData::Stream(std::sync::Arc::new(stream));
    Ok(Loader::new(&data, &plan, 0, steps, a.workers, 4))
}

fn train(a: TrainArgs) -> anyhow::Result<()> {
    use ofa_trainer::step::{train_step, Sgd, StepConfig, StepTime};
    anyhow::ensure!(
        a.steps > 0 && a.batch > 0 && a.subnets_per_step > 0,
        "steps, batch and subnets must be positive"
    );
    if let Some(n) = a.ranks.nproc_per_node {
        return super::launch::spawn_local(n, Duration::from_secs(30), a.ranks.timeout());
    }
    let device = a.device;
    let (group, device) = match a.ranks.join(device)? {
        Some((g, d)) => (Some(g), d),
        None => (None, device),
    };
    let (rank, world) = group.as_ref().map_or((0, 1), |g| (g.rank(), g.world()));
    anyhow::ensure!(
        a.batch as usize >= world,
        "a global batch of {} cannot be shared by {world} ranks",
        a.batch
    );
    // This rank's shard of the global batch, as the trainer's loader cuts it.
    let b = a.batch as usize;
    let local_batch = ((rank + 1) * b / world - rank * b / world) as i64;
    let mut space = super::read_space(&a.space)?;
    if let Some(w) = a.width_mult {
        space.width_mult = w;
    }
    if let Some(n) = a.n_classes {
        space.n_classes = n;
    }
    space.resolutions = vec![a.resolution];
    space.validate()?;
    let net = Supernet::new(&space, 0, device)?;
    let teacher = net.deep_clone()?;
    let cfg = StepConfig {
        kd_ratio: 1.0,
        label_smoothing: 0.1,
        precision: a.precision,
    };
    let r = i64::from(a.resolution);
    let x = Tensor::randn(
        [local_batch, i64::from(space.in_channels), r, r],
        (Kind::Float, device),
    );
    // The trainer's layout: channels-last weights and inputs (unless --nchw).
    let (net, teacher, x) = if a.nchw {
        (net, teacher, x)
    } else {
        (
            net.to_layout(Layout::ChannelsLast)?,
            teacher.to_layout(Layout::ChannelsLast)?,
            channels_last(&x),
        )
    };
    let mut opt = Sgd::new(&net, 0.9, 3e-5);
    let y = Tensor::randint(
        i64::from(space.n_classes),
        [local_batch],
        (Kind::Int64, device),
    );
    let choices = Choices::all(&space);
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let mut ms = Vec::with_capacity(a.steps);
    let mut total = StepTime::default();
    const WARMUP: usize = 5;
    let mut loader = match &a.data {
        Some(dir) => Some(streamed_batches(
            dir,
            &a,
            (a.steps + WARMUP) as u64,
            group.as_ref().map(|_| (rank, world)),
        )?),
        None => None,
    };
    let (mut waited, mut wall) = (0.0f64, 0.0f64);
    let mut reduced_bytes = 0usize;
    for i in 0..a.steps + WARMUP {
        let archs: Vec<ArchConfig> = (0..a.subnets_per_step)
            .map(|_| sample(&space, &choices, &mut rng))
            .collect();
        let t = Instant::now();
        let fed = match loader.as_mut() {
            Some(l) => {
                let before = l.waited();
                let b = l.next().context("the loader ended early")??;
                let w = (l.waited() - before).as_secs_f64();
                let bx = b.x.to_device(device);
                let bx = if a.nchw { bx } else { channels_last(&bx) };
                let by = b.y.remainder(i64::from(space.n_classes)).to_device(device);
                Some((bx, by, w))
            }
            None => None,
        };
        let (x, y) = match &fed {
            Some((bx, by, _)) => (bx, by),
            None => (&x, &y),
        };
        let st = train_step(
            &net,
            Some(&teacher),
            &mut opt,
            x,
            y,
            &archs,
            &cfg,
            0.01,
            group.as_deref(),
        )?;
        ofa_supernet::timing::sync(device);
        if i >= WARMUP {
            let step_s = t.elapsed().as_secs_f64();
            wall += step_s;
            waited += fed.as_ref().map_or(0.0, |f| f.2);
            ms.push(step_s * 1e3);
            total.teacher += st.time.teacher;
            total.forward += st.time.forward;
            total.backward += st.time.backward;
            total.optimizer += st.time.optimizer;
            total.allreduce += st.time.allreduce;
            reduced_bytes = st.reduced_bytes;
        }
    }
    if rank != 0 {
        // Rank 0 reports for the job.
        return Ok(());
    }
    let st = Summary::of(ms);
    let n = a.steps as f64;
    let share = |s: f64| s / wall.max(1e-12);
    let out = TrainReport {
        space: space.name.clone(),
        width_mult: space.width_mult,
        n_classes: space.n_classes,
        batch: a.batch,
        resolution: a.resolution,
        subnets_per_step: a.subnets_per_step,
        device: super::device_name(a.device),
        threads: tch::get_num_threads(),
        precision: format!("{:?}", a.precision).to_lowercase(),
        layout: if a.nchw {
            ofa_schema::bench::Layout::Nchw
        } else {
            ofa_schema::bench::Layout::ChannelsLast
        },
        images_per_s: a.batch as f64 / (st.median_ms / 1e3),
        step_ms: st,
        breakdown_ms: Breakdown {
            teacher_forward: total.teacher / n * 1e3,
            student_forward: total.forward / n * 1e3,
            backward: total.backward / n * 1e3,
            optimizer: total.optimizer / n * 1e3,
            allreduce: total.allreduce / n * 1e3,
        },
        world_size: world,
        backend: group.as_ref().map(|g| g.backend().name().to_string()),
        allreduce_share: share(total.allreduce),
        reduced_bytes_per_step: reduced_bytes,
        peak_rss_mib: peak_rss_mib(),
        data: a.data.as_ref().map(|dir| DataWait {
            data: dir.display().to_string(),
            workers: a.workers,
            data_wait_s: waited,
            data_wait_share: share(waited),
        }),
    };
    if a.json {
        print_json(BenchReport::Train(out));
        return Ok(());
    }
    if let Some(d) = &out.data {
        outln!(
            "data wait    {:.1} % of the step ({:.2} s of {:.2} s; {} workers)",
            100.0 * d.data_wait_share,
            d.data_wait_s,
            wall,
            d.workers
        );
    }
    outln!(
        "training steps, {} (width {}, {} classes), batch {} at r={}, {} subnet(s)/step, {} threads, {:?}, {}",
        space.name, space.width_mult, space.n_classes, a.batch, a.resolution, a.subnets_per_step, out.threads,
        a.precision, if a.nchw { "NCHW" } else { "channels-last" }
    );
    outln!("images/s     {:.1}", out.images_per_s);
    if let Some(b) = &out.backend {
        outln!(
            "ranks        {world} ({b}); all-reduce {:.1} % of the step, {:.1} MiB per step",
            100.0 * out.allreduce_share,
            reduced_bytes as f64 / f64::from(1 << 20)
        );
    }
    outln!(
        "step median  {:.1} ms (p10 {:.1}, p90 {:.1})",
        st.median_ms,
        st.p10_ms,
        st.p90_ms
    );
    let b = &out.breakdown_ms;
    for (k, v) in [
        ("teacher_forward", b.teacher_forward),
        ("student_forward", b.student_forward),
        ("backward", b.backward),
        ("optimizer", b.optimizer),
        ("allreduce", b.allreduce),
    ] {
        outln!("  {:<16} {:>8.1} ms", k, v);
    }
    if let Some(m) = out.peak_rss_mib {
        outln!("peak memory  {m:.0} MiB");
    }
    Ok(())
}
