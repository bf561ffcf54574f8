//! The model's features: per-layer quantities (MACs by kind, elements, block counts, the base
//! table's times) whose sums over a subnet's layers the latency model weighs.

use std::collections::HashSet;

use ofa_space::cost::bottleneck_cost;
use ofa_space::latency::{
    block_key, bottleneck_key, covering_archs, first_conv_key, head_keys, resnet_head_key,
    resnet_stem_keys, LayerKind,
};
use ofa_space::{conv_out, se_width, ActiveBlock, ArchConfig, Family, SearchSpace};
use serde::{Deserialize, Serialize};

use super::HardwareError;
use crate::latency::LatencyTable;

/// Number of [`Feature`]s.
pub const N_FEATURES: usize = 7;

/// One per-layer quantity the model weighs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Feature {
    /// The base table's time of the MBConv blocks, ms.
    BaseBlocks,
    /// The base table's time of the other layers (first conv, head), ms.
    BaseOther,
    /// MBConv blocks (a per-block dispatch cost).
    Blocks,
    /// Depthwise-convolution MACs, millions.
    DepthwiseMacs,
    /// Dense MACs (first conv, 1×1 convolutions, SE, classifier), millions.
    DenseMacs,
    /// Output elements of every operation, millions (memory traffic, element-wise work).
    Elements,
    /// 1 per network: a fixed per-inference cost, ms.
    Overhead,
}

impl Feature {
    /// Every feature, in vector order.
    pub const ALL: [Feature; N_FEATURES] = [
        Feature::BaseBlocks,
        Feature::BaseOther,
        Feature::Blocks,
        Feature::DepthwiseMacs,
        Feature::DenseMacs,
        Feature::Elements,
        Feature::Overhead,
    ];

    pub(crate) fn index(self) -> usize {
        self as usize
    }

    /// Whether the feature needs a base table.
    pub fn needs_base(self) -> bool {
        matches!(self, Feature::BaseBlocks | Feature::BaseOther)
    }
}

/// Feature values of one layer or one network.
pub type Phi = [f64; N_FEATURES];

use Feature::{BaseBlocks, BaseOther, Blocks, DenseMacs, DepthwiseMacs, Elements, Overhead};

/// One layer of a subnet: its table key and feature values (the base-table features filled in
/// only by [`Features`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Layer {
    /// Which part of the network.
    pub kind: LayerKind,
    /// Lookup-table key.
    pub key: String,
    /// Feature values.
    pub phi: Phi,
}

fn m(x: u64) -> f64 {
    x as f64 / 1e6
}

fn block_layer(space: &SearchSpace, b: &ActiveBlock, f_in: u32) -> Layer {
    let u = u64::from;
    let (ci, mid, co, k) = (u(b.spec.in_ch), u(b.mid), u(b.spec.out_ch), u(b.ks));
    let fi = u(f_in) * u(f_in);
    let fo = u(conv_out(f_in, b.spec.stride)).pow(2);
    let mut dense = mid * co * fo;
    let mut elements = mid * fo + co * fo;
    if b.spec.index > 0 {
        dense += ci * mid * fi;
        elements += mid * fi;
    }
    if b.spec.se {
        dense += 2 * mid * u(se_width(b.mid));
    }
    let mut phi = [0.0; N_FEATURES];
    phi[Blocks.index()] = 1.0;
    phi[DepthwiseMacs.index()] = m(k * k * mid * fo);
    phi[DenseMacs.index()] = m(dense);
    phi[Elements.index()] = m(elements);
    Layer {
        kind: LayerKind::Block,
        key: block_key(space, b, f_in),
        phi,
    }
}

fn dense_layer(kind: LayerKind, key: String, macs: u64, elements: u64) -> Layer {
    let mut phi = [0.0; N_FEATURES];
    phi[DenseMacs.index()] = m(macs);
    phi[Elements.index()] = m(elements);
    Layer { kind, key, phi }
}

