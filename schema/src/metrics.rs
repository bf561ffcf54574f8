//! A run's `metrics.jsonl`: one JSON object per line, tagged by `kind`, appended as the run goes.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::SchemaError;

/// One line of `metrics.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum MetricsLine {
    /// Training progress, every `log_every` steps (means over the steps since the last line).
    Step(StepLine),
    /// Images that failed to decode in a phase (streaming data).
    Data(DataLine),
    /// A phase's validation table, at its end.
    Validation(PhaseTable),
    /// A data-parallel phase end: the ranks agreed on the weights.
    Ranks(RanksLine),
    /// The run branched from another run's checkpoint.
    Branch(BranchLine),
    /// A fine-tuning run's held-out evaluation (after each epoch; epoch 0: the start).
    Epoch(EpochLine),
}

impl MetricsLine {
    /// The run's step the line was written at, where it says.
    pub fn global_step(&self) -> Option<u64> {
        match self {
            MetricsLine::Step(s) => Some(s.global_step),
            MetricsLine::Ranks(r) => Some(r.global_step),
            MetricsLine::Branch(b) => Some(b.global_step),
            MetricsLine::Epoch(e) => Some(e.global_step),
            MetricsLine::Data(_) | MetricsLine::Validation(_) => None,
        }
    }

    /// The line as written (compact JSON, no newline).
    pub fn to_line(&self) -> String {
        crate::to_json(self)
    }
}

/// `kind: step`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepLine {
    /// The phase's name.
    pub phase: String,
    /// Steps done in the phase.
    pub step: u64,
    /// Steps done in the run.
    pub global_step: u64,
    /// Mean training loss.
    pub loss: f64,
    /// Mean training top-1, percent.
    pub top1: f64,
    /// Learning rate at the last step.
    pub lr: f64,
    /// Training throughput.
    pub images_per_s: f64,
    /// Seconds the steps waited for data.
    pub data_wait_s: f64,
    /// Seconds of training so far (over all sessions).
    pub elapsed_s: f64,
}

/// `kind: epoch` (fine-tuning runs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochLine {
    /// Epochs done (fractional for a last partial epoch).
    pub epoch: f64,
    /// Steps done.
    pub global_step: u64,
    /// Held-out top-1, percent.
    pub heldout_top1: f64,
    /// Whether it is the best so far (what `subnet.safetensors` now holds).
    pub best: bool,
    /// Seconds of training so far (over all sessions).
    pub elapsed_s: f64,
}

/// `kind: data`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataLine {
    /// The phase's name.
    pub phase: String,
    /// Images skipped so far, over all ranks.
    pub bad_images: i64,
    /// The recipe's `max_bad_images`.
    pub limit: u64,
    /// The files and why each failed.
    pub files: Vec<BadFile>,
    /// Per rank, in a data-parallel run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bad_images_per_rank: Option<Vec<i64>>,
}

/// An image that failed to decode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BadFile {
    /// Its path.
    pub path: String,
    /// Why.
    pub reason: String,
}

/// `kind: ranks`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RanksLine {
    /// The phase's name.
    pub phase: String,
    /// Steps done in the run.
    pub global_step: u64,
    /// Ranks in the job.
    pub world_size: usize,
    /// The collective backend (`gloo`, `nccl`).
    pub backend: String,
    /// The weights' fingerprint every rank agreed on (16 hex digits).
    pub weights_fingerprint: String,
}

/// `kind: branch`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BranchLine {
    /// The checkpoint branched from, as given.
    pub from: String,
    /// Its recipe's name.
    pub recipe: String,
    /// Phases it had completed.
    pub phases: usize,
    /// Its step.
    pub global_step: u64,
}

/// A phase's validation table (in `metrics.jsonl`, the checkpoint state and the card).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhaseTable {
    /// The phase's name.
    pub phase: String,
    /// Its rows: min, mid and max subnets at the smallest and largest resolution.
    pub rows: Vec<ValidationRow>,
}

/// Which of a phase's subnets a row measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SubnetSize {
    /// Every choice at the phase's smallest.
    Min,
    /// Every choice at the phase's middle one.
    Mid,
    /// Every choice at the phase's largest.
    Max,
}

impl SubnetSize {
    /// `min`, `mid` or `max`.
    pub fn name(self) -> &'static str {
        match self {
            SubnetSize::Min => "min",
            SubnetSize::Mid => "mid",
            SubnetSize::Max => "max",
        }
    }
}

