//! Measuring subnets: BN recalibration on training images (training augmentation at the subnet's
//! resolution, as the reference) and top-1 on a held-out split (eval transform).

use ofa_supernet::{recalibrate_bn, Layout, Mode, Result, Subnet};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tch::Kind;

use crate::augment::{eval_batch, match_channels, train_batch, AugmentConfig};
use crate::data::Split;
use crate::loader::mix;

/// Recalibrate `net`'s BN statistics on `calib` at resolution `r`, in batches of `batch`.
pub fn calibrate(
    net: &Subnet,
    calib: &Split,
    r: u32,
    aug: &AugmentConfig,
    batch: usize,
    seed: u64,
) -> Result<i64> {
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
    recalibrate_bn(net, batches)
}

/// Top-1 (fraction) of `net` on the first `limit` examples of `split` at resolution `r`.
pub fn top1(
    net: &Subnet,
    split: &Split,
    r: u32,
    aug: &AugmentConfig,
    batch: usize,
    limit: usize,
) -> Result<f64> {
    let channels = i64::from(net.config().in_channels);
    let device = net.device();
    let net = &net.to_layout(Layout::ChannelsLast);
    let n = split.len().min(limit) as i64;
    if n == 0 {
        return Err(ofa_supernet::SupernetError::BadInput(
            "no images to evaluate on".into(),
        ));
    }
    let bs = batch.max(1) as i64;
    let mut correct = 0i64;
    tch::no_grad(|| -> Result<()> {
        for start in (0..n).step_by(bs as usize) {
            let len = bs.min(n - start);
            let x = eval_batch(&split.images.narrow(0, start, len), i64::from(r), aug);
            let x = net.match_layout(&match_channels(&x, channels).to_device(device));
            let y = split.labels.narrow(0, start, len).to_device(device);
            let out = net.forward(&x, Mode::Eval)?;
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

/// A fixed, seeded subset of `n` examples (the calibration images).
pub fn subset(split: &Split, n: usize, seed: u64) -> Split {
    let (_, picked) = split.split_validation(n, seed);
    picked
}
