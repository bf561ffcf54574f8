//! The reports of `ofa bench …`: with `--json`, one object each, tagged by `"benchmark"`. The CLI
//! builds the typed report, prints it as JSON or renders its table from the same fields.

use ofa_space::ArchConfig;
use serde::{Deserialize, Serialize};

/// Order statistics of timings (ms).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Samples.
    pub n: usize,
    /// Median.
    pub median_ms: f64,
    /// 10th percentile.
    pub p10_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// Fastest.
    pub min_ms: f64,
    /// Slowest.
    pub max_ms: f64,
}

impl Summary {
    /// Summarise `ms` (empty → all zeros).
    pub fn of(mut ms: Vec<f64>) -> Summary {
        if ms.is_empty() {
            return Summary {
                n: 0,
                median_ms: 0.0,
                p10_ms: 0.0,
                p90_ms: 0.0,
                min_ms: 0.0,
                max_ms: 0.0,
            };
        }
        ms.sort_by(f64::total_cmp);
        let q = |p: f64| ms[((ms.len() - 1) as f64 * p).round() as usize];
        Summary {
            n: ms.len(),
            median_ms: q(0.5),
            p10_ms: q(0.1),
            p90_ms: q(0.9),
            min_ms: ms[0],
            max_ms: ms[ms.len() - 1],
        }
    }
}

/// Every report, by its `"benchmark"` name.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "benchmark", rename_all = "snake_case")]
pub enum BenchReport {
    /// `ofa bench extract`.
    Extract(ExtractReport),
    /// `ofa bench train`.
    Train(TrainReport),
    /// `ofa bench predict`.
    Predict(PredictReport),
    /// `ofa bench search`.
    Search(SearchReport),
    /// `ofa bench serve`.
    Serve(ServeReport),
    /// `ofa bench quality`.
    Quality(QualityReport),
    /// `ofa bench hardware`.
    Hardware(HardwareReport),
    /// `ofa bench data`.
    Data(DataReport),
    /// `ofa bench finetune`.
    Finetune(FinetuneReport),
    /// `ofa bench strategies`.
    Strategies(StrategiesReport),
}

/// The search strategies at equal evaluation budgets, several seeds each.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StrategiesReport {
    /// Seeds per cell.
    pub seeds: usize,
    /// Rayon threads.
    pub threads: usize,
    /// One row per (problem, latency budget, evaluation budget, strategy).
    pub rows: Vec<StrategyRow>,
    /// Problems left out, with the reason (the Note10 data absent).
    pub skipped: Vec<String>,
}

/// One cell of [`StrategiesReport`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StrategyRow {
    /// `note10` (the reference predictor and Note10 tables) or the package's name.
    pub problem: String,
    /// Latency bound, ms.
    pub latency_ms: f64,
    /// Accuracy predictions allowed.
    pub evaluations: usize,
    /// `evolution`, `aging` or `random`.
    pub strategy: String,
    /// Mean predicted top-1 over the seeds, percent.
    pub mean_top1: f64,
    /// Worst seed's, percent.
    pub worst_top1: f64,
    /// Mean regret against the best any strategy found at any budget for this problem and
    /// latency bound, points.
    pub mean_regret: f64,
    /// Worst seed's regret, points.
    pub worst_regret: f64,
    /// Mean wall time of one search, seconds.
    pub mean_wall_s: f64,
}

/// A fine-tuning step of one subnet next to a progressive-shrinking step on the same subnet.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FinetuneReport {
    /// The package.
    pub package: String,
    /// The subnet.
    pub arch: ofa_space::ArchConfig,
    /// Images per step.
    pub batch: i64,
    /// libtorch's intra-op threads.
    pub threads: i32,
    /// Whether the steps distil from the package's largest subnet.
    pub teacher: bool,
    /// `ofa finetune`'s step: the standalone subnet's weights (a `Student`).
    pub finetune: StepThroughput,
    /// `ofa train`'s step on the same subnet: the supernet's sliced weights.
    pub train: StepThroughput,
    /// `finetune.images_per_s / train.images_per_s`.
    pub ratio: f64,
}

