//! `ofa eval`: a subnet file's own top-1 on a dataset, with the eval transform it was cut with.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context};
use ofa_package::augment::AugmentConfig;
use ofa_package::measure::{latency, top1};
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
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Also time the subnet at batch 1 on the device: median of this many runs (0: no timing).
    #[arg(long, default_value_t = 0)]
    latency_repeats: usize,
    /// One JSON object on stdout.
    #[arg(long)]
    json: bool,
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
    let device = super::device(&a.device)?;
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
    let acc = top1(&f.net, &split, r, &augment, a.batch, a.images)?;
    let n = a.images.min(split.len());
    let mut out = json!({"top1": acc * 100.0, "split": name, "images": n, "resolution": r,
                         "data": ds.name, "seconds": t.elapsed().as_secs_f64()});
    let lat = if a.latency_repeats > 0 {
        let s = latency(&f.net, r, 5, a.latency_repeats)?;
        out["latency_ms"] = json!(s.median_ms);
        out["latency_p90_ms"] = json!(s.p90_ms);
        out["latency_threads"] = json!(tch::get_num_threads());
        Some(s)
    } else {
        None
    };
    if a.json {
        println!("{out}");
    } else {
        println!(
            "top-1 {:.2} % on {n} {name} images of {} at r={r}",
            acc * 100.0,
            ds.name
        );
        if let Some(s) = lat {
            println!(
                "latency {:.3} ms (median of {}, p90 {:.3} ms; batch 1, {} threads, {:?})",
                s.median_ms,
                s.n,
                s.p90_ms,
                tch::get_num_threads(),
                f.net.device()
            );
        }
    }
    Ok(())
}
