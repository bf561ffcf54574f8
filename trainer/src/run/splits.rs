//! The data of a run, split as the run splits it: the training images (in memory or streamed),
//! the held-out validation split, the test split and the BN-recalibration subset.

use std::path::Path;
use std::sync::Arc;

use ofa_package::measure::{subset, top1};
use ofa_space::SearchSpace;

use super::{run_err, TrainError};
use crate::data::{is_image_folder, load_any, DataError, Split};
use crate::folder::{scan, FolderStream, JpegDecoder};
use crate::loader::{mix, Stream, TrainData};
use crate::recipe::{DataLoading, Recipe, RecipeError, AUTO_STREAM_BYTES};

/// The data of a run, split as the run splits it.
#[derive(Debug)]
pub struct Splits {
    /// Training images (the holdout removed), in memory or streamed.
    pub train: TrainData,
    /// The held-out validation split (taken from train, seeded).
    pub val: Split,
    /// The test split, where the format has one.
    pub test: Option<EvalSet>,
    /// The BN-recalibration subset of `train`.
    pub calib: Split,
    /// Classes in the dataset.
    pub n_classes: usize,
}

/// An evaluation split: decoded in memory, or an image folder's file list decoded a chunk at a
/// time when it is scored (ImageNet's 50,000 validation images would take 9.8 GB at 256 px).
#[derive(Debug)]
pub enum EvalSet {
    /// In memory.
    Memory(Split),
    /// Image files, decoded at `size` (short side resized, centre-cropped) when used.
    Folder {
        /// The files.
        stream: Arc<FolderStream>,
        /// Decoded size.
        size: u32,
    },
}

/// Images an [`EvalSet::Folder`] decodes at a time when it is scored.
const EVAL_CHUNK: usize = 1024;

