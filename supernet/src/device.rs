//! Devices: CUDA support is loaded at start-up when present, so one binary serves CPU-only and
//! GPU machines.
//!
//! The binary links only `libtorch_cpu` and `libc10` (the linker's `--as-needed` drops
//! `libtorch_cuda` anyway, since no symbol of it is referenced). [`init`] opens
//! `libtorch_cuda.so` (next to libtorch, or on the loader path) with `RTLD_GLOBAL`; its static
//! initialisers register the CUDA backend with libtorch, after which `tch::Cuda::is_available()`
//! tells the truth.

use std::sync::OnceLock;

use tch::Device;

/// What [`init`] found.
#[derive(Debug, Clone)]
pub struct CudaStatus {
    /// Path of the CUDA backend library that was loaded, if any.
    pub loaded: Option<String>,
    /// Why it was not loaded (missing library, missing dependencies), if it was not.
    pub reason: Option<String>,
}

static STATUS: OnceLock<CudaStatus> = OnceLock::new();

/// The libtorch library directory this binary was built against.
pub fn libtorch_dir() -> &'static str {
    env!("OFA_LIBTORCH_LIB")
}

/// Load libtorch's CUDA backend when it exists (idempotent; cheap after the first call).
pub fn init() -> &'static CudaStatus {
    STATUS.get_or_init(|| {
        let dir = libtorch_dir();
        let mut candidates = Vec::new();
        if !dir.is_empty() {
            candidates.push(format!("{dir}/libtorch_cuda.so"));
        }
        candidates.push("libtorch_cuda.so".to_string());
        let mut reason = None;
        for c in candidates {
            if c.starts_with('/') && !std::path::Path::new(&c).exists() {
                continue;
            }
            match open_global(&c) {
                Ok(()) => {
                    tracing::debug!(lib = %c, "loaded the CUDA backend");
                    return CudaStatus {
                        loaded: Some(c),
                        reason: None,
                    };
                }
                Err(e) if e.contains("cannot open shared object file") && !c.starts_with('/') => {}
                Err(e) => reason = Some(format!("{c}: {e}")),
            }
        }
        CudaStatus {
            loaded: None,
            reason: Some(
                reason
                    .unwrap_or_else(|| "libtorch_cuda.so not installed (CPU-only libtorch)".into()),
            ),
        }
    })
}

#[allow(unsafe_code)]
fn open_global(path: &str) -> Result<(), String> {
    use libloading::os::unix::{Library, RTLD_GLOBAL, RTLD_NOW};
    // SAFETY: loading libtorch_cuda runs its static initialisers, which only register the CUDA
    // backend with the already-loaded libtorch of the same build. The handle is leaked on
    // purpose: the library must stay loaded for the life of the process.
    let lib =
        unsafe { Library::open(Some(path), RTLD_NOW | RTLD_GLOBAL) }.map_err(|e| e.to_string())?;
    std::mem::forget(lib);
    Ok(())
}

/// Parse `cpu`, `cuda`, `cuda:N` (also `gpu`); CUDA devices are checked for availability.
pub fn parse_device(s: &str) -> Result<Device, String> {
    let s = s.trim().to_ascii_lowercase();
    if s == "cpu" {
        return Ok(Device::Cpu);
    }
    let idx = match s.as_str() {
        "cuda" | "gpu" => Some(0usize),
        _ => s.strip_prefix("cuda:").and_then(|n| n.parse().ok()),
    };
    let Some(idx) = idx else {
        return Err(format!(
            "unknown device `{s}` (expected cpu, cuda or cuda:N)"
        ));
    };
    init();
    let n = tch::Cuda::device_count() as usize;
    if idx >= n {
        return Err(format!(
            "device `{s}` is not available: this machine has {n} CUDA device(s){}",
            init()
                .reason
                .as_ref()
                .map(|r| format!(" ({r})"))
                // no reason known: nothing to add
                .unwrap_or_default()
        ));
    }
    Ok(Device::Cuda(idx))
}
