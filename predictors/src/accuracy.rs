//! The accuracy predictor: an MLP over a one-hot [`Encoding`] of the architecture.
//!
//! Model (reference `nas/accuracy_predictor/acc_predictor.py`): `n` × (Linear + ReLU), then a
//! Linear to one output, plus a fixed `base_acc`. Output and targets are top-1 as a fraction.
//!
//! Fast path for search: the first layer of a one-hot input is the bias plus a sum of ~41 weight
//! columns (no dense input, no multiply); the hidden layers run through a register-tiled kernel
//! (AVX-512 or AVX2 + FMA picked at run time, no packing, so small batches are as fast per arch as
//! large ones) over chunks of archs spread over rayon. Each prediction is computed in the same
//! order in any batch and any chunk, so results are bit-identical whatever the batch or the
//! thread count.
//!
//! File: safetensors with the reference library's names (`layers.{i}.0.weight|bias`,
//! `layers.{n}.weight` [+ `.bias`], `base_acc`), so the reference `AccuracyPredictor` can load our
//! files, and metadata `format`, `encoding` (JSON), `space`, `metrics`. The tutorial's
//! `nn.Sequential` naming (`0.weight` … `6.bias`) loads too.

use std::collections::BTreeMap;
use std::path::Path;

use ofa_space::encoding::MAX_HOT;
use ofa_space::{ArchConfig, Encoding, SearchSpace};
use rayon::prelude::*;
use tch::{Kind, Tensor};

use crate::PredictorError;

/// `format` of an accuracy predictor file.
pub const FORMAT: &str = "ofa-accuracy-predictor/1";

/// Most archs per GEMM chunk (bigger chunks amortise packing the weights: 1024 measured best).
pub const CHUNK: usize = 1024;

/// Chunk size for a batch of `n`: one chunk per thread, at most [`CHUNK`]. Every prediction is
/// computed in the same order whatever its chunk (see [`crate::kernel`]), so chunking can follow
/// the thread count without changing any result.
fn chunk_for(n: usize) -> usize {
    n.div_ceil(rayon::current_num_threads().max(1))
        .clamp(1, CHUNK)
}

/// A dense layer, weights `[out][in]` row-major (PyTorch layout).
#[derive(Debug, Clone)]
struct Dense {
    /// `[out][in]`, as stored.
    w: Vec<f32>,
    /// `[in][out]`, as the kernel reads it.
    wt: Vec<f32>,
    b: Vec<f32>,
    n_in: usize,
    n_out: usize,
}

/// The accuracy predictor (see the module documentation).
#[derive(Debug, Clone)]
pub struct AccuracyPredictor {
    encoding: Encoding,
    /// First layer, transposed: `[dim][hidden]`, so a hot index selects a contiguous row.
    first_t: Vec<f32>,
    first_b: Vec<f32>,
    hidden: Vec<Dense>,
    out_w: Vec<f32>,
    out_b: f32,
    base_acc: f32,
    /// File metadata besides the model (space name, metrics …).
    pub metadata: BTreeMap<String, String>,
}

fn to_vec(t: &Tensor) -> Result<Vec<f32>, PredictorError> {
    let t = t.to_kind(Kind::Float).contiguous().view(-1);
    Ok(Vec::<f32>::try_from(&t)?)
}

impl AccuracyPredictor {
    /// Build from PyTorch-layout layers: `(weight [out, in], bias)` for each hidden layer, the
    /// output layer's weight `[1, in]` and optional bias, and `base_acc`.
    pub fn from_layers(
        encoding: Encoding,
        layers: &[(Tensor, Tensor)],
        out_w: &Tensor,
        out_b: Option<&Tensor>,
        base_acc: f32,
    ) -> Result<AccuracyPredictor, PredictorError> {
        let Some((w0, b0)) = layers.first() else {
            return Err(PredictorError::Model("no hidden layer".into()));
        };
        let dim = encoding.dim() as i64;
        let s0 = w0.size();
        if s0.len() != 2 || s0[1] != dim {
            return Err(PredictorError::Model(format!(
                "first layer has shape {s0:?}, the encoding has {dim} inputs"
            )));
        }
        let first_t = to_vec(&w0.tr())?;
        let first_b = to_vec(b0)?;
        let mut n_in = s0[0] as usize;
        let mut hidden = Vec::new();
        for (i, (w, b)) in layers.iter().enumerate().skip(1) {
            let s = w.size();
            if s.len() != 2 || s[1] as usize != n_in || b.size() != [s[0]] {
                return Err(PredictorError::Model(format!(
                    "layer {i} has weight {s:?} and bias {:?}, its input is {n_in} wide",
                    b.size()
                )));
            }
            hidden.push(Dense {
                w: to_vec(w)?,
                wt: to_vec(&w.tr())?,
                b: to_vec(b)?,
                n_in,
                n_out: s[0] as usize,
            });
            n_in = s[0] as usize;
        }
        if out_w.size() != [1, n_in as i64] {
            return Err(PredictorError::Model(format!(
                "output layer has shape {:?}, expected [1, {n_in}]",
                out_w.size()
            )));
        }
        let out_b = match out_b {
            Some(b) => *to_vec(b)?.first().unwrap_or(&0.0),
            None => 0.0,
        };
        Ok(AccuracyPredictor {
            encoding,
            first_t,
            first_b,
            hidden,
            out_w: to_vec(out_w)?,
            out_b,
            base_acc,
            metadata: BTreeMap::new(),
        })
    }

