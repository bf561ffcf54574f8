//! `ofa inspect`: what a checkpoint holds, what a subnet costs, which devices exist.

use std::path::PathBuf;

use std::collections::BTreeMap;

use anyhow::{bail, Context};
use ofa_schema::finetune::FinetuneRecord;
use ofa_schema::net_config::NetConfig;
use ofa_schema::run::SupernetMetrics;
use ofa_space::{cost::cost_at, ArchConfig, Family, SearchSpace};
use ofa_supernet::checkpoint::{open_model, Model, Provenance};
use serde::Serialize;
use serde_json::Value;
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

/// What `ofa inspect` reports: one field per line of text, or the JSON object.
#[derive(Debug, Default, Serialize)]
struct Inspection {
    #[serde(skip_serializing_if = "Option::is_none")]
    file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    kind: Option<FileKind>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sha256: Option<String>,
    /// The network family (of the space, or of a subnet's config).
    #[serde(skip_serializing_if = "Option::is_none")]
    family: Option<Family>,
    #[serde(skip_serializing_if = "Option::is_none")]
    space: Option<SearchSpace>,
    #[serde(skip_serializing_if = "Option::is_none")]
    provenance: Option<Provenance>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tensors: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    trainable_params: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    subnets: Option<Vec<Costs>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    metrics: Option<SupernetMetrics>,
    #[serde(skip_serializing_if = "Option::is_none")]
    params: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    blocks: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    arch: Option<ArchConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    macs: Option<u64>,
    /// The subnet file's JSON metadata (`predicted`, `measured`, `source_supernet`), as stored.
    #[serde(flatten)]
    metadata: BTreeMap<String, Value>,
    /// How the subnet was fine-tuned (`ofa finetune`).
    #[serde(skip_serializing_if = "Option::is_none")]
    finetune: Option<FinetuneRecord>,
    #[serde(skip_serializing_if = "Option::is_none")]
    net_config: Option<NetConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    devices: Option<Devices>,
}

#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "snake_case")]
enum FileKind {
    Supernet,
    Subnet,
}

/// MACs and parameters of a subnet at each resolution of its space.
#[derive(Debug, Serialize)]
struct Costs {
    arch: ArchConfig,
    by_resolution: Vec<AtResolution>,
}

#[derive(Debug, Serialize)]
struct AtResolution {
    resolution: u32,
    macs: u64,
    params: u64,
}

/// The compute devices.
#[derive(Debug, Serialize)]
struct Devices {
    cpu: Cpu,
    cuda_available: bool,
    cuda_devices: i64,
    cudnn_available: bool,
    cuda_backend: Option<String>,
    cuda_note: Option<String>,
    libtorch: &'static str,
}

#[derive(Debug, Serialize)]
struct Cpu {
    threads: i32,
}

fn devices() -> Devices {
    let cuda = ofa_supernet::device::init();
    Devices {
        cpu: Cpu {
            threads: tch::get_num_threads(),
        },
        cuda_available: tch::Cuda::is_available(),
        cuda_devices: tch::Cuda::device_count(),
        cudnn_available: tch::Cuda::cudnn_is_available(),
        cuda_backend: cuda.loaded.clone(),
        cuda_note: cuda.reason.clone(),
        libtorch: ofa_supernet::device::libtorch_dir(),
    }
}

fn costs(space: &SearchSpace, arch: &ArchConfig) -> Costs {
    let by_resolution = space
        .resolutions
        .iter()
        .map(|&r| {
            let c = cost_at(space, arch, r);
            AtResolution {
                resolution: r,
                macs: c.macs,
                params: c.params,
            }
        })
        .collect();
    Costs {
        arch: arch.clone(),
        by_resolution,
    }
}

