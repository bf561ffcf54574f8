//! `ofa-trainer`: progressive-shrinking training of the OFA supernet.
//!
//! Datasets ([`data`]: IDX, CIFAR-10 binary, image folders) and augmentation ([`augment`]) fed by
//! worker threads ([`loader`]); recipes as data ([`recipe`]); one training step with distillation
//! ([`step`]); the resumable run directory and its final package ([`run`]); opening a package and
//! measuring subnets ([`package`], [`eval`]).

#![warn(missing_docs)]

pub mod augment;
pub mod data;
pub mod eval;
pub mod loader;
pub mod package;
pub mod recipe;
pub mod run;
pub mod step;
