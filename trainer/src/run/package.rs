//! The run's final package: `supernet.safetensors`, `calibration.safetensors` and `card.json`.

use std::collections::BTreeMap;

use ofa_supernet::checkpoint::{write_atomic, write_safetensors};
use ofa_supernet::{Provenance, Supernet};
use serde_json::json;

use super::{Ctx, RunState, TrainError};

impl Ctx {
    /// Write the package (rank 0 alone).
    pub(super) fn write_package(&self, net: &Supernet, state: &RunState) -> Result<(), TrainError> {
        if !self.lead() {
            return Ok(());
        }
        let prov = Provenance {
            dataset: Some(self.dataset.clone()),
            recipe: Some(self.recipe.name.clone()),
            phase: self.recipe.phases.last().map(|p| p.name.clone()),
            step: Some(state.global_step),
            seed: Some(self.recipe.train.seed),
            source: Some("ofa train".into()),
        };
        let metrics = json!({"tables": state.tables});
        net.save(
            &self.dir.join("supernet.safetensors"),
            &prov,
            Some(&metrics),
        )?;
        let mut meta = BTreeMap::new();
        meta.insert("format".to_string(), "ofa-calibration/1".to_string());
        meta.insert(
            "augment".to_string(),
            serde_json::to_string(&self.recipe.augment).unwrap_or_default(),
        );
        write_safetensors(
            &self.dir.join("calibration.safetensors"),
            &[
                ("images".to_string(), self.calib.images.shallow_clone()),
                ("labels".to_string(), self.calib.labels.shallow_clone()),
            ],
            &meta,
        )?;
        let card = json!({
            "name": self.recipe.name,
            "space": self.space,
            "dataset": self.dataset,
            "recipe": self.recipe,
            "steps": state.global_step,
            "train_seconds": state.elapsed_s,
            "validation": state.tables,
            "branched_from": state.branched_from,
            "world_size": state.world_size.max(1),
            "backend": state.backend,
            "files": {"supernet": "supernet.safetensors", "calibration": "calibration.safetensors"},
        });
        write_atomic(
            &self.dir.join("card.json"),
            serde_json::to_string_pretty(&card)
                .unwrap_or_default()
                .as_bytes(),
        )?;
        Ok(())
    }
}
