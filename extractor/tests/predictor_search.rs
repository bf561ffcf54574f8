//! The search over the real accuracy predictor (an MLP in libtorch): the same result for a seed
//! at any thread count. The search's own behaviour is tested in `ofa-search` without libtorch.

#![allow(clippy::unwrap_used)]

use ofa_extractor::{evolve, Bound, EvolutionConfig, Problem};
use ofa_predictors::{AccuracyPredictor, Additive};
use ofa_space::{Choices, Encoding, SearchSpace};
use tch::Tensor;

fn random_predictor(space: &SearchSpace) -> AccuracyPredictor {
    let enc = Encoding::library(space);
    let dim = enc.dim() as i64;
    let (layers, out) = ofa_supernet::rng::with_seed(3, || {
        let l = |o: i64, i: i64| {
            (
                Tensor::randn([o, i], tch::kind::FLOAT_CPU) * 0.1,
                Tensor::randn([o], tch::kind::FLOAT_CPU) * 0.1,
            )
        };
        let layers = [l(64, dim), l(64, 64), l(64, 64)];
        (layers, Tensor::randn([1, 64], tch::kind::FLOAT_CPU) * 0.1)
    });
    AccuracyPredictor::from_layers(enc, &layers, &out, None, 0.7).unwrap()
}

#[test]
fn evolution_over_the_mlp_is_deterministic_at_any_thread_count() {
    let space = SearchSpace::preset("ofa-mbv3-w1.0").unwrap();
    let macs = Additive::macs(&space);
    let acc = random_predictor(&space);
    let problem = Problem {
        space: &space,
        choices: Choices::all(&space),
        accuracy: &acc,
        bounds: vec![Bound {
            predictor: &macs,
            max: 200.0,
        }],
        report: vec![],
    };
    let cfg = EvolutionConfig {
        population: 40,
        generations: 30,
        seed: 7,
        ..EvolutionConfig::default()
    };
    let run = |threads: usize| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(|| evolve(&problem, &cfg).unwrap())
    };
    let (a, b) = (run(1), run(2));
    assert_eq!(a.best, b.best);
    assert_eq!(a.history, b.history);
    assert!(a.best.metrics["macs_m"] <= 200.0);
    // the best is the predictor's value of its arch
    let again = acc.predict(&a.best.arch).unwrap();
    assert_eq!(f64::from(again), a.best.accuracy);
}
