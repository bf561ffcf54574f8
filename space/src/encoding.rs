//! One-hot encodings of architectures for accuracy predictors.
//!
//! Two layouts exist in the reference:
//! - **library** (`nas/accuracy_predictor/arch_encoder.py`): resolution one-hot over the space's
//!   resolution list first, then per elastic block a kernel one-hot, then per block an expand
//!   one-hot;
//! - **tutorial** (`tutorial/accuracy_predictor.py`, the published pretrained w1.2 predictor,
//!   128 dims): 20 × 3 kernel one-hots, 20 × 3 expand one-hots, then 8 resolution slots
//!   `(r − 112) / 16`.
//!
//! In both, a skipped block has all-zero kernel and expand one-hots and depth is not encoded.
//!
//! ResNet's (`ResNetArchEncoder`): resolution, the stem's middle conv (2 slots), the width index
//! of each of the `stages + 2` positions, then an expand one-hot per active block. An
//! encoding is described by data ([`Encoding`], stored in predictor files) so that a predictor can
//! say which space it was made for.

use serde::{Deserialize, Serialize};

use crate::arch::ArchConfig;
use crate::error::SpaceError;
use crate::ratio::Ratio;
use crate::space::{Family, SearchSpace};

/// Where the resolution one-hot sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Layout {
    /// Resolution, kernels, expands (the reference library).
    ResolutionFirst,
    /// Kernels, expands, resolution (the reference tutorial).
    ResolutionLast,
    /// ResNet's: resolution, stem, widths, expands (`ResNetArchEncoder`).
    #[serde(rename = "resnet")]
    ResNet,
}

/// A one-hot encoding of architectures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Encoding {
    /// Order of the parts.
    pub layout: Layout,
    /// Elastic blocks encoded.
    pub n_blocks: usize,
    /// Blocks per stage (block `i` is active iff `i % max_depth < d[i / max_depth]`).
    pub max_depth: usize,
    /// Kernel choices, in one-hot order.
    pub ks: Vec<u32>,
    /// Expand choices, in one-hot order.
    pub e: Vec<Ratio>,
    /// Resolution slots, in one-hot order.
    pub resolutions: Vec<u32>,
    /// Width choices at each of the `stages + 2` width positions (ResNet; 0 otherwise).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub widths: usize,
    /// Each stage's base depth (ResNet; empty otherwise).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub base_depths: Vec<u32>,
}

fn is_zero(v: &usize) -> bool {
    *v == 0
}

/// Most hot entries an arch can have (20 kernels + 20 expands + 1 resolution for the reference).
pub const MAX_HOT: usize = 64;

impl Encoding {
    /// The reference library's encoding for `space`.
    pub fn library(space: &SearchSpace) -> Encoding {
        let resnet = space.family == Family::ResNet;
        Encoding {
            layout: if resnet {
                Layout::ResNet
            } else {
                Layout::ResolutionFirst
            },
            n_blocks: space.n_elastic_blocks(),
            max_depth: space.max_depth(),
            ks: if resnet {
                Vec::new()
            } else {
                space.ks_list.clone()
            },
            e: space.expand_ratio_list.clone(),
            resolutions: space.resolutions.clone(),
            widths: space.width_mult_list.len(),
            base_depths: if resnet {
                space.stages.iter().map(|s| s.base_depth).collect()
            } else {
                Vec::new()
            },
        }
    }

    /// The reference tutorial's 128-dimensional encoding (w1.2 ImageNet predictor).
    pub fn tutorial() -> Encoding {
        Encoding {
            layout: Layout::ResolutionLast,
            n_blocks: 20,
            max_depth: 4,
            ks: vec![3, 5, 7],
            e: vec![3.into(), 4.into(), 6.into()],
            resolutions: (0..8).map(|i| 112 + 16 * i).collect(),
            widths: 0,
            base_depths: Vec::new(),
        }
    }

