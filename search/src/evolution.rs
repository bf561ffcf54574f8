//! Constrained evolutionary search with the reference's defaults and semantics (population 100,
//! 500 generations, parents = top 25 %, 50 % of children by mutation with per-gene probability
//! 0.1, the rest by uniform crossover, resolution mutated too), and what its users missed:
//!
//! - every child gets a bounded number of attempts, and an infeasible constraint is an error that
//!   states the smallest achievable value, found by a directed search ([`minimum`]);
//! - archs are deduplicated (as canonical archs) over the whole run, so the population cannot
//!   collapse onto one network; a child that repeats an evaluated arch is mutated once more (a
//!   short walk away from what is known) rather than redrawn, an infeasible one is redrawn;
//! - the winner is polished by hill climbing over its one-gene neighbours (a few batches);
//! - one seeded RNG drives every draw on one thread, accuracy is predicted per generation in one
//!   batch (parallel inside the predictor, with chunking that depends on the batch only), so a
//!   result depends on the seed alone, not on the thread count.

use std::collections::BTreeMap;

use rustc_hash::FxHashSet as HashSet;
use std::time::Instant;

use crate::efficiency::{Additive, Efficiency};
use ofa_space::{crossover, mutate, sample, ArchConfig};
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus as SearchRng;
use serde::{Deserialize, Serialize};

use crate::problem::Problem;
pub use crate::strategy::Strategy;
use crate::SearchError;

/// The largest population a search accepts (the reference uses 100).
pub const MAX_POPULATION: usize = 10_000;
/// The most generations a search accepts (the reference uses 500).
pub const MAX_GENERATIONS: usize = 100_000;

/// Evolution settings (defaults: the reference's).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvolutionConfig {
    /// Population size.
    pub population: usize,
    /// Generations.
    pub generations: usize,
    /// Fraction of the population kept as parents.
    pub parent_ratio: f64,
    /// Fraction of the children made by mutation (the rest by crossover).
    pub mutation_ratio: f64,
    /// Per-gene mutation probability.
    pub mutate_prob: f64,
    /// Draws allowed per child before it is given up.
    pub max_attempts: usize,
    /// Hill-climbing rounds on the winner (0 = the reference's plain evolution).
    pub refine_rounds: usize,
    /// Seed.
    pub seed: u64,
    /// How the space is explored (the reference's evolution by default).
    pub strategy: Strategy,
    /// Regularized evolution's tournament: members sampled to pick each parent.
    pub tournament: usize,
    /// The most accuracy predictions the search may make, hill climbing included (`None`:
    /// evolution runs its generations; aging and random make as many predictions as evolution's
    /// population × (generations + 1)).
    pub budget: Option<usize>,
}

impl Default for EvolutionConfig {
    fn default() -> EvolutionConfig {
        EvolutionConfig {
            population: 100,
            generations: 500,
            parent_ratio: 0.25,
            mutation_ratio: 0.5,
            mutate_prob: 0.1,
            max_attempts: 100,
            refine_rounds: 10,
            seed: 0,
            strategy: Strategy::Evolution,
            tournament: 25,
            budget: None,
        }
    }
}

impl EvolutionConfig {
    /// Check the settings.
    pub fn validate(&self) -> Result<(), SearchError> {
        let bad = |m: &str| Err(SearchError::Config(m.to_string()));
        if self.population < 2 {
            return bad("population must be at least 2");
        }
        if self.population > MAX_POPULATION || self.generations > MAX_GENERATIONS {
            return Err(SearchError::Config(format!(
                "population {} and generations {} must be at most {MAX_POPULATION} and {MAX_GENERATIONS}",
                self.population, self.generations
            )));
        }
        if !(self.parent_ratio > 0.0 && self.parent_ratio <= 1.0) {
            return bad("parent_ratio must be in (0, 1]");
        }
        if !(0.0..=1.0).contains(&self.mutation_ratio) || !(0.0..=1.0).contains(&self.mutate_prob) {
            return bad("mutation_ratio and mutate_prob must be in [0, 1]");
        }
        if self.max_attempts == 0 {
            return bad("max_attempts must be positive");
        }
        if self.strategy == Strategy::Aging
            && (self.tournament == 0 || self.tournament > self.population)
        {
            return Err(SearchError::Config(format!(
                "tournament must be between 1 and the population ({}), got {}",
                self.population, self.tournament
            )));
        }
        if self.budget == Some(0) {
            return bad("budget must be at least 1 evaluation");
        }
        Ok(())
    }

