//! `ofa export`: a subnet (or a supernet's subnet) as a deployable file: ONNX.

use std::path::PathBuf;

use anyhow::bail;
use ofa_onnx::{export, ExportOptions, DEFAULT_OPSET};
use ofa_supernet::checkpoint::{open_model, source_metadata, write_atomic, Model};
use tch::Device;

/// Arguments of `ofa export`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A subnet file (`ofa extract`, or downloaded from `ofa serve`), or a supernet checkpoint with
    /// --arch (its stored BN statistics are used as they are: cut subnets from a package with
    /// `ofa extract --package … --onnx` for recalibrated ones).
    #[arg(long)]
    model: PathBuf,
    /// With a supernet: the subnet, an arch JSON file or `largest` / `smallest`.
    #[arg(long)]
    arch: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value = "onnx")]
    format: Format,
    /// Output file (written whole or not at all).
    #[arg(long)]
    out: PathBuf,
    /// ONNX opset (14 to 21).
    #[arg(long, default_value_t = DEFAULT_OPSET)]
    opset: i64,
    /// Fold every BatchNormalization into the convolution before it.
    #[arg(long)]
    fold_bn: bool,
    /// Input resolution (default: the one the file or --arch records).
    #[arg(long)]
    resolution: Option<u32>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Format {
    Onnx,
}

/// Run `ofa export`.
pub fn run(a: Args) -> anyhow::Result<()> {
    let Format::Onnx = a.format;
    let (net, arch_r, meta) = match open_model(&a.model, Device::Cpu)? {
        Model::Subnet(f) => {
            if a.arch.is_some() {
                bail!(
                    "{} is a subnet: --arch applies to supernets only",
                    a.model.display()
                );
            }
            (f.net, f.arch.map(|x| x.r), f.metadata)
        }
        Model::Supernet(ck) => {
            let Some(spec) = &a.arch else {
                bail!(
                    "{} is a supernet: give --arch to choose the subnet to export",
                    a.model.display()
                )
            };
            let arch = super::arch_arg(spec, ck.net.space())?;
            let meta = source_metadata(&arch, ck.net.space(), &ck.sha256);
            (ck.net.extract(&arch)?, Some(arch.r), meta)
        }
    };
    let Some(r) = a.resolution.or(arch_r) else {
        bail!("{} records no arch: give --resolution", a.model.display())
    };
    let o = ExportOptions {
        opset: a.opset,
        fold_bn: a.fold_bn,
        ..ExportOptions::new(r)
    }
    .with_metadata_from(&meta);
    let bytes = export(&net, &o)?;
    write_atomic(&a.out, &bytes)?;
    eprintln!(
        "wrote {} (ONNX opset {}, input [N, {}, {r}, {r}]{}; {} bytes)",
        a.out.display(),
        a.opset,
        net.config().in_channels,
        if a.fold_bn { ", BN folded" } else { "" },
        bytes.len()
    );
    Ok(())
}
