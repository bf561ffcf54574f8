//! The phase-end validation table: the phase's smallest, middle and largest subnets at the
//! smallest and largest resolution, each recalibrated and scored on the held-out split (and on
//! the test split after the last phase).

use ofa_package::measure::{recalibrated, top1, Recalibration};
use ofa_schema::metrics::{SubnetSize, ValidationRow};
use ofa_space::ArchConfig;
use ofa_supernet::Supernet;

use super::{Ctx, TrainError};

impl Ctx {
    /// The table of phase `pi`: min / mid / max subnets of the phase's choices at the smallest and
    /// largest resolution, each after BN recalibration, scored on the validation split; rows
    /// `{subnet, resolution, val_top1[, test_top1]}` in percent.
    pub(super) fn validate(
        &self,
        net: &Supernet,
        pi: usize,
    ) -> Result<Vec<ValidationRow>, TrainError> {
        let phase = &self.recipe.phases[pi];
        let choices = phase.choices(&self.space);
        let res = &self.space.resolutions;
        let rs = [
            *res.iter().min().unwrap_or(&32),
            *res.iter().max().unwrap_or(&32),
        ];
        let v = &self.recipe.validation;
        // The table's rows in order, each pointing at a distinct subnet to measure: min, mid
        // and max coincide where a phase has one choice, and are measured once.
        let mut slots: Vec<(SubnetSize, u32, usize)> = Vec::new();
        let mut jobs: Vec<ArchConfig> = Vec::new();
        for (label, at) in [
            (SubnetSize::Min, choices.smallest(&self.space)),
            (SubnetSize::Mid, choices.middle(&self.space)),
            (SubnetSize::Max, choices.largest(&self.space)),
        ] {
            for &r in rs.iter() {
                let arch = ArchConfig { r, ..at.clone() };
                let job = match jobs.iter().position(|a| *a == arch) {
                    Some(j) => j,
                    None => {
                        jobs.push(arch);
                        jobs.len() - 1
                    }
                };
                slots.push((label, r, job));
                if rs[0] == rs[1] {
                    break;
                }
            }
        }
        // In a data-parallel run the subnets are shared out between the ranks and the scores
        // summed (each score has one non-zero term, so the sum is exact).
        let (rank, world) = self.group().map_or((0, 1), |g| (g.rank(), g.world()));
        let last = pi + 1 == self.recipe.phases.len();
        let mut scores = vec![0.0f64; 2 * jobs.len()];
        for (j, arch) in jobs.iter().enumerate() {
            if j % world != rank {
                continue;
            }
            let sub = recalibrated(
                net,
                arch,
                &self.calib,
                &self.recipe.augment,
                &Recalibration {
                    images: usize::MAX,
                    batch: v.batch_size,
                    seed: self.recipe.train.seed,
                },
            )?;
            scores[2 * j] = top1(
                &sub,
                &self.val,
                arch.r,
                &self.recipe.augment,
                v.batch_size,
                v.images,
            )?;
            scores[2 * j + 1] = match (&self.test, last) {
                (Some(test), true) => {
                    test.top1(&sub, arch.r, &self.recipe.augment, v.batch_size)?
                }
                _ => f64::NAN,
            };
        }
        if let Some(g) = self.group() {
            scores = g.sum_f64(&scores)?;
        }
        Ok(slots
            .iter()
            .map(|&(subnet, resolution, j)| ValidationRow {
                subnet,
                resolution,
                val_top1: scores[2 * j] * 100.0,
                test_top1: (!scores[2 * j + 1].is_nan()).then(|| scores[2 * j + 1] * 100.0),
            })
            .collect())
    }
}
