//! Pareto search (NSGA-II): the predicted-accuracy vs efficiency front in one run, so one search
//! serves every budget.
//!
//! Selection is NSGA-II's (non-dominated sorting, crowding distance, binary tournaments);
//! offspring come from uniform crossover then mutation, deduplicated over the run and checked
//! against the problem's bounds (which still apply, e.g. a params cap). Every evaluated arch goes
//! into an archive, and the returned front is the set of archive members no other evaluated arch
//! dominates.

use rustc_hash::FxHashSet as HashSet;
use std::time::Instant;

use crate::efficiency::Efficiency;
use ofa_space::{crossover, mutate, sample, ArchConfig};
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus as SearchRng;
use serde::{Deserialize, Serialize};

use crate::evolution::{
    check_deadline, feasible_seed, minimum, scored, Scored, MAX_GENERATIONS, MAX_POPULATION,
};
use crate::problem::Problem;
use crate::strategy::Strategy;
use crate::SearchError;

/// NSGA-II settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ParetoConfig {
    /// Population size.
    pub population: usize,
    /// Generations.
    pub generations: usize,
    /// Per-gene mutation probability of an offspring.
    pub mutate_prob: f64,
    /// Draws allowed per offspring.
    pub max_attempts: usize,
    /// Seed.
    pub seed: u64,
    /// `evolution` (NSGA-II, the default) or `random` (uniform feasible samples, as many as
    /// NSGA-II evaluates at most: population × (generations + 1)); aging evolution is
    /// single-objective and refused.
    pub strategy: Strategy,
}

impl Default for ParetoConfig {
    fn default() -> ParetoConfig {
        ParetoConfig {
            population: 100,
            generations: 300,
            mutate_prob: 0.1,
            max_attempts: 100,
            seed: 0,
            strategy: Strategy::Evolution,
        }
    }
}

/// The accuracy–efficiency front.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Front {
    /// The efficiency metric on the x axis (`latency_ms`, `macs_m` or `params_m`).
    pub objective: String,
    /// Non-dominated archs, by increasing objective (and so increasing accuracy).
    pub points: Vec<Scored>,
    /// Distinct archs evaluated.
    pub evaluated: usize,
    /// Wall time, seconds.
    pub seconds: f64,
    /// (accuracy, objective) of every evaluated arch (not serialised; for checks and plots).
    #[serde(skip)]
    pub archive: Vec<(f64, f64)>,
}

#[derive(Debug, Clone)]
struct Ind {
    arch: ArchConfig,
    acc: f64,
    cost: f64,
}

fn dominates(a: &Ind, b: &Ind) -> bool {
    a.acc >= b.acc && a.cost <= b.cost && (a.acc > b.acc || a.cost < b.cost)
}

/// Ranks (0 = first front) of `pop` by fast non-dominated sorting.
fn ranks(pop: &[Ind]) -> Vec<usize> {
    let n = pop.len();
    let mut dominated_by = vec![0usize; n];
    let mut dominates_list: Vec<Vec<usize>> = vec![Vec::new(); n];
    for i in 0..n {
        for j in 0..n {
            if i != j && dominates(&pop[i], &pop[j]) {
                dominates_list[i].push(j);
            } else if i != j && dominates(&pop[j], &pop[i]) {
                dominated_by[i] += 1;
            }
        }
    }
    let mut rank = vec![usize::MAX; n];
    let mut current: Vec<usize> = (0..n).filter(|i| dominated_by[*i] == 0).collect();
    let mut r = 0;
    while !current.is_empty() {
        let mut next = Vec::new();
        for &i in &current {
            rank[i] = r;
            for &j in &dominates_list[i] {
                dominated_by[j] -= 1;
                if dominated_by[j] == 0 {
                    next.push(j);
                }
            }
        }
        current = next;
        r += 1;
    }
    rank
}

/// Crowding distance of each member within its front.
fn crowding(pop: &[Ind], rank: &[usize]) -> Vec<f64> {
    let mut d = vec![0.0; pop.len()];
    let max_rank = rank.iter().copied().max().unwrap_or(0);
    for r in 0..=max_rank {
        let members: Vec<usize> = (0..pop.len()).filter(|i| rank[*i] == r).collect();
        for key in [0, 1] {
            let v = |i: usize| if key == 0 { pop[i].acc } else { pop[i].cost };
            let mut m = members.clone();
            m.sort_by(|a, b| v(*a).total_cmp(&v(*b)));
            let (Some(&lo), Some(&hi)) = (m.first(), m.last()) else {
                continue;
            };
            let span = v(hi) - v(lo);
            d[lo] = f64::INFINITY;
            d[hi] = f64::INFINITY;
            if span > 0.0 {
                for w in m.windows(3) {
                    d[w[1]] += (v(w[2]) - v(w[0])) / span;
                }
            }
        }
    }
    d
}

