//! The run checkpoint: one safetensors file holding the supernet, the teacher, the momentum
//! buffers and the [`RunState`] (with the recipe and space in its metadata), written atomically.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use ofa_supernet::checkpoint::{read_safetensors, write_safetensors};
use ofa_supernet::{Layout, Supernet};
use tch::Tensor;

use super::{run_err, Ctx, TrainError};
use crate::step::Sgd;

/// `format` of a run checkpoint.
pub const RUN_FORMAT: &str = "ofa-run/1";

pub use ofa_schema::run::Branched;
/// Where a run stands (saved in every checkpoint): the schema's checkpoint state.
pub use ofa_schema::run::CheckpointState as RunState;

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
    let state = meta
        .get("state")
        .ok_or_else(|| run_err(path, "metadata has no `state`"))?;
    serde_json::from_str(state).map_err(|e| run_err(path, format!("metadata `state`: {e}")))
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
        meta.insert("state".to_string(), ofa_schema::to_json(state));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(state: Option<&str>) -> BTreeMap<String, String> {
        let mut m = BTreeMap::new();
        m.insert("format".to_string(), RUN_FORMAT.to_string());
        if let Some(s) = state {
            m.insert("state".to_string(), s.to_string());
        }
        m
    }

    #[test]
    fn a_missing_or_corrupt_state_is_named_never_a_fresh_start() {
        let p = Path::new("runs/a/checkpoint.safetensors");
        let good = ofa_schema::to_json(&RunState {
            global_step: 7,
            ..RunState::default()
        });
        assert_eq!(
            checkpoint_state(p, &meta(Some(&good)))
                .map(|s| s.global_step)
                .ok(),
            Some(7)
        );
        for (state, expect) in [
            (None, "metadata has no `state`"),
            (Some(""), "metadata `state`: EOF"),
            (
                Some("{\"phase\": \"two\"}"),
                "metadata `state`: invalid type",
            ),
        ] {
            let e = checkpoint_state(p, &meta(state))
                .expect_err("refused")
                .to_string();
            assert!(
                e.contains("runs/a/checkpoint.safetensors") && e.contains(expect),
                "{e}"
            );
        }
    }
}
