//! The building blocks shared by the supernet and its extracted subnets: BatchNorm, SE, the
//! MBConv block, the stem and the head. The supernet slices its stored tensors into these
//! ([`crate::Supernet::active_block`]) and runs them; a subnet stores them.

use ofa_space::Activation;
use tch::Tensor;

/// How BatchNorm layers behave in a forward pass.
#[derive(Debug)]
pub enum BnMode<'a> {
    /// Normalise with the running statistics.
    Eval,
    /// Normalise with batch statistics and update the running ones in place (momentum, unbiased
    /// variance), `num_batches_tracked += 1`.
    Train,
    /// BN recalibration: normalise with the batch mean and biased variance and record them, in
    /// call order, without touching any buffer.
    Record(&'a mut Vec<(Tensor, Tensor)>),
}

impl BnMode<'_> {
    /// Whether the network is in training mode (dropout active).
    pub fn is_train(&self) -> bool {
        matches!(self, BnMode::Train)
    }
}

/// Forward-pass mode of a network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Inference: running BN statistics, no dropout.
    Eval,
    /// Training: batch statistics, running statistics updated, dropout on.
    Train,
}

/// A BatchNorm2d layer's tensors (possibly views of the first C channels of larger ones).
#[derive(Debug)]
pub struct Bn {
    /// γ
    pub weight: Tensor,
    /// β
    pub bias: Tensor,
    /// Running mean.
    pub running_mean: Tensor,
    /// Running (unbiased) variance.
    pub running_var: Tensor,
    /// Scalar int64 counter.
    pub num_batches_tracked: Tensor,
}

/// BatchNorm hyper-parameters.
#[derive(Debug, Clone, Copy)]
pub struct BnParams {
    /// Momentum (PyTorch convention: weight of the new batch).
    pub momentum: f64,
    /// Epsilon.
    pub eps: f64,
}

impl Bn {
    /// The first `c` channels, as views sharing storage (the counter is shared too).
    pub fn narrow(&self, c: i64) -> Bn {
        Bn {
            weight: self.weight.narrow(0, 0, c),
            bias: self.bias.narrow(0, 0, c),
            running_mean: self.running_mean.narrow(0, 0, c),
            running_var: self.running_var.narrow(0, 0, c),
            num_batches_tracked: self.num_batches_tracked.shallow_clone(),
        }
    }

    /// Apply the layer.
    pub fn forward(&self, x: &Tensor, p: BnParams, mode: &mut BnMode<'_>) -> Tensor {
        match mode {
            BnMode::Eval => x.batch_norm(
                Some(&self.weight),
                Some(&self.bias),
                Some(&self.running_mean),
                Some(&self.running_var),
                false,
                p.momentum,
                p.eps,
                true,
            ),
            BnMode::Train => {
                tch::no_grad(|| {
                    let _ = self.num_batches_tracked.shallow_clone().g_add_scalar_(1);
                });
                x.batch_norm(
                    Some(&self.weight),
                    Some(&self.bias),
                    Some(&self.running_mean),
                    Some(&self.running_var),
                    true,
                    p.momentum,
                    p.eps,
                    true,
                )
            }
            BnMode::Record(stats) => {
                // The reference's set_running_statistics: mean over N, H, W in that order and
                // the biased variance of the same, then an eval-mode batch_norm with them.
                let mean = x
                    .mean_dim(0, true, None)
                    .mean_dim(2, true, None)
                    .mean_dim(3, true, None);
                let centred = x - &mean;
                let var = (&centred * &centred)
                    .mean_dim(0, true, None)
                    .mean_dim(2, true, None)
                    .mean_dim(3, true, None);
                let (mean, var) = (mean.flatten(0, -1), var.flatten(0, -1));
                let y = x.batch_norm(
                    Some(&self.weight),
                    Some(&self.bias),
                    Some(&mean),
                    Some(&var),
                    false,
                    0.0,
                    p.eps,
                    true,
                );
                stats.push((mean, var));
                y
            }
        }
    }

    /// Every tensor, for deep copies.
    pub fn map(&self, f: impl Fn(&Tensor) -> Tensor) -> Bn {
        Bn {
            weight: f(&self.weight),
            bias: f(&self.bias),
            running_mean: f(&self.running_mean),
            running_var: f(&self.running_var),
            num_batches_tracked: f(&self.num_batches_tracked),
        }
    }
}

