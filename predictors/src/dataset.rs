//! Accuracy datasets: one JSON line per measured subnet, and the resumable builder.
//!
//! ```json
//! {"arch": {"ks": [..20], "e": [..20], "d": [..5], "r": 32}, "resolution": 32, "top1": 87.25,
//!  "macs": 5012345, "params": 701234, "seconds": 1.8, "calibration_images": 2000, "eval_images": 10000}
//! ```
//! `top1` is in percent. The builder draws archs from a seeded sequence, skips those already in
//! the file (compared as canonical archs), and appends each result as soon as it is measured, so
//! an interrupted build resumes where it stopped; a torn last line is cut off first.

use std::collections::HashSet;
use std::io::Write;
use std::path::Path;

use ofa_space::{cost, sample, ArchConfig, Choices, SearchSpace};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::PredictorError;

/// One measured subnet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// The arch (resolution included).
    pub arch: ArchConfig,
    /// Its resolution (same as `arch.r`, for readers of the file).
    pub resolution: u32,
    /// Measured top-1, percent.
    pub top1: f64,
    /// Analytic MACs.
    pub macs: u64,
    /// Parameters.
    pub params: u64,
    /// Seconds spent measuring (recalibration + evaluation).
    pub seconds: f64,
    /// Images used for BN recalibration.
    #[serde(default)]
    pub calibration_images: usize,
    /// Images evaluated.
    #[serde(default)]
    pub eval_images: usize,
}

/// Read a dataset file. Errors name the line: invalid JSON (`NaN` is not JSON), a non-finite or
/// out-of-range top-1, or an empty file.
pub fn read(path: &Path) -> Result<Vec<Record>, PredictorError> {
    let text = std::fs::read_to_string(path).map_err(|e| PredictorError::io(path, e))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = |reason: String| PredictorError::Line {
            path: path.to_path_buf(),
            line: i + 1,
            reason,
        };
        let r: Record = serde_json::from_str(line).map_err(|e| bad(e.to_string()))?;
        if !r.top1.is_finite() || !(0.0..=100.0).contains(&r.top1) {
            return Err(bad(format!("top1 = {} is not a percentage", r.top1)));
        }
        if r.arch.r != r.resolution {
            return Err(bad(format!(
                "resolution {} differs from the arch's r = {}",
                r.resolution, r.arch.r
            )));
        }
        out.push(r);
    }
    if out.is_empty() {
        return Err(PredictorError::Data(format!(
            "{}: the dataset is empty",
            path.display()
        )));
    }
    Ok(out)
}

/// What one measurement returns: top-1 in percent and the image counts used.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Measured {
    /// Top-1, percent.
    pub top1: f64,
    /// Recalibration images.
    pub calibration_images: usize,
    /// Evaluated images.
    pub eval_images: usize,
}

/// Progress of a build, given to the callback after each arch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Progress {
    /// Archs in the file now.
    pub done: usize,
    /// Archs wanted.
    pub target: usize,
    /// Whether the last one was skipped (already measured).
    pub skipped: bool,
}

/// Bring `path` to `n` distinct archs of `space` (over `choices`), measuring the missing ones
/// with `measure`. Archs already in the file are kept; the draw sequence depends only on `seed`,
/// so a rerun continues the same sequence. Returns the number measured by this call.
pub fn build<E>(
    space: &SearchSpace,
    choices: &Choices,
    path: &Path,
    n: usize,
    seed: u64,
    mut measure: impl FnMut(&ArchConfig) -> Result<Measured, E>,
    mut progress: impl FnMut(Progress),
) -> Result<usize, BuildError<E>> {
    choices.validate(space).map_err(PredictorError::from)?;
    let mut seen = HashSet::new();
    if path.exists() {
        cut_torn_tail(path)?;
        let text = std::fs::read_to_string(path).map_err(|e| PredictorError::io(path, e))?;
        if !text.trim().is_empty() {
            for r in read(path)? {
                r.arch.validate(space).map_err(|e| PredictorError::Line {
                    path: path.to_path_buf(),
                    line: seen.len() + 1,
                    reason: format!("arch does not fit the supernet's space: {e}"),
                })?;
                seen.insert(r.arch.canonical(space));
            }
        }
    }
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| PredictorError::io(path, e))?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut measured = 0;
    // A space smaller than n would loop forever: stop after many fruitless draws.
    let mut misses = 0usize;
    while seen.len() < n {
        let a = sample(space, choices, &mut rng).canonical(space);
        if seen.contains(&a) {
            misses += 1;
            if misses > 100_000 {
                return Err(PredictorError::Data(format!(
                    "only {} distinct archs found, {n} asked",
                    seen.len()
                ))
                .into());
            }
            continue;
        }
        misses = 0;
        let t = std::time::Instant::now();
        let m = measure(&a).map_err(BuildError::Measure)?;
        let c = cost(space, &a);
        let rec = Record {
            resolution: a.r,
            arch: a.clone(),
            top1: m.top1,
            macs: c.macs,
            params: c.params,
            seconds: t.elapsed().as_secs_f64(),
            calibration_images: m.calibration_images,
            eval_images: m.eval_images,
        };
        let mut line = ofa_schema::to_json(&rec);
        line.push('\n');
        file.write_all(line.as_bytes())
            .and_then(|_| file.flush())
            .map_err(|e| PredictorError::io(path, e))?;
        seen.insert(a);
        measured += 1;
        progress(Progress {
            done: seen.len(),
            target: n,
            skipped: false,
        });
    }
    file.sync_all().map_err(|e| PredictorError::io(path, e))?;
    Ok(measured)
}

