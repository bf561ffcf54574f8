//! The search space: everything that defines one OFA MobileNetV3 supernet family.

use serde::{Deserialize, Serialize};

use crate::error::SpaceError;

/// The reference's channel divisor (`MyNetwork.CHANNEL_DIVISIBLE`).
pub const CHANNEL_DIVISIBLE: u32 = 8;

/// Number of elastic stages of OFA MobileNetV3.
pub const N_STAGES: usize = 5;

/// The reference's `make_divisible(v, divisor)` with `min_val = divisor`:
/// `n = max(d, int(v + d/2) // d * d)`, plus one more `d` if that lost more than 10 %.
pub fn make_divisible(v: f64, divisor: u32) -> u32 {
    let d = f64::from(divisor);
    let mut n = ((v + d / 2.0).floor() / d).floor() * d;
    n = n.max(d);
    if n < 0.9 * v {
        n += d;
    }
    n as u32
}

/// Activation function of a layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// `max(x, 0)`
    Relu,
    /// `x · relu6(x + 3) / 6`
    HSwish,
}

impl Activation {
    /// The reference's name (`act_func` in `net.config`).
    pub fn reference_name(self) -> &'static str {
        match self {
            Activation::Relu => "relu",
            Activation::HSwish => "h_swish",
        }
    }
}

/// One stage of the network: the static first block (stage 0) or an elastic stage (1..=5).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageSpec {
    /// Output width before `width_mult` is applied (the reference's `base_stage_width`).
    pub base_width: u32,
    /// Stride of the stage's first block.
    pub stride: u32,
    /// Activation of the stage's expand and depthwise layers.
    pub act: Activation,
    /// Whether the stage's blocks carry squeeze-and-excitation.
    pub se: bool,
}

/// Largest input resolution a space may name.
pub const MAX_RESOLUTION: u32 = 8192;
/// Largest width multiplier.
pub const MAX_WIDTH_MULT: f64 = 16.0;
/// Largest base width (before the multiplier).
pub const MAX_BASE_WIDTH: u32 = 1 << 14;
/// Most input channels.
pub const MAX_IN_CHANNELS: u32 = 64;
/// Most classes.
pub const MAX_CLASSES: u32 = 1 << 20;
/// Largest stride.
pub const MAX_STRIDE: u32 = 8;

/// Everything that defines a supernet family. Serialised as JSON inside every checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchSpace {
    /// Preset name, or a free label for a custom space.
    pub name: String,
    /// Width multiplier applied to every base width.
    pub width_mult: f64,
    /// Input image channels (3 for RGB, 1 for grayscale).
    pub in_channels: u32,
    /// Classifier outputs.
    pub n_classes: u32,
    /// First conv output width before `width_mult` (reference: 16).
    pub stem_base_width: u32,
    /// Stage 0 (the static first block) then the five elastic stages.
    pub stages: Vec<StageSpec>,
    /// Final expand width before `width_mult` (reference: 960).
    pub final_expand_base_width: u32,
    /// Feature mix (last channel) width before `width_mult` (reference: 1280).
    pub last_channel_base_width: u32,
    /// Elastic kernel sizes (odd).
    pub ks_list: Vec<u32>,
    /// Elastic expand ratios.
    pub expand_ratio_list: Vec<u32>,
    /// Elastic depths per stage.
    pub depth_list: Vec<u32>,
    /// Input resolutions the space is trained for.
    pub resolutions: Vec<u32>,
    /// Classifier dropout in training.
    #[serde(default)]
    pub dropout_rate: f64,
    /// BatchNorm momentum (PyTorch convention).
    #[serde(default = "default_bn_momentum")]
    pub bn_momentum: f64,
    /// BatchNorm epsilon.
    #[serde(default = "default_bn_eps")]
    pub bn_eps: f64,
}

fn default_bn_momentum() -> f64 {
    0.1
}
fn default_bn_eps() -> f64 {
    1e-5
}

