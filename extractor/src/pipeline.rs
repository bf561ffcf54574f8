//! Specialisation end to end.
//!
//! [`Specialiser`] owns the predictors of one supernet (accuracy MLP, compiled MACs / params, and
//! latency tables by hardware name) and turns constraints into a search [`Problem`]; it needs no
//! supernet weights. [`extract`] is the pipeline behind `ofa extract --package`: search if needed →
//! cut the weights → recalibrate BN on the package's calibration images → write
//! `subnet.safetensors`, `net.config.json` and `report.json` into a temporary folder that is
//! renamed to the destination at the end (nothing half-written) → optionally measure top-1 and the
//! real latency on this machine.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Instant;

use ofa_predictors::{AccuracyPredictor, Additive, Efficiency, LatencyTable, Metric};
use ofa_space::{ArchConfig, Choices, SearchSpace};
use ofa_supernet::checkpoint::write_atomic;
use ofa_supernet::Mode;
use ofa_trainer::eval::{calibrate, top1};
use ofa_trainer::package::Package;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tch::{Device, Kind, Tensor};

use crate::evolution::{evolve, scored, EvolutionConfig, Scored, SearchResult};
use crate::pareto::{pareto, Front, ParetoConfig};
use crate::problem::{Bound, Constraints, Problem};
use crate::ExtractError;

/// Read a latency table: our JSON file, or a folder of the reference's `{R}_lookup_table.yaml`.
pub fn load_latency_table(path: &Path) -> Result<LatencyTable, ExtractError> {
    let table = if path.is_dir() {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        LatencyTable::import_reference_dir(path, &name)
    } else {
        LatencyTable::load(path)
    };
    table.map_err(|e| ExtractError::Efficiency(e.into()))
}

/// The `space` in a supernet file's metadata, read from the safetensors header alone.
pub fn space_of_supernet(path: &Path) -> Result<SearchSpace, ExtractError> {
    let bad = |r: String| ExtractError::file(path, r);
    let mut f = std::fs::File::open(path).map_err(|e| bad(e.to_string()))?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len)
        .map_err(|_| bad("not a safetensors file (too short)".into()))?;
    let n = u64::from_le_bytes(len);
    if n > 100_000_000 {
        return Err(bad("not a safetensors file (header too large)".into()));
    }
    let mut header = vec![0u8; n as usize];
    f.read_exact(&mut header)
        .map_err(|_| bad("not a safetensors file (truncated header)".into()))?;
    let v: Value =
        serde_json::from_slice(&header).map_err(|e| bad(format!("corrupt header: {e}")))?;
    let space = v["__metadata__"]["space"]
        .as_str()
        .ok_or_else(|| bad("no `space` in the metadata: not an ofa supernet".into()))?;
    SearchSpace::from_json(space).map_err(|e| bad(format!("metadata `space`: {e}")))
}

/// The predictors of one supernet.
#[derive(Debug)]
pub struct Specialiser {
    /// The space (its resolutions are the ones searched).
    pub space: SearchSpace,
    /// Accuracy.
    pub accuracy: AccuracyPredictor,
    /// Analytic MACs.
    pub macs: Additive,
    /// Analytic params.
    pub params: Additive,
    /// Latency tables by hardware name.
    pub latency: BTreeMap<String, Additive>,
}

impl Specialiser {
    /// From parts: a space, an accuracy predictor file and latency tables (name, file or folder).
    pub fn new(
        space: SearchSpace,
        predictor: &Path,
        tables: &[(String, PathBuf)],
    ) -> Result<Specialiser, ExtractError> {
        let accuracy = AccuracyPredictor::load(predictor, None)?;
        accuracy.check_space(&space, &space.resolutions)?;
        let mut latency = BTreeMap::new();
        for (name, path) in tables {
            let t = load_latency_table(path)?;
            let a = Additive::latency(&space, &t);
            if a.resolutions().is_empty() {
                return Err(ExtractError::Constraint(format!(
                    "latency table `{name}` ({}) covers none of the space's resolutions {:?} (it has {:?})",
                    path.display(),
                    space.resolutions,
                    t.tables.keys().collect::<Vec<_>>()
                )));
            }
            let missing = a.missing_keys();
            if let Some(first) = missing.first() {
                return Err(ExtractError::Constraint(format!(
                    "latency table `{name}` ({}) lacks {} layer(s) the space needs, e.g. `{first}`",
                    path.display(),
                    missing.len()
                )));
            }
            latency.insert(name.clone(), a);
        }
        Ok(Specialiser {
            macs: Additive::macs(&space),
            params: Additive::params(&space),
            space,
            accuracy,
            latency,
        })
    }

