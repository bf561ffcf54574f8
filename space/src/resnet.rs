//! The ResNet family's layout (`OFAResNets`): the width choices of the stem and the stages, and
//! the stem and bottleneck blocks an arch runs, as the reference derives them.

use crate::arch::ArchConfig;
use crate::error::SpaceError;
use crate::ratio::Ratio;
use crate::space::{make_divisible, Activation, SearchSpace, CHANNEL_DIVISIBLE, MAX_WIDTH_MULT};

/// The stem an arch runs: conv 3×3/2 (`in → mid`), the residual conv 3×3 (`mid → mid`) unless
/// skipped, conv 3×3 (`mid → out`), then max-pool 3×3/2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResNetStem {
    /// Width of the first conv and of the residual conv (`w[0]`).
    pub mid: u32,
    /// Width of the third conv (`w[1]`).
    pub out: u32,
    /// Whether the residual conv runs (`d[0]` is the largest depth choice).
    pub middle: bool,
}

/// One bottleneck block an arch runs, with its resolved widths: conv 1×1 (`in → mid`), conv 3×3
/// with the stride (`mid → mid`), conv 1×1 (`mid → out`), each with BN (ReLU after the first two),
/// plus the shortcut, then ReLU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bottleneck {
    /// Supernet block index (0-based over every stage's blocks; the entry of `e`).
    pub index: usize,
    /// Stage (0..4).
    pub stage: usize,
    /// Position inside its stage.
    pub pos_in_stage: usize,
    /// Input width.
    pub in_ch: u32,
    /// Middle width: `make_divisible(round(out · e), 8)`.
    pub mid: u32,
    /// Output width.
    pub out_ch: u32,
    /// Stride of the 3×3 conv (and of the shortcut's average pool).
    pub stride: u32,
    /// Expand ratio in use.
    pub e: Ratio,
    /// Whether the shortcut is average-pool + 1×1 conv + BN (the first block of a stage) rather
    /// than the identity.
    pub downsample: bool,
}

/// One supernet bottleneck: the largest widths it stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BottleneckSpec {
    /// Supernet block index.
    pub index: usize,
    /// Stage (0..4).
    pub stage: usize,
    /// Position inside its stage.
    pub pos_in_stage: usize,
    /// Largest input width.
    pub max_in: u32,
    /// Largest middle width: `make_divisible(round(max_out · max_e), 8)`.
    pub max_mid: u32,
    /// Largest output width.
    pub max_out: u32,
    /// Stride.
    pub stride: u32,
    /// Whether it holds the downsample shortcut (avg-pool + 1×1 conv + BN).
    pub downsample: bool,
}

/// `make_divisible(round(out · e), 8)`: a bottleneck's middle width.
pub fn bottleneck_mid(out: u32, e: Ratio) -> u32 {
    make_divisible(e.times(out), CHANNEL_DIVISIBLE)
}

impl SearchSpace {
    /// Output width choices of the stem (`make_divisible(64 · w, 8)` per width multiplier).
    pub fn resnet_stem_widths(&self) -> Vec<u32> {
        self.width_mult_list
            .iter()
            .map(|w| make_divisible(f64::from(self.stem_base_width) * w, CHANNEL_DIVISIBLE))
            .collect()
    }

    /// Width choices of the stem's first conv and residual conv: `make_divisible(c // 2, 8)` of
    /// each output choice.
    pub fn resnet_stem_mid_widths(&self) -> Vec<u32> {
        self.resnet_stem_widths()
            .iter()
            .map(|c| make_divisible(f64::from(c / 2), CHANNEL_DIVISIBLE))
            .collect()
    }

    /// Width choices of each stage, one per width multiplier.
    pub fn resnet_stage_widths(&self) -> Vec<Vec<u32>> {
        self.stages
            .iter()
            .map(|s| {
                self.width_mult_list
                    .iter()
                    .map(|w| make_divisible(f64::from(s.base_width) * w, CHANNEL_DIVISIBLE))
                    .collect()
            })
            .collect()
    }

