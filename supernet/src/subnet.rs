//! A static subnet: the reference `MobileNetV3`, `ProxylessNASNets` or `ResNets` built from a
//! [`SubnetConfig`], with weights either sliced out of a supernet or loaded from a file.

use std::collections::HashMap;

use ofa_schema::net_config::{
    BnSettings, ConvLayer, IdentityLayer, LinearLayer, MbConvLayer, MbConvNetConfig, NetConfig,
    ResNetsConfig, ResidualBlock, StemLayer,
};
use ofa_space::{se_width, Activation, ArchConfig, Family, SearchSpace};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tch::{Device, Kind, Tensor};

use crate::error::{Result, SupernetError};
use crate::layers::{act, BlockRun, BlockWeights, Bn, BnMode, BnParams, Head, Mode, Se, Stem};
use crate::resnet::{ResNetLayers, ResNetNet};
use crate::tensors::{channels_last, deep_copy, Layout, MapSource, Role, TensorSource, TensorSpec};

/// One MBConv block of a subnet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerConfig {
    /// Input width.
    pub in_ch: u32,
    /// Middle (expanded) width.
    pub mid: u32,
    /// Output width.
    pub out_ch: u32,
    /// Depthwise kernel size.
    pub ks: u32,
    /// Depthwise stride.
    pub stride: u32,
    /// Expand ratio (1 = no inverted bottleneck, the first block).
    pub expand_ratio: u32,
    /// Activation.
    pub act: Activation,
    /// Squeeze-and-excitation.
    pub se: bool,
    /// Identity shortcut.
    pub shortcut: bool,
}

impl LayerConfig {
    /// How to run the block (what its weights do not say).
    pub fn run(&self) -> BlockRun {
        BlockRun {
            stride: i64::from(self.stride),
            act: self.act,
            shortcut: self.shortcut,
        }
    }
}

/// The layers of an MBConv-family subnet (MobileNetV3, ProxylessNAS).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MbConvLayers {
    /// First conv width.
    pub stem_width: u32,
    /// The blocks, first block included.
    pub blocks: Vec<LayerConfig>,
    /// Final expand width (MobileNetV3 only).
    pub final_expand_width: Option<u32>,
    /// Feature mix width.
    pub last_channel: u32,
}

/// A subnet's layers, by family. In a [`SubnetConfig`]'s JSON (`ofa_subnet` in subnet files) their
/// fields sit beside the common ones, as they did before families existed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Layers {
    /// MobileNetV3 or ProxylessNAS: stem, MBConv blocks, head.
    MbConv(MbConvLayers),
    /// ResNet: stem, bottlenecks, classifier.
    ResNet(ResNetLayers),
}

/// Everything needed to build a static subnet (the reference `MobileNetV3.config`,
/// `ProxylessNASNets.config` or `ResNets.config`, typed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubnetConfig {
    /// The network family.
    #[serde(default, skip_serializing_if = "Family::is_default")]
    pub family: Family,
    /// Input image channels.
    pub in_channels: u32,
    /// The family's layers.
    #[serde(flatten)]
    pub layers: Layers,
    /// Classes.
    pub n_classes: u32,
    /// BN momentum.
    pub bn_momentum: f64,
    /// BN epsilon.
    pub bn_eps: f64,
    /// Classifier dropout (training only).
    pub dropout_rate: f64,
}

impl SubnetConfig {
    /// The subnet `arch` selects in `space` (`arch` must be valid for `space`).
    pub fn from_arch(space: &SearchSpace, arch: &ArchConfig) -> SubnetConfig {
        let layers = if space.family.is_mbconv() {
            Layers::MbConv(Self::mbconv_layers(space, arch))
        } else {
            Layers::ResNet(ResNetLayers::from_arch(space, arch))
        };
        SubnetConfig {
            family: space.family,
            in_channels: space.in_channels,
            layers,
            n_classes: space.n_classes,
            bn_momentum: space.bn_momentum,
            bn_eps: space.bn_eps,
            dropout_rate: space.dropout_rate,
        }
    }

    fn mbconv_layers(space: &SearchSpace, arch: &ArchConfig) -> MbConvLayers {
        let blocks = arch
            .active_blocks(space)
            .into_iter()
            .map(|b| LayerConfig {
                in_ch: b.spec.in_ch,
                mid: b.mid,
                out_ch: b.spec.out_ch,
                ks: b.ks,
                stride: b.spec.stride,
                // MBConv ratios are whole (the space checks it)
                expand_ratio: b.e.get() as u32,
                act: b.spec.act,
                se: b.spec.se,
                shortcut: b.spec.shortcut,
            })
            .collect();
        MbConvLayers {
            stem_width: space.stem_width(),
            blocks,
            final_expand_width: space.final_expand_width(),
            last_channel: space.last_channel(),
        }
    }

