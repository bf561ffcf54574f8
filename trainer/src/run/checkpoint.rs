//! The run checkpoint: one safetensors file holding the supernet, the teacher, the momentum
//! buffers and the [`RunState`] (with the recipe and space in its metadata), written atomically.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use ofa_supernet::checkpoint::{read_safetensors, write_safetensors};
use ofa_supernet::{Layout, Supernet};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tch::Tensor;

use super::{run_err, Ctx, TrainError};
use crate::step::Sgd;

/// `format` of a run checkpoint.
pub const RUN_FORMAT: &str = "ofa-run/1";

/// Where a run stands (saved in every checkpoint).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunState {
    /// Phase being trained (== number of phases when done).
    pub phase: usize,
    /// Steps done in that phase.
    pub step: u64,
    /// Steps done in the whole run.
    pub global_step: u64,
    /// Phase-end validation tables so far.
    pub tables: Vec<Value>,
    /// Seconds of training so far (over all sessions).
    pub elapsed_s: f64,
    /// Ranks of the job that saved it (0 in checkpoints from before data-parallel runs).
    #[serde(default)]
    pub world_size: usize,
    /// Its collective backend (`gloo`, `nccl`; absent on one process).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
    /// The checkpoint this run branched from ([`super::branch`]), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branched_from: Option<Branched>,
}

/// Where a branched run came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Branched {
    /// The checkpoint file, as given.
    pub checkpoint: String,
    /// Its recipe's name.
    pub recipe: String,
    /// Phases it had completed (shared with this run).
    pub phases: usize,
}

/// The [`RunState`] in a run checkpoint's metadata.
pub(super) fn checkpoint_state(
    path: &Path,
    meta: &BTreeMap<String, String>,
) -> Result<RunState, TrainError> {
    if meta.get("format").map(String::as_str) != Some(RUN_FORMAT) {
        return Err(run_err(
            path,
            format!("not a run checkpoint (format {RUN_FORMAT} expected)"),
        ));
    }
    meta.get("state")
        .and_then(|s| serde_json::from_str(s).ok())
        .ok_or_else(|| run_err(path, "metadata has no readable `state`"))
}

/// What a checkpoint holds, loaded onto the run's device in the training layout.
pub(super) struct Loaded {
    /// The supernet.
    pub net: Supernet,
    /// The teacher, once the first phase has ended.
    pub teacher: Option<Supernet>,
    /// Where the run stood.
    pub state: RunState,
    /// The momentum buffers (`momentum.<tensor name>`), saved mid-phase only.
    pub momentum: HashMap<String, Tensor>,
}

impl Ctx {
    /// Save the checkpoint (rank 0 alone).
    pub(super) fn save_checkpoint(
        &self,
        net: &Supernet,
        teacher: Option<&Supernet>,
        opt: Option<&Sgd>,
        state: &RunState,
    ) -> Result<(), TrainError> {
        if !self.lead() {
            return Ok(());
        }
        let mut tensors: Vec<(String, Tensor)> = net
            .tensors()
            .iter()
            .map(|(s, t)| (format!("net.{}", s.name), t.shallow_clone()))
            .collect();
        if let Some(te) = teacher {
            tensors.extend(
                te.tensors()
                    .iter()
                    .map(|(s, t)| (format!("teacher.{}", s.name), t.shallow_clone())),
            );
        }
        if let Some(o) = opt {
            tensors.extend(o.state(net));
        }
        let mut meta = BTreeMap::new();
        meta.insert("format".to_string(), RUN_FORMAT.to_string());
        meta.insert("space".to_string(), self.space.to_json());
        meta.insert(
            "state".to_string(),
            serde_json::to_string(state).unwrap_or_default(),
        );
        meta.insert("recipe".to_string(), self.recipe.to_toml());
        write_safetensors(&self.dir.join("checkpoint.safetensors"), &tensors, &meta)?;
        Ok(())
    }

    pub(super) fn load_checkpoint(&self, path: &Path) -> Result<Loaded, TrainError> {
        let f = read_safetensors(path)?;
        let state = checkpoint_state(path, &f.metadata)?;
        let (mut netm, mut teachm, mut mom) = (HashMap::new(), HashMap::new(), HashMap::new());
        for (k, t) in f.tensors {
            if let Some(n) = k.strip_prefix("net.") {
                netm.insert(n.to_string(), t);
            } else if let Some(n) = k.strip_prefix("teacher.") {
                teachm.insert(n.to_string(), t);
            } else {
                mom.insert(k, t);
            }
        }
        let device = self.opts.device;
        // Training runs on channels-last weights (faster oneDNN convolutions); files are NCHW.
        let cl = Layout::ChannelsLast;
        let net = Supernet::from_tensors(&self.space, netm, device)?.to_layout(cl)?;
        let teacher = if teachm.is_empty() {
            None
        } else {
            Some(Supernet::from_tensors(&self.space, teachm, device)?.to_layout(cl)?)
        };
        Ok(Loaded {
            net,
            teacher,
            state,
            momentum: mom,
        })
    }
}
