//! A static ResNet's layer configuration: from an arch, to and from the reference `ResNets`
//! config, and the reference state_dict it has.

use ofa_schema::net_config::{
    BnSettings, BottleneckBlock, ConvLayer, IdentityLayer, LinearLayer, ResNetsConfig, StemLayer,
    StemResidual,
};
use ofa_space::{ArchConfig, SearchSpace};
use serde::{Deserialize, Serialize};

use crate::tensors::{Role, TensorSpec};

/// One bottleneck of a static ResNet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BottleneckConfig {
    /// Input width.
    pub in_ch: u32,
    /// Middle width.
    pub mid: u32,
    /// Output width.
    pub out_ch: u32,
    /// Stride of the 3×3 conv and of the shortcut's average pool.
    pub stride: u32,
    /// The ratio the middle width came from (the reference keeps it in the config).
    pub expand_ratio: f64,
}

impl BottleneckConfig {
    /// Whether the shortcut is average-pool + 1×1 conv + BN: the static block's rule, where the
    /// stride or the widths differ.
    pub fn downsample(&self) -> bool {
        !(self.stride == 1 && self.in_ch == self.out_ch)
    }
}

/// The layers of a static ResNet (the reference `ResNets`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResNetLayers {
    /// Width of the stem's first conv and of its residual conv.
    pub stem_mid: u32,
    /// Width of the stem's last conv.
    pub stem_out: u32,
    /// Whether the stem's residual conv is there.
    pub stem_middle: bool,
    /// The bottlenecks.
    pub blocks: Vec<BottleneckConfig>,
}

impl ResNetLayers {
    /// The layers `arch` selects in `space` (`arch` must be valid for `space`).
    pub fn from_arch(space: &SearchSpace, arch: &ArchConfig) -> ResNetLayers {
        let stem = arch.resnet_stem(space);
        ResNetLayers {
            stem_mid: stem.mid,
            stem_out: stem.out,
            stem_middle: stem.middle,
            blocks: arch
                .bottlenecks(space)
                .iter()
                .map(|b| BottleneckConfig {
                    in_ch: b.in_ch,
                    mid: b.mid,
                    out_ch: b.out_ch,
                    stride: b.stride,
                    expand_ratio: b.e.get(),
                })
                .collect(),
        }
    }

    /// Width entering the classifier.
    pub fn last_channel(&self) -> u32 {
        self.blocks.last().map_or(self.stem_out, |b| b.out_ch)
    }

    /// The widths chain and every layer has a positive width and stride.
    pub fn validate(&self) -> Result<(), String> {
        if self.stem_mid == 0 || self.stem_out == 0 {
            return Err("the stem's widths must be positive".into());
        }
        crate::subnet::check_chain(
            self.stem_out,
            self.blocks.iter().map(|b| (b.in_ch, b.out_ch)),
        )?;
        match self
            .blocks
            .iter()
            .position(|b| b.stride == 0 || b.mid == 0 || b.out_ch == 0)
        {
            Some(j) => Err(format!("block {j}: stride and widths must be positive")),
            None => Ok(()),
        }
    }

    /// The reference `ResNets` state_dict names, shapes and roles, in its order.
    pub fn tensor_specs(&self, in_channels: u32, n_classes: u32) -> Vec<TensorSpec> {
        let i = i64::from;
        let mut out = Vec::new();
        let mut conv_bn = |p: &str, shape: [i64; 4]| {
            out.push(TensorSpec {
                name: format!("{p}.conv.weight"),
                shape: shape.to_vec(),
                role: Role::ConvWeight,
            });
            let c = shape[0];
            for (n, role) in [
                ("weight", Role::BnWeight),
                ("bias", Role::BnBias),
                ("running_mean", Role::RunningMean),
                ("running_var", Role::RunningVar),
            ] {
                out.push(TensorSpec {
                    name: format!("{p}.bn.{n}"),
                    shape: vec![c],
                    role,
                });
            }
            out.push(TensorSpec {
                name: format!("{p}.bn.num_batches_tracked"),
                shape: vec![],
                role: Role::BatchCounter,
            });
        };
        let (m, o) = (i(self.stem_mid), i(self.stem_out));
        conv_bn("input_stem.0", [m, i(in_channels), 3, 3]);
        if self.stem_middle {
            conv_bn("input_stem.1.conv", [m, m, 3, 3]);
        }
        conv_bn(
            &format!("input_stem.{}", 1 + usize::from(self.stem_middle)),
            [o, m, 3, 3],
        );
        for (j, b) in self.blocks.iter().enumerate() {
            let (cin, mid, cout) = (i(b.in_ch), i(b.mid), i(b.out_ch));
            conv_bn(&format!("blocks.{j}.conv1"), [mid, cin, 1, 1]);
            conv_bn(&format!("blocks.{j}.conv2"), [mid, mid, 3, 3]);
            conv_bn(&format!("blocks.{j}.conv3"), [cout, mid, 1, 1]);
            if b.downsample() {
                conv_bn(&format!("blocks.{j}.downsample"), [cout, cin, 1, 1]);
            }
        }
        let (nc, last) = (i(n_classes), i(self.last_channel()));
        out.push(TensorSpec {
            name: "classifier.linear.weight".into(),
            shape: vec![nc, last],
            role: Role::LinearWeight,
        });
        out.push(TensorSpec {
            name: "classifier.linear.bias".into(),
            shape: vec![nc],
            role: Role::LinearBias,
        });
        out
    }