    /// Number of blocks (MBConv blocks, first block included, or bottlenecks).
    pub fn n_blocks(&self) -> usize {
        match &self.layers {
            Layers::MbConv(m) => m.blocks.len(),
            Layers::ResNet(r) => r.blocks.len(),
        }
    }

    /// Width entering the classifier.
    pub fn last_channel(&self) -> u32 {
        match &self.layers {
            Layers::MbConv(m) => m.last_channel,
            Layers::ResNet(r) => r.last_channel(),
        }
    }

    fn bn_params(&self) -> BnParams {
        BnParams {
            momentum: self.bn_momentum,
            eps: self.bn_eps,
        }
    }

    fn bn_settings(&self) -> BnSettings {
        BnSettings {
            eps: self.bn_eps,
            momentum: self.bn_momentum,
            ws_eps: None,
        }
    }

    /// The reference `MobileNetV3.config`, `ProxylessNASNets.config` or `ResNets.config` (what
    /// the family's `build_from_config` accepts).
    pub fn to_net_config(&self) -> NetConfig {
        match &self.layers {
            Layers::MbConv(m) => NetConfig::MbConv(Box::new(self.mbconv_net_config(m))),
            Layers::ResNet(r) => NetConfig::ResNets(r.to_net_config(
                self.in_channels,
                self.n_classes,
                self.bn_settings(),
                self.dropout_rate,
            )),
        }
    }

    fn mbconv_net_config(&self, m: &MbConvLayers) -> MbConvNetConfig {
        let conv = ConvLayer::new;
        let blocks = m
            .blocks
            .iter()
            .map(|b| ResidualBlock {
                conv: MbConvLayer {
                    act_func: Some(b.act.reference_name().to_string()),
                    expand_ratio: b.expand_ratio,
                    groups: None,
                    in_channels: b.in_ch,
                    kernel_size: b.ks,
                    mid_channels: (b.expand_ratio != 1).then_some(b.mid),
                    name: "MBConvLayer".into(),
                    out_channels: b.out_ch,
                    stride: b.stride,
                    use_se: b.se,
                },
                name: "ResidualBlock".into(),
                shortcut: b.shortcut.then(|| IdentityLayer::new(b.in_ch, b.out_ch)),
            })
            .collect();
        let last_stage = m.blocks.last().map_or(m.stem_width, |b| b.out_ch);
        let act = Some(self.family.head_act().reference_name());
        // MobileNetV3: final expand (BN) before pooling, feature mix (no BN) after it;
        // ProxylessNAS: feature mix (BN) before pooling.
        let (final_expand_layer, feature_mix_layer) = match m.final_expand_width {
            Some(fe) => (
                Some(conv(last_stage, fe, 1, 1, true, act)),
                conv(fe, m.last_channel, 1, 1, false, act),
            ),
            None => (None, conv(last_stage, m.last_channel, 1, 1, true, act)),
        };
        MbConvNetConfig {
            blocks,
            bn: Some(self.bn_settings()),
            classifier: LinearLayer {
                act_func: None,
                bias: true,
                dropout_rate: self.dropout_rate,
                in_features: m.last_channel,
                name: "LinearLayer".into(),
                ops_order: "weight_bn_act".into(),
                out_features: self.n_classes,
                use_bn: false,
            },
            feature_mix_layer,
            final_expand_layer,
            first_conv: conv(self.in_channels, m.stem_width, 3, 2, true, act),
            name: self.family.reference_name().into(),
        }
    }

    /// Parse the reference `MobileNetV3.config`, `ProxylessNASNets.config` or `ResNets.config`
    /// JSON.
    pub fn from_net_config(v: &Value) -> std::result::Result<SubnetConfig, String> {
        let wire: NetConfig = NetConfig::deserialize(v).map_err(|e| format!("net_config: {e}"))?;
        SubnetConfig::try_from(&wire)
    }

    /// The tensor list of this subnet in the reference subnet naming, in state_dict order.
    pub fn tensor_specs(&self) -> Vec<TensorSpec> {
        match &self.layers {
            Layers::MbConv(m) => self.mbconv_tensor_specs(m),
            Layers::ResNet(r) => r.tensor_specs(self.in_channels, self.n_classes),
        }
    }