fn stem_layer(space: &SearchSpace, r: u32) -> Layer {
    let u = u64::from;
    let f = u(conv_out(r, 2));
    let stem = u(space.stem_width());
    dense_layer(
        LayerKind::FirstConv,
        first_conv_key(space, r),
        u(space.in_channels) * 9 * stem * f * f,
        stem * f * f,
    )
}

fn head_layers(space: &SearchSpace, f: u32) -> Vec<Layer> {
    let u = u64::from;
    let last = u(*space.stage_widths().last().unwrap_or(&0));
    let (lc, nc) = (u(space.last_channel()), u(space.n_classes));
    let ff = u(f) * u(f);
    // MobileNetV3's feature mix runs after pooling on the final expand's width; ProxylessNAS's
    // before it, on the last stage's, and its `Logits` key holds the pooling.
    let fe = space.final_expand_width().map(u);
    head_keys(space, f)
        .into_iter()
        .map(|(kind, key)| {
            let (macs, elements) = match (kind, fe) {
                (LayerKind::FinalExpand, Some(fe)) => (last * fe * ff, fe * ff),
                (LayerKind::AvgPool, Some(fe)) => (0, fe * ff),
                (LayerKind::FeatureMix, Some(fe)) => (fe * lc, lc),
                (LayerKind::FeatureMix, None) => (last * lc * ff, lc * ff),
                (LayerKind::Logits, Some(_)) => (lc * nc, nc),
                (LayerKind::Logits, None) => (lc * nc, lc * ff + nc),
                _ => (0, 0),
            };
            dense_layer(kind, key, macs, elements)
        })
        .collect()
}

/// The layers of a ResNet arch: the stem's convs (dense) and max-pool, each bottleneck (dense
/// 1×1, 3×3 and shortcut convs; one block), pooling + classifier.
fn resnet_arch_layers(space: &SearchSpace, arch: &ArchConfig) -> Vec<Layer> {
    let u = u64::from;
    let stem = arch.resnet_stem(space);
    let f = u(conv_out(arch.r, 2));
    let (cin, mid, out) = (u(space.in_channels), u(stem.mid), u(stem.out));
    let mut layers: Vec<Layer> = resnet_stem_keys(space, arch.r, &stem)
        .into_iter()
        .map(|(kind, key)| {
            let (macs, elements) = if key.starts_with("MaxPool") {
                let g = u(conv_out(f as u32, 2));
                (0, out * g * g)
            } else if key.starts_with("Conv_res") {
                // the conv and the identity's addition
                (9 * mid * mid * f * f, 2 * mid * f * f)
            } else if key.starts_with("Conv_stem") {
                (9 * mid * out * f * f, out * f * f)
            } else {
                (9 * cin * mid * f * f, mid * f * f)
            };
            dense_layer(kind, key, macs, elements)
        })
        .collect();
    let (mut f, mut c) = (conv_out(conv_out(arch.r, 2), 2), stem.out);
    for b in arch.bottlenecks(space) {
        let fi = u(f) * u(f);
        let fo = u(conv_out(f, b.stride)).pow(2);
        let (m_, o) = (u(b.mid), u(b.out_ch));
        // conv1 at the input size, conv2 and conv3, the shortcut and the addition at the output
        let mut elements = m_ * fi + m_ * fo + 2 * o * fo;
        if b.downsample {
            elements += o * fo;
        }
        let mut l = dense_layer(
            LayerKind::Block,
            bottleneck_key(&b, f),
            bottleneck_cost(&b, f).macs,
            elements,
        );
        l.phi[Blocks.index()] = 1.0;
        layers.push(l);
        (f, c) = (conv_out(f, b.stride), b.out_ch);
    }
    let (cc, nc) = (u(c), u(space.n_classes));
    layers.push(dense_layer(
        LayerKind::Logits,
        resnet_head_key(space, f, c),
        cc * nc,
        cc * u(f) * u(f) + nc,
    ));
    layers
}

/// The layers of `arch` at its resolution, in execution order (the keys of
/// [`ofa_space::latency::layer_keys`]).
pub fn arch_layers(space: &SearchSpace, arch: &ArchConfig) -> Vec<Layer> {
    if space.family == Family::ResNet {
        return resnet_arch_layers(space, arch);
    }
    let mut out = vec![stem_layer(space, arch.r)];
    let mut f = conv_out(arch.r, 2);
    for b in arch.active_blocks(space) {
        out.push(block_layer(space, &b, f));
        f = conv_out(f, b.spec.stride);
    }
    out.extend(head_layers(space, f));
    out
}

