//! The ResNet family's layers: the elastic `OFAResNets` (its stored tensors, sliced per arch) and
//! the static `ResNets` a slice runs as, with the reference's names, the forward pass of both and
//! the middle channels' re-organisation.
//!
//! One slicing path, as for the MBConv families: [`ResNetSupernet::view`] narrows the stored
//! tensors to an arch's widths (views sharing storage and gradients); extraction is a deep copy of
//! that view.
//!
//! Checked against the reference here (logits of the supernet, of extracted subnets and after
//! re-organisation; the extracted state_dict). [`crate::Supernet`] and [`crate::Subnet`] do not
//! hold these layers yet, so outside the tests nothing calls them.
#![cfg_attr(not(test), allow(dead_code))]

use ofa_space::{ArchConfig, Bottleneck, ResNetStem, SearchSpace};
use tch::Tensor;

use crate::error::Result;
use crate::layers::{Bn, BnMode, BnParams};
use crate::sort::{permute, permute_bn, sorted_by_importance};
use crate::tensors::{Registry, Role, TensorSpec};

/// A convolution without bias and its BatchNorm.
#[derive(Debug)]
pub(crate) struct ConvBn {
    /// `[out, in, k, k]`
    pub conv: Tensor,
    /// BN over `out` channels.
    pub bn: Bn,
}

impl ConvBn {
    fn forward(&self, x: &Tensor, stride: i64, p: BnParams, mode: &mut BnMode<'_>) -> Tensor {
        let k = self.conv.size()[2];
        let h = x.conv2d(&self.conv, None::<Tensor>, stride, k / 2, 1, 1);
        self.bn.forward(&h, p, mode)
    }

    /// The first `out` filters over the first `inp` input channels (views).
    fn narrow(&self, out: i64, inp: i64) -> ConvBn {
        ConvBn {
            conv: self.conv.narrow(0, 0, out).narrow(1, 0, inp),
            bn: self.bn.narrow(out),
        }
    }

    fn map(&self, f: impl Fn(&Tensor) -> Tensor + Copy) -> ConvBn {
        ConvBn {
            conv: f(&self.conv),
            bn: self.bn.map(f),
        }
    }
}

/// One bottleneck's tensors.
#[derive(Debug)]
pub(crate) struct BottleneckWeights {
    pub conv1: ConvBn,
    pub conv2: ConvBn,
    pub conv3: ConvBn,
    /// Average pool + 1×1 conv + BN (the first block of a stage); `None`: the identity.
    pub downsample: Option<ConvBn>,
}

impl BottleneckWeights {
    /// `relu(conv3(relu(conv2(relu(conv1(x))))) + shortcut(x))`, the shortcut first (the
    /// reference's call order, which BN recording follows).
    fn forward(&self, x: &Tensor, stride: i64, p: BnParams, mode: &mut BnMode<'_>) -> Tensor {
        let residual = match &self.downsample {
            Some(ds) => {
                let pooled = if stride > 1 {
                    x.avg_pool2d([stride, stride], [stride, stride], [0, 0], true, true, None)
                } else {
                    x.shallow_clone()
                };
                ds.forward(&pooled, 1, p, mode)
            }
            None => x.shallow_clone(),
        };
        let h = self.conv1.forward(x, 1, p, mode).relu();
        let h = self.conv2.forward(&h, stride, p, mode).relu();
        let h = self.conv3.forward(&h, 1, p, mode);
        (h + residual).relu()
    }

    fn map(&self, f: impl Fn(&Tensor) -> Tensor + Copy) -> BottleneckWeights {
        BottleneckWeights {
            conv1: self.conv1.map(f),
            conv2: self.conv2.map(f),
            conv3: self.conv3.map(f),
            downsample: self.downsample.as_ref().map(|d| d.map(f)),
        }
    }

    /// The BN layers in call order.
    fn bns(&self) -> impl Iterator<Item = &Bn> {
        self.downsample.iter().map(|d| &d.bn).chain([
            &self.conv1.bn,
            &self.conv2.bn,
            &self.conv3.bn,
        ])
    }
}

