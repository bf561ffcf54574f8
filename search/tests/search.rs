//! Search behaviour: determinism (seed, thread count), bounds, infeasibility with the smallest
//! achievable value, input validation, Pareto dominance; predictors behind traits (fakes).

#![allow(clippy::unwrap_used)]

use ofa_search::{
    evolve, pareto, AccuracyModel, Additive, Bound, Constraints, EvolutionConfig, ParetoConfig,
    Problem, SearchError,
};
use ofa_space::{ArchConfig, Choices, Encoding, SearchSpace};
use rand::{Rng, SeedableRng};

/// A fake accuracy: more MACs, more accuracy, with diminishing returns, plus a kernel bonus. It
/// counts the archs it scores.
struct Fake {
    macs: Additive,
    calls: std::sync::atomic::AtomicUsize,
}

impl Fake {
    fn new(macs: Additive) -> Fake {
        Fake {
            macs,
            calls: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// Archs scored so far.
    fn calls(&self) -> usize {
        self.calls.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl AccuracyModel for Fake {
    fn predict(&self, archs: &[ArchConfig]) -> Result<Vec<f64>, SearchError> {
        self.calls
            .fetch_add(archs.len(), std::sync::atomic::Ordering::Relaxed);
        archs
            .iter()
            .map(|a| {
                let m = self.macs.predict(a)?;
                Ok(0.5 + 0.05 * m.ln() + 0.001 * a.ks.iter().sum::<u32>() as f64)
            })
            .collect()
    }
}

/// A seeded random network over the library encoding (one tanh layer), in plain Rust: an
/// accuracy model with no structure the search could exploit, as a real predictor has none known.
struct RandomNet {
    enc: Encoding,
    hidden: Vec<Vec<f64>>,
    out: Vec<f64>,
}

impl RandomNet {
    fn score(&self, arch: &ArchConfig) -> f64 {
        let x = self.enc.dense(arch).unwrap();
        let h: Vec<f64> = self
            .hidden
            .iter()
            .map(|w| {
                w.iter()
                    .zip(&x)
                    .map(|(w, x)| w * f64::from(*x))
                    .sum::<f64>()
                    .tanh()
            })
            .collect();
        0.7 + h.iter().zip(&self.out).map(|(h, o)| h * o).sum::<f64>()
    }
}

impl AccuracyModel for RandomNet {
    fn predict(&self, archs: &[ArchConfig]) -> Result<Vec<f64>, SearchError> {
        Ok(archs.iter().map(|a| self.score(a)).collect())
    }
}

fn random_predictor(space: &SearchSpace) -> RandomNet {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    let enc = Encoding::library(space);
    let dim = enc.dim();
    let mut w = |n: usize| -> Vec<f64> { (0..n).map(|_| rng.random_range(-0.3..0.3)).collect() };
    let hidden = (0..32).map(|_| w(dim)).collect();
    let out = w(32).into_iter().map(|v| v * 0.1).collect();
    RandomNet { enc, hidden, out }
}

fn small_cfg(seed: u64) -> EvolutionConfig {
    EvolutionConfig {
        population: 40,
        generations: 30,
        seed,
        ..EvolutionConfig::default()
    }
}

#[test]
fn evolution_is_deterministic_bounded_and_independent_of_threads() {
    let space = SearchSpace::preset("ofa-mbv3-w1.0").unwrap();
    let macs = Additive::macs(&space);
    let params = Additive::params(&space);
    let acc = random_predictor(&space);
    let problem = Problem {
        space: &space,
        choices: Choices::all(&space),
        accuracy: &acc,
        bounds: vec![Bound {
            predictor: &macs,
            max: 200.0,
        }],
        report: vec![&params],
    };
    let run = |threads: usize, seed: u64| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(|| evolve(&problem, &small_cfg(seed)).unwrap())
    };
    let a = run(1, 7);
    let b = run(2, 7);
    let c = run(2, 7);
    assert_eq!(a.best, b.best);
    assert_eq!(a.history, b.history);
    assert_eq!(b.best, c.best);
    assert!(a.best.metrics["macs_m"] <= 200.0);
    assert!(a.best.metrics.contains_key("params_m"));
    // the best never gets worse and is the predicted value of its arch
    assert!(a.history.windows(2).all(|w| w[1] >= w[0]));
    assert_eq!(acc.score(&a.best.arch), a.best.accuracy);
    // distinct archs: 40 initial + 40 children × 30 generations + ≤ 10 hill-climbing steps
    assert!(
        a.evaluated <= 40 + 40 * 30 + 10 && a.evaluated > 40 * 20,
        "{}",
        a.evaluated
    );
    let d = run(2, 8);
    assert_ne!(a.history, d.history);
}

#[test]
fn infeasible_constraints_state_the_smallest_achievable_value() {
    let space = SearchSpace::preset("ofa-mbv3-w1.0").unwrap();
    let macs = Additive::macs(&space);
    let params = Additive::params(&space);
    let fake = Fake::new(Additive::macs(&space));
    let choices = Choices::all(&space);
    let (min_macs, _) = Additive::minimize(&[(&macs, 1.0)], &choices).unwrap();
    let problem = Problem {
        space: &space,
        choices: choices.clone(),
        accuracy: &fake,
        bounds: vec![Bound {
            predictor: &macs,
            max: 10.0,
        }],
        report: vec![],
    };
    let err = evolve(&problem, &EvolutionConfig::default()).unwrap_err();
    // It fails fast: from the exact minima, before the accuracy model scores a single arch.
    assert_eq!(
        fake.calls(),
        0,
        "an infeasible search must fail before searching"
    );
    let msg = err.to_string();
    assert!(msg.contains("macs_m ≤ 10"), "{msg}");
    assert!(msg.contains(&format!("{min_macs:.4}")), "{msg}");
    // just above the minimum: feasible, and the answer respects it
    let problem = Problem {
        bounds: vec![Bound {
            predictor: &macs,
            max: min_macs * 1.01,
        }],
        ..problem
    };
    let r = evolve(&problem, &small_cfg(0)).unwrap();
    assert!(r.best.metrics["macs_m"] <= min_macs * 1.01);
    // two bounds that can each be met alone but not together
    let (min_params, _) = Additive::minimize(&[(&params, 1.0)], &choices).unwrap();
    let (big_macs, _) = Additive::minimize(&[(&macs, -1.0)], &choices).unwrap();
    let _ = big_macs;
    let problem = Problem {
        bounds: vec![
            Bound {
                predictor: &macs,
                max: min_macs * 1.001,
            },
            Bound {
                predictor: &params,
                max: min_params * 1.5,
            },
        ],
        ..problem
    };
    match evolve(&problem, &small_cfg(0)) {
        Ok(r) => {
            assert!(r.best.metrics["macs_m"] <= min_macs * 1.001);
            assert!(r.best.metrics["params_m"] <= min_params * 1.5);
        }
        Err(e) => assert!(e.to_string().contains("together"), "{e}"),
    }
}

#[test]
fn constraints_are_validated() {
    for (c, needle) in [
        (
            Constraints {
                latency_ms: Some(-1.0),
                ..Default::default()
            },
            "latency_ms",
        ),
        (
            Constraints {
                macs_m: Some(0.0),
                ..Default::default()
            },
            "macs_m",
        ),
        (
            Constraints {
                params_m: Some(f64::NAN),
                ..Default::default()
            },
            "params_m",
        ),
        (
            Constraints {
                macs_m: Some(f64::INFINITY),
                ..Default::default()
            },
            "macs_m",
        ),
    ] {
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains(needle) && e.contains("positive finite"), "{e}");
    }
    Constraints {
        macs_m: Some(100.0),
        ..Default::default()
    }
    .validate()
    .unwrap();
    let bad = EvolutionConfig {
        population: 1,
        ..EvolutionConfig::default()
    };
    assert!(bad.validate().is_err());
}

#[test]
fn pareto_front_is_not_dominated_by_any_evaluated_arch() {
    let space = SearchSpace::preset("ofa-mbv3-w1.0").unwrap();
    let macs = Additive::macs(&space);
    let acc = random_predictor(&space);
    let problem = Problem {
        space: &space,
        choices: Choices::all(&space),
        accuracy: &acc,
        bounds: vec![],
        report: vec![],
    };
    let cfg = ParetoConfig {
        population: 40,
        generations: 25,
        ..ParetoConfig::default()
    };
    let front = pareto(&problem, &macs, &cfg).unwrap();
    assert!(front.points.len() >= 5, "{}", front.points.len());
    assert_eq!(front.evaluated, front.archive.len());
    for p in &front.points {
        let (a, c) = (p.accuracy, p.metrics["macs_m"]);
        for &(a2, c2) in &front.archive {
            assert!(
                !(a2 >= a && c2 <= c && (a2 > a || c2 < c)),
                "({a}, {c}) dominated by ({a2}, {c2})"
            );
        }
    }
    // sorted by cost and by accuracy
    assert!(front
        .points
        .windows(2)
        .all(|w| w[0].metrics["macs_m"] < w[1].metrics["macs_m"] && w[0].accuracy < w[1].accuracy));
    let budget = front.points[front.points.len() / 2].metrics["macs_m"];
    let b = front.best_within(budget).unwrap();
    assert!(b.metrics["macs_m"] <= budget);
    let csv = front.to_csv();
    assert_eq!(csv.lines().count(), front.points.len() + 1);
    // deterministic
    let again = pareto(&problem, &macs, &cfg).unwrap();
    assert_eq!(again.points, front.points);
}

/// An evolution and a Pareto front of `preset` under a MACs bound 30 % of the way up its range:
/// the best arch (valid, canonical, within the bound) and the front's archs.
fn searched_within_a_macs_bound(preset: &str) -> (ArchConfig, Vec<ArchConfig>) {
    let space = SearchSpace::preset(preset).unwrap();
    let macs = Additive::macs(&space);
    let acc = random_predictor(&space);
    let choices = Choices::all(&space);
    let (lo, _) = Additive::minimize(&[(&macs, 1.0)], &choices).unwrap();
    let (hi, _) = Additive::minimize(&[(&macs, -1.0)], &choices).unwrap();
    let bound = lo + 0.3 * (-hi - lo);
    let problem = Problem {
        space: &space,
        choices,
        accuracy: &acc,
        bounds: vec![Bound {
            predictor: &macs,
            max: bound,
        }],
        report: vec![],
    };
    let r = evolve(&problem, &small_cfg(1)).unwrap();
    r.best.arch.validate(&space).unwrap();
    assert_eq!(r.best.arch, r.best.arch.canonical(&space));
    assert!(r.best.metrics["macs_m"] <= bound);
    let front = pareto(
        &problem,
        &macs,
        &ParetoConfig {
            population: 20,
            generations: 5,
            ..ParetoConfig::default()
        },
    )
    .unwrap();
    (
        r.best.arch,
        front.points.into_iter().map(|p| p.arch).collect(),
    )
}

#[test]
fn a_proxylessnas_space_is_searched_within_its_bound_to_canonical_archs() {
    let (best, front) = searched_within_a_macs_bound("ofa-proxyless-w1.3");
    // the last stage's depth is its one block; skipped blocks hold the first choices
    assert_eq!(best.d.len(), 6);
    assert!(front.iter().all(|a| a.d[5] == 1));
}

#[test]
fn a_resnet_space_is_searched_within_its_bound_to_canonical_archs() {
    let (best, front) = searched_within_a_macs_bound("ofa-resnet50");
    assert!(best.ks.is_empty() && best.w.len() == 6);
    // the stem's entry is one of the two networks it can mean
    assert!(front.iter().all(|a| a.d[0] == 0 || a.d[0] == 2));
}