/// Every distinct layer any subnet of `space` has at resolution `r` (what a table covers).
pub fn all_layers(space: &SearchSpace, r: u32) -> Vec<Layer> {
    if space.family == Family::ResNet {
        // the covering archs have every key (`ofa_space::latency::covering_archs`)
        let mut seen = HashSet::new();
        return covering_archs(space, r)
            .iter()
            .flat_map(|a| resnet_arch_layers(space, a))
            .filter(|l| seen.insert(l.key.clone()))
            .collect();
    }
    let blocks = space.blocks();
    let mut f = conv_out(r, 2);
    let mut f_in = Vec::with_capacity(blocks.len());
    for b in &blocks {
        f_in.push(f);
        f = conv_out(f, b.stride);
    }
    let mut out = vec![stem_layer(space, r)];
    let b0 = blocks[0];
    out.push(block_layer(
        space,
        &ActiveBlock {
            spec: b0,
            ks: 3,
            e: 1.into(),
            mid: b0.max_mid,
        },
        f_in[0],
    ));
    for spec in &blocks[1..] {
        for &ks in &space.ks_list {
            for &e in &space.expand_ratio_list {
                let ab = ActiveBlock {
                    spec: *spec,
                    ks,
                    e,
                    mid: spec.mid(e),
                };
                out.push(block_layer(space, &ab, f_in[spec.index]));
            }
        }
    }
    out.extend(head_layers(space, f));
    let mut seen = HashSet::new();
    out.retain(|l| seen.insert(l.key.clone()));
    out
}

/// Feature extraction for one space and (optionally) one base table.
#[derive(Debug, Clone)]
pub struct Features<'a> {
    pub(crate) space: &'a SearchSpace,
    base: Option<&'a LatencyTable>,
}

impl<'a> Features<'a> {
    /// Features of subnets of `space`, with the base-table features from `base` when given.
    pub fn new(space: &'a SearchSpace, base: Option<&'a LatencyTable>) -> Features<'a> {
        Features { space, base }
    }

    /// The base table.
    pub fn base(&self) -> Option<&'a LatencyTable> {
        self.base
    }

    fn with_base(&self, mut l: Layer, r: u32) -> Result<Layer, HardwareError> {
        if let Some(t) = self.base {
            let e = t
                .tables
                .get(&r)
                .and_then(|t| t.get(&l.key))
                .ok_or_else(|| HardwareError::MissingLayer {
                    table: t.meta.device.clone(),
                    key: l.key.clone(),
                    r,
                })?;
            let slot = if l.kind == LayerKind::Block {
                BaseBlocks
            } else {
                BaseOther
            };
            l.phi[slot.index()] = e.mean;
        }
        Ok(l)
    }

    /// A subnet's features: the sum over its layers, and 1 for [`Feature::Overhead`].
    pub fn of(&self, arch: &ArchConfig) -> Result<Phi, HardwareError> {
        let mut x = [0.0; N_FEATURES];
        for l in arch_layers(self.space, arch) {
            let l = self.with_base(l, arch.r)?;
            for (s, v) in x.iter_mut().zip(l.phi) {
                *s += v;
            }
        }
        x[Overhead.index()] = 1.0;
        Ok(x)
    }

    /// Every layer at resolution `r`, with base features.
    pub fn layers_at(&self, r: u32) -> Result<Vec<Layer>, HardwareError> {
        all_layers(self.space, r)
            .into_iter()
            .map(|l| self.with_base(l, r))
            .collect()
    }

    /// The resolutions a model can cover: the space's, where the base table (if any) has them.
    pub fn resolutions(&self) -> Vec<u32> {
        self.space
            .resolutions
            .iter()
            .copied()
            .filter(|r| self.base.is_none_or(|t| t.tables.contains_key(r)))
            .collect()
    }
}
