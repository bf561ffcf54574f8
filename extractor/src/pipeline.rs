//! Extraction in steps a long-running process can call, each on things loaded once:
//!
//! 1. [`choose`]: request → arch and predicted metrics (a search with the [`Specialiser`], or a
//!    given arch scored), no weights involved;
//! 2. [`cut`]: arch → BN-recalibrated subnet, from an opened [`Package`] (batch size and seed are
//!    parameters: the same settings give the same bytes);
//! 3. [`Artefacts::new`]: the subnet file's bytes (reference naming, metadata) and `net.config`, in
//!    memory; optionally [`evaluate`] (top-1 on a split the caller loaded, batch-1 latency);
//! 4. [`write_artefacts`]: `subnet.safetensors`, `net.config.json` and `report.json` into a
//!    temporary folder renamed to the destination at the end (nothing half-written).
//!
//! Nothing here reads files per request or prints.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use ofa_package::augment::AugmentConfig;
use ofa_package::measure::{latency, top1, Recalibration};
use ofa_package::{Package, Split};
use ofa_space::{ArchConfig, SearchSpace};
use ofa_supernet::checkpoint::{source_metadata, write_atomic};
use ofa_supernet::Subnet;
use serde::{Deserialize, Serialize};

use crate::evolution::{EvolutionConfig, SearchResult};
use crate::problem::Constraints;
use crate::specialiser::{Predicted, Specialiser};
use crate::ExtractError;
use crate::SearchError;

/// What to extract: a given arch, or the best one for constraints.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    /// A given arch (no search).
    Arch(ArchConfig),
    /// Search under these constraints.
    Search {
        /// Upper bounds.
        constraints: Constraints,
        /// Search settings.
        search: EvolutionConfig,
    },
}

/// How a search went.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchSummary {
    /// Distinct archs whose accuracy was predicted.
    pub evaluated: usize,
    /// Generations run.
    pub generations: usize,
    /// Children given up after `max_attempts` draws.
    pub abandoned_children: usize,
    /// Children drawn in all.
    pub draws: usize,
    /// Wall time, seconds.
    pub seconds: f64,
    /// Of which in the accuracy predictor.
    pub predict_seconds: f64,
    /// The settings.
    pub config: EvolutionConfig,
}

impl SearchSummary {
    /// Of a search result run with `config`.
    pub fn of(r: &SearchResult, config: &EvolutionConfig) -> SearchSummary {
        SearchSummary {
            evaluated: r.evaluated,
            generations: r.history.len(),
            abandoned_children: r.abandoned_children,
            draws: r.draws,
            seconds: r.seconds,
            predict_seconds: r.predict_seconds,
            config: config.clone(),
        }
    }
}

/// The arch chosen for a request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Choice {
    /// The arch (canonical when predictors scored it).
    pub arch: ArchConfig,
    /// Predicted metrics; absent without predictors.
    pub predicted: Option<Predicted>,
    /// The search, when one ran.
    pub search: Option<SearchSummary>,
}

/// Step 1: the arch for `target` on `hardware`. A given arch is checked against `space` and
/// scored when predictors are given; a search needs them and is given up at `deadline`.
pub fn choose(
    spec: Option<&Specialiser>,
    space: &SearchSpace,
    target: &Target,
    hardware: Option<&str>,
    deadline: Option<Instant>,
) -> Result<Choice, ExtractError> {
    match (target, spec) {
        (Target::Arch(a), Some(s)) => {
            let sc = s.score(a, hardware)?;
            Ok(Choice {
                arch: sc.arch.clone(),
                predicted: Some(Predicted::of(&sc)),
                search: None,
            })
        }
        (Target::Arch(a), None) => {
            a.validate(space).map_err(ExtractError::ArchMismatch)?;
            Ok(Choice {
                arch: a.clone(),
                predicted: None,
                search: None,
            })
        }
        (Target::Search { constraints, .. }, _) if constraints.is_empty() => {
            Err(ExtractError::NothingToSearch)
        }
        (
            Target::Search {
                constraints,
                search,
            },
            Some(s),
        ) => {
            let r = s.search(constraints, hardware, search, deadline)?;
            Ok(Choice {
                arch: r.best.arch.clone(),
                predicted: Some(Predicted::of(&r.best)),
                search: Some(SearchSummary::of(&r, search)),
            })
        }
        (Target::Search { .. }, None) => Err(ExtractError::Search(SearchError::Config(
            "a search needs an accuracy predictor".into(),
        ))),
    }
}

