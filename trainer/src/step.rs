//! One progressive-shrinking training step with the reference semantics: teacher soft labels once
//! per batch, then for each sampled subnet a forward pass on the same batch with
//! `kd_ratio · CE(student, softmax(teacher)) + label-smoothed CE(student, y)`, gradients
//! accumulated (and, in a data-parallel job, averaged across ranks in buckets), one SGD (Nesterov)
//! step; plus the cosine learning-rate schedule with warm-up.

use std::time::Instant;

use ofa_dist::{ProcessGroup, BUCKET_BYTES};
use ofa_space::ArchConfig;
use ofa_supernet::{Mode, Result, Subnet, Supernet, TensorSpec};
use tch::{Kind, Tensor};

use crate::error::TrainError;

/// `mean_i Σ_c −target[i, c] · log_softmax(logits)[i, c]` (the reference's
/// `cross_entropy_loss_with_soft_target`).
pub fn soft_cross_entropy(logits: &Tensor, target: &Tensor) -> Tensor {
    (-target * logits.log_softmax(1, Kind::Float))
        .sum_dim_intlist(1, false, Kind::Float)
        .mean(Kind::Float)
}

/// Cross-entropy against labels smoothed to `1 − ε` on the true class and `ε / n` everywhere.
pub fn label_smoothed_cross_entropy(logits: &Tensor, labels: &Tensor, epsilon: f64) -> Tensor {
    let n = logits.size()[1];
    let one_hot = labels.one_hot(n).to_kind(Kind::Float);
    let soft = one_hot * (1.0 - epsilon) + epsilon / n as f64;
    soft_cross_entropy(logits, &soft)
}

/// Learning rate at iteration `step` (0-based) of a phase of `total` iterations whose first
/// `warmup` iterations ramp linearly from 0 to `base`; afterwards cosine decay to 0 over the rest.
pub fn lr_at(step: u64, total: u64, warmup: u64, base: f64) -> f64 {
    if step < warmup {
        return base * (step + 1) as f64 / warmup as f64;
    }
    let t = (step - warmup) as f64;
    let span = total.saturating_sub(warmup).max(1) as f64;
    0.5 * base * (1.0 + (std::f64::consts::PI * t / span).cos())
}

/// A network's tensors, each with its spec, in one fixed order: what the optimiser, the gradient
/// averaging, the ranks' start and the checkpoints walk (a supernet's registry, or a trainable
/// subnet's tensors in state_dict order).
pub trait Params {
    /// Every tensor with its spec (trainable ones require gradients).
    fn params(&self) -> &[(TensorSpec, Tensor)];
}

impl Params for Supernet {
    fn params(&self) -> &[(TensorSpec, Tensor)] {
        self.tensors()
    }
}

/// SGD with Nesterov momentum (PyTorch semantics, dampening 0), weight decay only on the
/// tensors whose role asks for it (not on BN and biases). Momentum buffers are kept by name so a
/// run can save and restore them exactly.
#[derive(Debug)]
pub struct Sgd {
    /// Momentum factor.
    pub momentum: f64,
    /// Weight decay (L2) for conv/linear weights and the kernel transform matrices.
    pub weight_decay: f64,
    /// One buffer per tensor (the order of [`Params::params`]), created lazily.
    buffers: Vec<Option<Tensor>>,
}

impl Sgd {
    /// An optimiser for `net`. Every trainable tensor gets a defined (zero) gradient, so a tensor
    /// that no subnet of a step uses still receives its momentum and weight-decay update, as with
    /// the reference's `optimizer.zero_grad()` (gradients zeroed, not dropped); this also makes an
    /// optimiser restored from a checkpoint behave exactly like the one that was saved.
    pub fn new(net: &impl Params, momentum: f64, weight_decay: f64) -> Sgd {
        let device = net
            .params()
            .first()
            .map_or(tch::Device::Cpu, |(_, t)| t.device());
        let mut zero = Tensor::zeros([], (Kind::Float, device));
        for (spec, t) in net.params() {
            if spec.role.trainable() && !t.grad().defined() {
                zero += t.sum(Kind::Float) * 0.0;
            }
        }
        if zero.requires_grad() {
            zero.backward();
        }
        let opt = Sgd {
            momentum,
            weight_decay,
            buffers: net.params().iter().map(|_| None).collect(),
        };
        opt.zero_grad(net);
        opt
    }

    /// Clear every gradient.
    pub fn zero_grad(&self, net: &impl Params) {
        for (spec, t) in net.params() {
            if spec.role.trainable() {
                let mut g = t.grad();
                if g.defined() {
                    let _ = g.zero_();
                }
            }
        }
    }

