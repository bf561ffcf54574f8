//! Seeded uniform sampling of architectures from any subset of a space's choices.

use rand::seq::IndexedRandom;
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::arch::ArchConfig;
use crate::error::SpaceError;
use crate::ratio::Ratio;
use crate::space::{Family, SearchSpace};

/// The choices to sample from: a subset of the space's lists (e.g. one phase of progressive
/// shrinking restricts expand ratios to {4, 6}).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Choices {
    /// Kernel sizes.
    pub ks: Vec<u32>,
    /// Expand ratios.
    pub e: Vec<Ratio>,
    /// Depths.
    pub d: Vec<u32>,
    /// Width indices (ResNet; empty otherwise).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub w: Vec<u32>,
    /// Resolutions.
    pub r: Vec<u32>,
}

/// A position in a sorted choice list.
#[derive(Debug, Clone, Copy)]
enum Pick {
    Min,
    Mid,
    Max,
}

fn pick<T: Copy, R: Rng + ?Sized>(l: &[T], rng: &mut R) -> T {
    *l.choose(rng).unwrap_or(&l[0])
}

impl Choices {
    /// Every choice of the space.
    pub fn all(space: &SearchSpace) -> Choices {
        Choices {
            ks: space.ks_list.clone(),
            e: space.expand_ratio_list.clone(),
            d: space.depth_list.clone(),
            w: (0..space.width_mult_list.len() as u32).collect(),
            r: space.resolutions.clone(),
        }
    }

    /// The largest architecture these choices allow: every block at the largest kernel and
    /// expand ratio, every stage at the largest depth (and width), the largest resolution.
    pub fn largest(&self, space: &SearchSpace) -> ArchConfig {
        self.uniform(space, Pick::Max)
    }

    /// The smallest architecture these choices allow (the mirror of [`Choices::largest`]).
    pub fn smallest(&self, space: &SearchSpace) -> ArchConfig {
        self.uniform(space, Pick::Min)
    }

    /// The architecture with every entry at the middle value of its sorted choices (the upper
    /// middle of an even list).
    pub fn middle(&self, space: &SearchSpace) -> ArchConfig {
        self.uniform(space, Pick::Mid)
    }

    /// Every entry at the same position of its sorted choices (a fixed stage at its count).
    fn uniform(&self, space: &SearchSpace, p: Pick) -> ArchConfig {
        fn at<T: Copy + Ord>(l: &[T], p: Pick) -> Option<T> {
            let mut v = l.to_vec();
            v.sort_unstable();
            match p {
                Pick::Min => v.first(),
                Pick::Mid => v.get(v.len() / 2),
                Pick::Max => v.last(),
            }
            .copied()
        }
        let n = space.n_elastic_blocks();
        let d = at(&self.d, p).unwrap_or(0);
        let resnet = space.family == Family::ResNet;
        ArchConfig {
            ks: if resnet {
                Vec::new()
            } else {
                vec![at(&self.ks, p).unwrap_or(0); n]
            },
            e: vec![at(&self.e, p).unwrap_or(Ratio::from(1)); n],
            d: resnet
                .then_some(d)
                .into_iter()
                .chain(space.elastic_stages().iter().map(|s| s.blocks.unwrap_or(d)))
                .collect(),
            w: if resnet {
                vec![at(&self.w, p).unwrap_or(0); space.stages.len() + 2]
            } else {
                Vec::new()
            },
            r: at(&self.r, p).unwrap_or(0),
        }
    }

    /// Check that every list is non-empty and inside the space.
    pub fn validate(&self, space: &SearchSpace) -> Result<(), SpaceError> {
        fn inside<T: PartialEq + std::fmt::Display + std::fmt::Debug>(
            name: &str,
            sub: &[T],
            full: &[T],
        ) -> Result<(), SpaceError> {
            if sub.is_empty() {
                return Err(SpaceError::InvalidChoices(format!("`{name}` is empty")));
            }
            if let Some(v) = sub.iter().find(|v| !full.contains(v)) {
                return Err(SpaceError::InvalidChoices(format!(
                    "`{name}` choice {v} is not in the space ({full:?})"
                )));
            }
            Ok(())
        }
        let all = Choices::all(space);
        inside("ks", &self.ks, &space.ks_list)?;
        inside("e", &self.e, &space.expand_ratio_list)?;
        inside("d", &self.d, &space.depth_list)?;
        if space.family == Family::ResNet {
            inside("w", &self.w, &all.w)?;
        } else if !self.w.is_empty() {
            return Err(SpaceError::InvalidChoices(format!(
                "`w`: a {} space has no width choices",
                space.family.label()
            )));
        }
        inside("r", &self.r, &space.resolutions)
    }
}

/// ResNet's stem entry `d[0]`: the largest or the smallest depth choice (the stem's residual conv
/// runs or not), as the reference's `sample_active_subnet` draws it.
fn resnet_stem_depth<R: Rng + ?Sized>(choices: &Choices, rng: &mut R) -> u32 {
    let lo = choices.d.iter().copied().min().unwrap_or(0);
    let hi = choices.d.iter().copied().max().unwrap_or(0);
    pick(&[hi, lo], rng)
}

