//! Training an accuracy predictor on a dataset of measured subnets (libtorch, CPU).
//!
//! The reference model and the maintainers' advice: MLP `layers` × (Linear `hidden` + ReLU) →
//! Linear(1, no bias) + fixed `base_acc` = mean training target; targets top-1 / 100; MSE; Adam
//! lr 1e-3, weight decay 1e-4 (L2, as `torch.optim.Adam`); seeded 80/20 split. One departure: the
//! output layer is initialised to zero (see [`fit`]).

use std::collections::BTreeMap;

use ofa_space::Encoding;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tch::nn::{self, Module, OptimizerConfig};
use tch::{Device, Kind, Tensor};

use crate::dataset::Record;
use crate::metrics::{quality, Quality};
use crate::{AccuracyPredictor, PredictorError};

/// Training settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FitOptions {
    /// Hidden width (reference 400).
    pub hidden: usize,
    /// Hidden layers (reference 3).
    pub layers: usize,
    /// Passes over the training split.
    pub epochs: usize,
    /// Minibatch size.
    pub batch_size: usize,
    /// Adam learning rate.
    pub lr: f64,
    /// L2 weight decay.
    pub weight_decay: f64,
    /// Fraction held out for the test metrics.
    pub test_fraction: f64,
    /// Seed of the split, the initialisation and the batch order.
    pub seed: u64,
}

impl Default for FitOptions {
    fn default() -> FitOptions {
        FitOptions {
            hidden: 400,
            layers: 3,
            epochs: 200,
            batch_size: 256,
            lr: 1e-3,
            weight_decay: 1e-4,
            test_fraction: 0.2,
            seed: 0,
        }
    }
}

/// What a fit reports (top-1 points for RMSE / MAE).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FitReport {
    /// Training examples.
    pub n_train: usize,
    /// Test examples.
    pub n_test: usize,
    /// `base_acc` (fraction).
    pub base_acc: f64,
    /// Quality on the training split.
    pub train: Quality,
    /// Quality on the test split.
    pub test: Quality,
    /// Settings used.
    pub options: FitOptions,
    /// Wall time.
    pub seconds: f64,
}

fn dense(encoding: &Encoding, records: &[&Record]) -> Result<Tensor, PredictorError> {
    let dim = encoding.dim();
    let mut x = Vec::with_capacity(records.len() * dim);
    for r in records {
        x.extend(encoding.dense(&r.arch)?);
    }
    Ok(Tensor::from_slice(&x).view([records.len() as i64, dim as i64]))
}