/// Throughput of one kind of training step.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepThroughput {
    /// Images per second (batch / median step).
    pub images_per_s: f64,
    /// Step times.
    pub step_ms: Summary,
}

/// Subnet extraction time, by kind of arch.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExtractReport {
    /// The space's name.
    pub space: String,
    /// libtorch's intra-op threads.
    pub threads: i32,
    /// Median over every arch.
    pub median_ms: f64,
    /// Spread over every arch.
    pub spread: Spread,
    /// By kind of arch.
    pub by_arch: ByArch,
    /// Eval forward of the largest extracted subnet.
    pub forward_largest: Forward,
}

/// The 10th and 90th percentiles.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Spread {
    /// 10th percentile, ms.
    pub p10_ms: f64,
    /// 90th percentile, ms.
    pub p90_ms: f64,
}

/// Extraction times of the largest, smallest and random archs.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct ByArch {
    /// The largest subnet.
    pub largest: Summary,
    /// The smallest subnet.
    pub smallest: Summary,
    /// Random subnets.
    pub random: Summary,
}

/// Eval-mode forward timing.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Forward {
    /// Input resolution.
    pub resolution: i64,
    /// Batch size.
    pub batch: i64,
    /// Median, ms.
    pub median_ms: f64,
    /// 10th percentile, ms.
    pub p10_ms: f64,
    /// 90th percentile, ms.
    pub p90_ms: f64,
    /// Images per second at the median.
    pub images_per_s: f64,
}

/// Training step throughput.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainReport {
    /// The space's name.
    pub space: String,
    /// Its width multiplier.
    pub width_mult: f64,
    /// Its classes.
    pub n_classes: u32,
    /// Global batch.
    pub batch: i64,
    /// Input resolution.
    pub resolution: u32,
    /// Subnets trained per step.
    pub subnets_per_step: usize,
    /// `cpu` or `cuda:N`.
    pub device: String,
    /// libtorch's intra-op threads.
    pub threads: i32,
    /// `fp32`, `bf16` or `fp16` (the trainer's `Precision`, by name).
    pub precision: String,
    /// Memory layout of activations.
    pub layout: Layout,
    /// Images per second at the median step.
    pub images_per_s: f64,
    /// Step times.
    pub step_ms: Summary,
    /// Mean time per step of each part.
    pub breakdown_ms: Breakdown,
    /// Ranks.
    pub world_size: usize,
    /// Their backend, with several.
    pub backend: Option<String>,
    /// The all-reduce's share of the wall time.
    pub allreduce_share: f64,
    /// Gradient bytes all-reduced per step.
    pub reduced_bytes_per_step: usize,
    /// Peak resident memory, MiB (Linux).
    pub peak_rss_mib: Option<f64>,
    /// With a streamed image folder: how long the steps waited for data.
    #[serde(flatten)]
    pub data: Option<DataWait>,
}

/// Activation memory layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Layout {
    /// NCHW, contiguous.
    Nchw,
    /// NHWC strides.
    ChannelsLast,
}

/// Mean time per training step of each part, ms.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Breakdown {
    /// The teacher's soft labels.
    pub teacher_forward: f64,
    /// Student forwards.
    pub student_forward: f64,
    /// Backward passes.
    pub backward: f64,
    /// Zeroing and the SGD update.
    pub optimizer: f64,
    /// Gradient averaging across ranks.
    pub allreduce: f64,
}

/// The data side of a training benchmark on a streamed folder.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DataWait {
    /// The folder.
    pub data: String,
    /// Decoding workers.
    pub workers: usize,
    /// Seconds the steps waited for batches.
    pub data_wait_s: f64,
    /// Their share of the wall time.
    pub data_wait_share: f64,
}

/// Predictor throughput.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PredictReport {
    /// Archs predicted.
    pub archs: usize,
    /// Rayon threads.
    pub threads: usize,
    /// The accuracy predictor: its file, or the random one of the reference's size.
    pub predictor: String,
    /// Accuracy: encode + predict, archs per second.
    pub archs_per_s: f64,
    /// Median seconds of one pass over the archs.
    pub median_s: f64,
    /// MACs from the compiled table, archs per second.
    pub macs_archs_per_s: f64,
    /// Parameters from the compiled table, archs per second.
    pub params_archs_per_s: f64,
    /// MACs counted layer by layer, archs per second.
    pub macs_direct_count_archs_per_s: f64,
    /// The reference's figures.
    pub reference: PredictReference,
}

