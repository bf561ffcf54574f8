//! `ofa-extractor`: specialisation. Given predictors for a supernet's space, find the subnet with
//! the best predicted accuracy under efficiency constraints ([`evolution`]), or the whole
//! accuracy–efficiency front in one run ([`pareto`]), through the predictors of one supernet loaded
//! once ([`specialiser`]); then cut its weights out of the supernet, recalibrate BN and write the
//! artefacts ([`pipeline`]: in-memory steps a long-running process can call, and a separate
//! write step).

#![warn(missing_docs)]

use std::path::PathBuf;

pub mod calibrate;
pub mod pipeline;
pub mod specialiser;

/// The search itself lives in `ofa-search` (no libtorch); its modules are re-exported here.
pub use ofa_search::{evolution, pareto, problem, SearchError};

pub use ofa_search::evolution::{
    evolve, evolve_until, EvolutionConfig, Scored, SearchResult, MAX_GENERATIONS, MAX_POPULATION,
};
pub use ofa_search::pareto::{pareto_until, Front, ParetoConfig};
pub use ofa_search::problem::{AccuracyModel, Bound, Constraints, Problem};
pub use specialiser::{Predicted, Specialiser};

/// Why a search or extraction failed. Each variant is one kind of failure, so callers (the CLI's
/// exit code, the server's status) can tell them apart without reading messages.
#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    /// Neither an arch nor a constraint: nothing to search for.
    #[error("give an arch or at least one constraint (max latency, MACs or params)")]
    NothingToSearch,
    /// A latency bound or front without a hardware name.
    #[error("a latency {0} needs a hardware name (its latency table)")]
    NeedsHardware(&'static str),
    /// A hardware name with no latency table.
    #[error(
        "unknown hardware `{name}`: latency tables available: {}",
        list_or_none(available)
    )]
    UnknownHardware {
        /// The name asked for.
        name: String,
        /// The names there are.
        available: Vec<String>,
    },
    /// A latency table that cannot serve the space.
    #[error("latency table `{hardware}` ({}) {reason}", path.display())]
    IncompleteLatencyTable {
        /// Its hardware name.
        hardware: String,
        /// Its file or folder.
        path: PathBuf,
        /// What it lacks.
        reason: String,
    },
    /// An arch that does not fit the supernet's space.
    #[error("the arch does not fit the supernet")]
    ArchMismatch(#[source] ofa_space::SpaceError),
    /// No accuracy predictor where a search needs one.
    #[error("{}: no accuracy.safetensors: fit one with `ofa predictor fit --package`", dir.display())]
    NoAccuracyPredictor {
        /// The package folder.
        dir: PathBuf,
    },
    /// The dataset has no split of that name (e.g. no test split).
    #[error("the package's dataset has no {0} split")]
    MissingSplit(String),
    /// The search (bad constraints or settings, infeasible bounds, a deadline).
    #[error(transparent)]
    Search(SearchError),
    /// Accuracy predictor.
    #[error(transparent)]
    Predictor(#[from] ofa_predictors::PredictorError),
    /// Another accuracy model of a search.
    #[error(transparent)]
    Accuracy(Box<dyn std::error::Error + Send + Sync>),
    /// Efficiency predictor (e.g. a lookup table without a layer the space needs).
    #[error(transparent)]
    Efficiency(#[from] ofa_predictors::EfficiencyError),
    /// A latency table file.
    #[error(transparent)]
    Latency(#[from] ofa_predictors::LatencyError),
    /// Supernet / checkpoint.
    #[error(transparent)]
    Net(#[from] ofa_supernet::SupernetError),
    /// Package / measurement.
    #[error(transparent)]
    Package(#[from] ofa_package::PackageError),
    /// ONNX export.
    #[error(transparent)]
    Onnx(#[from] ofa_onnx::OnnxError),
    /// A latency model of new hardware (probes, measurements, fit).
    #[error(transparent)]
    Hardware(#[from] ofa_predictors::hardware::HardwareError),
    /// Files.
    #[error("{}: {reason}", path.display())]
    File {
        /// The path.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
}

fn list_or_none(v: &[String]) -> String {
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

impl From<SearchError> for ExtractError {
    /// The search's own failures stay [`ExtractError::Search`]; its efficiency and accuracy
    /// errors join the predictors' variants (the same failure whichever path reached it).
    fn from(e: SearchError) -> ExtractError {
        match e {
            SearchError::Efficiency(e) => ExtractError::Efficiency(e),
            SearchError::Accuracy(e) => match e.downcast::<ofa_predictors::PredictorError>() {
                Ok(p) => ExtractError::Predictor(*p),
                Err(e) => ExtractError::Accuracy(e),
            },
            e => ExtractError::Search(e),
        }
    }
}

impl ExtractError {
    pub(crate) fn file(path: &std::path::Path, reason: impl Into<String>) -> ExtractError {
        ExtractError::File {
            path: path.to_path_buf(),
            reason: reason.into(),
        }
    }
}
