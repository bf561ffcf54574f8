//! The search strategies besides the reference's evolution, at the same evaluation budget, seed
//! and deadline, with the same constraint handling (a feasible seed from the exact minima, only
//! feasible, not yet evaluated archs predicted) and the same polish of the winner:
//!
//! - [`Strategy::Aging`]: regularized evolution (Real et al., AAAI'19, the search behind
//!   AmoebaNet): a population of `population` archs in a queue; each child mutates the best of
//!   `tournament` members drawn at random, joins the queue, and the oldest member dies. Children are
//!   made and predicted in batches of a tenth of the population (as the paper's parallel workers
//!   do), so the predictor is called in batches.
//! - [`Strategy::Random`]: uniform samples of the space, the feasible ones predicted, the best
//!   kept: the baseline every search should beat.
//!
//! One seeded RNG drives every draw and batches depend on the settings alone, so a result depends
//! on the seed, not on the thread count.

use std::collections::VecDeque;
use std::time::Instant;

use ofa_space::{mutate, sample, ArchConfig};
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus as SearchRng;
use rustc_hash::FxHashSet as HashSet;
use serde::{Deserialize, Serialize};

use crate::evolution::{
    canonicalize, check_deadline, explore_budget, initial_population, refine, scored,
    EvolutionConfig, SearchResult,
};
use crate::problem::Problem;
use crate::SearchError;

/// How a search explores the space.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// The reference's elitist evolution: the best quarter are parents, children by mutation and
    /// crossover (the default).
    #[default]
    Evolution,
    /// Regularized (aging) evolution: tournament selection, the oldest member dies.
    Aging,
    /// Uniform random feasible samples, the best kept.
    Random,
}

impl Strategy {
    /// Its name, as the CLI and the API spell it.
    pub fn name(self) -> &'static str {
        match self {
            Strategy::Evolution => "evolution",
            Strategy::Aging => "aging",
            Strategy::Random => "random",
        }
    }

    /// Every strategy.
    pub const ALL: [Strategy; 3] = [Strategy::Evolution, Strategy::Aging, Strategy::Random];
}

impl std::fmt::Display for Strategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Strategy {
    type Err = SearchError;

    fn from_str(s: &str) -> Result<Strategy, SearchError> {
        Strategy::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| {
                SearchError::Config(format!(
                    "unknown strategy `{s}` (evolution, aging or random)"
                ))
            })
    }
}

/// What the exploration of aging and random search keeps: the best arch so far and the record.
struct Run {
    start: Instant,
    rng: SearchRng,
    seen: HashSet<ArchConfig>,
    best: Option<(f64, ArchConfig)>,
    history: Vec<f64>,
    predicted: usize,
    predict_seconds: f64,
    draws: usize,
    abandoned: usize,
}

impl Run {
    fn new(cfg: &EvolutionConfig) -> Run {
        Run {
            start: Instant::now(),
            rng: SearchRng::seed_from_u64(cfg.seed),
            seen: HashSet::default(),
            best: None,
            history: Vec::new(),
            predicted: 0,
            predict_seconds: 0.0,
            draws: 0,
            abandoned: 0,
        }
    }

    /// Predict `archs` (distinct, feasible), keep the best, note the batch in the history.
    fn predict(
        &mut self,
        problem: &Problem<'_>,
        archs: &[ArchConfig],
    ) -> Result<Vec<f64>, SearchError> {
        let t = Instant::now();
        let accs = problem.accuracy.predict(archs)?;
        self.predict_seconds += t.elapsed().as_secs_f64();
        self.predicted += archs.len();
        for (a, arch) in accs.iter().zip(archs) {
            // the first of equals stays: the result does not depend on batch boundaries
            if self.best.as_ref().is_none_or(|(b, _)| a > b) {
                self.best = Some((*a, arch.clone()));
            }
        }
        if let Some((b, _)) = &self.best {
            self.history.push(*b);
        }
        Ok(accs)
    }

    /// Polish the best and report.
    fn finish(
        mut self,
        problem: &Problem<'_>,
        cfg: &EvolutionConfig,
        left: usize,
    ) -> Result<SearchResult, SearchError> {
        let (acc, arch) = self
            .best
            .take()
            .ok_or_else(|| SearchError::Config("nothing was evaluated".into()))?;
        let t = Instant::now();
        let (acc, arch, _) = refine(problem, cfg, acc, arch, &mut self.seen, left)?;
        self.predict_seconds += t.elapsed().as_secs_f64();
        Ok(SearchResult {
            best: scored(problem, arch, acc)?,
            evaluated: self.seen.len(),
            abandoned_children: self.abandoned,
            draws: self.draws,
            history: self.history,
            seconds: self.start.elapsed().as_secs_f64(),
            predict_seconds: self.predict_seconds,
        })
    }
}

