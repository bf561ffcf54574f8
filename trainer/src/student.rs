//! A standalone subnet whose weights train (fine-tuning): its own storage, its trainable tensors
//! requiring gradients, and the spec of every tensor in state_dict order, so the optimiser, the
//! gradient averaging and the checkpoints walk it as they walk a supernet's registry.

use std::collections::HashMap;

use ofa_supernet::tensors::{deep_copy, InitSource, TensorSource};
use ofa_supernet::{
    channels_last, InitScheme, Layout, Result, Subnet, SubnetConfig, SupernetError, TensorSpec,
};
use tch::{Device, Tensor};

use crate::step::Params;

/// A subnet whose weights train.
#[derive(Debug)]
pub struct Student {
    net: Subnet,
    params: Vec<(TensorSpec, Tensor)>,
}

/// Tensors handed over as they are, by name (already copied, laid out and marked trainable).
struct Prepared(HashMap<String, Tensor>);

impl TensorSource for Prepared {
    fn take(&mut self, spec: &TensorSpec) -> Result<Tensor> {
        self.0
            .remove(&spec.name)
            .ok_or_else(|| SupernetError::MissingTensor {
                name: spec.name.clone(),
                shape: spec.shape.clone(),
            })
    }
}

impl Student {
    /// A trainable copy of `sub` on `device` (fresh storage; 4-D weights in `layout`; `sub` is
    /// untouched).
    pub fn new(sub: &Subnet, layout: Layout, device: Device) -> Result<Student> {
        let specs = sub.config().tensor_specs();
        let named = sub.named_tensors();
        if let Some((spec, (name, _))) = specs.iter().zip(&named).find(|(s, (n, _))| s.name != *n) {
            return Err(SupernetError::BadInput(format!(
                "the subnet's tensor `{name}` stands where its config expects `{}`",
                spec.name
            )));
        }
        let map: HashMap<String, Tensor> = specs
            .iter()
            .zip(named)
            .map(|(spec, (name, t))| {
                let t = deep_copy(&t.detach().to_device(device));
                let t = match layout {
                    Layout::ChannelsLast if t.dim() == 4 => channels_last(&t),
                    _ => t,
                };
                let t = if spec.role.trainable() {
                    t.set_requires_grad(true)
                } else {
                    t
                };
                (name, t)
            })
            .collect();
        let net = Subnet::build(sub.config().clone(), &mut Prepared(map))?;
        let params = specs
            .into_iter()
            .zip(net.named_tensors())
            .map(|(spec, (_, t))| (spec, t))
            .collect();
        Ok(Student { net, params })
    }

    /// `config` initialised as the reference initialises a network (`he_fout` convolutions,
    /// BN γ = 1 and β = 0, uniform linear weights, zero biases) from `seed`.
    pub fn scratch(
        config: SubnetConfig,
        seed: u64,
        device: Device,
        layout: Layout,
    ) -> Result<Student> {
        let mut init = InitSource {
            device,
            scheme: InitScheme::HeFout,
        };
        let fresh = ofa_supernet::rng::with_seed(seed, || Subnet::build(config, &mut init))?;
        Student::new(&fresh, layout, device)
    }

    /// The network (its tensors are the ones that train).
    pub fn net(&self) -> &Subnet {
        &self.net
    }

    /// A detached, contiguous copy of the current weights (to save or evaluate apart).
    pub fn snapshot(&self) -> Subnet {
        self.net.deep_copy().to_layout(Layout::Contiguous)
    }
}

impl Params for Student {
    fn params(&self) -> &[(TensorSpec, Tensor)] {
        &self.params
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use ofa_space::{ArchConfig, SearchSpace};
    use tch::Kind;

    #[test]
    fn a_student_owns_its_weights_and_trains_what_a_supernet_trains() -> Result<()> {
        let space = SearchSpace::preset("ofa-mbv3-tiny").unwrap();
        let config = SubnetConfig::from_arch(&space, &ArchConfig::largest(&space));
        let base = Subnet::build(
            config.clone(),
            &mut InitSource {
                device: Device::Cpu,
                scheme: InitScheme::HeFout,
            },
        )?;
        let s = Student::new(&base, Layout::ChannelsLast, Device::Cpu)?;
        assert_eq!(s.params().len(), config.tensor_specs().len());
        for ((spec, t), (name, b)) in s.params().iter().zip(base.named_tensors()) {
            assert_eq!(spec.name, name);
            assert_eq!(t.requires_grad(), spec.role.trainable(), "{name}");
            assert!(t.equal(&b), "{name}");
        }
        // a change to the student is not a change to the subnet it came from
        let w = &s.params()[0].1;
        tch::no_grad(|| {
            let _ = w.shallow_clone().fill_(0.5);
        });
        assert!(!base.named_tensors()[0].1.equal(w));
        // the handles in params are the network's own tensors
        assert!(s.net().named_tensors()[0].1.allclose(
            &Tensor::full(w.size(), 0.5, (Kind::Float, Device::Cpu)),
            0.0,
            0.0,
            false
        ));
        Ok(())
    }
}
