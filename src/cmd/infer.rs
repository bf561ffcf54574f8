//! `ofa infer`: logits of a supernet (with an arch) or of a subnet for an input tensor.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{anyhow, bail};
use ofa_supernet::checkpoint::{open_model, read_safetensors, write_safetensors, Model};
use ofa_supernet::Mode;
use tch::{Device, Kind};

/// Arguments of `ofa infer`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Supernet checkpoint, subnet file, or reference state_dict.
    #[arg(long)]
    model: PathBuf,
    /// The subnet to run: an arch JSON file, or `largest` / `smallest` (required for a supernet,
    /// ignored for a subnet).
    #[arg(long)]
    arch: Option<PathBuf>,
    /// Safetensors file with a float tensor `input` of shape [N, C, H, W].
    #[arg(long)]
    input: PathBuf,
    /// Where to write the tensor `logits` [N, classes].
    #[arg(long)]
    out: PathBuf,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu", value_parser = super::device_arg)]
    device: tch::Device,
}

/// Run `ofa infer`.
pub fn run(a: Args) -> anyhow::Result<()> {
    let device: Device = a.device;
    let input = read_safetensors(&a.input)?;
    let x = input
        .tensors
        .get("input")
        .ok_or_else(|| anyhow!("{}: no tensor named `input`", a.input.display()))?
        .to_kind(Kind::Float)
        .to_device(device);
    let logits = tch::no_grad(|| -> anyhow::Result<tch::Tensor> {
        Ok(match open_model(&a.model, device)? {
            Model::Supernet(ck) => {
                let Some(p) = &a.arch else {
                    bail!(
                        "{} is a supernet: give --arch to choose the subnet to run",
                        a.model.display()
                    )
                };
                let arch = super::arch_arg(p, ck.net.space())?;
                ck.net.forward(&x, &arch, Mode::Eval)?
            }
            Model::Subnet(f) => {
                if a.arch.is_some() {
                    tracing::warn!("--arch is ignored for a subnet file");
                }
                f.net.forward(&x, Mode::Eval)?
            }
        })
    })?;
    write_safetensors(
        &a.out,
        &[("logits".to_string(), logits.to_device(Device::Cpu))],
        &BTreeMap::new(),
    )?;
    eprintln!("wrote {} (logits {:?})", a.out.display(), logits.size());
    Ok(())
}
