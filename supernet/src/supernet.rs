//! The elastic OFA supernet (MobileNetV3 or ProxylessNAS: the space's family).

use std::collections::HashMap;

use ofa_space::{
    make_divisible, se_width, ActiveBlock, ArchConfig, BlockSpec, SearchSpace, CHANNEL_DIVISIBLE,
};
use tch::{Device, Tensor};

use crate::error::{Result, SupernetError};
use crate::layers::{BlockWeights, Head, Mode, Se, Stem};
use crate::resnet::ResNetSupernet;
use crate::sort::{permute, permute_bn, sorted_by_importance};
use crate::subnet::{Body, Layers, MbConvNet, Subnet, SubnetConfig};
use crate::tensors::{
    InitScheme, InitSource, Layout, MapSource, Registry, Role, TensorSource, TensorSpec,
};

/// One supernet block: its full-width tensors and, for elastic blocks, the kernel transforms.
#[derive(Debug)]
struct SupernetBlock {
    spec: BlockSpec,
    full: BlockWeights,
    /// `(from, to, matrix [to², to²])`, largest `from` first.
    transforms: Vec<(u32, u32, Tensor)>,
}

/// The elastic network. Every forward pass names its subnet explicitly ([`ArchConfig`]); there is
/// no hidden active-subnet state.
#[derive(Debug)]
pub struct Supernet {
    space: SearchSpace,
    body: SupernetBody,
    registry: Vec<(TensorSpec, Tensor)>,
    layout: Layout,
}

/// The stored layers, by family.
#[derive(Debug)]
enum SupernetBody {
    /// MobileNetV3 or ProxylessNAS: stem, MBConv blocks, head.
    MbConv {
        stem: Stem,
        blocks: Vec<SupernetBlock>,
        head: Head,
    },
    /// ResNet.
    ResNet(ResNetSupernet),
}

impl Supernet {
    /// A freshly initialised supernet (reference `he_fout` init), seeded.
    pub fn new(space: &SearchSpace, seed: u64, device: Device) -> Result<Supernet> {
        Supernet::new_with(space, seed, device, InitScheme::HeFout)
    }

    /// A freshly initialised supernet with a choice of convolution initialisation, seeded.
    pub fn new_with(
        space: &SearchSpace,
        seed: u64,
        device: Device,
        scheme: InitScheme,
    ) -> Result<Supernet> {
        crate::rng::with_seed(seed, || {
            Supernet::build(space, &mut InitSource { device, scheme })
        })
    }

    /// Build from a name → tensor map in the reference supernet naming; every tensor must be
    /// present with the right shape and dtype, and none may be left over.
    pub fn from_tensors(
        space: &SearchSpace,
        map: HashMap<String, Tensor>,
        device: Device,
    ) -> Result<Supernet> {
        MapSource::build_all(map, device, |src| Supernet::build(space, src))
    }

    /// Build, taking every tensor from `source` under its reference supernet name.
    pub fn build(space: &SearchSpace, source: &mut dyn TensorSource) -> Result<Supernet> {
        Supernet::build_with_layout(space, source, Layout::Contiguous)
    }

