//! The run's final package: `supernet.safetensors`, `calibration.safetensors` and `card.json`.

use std::collections::BTreeMap;

use ofa_schema::run::{CardFiles, RunCard, SupernetMetrics};
use ofa_supernet::checkpoint::{write_atomic, write_safetensors};
use ofa_supernet::{Provenance, Supernet};

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
        let metrics = SupernetMetrics {
            tables: state.tables.clone(),
        };
        net.save(
            &self.dir.join("supernet.safetensors"),
            &prov,
            Some(&metrics),
        )?;
        let mut meta = BTreeMap::new();
        meta.insert("format".to_string(), "ofa-calibration/1".to_string());
        meta.insert(
            "augment".to_string(),
            ofa_schema::to_json(&self.recipe.augment),
        );
        write_safetensors(
            &self.dir.join("calibration.safetensors"),
            &[
                ("images".to_string(), self.calib.images.shallow_clone()),
                ("labels".to_string(), self.calib.labels.shallow_clone()),
            ],
            &meta,
        )?;
        let card = RunCard {
            name: self.recipe.name.clone(),
            space: self.space.clone(),
            dataset: self.dataset.clone(),
            recipe: &self.recipe,
            steps: state.global_step,
            train_seconds: state.elapsed_s,
            validation: state.tables.clone(),
            branched_from: state.branched_from.clone(),
            world_size: state.world_size.max(1),
            backend: state.backend.clone(),
            files: CardFiles::default(),
        };
        write_atomic(
            &self.dir.join(ofa_schema::files::CARD_FILE),
            ofa_schema::to_json_pretty(&card).as_bytes(),
        )?;
        Ok(())
    }
}
