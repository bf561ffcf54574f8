//! `ofa import`: reference state_dict → ofa supernet checkpoint.

use std::path::PathBuf;

use ofa_space::Ratio;
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
    /// Expand ratio choices (shapes only show the largest), e.g. 3,4,6 (ResNet: 0.2,0.25,0.35).
    #[arg(long, value_delimiter = ',', value_parser = parse_ratio)]
    expand_list: Option<Vec<Ratio>>,
    /// ResNet width multiplier choices (shapes only show the largest), e.g. 0.65,0.8,1.0.
    #[arg(long, value_delimiter = ',')]
    width_list: Option<Vec<f64>>,
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

fn parse_ratio(s: &str) -> Result<Ratio, String> {
    let v: f64 = s
        .parse()
        .map_err(|_| format!("`{s}` is not an expand ratio (a number)"))?;
    Ratio::new(v).ok_or_else(|| format!("an expand ratio must be positive, got {s}"))
}

/// Run `ofa import`.
pub fn run(a: Args) -> anyhow::Result<()> {
    let opts = ImportOptions {
        space: a.space.as_deref().map(super::read_space).transpose()?,
        expand_ratio_list: a.expand_list,
        width_mult_list: a.width_list,
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
        "wrote {}: space {} ({} {}, {} classes, kernels {:?}, expands {:?}, depths {:?}), {} tensors",
        a.out.display(),
        s.name,
        s.family.label(),
        if s.width_mult_list.is_empty() {
            format!("width {}", s.width_mult)
        } else {
            format!("widths {:?}", s.width_mult_list)
        },
        s.n_classes,
        s.ks_list,
        s.expand_ratio_list,
        s.depth_list,
        net.tensors().len()
    );
    Ok(())
}
