//! Batches decoded and augmented on worker threads, with a bounded prefetch queue per worker,
//! delivered in step order. Each batch is a pure function of (seed, phase, step), so the stream is
//! the same whatever the number of workers, and a resumed run sees the batches it would have seen.
//! The training images are either decoded in memory ([`TrainData::Memory`]) or streamed from an
//! image folder ([`TrainData::Stream`]); a plan can take one rank's shard of every global batch.

use std::ops::Range;
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tch::Tensor;

use crate::augment::{match_channels, train_batch_with, AugmentConfig, SampleAugment};
use crate::data::{DataError, Split};
use crate::folder::FolderStream;

pub use ofa_package::seed::{mix, Stream};

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
    /// `(rank, world size)`: take only this rank's contiguous part of every global batch (data
    /// parallelism); `None` takes the whole batch.
    pub shard: Option<(usize, usize)>,
}

/// The training images of a run.
#[derive(Debug)]
pub enum TrainData {
    /// Decoded in memory (IDX, CIFAR-10, small image folders).
    Memory(Split),
    /// Streamed from an image folder, decoded as each batch is prepared.
    Stream(Arc<FolderStream>),
}

impl TrainData {
    /// Number of training images.
    pub fn len(&self) -> usize {
        match self {
            TrainData::Memory(s) => s.len(),
            TrainData::Stream(s) => s.len(),
        }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Another handle on the same images (no copy).
    pub fn share(&self) -> TrainData {
        match self {
            TrainData::Memory(s) => TrainData::Memory(Split {
                images: s.images.shallow_clone(),
                labels: s.labels.shallow_clone(),
            }),
            TrainData::Stream(s) => TrainData::Stream(Arc::clone(s)),
        }
    }
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
            self.seed,
            self.phase,
            epoch,
            Stream::EpochOrder.tag(),
        ])));
        let bs = self.batch_size.min(n);
        let start = b as usize * bs;
        perm[start..start + bs].to_vec()
    }

    /// The resolution of step `step`.
    pub fn resolution(&self, step: u64) -> u32 {
        let mut rng = ChaCha8Rng::seed_from_u64(mix(&[
            self.seed,
            self.phase,
            step,
            Stream::Resolution.tag(),
        ]));
        self.resolutions[rng.random_range(0..self.resolutions.len())]
    }

    /// The positions of this plan's shard within a global batch of `batch` examples: rank `k`
    /// of `n` takes `[k·batch/n, (k+1)·batch/n)`.
    pub fn shard_range(&self, batch: usize) -> Range<usize> {
        match self.shard {
            Some((rank, world)) if world > 1 => rank * batch / world..(rank + 1) * batch / world,
            _ => 0..batch,
        }
    }

    /// Build the batch of step `step` (this plan's shard of it) from `data`: images augmented
    /// and normalised, labels.
    pub fn batch(&self, data: &TrainData, step: u64) -> Result<Batch, DataError> {
        let all = self.indices(data.len(), step);
        let part = self.shard_range(all.len());
        let r = self.resolution(step);
        let (x, y) = match data {
            TrainData::Memory(split) => {
                // Every image's augmentation is drawn in turn from the batch's generator (the
                // whole batch's draws, whatever the shard, so shards concatenate to the batch).
                let mut rng = ChaCha8Rng::seed_from_u64(mix(&[
                    self.seed,
                    self.phase,
                    step,
                    Stream::Augmentation.tag(),
                ]));
                let s = split.images.size();
                let augs: Vec<SampleAugment> = (0..all.len())
                    .map(|_| SampleAugment::draw(s[2], s[3], s[1], &self.augment, &mut rng))
                    .collect();
                let idx = Tensor::from_slice(&all[part.clone()]);
                let images = split.images.index_select(0, &idx);
                let x = train_batch_with(&images, i64::from(r), &augs[part], &self.augment);
                (x, split.labels.index_select(0, &idx))
            }
            TrainData::Stream(stream) => {
                let idx: Vec<usize> = all[part.clone()].iter().map(|&i| i as usize).collect();
                stream.train_batch(
                    &idx,
                    part.start,
                    r,
                    &self.augment,
                    [self.seed, self.phase, step],
                )?
            }
        };
        Ok(Batch {
            step,
            x: match_channels(&x, self.channels),
            y,
            resolution: r,
        })
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
    receivers: Vec<Receiver<Result<Batch, DataError>>>,
    handles: Vec<JoinHandle<()>>,
    next: u64,
    start: u64,
    end: u64,
    waited: Duration,
}

impl Loader {
    /// Start `workers` threads (at least 1), each keeping up to `prefetch` batches ready.
    pub fn new(
        data: &TrainData,
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
            let mine = data.share();
            let plan = plan.clone();
            handles.push(std::thread::spawn(move || {
                let _guard = tch::no_grad_guard();
                // Intra-op threads are per OS thread: keep augmentation to one core so it does
                // not oversubscribe the cores the training thread uses.
                tch::set_num_threads(1);
                let mut step = start + w;
                while step < end {
                    let b = plan.batch(&mine, step);
                    let failed = b.is_err();
                    // A failed batch ends this worker: the consumer stops at that step.
                    if tx.send(b).is_err() || failed {
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
    type Item = Result<Batch, DataError>;

    fn next(&mut self) -> Option<Result<Batch, DataError>> {
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