/// Derived, fully resolved shape of one supernet block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockSpec {
    /// Supernet block index (0 = the static first block, 1..=20 elastic).
    pub index: usize,
    /// Stage (0 = first block, 1..=5 elastic stages).
    pub stage: usize,
    /// Position inside its stage.
    pub pos_in_stage: usize,
    /// Input width.
    pub in_ch: u32,
    /// Largest middle width the supernet stores (for block 0, its only middle width).
    pub max_mid: u32,
    /// Output width.
    pub out_ch: u32,
    /// Stride of the depthwise convolution.
    pub stride: u32,
    /// Activation.
    pub act: Activation,
    /// Squeeze-and-excitation present.
    pub se: bool,
    /// Identity shortcut (stride 1 and in == out).
    pub shortcut: bool,
    /// Largest kernel the supernet stores.
    pub max_ks: u32,
}

impl BlockSpec {
    /// Middle width for an expand ratio (elastic blocks: `make_divisible(round(in · e), 8)`).
    pub fn mid(&self, e: u32) -> u32 {
        if self.index == 0 {
            self.max_mid
        } else {
            make_divisible(f64::from(self.in_ch * e), CHANNEL_DIVISIBLE)
        }
    }
}

/// Squeeze-and-excitation hidden width for a middle width: `make_divisible(m // 4, 8)`.
pub fn se_width(mid: u32) -> u32 {
    make_divisible(f64::from(mid / 4), CHANNEL_DIVISIBLE)
}

/// Output size of a convolution with padding `k // 2` (odd k): `(f - 1) / s + 1`.
pub fn conv_out(f: u32, stride: u32) -> u32 {
    (f - 1) / stride + 1
}

const REF_BASE: [u32; 9] = [16, 16, 24, 40, 80, 112, 160, 960, 1280];

impl SearchSpace {
    /// The reference OFAMobileNetV3 layout with the given width multiplier and choice lists.
    pub fn mobilenet_v3(
        name: &str,
        width_mult: f64,
        n_classes: u32,
        resolutions: Vec<u32>,
    ) -> SearchSpace {
        let acts = [
            Activation::Relu,
            Activation::Relu,
            Activation::Relu,
            Activation::HSwish,
            Activation::HSwish,
            Activation::HSwish,
        ];
        let se = [false, false, true, false, true, true];
        let strides = [1, 2, 2, 2, 1, 2];
        let stages = (0..6)
            .map(|i| StageSpec {
                base_width: REF_BASE[i + 1],
                stride: strides[i],
                act: acts[i],
                se: se[i],
            })
            .collect();
        SearchSpace {
            name: name.to_string(),
            width_mult,
            in_channels: 3,
            n_classes,
            stem_base_width: REF_BASE[0],
            stages,
            final_expand_base_width: REF_BASE[7],
            last_channel_base_width: REF_BASE[8],
            ks_list: vec![3, 5, 7],
            expand_ratio_list: vec![3, 4, 6],
            depth_list: vec![2, 3, 4],
            resolutions,
            dropout_rate: 0.1,
            bn_momentum: 0.1,
            bn_eps: 1e-5,
        }
    }

