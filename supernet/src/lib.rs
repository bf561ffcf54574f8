//! `ofa-supernet`: the elastic OFA MobileNetV3 supernet in libtorch.
//!
//! - [`Supernet`]: the elastic network under the reference parameter names; `forward(x, arch,
//!   mode)` with no hidden active-subnet state; [`Supernet::extract`] cuts out a static
//!   [`Subnet`] (reference subnet naming); [`Supernet::sort_channels`] is the reference channel
//!   importance sorting.
//! - [`recalibrate_bn`]: BN recalibration with the reference semantics.
//! - [`checkpoint`]: safetensors checkpoints with metadata, `.pth` reading; [`import`]: reference
//!   state_dicts in any naming, with the space inferred from shapes.
//! - [`rng`]: libtorch's global generator, seeded and drawn from by one caller at a time.
//! - [`device`]: loads the CUDA backend at start-up when present; [`timing`]: the one timing
//!   helper (device-synchronised samples and their summary).

#![warn(missing_docs)]

mod calib;
pub mod checkpoint;
pub mod device;
mod error;
pub mod import;
pub mod layers;
mod pth_guard;
mod resnet;
pub mod rng;
mod sort;
mod subnet;
mod supernet;
pub mod tensors;
pub mod timing;

pub use calib::recalibrate_bn;
pub use checkpoint::{Provenance, SubnetFile, SupernetCheckpoint};
pub use error::{Result, SupernetError};
pub use layers::Mode;
pub use resnet::{BottleneckConfig, BottleneckWeights, ConvBn, ResNetLayers, ResNetNet};
pub use subnet::{LayerConfig, Layers, MbConvLayers, NetLayers, Subnet, SubnetConfig};
pub use supernet::Supernet;
pub use tensors::{channels_last, InitScheme, Layout, Role, TensorSpec};
