//! Image folders streamed from disk: the file list is read once (torchvision's `ImageFolder`
//! order), and each image is decoded when its batch is prepared, then cropped from the original
//! image, resized, flipped, colour-jittered and normalised straight into the batch's one float
//! buffer. Memory stays bounded by the loader's prefetch depth, whatever the dataset's size.
//!
//! Bad files (undecodable, truncated, not an image) are skipped and counted: a bad training image's
//! slot goes to the next readable file of the list, so a batch is still a pure function of
//! (seed, phase, step). Past a limit the run stops with [`DataError::TooManyBadImages`].

use std::collections::BTreeMap;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use fast_image_resize::images::{CroppedImage, Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tch::Tensor;

use crate::augment::{channel_stats, AugmentConfig, SampleAugment};
use crate::data::{DataError, Split};
use ofa_package::seed::{mix, Stream};

/// The extensions torchvision's `ImageFolder` accepts.
pub const TORCHVISION_EXTENSIONS: &[&str] = &[
    "jpg", "jpeg", "png", "ppm", "bmp", "pgm", "tif", "tiff", "webp",
];

/// The extensions decoded here (the others of [`TORCHVISION_EXTENSIONS`] are counted and left
/// out).
pub const DECODED_EXTENSIONS: &[&str] = &["jpg", "jpeg", "png"];

/// One image of a folder and its class.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// The file.
    pub path: PathBuf,
    /// Class index (position of its class in the sorted class list).
    pub label: i64,
}

/// The file list of an image-folder dataset.
#[derive(Debug, Clone)]
pub struct FolderIndex {
    /// The dataset folder given.
    pub root: PathBuf,
    /// Class names, sorted (torchvision's class indices).
    pub classes: Vec<String>,
    /// Training images, in torchvision's order.
    pub train: Vec<Sample>,
    /// Test images (`test/` or `val/` beside `train/`), where there is such a folder.
    pub test: Option<Vec<Sample>>,
    /// Files with an image extension torchvision reads but this crate does not decode (BMP,
    /// TIFF, WebP, PPM, PGM): left out, and counted here.
    pub skipped: usize,
}