/// Regularized (aging) evolution.
pub(crate) fn aging(
    problem: &Problem<'_>,
    cfg: &EvolutionConfig,
    deadline: Option<Instant>,
) -> Result<SearchResult, SearchError> {
    let mut run = Run::new(cfg);
    let (limit, polish) = explore_budget(cfg, cfg.evaluations());
    let init = initial_population(
        problem,
        cfg,
        cfg.population.min(limit),
        &mut run.rng,
        &mut run.seen,
    )?;
    let accs = run.predict(problem, &init)?;
    let mut queue: VecDeque<(f64, ArchConfig)> = accs.into_iter().zip(init).collect();
    let batch = (cfg.population / 10).max(1);
    while run.predicted < limit {
        check_deadline(deadline, run.history.len(), run.start)?;
        let n = batch.min(limit - run.predicted);
        let mut children = Vec::with_capacity(n);
        for _ in 0..n {
            // the best of `tournament` members drawn at random (with replacement)
            let tournament = |rng: &mut SearchRng| {
                let mut winner = rng.random_range(0..queue.len());
                for _ in 1..cfg.tournament {
                    let k = rng.random_range(0..queue.len());
                    if queue[k].0 > queue[winner].0 {
                        winner = k;
                    }
                }
                let mut child = queue[winner].1.clone();
                mutate(
                    &mut child,
                    problem.space,
                    &problem.choices,
                    cfg.mutate_prob,
                    rng,
                );
                child
            };
            let mut child = tournament(&mut run.rng);
            let mut found = false;
            for _ in 0..cfg.max_attempts {
                run.draws += 1;
                canonicalize(&mut child, problem);
                if !problem.feasible(&child)? {
                    child = tournament(&mut run.rng);
                } else if run.seen.contains(&child) {
                    mutate(
                        &mut child,
                        problem.space,
                        &problem.choices,
                        cfg.mutate_prob,
                        &mut run.rng,
                    );
                } else {
                    run.seen.insert(child.clone());
                    children.push(child);
                    found = true;
                    break;
                }
            }
            run.abandoned += usize::from(!found);
        }
        if children.is_empty() {
            break; // the neighbourhood is exhausted
        }
        let accs = run.predict(problem, &children)?;
        for member in accs.into_iter().zip(children) {
            queue.push_back(member);
            // the oldest dies, however good
            queue.pop_front();
        }
    }
    let left = polish(run.predicted);
    run.finish(problem, cfg, left)
}

/// Random search: uniform samples, the feasible new ones predicted in batches of the population
/// size, the best kept.
pub(crate) fn random(
    problem: &Problem<'_>,
    cfg: &EvolutionConfig,
    deadline: Option<Instant>,
) -> Result<SearchResult, SearchError> {
    let mut run = Run::new(cfg);
    let (limit, polish) = explore_budget(cfg, cfg.evaluations());
    let space = problem.space;
    // the feasible seed first, as every strategy has it: a tight bound still has an answer
    let seed = crate::evolution::feasible_seed(problem)?;
    run.seen.insert(seed.clone());
    run.predict(problem, &[seed])?;
    while run.predicted < limit {
        check_deadline(deadline, run.history.len(), run.start)?;
        let n = cfg.population.min(limit - run.predicted);
        let mut batch = Vec::with_capacity(n);
        for _ in 0..n {
            let mut found = false;
            for _ in 0..cfg.max_attempts {
                run.draws += 1;
                let a = sample(space, &problem.choices, &mut run.rng).canonical(space);
                if !run.seen.contains(&a) && problem.feasible(&a)? {
                    run.seen.insert(a.clone());
                    batch.push(a);
                    found = true;
                    break;
                }
            }
            run.abandoned += usize::from(!found);
        }
        if batch.is_empty() {
            break; // uniform draws no longer find anything new and feasible
        }
        run.predict(problem, &batch)?;
    }
    let left = polish(run.predicted);
    run.finish(problem, cfg, left)
}
