//! `ofa-predictors`: what a search asks about an architecture.
//!
//! - [`accuracy`]: the MLP accuracy predictor (reference model and file naming, fast batched
//!   scoring), [`fit`] to train one on measured subnets, [`dataset`] for the measurements file and
//!   its resumable builder, [`metrics`] (RMSE, MAE, Kendall τ, Spearman ρ).
//! - [`efficiency`]: the [`efficiency::Efficiency`] trait with analytic MACs / params and latency
//!   from a [`latency::LatencyTable`] (documented JSON format, reference YAML import).

#![warn(missing_docs)]

use std::path::PathBuf;

pub mod accuracy;
pub mod dataset;
/// The efficiency predictors' trait and the compiled additive model (in `ofa-search`).
pub use ofa_search::efficiency;
pub mod fit;
pub mod hardware;
mod kernel;
pub mod latency;
pub mod metrics;
pub mod profile;

pub use accuracy::AccuracyPredictor;
pub use efficiency::{Additive, Efficiency, EfficiencyError, Metric};
pub use latency::{LatencyError, LatencyTable};

/// Why a predictor or dataset cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PredictorError {
    /// A file that cannot be used, with the reason.
    #[error("{}: {reason}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// One line of a dataset file is wrong.
    #[error("{}:{line}: {reason}", path.display())]
    Line {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// Model shapes that do not fit together.
    #[error("invalid predictor: {0}")]
    Model(String),
    /// The predictor was made for another space.
    #[error("{0}")]
    Space(String),
    /// An arch the encoding cannot represent.
    #[error(transparent)]
    Arch(#[from] ofa_space::SpaceError),
    /// Not enough data.
    #[error("{0}")]
    Data(String),
    /// I/O.
    #[error("cannot access {}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Checkpoint layer (safetensors reading / writing).
    #[error(transparent)]
    Checkpoint(#[from] ofa_supernet::SupernetError),
    /// libtorch.
    #[error(transparent)]
    Torch(#[from] tch::TchError),
}

impl PredictorError {
    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> PredictorError {
        PredictorError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}
