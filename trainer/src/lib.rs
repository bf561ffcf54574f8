//! `ofa-trainer`: progressive-shrinking training of the OFA supernet.
//!
//! Work in progress (issue "Trainer"): so far the dataset readers ([`data`]): MNIST-style IDX
//! (Fashion-MNIST, MNIST; raw or gzip) and CIFAR-10 binary batches, with a deterministic
//! held-out validation split. Augmentation, recipes, the phase schedule and run directories are
//! still to come.

#![warn(missing_docs)]

pub mod augment;
pub mod data;
pub mod eval;
pub mod loader;
pub mod recipe;
pub mod run;
pub mod step;
