//! `ofa bench search`: the reference's default search (population 100, 500 generations) with an
//! MLP of the reference's size and a MACs constraint, on the w1.2 space at 160–224.

use std::path::PathBuf;

use ofa_extractor::{evolve, Bound, EvolutionConfig, Problem};
use ofa_predictors::{AccuracyPredictor, Additive};
use ofa_schema::bench::{BenchReport, SearchReport};
use ofa_space::{Choices, Encoding, SearchSpace};

use super::bench_predict::random_predictor;

/// Arguments of `ofa bench search`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// MACs bound, millions.
    #[arg(long, default_value_t = 300.0)]
    max_macs_m: f64,
    /// Runs (different seeds); the median is reported.
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// A predictor for the w1.2 tutorial encoding (default: random weights of the reference's size).
    #[arg(long)]
    predictor: Option<PathBuf>,
    /// One JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

/// Run the benchmark.
pub fn run(a: Args) -> anyhow::Result<()> {
    anyhow::ensure!(a.repeats > 0, "repeats must be positive");
    let predictor = match &a.predictor {
        Some(p) => AccuracyPredictor::load(p, Some(Encoding::tutorial()))?,
        None => random_predictor()?,
    };
    let mut space = SearchSpace::preset("ofa-mbv3-w1.2")?;
    space.resolutions = vec![160, 176, 192, 208, 224];
    let macs = Additive::macs(&space);
    let problem = Problem {
        space: &space,
        choices: Choices::all(&space),
        accuracy: &predictor,
        bounds: vec![Bound {
            predictor: &macs,
            max: a.max_macs_m,
        }],
        report: vec![],
    };
    let mut runs = Vec::new();
    for seed in 0..a.repeats as u64 {
        let cfg = EvolutionConfig {
            seed,
            ..EvolutionConfig::default()
        };
        runs.push(evolve(&problem, &cfg)?);
    }
    runs.sort_by(|x, y| x.seconds.total_cmp(&y.seconds));
    let m = &runs[runs.len() / 2];
    let out = SearchReport {
        population: 100,
        generations: 500,
        max_macs_m: a.max_macs_m,
        threads: rayon::current_num_threads(),
        wall_s: m.seconds,
        predict_s: m.predict_seconds,
        evaluated: m.evaluated,
        draws: m.draws,
        runs_s: runs.iter().map(|r| r.seconds).collect(),
        reference_wall_s: 47.8,
    };
    if a.json {
        super::bench::print_json(BenchReport::Search(out));
        return Ok(());
    }
    outln!(
        "evolutionary search, population 100 × 500 generations, MACs ≤ {} M, ofa-mbv3-w1.2 at 160–224 ({} threads)",
        a.max_macs_m,
        rayon::current_num_threads()
    );
    outln!(
        "  wall time (median of {})   {:>8.3} s   (reference: 47.8 s)",
        a.repeats,
        m.seconds
    );
    outln!("  of which accuracy predictor {:>8.3} s", m.predict_seconds);
    outln!("  distinct archs evaluated    {:>8}", m.evaluated);
    outln!("  children drawn              {:>8}", m.draws);
    Ok(())
}
