//! The names of the files `ofa` writes.

/// A package's supernet checkpoint.
pub const SUPERNET_FILE: &str = "supernet.safetensors";
/// A package's BN-recalibration images (uint8 `images`, int64 `labels`, metadata `augment`).
pub const CALIBRATION_FILE: &str = "calibration.safetensors";
/// A package's run card ([`crate::run::RunCard`]).
pub const CARD_FILE: &str = "card.json";
/// A package's accuracy predictor.
pub const ACCURACY_FILE: &str = "accuracy.safetensors";
/// A package's folder of latency tables, one `<hardware>.json` each.
pub const LATENCY_DIR: &str = "latency";

/// A run's log, one [`crate::metrics::MetricsLine`] per line.
pub const METRICS_FILE: &str = "metrics.jsonl";
/// A run's settings ([`crate::run::RunInfo`]).
pub const RUN_INFO_FILE: &str = "run.json";

/// A subnet's weights (`ofa extract`, `ofa finetune`: the file to deploy).
pub const SUBNET_FILE: &str = "subnet.safetensors";
/// A subnet's reference `net.config` JSON.
pub const NET_CONFIG_FILE: &str = "net.config.json";
