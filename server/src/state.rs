//! What the server holds: per supernet its predictors (shared by the search threads), its model
//! worker and its summary; the cache; the limits.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;
use ofa_extractor::calibrate::CalibrateOptions;
use ofa_extractor::specialiser::load_latency_table;
use ofa_extractor::Specialiser;
use ofa_package::latency_tables;
use ofa_package::measure::Recalibration;
use ofa_predictors::LatencyTable;
use ofa_predictors::Metric;
use ofa_space::ArchConfig;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use crate::api::{CalibrationInfo, FitInfo, HardwareInfo, Range, SpaceInfo, SupernetInfo};
use crate::cache::Store;
use crate::error::ApiError;
use crate::worker::{Opened, Worker};

/// The hardware name of a calibration (`ofa serve --calibrate`): this machine, as served.
pub const LOCAL: &str = "local";

/// How a hardware that was measured rather than shipped came to be: `ofa serve --calibrate`
/// ([`LOCAL`]) or `POST /v1/supernets/{name}/hardware`.
#[derive(Debug, Clone)]
struct Measured {
    /// A hash of its table: part of search and front keys on it, so a refit is never answered
    /// from entries of the table it replaced.
    tag: String,
    /// What `GET /v1/supernets/{name}` says of it.
    calibration: Option<CalibrationInfo>,
    fit: Option<FitInfo>,
    /// The modification time of the kept file it was read from (a hardware restored from the
    /// cache folder): a newer file there is a replacement another replica made.
    kept: Option<std::time::SystemTime>,
}

/// What a replica knows of a hardware name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stamp {
    /// Not served here (another replica may have added it since).
    Unknown,
    /// A table of the package, or this replica's own calibration: never replaced from the folder.
    Package,
    /// Added over HTTP; the modification time of the kept file it was read from (`None`: added
    /// by a request to this replica, not read from the folder yet).
    Kept(Option<std::time::SystemTime>),
}

/// What can change while serving: the predictors (a hardware added), its summary, and the
/// measured hardware.
#[derive(Debug)]
struct Live {
    spec: Arc<Specialiser>,
    info: SupernetInfo,
    measured: BTreeMap<String, Measured>,
}