/// The members of `all` that no other member dominates, by increasing cost.
fn non_dominated(all: &[Ind]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..all.len()).collect();
    idx.sort_by(|a, b| {
        all[*a]
            .cost
            .total_cmp(&all[*b].cost)
            .then(all[*b].acc.total_cmp(&all[*a].acc))
    });
    let mut out = Vec::new();
    let mut best = f64::NEG_INFINITY;
    for i in idx {
        if all[i].acc > best {
            best = all[i].acc;
            out.push(i);
        }
    }
    out
}

/// Run NSGA-II on (predicted accuracy ↑, `objective` ↓) under the problem's bounds.
pub fn pareto(
    problem: &Problem<'_>,
    objective: &dyn Efficiency,
    cfg: &ParetoConfig,
) -> Result<Front, SearchError> {
    pareto_until(problem, objective, cfg, None)
}

/// [`pareto`], giving up with [`SearchError::DeadlineExceeded`] when `deadline` passes (checked
/// between generations).
pub fn pareto_until(
    problem: &Problem<'_>,
    objective: &dyn Efficiency,
    cfg: &ParetoConfig,
    deadline: Option<Instant>,
) -> Result<Front, SearchError> {
    if cfg.population < 4 || cfg.max_attempts == 0 {
        return Err(SearchError::Config(
            "population must be at least 4 and max_attempts positive".into(),
        ));
    }
    if cfg.population > MAX_POPULATION || cfg.generations > MAX_GENERATIONS {
        return Err(SearchError::Config(format!(
            "population {} and generations {} must be at most {MAX_POPULATION} and {MAX_GENERATIONS}",
            cfg.population, cfg.generations
        )));
    }
    if cfg.strategy == Strategy::Aging {
        return Err(SearchError::Config(
            "aging evolution optimises one objective: search a front with `evolution` (NSGA-II) or `random`".into(),
        ));
    }
    problem.check_choices()?;
    let start = Instant::now();
    let space = problem.space;
    let mut rng = SearchRng::seed_from_u64(cfg.seed);
    let mut seen: HashSet<ArchConfig> = HashSet::default();
    let mut archive: Vec<Ind> = Vec::new();

    // Start from both ends: the cheapest arch (directed) and the largest feasible, then random.
    let mut fresh = Vec::new();
    let push = |a: ArchConfig, fresh: &mut Vec<ArchConfig>, seen: &mut HashSet<ArchConfig>| {
        let a = a.canonical(space);
        if seen.insert(a.clone()) {
            fresh.push(a);
        }
    };
    let (_, cheapest) = minimum(problem, objective)?;
    if problem.feasible(&cheapest)? {
        push(cheapest, &mut fresh, &mut seen);
    } else {
        push(feasible_seed(problem)?, &mut fresh, &mut seen);
    }
    for &r in &problem.choices.r {
        let big = ArchConfig {
            r,
            ..problem.choices.largest(space)
        };
        if problem.feasible(&big)? {
            push(big, &mut fresh, &mut seen);
        }
    }
    let mut tries = 0;
    while fresh.len() < cfg.population && tries < cfg.population * cfg.max_attempts {
        tries += 1;
        let a = sample(space, &problem.choices, &mut rng);
        if !seen.contains(&a.canonical(space)) && problem.feasible(&a)? {
            push(a, &mut fresh, &mut seen);
        }
    }
    let evaluate =
        |archs: Vec<ArchConfig>, archive: &mut Vec<Ind>| -> Result<Vec<Ind>, SearchError> {
            let accs = problem.accuracy.predict(&archs)?;
            let mut out = Vec::with_capacity(archs.len());
            for (arch, acc) in archs.into_iter().zip(accs) {
                let cost = objective.predict(&arch)?;
                let ind = Ind { arch, acc, cost };
                archive.push(ind.clone());
                out.push(ind);
            }
            Ok(out)
        };
    let mut pop = evaluate(fresh, &mut archive)?;
    // random search: uniform feasible samples in batches, as many as NSGA-II evaluates at most
    let generations = match cfg.strategy {
        Strategy::Random => 0,
        _ => cfg.generations,
    };
    if cfg.strategy == Strategy::Random {
        let total = cfg.population.saturating_mul(cfg.generations + 1);
        let mut g = 0;
        while archive.len() < total {
            check_deadline(deadline, g, start)?;
            g += 1;
            let mut batch = Vec::new();
            for _ in 0..cfg.population.min(total - archive.len()) {
                for _ in 0..cfg.max_attempts {
                    let a = sample(space, &problem.choices, &mut rng).canonical(space);
                    if !seen.contains(&a) && problem.feasible(&a)? {
                        seen.insert(a.clone());
                        batch.push(a);
                        break;
                    }
                }
            }
            if batch.is_empty() {
                break;
            }
            evaluate(batch, &mut archive)?;
        }
    }

    for g in 0..generations {
        check_deadline(deadline, g, start)?;
        let rank = ranks(&pop);
        let crowd = crowding(&pop, &rank);
        let better =
            |a: usize, b: usize| rank[a] < rank[b] || (rank[a] == rank[b] && crowd[a] > crowd[b]);
        let tournament = |rng: &mut SearchRng| {
            let a = rng.random_range(0..pop.len());
            let b = rng.random_range(0..pop.len());
            if better(b, a) {
                b
            } else {
                a
            }
        };
        let mut children = Vec::with_capacity(cfg.population);
        for _ in 0..cfg.population {
            for _ in 0..cfg.max_attempts {
                let p1 = tournament(&mut rng);
                let p2 = tournament(&mut rng);
                let mut c = crossover(&pop[p1].arch, &pop[p2].arch, &mut rng);
                mutate(
                    &mut c,
                    problem.space,
                    &problem.choices,
                    cfg.mutate_prob,
                    &mut rng,
                );
                let c = c.canonical(space);
                if !seen.contains(&c) && problem.feasible(&c)? {
                    seen.insert(c.clone());
                    children.push(c);
                    break;
                }
            }
        }
        let children = evaluate(children, &mut archive)?;
        pop.extend(children);
        // environmental selection: fronts in order, the last one cut by crowding distance
        let rank = ranks(&pop);
        let crowd = crowding(&pop, &rank);
        let mut order: Vec<usize> = (0..pop.len()).collect();
        order.sort_by(|a, b| {
            rank[*a]
                .cmp(&rank[*b])
                .then(crowd[*b].total_cmp(&crowd[*a]))
        });
        order.truncate(cfg.population);
        pop = order.into_iter().map(|i| pop[i].clone()).collect();
    }

    let points = non_dominated(&archive)
        .into_iter()
        .map(|i| {
            let mut s = scored(problem, archive[i].arch.clone(), archive[i].acc)?;
            s.metrics
                .insert(objective.metric().name().to_string(), archive[i].cost);
            Ok(s)
        })
        .collect::<Result<Vec<_>, SearchError>>()?;
    Ok(Front {
        objective: objective.metric().name().to_string(),
        points,
        evaluated: archive.len(),
        seconds: start.elapsed().as_secs_f64(),
        archive: archive.iter().map(|i| (i.acc, i.cost)).collect(),
    })
}