    /// [`Supernet::build`] with a choice of weight memory layout.
    pub fn build_with_layout(
        space: &SearchSpace,
        source: &mut dyn TensorSource,
        layout: Layout,
    ) -> Result<Supernet> {
        space.validate()?;
        let mut reg = Registry::new(source, layout);
        if !space.family.is_mbconv() {
            let body = SupernetBody::ResNet(ResNetSupernet::build(&mut reg, space)?);
            return Ok(Supernet {
                space: space.clone(),
                body,
                registry: reg.entries,
                layout,
            });
        }
        let i = i64::from;
        let stem_w = i(space.stem_width());
        let stem = Stem {
            conv: reg.take(
                "first_conv.conv.weight".into(),
                &[stem_w, i(space.in_channels), 3, 3],
                Role::ConvWeight,
            )?,
            bn: reg.bn("first_conv.bn", stem_w)?,
            act: space.family.head_act(),
        };
        let mut blocks = Vec::new();
        for spec in space.blocks() {
            blocks.push(Self::build_block(&mut reg, space, spec)?);
        }
        let last_stage = i(*space.stage_widths().last().unwrap_or(&0));
        let lc = i(space.last_channel());
        // MobileNetV3: final expand (BN) before pooling and feature mix after it; ProxylessNAS:
        // feature mix (BN) before pooling.
        let (pre_pool, pre_pool_bn, post_pool) = match space.final_expand_width().map(i) {
            Some(fe) => (
                reg.take(
                    "final_expand_layer.conv.weight".into(),
                    &[fe, last_stage, 1, 1],
                    Role::ConvWeight,
                )?,
                reg.bn("final_expand_layer.bn", fe)?,
                Some(reg.take(
                    "feature_mix_layer.conv.weight".into(),
                    &[lc, fe, 1, 1],
                    Role::ConvWeight,
                )?),
            ),
            None => (
                reg.take(
                    "feature_mix_layer.conv.weight".into(),
                    &[lc, last_stage, 1, 1],
                    Role::ConvWeight,
                )?,
                reg.bn("feature_mix_layer.bn", lc)?,
                None,
            ),
        };
        let head = Head {
            pre_pool,
            pre_pool_bn,
            post_pool,
            act: space.family.head_act(),
            classifier_weight: reg.take(
                "classifier.linear.weight".into(),
                &[i(space.n_classes), lc],
                Role::LinearWeight,
            )?,
            classifier_bias: reg.take(
                "classifier.linear.bias".into(),
                &[i(space.n_classes)],
                Role::LinearBias,
            )?,
        };
        let registry = reg.entries;
        Ok(Supernet {
            space: space.clone(),
            body: SupernetBody::MbConv { stem, blocks, head },
            registry,
            layout,
        })
    }

    /// The reference names: the first block is a static layer (`.conv.weight`, `.bn.*`); elastic
    /// blocks wrap one level deeper (`.conv.conv.weight`, `.bn.bn.*`).
    fn build_block(
        reg: &mut Registry<'_>,
        space: &SearchSpace,
        spec: BlockSpec,
    ) -> Result<SupernetBlock> {
        let i = i64::from;
        let n = spec.index;
        let elastic = n > 0;
        let (cw, bw) = if elastic {
            ("conv.conv", "bn.bn")
        } else {
            ("conv", "bn")
        };
        let p = format!("blocks.{n}.conv");
        let (cin, m, cout, k) = (
            i(spec.in_ch),
            i(spec.max_mid),
            i(spec.out_ch),
            i(spec.max_ks),
        );
        let inverted_bottleneck = if elastic {
            let w = reg.take(
                format!("{p}.inverted_bottleneck.{cw}.weight"),
                &[m, cin, 1, 1],
                Role::ConvWeight,
            )?;
            Some((w, reg.bn(&format!("{p}.inverted_bottleneck.{bw}"), m)?))
        } else {
            None
        };
        let depth_conv = reg.take(
            format!("{p}.depth_conv.{cw}.weight"),
            &[m, 1, k, k],
            Role::ConvWeight,
        )?;
        let mut transforms = Vec::new();
        if elastic {
            for (from, to) in space.kernel_transforms() {
                let t2 = i(to * to);
                let mat = reg.take(
                    format!("{p}.depth_conv.conv.{from}to{to}_matrix"),
                    &[t2, t2],
                    Role::KernelTransform,
                )?;
                transforms.push((from, to, mat));
            }
        }
        let depth_bn = reg.bn(&format!("{p}.depth_conv.{bw}"), m)?;
        let se = if spec.se {
            let s = i(se_width(spec.max_mid));
            let q = format!("{p}.depth_conv.se.fc");
            Some(Se {
                reduce_weight: reg.take(
                    format!("{q}.reduce.weight"),
                    &[s, m, 1, 1],
                    Role::ConvWeight,
                )?,
                reduce_bias: reg.take(format!("{q}.reduce.bias"), &[s], Role::ConvBias)?,
                expand_weight: reg.take(
                    format!("{q}.expand.weight"),
                    &[m, s, 1, 1],
                    Role::ConvWeight,
                )?,
                expand_bias: reg.take(format!("{q}.expand.bias"), &[m], Role::ConvBias)?,
            })
        } else {
            None
        };
        let point_linear = reg.take(
            format!("{p}.point_linear.{cw}.weight"),
            &[cout, m, 1, 1],
            Role::ConvWeight,
        )?;
        let point_bn = reg.bn(&format!("{p}.point_linear.{bw}"), cout)?;
        Ok(SupernetBlock {
            spec,
            full: BlockWeights {
                inverted_bottleneck,
                depth_conv,
                depth_bn,
                se,
                point_linear,
                point_bn,
            },
            transforms,
        })
    }