    fn mbconv_tensor_specs(&self, m: &MbConvLayers) -> Vec<TensorSpec> {
        let mut out = Vec::new();
        let mut push =
            |name: String, shape: Vec<i64>, role: Role| out.push(TensorSpec { name, shape, role });
        let i = |x: u32| i64::from(x);
        let bn = |push: &mut dyn FnMut(String, Vec<i64>, Role), p: &str, c: i64| {
            push(format!("{p}.weight"), vec![c], Role::BnWeight);
            push(format!("{p}.bias"), vec![c], Role::BnBias);
            push(format!("{p}.running_mean"), vec![c], Role::RunningMean);
            push(format!("{p}.running_var"), vec![c], Role::RunningVar);
            push(
                format!("{p}.num_batches_tracked"),
                vec![],
                Role::BatchCounter,
            );
        };
        push(
            "first_conv.conv.weight".into(),
            vec![i(m.stem_width), i(self.in_channels), 3, 3],
            Role::ConvWeight,
        );
        bn(&mut push, "first_conv.bn", i(m.stem_width));
        for (j, b) in m.blocks.iter().enumerate() {
            let p = format!("blocks.{j}.conv");
            let (m, k) = (i(b.mid), i(b.ks));
            if b.expand_ratio != 1 {
                push(
                    format!("{p}.inverted_bottleneck.conv.weight"),
                    vec![m, i(b.in_ch), 1, 1],
                    Role::ConvWeight,
                );
                bn(&mut push, &format!("{p}.inverted_bottleneck.bn"), m);
            }
            push(
                format!("{p}.depth_conv.conv.weight"),
                vec![m, 1, k, k],
                Role::ConvWeight,
            );
            bn(&mut push, &format!("{p}.depth_conv.bn"), m);
            if b.se {
                let s = i(se_width(b.mid));
                push(
                    format!("{p}.depth_conv.se.fc.reduce.weight"),
                    vec![s, m, 1, 1],
                    Role::ConvWeight,
                );
                push(
                    format!("{p}.depth_conv.se.fc.reduce.bias"),
                    vec![s],
                    Role::ConvBias,
                );
                push(
                    format!("{p}.depth_conv.se.fc.expand.weight"),
                    vec![m, s, 1, 1],
                    Role::ConvWeight,
                );
                push(
                    format!("{p}.depth_conv.se.fc.expand.bias"),
                    vec![m],
                    Role::ConvBias,
                );
            }
            push(
                format!("{p}.point_linear.conv.weight"),
                vec![i(b.out_ch), m, 1, 1],
                Role::ConvWeight,
            );
            bn(&mut push, &format!("{p}.point_linear.bn"), i(b.out_ch));
        }
        let last_stage = i(m.blocks.last().map_or(m.stem_width, |b| b.out_ch));
        let lc = i(m.last_channel);
        match m.final_expand_width.map(i) {
            Some(fe) => {
                push(
                    "final_expand_layer.conv.weight".into(),
                    vec![fe, last_stage, 1, 1],
                    Role::ConvWeight,
                );
                bn(&mut push, "final_expand_layer.bn", fe);
                push(
                    "feature_mix_layer.conv.weight".into(),
                    vec![lc, fe, 1, 1],
                    Role::ConvWeight,
                );
            }
            None => {
                push(
                    "feature_mix_layer.conv.weight".into(),
                    vec![lc, last_stage, 1, 1],
                    Role::ConvWeight,
                );
                bn(&mut push, "feature_mix_layer.bn", lc);
            }
        }
        push(
            "classifier.linear.weight".into(),
            vec![i(self.n_classes), i(m.last_channel)],
            Role::LinearWeight,
        );
        push(
            "classifier.linear.bias".into(),
            vec![i(self.n_classes)],
            Role::LinearBias,
        );
        out
    }

    /// Check internal consistency (the family's layers and head, widths chain, middle widths
    /// sane).
    pub fn validate(&self) -> std::result::Result<(), String> {
        let m = match (&self.layers, self.family.is_mbconv()) {
            (Layers::MbConv(m), true) => m,
            (Layers::ResNet(r), false) => return r.validate(),
            _ => {
                return Err(format!(
                    "{} layers do not belong to the {} family",
                    match &self.layers {
                        Layers::MbConv(_) => "MBConv",
                        Layers::ResNet(_) => "ResNet",
                    },
                    self.family.label()
                ))
            }
        };
        if self.family.has_final_expand() != m.final_expand_width.is_some() {
            return Err(format!(
                "{} {} final expand layer",
                self.family.reference_name(),
                if self.family.has_final_expand() {
                    "needs a"
                } else {
                    "has no"
                }
            ));
        }
        check_chain(m.stem_width, m.blocks.iter().map(|b| (b.in_ch, b.out_ch)))?;
        for (j, b) in m.blocks.iter().enumerate() {
            if b.ks % 2 == 0 || b.ks == 0 || b.stride == 0 || b.mid == 0 {
                return Err(format!(
                    "block {j}: kernel must be odd and stride and width positive"
                ));
            }
        }
        Ok(())
    }
}

