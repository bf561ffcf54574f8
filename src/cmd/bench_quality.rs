//! `ofa bench quality`: how good the search's picks are on a package, measured. For each latency
//! budget, the subnet the search picks against the best measured subnet of the predictor's
//! dataset that fits the same budget (by the same latency table), both scored on the held-out
//! split the dataset was measured on and on the test split, and timed here; plus the noise of a
//! measurement (the same subnets recalibrated with another augmentation seed).

use std::path::PathBuf;

use anyhow::{bail, Context};
use ofa_extractor::pipeline::{choose, cut, Target};
use ofa_extractor::{Constraints, EvolutionConfig, Predicted, Specialiser};
use ofa_package::measure::{latency, top1, Recalibration};
use ofa_package::{Package, Split};
use ofa_schema::bench::{BenchReport, Noise, QualityReport, QualityRow, Scored};
use ofa_space::ArchConfig;

/// Arguments of `ofa bench quality`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The package (accuracy predictor, latency tables, calibration images).
    #[arg(long)]
    package: PathBuf,
    /// The measured subnets the predictor was fitted on (`ofa predictor dataset`).
    #[arg(long)]
    dataset: PathBuf,
    /// Latency budgets, ms (comma-separated).
    #[arg(long, value_delimiter = ',', required = true)]
    budgets: Vec<f64>,
    /// Hardware: the name of a latency table of the package (default: its only one).
    #[arg(long)]
    hardware: Option<String>,
    /// Dataset folder (default: the one named in the package's card).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Held-out images scored (default: as many as the dataset's records were scored on).
    #[arg(long)]
    eval_images: Option<usize>,
    /// Dataset subnets measured twice for the noise figure (0: skip).
    #[arg(long, default_value_t = 20)]
    noise_samples: usize,
    /// Timed batch-1 runs per subnet.
    #[arg(long, default_value_t = 30)]
    latency_repeats: usize,
    /// Search seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// One JSON object on stdout.
    #[arg(long)]
    json: bool,
}

struct Scorer<'a> {
    pkg: &'a Package,
    spec: &'a Specialiser,
    hardware: &'a str,
    val: &'a Split,
    test: &'a Split,
    val_images: usize,
    repeats: usize,
}

impl Scorer<'_> {
    fn val_top1(&self, arch: &ArchConfig, seed: u64) -> anyhow::Result<f64> {
        let recal = Recalibration {
            seed,
            ..Recalibration::default()
        };
        let sub = cut(self.pkg, arch, &recal)?;
        let aug = &self.pkg.augment;
        Ok(100.0 * top1(&sub, self.val, arch.r, aug, recal.batch, self.val_images)?)
    }

    fn score(&self, arch: &ArchConfig) -> anyhow::Result<Scored> {
        let recal = Recalibration::default();
        let sub = cut(self.pkg, arch, &recal)?;
        let aug = &self.pkg.augment;
        let p = self.spec.score(arch, Some(self.hardware))?;
        let pred = Predicted::of(&p);
        Ok(Scored {
            arch: arch.clone(),
            macs_m: pred.macs_m,
            predicted_top1: pred.top1,
            val_top1: 100.0 * top1(&sub, self.val, arch.r, aug, recal.batch, self.val_images)?,
            test_top1: 100.0 * top1(&sub, self.test, arch.r, aug, recal.batch, usize::MAX)?,
            predicted_latency_ms: pred.latency_ms.unwrap_or(f64::NAN),
            measured_latency_ms: latency(&sub, arch.r, 5, self.repeats)?.median_ms,
        })
    }
}

