//! `ofa-space`: the Once-for-All MobileNetV3 search space, pure Rust.
//!
//! - [`SearchSpace`]: the supernet family (presets `ofa-mbv3-w1.0`, `ofa-mbv3-w1.2`, small ones),
//!   with per-block derived shapes ([`BlockSpec`]).
//! - [`ArchConfig`]: one subnet, reference-JSON compatible, validated against a space.
//! - [`Choices`] and [`sample`]: seeded uniform sampling from any subset of choices.
//! - [`cost`]: analytic MACs and params equal to the reference's counts.

#![warn(missing_docs)]

mod arch;
pub mod cost;
mod error;
mod sample;
mod space;

pub use arch::{ActiveBlock, ArchConfig};
pub use cost::{cost, Cost};
pub use error::SpaceError;
pub use sample::{sample, Choices};
pub use space::{
    conv_out, make_divisible, se_width, Activation, BlockSpec, SearchSpace, StageSpec,
    CHANNEL_DIVISIBLE, N_STAGES,
};