/// Each block takes the channels the layer before gives (`first` from the stem); the error names
/// the first block that does not.
pub(crate) fn check_chain(
    first: u32,
    blocks: impl Iterator<Item = (u32, u32)>,
) -> std::result::Result<(), String> {
    let mut cin = first;
    for (j, (b_in, b_out)) in blocks.enumerate() {
        if b_in != cin {
            return Err(format!(
                "block {j} takes {b_in} channels, the previous layer gives {cin}"
            ));
        }
        cin = b_out;
    }
    Ok(())
}

/// A static subnet: its config and its layers' tensors.
#[derive(Debug)]
pub struct Subnet {
    config: SubnetConfig,
    pub(crate) body: Body,
}

/// A subnet's layers by family, read-only ([`Subnet::layers`]).
#[derive(Debug, Clone, Copy)]
pub enum NetLayers<'a> {
    /// MobileNetV3 or ProxylessNAS.
    MbConv {
        /// The first conv.
        stem: &'a Stem,
        /// The blocks, with how each runs.
        blocks: &'a [(BlockRun, BlockWeights)],
        /// The head.
        head: &'a Head,
    },
    /// ResNet.
    ResNet(&'a ResNetNet),
}

/// A static network's layers, by family.
#[derive(Debug)]
pub(crate) enum Body {
    /// MobileNetV3 or ProxylessNAS.
    MbConv(MbConvNet),
    /// ResNet.
    ResNet(ResNetNet),
}

/// An MBConv network: stem, blocks (with how each runs), head.
#[derive(Debug)]
pub(crate) struct MbConvNet {
    pub stem: Stem,
    pub blocks: Vec<(BlockRun, BlockWeights)>,
    pub head: Head,
}

impl Body {
    fn map(&self, f: impl Fn(&Tensor) -> Tensor + Copy) -> Body {
        match self {
            Body::MbConv(n) => Body::MbConv(MbConvNet {
                stem: n.stem.map(f),
                blocks: n.blocks.iter().map(|(r, w)| (*r, w.map(f))).collect(),
                head: n.head.map(f),
            }),
            Body::ResNet(r) => Body::ResNet(r.map(f)),
        }
    }

    /// The first convolution's weight.
    fn first_conv(&self) -> &Tensor {
        match self {
            Body::MbConv(n) => &n.stem.conv,
            Body::ResNet(r) => &r.stem[0].conv,
        }
    }
}

impl MbConvNet {
    /// The network from its tensors in [`SubnetConfig::tensor_specs`] order.
    fn from_taken(config: &SubnetConfig, m: &MbConvLayers, taken: Vec<Tensor>) -> MbConvNet {
        let mut it = taken.into_iter();
        let mut next = move || {
            it.next()
                .unwrap_or_else(|| Tensor::zeros([0], (Kind::Float, Device::Cpu)))
        };
        let bn = |next: &mut dyn FnMut() -> Tensor| Bn {
            weight: next(),
            bias: next(),
            running_mean: next(),
            running_var: next(),
            num_batches_tracked: next(),
        };
        let stem = Stem {
            conv: next(),
            bn: bn(&mut next),
            act: config.family.head_act(),
        };
        let mut blocks = Vec::with_capacity(m.blocks.len());
        for b in &m.blocks {
            let inverted_bottleneck = (b.expand_ratio != 1).then(|| (next(), bn(&mut next)));
            let depth_conv = next();
            let depth_bn = bn(&mut next);
            let se = b.se.then(|| Se {
                reduce_weight: next(),
                reduce_bias: next(),
                expand_weight: next(),
                expand_bias: next(),
            });
            let point_linear = next();
            let point_bn = bn(&mut next);
            let run = b.run();
            blocks.push((
                run,
                BlockWeights {
                    inverted_bottleneck,
                    depth_conv,
                    depth_bn,
                    se,
                    point_linear,
                    point_bn,
                },
            ));
        }
        // in state_dict order: MobileNetV3's final expand + BN, feature mix; ProxylessNAS's
        // feature mix + BN
        let pre_pool = next();
        let pre_pool_bn = bn(&mut next);
        let post_pool = m.final_expand_width.is_some().then(&mut next);
        let head = Head {
            pre_pool,
            pre_pool_bn,
            post_pool,
            act: config.family.head_act(),
            classifier_weight: next(),
            classifier_bias: next(),
        };
        MbConvNet { stem, blocks, head }
    }

