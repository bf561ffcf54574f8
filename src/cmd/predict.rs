//! `ofa predict`: what the package's predictors say of given archs (top-1, latency on each
//! hardware, MACs, params), without cutting anything.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context;
use ofa_extractor::Specialiser;
use ofa_space::ArchConfig;

/// Arguments of `ofa predict`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The supernet package (its accuracy predictor and latency tables).
    #[arg(long)]
    package: PathBuf,
    /// An arch JSON file, a JSONL file with one arch per line, or `largest` / `smallest`.
    #[arg(long)]
    arch: PathBuf,
    /// Hardware to predict latency on (repeatable; default: every table of the package).
    #[arg(long)]
    hardware: Vec<String>,
    /// One JSON object per arch, one per line.
    #[arg(long)]
    json: bool,
}

/// Read one arch, or one per non-empty line (`largest` and `smallest` name the space's ends).
fn read_archs(path: &PathBuf, space: &ofa_space::SearchSpace) -> anyhow::Result<Vec<ArchConfig>> {
    if !path.exists() && matches!(path.to_str(), Some("largest" | "smallest")) {
        return Ok(vec![super::arch_arg(path, space)?]);
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    if let Ok(a) = ArchConfig::from_json(&text) {
        return Ok(vec![a]);
    }
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        out.push(
            ArchConfig::from_json(line)
                .with_context(|| format!("{}:{}: not a valid arch", path.display(), i + 1))?,
        );
    }
    anyhow::ensure!(!out.is_empty(), "{}: no arch in the file", path.display());
    Ok(out)
}

/// Run `ofa predict`.
pub fn run(a: Args) -> anyhow::Result<()> {
    let spec = Specialiser::from_package(&a.package)?;
    let hardware = if a.hardware.is_empty() {
        spec.hardware_names()
    } else {
        a.hardware.clone()
    };
    let tables = hardware
        .iter()
        .map(|h| Ok((h.clone(), spec.hardware(h)?)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let archs = read_archs(&a.arch, &spec.space)?;
    if !a.json {
        out!(
            "{:>4}  {:>7}  {:>8}  {:>8}",
            "#",
            "top-1",
            "MACs(M)",
            "params(M)"
        );
        for h in &hardware {
            out!("  {:>12}", format!("{h} ms"));
        }
        outln!();
    }
    for (i, arch) in archs.iter().enumerate() {
        let s = spec
            .score(arch, None)
            .with_context(|| format!("arch {} of {}", i + 1, a.arch.display()))?;
        let mut lat = BTreeMap::new();
        for (h, t) in &tables {
            lat.insert(h.clone(), t.predict(&s.arch)?);
        }
        let top1 = s.accuracy * 100.0;
        let macs = s.metrics.get("macs_m").copied().unwrap_or(f64::NAN);
        let params = s.metrics.get("params_m").copied().unwrap_or(f64::NAN);
        if a.json {
            outln!(
                "{}",
                serde_json::json!({
                    "arch": s.arch,
                    "top1": top1,
                    "macs_m": macs,
                    "params_m": params,
                    "latency_ms": lat,
                })
            );
        } else {
            out!("{:>4}  {top1:>7.2}  {macs:>8.2}  {params:>8.3}", i + 1);
            for h in &hardware {
                out!("  {:>12.4}", lat[h]);
            }
            outln!();
        }
    }
    Ok(())
}
