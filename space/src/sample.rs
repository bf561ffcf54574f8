//! Seeded uniform sampling of architectures from any subset of a space's choices.

use rand::seq::IndexedRandom;
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::arch::ArchConfig;
use crate::error::SpaceError;
use crate::space::{SearchSpace, N_STAGES};

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
/// entries of skipped blocks are drawn too, like the reference), then one resolution.
/// `choices` must have been validated (non-empty lists).
pub fn sample<R: Rng + ?Sized>(space: &SearchSpace, choices: &Choices, rng: &mut R) -> ArchConfig {
    let n = space.n_elastic_blocks();
    let pick = |l: &[u32], rng: &mut R| *l.choose(rng).unwrap_or(&l[0]);
    let ks = (0..n).map(|_| pick(&choices.ks, rng)).collect();
    let e = (0..n).map(|_| pick(&choices.e, rng)).collect();
    let d = (0..N_STAGES).map(|_| pick(&choices.d, rng)).collect();
    let r = pick(&choices.r, rng);
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
        c.d = vec![5];
        assert!(c
            .validate(&s)
            .unwrap_err()
            .to_string()
            .contains("`d` choice 5"));
    }
}