    /// Every tensor in state_dict order (handles share storage).
    fn flat(&self) -> Vec<Tensor> {
        let mut flat: Vec<Tensor> = Vec::new();
        let bn = |flat: &mut Vec<Tensor>, b: &Bn| {
            for t in [
                &b.weight,
                &b.bias,
                &b.running_mean,
                &b.running_var,
                &b.num_batches_tracked,
            ] {
                flat.push(t.shallow_clone());
            }
        };
        flat.push(self.stem.conv.shallow_clone());
        bn(&mut flat, &self.stem.bn);
        for (_, w) in &self.blocks {
            if let Some((c, b)) = &w.inverted_bottleneck {
                flat.push(c.shallow_clone());
                bn(&mut flat, b);
            }
            flat.push(w.depth_conv.shallow_clone());
            bn(&mut flat, &w.depth_bn);
            if let Some(se) = &w.se {
                for t in [
                    &se.reduce_weight,
                    &se.reduce_bias,
                    &se.expand_weight,
                    &se.expand_bias,
                ] {
                    flat.push(t.shallow_clone());
                }
            }
            flat.push(w.point_linear.shallow_clone());
            bn(&mut flat, &w.point_bn);
        }
        flat.push(self.head.pre_pool.shallow_clone());
        bn(&mut flat, &self.head.pre_pool_bn);
        if let Some(w) = &self.head.post_pool {
            flat.push(w.shallow_clone());
        }
        flat.push(self.head.classifier_weight.shallow_clone());
        flat.push(self.head.classifier_bias.shallow_clone());
        flat
    }
}

impl Subnet {
    /// Assemble from parts (used by the supernet's slicing).
    pub(crate) fn from_parts(config: SubnetConfig, body: Body) -> Subnet {
        Subnet { config, body }
    }

    /// Build from a config, taking tensors by reference subnet name from `source`, in the
    /// order of [`SubnetConfig::tensor_specs`] (the order [`Subnet::named_tensors`] gives back).
    pub fn build(config: SubnetConfig, source: &mut dyn TensorSource) -> Result<Subnet> {
        config.validate().map_err(SupernetError::BadInput)?;
        let specs = config.tensor_specs();
        let taken = specs
            .iter()
            .map(|s| source.take(s))
            .collect::<Result<Vec<_>>>()?;
        let body = match &config.layers {
            Layers::MbConv(m) => Body::MbConv(MbConvNet::from_taken(&config, m, taken)),
            Layers::ResNet(r) => Body::ResNet(ResNetNet::from_taken(r, taken)),
        };
        Ok(Subnet { config, body })
    }

    /// Build from a name → tensor map (e.g. a loaded file); every tensor must be used.
    pub fn from_tensors(
        config: SubnetConfig,
        map: HashMap<String, Tensor>,
        device: Device,
    ) -> Result<Subnet> {
        MapSource::build_all(map, device, |src| Subnet::build(config, src))
    }

    /// The subnet's configuration.
    pub fn config(&self) -> &SubnetConfig {
        &self.config
    }

    /// Every tensor with its reference subnet name, in state_dict order (handles share storage).
    pub fn named_tensors(&self) -> Vec<(String, Tensor)> {
        let specs = self.config.tensor_specs();
        let flat = match &self.body {
            Body::MbConv(n) => n.flat(),
            Body::ResNet(r) => r.named_tensors().into_iter().map(|(_, t)| t).collect(),
        };
        specs.into_iter().map(|s| s.name).zip(flat).collect()
    }

    /// A deep copy with fresh, contiguous, detached storage.
    pub fn deep_copy(&self) -> Subnet {
        Subnet {
            config: self.config.clone(),
            body: self.body.map(deep_copy),
        }
    }

    /// The same network with its 4-D weights in `layout`; every other tensor (BatchNorm, the
    /// classifier) is shared, so a BN recalibration of the copy is one of `self`. On CPU a
    /// channels-last network fed [`channels_last`](crate::channels_last) inputs runs oneDNN's
    /// direct depthwise kernels instead of the im2col path NCHW takes (several times faster).
    pub fn to_layout(&self, layout: Layout) -> Subnet {
        let f = move |t: &Tensor| match layout {
            Layout::ChannelsLast => channels_last(t),
            Layout::Contiguous if t.dim() == 4 => t.contiguous(),
            Layout::Contiguous => t.shallow_clone(),
        };
        Subnet {
            config: self.config.clone(),
            body: self.body.map(f),
        }
    }

