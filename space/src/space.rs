//! The search space: everything that defines one OFA supernet (its family, widths, stages and
//! elastic choices).

use serde::{Deserialize, Serialize};

use crate::error::SpaceError;
use crate::ratio::Ratio;

/// The reference's channel divisor (`MyNetwork.CHANNEL_DIVISIBLE`).
pub const CHANNEL_DIVISIBLE: u32 = 8;

/// Stages of elastic depth in the MBConv families (a space's own count: [`SearchSpace::n_stages`]).
const N_STAGES: usize = 5;
/// `ResNets.BASE_DEPTH_LIST`: bottleneck blocks of each ResNet stage before elastic depth.
pub const RESNET_BASE_DEPTHS: [u32; 4] = [2, 2, 4, 2];
/// `ResNets.STAGE_WIDTH_LIST`.
const RESNET_STAGE_WIDTHS: [u32; 4] = [256, 512, 1024, 2048];

/// The network family a space describes: which reference network its supernet and subnets are,
/// and so what its stem, first block and head look like. Everything above the supernet asks the
/// space (blocks, stages, widths) rather than branching on this.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Family {
    /// `OFAMobileNetV3`: h-swish stem, a first block with a shortcut where widths allow, SE in
    /// some stages; head: final expand 1×1 (BN, h-swish), pooling, feature mix 1×1 (h-swish, no
    /// BN), classifier.
    #[default]
    #[serde(rename = "mobilenet_v3")]
    MobileNetV3,
    /// `OFAProxylessNASNets`: ReLU6 everywhere, no SE, a first block without shortcut, five
    /// elastic stages and a sixth of one elastic block; head: feature mix 1×1 (BN, ReLU6) before
    /// pooling, classifier.
    #[serde(rename = "proxyless_nas")]
    ProxylessNas,
    /// `OFAResNets`: a stem of three 3×3 convs (the middle one a skippable residual) and a 3×3
    /// max-pool, four stages of bottleneck blocks (elastic depth above a base depth, expand
    /// ratio, and width per stage), ReLU, global pooling and the classifier.
    #[serde(rename = "resnet")]
    ResNet,
}

impl Family {
    /// A name for people: `MobileNetV3`, `ProxylessNAS`.
    pub fn label(self) -> &'static str {
        match self {
            Family::MobileNetV3 => "MobileNetV3",
            Family::ProxylessNas => "ProxylessNAS",
            Family::ResNet => "ResNet",
        }
    }

    /// The reference's static network class (`name` in `net.config`).
    pub fn reference_name(self) -> &'static str {
        match self {
            Family::MobileNetV3 => "MobileNetV3",
            Family::ProxylessNas => "ProxylessNASNets",
            Family::ResNet => "ResNets",
        }
    }

    /// The reference's elastic network class.
    pub fn supernet_name(self) -> &'static str {
        match self {
            Family::MobileNetV3 => "OFAMobileNetV3",
            Family::ProxylessNas => "OFAProxylessNASNets",
            Family::ResNet => "OFAResNets",
        }
    }

    /// Activation of the stem and the head's convolutions.
    pub fn head_act(self) -> Activation {
        match self {
            Family::MobileNetV3 => Activation::HSwish,
            Family::ProxylessNas => Activation::Relu6,
            Family::ResNet => Activation::Relu,
        }
    }

    /// Whether the family is built of MBConv blocks (MobileNetV3, ProxylessNAS): elastic kernel,
    /// whole expand ratios and a fixed first block, as opposed to ResNet's bottlenecks with
    /// elastic width.
    pub fn is_mbconv(self) -> bool {
        self != Family::ResNet
    }

    /// Whether the head has MobileNetV3's final expand layer (1×1 + BN before pooling) and a
    /// feature mix without BN after pooling; otherwise the feature mix (1×1 + BN) is the layer
    /// before pooling.
    pub fn has_final_expand(self) -> bool {
        self == Family::MobileNetV3
    }

    /// Whether the first block may carry an identity shortcut (where its widths allow).
    pub fn first_block_shortcut(self) -> bool {
        self == Family::MobileNetV3
    }

    /// Whether this is MobileNetV3, the family of every file written before families existed
    /// (which is why it is left out of the JSON: those files' bytes stay as they were).
    pub fn is_default(&self) -> bool {
        *self == Family::MobileNetV3
    }
}

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
    /// `min(max(x, 0), 6)`
    Relu6,
    /// `x · relu6(x + 3) / 6`
    HSwish,
}

