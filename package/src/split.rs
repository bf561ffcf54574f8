//! A split of a dataset held in memory.

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tch::{Device, Tensor};

/// One split held in memory: images `[N, C, H, W]` uint8 and labels `[N]` int64, on the CPU.
#[derive(Debug)]
pub struct Split {
    /// `[N, C, H, W]`, uint8.
    pub images: Tensor,
    /// `[N]`, int64.
    pub labels: Tensor,
}

/// The seeded held-out split of `n` examples: `n_val` of them (chosen by a seeded permutation)
/// and the rest, each in their original order, as `(rest, held_out)`. Every split of a dataset
/// (in memory or a file list) is taken this way.
pub fn holdout_indices(n: usize, n_val: usize, seed: u64) -> (Vec<i64>, Vec<i64>) {
    let n_val = n_val.min(n);
    let mut perm: Vec<i64> = (0..n as i64).collect();
    perm.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    let mut val: Vec<i64> = perm[..n_val].to_vec();
    let mut train: Vec<i64> = perm[n_val..].to_vec();
    val.sort_unstable();
    train.sort_unstable();
    (train, val)
}

impl Split {
    /// Number of examples.
    pub fn len(&self) -> usize {
        self.labels.size()[0] as usize
    }

    /// Whether the split is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The examples at `idx`, in that order.
    pub fn select(&self, idx: &[i64]) -> Split {
        let i = Tensor::from_slice(idx);
        Split {
            images: self.images.index_select(0, &i),
            labels: self.labels.index_select(0, &i),
        }
    }

    /// A deterministic held-out split: `n_val` examples chosen by a seeded permutation become the
    /// validation split, the rest (in their original order) the training split.
    pub fn split_validation(&self, n_val: usize, seed: u64) -> (Split, Split) {
        let (train, val) = holdout_indices(self.len(), n_val, seed);
        (self.select(&train), self.select(&val))
    }

    /// Move to a device (images stay uint8).
    pub fn to_device(&self, device: Device) -> Split {
        Split {
            images: self.images.to_device(device),
            labels: self.labels.to_device(device),
        }
    }
}
