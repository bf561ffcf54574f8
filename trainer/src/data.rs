//! Datasets in their real on-disk formats, decoded into memory: MNIST-style IDX (Fashion-MNIST,
//! MNIST; raw or gzip) and CIFAR-10 binary batches. Every error names the file at fault.

use std::io::Read;
use std::path::{Path, PathBuf};

use tch::{Kind, Tensor};

pub use ofa_package::Split;

use crate::folder::{class_dirs, scan, FolderStream, JpegDecoder, Sample};

/// Why a dataset could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A file that is not what it should be (wrong magic, truncated, inconsistent).
    #[error("{path}: {reason}")]
    BadFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A file or folder that is missing or unreadable.
    #[error("cannot read {}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// More images failed to decode than the run allows (`train.max_bad_images`).
    #[error("{count} images could not be decoded, more than the {limit} allowed (train.max_bad_images): {examples}")]
    TooManyBadImages {
        /// The limit.
        limit: usize,
        /// Bad files seen.
        count: usize,
        /// The first few, with why.
        examples: String,
    },
    /// A dataset directory that does not hold a known format.
    #[error("{path}: {reason}")]
    UnknownFormat {
        /// The directory.
        path: PathBuf,
        /// What was looked for.
        reason: String,
    },
}

fn bad(path: &Path, reason: impl Into<String>) -> DataError {
    DataError::BadFile {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// A dataset: a training split, the test split where the format has one, and its shape.
#[derive(Debug)]
pub struct Dataset {
    /// Format and origin, e.g. `fashion-mnist (/usr/share/datasets/fashion-mnist)`.
    pub name: String,
    /// Training images.
    pub train: Split,
    /// Test images, where the format has them.
    pub test: Option<Split>,
    /// Number of classes.
    pub n_classes: usize,
    /// Image channels (1 grayscale, 3 RGB).
    pub channels: usize,
}

/// Where the Debian package `dataset-fashion-mnist` puts the data.
pub const FASHION_MNIST_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// How far a gzip file may inflate, as a multiple of its size.
const GZIP_MAX_INFLATION: u64 = 64;

fn read_maybe_gz(path: &Path) -> Result<Vec<u8>, DataError> {
    let raw = std::fs::read(path).map_err(|e| DataError::Io {
        path: path.to_path_buf(),
        source: e,
    })?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        // Image and label files deflate 2-10×; a stream that inflates far beyond that is a bomb,
        // stopped before it fills memory.
        let limit = (GZIP_MAX_INFLATION * raw.len() as u64).max(1 << 20);
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(raw.as_slice())
            .take(limit + 1)
            .read_to_end(&mut out)
            .map_err(|e| bad(path, format!("corrupt or truncated gzip data ({e})")))?;
        if out.len() as u64 > limit {
            return Err(bad(
                path,
                format!(
                    "inflates past {GZIP_MAX_INFLATION}× its {} bytes: refused as a gzip bomb",
                    raw.len()
                ),
            ));
        }
        Ok(out)
    } else {
        Ok(raw)
    }
}

/// Read an IDX file of unsigned bytes (raw or gzip): its dimensions and data.
pub fn read_idx(path: &Path) -> Result<(Vec<usize>, Vec<u8>), DataError> {
    let bytes = read_maybe_gz(path)?;
    if bytes.len() < 4 || bytes[0] != 0 || bytes[1] != 0 {
        return Err(bad(path, "not an IDX file (wrong magic number)"));
    }
    if bytes[2] != 0x08 {
        return Err(bad(
            path,
            format!(
                "IDX element type 0x{:02x} is not unsigned byte (0x08)",
                bytes[2]
            ),
        ));
    }
    let ndims = bytes[3] as usize;
    let header = 4 + 4 * ndims;
    if ndims == 0 || bytes.len() < header {
        return Err(bad(path, "truncated IDX header"));
    }
    let dims: Vec<usize> = (0..ndims)
        .map(|i| {
            let o = 4 + 4 * i;
            u32::from_be_bytes([bytes[o], bytes[o + 1], bytes[o + 2], bytes[o + 3]]) as usize
        })
        .collect();
    let want = dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    let got = bytes.len() - header;
    match want {
        Some(w) if w == got => {}
        Some(w) if w > got => {
            return Err(bad(
                path,
                format!("truncated: dimensions {dims:?} need {w} bytes, the file has {got}"),
            ))
        }
        Some(w) => {
            return Err(bad(
                path,
                format!("{} trailing bytes after {w} bytes of data", got - w),
            ))
        }
        None => return Err(bad(path, format!("dimensions {dims:?} overflow"))),
    }
    Ok((dims, bytes[header..].to_vec()))
}

fn find(dir: &Path, stem: &str) -> Option<PathBuf> {
    [format!("{stem}.gz"), stem.to_string()]
        .into_iter()
        .map(|n| dir.join(n))
        .find(|p| p.is_file())
}

fn idx_split(dir: &Path, prefix: &str) -> Result<Option<Split>, DataError> {
    let (Some(ip), Some(lp)) = (
        find(dir, &format!("{prefix}-images-idx3-ubyte")),
        find(dir, &format!("{prefix}-labels-idx1-ubyte")),
    ) else {
        return Ok(None);
    };
    let (idims, images) = read_idx(&ip)?;
    let (ldims, labels) = read_idx(&lp)?;
    if idims.len() != 3 {
        return Err(bad(
            &ip,
            format!("expected 3 dimensions [N, H, W], got {idims:?}"),
        ));
    }
    if ldims.len() != 1 {
        return Err(bad(&lp, format!("expected 1 dimension [N], got {ldims:?}")));
    }
    if idims[0] != ldims[0] {
        return Err(bad(
            &lp,
            format!(
                "{} labels for {} images in {}",
                ldims[0],
                idims[0],
                ip.display()
            ),
        ));
    }
    if idims[0] == 0 {
        return Err(bad(&ip, "holds no images"));
    }
    let (n, h, w) = (idims[0] as i64, idims[1] as i64, idims[2] as i64);
    let images = Tensor::from_slice(&images).reshape([n, 1, h, w]);
    let labels: Vec<i64> = labels.iter().map(|&l| i64::from(l)).collect();
    Ok(Some(Split {
        images,
        labels: Tensor::from_slice(&labels),
    }))
}

/// Load an MNIST-style IDX dataset directory (`train-images-idx3-ubyte[.gz]`,
/// `train-labels-idx1-ubyte[.gz]`, and the `t10k-*` test files when present).
pub fn load_idx_dir(dir: &Path) -> Result<Dataset, DataError> {
    if !dir.is_dir() {
        return Err(DataError::Io {
            path: dir.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such directory"),
        });
    }
    let train = idx_split(dir, "train")?.ok_or_else(|| DataError::UnknownFormat {
        path: dir.to_path_buf(),
        reason: "no train-images-idx3-ubyte[.gz] / train-labels-idx1-ubyte[.gz] pair".into(),
    })?;
    let test = idx_split(dir, "t10k")?;
    let n_classes = classes(&train, test.as_ref());
    Ok(Dataset {
        name: format!("idx ({})", dir.display()),
        train,
        test,
        n_classes,
        channels: 1,
    })
}

fn classes(train: &Split, test: Option<&Split>) -> usize {
    let mut m = train.labels.max().int64_value(&[]);
    if let Some(t) = test {
        m = m.max(t.labels.max().int64_value(&[]));
    }
    (m + 1) as usize
}

const CIFAR_RECORD: usize = 1 + 3 * 32 * 32;

fn cifar_file(path: &Path) -> Result<Split, DataError> {
    let bytes = std::fs::read(path).map_err(|e| DataError::Io {
        path: path.to_path_buf(),
        source: e,
    })?;
    if bytes.is_empty() || bytes.len() % CIFAR_RECORD != 0 {
        return Err(bad(
            path,
            format!(
                "{} bytes is not a whole number of CIFAR-10 records ({CIFAR_RECORD} bytes each)",
                bytes.len()
            ),
        ));
    }
    let n = bytes.len() / CIFAR_RECORD;
    let mut labels = Vec::with_capacity(n);
    let mut images = Vec::with_capacity(n * (CIFAR_RECORD - 1));
    for (i, rec) in bytes.chunks_exact(CIFAR_RECORD).enumerate() {
        if rec[0] > 9 {
            return Err(bad(
                path,
                format!("record {i} has label {} (CIFAR-10 labels are 0–9)", rec[0]),
            ));
        }
        labels.push(i64::from(rec[0]));
        images.extend_from_slice(&rec[1..]);
    }
    Ok(Split {
        images: Tensor::from_slice(&images).reshape([n as i64, 3, 32, 32]),
        labels: Tensor::from_slice(&labels),
    })
}

fn concat(splits: Vec<Split>) -> Split {
    let images: Vec<&Tensor> = splits.iter().map(|s| &s.images).collect();
    let labels: Vec<&Tensor> = splits.iter().map(|s| &s.labels).collect();
    Split {
        images: Tensor::cat(&images, 0),
        labels: Tensor::cat(&labels, 0),
    }
}

/// Load the CIFAR-10 binary version (`data_batch_1.bin` … `data_batch_5.bin`, `test_batch.bin`);
/// whichever training batches exist are used, in order.
pub fn load_cifar10_dir(dir: &Path) -> Result<Dataset, DataError> {
    let batches: Vec<PathBuf> = (1..=5)
        .map(|i| dir.join(format!("data_batch_{i}.bin")))
        .filter(|p| p.is_file())
        .collect();
    if batches.is_empty() {
        return Err(DataError::UnknownFormat {
            path: dir.to_path_buf(),
            reason: "no data_batch_N.bin files (CIFAR-10 binary version)".into(),
        });
    }
    let train = concat(
        batches
            .iter()
            .map(|p| cifar_file(p))
            .collect::<Result<_, _>>()?,
    );
    let test_path = dir.join("test_batch.bin");
    let test = if test_path.is_file() {
        Some(cifar_file(&test_path)?)
    } else {
        None
    };
    Ok(Dataset {
        name: format!("cifar-10 ({})", dir.display()),
        train,
        test,
        n_classes: 10,
        channels: 3,
    })
}

fn to_gray(split: Split) -> Split {
    // ITU-R 601 luma, as PIL's `convert("L")`.
    let x = split.images.to_kind(Kind::Float);
    let y = x.narrow(1, 0, 1) * 0.299 + x.narrow(1, 1, 1) * 0.587 + x.narrow(1, 2, 1) * 0.114;
    Split {
        images: y.round().clamp(0.0, 255.0).to_kind(Kind::Uint8),
        labels: split.labels,
    }
}

fn decode_all(samples: Vec<Sample>, size: u32, gray: bool) -> Result<Split, DataError> {
    // Decoding into memory stops at the first bad file: nothing would train on a silent gap.
    let stream = FolderStream::new(samples, JpegDecoder::default(), 0);
    let idx: Vec<usize> = (0..stream.len()).collect();
    let split = stream.eval_images(&idx, size, 1.0)?;
    Ok(if gray { to_gray(split) } else { split })
}

/// Whether `dir` holds an image folder (class folders, directly or under `train/`) rather than
/// IDX or CIFAR-10 files.
pub fn is_image_folder(dir: &Path) -> bool {
    if !dir.is_dir()
        || find(dir, "train-images-idx3-ubyte").is_some()
        || dir.join("data_batch_1.bin").is_file()
    {
        return false;
    }
    let sub = if dir.join("train").is_dir() {
        dir.join("train")
    } else {
        dir.to_path_buf()
    };
    class_dirs(&sub).is_ok_and(|c| !c.is_empty())
}

/// Load an image-folder dataset ([`crate::folder::scan`]: classes in torchvision's
/// `ImageFolder` order, directly in `dir` or under `dir/train` with an optional `dir/test` or
/// `dir/val`) into memory: every image decoded once, its short side resized to `size` and
/// centre-cropped `size × size`; RGB unless `gray`. Large folders stream instead
/// ([`crate::folder::FolderStream`]).
pub fn load_image_folder(dir: &Path, size: u32, gray: bool) -> Result<Dataset, DataError> {
    let index = scan(dir)?;
    let n_classes = index.classes.len();
    let train = decode_all(index.train, size, gray)?;
    let test = index.test.map(|t| decode_all(t, size, gray)).transpose()?;
    Ok(Dataset {
        name: format!("image folder ({})", dir.display()),
        train,
        test,
        n_classes,
        channels: if gray { 1 } else { 3 },
    })
}

/// Load whatever known format `dir` holds (IDX, CIFAR-10 binary, or an image folder decoded to
/// `folder_size` pixels; see [`load_image_folder`]).
pub fn load_any(dir: &Path, folder_size: u32, gray: bool) -> Result<Dataset, DataError> {
    if is_image_folder(dir) {
        return load_image_folder(dir, folder_size, gray);
    }
    load_dir(dir)
}

/// Load whatever known format `dir` holds (IDX or CIFAR-10 binary).
pub fn load_dir(dir: &Path) -> Result<Dataset, DataError> {
    if !dir.is_dir() {
        return Err(DataError::Io {
            path: dir.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such directory"),
        });
    }
    if find(dir, "train-images-idx3-ubyte").is_some() {
        return load_idx_dir(dir);
    }
    if dir.join("data_batch_1.bin").is_file() {
        return load_cifar10_dir(dir);
    }
    Err(DataError::UnknownFormat {
        path: dir.to_path_buf(),
        reason: "neither MNIST-style IDX files (train-images-idx3-ubyte[.gz]), CIFAR-10 binary batches (data_batch_1.bin) nor class folders of images".into(),
    })
}

/// Normalise uint8 images to float: `(x / 255 − mean) / std` per channel.
pub fn normalize(images: &Tensor, mean: &[f64], std: &[f64]) -> Tensor {
    let c = images.size()[1];
    let dev = images.device();
    let m = Tensor::from_slice(mean)
        .to_kind(Kind::Float)
        .to_device(dev)
        .reshape([1, c, 1, 1]);
    let s = Tensor::from_slice(std)
        .to_kind(Kind::Float)
        .to_device(dev)
        .reshape([1, c, 1, 1]);
    (images.to_kind(Kind::Float) / 255.0 - m) / s
}

/// Write an IDX file of unsigned bytes (raw).
pub fn write_idx(path: &Path, dims: &[u32], data: &[u8]) -> Result<(), DataError> {
    let mut v = vec![0, 0, 0x08, dims.len() as u8];
    for d in dims {
        v.extend_from_slice(&d.to_be_bytes());
    }
    v.extend_from_slice(data);
    std::fs::write(path, v).map_err(|e| DataError::Io {
        path: path.to_path_buf(),
        source: e,
    })
}

/// Write a small, learnable MNIST-style dataset (28×28 grayscale, `classes` ≤ 4 horizontal
/// bands: the bright band is the label) for tests and demos.
pub fn write_synthetic_idx(
    dir: &Path,
    n_train: u32,
    n_test: u32,
    classes: u32,
) -> Result<(), DataError> {
    let classes = classes.clamp(1, 4);
    for (prefix, n) in [("train", n_train), ("t10k", n_test)] {
        let mut images = Vec::with_capacity((n * 784) as usize);
        let mut labels = Vec::with_capacity(n as usize);
        for i in 0..n {
            let label = i % classes;
            labels.push(label as u8);
            for p in 0..784u32 {
                let on = (p / 28) / 7 == label;
                images.push(if on {
                    200
                } else {
                    ((p * 7 + i * 13) % 50) as u8
                });
            }
        }
        write_idx(
            &dir.join(format!("{prefix}-images-idx3-ubyte")),
            &[n, 28, 28],
            &images,
        )?;
        write_idx(
            &dir.join(format!("{prefix}-labels-idx1-ubyte")),
            &[n],
            &labels,
        )?;
    }
    Ok(())
}
