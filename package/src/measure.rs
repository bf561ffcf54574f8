//! Measuring subnets, the one path every caller takes: BN recalibration on training images
//! (training augmentation at the subnet's resolution, as the reference), top-1 on a held-out split
//! (eval transform) and batch-1 latency on a device.

use ofa_space::ArchConfig;
use ofa_supernet::layers::BnMode;
use ofa_supernet::timing::{time_ms, Summary};
use ofa_supernet::{recalibrate_bn, Layout, Mode, Subnet, Supernet};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::augment::{eval_batch, match_channels, train_batch, AugmentConfig};
use crate::seed::mix;
use crate::{PackageError, Split};

/// How BN statistics are recalibrated: the first `images` calibration images (at most the
/// package's), in batches of `batch`, augmentation seeded by `seed`. The same settings give the
/// same statistics, bit for bit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Recalibration {
    /// Images used (reference: 2000).
    pub images: usize,
    /// Batch size.
    pub batch: usize,
    /// Seed of the augmentation.
    pub seed: u64,
}

impl Default for Recalibration {
    fn default() -> Recalibration {
        Recalibration {
            images: 2000,
            batch: 250,
            seed: 0,
        }
    }
}

/// Extract `arch` from `net` and recalibrate its BN on the first `r.images` of `calib`.
pub fn recalibrated(
    net: &Supernet,
    arch: &ArchConfig,
    calib: &Split,
    augment: &AugmentConfig,
    r: &Recalibration,
) -> Result<Subnet, PackageError> {
    let n = r.images.min(calib.len());
    if n == 0 {
        return Err(PackageError::EmptySplit);
    }
    let sub = net.extract(arch)?;
    let c = Split {
        images: calib.images.narrow(0, 0, n as i64),
        labels: calib.labels.narrow(0, 0, n as i64),
    };
    calibrate(&sub, &c, arch.r, augment, r.batch, r.seed)?;
    Ok(sub)
}

/// Recalibrate `net`'s BN statistics on `calib` at resolution `r`, in batches of `batch`.
pub fn calibrate(
    net: &Subnet,
    calib: &Split,
    r: u32,
    aug: &AugmentConfig,
    batch: usize,
    seed: u64,
) -> Result<i64, PackageError> {
    let channels = i64::from(net.config().in_channels);
    let device = net.device();
    // Channels-last runs several times faster; the BN statistics are shared with `net`.
    let net = &net.to_layout(Layout::ChannelsLast);
    let n = calib.len() as i64;
    let bs = batch.max(1) as i64;
    let batches = (0..n).step_by(bs as usize).map(|start| {
        let len = bs.min(n - start);
        let mut rng = ChaCha8Rng::seed_from_u64(mix(&[seed, start as u64, u64::from(r)]));
        let x = train_batch(
            &calib.images.narrow(0, start, len),
            i64::from(r),
            aug,
            &mut rng,
        );
        net.match_layout(&match_channels(&x, channels).to_device(device))
    });
    Ok(recalibrate_bn(net, batches)?)
}

/// Top-1 (fraction) of `net` on the first `limit` examples of `split` at resolution `r`.
pub fn top1(
    net: &Subnet,
    split: &Split,
    r: u32,
    aug: &AugmentConfig,
    batch: usize,
    limit: usize,
) -> Result<f64, PackageError> {
    let channels = i64::from(net.config().in_channels);
    let device = net.device();
    let net = &net.to_layout(Layout::ChannelsLast);
    top1_by(split, r, aug, batch, limit, channels, |x| {
        let x = net.match_layout(&x.to_device(device));
        Ok(net.forward(&x, Mode::Eval)?)
    })
}

/// Top-1 (fraction) of any forward on the first `limit` examples of `split` at resolution `r`:
/// `forward` maps a batch of eval-transformed NCHW float images with `channels` channels (on the
/// CPU) to its logits. The one scoring loop for libtorch and other runtimes (ONNX Runtime).
pub fn top1_by(
    split: &Split,
    r: u32,
    aug: &AugmentConfig,
    batch: usize,
    limit: usize,
    channels: i64,
    mut forward: impl FnMut(&Tensor) -> Result<Tensor, PackageError>,
) -> Result<f64, PackageError> {
    let n = split.len().min(limit) as i64;
    if n == 0 {
        return Err(PackageError::EmptySplit);
    }
    let bs = batch.max(1) as i64;
    let mut correct = 0i64;
    tch::no_grad(|| -> Result<(), PackageError> {
        for start in (0..n).step_by(bs as usize) {
            let len = bs.min(n - start);
            let x = eval_batch(&split.images.narrow(0, start, len), i64::from(r), aug);
            let x = match_channels(&x, channels);
            let out = forward(&x)?;
            let y = split.labels.narrow(0, start, len).to_device(out.device());
            correct += out
                .argmax(1, false)
                .eq_tensor(&y)
                .to_kind(Kind::Int64)
                .sum(Kind::Int64)
                .int64_value(&[]);
        }
        Ok(())
    })?;
    Ok(correct as f64 / n as f64)
}

/// Wall time of batch-1 eval forwards of `net` at resolution `r` on its device: `warmup`
/// untimed passes, then `repeats` timed ones.
pub fn latency(
    net: &Subnet,
    r: u32,
    warmup: usize,
    repeats: usize,
) -> Result<Summary, PackageError> {
    let device: Device = net.device();
    let r = i64::from(r);
    let x = Tensor::randn(
        [1, i64::from(net.config().in_channels), r, r],
        (Kind::Float, device),
    );
    net.check_input(&x)?;
    let ms = tch::no_grad(|| {
        time_ms(device, warmup, repeats, || {
            net.forward_bn(&x, &mut BnMode::Eval)
        })
    });
    Ok(Summary::of(ms))
}

/// How [`measure`] scores subnets.
#[derive(Debug, Clone)]
pub struct MeasureOptions {
    /// BN recalibration.
    pub recalibration: Recalibration,
    /// Images evaluated (at most the split's).
    pub eval_images: usize,
    /// Batch size of the evaluation.
    pub batch: usize,
}

/// Extract `arch` from `net`, recalibrate its BN on `calib`, score top-1 (fraction) on `split`.
pub fn measure(
    net: &Supernet,
    arch: &ArchConfig,
    calib: &Split,
    split: &Split,
    augment: &AugmentConfig,
    o: &MeasureOptions,
) -> Result<f64, PackageError> {
    let sub = recalibrated(net, arch, calib, augment, &o.recalibration)?;
    top1(&sub, split, arch.r, augment, o.batch, o.eval_images)
}

/// A fixed, seeded subset of `n` examples (the calibration images).
pub fn subset(split: &Split, n: usize, seed: u64) -> Split {
    let (_, picked) = split.split_validation(n, seed);
    picked
}
