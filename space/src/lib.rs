//! `ofa-space`: the Once-for-All search spaces, pure Rust.
//!
//! - [`SearchSpace`]: one supernet of a [`Family`] (MobileNetV3: presets `ofa-mbv3-w1.0`,
//!   `ofa-mbv3-w1.2`; ProxylessNAS: `ofa-proxyless-w1.3`; ResNet: `ofa-resnet50`; small ones of
//!   each), with per-block derived shapes ([`BlockSpec`], ResNet's [`BottleneckSpec`]).
//! - [`ArchConfig`]: one subnet, reference-JSON compatible, validated against a space.
//! - [`Choices`] and [`sample`]: seeded uniform sampling from any subset of choices.
//! - [`cost`]: analytic MACs and params equal to the reference's counts.
//! - [`latency`]: latency lookup-table keys in the reference's style.
//!
//! ```
//! use ofa_space::{cost, ArchConfig, SearchSpace};
//!
//! let space = SearchSpace::preset("ofa-mbv3-w1.0").unwrap();
//! let arch = ArchConfig::from_json(
//!     r#"{"ks": [7,7,7,7,7,7,7,7,7,7,7,7,7,7,7,7,7,7,7,7],
//!         "e":  [6,6,6,6,6,6,6,6,6,6,6,6,6,6,6,6,6,6,6,6],
//!         "d":  [4,4,4,4,4], "image_size": 224}"#,
//! ).unwrap();
//! arch.validate(&space).unwrap();
//! let c = cost(&space, &arch);
//! assert_eq!(format!("{:.1}M MACs", c.macs as f64 / 1e6), "566.2M MACs");
//! assert_eq!(format!("{:.2}M params", c.params as f64 / 1e6), "7.66M params");
//! ```

#![warn(missing_docs)]

mod arch;
pub mod cost;
pub mod encoding;
mod error;
pub mod latency;
mod ratio;
mod resnet;
mod sample;
mod space;

pub use arch::{ActiveBlock, ArchConfig};
pub use cost::{cost, Cost};
pub use encoding::Encoding;
pub use error::{chain, SpaceError};
pub use ratio::Ratio;
pub use resnet::{bottleneck_mid, Bottleneck, BottleneckSpec, ResNetStem};
pub use sample::{crossover, mutate, sample, Choices};
pub use space::{
    conv_out, make_divisible, se_width, Activation, BlockSpec, Family, SearchSpace, StageSpec,
    CHANNEL_DIVISIBLE, RESNET_BASE_DEPTHS,
};
