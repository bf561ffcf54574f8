//! The search strategies at equal budgets: constraints respected on random problems, results
//! that depend on the seed alone (not the thread count), the budget and the deadline kept, and
//! the reference's evolution unchanged by a budget it does not reach.

#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ofa_search::{
    evolve, evolve_until, AccuracyModel, Additive, Bound, EvolutionConfig, Problem, SearchError,
    Strategy,
};
use ofa_space::{ArchConfig, Choices, SearchSpace};
use proptest::prelude::*;

/// An accuracy model with structure a search can climb (more MACs help, with diminishing
/// returns; larger kernels a little) and a seeded ripple it cannot guess; it counts what it
/// scores.
struct Model {
    macs: Additive,
    ripple: u64,
    calls: AtomicUsize,
}

impl AccuracyModel for Model {
    fn predict(&self, archs: &[ArchConfig]) -> Result<Vec<f64>, SearchError> {
        self.calls.fetch_add(archs.len(), Ordering::Relaxed);
        archs
            .iter()
            .map(|a| {
                let m = self.macs.predict(a)?;
                let h =
                    a.ks.iter()
                        .copied()
                        .chain(a.e.iter().map(|e| e.get() as u32))
                        .chain(a.d.iter().copied())
                        .fold(self.ripple, |h, g| {
                            h.wrapping_mul(0x100_0000_01b3).wrapping_add(u64::from(g))
                        });
                let ripple = (h % 1000) as f64 / 1e5;
                Ok(0.5 + 0.05 * m.ln() + 0.001 * a.ks.iter().sum::<u32>() as f64 + ripple)
            })
            .collect()
    }
}

fn model(space: &SearchSpace, ripple: u64) -> Model {
    Model {
        macs: Additive::macs(space),
        ripple,
        calls: AtomicUsize::new(0),
    }
}

fn cfg(strategy: Strategy, budget: usize, seed: u64) -> EvolutionConfig {
    EvolutionConfig {
        population: 40,
        generations: 30,
        tournament: 10,
        strategy,
        budget: Some(budget),
        seed,
        ..EvolutionConfig::default()
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    #[test]
    fn every_strategy_respects_its_constraints_and_its_budget(
        strategy in prop::sample::select(Strategy::ALL.to_vec()),
        slack in 1.02f64..3.0,
        seed in 0u64..1000,
        budget in 50usize..600,
    ) {
        let space = SearchSpace::preset("ofa-mbv3-w1.0").unwrap();
        let macs = Additive::macs(&space);
        let params = Additive::params(&space);
        let choices = Choices::all(&space);
        let (min_macs, _) = Additive::minimize(&[(&macs, 1.0)], &choices).unwrap();
        let acc = model(&space, seed);
        let problem = Problem {
            space: &space,
            choices,
            accuracy: &acc,
            bounds: vec![Bound { predictor: &macs, max: min_macs * slack }],
            report: vec![&params],
        };
        let r = evolve(&problem, &cfg(strategy, budget, seed)).unwrap();
        prop_assert!(r.best.metrics["macs_m"] <= min_macs * slack);
        prop_assert!(r.best.arch.validate(&space).is_ok());
        prop_assert!(acc.calls.load(Ordering::Relaxed) <= budget, "{} > {budget}", acc.calls.load(Ordering::Relaxed));
    }
}

#[test]
fn each_strategy_depends_on_its_seed_alone_not_the_thread_count() {
    let space = SearchSpace::preset("ofa-mbv3-w1.0").unwrap();
    let macs = Additive::macs(&space);
    let acc = model(&space, 1);
    let problem = Problem {
        space: &space,
        choices: Choices::all(&space),
        accuracy: &acc,
        bounds: vec![Bound {
            predictor: &macs,
            max: 250.0,
        }],
        report: vec![],
    };
    for strategy in Strategy::ALL {
        let run = |threads: usize, seed: u64| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
                .install(|| evolve(&problem, &cfg(strategy, 800, seed)).unwrap())
        };
        let (a, b) = (run(1, 5), run(2, 5));
        assert_eq!(a.best, b.best, "{strategy}");
        assert_eq!(a.history, b.history, "{strategy}");
        assert_ne!(a.history, run(2, 6).history, "{strategy}: the seed matters");
        // the best ever found never gets worse
        assert!(a.history.windows(2).all(|w| w[1] >= w[0]), "{strategy}");
    }
}

