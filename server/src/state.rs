//! What the server holds: per supernet its predictors (shared by the search threads), its model
//! worker and its summary; the cache; the limits.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;
use ofa_extractor::calibrate::CalibrateOptions;
use ofa_extractor::Specialiser;
use ofa_package::measure::Recalibration;
use ofa_predictors::Metric;
use ofa_space::ArchConfig;
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use crate::api::{CalibrationInfo, HardwareInfo, Range, SpaceInfo, SupernetInfo};
use crate::cache::Store;
use crate::error::ApiError;
use crate::worker::{Opened, Worker};

/// The hardware name of a calibration (`ofa serve --calibrate`): this machine, as served.
pub const LOCAL: &str = "local";

/// One served supernet.
#[derive(Debug)]
pub struct Served {
    /// Its name (package folder name).
    pub name: String,
    /// The package folder.
    pub dir: PathBuf,
    /// SHA-256 of its supernet file.
    pub sha256: String,
    /// Predictors (no tensors: shared by search threads).
    pub spec: Arc<Specialiser>,
    /// The model thread.
    pub worker: Worker,
    /// `GET /v1/supernets/{name}`.
    pub info: SupernetInfo,
    /// Only the calibrated hardware ([`LOCAL`]): a hash of its table, part of search and front
    /// keys, because each start measures it anew; the package's tables are keyed by the supernet
    /// and their name, as before (their files do not change under a running server).
    pub local_tag: Option<String>,
}

impl Served {
    /// Open `dir`: its predictors here, its weights in a new model thread (which first times
    /// probes and fits the hardware [`LOCAL`] when `calibrate` is given).
    pub fn open(
        name: &str,
        dir: &std::path::Path,
        device: tch::Device,
        recalibration: Recalibration,
        queue: usize,
        threads: i32,
        calibrate: Option<CalibrateOptions>,
    ) -> Result<Served, String> {
        let (
            worker,
            Opened {
                sha256,
                space,
                calibration,
            },
        ) = Worker::spawn(name, dir, device, recalibration, queue, threads, calibrate)?;
        let mut spec = Specialiser::from_package(dir).map_err(|e| e.to_string())?;
        let local_tag = calibration
            .as_ref()
            .map(|c| content_id(&[b"local", c.table.to_json().as_bytes()]));
        let calibrated = match calibration {
            Some(c) => {
                spec.add_hardware(LOCAL, &c.table)
                    .map_err(|e| e.to_string())?;
                Some(CalibrationInfo {
                    model: c.report.model.name.clone(),
                    probes: c.report.measurements,
                    threads,
                    loo_mape_pct: c.report.loo.mape_pct,
                    loo_within_10pct: c.report.loo.within_10pct,
                    loo_spearman: c.report.loo.spearman,
                    seconds: c.seconds,
                })
            }
            None => None,
        };
        if space != spec.space {
            return Err(format!(
                "{}: the supernet's space differs from the predictors' space",
                dir.display()
            ));
        }
        let info = summary(name, &sha256, &spec, calibrated).map_err(|e| e.to_string())?;
        Ok(Served {
            name: name.to_string(),
            dir: dir.to_path_buf(),
            sha256,
            spec: Arc::new(spec),
            worker,
            info,
            local_tag,
        })
    }

    /// What a search or front key needs of `hardware` beyond its name: the calibration's hash for
    /// [`LOCAL`], nothing for the package's own tables.
    pub fn hardware_tag(&self, hardware: Option<&str>) -> &str {
        match (hardware, &self.local_tag) {
            (Some(LOCAL), Some(tag)) => tag,
            _ => "",
        }
    }

    /// The id of `arch` (canonical) on this supernet: 32 hex digits of SHA-256 over the supernet
    /// file's hash and the canonical arch, so every server of this package agrees.
    pub fn subnet_id(&self, arch: &ArchConfig) -> String {
        content_id(&[self.sha256.as_bytes(), arch.to_json().as_bytes()])
    }
}

/// 32 hex digits of SHA-256 over `parts`, each followed by a newline.
pub fn content_id(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
        h.update(b"\n");
    }
    h.finalize()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Whether `id` has the shape of a subnet id (checked before any lookup).
pub fn valid_id(id: &str) -> bool {
    id.len() == 32
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn summary(
    name: &str,
    sha256: &str,
    spec: &Specialiser,
    calibration: Option<CalibrationInfo>,
) -> Result<SupernetInfo, ofa_extractor::ExtractError> {
    let s = &spec.space;
    let range = |(min, max): (f64, f64)| Range { min, max };
    let mut hardware = Vec::new();
    for h in spec.hardware_names() {
        hardware.push(HardwareInfo {
            latency_ms: range(spec.range(Metric::LatencyMs, Some(&h))?),
            calibration: calibration.clone().filter(|_| h == LOCAL),
            name: h,
        });
    }
    Ok(SupernetInfo {
        name: name.to_string(),
        sha256: sha256.to_string(),
        space: SpaceInfo {
            name: s.name.clone(),
            blocks: s.n_elastic_blocks(),
            ks: s.ks_list.clone(),
            expand: s.expand_ratio_list.clone(),
            depth: s.depth_list.clone(),
            resolutions: s.resolutions.clone(),
            in_channels: s.in_channels,
            n_classes: s.n_classes,
        },
        hardware,
        macs_m: range(spec.range(Metric::MacsM, None)?),
        params_m: range(spec.range(Metric::ParamsM, None)?),
        predicted_top1: range(spec.accuracy_range()?),
    })
}

/// Limits of the service.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Time limit of a request's work.
    pub request_timeout: Duration,
    /// Request bodies above this are refused with 413.
    pub max_body_bytes: usize,
}

/// The application state shared by every handler.
#[derive(Debug)]
pub struct AppState {
    /// Served supernets by name.
    pub supernets: BTreeMap<String, Served>,
    /// Cached results.
    pub store: Store,
    /// Searches allowed to run or wait at once.
    pub searches: Arc<Semaphore>,
    /// Their number.
    pub max_searches: usize,
    /// Limits.
    pub limits: Limits,
    /// The bearer token, when one is required.
    pub token: Option<String>,
    /// Renders `/metrics`.
    pub metrics: PrometheusHandle,
}

impl AppState {
    /// The supernet called `name`, or a 404 naming the ones there are.
    pub fn supernet(&self, name: &str) -> Result<&Served, ApiError> {
        self.supernets.get(name).ok_or_else(|| ApiError::NotFound {
            code: "unknown_supernet",
            message: format!("unknown supernet `{name}`"),
            available: Some(self.supernets.keys().cloned().collect()),
        })
    }
}