/// A static ResNet (the reference `ResNets`): its layers' tensors and how to run them.
#[derive(Debug)]
pub(crate) struct ResNetNet {
    /// Conv 3×3/2, the residual conv 3×3 (when it runs), conv 3×3.
    pub stem: Vec<ConvBn>,
    /// Whether `stem[1]` is the residual conv.
    pub stem_middle: bool,
    /// The bottlenecks with their strides.
    pub blocks: Vec<(i64, BottleneckWeights)>,
    /// `[n_classes, last]`
    pub classifier_weight: Tensor,
    /// `[n_classes]`
    pub classifier_bias: Tensor,
}

impl ResNetNet {
    /// The forward pass; `dropout` before the classifier in training mode only.
    pub fn forward(&self, x: &Tensor, p: BnParams, dropout: f64, mode: &mut BnMode<'_>) -> Tensor {
        let train = mode.is_train();
        let mut h = self.stem[0].forward(x, 2, p, mode).relu();
        for (j, layer) in self.stem.iter().enumerate().skip(1) {
            let y = layer.forward(&h, 1, p, mode).relu();
            h = if self.stem_middle && j == 1 { y + h } else { y };
        }
        h = h.max_pool2d([3, 3], [2, 2], [1, 1], [1, 1], false);
        for (stride, b) in &self.blocks {
            h = b.forward(&h, *stride, p, mode);
        }
        let h = h.mean_dim(3, false, None).mean_dim(2, false, None);
        let h = if train && dropout > 0.0 {
            h.dropout(dropout, true)
        } else {
            h
        };
        h.linear(&self.classifier_weight, Some(&self.classifier_bias))
    }

    /// Every tensor mapped (shallow or deep copies).
    pub fn map(&self, f: impl Fn(&Tensor) -> Tensor + Copy) -> ResNetNet {
        ResNetNet {
            stem: self.stem.iter().map(|l| l.map(f)).collect(),
            stem_middle: self.stem_middle,
            blocks: self.blocks.iter().map(|(s, b)| (*s, b.map(f))).collect(),
            classifier_weight: f(&self.classifier_weight),
            classifier_bias: f(&self.classifier_bias),
        }
    }

    /// The BN layers in the order a forward pass calls them.
    pub fn bns(&self) -> Vec<&Bn> {
        let mut v: Vec<&Bn> = self.stem.iter().map(|l| &l.bn).collect();
        for (_, b) in &self.blocks {
            v.extend(b.bns());
        }
        v
    }

    /// Every tensor with its name in the reference `ResNets` state_dict, in its order.
    pub fn named_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        let conv_bn = |out: &mut Vec<(String, Tensor)>, p: &str, l: &ConvBn| {
            out.push((format!("{p}.conv.weight"), l.conv.shallow_clone()));
            for (n, t) in bn_tensors(&l.bn) {
                out.push((format!("{p}.bn.{n}"), t.shallow_clone()));
            }
        };
        for (j, l) in self.stem.iter().enumerate() {
            // the residual block wraps its conv layer one level deeper
            let p = if self.stem_middle && j == 1 {
                "input_stem.1.conv".to_string()
            } else {
                format!("input_stem.{j}")
            };
            conv_bn(&mut out, &p, l);
        }
        for (j, (_, b)) in self.blocks.iter().enumerate() {
            conv_bn(&mut out, &format!("blocks.{j}.conv1"), &b.conv1);
            conv_bn(&mut out, &format!("blocks.{j}.conv2"), &b.conv2);
            conv_bn(&mut out, &format!("blocks.{j}.conv3"), &b.conv3);
            if let Some(d) = &b.downsample {
                conv_bn(&mut out, &format!("blocks.{j}.downsample"), d);
            }
        }
        out.push((
            "classifier.linear.weight".into(),
            self.classifier_weight.shallow_clone(),
        ));
        out.push((
            "classifier.linear.bias".into(),
            self.classifier_bias.shallow_clone(),
        ));
        out
    }
}

