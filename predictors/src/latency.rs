//! Latency lookup tables.
//!
//! JSON format (`latency/<hardware>.json`):
//! ```json
//! {"format": "ofa-latency-table/1",
//!  "meta": {"device": "Samsung Note10 (TF-Lite)", "batch": 1, "threads": null,
//!           "libraries": {...}, "date": "...", "source": "..."},
//!  "tables": {"160": {"Conv-input:160x160x3-output:80x80x24": {"count": 498, "mean": 0.4955, "std": 0.0102}, ...},
//!             "176": {...}}}
//! ```
//! Keys are those of [`ofa_space::latency::layer_keys`]; values are milliseconds. A subnet's
//! predicted latency is the sum of the `mean` of its layers at its resolution.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ofa_search::{Additive, Metric};
use ofa_space::latency::layer_keys;
use ofa_space::{ArchConfig, SearchSpace};
use serde::{Deserialize, Serialize};

/// `format` of a latency table file.
pub const FORMAT: &str = "ofa-latency-table/1";

/// One measured layer.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// Number of measurements.
    pub count: u64,
    /// Mean time, ms.
    pub mean: f64,
    /// Standard deviation, ms.
    pub std: f64,
}

/// Where and how a table was measured.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Meta {
    /// Device description.
    pub device: String,
    /// Batch size of the measurements.
    #[serde(default)]
    pub batch: Option<u32>,
    /// Threads used.
    #[serde(default)]
    pub threads: Option<u32>,
    /// Library versions.
    #[serde(default)]
    pub libraries: BTreeMap<String, String>,
    /// Measurement date.
    #[serde(default)]
    pub date: Option<String>,
    /// Origin (e.g. the imported files).
    #[serde(default)]
    pub source: Option<String>,
    /// Whole-network correction fitted by `ofa profile validate --write-correction`: a subnet's
    /// latency is `a · Σ layers + b` (ms). Absent: the plain sum, as the reference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correction: Option<Correction>,
    /// Runtime the measurements were taken in (`libtorch`, `onnxruntime`), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<String>,
    /// How a table made by `ofa hardware fit` was fitted: its model, weights and leave-one-out
    /// errors on the measurements.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fit: Option<crate::hardware::FitReport>,
}

/// A linear correction of the per-layer sum.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Correction {
    /// Scale.
    pub a: f64,
    /// Offset, ms.
    pub b: f64,
}

/// A latency lookup table: per resolution, per layer key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LatencyTable {
    /// [`FORMAT`].
    pub format: String,
    /// Provenance.
    pub meta: Meta,
    /// Resolution → layer key → entry.
    pub tables: BTreeMap<u32, BTreeMap<String, Entry>>,
}

/// Why a table cannot be read or used.
#[derive(Debug, thiserror::Error)]
pub enum LatencyError {
    /// Unreadable or malformed file.
    #[error("{path}: {reason}")]
    BadFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The table has no entry for a resolution.
    #[error(
        "the latency table has no entries for resolution {resolution} (it covers {available:?})"
    )]
    MissingResolution {
        /// Asked-for resolution.
        resolution: u32,
        /// Resolutions present.
        available: Vec<u32>,
    },
    /// A layer of the arch is not in the table.
    #[error("the latency table has no entry `{key}` (needed by arch {arch})")]
    MissingLayer {
        /// The key.
        key: String,
        /// The arch, as JSON.
        arch: String,
    },
}

/// One reference lookup-table YAML file: layer key → `{count, mean, std}`, every mean a finite
/// non-negative time.
fn read_reference_yaml(p: &Path) -> Result<BTreeMap<String, Entry>, LatencyError> {
    let text = std::fs::read_to_string(p).map_err(|e| bad(p, e.to_string()))?;
    let t: BTreeMap<String, Entry> = serde_norway::from_str(&text)
        .map_err(|e| bad(p, format!("not a reference lookup table ({e})")))?;
    if let Some((k, e)) = t
        .iter()
        .find(|(_, e)| !(e.mean.is_finite() && e.mean >= 0.0))
    {
        return Err(bad(p, format!("entry `{k}` has mean {}", e.mean)));
    }
    Ok(t)
}

