//! Building latency lookup tables on this machine, and checking them against whole subnets.
//!
//! [`profile`] measures every distinct layer of a space at every resolution: for each
//! (kernel, expand) pair it builds the full-depth subnet whose blocks all use that pair (so every
//! block position appears), runs it step by step ([`ofa_supernet::Subnet::eval_steps`]) and times
//! each step on the real output of the previous one: warm-up runs, then `repeats` timed runs,
//! outliers beyond 3 MADs of the median rejected, `mean` / `std` of the rest stored under the
//! reference key. The table is saved after every subnet, and a rerun skips the keys it holds, so
//! an interrupted profile resumes.
//!
//! [`validate`] times random whole subnets end to end and compares with the table's sums (MAPE,
//! Spearman ρ), and fits `measured ≈ a · predicted + b` for the fixed per-network costs a per-layer
//! sum misses (framework dispatch, allocation), reporting the corrected MAPE too.

use std::collections::BTreeMap;
use std::path::Path;

use ofa_space::latency::layer_keys;
use ofa_space::{sample, ArchConfig, Choices};
use ofa_supernet::checkpoint::write_atomic;
use ofa_supernet::timing::time_ms;
use ofa_supernet::{Subnet, Supernet};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::latency::{Entry, LatencyTable, Meta, FORMAT};
use crate::metrics::spearman;
use crate::{Additive, PredictorError};

/// How to measure.
#[derive(Debug, Clone, PartialEq)]
pub struct ProfileOptions {
    /// Images per forward.
    pub batch: i64,
    /// Untimed runs before timing.
    pub warmup: usize,
    /// Timed runs per layer.
    pub repeats: usize,
    /// Device.
    pub device: Device,
    /// Resolutions (default: the space's).
    pub resolutions: Option<Vec<u32>>,
}

impl Default for ProfileOptions {
    fn default() -> ProfileOptions {
        ProfileOptions {
            batch: 1,
            warmup: 3,
            repeats: 20,
            device: Device::Cpu,
            resolutions: None,
        }
    }
}

/// Robust summary of timings (ms): count, mean and std of the samples within 3 MADs of the median.
pub fn summarise(mut ms: Vec<f64>) -> Entry {
    ms.sort_by(f64::total_cmp);
    let med = ms[ms.len() / 2];
    let mut dev: Vec<f64> = ms.iter().map(|v| (v - med).abs()).collect();
    dev.sort_by(f64::total_cmp);
    let mad = dev[dev.len() / 2].max(1e-9);
    let kept: Vec<f64> = ms
        .into_iter()
        .filter(|v| (v - med).abs() <= 3.0 * 1.4826 * mad)
        .collect();
    let n = kept.len() as f64;
    let mean = kept.iter().sum::<f64>() / n;
    let var = kept.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
    Entry {
        count: kept.len() as u64,
        mean,
        std: var.sqrt(),
    }
}

/// This machine's description for the table's metadata.
pub fn describe_device(device: Device) -> String {
    match device {
        Device::Cuda(i) => format!("CUDA device {i}"),
        _ => std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split(':').nth(1))
                    .map(|m| m.trim().to_string())
            })
            .map(|m| format!("CPU: {m}"))
            .unwrap_or_else(|| "CPU".into()),
    }
}

pub use ofa_space::latency::covering_archs;

/// Measure the layers of `net`'s space into the table at `out` (created or resumed), in libtorch.
/// `progress(done, total)` is called after each covering subnet.
pub fn profile(
    net: &Supernet,
    opts: &ProfileOptions,
    out: &Path,
    progress: impl FnMut(usize, usize),
) -> Result<LatencyTable, PredictorError> {
    let space = net.space();
    let threads = tch::get_num_threads() as u32;
    let meta = Meta {
        device: describe_device(opts.device),
        batch: Some(opts.batch as u32),
        threads: Some(threads),
        libraries: BTreeMap::from([
            ("libtorch".to_string(), "2.11.0".to_string()),
            ("ofa".to_string(), env!("CARGO_PKG_VERSION").to_string()),
        ]),
        date: Some(humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()),
        source: Some(format!("ofa profile, space {}", space.name)),
        correction: None,
        runtime: Some("libtorch".to_string()),
        fit: None,
    };
    let channels = i64::from(space.in_channels);
    let timer = |sub: &Subnet, arch: &ArchConfig, need: &[bool]| {
        let steps = sub.eval_steps();
        if steps.len() != need.len() {
            return Err(PredictorError::Model(format!(
                "{} steps for {} layer keys",
                steps.len(),
                need.len()
            )));
        }
        let r = i64::from(arch.r);
        let mut x = Tensor::randn([opts.batch, channels, r, r], (Kind::Float, opts.device));
        let mut out = Vec::with_capacity(steps.len());
        tch::no_grad(|| {
            for (step, need) in steps.iter().zip(need) {
                out.push(need.then(|| {
                    summarise(time_ms(opts.device, opts.warmup, opts.repeats, || step(&x)))
                }));
                x = step(&x);
            }
        });
        Ok(out)
    };
    profile_by(net, opts, out, meta, timer, progress)
}

