//! `ofa bench hardware`: onboarding a device, timed. Probes exported as ONNX (what a device
//! needs), a calibration here in libtorch (what `ofa serve --calibrate` does before it is ready),
//! the fit alone, and the calibrated table checked on held-out random subnets timed here the same
//! way (interleaved with nothing else, right after the calibration).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use ofa_extractor::calibrate::{calibrate, time_archs, CalibrateOptions};
use ofa_predictors::hardware::{
    choose_probes, fit, ErrorStats, Features, ModelChoice, ProbeSelection,
};
use ofa_predictors::LatencyTable;
use ofa_schema::bench::{BenchReport, HardwareReport};
use ofa_space::Choices;

/// Arguments of `ofa bench hardware`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The supernet package.
    #[arg(long, default_value = "checkpoints/fashion-mnist")]
    package: PathBuf,
    /// Probes of the calibration.
    #[arg(long, default_value_t = 20)]
    probes: usize,
    /// Held-out random subnets timed to check it.
    #[arg(long, default_value_t = 50)]
    heldout: usize,
    /// One JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

/// Run the benchmark.
pub fn run(a: Args) -> anyhow::Result<()> {
    anyhow::ensure!(
        a.probes >= 3 && a.heldout >= 3,
        "--probes and --heldout must be at least 3"
    );
    let pkg = ofa_package::Package::open(&a.package, tch::Device::Cpu)
        .with_context(|| format!("{}: not a supernet package", a.package.display()))?;
    let space = pkg.space().clone();
    let base = match ofa_package::latency_tables(&a.package).first() {
        Some((_, p)) => Some(LatencyTable::load(p)?),
        None => None,
    };
    let features = Features::new(&space, base.as_ref());

    // the probes a device gets: selection and ONNX export, in memory
    let t = Instant::now();
    let archs = choose_probes(
        &features,
        &Choices::all(&space),
        a.probes,
        0,
        ProbeSelection::Spread,
    )?;
    let mut onnx_bytes = 0usize;
    for arch in &archs {
        let sub = pkg.net().extract(arch)?;
        onnx_bytes += ofa_onnx::export(&sub, &ofa_onnx::ExportOptions::new(arch.r))?.len();
    }
    let probes_export_s = t.elapsed().as_secs_f64();

    // the calibration `ofa serve --calibrate` runs before it is ready
    let o = CalibrateOptions {
        probes: a.probes,
        ..CalibrateOptions::default()
    };
    let cal = calibrate(&pkg, base.as_ref(), &o)?;

    // the fit alone, on the calibration's own measurements
    let t = Instant::now();
    fit(&features, &cal.measurements, ModelChoice::Auto)?;
    let fit_s = t.elapsed().as_secs_f64();

    // held-out random subnets, timed the same way
    let held = choose_probes(
        &features,
        &Choices::all(&space),
        a.heldout,
        99,
        ProbeSelection::Random,
    )?;
    let measured = time_archs(&pkg, &held, &o)?;
    let lat = cal.table.additive(&space);
    let predicted = held
        .iter()
        .map(|x| lat.predict(x))
        .collect::<Result<Vec<_>, _>>()?;
    let stats = ErrorStats::of(&predicted, &measured);
    let out = HardwareReport {
        package: a.package.display().to_string(),
        runtime: "libtorch".into(),
        threads: tch::get_num_threads(),
        probes: a.probes,
        probes_export_s,
        probes_onnx_bytes: onnx_bytes,
        calibrate_s: cal.seconds,
        fit_s,
        model: cal.report.model.name.clone(),
        loo_mape_pct: cal.report.loo.mape_pct,
        heldout: a.heldout,
        heldout_mape_pct: stats.mape_pct,
        within_10pct: stats.within_10pct,
        spearman: stats.spearman,
    };
    if a.json {
        super::bench::print_json(BenchReport::Hardware(out));
        return Ok(());
    }
    outln!(
        "onboarding {} on this machine (libtorch, {} threads), {} probes",
        a.package.display(),
        tch::get_num_threads(),
        a.probes
    );
    outln!(
        "  probes selected and exported as ONNX  {probes_export_s:>8.3} s ({} KB)",
        onnx_bytes / 1024
    );
    outln!(
        "  calibration (time probes + fit)       {:>8.3} s",
        cal.seconds
    );
    outln!("  fit alone                             {fit_s:>8.3} s");
    outln!(
        "  model `{}`; leave-one-out {}",
        cal.report.model.name,
        cal.report.loo
    );
    outln!("  {} held-out random subnets: {stats}", a.heldout);
    Ok(())
}
