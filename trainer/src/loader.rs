//! Batches decoded and augmented on worker threads, with a bounded prefetch queue per worker,
//! delivered in step order. Each batch is a pure function of (seed, phase, step), so the stream is
//! the same whatever the number of workers, and a resumed run sees the batches it would have seen.

use std::sync::mpsc::{sync_channel, Receiver};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tch::Tensor;

use crate::augment::{match_channels, train_batch, AugmentConfig};
use crate::data::Split;

pub use ofa_package::seed::mix;

/// What decides a phase's batches.
#[derive(Debug, Clone)]
pub struct BatchPlan {
    /// Run seed.
    pub seed: u64,
    /// Phase index (phases draw different orders).
    pub phase: u64,
    /// Examples per batch (the last partial batch of an epoch is dropped).
    pub batch_size: usize,
    /// Resolutions, one drawn uniformly per batch.
    pub resolutions: Vec<u32>,
    /// Input channels the network expects.
    pub channels: i64,
    /// Augmentation.
    pub augment: AugmentConfig,
}

impl BatchPlan {
    /// Full batches per epoch of a split of `n` examples.
    pub fn batches_per_epoch(&self, n: usize) -> u64 {
        (n / self.batch_size.max(1)).max(1) as u64
    }

    /// The example indices of step `step` (epoch-wise seeded permutation).
    pub fn indices(&self, n: usize, step: u64) -> Vec<i64> {
        let nb = self.batches_per_epoch(n);
        let (epoch, b) = (step / nb, step % nb);
        let mut perm: Vec<i64> = (0..n as i64).collect();
        perm.shuffle(&mut ChaCha8Rng::seed_from_u64(mix(&[
            self.seed, self.phase, epoch, 1,
        ])));
        let bs = self.batch_size.min(n);
        let start = b as usize * bs;
        perm[start..start + bs].to_vec()
    }

    /// The resolution of step `step`.
    pub fn resolution(&self, step: u64) -> u32 {
        let mut rng = ChaCha8Rng::seed_from_u64(mix(&[self.seed, self.phase, step, 2]));
        self.resolutions[rng.random_range(0..self.resolutions.len())]
    }

    /// Build the batch of step `step` from `split` (images augmented, labels).
    pub fn batch(&self, split: &Split, step: u64) -> Batch {
        let idx = Tensor::from_slice(&self.indices(split.len(), step));
        let r = self.resolution(step);
        let mut rng = ChaCha8Rng::seed_from_u64(mix(&[self.seed, self.phase, step, 3]));
        let images = split.images.index_select(0, &idx);
        let x = train_batch(&images, i64::from(r), &self.augment, &mut rng);
        Batch {
            step,
            x: match_channels(&x, self.channels),
            y: split.labels.index_select(0, &idx),
            resolution: r,
        }
    }
}

/// One training batch.
#[derive(Debug)]
pub struct Batch {
    /// Phase step it belongs to.
    pub step: u64,
    /// Augmented, normalised images `[B, C, r, r]` (CPU).
    pub x: Tensor,
    /// Labels `[B]`.
    pub y: Tensor,
    /// Its resolution.
    pub resolution: u32,
}

/// Worker threads producing the batches of steps `start..end` in order.
#[derive(Debug)]
pub struct Loader {
    receivers: Vec<Receiver<Batch>>,
    handles: Vec<JoinHandle<()>>,
    next: u64,
    start: u64,
    end: u64,
    waited: Duration,
}

impl Loader {
    /// Start `workers` threads (at least 1), each keeping up to `prefetch` batches ready.
    pub fn new(
        split: &Split,
        plan: &BatchPlan,
        start: u64,
        end: u64,
        workers: usize,
        prefetch: usize,
    ) -> Loader {
        let workers = workers.max(1);
        let mut receivers = Vec::with_capacity(workers);
        let mut handles = Vec::with_capacity(workers);
        for w in 0..workers as u64 {
            let (tx, rx) = sync_channel(prefetch.max(1));
            let mine = Split {
                images: split.images.shallow_clone(),
                labels: split.labels.shallow_clone(),
            };
            let plan = plan.clone();
            handles.push(std::thread::spawn(move || {
                let _guard = tch::no_grad_guard();
                // Intra-op threads are per OS thread: keep augmentation to one core so it does
                // not oversubscribe the cores the training thread uses.
                tch::set_num_threads(1);
                let mut step = start + w;
                while step < end {
                    if tx.send(plan.batch(&mine, step)).is_err() {
                        return;
                    }
                    step += workers as u64;
                }
            }));
            receivers.push(rx);
        }
        Loader {
            receivers,
            handles,
            next: start,
            start,
            end,
            waited: Duration::ZERO,
        }
    }

    /// Time the consumer spent waiting for batches.
    pub fn waited(&self) -> Duration {
        self.waited
    }
}

impl Iterator for Loader {
    type Item = Batch;

    fn next(&mut self) -> Option<Batch> {
        if self.next >= self.end {
            return None;
        }
        let w = ((self.next - self.start) % self.receivers.len() as u64) as usize;
        let t = Instant::now();
        let b = self.receivers[w].recv().ok();
        self.waited += t.elapsed();
        self.next += 1;
        b
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        // Closing the receivers makes every worker's next send fail, so they stop.
        self.receivers.clear();
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}
