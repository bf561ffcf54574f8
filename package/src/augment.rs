//! Image transforms on uint8 batches: the training augmentation (random-resized-crop to the batch's
//! resolution, horizontal flip, colour jitter, normalisation) and the eval transform (resize, centre
//! crop, normalisation). Every random choice comes from the caller's seeded generator, so a batch
//! is a pure function of (images, seed).

use rand::Rng;
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

/// Augmentation and normalisation settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AugmentConfig {
    /// Random-resized-crop area range (fraction of the image).
    #[serde(default = "default_scale")]
    pub crop_scale: (f64, f64),
    /// Random horizontal flip with probability 0.5.
    #[serde(default = "default_true")]
    pub flip: bool,
    /// Brightness jitter: factor uniform in `[1 − b, 1 + b]` (reference: 32/255).
    #[serde(default)]
    pub brightness: f64,
    /// Saturation jitter: factor uniform in `[1 − s, 1 + s]` (RGB only; reference: 0.5).
    #[serde(default)]
    pub saturation: f64,
    /// Eval transform: resize to `ceil(r / crop)`, then centre-crop `r` (reference: 0.875).
    #[serde(default = "default_crop")]
    pub eval_crop: f64,
    /// Per-channel mean after scaling to [0, 1] (one value is broadcast).
    pub mean: Vec<f64>,
    /// Per-channel standard deviation.
    pub std: Vec<f64>,
}

fn default_scale() -> (f64, f64) {
    (0.08, 1.0)
}
fn default_true() -> bool {
    true
}
fn default_crop() -> f64 {
    0.875
}

impl AugmentConfig {
    /// ImageNet statistics and the reference's augmentation.
    pub fn imagenet() -> AugmentConfig {
        AugmentConfig {
            crop_scale: default_scale(),
            flip: true,
            brightness: 32.0 / 255.0,
            saturation: 0.5,
            eval_crop: 0.875,
            mean: vec![0.485, 0.456, 0.406],
            std: vec![0.229, 0.224, 0.225],
        }
    }

    fn stats(&self, c: i64, device: tch::Device) -> (Tensor, Tensor) {
        let (m, s) = channel_stats(self, c as usize);
        (
            Tensor::from_slice(&m)
                .to_device(device)
                .reshape([1, c, 1, 1]),
            Tensor::from_slice(&s)
                .to_device(device)
                .reshape([1, c, 1, 1]),
        )
    }

    /// Scale uint8 images to [0, 1] and normalise.
    pub fn normalize(&self, x: &Tensor) -> Tensor {
        let (m, s) = self.stats(x.size()[1], x.device());
        (x.to_kind(Kind::Float) / 255.0 - m) / s
    }
}

/// torchvision's RandomResizedCrop parameters `(top, left, height, width)` for an `h × w` image.
pub fn crop_params<R: Rng>(h: i64, w: i64, scale: (f64, f64), rng: &mut R) -> (i64, i64, i64, i64) {
    let area = (h * w) as f64;
    let (lr0, lr1) = ((3.0f64 / 4.0).ln(), (4.0f64 / 3.0).ln());
    for _ in 0..10 {
        let target = area * rng.random_range(scale.0..=scale.1);
        let ratio = rng.random_range(lr0..=lr1).exp();
        let cw = (target * ratio).sqrt().round() as i64;
        let ch = (target / ratio).sqrt().round() as i64;
        if cw > 0 && ch > 0 && cw <= w && ch <= h {
            return (
                rng.random_range(0..=h - ch),
                rng.random_range(0..=w - cw),
                ch,
                cw,
            );
        }
    }
    // Fallback: the whole image (centre crop of it at a clamped ratio is the image itself for
    // square inputs).
    (0, 0, h, w)
}

/// One image's random augmentation: its crop box, flip and colour-jitter factors.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SampleAugment {
    /// Crop top row.
    pub top: i64,
    /// Crop left column.
    pub left: i64,
    /// Crop height.
    pub height: i64,
    /// Crop width.
    pub width: i64,
    /// Mirror horizontally.
    pub flip: bool,
    /// Brightness factor (1 = unchanged).
    pub brightness: f32,
    /// Saturation factor (1 = unchanged).
    pub saturation: f32,
}

impl SampleAugment {
    /// Draw the augmentation of an `h × w` image with `c` channels, in the order every path
    /// draws it (crop, flip, brightness, saturation), so that in-memory and streamed data see
    /// the same random choices for the same generator.
    pub fn draw<R: Rng>(h: i64, w: i64, c: i64, cfg: &AugmentConfig, rng: &mut R) -> Self {
        let (top, left, height, width) = crop_params(h, w, cfg.crop_scale, rng);
        let flip = cfg.flip && rng.random_bool(0.5);
        let brightness = if cfg.brightness > 0.0 {
            rng.random_range(1.0 - cfg.brightness..=1.0 + cfg.brightness) as f32
        } else {
            1.0
        };
        let saturation = if cfg.saturation > 0.0 && c == 3 {
            rng.random_range(1.0 - cfg.saturation..=1.0 + cfg.saturation) as f32
        } else {
            1.0
        };
        SampleAugment {
            top,
            left,
            height,
            width,
            flip,
            brightness,
            saturation,
        }
    }
}

fn resize(x: &Tensor, h: i64, w: i64) -> Tensor {
    x.upsample_bilinear2d([h, w], false, None, None)
}