impl Front {
    /// CSV: objective, accuracy, every metric, arch JSON.
    pub fn to_csv(&self) -> String {
        let names: Vec<String> = self
            .points
            .first()
            .map(|p| p.metrics.keys().cloned().collect())
            // an empty front has no metric columns
            .unwrap_or_default();
        let mut s = format!("accuracy,{}", names.join(","));
        s.push_str(",arch\n");
        for p in &self.points {
            s.push_str(&format!("{}", p.accuracy));
            for n in &names {
                s.push_str(&format!(
                    ",{}",
                    p.metrics.get(n).copied().unwrap_or(f64::NAN)
                ));
            }
            s.push_str(&format!(",\"{}\"\n", p.arch.to_json().replace('"', "\"\"")));
        }
        s
    }

    /// The most accurate front member whose objective is at most `budget`.
    pub fn best_within(&self, budget: f64) -> Option<&Scored> {
        self.points
            .iter()
            .filter(|p| p.metrics.get(&self.objective).is_some_and(|v| *v <= budget))
            .max_by(|a, b| a.accuracy.total_cmp(&b.accuracy))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ind(acc: f64, cost: f64) -> Ind {
        Ind {
            arch: ArchConfig {
                ks: vec![],
                e: vec![],
                d: vec![],
                w: vec![],
                r: 0,
            },
            acc,
            cost,
        }
    }

    #[test]
    fn sorting_and_front() {
        let pop = vec![
            ind(0.9, 10.0),
            ind(0.8, 5.0),
            ind(0.7, 6.0),
            ind(0.9, 12.0),
            ind(0.5, 1.0),
        ];
        let r = ranks(&pop);
        assert_eq!(r, vec![0, 0, 1, 1, 0]);
        assert_eq!(non_dominated(&pop), vec![4, 1, 0]);
        let c = crowding(&pop, &r);
        assert!(c[4].is_infinite() && c[0].is_infinite() && c[1].is_finite());
    }
}
