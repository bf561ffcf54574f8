//! `ofa-trainer`: progressive-shrinking training of the OFA supernet.
//!
//! Datasets ([`data`]: IDX, CIFAR-10 binary, image folders) and augmentation ([`augment`]) fed by
//! worker threads ([`loader`]); recipes as data ([`recipe`]); one training step with distillation
//! ([`step`]); a standalone subnet that trains ([`student`]) and its fine-tuning run
//! ([`finetune`]); the resumable run directory and its final package ([`run`]); a package's recipe and
//! splits ([`package`]). Opening packages, measuring subnets and the augmentation they share with
//! training live in `ofa-package` ([`augment`] is re-exported from there).

#![warn(missing_docs)]

pub use ofa_package::augment;
pub mod data;
pub mod error;
pub mod finetune;
pub mod folder;
pub mod loader;
pub mod package;
pub mod recipe;
pub mod run;
pub mod step;
pub mod student;
