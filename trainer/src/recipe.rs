//! Training recipes as data (TOML): global settings and an ordered list of phases. Unknown keys
//! are rejected. Built-in recipes live in `trainer/recipes/*.toml`.

use ofa_space::Ratio;
use serde::{Deserialize, Serialize};

use crate::augment::AugmentConfig;

/// A whole training schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    /// Recipe name.
    pub name: String,
    /// Search space: a preset name or a path to a SearchSpace JSON file.
    pub space: String,
    /// Default dataset directory (IDX or CIFAR-10 binary); `--data` overrides.
    pub data: String,
    /// Classes of the space; defaults to the dataset's.
    #[serde(default)]
    pub n_classes: Option<u32>,
    /// Resolutions trained (default: the space's).
    #[serde(default)]
    pub resolutions: Option<Vec<u32>>,
    /// Global settings.
    pub train: TrainSettings,
    /// Augmentation and normalisation.
    pub augment: AugmentConfig,
    /// Validation settings.
    pub validation: ValidationSettings,
    /// Phases, in order; the first trains the full network, which then becomes the teacher.
    #[serde(rename = "phase")]
    pub phases: Vec<Phase>,
}

/// Optimiser, loss and bookkeeping settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainSettings {
    /// Examples per batch.
    pub batch_size: usize,
    /// SGD momentum (Nesterov).
    #[serde(default = "d_momentum")]
    pub momentum: f64,
    /// Weight decay (none on BN and biases).
    pub weight_decay: f64,
    /// Label smoothing ε.
    #[serde(default = "d_smoothing")]
    pub label_smoothing: f64,
    /// Weight of the distillation loss in phases after the first.
    #[serde(default = "d_kd")]
    pub kd_ratio: f64,
    /// Run seed.
    #[serde(default)]
    pub seed: u64,
    /// Classifier dropout in training.
    #[serde(default = "d_dropout")]
    pub dropout: f64,
    /// Save a checkpoint every N steps (and at each phase end).
    #[serde(default = "d_ckpt")]
    pub checkpoint_every: u64,
    /// Log a metrics line every N steps.
    #[serde(default = "d_log")]
    pub log_every: u64,
    /// Data worker threads.
    #[serde(default = "d_workers")]
    pub workers: usize,
    /// Batches each worker keeps ready.
    #[serde(default = "d_prefetch")]
    pub prefetch: usize,
    /// How an image folder is read: decoded into memory once, streamed from disk batch by
    /// batch, or `auto` (streamed when the decoded images would exceed 2 GiB). IDX and CIFAR-10
    /// are always in memory.
    #[serde(default)]
    pub data_loading: DataLoading,
    /// Undecodable images a streamed run skips (each counted and logged) before it stops.
    #[serde(default = "d_max_bad")]
    pub max_bad_images: usize,
    /// Arithmetic: `fp32`, or `bf16` (mixed precision: bf16 convolutions, float32 master
    /// weights, BN statistics and optimiser).
    #[serde(default)]
    pub precision: crate::step::Precision,
    /// Convolution initialisation: `he_fout` (the reference) or `fan_in_uniform` (PyTorch's
    /// default; learns faster on short runs).
    #[serde(default)]
    pub init: ofa_supernet::InitScheme,
}

/// How an image folder's training images are read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataLoading {
    /// Stream when the decoded images would exceed [`AUTO_STREAM_BYTES`].
    #[default]
    Auto,
    /// Decode every image once, into memory.
    Memory,
    /// Decode each image when its batch is prepared.
    Stream,
}

/// Decoded size above which `data_loading = "auto"` streams.
pub const AUTO_STREAM_BYTES: u64 = 2 << 30;

fn d_max_bad() -> usize {
    100
}
fn d_momentum() -> f64 {
    0.9
}
fn d_smoothing() -> f64 {
    0.1
}
fn d_kd() -> f64 {
    1.0
}
fn d_dropout() -> f64 {
    0.1
}
fn d_ckpt() -> u64 {
    200
}
fn d_log() -> u64 {
    20
}
fn d_workers() -> usize {
    1
}
fn d_prefetch() -> usize {
    4
}

