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