/// Run `ofa inspect`.
pub fn run(a: Args) -> anyhow::Result<()> {
    let mut out = Inspection::default();
    match &a.file {
        None if !a.devices => bail!("give a FILE to inspect, or --devices"),
        None => {}
        Some(path) => {
            out.file = Some(path.display().to_string());
            match open_model(path, Device::Cpu)? {
                Model::Supernet(ck) => {
                    let space = ck.net.space();
                    out.kind = Some(FileKind::Supernet);
                    out.tensors = Some(ck.net.tensors().len());
                    out.trainable_params = Some(ck.net.num_params());
                    let subnets = match &a.arch {
                        Some(p) => {
                            let arch = super::arch_arg(p, space)?;
                            arch.validate(space)?;
                            vec![costs(space, &arch)]
                        }
                        None => vec![
                            costs(space, &ArchConfig::largest(space)),
                            costs(space, &ArchConfig::smallest(space)),
                        ],
                    };
                    out.subnets = Some(subnets);
                    out.family = Some(space.family);
                    out.space = Some(space.clone());
                    out.sha256 = Some(ck.sha256);
                    out.provenance = Some(ck.provenance);
                    out.metrics = ck.metrics;
                }
                Model::Subnet(f) => {
                    out.kind = Some(FileKind::Subnet);
                    out.family = Some(f.net.config().family);
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
                    out.tensors = Some(tensors.len());
                    out.params = Some(params);
                    out.blocks = Some(f.net.config().n_blocks());
                    if let Some(arch) = &f.arch {
                        out.arch = Some(arch.clone());
                        // a subnet file carries its space; one without it has no MACs to show
                        if let Some(text) = f.metadata.get("space") {
                            let space = SearchSpace::from_json(text).with_context(|| {
                                format!("{}: the `space` metadata is not a space", path.display())
                            })?;
                            arch.validate(&space).with_context(|| {
                                format!(
                                    "{}: the `arch` metadata does not fit its `space`",
                                    path.display()
                                )
                            })?;
                            out.macs = Some(ofa_space::cost(&space, arch).macs);
                        }
                    }
                    for k in ["predicted", "measured", "source_supernet"] {
                        if let Some(v) = f.metadata.get(k) {
                            let v = serde_json::from_str(v).with_context(|| {
                                format!("{}: the `{k}` metadata is not JSON", path.display())
                            })?;
                            out.metadata.insert(k.to_string(), v);
                        }
                    }
                    if let Some(v) = f.metadata.get("finetune") {
                        out.finetune = Some(serde_json::from_str(v).with_context(|| {
                            format!(
                                "{}: the `finetune` metadata is not a fine-tuning record",
                                path.display()
                            )
                        })?);
                    }
                    out.net_config = Some(f.net.config().to_net_config());
                }
            }
        }
    }
    if a.devices || a.file.is_none() {
        out.devices = Some(devices());
    }
    if a.json {
        outln!("{}", ofa_schema::to_json_pretty(&out));
    } else {
        print_text(&out);
    }
    Ok(())
}

fn print_text(v: &Inspection) {
    if let Some(f) = &v.file {
        outln!("file        {f}");
    }
    if let Some(k) = v.kind {
        outln!(
            "kind        {}",
            match k {
                FileKind::Supernet => "supernet",
                FileKind::Subnet => "subnet",
            }
        );
    }
    if let Some(f) = v.family {
        outln!(
            "family      {} (reference {} / {})",
            f.label(),
            f.supernet_name(),
            f.reference_name()
        );
    }
    if let Some(sp) = &v.space {
        outln!(
            "space       {} (width {} · {} classes · {} input channels)",
            sp.name,
            sp.width_mult,
            sp.n_classes,
            sp.in_channels
        );
        // ResNet's widths are a choice too
        let widths = if sp.width_mult_list.is_empty() {
            String::new()
        } else {
            format!(" · width {:?}", sp.width_mult_list)
        };
        outln!(
            "choices     kernel {:?} · expand {:?} · depth {:?}{widths} · resolutions {:?}",
            sp.ks_list,
            sp.expand_ratio_list,
            sp.depth_list,
            sp.resolutions
        );
    }
    if let Some(t) = v.tensors {
        outln!("tensors     {t}");
    }
    if let Some(p) = v.trainable_params.or(v.params) {
        outln!("params      {p}");
    }
    if let Some(m) = v.macs {
        outln!("macs        {m}");
    }
    if let Some(f) = &v.finetune {
        let test = f
            .test_top1
            .map_or(String::new(), |t| format!(", test {t:.2} %"));
        outln!(
            "finetune    {:?} weights, {:.2} epochs, teacher {:?}, lr {}: held-out {:.2} % at epoch {:.2}{test}",
            f.init,
            f.epochs,
            f.teacher,
            f.schedule.lr,
            f.chosen.heldout_top1,
            f.chosen.epoch
        );
        outln!("  base      sha256 {}", f.base_sha256);
    }
    for sn in v.subnets.iter().flatten() {
        outln!("subnet      {}", ofa_schema::to_json(&sn.arch));
        outln!(
            "  {:>10}  {:>14}  {:>12}",
            "resolution",
            "MACs (M)",
            "params (M)"
        );
        for r in &sn.by_resolution {
            outln!(
                "  {:>10}  {:>14.3}  {:>12.3}",
                r.resolution,
                r.macs as f64 / 1e6,
                r.params as f64 / 1e6
            );
        }
    }
    if let Some(d) = &v.devices {
        outln!("cpu         {} threads", d.cpu.threads);
        let cuda = if d.cuda_available {
            format!(
                "available, {} device(s), backend {}",
                d.cuda_devices,
                d.cuda_backend.as_deref().unwrap_or("?")
            )
        } else {
            format!(
                "not available ({})",
                d.cuda_note.as_deref().unwrap_or("no GPU")
            )
        };
        outln!("cuda        {cuda}");
        outln!("libtorch    {}", d.libtorch);
    }
}
