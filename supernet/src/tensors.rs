//! Named tensors: what each tensor of a network is, and where its values come from when a
//! network is built (fresh initialisation, or a checkpoint's tensors by name).

use std::collections::HashMap;

use tch::{Device, Kind, Tensor};

use crate::error::{Result, SupernetError};

/// What a tensor is for; decides trainability, weight decay and initialisation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Convolution weight `[out, in/groups, k, k]` (he_fout init).
    ConvWeight,
    /// Convolution bias (SE convs).
    ConvBias,
    /// BatchNorm γ.
    BnWeight,
    /// BatchNorm β.
    BnBias,
    /// BatchNorm running mean (buffer).
    RunningMean,
    /// BatchNorm running variance (buffer).
    RunningVar,
    /// BatchNorm `num_batches_tracked` (int64 buffer).
    BatchCounter,
    /// Elastic-kernel transform matrix (identity init).
    KernelTransform,
    /// Linear weight `[out, in]`.
    LinearWeight,
    /// Linear bias.
    LinearBias,
}

impl Role {
    /// Whether the optimiser updates it.
    pub fn trainable(self) -> bool {
        !matches!(
            self,
            Role::RunningMean | Role::RunningVar | Role::BatchCounter
        )
    }

    /// Whether weight decay applies (the reference: none on BN and biases; the kernel transform
    /// matrices do get it).
    pub fn weight_decay(self) -> bool {
        matches!(
            self,
            Role::ConvWeight | Role::LinearWeight | Role::KernelTransform
        )
    }

    /// Element type.
    pub fn kind(self) -> Kind {
        match self {
            Role::BatchCounter => Kind::Int64,
            _ => Kind::Float,
        }
    }
}

/// A tensor a network expects: its name, shape and role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSpec {
    /// Name in the reference naming scheme.
    pub name: String,
    /// Shape.
    pub shape: Vec<i64>,
    /// Role.
    pub role: Role,
}

/// Where a network's tensors come from while it is being built.
pub trait TensorSource {
    /// The tensor for `spec`, on the network's device, with the spec's shape and kind.
    fn take(&mut self, spec: &TensorSpec) -> Result<Tensor>;
}

/// Fresh tensors with the reference's `he_fout` initialisation (conv N(0, √(2/(k·k·out))),
/// BN γ = 1 and β = 0, linear U(±1/√in) with zero bias, identity transform matrices).
/// Uses libtorch's global generator: build inside [`crate::rng::with_seed`].
#[derive(Debug)]
pub struct InitSource {
    /// Target device.
    pub device: Device,
    /// How convolution weights are drawn.
    pub scheme: InitScheme,
}

/// Initialisation of convolution weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InitScheme {
    /// The reference's `he_fout`: N(0, √(2 / (k·k·out))).
    #[default]
    HeFout,
    /// PyTorch's default for `nn.Conv2d`: U(±1/√fan_in), fan_in = in/groups · k · k. On short
    /// runs (Fashion-MNIST) it learns markedly faster than he_fout.
    FanInUniform,
}

impl TensorSource for InitSource {
    fn take(&mut self, spec: &TensorSpec) -> Result<Tensor> {
        let opts = (spec.role.kind(), self.device);
        let s = spec.shape.as_slice();
        let t = match spec.role {
            Role::ConvWeight => match self.scheme {
                InitScheme::HeFout => {
                    let n = (s[0] * s[2] * s[3]) as f64;
                    Tensor::empty(s, opts).normal_(0.0, (2.0 / n).sqrt())
                }
                InitScheme::FanInUniform => {
                    let bound = 1.0 / ((s[1] * s[2] * s[3]) as f64).sqrt();
                    Tensor::empty(s, opts).uniform_(-bound, bound)
                }
            },
            Role::LinearWeight => {
                let stdv = 1.0 / (s[1] as f64).sqrt();
                Tensor::empty(s, opts).uniform_(-stdv, stdv)
            }
            Role::BnWeight | Role::RunningVar => Tensor::ones(s, opts),
            Role::KernelTransform => Tensor::eye(s[0], opts),
            Role::ConvBias
            | Role::BnBias
            | Role::RunningMean
            | Role::BatchCounter
            | Role::LinearBias => Tensor::zeros(s, opts),
        };
        Ok(t)
    }
}

/// Tensors taken by name from a map (a loaded checkpoint), checked for shape and dtype, moved to
/// `device`. After the build, [`MapSource::finish`] reports any tensor nobody asked for.
#[derive(Debug)]
pub struct MapSource {
    map: HashMap<String, Tensor>,
    device: Device,
}

impl MapSource {
    /// Wrap a name → tensor map.
    pub fn new(map: HashMap<String, Tensor>, device: Device) -> Self {
        MapSource { map, device }
    }

    /// Build with every tensor of `map` (on `device`): `build` takes what it needs, and a tensor
    /// it leaves is an error ([`MapSource::finish`]).
    pub fn build_all<T>(
        map: HashMap<String, Tensor>,
        device: Device,
        build: impl FnOnce(&mut MapSource) -> Result<T>,
    ) -> Result<T> {
        let mut src = MapSource::new(map, device);
        let built = build(&mut src)?;
        src.finish()?;
        Ok(built)
    }