/// [`profile`] with another timer: `time_steps(subnet, arch, need)` times the steps of
/// `Subnet::eval_steps` whose `need` is set (one per layer key, in execution order), e.g. in ONNX
/// Runtime on each step's own graph. `meta` describes the measurement; a table at `out` measured
/// otherwise is refused rather than mixed.
pub fn profile_by(
    net: &Supernet,
    opts: &ProfileOptions,
    out: &Path,
    meta: Meta,
    mut time_steps: impl FnMut(
        &Subnet,
        &ArchConfig,
        &[bool],
    ) -> Result<Vec<Option<Entry>>, PredictorError>,
    mut progress: impl FnMut(usize, usize),
) -> Result<LatencyTable, PredictorError> {
    let space = net.space();
    let mut table = if out.is_file() {
        let t = LatencyTable::load(out).map_err(|e| PredictorError::File {
            path: out.to_path_buf(),
            reason: e.to_string(),
        })?;
        if t.meta.batch != meta.batch
            || t.meta.threads != meta.threads
            || t.meta.device != meta.device
        {
            return Err(PredictorError::File {
                path: out.to_path_buf(),
                reason: format!(
                    "holds a table measured on {} with batch {:?} and {:?} threads; this run is {} with batch {:?} and {:?} threads (choose another --out)",
                    t.meta.device, t.meta.batch, t.meta.threads, meta.device, meta.batch, meta.threads
                ),
            });
        }
        t
    } else {
        LatencyTable {
            format: FORMAT.to_string(),
            meta,
            tables: BTreeMap::new(),
        }
    };
    let resolutions = opts
        .resolutions
        .clone()
        .unwrap_or_else(|| space.resolutions.clone());
    let jobs: Vec<ArchConfig> = resolutions
        .iter()
        .flat_map(|&r| covering_archs(space, r))
        .collect();
    for (done, arch) in jobs.iter().enumerate() {
        let keys = layer_keys(space, arch);
        let have = table.tables.entry(arch.r).or_default();
        if keys.iter().all(|(_, k)| have.contains_key(k)) {
            progress(done + 1, jobs.len());
            continue;
        }
        let sub = net.extract(arch)?;
        let need: Vec<bool> = keys.iter().map(|(_, k)| !have.contains_key(k)).collect();
        let entries = time_steps(&sub, arch, &need)?;
        if entries.len() != keys.len() {
            return Err(PredictorError::Model(format!(
                "{} timed steps for {} layer keys",
                entries.len(),
                keys.len()
            )));
        }
        for ((_, key), e) in keys.iter().zip(entries) {
            if let Some(e) = e {
                have.entry(key.clone()).or_insert(e);
            }
        }
        let text = ofa_schema::to_json_pretty(&table);
        write_atomic(out, text.as_bytes())?;
        progress(done + 1, jobs.len());
    }
    Ok(table)
}

/// How well a table predicts whole subnets on this machine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Validation {
    /// Subnets measured.
    pub n: usize,
    /// Mean absolute percentage error of the raw sum.
    pub mape: f64,
    /// Spearman ρ between predicted and measured.
    pub spearman_rho: f64,
    /// Fitted correction `measured ≈ a · predicted + b` (ms).
    pub fit_a: f64,
    /// Intercept of the correction.
    pub fit_b: f64,
    /// MAPE after the correction.
    pub mape_corrected: f64,
    /// (predicted, measured) per subnet, ms.
    pub pairs: Vec<(f64, f64)>,
}