fn io_err(path: &Path, source: std::io::Error) -> DataError {
    DataError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn extension(p: &Path) -> Option<String> {
    p.extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
}

/// Whether `p` has an extension this crate decodes (case-insensitive).
pub fn is_decoded_image(p: &Path) -> bool {
    extension(p).is_some_and(|e| DECODED_EXTENSIONS.contains(&e.as_str()))
}

/// Sub-folders of `dir` (symlinks followed), sorted by name.
pub fn class_dirs(dir: &Path) -> Result<Vec<String>, DataError> {
    let rd = std::fs::read_dir(dir).map_err(|e| io_err(dir, e))?;
    let mut v = Vec::new();
    for e in rd {
        let e = e.map_err(|e| io_err(dir, e))?;
        if e.path().is_dir() {
            if let Some(n) = e.file_name().to_str() {
                v.push(n.to_string());
            }
        }
    }
    v.sort();
    Ok(v)
}

/// The images of one class folder, recursively, symlinks followed, in torchvision's order
/// (`sorted(os.walk(...))`, then sorted file names).
fn class_files(dir: &Path, label: i64, skipped: &mut usize) -> Result<Vec<Sample>, DataError> {
    let mut found: Vec<(Vec<u8>, Vec<u8>, PathBuf)> = Vec::new();
    for entry in walkdir::WalkDir::new(dir).follow_links(true) {
        let entry = entry.map_err(|e| {
            let at = e.path().unwrap_or(dir).to_path_buf();
            if let Some(ancestor) = e.loop_ancestor() {
                DataError::BadFile {
                    path: at,
                    reason: format!(
                        "symlink loop: it leads back to {}, which holds it",
                        ancestor.display()
                    ),
                }
            } else {
                let msg = e.to_string();
                let source = e
                    .into_io_error()
                    .unwrap_or_else(|| std::io::Error::other(msg));
                io_err(&at, source)
            }
        })?;
        if !entry.file_type().is_file() {
            continue;
        }
        let p = entry.path();
        let Some(ext) = extension(p) else { continue };
        if !TORCHVISION_EXTENSIONS.contains(&ext.as_str()) {
            continue;
        }
        if !DECODED_EXTENSIONS.contains(&ext.as_str()) {
            *skipped += 1;
            continue;
        }
        let parent = p.parent().unwrap_or(dir).as_os_str().as_encoded_bytes();
        // a walked file always has a name (only `/` and `..` paths have none)
        let name = p.file_name().unwrap_or_default().as_encoded_bytes();
        found.push((parent.to_vec(), name.to_vec(), p.to_path_buf()));
    }
    found.sort();
    if found.is_empty() {
        return Err(DataError::BadFile {
            path: dir.to_path_buf(),
            reason: "class folder holds no .png/.jpg/.jpeg images".into(),
        });
    }
    Ok(found
        .into_iter()
        .map(|(_, _, path)| Sample { path, label })
        .collect())
}

fn split_files(
    dir: &Path,
    classes: &[String],
    skipped: &mut usize,
) -> Result<Vec<Sample>, DataError> {
    let mut out = Vec::new();
    for (label, class) in classes.iter().enumerate() {
        let cdir = dir.join(class);
        if cdir.is_dir() {
            out.extend(class_files(&cdir, label as i64, skipped)?);
        }
    }
    Ok(out)
}

/// Read the file list of an image folder: `class/…/image` directly in `dir`, or under
/// `dir/train` with an optional `dir/test` (or `dir/val`) whose classes must be classes of
/// `train`. Classes are sorted as torchvision's `ImageFolder` sorts them; an empty class, a
/// symlink loop or an unreadable folder is an error that names it.
pub fn scan(dir: &Path) -> Result<FolderIndex, DataError> {
    if !dir.is_dir() {
        return Err(io_err(
            dir,
            std::io::Error::new(std::io::ErrorKind::NotFound, "no such directory"),
        ));
    }
    let train_dir = if dir.join("train").is_dir() {
        dir.join("train")
    } else {
        dir.to_path_buf()
    };
    let classes = class_dirs(&train_dir)?;
    if classes.is_empty() {
        return Err(DataError::UnknownFormat {
            path: train_dir,
            reason: "no class folders".into(),
        });
    }
    let mut skipped = 0;
    let train = split_files(&train_dir, &classes, &mut skipped)?;
    let test_dir = ["test", "val"]
        .iter()
        .map(|d| dir.join(d))
        .find(|p| p.is_dir());
    let test = match test_dir {
        Some(t) => {
            for c in class_dirs(&t)? {
                if !classes.contains(&c) {
                    return Err(DataError::BadFile {
                        path: t.join(&c),
                        reason: format!(
                            "class `{c}` is not a class of {} (its label would be undefined)",
                            train_dir.display()
                        ),
                    });
                }
            }
            Some(split_files(&t, &classes, &mut skipped)?)
        }
        None => None,
    };
    Ok(FolderIndex {
        root: dir.to_path_buf(),
        classes,
        train,
        test,
        skipped,
    })
}

/// The JPEG decoder of a stream (PNG always goes through the `image` crate).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum JpegDecoder {
    /// zune-jpeg (the `image` crate's JPEG path), at full size: the fastest measured here.
    #[default]
    Zune,
    /// jpeg-decoder at full size.
    Full,
    /// jpeg-decoder at the smallest DCT scale (1/8, 1/4, 1/2, 1) that keeps the crop at least as
    /// large as the output, as PIL's `draft` and DALI do.
    Scaled,
}

impl std::str::FromStr for JpegDecoder {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "zune" => Ok(JpegDecoder::Zune),
            "full" => Ok(JpegDecoder::Full),
            "scaled" => Ok(JpegDecoder::Scaled),
            _ => Err(format!("unknown JPEG decoder `{s}` (zune, full or scaled)")),
        }
    }
}

/// A decoded RGB8 image, interleaved.
#[derive(Debug)]
struct Rgb {
    w: u32,
    h: u32,
    px: Vec<u8>,
}

fn is_jpeg(bytes: &[u8]) -> bool {
    bytes.starts_with(&[0xff, 0xd8, 0xff])
}

fn decode_image(bytes: &[u8]) -> Result<Rgb, String> {
    let img = image::ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| e.to_string())?
        .decode()
        .map_err(|e| format!("cannot decode image ({e})"))?;
    let rgb = img.into_rgb8();
    Ok(Rgb {
        w: rgb.width(),
        h: rgb.height(),
        px: rgb.into_raw(),
    })
}

