//! `ofa-extractor`: specialisation. Given predictors for a supernet's space, find the subnet with
//! the best predicted accuracy under efficiency constraints ([`evolution`]), or the whole
//! accuracy–efficiency front in one run ([`pareto`]); then cut its weights out of the supernet,
//! recalibrate BN and write the artefacts ([`pipeline`]).

#![warn(missing_docs)]

use std::path::PathBuf;

use ofa_predictors::Metric;

pub mod evolution;
pub mod pareto;
pub mod pipeline;
pub mod plot;
pub mod problem;

pub use evolution::{evolve, EvolutionConfig, Scored, SearchResult};
pub use pareto::{pareto, Front, ParetoConfig};
pub use problem::{AccuracyModel, Bound, Constraints, Problem};

/// Why a search or extraction failed.
#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    /// A bound that is not a positive finite number, or a predictor that cannot serve it.
    #[error("invalid constraint: {0}")]
    Constraint(String),
    /// Search settings.
    #[error("invalid search settings: {0}")]
    Config(String),
    /// No arch of the space meets the constraints.
    #[error("{}", infeasible_message(*together, minima))]
    Infeasible {
        /// Whether every bound can be met alone but not all together.
        together: bool,
        /// (metric, bound, smallest achievable value) per constraint.
        minima: Vec<(Metric, f64, f64)>,
    },
    /// Accuracy predictor.
    #[error(transparent)]
    Predictor(#[from] ofa_predictors::PredictorError),
    /// Efficiency predictor (e.g. a lookup table without a layer the space needs).
    #[error(transparent)]
    Efficiency(#[from] ofa_predictors::EfficiencyError),
    /// Supernet / checkpoint.
    #[error(transparent)]
    Net(#[from] ofa_supernet::SupernetError),
    /// Package / data / measurement.
    #[error(transparent)]
    Train(#[from] ofa_trainer::run::TrainError),
    /// Files.
    #[error("{}: {reason}", path.display())]
    File {
        /// The path.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
}

fn infeasible_message(together: bool, minima: &[(Metric, f64, f64)]) -> String {
    let parts: Vec<String> = minima
        .iter()
        .map(|(m, max, v)| format!("{m} ≤ {max} (smallest achievable: {v:.4} {})", m.unit()))
        .collect();
    if together {
        format!(
            "infeasible constraints: each bound can be met alone but no subnet meets them all together: {}",
            parts.join(", ")
        )
    } else {
        let failing: Vec<String> = minima
            .iter()
            .filter(|(_, max, v)| v > max)
            .map(|(m, max, v)| {
                format!(
                    "{m} ≤ {max} cannot be met: the smallest achievable {m} is {v:.4} {}",
                    m.unit()
                )
            })
            .collect();
        format!("infeasible constraint: {}", failing.join("; "))
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