/// Squeeze-and-excitation tensors: 1×1 convs `reduce` `[s, m]` and `expand` `[m, s]` with biases.
#[derive(Debug)]
pub struct Se {
    /// `[s, m, 1, 1]`
    pub reduce_weight: Tensor,
    /// `[s]`
    pub reduce_bias: Tensor,
    /// `[m, s, 1, 1]`
    pub expand_weight: Tensor,
    /// `[m]`
    pub expand_bias: Tensor,
}

impl Se {
    /// `x · h_sigmoid(expand(relu(reduce(mean_hw(x)))))`
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let y = x.mean_dim(3, true, None).mean_dim(2, true, None);
        let y = y
            .conv2d(&self.reduce_weight, Some(&self.reduce_bias), 1, 0, 1, 1)
            .relu();
        let y = y
            .conv2d(&self.expand_weight, Some(&self.expand_bias), 1, 0, 1, 1)
            .hardsigmoid();
        x * y
    }

    /// The active slice for middle width `m` and hidden width `s`.
    pub fn narrow(&self, m: i64, s: i64) -> Se {
        Se {
            reduce_weight: self.reduce_weight.narrow(0, 0, s).narrow(1, 0, m),
            reduce_bias: self.reduce_bias.narrow(0, 0, s),
            expand_weight: self.expand_weight.narrow(0, 0, m).narrow(1, 0, s),
            expand_bias: self.expand_bias.narrow(0, 0, m),
        }
    }

    /// Every tensor, for deep copies.
    pub fn map(&self, f: impl Fn(&Tensor) -> Tensor) -> Se {
        Se {
            reduce_weight: f(&self.reduce_weight),
            reduce_bias: f(&self.reduce_bias),
            expand_weight: f(&self.expand_weight),
            expand_bias: f(&self.expand_bias),
        }
    }
}

/// Apply an activation.
pub fn act(x: &Tensor, a: Activation) -> Tensor {
    match a {
        Activation::Relu => x.relu(),
        Activation::Relu6 => x.relu6(),
        Activation::HSwish => x.hardswish(),
    }
}

/// The tensors of one MBConv block at fixed widths and kernel (a supernet slice or a subnet's own).
#[derive(Debug)]
pub struct BlockWeights {
    /// Inverted bottleneck 1×1 conv `[m, in, 1, 1]` and its BN (absent in the first block).
    pub inverted_bottleneck: Option<(Tensor, Bn)>,
    /// Depthwise conv `[m, 1, k, k]`.
    pub depth_conv: Tensor,
    /// Depthwise BN.
    pub depth_bn: Bn,
    /// SE, where the stage has it.
    pub se: Option<Se>,
    /// Point-linear 1×1 conv `[out, m, 1, 1]`.
    pub point_linear: Tensor,
    /// Point-linear BN.
    pub point_bn: Bn,
}

/// Static description of how to run a block (what the weights do not say).
#[derive(Debug, Clone, Copy)]
pub struct BlockRun {
    /// Depthwise stride.
    pub stride: i64,
    /// Activation.
    pub act: Activation,
    /// Identity shortcut.
    pub shortcut: bool,
}

impl BlockWeights {
    /// Run the block.
    pub fn forward(&self, x: &Tensor, run: BlockRun, p: BnParams, mode: &mut BnMode<'_>) -> Tensor {
        let mut h = match &self.inverted_bottleneck {
            Some((w, bn)) => {
                let h = x.conv2d(w, None::<Tensor>, 1, 0, 1, 1);
                act(&bn.forward(&h, p, mode), run.act)
            }
            None => x.shallow_clone(),
        };
        let m = self.depth_conv.size()[0];
        let k = self.depth_conv.size()[2];
        h = h.conv2d(&self.depth_conv, None::<Tensor>, run.stride, k / 2, 1, m);
        h = act(&self.depth_bn.forward(&h, p, mode), run.act);
        if let Some(se) = &self.se {
            h = se.forward(&h);
        }
        h = h.conv2d(&self.point_linear, None::<Tensor>, 1, 0, 1, 1);
        h = self.point_bn.forward(&h, p, mode);
        if run.shortcut {
            h + x
        } else {
            h
        }
    }