/// Step 2: cut `arch` out of the package's supernet and recalibrate its BN.
pub fn cut(pkg: &Package, arch: &ArchConfig, r: &Recalibration) -> Result<Subnet, ExtractError> {
    arch.validate(pkg.space())
        .map_err(ExtractError::ArchMismatch)?;
    Ok(pkg.recalibrated(arch, r)?)
}

/// What `--eval` measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Measured {
    /// Top-1, percent.
    pub top1: f64,
    /// The split scored (`val` or `test`).
    pub split: String,
    /// Images scored.
    pub images: usize,
    /// Median batch-1 latency, ms.
    pub latency_ms: f64,
    /// The device timed.
    pub latency_device: String,
    /// Batch size of the latency.
    pub latency_batch: usize,
    /// libtorch intra-op threads.
    pub threads: i32,
}

/// How to evaluate a cut subnet.
#[derive(Debug, Clone, Copy)]
pub struct EvalOptions {
    /// Images scored (at most the split's).
    pub images: usize,
    /// Batch size of the scoring.
    pub batch: usize,
    /// Timed batch-1 forward passes.
    pub latency_repeats: usize,
}

/// Seconds of each step (absent: the step did not run).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Times {
    /// Loading the predictors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_predictors_s: Option<f64>,
    /// Choosing the arch (search or scoring).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub search_s: Option<f64>,
    /// Opening the package.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_supernet_s: Option<f64>,
    /// Cutting the weights and recalibrating BN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cut_s: Option<f64>,
    /// Scoring top-1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_top1_s: Option<f64>,
    /// Timing the latency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_latency_s: Option<f64>,
    /// Writing the files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_s: Option<f64>,
}

/// Seconds since `t`.
pub fn since(t: Instant) -> Option<f64> {
    Some(t.elapsed().as_secs_f64())
}

/// Score `sub` (cut for `arch`) on `split` (named `split_name`) and time it at batch 1.
pub fn evaluate(
    sub: &Subnet,
    arch: &ArchConfig,
    augment: &AugmentConfig,
    split: (&str, &Split),
    o: &EvalOptions,
    times: &mut Times,
) -> Result<Measured, ExtractError> {
    let t = Instant::now();
    let acc = top1(sub, split.1, arch.r, augment, o.batch, o.images)?;
    times.eval_top1_s = since(t);
    let t = Instant::now();
    // the lowest median of 3 passes: the statistic calibrations and `ofa eval` use
    let mut lat = latency(sub, arch.r, 5, o.latency_repeats)?;
    for _ in 1..3 {
        let again = latency(sub, arch.r, 5, o.latency_repeats)?;
        if again.median_ms < lat.median_ms {
            lat = again;
        }
    }
    times.eval_latency_s = since(t);
    Ok(Measured {
        top1: acc * 100.0,
        split: split.0.to_string(),
        images: o.images.min(split.1.len()),
        latency_ms: lat.median_ms,
        latency_device: format!("{:?}", sub.device()),
        latency_batch: 1,
        threads: tch::get_num_threads(),
    })
}

/// `report.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The arch.
    pub arch: ArchConfig,
    /// Constraints asked.
    pub constraints: Constraints,
    /// Hardware asked.
    pub hardware: Option<String>,
    /// Predicted metrics; absent without an accuracy predictor.
    pub predicted: Option<Predicted>,
    /// Measured top-1 and latency, with `--eval`.
    pub measured: Option<Measured>,
    /// How BN was recalibrated.
    pub recalibration: Recalibration,
    /// Seconds of each step.
    pub times: Times,
    /// The search, when one ran.
    pub search: Option<SearchSummary>,
    /// Files written.
    pub files: Vec<String>,
}

pub use ofa_schema::files::{NET_CONFIG_FILE, SUBNET_FILE};
/// The report.
pub const REPORT_FILE: &str = "report.json";
/// The ONNX file, when asked for.
pub const ONNX_FILE: &str = "model.onnx";

