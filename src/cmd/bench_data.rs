//! `ofa bench data`: decode + augment throughput of a streamed image folder into training-ready
//! batches (the trainer's own loader and workers), peak memory, and where one image's time goes.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use ofa_schema::bench::{BenchReport, DataReport, PerImage};
use ofa_trainer::augment::AugmentConfig;
use ofa_trainer::folder::{scan, write_synthetic_folder, FolderStream, JpegDecoder};
use ofa_trainer::loader::{BatchPlan, Loader, TrainData};

/// Arguments of `ofa bench data`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// An image folder (`class/…/image`, or `train/class/…`).
    #[arg(long)]
    data: PathBuf,
    /// Write an ImageNet-like folder of this many JPEG images (about 500×375, 10 classes) at
    /// `--data` first, unless it already holds images.
    #[arg(long)]
    generate: Option<usize>,
    /// Output resolution.
    #[arg(long, default_value_t = 224)]
    resolution: u32,
    /// Worker threads.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Images per batch.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Timed batches.
    #[arg(long, default_value_t = 20)]
    batches: u64,
    /// Untimed batches first.
    #[arg(long, default_value_t = 2)]
    warmup: u64,
    /// Batches each worker keeps ready.
    #[arg(long, default_value_t = 4)]
    prefetch: usize,
    /// JPEG decoder: zune (zune-jpeg, the trainer's), full (jpeg-decoder) or scaled
    /// (jpeg-decoder at reduced DCT scale).
    #[arg(long, default_value = "zune")]
    decoder: JpegDecoder,
    /// Images timed one by one, per stage, on one thread.
    #[arg(long, default_value_t = 200)]
    profile_images: usize,
    /// One JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

/// Run `ofa bench data`.
pub fn run(a: Args) -> anyhow::Result<()> {
    anyhow::ensure!(
        a.batch > 0 && a.batches > 0 && a.workers > 0 && a.resolution > 0,
        "batch, batches, workers and resolution must be positive"
    );
    if let Some(n) = a.generate {
        let has_images = scan(&a.data).is_ok_and(|ix| !ix.train.is_empty());
        if !has_images {
            let classes = 10.min(n.max(1));
            eprintln!(
                "[bench data] writing {n} JPEG images to {}",
                a.data.display()
            );
            write_synthetic_folder(&a.data, classes, n.div_ceil(classes), (500, 375), 0)?;
        }
    }
    let index = scan(&a.data).with_context(|| format!("reading {}", a.data.display()))?;
    let n = index.train.len();
    anyhow::ensure!(
        n >= a.batch,
        "{} holds {n} images, fewer than one batch of {}",
        a.data.display(),
        a.batch
    );
    let cfg = AugmentConfig::imagenet();
    let stream = Arc::new(FolderStream::new(index.train, a.decoder, usize::MAX));
    let stages = stream.profile(
        &(0..a.profile_images.min(n)).collect::<Vec<_>>(),
        a.resolution,
        &cfg,
    );

    let plan = BatchPlan {
        seed: 0,
        phase: 0,
        batch_size: a.batch,
        resolutions: vec![a.resolution],
        channels: 3,
        augment: cfg,
        shard: None,
    };
    let data = TrainData::Stream(Arc::clone(&stream));
    let total = a.warmup + a.batches;
    let mut loader = Loader::new(&data, &plan, 0, total, a.workers, a.prefetch);
    let mut start = Instant::now();
    for step in 0..total {
        if step == a.warmup {
            start = Instant::now();
        }
        let b = loader.next().context("the loader ended early")??;
        anyhow::ensure!(b.x.size()[0] as usize == a.batch, "short batch");
    }
    let secs = start.elapsed().as_secs_f64();
    drop(loader);
    let images = a.batches as f64 * a.batch as f64;
    let per_ms = |d: std::time::Duration| d.as_secs_f64() * 1e3 / stages.images.max(1) as f64;
    let decoder = match a.decoder {
        JpegDecoder::Zune => "zune-jpeg",
        JpegDecoder::Full => "jpeg-decoder",
        JpegDecoder::Scaled => "jpeg-decoder (DCT-scaled)",
    };
    let out = DataReport {
        data: a.data.display().to_string(),
        dataset_images: n,
        resolution: a.resolution,
        batch: a.batch,
        batches: a.batches,
        workers: a.workers,
        decoder: decoder.to_string(),
        images_per_s: images / secs,
        batch_ms: secs * 1e3 / a.batches as f64,
        bad_images: stream.bad_files().len(),
        peak_rss_mib: super::bench::peak_rss_mib(),
        per_image_ms: PerImage {
            images: stages.images,
            read: per_ms(stages.read),
            decode: per_ms(stages.decode),
            crop_resize: per_ms(stages.resize),
            jitter_normalize: per_ms(stages.normalize),
        },
        mean_file_kb: stages.bytes as f64 / 1024.0 / stages.images.max(1) as f64,
        mean_megapixels: stages.pixels as f64 / 1e6 / stages.images.max(1) as f64,
    };
    if a.json {
        super::bench::print_json(BenchReport::Data(out));
        return Ok(());
    }
    outln!(
        "streamed image folder {} ({n} images), r={}, batch {}, {} workers, {decoder}",
        a.data.display(),
        a.resolution,
        a.batch,
        a.workers
    );
    outln!("images/s       {:.0}", out.images_per_s);
    outln!("batch          {:.1} ms", out.batch_ms);
    if let Some(m) = out.peak_rss_mib {
        outln!("peak memory    {m:.0} MiB");
    }
    let p = &out.per_image_ms;
    outln!(
        "one image, one thread ({} images, mean {:.0} KB, {:.2} MP):",
        p.images,
        out.mean_file_kb,
        out.mean_megapixels
    );
    for (k, v) in [
        ("read", p.read),
        ("decode", p.decode),
        ("crop_resize", p.crop_resize),
        ("jitter_normalize", p.jitter_normalize),
    ] {
        outln!("  {:<17} {:>6.2} ms", k, v);
    }
    Ok(())
}