impl Activation {
    /// The reference's name (`act_func` in `net.config`).
    pub fn reference_name(self) -> &'static str {
        match self {
            Activation::Relu => "relu",
            Activation::Relu6 => "relu6",
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
    /// A fixed number of blocks, outside elastic depth (ProxylessNAS's last stage: 1); `None`:
    /// `base_depth + max(depth_list)` blocks, of which `base_depth` + the arch's depth run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocks: Option<u32>,
    /// Blocks that always run before the elastic ones (ResNet's `BASE_DEPTH_LIST`; 0 in the
    /// MBConv families, whose depth choices count every block).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub base_depth: u32,
}

fn is_zero(v: &u32) -> bool {
    *v == 0
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
    /// The network family (absent in files written before families: MobileNetV3).
    #[serde(default, skip_serializing_if = "Family::is_default")]
    pub family: Family,
    /// Width multiplier applied to every base width.
    pub width_mult: f64,
    /// Input image channels (3 for RGB, 1 for grayscale).
    pub in_channels: u32,
    /// Classifier outputs.
    pub n_classes: u32,
    /// First conv output width before `width_mult` (reference: 16).
    pub stem_base_width: u32,
    /// Stage 0 (the static first block) then the elastic stages (MobileNetV3: five;
    /// ProxylessNAS: five and one fixed stage of one block).
    pub stages: Vec<StageSpec>,
    /// Final expand width before `width_mult` (MobileNetV3: 960; absent in ProxylessNAS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub final_expand_base_width: Option<u32>,
    /// Feature mix (last channel) width before `width_mult` (MBConv families: 1280; absent in
    /// ResNet, whose classifier reads the last stage).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_channel_base_width: Option<u32>,
    /// Elastic kernel sizes (odd; ResNet: `[3]`, not elastic).
    pub ks_list: Vec<u32>,
    /// Elastic expand ratios (MBConv: whole, of the input width; ResNet: fractions of the
    /// output width).
    pub expand_ratio_list: Vec<Ratio>,
    /// Elastic depths per stage (ResNet: blocks added to each stage's `base_depth`).
    pub depth_list: Vec<u32>,
    /// Elastic width multipliers (ResNet: the stem's and each stage's width choices, applied to
    /// the base widths; `width_mult` is then 1). Empty in the MBConv families.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub width_mult_list: Vec<f64>,
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
    pub fn mid(&self, e: Ratio) -> u32 {
        if self.index == 0 {
            self.max_mid
        } else {
            make_divisible(e.times(self.in_ch), CHANNEL_DIVISIBLE)
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
/// `OFAProxylessNASNets`' `base_stage_width`: stem, first block, six stages, feature mix.
const PROXYLESS_BASE: [u32; 9] = [32, 16, 24, 40, 80, 96, 192, 320, 1280];

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
                blocks: None,
                base_depth: 0,
            })
            .collect();
        SearchSpace {
            name: name.to_string(),
            family: Family::MobileNetV3,
            width_mult,
            in_channels: 3,
            n_classes,
            stem_base_width: REF_BASE[0],
            stages,
            final_expand_base_width: Some(REF_BASE[7]),
            last_channel_base_width: Some(REF_BASE[8]),
            ks_list: vec![3, 5, 7],
            expand_ratio_list: vec![3.into(), 4.into(), 6.into()],
            depth_list: vec![2, 3, 4],
            width_mult_list: Vec::new(),
            resolutions,
            dropout_rate: 0.1,
            bn_momentum: 0.1,
            bn_eps: 1e-5,
        }
    }

    /// The reference `OFAProxylessNASNets` layout (`base_stage_width` of ProxylessNAS, strides
    /// 2, 2, 2, 1, 2 and a last stage of one stride-1 block, ReLU6, BN eps 1e-3) with the given
    /// width multiplier and resolutions.
    pub fn proxyless(
        name: &str,
        width_mult: f64,
        n_classes: u32,
        resolutions: Vec<u32>,
    ) -> SearchSpace {
        let strides = [1, 2, 2, 2, 1, 2, 1];
        let stages = (0..7)
            .map(|i| StageSpec {
                base_width: PROXYLESS_BASE[i + 1],
                stride: strides[i],
                act: Activation::Relu6,
                se: false,
                blocks: (i == 6).then_some(1),
                base_depth: 0,
            })
            .collect();
        SearchSpace {
            name: name.to_string(),
            family: Family::ProxylessNas,
            width_mult,
            in_channels: 3,
            n_classes,
            stem_base_width: PROXYLESS_BASE[0],
            stages,
            final_expand_base_width: None,
            last_channel_base_width: Some(PROXYLESS_BASE[8]),
            ks_list: vec![3, 5, 7],
            expand_ratio_list: vec![3.into(), 4.into(), 6.into()],
            depth_list: vec![2, 3, 4],
            width_mult_list: Vec::new(),
            resolutions,
            dropout_rate: 0.1,
            bn_momentum: 0.1,
            bn_eps: 1e-3,
        }
    }