    /// Every tensor, for deep copies.
    pub fn map(&self, f: impl Fn(&Tensor) -> Tensor + Copy) -> BlockWeights {
        BlockWeights {
            inverted_bottleneck: self
                .inverted_bottleneck
                .as_ref()
                .map(|(w, bn)| (f(w), bn.map(f))),
            depth_conv: f(&self.depth_conv),
            depth_bn: self.depth_bn.map(f),
            se: self.se.as_ref().map(|s| s.map(f)),
            point_linear: f(&self.point_linear),
            point_bn: self.point_bn.map(f),
        }
    }
}

/// First conv (3×3 stride 2 → BN → the family's activation), identical in supernet and subnet.
#[derive(Debug)]
pub struct Stem {
    /// `[stem, in_channels, 3, 3]`
    pub conv: Tensor,
    /// Its BN.
    pub bn: Bn,
    /// Its activation (MobileNetV3: h-swish; ProxylessNAS: ReLU6).
    pub act: Activation,
}

impl Stem {
    /// Every tensor mapped (shallow or deep copies).
    pub fn map(&self, f: impl Fn(&Tensor) -> Tensor + Copy) -> Stem {
        Stem {
            conv: f(&self.conv),
            bn: self.bn.map(f),
            act: self.act,
        }
    }

    /// Run the stem.
    pub fn forward(&self, x: &Tensor, p: BnParams, mode: &mut BnMode<'_>) -> Tensor {
        let h = x.conv2d(&self.conv, None::<Tensor>, 2, 1, 1, 1);
        act(&self.bn.forward(&h, p, mode), self.act)
    }
}

/// The head: a 1×1 conv → BN → act before pooling (MobileNetV3's final expand, ProxylessNAS's
/// feature mix), global average pooling, where the family has it a 1×1 conv → act without BN
/// after pooling (MobileNetV3's feature mix), then the classifier.
#[derive(Debug)]
pub struct Head {
    /// `[width, last_stage, 1, 1]`
    pub pre_pool: Tensor,
    /// Its BN.
    pub pre_pool_bn: Bn,
    /// `[last_channel, width, 1, 1]`, no BN, no bias (MobileNetV3 only).
    pub post_pool: Option<Tensor>,
    /// Activation of both convolutions.
    pub act: Activation,
    /// `[n_classes, last_channel]`
    pub classifier_weight: Tensor,
    /// `[n_classes]`
    pub classifier_bias: Tensor,
}

impl Head {
    /// Every tensor mapped (shallow or deep copies).
    pub fn map(&self, f: impl Fn(&Tensor) -> Tensor + Copy) -> Head {
        Head {
            pre_pool: f(&self.pre_pool),
            pre_pool_bn: self.pre_pool_bn.map(f),
            post_pool: self.post_pool.as_ref().map(f),
            act: self.act,
            classifier_weight: f(&self.classifier_weight),
            classifier_bias: f(&self.classifier_bias),
        }
    }

    /// Pooled features `[n, last_channel, 1, 1]` of the last stage's map `x`.
    pub fn features(&self, x: &Tensor, p: BnParams, mode: &mut BnMode<'_>) -> Tensor {
        let h = x.conv2d(&self.pre_pool, None::<Tensor>, 1, 0, 1, 1);
        let h = act(&self.pre_pool_bn.forward(&h, p, mode), self.act);
        let h = h.mean_dim(3, true, None).mean_dim(2, true, None);
        match &self.post_pool {
            Some(w) => act(&h.conv2d(w, None::<Tensor>, 1, 0, 1, 1), self.act),
            None => h,
        }
    }

    /// Run the head; `dropout` applies in training mode only.
    pub fn forward(&self, x: &Tensor, p: BnParams, dropout: f64, mode: &mut BnMode<'_>) -> Tensor {
        let train = mode.is_train();
        let h = self.features(x, p, mode).flatten(1, -1);
        let h = if train && dropout > 0.0 {
            h.dropout(dropout, true)
        } else {
            h
        };
        h.linear(&self.classifier_weight, Some(&self.classifier_bias))
    }
}