    /// From a package folder: `supernet.safetensors` (its space), `accuracy.safetensors`, and
    /// every `latency/<hardware>.json`.
    pub fn from_package(dir: &Path) -> Result<Specialiser, ExtractError> {
        let space = space_of_supernet(&dir.join("supernet.safetensors"))?;
        let predictor = dir.join("accuracy.safetensors");
        if !predictor.is_file() {
            return Err(ExtractError::file(
                dir,
                "no accuracy.safetensors: fit one with `ofa predictor fit --package`",
            ));
        }
        let mut tables = Vec::new();
        if let Ok(rd) = std::fs::read_dir(dir.join("latency")) {
            for e in rd.flatten() {
                let p = e.path();
                if p.extension().is_some_and(|x| x == "json") {
                    if let Some(stem) = p.file_stem() {
                        tables.push((stem.to_string_lossy().into_owned(), p));
                    }
                }
            }
        }
        tables.sort();
        Specialiser::new(space, &predictor, &tables)
    }

    /// The latency predictor for `hardware`, or an error naming the ones available.
    pub fn hardware(&self, name: &str) -> Result<&Additive, ExtractError> {
        self.latency.get(name).ok_or_else(|| {
            ExtractError::Constraint(format!(
                "unknown hardware `{name}`: latency tables available: {}",
                if self.latency.is_empty() {
                    "none".to_string()
                } else {
                    self.latency.keys().cloned().collect::<Vec<_>>().join(", ")
                }
            ))
        })
    }

    /// The search problem for `constraints` (latency needs `hardware`). The resolutions searched
    /// are the space's, narrowed to those the latency table covers.
    pub fn problem(
        &self,
        constraints: &Constraints,
        hardware: Option<&str>,
    ) -> Result<Problem<'_>, ExtractError> {
        constraints.validate()?;
        let lat = hardware.map(|h| self.hardware(h)).transpose()?;
        let mut choices = Choices::all(&self.space);
        let mut bounds = Vec::new();
        let mut report: Vec<&dyn Efficiency> = vec![&self.macs, &self.params];
        if let Some(l) = lat {
            choices.r.retain(|r| l.resolutions().contains(r));
            report.push(l);
        }
        for (metric, max) in constraints.iter() {
            let predictor: &dyn Efficiency = match metric {
                Metric::MacsM => &self.macs,
                Metric::ParamsM => &self.params,
                Metric::LatencyMs => lat.ok_or_else(|| {
                    ExtractError::Constraint(
                        "a latency constraint needs a hardware name (its latency table)".into(),
                    )
                })?,
            };
            bounds.push(Bound { predictor, max });
        }
        Ok(Problem {
            space: &self.space,
            choices,
            accuracy: &self.accuracy,
            bounds,
            report,
        })
    }

    /// Best predicted accuracy under `constraints`.
    pub fn search(
        &self,
        constraints: &Constraints,
        hardware: Option<&str>,
        cfg: &EvolutionConfig,
    ) -> Result<SearchResult, ExtractError> {
        evolve(&self.problem(constraints, hardware)?, cfg)
    }

    /// The front of predicted accuracy vs `objective` (under `constraints`).
    pub fn pareto(
        &self,
        objective: Metric,
        constraints: &Constraints,
        hardware: Option<&str>,
        cfg: &ParetoConfig,
    ) -> Result<Front, ExtractError> {
        if objective == Metric::LatencyMs && hardware.is_none() {
            return Err(ExtractError::Constraint(
                "a latency front needs a hardware name (its latency table)".into(),
            ));
        }
        let problem = self.problem(constraints, hardware)?;
        let obj: &dyn Efficiency = match objective {
            Metric::MacsM => &self.macs,
            Metric::ParamsM => &self.params,
            Metric::LatencyMs => self.hardware(hardware.unwrap_or_default())?,
        };
        pareto(&problem, obj, cfg)
    }

    /// Score a given arch (validated against the space).
    pub fn score(&self, arch: &ArchConfig, hardware: Option<&str>) -> Result<Scored, ExtractError> {
        arch.validate(&self.space).map_err(|e| {
            ExtractError::Constraint(format!("the arch does not fit the space: {e}"))
        })?;
        let problem = self.problem(&Constraints::default(), hardware)?;
        let acc = f64::from(self.accuracy.predict(arch)?);
        scored(&problem, arch.canonical(&self.space), acc)
    }
}