/// Draw one architecture uniformly: every kernel, expand ratio and depth independently (the
/// entries of skipped blocks are drawn too, like the reference; a stage of fixed block count gets
/// that count, as the reference's ProxylessNAS sets its last depth to 1), then (ResNet) the
/// widths, then one resolution. ResNet's stem entry is the smallest or the largest depth, as the
/// reference's `sample_active_subnet` draws it. `choices` must have been validated (non-empty
/// lists).
pub fn sample<R: Rng + ?Sized>(space: &SearchSpace, choices: &Choices, rng: &mut R) -> ArchConfig {
    let n = space.n_elastic_blocks();
    let resnet = space.family == Family::ResNet;
    let ks = if resnet {
        Vec::new()
    } else {
        (0..n).map(|_| pick(&choices.ks, rng)).collect()
    };
    let e = (0..n).map(|_| pick(&choices.e, rng)).collect();
    let mut d = Vec::with_capacity(space.n_stages());
    if resnet {
        d.push(resnet_stem_depth(choices, rng));
    }
    for s in space.elastic_stages() {
        let v = pick(&choices.d, rng);
        d.push(s.blocks.unwrap_or(v));
    }
    let w = if resnet {
        (0..space.stages.len() + 2)
            .map(|_| pick(&choices.w, rng))
            .collect()
    } else {
        Vec::new()
    };
    let r = pick(&choices.r, rng);
    ArchConfig { ks, e, d, w, r }
}

/// Mutate `arch` in place like the reference's evolution finder: each block's kernel and expand
/// ratio are redrawn together with probability `prob`, then each stage's depth, then (ResNet)
/// each width, then the resolution. A depth is redrawn as [`sample`] draws it: a stage of fixed
/// block count keeps its count (the draw is made and dropped, so the random stream does not
/// depend on it), and ResNet's stem entry is the smallest or the largest depth. `arch` must be of
/// `space` and `choices` validated.
pub fn mutate<R: Rng + ?Sized>(
    arch: &mut ArchConfig,
    space: &SearchSpace,
    choices: &Choices,
    prob: f64,
    rng: &mut R,
) {
    for i in 0..arch.e.len() {
        if rng.random::<f64>() < prob {
            if let Some(k) = arch.ks.get_mut(i) {
                *k = pick(&choices.ks, rng);
            }
            arch.e[i] = pick(&choices.e, rng);
        }
    }
    let resnet = space.family == Family::ResNet;
    for i in 0..arch.d.len() {
        if rng.random::<f64>() < prob {
            arch.d[i] = if resnet && i == 0 {
                resnet_stem_depth(choices, rng)
            } else {
                let v = pick(&choices.d, rng);
                space.fixed_depth(i).unwrap_or(v)
            };
        }
    }
    for i in 0..arch.w.len() {
        if rng.random::<f64>() < prob {
            arch.w[i] = pick(&choices.w, rng);
        }
    }
    if rng.random::<f64>() < prob {
        arch.r = pick(&choices.r, rng);
    }
}

/// Uniform crossover: every gene (each kernel, expand, depth, width, and the resolution) from
/// either parent with equal probability.
pub fn crossover<R: Rng + ?Sized>(a: &ArchConfig, b: &ArchConfig, rng: &mut R) -> ArchConfig {
    fn mix<T: Copy, R: Rng + ?Sized>(x: &[T], y: &[T], rng: &mut R) -> Vec<T> {
        x.iter()
            .zip(y)
            .map(|(x, y)| if rng.random::<bool>() { *x } else { *y })
            .collect()
    }
    let ks = mix(&a.ks, &b.ks, rng);
    let e = mix(&a.e, &b.e, rng);
    let d = mix(&a.d, &b.d, rng);
    let w = mix(&a.w, &b.w, rng);
    let r = if rng.random::<bool>() { a.r } else { b.r };
    ArchConfig { ks, e, d, w, r }
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
        c.e = vec![4.into(), 6.into()];
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
            mutate(&mut m, &s, &c, 0.5, &mut rng);
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
        mutate(&mut same, &s, &c, 0.0, &mut rng);
        assert_eq!(same, a);
        c.d = vec![5];
        assert!(c
            .validate(&s)
            .unwrap_err()
            .to_string()
            .contains("`d` choice 5"));
    }

    /// Mutation redraws a depth as sampling draws it: ProxylessNAS's one-block last stage keeps
    /// its block, and ResNet's stem entry stays the smallest or the largest depth (the middle one
    /// would read as "skip", so a mutation would skip the stem's conv two times in three).
    #[test]
    fn mutation_draws_depths_as_sampling_does() {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let s = SearchSpace::preset("ofa-proxyless-w1.3").unwrap();
        let c = Choices::all(&s);
        let mut a = sample(&s, &c, &mut rng);
        let last = a.d.len() - 1;
        assert_eq!((s.fixed_depth(last), a.d[last]), (Some(1), 1));
        for _ in 0..50 {
            mutate(&mut a, &s, &c, 1.0, &mut rng);
            assert_eq!(a.d[last], 1);
        }
        let s = SearchSpace::preset("ofa-resnet50").unwrap();
        let c = Choices::all(&s);
        assert_eq!(c.d, [0, 1, 2]);
        let mut a = sample(&s, &c, &mut rng);
        let (mut runs, mut middle) = (0, 0);
        for _ in 0..400 {
            mutate(&mut a, &s, &c, 1.0, &mut rng);
            assert!(a.d[0] == 0 || a.d[0] == 2, "stem entry {}", a.d[0]);
            runs += usize::from(a.d[0] == 2);
            middle += a.d[1..].iter().filter(|d| **d == 1).count();
        }
        // the stem runs about half the time (binomial: 400 draws, sd 10); the stages still
        // draw the middle depth
        assert!((160..=240).contains(&runs), "{runs}");
        assert!(middle > 0);
    }
}