/// Run `ofa bench quality`.
pub fn run(a: Args) -> anyhow::Result<()> {
    let spec = Specialiser::from_package(&a.package)?;
    let hardware = match &a.hardware {
        Some(h) => h.clone(),
        None => match spec.hardware_names().as_slice() {
            [one] => one.clone(),
            names => bail!(
                "the package has {} latency tables ({}): name one with --hardware",
                names.len(),
                names.join(", ")
            ),
        },
    };
    spec.hardware(&hardware)?;
    let records = ofa_predictors::dataset::read(&a.dataset)?;
    let pkg = Package::open(&a.package, tch::Device::Cpu)?;
    let splits = ofa_trainer::package::splits(&pkg, a.data.as_deref())?;
    let test = splits
        .test
        .context("the package's dataset has no test split")?
        .load()?;
    let val_images = a
        .eval_images
        .or_else(|| records.iter().map(|r| r.eval_images).max())
        .filter(|&n| n > 0)
        .unwrap_or(usize::MAX)
        .min(splits.val.len());
    let sc = Scorer {
        pkg: &pkg,
        spec: &spec,
        hardware: &hardware,
        val: &splits.val,
        test: &test,
        val_images,
        repeats: a.latency_repeats,
    };
    // Predicted latency of every record, by the table the search uses.
    let mut lat = Vec::with_capacity(records.len());
    for r in &records {
        let p = spec.score(&r.arch, Some(&hardware))?;
        lat.push(Predicted::of(&p).latency_ms.unwrap_or(f64::NAN));
    }
    let mut rows = Vec::new();
    for &b in &a.budgets {
        let target = Target::Search {
            constraints: Constraints {
                latency_ms: Some(b),
                ..Constraints::default()
            },
            search: EvolutionConfig {
                seed: a.seed,
                ..EvolutionConfig::default()
            },
        };
        let choice = choose(Some(&spec), pkg.space(), &target, Some(&hardware), None)
            .with_context(|| format!("budget {b} ms"))?;
        let search = sc.score(&choice.arch)?;
        let fitting: Vec<usize> = (0..records.len()).filter(|&i| lat[i] <= b).collect();
        let best = fitting
            .iter()
            .copied()
            .max_by(|&i, &j| records[i].top1.total_cmp(&records[j].top1));
        let dataset_best = best.map(|i| sc.score(&records[i].arch)).transpose()?;
        rows.push(QualityRow {
            budget_ms: b,
            val_gap: dataset_best.as_ref().map(|d| search.val_top1 - d.val_top1),
            test_gap: dataset_best
                .as_ref()
                .map(|d| search.test_top1 - d.test_top1),
            search,
            dataset_best,
            dataset_fitting: fitting.len(),
        });
    }
    let noise = if a.noise_samples > 0 && !records.is_empty() {
        let n = a.noise_samples.min(records.len());
        let step = records.len() as f64 / n as f64;
        let mut diffs = Vec::with_capacity(n);
        for k in 0..n {
            let arch = &records[(k as f64 * step) as usize].arch;
            diffs.push(sc.val_top1(arch, 0)? - sc.val_top1(arch, 1)?);
        }
        let mean = diffs.iter().sum::<f64>() / n as f64;
        let var = diffs.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / (n.max(2) - 1) as f64;
        let p = records.iter().map(|r| r.top1).sum::<f64>() / records.len() as f64 / 100.0;
        Some(Noise {
            samples: n,
            sd_points: var.sqrt() / 2f64.sqrt(),
            max_diff_points: diffs.iter().fold(0.0f64, |m, d| m.max(d.abs())),
            binomial_se_points: 100.0 * (p * (1.0 - p) / val_images as f64).sqrt(),
            images: val_images,
        })
    } else {
        None
    };
    let out = QualityReport {
        // the folder's name: the file is shipped inside the package and must not name this machine
        package: ofa_package::package_name(&a.package),
        hardware,
        dataset_records: records.len(),
        val_images,
        test_images: test.len(),
        rows,
        noise,
    };
    if a.json {
        super::bench::print_json(BenchReport::Quality(out));
        return Ok(());
    }
    print_table(&out);
    Ok(())
}

fn print_table(o: &QualityReport) {
    outln!(
        "search quality on {} ({}): the search's pick against the dataset's best measured subnet \
         within the budget ({} records); top-1 on {} held-out and {} test images; latency here, batch 1",
        o.package, o.hardware, o.dataset_records, o.val_images, o.test_images
    );
    outln!(
        "{:>7}  {:>6} {:>6} {:>6} {:>6} {:>6} {:>6}  {:>5} {:>6} {:>6} {:>6} {:>6} {:>6}  {:>6} {:>6}",
        "budget", "MACs", "pred", "val", "test", "lat p", "lat m", "fit", "MACs", "val", "test",
        "lat p", "lat m", "Δval", "Δtest"
    );
    outln!(
        "{:>7}  {:-^41}  {:-^40}  {:-^13}",
        "ms",
        " search ",
        " dataset best ",
        " gap "
    );
    for r in &o.rows {
        let s = &r.search;
        out!(
            "{:>7.2}  {:>6.2} {:>6.2} {:>6.2} {:>6.2} {:>6.3} {:>6.3}  {:>5}",
            r.budget_ms,
            s.macs_m,
            s.predicted_top1,
            s.val_top1,
            s.test_top1,
            s.predicted_latency_ms,
            s.measured_latency_ms,
            r.dataset_fitting
        );
        match &r.dataset_best {
            Some(d) => outln!(
                " {:>6.2} {:>6.2} {:>6.2} {:>6.3} {:>6.3}  {:>+6.2} {:>+6.2}",
                d.macs_m,
                d.val_top1,
                d.test_top1,
                d.predicted_latency_ms,
                d.measured_latency_ms,
                r.val_gap.unwrap_or(f64::NAN),
                r.test_gap.unwrap_or(f64::NAN)
            ),
            None => outln!("  (no dataset subnet fits)"),
        }
    }
    if let Some(n) = &o.noise {
        outln!(
            "measurement noise: {} subnets recalibrated with two augmentation seeds: sd {:.3} points \
             per measurement (largest difference {:.2}); binomial standard error on {} images {:.3} points",
            n.samples, n.sd_points, n.max_diff_points, n.images, n.binomial_se_points
        );
    }
}