    /// The layout of the 4-D weights (read from the first convolution's strides).
    pub fn layout(&self) -> Layout {
        let w = self.body.first_conv();
        let (n, s) = (w.size(), w.stride());
        if s[1] == 1 && s[3] == n[1] && s[2] == n[1] * n[3] {
            Layout::ChannelsLast
        } else {
            Layout::Contiguous
        }
    }

    /// Convert an input batch to the layout of the weights.
    pub fn match_layout(&self, x: &Tensor) -> Tensor {
        match self.layout() {
            Layout::ChannelsLast => channels_last(x),
            Layout::Contiguous => x.shallow_clone(),
        }
    }

    /// The same network with its convolution and linear weights cast to `kind` (the casts keep
    /// their autograd link to the original weights); BatchNorm stays in float32. Used for bf16
    /// mixed-precision training: run it on an input of `kind`.
    pub fn cast_weights(&self, kind: Kind) -> Subnet {
        let n = match &self.body {
            Body::MbConv(n) => n,
            Body::ResNet(r) => {
                return Subnet {
                    config: self.config.clone(),
                    body: Body::ResNet(r.cast_weights(kind)),
                }
            }
        };
        let c = |t: &Tensor| t.to_kind(kind);
        let keep = Tensor::shallow_clone;
        let blocks = n
            .blocks
            .iter()
            .map(|(r, w)| {
                let weights = BlockWeights {
                    inverted_bottleneck: w
                        .inverted_bottleneck
                        .as_ref()
                        .map(|(t, bn)| (c(t), bn.map(keep))),
                    depth_conv: c(&w.depth_conv),
                    depth_bn: w.depth_bn.map(keep),
                    se: w.se.as_ref().map(|s| s.map(c)),
                    point_linear: c(&w.point_linear),
                    point_bn: w.point_bn.map(keep),
                };
                (*r, weights)
            })
            .collect();
        Subnet {
            config: self.config.clone(),
            body: Body::MbConv(MbConvNet {
                stem: Stem {
                    conv: c(&n.stem.conv),
                    bn: n.stem.bn.map(keep),
                    act: n.stem.act,
                },
                blocks,
                head: Head {
                    pre_pool: c(&n.head.pre_pool),
                    pre_pool_bn: n.head.pre_pool_bn.map(keep),
                    post_pool: n.head.post_pool.as_ref().map(c),
                    act: n.head.act,
                    classifier_weight: c(&n.head.classifier_weight),
                    classifier_bias: c(&n.head.classifier_bias),
                },
            }),
        }
    }

    /// Check an input batch: `[N, in_channels, H, W]` floating point.
    pub fn check_input(&self, x: &Tensor) -> Result<()> {
        let s = x.size();
        if s.len() != 4
            || s[1] != i64::from(self.config.in_channels)
            || s[0] == 0
            || s[2] == 0
            || s[3] == 0
        {
            return Err(SupernetError::BadInput(format!(
                "expected a non-empty input of shape [N, {}, H, W], got {s:?}",
                self.config.in_channels
            )));
        }
        if !matches!(
            x.kind(),
            Kind::Float | Kind::Half | Kind::BFloat16 | Kind::Double
        ) {
            return Err(SupernetError::BadInput(format!(
                "expected a float input, got {:?}",
                x.kind()
            )));
        }
        Ok(())
    }

    /// Forward pass in eval or train mode.
    pub fn forward(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        self.check_input(x)?;
        let mut bn = match mode {
            Mode::Eval => BnMode::Eval,
            Mode::Train => BnMode::Train,
        };
        Ok(self.forward_bn(x, &mut bn))
    }

    /// Forward pass with an explicit BN behaviour (no input checks).
    pub fn forward_bn(&self, x: &Tensor, bn: &mut BnMode<'_>) -> Tensor {
        let p = self.config.bn_params();
        match &self.body {
            Body::MbConv(n) => {
                let mut h = n.stem.forward(x, p, bn);
                for (run, w) in &n.blocks {
                    h = w.forward(&h, *run, p, bn);
                }
                n.head.forward(&h, p, self.config.dropout_rate, bn)
            }
            Body::ResNet(r) => r.forward(x, p, self.config.dropout_rate, bn),
        }
    }