/// Time `samples` random subnets of `net` end to end (batch, warm-up and repeats of `opts`) and
/// compare with `table`'s predictions.
pub fn validate(
    net: &Supernet,
    table: &LatencyTable,
    opts: &ProfileOptions,
    samples: usize,
    seed: u64,
    progress: impl FnMut(usize, usize),
) -> Result<Validation, PredictorError> {
    let space = net.space();
    let channels = i64::from(space.in_channels);
    let time_one = |sub: &Subnet, arch: &ArchConfig| {
        let r = i64::from(arch.r);
        let x = Tensor::randn([opts.batch, channels, r, r], (Kind::Float, opts.device));
        let ms = tch::no_grad(|| {
            time_ms(opts.device, opts.warmup, opts.repeats, || {
                sub.eval_steps()
                    .iter()
                    .fold(x.shallow_clone(), |h, s| s(&h))
            })
        });
        Ok(summarise(ms).mean)
    };
    validate_by(
        net,
        table,
        opts.resolutions.as_deref(),
        samples,
        seed,
        time_one,
        progress,
    )
}

/// [`validate`] with another timer of whole subnets (`time_one(subnet, arch)` → ms, e.g. in ONNX
/// Runtime on the subnet's export): the same random subnets for the same seed.
pub fn validate_by(
    net: &Supernet,
    table: &LatencyTable,
    resolutions: Option<&[u32]>,
    samples: usize,
    seed: u64,
    time_one: impl FnMut(&Subnet, &ArchConfig) -> Result<f64, PredictorError>,
    progress: impl FnMut(usize, usize),
) -> Result<Validation, PredictorError> {
    let space = net.space();
    let lat = table.additive(space);
    let mut choices = Choices::all(space);
    choices.r.retain(|r| lat.resolutions().contains(r));
    if let Some(rs) = resolutions {
        choices.r.retain(|r| rs.contains(r));
    }
    if choices.r.is_empty() || samples < 3 {
        return Err(PredictorError::Data(
            "need at least 3 samples and a resolution the table covers".into(),
        ));
    }
    validate_draws(net, &lat, &choices, samples, seed, time_one, progress)
}

fn validate_draws(
    net: &Supernet,
    lat: &Additive,
    choices: &Choices,
    samples: usize,
    seed: u64,
    mut time_one: impl FnMut(&Subnet, &ArchConfig) -> Result<f64, PredictorError>,
    mut progress: impl FnMut(usize, usize),
) -> Result<Validation, PredictorError> {
    let space = net.space();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut pairs = Vec::with_capacity(samples);
    for i in 0..samples {
        let arch = sample(space, choices, &mut rng);
        let predicted = lat
            .predict(&arch)
            .map_err(|e| PredictorError::Data(e.to_string()))?;
        let sub = net.extract(&arch)?;
        pairs.push((predicted, time_one(&sub, &arch)?));
        progress(i + 1, samples);
    }
    Ok(Validation::of(pairs))
}

impl Validation {
    /// The figures of (predicted, measured) pairs, ms.
    pub fn of(pairs: Vec<(f64, f64)>) -> Validation {
        let (p, m): (Vec<f64>, Vec<f64>) = pairs.iter().copied().unzip();
        let mape = |f: &dyn Fn(f64) -> f64| {
            p.iter()
                .zip(&m)
                .map(|(p, m)| ((f(*p) - m) / m).abs())
                .sum::<f64>()
                / p.len() as f64
                * 100.0
        };
        let n = p.len() as f64;
        let (mp, mm) = (p.iter().sum::<f64>() / n, m.iter().sum::<f64>() / n);
        let sxy: f64 = p.iter().zip(&m).map(|(a, b)| (a - mp) * (b - mm)).sum();
        let sxx: f64 = p.iter().map(|a| (a - mp) * (a - mp)).sum();
        let a = if sxx > 0.0 { sxy / sxx } else { 1.0 };
        let b = mm - a * mp;
        Validation {
            n: pairs.len(),
            mape: mape(&|v| v),
            spearman_rho: spearman(&p, &m),
            fit_a: a,
            fit_b: b,
            mape_corrected: mape(&|v| a * v + b),
            pairs,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_rejects_outliers() {
        let e = summarise(vec![1.0, 1.1, 0.9, 1.0, 1.05, 0.95, 50.0]);
        assert_eq!(e.count, 6);
        assert!((e.mean - 1.0).abs() < 0.01, "{e:?}");
    }
}
