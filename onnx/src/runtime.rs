//! ONNX Runtime, the runtime deployments run our ONNX files in, loaded at run time from the PyPI
//! wheel's `libonnxruntime.so` (`make setup` puts it in the project's `.onnxruntime/`; the
//! `ORT_DYLIB_PATH` variable names another). A missing or unloadable library is
//! [`OnnxError::Runtime`] with how to install it, never a crash: the library is found and opened
//! here before the `ort` crate (which panics on a bad path) touches it.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Instant;

use ort::session::builder::GraphOptimizationLevel;
use ort::session::Session;
use ort::value::Tensor;

use crate::OnnxError;

/// Where `make setup` installs the wheel, relative to the workspace.
const PROJECT_SITE: &str = ".onnxruntime/site/onnxruntime/capi";

fn runtime_error(message: impl Into<String>) -> OnnxError {
    OnnxError::Runtime(message.into())
}

/// The ONNX Runtime library: `ORT_DYLIB_PATH`, else the project's wheel.
pub fn library_path() -> Result<PathBuf, OnnxError> {
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(runtime_error(format!(
                "ORT_DYLIB_PATH={} is not a file",
                p.display()
            )))
        };
    }
    let site = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(PROJECT_SITE);
    let found = std::fs::read_dir(&site).ok().and_then(|rd| {
        let mut libs: Vec<PathBuf> = rd
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("libonnxruntime.so"))
            })
            .collect();
        libs.sort();
        libs.pop()
    });
    found.ok_or_else(|| {
        runtime_error(format!(
            "ONNX Runtime is not installed: no libonnxruntime.so in {} (run `make setup`, which \
             installs the PyPI wheel onnxruntime there, or set ORT_DYLIB_PATH to a \
             libonnxruntime.so)",
            site.display()
        ))
    })
}

/// The oldest ONNX Runtime the `ort` crate here works with (its C API version 22).
const MIN_MINOR: u32 = 22;

/// The head of ONNX Runtime's `OrtApiBase` (C ABI): what is read to learn the version.
#[repr(C)]
struct OrtApiBase {
    get_api: unsafe extern "C" fn(u32) -> *const std::ffi::c_void,
    get_version_string: unsafe extern "C" fn() -> *const std::ffi::c_char,
}

/// Open the library at `path` and read its version, without `ort` (which panics on a bad file or
/// an old version).
#[allow(unsafe_code)]
fn probe(path: &Path) -> Result<String, String> {
    // SAFETY: loading a shared library runs its initialisers; this is ONNX Runtime's library (the
    // PyPI wheel's, or the one ORT_DYLIB_PATH names), which `ort` loads the same way next.
    let lib = unsafe { libloading::Library::new(path) }
        .map_err(|e| format!("cannot load ONNX Runtime from {}: {e}", path.display()))?;
    // SAFETY: `OrtGetApiBase` is ONNX Runtime's one exported entry point, `const OrtApiBase*
    // OrtGetApiBase(void)`; the struct it points to starts with the two function pointers of
    // `OrtApiBase` (stable since 1.0), and the version string it returns is static.
    let version = unsafe {
        let get: libloading::Symbol<unsafe extern "C" fn() -> *const OrtApiBase> = lib
            .get(b"OrtGetApiBase")
            .map_err(|e| format!("{} is not ONNX Runtime: {e}", path.display()))?;
        let base = get();
        if base.is_null() {
            return Err(format!(
                "{}: OrtGetApiBase returned nothing",
                path.display()
            ));
        }
        let v = ((*base).get_version_string)();
        if v.is_null() {
            return Err(format!("{}: no version string", path.display()));
        }
        std::ffi::CStr::from_ptr(v).to_string_lossy().into_owned()
    };
    let minor = version
        .split('.')
        .nth(1)
        .and_then(|m| m.parse::<u32>().ok());
    match minor {
        Some(m) if m >= MIN_MINOR => Ok(version),
        _ => Err(format!(
            "ONNX Runtime {version} at {} is too old: 1.{MIN_MINOR} or later is needed (make setup \
             installs 1.32.0)",
            path.display()
        )),
    }
}

/// Load the library and set up `ort`'s environment, once per process; its version.
fn init() -> Result<String, OnnxError> {
    static INIT: OnceLock<Result<String, String>> = OnceLock::new();
    INIT.get_or_init(|| {
        let path = library_path().map_err(|e| e.to_string())?;
        let version = probe(&path)?;
        let p = path.display().to_string();
        ort::init_from(p.clone())
            .with_name("ofa")
            .commit()
            .map_err(|e| format!("ONNX Runtime at {p}: {e}"))?;
        Ok(version)
    })
    .clone()
    .map_err(runtime_error)
}

