//! `ofa import`: reference state_dict → ofa supernet checkpoint.

use std::path::PathBuf;

use ofa_supernet::import::{import_supernet, ImportOptions};
use ofa_supernet::Provenance;
use tch::Device;

/// Arguments of `ofa import`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Reference checkpoint: `.pth`/`.pt` (`torch.save({"state_dict": ...})`) or `.safetensors`,
    /// current or legacy naming.
    input: PathBuf,
    /// Where to write the ofa supernet checkpoint.
    #[arg(long)]
    out: PathBuf,
    /// Use this space (preset name or SearchSpace JSON file) instead of inferring it.
    #[arg(long)]
    space: Option<String>,
    /// Expand ratio choices (shapes only show the largest), e.g. 3,4,6.
    #[arg(long, value_delimiter = ',')]
    expand_list: Option<Vec<u32>>,
    /// Depth choices, e.g. 2,3,4.
    #[arg(long, value_delimiter = ',')]
    depth_list: Option<Vec<u32>>,
    /// Resolutions of the space, e.g. 128,160,192,224.
    #[arg(long, value_delimiter = ',')]
    resolutions: Option<Vec<u32>>,
    /// Name for the imported space.
    #[arg(long)]
    name: Option<String>,
}

/// Run `ofa import`.
pub fn run(a: Args) -> anyhow::Result<()> {
    let opts = ImportOptions {
        space: a.space.as_deref().map(super::read_space).transpose()?,
        expand_ratio_list: a.expand_list,
        depth_list: a.depth_list,
        resolutions: a.resolutions,
        name: a.name,
    };
    let net = import_supernet(&a.input, &opts, Device::Cpu)?;
    let prov = Provenance {
        source: Some(format!("imported from {}", a.input.display())),
        ..Default::default()
    };
    net.save(&a.out, &prov, None)?;
    let s = net.space();
    eprintln!(
        "wrote {}: space {} (width {}, {} classes, kernels {:?}, expands {:?}, depths {:?}), {} tensors",
        a.out.display(),
        s.name,
        s.width_mult,
        s.n_classes,
        s.ks_list,
        s.expand_ratio_list,
        s.depth_list,
        net.tensors().len()
    );
    Ok(())
}