    /// Input dimension.
    pub fn dim(&self) -> usize {
        let widths = match self.layout {
            Layout::ResNet => 2 + (self.base_depths.len() + 2) * self.widths,
            _ => 0,
        };
        self.n_blocks * (self.ks.len() + self.e.len()) + self.resolutions.len() + widths
    }

    /// Whether archs of `space` can be encoded: same block structure, choices and resolutions
    /// covered. The error says what differs.
    pub fn check_space(&self, space: &SearchSpace) -> Result<(), SpaceError> {
        let mismatch = |what: String| Err(SpaceError::InvalidArch(what));
        let for_resnet = self.layout == Layout::ResNet;
        if for_resnet != (space.family == Family::ResNet) {
            return mismatch(format!(
                "the encoding is {}a ResNet one, the space `{}` is {}",
                if for_resnet { "" } else { "not " },
                space.name,
                space.family.label()
            ));
        }
        if for_resnet {
            let bases: Vec<u32> = space.stages.iter().map(|s| s.base_depth).collect();
            if self.widths != space.width_mult_list.len() || self.base_depths != bases {
                return mismatch(format!(
                    "the encoding is for {} widths and base depths {:?}, the space `{}` has {} and {bases:?}",
                    self.widths,
                    self.base_depths,
                    space.name,
                    space.width_mult_list.len()
                ));
            }
        }
        if self.n_blocks != space.n_elastic_blocks() || self.max_depth != space.max_depth() {
            return mismatch(format!(
                "the encoding is for {} blocks of depth {}, the space `{}` has {} of depth {}",
                self.n_blocks,
                self.max_depth,
                space.name,
                space.n_elastic_blocks(),
                space.max_depth()
            ));
        }
        if !for_resnet {
            if let Some(v) = space.ks_list.iter().find(|v| !self.ks.contains(v)) {
                return mismatch(format!(
                    "kernel choice {v} of the space `{}` is not encoded (encoded: {:?})",
                    space.name, self.ks
                ));
            }
        }
        if let Some(v) = space.expand_ratio_list.iter().find(|v| !self.e.contains(v)) {
            return mismatch(format!(
                "expand choice {v} of the space `{}` is not encoded (encoded: {:?})",
                space.name, self.e
            ));
        }
        Ok(())
    }

    /// [`Encoding::hot_into`] for the ResNet layout, as `ResNetArchEncoder.arch2feature` with one
    /// difference: the stem's slot says whether the middle conv runs (`d[0]` is the largest
    /// depth), where the reference tests `d[0] > 0`, which also holds for `d[0]` = 1, a network
    /// that skips it. The two agree on every arch the reference samples (`d[0]` ∈ {0, 2}).
    fn resnet_hot_into(
        &self,
        arch: &ArchConfig,
        ri: usize,
        out: &mut Vec<u32>,
    ) -> Result<(), SpaceError> {
        let n_stages = self.base_depths.len();
        if arch.e.len() != self.n_blocks
            || arch.d.len() != n_stages + 1
            || arch.w.len() != n_stages + 2
        {
            return Err(SpaceError::InvalidArch(format!(
                "the encoding needs {} blocks, {} depths and {} widths, the arch has {}, {} and {}",
                self.n_blocks,
                n_stages + 1,
                n_stages + 2,
                arch.e.len(),
                arch.d.len(),
                arch.w.len()
            )));
        }
        let nr = self.resolutions.len();
        out.push(ri as u32);
        out.push((nr + usize::from(arch.d[0] as usize == self.max_depth)) as u32);
        let w_off = nr + 2;
        for (i, w) in arch.w.iter().enumerate() {
            if *w as usize >= self.widths {
                return Err(SpaceError::InvalidArch(format!(
                    "`w[{i}]` = {w} is not encoded ({} width choices)",
                    self.widths
                )));
            }
            out.push((w_off + i * self.widths + *w as usize) as u32);
        }
        let e_off = w_off + (n_stages + 2) * self.widths;
        let ne = self.e.len();
        let mut start = 0;
        for (i, base) in self.base_depths.iter().enumerate() {
            let depth = (base + arch.d[i + 1]) as usize;
            let room = self.max_depth + *base as usize;
            if depth > room || start + room > self.n_blocks {
                return Err(SpaceError::InvalidArch(format!(
                    "`d[{}]` = {} is outside the encoding's stage of {room} blocks",
                    i + 1,
                    arch.d[i + 1]
                )));
            }
            for j in start..start + depth {
                let e = self.e.iter().position(|v| *v == arch.e[j]).ok_or_else(|| {
                    SpaceError::InvalidArch(format!("`e[{j}]` = {} is not encoded", arch.e[j]))
                })?;
                out.push((e_off + j * ne + e) as u32);
            }
            start += room;
        }
        Ok(())
    }

