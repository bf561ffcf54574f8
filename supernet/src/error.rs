//! Errors of the supernet crate.

use std::path::PathBuf;

/// What can go wrong building, loading, running or saving a network.
#[derive(Debug, thiserror::Error)]
pub enum SupernetError {
    /// Search space or architecture problems.
    #[error(transparent)]
    Space(#[from] ofa_space::SpaceError),
    /// A tensor the network needs is not in the checkpoint.
    #[error("missing tensor `{name}` (expected shape {shape:?})")]
    MissingTensor {
        /// Tensor name.
        name: String,
        /// Expected shape.
        shape: Vec<i64>,
    },
    /// A tensor the network does not have.
    #[error("unknown tensor `{name}` (shape {shape:?}): not part of this network")]
    UnknownTensor {
        /// Tensor name.
        name: String,
        /// Its shape.
        shape: Vec<i64>,
    },
    /// A tensor with the wrong shape.
    #[error("tensor `{name}` has shape {found:?}, expected {expected:?}")]
    ShapeMismatch {
        /// Tensor name.
        name: String,
        /// Expected shape.
        expected: Vec<i64>,
        /// Shape in the file.
        found: Vec<i64>,
    },
    /// A tensor with the wrong element type.
    #[error("tensor `{name}` has dtype {found}, expected {expected}")]
    DtypeMismatch {
        /// Tensor name.
        name: String,
        /// Expected dtype.
        expected: String,
        /// Dtype in the file.
        found: String,
    },
    /// A file that is not a valid checkpoint of the expected kind.
    #[error("{path}: {reason}")]
    BadFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Input of the wrong shape for the network.
    #[error("bad input: {0}")]
    BadInput(String),
    /// A family the search space describes (arch format, costs, encoding) whose elastic layers
    /// this version does not build.
    #[error(
        "the {} supernet (`{}`) is not built by this version: its search space, arch format,          costs and predictor encoding are, its layers not yet",
        .0.label(),
        .0.supernet_name()
    )]
    UnsupportedFamily(ofa_space::Family),
    /// File system errors.
    #[error("cannot access {}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Errors raised by libtorch.
    #[error("libtorch failed")]
    Torch(#[from] tch::TchError),
}

impl SupernetError {
    /// Build a [`SupernetError::BadFile`].
    pub fn bad_file(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        SupernetError::BadFile {
            path: path.into(),
            reason: reason.into(),
        }
    }
    /// Build a [`SupernetError::Io`].
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        SupernetError::Io {
            path: path.into(),
            source,
        }
    }
}

/// Result alias.
pub type Result<T, E = SupernetError> = std::result::Result<T, E>;