    /// The predictions the search may make: the budget, or for aging and random search the
    /// predictions of evolution's default run (population × (generations + 1)).
    pub fn evaluations(&self) -> usize {
        self.budget
            .unwrap_or(self.population.saturating_mul(self.generations + 1))
    }
}

/// A scored architecture.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scored {
    /// The arch (canonical).
    pub arch: ArchConfig,
    /// Predicted accuracy.
    pub accuracy: f64,
    /// Efficiency metrics by name (`latency_ms`, `macs_m`, `params_m`).
    pub metrics: BTreeMap<String, f64>,
}

/// What a search returns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchResult {
    /// The best feasible arch found.
    pub best: Scored,
    /// Distinct archs whose accuracy was predicted.
    pub evaluated: usize,
    /// Children given up after `max_attempts` draws.
    pub abandoned_children: usize,
    /// Children drawn in all (accepted, duplicates and infeasible ones).
    pub draws: usize,
    /// Best accuracy after each generation.
    pub history: Vec<f64>,
    /// Wall time, seconds.
    pub seconds: f64,
    /// Of which in the accuracy predictor.
    pub predict_seconds: f64,
}

/// [`SearchError::DeadlineExceeded`] once `deadline` has passed.
pub(crate) fn check_deadline(
    deadline: Option<Instant>,
    generations: usize,
    start: Instant,
) -> Result<(), SearchError> {
    match deadline {
        Some(d) if Instant::now() >= d => Err(SearchError::DeadlineExceeded {
            generations,
            seconds: start.elapsed().as_secs_f64(),
        }),
        _ => Ok(()),
    }
}

/// Score `arch` fully (accuracy given): every metric of the problem.
pub fn scored(
    problem: &Problem<'_>,
    arch: ArchConfig,
    accuracy: f64,
) -> Result<Scored, SearchError> {
    let metrics = problem
        .metrics(&arch)?
        .into_iter()
        .map(|(m, v)| (m.name().to_string(), v))
        .collect();
    Ok(Scored {
        arch,
        accuracy,
        metrics,
    })
}

/// The smallest value of `predictor` over the problem's choices, and an arch reaching it: exact
/// for additive predictors (MACs, params, lookup-table latency), otherwise coordinate descent from
/// the smallest arch of every resolution.
pub fn minimum(
    problem: &Problem<'_>,
    predictor: &dyn Efficiency,
) -> Result<(f64, ArchConfig), SearchError> {
    if let Some(a) = predictor.additive() {
        return Additive::minimize(&[(a, 1.0)], &problem.choices).ok_or_else(|| {
            SearchError::Constraint(format!(
                "{} covers none of the searched resolutions {:?}",
                predictor.metric(),
                problem.choices.r
            ))
        });
    }
    descend(problem, |a| predictor.predict(a).map_err(SearchError::from))
}

/// Coordinate descent on `f` over every gene, from the smallest arch at each resolution.
fn descend(
    problem: &Problem<'_>,
    f: impl Fn(&ArchConfig) -> Result<f64, SearchError>,
) -> Result<(f64, ArchConfig), SearchError> {
    let c = &problem.choices;
    let mut best: Option<(f64, ArchConfig)> = None;
    for &r in &c.r {
        let mut a = ArchConfig {
            r,
            ..c.smallest(problem.space)
        };
        let mut v = f(&a)?;
        // every gene: each kernel, expand, (not fixed) depth and width, with its option count
        let genes: Vec<(Gene, usize, usize)> = (0..a.ks.len())
            .map(|i| (Gene::Ks, i, c.ks.len()))
            .chain((0..a.e.len()).map(|i| (Gene::E, i, c.e.len())))
            .chain(
                (0..a.d.len())
                    .filter(|i| problem.space.fixed_depth(*i).is_none())
                    .map(|i| (Gene::D, i, c.d.len())),
            )
            .chain((0..a.w.len()).map(|i| (Gene::W, i, c.w.len())))
            .collect();
        loop {
            let mut improved = false;
            for &(gene, i, n_options) in &genes {
                for o in 0..n_options {
                    let mut b = a.clone();
                    match gene {
                        Gene::Ks => b.ks[i] = c.ks[o],
                        Gene::E => b.e[i] = c.e[o],
                        Gene::D => b.d[i] = c.d[o],
                        Gene::W => b.w[i] = c.w[o],
                    }
                    let w = f(&b)?;
                    if w < v {
                        (a, v, improved) = (b, w, true);
                    }
                }
            }
            if !improved {
                break;
            }
        }
        if best.as_ref().is_none_or(|(bv, _)| v < *bv) {
            best = Some((v, a));
        }
    }
    best.ok_or_else(|| SearchError::Constraint("no resolution to search".into()))
}