    /// Every supernet bottleneck with the largest widths it stores (none for an MBConv family).
    pub fn resnet_blocks(&self) -> Vec<BottleneckSpec> {
        if self.family.is_mbconv() {
            return Vec::new();
        }
        let max = |l: &[u32]| l.iter().copied().max().unwrap_or(0);
        let mut cin = max(&self.resnet_stem_widths());
        let max_e = self.max_expand();
        let mut out = Vec::new();
        let n_blocks = self.stage_blocks();
        for (stage, (st, widths)) in self
            .stages
            .iter()
            .zip(self.resnet_stage_widths())
            .enumerate()
        {
            let cout = max(&widths);
            for pos in 0..n_blocks[stage] {
                out.push(BottleneckSpec {
                    index: out.len(),
                    stage,
                    pos_in_stage: pos,
                    max_in: cin,
                    max_mid: bottleneck_mid(cout, max_e),
                    max_out: cout,
                    stride: if pos == 0 { st.stride } else { 1 },
                    downsample: pos == 0,
                });
                cin = cout;
            }
        }
        out
    }

    /// The family's layout rules: what `OFAResNets` can build, and where its supernet and its
    /// static subnets agree.
    pub(crate) fn validate_resnet(&self) -> Result<(), SpaceError> {
        let bad = |what: String| Err(SpaceError::InvalidSpace(what));
        if self.stages.len() != 4 {
            return bad(format!(
                "`stages` must hold ResNet's 4 bottleneck stages, got {}",
                self.stages.len()
            ));
        }
        if self
            .stages
            .iter()
            .any(|s| s.blocks.is_some() || s.base_depth == 0)
        {
            return bad(
                "ResNet stages have a `base_depth` of at least 1 and no fixed count".into(),
            );
        }
        if self
            .stages
            .iter()
            .any(|s| s.se || s.act != Activation::Relu)
        {
            return bad("ResNet stages are ReLU without SE".into());
        }
        if self.final_expand_base_width.is_some() || self.last_channel_base_width.is_some() {
            return bad("ResNet has no final expand or feature mix layer".into());
        }
        if self.ks_list != [3] {
            return bad(format!(
                "ResNet's kernel is 3, not elastic: `ks_list` must be [3], got {:?}",
                self.ks_list
            ));
        }
        if self.width_mult != 1.0 {
            return bad(format!(
                "ResNet's widths are elastic: give `width_mult_list` and `width_mult` 1, got {}",
                self.width_mult
            ));
        }
        let w = &self.width_mult_list;
        if w.is_empty()
            || w.iter()
                .any(|v| !(v.is_finite() && *v > 0.0 && *v <= MAX_WIDTH_MULT))
            || w.windows(2).any(|p| p[0] >= p[1])
        {
            return bad(format!(
                "`width_mult_list` must hold ascending multipliers in (0, {MAX_WIDTH_MULT}], got {w:?}"
            ));
        }
        // The reference's supernet gives a stride-1 stage's first block the identity when the
        // width lists around it are equal, its static block when the two chosen widths are: they
        // agree only if no width entering a stride-1 stage is one of the stage's own.
        let mut entering = self.resnet_stem_widths();
        for (i, (st, widths)) in self
            .stages
            .iter()
            .zip(self.resnet_stage_widths())
            .enumerate()
        {
            if st.stride == 1 {
                if let Some(c) = widths.iter().find(|c| entering.contains(c)) {
                    return bad(format!(
                        "stage {i} (stride 1) has width {c} among its choices and among the \
                         widths entering it; the reference's supernet and subnet would build \
                         different shortcuts"
                    ));
                }
            }
            entering = widths;
        }
        Ok(())
    }
}

impl ArchConfig {
    /// The stem a ResNet arch runs. Assumes a config validated against `space`.
    pub fn resnet_stem(&self, space: &SearchSpace) -> ResNetStem {
        ResNetStem {
            mid: space.resnet_stem_mid_widths()[self.w[0] as usize],
            out: space.resnet_stem_widths()[self.w[1] as usize],
            middle: self.d[0] as usize == space.max_depth(),
        }
    }

