//! The JSON bodies of the HTTP API. Their schemas feed `/openapi.json`.

use std::collections::BTreeMap;

use ofa_extractor::Constraints;
use ofa_predictors::Metric;
use ofa_space::{ArchConfig, Family, Ratio};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

/// `POST /v1/subnets`: the best subnet for constraints on a hardware, or a given arch.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubnetRequest {
    /// Supernet (package) name.
    pub supernet: String,
    /// Hardware profile (a latency table of the package); needed for `latency_ms`.
    #[serde(default)]
    pub hardware: Option<String>,
    /// Bounds for a search.
    #[serde(default)]
    pub constraints: Option<Constraints>,
    /// A given arch `{ks, e, d, r}` instead of a search.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub arch: Option<Value>,
    /// Search seed (default 0). The same request and seed give the same subnet.
    #[serde(default)]
    pub seed: Option<u64>,
    /// Search strategy: `evolution` (the default), `aging` or `random`, each at the same number
    /// of accuracy predictions. Part of the request's cache key and of the record's `search`.
    #[serde(default)]
    pub strategy: Option<ofa_search::Strategy>,
}

/// `POST /v1/pareto`: the front of predicted top-1 against one metric.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ParetoRequest {
    /// Supernet (package) name.
    pub supernet: String,
    /// Hardware profile; needed for a latency front.
    #[serde(default)]
    pub hardware: Option<String>,
    /// `latency_ms` (the default with a hardware), `macs_m` (the default without) or `params_m`.
    #[serde(default)]
    pub objective: Option<Metric>,
    /// Bounds on the front's subnets.
    #[serde(default)]
    pub constraints: Option<Constraints>,
    /// Search seed (default 0).
    #[serde(default)]
    pub seed: Option<u64>,
    /// `evolution` (NSGA-II, the default) or `random`; `aging` optimises one objective and is
    /// refused (422). Part of the request's cache key unless it is the default.
    #[serde(default)]
    pub strategy: Option<ofa_search::Strategy>,
}

/// Predicted metrics of a subnet.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PredictedBody {
    /// Top-1, percent.
    pub top1: f64,
    /// Latency on the hardware asked for, ms (absent without one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
    /// MACs, millions.
    pub macs_m: f64,
    /// Parameters, millions.
    pub params_m: f64,
}

/// Where a subnet's files are.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Links {
    /// This record.
    #[serde(rename = "self")]
    pub record: String,
    /// BN-recalibrated weights (safetensors, reference naming).
    pub weights: String,
    /// The reference `net.config` JSON.
    pub net_config: String,
    /// The ONNX model (`?opset=N&fold_bn=true` optional).
    #[serde(default)]
    pub onnx: String,
}

/// How the search that chose a subnet went.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SearchInfo {
    /// Distinct archs scored.
    pub evaluated: usize,
    /// Generations run.
    pub generations: usize,
    /// Wall time of the search, seconds.
    pub seconds: f64,
    /// The seed.
    pub seed: u64,
    /// The strategy (records from before strategies existed: `evolution`).
    #[serde(default)]
    pub strategy: ofa_search::Strategy,
}

/// A subnet: its id (a content hash of the supernet and the canonical arch), arch and predictions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SubnetRecord {
    /// 32 hex digits.
    pub id: String,
    /// Supernet (package) name.
    pub supernet: String,
    /// The arch `{ks, e, d, r}`, canonical (skipped blocks hold the smallest choices).
    #[schema(value_type = Object)]
    pub arch: ArchConfig,
    /// Predictions (latency on `hardware` when one was asked for).
    pub predicted: PredictedBody,
    /// The hardware of `predicted.latency_ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hardware: Option<String>,
    /// Predicted latency on every hardware profile of the supernet, ms.
    pub latency_ms_by_hardware: BTreeMap<String, f64>,
    /// The search, when one chose this subnet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub search: Option<SearchInfo>,
    /// How it was fine-tuned, for a subnet made by a fine-tuning job (its weights are the job's,
    /// not a cut; `predicted` is the base subnet's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finetuned: Option<crate::finetune::FinetunedInfo>,
    /// Its files.
    pub links: Links,
}

/// A range of values, from the smallest any subnet reaches to the largest subnet's.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Range {
    /// Smallest achievable.
    pub min: f64,
    /// The largest subnet's.
    pub max: f64,
}

/// A hardware profile: a latency table and the latency range it allows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct HardwareInfo {
    /// Its name.
    pub name: String,
    /// Predicted latency, ms: the smallest achievable and the largest subnet's.
    pub latency_ms: Range,
    /// How the hardware `local` was fitted at start-up (`ofa serve --calibrate`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibration: Option<CalibrationInfo>,
    /// How a hardware added over HTTP was fitted (`POST /v1/supernets/{name}/hardware`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fit: Option<FitInfo>,
}