    /// Names accepted by [`SearchSpace::preset`].
    pub const PRESETS: &'static [&'static str] = &[
        "ofa-mbv3-w1.0",
        "ofa-mbv3-w1.2",
        "ofa-mbv3-tiny",
        "ofa-mbv3-small32",
    ];

    /// A named preset:
    /// - `ofa-mbv3-w1.0`, `ofa-mbv3-w1.2`: the reference ImageNet supernets (1000 classes,
    ///   resolutions 128..=224 step 4);
    /// - `ofa-mbv3-tiny`: width 0.25, 10 classes, resolutions 32..=48 step 4 (the conformance
    ///   fixture's construction);
    /// - `ofa-mbv3-small32`: width 0.5, 10 classes, grayscale 28/32 px data (Fashion-MNIST).
    pub fn preset(name: &str) -> Result<SearchSpace, SpaceError> {
        let imagenet_res: Vec<u32> = (128..=224).step_by(4).collect();
        let s = match name {
            "ofa-mbv3-w1.0" => Self::mobilenet_v3(name, 1.0, 1000, imagenet_res),
            "ofa-mbv3-w1.2" => Self::mobilenet_v3(name, 1.2, 1000, imagenet_res),
            "ofa-mbv3-tiny" => {
                let mut s = Self::mobilenet_v3(name, 0.25, 10, (32..=48).step_by(4).collect());
                s.dropout_rate = 0.0;
                s
            }
            "ofa-mbv3-small32" => {
                let mut s = Self::mobilenet_v3(name, 0.5, 10, vec![24, 28, 32]);
                s.in_channels = 1;
                s
            }
            other => {
                return Err(SpaceError::UnknownPreset {
                    name: other.to_string(),
                    known: Self::PRESETS.join(", "),
                })
            }
        };
        Ok(s)
    }

    /// Check internal consistency (choice lists non-empty, odd kernels, six stages, …).
    pub fn validate(&self) -> Result<(), SpaceError> {
        let bad = |what: String| Err(SpaceError::InvalidSpace(what));
        if self.stages.len() != N_STAGES + 1 {
            return bad(format!(
                "`stages` must hold 6 entries (first block + 5 elastic stages), got {}",
                self.stages.len()
            ));
        }
        if !(self.width_mult.is_finite() && self.width_mult > 0.0) {
            return bad(format!(
                "`width_mult` must be positive, got {}",
                self.width_mult
            ));
        }
        if self.in_channels == 0 || self.n_classes == 0 {
            return bad("`in_channels` and `n_classes` must be positive".into());
        }
        for (field, list) in [
            ("ks_list", &self.ks_list),
            ("expand_ratio_list", &self.expand_ratio_list),
            ("depth_list", &self.depth_list),
            ("resolutions", &self.resolutions),
        ] {
            if list.is_empty() {
                return bad(format!("`{field}` is empty"));
            }
            if list.contains(&0) {
                return bad(format!("`{field}` contains 0"));
            }
            let mut sorted = (*list).clone();
            sorted.sort_unstable();
            sorted.dedup();
            if sorted.len() != list.len() {
                return bad(format!("`{field}` has duplicate entries: {list:?}"));
            }
        }
        if let Some(k) = self.ks_list.iter().find(|k| *k % 2 == 0) {
            return bad(format!("`ks_list` must hold odd kernel sizes, got {k}"));
        }
        if let Some(v) = self
            .ks_list
            .iter()
            .chain(&self.expand_ratio_list)
            .chain(&self.depth_list)
            .find(|v| **v >= 64)
        {
            return bad(format!(
                "kernel sizes, expand ratios and depths must be below 64, got {v}"
            ));
        }
        // An elastic block always holds its inverted bottleneck; at e = 1 the reference's
        // MBConvLayer has none, so a subnet cut there would not be the network it describes.
        if self.expand_ratio_list.contains(&1) {
            return bad(
                "`expand_ratio_list` must not hold 1: elastic blocks always expand (the reference's \
                 MBConvLayer drops the inverted bottleneck at 1)"
                    .into(),
            );
        }
        // Bounds far above any MobileNetV3, so that a hostile file cannot make the widths,
        // costs or tensor shapes derived from a space overflow or exhaust memory.
        if let Some(r) = self.resolutions.iter().find(|r| **r > MAX_RESOLUTION) {
            return bad(format!(
                "resolutions must be at most {MAX_RESOLUTION}, got {r}"
            ));
        }
        if self.width_mult > MAX_WIDTH_MULT {
            return bad(format!(
                "`width_mult` must be at most {MAX_WIDTH_MULT}, got {}",
                self.width_mult
            ));
        }
        if let Some(w) = [
            self.stem_base_width,
            self.final_expand_base_width,
            self.last_channel_base_width,
        ]
        .into_iter()
        .chain(self.stages.iter().map(|s| s.base_width))
        .find(|w| *w > MAX_BASE_WIDTH)
        {
            return bad(format!(
                "base widths must be at most {MAX_BASE_WIDTH}, got {w}"
            ));
        }
        if self.in_channels > MAX_IN_CHANNELS || self.n_classes > MAX_CLASSES {
            return bad(format!(
                "`in_channels` must be at most {MAX_IN_CHANNELS} and `n_classes` at most {MAX_CLASSES}, got {} and {}",
                self.in_channels, self.n_classes
            ));
        }
        if let Some(s) = self.stages.iter().find(|s| s.stride > MAX_STRIDE) {
            return bad(format!(
                "strides must be at most {MAX_STRIDE}, got {}",
                s.stride
            ));
        }
        let eps_ok = self.bn_eps.is_finite() && self.bn_eps > 0.0;
        let momentum_ok = (0.0..=1.0).contains(&self.bn_momentum);
        let dropout_ok = (0.0..1.0).contains(&self.dropout_rate);
        if !(eps_ok && momentum_ok && dropout_ok) {
            return bad(format!(
                "`bn_eps` must be positive, `bn_momentum` in [0, 1] and `dropout_rate` in [0, 1), got {}, {} and {}",
                self.bn_eps, self.bn_momentum, self.dropout_rate
            ));
        }
        if self
            .stages
            .iter()
            .any(|s| s.stride == 0 || s.base_width == 0)
        {
            return bad("every stage needs a positive stride and width".into());
        }
        Ok(())
    }

    /// First conv output width.
    pub fn stem_width(&self) -> u32 {
        self.scaled(self.stem_base_width)
    }

    /// Output width of each stage (index 0 = the first block).
    pub fn stage_widths(&self) -> Vec<u32> {
        self.stages
            .iter()
            .map(|s| self.scaled(s.base_width))
            .collect()
    }

    /// Final expand (1×1 conv) width.
    pub fn final_expand_width(&self) -> u32 {
        self.scaled(self.final_expand_base_width)
    }

    /// Feature mix width (input of the classifier).
    pub fn last_channel(&self) -> u32 {
        self.scaled(self.last_channel_base_width)
    }

    fn scaled(&self, base: u32) -> u32 {
        make_divisible(f64::from(base) * self.width_mult, CHANNEL_DIVISIBLE)
    }

    /// Blocks per elastic stage in the supernet (`max(depth_list)`).
    pub fn max_depth(&self) -> usize {
        self.depth_list.iter().copied().max().unwrap_or(0) as usize
    }

    /// Number of elastic blocks (the length of `ks` and `e` in an [`crate::ArchConfig`]).
    pub fn n_elastic_blocks(&self) -> usize {
        N_STAGES * self.max_depth()
    }

    /// Largest kernel size.
    pub fn max_ks(&self) -> u32 {
        self.ks_list.iter().copied().max().unwrap_or(0)
    }

    /// Largest expand ratio.
    pub fn max_expand(&self) -> u32 {
        self.expand_ratio_list.iter().copied().max().unwrap_or(0)
    }

    /// Kernel sizes sorted ascending (the reference's `_ks_set`).
    pub fn ks_sorted(&self) -> Vec<u32> {
        let mut v = self.ks_list.clone();
        v.sort_unstable();
        v
    }

    /// Kernel transform matrices of each elastic depthwise conv: `(from, to)` pairs, largest first,
    /// named `{from}to{to}_matrix` with shape `[to², to²]`.
    pub fn kernel_transforms(&self) -> Vec<(u32, u32)> {
        let ks = self.ks_sorted();
        ks.windows(2).rev().map(|w| (w[1], w[0])).collect()
    }

    /// All 1 + 5·max_depth supernet blocks with their derived shapes.
    pub fn blocks(&self) -> Vec<BlockSpec> {
        let widths = self.stage_widths();
        let stem = self.stem_width();
        let mut out = Vec::with_capacity(1 + self.n_elastic_blocks());
        let s0 = &self.stages[0];
        out.push(BlockSpec {
            index: 0,
            stage: 0,
            pos_in_stage: 0,
            in_ch: stem,
            max_mid: stem,
            out_ch: widths[0],
            stride: s0.stride,
            act: s0.act,
            se: s0.se,
            shortcut: s0.stride == 1 && stem == widths[0],
            max_ks: 3,
        });
        let mut cin = widths[0];
        let max_e = self.max_expand();
        for (stage, (st, &cout)) in self.stages.iter().zip(&widths).enumerate().skip(1) {
            for pos in 0..self.max_depth() {
                let stride = if pos == 0 { st.stride } else { 1 };
                out.push(BlockSpec {
                    index: out.len(),
                    stage,
                    pos_in_stage: pos,
                    in_ch: cin,
                    max_mid: make_divisible(f64::from(cin * max_e), CHANNEL_DIVISIBLE),
                    out_ch: cout,
                    stride,
                    act: st.act,
                    se: st.se,
                    shortcut: stride == 1 && cin == cout,
                    max_ks: self.max_ks(),
                });
                cin = cout;
            }
        }
        out
    }

    /// Serialise to pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("derived Serialize with string keys cannot fail")
    }

    /// Parse from JSON and validate.
    pub fn from_json(s: &str) -> Result<SearchSpace, SpaceError> {
        let space: SearchSpace =
            serde_json::from_str(s).map_err(|e| SpaceError::Json(e.to_string()))?;
        space.validate()?;
        Ok(space)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn make_divisible_matches_reference() {
        // width_mult 1.0 and 1.2 from OFA-REFERENCE.md §1.
        let w10: Vec<u32> = REF_BASE
            .iter()
            .map(|&b| make_divisible(f64::from(b), 8))
            .collect();
        assert_eq!(w10, vec![16, 16, 24, 40, 80, 112, 160, 960, 1280]);
        let w12: Vec<u32> = REF_BASE
            .iter()
            .map(|&b| make_divisible(f64::from(b) * 1.2, 8))
            .collect();
        assert_eq!(w12, vec![24, 24, 32, 48, 96, 136, 192, 1152, 1536]);
        let w025: Vec<u32> = REF_BASE
            .iter()
            .map(|&b| make_divisible(f64::from(b) * 0.25, 8))
            .collect();
        assert_eq!(w025, vec![8, 8, 8, 16, 24, 32, 40, 240, 320]);
    }

    #[test]
    fn block_shapes_w10() {
        let s = SearchSpace::preset("ofa-mbv3-w1.0").unwrap();
        let b = s.blocks();
        assert_eq!(b.len(), 21);
        assert_eq!(
            (b[1].in_ch, b[1].max_mid, b[1].out_ch, b[1].stride),
            (16, 96, 24, 2)
        );
        assert!(!b[1].shortcut && b[2].shortcut);
        assert_eq!(
            (b[13].in_ch, b[13].out_ch, b[13].stride, b[13].shortcut),
            (80, 112, 1, false)
        );
        assert_eq!(
            se_width(b[5].max_mid),
            make_divisible(f64::from(144 / 4), 8)
        );
        assert_eq!(s.kernel_transforms(), vec![(7, 5), (5, 3)]);
    }

    #[test]
    fn spaces_no_network_could_have_are_refused_by_name() {
        let ok = SearchSpace::preset("ofa-mbv3-tiny").unwrap();
        let refused = |f: &dyn Fn(&mut SearchSpace), says: &str| {
            let mut s = ok.clone();
            f(&mut s);
            let e = s.validate().unwrap_err().to_string();
            assert!(e.contains(says), "{e}");
        };
        refused(&|s| s.expand_ratio_list = vec![1, 3], "must not hold 1");
        refused(&|s| s.depth_list = vec![2, 64], "below 64, got 64");
        refused(&|s| s.resolutions = vec![32, 10_000], "at most 8192");
        refused(&|s| s.width_mult = 1e9, "`width_mult` must be at most");
        refused(
            &|s| s.stages[3].base_width = 1 << 20,
            "base widths must be at most",
        );
        refused(&|s| s.n_classes = u32::MAX, "`n_classes` at most");
        refused(&|s| s.stages[2].stride = 9, "strides must be at most 8");
        refused(&|s| s.bn_eps = f64::NAN, "`bn_eps` must be positive");
        ok.validate().unwrap();
    }
}
