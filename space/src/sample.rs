//! Seeded uniform sampling of architectures from any subset of a space's choices.

use rand::seq::IndexedRandom;
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::arch::ArchConfig;
use crate::error::SpaceError;
use crate::space::SearchSpace;

/// The choices to sample from: a subset of the space's lists (e.g. one phase of progressive
/// shrinking restricts expand ratios to {4, 6}).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Choices {
    /// Kernel sizes.
    pub ks: Vec<u32>,
    /// Expand ratios.
    pub e: Vec<u32>,
    /// Depths.
    pub d: Vec<u32>,
    /// Resolutions.
    pub r: Vec<u32>,
}

impl Choices {
    /// Every choice of the space.
    pub fn all(space: &SearchSpace) -> Choices {
        Choices {
            ks: space.ks_list.clone(),
            e: space.expand_ratio_list.clone(),
            d: space.depth_list.clone(),
            r: space.resolutions.clone(),
        }
    }

    /// The largest architecture these choices allow: every block at the largest kernel and
    /// expand ratio, every stage at the largest depth, the largest resolution.
    pub fn largest(&self, space: &SearchSpace) -> ArchConfig {
        self.extreme(space, |l| l.iter().copied().max())
    }

    /// The smallest architecture these choices allow (the mirror of [`Choices::largest`]).
    pub fn smallest(&self, space: &SearchSpace) -> ArchConfig {
        self.extreme(space, |l| l.iter().copied().min())
    }

    fn extreme(&self, space: &SearchSpace, pick: impl Fn(&[u32]) -> Option<u32>) -> ArchConfig {
        let n = space.n_elastic_blocks();
        let d = pick(&self.d).unwrap_or(0);
        ArchConfig {
            ks: vec![pick(&self.ks).unwrap_or(0); n],
            e: vec![pick(&self.e).unwrap_or(0); n],
            d: space
                .stages
                .iter()
                .skip(1)
                .map(|s| s.blocks.unwrap_or(d))
                .collect(),
            r: pick(&self.r).unwrap_or(0),
        }
    }

    /// Check that every list is non-empty and inside the space.
    pub fn validate(&self, space: &SearchSpace) -> Result<(), SpaceError> {
        for (name, sub, full) in [
            ("ks", &self.ks, &space.ks_list),
            ("e", &self.e, &space.expand_ratio_list),
            ("d", &self.d, &space.depth_list),
            ("r", &self.r, &space.resolutions),
        ] {
            if sub.is_empty() {
                return Err(SpaceError::InvalidChoices(format!("`{name}` is empty")));
            }
            if let Some(v) = sub.iter().find(|v| !full.contains(v)) {
                return Err(SpaceError::InvalidChoices(format!(
                    "`{name}` choice {v} is not in the space ({full:?})"
                )));
            }
        }
        Ok(())
    }
}

/// Draw one architecture uniformly: every kernel, expand ratio and depth independently (the
/// entries of skipped blocks are drawn too, like the reference; a stage of fixed block count gets
/// that count, as the reference's ProxylessNAS sets its last depth to 1), then one resolution.
/// `choices` must have been validated (non-empty lists).
pub fn sample<R: Rng + ?Sized>(space: &SearchSpace, choices: &Choices, rng: &mut R) -> ArchConfig {
    let n = space.n_elastic_blocks();
    let pick = |l: &[u32], rng: &mut R| *l.choose(rng).unwrap_or(&l[0]);
    let ks = (0..n).map(|_| pick(&choices.ks, rng)).collect();
    let e = (0..n).map(|_| pick(&choices.e, rng)).collect();
    let d = space
        .stages
        .iter()
        .skip(1)
        .map(|s| {
            let d = pick(&choices.d, rng);
            s.blocks.unwrap_or(d)
        })
        .collect();
    let r = pick(&choices.r, rng);
    ArchConfig { ks, e, d, r }
}