    /// One update with learning rate `lr` (tensors without a gradient are left alone).
    pub fn step(&mut self, net: &impl Params, lr: f64) {
        tch::no_grad(|| {
            for ((spec, p), buf) in net.params().iter().zip(self.buffers.iter_mut()) {
                if !spec.role.trainable() {
                    continue;
                }
                let g = p.grad();
                if !g.defined() {
                    continue;
                }
                let mut d = if spec.role.weight_decay() && self.weight_decay != 0.0 {
                    &g + p * self.weight_decay
                } else {
                    g.shallow_clone()
                };
                if self.momentum != 0.0 {
                    let b = match buf.take() {
                        None => d.copy(),
                        Some(b) => b * self.momentum + &d,
                    };
                    d = &d + &b * self.momentum;
                    *buf = Some(b);
                }
                let _ = p.shallow_clone().g_sub_(&(d * lr));
            }
        })
    }

    /// Restore momentum buffers saved by [`Sgd::state`] (entries `momentum.<tensor name>`).
    pub fn load_state(
        &mut self,
        net: &impl Params,
        state: &std::collections::HashMap<String, Tensor>,
    ) {
        for ((spec, p), buf) in net.params().iter().zip(self.buffers.iter_mut()) {
            if let Some(b) = state.get(&format!("momentum.{}", spec.name)) {
                *buf = Some(b.to_device(p.device()).to_kind(p.kind()));
            }
        }
    }

    /// The momentum buffers by tensor name (for checkpoints).
    pub fn state(&self, net: &impl Params) -> Vec<(String, Tensor)> {
        net.params()
            .iter()
            .zip(&self.buffers)
            .filter_map(|((s, _), b)| {
                b.as_ref()
                    .map(|b| (format!("momentum.{}", s.name), b.shallow_clone()))
            })
            .collect()
    }
}

/// Settings of one step.
#[derive(Debug, Clone)]
pub struct StepConfig {
    /// Weight of the distillation loss (0 disables the teacher).
    pub kd_ratio: f64,
    /// Label smoothing ε.
    pub label_smoothing: f64,
    /// Arithmetic of the forward and backward passes.
    pub precision: Precision,
}

/// Arithmetic of training passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// float32 everywhere.
    #[default]
    Fp32,
    /// Convolutions and linear layers in bfloat16 (weights cast from float32 master copies,
    /// which the optimiser updates); BatchNorm statistics, losses and the optimiser in float32.
    Bf16,
}

/// Train-mode forward of one subnet in the given precision; float32 logits.
fn run(net: &Supernet, arch: &ArchConfig, x: &Tensor, precision: Precision) -> Result<Tensor> {
    match precision {
        Precision::Fp32 => net.forward(x, arch, Mode::Train),
        Precision::Bf16 => {
            let view = net.view(arch)?.cast_weights(Kind::BFloat16);
            Ok(view
                .forward(&x.to_kind(Kind::BFloat16), Mode::Train)?
                .to_kind(Kind::Float))
        }
    }
}

/// What a step measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepStats {
    /// Mean total loss over the step's subnets.
    pub loss: f64,
    /// Mean top-1 of the step's subnets on the batch (fraction).
    pub top1: f64,
    /// Gradient bytes averaged across ranks (0 on one process).
    pub reduced_bytes: usize,
    /// Where the step's time went, in seconds.
    pub time: StepTime,
}

/// Wall-clock time of each part of a step, in seconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StepTime {
    /// Teacher forward (soft labels).
    pub teacher: f64,
    /// Student forward passes and losses.
    pub forward: f64,
    /// Backward passes.
    pub backward: f64,
    /// Zeroing gradients and the optimiser update.
    pub optimizer: f64,
    /// Averaging the gradients across ranks.
    pub allreduce: f64,
}

/// Average the gradients of `net`'s trainable tensors across the ranks of `group` (DDP's 25 MiB
/// buckets, in registry order, which every rank shares). Returns the bytes reduced.
pub fn average_gradients(
    net: &impl Params,
    group: &ProcessGroup,
) -> std::result::Result<usize, TrainError> {
    let mut grads: Vec<Tensor> = net
        .params()
        .iter()
        .filter(|(spec, _)| spec.role.trainable())
        .map(|(_, t)| t.grad())
        .filter(Tensor::defined)
        .collect();
    Ok(group.average_in_buckets(&mut grads, BUCKET_BYTES)?)
}