#[test]
fn a_deadline_stops_every_strategy_and_the_default_is_the_reference_evolution() {
    let space = SearchSpace::preset("ofa-mbv3-w1.0").unwrap();
    let macs = Additive::macs(&space);
    let acc = model(&space, 2);
    let problem = Problem {
        space: &space,
        choices: Choices::all(&space),
        accuracy: &acc,
        bounds: vec![Bound {
            predictor: &macs,
            max: 250.0,
        }],
        report: vec![],
    };
    for strategy in Strategy::ALL {
        let c = EvolutionConfig {
            strategy,
            ..EvolutionConfig::default()
        };
        // a deadline already passed: stopped at the first check, whatever the machine's speed
        let e = evolve_until(
            &problem,
            &c,
            Some(Instant::now() - Duration::from_millis(1)),
        )
        .unwrap_err();
        assert!(
            matches!(e, SearchError::DeadlineExceeded { .. }),
            "{strategy}: {e}"
        );
    }
    // no budget and the default strategy: the reference's evolution, as it always ran
    let plain = EvolutionConfig {
        population: 30,
        generations: 10,
        ..EvolutionConfig::default()
    };
    assert_eq!(plain.strategy, Strategy::Evolution);
    let a = evolve(&problem, &plain).unwrap();
    // a budget it does not reach changes nothing but the polish's allowance
    let roomy = EvolutionConfig {
        budget: Some(1_000_000),
        ..plain.clone()
    };
    let b = evolve(&problem, &roomy).unwrap();
    assert_eq!(a.best, b.best);
    assert_eq!(a.history, b.history);
}

#[test]
fn unknown_strategies_and_bad_budgets_are_named() {
    let e = "annealing".parse::<Strategy>().unwrap_err().to_string();
    assert!(e.contains("unknown strategy `annealing`"), "{e}");
    assert_eq!("aging".parse::<Strategy>().unwrap(), Strategy::Aging);
    assert!(serde_json::from_str::<Strategy>("\"annealing\"").is_err());
    for bad in [
        EvolutionConfig {
            budget: Some(0),
            ..EvolutionConfig::default()
        },
        EvolutionConfig {
            tournament: 0,
            strategy: Strategy::Aging,
            ..EvolutionConfig::default()
        },
        EvolutionConfig {
            tournament: 101,
            strategy: Strategy::Aging,
            ..EvolutionConfig::default()
        },
    ] {
        assert!(bad.validate().is_err(), "{bad:?}");
    }
    // the tournament is aging's alone: a small population still runs the other strategies
    for strategy in [Strategy::Evolution, Strategy::Random] {
        let small = EvolutionConfig {
            population: 20,
            strategy,
            ..EvolutionConfig::default()
        };
        assert!(small.validate().is_ok(), "{strategy}");
    }
}

#[test]
fn a_front_is_searched_by_nsga2_or_random_samples_never_by_aging() {
    let space = SearchSpace::preset("ofa-mbv3-w1.0").unwrap();
    let macs = Additive::macs(&space);
    let acc = model(&space, 4);
    let problem = Problem {
        space: &space,
        choices: Choices::all(&space),
        accuracy: &acc,
        bounds: vec![],
        report: vec![],
    };
    let cfg = |strategy: Strategy, seed: u64| ofa_search::ParetoConfig {
        population: 30,
        generations: 10,
        strategy,
        seed,
        ..ofa_search::ParetoConfig::default()
    };
    let a = ofa_search::pareto(&problem, &macs, &cfg(Strategy::Random, 1)).unwrap();
    let b = ofa_search::pareto(&problem, &macs, &cfg(Strategy::Random, 1)).unwrap();
    assert_eq!(a.points, b.points, "the same seed, the same front");
    // as many evaluations as NSGA-II makes at most
    assert!(
        a.evaluated <= 30 * 11 && a.evaluated > 30 * 10,
        "{}",
        a.evaluated
    );
    // a front: accuracy rises with the objective
    assert!(
        a.points
            .windows(2)
            .all(|w| w[0].metrics["macs_m"] <= w[1].metrics["macs_m"]
                && w[0].accuracy < w[1].accuracy)
    );
    let e = ofa_search::pareto(&problem, &macs, &cfg(Strategy::Aging, 1)).unwrap_err();
    assert!(e.to_string().contains("one objective"), "{e}");
}
