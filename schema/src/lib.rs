//! The files `ofa` writes and reads, as serde types, in one place (no libtorch).
//!
//! Every writer serialises one of these types and every reader deserialises it: no file crosses a
//! crate boundary as `serde_json::Value`. A file that does not parse is a [`SchemaError`] naming
//! the file (and the line, for JSONL), never a default.
//!
//! - [`files`]: the names of a package's and a run's files.
//! - [`metrics`]: a run's `metrics.jsonl`, one [`metrics::MetricsLine`] per line, and the
//!   phase-end validation table ([`metrics::PhaseTable`]) that the checkpoint state and the card
//!   also carry.
//! - [`finetune`]: a fine-tuning run's settings, state and the `finetune` metadata of its subnet.
//! - [`net_config`]: the reference static networks' config JSON ([`net_config::NetConfig`]).
//! - [`run`]: the checkpoint's [`run::CheckpointState`], `run.json` ([`run::RunInfo`]) and the
//!   package's `card.json` ([`run::RunCard`]).

pub mod bench;
pub mod files;
pub mod finetune;
pub mod metrics;
pub mod net_config;
pub mod run;

use std::path::{Path, PathBuf};

/// A file that does not read as its schema.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    /// It cannot be read.
    #[error("cannot read {}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// It is not what its schema says (`line`: 1-based, for JSONL files).
    #[error("{}{}: {reason}", path.display(), line.map(|l| format!(", line {l}")).unwrap_or_default())]
    Parse {
        /// The file.
        path: PathBuf,
        /// The line, for JSONL files.
        line: Option<usize>,
        /// What is wrong.
        reason: String,
    },
}

impl SchemaError {
    fn parse(path: &Path, line: Option<usize>, reason: impl ToString) -> SchemaError {
        SchemaError::Parse {
            path: path.to_path_buf(),
            line,
            reason: reason.to_string(),
        }
    }
}

/// Compact JSON of a schema value.
///
/// Infallible for the types of this workspace: serde_json fails only on a map with non-string
/// keys or a `Serialize` impl that errors, and none of ours has either (the types are derived and
/// their maps are keyed by strings or integers, which serde_json writes as strings).
pub fn to_json<T: serde::Serialize + ?Sized>(value: &T) -> String {
    serde_json::to_string(value).expect("derived Serialize with string-like keys cannot fail")
}

/// Pretty JSON of a schema value (see [`to_json`] for why it cannot fail).
pub fn to_json_pretty<T: serde::Serialize + ?Sized>(value: &T) -> String {
    serde_json::to_string_pretty(value)
        .expect("derived Serialize with string-like keys cannot fail")
}

/// Read and parse a JSON file as `T`.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, SchemaError> {
    let text = std::fs::read_to_string(path).map_err(|source| SchemaError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|e| SchemaError::parse(path, None, e))
}