    /// Hot indices of `arch`, ascending within each part, into `out` (cleared first).
    pub fn hot_into(&self, arch: &ArchConfig, out: &mut Vec<u32>) -> Result<(), SpaceError> {
        out.clear();
        let ri = self
            .resolutions
            .iter()
            .position(|r| *r == arch.r)
            .ok_or_else(|| {
                SpaceError::InvalidArch(format!(
                    "resolution {} is not encoded (encoded: {:?})",
                    arch.r, self.resolutions
                ))
            })?;
        let nk = self.ks.len();
        let ne = self.e.len();
        let nr = self.resolutions.len();
        let (r_off, k_off) = match self.layout {
            Layout::ResolutionFirst => (0, nr),
            Layout::ResolutionLast => (self.n_blocks * (nk + ne), 0),
            Layout::ResNet => return self.resnet_hot_into(arch, ri, out),
        };
        let e_off = k_off + self.n_blocks * nk;
        // Stages of `max_depth` blocks, the last possibly shorter (ProxylessNAS's one block), as
        // the reference encoders count them.
        if self.max_depth == 0 {
            return Err(SpaceError::InvalidArch(
                "the encoding has no blocks per stage (`max_depth` 0)".into(),
            ));
        }
        let n_stages = self.n_blocks.div_ceil(self.max_depth);
        if arch.ks.len() != self.n_blocks
            || arch.e.len() != self.n_blocks
            || arch.d.len() != n_stages
        {
            return Err(SpaceError::InvalidArch(format!(
                "the encoding needs {} blocks in {n_stages} stages, the arch has {} kernels, {} expands, {} depths",
                self.n_blocks,
                arch.ks.len(),
                arch.e.len(),
                arch.d.len()
            )));
        }
        if self.layout == Layout::ResolutionFirst {
            out.push((r_off + ri) as u32);
        }
        let mut es = Vec::with_capacity(self.n_blocks);
        for i in 0..self.n_blocks {
            if !arch.is_active(i, self.max_depth) {
                continue;
            }
            let k = self
                .ks
                .iter()
                .position(|v| *v == arch.ks[i])
                .ok_or_else(|| {
                    SpaceError::InvalidArch(format!("`ks[{i}]` = {} is not encoded", arch.ks[i]))
                })?;
            let e = self.e.iter().position(|v| *v == arch.e[i]).ok_or_else(|| {
                SpaceError::InvalidArch(format!("`e[{i}]` = {} is not encoded", arch.e[i]))
            })?;
            out.push((k_off + i * nk + k) as u32);
            es.push((e_off + i * ne + e) as u32);
        }
        out.extend(es);
        if self.layout == Layout::ResolutionLast {
            out.push((r_off + ri) as u32);
        }
        Ok(())
    }

