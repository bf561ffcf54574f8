//! A fine-tuning run (`ofa finetune`): its settings (`finetune.json`), where it stands (the
//! checkpoint's `state`), its per-epoch record and the `finetune` metadata of the subnet it writes.

use ofa_space::ArchConfig;
use serde::{Deserialize, Serialize};

/// A fine-tuning run's settings file.
pub const FINETUNE_FILE: &str = "finetune.json";
/// The subnet to deploy: the best held-out epoch.
pub const BEST_FILE: &str = crate::files::SUBNET_FILE;
/// The subnet after the last step.
pub const LAST_FILE: &str = "last.safetensors";
/// `format` of a fine-tuning checkpoint.
pub const FINETUNE_FORMAT: &str = "ofa-finetune/1";

/// Where the student's weights start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum Init {
    /// The weights the subnet inherits from the supernet (what `ofa extract` cuts).
    Inherited,
    /// The same architecture re-initialised as the reference initialises it (`he_fout`): the
    /// control arm.
    Scratch,
}

/// Where the soft labels come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum Teacher {
    /// The package's largest subnet at the student's resolution (as in progressive shrinking).
    Largest,
    /// No distillation: label-smoothed cross-entropy alone.
    None,
}

/// The optimisation of a fine-tuning run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    /// Steps in all (`epochs` × batches per epoch, rounded up, or as asked).
    pub steps: u64,
    /// Full batches per epoch of the training split.
    pub batches_per_epoch: u64,
    /// Global batch size (split evenly between the ranks of a job).
    pub batch_size: usize,
    /// Peak learning rate (after warm-up; cosine decay to 0 over the rest).
    pub lr: f64,
    /// Steps of linear warm-up.
    pub warmup_steps: u64,
    /// Nesterov momentum.
    pub momentum: f64,
    /// L2 weight decay (convolution and linear weights only).
    pub weight_decay: f64,
    /// Label smoothing ε of the cross-entropy.
    pub label_smoothing: f64,
    /// Weight of the distillation term (0 without a teacher).
    pub kd_ratio: f64,
    /// Seed of the batch order, augmentation, dropout and (from scratch) the initialisation.
    pub seed: u64,
}

/// `finetune.json`: what a fine-tuning run was started with (a resume reads it back).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FinetuneSpec {
    /// The package folder, as given.
    pub package: String,
    /// SHA-256 of the package's supernet file (a resume refuses another package).
    pub package_sha256: String,
    /// The dataset folder.
    pub data: String,
    /// The subnet's architecture in the package's space.
    pub arch: ArchConfig,
    /// SHA-256 of the starting subnet (its weights and config as `Subnet::save` writes them with
    /// no extra metadata).
    pub base_sha256: String,
    /// Where the weights start.
    pub init: Init,
    /// Where the soft labels come from.
    pub teacher: Teacher,
    /// The optimisation.
    pub schedule: Schedule,
    /// Asked epochs (absent when asked in steps).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epochs: Option<f64>,
    /// The training device, as libtorch names it.
    pub device: String,
    /// Ranks of the job that started it.
    pub world_size: usize,
}

/// One held-out evaluation (after each epoch, and of the starting weights as epoch 0).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// Epochs done (fractional for a last partial epoch).
    pub epoch: f64,
    /// Steps done.
    pub step: u64,
    /// Held-out top-1, percent.
    pub heldout_top1: f64,
}

/// Where a fine-tuning run stands (saved in every checkpoint's metadata).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FinetuneState {
    /// Steps done.
    pub step: u64,
    /// The evaluations so far, in order.
    pub epochs: Vec<EpochRecord>,
    /// Seconds of training so far (over all sessions).
    pub elapsed_s: f64,
    /// Ranks of the job that saved it.
    pub world_size: usize,
}

impl FinetuneState {
    /// The best evaluation so far (the earliest of equals).
    pub fn best(&self) -> Option<&EpochRecord> {
        self.epochs.iter().fold(None, |best, e| match best {
            Some(b) if b.heldout_top1 >= e.heldout_top1 => Some(b),
            _ => Some(e),
        })
    }
}

/// The `finetune` metadata of a fine-tuned subnet file (and the run's summary).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FinetuneRecord {
    /// SHA-256 of the starting subnet.
    pub base_sha256: String,
    /// Where the weights started.
    pub init: Init,
    /// Where the soft labels came from.
    pub teacher: Teacher,
    /// The optimisation.
    pub schedule: Schedule,
    /// Epochs trained (steps / batches per epoch).
    pub epochs: f64,
    /// The evaluation this file holds (the best one for `subnet.safetensors`, the last one for
    /// `last.safetensors`).
    pub chosen: EpochRecord,
    /// Every held-out evaluation of the run.
    pub history: Vec<EpochRecord>,
    /// Test top-1 of this file's weights, percent (where the dataset has a test split).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_top1: Option<f64>,
    /// Seconds of training (over all sessions).
    pub train_s: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_best_epoch_is_the_first_of_the_highest() {
        let e = |epoch: f64, top1: f64| EpochRecord {
            epoch,
            step: epoch as u64,
            heldout_top1: top1,
        };
        let mut s = FinetuneState::default();
        assert_eq!(s.best(), None);
        s.epochs = vec![e(0.0, 80.0), e(1.0, 82.0), e(2.0, 81.0), e(3.0, 82.0)];
        assert_eq!(s.best().map(|b| b.epoch), Some(1.0));
    }

    #[test]
    fn settings_round_trip_in_the_files_spelling() {
        let json = r#"{"package":"p","package_sha256":"a","data":"d",
            "arch":{"ks":[3],"e":[3],"d":[1],"r":32},"base_sha256":"b","init":"scratch",
            "teacher":"none","schedule":{"steps":4,"batches_per_epoch":2,"batch_size":16,
            "lr":0.01,"warmup_steps":0,"momentum":0.9,"weight_decay":0.0,
            "label_smoothing":0.1,"kd_ratio":0.0,"seed":0},"device":"Cpu","world_size":1}"#;
        let s: FinetuneSpec = serde_json::from_str(json).expect("parses");
        assert_eq!(
            (s.init, s.teacher, s.epochs),
            (Init::Scratch, Teacher::None, None)
        );
        let back: FinetuneSpec = serde_json::from_str(&crate::to_json(&s)).expect("round trip");
        assert_eq!(back, s);
        assert!(serde_json::from_str::<Init>("\"random\"").is_err());
    }
}