/// The version of the ONNX Runtime library in use (`1.32.0`), loading it if need be.
pub fn version() -> Result<String, OnnxError> {
    init()
}

/// A session for the model `bytes` on the CPU execution provider: `threads` intra-op threads, one
/// inter-op, sequential execution, every graph optimisation (as a deployment runs it, and as the
/// probes' timing script does).
fn session(bytes: &[u8], threads: usize) -> Result<Session, OnnxError> {
    init()?;
    let e = |e: ort::Error| runtime_error(e.to_string());
    Session::builder()
        .map_err(e)?
        .with_optimization_level(GraphOptimizationLevel::Level3)
        .map_err(e)?
        .with_intra_threads(threads.max(1))
        .map_err(e)?
        .with_inter_threads(1)
        .map_err(e)?
        .with_parallel_execution(false)
        .map_err(e)?
        .commit_from_memory(bytes)
        .map_err(e)
}

/// A model in an ONNX Runtime session that maps a float32 batch to its first output.
#[derive(Debug)]
pub struct Runner {
    session: Session,
}

impl Runner {
    /// A session for the model `bytes` (see [`Timed::new`] for its settings).
    pub fn new(bytes: &[u8], threads: usize) -> Result<Runner, OnnxError> {
        Ok(Runner {
            session: session(bytes, threads)?,
        })
    }

    /// The first output for the input `data` of `shape` (row-major): its shape and values.
    pub fn run(
        &mut self,
        shape: [usize; 4],
        data: Vec<f32>,
    ) -> Result<(Vec<i64>, Vec<f32>), OnnxError> {
        let e = |e: ort::Error| runtime_error(e.to_string());
        let input = Tensor::from_array((shape, data)).map_err(e)?;
        let out = self.session.run(ort::inputs![input]).map_err(e)?;
        let (dims, values) = out[0].try_extract_tensor::<f32>().map_err(e)?;
        Ok((dims.iter().copied().collect(), values.to_vec()))
    }
}

/// One model in an ONNX Runtime session, ready to be timed at batch 1.
#[derive(Debug)]
pub struct Timed {
    session: Session,
    input: Tensor<f32>,
}

impl Timed {
    /// A session for the model `bytes` on the CPU execution provider: `threads` intra-op threads,
    /// one inter-op, sequential execution, every graph optimisation (as a deployment runs it, and
    /// as the probes' timing script does), fed a seeded random input of `shape`.
    pub fn new(bytes: &[u8], shape: &[i64], threads: usize) -> Result<Timed, OnnxError> {
        let session = session(bytes, threads)?;
        let n: usize = shape.iter().map(|d| (*d).max(0) as usize).product();
        // a fixed pseudo-random input (latency does not depend on the values)
        let data: Vec<f32> = (0..n)
            .map(|i| ((i as u64).wrapping_mul(2_654_435_761) % 1000) as f32 / 500.0 - 1.0)
            .collect();
        let input = Tensor::from_array((shape, data)).map_err(|e| runtime_error(e.to_string()))?;
        Ok(Timed { session, input })
    }

    /// Run once; the wall time in ms.
    pub fn run_ms(&mut self) -> Result<f64, OnnxError> {
        let t = Instant::now();
        let out = self
            .session
            .run(ort::inputs![&self.input])
            .map_err(|e| runtime_error(e.to_string()))?;
        drop(out);
        Ok(t.elapsed().as_secs_f64() * 1e3)
    }

    /// `warmup` untimed runs, then `repeats` timed ones, ms.
    pub fn times_ms(&mut self, warmup: usize, repeats: usize) -> Result<Vec<f64>, OnnxError> {
        for _ in 0..warmup {
            self.run_ms()?;
        }
        (0..repeats.max(1)).map(|_| self.run_ms()).collect()
    }

    /// `warmup` untimed runs, then the median of `repeats` timed ones, ms.
    pub fn median_ms(&mut self, warmup: usize, repeats: usize) -> Result<f64, OnnxError> {
        let mut ms = self.times_ms(warmup, repeats)?;
        ms.sort_by(f64::total_cmp);
        Ok(ms[ms.len() / 2])
    }
}