/// Mutate `arch` in place like the reference's evolution finder: each block's kernel and expand
/// ratio are redrawn together with probability `prob`, then each stage's depth, then the
/// resolution. `choices` must have been validated.
pub fn mutate<R: Rng + ?Sized>(arch: &mut ArchConfig, choices: &Choices, prob: f64, rng: &mut R) {
    let pick = |l: &[u32], rng: &mut R| *l.choose(rng).unwrap_or(&l[0]);
    for i in 0..arch.ks.len() {
        if rng.random::<f64>() < prob {
            arch.ks[i] = pick(&choices.ks, rng);
            arch.e[i] = pick(&choices.e, rng);
        }
    }
    for i in 0..arch.d.len() {
        if rng.random::<f64>() < prob {
            arch.d[i] = pick(&choices.d, rng);
        }
    }
    if rng.random::<f64>() < prob {
        arch.r = pick(&choices.r, rng);
    }
}

/// Uniform crossover: every gene (each kernel, expand, depth, and the resolution) from either
/// parent with equal probability.
pub fn crossover<R: Rng + ?Sized>(a: &ArchConfig, b: &ArchConfig, rng: &mut R) -> ArchConfig {
    let mut mix = |x: &[u32], y: &[u32]| -> Vec<u32> {
        x.iter()
            .zip(y)
            .map(|(x, y)| if rng.random::<bool>() { *x } else { *y })
            .collect()
    };
    let ks = mix(&a.ks, &b.ks);
    let e = mix(&a.e, &b.e);
    let d = mix(&a.d, &b.d);
    let r = if rng.random::<bool>() { a.r } else { b.r };
    ArchConfig { ks, e, d, r }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn seeded_and_inside_the_subset() {
        let s = SearchSpace::preset("ofa-mbv3-w1.0").unwrap();
        let mut c = Choices::all(&s);
        c.e = vec![4, 6];
        c.validate(&s).unwrap();
        let a = sample(&s, &c, &mut ChaCha8Rng::seed_from_u64(7));
        let b = sample(&s, &c, &mut ChaCha8Rng::seed_from_u64(7));
        assert_eq!(a, b);
        a.validate(&s).unwrap();
        for _ in 0..50 {
            let a = sample(&s, &c, &mut ChaCha8Rng::seed_from_u64(rand::random()));
            assert!(a.e.iter().all(|e| *e == 4 || *e == 6));
        }
        // mutation and crossover stay inside the choices
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mut m = a.clone();
        for _ in 0..20 {
            mutate(&mut m, &c, 0.5, &mut rng);
            m.validate(&s).unwrap();
            assert!(m.e.iter().all(|e| *e == 4 || *e == 6));
        }
        assert_ne!(m, a);
        // the extremes of a subset, and of the whole space
        assert!(c.largest(&s).e.iter().all(|e| *e == 6));
        assert!(c.smallest(&s).e.iter().all(|e| *e == 4));
        c.smallest(&s).validate(&s).unwrap();
        let (big, small) = (ArchConfig::largest(&s), ArchConfig::smallest(&s));
        assert!(big.ks.iter().all(|k| *k == 7) && big.e.iter().all(|e| *e == 6));
        assert!(big.d.iter().all(|d| *d == 4) && big.r == *s.resolutions.iter().max().unwrap());
        assert!(small.ks.iter().all(|k| *k == 3) && small.e.iter().all(|e| *e == 3));
        assert!(small.d.iter().all(|d| *d == 2) && small.r == *s.resolutions.iter().min().unwrap());
        let x = crossover(&a, &m, &mut rng);
        for i in 0..20 {
            assert!(x.ks[i] == a.ks[i] || x.ks[i] == m.ks[i]);
        }
        let mut same = a.clone();
        mutate(&mut same, &c, 0.0, &mut rng);
        assert_eq!(same, a);
        c.d = vec![5];
        assert!(c
            .validate(&s)
            .unwrap_err()
            .to_string()
            .contains("`d` choice 5"));
    }
}