/// One training step: soft labels from `teacher` (its largest subnet at the batch's resolution,
/// train-mode BN under no-grad, as the reference), then forward/backward of every arch in
/// `archs` on the same batch, gradients accumulated, averaged across the ranks of `group` where
/// there is one (each rank's batch is its shard), one optimiser step with learning rate `lr`.
#[allow(clippy::too_many_arguments)]
pub fn train_step(
    net: &Supernet,
    teacher: Option<&Supernet>,
    opt: &mut Sgd,
    x: &Tensor,
    y: &Tensor,
    archs: &[ArchConfig],
    cfg: &StepConfig,
    lr: f64,
    group: Option<&ProcessGroup>,
) -> std::result::Result<StepStats, TrainError> {
    let mut time = StepTime::default();
    let mut t0 = Instant::now();
    let mut lap = |slot: &mut f64| {
        *slot += t0.elapsed().as_secs_f64();
        t0 = Instant::now();
    };
    opt.zero_grad(net);
    lap(&mut time.optimizer);
    let soft = match teacher {
        Some(t) if cfg.kd_ratio > 0.0 => {
            let mut full = ArchConfig::largest(t.space());
            full.r = archs.first().map_or(full.r, |a| a.r);
            let logits = tch::no_grad(|| run(t, &full, x, cfg.precision))?;
            Some(logits.softmax(1, Kind::Float))
        }
        _ => None,
    };
    lap(&mut time.teacher);
    let (mut loss_sum, mut top1_sum) = (0.0, 0.0);
    for arch in archs {
        let out = run(net, arch, x, cfg.precision)?;
        let mut loss = label_smoothed_cross_entropy(&out, y, cfg.label_smoothing);
        if let Some(s) = &soft {
            loss += soft_cross_entropy(&out, s) * cfg.kd_ratio;
        }
        lap(&mut time.forward);
        loss.backward();
        loss_sum += loss.double_value(&[]);
        let correct = out
            .argmax(1, false)
            .eq_tensor(y)
            .to_kind(Kind::Float)
            .mean(Kind::Float);
        top1_sum += correct.double_value(&[]);
        lap(&mut time.backward);
    }
    let reduced_bytes = match group {
        Some(g) => average_gradients(net, g)?,
        None => 0,
    };
    lap(&mut time.allreduce);
    opt.step(net, lr);
    lap(&mut time.optimizer);
    let n = archs.len().max(1) as f64;
    Ok(StepStats {
        loss: loss_sum / n,
        top1: top1_sum / n,
        reduced_bytes,
        time,
    })
}

/// One fine-tuning step of a standalone subnet: soft labels from `teacher` (train-mode BN under
/// no-grad, as [`train_step`]'s teacher) where there is one, then the student's train-mode
/// forward with `kd_ratio · CE(student, softmax(teacher)) + label-smoothed CE`, backward, the
/// gradients averaged across the ranks of `group` where there is one, one optimiser step.
#[allow(clippy::too_many_arguments)]
pub fn subnet_step(
    student: &crate::student::Student,
    teacher: Option<&Subnet>,
    opt: &mut Sgd,
    x: &Tensor,
    y: &Tensor,
    cfg: &StepConfig,
    lr: f64,
    group: Option<&ProcessGroup>,
) -> std::result::Result<StepStats, TrainError> {
    let forward = |net: &Subnet| -> Result<Tensor> {
        match cfg.precision {
            Precision::Fp32 => net.forward(x, Mode::Train),
            Precision::Bf16 => Ok(net
                .cast_weights(Kind::BFloat16)
                .forward(&x.to_kind(Kind::BFloat16), Mode::Train)?
                .to_kind(Kind::Float)),
        }
    };
    let mut time = StepTime::default();
    let mut t0 = Instant::now();
    let mut lap = |slot: &mut f64| {
        *slot += t0.elapsed().as_secs_f64();
        t0 = Instant::now();
    };
    opt.zero_grad(student);
    lap(&mut time.optimizer);
    let soft = match teacher {
        Some(t) if cfg.kd_ratio > 0.0 => Some(tch::no_grad(|| forward(t))?.softmax(1, Kind::Float)),
        _ => None,
    };
    lap(&mut time.teacher);
    let out = forward(student.net())?;
    let mut loss = label_smoothed_cross_entropy(&out, y, cfg.label_smoothing);
    if let Some(s) = &soft {
        loss += soft_cross_entropy(&out, s) * cfg.kd_ratio;
    }
    lap(&mut time.forward);
    loss.backward();
    let loss_value = loss.double_value(&[]);
    let top1 = out
        .argmax(1, false)
        .eq_tensor(y)
        .to_kind(Kind::Float)
        .mean(Kind::Float)
        .double_value(&[]);
    lap(&mut time.backward);
    let reduced_bytes = match group {
        Some(g) => average_gradients(student, g)?,
        None => 0,
    };
    lap(&mut time.allreduce);
    opt.step(student, lr);
    lap(&mut time.optimizer);
    Ok(StepStats {
        loss: loss_value,
        top1,
        reduced_bytes,
        time,
    })
}