    /// The search space.
    pub fn space(&self) -> &SearchSpace {
        &self.space
    }

    /// Device of the weights.
    pub fn device(&self) -> Device {
        // every network has tensors: the first one's device is the network's
        self.registry
            .first()
            .map_or(Device::Cpu, |(_, t)| t.device())
    }

    /// Every tensor with its spec (reference supernet name, shape, role), in build order. The
    /// handles share storage with the network: in-place updates (optimiser steps) are seen by it.
    pub fn tensors(&self) -> &[(TensorSpec, Tensor)] {
        &self.registry
    }

    /// Total number of elements of trainable tensors.
    pub fn num_params(&self) -> i64 {
        self.registry
            .iter()
            .filter(|(s, _)| s.role.trainable())
            .map(|(_, t)| t.numel() as i64)
            .sum()
    }

    /// The depthwise kernel of block `b` for `m` channels and kernel size `k`: the centre of the
    /// largest kernel, transformed step by step from large to small (`x · Mᵀ` on each flattened
    /// centre), never cropped directly.
    fn active_kernel(blk: &SupernetBlock, m: i64, k: u32) -> Tensor {
        let mut w = blk.full.depth_conv.narrow(0, 0, m);
        for (from, to, mat) in &blk.transforms {
            if *from <= k {
                break;
            }
            let off = i64::from(from / 2 - to / 2);
            let t = i64::from(*to);
            let centre = w
                .narrow(2, off, t)
                .narrow(3, off, t)
                .contiguous()
                .reshape([m, t * t]);
            w = centre.linear(mat, None::<Tensor>).reshape([m, 1, t, t]);
        }
        w
    }

    /// The tensors of one active block: views of the first channels (sharing storage and
    /// gradients with the supernet) and the transformed kernel. The one slicing implementation
    /// behind both the forward pass and extraction.
    fn active_block(blocks: &[SupernetBlock], b: &ActiveBlock) -> BlockWeights {
        let blk = &blocks[b.spec.index];
        if b.spec.index == 0 {
            return blk.full.map(Tensor::shallow_clone);
        }
        let m = i64::from(b.mid);
        let full = &blk.full;
        BlockWeights {
            inverted_bottleneck: full
                .inverted_bottleneck
                .as_ref()
                .map(|(w, bn)| (w.narrow(0, 0, m), bn.narrow(m))),
            depth_conv: Self::active_kernel(blk, m, b.ks),
            depth_bn: full.depth_bn.narrow(m),
            se: full
                .se
                .as_ref()
                .map(|s| s.narrow(m, i64::from(se_width(b.mid)))),
            point_linear: full.point_linear.narrow(1, 0, m),
            point_bn: full.point_bn.map(Tensor::shallow_clone),
        }
    }

    /// The subnet `arch` selects, as views of this supernet's tensors (no copy; gradients flow
    /// back to the supernet and train-mode BN updates its running statistics).
    pub fn view(&self, arch: &ArchConfig) -> Result<Subnet> {
        arch.validate(&self.space)?;
        let config = SubnetConfig::from_arch(&self.space, arch);
        let body = match (&self.body, &config.layers) {
            (SupernetBody::MbConv { stem, blocks, head }, Layers::MbConv(m)) => {
                let active = arch
                    .active_blocks(&self.space)
                    .iter()
                    .zip(&m.blocks)
                    .map(|(b, layer)| (layer.run(), Self::active_block(blocks, b)))
                    .collect();
                Body::MbConv(MbConvNet {
                    stem: stem.map(Tensor::shallow_clone),
                    blocks: active,
                    head: head.map(Tensor::shallow_clone),
                })
            }
            (SupernetBody::ResNet(r), Layers::ResNet(_)) => Body::ResNet(r.view(&self.space, arch)),
            _ => {
                return Err(SupernetError::BadInput(
                    "the subnet's layers are not of the supernet's family".into(),
                ))
            }
        };
        Ok(Subnet::from_parts(config, body))
    }