    /// The reference `OFAResNets` layout (stem base width 64, stages of base widths 256, 512,
    /// 1024, 2048, strides 1, 2, 2, 2 and base depths 2, 2, 4, 2; depth choices 0, 1, 2, expand
    /// ratios 0.2, 0.25, 0.35) with the given width choices and resolutions.
    pub fn resnet(
        name: &str,
        width_mult_list: Vec<f64>,
        n_classes: u32,
        resolutions: Vec<u32>,
    ) -> SearchSpace {
        let strides = [1, 2, 2, 2];
        let stages = (0..4)
            .map(|i| StageSpec {
                base_width: RESNET_STAGE_WIDTHS[i],
                stride: strides[i],
                act: Activation::Relu,
                se: false,
                blocks: None,
                base_depth: RESNET_BASE_DEPTHS[i],
            })
            .collect();
        let ratio = |v| Ratio::new(v).unwrap_or(Ratio::from(1));
        SearchSpace {
            name: name.to_string(),
            family: Family::ResNet,
            width_mult: 1.0,
            in_channels: 3,
            n_classes,
            stem_base_width: 64,
            stages,
            final_expand_base_width: None,
            last_channel_base_width: None,
            ks_list: vec![3],
            expand_ratio_list: vec![ratio(0.2), ratio(0.25), ratio(0.35)],
            depth_list: vec![0, 1, 2],
            width_mult_list,
            resolutions,
            dropout_rate: 0.0,
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
        "ofa-proxyless-w1.3",
        "ofa-proxyless-tiny",
        "ofa-proxyless-small32",
        "ofa-resnet50",
        "ofa-resnet-tiny",
        "ofa-resnet-small32",
    ];

    /// A named preset:
    /// - `ofa-mbv3-w1.0`, `ofa-mbv3-w1.2`: the reference ImageNet supernets (1000 classes,
    ///   resolutions 128..=224 step 4);
    /// - `ofa-mbv3-tiny`: width 0.25, 10 classes, resolutions 32..=48 step 4 (the conformance
    ///   fixture's construction);
    /// - `ofa-mbv3-small32`: width 0.5, 10 classes, grayscale 28/32 px data (Fashion-MNIST);
    /// - `ofa-proxyless-w1.3`: the reference's published `ofa_proxyless_d234_e346_k357_w1.3`
    ///   (1000 classes, resolutions 128..=224 step 4);
    /// - `ofa-proxyless-tiny`: ProxylessNAS at width 0.25, 10 classes, resolutions 32..=48 step 4
    ///   (the conformance fixture's construction);
    /// - `ofa-proxyless-small32`: ProxylessNAS at width 0.5, 10 classes, grayscale 28/32 px data
    ///   (Fashion-MNIST), as `ofa-mbv3-small32`;
    /// - `ofa-resnet50`: the reference's published `ofa_resnet50` (widths 0.65, 0.8, 1.0, 1000
    ///   classes, resolutions 128..=224 step 4);
    /// - `ofa-resnet-tiny`: widths 0.05, 0.1, 0.125, 10 classes, resolutions 32..=48 step 4 (the
    ///   conformance fixture's construction);
    /// - `ofa-resnet-small32`: widths 0.25, 0.35, 0.5, 10 classes, grayscale 28/32 px data
    ///   (Fashion-MNIST).
    pub fn preset(name: &str) -> Result<SearchSpace, SpaceError> {
        let imagenet_res: Vec<u32> = (128..=224).step_by(4).collect();
        let tiny_res: Vec<u32> = (32..=48).step_by(4).collect();
        // the small variants of each family: the fixtures' (no dropout), Fashion-MNIST's (grayscale)
        let tiny = |mut s: SearchSpace| {
            s.dropout_rate = 0.0;
            s
        };
        let grayscale = |mut s: SearchSpace| {
            s.in_channels = 1;
            s
        };
        let s = match name {
            "ofa-mbv3-w1.0" => Self::mobilenet_v3(name, 1.0, 1000, imagenet_res),
            "ofa-mbv3-w1.2" => Self::mobilenet_v3(name, 1.2, 1000, imagenet_res),
            "ofa-mbv3-tiny" => tiny(Self::mobilenet_v3(name, 0.25, 10, tiny_res)),
            "ofa-mbv3-small32" => grayscale(Self::mobilenet_v3(name, 0.5, 10, vec![24, 28, 32])),
            "ofa-proxyless-w1.3" => Self::proxyless(name, 1.3, 1000, imagenet_res),
            "ofa-proxyless-tiny" => tiny(Self::proxyless(name, 0.25, 10, tiny_res)),
            "ofa-proxyless-small32" => grayscale(Self::proxyless(name, 0.5, 10, vec![24, 28, 32])),
            "ofa-resnet50" => Self::resnet(name, vec![0.65, 0.8, 1.0], 1000, imagenet_res),
            "ofa-resnet-tiny" => Self::resnet(name, vec![0.05, 0.1, 0.125], 10, tiny_res),
            "ofa-resnet-small32" => grayscale(Self::resnet(
                name,
                vec![0.25, 0.35, 0.5],
                10,
                vec![24, 28, 32],
            )),
            other => {
                return Err(SpaceError::UnknownPreset {
                    name: other.to_string(),
                    known: Self::PRESETS.join(", "),
                })
            }
        };
        Ok(s)
    }

    /// Check internal consistency (choice lists non-empty, odd kernels, the family's stages, …).
    pub fn validate(&self) -> Result<(), SpaceError> {
        let bad = |what: String| Err(SpaceError::InvalidSpace(what));
        // The stage layout is the family's: what its reference network can build.
        let fixed: Vec<Option<u32>> = self.stages.iter().map(|s| s.blocks).collect();
        if self.family.is_mbconv() {
            if self.stages.iter().any(|s| s.base_depth != 0) {
                return bad(format!(
                    "{} stages have no `base_depth` (the depth choices count every block)",
                    self.family.label()
                ));
            }
            if !self.width_mult_list.is_empty() {
                return bad(format!(
                    "{} has one `width_mult`, not a `width_mult_list`",
                    self.family.label()
                ));
            }
            if self.last_channel_base_width.is_none() {
                return bad(format!(
                    "{} needs `last_channel_base_width`",
                    self.family.label()
                ));
            }
        }
        match self.family {
            Family::MobileNetV3 => {
                if self.stages.len() != N_STAGES + 1 {
                    return bad(format!(
                        "`stages` must hold 6 entries (first block + 5 elastic stages), got {}",
                        self.stages.len()
                    ));
                }
                if fixed.iter().any(Option::is_some) {
                    return bad("MobileNetV3 stages have no fixed block count".into());
                }
                if self.final_expand_base_width.is_none() {
                    return bad("MobileNetV3 needs `final_expand_base_width`".into());
                }
            }
            Family::ProxylessNas => {
                if self.stages.len() != N_STAGES + 2 {
                    return bad(format!(
                        "`stages` must hold 7 entries (first block + 5 elastic stages + the last \
                         block), got {}",
                        self.stages.len()
                    ));
                }
                if fixed[..6].iter().any(Option::is_some) || fixed[6] != Some(1) {
                    return bad("ProxylessNAS has one fixed stage, the last, of `blocks` 1".into());
                }
                if self.final_expand_base_width.is_some() {
                    return bad("ProxylessNAS has no final expand layer".into());
                }
                if self
                    .stages
                    .iter()
                    .any(|s| s.se || s.act != Activation::Relu6)
                {
                    return bad("ProxylessNAS stages are ReLU6 without SE".into());
                }
            }
            Family::ResNet => self.validate_resnet()?,
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
            ("depth_list", &self.depth_list),
            ("resolutions", &self.resolutions),
        ] {
            if list.is_empty() {
                return bad(format!("`{field}` is empty"));
            }
            // ResNet's depth choices are blocks added to a base depth: 0 is one of them
            if list.contains(&0) && !(field == "depth_list" && self.family == Family::ResNet) {
                return bad(format!("`{field}` contains 0"));
            }
            let mut sorted = (*list).clone();
            sorted.sort_unstable();
            sorted.dedup();
            if sorted.len() != list.len() {
                return bad(format!("`{field}` has duplicate entries: {list:?}"));
            }
        }
        let mut ratios = self.expand_ratio_list.clone();
        ratios.sort_unstable();
        ratios.dedup();
        if ratios.is_empty() || ratios.len() != self.expand_ratio_list.len() {
            return bad(format!(
                "`expand_ratio_list` must hold distinct ratios, got {:?}",
                self.expand_ratio_list
            ));
        }
        if self.family.is_mbconv() {
            if let Some(e) = self.expand_ratio_list.iter().find(|e| e.whole().is_none()) {
                return bad(format!(
                    "{} expand ratios are whole numbers, got {e}",
                    self.family.label()
                ));
            }
        }
        if let Some(k) = self.ks_list.iter().find(|k| *k % 2 == 0) {
            return bad(format!("`ks_list` must hold odd kernel sizes, got {k}"));
        }
        if let Some(v) = self
            .ks_list
            .iter()
            .chain(&self.depth_list)
            .copied()
            .chain(self.expand_ratio_list.iter().map(|e| e.get().ceil() as u32))
            .find(|v| *v >= 64)
        {
            return bad(format!(
                "kernel sizes, expand ratios and depths must be below 64, got {v}"
            ));
        }
        // An elastic block always holds its inverted bottleneck; at e = 1 the reference's
        // MBConvLayer has none, so a subnet cut there would not be the network it describes.
        if self.family.is_mbconv() && self.expand_ratio_list.contains(&Ratio::from(1)) {
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
            self.final_expand_base_width.unwrap_or(0),
            self.last_channel_base_width.unwrap_or(0),
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

    /// Final expand (1×1 conv) width, in the families that have that layer.
    pub fn final_expand_width(&self) -> Option<u32> {
        self.final_expand_base_width.map(|b| self.scaled(b))
    }

    /// Width entering the classifier in the supernet: the feature mix (MBConv families) or the
    /// last stage at its largest width (ResNet).
    pub fn last_channel(&self) -> u32 {
        match self.last_channel_base_width {
            Some(b) => self.scaled(b),
            None => self
                .resnet_stage_widths()
                .last()
                .and_then(|w| w.iter().copied().max())
                .unwrap_or(0),
        }
    }

    pub(crate) fn scaled(&self, base: u32) -> u32 {
        make_divisible(f64::from(base) * self.width_mult, CHANNEL_DIVISIBLE)
    }

    /// Largest depth choice (MBConv: blocks per elastic stage in the supernet; ResNet: blocks
    /// above each stage's base depth).
    pub fn max_depth(&self) -> usize {
        self.depth_list.iter().copied().max().unwrap_or(0) as usize
    }

    /// The length of `d` in an [`crate::ArchConfig`]: the stages after the first block (MBConv
    /// families), or the stem's skip entry and the four stages (ResNet).
    pub fn n_stages(&self) -> usize {
        match self.family {
            Family::ResNet => self.stages.len() + 1,
            _ => self.stages.len().saturating_sub(1),
        }
    }

    /// The stages whose blocks are elastic, in order: after the first block (MBConv families),
    /// every stage (ResNet).
    pub fn elastic_stages(&self) -> &[StageSpec] {
        match self.family {
            Family::ResNet => &self.stages,
            _ => self.stages.get(1..).unwrap_or(&[]),
        }
    }

    /// The depth `d[i]` of an arch is fixed to, if any: a stage of fixed block count runs its
    /// count whatever the arch says (ProxylessNAS's last stage).
    pub fn fixed_depth(&self, i: usize) -> Option<u32> {
        match self.family {
            Family::ResNet => None,
            _ => self.elastic_stages().get(i).and_then(|s| s.blocks),
        }
    }

    /// Supernet blocks of each elastic stage: `base_depth + max(depth_list)`, or the stage's
    /// fixed count.
    pub fn stage_blocks(&self) -> Vec<usize> {
        self.elastic_stages()
            .iter()
            .map(|s| {
                s.blocks
                    .map_or(s.base_depth as usize + self.max_depth(), |b| b as usize)
            })
            .collect()
    }

    /// Number of elastic blocks (the length of `e`, and of `ks` in the MBConv families, in an
    /// [`crate::ArchConfig`]).
    pub fn n_elastic_blocks(&self) -> usize {
        self.stage_blocks().iter().sum()
    }

    /// Largest kernel size.
    pub fn max_ks(&self) -> u32 {
        self.ks_list.iter().copied().max().unwrap_or(0)
    }

    /// Largest expand ratio.
    pub fn max_expand(&self) -> Ratio {
        self.expand_ratio_list
            .iter()
            .copied()
            .max()
            .unwrap_or(Ratio::from(1))
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

    /// All supernet blocks of an MBConv family (the first block, then every stage's) with their
    /// derived shapes; ResNet's bottlenecks are [`SearchSpace::resnet_blocks`].
    pub fn blocks(&self) -> Vec<BlockSpec> {
        if !self.family.is_mbconv() {
            return Vec::new();
        }
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
            shortcut: self.family.first_block_shortcut() && s0.stride == 1 && stem == widths[0],
            max_ks: 3,
        });
        let mut cin = widths[0];
        let max_e = self.max_expand();
        let n_blocks = self.stage_blocks();
        for (stage, (st, &cout)) in self.stages.iter().zip(&widths).enumerate().skip(1) {
            for pos in 0..n_blocks[stage - 1] {
                let stride = if pos == 0 { st.stride } else { 1 };
                out.push(BlockSpec {
                    index: out.len(),
                    stage,
                    pos_in_stage: pos,
                    in_ch: cin,
                    max_mid: make_divisible(max_e.times(cin), CHANNEL_DIVISIBLE),
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
pub(crate) mod tests {
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
    fn proxyless_presets_follow_the_reference_construction() {
        // OFAProxylessNASNets(width_mult=1.3): make_divisible(base · 1.3, 8) of
        // [32, 16, 24, 40, 80, 96, 192, 320, 1280]
        let s = SearchSpace::preset("ofa-proxyless-w1.3").unwrap();
        assert_eq!(s.family, Family::ProxylessNas);
        assert_eq!(s.stem_width(), 40);
        assert_eq!(s.stage_widths(), vec![24, 32, 56, 104, 128, 248, 416]);
        assert_eq!((s.last_channel(), s.final_expand_width()), (1664, None));
        assert_eq!(s.bn_eps, 1e-3);
        // five stages of four blocks and a last of one: 21 elastic blocks, 6 depths
        assert_eq!(s.stage_blocks(), vec![4, 4, 4, 4, 4, 1]);
        assert_eq!((s.n_elastic_blocks(), s.n_stages()), (21, 6));
        let b = s.blocks();
        assert_eq!(b.len(), 22);
        // the first block never has a shortcut, even where its widths would allow one
        let tiny = SearchSpace::preset("ofa-proxyless-tiny").unwrap();
        assert_eq!(tiny.stem_width(), tiny.stage_widths()[0]);
        assert!(!tiny.blocks()[0].shortcut);
        assert_eq!(
            (
                b[21].stage,
                b[21].pos_in_stage,
                b[21].stride,
                b[21].in_ch,
                b[21].out_ch
            ),
            (6, 0, 1, 248, 416)
        );
        assert!(b.iter().all(|b| b.act == Activation::Relu6 && !b.se));
        s.validate().unwrap();
    }

    #[test]
    fn the_family_is_left_out_of_mobilenet_json_and_defaults_on_reading() {
        let m = SearchSpace::preset("ofa-mbv3-w1.0").unwrap();
        let json = m.to_json();
        assert!(!json.contains("family") && json.contains("\"final_expand_base_width\":960"));
        assert_eq!(SearchSpace::from_json(&json).unwrap(), m);
        let p = SearchSpace::preset("ofa-proxyless-tiny").unwrap();
        let json = p.to_json();
        assert!(json.contains("\"family\":\"proxyless_nas\"") && !json.contains("final_expand"));
        assert!(json.contains("\"blocks\":1"));
        assert_eq!(SearchSpace::from_json(&json).unwrap(), p);
        // a family's layout is checked: ProxylessNAS without its fixed last stage is refused
        let mut bad = p.clone();
        bad.stages[6].blocks = None;
        let e = bad.validate().unwrap_err().to_string();
        assert!(e.contains("one fixed stage"), "{e}");
        let mut bad = m.clone();
        bad.family = Family::ProxylessNas;
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("7 entries"));
    }

    /// Asserts that `ok` changed by `f` is refused with an error that says `says`.
    pub(crate) fn assert_refused(ok: &SearchSpace, f: &dyn Fn(&mut SearchSpace), says: &str) {
        let mut s = ok.clone();
        f(&mut s);
        let e = s.validate().unwrap_err().to_string();
        assert!(e.contains(says), "{e}");
    }

    #[test]
    fn spaces_no_network_could_have_are_refused_by_name() {
        let ok = SearchSpace::preset("ofa-mbv3-tiny").unwrap();
        let refused = |f: &dyn Fn(&mut SearchSpace), says: &str| assert_refused(&ok, f, says);
        refused(
            &|s| s.expand_ratio_list = vec![1.into(), 3.into()],
            "must not hold 1",
        );
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