/// jpeg-decoder, optionally at a reduced DCT scale: `want` maps the original size to the least
/// size needed.
fn decode_jpeg_decoder(
    bytes: &[u8],
    want: Option<&dyn Fn(u32, u32) -> (u32, u32)>,
) -> Result<(Rgb, (u32, u32)), String> {
    let mut d = jpeg_decoder::Decoder::new(bytes);
    d.read_info()
        .map_err(|e| format!("cannot decode image ({e})"))?;
    let info = d.info().ok_or("cannot decode image (no header)")?;
    let orig = (u32::from(info.width), u32::from(info.height));
    if let Some(f) = want {
        let (rw, rh) = f(orig.0, orig.1);
        d.scale(rw.min(65535) as u16, rh.min(65535) as u16)
            .map_err(|e| format!("cannot decode image ({e})"))?;
    }
    let px = d
        .decode()
        .map_err(|e| format!("cannot decode image ({e})"))?;
    let info = d.info().ok_or("cannot decode image (no header)")?;
    let (w, h) = (u32::from(info.width), u32::from(info.height));
    let n = (w * h) as usize;
    let px = match info.pixel_format {
        jpeg_decoder::PixelFormat::RGB24 => px,
        jpeg_decoder::PixelFormat::L8 => px.iter().flat_map(|&v| [v, v, v]).collect(),
        jpeg_decoder::PixelFormat::L16 => px
            .chunks_exact(2)
            .flat_map(|v| [v[0], v[0], v[0]])
            .collect(),
        jpeg_decoder::PixelFormat::CMYK32 => px
            .chunks_exact(4)
            .flat_map(|p| {
                let k = u16::from(p[3]);
                [0, 1, 2].map(|c| ((u16::from(p[c]) * k) / 255) as u8)
            })
            .collect(),
    };
    if px.len() != 3 * n {
        return Err("cannot decode image (short pixel data)".into());
    }
    Ok((Rgb { w, h, px }, orig))
}

/// torchvision's `CenterCrop` offset: `int(round((size - crop) / 2))`, ties to even.
pub fn centre_offset(size: u32, crop: u32) -> u32 {
    let d = size.saturating_sub(crop);
    let f = d / 2;
    if d % 2 == 1 && f % 2 == 1 {
        f + 1
    } else {
        f
    }
}

/// Antialiased bilinear resize (Pillow's convolution, as torchvision applies to PIL images) of
/// the `(left, top, width, height)` box of `src` to `ow × oh`, as `crop` then `resize` do.
fn resize_box(
    resizer: &mut Resizer,
    src: &Rgb,
    (left, top, bw, bh): (u32, u32, u32, u32),
    (ow, oh): (u32, u32),
) -> Result<Vec<u8>, String> {
    let img = ImageRef::new(src.w, src.h, &src.px, PixelType::U8x3).map_err(|e| e.to_string())?;
    // The crop box clamped into the image (rounding of a scaled box may overhang by a pixel).
    let left = left.min(src.w - 1);
    let top = top.min(src.h - 1);
    let bw = bw.clamp(1, src.w - left);
    let bh = bh.clamp(1, src.h - top);
    // A cropped view, not a crop option: the filter's support stops at the box's edges, as it
    // does when torchvision crops the PIL image and then resizes it.
    let view = CroppedImage::new(&img, left, top, bw, bh).map_err(|e| e.to_string())?;
    let mut dst = Image::new(ow, oh, PixelType::U8x3);
    let opts = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Bilinear));
    resizer
        .resize(&view, &mut dst, &opts)
        .map_err(|e| e.to_string())?;
    Ok(dst.into_vec())
}

/// One image's augmentation, a function of its generator's seed and its original `w × h`.
fn draw_for(seed: u64, cfg: &AugmentConfig, w: u32, h: u32) -> SampleAugment {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    SampleAugment::draw(i64::from(h), i64::from(w), 3, cfg, &mut rng)
}