fn bad(path: &Path, reason: impl Into<String>) -> LatencyError {
    LatencyError::BadFile {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

impl LatencyTable {
    /// The table as a compiled additive model of `space`, over the resolutions it covers, with its
    /// linear correction. Entries it lacks are reported, with the arch that needs them, when an
    /// arch needs them ([`Additive::predict`]).
    pub fn additive(&self, space: &SearchSpace) -> Additive {
        let covered: Vec<u32> = space
            .resolutions
            .iter()
            .copied()
            .filter(|r| self.tables.contains_key(r))
            .collect();
        let correction = self.meta.correction.map_or((1.0, 0.0), |c| (c.a, c.b));
        Additive::from_lookup(space, &covered, Metric::LatencyMs, correction, |r, key| {
            self.tables.get(&r).and_then(|t| t.get(key)).map(|e| e.mean)
        })
    }

    /// Import the reference's `{R}_lookup_table.yaml` files from a directory (one file per
    /// resolution).
    pub fn import_reference_dir(dir: &Path, device: &str) -> Result<LatencyTable, LatencyError> {
        let rd = std::fs::read_dir(dir).map_err(|e| bad(dir, e.to_string()))?;
        let mut tables = BTreeMap::new();
        for entry in rd.filter_map(Result::ok) {
            let p = entry.path();
            let Some(name) = p.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            let Some(r) = name
                .strip_suffix("_lookup_table.yaml")
                .and_then(|r| r.parse::<u32>().ok())
            else {
                continue;
            };
            tables.insert(r, read_reference_yaml(&p)?);
        }
        if tables.is_empty() {
            return Err(bad(dir, "no {R}_lookup_table.yaml files"));
        }
        Ok(Self::imported(dir, device, tables))
    }

    /// Import one reference lookup-table YAML file: a `{R}_lookup_table.yaml`, or a table of one
    /// resolution under another name (the reference's default ProxylessNAS table,
    /// `mobile_trim.yaml`), whose resolution its first conv's key gives
    /// (`Conv-input:RxRx…`).
    pub fn import_reference_file(path: &Path, device: &str) -> Result<LatencyTable, LatencyError> {
        let t = read_reference_yaml(path)?;
        let from_name = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix("_lookup_table.yaml"))
            .and_then(|r| r.parse::<u32>().ok());
        let from_key = || {
            t.keys().find_map(|k| {
                let rest = k.strip_prefix("Conv-input:")?;
                rest.split('x').next()?.parse::<u32>().ok()
            })
        };
        let r = from_name.or_else(from_key).ok_or_else(|| {
            bad(
                path,
                "no resolution: neither `{R}_lookup_table.yaml` nor a first conv key \
                 `Conv-input:RxRx…`",
            )
        })?;
        Ok(Self::imported(path, device, BTreeMap::from([(r, t)])))
    }

    fn imported(
        from: &Path,
        device: &str,
        tables: BTreeMap<u32, BTreeMap<String, Entry>>,
    ) -> LatencyTable {
        LatencyTable {
            format: FORMAT.to_string(),
            meta: Meta {
                device: device.to_string(),
                batch: Some(1),
                source: Some(format!("imported from {}", from.display())),
                ..Meta::default()
            },
            tables,
        }
    }

    /// Read a table: our JSON, a reference YAML file (`.yaml`/`.yml`, see
    /// [`LatencyTable::import_reference_file`]) or a folder of `{R}_lookup_table.yaml`; `device`
    /// names an imported one.
    pub fn load_any(path: &Path, device: &str) -> Result<LatencyTable, LatencyError> {
        let yaml = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e.eq_ignore_ascii_case("yaml") || e.eq_ignore_ascii_case("yml"));
        if path.is_dir() {
            Self::import_reference_dir(path, device)
        } else if yaml {
            Self::import_reference_file(path, device)
        } else {
            Self::load(path)
        }
    }

    /// Read a JSON table.
    pub fn load(path: &Path) -> Result<LatencyTable, LatencyError> {
        let text = std::fs::read_to_string(path).map_err(|e| bad(path, e.to_string()))?;
        let t: LatencyTable = serde_json::from_str(&text)
            .map_err(|e| bad(path, format!("not a latency table ({e})")))?;
        if t.format != FORMAT {
            return Err(bad(
                path,
                format!("format `{}`, expected `{FORMAT}`", t.format),
            ));
        }
        Ok(t)
    }

    /// JSON text of the table.
    pub fn to_json(&self) -> String {
        ofa_schema::to_json_pretty(self)
    }

    /// Predicted latency (ms) of `arch` at its resolution: the sum of its layers' means (with the
    /// table's correction, if it has one).
    pub fn predict(&self, space: &SearchSpace, arch: &ArchConfig) -> Result<f64, LatencyError> {
        let table = self
            .tables
            .get(&arch.r)
            .ok_or_else(|| LatencyError::MissingResolution {
                resolution: arch.r,
                available: self.tables.keys().copied().collect(),
            })?;
        let mut total = 0.0;
        for (_, key) in layer_keys(space, arch) {
            match table.get(&key) {
                Some(e) => total += e.mean,
                None => {
                    return Err(LatencyError::MissingLayer {
                        key,
                        arch: arch.to_json(),
                    })
                }
            }
        }
        Ok(match self.meta.correction {
            Some(c) => c.a * total + c.b,
            None => total,
        })
    }
}