/// A feasible arch to start from, or the error that says why none exists (with the smallest
/// achievable value of every constrained metric).
pub fn feasible_seed(problem: &Problem<'_>) -> Result<ArchConfig, SearchError> {
    let mut minima = Vec::new();
    let mut candidates = Vec::new();
    for b in &problem.bounds {
        let (v, a) = minimum(problem, b.predictor)?;
        minima.push((b.predictor.metric(), b.max, v));
        candidates.push(a);
    }
    let infeasible = |together: bool| SearchError::Infeasible {
        together,
        minima: minima.clone(),
    };
    if minima.iter().any(|(_, max, v)| v > max) {
        return Err(infeasible(false));
    }
    // Every bound can be met alone; look for an arch that meets all of them: weighted sums of
    // the normalised metrics (exact minima for additive predictors), then descent on the
    // violation.
    let additive: Option<Vec<(&Additive, f64)>> = problem
        .bounds
        .iter()
        .map(|b| b.predictor.additive().map(|a| (a, 1.0 / b.max)))
        .collect();
    if let Some(terms) = additive {
        for emphasis in 0..=terms.len() {
            for scale in [1.0, 4.0, 16.0] {
                let mut t = terms.clone();
                if emphasis < t.len() {
                    t[emphasis].1 *= scale;
                }
                if let Some((_, a)) = Additive::minimize(&t, &problem.choices) {
                    candidates.push(a);
                }
            }
        }
    }
    for a in &candidates {
        if problem.feasible(a)? {
            return Ok(a.canonical(problem.space));
        }
    }
    let (v, a) = descend(problem, |a| {
        let mut violation = 0.0;
        for b in &problem.bounds {
            violation += (b.predictor.predict(a)? / b.max - 1.0).max(0.0);
        }
        Ok(violation)
    })?;
    if v == 0.0 {
        return Ok(a.canonical(problem.space));
    }
    Err(infeasible(true))
}

/// Every arch that differs from `a` in one gene: one block's (kernel, expand), one stage's depth,
/// or the resolution.
/// Which list of an arch a gene is in.
#[derive(Debug, Clone, Copy)]
enum Gene {
    Ks,
    E,
    D,
    W,
}

fn neighbours(a: &ArchConfig, problem: &Problem<'_>) -> Vec<ArchConfig> {
    let c = &problem.choices;
    let mut out = Vec::new();
    // a block's kernel and expand together (MBConv), or its expand alone (ResNet)
    for i in 0..a.e.len() {
        let kernels = if a.ks.is_empty() { &[][..] } else { &c.ks[..] };
        for k in kernels
            .iter()
            .map(Some)
            .chain(kernels.is_empty().then_some(None))
        {
            for &e in &c.e {
                if (k, e) != (a.ks.get(i), a.e[i]) {
                    let mut n = a.clone();
                    if let Some(k) = k {
                        n.ks[i] = *k;
                    }
                    n.e[i] = e;
                    out.push(n);
                }
            }
        }
    }
    for i in (0..a.d.len()).filter(|i| problem.space.fixed_depth(*i).is_none()) {
        for &d in &c.d {
            if d != a.d[i] {
                let mut n = a.clone();
                n.d[i] = d;
                out.push(n);
            }
        }
    }
    for i in 0..a.w.len() {
        for &w in &c.w {
            if w != a.w[i] {
                let mut n = a.clone();
                n.w[i] = w;
                out.push(n);
            }
        }
    }
    for &r in &c.r {
        if r != a.r {
            let mut n = a.clone();
            n.r = r;
            out.push(n);
        }
    }
    out
}

/// [`ArchConfig::canonical`] in place (skipped blocks set to the first choice of the space, a
/// fixed stage's depth to its count).
pub(crate) fn canonicalize(a: &mut ArchConfig, problem: &Problem<'_>) {
    a.canonicalize(problem.space);
}