/// The reference's predictor figures, archs per second.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct PredictReference {
    /// Encode + predict.
    pub encode_predict_archs_per_s: f64,
    /// The MLP forward alone.
    pub forward_archs_per_s: f64,
    /// Its FLOPs model.
    pub flops_model_archs_per_s: f64,
}

/// Evolutionary search time.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SearchReport {
    /// Population.
    pub population: usize,
    /// Generations.
    pub generations: usize,
    /// The MACs bound, millions.
    pub max_macs_m: f64,
    /// Rayon threads.
    pub threads: usize,
    /// Wall time of the median run, s.
    pub wall_s: f64,
    /// Of which the accuracy predictor, s.
    pub predict_s: f64,
    /// Distinct archs evaluated.
    pub evaluated: usize,
    /// Children drawn.
    pub draws: usize,
    /// Every run's wall time, s, fastest first.
    pub runs_s: Vec<f64>,
    /// The reference's wall time, s.
    pub reference_wall_s: f64,
}

/// The HTTP service under load.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServeReport {
    /// The package served.
    pub package: String,
    /// wrk connections.
    pub connections: u32,
    /// Cached `GET /v1/subnets/{id}`, requests per second.
    pub cached_get_rps: f64,
    /// Its 99th percentile, ms.
    pub cached_get_p99_ms: f64,
    /// Its errors.
    pub cached_get_errors: u64,
    /// Cached `POST /v1/subnets`, requests per second.
    pub cached_post_rps: f64,
    /// Its 99th percentile, ms.
    pub cached_post_p99_ms: f64,
    /// Its errors.
    pub cached_post_errors: u64,
    /// Cold searches: median, ms.
    pub cold_post_p50_ms: f64,
    /// Cold searches.
    pub cold_post: Summary,
    /// First downloads (cut + BN recalibration): median, ms.
    pub first_weights_p50_ms: f64,
    /// First downloads.
    pub first_weights: Summary,
    /// Resident memory growth over the sustained run, percent.
    pub rss_growth_pct: f64,
    /// Resident memory over the sustained run.
    pub rss_mib: Rss,
    /// The sustained run, requests per second.
    pub sustained_get_rps: f64,
    /// Its errors.
    pub sustained_get_errors: u64,
}

/// Resident memory samples, MiB.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Rss {
    /// First sample.
    pub start: f64,
    /// Last sample.
    pub end: f64,
    /// Samples.
    pub samples: usize,
    /// Largest sample.
    pub max: f64,
}

/// Onboarding a device.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HardwareReport {
    /// The package.
    pub package: String,
    /// Where the probes were timed.
    pub runtime: String,
    /// libtorch's intra-op threads.
    pub threads: i32,
    /// Probes.
    pub probes: usize,
    /// Choosing and exporting them, s.
    pub probes_export_s: f64,
    /// Their ONNX files, bytes.
    pub probes_onnx_bytes: usize,
    /// Timing them and fitting, s.
    pub calibrate_s: f64,
    /// The fit alone, s.
    pub fit_s: f64,
    /// The model the fit chose.
    pub model: String,
    /// Its leave-one-out error on the probes, percent.
    pub loo_mape_pct: f64,
    /// Held-out random subnets timed.
    pub heldout: usize,
    /// The fit's error on them, percent.
    pub heldout_mape_pct: f64,
    /// Share within ±10 %, percent.
    pub within_10pct: f64,
    /// Rank correlation of predicted and measured.
    pub spearman: f64,
}

