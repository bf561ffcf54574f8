//! `ofa-extractor`: specialisation. Given predictors for a supernet's space, find the subnet with
//! the best predicted accuracy under efficiency constraints ([`evolution`]), or the whole
//! accuracy–efficiency front in one run ([`pareto`]), through the predictors of one supernet loaded
//! once ([`specialiser`]); then cut its weights out of the supernet, recalibrate BN and write the
//! artefacts ([`pipeline`]: in-memory steps a long-running process can call, and a separate
//! write step).

#![warn(missing_docs)]

use std::path::PathBuf;

use ofa_predictors::Metric;

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
    /// A bound that is not a positive finite number, or choices outside the space.
    #[error("invalid constraint: {0}")]
    Constraint(String),
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
    #[error("the arch does not fit the supernet: {0}")]
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
    /// Search settings.
    #[error("invalid search settings: {0}")]
    Config(String),
    /// The search ran past its deadline.
    #[error("the search ran past its deadline after {generations} generation(s) ({seconds:.2} s)")]
    DeadlineExceeded {
        /// Generations completed.
        generations: usize,
        /// Seconds spent.
        seconds: f64,
    },
    /// No arch of the space meets the constraints.
    #[error("{}", ofa_search::infeasible_message(*together, minima))]
    Infeasible {
        /// Whether every bound can be met alone but not all together.
        together: bool,
        /// (metric, bound, smallest achievable value) per constraint.
        minima: Vec<(Metric, f64, f64)>,
    },
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
    /// The same kind of failure: callers match on [`ExtractError`] alone.
    fn from(e: SearchError) -> ExtractError {
        match e {
            SearchError::Constraint(m) => ExtractError::Constraint(m),
            SearchError::Config(m) => ExtractError::Config(m),
            SearchError::DeadlineExceeded {
                generations,
                seconds,
            } => ExtractError::DeadlineExceeded {
                generations,
                seconds,
            },
            SearchError::Infeasible { together, minima } => {
                ExtractError::Infeasible { together, minima }
            }
            SearchError::Efficiency(e) => ExtractError::Efficiency(e),
            SearchError::Accuracy(e) => match e.downcast::<ofa_predictors::PredictorError>() {
                Ok(p) => ExtractError::Predictor(*p),
                Err(e) => ExtractError::Accuracy(e),
            },
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