    /// The encoding it reads.
    pub fn encoding(&self) -> &Encoding {
        &self.encoding
    }

    /// The fixed offset added to the output.
    pub fn base_acc(&self) -> f32 {
        self.base_acc
    }

    /// Check that this predictor can score archs of `space` over `resolutions`.
    pub fn check_space(
        &self,
        space: &SearchSpace,
        resolutions: &[u32],
    ) -> Result<(), PredictorError> {
        self.encoding
            .check_space(space)
            .map_err(|e| PredictorError::Space(format!("predictor does not fit the space: {e}")))?;
        if let Some(r) = resolutions
            .iter()
            .find(|r| !self.encoding.resolutions.contains(r))
        {
            return Err(PredictorError::Space(format!(
                "predictor does not fit the space: resolution {r} is not encoded (encoded: {:?})",
                self.encoding.resolutions
            )));
        }
        Ok(())
    }

    /// Load a predictor file: ours, the reference library's or the tutorial's naming. Files
    /// without an `encoding` in their metadata use `fallback`, or the tutorial encoding when the
    /// input is 128 wide and the naming is the tutorial's.
    pub fn load(
        path: &Path,
        fallback: Option<Encoding>,
    ) -> Result<AccuracyPredictor, PredictorError> {
        let file = ofa_supernet::checkpoint::read_safetensors(path)?;
        let t = &file.tensors;
        let bad = |m: String| PredictorError::File {
            path: path.to_path_buf(),
            reason: m,
        };
        let get = |n: &str| {
            t.get(n)
                .ok_or_else(|| bad(format!("tensor `{n}` is missing")))
        };
        if let Some(f) = file.metadata.get("format") {
            if f.starts_with("ofa-") && f != FORMAT {
                // another file of ours (a supernet, a subnet …) or a future version
                return Err(bad(format!("format is `{f}`, expected `{FORMAT}`")));
            }
        }
        let tutorial = t.contains_key("0.weight");
        let mut layers = Vec::new();
        let (out_w, out_b, base) = if tutorial {
            let mut i = 0;
            while t.contains_key(&format!("{}.weight", i + 2)) {
                layers.push((
                    get(&format!("{i}.weight"))?.shallow_clone(),
                    get(&format!("{i}.bias"))?.shallow_clone(),
                ));
                i += 2;
            }
            (
                get(&format!("{i}.weight"))?,
                t.get(&format!("{i}.bias")),
                0.0,
            )
        } else {
            let mut i = 0;
            while t.contains_key(&format!("layers.{i}.0.weight")) {
                layers.push((
                    get(&format!("layers.{i}.0.weight"))?.shallow_clone(),
                    get(&format!("layers.{i}.0.bias"))?.shallow_clone(),
                ));
                i += 1;
            }
            let base = match t.get("base_acc") {
                Some(b) => *to_vec(b)?.first().unwrap_or(&0.0),
                None => 0.0,
            };
            (
                get(&format!("layers.{i}.weight"))?,
                t.get(&format!("layers.{i}.bias")),
                base,
            )
        };
        let ours = file.metadata.get("format").map(String::as_str) == Some(FORMAT);
        let encoding = match file.metadata.get("encoding").filter(|_| ours) {
            Some(j) => serde_json::from_str(j)
                .map_err(|e| bad(format!("metadata `encoding` does not parse: {e}")))?,
            None => match fallback {
                Some(e) => e,
                None if tutorial && layers.first().map(|l| l.0.size()[1]) == Some(128) => {
                    Encoding::tutorial()
                }
                None => {
                    return Err(bad(
                        "no `encoding` in the metadata; say which space it was trained for".into(),
                    ))
                }
            },
        };
        let mut p = AccuracyPredictor::from_layers(encoding, &layers, out_w, out_b, base)
            .map_err(|e| bad(e.to_string()))?;
        if ours {
            p.metadata = file.metadata;
            p.metadata.remove("format");
            p.metadata.remove("encoding");
        }
        Ok(p)
    }

