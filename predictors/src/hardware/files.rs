//! The files of onboarding: a probe folder's `manifest.json`, the device's `measurements.csv`
//! (`id,latency_ms`) and the timing script's `environment.json`.

use std::collections::HashMap;
use std::path::Path;

use ofa_space::ArchConfig;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::fit::Measurement;
use super::HardwareError;

/// Read a JSON file of type `T` (`what` names it in the error).
fn read_json<T: DeserializeOwned>(path: &Path, what: &str) -> Result<T, HardwareError> {
    let bad = |reason: String| HardwareError::File {
        path: path.to_path_buf(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    serde_json::from_str(&text).map_err(|e| bad(format!("not {what} ({e})")))
}

/// `archs` (id → arch). Every bad line is reported at once: a malformed line, an unknown id, a
/// duplicate id, a latency that is not a positive finite number.
/// Read `id,latency_ms` lines (a header line is allowed; `#` starts a comment) for the subnets of
/// `archs` (id → arch). Every bad line is reported at once: a malformed line, an unknown id, a
/// duplicate id, a latency that is not a positive finite number.
pub fn read_measurements(
    path: &Path,
    archs: &HashMap<String, ArchConfig>,
) -> Result<Vec<Measurement>, HardwareError> {
    let text = std::fs::read_to_string(path).map_err(|e| HardwareError::File {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    parse_measurements(&text, archs).map_err(|problems| HardwareError::Measurements {
        path: path.to_path_buf(),
        problems,
    })
}

/// [`read_measurements`] on text; the bad lines as (1-based line, reason).
pub fn parse_measurements(
    text: &str,
    archs: &HashMap<String, ArchConfig>,
) -> Result<Vec<Measurement>, Vec<(usize, String)>> {
    let mut out = Vec::new();
    let mut problems = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        if fields.len() != 2 {
            problems.push((n, format!("expected `id,latency_ms`, got `{line}`")));
            continue;
        }
        let (id, v) = (fields[0], fields[1]);
        if out.is_empty() && problems.is_empty() && id == "id" && v == "latency_ms" {
            continue; // the header
        }
        let Some(arch) = archs.get(id) else {
            problems.push((n, format!("unknown id `{id}` (not in the probe manifest)")));
            continue;
        };
        let ms = match v.parse::<f64>() {
            Ok(ms) if ms.is_finite() && ms > 0.0 => ms,
            Ok(ms) => {
                problems.push((
                    n,
                    format!("latency {ms} ms of `{id}` is not a positive finite number"),
                ));
                continue;
            }
            Err(_) => {
                problems.push((n, format!("latency `{v}` of `{id}` is not a number")));
                continue;
            }
        };
        if let Some(first) = seen.insert(id.to_string(), n) {
            problems.push((n, format!("duplicate id `{id}` (first on line {first})")));
            continue;
        }
        out.push(Measurement {
            id: id.to_string(),
            arch: arch.clone(),
            latency_ms: ms,
        });
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

/// `format` of a probe manifest.
pub const MANIFEST_FORMAT: &str = "ofa-probes/1";

/// `manifest.json` of a probe folder: what `ofa hardware probes` exported, for the timing script
/// and for `ofa hardware fit`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeManifest {
    /// [`MANIFEST_FORMAT`].
    pub format: String,
    /// The package's name.
    pub package: String,
    /// SHA-256 of the package's supernet file.
    pub supernet_sha256: String,
    /// The search space's name.
    pub space: String,
    /// The base table (hardware name) the probes were spread by, if any.
    pub base: Option<String>,
    /// `spread` or `random`.
    pub selection: String,
    /// Seed of the selection.
    pub seed: u64,
    /// The probes.
    pub probes: Vec<Probe>,
}

/// One probe subnet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Probe {
    /// Its id (the CSV's first column).
    pub id: String,
    /// Its ONNX file, relative to the manifest.
    pub file: String,
    /// The subnet.
    pub arch: ArchConfig,
    /// The model's input shape, `[1, C, R, R]`.
    pub input_shape: [u32; 4],
    /// Analytic MACs, millions.
    pub macs_m: f64,
    /// Parameters, millions.
    pub params_m: f64,
    /// The base table's prediction, ms.
    pub base_latency_ms: Option<f64>,
}

impl ProbeManifest {
    /// Read a manifest.
    pub fn load(path: &Path) -> Result<ProbeManifest, HardwareError> {
        let m: ProbeManifest = read_json(path, "a probe manifest")?;
        if m.format != MANIFEST_FORMAT {
            return Err(HardwareError::File {
                path: path.to_path_buf(),
                reason: format!("format `{}`, expected `{MANIFEST_FORMAT}`", m.format),
            });
        }
        Ok(m)
    }

    /// Probe id → arch.
    pub fn archs(&self) -> HashMap<String, ArchConfig> {
        self.probes
            .iter()
            .map(|p| (p.id.clone(), p.arch.clone()))
            .collect()
    }
}

/// `environment.json` that the timing script writes beside its measurements.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Environment {
    /// `onnxruntime`.
    pub runtime: String,
    /// Its version.
    pub version: String,
    /// Intra-op threads.
    pub threads: u32,
    /// CPU model.
    pub cpu: String,
}

impl Environment {
    /// Read one.
    pub fn load(path: &Path) -> Result<Environment, HardwareError> {
        read_json(path, "an environment file")
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use ofa_space::SearchSpace;

    #[test]
    fn csv_lines_are_refused_one_by_one() {
        let space = SearchSpace::preset("ofa-mbv3-tiny").unwrap();
        let a = ArchConfig::smallest(&space);
        let archs: HashMap<String, ArchConfig> =
            [("p00".to_string(), a.clone()), ("p01".to_string(), a)].into();
        let ok = parse_measurements("id,latency_ms\np00,0.5\np01, 1.25 # fine\n", &archs).unwrap();
        assert_eq!(ok.len(), 2);
        assert_eq!(ok[1].latency_ms, 1.25);
        let bad = parse_measurements(
            "id,latency_ms\np00,0.5\np00,0.6\nzz,1\np01,-1\np01,NaN\np01,inf\np01,x\nnonsense\n",
            &archs,
        )
        .unwrap_err();
        let lines: Vec<usize> = bad.iter().map(|(l, _)| *l).collect();
        assert_eq!(lines, vec![3, 4, 5, 6, 7, 8, 9], "{bad:?}");
        assert!(bad[0].1.contains("duplicate id `p00` (first on line 2)"));
        assert!(bad[1].1.contains("unknown id `zz`"));
        assert!(bad[2].1.contains("not a positive finite number"));
        assert!(bad[5].1.contains("not a number"));
        assert!(bad[6].1.contains("expected `id,latency_ms`"));
    }
}