    /// The eval-mode forward as a sequence of steps, one per latency-table key of the subnet
    /// (first conv, every block, then the head's keys: MobileNetV3's final expand, pooling,
    /// feature mix and classifier; ProxylessNAS's feature mix and pooling + classifier), so a profiler
    /// can time each layer on the real input of the previous one. Composing them gives
    /// [`Subnet::forward`] in eval mode.
    #[allow(clippy::type_complexity)]
    pub fn eval_steps(&self) -> Vec<Box<dyn Fn(&Tensor) -> Tensor + '_>> {
        let p = self.config.bn_params();
        let n = match &self.body {
            Body::MbConv(n) => n,
            Body::ResNet(r) => return r.eval_steps(p),
        };
        let mut steps: Vec<Box<dyn Fn(&Tensor) -> Tensor + '_>> = Vec::new();
        steps.push(Box::new(move |x| n.stem.forward(x, p, &mut BnMode::Eval)));
        for (run, w) in &n.blocks {
            let run = *run;
            steps.push(Box::new(move |x| w.forward(x, run, p, &mut BnMode::Eval)));
        }
        let h = &n.head;
        steps.push(Box::new(move |x| {
            let y = x.conv2d(&h.pre_pool, None::<Tensor>, 1, 0, 1, 1);
            act(&h.pre_pool_bn.forward(&y, p, &mut BnMode::Eval), h.act)
        }));
        let pool = |x: &Tensor| x.mean_dim(3, true, None).mean_dim(2, true, None);
        let logits = move |x: &Tensor| x.linear(&h.classifier_weight, Some(&h.classifier_bias));
        match &h.post_pool {
            // MobileNetV3: pooling, feature mix, classifier, each its own key
            Some(w) => {
                steps.push(Box::new(pool));
                steps.push(Box::new(move |x| {
                    act(&x.conv2d(w, None::<Tensor>, 1, 0, 1, 1), h.act).flatten(1, -1)
                }));
                steps.push(Box::new(logits));
            }
            // ProxylessNAS: `Logits` is pooling and classifier
            None => steps.push(Box::new(move |x| logits(&pool(x).flatten(1, -1)))),
        }
        steps
    }

    /// The BatchNorm layers in the order a forward pass calls them.
    pub fn bns(&self) -> Vec<&Bn> {
        let n = match &self.body {
            Body::MbConv(n) => n,
            Body::ResNet(r) => return r.bns(),
        };
        let mut v = vec![&n.stem.bn];
        for (_, w) in &n.blocks {
            if let Some((_, b)) = &w.inverted_bottleneck {
                v.push(b);
            }
            v.push(&w.depth_bn);
            v.push(&w.point_bn);
        }
        v.push(&n.head.pre_pool_bn);
        v
    }

    /// Device of the weights.
    pub fn device(&self) -> Device {
        self.body.first_conv().device()
    }

    /// The layers as [`Subnet::forward_bn`] runs them, for exporters that write the same graph
    /// in another format.
    pub fn layers(&self) -> NetLayers<'_> {
        match &self.body {
            Body::MbConv(n) => NetLayers::MbConv {
                stem: &n.stem,
                blocks: &n.blocks,
                head: &n.head,
            },
            Body::ResNet(r) => NetLayers::ResNet(r),
        }
    }
}

impl TryFrom<&NetConfig> for SubnetConfig {
    type Error = String;

    /// The runtime config of a reference net config (MobileNetV3 or ProxylessNASNets with ReLU,
    /// ReLU6 and h-swish; ResNets).
    fn try_from(v: &NetConfig) -> std::result::Result<SubnetConfig, String> {
        match v {
            NetConfig::MbConv(v) => mbconv_config(v),
            NetConfig::ResNets(v) => resnet_config(v),
        }
    }
}

/// The runtime config of a reference `ResNets` config.
fn resnet_config(v: &ResNetsConfig) -> std::result::Result<SubnetConfig, String> {
    if v.name != Family::ResNet.reference_name() {
        return Err(format!(
            "net_config: `name` {:?} is not \"ResNets\" (the layers are a ResNet's)",
            v.name
        ));
    }
    let layers = ResNetLayers::from_net_config(v)?;
    let in_channels = match v.input_stem.first() {
        Some(StemLayer::Conv(c)) => c.in_channels,
        _ => return Err("net_config: `input_stem` starts with a conv".into()),
    };
    let (momentum, eps) = v.bn.as_ref().map_or((0.1, 1e-5), |b| (b.momentum, b.eps));
    Ok(SubnetConfig {
        family: Family::ResNet,
        in_channels,
        layers: Layers::ResNet(layers),
        n_classes: v.classifier.out_features,
        bn_momentum: momentum,
        bn_eps: eps,
        dropout_rate: v.classifier.dropout_rate,
    })
}

