//! The ResNet family's layers: the elastic `OFAResNets` (its stored tensors, sliced per arch) and
//! the static `ResNets` a slice runs as, with the reference's names, the forward pass of both and
//! the middle channels' re-organisation.
//!
//! One slicing path, as for the MBConv families: [`ResNetSupernet::view`] narrows the stored
//! tensors to an arch's widths (views sharing storage and gradients); extraction is a deep copy of
//! that view.
//!
//! Checked against the reference by `supernet/tests/resnet.rs`.

mod config;

use ofa_space::{ArchConfig, Bottleneck, ResNetStem, SearchSpace};
use tch::{Kind, Tensor};

use crate::error::Result;
use crate::layers::{Bn, BnMode, BnParams};
use crate::sort::{permute, permute_bn, sorted_by_importance};
use crate::tensors::{Registry, Role};
pub use config::{BottleneckConfig, ResNetLayers};

/// A convolution without bias and its BatchNorm.
#[derive(Debug)]
pub struct ConvBn {
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
pub struct BottleneckWeights {
    /// 1×1, input to middle width.
    pub conv1: ConvBn,
    /// 3×3 with the block's stride.
    pub conv2: ConvBn,
    /// 1×1, middle to output width (no activation before the addition).
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
pub struct ResNetNet {
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
    /// The network from its tensors in [`ResNetLayers::tensor_specs`] order.
    pub fn from_taken(layers: &ResNetLayers, taken: Vec<Tensor>) -> ResNetNet {
        let mut it = taken.into_iter();
        let mut next = move || {
            it.next()
                .unwrap_or_else(|| Tensor::zeros([0], (tch::Kind::Float, tch::Device::Cpu)))
        };
        let mut conv_bn = || ConvBn {
            conv: next(),
            bn: Bn {
                weight: next(),
                bias: next(),
                running_mean: next(),
                running_var: next(),
                num_batches_tracked: next(),
            },
        };
        let n_stem = 2 + usize::from(layers.stem_middle);
        let stem = (0..n_stem).map(|_| conv_bn()).collect();
        let blocks = layers
            .blocks
            .iter()
            .map(|b| {
                let w = BottleneckWeights {
                    conv1: conv_bn(),
                    conv2: conv_bn(),
                    conv3: conv_bn(),
                    downsample: b.downsample().then(&mut conv_bn),
                };
                (i64::from(b.stride), w)
            })
            .collect();
        ResNetNet {
            stem,
            stem_middle: layers.stem_middle,
            blocks,
            classifier_weight: next(),
            classifier_bias: next(),
        }
    }

    /// The stem: conv, the residual conv where it runs, conv, each with BN and ReLU.
    fn stem_forward(&self, x: &Tensor, p: BnParams, mode: &mut BnMode<'_>) -> Tensor {
        let mut h = self.stem[0].forward(x, 2, p, mode).relu();
        for (j, layer) in self.stem.iter().enumerate().skip(1) {
            let y = layer.forward(&h, 1, p, mode).relu();
            h = if self.stem_middle && j == 1 { y + h } else { y };
        }
        h
    }

    /// The forward pass; `dropout` before the classifier in training mode only.
    pub fn forward(&self, x: &Tensor, p: BnParams, dropout: f64, mode: &mut BnMode<'_>) -> Tensor {
        let train = mode.is_train();
        let mut h = max_pool(&self.stem_forward(x, p, mode));
        for (stride, b) in &self.blocks {
            h = b.forward(&h, *stride, p, mode);
        }
        let h = global_pool(&h);
        let h = if train && dropout > 0.0 {
            h.dropout(dropout, true)
        } else {
            h
        };
        h.linear(&self.classifier_weight, Some(&self.classifier_bias))
    }

    /// The eval-mode forward as one step per latency-table key (the stem's convs, the max-pool,
    /// every bottleneck, pooling + classifier): see `ofa_space::latency::layer_keys`.
    #[allow(clippy::type_complexity)]
    pub fn eval_steps(&self, p: BnParams) -> Vec<Box<dyn Fn(&Tensor) -> Tensor + '_>> {
        let mut steps: Vec<Box<dyn Fn(&Tensor) -> Tensor + '_>> = Vec::new();
        for (j, layer) in self.stem.iter().enumerate() {
            let residual = self.stem_middle && j == 1;
            let stride = if j == 0 { 2 } else { 1 };
            steps.push(Box::new(move |x| {
                let y = layer.forward(x, stride, p, &mut BnMode::Eval).relu();
                if residual {
                    y + x
                } else {
                    y
                }
            }));
        }
        steps.push(Box::new(max_pool));
        for (stride, b) in &self.blocks {
            let stride = *stride;
            steps.push(Box::new(move |x| {
                b.forward(x, stride, p, &mut BnMode::Eval)
            }));
        }
        steps.push(Box::new(move |x| {
            global_pool(x).linear(&self.classifier_weight, Some(&self.classifier_bias))
        }));
        steps
    }

    /// The same network with its convolution and linear weights cast to `kind` (autograd links
    /// kept), BatchNorm in float32: bf16 mixed precision.
    pub fn cast_weights(&self, kind: Kind) -> ResNetNet {
        let cast = |l: &ConvBn| ConvBn {
            conv: l.conv.to_kind(kind),
            bn: l.bn.map(Tensor::shallow_clone),
        };
        ResNetNet {
            stem: self.stem.iter().map(cast).collect(),
            stem_middle: self.stem_middle,
            blocks: self
                .blocks
                .iter()
                .map(|(s, b)| {
                    let w = BottleneckWeights {
                        conv1: cast(&b.conv1),
                        conv2: cast(&b.conv2),
                        conv3: cast(&b.conv3),
                        downsample: b.downsample.as_ref().map(cast),
                    };
                    (*s, w)
                })
                .collect(),
            classifier_weight: self.classifier_weight.to_kind(kind),
            classifier_bias: self.classifier_bias.to_kind(kind),
        }
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

/// The 3×3 stride-2 max-pool after the stem.
fn max_pool(x: &Tensor) -> Tensor {
    x.max_pool2d([3, 3], [2, 2], [1, 1], [1, 1], false)
}

/// Global average pooling to `[n, c]`, over W then H as the reference's `MyGlobalAvgPool2d`.
fn global_pool(x: &Tensor) -> Tensor {
    x.mean_dim(3, false, None).mean_dim(2, false, None)
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