/// One served supernet.
#[derive(Debug)]
pub struct Served {
    /// Its name (package folder name).
    pub name: String,
    /// The package folder.
    pub dir: PathBuf,
    /// SHA-256 of its supernet file.
    pub sha256: String,
    /// A hash of its accuracy predictor and latency table files, as opened.
    pub predictors: String,
    /// A hash of what, besides the supernet and the arch, decides the bytes of a cut: the device,
    /// the BN recalibration settings, libtorch's thread count, the calibration images and the
    /// predictors (whose top-1 the file's metadata holds). Part of every weights and ONNX key, so
    /// replicas on one cache folder that cut differently never serve each other's files.
    pub cut: String,
    /// The model thread.
    pub worker: Worker,
    /// The package's first latency table (name, table): the base of probes and fits.
    pub base: Option<(String, LatencyTable)>,
    /// Predictors (no tensors: shared by search threads), swapped whole when a hardware is added.
    live: RwLock<Live>,
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
        let spec = Specialiser::from_package(dir).map_err(|e| ofa_space::chain(&e))?;
        if space != spec.space {
            return Err(format!(
                "{}: the supernet's space differs from the predictors' space",
                dir.display()
            ));
        }
        let base = match latency_tables(dir).into_iter().next() {
            Some((n, path)) => Some((
                n,
                load_latency_table(&path).map_err(|e| ofa_space::chain(&e))?,
            )),
            None => None,
        };
        let info =
            summary(name, &sha256, &spec, &BTreeMap::new()).map_err(|e| ofa_space::chain(&e))?;
        let predictors = predictors_hash(dir)?;
        let cut = cut_tag(
            device,
            recalibration,
            threads,
            &calibration_hash(dir)?,
            &predictors,
        );
        let served = Served {
            name: name.to_string(),
            dir: dir.to_path_buf(),
            sha256,
            predictors,
            cut,
            worker,
            base,
            live: RwLock::new(Live {
                spec: Arc::new(spec),
                info,
                measured: BTreeMap::new(),
            }),
        };
        if let Some(c) = calibration {
            let info = CalibrationInfo {
                model: c.report.model.name.clone(),
                probes: c.report.measurements,
                threads,
                loo_mape_pct: c.report.loo.mape_pct,
                loo_within_10pct: c.report.loo.within_10pct,
                loo_spearman: c.report.loo.spearman,
                seconds: c.seconds,
            };
            served
                .add_hardware(LOCAL, &c.table, true, Some(info), None, None)
                .map_err(|e| ofa_space::chain(&e))?;
        }
        Ok(served)
    }

    fn live(&self) -> std::sync::RwLockReadGuard<'_, Live> {
        // a writer that panicked left either the old or the new whole value: both are usable
        self.live.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The predictors as they are now.
    pub fn spec(&self) -> Arc<Specialiser> {
        self.live().spec.clone()
    }

    /// `GET /v1/supernets/{name}` as it is now.
    pub fn info(&self) -> SupernetInfo {
        self.live().info.clone()
    }

    /// What a search or front key needs beyond the supernet, the hardware's name, the
    /// constraints and the seed: the hash of the package's predictor files as opened (so a refitted
    /// predictor or a re-profiled table is never answered from the entries of the old one), and
    /// for a measured hardware the hash of its table.
    pub fn hardware_tag(&self, hardware: Option<&str>) -> String {
        let measured = hardware
            .and_then(|h| self.live().measured.get(h).map(|m| m.tag.clone()))
            // the package's own tables are in `predictors`
            .unwrap_or_default();
        format!("{} {measured}", self.predictors)
    }

    /// Whether `name` is a hardware of this supernet, and whether it was measured (not shipped).
    pub fn has_hardware(&self, name: &str) -> (bool, bool) {
        let live = self.live();
        (
            live.spec.latency.contains_key(name),
            live.measured.contains_key(name),
        )
    }

    /// What this replica knows of the hardware `name`, for [`AppState::learn_hardware`].
    pub fn kept_stamp(&self, name: &str) -> Stamp {
        let live = self.live();
        match live.measured.get(name) {
            Some(m) if m.calibration.is_none() => Stamp::Kept(m.kept),
            Some(_) => Stamp::Package,
            None if live.spec.latency.contains_key(name) => Stamp::Package,
            None => Stamp::Unknown,
        }
    }

    /// Whether `name` may be added (checked again by [`Served::add_hardware`] under its lock): a
    /// request asks before it does any work.
    pub fn may_add(&self, name: &str, replace: bool) -> Result<(), ApiError> {
        conflict(&self.name, &self.live(), name, replace)
    }

    /// Serve `table` as the hardware `name` from now on. An existing name is a conflict unless
    /// `replace`; a table of the package itself is never replaced.
    pub fn add_hardware(
        &self,
        name: &str,
        table: &LatencyTable,
        replace: bool,
        calibration: Option<CalibrationInfo>,
        fit: Option<FitInfo>,
        kept: Option<std::time::SystemTime>,
    ) -> Result<(), ApiError> {
        let mut live = self.live.write().unwrap_or_else(|e| e.into_inner());
        conflict(&self.name, &live, name, replace)?;
        let mut spec = (*live.spec).clone();
        spec.add_hardware(name, table)?;
        let mut all = live.measured.clone();
        all.insert(
            name.to_string(),
            Measured {
                tag: content_id(&[b"measured", table.to_json().as_bytes()]),
                calibration,
                fit,
                kept,
            },
        );
        let info = summary(&self.name, &self.sha256, &spec, &all)?;
        *live = Live {
            spec: Arc::new(spec),
            info,
            measured: all,
        };
        Ok(())
    }

    /// The id of `arch` (canonical) on this supernet: 32 hex digits of SHA-256 over the supernet
    /// file's hash and the canonical arch, so every server of this package agrees.
    pub fn subnet_id(&self, arch: &ArchConfig) -> String {
        content_id(&[self.sha256.as_bytes(), arch.to_json().as_bytes()])
    }
}