/// Run the evolutionary search.
pub fn evolve(problem: &Problem<'_>, cfg: &EvolutionConfig) -> Result<SearchResult, SearchError> {
    evolve_until(problem, cfg, None)
}

/// Run the evolutionary search, giving up with [`SearchError::DeadlineExceeded`] when `deadline`
/// passes (checked between generations).
pub fn evolve_until(
    problem: &Problem<'_>,
    cfg: &EvolutionConfig,
    deadline: Option<Instant>,
) -> Result<SearchResult, SearchError> {
    cfg.validate()?;
    problem.check_choices()?;
    match cfg.strategy {
        Strategy::Evolution => evolution(problem, cfg, deadline),
        Strategy::Aging => crate::strategy::aging(problem, cfg, deadline),
        Strategy::Random => crate::strategy::random(problem, cfg, deadline),
    }
}

/// The initial population: the feasible seed, random feasible archs, then mutants of those, up
/// to `size` distinct archs (each recorded in `seen`).
pub(crate) fn initial_population(
    problem: &Problem<'_>,
    cfg: &EvolutionConfig,
    size: usize,
    rng: &mut SearchRng,
    seen: &mut HashSet<ArchConfig>,
) -> Result<Vec<ArchConfig>, SearchError> {
    let space = problem.space;
    let seed_arch = feasible_seed(problem)?;
    let mut init = vec![seed_arch.clone()];
    seen.insert(seed_arch);
    let budget = cfg.population * cfg.max_attempts;
    let mut tries = 0;
    while init.len() < size && tries < budget {
        tries += 1;
        let a = sample(space, &problem.choices, rng).canonical(space);
        if !seen.contains(&a) && problem.feasible(&a)? {
            seen.insert(a.clone());
            init.push(a);
        }
    }
    tries = 0;
    while init.len() < size && tries < budget {
        tries += 1;
        let mut a = init[rng.random_range(0..init.len())].clone();
        mutate(&mut a, problem.space, &problem.choices, 0.5, rng);
        let a = a.canonical(space);
        if !seen.contains(&a) && problem.feasible(&a)? {
            seen.insert(a.clone());
            init.push(a);
        }
    }
    Ok(init)
}

/// The reference's elitist evolution.
fn evolution(
    problem: &Problem<'_>,
    cfg: &EvolutionConfig,
    deadline: Option<Instant>,
) -> Result<SearchResult, SearchError> {
    let start = Instant::now();
    let mut rng = SearchRng::seed_from_u64(cfg.seed);
    let mut seen: HashSet<ArchConfig> = HashSet::default();
    let mut abandoned = 0usize;
    let mut draws = 0usize;
    let (limit, polish) = explore_budget(cfg, usize::MAX);
    let init = initial_population(problem, cfg, cfg.population.min(limit), &mut rng, &mut seen)?;
    let mut predicted = init.len();
    let mut predict_seconds = 0.0;
    let t = Instant::now();
    let accs = problem.accuracy.predict(&init)?;
    predict_seconds += t.elapsed().as_secs_f64();
    let mut population: Vec<(f64, ArchConfig)> = accs.into_iter().zip(init).collect();

    let n_parents = ((cfg.parent_ratio * cfg.population as f64).round() as usize).max(1);
    let n_mutants = (cfg.mutation_ratio * cfg.population as f64).round() as usize;
    let n_cross = cfg.population - n_mutants.min(cfg.population);
    let mut history = Vec::with_capacity(cfg.generations);
    for _ in 0..cfg.generations {
        if predicted >= limit {
            break;
        }
        check_deadline(deadline, history.len(), start)?;
        // stable sort: ties keep their order, so the run is reproducible
        population.sort_by(|a, b| b.0.total_cmp(&a.0));
        population.truncate(n_parents);
        let parents: Vec<ArchConfig> = population.iter().map(|p| p.1.clone()).collect();
        let mut children = Vec::with_capacity(n_mutants + n_cross);
        for kind in std::iter::repeat_n(true, n_mutants).chain(std::iter::repeat_n(false, n_cross))
        {
            if predicted + children.len() >= limit {
                break;
            }
            let draw = |rng: &mut SearchRng| {
                if kind {
                    let mut c = parents[rng.random_range(0..parents.len())].clone();
                    mutate(
                        &mut c,
                        problem.space,
                        &problem.choices,
                        cfg.mutate_prob,
                        rng,
                    );
                    c
                } else {
                    let a = &parents[rng.random_range(0..parents.len())];
                    let b = &parents[rng.random_range(0..parents.len())];
                    crossover(a, b, rng)
                }
            };
            let mut child = draw(&mut rng);
            let mut found = false;
            for _ in 0..cfg.max_attempts {
                draws += 1;
                canonicalize(&mut child, problem);
                if !problem.feasible(&child)? {
                    // infeasible: start again from the parents
                    child = draw(&mut rng);
                } else if seen.contains(&child) {
                    // already evaluated: walk on from it with one more mutation
                    mutate(
                        &mut child,
                        problem.space,
                        &problem.choices,
                        cfg.mutate_prob,
                        &mut rng,
                    );
                } else {
                    seen.insert(child.clone());
                    children.push(child);
                    found = true;
                    break;
                }
            }
            abandoned += usize::from(!found);
        }
        if children.is_empty() {
            break; // no new feasible child within the attempts: the search has converged
        }
        let t = Instant::now();
        let accs = problem.accuracy.predict(&children)?;
        predict_seconds += t.elapsed().as_secs_f64();
        predicted += children.len();
        population.extend(accs.into_iter().zip(children));
        history.push(
            population
                .iter()
                .map(|p| p.0)
                .fold(f64::NEG_INFINITY, f64::max),
        );
    }
    population.sort_by(|a, b| b.0.total_cmp(&a.0));
    let (acc, arch) = population
        .into_iter()
        .next()
        .ok_or_else(|| SearchError::Config("empty population".into()))?;
    let t = Instant::now();
    let (acc, arch, _) = refine(problem, cfg, acc, arch, &mut seen, polish(predicted))?;
    predict_seconds += t.elapsed().as_secs_f64();
    Ok(SearchResult {
        best: scored(problem, arch, acc)?,
        evaluated: seen.len(),
        abandoned_children: abandoned,
        draws,
        history,
        seconds: start.elapsed().as_secs_f64(),
        predict_seconds,
    })
}