fn bn_tensors(bn: &Bn) -> [(&'static str, &Tensor); 5] {
    [
        ("weight", &bn.weight),
        ("bias", &bn.bias),
        ("running_mean", &bn.running_mean),
        ("running_var", &bn.running_var),
        ("num_batches_tracked", &bn.num_batches_tracked),
    ]
}

/// The elastic ResNet's stored tensors, at their largest widths.
#[derive(Debug)]
pub(crate) struct ResNetSupernet {
    stem: [ConvBn; 3],
    blocks: Vec<BottleneckWeights>,
    classifier_weight: Tensor,
    classifier_bias: Tensor,
}

impl ResNetSupernet {
    /// Take every tensor under its reference `OFAResNets` name: dynamic layers wrap their conv,
    /// BN and linear one level deeper (`input_stem.0.conv.conv.weight`, `….bn.bn.weight`,
    /// `classifier.linear.linear.weight`), the stem's residual block one more
    /// (`input_stem.1.conv.conv.conv.weight`).
    pub fn build(reg: &mut Registry<'_>, space: &SearchSpace) -> Result<ResNetSupernet> {
        let i = i64::from;
        let max = |l: Vec<u32>| i(l.into_iter().max().unwrap_or(0));
        let (mid, out) = (
            max(space.resnet_stem_mid_widths()),
            max(space.resnet_stem_widths()),
        );
        let mut conv_bn = |p: &str, shape: [i64; 4]| -> Result<ConvBn> {
            Ok(ConvBn {
                conv: reg.take(format!("{p}.conv.conv.weight"), &shape, Role::ConvWeight)?,
                bn: reg.bn(&format!("{p}.bn.bn"), shape[0])?,
            })
        };
        let stem = [
            conv_bn("input_stem.0", [mid, i(space.in_channels), 3, 3])?,
            conv_bn("input_stem.1.conv", [mid, mid, 3, 3])?,
            conv_bn("input_stem.2", [out, mid, 3, 3])?,
        ];
        let mut blocks = Vec::new();
        for b in space.resnet_blocks() {
            let p = format!("blocks.{}", b.index);
            let (cin, m, cout) = (i(b.max_in), i(b.max_mid), i(b.max_out));
            blocks.push(BottleneckWeights {
                conv1: conv_bn(&format!("{p}.conv1"), [m, cin, 1, 1])?,
                conv2: conv_bn(&format!("{p}.conv2"), [m, m, 3, 3])?,
                conv3: conv_bn(&format!("{p}.conv3"), [cout, m, 1, 1])?,
                downsample: if b.downsample {
                    Some(conv_bn(&format!("{p}.downsample"), [cout, cin, 1, 1])?)
                } else {
                    None
                },
            });
        }
        let nc = i(space.n_classes);
        let last = i(space.last_channel());
        Ok(ResNetSupernet {
            stem,
            blocks,
            classifier_weight: reg.take(
                "classifier.linear.linear.weight".into(),
                &[nc, last],
                Role::LinearWeight,
            )?,
            classifier_bias: reg.take(
                "classifier.linear.linear.bias".into(),
                &[nc],
                Role::LinearBias,
            )?,
        })
    }

    /// The static network `arch` selects, as views of the stored tensors: every layer's first
    /// output channels over its input's first channels (the reference's `get_active_filter`),
    /// BN's first channels, the classifier's first input columns.
    pub fn view(&self, space: &SearchSpace, arch: &ArchConfig) -> ResNetNet {
        let i = i64::from;
        let ResNetStem { mid, out, middle } = arch.resnet_stem(space);
        let (mid, out) = (i(mid), i(out));
        let mut stem = vec![self.stem[0].narrow(mid, i(space.in_channels))];
        if middle {
            stem.push(self.stem[1].narrow(mid, mid));
        }
        stem.push(self.stem[2].narrow(out, mid));
        let blocks = arch
            .bottlenecks(space)
            .iter()
            .map(|b| (i(b.stride), self.block_view(b)))
            .collect::<Vec<_>>();
        let last = blocks
            .last()
            .map_or(out, |(_, b): &(i64, BottleneckWeights)| {
                b.conv3.conv.size()[0]
            });
        ResNetNet {
            stem,
            stem_middle: middle,
            blocks,
            classifier_weight: self.classifier_weight.narrow(1, 0, last),
            classifier_bias: self.classifier_bias.shallow_clone(),
        }
    }

    fn block_view(&self, b: &Bottleneck) -> BottleneckWeights {
        let w = &self.blocks[b.index];
        let (cin, m, cout) = (i64::from(b.in_ch), i64::from(b.mid), i64::from(b.out_ch));
        BottleneckWeights {
            conv1: w.conv1.narrow(m, cin),
            conv2: w.conv2.narrow(m, m),
            conv3: w.conv3.narrow(cout, m),
            downsample: w.downsample.as_ref().map(|d| d.narrow(cout, cin)),
        }
    }

    /// The reference `re_organize_middle_weights(expand_ratio_stage)` of every bottleneck: the
    /// middle channels of conv2 sorted by the L1 norm of conv3's input weights (descending,
    /// stable), then conv1's by conv2's input weights; from stage 1 on, channels outside the
    /// widths of the stage's larger ratios are pushed back band by band. The network function at
    /// full width is unchanged.
    pub fn sort_channels(&self, space: &SearchSpace, expand_ratio_stage: usize) {
        let mut expands = space.expand_ratio_list.clone();
        expands.sort_unstable_by(|a, b| b.cmp(a));
        tch::no_grad(|| {
            for (w, spec) in self.blocks.iter().zip(space.resnet_blocks()) {
                let bands: Vec<i64> = expands
                    .iter()
                    .map(|e| i64::from(ofa_space::bottleneck_mid(spec.max_out, *e)))
                    .collect();
                let idx = sorted_by_importance(&w.conv3.conv, &bands, expand_ratio_stage);
                permute(&w.conv3.conv, 1, &idx);
                permute_bn(&w.conv2.bn, &idx);
                permute(&w.conv2.conv, 0, &idx);
                let idx = sorted_by_importance(&w.conv2.conv, &bands, expand_ratio_stage);
                permute(&w.conv2.conv, 1, &idx);
                permute_bn(&w.conv1.bn, &idx);
                permute(&w.conv1.conv, 0, &idx);
            }
        })
    }
}

/// The reference `ResNets` state_dict names and shapes of a static ResNet, in order.
pub(crate) fn subnet_specs(net: &ResNetNet) -> Vec<TensorSpec> {
    net.named_tensors()
        .into_iter()
        .map(|(name, t)| {
            let role = role_of(&name);
            TensorSpec {
                name,
                shape: t.size(),
                role,
            }
        })
        .collect()
}

fn role_of(name: &str) -> Role {
    let last = name.rsplit('.').next().unwrap_or("");
    match (name.contains(".bn."), last) {
        (true, "weight") => Role::BnWeight,
        (true, "bias") => Role::BnBias,
        (_, "running_mean") => Role::RunningMean,
        (_, "running_var") => Role::RunningVar,
        (_, "num_batches_tracked") => Role::BatchCounter,
        _ if name.starts_with("classifier") && last == "bias" => Role::LinearBias,
        _ if name.starts_with("classifier") => Role::LinearWeight,
        _ => Role::ConvWeight,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    //! Conformance against the reference `OFAResNets` (`tests/fixtures/ofa-resnet-tiny`, made by
    //! `scripts/family_fixtures.py`).

    use std::collections::HashMap;
    use std::path::{Path, PathBuf};

    use ofa_space::{ArchConfig, SearchSpace};
    use serde_json::Value;
    use tch::{Device, Tensor};

    use super::*;
    use crate::checkpoint::read_safetensors;
    use crate::tensors::{Layout, MapSource};

    fn fixtures() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/ofa-resnet-tiny")
    }

    fn space() -> SearchSpace {
        SearchSpace::preset("ofa-resnet-tiny").unwrap()
    }

    fn supernet(space: &SearchSpace) -> ResNetSupernet {
        let f = read_safetensors(&fixtures().join("supernet.safetensors")).unwrap();
        MapSource::build_all(f.tensors, Device::Cpu, |src| {
            let mut reg = Registry::new(src, Layout::Contiguous);
            ResNetSupernet::build(&mut reg, space)
        })
        .unwrap()
    }

    fn cases() -> Vec<Value> {
        let text = std::fs::read_to_string(fixtures().join("cases.json")).unwrap();
        let v: Value = serde_json::from_str(&text).unwrap();
        v["cases"].as_array().unwrap().clone()
    }

    fn arch_of(case: &Value) -> ArchConfig {
        let v = serde_json::json!({"d": case["d"], "e": case["e"], "w": case["w"], "r": case["r"]});
        ArchConfig::from_json(&v.to_string()).unwrap()
    }

    fn io() -> HashMap<String, Tensor> {
        read_safetensors(&fixtures().join("io.safetensors"))
            .unwrap()
            .tensors
    }

    fn params(space: &SearchSpace) -> BnParams {
        BnParams {
            momentum: space.bn_momentum,
            eps: space.bn_eps,
        }
    }

    fn assert_close(got: &Tensor, want: &Tensor, what: &str) {
        assert_eq!(got.size(), want.size(), "{what}");
        let err = (got - want).abs() - (want.abs() + 1.0) * 1e-4;
        let worst = err.max().double_value(&[]);
        assert!(worst <= 0.0, "{what}: exceeds 1e-4·(1+|x|) by {worst}");
    }

    #[test]
    fn supernet_and_extracted_logits_match_the_reference() {
        let space = space();
        let net = supernet(&space);
        let io = io();
        let p = params(&space);
        for case in cases() {
            let i = case["index"].as_u64().unwrap();
            let arch = arch_of(&case);
            arch.validate(&space).unwrap();
            let x = &io[&format!("input_{i}")];
            let view = net.view(&space, &arch);
            let got = tch::no_grad(|| view.forward(x, p, 0.0, &mut BnMode::Eval));
            assert_close(
                &got,
                &io[&format!("logits_supernet_{i}")],
                &format!("case {i}"),
            );
            let sub = tch::no_grad(|| view.map(crate::tensors::deep_copy));
            let got = tch::no_grad(|| sub.forward(x, p, 0.0, &mut BnMode::Eval));
            assert_close(
                &got,
                &io[&format!("logits_subnet_{i}")],
                &format!("subnet {i}"),
            );
        }
    }

    #[test]
    fn extraction_gives_the_reference_subnet_its_names_shapes_and_values() {
        let space = space();
        let net = supernet(&space);
        let case = cases()
            .into_iter()
            .find(|c| c.get("subnet_file").is_some())
            .unwrap();
        let want = read_safetensors(&fixtures().join("subnet.safetensors")).unwrap();
        let sub = net.view(&space, &arch_of(&case));
        let mine = sub.named_tensors();
        let mut names: Vec<&String> = mine.iter().map(|(n, _)| n).collect();
        names.sort();
        let mut theirs: Vec<&String> = want.tensors.keys().collect();
        theirs.sort();
        assert_eq!(names, theirs);
        for (name, t) in &mine {
            let w = &want.tensors[name];
            assert_eq!(t.size(), w.size(), "{name}");
            assert!(t.to_kind(w.kind()).equal(w), "{name}");
        }
        // every BN once, a block's shortcut BN first (the reference's call order)
        let bns = sub.bns();
        assert_eq!(
            bns.len(),
            names.iter().filter(|n| n.ends_with("bn.weight")).count()
        );
        let first_block = 2 + usize::from(sub.stem_middle);
        let ds = &sub.blocks[0].1.downsample.as_ref().unwrap().bn;
        assert!(bns[first_block].weight.equal(&ds.weight));
        let specs = subnet_specs(&sub);
        assert_eq!(specs.len(), mine.len());
        assert!(specs
            .iter()
            .any(|s| s.name == "classifier.linear.bias" && s.role == Role::LinearBias));
    }

    #[test]
    fn re_organising_the_middle_channels_computes_what_the_reference_does() {
        let space = space();
        let io = io();
        let p = params(&space);
        for stage in [0usize, 1] {
            let net = supernet(&space);
            net.sort_channels(&space, stage);
            for case in cases() {
                let i = case["index"].as_u64().unwrap();
                let view = net.view(&space, &arch_of(&case));
                let x = &io[&format!("input_{i}")];
                let got = tch::no_grad(|| view.forward(x, p, 0.0, &mut BnMode::Eval));
                let want = &io[&format!("logits_reorg{stage}_{i}")];
                assert_close(&got, want, &format!("stage {stage}, case {i}"));
            }
        }
    }
}