/// Streaming an image folder into batches.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DataReport {
    /// The folder.
    pub data: String,
    /// Its images.
    pub dataset_images: usize,
    /// Output resolution.
    pub resolution: u32,
    /// Batch size.
    pub batch: usize,
    /// Batches read.
    pub batches: u64,
    /// Decoding workers.
    pub workers: usize,
    /// The JPEG decoder.
    pub decoder: String,
    /// Images per second.
    pub images_per_s: f64,
    /// Per batch, ms.
    pub batch_ms: f64,
    /// Images that failed to decode.
    pub bad_images: usize,
    /// Peak resident memory, MiB (Linux).
    pub peak_rss_mib: Option<f64>,
    /// One image on one thread, by stage.
    pub per_image_ms: PerImage,
    /// Mean file size, KB.
    pub mean_file_kb: f64,
    /// Mean image size, megapixels.
    pub mean_megapixels: f64,
}

/// Time of one image on one thread, by stage, ms.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct PerImage {
    /// Images timed.
    pub images: usize,
    /// Reading the file.
    pub read: f64,
    /// Decoding.
    pub decode: f64,
    /// Crop and resize.
    pub crop_resize: f64,
    /// Colour jitter and normalisation.
    pub jitter_normalize: f64,
}

/// Search quality: each budget's pick against the predictor dataset's best subnet within it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QualityReport {
    /// The package's folder name.
    pub package: String,
    /// The hardware searched.
    pub hardware: String,
    /// Records of the predictor dataset.
    pub dataset_records: usize,
    /// Held-out images.
    pub val_images: usize,
    /// Test images.
    pub test_images: usize,
    /// One row per budget.
    pub rows: Vec<QualityRow>,
    /// The measurement noise, when sampled.
    pub noise: Option<Noise>,
}

/// A subnet scored every way.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Scored {
    /// The subnet.
    pub arch: ArchConfig,
    /// Its MACs, millions.
    pub macs_m: f64,
    /// Predicted top-1.
    pub predicted_top1: f64,
    /// Measured held-out top-1.
    pub val_top1: f64,
    /// Measured test top-1.
    pub test_top1: f64,
    /// Predicted latency, ms.
    pub predicted_latency_ms: f64,
    /// Measured latency, ms.
    pub measured_latency_ms: f64,
}

/// One budget of a quality report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QualityRow {
    /// The budget, ms.
    pub budget_ms: f64,
    /// The search's pick.
    pub search: Scored,
    /// The dataset's best subnet (by measured held-out top-1) within the budget, if any fits.
    pub dataset_best: Option<Scored>,
    /// Dataset subnets within the budget.
    pub dataset_fitting: usize,
    /// Search − dataset best, held-out points.
    pub val_gap: Option<f64>,
    /// Search − dataset best, test points.
    pub test_gap: Option<f64>,
}

/// The noise of one top-1 measurement.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Noise {
    /// Pairs of measurements.
    pub samples: usize,
    /// Standard deviation of one measurement: sd(difference of two) / √2, points.
    pub sd_points: f64,
    /// Largest difference seen, points.
    pub max_diff_points: f64,
    /// Binomial standard error of a top-1 near the dataset's mean on this many images, points.
    pub binomial_se_points: f64,
    /// Images per measurement.
    pub images: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_orders_samples() {
        let s = Summary::of(vec![5.0, 1.0, 3.0, 2.0, 4.0]);
        assert_eq!((s.n, s.median_ms, s.min_ms, s.max_ms), (5, 3.0, 1.0, 5.0));
        assert_eq!(Summary::of(vec![]).n, 0);
    }

    #[test]
    fn a_report_names_its_benchmark_and_reads_back() {
        let r = BenchReport::Search(SearchReport {
            population: 100,
            generations: 500,
            max_macs_m: 300.0,
            threads: 2,
            wall_s: 1.5,
            predict_s: 0.5,
            evaluated: 10,
            draws: 20,
            runs_s: vec![1.5],
            reference_wall_s: 47.8,
        });
        let text = crate::to_json(&r);
        let v: serde_json::Value = serde_json::from_str(&text).expect("JSON");
        assert_eq!(v["benchmark"], "search");
        assert_eq!(v["wall_s"], 1.5);
        let back: BenchReport = serde_json::from_str(&text).expect("reads back");
        assert!(matches!(back, BenchReport::Search(s) if s.evaluated == 10));
    }
}