/// Held-out validation and BN recalibration settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValidationSettings {
    /// Training images held out as the validation split (reference: 10,000).
    pub holdout: usize,
    /// Validation images used for the phase-end table (≤ holdout).
    pub images: usize,
    /// Training images used to recalibrate BN before each evaluation (reference: 2000).
    pub calibration_images: usize,
    /// Batch size of recalibration and evaluation.
    #[serde(default = "d_eval_batch")]
    pub batch_size: usize,
}

fn d_eval_batch() -> usize {
    200
}

/// One phase of progressive shrinking.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Phase {
    /// Name (`full`, `kernel`, `depth-1`, …).
    pub name: String,
    /// Kernel choices.
    pub ks: Vec<u32>,
    /// Expand-ratio choices.
    pub expand: Vec<Ratio>,
    /// Depth choices.
    pub depth: Vec<u32>,
    /// Width choices, as indices into the space's `width_mult_list` (ResNet; absent in the
    /// MBConv families, whose width is the expand ratio).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub width: Vec<u32>,
    /// Subnets sampled per step.
    #[serde(default = "d_one")]
    pub subnets_per_step: usize,
    /// Length in epochs of the training split…
    #[serde(default)]
    pub epochs: Option<f64>,
    /// …or in steps.
    #[serde(default)]
    pub steps: Option<u64>,
    /// Peak learning rate.
    pub lr: f64,
    /// Linear warm-up, in epochs…
    #[serde(default)]
    pub warmup_epochs: Option<f64>,
    /// …or in steps.
    #[serde(default)]
    pub warmup_steps: Option<u64>,
    /// Channel importance sorting before the phase: the `expand_ratio_stage` (0, 1, …).
    #[serde(default)]
    pub sort_channels: Option<usize>,
    /// The sandwich rule (BigNAS; not in the reference): of the `subnets_per_step` subnets of
    /// each step, the first is the largest this phase allows and the last the smallest, the
    /// rest drawn at random as usual. Needs `subnets_per_step ≥ 2`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sandwich: bool,
}

fn d_one() -> usize {
    1
}

impl Phase {
    /// The phase's choices in `space`, at every resolution of the space.
    pub fn choices(&self, space: &ofa_space::SearchSpace) -> ofa_space::Choices {
        ofa_space::Choices {
            ks: self.ks.clone(),
            e: self.expand.clone(),
            d: self.depth.clone(),
            w: self.width.clone(),
            r: space.resolutions.clone(),
        }
    }

    /// Steps of this phase for `batches_per_epoch`.
    pub fn total_steps(&self, batches_per_epoch: u64) -> u64 {
        match (self.steps, self.epochs) {
            (Some(s), _) => s,
            (None, Some(e)) => ((e * batches_per_epoch as f64).round() as u64).max(1),
            (None, None) => batches_per_epoch,
        }
    }

    /// Warm-up steps.
    pub fn warmup(&self, batches_per_epoch: u64) -> u64 {
        match (self.warmup_steps, self.warmup_epochs) {
            (Some(s), _) => s,
            (None, Some(e)) => (e * batches_per_epoch as f64).round() as u64,
            (None, None) => 0,
        }
    }
}

/// Names of the built-in recipes.
pub const BUILTIN: &[&str] = &[
    "paper",
    "fmnist",
    "fmnist-no-ps",
    "fmnist-short",
    "fmnist-short-no-ps",
    "fmnist-quick",
    "fmnist-proxyless-short",
    "fmnist-resnet-short",
    "smoke",
    "smoke-proxyless",
    "smoke-resnet",
];

/// Why a recipe is not usable.
#[derive(Debug, thiserror::Error)]
pub enum RecipeError {
    /// Not a built-in name nor a readable file.
    #[error("recipe `{0}` is neither a built-in ({known}) nor a readable file", known = BUILTIN.join(", "))]
    Unknown(String),
    /// TOML that does not parse or has unknown keys.
    #[error("recipe {origin}: {message}")]
    Parse {
        /// Where it came from.
        origin: String,
        /// The parser's message.
        message: String,
    },
    /// A recipe that parses but cannot run.
    #[error("recipe {origin}: {message}")]
    Invalid {
        /// Where it came from.
        origin: String,
        /// What is wrong.
        message: String,
    },
}

