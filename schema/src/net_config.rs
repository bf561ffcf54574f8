//! The reference's static network configs (`net.config`; `net_config` in subnet files), as their
//! wire types: what `MobileNetV3.build_from_config`, `ProxylessNASNets.build_from_config` and
//! `ResNets.build_from_config` read. `ofa-supernet` converts them to and from its runtime
//! `SubnetConfig`.
//!
//! Fields are declared in alphabetical order: the JSON written is byte for byte what the
//! reference's sorted dumps hold (and what `ofa` wrote before this type). Reading accepts the
//! reference's files, which may omit what has a default here.

use serde::{Deserialize, Serialize};
use serde_json::Number;

/// A static network's config, of any family. Written as the family's config alone; read as a
/// `ResNets` config when it has an `input_stem`, as an MBConv one otherwise (so that a malformed
/// file's error names the field that is wrong, not "no variant matched").
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum NetConfig {
    /// `MobileNetV3` or `ProxylessNASNets`.
    MbConv(Box<MbConvNetConfig>),
    /// `ResNets`.
    ResNets(ResNetsConfig),
}

impl<'de> Deserialize<'de> for NetConfig {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let v = serde_json::Value::deserialize(de)?;
        if v.get("input_stem").is_some() {
            ResNetsConfig::deserialize(v)
                .map(NetConfig::ResNets)
                .map_err(D::Error::custom)
        } else {
            MbConvNetConfig::deserialize(v)
                .map(|c| NetConfig::MbConv(Box::new(c)))
                .map_err(D::Error::custom)
        }
    }
}

impl NetConfig {
    /// The reference class name (`name`).
    pub fn name(&self) -> &str {
        match self {
            NetConfig::MbConv(c) => &c.name,
            NetConfig::ResNets(c) => &c.name,
        }
    }
}

/// `MobileNetV3.config` or `ProxylessNASNets.config` (which has no final expand layer, and whose
/// feature mix is the BN layer before pooling).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MbConvNetConfig {
    /// The residual blocks, block 0 first.
    pub blocks: Vec<ResidualBlock>,
    /// BatchNorm settings (absent in some reference files: PyTorch's defaults).
    #[serde(default)]
    pub bn: Option<BnSettings>,
    /// The classifier.
    pub classifier: LinearLayer,
    /// The 1×1 convolution after pooling (MobileNetV3), or before it (ProxylessNAS).
    pub feature_mix_layer: ConvLayer,
    /// The 1×1 convolution before pooling (MobileNetV3 only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub final_expand_layer: Option<ConvLayer>,
    /// The stem.
    pub first_conv: ConvLayer,
    /// `MobileNetV3` or `ProxylessNASNets`.
    pub name: String,
}

/// `bn` of a net config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BnSettings {
    /// BatchNorm epsilon.
    pub eps: f64,
    /// BatchNorm momentum.
    pub momentum: f64,
    /// Weight-standardisation epsilon (unused by MobileNetV3: null).
    #[serde(default)]
    pub ws_eps: Option<f64>,
}

/// `ConvLayer` (stem, final expand, feature mix).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConvLayer {
    /// `h_swish`, `relu`, or none.
    #[serde(default)]
    pub act_func: Option<String>,
    /// Whether the convolution has a bias.
    #[serde(default)]
    pub bias: bool,
    /// Dilation.
    #[serde(default = "one")]
    pub dilation: u32,
    /// Dropout before the layer (the reference writes an integer 0).
    #[serde(default = "zero")]
    pub dropout_rate: Number,
    /// Groups.
    #[serde(default = "one")]
    pub groups: u32,
    /// Channel shuffle (unused: false).
    #[serde(default)]
    pub has_shuffle: bool,
    /// Input channels.
    pub in_channels: u32,
    /// Kernel size.
    #[serde(default = "one")]
    pub kernel_size: u32,
    /// `ConvLayer`.
    #[serde(default)]
    pub name: String,
    /// `weight_bn_act`.
    #[serde(default)]
    pub ops_order: String,
    /// Output channels.
    pub out_channels: u32,
    /// Stride.
    #[serde(default = "one")]
    pub stride: u32,
    /// Whether a BatchNorm follows.
    #[serde(default)]
    pub use_bn: bool,
    /// Squeeze-and-excite (unused: false).
    #[serde(default)]
    pub use_se: bool,
}

impl ConvLayer {
    /// The reference's `ConvLayer(cin, cout, k, stride, use_bn=bn, act_func=act).config`: no bias,
    /// dilation 1, one group, `weight_bn_act`.
    pub fn new(cin: u32, cout: u32, k: u32, stride: u32, bn: bool, act: Option<&str>) -> Self {
        ConvLayer {
            act_func: act.map(str::to_string),
            bias: false,
            dilation: 1,
            dropout_rate: 0u32.into(),
            groups: 1,
            has_shuffle: false,
            in_channels: cin,
            kernel_size: k,
            name: "ConvLayer".into(),
            ops_order: "weight_bn_act".into(),
            out_channels: cout,
            stride,
            use_bn: bn,
            use_se: false,
        }
    }
}