/// A cut subnet's files, in memory.
#[derive(Debug, Clone)]
pub struct Artefacts {
    /// `subnet.safetensors`: tensors under the reference subnet names; metadata `arch`, `space`,
    /// `source_supernet`, `recalibration`, `augment` (the eval transform), `predicted`
    /// (hardware-independent: top-1, MACs, params) and `measured` when given. The same subnet and metadata give the same bytes.
    pub subnet: Vec<u8>,
    /// The reference `net.config` JSON (pretty).
    pub net_config: String,
    /// The subnet file's metadata.
    pub metadata: BTreeMap<String, String>,
    /// `model.onnx`, when asked for ([`Artefacts::with_onnx`]).
    pub onnx: Option<Vec<u8>>,
}

/// How to write `model.onnx`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct OnnxOptions {
    /// ONNX opset.
    pub opset: i64,
    /// BatchNormalization folded into the convolutions.
    pub fold_bn: bool,
}

impl Default for OnnxOptions {
    fn default() -> OnnxOptions {
        OnnxOptions {
            opset: ofa_onnx::DEFAULT_OPSET,
            fold_bn: false,
        }
    }
}

impl Artefacts {
    /// The files of `sub`, cut from `pkg` for `arch`.
    pub fn new(
        sub: &Subnet,
        pkg: &Package,
        arch: &ArchConfig,
        recalibration: &Recalibration,
        predicted: Option<&Predicted>,
        measured: Option<&Measured>,
    ) -> Result<Artefacts, ExtractError> {
        let mut meta = source_metadata(arch, pkg.space(), pkg.supernet_sha256());
        meta.insert("recalibration".to_string(), to_json(recalibration));
        // the eval transform (resize, crop, normalisation), so the file can be scored alone
        meta.insert("augment".to_string(), to_json(&pkg.augment));
        if let Some(p) = predicted {
            meta.insert("predicted".to_string(), to_json(&p.without_latency()));
        }
        if let Some(m) = measured {
            meta.insert("measured".to_string(), to_json(m));
        }
        Ok(Artefacts {
            subnet: sub.to_safetensors(&meta)?,
            net_config: ofa_schema::to_json_pretty(&sub.config().to_net_config()),
            metadata: meta,
            onnx: None,
        })
    }

    /// The same subnet as ONNX too (metadata: its arch, space and source supernet).
    pub fn with_onnx(
        mut self,
        sub: &Subnet,
        arch: &ArchConfig,
        o: &OnnxOptions,
    ) -> Result<Artefacts, ExtractError> {
        let e = ofa_onnx::ExportOptions {
            opset: o.opset,
            fold_bn: o.fold_bn,
            ..ofa_onnx::ExportOptions::new(arch.r)
        }
        .with_metadata_from(&self.metadata);
        self.onnx = Some(ofa_onnx::export(sub, &e)?);
        Ok(self)
    }
}

fn to_json(v: &impl Serialize) -> String {
    ofa_schema::to_json(v)
}

/// Step 4: write the artefacts and the report into the folder `out`, replacing it whole.
pub fn write_artefacts(out: &Path, art: &Artefacts, report: &Report) -> Result<(), ExtractError> {
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).map_err(|e| ExtractError::file(&parent, e.to_string()))?;
    let tmp = tempfile::Builder::new()
        .prefix(".ofa-extract-")
        .tempdir_in(&parent)
        .map_err(|e| ExtractError::file(&parent, e.to_string()))?;
    write_atomic(&tmp.path().join(SUBNET_FILE), &art.subnet)?;
    write_atomic(&tmp.path().join(NET_CONFIG_FILE), art.net_config.as_bytes())?;
    if let Some(onnx) = &art.onnx {
        write_atomic(&tmp.path().join(ONNX_FILE), onnx)?;
    }
    let text = ofa_schema::to_json_pretty(report);
    write_atomic(&tmp.path().join(REPORT_FILE), text.as_bytes())?;
    let tmp = tmp.keep();
    if out.exists() {
        let old = parent.join(format!(".ofa-extract-old-{}", std::process::id()));
        std::fs::rename(out, &old).map_err(|e| ExtractError::file(out, e.to_string()))?;
        std::fs::rename(&tmp, out).map_err(|e| ExtractError::file(out, e.to_string()))?;
        let _ = std::fs::remove_dir_all(&old);
    } else {
        std::fs::rename(&tmp, out).map_err(|e| ExtractError::file(out, e.to_string()))?;
    }
    Ok(())
}