impl Recipe {
    /// A built-in recipe's TOML.
    pub fn builtin_toml(name: &str) -> Option<&'static str> {
        Some(match name {
            "paper" => include_str!("../recipes/paper.toml"),
            "fmnist" => include_str!("../recipes/fmnist.toml"),
            "fmnist-no-ps" => include_str!("../recipes/fmnist-no-ps.toml"),
            "fmnist-short" => include_str!("../recipes/fmnist-short.toml"),
            "fmnist-short-no-ps" => include_str!("../recipes/fmnist-short-no-ps.toml"),
            "fmnist-quick" => include_str!("../recipes/fmnist-quick.toml"),
            "fmnist-proxyless-short" => include_str!("../recipes/fmnist-proxyless-short.toml"),
            "smoke" => include_str!("../recipes/smoke.toml"),
            "smoke-proxyless" => include_str!("../recipes/smoke-proxyless.toml"),
            "fmnist-resnet-short" => include_str!("../recipes/fmnist-resnet-short.toml"),
            "smoke-resnet" => include_str!("../recipes/smoke-resnet.toml"),
            _ => return None,
        })
    }

    /// Parse TOML (`origin` names it in errors) and check it.
    pub fn from_toml(text: &str, origin: &str) -> Result<Recipe, RecipeError> {
        let r: Recipe = toml::from_str(text).map_err(|e| RecipeError::Parse {
            origin: origin.to_string(),
            message: e.to_string(),
        })?;
        r.check(origin)?;
        Ok(r)
    }

    /// A built-in name or a TOML file path.
    pub fn load(name_or_path: &str) -> Result<Recipe, RecipeError> {
        if let Some(t) = Recipe::builtin_toml(name_or_path) {
            return Recipe::from_toml(t, &format!("`{name_or_path}` (built-in)"));
        }
        let text = std::fs::read_to_string(name_or_path)
            .map_err(|_| RecipeError::Unknown(name_or_path.into()))?;
        Recipe::from_toml(&text, name_or_path)
    }

    /// Serialise (the resolved recipe saved in a run).
    pub fn to_toml(&self) -> String {
        // every recipe field is a value or a table of values, so TOML can always write it (the
        // built-in recipes round-trip in the tests)
        toml::to_string(self).expect("a Recipe is always representable in TOML")
    }

    fn check(&self, origin: &str) -> Result<(), RecipeError> {
        let bad = |m: String| {
            Err(RecipeError::Invalid {
                origin: origin.to_string(),
                message: m,
            })
        };
        if self.phases.is_empty() {
            return bad("no [[phase]]".into());
        }
        let t = &self.train;
        if t.batch_size == 0 {
            return bad("train.batch_size must be positive".into());
        }
        for (k, v) in [
            ("weight_decay", t.weight_decay),
            ("momentum", t.momentum),
            ("kd_ratio", t.kd_ratio),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return bad(format!("train.{k} must be a finite number ≥ 0, got {v}"));
            }
        }
        if !(0.0..1.0).contains(&t.label_smoothing) || !(0.0..1.0).contains(&t.dropout) {
            return bad("train.label_smoothing and train.dropout must be in [0, 1)".into());
        }
        if self.validation.images > self.validation.holdout {
            return bad("validation.images cannot exceed validation.holdout".into());
        }
        for p in &self.phases {
            if p.ks.is_empty()
                || p.expand.is_empty()
                || p.depth.is_empty()
                || p.subnets_per_step == 0
            {
                return bad(format!(
                    "phase `{}`: empty choice list or zero subnets per step",
                    p.name
                ));
            }
            if p.sandwich && p.subnets_per_step < 2 {
                return bad(format!(
                    "phase `{}`: sandwich needs subnets_per_step ≥ 2 (the largest and the smallest), got {}",
                    p.name, p.subnets_per_step
                ));
            }
            if !(p.lr.is_finite() && p.lr > 0.0) {
                return bad(format!(
                    "phase `{}`: lr must be positive, got {}",
                    p.name, p.lr
                ));
            }
            if p.steps == Some(0) || p.epochs.is_some_and(|e| !(e.is_finite() && e > 0.0)) {
                return bad(format!("phase `{}`: length must be positive", p.name));
            }
        }
        Ok(())
    }
}
