//! `ofa bench`: performance figures as a readable table, or one JSON object with `--json`.

use std::time::Instant;

use ofa_space::{sample, ArchConfig, Choices};
use ofa_supernet::{Mode, Supernet};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};
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
fn stats(mut ms: Vec<f64>) -> Value {
    ms.sort_by(f64::total_cmp);
    let q = |p: f64| ms[((ms.len() - 1) as f64 * p).round() as usize];
    json!({"median_ms": q(0.5), "p10_ms": q(0.1), "p90_ms": q(0.9), "min_ms": ms[0],
           "max_ms": ms[ms.len() - 1], "n": ms.len()})
}

fn time_ms(f: impl FnOnce()) -> f64 {
    let t = Instant::now();
    f();
    t.elapsed().as_secs_f64() * 1e3
}

/// Run `ofa bench`.
pub fn run(a: Args) -> anyhow::Result<()> {
    match a.what {
        What::Extract(e) => extract(e),
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
    let mut rows = serde_json::Map::new();
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
        rows.insert(kind.to_string(), stats(ms));
    }
    let overall = stats(all);
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
    let fwd = tch::no_grad(|| -> anyhow::Result<Value> {
        let _warm = sub.forward(&x, Mode::Eval)?;
        let mut ms = Vec::new();
        for _ in 0..a.forward_repeats {
            let mut r = Ok(());
            ms.push(time_ms(|| r = sub.forward(&x, Mode::Eval).map(drop)));
            r?;
        }
        Ok(stats(ms))
    })?;
    let out = json!({
        "benchmark": "extract",
        "space": space.name,
        "threads": tch::get_num_threads(),
        "median_ms": overall["median_ms"],
        "spread": {"p10_ms": overall["p10_ms"], "p90_ms": overall["p90_ms"]},
        "by_arch": rows,
        "forward_largest": {"resolution": a.resolution, "batch": a.batch, "mode": "eval",
                            "median_ms": fwd["median_ms"], "p10_ms": fwd["p10_ms"], "p90_ms": fwd["p90_ms"],
                            "images_per_s": a.batch as f64 / (fwd["median_ms"].as_f64().unwrap_or(1.0) / 1e3)},
    });
    if a.json {
        println!("{}", serde_json::to_string(&out)?);
        return Ok(());
    }
    println!(
        "extraction, space {} (random weights, {} threads)",
        space.name,
        tch::get_num_threads()
    );
    println!(
        "{:<10} {:>10} {:>10} {:>10} {:>6}",
        "arch", "median ms", "p10 ms", "p90 ms", "n"
    );
    for kind in ["largest", "smallest", "random"] {
        let r = &out["by_arch"][kind];
        println!(
            "{:<10} {:>10.3} {:>10.3} {:>10.3} {:>6}",
            kind,
            r["median_ms"].as_f64().unwrap_or(0.0),
            r["p10_ms"].as_f64().unwrap_or(0.0),
            r["p90_ms"].as_f64().unwrap_or(0.0),
            r["n"].as_u64().unwrap_or(0)
        );
    }
    println!(
        "{:<10} {:>10.3}",
        "all",
        out["median_ms"].as_f64().unwrap_or(0.0)
    );
    let f = &out["forward_largest"];
    println!(
        "eval forward, largest subnet, r={} batch {}: median {:.1} ms ({:.0} images/s)",
        a.resolution,
        a.batch,
        f["median_ms"].as_f64().unwrap_or(0.0),
        f["images_per_s"].as_f64().unwrap_or(0.0)
    );
    Ok(())
}
