//! Augmentation: the batched affine resampling is exact where it should be the identity, and
//! every output has the batch's resolution.

#![allow(clippy::unwrap_used)]

use ofa_trainer::augment::{eval_batch, match_channels, train_batch, AugmentConfig};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tch::{Device, Kind, Tensor};

fn cfg() -> AugmentConfig {
    AugmentConfig {
        crop_scale: (1.0, 1.0),
        flip: false,
        brightness: 0.0,
        saturation: 0.0,
        eval_crop: 1.0,
        mean: vec![0.5],
        std: vec![0.25],
    }
}

#[test]
fn full_crop_without_flip_is_the_identity() {
    let img = Tensor::randint(256, [3, 1, 28, 28], (Kind::Uint8, Device::Cpu));
    let want = (img.to_kind(Kind::Float) / 255.0 - 0.5) / 0.25;
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    // Square images and scale 1 leave aspect ratios in [3/4, 4/3] that fit only as the full image.
    let got = train_batch(&img, 28, &cfg(), &mut rng);
    let diff = (&got - &want).abs().max().double_value(&[]);
    assert!(diff < 1e-4, "{diff}");
    let ev = eval_batch(&img, 28, &cfg());
    assert!((&ev - &want).abs().max().double_value(&[]) < 1e-6);
}

#[test]
fn flips_mirror_and_shapes_follow_the_resolution() {
    let img = Tensor::randint(256, [8, 1, 28, 28], (Kind::Uint8, Device::Cpu));
    let mut c = cfg();
    c.flip = true;
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let got = train_batch(&img, 28, &c, &mut rng);
    let want = (img.to_kind(Kind::Float) / 255.0 - 0.5) / 0.25;
    let mut flipped = 0;
    for i in 0..8 {
        let g = got.narrow(0, i, 1);
        let w = want.narrow(0, i, 1);
        let same = (&g - &w).abs().max().double_value(&[]) < 1e-4;
        let mirrored = (&g - w.flip([3])).abs().max().double_value(&[]) < 1e-4;
        assert!(
            same || mirrored,
            "image {i} is neither itself nor its mirror"
        );
        flipped += i64::from(mirrored && !same);
    }
    assert!(
        flipped > 0 && flipped < 8,
        "flip probability 0.5: {flipped}/8 flipped"
    );
    let mut c = AugmentConfig::imagenet();
    c.crop_scale = (0.08, 1.0);
    let rgb = Tensor::randint(256, [4, 3, 40, 30], (Kind::Uint8, Device::Cpu));
    let x = train_batch(&rgb, 24, &c, &mut rng);
    assert_eq!(x.size(), vec![4, 3, 24, 24]);
    assert_eq!(eval_batch(&rgb, 24, &c).size(), vec![4, 3, 24, 24]);
    assert_eq!(match_channels(&x, 1).size(), vec![4, 1, 24, 24]);
}
