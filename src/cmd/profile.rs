//! `ofa profile`: build a latency lookup table on this machine (resumable), or validate one
//! against whole subnets.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};
use ofa_predictors::latency::Correction;
use ofa_predictors::profile::{profile, profile_by, validate, validate_by, ProfileOptions};
use ofa_predictors::LatencyTable;
use ofa_supernet::Supernet;

/// Arguments of `ofa profile`.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    #[command(subcommand)]
    validate: Option<Sub>,
    #[command(flatten)]
    source: Source,
    /// Output table (default with --package: PACKAGE/latency/<--name>.json).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Hardware name of the table in the package (default: cpu, or cuda for a CUDA device;
    /// onnxruntime-cpu for ONNX Runtime).
    #[arg(long)]
    name: Option<String>,
    /// Where the layers are timed: libtorch, or ONNX Runtime on each layer's own ONNX graph (CPU,
    /// batch 1, at --threads).
    #[arg(long, value_enum, default_value = "libtorch")]
    runtime: RuntimeArg,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum RuntimeArg {
    Libtorch,
    Onnxruntime,
}

#[derive(Debug, clap::Subcommand)]
enum Sub {
    /// Time random whole subnets and compare with a table's predictions (MAPE, Spearman ρ, and a
    /// fitted linear correction).
    Validate(ValidateArgs),
}

#[derive(Debug, Clone, clap::Args)]
struct Source {
    /// Supernet package (or use --space for random weights: latency does not depend on them).
    #[arg(long)]
    package: Option<PathBuf>,
    /// Search space (preset or JSON file), random weights.
    #[arg(long, conflicts_with = "package")]
    space: Option<String>,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu", value_parser = super::device_arg)]
    device: tch::Device,
    /// Images per forward.
    #[arg(long, default_value_t = 1)]
    batch: i64,
    /// Timed runs per layer (or per subnet when validating). The shipped package's table took
    /// 100; with 20 the sub-millisecond layers are noisy enough to show in the sums.
    #[arg(long, default_value_t = 100)]
    repeats: usize,
    /// Untimed warm-up runs.
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// Resolutions (comma-separated; default: the space's).
    #[arg(long, value_delimiter = ',')]
    resolutions: Option<Vec<u32>>,
}