/// The runtime config of a reference `MobileNetV3` or `ProxylessNASNets` config.
fn mbconv_config(v: &MbConvNetConfig) -> std::result::Result<SubnetConfig, String> {
    {
        let act = |s: Option<&str>| match s {
            Some("relu") => Ok(Activation::Relu),
            Some("relu6") => Ok(Activation::Relu6),
            Some("h_swish") => Ok(Activation::HSwish),
            other => Err(format!("net_config: unsupported activation {other:?}")),
        };
        let family = match v.name.as_str() {
            "MobileNetV3" => Family::MobileNetV3,
            "ProxylessNASNets" => Family::ProxylessNas,
            other => {
                return Err(format!(
                    "net_config: `name` {other:?} is not \"MobileNetV3\" or \"ProxylessNASNets\" \
                     (the layers are an MBConv network's)"
                ))
            }
        };
        // The layers a family's head has, and the activations its stem and head use.
        let head_act = Some(family.head_act().reference_name());
        match (family.has_final_expand(), &v.final_expand_layer) {
            (true, None) => return Err("net_config: MobileNetV3 needs `final_expand_layer`".into()),
            (false, Some(_)) => {
                return Err("net_config: ProxylessNASNets has no `final_expand_layer`".into())
            }
            _ => {}
        }
        for (name, layer) in [
            ("first_conv", Some(&v.first_conv)),
            ("final_expand_layer", v.final_expand_layer.as_ref()),
            ("feature_mix_layer", Some(&v.feature_mix_layer)),
        ] {
            if let Some(l) = layer.filter(|l| l.act_func.as_deref() != head_act) {
                return Err(format!(
                    "net_config: `{name}` has activation {:?}, {} uses {head_act:?}",
                    l.act_func,
                    family.reference_name()
                ));
            }
        }
        // BN sits on the layer before pooling: MobileNetV3's feature mix has none, ProxylessNAS's
        // has one (a variant without is not a network the family builds).
        for (name, layer, bn) in [
            ("first_conv", Some(&v.first_conv), true),
            ("final_expand_layer", v.final_expand_layer.as_ref(), true),
            (
                "feature_mix_layer",
                Some(&v.feature_mix_layer),
                !family.has_final_expand(),
            ),
        ] {
            if let Some(l) = layer.filter(|l| l.use_bn != bn) {
                return Err(format!(
                    "net_config: `{name}` has use_bn {}, {} builds it with use_bn {bn}",
                    l.use_bn,
                    family.reference_name()
                ));
            }
        }
        let mut blocks = Vec::with_capacity(v.blocks.len());
        for (i, b) in v.blocks.iter().enumerate() {
            let c = &b.conv;
            let mid = match c.mid_channels {
                Some(m) => m,
                None => c.in_channels.checked_mul(c.expand_ratio).ok_or_else(|| {
                    format!(
                        "net_config: block {i}: {} channels × expand ratio {} overflows",
                        c.in_channels, c.expand_ratio
                    )
                })?,
            };
            blocks.push(LayerConfig {
                in_ch: c.in_channels,
                mid,
                out_ch: c.out_channels,
                ks: c.kernel_size,
                stride: c.stride,
                expand_ratio: c.expand_ratio,
                act: act(c.act_func.as_deref())?,
                se: c.use_se,
                shortcut: b.shortcut.is_some(),
            });
        }
        // without `bn`, the reference's build_from_config leaves PyTorch's eps (MobileNetV3) or
        // sets the family's 1e-3 (ProxylessNAS)
        let default_eps = match family {
            Family::MobileNetV3 | Family::ResNet => 1e-5,
            Family::ProxylessNas => 1e-3,
        };
        let (momentum, eps) =
            v.bn.as_ref()
                .map_or((0.1, default_eps), |b| (b.momentum, b.eps));
        Ok(SubnetConfig {
            family,
            in_channels: v.first_conv.in_channels,
            layers: Layers::MbConv(MbConvLayers {
                stem_width: v.first_conv.out_channels,
                blocks,
                final_expand_width: v.final_expand_layer.as_ref().map(|l| l.out_channels),
                last_channel: v.feature_mix_layer.out_channels,
            }),
            n_classes: v.classifier.out_features,
            bn_momentum: momentum,
            bn_eps: eps,
            dropout_rate: v.classifier.dropout_rate,
        })
    }
}