/// Fit a predictor on `records` with `encoding` and report its quality.
pub fn fit(
    encoding: Encoding,
    records: &[Record],
    opts: &FitOptions,
) -> Result<(AccuracyPredictor, FitReport), PredictorError> {
    let start = std::time::Instant::now();
    if records.len() < 5 {
        return Err(PredictorError::Data(format!(
            "{} measured archs are too few to fit and test a predictor (need at least 5)",
            records.len()
        )));
    }
    if !(0.0..1.0).contains(&opts.test_fraction) || opts.epochs == 0 || opts.batch_size == 0 {
        return Err(PredictorError::Data(
            "test_fraction must be in [0, 1), epochs and batch_size positive".into(),
        ));
    }
    let mut order: Vec<usize> = (0..records.len()).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
    order.shuffle(&mut rng);
    let n_test = ((records.len() as f64 * opts.test_fraction).round() as usize)
        .clamp(usize::from(opts.test_fraction > 0.0), records.len() - 1);
    let (test_idx, train_idx) = order.split_at(n_test);
    let train: Vec<&Record> = train_idx.iter().map(|i| &records[*i]).collect();
    let test: Vec<&Record> = test_idx.iter().map(|i| &records[*i]).collect();
    let target =
        |rs: &[&Record]| -> Vec<f32> { rs.iter().map(|r| (r.top1 / 100.0) as f32).collect() };
    let y_train = target(&train);
    let base_acc = y_train.iter().map(|v| f64::from(*v)).sum::<f64>() / y_train.len() as f64;
    let x_train = dense(&encoding, &train)?;
    let y_train_t = Tensor::from_slice(&y_train);

    // the layers' initial weights: libtorch's global generator, seeded
    let (vs, model) = ofa_supernet::rng::with_seed(opts.seed, || {
        let vs = nn::VarStore::new(Device::Cpu);
        let root = vs.root();
        let mut seq = nn::seq();
        let mut n_in = encoding.dim() as i64;
        for i in 0..opts.layers {
            seq = seq
                .add(nn::linear(
                    &root / "layers" / i / 0,
                    n_in,
                    opts.hidden as i64,
                    Default::default(),
                ))
                .add_fn(|x| x.relu());
            n_in = opts.hidden as i64;
        }
        let out = nn::linear(
            &root / "layers" / opts.layers,
            n_in,
            1,
            nn::LinearConfig {
                bias: false,
                ..Default::default()
            },
        );
        // The output layer starts at zero, so the untrained model predicts `base_acc`
        // everywhere and training fits residuals: with the default init, the random initial
        // output (±0.1, ten top-1 points) survives on archs unlike the training set and ruins
        // small-data fits.
        tch::no_grad(|| {
            let _ = out.ws.shallow_clone().zero_();
        });
        (vs, seq.add(out))
    });
    let mut adam = nn::Adam {
        wd: opts.weight_decay,
        ..Default::default()
    }
    .build(&vs, opts.lr)?;
    let n = train.len();
    let mut idx: Vec<i64> = (0..n as i64).collect();
    for _ in 0..opts.epochs {
        idx.shuffle(&mut rng);
        for chunk in idx.chunks(opts.batch_size) {
            let sel = Tensor::from_slice(chunk);
            let x = x_train.index_select(0, &sel);
            let y = y_train_t.index_select(0, &sel);
            let pred = model.forward(&x).squeeze_dim(1) + base_acc;
            let loss = pred.mse_loss(&y, tch::Reduction::Mean);
            adam.backward_step(&loss);
        }
    }

    // Move the trained weights into the fast predictor.
    let vars: BTreeMap<String, Tensor> = vs.variables().into_iter().collect();
    let get = |n: &str| {
        vars.get(n)
            .map(|t| t.detach().to_kind(Kind::Float))
            .ok_or_else(|| PredictorError::Model(format!("variable `{n}` missing after training")))
    };
    let mut layers = Vec::new();
    for i in 0..opts.layers {
        layers.push((
            get(&format!("layers.{i}.0.weight"))?,
            get(&format!("layers.{i}.0.bias"))?,
        ));
    }
    let out_w = get(&format!("layers.{}.weight", opts.layers))?;
    let predictor =
        AccuracyPredictor::from_layers(encoding, &layers, &out_w, None, base_acc as f32)?;
    let score = |rs: &[&Record]| score(&predictor, rs.iter().copied());
    let report = FitReport {
        n_train: train.len(),
        n_test: test.len(),
        base_acc,
        train: score(&train)?,
        test: if test.is_empty() {
            score(&train)?
        } else {
            score(&test)?
        },
        options: opts.clone(),
        seconds: start.elapsed().as_secs_f64(),
    };
    Ok((predictor, report))
}

/// Score `predictor` on `records` (top-1 points).
pub fn evaluate(
    predictor: &AccuracyPredictor,
    records: &[Record],
) -> Result<Quality, PredictorError> {
    score(predictor, records.iter())
}

fn score<'a>(
    predictor: &AccuracyPredictor,
    records: impl Iterator<Item = &'a Record> + Clone,
) -> Result<Quality, PredictorError> {
    let archs: Vec<_> = records.clone().map(|r| r.arch.clone()).collect();
    let p: Vec<f64> = predictor
        .predict_batch(&archs)?
        .into_iter()
        .map(|v| f64::from(v) * 100.0)
        .collect();
    let t: Vec<f64> = records.map(|r| r.top1).collect();
    Ok(quality(&p, &t))
}
