//! `ofa bench predict`: accuracy-predictor throughput (encode + batched predict) and the
//! efficiency predictors' throughput, on random archs of the reference's w1.2 space.

use std::path::PathBuf;
use std::time::Instant;

use ofa_predictors::{AccuracyPredictor, Additive, Efficiency};
use ofa_schema::bench::{BenchReport, PredictReference, PredictReport};
use ofa_space::{sample, ArchConfig, Choices, Encoding, SearchSpace};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tch::Tensor;

/// Arguments of `ofa bench predict`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Archs per timed batch.
    #[arg(long, default_value_t = 100_000)]
    archs: usize,
    /// Timed repeats (the median is reported).
    #[arg(long, default_value_t = 5)]
    repeats: usize,
    /// A predictor file for the w1.2 tutorial encoding (default: random weights of the reference's
    /// size, 128 → 3 × 400 → 1).
    #[arg(long)]
    predictor: Option<PathBuf>,
    /// One JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

pub(crate) fn random_predictor() -> anyhow::Result<AccuracyPredictor> {
    let (layers, out) = ofa_supernet::rng::with_seed(0, || {
        let layer = |o: i64, i: i64| {
            (
                Tensor::randn([o, i], tch::kind::FLOAT_CPU) * 0.05,
                Tensor::randn([o], tch::kind::FLOAT_CPU) * 0.05,
            )
        };
        let layers = [layer(400, 128), layer(400, 400), layer(400, 400)];
        (layers, Tensor::randn([1, 400], tch::kind::FLOAT_CPU) * 0.05)
    });
    let bias = Tensor::from_slice(&[0.7f32]);
    Ok(AccuracyPredictor::from_layers(
        Encoding::tutorial(),
        &layers,
        &out,
        Some(&bias),
        0.0,
    )?)
}

fn median_s(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Run the benchmark.
pub fn run(a: Args) -> anyhow::Result<()> {
    anyhow::ensure!(
        a.archs > 0 && a.repeats > 0,
        "archs and repeats must be positive"
    );
    let predictor = match &a.predictor {
        Some(p) => AccuracyPredictor::load(p, Some(Encoding::tutorial()))?,
        None => random_predictor()?,
    };
    let mut space = SearchSpace::preset("ofa-mbv3-w1.2")?;
    space.resolutions = vec![160, 176, 192, 208, 224];
    predictor.check_space(&space, &space.resolutions)?;
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let choices = Choices::all(&space);
    let archs: Vec<ArchConfig> = (0..a.archs)
        .map(|_| sample(&space, &choices, &mut rng))
        .collect();
    // warm-up (thread pool, page faults)
    predictor.predict_batch(&archs[..archs.len().min(10_000)])?;
    let mut times = Vec::new();
    for _ in 0..a.repeats {
        let t = Instant::now();
        let out = predictor.predict_batch(&archs)?;
        times.push(t.elapsed().as_secs_f64());
        anyhow::ensure!(out.len() == archs.len(), "prediction count");
    }
    let predict_s = median_s(times);
    let time_eff = |e: &dyn Efficiency| -> anyhow::Result<f64> {
        let mut times = Vec::new();
        for _ in 0..a.repeats {
            let t = Instant::now();
            let mut acc = 0.0;
            for x in &archs {
                acc += e.predict(x)?;
            }
            times.push(t.elapsed().as_secs_f64());
            anyhow::ensure!(acc > 0.0, "costs must be positive");
        }
        Ok(a.archs as f64 / median_s(times))
    };
    let macs = time_eff(&Additive::macs(&space))?;
    let params = time_eff(&Additive::params(&space))?;
    let direct = {
        let t = Instant::now();
        let n = archs.len().min(20_000);
        let mut acc = 0u64;
        for x in &archs[..n] {
            acc += ofa_space::cost(&space, x).macs;
        }
        anyhow::ensure!(acc > 0, "costs must be positive");
        n as f64 / t.elapsed().as_secs_f64()
    };
    let archs_per_s = a.archs as f64 / predict_s;

    let out = PredictReport {
        archs: a.archs,
        threads: rayon::current_num_threads(),
        predictor: a.predictor.as_ref().map_or(
            "random, reference size (128 → 3 × 400 → 1)".to_string(),
            |p| p.display().to_string(),
        ),
        archs_per_s,
        median_s: predict_s,
        macs_archs_per_s: macs,
        params_archs_per_s: params,
        macs_direct_count_archs_per_s: direct,
        reference: PredictReference {
            encode_predict_archs_per_s: 65_000.0,
            forward_archs_per_s: 254_000.0,
            flops_model_archs_per_s: 1_500.0,
        },
    };
    if a.json {
        super::bench::print_json(BenchReport::Predict(out));
        return Ok(());
    }
    outln!(
        "predictors, {} random archs of ofa-mbv3-w1.2 at 160–224 ({} threads)",
        a.archs,
        rayon::current_num_threads()
    );
    outln!("  {:<36} {:>14} {:>14}", "", "archs/s", "reference");
    outln!(
        "  {:<36} {:>14.0} {:>14}",
        "accuracy: encode + predict",
        archs_per_s,
        "65 000"
    );
    outln!(
        "  {:<36} {:>14.0} {:>14}",
        "MACs (compiled table)",
        macs,
        "1 500"
    );
    outln!(
        "  {:<36} {:>14.0} {:>14}",
        "params (compiled table)",
        params,
        ""
    );
    outln!(
        "  {:<36} {:>14.0} {:>14}",
        "MACs (direct count)",
        direct,
        ""
    );
    Ok(())
}