/// The conflict of adding `name` to `live` (of the supernet `supernet`): a table of the package
/// is never replaced, a measured hardware only with `replace`.
fn conflict(supernet: &str, live: &Live, name: &str, replace: bool) -> Result<(), ApiError> {
    let exists = live.spec.latency.contains_key(name);
    let measured = live.measured.contains_key(name);
    if exists && !measured {
        return Err(ApiError::Conflict {
            code: "hardware_exists",
            message: format!(
                "`{name}` is a latency table of the package {supernet}: choose another name"
            ),
        });
    }
    if exists && !replace {
        return Err(ApiError::Conflict {
            code: "hardware_exists",
            message: format!("the hardware `{name}` exists: send \"replace\": true to fit it anew"),
        });
    }
    Ok(())
}

/// A hardware added over HTTP, as kept in the cache folder.
#[derive(Debug, Serialize, Deserialize)]
struct KeptHardware {
    fit: FitInfo,
    table: LatencyTable,
}

/// Keep a hardware added over HTTP in `dir/<supernet sha256>/<name>.json` (atomic), so a restart
/// and every replica on the same cache folder serve it.
pub fn keep_hardware(
    dir: &std::path::Path,
    sn: &Served,
    name: &str,
    table: &LatencyTable,
) -> Result<(), ApiError> {
    let fit = sn
        .info()
        .hardware
        .into_iter()
        .find(|h| h.name == name)
        .and_then(|h| h.fit)
        .ok_or_else(|| ApiError::Internal(format!("no fit recorded for `{name}`")))?;
    let folder = dir.join(&sn.sha256);
    std::fs::create_dir_all(&folder)
        .map_err(|e| ApiError::Internal(format!("{}: {e}", folder.display())))?;
    let body = serde_json::to_vec(&KeptHardware {
        fit,
        table: table.clone(),
    })
    .map_err(|e| ApiError::Internal(ofa_space::chain(&e)))?;
    let path = folder.join(format!("{name}.json"));
    ofa_supernet::checkpoint::write_atomic(&path, &body)
        .map_err(|e| ApiError::Internal(format!("{}: {e}", path.display())))
}

/// Serve again the hardware added over HTTP that `dir` keeps for `sn`; a file that does not read
/// is skipped with a warning (and left for an operator to look at).
pub fn restore_hardware(dir: &std::path::Path, sn: &Served) {
    let Ok(rd) = std::fs::read_dir(dir.join(&sn.sha256)) else {
        return;
    };
    let mut files: Vec<PathBuf> = rd
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    for path in files {
        if let Some(name) = path.file_stem().and_then(|n| n.to_str()) {
            restore_one(dir, sn, name);
        }
    }
}

/// Serve the hardware `name` if `dir` keeps it for `sn` (added over HTTP by another replica on
/// the same cache folder since this one started); whether it is served now.
pub fn restore_one(dir: &std::path::Path, sn: &Served, name: &str) -> bool {
    if !crate::hardware::valid_hardware_name(name) {
        return false;
    }
    let path = dir.join(&sn.sha256).join(format!("{name}.json"));
    // the time is read before the bytes: a replacement written in between is read again later
    let Ok(modified) = std::fs::metadata(&path).and_then(|m| m.modified()) else {
        return false;
    };
    let Ok(bytes) = std::fs::read(&path) else {
        return false;
    };
    match serde_json::from_slice::<KeptHardware>(&bytes)
        .map_err(|e| ofa_space::chain(&e))
        .and_then(|k| {
            sn.add_hardware(name, &k.table, true, None, Some(k.fit), Some(modified))
                .map_err(|e| ofa_space::chain(&e))
        }) {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "a kept hardware was not restored");
            false
        }
    }
}

/// A hash of the files of `dir` the predictors are read from (`accuracy.safetensors` and every
/// `latency/*.json`, by name); a file that cannot be read is an error.
fn predictors_hash(dir: &std::path::Path) -> Result<String, String> {
    let mut files: Vec<PathBuf> = latency_tables(dir).into_iter().map(|(_, p)| p).collect();
    files.push(dir.join(ofa_package::ACCURACY_FILE));
    let mut h = Sha256::new();
    for f in files.iter().filter(|f| f.is_file()) {
        let bytes = std::fs::read(f).map_err(|e| format!("{}: {e}", f.display()))?;
        // a listed file always has a name: the default is never taken
        h.update(
            f.file_name()
                .map(|n| n.as_encoded_bytes())
                .unwrap_or_default(),
        );
        h.update(b"\n");
        h.update(Sha256::digest(&bytes));
    }
    Ok(hex16(&h.finalize()))
}

