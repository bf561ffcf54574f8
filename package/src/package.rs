//! A supernet package: the folder `ofa train` writes at the end of a run and that specialisation
//! reads. [`Package::open`] loads the supernet (hashing its file once), the calibration images and
//! the card; nothing is read again afterwards.

use std::path::{Path, PathBuf};

use ofa_schema::run::RunCard;
use ofa_space::{ArchConfig, SearchSpace};
use ofa_supernet::checkpoint::read_safetensors;
use ofa_supernet::{Subnet, Supernet, SupernetCheckpoint};
use tch::{Device, Kind};

use crate::augment::AugmentConfig;
use crate::measure::{recalibrated, Recalibration};
use crate::{PackageError, Split};

pub use ofa_schema::files::{
    ACCURACY_FILE, CALIBRATION_FILE, CARD_FILE, LATENCY_DIR, SUPERNET_FILE,
};

/// An opened package.
#[derive(Debug)]
pub struct Package {
    /// The folder.
    pub dir: PathBuf,
    /// The supernet checkpoint (with the SHA-256 of its file).
    pub checkpoint: SupernetCheckpoint,
    /// BN-recalibration images (training images, uint8 NCHW) and labels.
    pub calib: Split,
    /// Augmentation used for recalibration and the eval transform.
    pub augment: AugmentConfig,
    /// `card.json`'s text, checked against the schema at open (`None`: the package has none).
    card: Option<String>,
}

impl Package {
    /// Open `dir` (supernet on `device`).
    pub fn open(dir: &Path, device: Device) -> Result<Package, PackageError> {
        let not = |reason: &str| PackageError::NotAPackage {
            dir: dir.to_path_buf(),
            reason: reason.into(),
        };
        if !dir.is_dir() {
            return Err(not("not a package folder (it does not exist or is a file)"));
        }
        let sn = dir.join(SUPERNET_FILE);
        if !sn.is_file() {
            return Err(not("no supernet.safetensors: not a supernet package"));
        }
        let checkpoint = Supernet::load(&sn, device)?;
        let cal = dir.join(CALIBRATION_FILE);
        if !cal.is_file() {
            return Err(not("no calibration.safetensors (BN recalibration images)"));
        }
        let f = read_safetensors(&cal)?;
        let get = |n: &str| {
            f.tensors
                .get(n)
                .map(|t| t.shallow_clone())
                .ok_or_else(|| PackageError::bad(&cal, format!("tensor `{n}` is missing")))
        };
        let images = get("images")?;
        let labels = get("labels")?;
        if images.dim() != 4 || images.kind() != Kind::Uint8 {
            return Err(PackageError::bad(
                &cal,
                "`images` must be uint8 [N, C, H, W]",
            ));
        }
        if labels.dim() != 1 || labels.size()[0] != images.size()[0] {
            return Err(PackageError::bad(
                &cal,
                format!(
                    "`labels` must be [N] with N = {} images, found shape {:?}",
                    images.size()[0],
                    labels.size()
                ),
            ));
        }
        if images.size()[0] == 0 {
            return Err(PackageError::NoCalibrationImages { path: cal });
        }
        let augment = match f.metadata.get("augment") {
            Some(j) => serde_json::from_str(j)
                .map_err(|e| PackageError::bad(&cal, format!("metadata `augment`: {e}")))?,
            None => return Err(PackageError::bad(&cal, "metadata `augment` is missing")),
        };
        let card_path = dir.join(CARD_FILE);
        let card = if card_path.exists() {
            let text = std::fs::read_to_string(&card_path)
                .map_err(|e| PackageError::bad(&card_path, e.to_string()))?;
            serde_json::from_str::<RunCard<serde::de::IgnoredAny>>(&text)
                .map_err(|e| PackageError::bad(&card_path, e.to_string()))?;
            Some(text)
        } else {
            None
        };
        Ok(Package {
            dir: dir.to_path_buf(),
            checkpoint,
            calib: Split { images, labels },
            augment,
            card,
        })
    }

    /// The run card, its recipe read as `R` (the trainer's `Recipe`); `None` when the package has
    /// no card (an imported supernet).
    pub fn card<R: serde::de::DeserializeOwned>(&self) -> Result<Option<RunCard<R>>, PackageError> {
        let Some(text) = &self.card else {
            return Ok(None);
        };
        serde_json::from_str(text)
            .map(Some)
            .map_err(|e| PackageError::bad(self.dir.join(CARD_FILE), e.to_string()))
    }

    /// The package's name: its folder name.
    pub fn name(&self) -> String {
        package_name(&self.dir)
    }

    /// The supernet.
    pub fn net(&self) -> &Supernet {
        &self.checkpoint.net
    }

    /// Its search space.
    pub fn space(&self) -> &SearchSpace {
        self.checkpoint.net.space()
    }

    /// SHA-256 (hex) of `supernet.safetensors`, computed once at [`Package::open`].
    pub fn supernet_sha256(&self) -> &str {
        &self.checkpoint.sha256
    }

    /// `accuracy.safetensors` in the package.
    pub fn accuracy_predictor(&self) -> PathBuf {
        self.dir.join(ACCURACY_FILE)
    }

    /// `latency/` in the package.
    pub fn latency_dir(&self) -> PathBuf {
        self.dir.join(LATENCY_DIR)
    }

    /// Cut `arch` out of the supernet and recalibrate its BN on the package's calibration images.
    pub fn recalibrated(
        &self,
        arch: &ArchConfig,
        r: &Recalibration,
    ) -> Result<Subnet, PackageError> {
        recalibrated(self.net(), arch, &self.calib, &self.augment, r)
    }
}

/// A package's name: its folder name (`.` and `..` resolved).
pub fn package_name(dir: &Path) -> String {
    let canon = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    canon
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "package".into())
}

/// The latency tables of the package in `dir`: `(hardware, path)` of every `latency/*.json`,
/// sorted by name (an absent folder gives none).
pub fn latency_tables(dir: &Path) -> Vec<(String, PathBuf)> {
    let mut tables = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir.join(LATENCY_DIR)) {
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
    tables
}