    /// The bottlenecks a ResNet arch runs, in order: the first `base_depth + d[1 + stage]` of
    /// each stage (none for an MBConv family). Assumes a config validated against `space`.
    pub fn bottlenecks(&self, space: &SearchSpace) -> Vec<Bottleneck> {
        if space.family.is_mbconv() {
            return Vec::new();
        }
        let mut cin = space.resnet_stem_widths()[self.w[1] as usize];
        let widths = space.resnet_stage_widths();
        let mut out = Vec::with_capacity(self.e.len());
        for b in space.resnet_blocks() {
            let st = &space.stages[b.stage];
            if b.pos_in_stage >= (st.base_depth + self.d[1 + b.stage]) as usize {
                continue;
            }
            let cout = widths[b.stage][self.w[2 + b.stage] as usize];
            let e = self.e[b.index];
            out.push(Bottleneck {
                index: b.index,
                stage: b.stage,
                pos_in_stage: b.pos_in_stage,
                in_ch: cin,
                mid: bottleneck_mid(cout, e),
                out_ch: cout,
                stride: b.stride,
                e,
                downsample: b.downsample,
            });
            cin = cout;
        }
        out
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn resnet50_widths_follow_the_reference_construction() {
        // OFAResNets(width_mult_list=[0.65, 0.8, 1.0])
        let s = SearchSpace::preset("ofa-resnet50").unwrap();
        s.validate().unwrap();
        assert_eq!(s.resnet_stem_widths(), vec![40, 48, 64]);
        assert_eq!(s.resnet_stem_mid_widths(), vec![24, 24, 32]);
        assert_eq!(
            s.resnet_stage_widths(),
            vec![
                vec![168, 208, 256],
                vec![336, 408, 512],
                vec![664, 816, 1024],
                vec![1328, 1640, 2048]
            ]
        );
        assert_eq!(s.stage_blocks(), vec![4, 4, 6, 4]);
        assert_eq!((s.n_elastic_blocks(), s.n_stages()), (18, 5));
        let b = s.resnet_blocks();
        // max middle: make_divisible(round(256 · 0.35), 8) = make_divisible(90, 8) = 88
        assert_eq!((b[0].max_in, b[0].max_mid, b[0].max_out), (64, 88, 256));
        assert!(b[0].downsample && !b[1].downsample && b[4].downsample);
        assert_eq!(
            (b[4].stride, b[17].max_mid, s.last_channel()),
            (2, 720, 2048)
        );
    }

    #[test]
    fn spaces_whose_supernet_and_subnets_disagree_are_refused() {
        let ok = SearchSpace::preset("ofa-resnet-tiny").unwrap();
        ok.validate().unwrap();
        let refused = |f: &dyn Fn(&mut SearchSpace), says: &str| {
            crate::space::tests::assert_refused(&ok, f, says)
        };
        // stem widths 8, 8, 8 and stage-0 widths 8, … at a multiplier of 0.025
        refused(
            &|s| s.width_mult_list = vec![0.025, 0.1],
            "among the widths entering it",
        );
        refused(&|s| s.width_mult_list = vec![0.1, 0.05], "ascending");
        refused(&|s| s.ks_list = vec![3, 5], "must be [3]");
        refused(
            &|s| s.stages[1].base_depth = 0,
            "`base_depth` of at least 1",
        );
        refused(&|s| s.width_mult = 2.0, "`width_mult` 1");
        refused(
            &|s| s.last_channel_base_width = Some(1280),
            "no final expand",
        );
        refused(
            &|s| s.stages.pop().map(drop).unwrap_or(()),
            "4 bottleneck stages",
        );
        // whole and fractional ratios are both ResNet's; MBConv takes whole ones only
        let mut m = SearchSpace::preset("ofa-mbv3-tiny").unwrap();
        m.expand_ratio_list[0] = Ratio::new(0.5).unwrap();
        assert!(m
            .validate()
            .unwrap_err()
            .to_string()
            .contains("whole numbers"));
    }
}