/// The first 16 bytes of a SHA-256 digest, in hex.
fn hex16(digest: &[u8]) -> String {
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// 32 hex digits of SHA-256 over `parts`, each followed by a newline.
pub fn content_id(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
        h.update(b"\n");
    }
    hex16(&h.finalize())
}

/// [`Served::cut`]: 16 hex digits over the device, the recalibration settings, the threads, the
/// calibration images (their file's hash) and the predictors (a cut file's metadata holds the
/// predicted top-1).
pub fn cut_tag(
    device: tch::Device,
    r: Recalibration,
    threads: i32,
    calibration: &str,
    predictors: &str,
) -> String {
    let text = format!(
        "cut/2 device={device:?} images={} batch={} seed={} threads={threads} \
         calibration={calibration} predictors={predictors}",
        r.images, r.batch, r.seed
    );
    content_id(&[text.as_bytes()])[..16].to_string()
}

/// SHA-256 (hex) of `dir`'s calibration images file, or `none` without one.
fn calibration_hash(dir: &std::path::Path) -> Result<String, String> {
    let f = dir.join(ofa_schema::files::CALIBRATION_FILE);
    if !f.is_file() {
        return Ok("none".into());
    }
    let bytes = std::fs::read(&f).map_err(|e| format!("{}: {e}", f.display()))?;
    Ok(ofa_supernet::checkpoint::sha256_hex(&bytes))
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
    measured: &BTreeMap<String, Measured>,
) -> Result<SupernetInfo, ofa_extractor::ExtractError> {
    let s = &spec.space;
    let range = |(min, max): (f64, f64)| Range { min, max };
    let mut hardware = Vec::new();
    for h in spec.hardware_names() {
        hardware.push(HardwareInfo {
            latency_ms: range(spec.range(Metric::LatencyMs, Some(&h))?),
            calibration: measured.get(&h).and_then(|m| m.calibration.clone()),
            fit: measured.get(&h).and_then(|m| m.fit.clone()),
            name: h,
        });
    }
    Ok(SupernetInfo {
        name: name.to_string(),
        sha256: sha256.to_string(),
        space: SpaceInfo {
            name: s.name.clone(),
            family: s.family,
            blocks: s.n_elastic_blocks(),
            ks: s.ks_list.clone(),
            expand: s.expand_ratio_list.clone(),
            depth: s.depth_list.clone(),
            widths: s.width_mult_list.clone(),
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
    /// Time for a request's body to arrive (408 after).
    pub body_timeout: Duration,
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
    /// The SHA-256 of the bearer token, when one is required.
    pub token: Option<[u8; 32]>,
    /// Renders `/metrics`.
    pub metrics: PrometheusHandle,
    /// Where hardware added over HTTP is kept (`--cache-dir`/hardware).
    pub hardware_dir: Option<PathBuf>,
    /// Fine-tuning jobs.
    pub jobs: crate::finetune::Jobs,
}

impl AppState {
    /// Make sure `sn` serves `hardware` if any replica on this cache folder added it: a name this
    /// server does not know is looked up in the kept hardware once (a small file read, only on
    /// that miss) before the request is answered 404.
    pub fn learn_hardware(&self, sn: &Served, hardware: &str) {
        let Some(dir) = &self.hardware_dir else {
            return;
        };
        let stale = match sn.kept_stamp(hardware) {
            Stamp::Unknown => true,
            Stamp::Package => false,
            // one stat per request naming a hardware added over HTTP: a newer kept file is a
            // replacement another replica made
            Stamp::Kept(seen) => {
                let path = dir.join(&sn.sha256).join(format!("{hardware}.json"));
                std::fs::metadata(path)
                    .and_then(|m| m.modified())
                    .is_ok_and(|now| Some(now) != seen)
            }
        };
        if stale {
            restore_one(dir, sn, hardware);
        }
    }

    /// The supernet called `name`, or a 404 naming the ones there are.
    pub fn supernet(&self, name: &str) -> Result<&Served, ApiError> {
        self.supernets.get(name).ok_or_else(|| ApiError::NotFound {
            code: "unknown_supernet",
            message: format!("unknown supernet `{name}`"),
            available: Some(self.supernets.keys().cloned().collect()),
        })
    }
}