/// What to extract.
#[derive(Debug, Clone, Default)]
pub struct ExtractRequest {
    /// A given arch (no search).
    pub arch: Option<ArchConfig>,
    /// Constraints for the search.
    pub constraints: Constraints,
    /// Hardware (latency table name).
    pub hardware: Option<String>,
    /// Search settings.
    pub search: EvolutionConfig,
    /// BN recalibration images (reference 2000).
    pub calibration_images: usize,
    /// Measure top-1 and latency after extraction.
    pub eval: Option<EvalRequest>,
}

/// What `--eval` measures.
#[derive(Debug, Clone)]
pub struct EvalRequest {
    /// Dataset folder (default: the package card's).
    pub data: Option<PathBuf>,
    /// Use the test split (else the held-out validation split).
    pub test_split: bool,
    /// Images evaluated.
    pub images: usize,
    /// Timed forward passes (batch 1) for the latency.
    pub latency_repeats: usize,
}

/// `report.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// The arch.
    pub arch: ArchConfig,
    /// Constraints asked.
    pub constraints: Constraints,
    /// Hardware asked.
    pub hardware: Option<String>,
    /// Predicted top-1 (percent) and efficiency metrics; absent without an accuracy predictor.
    pub predicted: Option<Value>,
    /// Measured top-1 and latency, with `--eval`.
    pub measured: Option<Value>,
    /// Seconds of each step.
    pub times: BTreeMap<String, f64>,
    /// The search result summary, when a search ran.
    pub search: Option<Value>,
    /// Files written.
    pub files: Vec<String>,
}