/// The predictions exploration may make, and (from the predictions it made) the ones left for
/// polishing the winner. With a budget, a tenth of it is kept for polishing (none without
/// hill-climbing rounds); without one, exploration makes `unbudgeted` and polishing is unlimited.
pub(crate) fn explore_budget(
    cfg: &EvolutionConfig,
    unbudgeted: usize,
) -> (usize, impl Fn(usize) -> usize) {
    let budget = cfg.budget;
    let reserve = match budget {
        Some(b) if cfg.refine_rounds > 0 => b / 10,
        _ => 0,
    };
    let explore = budget.map_or(unbudgeted, |b| (b - reserve).max(1));
    (explore, move |used: usize| {
        budget.map_or(usize::MAX, |b| b.saturating_sub(used))
    })
}

/// Polish `arch` (predicted `acc`): best-improvement hill climbing over its one-gene neighbours
/// (one batch of ~200 per round, at most `cfg.refine_rounds` rounds and `allowed` predictions),
/// so the answer is at least a local optimum. Returns the result and the predictions made.
pub(crate) fn refine(
    problem: &Problem<'_>,
    cfg: &EvolutionConfig,
    mut acc: f64,
    mut arch: ArchConfig,
    seen: &mut HashSet<ArchConfig>,
    allowed: usize,
) -> Result<(f64, ArchConfig, usize), SearchError> {
    let mut used = 0usize;
    for _ in 0..cfg.refine_rounds {
        let mut next = Vec::new();
        for n in neighbours(&arch, problem) {
            let mut n = n;
            canonicalize(&mut n, problem);
            if n != arch && problem.feasible(&n)? {
                next.push(n);
            }
        }
        next.sort_by(|a, b| (&a.ks, &a.e, &a.d, a.r).cmp(&(&b.ks, &b.e, &b.d, b.r)));
        next.dedup();
        next.truncate(allowed - used);
        if next.is_empty() {
            break;
        }
        let accs = problem.accuracy.predict(&next)?;
        used += next.len();
        let best = accs.iter().zip(&next).max_by(|a, b| a.0.total_cmp(b.0));
        match best {
            Some((a, n)) if *a > acc => {
                seen.insert(n.clone());
                (acc, arch) = (*a, n.clone());
            }
            _ => break,
        }
    }
    Ok((acc, arch, used))
}
