//! Constrained search over an OFA space, from predictors alone (no libtorch).
//!
//! - [`efficiency`]: the efficiency predictors' trait ([`Efficiency`]) and the compiled additive
//!   model ([`Additive`]) that MACs, parameters and lookup-table latency share (exact minima).
//! - [`problem`]: what a search optimises: an [`AccuracyModel`] under [`Constraints`].
//! - [`evolution`]: the reference's constrained evolutionary search ([`evolve`]).
//! - [`strategy`]: the other strategies at the same budget ([`Strategy`]: regularized evolution,
//!   random search).
//! - [`pareto`]: the accuracy–efficiency front (NSGA-II, [`pareto`]).
//!
//! The accuracy predictor (an MLP in libtorch) and the latency tables live in `ofa-predictors`,
//! which implements these traits; `ofa-extractor` cuts and writes what the search finds.

pub mod efficiency;
pub mod evolution;
pub mod pareto;
pub mod problem;
mod resnet_table;
pub mod strategy;

pub use efficiency::{Additive, Efficiency, EfficiencyError, Metric};
pub use evolution::{
    evolve, evolve_until, EvolutionConfig, Scored, SearchResult, MAX_GENERATIONS, MAX_POPULATION,
};
pub use pareto::{pareto, pareto_until, Front, ParetoConfig};
pub use problem::{AccuracyModel, Bound, Constraints, Problem};
pub use strategy::Strategy;

/// Why a search failed. Each variant is one kind of failure, so callers can tell them apart
/// without reading messages.
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    /// A bound that is not a positive finite number, or choices outside the space.
    #[error("invalid constraint: {0}")]
    Constraint(String),
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
    #[error("{}", infeasible_message(*together, minima))]
    Infeasible {
        /// Whether every bound can be met alone but not all together.
        together: bool,
        /// (metric, bound, smallest achievable value) per constraint.
        minima: Vec<(Metric, f64, f64)>,
    },
    /// An efficiency predictor (e.g. a lookup table without a layer an arch needs).
    #[error(transparent)]
    Efficiency(#[from] EfficiencyError),
    /// The accuracy model.
    #[error(transparent)]
    Accuracy(Box<dyn std::error::Error + Send + Sync>),
}

/// The message of [`SearchError::Infeasible`].
pub fn infeasible_message(together: bool, minima: &[(Metric, f64, f64)]) -> String {
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