#[derive(Debug, clap::Args)]
struct ValidateArgs {
    #[command(flatten)]
    source: Source,
    /// The table to check.
    #[arg(long)]
    table: PathBuf,
    /// Random subnets timed.
    #[arg(long, default_value_t = 30)]
    samples: usize,
    /// Seed of the subnets.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Store the fitted correction in the table, so that predictions use it.
    #[arg(long)]
    write_correction: bool,
    /// Where the subnets are timed: libtorch, or ONNX Runtime on their ONNX exports (CPU, batch
    /// 1, at --threads).
    #[arg(long, value_enum, default_value = "libtorch")]
    runtime: RuntimeArg,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

fn open(s: &Source) -> anyhow::Result<(Supernet, ProfileOptions)> {
    let device = s.device;
    let net = match (&s.package, &s.space) {
        (Some(p), _) => {
            Supernet::load(&p.join("supernet.safetensors"), device)
                .with_context(|| format!("{}: not a supernet package", p.display()))?
                .net
        }
        (None, Some(sp)) => Supernet::new(&super::read_space(sp)?, 0, device)?,
        (None, None) => bail!("give --package or --space"),
    };
    if s.batch < 1 || s.repeats == 0 {
        bail!("--batch and --repeats must be positive");
    }
    let opts = ProfileOptions {
        batch: s.batch,
        warmup: s.warmup,
        repeats: s.repeats,
        device,
        resolutions: s.resolutions.clone(),
    };
    if let Some(rs) = &opts.resolutions {
        if let Some(r) = rs.iter().find(|r| !net.space().resolutions.contains(r)) {
            bail!(
                "resolution {r} is not in the space's resolutions {:?}",
                net.space().resolutions
            );
        }
    }
    Ok((net, opts))
}

fn bar(len: usize, what: &str) -> ProgressBar {
    let b = if std::io::stderr().is_terminal() {
        ProgressBar::new(len as u64)
    } else {
        ProgressBar::hidden()
    };
    b.set_style(
        ProgressStyle::with_template(&format!("{{bar:30}} {{pos}}/{{len}} {what} · ETA {{eta}}"))
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    b
}

/// Run `ofa profile`.
pub fn run(a: Args) -> anyhow::Result<()> {
    if let Some(Sub::Validate(v)) = a.validate {
        return validate_cmd(v);
    }
    let (net, opts) = open(&a.source)?;
    let out = match (&a.out, &a.source.package) {
        (Some(o), _) => o.clone(),
        (None, Some(p)) => {
            let name = a.name.clone().unwrap_or_else(|| {
                if a.runtime == RuntimeArg::Onnxruntime {
                    "onnxruntime-cpu".into()
                } else if matches!(opts.device, tch::Device::Cuda(_)) {
                    "cuda".into()
                } else {
                    "cpu".into()
                }
            });
            p.join("latency").join(format!("{name}.json"))
        }
        (None, None) => bail!("give --out (or --package to write PACKAGE/latency/NAME.json)"),
    };
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let b = bar(0, "subnets profiled");
    let t = std::time::Instant::now();
    let progress = |done: usize, total: usize| {
        b.set_length(total as u64);
        b.set_position(done as u64);
    };
    let table = match a.runtime {
        RuntimeArg::Libtorch => profile(&net, &opts, &out, progress)?,
        RuntimeArg::Onnxruntime => profile_onnxruntime(&net, &opts, &out, progress)?,
    };
    b.finish_and_clear();
    let n: usize = table.tables.values().map(|t| t.len()).sum();
    eprintln!(
        "{}: {} layer entries over {} resolutions ({}, batch {}, {} threads) in {:.1} s",
        out.display(),
        n,
        table.tables.len(),
        table.meta.device,
        opts.batch,
        tch::get_num_threads(),
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

fn validate_cmd(v: ValidateArgs) -> anyhow::Result<()> {
    let (net, opts) = open(&v.source)?;
    let mut table = LatencyTable::load(&v.table)?;
    // validate the raw sum: a stored correction is refitted from scratch
    let previous = table.meta.correction.take();
    let b = bar(v.samples, "subnets timed");
    let progress = |d: usize, _: usize| b.set_position(d as u64);
    let r = match v.runtime {
        RuntimeArg::Libtorch => validate(&net, &table, &opts, v.samples, v.seed, progress)?,
        RuntimeArg::Onnxruntime => {
            if opts.batch != 1 || opts.device != tch::Device::Cpu {
                bail!("--runtime onnxruntime times batch 1 on the CPU: leave out --batch and --device");
            }
            let threads = tch::get_num_threads().max(1) as usize;
            let channels = i64::from(net.space().in_channels);
            let time_one = |sub: &ofa_supernet::Subnet, arch: &ofa_space::ArchConfig| {
                let fail =
                    |e: ofa_onnx::OnnxError| ofa_predictors::PredictorError::Model(e.to_string());
                let bytes =
                    ofa_onnx::export(sub, &ofa_onnx::ExportOptions::new(arch.r)).map_err(fail)?;
                let r = i64::from(arch.r);
                let ms = ofa_onnx::runtime::Timed::new(&bytes, &[1, channels, r, r], threads)
                    .and_then(|mut t| t.times_ms(opts.warmup, opts.repeats))
                    .map_err(fail)?;
                Ok(ofa_predictors::profile::summarise(ms).mean)
            };
            validate_by(
                &net,
                &table,
                opts.resolutions.as_deref(),
                v.samples,
                v.seed,
                time_one,
                progress,
            )?
        }
    };
    b.finish_and_clear();
    if v.write_correction {
        table.meta.correction = Some(Correction {
            a: r.fit_a,
            b: r.fit_b,
        });
        ofa_supernet::checkpoint::write_atomic(&v.table, table.to_json().as_bytes())?;
        eprintln!(
            "{}: correction a = {:.4}, b = {:.4} ms stored (was {:?})",
            v.table.display(),
            r.fit_a,
            r.fit_b,
            previous
        );
    }
    if v.json {
        outln!("{}", serde_json::to_string(&r)?);
        return Ok(());
    }
    outln!(
        "{} on {} random subnets: MAPE {:.1} %, Spearman ρ {:.3}; corrected (measured ≈ {:.3} · table + {:.3} ms): MAPE {:.1} %",
        v.table.display(),
        r.n,
        r.mape,
        r.spearman_rho,
        r.fit_a,
        r.fit_b,
        r.mape_corrected
    );
    Ok(())
}

/// The per-layer table in ONNX Runtime: each step of the eval forward exported as its own graph
/// (`ofa_onnx::layer_models`) and timed at batch 1 on the CPU execution provider.
fn profile_onnxruntime(
    net: &Supernet,
    opts: &ProfileOptions,
    out: &std::path::Path,
    progress: impl FnMut(usize, usize),
) -> anyhow::Result<LatencyTable> {
    if opts.batch != 1 || opts.device != tch::Device::Cpu {
        bail!("--runtime onnxruntime times batch 1 on the CPU: leave out --batch and --device");
    }
    let version = ofa_onnx::runtime::version()?;
    let threads = tch::get_num_threads().max(1);
    let meta = ofa_predictors::latency::Meta {
        device: ofa_predictors::profile::describe_device(tch::Device::Cpu),
        batch: Some(1),
        threads: Some(threads as u32),
        libraries: [
            ("onnxruntime".to_string(), version),
            ("ofa".to_string(), env!("CARGO_PKG_VERSION").to_string()),
        ]
        .into(),
        date: Some(humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()),
        source: Some(format!(
            "ofa profile --runtime onnxruntime, space {}",
            net.space().name
        )),
        correction: None,
        runtime: Some("onnxruntime".to_string()),
        fit: None,
    };
    let timer = |sub: &ofa_supernet::Subnet,
                 arch: &ofa_space::ArchConfig,
                 need: &[bool]|
     -> Result<
        Vec<Option<ofa_predictors::latency::Entry>>,
        ofa_predictors::PredictorError,
    > {
        let fail = |e: ofa_onnx::OnnxError| ofa_predictors::PredictorError::Model(e.to_string());
        let models =
            ofa_onnx::layer_models(sub, &ofa_onnx::ExportOptions::new(arch.r)).map_err(fail)?;
        if models.len() != need.len() {
            return Err(ofa_predictors::PredictorError::Model(format!(
                "{} layer graphs for {} layer keys",
                models.len(),
                need.len()
            )));
        }
        models
            .iter()
            .zip(need)
            .map(|(m, need)| {
                if !need {
                    return Ok(None);
                }
                let mut t =
                    ofa_onnx::runtime::Timed::new(&m.bytes, &m.input_shape, threads as usize)
                        .map_err(fail)?;
                let ms = t.times_ms(opts.warmup, opts.repeats).map_err(fail)?;
                Ok(Some(ofa_predictors::profile::summarise(ms)))
            })
            .collect()
    };
    Ok(profile_by(net, opts, out, meta, timer, progress)?)
}