/// A hardware fitted from measurements sent over HTTP.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FitInfo {
    /// The latency model chosen (lowest leave-one-out error).
    pub model: String,
    /// Measurements used.
    pub measurements: usize,
    /// The base table (a hardware of the package), or `none`.
    pub base: String,
    /// The runtime the measurements were taken in, as the client said.
    pub runtime: Option<String>,
    /// Leave-one-out MAPE on the measurements, percent.
    pub loo_mape_pct: f64,
    /// Leave-one-out share within ±10 %, percent.
    pub loo_within_10pct: f64,
    /// Leave-one-out Spearman ρ.
    pub loo_spearman: f64,
    /// Every candidate model's leave-one-out MAPE, percent.
    pub candidates: BTreeMap<String, f64>,
}

/// `POST /v1/supernets/{name}/hardware`: measured subnets of a device.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HardwareRequest {
    /// Its name (letters, digits, `-`, `_`, `.`; not first), for later searches.
    pub name: String,
    /// The base table: a hardware of the package, or `none` (default: the package's first).
    pub base: Option<String>,
    /// The runtime the subnets were timed in (recorded).
    pub runtime: Option<String>,
    /// The measurements.
    pub measurements: Vec<MeasurementBody>,
    /// Replace a hardware of that name that was added before.
    #[serde(default)]
    pub replace: bool,
}

/// One measured subnet: its id (a subnet record of this supernet, e.g. a probe) or its arch.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MeasurementBody {
    /// A subnet id of this supernet.
    pub id: Option<String>,
    /// Or an arch.
    #[schema(value_type = Object)]
    pub arch: Option<Value>,
    /// Its latency, ms.
    pub latency_ms: f64,
}

/// The answer to `POST /v1/supernets/{name}/hardware` (201).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct HardwareFitted {
    /// The new hardware.
    pub hardware: HardwareInfo,
}

/// `GET /v1/supernets/{name}/probes`: the subnets to time on a device.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ProbeSet {
    /// The supernet.
    pub supernet: String,
    /// The table the probes are spread by, or `none`.
    pub base: String,
    /// Their seed.
    pub seed: u64,
    /// The probes, as subnet records (`links.onnx` is each one's ONNX).
    pub probes: Vec<SubnetRecord>,
}

/// A calibration: probes timed on the serving machine at start-up and the latency model fitted
/// to them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CalibrationInfo {
    /// The latency model chosen (lowest leave-one-out error).
    pub model: String,
    /// Probes timed.
    pub probes: usize,
    /// libtorch intra-op threads they were timed at.
    pub threads: i32,
    /// Leave-one-out MAPE on the probes, percent.
    pub loo_mape_pct: f64,
    /// Leave-one-out share within ±10 %, percent.
    pub loo_within_10pct: f64,
    /// Leave-one-out Spearman ρ.
    pub loo_spearman: f64,
    /// Wall time of the calibration, seconds.
    pub seconds: f64,
}

/// The elastic dimensions of a supernet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SpaceInfo {
    /// Space name.
    pub name: String,
    /// The network family (absent from servers older than families: MobileNetV3).
    #[serde(default)]
    pub family: Family,
    /// Elastic blocks.
    pub blocks: usize,
    /// Kernel sizes.
    pub ks: Vec<u32>,
    /// Expand ratios.
    pub expand: Vec<Ratio>,
    /// Depths per stage.
    pub depth: Vec<u32>,
    /// Width multipliers a ResNet's stem and stages choose from (`w` indexes them; absent in the
    /// MBConv families).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub widths: Vec<f64>,
    /// Input resolutions.
    pub resolutions: Vec<u32>,
    /// Input channels.
    pub in_channels: u32,
    /// Classes.
    pub n_classes: u32,
}

/// A served supernet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SupernetInfo {
    /// Name (its package folder's name).
    pub name: String,
    /// SHA-256 of its `supernet.safetensors`.
    pub sha256: String,
    /// The search space.
    pub space: SpaceInfo,
    /// Hardware profiles with their feasible latency ranges.
    pub hardware: Vec<HardwareInfo>,
    /// MACs, millions.
    pub macs_m: Range,
    /// Parameters, millions.
    pub params_m: Range,
    /// Predicted top-1, percent: the smallest and the largest subnet's.
    pub predicted_top1: Range,
}

/// `GET /v1/supernets`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SupernetList {
    /// Every served supernet.
    pub supernets: Vec<SupernetInfo>,
}

/// An error: `{"error": {"code", "message", ...}}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// The error itself.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// A stable machine-readable code, e.g. `infeasible`, `unknown_supernet`.
    pub code: String,
    /// A sentence for people.
    pub message: String,
    /// For `infeasible`: the smallest achievable value of each bound asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feasible_minimum: Option<BTreeMap<String, f64>>,
    /// For `unknown_supernet` / `unknown_hardware`: the names there are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub available: Option<Vec<String>>,
    /// For `internal`: the request's `x-request-id`, under which the server logged the detail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// `GET /healthz`, `GET /readyz`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// `ok`, or `not ready`.
    pub status: String,
    /// Supernets whose worker is running (`/readyz`; `/healthz` names none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub supernets: Vec<String>,
}