impl EvalSet {
    /// Number of images.
    pub fn len(&self) -> usize {
        match self {
            EvalSet::Memory(s) => s.len(),
            EvalSet::Folder { stream, .. } => stream.len(),
        }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// All of it in memory.
    pub fn load(&self) -> Result<Split, DataError> {
        match self {
            EvalSet::Memory(s) => Ok(Split {
                images: s.images.shallow_clone(),
                labels: s.labels.shallow_clone(),
            }),
            EvalSet::Folder { stream, size } => {
                let idx: Vec<usize> = (0..stream.len()).collect();
                stream.eval_images(&idx, *size, 1.0)
            }
        }
    }

    /// Top-1 (fraction) of `net` at resolution `r` over the whole set; a folder is decoded
    /// [`EVAL_CHUNK`] images at a time, so memory does not grow with the set.
    pub fn top1(
        &self,
        net: &ofa_supernet::Subnet,
        r: u32,
        aug: &crate::augment::AugmentConfig,
        batch: usize,
    ) -> Result<f64, TrainError> {
        match self {
            EvalSet::Memory(s) => Ok(top1(net, s, r, aug, batch, usize::MAX)?),
            EvalSet::Folder { stream, size } => {
                let (mut correct, mut n) = (0.0f64, 0usize);
                let all: Vec<usize> = (0..stream.len()).collect();
                for chunk in all.chunks(EVAL_CHUNK) {
                    let split = stream.eval_images(chunk, *size, 1.0)?;
                    if split.is_empty() {
                        continue;
                    }
                    let acc = top1(net, &split, r, aug, batch, usize::MAX)?;
                    correct += (acc * split.len() as f64).round();
                    n += split.len();
                }
                if n == 0 {
                    return Err(ofa_package::PackageError::EmptySplit.into());
                }
                Ok(correct / n as f64)
            }
        }
    }
}

/// Load `data_dir` and split it exactly as a run of `recipe` does (same holdout, same seed), so
/// that a package's held-out split can be rebuilt later. An image folder is streamed or decoded
/// into memory as `train.data_loading` says (the choice is logged); either way the held-out and
/// calibration images are the same files, decoded the same way.
pub fn load_splits(recipe: &Recipe, data_dir: &Path) -> Result<Splits, TrainError> {
    // Image folders are decoded at the size the eval transform needs.
    let max_r = resolve_space(recipe, 1)?
        .resolutions
        .iter()
        .copied()
        .max()
        .unwrap_or(224);
    let folder_size = (f64::from(max_r) / recipe.augment.eval_crop).ceil() as u32;
    let v = &recipe.validation;
    let seed = recipe.train.seed;
    let too_small = |n: usize| {
        run_err(
            data_dir,
            format!(
                "{n} training images cannot spare a holdout of {}",
                v.holdout
            ),
        )
    };
    if is_image_folder(data_dir) {
        let index = scan(data_dir)?;
        let n = index.train.len();
        let decoded = n as u64 * 3 * u64::from(folder_size) * u64::from(folder_size);
        let stream = match recipe.train.data_loading {
            DataLoading::Stream => true,
            DataLoading::Memory => false,
            DataLoading::Auto => decoded > AUTO_STREAM_BYTES,
        };
        tracing::info!(
            images = n,
            classes = index.classes.len(),
            skipped_formats = index.skipped,
            decoded_mib = decoded >> 20,
            mode = if stream { "stream" } else { "memory" },
            setting = ?recipe.train.data_loading,
            "image folder"
        );
        if stream {
            if n <= v.holdout {
                return Err(too_small(n));
            }
            let (rest, held) = ofa_package::holdout_indices(n, v.holdout, seed);
            let pick = |ix: &[i64]| {
                ix.iter()
                    .map(|&i| index.train[i as usize].clone())
                    .collect()
            };
            let train_files: Vec<_> = pick(&rest);
            // Bad files among the held-out and calibration images are skipped too, each
            // stream counting against the same limit.
            let max_bad = recipe.train.max_bad_images;
            let held = FolderStream::new(pick(&held), JpegDecoder::default(), max_bad);
            let all_held: Vec<usize> = (0..held.len()).collect();
            let val = held.eval_images(&all_held, folder_size, 1.0)?;
            let k = v.calibration_images.min(train_files.len());
            let (_, calib_ix) = ofa_package::holdout_indices(
                train_files.len(),
                k,
                mix(&[seed, Stream::Holdout.tag()]),
            );
            let calib_files = calib_ix
                .iter()
                .map(|&i| train_files[i as usize].clone())
                .collect();
            let calib = FolderStream::new(calib_files, JpegDecoder::default(), max_bad);
            let calib =
                calib.eval_images(&(0..calib.len()).collect::<Vec<_>>(), folder_size, 1.0)?;
            let test = index.test.map(|t| EvalSet::Folder {
                stream: Arc::new(FolderStream::new(t, JpegDecoder::default(), max_bad)),
                size: folder_size,
            });
            return Ok(Splits {
                train: TrainData::Stream(Arc::new(FolderStream::new(
                    train_files,
                    JpegDecoder::default(),
                    max_bad,
                ))),
                val,
                test,
                calib,
                n_classes: index.classes.len(),
            });
        }
    }
    let ds = load_any(data_dir, folder_size, false)?;
    if ds.train.len() <= v.holdout {
        return Err(too_small(ds.train.len()));
    }
    let (train, val) = ds.train.split_validation(v.holdout, seed);
    let calib = subset(
        &train,
        v.calibration_images.min(train.len()),
        mix(&[seed, Stream::Holdout.tag()]),
    );
    Ok(Splits {
        train: TrainData::Memory(train),
        val,
        test: ds.test.map(EvalSet::Memory),
        calib,
        n_classes: ds.n_classes,
    })
}

/// The space a recipe trains, given the dataset's class count.
pub fn resolve_space(recipe: &Recipe, n_classes: usize) -> Result<SearchSpace, TrainError> {
    let mut space = if Path::new(&recipe.space).is_file() {
        let text = std::fs::read_to_string(&recipe.space)
            .map_err(|e| run_err(Path::new(&recipe.space), e.to_string()))?;
        SearchSpace::from_json(&text)?
    } else {
        SearchSpace::preset(&recipe.space)?
    };
    space.n_classes = recipe.n_classes.unwrap_or(n_classes as u32);
    space.dropout_rate = recipe.train.dropout;
    if let Some(r) = &recipe.resolutions {
        space.resolutions = r.clone();
    }
    space.validate()?;
    for p in &recipe.phases {
        let c = p.choices(&space);
        c.validate(&space).map_err(|e| {
            TrainError::Recipe(RecipeError::Invalid {
                origin: recipe.name.clone(),
                message: format!("phase `{}`: {e}", p.name),
            })
        })?;
    }
    Ok(space)
}
