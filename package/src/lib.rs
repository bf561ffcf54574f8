//! `ofa-package`: a trained supernet package, opened once, and the one way subnets are measured.
//!
//! - [`Package`]: the folder `ofa train` writes (`supernet.safetensors`, `calibration.safetensors`,
//!   `card.json`; `accuracy.safetensors` and `latency/<hardware>.json` once specialisation is set
//!   up), loaded with its supernet hash.
//! - [`measure`]: BN recalibration on the package's calibration images, top-1 on a split, and
//!   batch-1 latency; every site that scores a subnet (phase tables, the predictor dataset,
//!   `extract --eval`, the server) calls these.
//! - [`Split`] and [`augment`]: uint8 images in memory and the transforms measurement shares with
//!   training; [`seed::mix`] derives the seeds.
//!
//! Nothing here decodes image files, reads recipes or prints: dataset formats live in the trainer.

#![warn(missing_docs)]

pub mod augment;
mod error;
pub mod measure;
mod package;
pub mod seed;
mod split;

pub use error::PackageError;
pub use package::{
    latency_tables, package_name, Package, ACCURACY_FILE, CALIBRATION_FILE, CARD_FILE, LATENCY_DIR,
    SUPERNET_FILE,
};
pub use split::{holdout_indices, Split};