/// Training augmentation of a uint8 batch `[B, C, H, W]` to float `[B, C, r, r]`, each image's
/// augmentation drawn in turn from `rng`.
pub fn train_batch<R: Rng>(images: &Tensor, r: i64, cfg: &AugmentConfig, rng: &mut R) -> Tensor {
    let s = images.size();
    let (b, c, h, w) = (s[0], s[1], s[2], s[3]);
    let augs: Vec<SampleAugment> = (0..b)
        .map(|_| SampleAugment::draw(h, w, c, cfg, rng))
        .collect();
    train_batch_with(images, r, &augs, cfg)
}

/// Training augmentation of a uint8 batch `[B, C, H, W]` with each image's drawn augmentation:
/// every image's crop (and flip) becomes one affine map, and the whole batch is resampled by a
/// single bilinear `grid_sampler` call.
pub fn train_batch_with(
    images: &Tensor,
    r: i64,
    augs: &[SampleAugment],
    cfg: &AugmentConfig,
) -> Tensor {
    let s = images.size();
    let (b, c, h, w) = (s[0], s[1], s[2], s[3]);
    let mut theta = Vec::with_capacity(b as usize * 6);
    let mut bright = Vec::with_capacity(b as usize);
    let mut sat = Vec::with_capacity(b as usize);
    for a in augs {
        let flip = if a.flip { -1.0 } else { 1.0 };
        // Output coordinates in [-1, 1] map to the crop's extent in the input's [-1, 1] frame.
        let (sx, sy) = (a.width as f64 / w as f64, a.height as f64 / h as f64);
        let tx = (2.0 * a.left as f64 + a.width as f64) / w as f64 - 1.0;
        let ty = (2.0 * a.top as f64 + a.height as f64) / h as f64 - 1.0;
        theta.extend_from_slice(&[
            (sx * flip) as f32,
            0.0,
            tx as f32,
            0.0,
            sy as f32,
            ty as f32,
        ]);
        bright.push(a.brightness);
        sat.push(a.saturation);
    }
    let device = images.device();
    let theta = Tensor::from_slice(&theta)
        .reshape([b, 2, 3])
        .to_device(device);
    let grid = Tensor::affine_grid_generator(&theta, [b, c, r, r], false);
    let x = images.to_kind(Kind::Float) / 255.0;
    let x = x.grid_sampler(&grid, 0, 1, false);
    color_normalize(x, &bright, &sat, cfg)
}

/// Colour jitter and normalisation of a float batch `[B, C, r, r]` in [0, 1], with each image's
/// brightness and saturation factors: `x·b` clamped, then a blend with its luma (0.299, 0.587,
/// 0.114) by `s` clamped (RGB only), then `(x − mean) / std`.
pub fn color_normalize(x: Tensor, bright: &[f32], sat: &[f32], cfg: &AugmentConfig) -> Tensor {
    let s = x.size();
    let (b, c, h, w) = (s[0], s[1], s[2], s[3]);
    let device = x.device();
    let mut x = x;
    if cfg.brightness > 0.0 {
        let f = Tensor::from_slice(bright)
            .to_device(device)
            .reshape([b, 1, 1, 1]);
        x = (x * f).clamp(0.0, 1.0);
    }
    if cfg.saturation > 0.0 && c == 3 {
        let f = Tensor::from_slice(sat)
            .to_device(device)
            .reshape([b, 1, 1, 1]);
        let gray =
            (x.narrow(1, 0, 1) * 0.299 + x.narrow(1, 1, 1) * 0.587 + x.narrow(1, 2, 1) * 0.114)
                .expand([b, 3, h, w], false);
        let blended: Tensor = &x * &f + gray * (1.0 - &f);
        x = blended.clamp(0.0, 1.0);
    }
    let (m, sd) = cfg.stats(c, device);
    (x - m) / sd
}

/// The per-channel mean and standard deviation of `c` channels (one value broadcast).
pub fn channel_stats(cfg: &AugmentConfig, c: usize) -> (Vec<f32>, Vec<f32>) {
    let pick = |v: &[f64]| -> Vec<f32> {
        (0..c)
            .map(|i| *v.get(i).or(v.first()).unwrap_or(&0.0) as f32)
            .collect()
    };
    (pick(&cfg.mean), pick(&cfg.std))
}

/// Eval transform of a uint8 batch: resize the short side to `ceil(r / eval_crop)`, centre-crop
/// `r`, normalise.
pub fn eval_batch(images: &Tensor, r: i64, cfg: &AugmentConfig) -> Tensor {
    let s = images.size();
    let (h, w) = (s[2], s[3]);
    let target = ((r as f64) / cfg.eval_crop).ceil() as i64;
    let (nh, nw) = if h <= w {
        (target, (w * target + h / 2) / h)
    } else {
        ((h * target + w / 2) / w, target)
    };
    let x = images.to_kind(Kind::Float) / 255.0;
    let x = if (nh, nw) == (h, w) {
        x
    } else {
        resize(&x, nh, nw)
    };
    let x = x.narrow(2, (nh - r) / 2, r).narrow(3, (nw - r) / 2, r);
    let (m, sd) = cfg.stats(s[1], x.device());
    (x - m) / sd
}

/// Adapt the channel count: grayscale repeated to RGB, or RGB averaged to grayscale.
pub fn match_channels(x: &Tensor, want: i64) -> Tensor {
    let c = x.size()[1];
    if c == want {
        x.shallow_clone()
    } else if c == 1 {
        x.expand([-1, want, -1, -1], false).contiguous()
    } else {
        x.mean_dim(1, true, None)
            .expand([-1, want, -1, -1], false)
            .contiguous()
    }
}