/// The least decoded size of a `w × h` image at which crop `a` still covers `r × r` pixels (what
/// a DCT-scaled decode is asked for).
fn dct_request(a: &SampleAugment, w: u32, h: u32, r: u32) -> (u32, u32) {
    let rw = (u64::from(w) * u64::from(r)).div_ceil(a.width.max(1) as u64);
    let rh = (u64::from(h) * u64::from(r)).div_ceil(a.height.max(1) as u64);
    (rw.min(u64::from(w)) as u32, rh.min(u64::from(h)) as u32)
}

/// A crop box drawn on the original `ow × oh` image, in the decoded image's pixels (which are
/// fewer when the decode was DCT-scaled).
fn scaled_box(a: &SampleAugment, img: &Rgb, (ow, oh): (u32, u32)) -> (u32, u32, u32, u32) {
    let (fx, fy) = (
        f64::from(img.w) / f64::from(ow),
        f64::from(img.h) / f64::from(oh),
    );
    (
        (a.left as f64 * fx).round() as u32,
        (a.top as f64 * fy).round() as u32,
        ((a.width as f64 * fx).round() as u32).max(1),
        ((a.height as f64 * fy).round() as u32).max(1),
    )
}

/// Time per stage of preparing training images ([`FolderStream::profile`]).
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct StageTimes {
    /// Reading the files.
    pub read: std::time::Duration,
    /// Decoding them.
    pub decode: std::time::Duration,
    /// Cropping and resizing to the batch's resolution.
    pub resize: std::time::Duration,
    /// Flip, colour jitter and normalisation into floats.
    pub normalize: std::time::Duration,
    /// Images timed.
    pub images: usize,
    /// File bytes read.
    pub bytes: u64,
    /// Original pixels (width × height) of the images.
    pub pixels: u64,
}

/// Colour jitter and normalisation of one resized RGB8 crop (`r × r`, interleaved), mirrored if
/// `a.flip`, into its planar float slot `out` (`3 · r · r`): the arithmetic of
/// [`crate::augment::color_normalize`], per pixel, in one pass.
pub fn jitter_normalize(
    rgb: &[u8],
    r: usize,
    a: &SampleAugment,
    cfg: &AugmentConfig,
    out: &mut [f32],
) {
    let (mean, std) = channel_stats(cfg, 3);
    let plane = r * r;
    let bright = cfg.brightness > 0.0;
    let sat = cfg.saturation > 0.0;
    let (b, s) = (a.brightness, a.saturation);
    for y in 0..r {
        for x in 0..r {
            let sx = if a.flip { r - 1 - x } else { x };
            let p = &rgb[3 * (y * r + sx)..3 * (y * r + sx) + 3];
            let mut v = [p[0], p[1], p[2]].map(|c| f32::from(c) / 255.0);
            if bright {
                v = v.map(|c| (c * b).clamp(0.0, 1.0));
            }
            if sat {
                let gray = v[0] * 0.299 + v[1] * 0.587 + v[2] * 0.114;
                v = v.map(|c| (c * s + gray * (1.0 - s)).clamp(0.0, 1.0));
            }
            let o = y * r + x;
            for c in 0..3 {
                out[c * plane + o] = (v[c] - mean[c]) / std[c];
            }
        }
    }
}

/// The `n` floats of a contiguous float32 CPU tensor, to write in place.
///
/// # Safety
///
/// No other access to `x`'s storage may exist while the slice does: `x` must share its storage
/// with no other tensor (no view, no shallow clone) and no other thread may use it. `&mut Tensor`
/// cannot promise that, because a `Tensor` is a handle and two handles can share one storage; the
/// caller can (the one caller allocates `x` itself and hands it out only after the slice is gone).
/// The layout is checked here and a wrong one panics.
#[allow(unsafe_code)]
unsafe fn float_slice_mut(x: &mut Tensor, n: usize) -> &mut [f32] {
    assert!(
        x.kind() == tch::Kind::Float
            && x.device() == tch::Device::Cpu
            && x.is_contiguous()
            && x.numel() == n,
        "float_slice_mut needs a contiguous float32 CPU tensor of {n} elements"
    );
    // SAFETY: `x` is a contiguous float32 CPU tensor of exactly `n` elements (checked above), so
    // its data pointer addresses `n` initialised, aligned f32 values that live as long as `x`,
    // which the returned borrow (of `x`, mutably) cannot outlive; the caller promises that no
    // other access to the storage exists meanwhile (the function's contract).
    unsafe { std::slice::from_raw_parts_mut(x.data_ptr().cast::<f32>(), n) }
}

