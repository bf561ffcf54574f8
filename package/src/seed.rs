//! Seed derivation.

/// A 64-bit mix of several values (SplitMix64 steps), for deriving independent seeds.
pub fn mix(parts: &[u64]) -> u64 {
    let mut z: u64 = 0x9E37_79B9_7F4A_7C15;
    for p in parts {
        z = z.wrapping_add(*p).wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
    }
    z
}

/// The independent random streams of a training run. Each is seeded with [`mix`] of the run's
/// seed, where in the run it is drawn and its tag ([`Stream::tag`]), so no two streams share a
/// generator. The tags are part of every result: changing one changes every run's batches, so they
/// are fixed numbers, written here once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// The order of the training images in an epoch.
    EpochOrder,
    /// The resolution of a step.
    Resolution,
    /// The augmentation of each image of a step.
    Augmentation,
    /// The dropout masks of a step.
    Dropout,
    /// The subnets sampled in a step.
    Subnets,
    /// The held-out and calibration split of the training files.
    Holdout,
    /// A fresh initialisation (a fine-tuning run from scratch).
    Init,
}

impl Stream {
    /// The number mixed into the stream's seed.
    pub const fn tag(self) -> u64 {
        match self {
            Stream::EpochOrder => 1,
            Stream::Resolution => 2,
            Stream::Augmentation => 3,
            Stream::Dropout => 4,
            Stream::Subnets => 5,
            Stream::Holdout => 7,
            Stream::Init => 8,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_tags_are_distinct_and_are_the_ones_every_run_was_seeded_with() {
        let all = [
            Stream::EpochOrder,
            Stream::Resolution,
            Stream::Augmentation,
            Stream::Dropout,
            Stream::Subnets,
            Stream::Holdout,
            Stream::Init,
        ];
        let tags: Vec<u64> = all.iter().map(|s| s.tag()).collect();
        // changing a tag changes every run's batches: these numbers are fixed
        assert_eq!(tags, [1, 2, 3, 4, 5, 7, 8]);
        // the position of a value matters
        assert_ne!(mix(&[0, 1]), mix(&[1, 0]));
    }
}