/// One subnet of a phase's validation table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ValidationRow {
    /// Which subnet.
    pub subnet: SubnetSize,
    /// Its input resolution.
    pub resolution: u32,
    /// Held-out top-1 after BN recalibration, percent.
    pub val_top1: f64,
    /// Test top-1, percent (after the last phase).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_top1: Option<f64>,
}

/// A run's log as read.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricsLog {
    /// Its lines, in order.
    pub lines: Vec<MetricsLine>,
    /// Whether the last line was cut short (a run killed while appending it): left out.
    pub torn_tail: bool,
}

/// Read `metrics.jsonl`. Every line must parse, except a last line without its newline that does
/// not (an append interrupted by a kill), which is left out and reported as `torn_tail`.
pub fn read_metrics(path: &Path) -> Result<MetricsLog, SchemaError> {
    let text = std::fs::read_to_string(path).map_err(|source| SchemaError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_metrics(path, &text)
}

/// [`read_metrics`] of `text` (read from `path`).
pub fn parse_metrics(path: &Path, text: &str) -> Result<MetricsLog, SchemaError> {
    let mut lines = Vec::new();
    let mut torn_tail = false;
    let n = text.split_inclusive('\n').count();
    for (i, raw) in text.split_inclusive('\n').enumerate() {
        let line = raw.trim_end_matches(['\n', '\r']);
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<MetricsLine>(line) {
            Ok(l) => lines.push(l),
            Err(_) if i + 1 == n && !raw.ends_with('\n') => torn_tail = true,
            Err(e) => return Err(SchemaError::parse(path, Some(i + 1), e)),
        }
    }
    Ok(MetricsLog { lines, torn_tail })
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = concat!(
        r#"{"kind":"step","phase":"full","step":10,"global_step":10,"loss":2.1,"top1":31.0,"lr":0.1,"images_per_s":900.0,"data_wait_s":0.01,"elapsed_s":3.5}"#,
        "\n",
        r#"{"kind":"validation","phase":"full","rows":[{"subnet":"max","resolution":32,"val_top1":80.5,"test_top1":80.1},{"subnet":"min","resolution":32,"val_top1":70.0}]}"#,
        "\n",
        r#"{"kind":"ranks","phase":"full","global_step":10,"world_size":2,"backend":"gloo","weights_fingerprint":"00ff00ff00ff00ff"}"#,
        "\n",
        r#"{"kind":"data","phase":"full","bad_images":1,"limit":10,"files":[{"path":"a.jpg","reason":"not a JPEG"}]}"#,
        "\n",
        r#"{"kind":"branch","from":"runs/a/checkpoint.safetensors","recipe":"fmnist","phases":1,"global_step":10}"#,
        "\n",
    );

    #[test]
    fn every_kind_round_trips_to_the_same_bytes() {
        let log = parse_metrics(Path::new("m.jsonl"), LOG).expect("parses");
        assert_eq!(log.lines.len(), 5);
        assert!(!log.torn_tail);
        let again: String = log.lines.iter().map(|l| l.to_line() + "\n").collect();
        assert_eq!(again, LOG);
        assert_eq!(log.lines[0].global_step(), Some(10));
        assert_eq!(log.lines[1].global_step(), None);
    }

    #[test]
    fn a_bad_line_is_named_and_only_an_unterminated_last_line_is_torn() {
        let path = Path::new("runs/x/metrics.jsonl");
        let torn = format!("{LOG}{{\"kind\":\"step\",\"pha");
        let log = parse_metrics(path, &torn).expect("a torn tail is not an error");
        assert!(log.torn_tail);
        assert_eq!(log.lines.len(), 5);
        let bad = LOG.replacen("\"kind\":\"ranks\"", "\"kind\":\"rank\"", 1);
        let e = parse_metrics(path, &bad)
            .expect_err("an unknown kind")
            .to_string();
        assert!(e.starts_with("runs/x/metrics.jsonl, line 3: "), "{e}");
        let bad = LOG.replacen("\"loss\":2.1", "\"loss\":\"high\"", 1);
        let e = parse_metrics(path, &bad)
            .expect_err("a string loss")
            .to_string();
        assert!(e.contains("line 1"), "{e}");
        // a complete last line that does not parse is damage, not a torn append
        let e = parse_metrics(path, &format!("{LOG}{{}}\n")).expect_err("damage");
        assert!(e.to_string().contains("line 6"), "{e}");
    }
}