    /// Cut out the subnet `arch` selects: the reference `get_active_subnet(preserve_weight=True)`,
    /// with fresh, contiguous, detached tensors.
    pub fn extract(&self, arch: &ArchConfig) -> Result<Subnet> {
        tch::no_grad(|| self.view(arch).map(|v| v.deep_copy()))
    }

    /// Forward pass of the subnet `arch` selects.
    pub fn forward(&self, x: &Tensor, arch: &ArchConfig, mode: Mode) -> Result<Tensor> {
        self.view(arch)?.forward(x, mode)
    }

    /// Channel importance sorting (the reference `re_organize_middle_weights`) of every elastic
    /// block, for `expand_ratio_stage` 0, 1, …: middle channels are reordered by the L1 norm of
    /// their point-linear weights (descending, stable), keeping channels already trained at
    /// larger stages in their band; then SE hidden units by the L1 norm of their expand weights.
    /// At full width the network function is unchanged.
    pub fn sort_channels(&mut self, expand_ratio_stage: usize) {
        match &self.body {
            SupernetBody::MbConv { blocks, .. } => tch::no_grad(|| {
                for blk in blocks.iter().skip(1) {
                    Self::sort_block(&self.space, blk, expand_ratio_stage);
                }
            }),
            SupernetBody::ResNet(r) => r.sort_channels(&self.space, expand_ratio_stage),
        }
    }

    fn sort_block(space: &SearchSpace, blk: &SupernetBlock, stage: usize) {
        let w = &blk.full;
        let bands: Vec<i64> = if stage > 0 {
            let mut expands = space.expand_ratio_list.clone();
            expands.sort_unstable_by(|a, b| b.cmp(a));
            expands
                .iter()
                .map(|e| i64::from(make_divisible(e.times(blk.spec.in_ch), CHANNEL_DIVISIBLE)))
                .collect()
        } else {
            Vec::new()
        };
        let idx = sorted_by_importance(&w.point_linear, &bands, stage);
        permute(&w.point_linear, 1, &idx);
        permute_bn(&w.depth_bn, &idx);
        permute(&w.depth_conv, 0, &idx);
        if let Some(se) = &w.se {
            permute(&se.expand_weight, 0, &idx);
            permute(&se.expand_bias, 0, &idx);
            permute(&se.reduce_weight, 1, &idx);
            let se_idx = sorted_by_importance(&se.expand_weight, &[], 0);
            permute(&se.expand_weight, 1, &se_idx);
            permute(&se.reduce_weight, 0, &se_idx);
            permute(&se.reduce_bias, 0, &se_idx);
        }
        if let Some((conv, bn)) = &w.inverted_bottleneck {
            permute_bn(bn, &idx);
            permute(conv, 0, &idx);
        }
    }

    /// A deep copy (e.g. a frozen teacher), in the same layout.
    pub fn deep_clone(&self) -> Result<Supernet> {
        self.to_layout(self.layout)
    }

    /// A deep copy with its 4-D weights in `layout`.
    pub fn to_layout(&self, layout: Layout) -> Result<Supernet> {
        let map: HashMap<String, Tensor> = self
            .registry
            .iter()
            .map(|(s, t)| (s.name.clone(), crate::tensors::deep_copy(t)))
            .collect();
        MapSource::build_all(map, self.device(), |src| {
            Supernet::build_with_layout(&self.space, src, layout)
        })
    }

    /// The layout of the 4-D weights.
    pub fn layout(&self) -> Layout {
        self.layout
    }
}