/// `ResidualBlock`: an MBConv layer and its shortcut.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResidualBlock {
    /// The inverted-residual layer (`mobile_inverted_conv` in older reference configs, which
    /// `ResidualBlock.build_from_config` still reads).
    #[serde(alias = "mobile_inverted_conv")]
    pub conv: MbConvLayer,
    /// `ResidualBlock`.
    #[serde(default)]
    pub name: String,
    /// The identity shortcut, where the block has one.
    #[serde(default)]
    pub shortcut: Option<IdentityLayer>,
}

/// `MBConvLayer`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MbConvLayer {
    /// `h_swish` or `relu`.
    #[serde(default)]
    pub act_func: Option<String>,
    /// Expand ratio (1: no inverted bottleneck).
    pub expand_ratio: u32,
    /// Groups (unused: null).
    #[serde(default)]
    pub groups: Option<u32>,
    /// Input channels.
    pub in_channels: u32,
    /// Depthwise kernel size.
    pub kernel_size: u32,
    /// Middle channels (null: `in_channels × expand_ratio`).
    #[serde(default)]
    pub mid_channels: Option<u32>,
    /// `MBConvLayer`.
    #[serde(default)]
    pub name: String,
    /// Output channels.
    pub out_channels: u32,
    /// Stride.
    pub stride: u32,
    /// Squeeze-and-excite.
    #[serde(default)]
    pub use_se: bool,
}

/// `IdentityLayer` (a shortcut).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IdentityLayer {
    /// None.
    #[serde(default)]
    pub act_func: Option<String>,
    /// Dropout (the reference writes an integer 0).
    #[serde(default = "zero")]
    pub dropout_rate: Number,
    /// Input channels.
    pub in_channels: u32,
    /// `IdentityLayer`.
    #[serde(default)]
    pub name: String,
    /// `weight_bn_act`.
    #[serde(default)]
    pub ops_order: String,
    /// Output channels.
    pub out_channels: u32,
    /// False.
    #[serde(default)]
    pub use_bn: bool,
}

impl IdentityLayer {
    /// The reference's `IdentityLayer(cin, cout).config`.
    pub fn new(cin: u32, cout: u32) -> Self {
        IdentityLayer {
            act_func: None,
            dropout_rate: 0u32.into(),
            in_channels: cin,
            name: "IdentityLayer".into(),
            ops_order: "weight_bn_act".into(),
            out_channels: cout,
            use_bn: false,
        }
    }
}

/// `LinearLayer` (the classifier).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinearLayer {
    /// None.
    #[serde(default)]
    pub act_func: Option<String>,
    /// Whether it has a bias.
    #[serde(default = "yes")]
    pub bias: bool,
    /// Dropout before it.
    #[serde(default)]
    pub dropout_rate: f64,
    /// Input features.
    pub in_features: u32,
    /// `LinearLayer`.
    #[serde(default)]
    pub name: String,
    /// `weight_bn_act`.
    #[serde(default)]
    pub ops_order: String,
    /// Classes.
    pub out_features: u32,
    /// False.
    #[serde(default)]
    pub use_bn: bool,
}

/// `ResNets.config`: the input stem, the bottleneck blocks and the classifier.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResNetsConfig {
    /// The bottleneck blocks.
    pub blocks: Vec<BottleneckBlock>,
    /// BatchNorm settings (absent: PyTorch's defaults).
    #[serde(default)]
    pub bn: Option<BnSettings>,
    /// The classifier.
    pub classifier: LinearLayer,
    /// Conv, the residual conv (absent when skipped), conv; the max-pool after them is implied.
    pub input_stem: Vec<StemLayer>,
    /// `ResNets`.
    pub name: String,
}

/// One layer of a ResNet's input stem.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum StemLayer {
    /// The middle conv with its identity shortcut.
    Residual(StemResidual),
    /// A plain conv + BN + ReLU.
    Conv(ConvLayer),
}

/// `ResidualBlock` of the stem: a conv layer and its identity shortcut.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StemResidual {
    /// The conv layer.
    pub conv: ConvLayer,
    /// `ResidualBlock`.
    #[serde(default)]
    pub name: String,
    /// The identity shortcut.
    #[serde(default)]
    pub shortcut: Option<IdentityLayer>,
}

/// `ResNetBottleneckBlock`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BottleneckBlock {
    /// `relu`.
    #[serde(default)]
    pub act_func: Option<String>,
    /// `avgpool_conv` (the shortcut where stride or widths differ; the identity otherwise).
    pub downsample_mode: String,
    /// Middle width over output width (0.2, 0.25, 0.35).
    pub expand_ratio: f64,
    /// Groups of the 3×3 conv (1).
    #[serde(default = "one")]
    pub groups: u32,
    /// Input channels.
    pub in_channels: u32,
    /// Kernel of the middle conv (3).
    pub kernel_size: u32,
    /// Middle channels (null: `make_divisible(round(out · expand_ratio), 8)`).
    #[serde(default)]
    pub mid_channels: Option<u32>,
    /// `ResNetBottleneckBlock`.
    #[serde(default)]
    pub name: String,
    /// Output channels.
    pub out_channels: u32,
    /// Stride of the middle conv and of the shortcut's average pool.
    pub stride: u32,
}

fn one() -> u32 {
    1
}

fn zero() -> Number {
    Number::from(0u32)
}

fn yes() -> bool {
    true
}
