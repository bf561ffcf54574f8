//! `ofa inspect`: what a checkpoint holds, what a subnet costs, which devices exist.

use std::path::PathBuf;

use anyhow::bail;
use ofa_space::{cost::cost_at, ArchConfig, SearchSpace};
use ofa_supernet::checkpoint::{open_model, Model};
use serde_json::{json, Value};
use tch::Device;

/// Arguments of `ofa inspect`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Supernet checkpoint, subnet file or reference state_dict (.pth / .safetensors).
    file: Option<PathBuf>,
    /// Report MACs and params of this subnet of a supernet: an arch JSON file, `largest` or
    /// `smallest` (default: both of those).
    #[arg(long)]
    arch: Option<PathBuf>,
    /// Also list the compute devices (alone: only them).
    #[arg(long)]
    devices: bool,
    /// One JSON object instead of text.
    #[arg(long)]
    json: bool,
}

fn devices() -> Value {
    let cuda = ofa_supernet::device::init();
    json!({
        "cpu": {"threads": tch::get_num_threads()},
        "cuda_available": tch::Cuda::is_available(),
        "cuda_devices": tch::Cuda::device_count(),
        "cudnn_available": tch::Cuda::cudnn_is_available(),
        "cuda_backend": cuda.loaded,
        "cuda_note": cuda.reason,
        "libtorch": ofa_supernet::device::libtorch_dir(),
    })
}

fn costs(space: &SearchSpace, arch: &ArchConfig) -> Value {
    let per_res: Vec<Value> = space
        .resolutions
        .iter()
        .map(|&r| {
            let c = cost_at(space, arch, r);
            json!({"resolution": r, "macs": c.macs, "params": c.params})
        })
        .collect();
    json!({"arch": arch, "by_resolution": per_res})
}

/// Run `ofa inspect`.
pub fn run(a: Args) -> anyhow::Result<()> {
    let mut out = serde_json::Map::new();
    match &a.file {
        None if !a.devices => bail!("give a FILE to inspect, or --devices"),
        None => {}
        Some(path) => {
            out.insert("file".into(), json!(path.display().to_string()));
            match open_model(path, Device::Cpu)? {
                Model::Supernet(ck) => {
                    let space = ck.net.space();
                    out.insert("kind".into(), json!("supernet"));
                    out.insert("sha256".into(), json!(ck.sha256));
                    out.insert("space".into(), serde_json::to_value(space)?);
                    out.insert("provenance".into(), serde_json::to_value(&ck.provenance)?);
                    out.insert("tensors".into(), json!(ck.net.tensors().len()));
                    out.insert("trainable_params".into(), json!(ck.net.num_params()));
                    let mut subnets = Vec::new();
                    if let Some(p) = &a.arch {
                        let arch = super::arch_arg(p, space)?;
                        arch.validate(space)?;
                        subnets.push(costs(space, &arch));
                    } else {
                        subnets.push(costs(space, &ArchConfig::largest(space)));
                        subnets.push(costs(space, &ArchConfig::smallest(space)));
                    }
                    out.insert("subnets".into(), json!(subnets));
                    if let Some(m) = &ck.metrics {
                        out.insert("metrics".into(), serde_json::to_value(m)?);
                    }
                }
                Model::Subnet(f) => {
                    out.insert("kind".into(), json!("subnet"));
                    let tensors = f.net.named_tensors();
                    let params: i64 = f
                        .net
                        .config()
                        .tensor_specs()
                        .iter()
                        .zip(&tensors)
                        .filter(|(s, _)| s.role.trainable())
                        .map(|(_, (_, t))| t.numel() as i64)
                        .sum();
                    out.insert("tensors".into(), json!(tensors.len()));
                    out.insert("params".into(), json!(params));
                    out.insert("blocks".into(), json!(f.net.config().blocks.len()));
                    if let Some(arch) = &f.arch {
                        out.insert("arch".into(), serde_json::to_value(arch)?);
                        if let Some(space) = f
                            .metadata
                            .get("space")
                            .and_then(|s| SearchSpace::from_json(s).ok())
                        {
                            let c = ofa_space::cost(&space, arch);
                            out.insert("macs".into(), json!(c.macs));
                        }
                    }
                    for k in ["predicted", "measured", "source_supernet"] {
                        if let Some(v) = f.metadata.get(k) {
                            out.insert(k.into(), serde_json::from_str(v).unwrap_or(json!(v)));
                        }
                    }
                    out.insert(
                        "net_config".into(),
                        serde_json::to_value(f.net.config().to_net_config())?,
                    );
                }
            }
        }
    }
    if a.devices || a.file.is_none() {
        out.insert("devices".into(), devices());
    }
    let out = Value::Object(out);
    if a.json {
        outln!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        print_text(&out);
    }
    Ok(())
}

fn print_text(v: &Value) {
    let s = |k: &str| {
        v.get(k)
            .map(|x| x.to_string().trim_matches('"').to_string())
    };
    if let Some(f) = s("file") {
        outln!("file        {f}");
    }
    if let Some(k) = s("kind") {
        outln!("kind        {k}");
    }
    if let Some(sp) = v.get("space") {
        outln!(
            "space       {} (width {} · {} classes · {} input channels)",
            sp["name"].as_str().unwrap_or("?"),
            sp["width_mult"],
            sp["n_classes"],
            sp["in_channels"]
        );
        outln!(
            "choices     kernel {} · expand {} · depth {} · resolutions {}",
            sp["ks_list"],
            sp["expand_ratio_list"],
            sp["depth_list"],
            sp["resolutions"]
        );
    }
    if let Some(t) = s("tensors") {
        outln!("tensors     {t}");
    }
    if let Some(p) = s("trainable_params").or_else(|| s("params")) {
        outln!("params      {p}");
    }
    if let Some(m) = s("macs") {
        outln!("macs        {m}");
    }
    if let Some(subnets) = v.get("subnets").and_then(Value::as_array) {
        for sn in subnets {
            outln!("subnet      {}", sn["arch"]);
            outln!(
                "  {:>10}  {:>14}  {:>12}",
                "resolution",
                "MACs (M)",
                "params (M)"
            );
            for r in sn["by_resolution"].as_array().into_iter().flatten() {
                outln!(
                    "  {:>10}  {:>14.3}  {:>12.3}",
                    r["resolution"],
                    r["macs"].as_f64().unwrap_or(0.0) / 1e6,
                    r["params"].as_f64().unwrap_or(0.0) / 1e6
                );
            }
        }
    }
    if let Some(d) = v.get("devices") {
        outln!("cpu         {} threads", d["cpu"]["threads"]);
        let cuda = if d["cuda_available"].as_bool().unwrap_or(false) {
            format!(
                "available, {} device(s), backend {}",
                d["cuda_devices"], d["cuda_backend"]
            )
        } else {
            format!(
                "not available ({})",
                d["cuda_note"].as_str().unwrap_or("no GPU")
            )
        };
        outln!("cuda        {cuda}");
        outln!("libtorch    {}", d["libtorch"].as_str().unwrap_or("?"));
    }
}
