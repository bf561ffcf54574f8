//! `ofa-predictors`: what a search asks about an architecture besides its accuracy estimate.
//!
//! So far: latency lookup tables ([`latency`]), in a documented JSON format, imported from the
//! reference's per-resolution YAML files, predicting a subnet's latency as the sum of its layers'
//! mean times.

#![warn(missing_docs)]

pub mod latency;
