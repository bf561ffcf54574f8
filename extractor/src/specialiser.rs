//! The predictors of one supernet, loaded once: accuracy MLP, compiled MACs / params, and latency
//! tables by hardware name. [`Specialiser`] needs no supernet weights and holds no tensors, so a
//! server shares one across threads; it turns constraints into a search [`Problem`] and answers
//! searches, fronts and scores of given archs.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Instant;

use ofa_package::{latency_tables, ACCURACY_FILE, SUPERNET_FILE};
use ofa_predictors::{AccuracyPredictor, Additive, Efficiency, LatencyTable, Metric};
use ofa_space::{ArchConfig, Choices, SearchSpace};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::evolution::{evolve_until, minimum, scored, EvolutionConfig, Scored, SearchResult};
use crate::pareto::{pareto_until, Front, ParetoConfig};
use crate::problem::{Bound, Constraints, Problem};
use crate::ExtractError;

/// Predicted metrics of one subnet: top-1 in percent, MACs and params in millions, and latency on
/// one hardware when a hardware was named.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Predicted {
    /// Top-1, percent.
    pub top1: f64,
    /// MACs, millions.
    pub macs_m: f64,
    /// Parameters, millions.
    pub params_m: f64,
    /// Latency on the hardware asked for, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
}

impl Predicted {
    /// From a scored arch (accuracy as a fraction, metrics by name).
    pub fn of(s: &Scored) -> Predicted {
        let get = |m: Metric| s.metrics.get(m.name()).copied();
        Predicted {
            top1: s.accuracy * 100.0,
            macs_m: get(Metric::MacsM).unwrap_or(f64::NAN),
            params_m: get(Metric::ParamsM).unwrap_or(f64::NAN),
            latency_ms: get(Metric::LatencyMs),
        }
    }

    /// The same without the hardware-specific latency (what a subnet file records).
    pub fn without_latency(self) -> Predicted {
        Predicted {
            latency_ms: None,
            ..self
        }
    }
}

