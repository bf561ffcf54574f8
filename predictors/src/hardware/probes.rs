//! Choosing the subnets a device times.

use std::collections::HashSet;

use ofa_space::{sample, ArchConfig, Choices};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::features::{Feature, Features, Phi, N_FEATURES};
use super::HardwareError;

use Feature::{BaseBlocks, BaseOther, DenseMacs, DepthwiseMacs};

/// How to choose probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeSelection {
    /// Spread over the latency range and the layer types (for fitting).
    Spread,
    /// Uniformly random subnets (for held-out checks).
    Random,
}

/// `count` distinct subnets to time on a new device.
///
/// [`ProbeSelection::Spread`]: the smallest subnet at the smallest resolution and the largest at
/// the largest; the rest from a seeded pool of random subnets cut into `count − 2` bins of equal
/// size by their predicted cost (the base table's sum, else MACs), taking from each bin the subnet
/// farthest (in standardised feature space) from those already chosen, so that the probes span
/// both the cost range and the mix of depthwise, dense and per-block work.
pub fn choose_probes(
    features: &Features<'_>,
    choices: &Choices,
    count: usize,
    seed: u64,
    how: ProbeSelection,
) -> Result<Vec<ArchConfig>, HardwareError> {
    let space = features.space;
    let mut choices = choices.clone();
    let covered = features.resolutions();
    choices.r.retain(|r| covered.contains(r));
    if choices.r.is_empty() {
        return Err(HardwareError::Model(
            "no resolution of the space is covered by the base table".into(),
        ));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut seen = HashSet::new();
    let mut draw = |n: usize, seen: &mut HashSet<ArchConfig>| {
        let mut v = Vec::new();
        let mut tries = 0;
        while v.len() < n && tries < n * 50 {
            tries += 1;
            let a = sample(space, &choices, &mut rng).canonical(space);
            if seen.insert(a.clone()) {
                v.push(a);
            }
        }
        v
    };
    if how == ProbeSelection::Random {
        return Ok(draw(count, &mut seen));
    }
    let mut small = choices.smallest(space).canonical(space);
    small.r = *choices.r.iter().min().unwrap_or(&small.r);
    let mut large = choices.largest(space).canonical(space);
    large.r = *choices.r.iter().max().unwrap_or(&large.r);
    let mut chosen: Vec<ArchConfig> = vec![small.clone()];
    if count >= 2 && large != small {
        chosen.push(large.clone());
    }
    chosen.truncate(count);
    seen.extend(chosen.iter().cloned());
    let want = count - chosen.len();
    if want == 0 {
        return Ok(chosen);
    }
    let pool = draw((want * 40).max(400), &mut seen);
    let cost = |x: &Phi| {
        if features.base().is_some() {
            x[BaseBlocks.index()] + x[BaseOther.index()]
        } else {
            x[DepthwiseMacs.index()] + x[DenseMacs.index()]
        }
    };
    let mut scored: Vec<(f64, Phi, ArchConfig)> = pool
        .into_iter()
        .map(|a| features.of(&a).map(|x| (cost(&x), x, a)))
        .collect::<Result<_, _>>()?;
    scored.sort_by(|a, b| a.0.total_cmp(&b.0));
    // standardised features (Overhead is constant: left out)
    let dims = N_FEATURES - 1;
    let (mut mean, mut sd) = (vec![0.0_f64; dims], vec![0.0_f64; dims]);
    for (_, x, _) in &scored {
        for d in 0..dims {
            mean[d] += x[d] / scored.len() as f64;
        }
    }
    for (_, x, _) in &scored {
        for d in 0..dims {
            sd[d] += (x[d] - mean[d]).powi(2) / scored.len() as f64;
        }
    }
    let z = |x: &Phi| -> Vec<f64> {
        (0..dims)
            .map(|d| {
                if sd[d] > 0.0 {
                    (x[d] - mean[d]) / sd[d].sqrt()
                } else {
                    0.0
                }
            })
            .collect()
    };
    let mut chosen_z: Vec<Vec<f64>> = chosen
        .iter()
        .map(|a| features.of(a).map(|x| z(&x)))
        .collect::<Result<_, _>>()?;
    let dist = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum::<f64>();
    let n = scored.len();
    for bin in 0..want.min(n) {
        let (lo, hi) = (
            bin * n / want,
            ((bin + 1) * n / want).max(bin * n / want + 1),
        );
        let pick = (lo..hi.min(n))
            .max_by(|&i, &j| {
                let d = |k: usize| {
                    let zk = z(&scored[k].1);
                    chosen_z
                        .iter()
                        .map(|c| dist(c, &zk))
                        .fold(f64::INFINITY, f64::min)
                };
                d(i).total_cmp(&d(j)).then(j.cmp(&i))
            })
            .unwrap_or(lo);
        chosen_z.push(z(&scored[pick].1));
        chosen.push(scored[pick].2.clone());
    }
    Ok(chosen)
}
