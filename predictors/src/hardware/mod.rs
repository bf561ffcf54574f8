//! Latency models of hardware that `ofa` cannot profile layer by layer, fitted from a few
//! whole-network measurements: probes chosen here ([`choose_probes`]), timed on the device in the
//! runtime it deploys with, then [`fit`].
//!
//! The model is linear with non-negative weights over *features* that are each a sum over the
//! subnet's layers, plus one per-network term:
//!
//! ```text
//! t(arch) = Σ_terms w_t · Σ_{f ∈ t} x_f(arch),   w ≥ 0,   x_f(arch) = Σ_layers φ_f(layer)
//! ```
//!
//! so a fitted model is again a lookup table (`entry(layer) = Σ_t w_t Σ_f φ_f(layer)`, the
//! per-network term as the table's correction `b`), which every command already reads and the
//! search's exact minima still apply to. The features ([`Feature`]) are the base table's time of
//! the blocks and of the other layers, the block count, depthwise and dense MACs, and output
//! elements. A runtime that fuses convolution, BN and activation (ONNX Runtime) has other
//! depthwise-to-pointwise ratios and a larger share of fixed per-operator cost than the runtime
//! that profiled the base table, so one global scale of it is not enough; MACs and counts let the
//! fit move those ratios.
//!
//! Several candidate models ([`CANDIDATES`]: feature groupings from one global scale up to all
//! features) are fitted by non-negative least squares on *relative* error (the loss of MAPE's
//! shape), and the one with the lowest leave-one-out MAPE is kept. Non-negative least squares is
//! solved exactly by trying every support set (at most 2⁷ small solves: see [`nnls_relative`]).

mod features;
mod files;
mod fit;
mod nnls;
mod probes;

use std::path::PathBuf;

pub use features::{all_layers, arch_layers, Feature, Features, Layer, Phi, N_FEATURES};
pub use files::{
    parse_measurements, read_measurements, Environment, Probe, ProbeManifest, MANIFEST_FORMAT,
};
pub use fit::{
    fit, to_table, Candidate, CandidateReport, ErrorStats, FitReport, Measurement, Model,
    ModelChoice, CANDIDATES,
};
pub use nnls::nnls_relative;
pub use probes::{choose_probes, ProbeSelection};

/// Why a hardware model cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum HardwareError {
    /// Fewer measurements than the model needs.
    #[error(
        "{got} measurements are too few for the latency model `{model}`: it needs at least {need} \
         (time more probes: ofa hardware probes --count N)"
    )]
    TooFewMeasurements {
        /// Measurements given.
        got: usize,
        /// The model.
        model: String,
        /// Measurements it needs.
        need: usize,
    },
    /// A measurements file with bad lines (every bad line is listed).
    #[error("{}: {} bad line(s):\n{}", path.display(), problems.len(), lines(problems))]
    Measurements {
        /// The file.
        path: PathBuf,
        /// (1-based line, what is wrong).
        problems: Vec<(usize, String)>,
    },
    /// A file that cannot be read or is not what it should be.
    #[error("{}: {reason}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A model name that does not exist, or that needs a base table when there is none.
    #[error("{0}")]
    Model(String),
    /// The base table lacks a layer a probe or a subnet needs.
    #[error("the base table {table} has no entry `{key}` at resolution {r}")]
    MissingLayer {
        /// The table's device.
        table: String,
        /// Its missing key.
        key: String,
        /// The resolution.
        r: u32,
    },
    /// No fit was possible (degenerate measurements).
    #[error("no non-negative fit of the model `{0}` exists for these measurements")]
    Degenerate(String),
}

fn lines(problems: &[(usize, String)]) -> String {
    problems
        .iter()
        .map(|(l, why)| format!("  line {l}: {why}"))
        .collect::<Vec<_>>()
        .join("\n")
}
