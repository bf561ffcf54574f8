//! A supernet package: the folder `ofa train` writes at the end of a run and that specialisation
//! reads (`supernet.safetensors`, `calibration.safetensors`, `card.json`, and later
//! `accuracy.safetensors` and `latency/<hardware>.json`).
//!
//! [`Package::open`] loads the supernet and the calibration images; [`Package::splits`] rebuilds
//! the run's held-out and test splits from the dataset named in the card (or another path), and
//! [`measure`] is the one way subnets are scored: extract, recalibrate BN, top-1.

use std::path::{Path, PathBuf};

use ofa_space::{ArchConfig, SearchSpace};
use ofa_supernet::checkpoint::read_safetensors;
use ofa_supernet::{Supernet, SupernetCheckpoint};
use serde_json::Value;
use tch::{Device, Kind};

use crate::augment::AugmentConfig;
use crate::data::Split;
use crate::eval::{calibrate, top1};
use crate::recipe::Recipe;
use crate::run::{load_splits, Splits, TrainError};

/// An opened package.
#[derive(Debug)]
pub struct Package {
    /// The folder.
    pub dir: PathBuf,
    /// The supernet checkpoint.
    pub checkpoint: SupernetCheckpoint,
    /// BN-recalibration images (training images, uint8 NCHW) and labels.
    pub calib: Split,
    /// Augmentation used for recalibration and the eval transform.
    pub augment: AugmentConfig,
    /// `card.json`.
    pub card: Value,
}

fn bad(path: &Path, reason: impl Into<String>) -> TrainError {
    TrainError::Run {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

impl Package {
    /// Open `dir` (supernet on `device`).
    pub fn open(dir: &Path, device: Device) -> Result<Package, TrainError> {
        if !dir.is_dir() {
            return Err(bad(
                dir,
                "not a package folder (it does not exist or is a file)",
            ));
        }
        let sn = dir.join("supernet.safetensors");
        if !sn.is_file() {
            return Err(bad(dir, "no supernet.safetensors: not a supernet package"));
        }
        let checkpoint = Supernet::load(&sn, device)?;
        let cal = dir.join("calibration.safetensors");
        if !cal.is_file() {
            return Err(bad(
                dir,
                "no calibration.safetensors (BN recalibration images)",
            ));
        }
        let f = read_safetensors(&cal)?;
        let get = |n: &str| {
            f.tensors
                .get(n)
                .map(|t| t.shallow_clone())
                .ok_or_else(|| bad(&cal, format!("tensor `{n}` is missing")))
        };
        let images = get("images")?;
        let labels = get("labels")?;
        if images.dim() != 4 || images.kind() != Kind::Uint8 {
            return Err(bad(&cal, "`images` must be uint8 [N, C, H, W]"));
        }
        let augment = match f.metadata.get("augment") {
            Some(j) => serde_json::from_str(j)
                .map_err(|e| bad(&cal, format!("metadata `augment`: {e}")))?,
            None => return Err(bad(&cal, "metadata `augment` is missing")),
        };
        let card_path = dir.join("card.json");
        let card = match std::fs::read_to_string(&card_path) {
            Ok(t) => serde_json::from_str(&t)
                .map_err(|e| bad(&card_path, format!("not valid JSON: {e}")))?,
            Err(_) => Value::Null,
        };
        Ok(Package {
            dir: dir.to_path_buf(),
            checkpoint,
            calib: Split { images, labels },
            augment,
            card,
        })
    }

    /// The supernet.
    pub fn net(&self) -> &Supernet {
        &self.checkpoint.net
    }

    /// Its search space.
    pub fn space(&self) -> &SearchSpace {
        self.checkpoint.net.space()
    }

    /// The recipe the package was trained with (from the card).
    pub fn recipe(&self) -> Result<Recipe, TrainError> {
        let r = self.card.get("recipe").ok_or_else(|| {
            bad(
                &self.dir.join("card.json"),
                "no `recipe`: cannot rebuild the held-out split",
            )
        })?;
        serde_json::from_value(r.clone())
            .map_err(|e| bad(&self.dir.join("card.json"), format!("`recipe`: {e}")))
    }

    /// The run's splits, rebuilt from `data` or the dataset named in the card.
    pub fn splits(&self, data: Option<&Path>) -> Result<Splits, TrainError> {
        let recipe = self.recipe()?;
        let dir = match data {
            Some(d) => d.to_path_buf(),
            None => PathBuf::from(
                self.card
                    .get("dataset")
                    .and_then(Value::as_str)
                    .ok_or_else(|| {
                        bad(
                            &self.dir.join("card.json"),
                            "no `dataset`: give the data path",
                        )
                    })?,
            ),
        };
        load_splits(&recipe, &dir)
    }

    /// `accuracy.safetensors` in the package.
    pub fn accuracy_predictor(&self) -> PathBuf {
        self.dir.join("accuracy.safetensors")
    }

    /// `latency/` in the package.
    pub fn latency_dir(&self) -> PathBuf {
        self.dir.join("latency")
    }
}

/// How subnets are measured.
#[derive(Debug, Clone)]
pub struct MeasureOptions {
    /// Calibration images used (at most the package's).
    pub calibration_images: usize,
    /// Images evaluated (at most the split's).
    pub eval_images: usize,
    /// Batch size.
    pub batch: usize,
    /// Seed of the recalibration augmentation.
    pub seed: u64,
}

/// Extract `arch` from `net`, recalibrate its BN on `calib`, score top-1 (fraction) on `split`.
pub fn measure(
    net: &Supernet,
    arch: &ArchConfig,
    calib: &Split,
    split: &Split,
    augment: &AugmentConfig,
    o: &MeasureOptions,
) -> Result<f64, TrainError> {
    let sub = net.extract(arch)?;
    let n = o.calibration_images.min(calib.len()).max(1);
    let c = Split {
        images: calib.images.narrow(0, 0, n as i64),
        labels: calib.labels.narrow(0, 0, n as i64),
    };
    calibrate(&sub, &c, arch.r, augment, o.batch, o.seed)?;
    Ok(top1(&sub, split, arch.r, augment, o.batch, o.eval_images)?)
}
