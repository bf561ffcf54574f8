//! A training run's state and settings, and the card of the package it writes.

use ofa_space::SearchSpace;
use serde::{Deserialize, Serialize};

use crate::files::{CALIBRATION_FILE, SUPERNET_FILE};
use crate::metrics::PhaseTable;

/// Where a run stands: saved in every run checkpoint's metadata (`state`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CheckpointState {
    /// Phase being trained (== number of phases when done).
    pub phase: usize,
    /// Steps done in that phase.
    pub step: u64,
    /// Steps done in the whole run.
    pub global_step: u64,
    /// Phase-end validation tables so far.
    pub tables: Vec<PhaseTable>,
    /// Seconds of training so far (over all sessions).
    pub elapsed_s: f64,
    /// Ranks of the job that saved it (0 in checkpoints from before data-parallel runs).
    #[serde(default)]
    pub world_size: usize,
    /// Its collective backend (`gloo`, `nccl`; absent on one process).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
    /// The checkpoint this run branched from, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branched_from: Option<Branched>,
}

/// Where a branched run came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Branched {
    /// The checkpoint file, as given.
    pub checkpoint: String,
    /// Its recipe's name.
    pub recipe: String,
    /// Phases it had completed (shared with this run).
    pub phases: usize,
}

/// How a run reads its training images.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataLoading {
    /// Decoded into memory up front.
    Memory,
    /// Streamed from an image folder.
    Stream,
}

/// A run folder's `run.json`: what the run was started with, beside `recipe.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunInfo {
    /// The dataset folder (a resume reads it from here unless given another).
    pub data: String,
    /// The training device, as libtorch names it (`Cpu`, `Cuda(0)`).
    pub device: String,
    /// How the training images are read.
    pub data_loading: DataLoading,
    /// Training images.
    pub train_images: usize,
    /// Ranks of the job.
    pub world_size: usize,
    /// Its collective backend (absent on one process).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
}

/// The files of a package, as its card lists them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CardFiles {
    /// The supernet checkpoint.
    pub supernet: String,
    /// The BN-recalibration images.
    pub calibration: String,
}

impl Default for CardFiles {
    fn default() -> CardFiles {
        CardFiles {
            supernet: SUPERNET_FILE.to_string(),
            calibration: CALIBRATION_FILE.to_string(),
        }
    }
}

/// A package's `card.json`: how its supernet was trained and what it measured. `R` is the recipe
/// (the trainer's `Recipe`; a reader that does not need it can use `serde::de::IgnoredAny`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunCard<R> {
    /// The recipe's name.
    pub name: String,
    /// The search space.
    pub space: SearchSpace,
    /// The dataset folder it was trained on.
    pub dataset: String,
    /// The recipe.
    pub recipe: R,
    /// Steps trained.
    pub steps: u64,
    /// Seconds of training.
    pub train_seconds: f64,
    /// Every phase's validation table.
    pub validation: Vec<PhaseTable>,
    /// The run it branched from, if any.
    #[serde(default)]
    pub branched_from: Option<Branched>,
    /// Ranks of the job (absent in cards from before data-parallel runs: 1).
    #[serde(default = "one")]
    pub world_size: usize,
    /// Its collective backend (absent on one process).
    #[serde(default)]
    pub backend: Option<String>,
    /// The package's files.
    #[serde(default)]
    pub files: CardFiles,
}

fn one() -> usize {
    1
}

/// What a trained supernet checkpoint records of its training (metadata `metrics`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SupernetMetrics {
    /// Every phase's validation table.
    pub tables: Vec<PhaseTable>,
}
