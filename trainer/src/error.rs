//! The trainer's error type.

use std::path::PathBuf;

use crate::data::DataError;
use crate::recipe::RecipeError;
use ofa_supernet::SupernetError;

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// Recipe problems.
    #[error(transparent)]
    Recipe(#[from] RecipeError),
    /// Dataset problems.
    #[error(transparent)]
    Data(#[from] DataError),
    /// Network or checkpoint problems.
    #[error(transparent)]
    Net(#[from] SupernetError),
    /// Package or measurement problems.
    #[error(transparent)]
    Package(#[from] ofa_package::PackageError),
    /// Space problems.
    #[error(transparent)]
    Space(#[from] ofa_space::SpaceError),
    /// A collective failed: a rank died, hung past the timeout or stopped on an error of its own.
    #[error(
        "data-parallel job failed (a rank that fails ends the others; its own output says why)"
    )]
    Dist(#[from] ofa_dist::DistError),
    /// The ranks of a job do not agree (a rank that cannot see the run directory, or weights
    /// that drifted apart).
    #[error("data-parallel job: the ranks disagree on {what}: {values}")]
    RanksDisagree {
        /// What was compared.
        what: &'static str,
        /// Each rank's value.
        values: String,
    },
    /// Another rank failed at a stage every rank passes together.
    #[error("data-parallel job: rank {rank} of {world} failed {stage} (its own output says why)")]
    PeerFailed {
        /// The rank that failed (the lowest, where several did).
        rank: usize,
        /// The world size.
        world: usize,
        /// What the ranks were doing (`while setting up`, …).
        stage: &'static str,
    },
    /// Run directory problems.
    #[error("{path}: {reason}")]
    Run {
        /// The path.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}
