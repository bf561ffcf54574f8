//! Errors of the package crate.

use std::path::PathBuf;

use ofa_supernet::SupernetError;

/// Why a package could not be opened or a subnet not measured.
#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    /// A folder that is not a supernet package.
    #[error("{}: {reason}", dir.display())]
    NotAPackage {
        /// The folder.
        dir: PathBuf,
        /// What is missing.
        reason: String,
    },
    /// A package file that is present but wrong.
    #[error("{}: {reason}", path.display())]
    BadFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A package whose calibration file holds no images: BatchNorm cannot be recalibrated.
    #[error("{}: no calibration images: BatchNorm statistics cannot be recalibrated", path.display())]
    NoCalibrationImages {
        /// `calibration.safetensors`.
        path: PathBuf,
    },
    /// A split with no images to score on.
    #[error("no images to evaluate on")]
    EmptySplit,
    /// Supernet, subnet or libtorch.
    #[error(transparent)]
    Net(#[from] SupernetError),
    /// Another runtime a subnet was scored in (ONNX Runtime) failed.
    #[error("{0}")]
    Runtime(String),
}

impl PackageError {
    pub(crate) fn bad(path: impl Into<PathBuf>, reason: impl Into<String>) -> PackageError {
        PackageError::BadFile {
            path: path.into(),
            reason: reason.into(),
        }
    }
}

impl From<tch::TchError> for PackageError {
    fn from(e: tch::TchError) -> PackageError {
        PackageError::Net(SupernetError::Torch(e))
    }
}