/// Run the pipeline on the package in `dir`, writing into `out` (a folder).
pub fn extract(
    dir: &Path,
    req: &ExtractRequest,
    out: &Path,
    device: Device,
) -> Result<Report, ExtractError> {
    let mut times = BTreeMap::new();
    let t = Instant::now();
    let needs_search = req.arch.is_none();
    let spec = if needs_search || dir.join("accuracy.safetensors").is_file() {
        Some(Specialiser::from_package(dir)?)
    } else {
        None
    };
    times.insert("load_predictors_s".into(), t.elapsed().as_secs_f64());
    let t = Instant::now();
    let (arch, predicted, search) = match (&req.arch, &spec) {
        (Some(a), Some(s)) => {
            let sc = s.score(a, req.hardware.as_deref())?;
            (sc.arch.clone(), Some(predicted_json(&sc)), None)
        }
        (Some(a), None) => (a.clone(), None, None),
        (None, Some(s)) => {
            if req.constraints.is_empty() {
                return Err(ExtractError::Constraint(
                    "give an arch or at least one constraint (max latency, MACs or params)".into(),
                ));
            }
            let r = s.search(&req.constraints, req.hardware.as_deref(), &req.search)?;
            let summary = json!({"evaluated": r.evaluated, "seconds": r.seconds,
                                 "abandoned_children": r.abandoned_children,
                                 "generations": r.history.len(), "config": req.search});
            (
                r.best.arch.clone(),
                Some(predicted_json(&r.best)),
                Some(summary),
            )
        }
        (None, None) => unreachable_spec()?,
    };
    times.insert("search_s".into(), t.elapsed().as_secs_f64());

    let t = Instant::now();
    let pkg = Package::open(dir, device)?;
    arch.validate(pkg.space()).map_err(|e| {
        ExtractError::Constraint(format!("the arch does not fit the supernet: {e}"))
    })?;
    times.insert("load_supernet_s".into(), t.elapsed().as_secs_f64());
    let t = Instant::now();
    let sub = pkg.net().extract(&arch)?;
    times.insert("extract_s".into(), t.elapsed().as_secs_f64());
    let t = Instant::now();
    let n = req.calibration_images.min(pkg.calib.len()).max(1) as i64;
    let calib = ofa_trainer::data::Split {
        images: pkg.calib.images.narrow(0, 0, n),
        labels: pkg.calib.labels.narrow(0, 0, n),
    };
    calibrate(&sub, &calib, arch.r, &pkg.augment, 250, 0)?;
    times.insert("recalibrate_bn_s".into(), t.elapsed().as_secs_f64());

    let mut measured = None;
    if let Some(ev) = &req.eval {
        let t = Instant::now();
        let splits = pkg.splits(ev.data.as_deref())?;
        let (split, name) = if ev.test_split {
            (
                splits.test.ok_or_else(|| {
                    ExtractError::Constraint("the package's dataset has no test split".into())
                })?,
                "test",
            )
        } else {
            (splits.val, "val")
        };
        let acc = top1(&sub, &split, arch.r, &pkg.augment, 250, ev.images)?;
        times.insert("eval_top1_s".into(), t.elapsed().as_secs_f64());
        let t = Instant::now();
        let lat = measure_latency(
            &sub,
            &arch,
            pkg.space().in_channels,
            device,
            ev.latency_repeats,
        )?;
        times.insert("eval_latency_s".into(), t.elapsed().as_secs_f64());
        measured = Some(json!({
            "top1": acc * 100.0, "split": name, "images": ev.images.min(split.len()),
            "latency_ms": lat, "latency_device": format!("{device:?}"), "latency_batch": 1,
            "threads": tch::get_num_threads(),
        }));
    }

    // Write everything into a temporary sibling folder, then rename it into place.
    let t = Instant::now();
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).map_err(|e| ExtractError::file(&parent, e.to_string()))?;
    let tmp = tempfile::Builder::new()
        .prefix(".ofa-extract-")
        .tempdir_in(&parent)
        .map_err(|e| ExtractError::file(&parent, e.to_string()))?;
    let mut meta = BTreeMap::new();
    meta.insert("arch".to_string(), arch.to_json());
    meta.insert("space".to_string(), pkg.space().to_json());
    meta.insert(
        "source_supernet".to_string(),
        json!({"sha256": pkg.checkpoint.sha256}).to_string(),
    );
    if let Some(p) = &predicted {
        meta.insert("predicted".to_string(), p.to_string());
    }
    if let Some(m) = &measured {
        meta.insert("measured".to_string(), m.to_string());
    }
    sub.save(&tmp.path().join("subnet.safetensors"), &meta)?;
    let nc = serde_json::to_string_pretty(&sub.config().to_net_config()).unwrap_or_default();
    write_atomic(&tmp.path().join("net.config.json"), nc.as_bytes())?;
    times.insert("write_s".into(), t.elapsed().as_secs_f64());
    let report = Report {
        arch,
        constraints: req.constraints,
        hardware: req.hardware.clone(),
        predicted,
        measured,
        times,
        search,
        files: vec![
            "subnet.safetensors".into(),
            "net.config.json".into(),
            "report.json".into(),
        ],
    };
    let text = serde_json::to_string_pretty(&report).unwrap_or_default();
    write_atomic(&tmp.path().join("report.json"), text.as_bytes())?;
    let tmp = tmp.keep();
    if out.exists() {
        let old = parent.join(format!(".ofa-extract-old-{}", std::process::id()));
        std::fs::rename(out, &old).map_err(|e| ExtractError::file(out, e.to_string()))?;
        std::fs::rename(&tmp, out).map_err(|e| ExtractError::file(out, e.to_string()))?;
        let _ = std::fs::remove_dir_all(&old);
    } else {
        std::fs::rename(&tmp, out).map_err(|e| ExtractError::file(out, e.to_string()))?;
    }
    Ok(report)
}

fn unreachable_spec() -> Result<(ArchConfig, Option<Value>, Option<Value>), ExtractError> {
    Err(ExtractError::Constraint(
        "no arch given and no accuracy predictor to search with".into(),
    ))
}

fn predicted_json(s: &Scored) -> Value {
    let mut v = json!({"top1": s.accuracy * 100.0});
    for (k, x) in &s.metrics {
        v[k] = json!(x);
    }
    v
}

/// Median wall time (ms) of a batch-1 eval forward at the arch's resolution.
fn measure_latency(
    sub: &ofa_supernet::Subnet,
    arch: &ArchConfig,
    channels: u32,
    device: Device,
    repeats: usize,
) -> Result<f64, ExtractError> {
    let r = i64::from(arch.r);
    let x = Tensor::randn([1, i64::from(channels), r, r], (Kind::Float, device));
    let mut ms = Vec::with_capacity(repeats.max(1));
    tch::no_grad(|| -> Result<(), ExtractError> {
        for _ in 0..5 {
            let _ = sub.forward(&x, Mode::Eval)?;
        }
        for _ in 0..repeats.max(1) {
            let t = Instant::now();
            let y = sub.forward(&x, Mode::Eval)?;
            if let Device::Cuda(i) = device {
                tch::Cuda::synchronize(i as i64);
            }
            drop(y);
            ms.push(t.elapsed().as_secs_f64() * 1e3);
        }
        Ok(())
    })?;
    ms.sort_by(f64::total_cmp);
    Ok(ms[ms.len() / 2])
}
