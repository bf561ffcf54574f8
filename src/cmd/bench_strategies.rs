//! `ofa bench strategies`: the search strategies (the reference's evolution, regularized
//! evolution, random search) at equal evaluation budgets, several seeds each, on the Note10
//! problem (the reference's pretrained predictor and Note10 tables, from `../shared`) and on a
//! package: mean and worst predicted top-1, regret against the best any strategy found, wall time.

use std::path::PathBuf;

use ofa_extractor::{evolve, Bound, EvolutionConfig, Problem, SearchResult, Specialiser};
use ofa_predictors::{AccuracyPredictor, LatencyTable};
use ofa_schema::bench::{BenchReport, StrategiesReport, StrategyRow};
use ofa_search::{Constraints, Strategy};
use ofa_space::{Choices, SearchSpace};

/// Arguments of `ofa bench strategies`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The package searched besides Note10.
    #[arg(long, default_value = "checkpoints/fashion-mnist")]
    package: PathBuf,
    /// Its hardware (latency table).
    #[arg(long, default_value = "cpu-xeon-emr-2t")]
    hardware: String,
    /// Its latency bounds, ms.
    #[arg(long, value_delimiter = ',', default_value = "3,4.5,6.5")]
    package_budgets: Vec<f64>,
    /// The reference data (`tutorial_acc_predictor.safetensors`, `note10-lut/`).
    #[arg(long, default_value = "../shared/reference-data")]
    reference_data: PathBuf,
    /// Note10 latency bounds, ms.
    #[arg(long, value_delimiter = ',', default_value = "15,25,40")]
    note10_budgets: Vec<f64>,
    /// Accuracy predictions allowed per search.
    #[arg(long, value_delimiter = ',', default_value = "1000,5000,50000")]
    evaluations: Vec<usize>,
    /// Seeds per cell.
    #[arg(long, default_value_t = 10)]
    seeds: usize,
    /// One JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

/// The searches of one problem: `search(cfg, latency bound)`.
type Searcher<'a> = Box<dyn Fn(&EvolutionConfig, f64) -> anyhow::Result<SearchResult> + 'a>;

fn cells(
    name: &str,
    search: &Searcher<'_>,
    budgets: &[f64],
    a: &Args,
    rows: &mut Vec<StrategyRow>,
) -> anyhow::Result<()> {
    for &latency in budgets {
        // (evaluations, strategy, per-seed top-1 %, mean seconds)
        let mut runs: Vec<(usize, Strategy, Vec<f64>, f64)> = Vec::new();
        for &evaluations in &a.evaluations {
            for strategy in Strategy::ALL {
                let mut top1 = Vec::with_capacity(a.seeds);
                let mut secs = 0.0;
                for seed in 0..a.seeds as u64 {
                    let cfg = EvolutionConfig {
                        seed,
                        strategy,
                        budget: Some(evaluations),
                        // evolution's generations end at the budget before this
                        generations: ofa_search::MAX_GENERATIONS,
                        ..EvolutionConfig::default()
                    };
                    let r = search(&cfg, latency)?;
                    anyhow::ensure!(
                        r.best
                            .metrics
                            .get("latency_ms")
                            .is_some_and(|l| *l <= latency),
                        "{name}: a {strategy} search broke its {latency} ms bound"
                    );
                    top1.push(r.best.accuracy * 100.0);
                    secs += r.seconds;
                }
                runs.push((evaluations, strategy, top1, secs / a.seeds as f64));
            }
        }
        let best = runs
            .iter()
            .flat_map(|r| r.2.iter().copied())
            .fold(f64::NEG_INFINITY, f64::max);
        for (evaluations, strategy, top1, wall) in runs {
            let n = top1.len() as f64;
            let worst = top1.iter().copied().fold(f64::INFINITY, f64::min);
            let mean = top1.iter().sum::<f64>() / n;
            rows.push(StrategyRow {
                problem: name.to_string(),
                latency_ms: latency,
                evaluations,
                strategy: strategy.name().to_string(),
                mean_top1: mean,
                worst_top1: worst,
                mean_regret: best - mean,
                worst_regret: best - worst,
                mean_wall_s: wall,
            });
        }
    }
    Ok(())
}

/// Run the benchmark.
pub fn run(a: Args) -> anyhow::Result<()> {
    anyhow::ensure!(
        a.seeds > 0 && !a.evaluations.is_empty() && a.evaluations.iter().all(|&e| e > 0),
        "seeds and evaluation budgets must be positive"
    );
    let mut rows = Vec::new();
    let mut skipped = Vec::new();
    let root = &a.reference_data;
    let predictor_file = root.join("tutorial_acc_predictor.safetensors");
    if predictor_file.is_file() && root.join("note10-lut").is_dir() {
        let predictor = AccuracyPredictor::load(&predictor_file, None)?;
        let table = LatencyTable::import_reference_dir(&root.join("note10-lut"), "Note10")?;
        let mut space = SearchSpace::preset("ofa-mbv3-w1.2")?;
        space.resolutions = vec![160, 176, 192, 208, 224];
        predictor.check_space(&space, &space.resolutions)?;
        let latency = table.additive(&space);
        let search: Searcher<'_> = Box::new(|cfg, bound| {
            let problem = Problem {
                space: &space,
                choices: Choices::all(&space),
                accuracy: &predictor,
                bounds: vec![Bound {
                    predictor: &latency,
                    max: bound,
                }],
                report: vec![],
            };
            Ok(evolve(&problem, cfg)?)
        });
        cells("note10", &search, &a.note10_budgets, &a, &mut rows)?;
    } else {
        skipped.push(format!(
            "note10: {} has no tutorial_acc_predictor.safetensors and note10-lut/",
            root.display()
        ));
    }
    let spec = Specialiser::from_package(&a.package)?;
    let name = ofa_package::package_name(&a.package);
    let search: Searcher<'_> = Box::new(|cfg, bound| {
        let c = Constraints {
            latency_ms: Some(bound),
            ..Constraints::default()
        };
        Ok(spec.search(&c, Some(&a.hardware), cfg, None)?)
    });
    cells(&name, &search, &a.package_budgets, &a, &mut rows)?;
    let report = StrategiesReport {
        seeds: a.seeds,
        threads: rayon::current_num_threads(),
        rows,
        skipped,
    };
    if a.json {
        super::bench::print_json(BenchReport::Strategies(report));
        return Ok(());
    }
    outln!(
        "search strategies, {} seeds per cell, predicted top-1 % ({} threads)",
        report.seeds,
        report.threads
    );
    outln!(
        "{:<14} {:>8} {:>8} {:<10} {:>8} {:>8} {:>9} {:>9} {:>8}",
        "problem",
        "bound ms",
        "evals",
        "strategy",
        "mean",
        "worst",
        "regret",
        "worst rg",
        "wall s"
    );
    for r in &report.rows {
        outln!(
            "{:<14} {:>8} {:>8} {:<10} {:>8.3} {:>8.3} {:>9.3} {:>9.3} {:>8.3}",
            r.problem,
            r.latency_ms,
            r.evaluations,
            r.strategy,
            r.mean_top1,
            r.worst_top1,
            r.mean_regret,
            r.worst_regret,
            r.mean_wall_s
        );
    }
    for s in &report.skipped {
        outln!("skipped: {s}");
    }
    Ok(())
}