    /// Tensors under the reference library's names.
    pub fn tensors(&self) -> Vec<(String, Tensor)> {
        let h0 = self.first_b.len() as i64;
        let dim = self.encoding.dim() as i64;
        let mut out = vec![
            (
                "layers.0.0.weight".to_string(),
                Tensor::from_slice(&self.first_t)
                    .view([dim, h0])
                    .tr()
                    .contiguous(),
            ),
            (
                "layers.0.0.bias".to_string(),
                Tensor::from_slice(&self.first_b),
            ),
        ];
        for (i, d) in self.hidden.iter().enumerate() {
            out.push((
                format!("layers.{}.0.weight", i + 1),
                Tensor::from_slice(&d.w).view([d.n_out as i64, d.n_in as i64]),
            ));
            out.push((format!("layers.{}.0.bias", i + 1), Tensor::from_slice(&d.b)));
        }
        let n = self.hidden.len() + 1;
        out.push((
            format!("layers.{n}.weight"),
            Tensor::from_slice(&self.out_w).view([1, self.out_w.len() as i64]),
        ));
        if self.out_b != 0.0 {
            out.push((
                format!("layers.{n}.bias"),
                Tensor::from_slice(&[self.out_b]),
            ));
        }
        out.push(("base_acc".to_string(), Tensor::from_slice(&[self.base_acc])));
        out
    }

    /// Write the predictor atomically (tensors + metadata with format and encoding).
    pub fn save(&self, path: &Path) -> Result<(), PredictorError> {
        let mut meta = self.metadata.clone();
        meta.insert("format".into(), FORMAT.into());
        meta.insert("encoding".into(), ofa_schema::to_json(&self.encoding));
        ofa_supernet::checkpoint::write_safetensors(path, &self.tensors(), &meta)?;
        Ok(())
    }

    /// Predicted top-1 (fraction) of one arch.
    pub fn predict(&self, arch: &ArchConfig) -> Result<f32, PredictorError> {
        Ok(self.predict_batch(std::slice::from_ref(arch))?[0])
    }

    /// Predicted top-1 (fraction) of every arch, in order. Fixed chunks of archs are encoded and
    /// scored in parallel; the first arch that cannot be encoded (in order) is the error.
    pub fn predict_batch(&self, archs: &[ArchConfig]) -> Result<Vec<f32>, PredictorError> {
        let mut out = vec![0f32; archs.len()];
        let chunk = chunk_for(archs.len());
        out.par_chunks_mut(chunk)
            .zip(archs.par_chunks(chunk))
            .map(|(dst, archs)| {
                let mut hot = Vec::with_capacity(archs.len() * MAX_HOT);
                let mut offsets = Vec::with_capacity(archs.len() + 1);
                offsets.push(0usize);
                let mut buf = Vec::with_capacity(MAX_HOT);
                for a in archs {
                    self.encoding.hot_into(a, &mut buf)?;
                    hot.extend_from_slice(&buf);
                    offsets.push(hot.len());
                }
                self.score_chunk(&hot, &offsets, dst);
                Ok(())
            })
            .collect::<Result<Vec<()>, PredictorError>>()?;
        Ok(out)
    }

    /// Score one chunk: `offsets` has `dst.len() + 1` entries into `hot`.
    fn score_chunk(&self, hot: &[u32], offsets: &[usize], dst: &mut [f32]) {
        let m = dst.len();
        let h0 = self.first_b.len();
        let mut x = vec![0f32; m * h0];
        for (row, xr) in x.chunks_exact_mut(h0).enumerate() {
            xr.copy_from_slice(&self.first_b);
            for &j in &hot[offsets[row]..offsets[row + 1]] {
                let col = &self.first_t[j as usize * h0..(j as usize + 1) * h0];
                for (a, b) in xr.iter_mut().zip(col) {
                    *a += b;
                }
            }
            relu(xr);
        }
        for d in &self.hidden {
            let mut y = vec![0f32; m * d.n_out];
            for yr in y.chunks_exact_mut(d.n_out) {
                yr.copy_from_slice(&d.b);
            }
            linear_acc(&x, d, &mut y, m);
            relu(&mut y);
            x = y;
        }
        let n = self.out_w.len();
        for (row, o) in dst.iter_mut().enumerate() {
            let xr = &x[row * n..(row + 1) * n];
            let s: f32 = xr.iter().zip(&self.out_w).map(|(a, b)| a * b).sum();
            *o = s + self.out_b + self.base_acc;
        }
    }
}

fn relu(v: &mut [f32]) {
    for a in v {
        *a = a.max(0.0);
    }
}

/// `y[m × out] += x[m × in] · dᵀ` (single-threaded; rayon parallelises over chunks above).
fn linear_acc(x: &[f32], d: &Dense, y: &mut [f32], m: usize) {
    crate::kernel::matmul_acc(x, &d.wt, y, m, d.n_in, d.n_out);
}

impl ofa_search::AccuracyModel for AccuracyPredictor {
    fn predict(&self, archs: &[ArchConfig]) -> Result<Vec<f64>, ofa_search::SearchError> {
        Ok(self
            .predict_batch(archs)
            .map_err(|e| ofa_search::SearchError::Accuracy(Box::new(e)))?
            .into_iter()
            .map(f64::from)
            .collect())
    }
}