    /// Dense 0/1 feature vector of `arch`.
    pub fn dense(&self, arch: &ArchConfig) -> Result<Vec<f32>, SpaceError> {
        let mut hot = Vec::with_capacity(MAX_HOT);
        self.hot_into(arch, &mut hot)?;
        let mut v = vec![0.0; self.dim()];
        for h in hot {
            v[h as usize] = 1.0;
        }
        Ok(v)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn library_layout_puts_the_resolution_first_and_zeroes_skipped_blocks() {
        let s = SearchSpace::preset("ofa-mbv3-w1.0").unwrap();
        let enc = Encoding::library(&s);
        assert_eq!(enc.dim(), s.resolutions.len() + 120);
        let mut a = ArchConfig::smallest(&s);
        a.r = s.resolutions[1];
        let mut hot = Vec::new();
        enc.hot_into(&a, &mut hot).unwrap();
        // 1 resolution + 2 active blocks per stage × (kernel + expand)
        assert_eq!(hot.len(), 1 + 2 * 10);
        assert_eq!(hot[0], 1);
        let nr = s.resolutions.len() as u32;
        assert_eq!(hot[1], nr); // block 0, kernel 3
        assert_eq!(hot[2], nr + 3); // block 1, kernel 3
        assert_eq!(hot[3], nr + 4 * 3); // block 4 (stage 1), kernel 3
                                        // changing a skipped block changes nothing
        let mut b = a.clone();
        b.ks[3] = 7;
        b.e[3] = 6.into();
        assert_eq!(enc.dense(&a).unwrap(), enc.dense(&b).unwrap());
        b.ks[0] = 7;
        assert_ne!(enc.dense(&a).unwrap(), enc.dense(&b).unwrap());
    }

    #[test]
    fn proxyless_encodes_as_the_reference_mbv2_encoder_and_bad_encodings_are_errors() {
        // MobileNetArchEncoder(SPACE_TYPE "mbv2"): 21 blocks, block i in stage i // 4, the last
        // stage one block; resolution first
        let s = SearchSpace::preset("ofa-proxyless-tiny").unwrap();
        let enc = Encoding::library(&s);
        assert_eq!(enc.dim(), 5 + 21 * 6);
        let mut a = ArchConfig::smallest(&s);
        a.ks[20] = 7;
        a.e[20] = 6.into();
        a.r = 36;
        let mut hot = Vec::new();
        enc.hot_into(&a, &mut hot).unwrap();
        // r = 36 is slot 1; blocks 0, 1 of each stage and block 20 are active
        let blocks: Vec<usize> = (0..21).filter(|i| i % 4 < 2 || *i == 20).collect();
        let mut want = vec![1u32];
        want.extend(
            blocks
                .iter()
                .map(|&i| (5 + i * 3 + if i == 20 { 2 } else { 0 }) as u32),
        );
        want.extend(
            blocks
                .iter()
                .map(|&i| (5 + 21 * 3 + i * 3 + if i == 20 { 2 } else { 0 }) as u32),
        );
        assert_eq!(hot, want);
        // an encoding with no blocks per stage is an error, not a division by zero
        let mut bad = enc.clone();
        bad.max_depth = 0;
        let e = bad.hot_into(&a, &mut hot).unwrap_err().to_string();
        assert!(e.contains("`max_depth` 0"), "{e}");
        let mut short = a.clone();
        short.d.pop();
        let e = enc.hot_into(&short, &mut hot).unwrap_err().to_string();
        assert!(e.contains("21 blocks in 6 stages"), "{e}");
    }

    #[test]
    fn tutorial_layout_matches_the_documented_indices() {
        // index rules from reference-data/README.md
        let enc = Encoding::tutorial();
        assert_eq!(enc.dim(), 128);
        let a = ArchConfig {
            ks: vec![5; 20],
            e: vec![6.into(); 20],
            d: vec![4, 4, 4, 4, 4],
            w: Vec::new(),
            r: 192,
        };
        let mut hot = Vec::new();
        enc.hot_into(&a, &mut hot).unwrap();
        assert_eq!(hot.len(), 41);
        assert_eq!(hot[0], 1);
        assert_eq!(hot[20], 60 + 2);
        assert_eq!(*hot.last().unwrap(), 120 + (192 - 112) / 16);
        let mut bad = a.clone();
        bad.r = 200;
        assert!(enc
            .hot_into(&bad, &mut hot)
            .unwrap_err()
            .to_string()
            .contains("resolution 200"));
    }
}