/// Read a latency table: our JSON file, a reference YAML table (`mobile_trim.yaml`, a
/// `{R}_lookup_table.yaml`) or a folder of the reference's `{R}_lookup_table.yaml`; an imported
/// one is named after its file or folder.
pub fn load_latency_table(path: &Path) -> Result<LatencyTable, ExtractError> {
    let name = if path.is_dir() {
        path.file_name()
    } else {
        path.file_stem()
    }
    .map(|n| n.to_string_lossy().into_owned())
    .unwrap_or_else(|| path.display().to_string());
    Ok(LatencyTable::load_any(path, &name)?)
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
#[derive(Debug, Clone)]
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
            latency.insert(name.clone(), compile_table(&space, name, path, &t)?);
        }
        Ok(Specialiser {
            macs: Additive::macs(&space),
            params: Additive::params(&space),
            space,
            accuracy,
            latency,
        })
    }

    /// Add (or replace) the hardware `name` from a table in memory (a calibration), checked as the
    /// tables of [`Specialiser::new`] are.
    pub fn add_hardware(&mut self, name: &str, table: &LatencyTable) -> Result<(), ExtractError> {
        let a = compile_table(&self.space, name, Path::new(&format!("<{name}>")), table)?;
        self.latency.insert(name.to_string(), a);
        Ok(())
    }

    /// From a package folder: `supernet.safetensors` (its space), `accuracy.safetensors`, and
    /// every `latency/<hardware>.json`.
    pub fn from_package(dir: &Path) -> Result<Specialiser, ExtractError> {
        let space = space_of_supernet(&dir.join(SUPERNET_FILE))?;
        let predictor = dir.join(ACCURACY_FILE);
        if !predictor.is_file() {
            return Err(ExtractError::NoAccuracyPredictor {
                dir: dir.to_path_buf(),
            });
        }
        Specialiser::new(space, &predictor, &latency_tables(dir))
    }

    /// The latency predictor for `hardware`, or an error naming the ones available.
    pub fn hardware(&self, name: &str) -> Result<&Additive, ExtractError> {
        self.latency
            .get(name)
            .ok_or_else(|| ExtractError::UnknownHardware {
                name: name.to_string(),
                available: self.latency.keys().cloned().collect(),
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
                Metric::LatencyMs => lat.ok_or(ExtractError::NeedsHardware("constraint"))?,
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

    /// Best predicted accuracy under `constraints`, given up when `deadline` passes.
    pub fn search(
        &self,
        constraints: &Constraints,
        hardware: Option<&str>,
        cfg: &EvolutionConfig,
        deadline: Option<Instant>,
    ) -> Result<SearchResult, ExtractError> {
        Ok(evolve_until(
            &self.problem(constraints, hardware)?,
            cfg,
            deadline,
        )?)
    }

    /// The front of predicted accuracy vs `objective` (under `constraints`).
    pub fn pareto(
        &self,
        objective: Metric,
        constraints: &Constraints,
        hardware: Option<&str>,
        cfg: &ParetoConfig,
        deadline: Option<Instant>,
    ) -> Result<Front, ExtractError> {
        if objective == Metric::LatencyMs && hardware.is_none() {
            return Err(ExtractError::NeedsHardware("front"));
        }
        let problem = self.problem(constraints, hardware)?;
        let obj: &dyn Efficiency = match objective {
            Metric::MacsM => &self.macs,
            Metric::ParamsM => &self.params,
            Metric::LatencyMs => {
                self.hardware(hardware.ok_or(ExtractError::NeedsHardware("front"))?)?
            }
        };
        Ok(pareto_until(&problem, obj, cfg, deadline)?)
    }

    /// Score a given arch (validated against the space).
    pub fn score(&self, arch: &ArchConfig, hardware: Option<&str>) -> Result<Scored, ExtractError> {
        arch.validate(&self.space)
            .map_err(ExtractError::ArchMismatch)?;
        let problem = self.problem(&Constraints::default(), hardware)?;
        let acc = f64::from(self.accuracy.predict(arch)?);
        Ok(scored(&problem, arch.canonical(&self.space), acc)?)
    }

    /// The hardware names (latency tables), sorted.
    pub fn hardware_names(&self) -> Vec<String> {
        self.latency.keys().cloned().collect()
    }

    /// The smallest value of `metric` any subnet reaches (on `hardware` for latency) and the
    /// largest subnet's value: the feasible range of a bound on it.
    pub fn range(
        &self,
        metric: Metric,
        hardware: Option<&str>,
    ) -> Result<(f64, f64), ExtractError> {
        let problem = self.problem(&Constraints::default(), hardware)?;
        let predictor: &dyn Efficiency = match metric {
            Metric::MacsM => &self.macs,
            Metric::ParamsM => &self.params,
            Metric::LatencyMs => {
                self.hardware(hardware.ok_or(ExtractError::NeedsHardware("range"))?)?
            }
        };
        let (min, _) = minimum(&problem, predictor)?;
        let r = problem.choices.r.iter().copied().max().unwrap_or(0);
        let largest = ArchConfig {
            r,
            ..ArchConfig::largest(&self.space)
        };
        Ok((min, predictor.predict(&largest)?))
    }

    /// Predicted top-1 (percent) of the space's smallest and largest subnets.
    pub fn accuracy_range(&self) -> Result<(f64, f64), ExtractError> {
        let p = |a: &ArchConfig| -> Result<f64, ExtractError> {
            Ok(f64::from(self.accuracy.predict(a)?) * 100.0)
        };
        Ok((
            p(&ArchConfig::smallest(&self.space))?,
            p(&ArchConfig::largest(&self.space))?,
        ))
    }
}

/// `table` compiled for `space`, or why it cannot serve as the hardware `name`: it covers none of
/// the space's resolutions, or lacks layers the space needs.
fn compile_table(
    space: &SearchSpace,
    name: &str,
    path: &Path,
    t: &LatencyTable,
) -> Result<Additive, ExtractError> {
    let a = t.additive(space);
    let incomplete = |reason: String| ExtractError::IncompleteLatencyTable {
        hardware: name.to_string(),
        path: path.to_path_buf(),
        reason,
    };
    if a.resolutions().is_empty() {
        return Err(incomplete(format!(
            "covers none of the space's resolutions {:?} (it has {:?})",
            space.resolutions,
            t.tables.keys().collect::<Vec<_>>()
        )));
    }
    let missing = a.missing_keys();
    if let Some(first) = missing.first() {
        return Err(incomplete(format!(
            "lacks {} layer(s) the space needs, e.g. `{first}`",
            missing.len()
        )));
    }
    Ok(a)
}