    /// The reference `ResNets.config`.
    pub fn to_net_config(
        &self,
        in_channels: u32,
        n_classes: u32,
        bn: BnSettings,
        dropout_rate: f64,
    ) -> ResNetsConfig {
        let conv = |cin: u32, cout: u32, stride: u32| {
            ConvLayer::new(cin, cout, 3, stride, true, Some("relu"))
        };
        let (m, o) = (self.stem_mid, self.stem_out);
        let mut input_stem = vec![StemLayer::Conv(conv(in_channels, m, 2))];
        if self.stem_middle {
            input_stem.push(StemLayer::Residual(StemResidual {
                conv: conv(m, m, 1),
                name: "ResidualBlock".into(),
                shortcut: Some(IdentityLayer::new(m, m)),
            }));
        }
        input_stem.push(StemLayer::Conv(conv(m, o, 1)));
        ResNetsConfig {
            blocks: self
                .blocks
                .iter()
                .map(|b| BottleneckBlock {
                    act_func: Some("relu".into()),
                    downsample_mode: "avgpool_conv".into(),
                    expand_ratio: b.expand_ratio,
                    groups: 1,
                    in_channels: b.in_ch,
                    kernel_size: 3,
                    mid_channels: Some(b.mid),
                    name: "ResNetBottleneckBlock".into(),
                    out_channels: b.out_ch,
                    stride: b.stride,
                })
                .collect(),
            bn: Some(bn),
            classifier: LinearLayer {
                act_func: None,
                bias: true,
                dropout_rate,
                in_features: self.last_channel(),
                name: "LinearLayer".into(),
                ops_order: "weight_bn_act".into(),
                out_features: n_classes,
                use_bn: false,
            },
            input_stem,
            name: "ResNets".into(),
        }
    }

    /// The layers of a reference `ResNets` config; refuses what the family does not build (by
    /// name: a stem other than conv, optional residual conv, conv, all 3×3 ReLU with BN; blocks
    /// other than 3×3 ReLU bottlenecks with the average-pool shortcut).
    pub fn from_net_config(v: &ResNetsConfig) -> Result<ResNetLayers, String> {
        let plain = |l: &ConvLayer, what: &str, stride: u32| {
            if l.kernel_size != 3
                || l.stride != stride
                || !l.use_bn
                || l.act_func.as_deref() != Some("relu")
                || l.groups != 1
                || l.bias
            {
                return Err(format!(
                    "net_config: {what} must be a 3×3 stride-{stride} conv with BN and ReLU, as \
                     OFAResNets builds it"
                ));
            }
            Ok(())
        };
        let (first, middle, last) = match v.input_stem.as_slice() {
            [StemLayer::Conv(a), StemLayer::Conv(c)] => (a, None, c),
            [StemLayer::Conv(a), StemLayer::Residual(b), StemLayer::Conv(c)] => (a, Some(b), c),
            _ => {
                return Err(
                    "net_config: `input_stem` must be conv, an optional residual conv, conv".into(),
                )
            }
        };
        plain(first, "`input_stem[0]`", 2)?;
        plain(last, "the stem's last conv", 1)?;
        if let Some(r) = middle {
            plain(&r.conv, "the stem's residual conv", 1)?;
            if r.shortcut.is_none()
                || r.conv.in_channels != first.out_channels
                || r.conv.out_channels != first.out_channels
            {
                return Err(
                    "net_config: the stem's residual conv keeps its width and has an identity \
                     shortcut"
                        .into(),
                );
            }
        }
        if last.in_channels != first.out_channels {
            return Err("net_config: the stem's convs do not chain".into());
        }
        let mut blocks = Vec::with_capacity(v.blocks.len());
        for (j, b) in v.blocks.iter().enumerate() {
            if b.kernel_size != 3
                || b.groups != 1
                || b.downsample_mode != "avgpool_conv"
                || b.act_func.as_deref() != Some("relu")
            {
                return Err(format!(
                    "net_config: block {j} must be a 3×3 ReLU bottleneck with the `avgpool_conv` \
                     shortcut, as OFAResNets builds it"
                ));
            }
            let e = ofa_space::Ratio::new(b.expand_ratio).ok_or_else(|| {
                format!(
                    "net_config: block {j}: expand ratio {} must be positive",
                    b.expand_ratio
                )
            })?;
            blocks.push(BottleneckConfig {
                in_ch: b.in_channels,
                // as the reference's block: `make_divisible` of the given middle width, or of
                // `round(out · e)`
                mid: match b.mid_channels {
                    Some(m) => {
                        ofa_space::make_divisible(f64::from(m), ofa_space::CHANNEL_DIVISIBLE)
                    }
                    None => ofa_space::bottleneck_mid(b.out_channels, e),
                },
                out_ch: b.out_channels,
                stride: b.stride,
                expand_ratio: b.expand_ratio,
            });
        }
        let layers = ResNetLayers {
            stem_mid: first.out_channels,
            stem_out: last.out_channels,
            stem_middle: middle.is_some(),
            blocks,
        };
        layers.validate().map_err(|e| format!("net_config: {e}"))?;
        if v.classifier.in_features != layers.last_channel() {
            return Err(format!(
                "net_config: the classifier takes {} features, the last block gives {}",
                v.classifier.in_features,
                layers.last_channel()
            ));
        }
        Ok(layers)
    }
}
