//! `ofa extract`: cut a subnet's weights out of a supernet.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context};
use ofa_supernet::checkpoint::{open_model, write_atomic, Model};
use tch::Device;

/// Arguments of `ofa extract`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Supernet checkpoint (or a reference supernet state_dict, .pth or .safetensors).
    #[arg(long)]
    supernet: PathBuf,
    /// The subnet: `{"ks": [..], "e": [..], "d": [..], "r": R}` (reference forms accepted).
    #[arg(long)]
    arch: PathBuf,
    /// Where to write the subnet (safetensors, reference subnet naming).
    #[arg(long)]
    out: PathBuf,
    /// Also write the reference `net.config` JSON here.
    #[arg(long)]
    net_config: Option<PathBuf>,
}

/// Run `ofa extract`.
pub fn run(a: Args) -> anyhow::Result<()> {
    let arch = super::read_arch(&a.arch)?;
    let ck = match open_model(&a.supernet, Device::Cpu)? {
        Model::Supernet(ck) => ck,
        Model::Subnet(_) => bail!(
            "{} is a subnet; extraction needs a supernet",
            a.supernet.display()
        ),
    };
    arch.validate(ck.net.space())
        .with_context(|| format!("{} does not fit the supernet", a.arch.display()))?;
    let t0 = Instant::now();
    let sub = ck.net.extract(&arch)?;
    let took = t0.elapsed();
    let mut meta = BTreeMap::new();
    meta.insert("arch".to_string(), arch.to_json());
    meta.insert("space".to_string(), ck.net.space().to_json());
    meta.insert(
        "source_supernet".to_string(),
        serde_json::json!({"sha256": ck.sha256}).to_string(),
    );
    sub.save(&a.out, &meta)?;
    if let Some(p) = &a.net_config {
        let text = serde_json::to_string_pretty(&sub.config().to_net_config())?;
        write_atomic(p, text.as_bytes())?;
    }
    let c = ofa_space::cost(ck.net.space(), &arch);
    eprintln!(
        "wrote {} ({} blocks, {:.2}M params, {:.1}M MACs at r={}, extracted in {:.2} ms)",
        a.out.display(),
        sub.config().blocks.len(),
        c.params as f64 / 1e6,
        c.macs as f64 / 1e6,
        arch.r,
        took.as_secs_f64() * 1e3
    );
    Ok(())
}