/// A training or evaluation image list read from disk batch by batch.
#[derive(Debug)]
pub struct FolderStream {
    samples: Vec<Sample>,
    decoder: JpegDecoder,
    max_bad: usize,
    bad: Mutex<BTreeMap<PathBuf, String>>,
}

impl FolderStream {
    /// A stream over `samples`, decoding JPEGs with `decoder`, and stopping once more than
    /// `max_bad` distinct files failed to decode.
    pub fn new(samples: Vec<Sample>, decoder: JpegDecoder, max_bad: usize) -> FolderStream {
        FolderStream {
            samples,
            decoder,
            max_bad,
            bad: Mutex::new(BTreeMap::new()),
        }
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// Whether there are no images.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// The images, in order.
    pub fn samples(&self) -> &[Sample] {
        &self.samples
    }

    /// The files that failed to decode so far, with why.
    pub fn bad_files(&self) -> Vec<(PathBuf, String)> {
        // a loader thread that panicked while holding the lock left a list that is still whole
        // (pushes are single calls): read it rather than report no bad files
        let bad = self
            .bad
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        bad.iter().map(|(p, r)| (p.clone(), r.clone())).collect()
    }

    fn record_bad(&self, path: &Path, reason: String) -> Result<(), DataError> {
        if self.max_bad == 0 {
            return Err(DataError::BadFile {
                path: path.to_path_buf(),
                reason,
            });
        }
        let mut m = self.bad.lock().unwrap_or_else(|p| p.into_inner());
        if !m.contains_key(path) {
            tracing::warn!(path = %path.display(), %reason, "skipping an unreadable image");
            m.insert(path.to_path_buf(), reason);
        }
        if m.len() > self.max_bad {
            let examples = m
                .iter()
                .take(5)
                .map(|(p, r)| format!("{}: {r}", p.display()))
                .collect::<Vec<_>>()
                .join("; ");
            return Err(DataError::TooManyBadImages {
                limit: self.max_bad,
                count: m.len(),
                examples,
            });
        }
        Ok(())
    }

    fn read(&self, k: usize) -> Result<Vec<u8>, String> {
        std::fs::read(&self.samples[k].path).map_err(|e| format!("cannot read ({e})"))
    }

    /// Decode one file's bytes with this stream's decoder: the image (full size, or DCT-scaled
    /// to what `want` asks of the original size) and the original size.
    fn decode_bytes(
        &self,
        bytes: &[u8],
        want: Option<&dyn Fn(u32, u32) -> (u32, u32)>,
    ) -> Result<(Rgb, (u32, u32)), String> {
        let img = match self.decoder {
            JpegDecoder::Full if is_jpeg(bytes) => decode_jpeg_decoder(bytes, None)?,
            JpegDecoder::Scaled if is_jpeg(bytes) => decode_jpeg_decoder(bytes, want)?,
            _ => {
                let img = decode_image(bytes)?;
                let orig = (img.w, img.h);
                (img, orig)
            }
        };
        if img.0.w == 0 || img.0.h == 0 {
            return Err("empty image".into());
        }
        Ok(img)
    }

    /// Where the time of preparing training images at resolution `r` goes, one image after
    /// another on this thread: reading the file, decoding, cropping and resizing, jitter and
    /// normalisation. Unreadable files are left out.
    pub fn profile(&self, idx: &[usize], r: u32, cfg: &AugmentConfig) -> StageTimes {
        use std::time::Instant;
        let mut t = StageTimes::default();
        let mut resizer = Resizer::new();
        let ru = r as usize;
        let mut out = vec![0f32; 3 * ru * ru];
        for (pos, &k) in idx.iter().enumerate() {
            let seed = mix(&[0, 0, 0, Stream::Augmentation.tag(), pos as u64]);
            let want = |w: u32, h: u32| dct_request(&draw_for(seed, cfg, w, h), w, h, r);
            let t0 = Instant::now();
            let Ok(bytes) = self.read(k) else { continue };
            let t1 = Instant::now();
            let Ok((img, (ow, oh))) = self.decode_bytes(&bytes, Some(&want)) else {
                continue;
            };
            let t2 = Instant::now();
            let a = draw_for(seed, cfg, ow, oh);
            let bx = scaled_box(&a, &img, (ow, oh));
            let Ok(crop) = resize_box(&mut resizer, &img, bx, (r, r)) else {
                continue;
            };
            let t3 = Instant::now();
            jitter_normalize(&crop, ru, &a, cfg, &mut out);
            let t4 = Instant::now();
            t.read += t1 - t0;
            t.decode += t2 - t1;
            t.resize += t3 - t2;
            t.normalize += t4 - t3;
            t.images += 1;
            t.bytes += bytes.len() as u64;
            t.pixels += u64::from(ow) * u64::from(oh);
        }
        t
    }

    /// Decode sample `k`, or the next readable one (wrapping), recording every failure: the
    /// sample used and its decoded image (full size, or DCT-scaled to what `want` asks) with its
    /// original size.
    fn decode_or_next(
        &self,
        k: usize,
        want: Option<&dyn Fn(u32, u32) -> (u32, u32)>,
    ) -> Result<(usize, Rgb, (u32, u32)), DataError> {
        let n = self.samples.len();
        for i in 0..n {
            let j = (k + i) % n;
            let got = self
                .read(j)
                .and_then(|bytes| self.decode_bytes(&bytes, want));
            match got {
                Ok((img, orig)) => return Ok((j, img, orig)),
                Err(reason) => self.record_bad(&self.samples[j].path, reason)?,
            }
        }
        Err(DataError::TooManyBadImages {
            limit: self.max_bad,
            count: n,
            examples: "no image of the list decodes".into(),
        })
    }

    /// The training batch of the samples `idx`, at positions `first..` of their global batch:
    /// each image's augmentation is drawn from its own generator, seeded by
    /// (`key` = [seed, phase, step], position), so any shard of a batch is computed alone and
    /// equals its part of the whole. Images `[n, 3, r, r]` float, normalised; labels `[n]`.
    pub fn train_batch(
        &self,
        idx: &[usize],
        first: usize,
        r: u32,
        cfg: &AugmentConfig,
        key: [u64; 3],
    ) -> Result<(Tensor, Tensor), DataError> {
        let ru = r as usize;
        let per = 3 * ru * ru;
        let ri = i64::from(r);
        // The batch's one float buffer, written in place.
        let mut x = Tensor::zeros(
            [idx.len() as i64, 3, ri, ri],
            (tch::Kind::Float, tch::Device::Cpu),
        );
        // SAFETY: `x` was allocated just above and is shared with nothing until it is returned,
        // after the last use of `out`.
        #[allow(unsafe_code)]
        let out = unsafe { float_slice_mut(&mut x, idx.len() * per) };
        let mut labels = Vec::with_capacity(idx.len());
        let mut resizer = Resizer::new();
        for (i, (&k, slot)) in idx.iter().zip(out.chunks_exact_mut(per)).enumerate() {
            let pos = (first + i) as u64;
            // The augmentation is a function of (position, original size): DCT scaling needs
            // the crop before the decode, so it is drawn from the header there, and drawn again
            // (identically) for the file actually used.
            let seed = mix(&[key[0], key[1], key[2], Stream::Augmentation.tag(), pos]);
            let want = |w: u32, h: u32| dct_request(&draw_for(seed, cfg, w, h), w, h, r);
            let (j, img, (ow, oh)) = self.decode_or_next(k, Some(&want))?;
            let a = draw_for(seed, cfg, ow, oh);
            let bx = scaled_box(&a, &img, (ow, oh));
            let crop =
                resize_box(&mut resizer, &img, bx, (r, r)).map_err(|e| DataError::BadFile {
                    path: self.samples[j].path.clone(),
                    reason: format!("cannot resize ({e})"),
                })?;
            jitter_normalize(&crop, ru, &a, cfg, slot);
            labels.push(self.samples[j].label);
        }
        Ok((x, Tensor::from_slice(&labels)))
    }

    /// The eval transform's uint8 images of the samples `idx`: the short side resized to
    /// `ceil(size / crop)` (the long side floored, as torchvision's `Resize`), then the centre
    /// `size × size` (torchvision's `CenterCrop`). Images `[n, 3, size, size]`, labels `[n]`;
    /// undecodable files are left out and counted.
    pub fn eval_images(&self, idx: &[usize], size: u32, crop: f64) -> Result<Split, DataError> {
        let target = (f64::from(size) / crop).ceil() as u32;
        let plane = (size * size) as usize;
        let mut images = Vec::with_capacity(idx.len() * 3 * plane);
        let mut labels = Vec::with_capacity(idx.len());
        let mut resizer = Resizer::new();
        for &k in idx {
            let got = self.read(k).and_then(|b| decode_image(&b));
            let img = match got {
                Ok(img) if img.w > 0 && img.h > 0 => img,
                Ok(_) => {
                    self.record_bad(&self.samples[k].path, "empty image".into())?;
                    continue;
                }
                Err(reason) => {
                    self.record_bad(&self.samples[k].path, reason)?;
                    continue;
                }
            };
            let (w, h) = (u64::from(img.w), u64::from(img.h));
            let t = u64::from(target);
            let (nw, nh) = if w <= h {
                (t, h * t / w)
            } else {
                (w * t / h, t)
            };
            let (nw, nh) = (
                nw.max(u64::from(size)) as u32,
                nh.max(u64::from(size)) as u32,
            );
            let resized =
                resize_box(&mut resizer, &img, (0, 0, img.w, img.h), (nw, nh)).map_err(|e| {
                    DataError::BadFile {
                        path: self.samples[k].path.clone(),
                        reason: format!("cannot resize ({e})"),
                    }
                })?;
            let (x0, y0) = (centre_offset(nw, size), centre_offset(nh, size));
            let start = images.len();
            images.resize(start + 3 * plane, 0);
            let dst = &mut images[start..];
            for y in 0..size {
                for x in 0..size {
                    let s = 3 * (((y0 + y) * nw + x0 + x) as usize);
                    let o = (y * size + x) as usize;
                    for c in 0..3 {
                        dst[c * plane + o] = resized[s + c];
                    }
                }
            }
            labels.push(self.samples[k].label);
        }
        let n = labels.len() as i64;
        let s = i64::from(size);
        Ok(Split {
            images: Tensor::from_slice(&images).reshape([n, 3, s, s]),
            labels: Tensor::from_slice(&labels),
        })
    }
}

/// Write an ImageNet-layout folder of real JPEG files (quality 90) for tests and benchmarks:
/// `train/<class>/<i>.jpg`, `per_class` images per class, about `w × h` pixels each (sizes vary
/// a little), each class a distinct colour field with seeded noise, so it is learnable.
pub fn write_synthetic_folder(
    dir: &Path,
    classes: usize,
    per_class: usize,
    (w, h): (u32, u32),
    seed: u64,
) -> Result<(), DataError> {
    use image::codecs::jpeg::JpegEncoder;
    use rand::Rng;
    for c in 0..classes {
        let cdir = dir.join(format!("n{c:08}"));
        std::fs::create_dir_all(&cdir).map_err(|e| io_err(&cdir, e))?;
        let base = [
            (40 + 97 * c) % 256,
            (200 + 61 * c) % 256,
            (120 + 143 * c) % 256,
        ];
        for i in 0..per_class {
            let mut rng = ChaCha8Rng::seed_from_u64(mix(&[seed, c as u64, i as u64]));
            let (iw, ih) = (
                w - rng.random_range(0..=w / 10),
                h - rng.random_range(0..=h / 10),
            );
            let mut px = Vec::with_capacity((iw * ih * 3) as usize);
            for y in 0..ih {
                for x in 0..iw {
                    let n: i32 = rng.random_range(-24..=24);
                    for (ch, b) in base.iter().enumerate() {
                        let grad = ((x + y * (ch as u32 + 1)) % 64) as i32;
                        px.push((*b as i32 + grad + n).clamp(0, 255) as u8);
                    }
                }
            }
            let path = cdir.join(format!("{i:06}.jpg"));
            let f = std::fs::File::create(&path).map_err(|e| io_err(&path, e))?;
            let mut wr = std::io::BufWriter::new(f);
            JpegEncoder::new_with_quality(&mut wr, 90)
                .encode(&px, iw, ih, image::ExtendedColorType::Rgb8)
                .map_err(|e| DataError::BadFile {
                    path: path.clone(),
                    reason: format!("cannot encode ({e})"),
                })?;
        }
    }
    Ok(())
}