/// Drop a last line without its newline (a write cut by a kill).
fn cut_torn_tail(path: &Path) -> Result<(), PredictorError> {
    let bytes = std::fs::read(path).map_err(|e| PredictorError::io(path, e))?;
    if bytes.is_empty() || bytes.ends_with(b"\n") {
        return Ok(());
    }
    let keep = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| PredictorError::io(path, e))?;
    f.set_len(keep as u64)
        .map_err(|e| PredictorError::io(path, e))?;
    Ok(())
}

/// A build failed in the file handling or in the measurement.
#[derive(Debug, thiserror::Error)]
pub enum BuildError<E> {
    /// The dataset file or the space.
    #[error(transparent)]
    Predictor(#[from] PredictorError),
    /// The measurement callback.
    #[error("measurement failed: {0}")]
    Measure(E),
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn build_resumes_and_skips_measured_archs() {
        let s = SearchSpace::preset("ofa-mbv3-tiny").unwrap();
        let c = Choices::all(&s);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("acc.jsonl");
        let fake = |a: &ArchConfig| -> Result<Measured, String> {
            Ok(Measured {
                top1: 50.0 + a.d.iter().sum::<u32>() as f64,
                calibration_images: 10,
                eval_images: 20,
            })
        };
        assert_eq!(build(&s, &c, &p, 5, 1, fake, |_| {}).unwrap(), 5);
        let first = read(&p).unwrap();
        // tear the tail as a kill would, then resume to 8
        let mut bytes = std::fs::read(&p).unwrap();
        bytes.extend_from_slice(b"{\"arch\": {\"ks\"");
        std::fs::write(&p, bytes).unwrap();
        let mut calls = 0;
        let n = build(
            &s,
            &c,
            &p,
            8,
            1,
            |a: &ArchConfig| {
                calls += 1;
                fake(a)
            },
            |_| {},
        )
        .unwrap();
        assert_eq!((n, calls), (3, 3));
        let all = read(&p).unwrap();
        assert_eq!(all.len(), 8);
        assert_eq!(&all[..5], &first[..]);
        let distinct: HashSet<_> = all.iter().map(|r| r.arch.clone()).collect();
        assert_eq!(distinct.len(), 8);
        // nothing to do
        assert_eq!(build(&s, &c, &p, 8, 1, fake, |_| {}).unwrap(), 0);
    }

    #[test]
    fn bad_lines_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("acc.jsonl");
        std::fs::write(&p, "").unwrap();
        assert!(read(&p).unwrap_err().to_string().contains("empty"));
        let ok = r#"{"arch":{"ks":[3],"e":[3],"d":[1],"r":32},"resolution":32,"top1":50.0,"macs":1,"params":1,"seconds":0.1}"#;
        std::fs::write(&p, format!("{ok}\n{}\n", ok.replace("50.0", "NaN"))).unwrap();
        let e = read(&p).unwrap_err().to_string();
        assert!(e.contains("acc.jsonl:2"), "{e}");
        std::fs::write(&p, format!("{}\n", ok.replace("50.0", "150.0"))).unwrap();
        let e = read(&p).unwrap_err().to_string();
        assert!(e.contains(":1") && e.contains("top1 = 150"), "{e}");
    }
}
