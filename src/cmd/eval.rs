//! `ofa eval`: a subnet file's own top-1 on a dataset, with the eval transform it was cut with.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context};
use ofa_onnx::runtime::{Runner, Timed};
use ofa_package::augment::AugmentConfig;
use ofa_package::measure::{latency, top1, top1_by};
use ofa_package::PackageError;
use ofa_supernet::checkpoint::{open_model, Model};
use serde_json::json;

/// Arguments of `ofa eval`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A subnet file (`ofa extract`, or downloaded from `ofa serve`).
    #[arg(long)]
    model: PathBuf,
    /// Dataset folder: MNIST-style IDX, CIFAR-10 binary batches, or an image folder.
    #[arg(long, default_value = ofa_trainer::data::FASHION_MNIST_DIR)]
    data: PathBuf,
    /// Split scored: the dataset's test split, or its training images.
    #[arg(long, value_enum, default_value = "test")]
    split: Split,
    /// Images scored (the first N of the split).
    #[arg(long, default_value_t = usize::MAX)]
    images: usize,
    /// Input resolution (default: the one the subnet file records).
    #[arg(long)]
    resolution: Option<u32>,
    /// Batch size.
    #[arg(long, default_value_t = 250)]
    batch: usize,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu", value_parser = super::device_arg)]
    device: tch::Device,
    /// Also time the subnet at batch 1 on the device: median of this many runs (0: no timing).
    #[arg(long, default_value_t = 0)]
    latency_repeats: usize,
    /// Timing passes; the latency is the lowest median, the statistic a calibration and `ofa
    /// hardware time` use, so a measurement compares with their predictions.
    #[arg(long, default_value_t = 3)]
    latency_rounds: usize,
    /// Where to run it: libtorch, or ONNX Runtime on its ONNX export (CPU, at --threads; the
    /// runtime deployments use).
    #[arg(long, value_enum, default_value = "libtorch")]
    runtime: RuntimeArg,
    /// One JSON object on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum RuntimeArg {
    Libtorch,
    Onnxruntime,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Split {
    Test,
    Train,
}

/// Run `ofa eval`.
pub fn run(a: Args) -> anyhow::Result<()> {
    anyhow::ensure!(
        a.batch > 0 && a.images > 0,
        "--batch and --images must be positive"
    );
    let device = a.device;
    let f = match open_model(&a.model, device)? {
        Model::Subnet(f) => f,
        Model::Supernet(_) => bail!(
            "{} is a supernet: cut a subnet first (`ofa extract`)",
            a.model.display()
        ),
    };
    let r = match (a.resolution, &f.arch) {
        (Some(r), _) => r,
        (None, Some(arch)) => arch.r,
        (None, None) => bail!("{} records no arch: give --resolution", a.model.display()),
    };
    let augment: AugmentConfig = match f.metadata.get("augment") {
        Some(j) => serde_json::from_str(j)
            .with_context(|| format!("{}: metadata `augment`", a.model.display()))?,
        None => bail!(
            "{} records no eval transform (metadata `augment`: files cut by `ofa extract` or `ofa serve` have it)",
            a.model.display()
        ),
    };
    let size = (f64::from(r) / augment.eval_crop).ceil() as u32;
    let ds = ofa_trainer::data::load_any(&a.data, size, false)?;
    let (name, split) = match a.split {
        Split::Test => (
            "test",
            ds.test
                .with_context(|| format!("{}: the dataset has no test split", a.data.display()))?,
        ),
        Split::Train => ("train", ds.train),
    };
    let t = Instant::now();
    let threads = tch::get_num_threads().max(1);
    let channels = i64::from(f.net.config().in_channels);
    let (acc, lat, runtime) = match a.runtime {
        RuntimeArg::Libtorch => {
            let acc = top1(&f.net, &split, r, &augment, a.batch, a.images)?;
            let lat = match a.latency_repeats {
                0 => None,
                n => Some(lowest(a.latency_rounds, || {
                    Ok(latency(&f.net, r, 5, n)?.median_ms)
                })?),
            };
            (acc, lat, "libtorch".to_string())
        }
        RuntimeArg::Onnxruntime => {
            anyhow::ensure!(
                device == tch::Device::Cpu,
                "--runtime onnxruntime runs on the CPU: leave out --device"
            );
            let bytes = ofa_onnx::export(&f.net, &ofa_onnx::ExportOptions::new(r))?;
            let mut runner = Runner::new(&bytes, threads as usize)?;
            let acc = top1_by(&split, r, &augment, a.batch, a.images, channels, |x| {
                let x = x.to_kind(tch::Kind::Float).contiguous();
                let s = x.size();
                let shape = [s[0] as usize, s[1] as usize, s[2] as usize, s[3] as usize];
                let data = Vec::<f32>::try_from(&x.flatten(0, -1))?;
                let (dims, logits) = runner
                    .run(shape, data)
                    .map_err(|e| PackageError::Runtime(e.to_string()))?;
                Ok(tch::Tensor::from_slice(&logits).view([dims[0], dims[1]]))
            })?;
            let lat = match a.latency_repeats {
                0 => None,
                n => {
                    let mut t = Timed::new(
                        &bytes,
                        &[1, channels, i64::from(r), i64::from(r)],
                        threads as usize,
                    )?;
                    Some(lowest(a.latency_rounds, || Ok(t.median_ms(5, n)?))?)
                }
            };
            (
                acc,
                lat,
                format!("onnxruntime {}", ofa_onnx::runtime::version()?),
            )
        }
    };
    let n = a.images.min(split.len());
    let mut out = json!({"top1": acc * 100.0, "split": name, "images": n, "resolution": r,
                         "data": ds.name, "seconds": t.elapsed().as_secs_f64(), "runtime": runtime});
    if let Some(ms) = lat {
        out["latency_ms"] = json!(ms);
        out["latency_threads"] = json!(threads);
        out["latency_rounds"] = json!(a.latency_rounds.max(1));
    }
    if a.json {
        outln!("{out}");
    } else {
        outln!(
            "top-1 {:.2} % on {n} {name} images of {} at r={r}",
            acc * 100.0,
            ds.name
        );
        if let Some(ms) = lat {
            outln!(
                "latency {ms:.3} ms (lowest of {} medians of {}; batch 1, {threads} threads, {runtime})",
                a.latency_rounds.max(1),
                a.latency_repeats
            );
        }
    }
    Ok(())
}

/// The lowest of `rounds` (at least 1) values of `f`.
fn lowest(rounds: usize, mut f: impl FnMut() -> anyhow::Result<f64>) -> anyhow::Result<f64> {
    let mut best = f64::INFINITY;
    for _ in 0..rounds.max(1) {
        best = best.min(f()?);
    }
    Ok(best)
}
