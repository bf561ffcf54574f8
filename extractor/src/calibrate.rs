//! Calibration: a latency table of *this* machine, fitted from a few probe subnets timed here in
//! libtorch through the one measurement path (`ofa_package::measure::latency`), at the calling
//! thread's libtorch thread count. `ofa serve --calibrate` and `ofa hardware calibrate` use it.

use std::time::Instant;

use ofa_package::Package;
use ofa_predictors::hardware::{
    choose_probes, fit, to_table, Features, FitReport, Measurement, ModelChoice, ProbeSelection,
};
use ofa_predictors::latency::Meta;
use ofa_predictors::LatencyTable;
use ofa_space::{ArchConfig, Choices};

use crate::ExtractError;

/// How to calibrate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CalibrateOptions {
    /// Probes timed.
    pub probes: usize,
    /// Seed of their selection.
    pub seed: u64,
    /// Untimed runs per probe.
    pub warmup: usize,
    /// Timed runs per probe and pass (the median is kept).
    pub repeats: usize,
    /// Passes over the probes, each in another order; a probe's latency is its lowest median, so
    /// a noisy moment of the machine (a neighbour on a VM, a frequency dip) that slows one pass
    /// does not reach the fit. On this VM one pass of a probe set once ran 1.5× slow throughout.
    pub rounds: usize,
}

impl Default for CalibrateOptions {
    fn default() -> CalibrateOptions {
        CalibrateOptions {
            probes: 20,
            seed: 0,
            warmup: 5,
            repeats: 30,
            rounds: 3,
        }
    }
}

/// A calibrated hardware.
#[derive(Debug, Clone, PartialEq)]
pub struct Calibration {
    /// The table (the fit report is in its `meta.fit`).
    pub table: LatencyTable,
    /// The fit.
    pub report: FitReport,
    /// The probes and their times.
    pub measurements: Vec<Measurement>,
    /// Wall time of the whole calibration, seconds.
    pub seconds: f64,
}

/// Time `o.probes` probes of `pkg` here and fit a table, over `base` (a table of the package,
/// whose layer times give the model's base features) or MACs and counts alone.
pub fn calibrate(
    pkg: &Package,
    base: Option<&LatencyTable>,
    o: &CalibrateOptions,
) -> Result<Calibration, ExtractError> {
    let t0 = Instant::now();
    let space = pkg.space();
    let features = Features::new(space, base);
    let archs = choose_probes(
        &features,
        &Choices::all(space),
        o.probes,
        o.seed,
        ProbeSelection::Spread,
    )?;
    let times = time_archs(pkg, &archs, o)?;
    let ms: Vec<Measurement> = archs
        .into_iter()
        .zip(times)
        .enumerate()
        .map(|(i, (arch, latency_ms))| Measurement {
            id: format!("p{i:03}"),
            arch,
            latency_ms,
        })
        .collect();
    let report = fit(&features, &ms, ModelChoice::Auto)?;
    let threads = tch::get_num_threads().max(1) as u32;
    let meta = Meta {
        device: ofa_predictors::profile::describe_device(tch::Device::Cpu),
        batch: Some(1),
        threads: Some(threads),
        libraries: [
            ("libtorch".to_string(), "2.11.0".to_string()),
            ("ofa".to_string(), env!("CARGO_PKG_VERSION").to_string()),
        ]
        .into(),
        date: Some(humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()),
        source: Some(format!(
            "calibrated: {} probes timed here, model `{}`, base {}",
            ms.len(),
            report.model.name,
            base.map_or("none", |b| b.meta.device.as_str())
        )),
        correction: None,
        runtime: Some("libtorch".to_string()),
        fit: None,
    };
    let table = to_table(&features, &report, meta)?;
    Ok(Calibration {
        table,
        report,
        measurements: ms,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// Where subnets are timed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    /// libtorch, through `ofa_package::measure::latency` (the one measurement path).
    Libtorch,
    /// ONNX Runtime on the subnet's exported ONNX graph (`ofa_onnx::runtime`), on the CPU
    /// execution provider at the calling thread's libtorch thread count.
    OnnxRuntime,
}

/// Batch-1 latency (ms) of each arch of `pkg` here, in libtorch: see [`time_archs_in`].
pub fn time_archs(
    pkg: &Package,
    archs: &[ArchConfig],
    o: &CalibrateOptions,
) -> Result<Vec<f64>, ExtractError> {
    time_archs_in(pkg, archs, o, Runtime::Libtorch)
}

/// Batch-1 latency (ms) of each arch of `pkg` here, in `runtime`: per pass the median of
/// `o.repeats` timed runs after `o.warmup`, and the lowest over `o.rounds` passes. Pass `k` starts
/// `k · n / rounds` probes further on and odd passes run backwards, so no probe is always timed at
/// the same moment of a pass.
pub fn time_archs_in(
    pkg: &Package,
    archs: &[ArchConfig],
    o: &CalibrateOptions,
    runtime: Runtime,
) -> Result<Vec<f64>, ExtractError> {
    let subs = archs
        .iter()
        .map(|a| pkg.net().extract(a))
        .collect::<Result<Vec<_>, _>>()?;
    let mut sessions = match runtime {
        Runtime::Libtorch => Vec::new(),
        Runtime::OnnxRuntime => {
            let threads = tch::get_num_threads().max(1) as usize;
            let channels = i64::from(pkg.space().in_channels);
            subs.iter()
                .zip(archs)
                .map(|(sub, a)| {
                    let bytes = ofa_onnx::export(sub, &ofa_onnx::ExportOptions::new(a.r))?;
                    let r = i64::from(a.r);
                    Ok(ofa_onnx::runtime::Timed::new(
                        &bytes,
                        &[1, channels, r, r],
                        threads,
                    )?)
                })
                .collect::<Result<Vec<_>, ExtractError>>()?
        }
    };
    let n = archs.len();
    let rounds = o.rounds.max(1);
    let mut best = vec![f64::INFINITY; n];
    for round in 0..rounds {
        let mut order: Vec<usize> = (0..n)
            .map(|i| (i + round * (n / rounds).max(1)) % n.max(1))
            .collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for i in order {
            let ms = match runtime {
                Runtime::Libtorch => {
                    ofa_package::measure::latency(&subs[i], archs[i].r, o.warmup, o.repeats.max(1))?
                        .median_ms
                }
                Runtime::OnnxRuntime => sessions[i].median_ms(o.warmup, o.repeats)?,
            };
            best[i] = best[i].min(ms);
        }
    }
    Ok(best)
}