    /// Error on the first (by name) tensor that was not consumed.
    pub fn finish(self) -> Result<()> {
        let mut left: Vec<_> = self.map.into_iter().collect();
        left.sort_by(|a, b| a.0.cmp(&b.0));
        match left.into_iter().next() {
            None => Ok(()),
            Some((name, t)) => Err(SupernetError::UnknownTensor {
                name,
                shape: t.size(),
            }),
        }
    }
}

impl TensorSource for MapSource {
    fn take(&mut self, spec: &TensorSpec) -> Result<Tensor> {
        let t = self
            .map
            .remove(&spec.name)
            .ok_or_else(|| SupernetError::MissingTensor {
                name: spec.name.clone(),
                shape: spec.shape.clone(),
            })?;
        if t.size() != spec.shape {
            return Err(SupernetError::ShapeMismatch {
                name: spec.name.clone(),
                expected: spec.shape.clone(),
                found: t.size(),
            });
        }
        let want = spec.role.kind();
        let ok = match want {
            Kind::Int64 => t.kind() == Kind::Int64,
            _ => matches!(
                t.kind(),
                Kind::Float | Kind::Half | Kind::BFloat16 | Kind::Double
            ),
        };
        if !ok {
            return Err(SupernetError::DtypeMismatch {
                name: spec.name.clone(),
                expected: format!("{want:?}"),
                found: format!("{:?}", t.kind()),
            });
        }
        Ok(t.to_device(self.device).to_kind(want).contiguous())
    }
}

/// Builds a network's tensors in order, recording each with its spec (the network's registry).
pub(crate) struct Registry<'a> {
    source: &'a mut dyn TensorSource,
    layout: Layout,
    pub(crate) entries: Vec<(TensorSpec, Tensor)>,
}

impl<'a> Registry<'a> {
    pub(crate) fn new(source: &'a mut dyn TensorSource, layout: Layout) -> Self {
        Registry {
            source,
            layout,
            entries: Vec::new(),
        }
    }

    /// Take one tensor; trainable ones get `requires_grad`.
    pub(crate) fn take(&mut self, name: String, shape: &[i64], role: Role) -> Result<Tensor> {
        let spec = TensorSpec {
            name,
            shape: shape.to_vec(),
            role,
        };
        let t = self.source.take(&spec)?;
        let t = if spec.shape.len() == 4 && self.layout == Layout::ChannelsLast {
            channels_last(&t)
        } else {
            t
        };
        let t = if role.trainable() {
            t.set_requires_grad(true)
        } else {
            t
        };
        self.entries.push((spec, t.shallow_clone()));
        Ok(t)
    }

    /// Take the five tensors of a BatchNorm layer under `prefix`.
    pub(crate) fn bn(&mut self, prefix: &str, c: i64) -> Result<crate::layers::Bn> {
        Ok(crate::layers::Bn {
            weight: self.take(format!("{prefix}.weight"), &[c], Role::BnWeight)?,
            bias: self.take(format!("{prefix}.bias"), &[c], Role::BnBias)?,
            running_mean: self.take(format!("{prefix}.running_mean"), &[c], Role::RunningMean)?,
            running_var: self.take(format!("{prefix}.running_var"), &[c], Role::RunningVar)?,
            num_batches_tracked: self.take(
                format!("{prefix}.num_batches_tracked"),
                &[],
                Role::BatchCounter,
            )?,
        })
    }
}

/// A deep, detached, contiguous copy (new storage).
pub fn deep_copy(t: &Tensor) -> Tensor {
    let out = Tensor::empty(t.size(), (t.kind(), t.device()));
    tch::no_grad(|| out.shallow_clone().copy_(t));
    out
}

/// Memory layout of a network's 4-D weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Layout {
    /// Row-major NCHW (what files store; extraction always produces this).
    #[default]
    Contiguous,
    /// NHWC strides under NCHW shape (PyTorch's `channels_last`): with channels-last inputs,
    /// oneDNN convolutions skip their layout reorders (faster training on CPU).
    ChannelsLast,
}

/// The same values with channels-last strides (4-D tensors; others are returned as they are).
///
/// The strides are set explicitly: `permute → contiguous → permute` leaves a one-channel tensor
/// (a grayscale batch, a grayscale stem's weight) NCHW-strided, because strides of size-1
/// dimensions do not count for contiguity, and libtorch then runs the whole network NCHW.
pub fn channels_last(t: &Tensor) -> Tensor {
    if t.dim() != 4 {
        return t.shallow_clone();
    }
    let n = t.size();
    let strides = [n[1] * n[2] * n[3], 1, n[3] * n[1], n[1]];
    let mut out = Tensor::empty_strided(&n, strides, (t.kind(), t.device()));
    out.copy_(t);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn channels_last_holds_for_one_channel_tensors() {
        // The permute → contiguous → permute idiom leaves these NCHW-strided.
        for c in [1i64, 3] {
            let t = Tensor::arange(2 * c * 4 * 5, (Kind::Float, Device::Cpu)).view([2, c, 4, 5]);
            let cl = channels_last(&t);
            assert_eq!(cl.stride(), vec![4 * 5 * c, 1, 5 * c, c], "channels = {c}");
            assert_eq!(cl, t, "same values");
        }
        let v = Tensor::ones([3, 4], (Kind::Float, Device::Cpu));
        assert_eq!(channels_last(&v).stride(), v.stride());
    }
}
