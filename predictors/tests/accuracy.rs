//! Accuracy predictor: the reference's pretrained tutorial predictor reproduces its published
//! predictions (read from `../shared`, skipped when absent); our files round-trip; fitting learns
//! a known function; bad inputs are named.

#![allow(clippy::unwrap_used)]
// A test reports what it measured.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::{Path, PathBuf};

use ofa_predictors::dataset::Record;
use ofa_predictors::fit::{evaluate, fit, FitOptions};
use ofa_predictors::{AccuracyPredictor, LatencyTable};
use ofa_space::{cost, sample, ArchConfig, Choices, Encoding, SearchSpace};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

fn reference_data() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/reference-data");
    assert!(
        root.is_dir(),
        "{} is absent: the reference data lives in ../shared",
        root.display()
    );
    root
}

fn fixture(root: &Path) -> Vec<serde_json::Value> {
    let v: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("predictor_fixture_note10.json")).unwrap(),
    )
    .unwrap();
    v["archs"].as_array().unwrap().clone()
}

#[test]
#[cfg_attr(
    shared_absent,
    ignore = "needs ../shared/reference-data (absent here; CI=true runs it and fails)"
)]
fn tutorial_predictor_reproduces_the_reference() {
    let root = reference_data();
    let p =
        AccuracyPredictor::load(&root.join("tutorial_acc_predictor.safetensors"), None).unwrap();
    assert_eq!(p.encoding(), &Encoding::tutorial());
    let entries = fixture(&root);
    let archs: Vec<ArchConfig> = entries
        .iter()
        .map(|e| serde_json::from_value(e["arch"].clone()).unwrap())
        .collect();
    // encoding: the reference's hot indices
    for (a, e) in archs.iter().zip(&entries) {
        let want: Vec<u32> = serde_json::from_value(e["feature_hot_indices"].clone()).unwrap();
        let mut hot = Vec::new();
        p.encoding().hot_into(a, &mut hot).unwrap();
        assert_eq!(hot, want, "{a:?}");
    }
    // batched and one by one, both within 1e-6 of the reference's batched values
    let batch = p.predict_batch(&archs).unwrap();
    for ((a, e), b) in archs.iter().zip(&entries).zip(&batch) {
        let want = e["predicted_acc"].as_f64().unwrap();
        assert!((f64::from(*b) - want).abs() < 1e-6, "{b} vs {want}");
        let single = f64::from(p.predict(a).unwrap());
        assert!((single - want).abs() < 1e-6, "{single} vs {want}");
    }
    // every prediction is computed in the same order in any batch: a long batch (many chunks,
    // several threads) and one-by-one give bit-identical numbers
    let many: Vec<ArchConfig> = (0..3000).map(|i| archs[i % archs.len()].clone()).collect();
    let out = p.predict_batch(&many).unwrap();
    for (i, v) in out.iter().enumerate() {
        assert_eq!(*v, batch[i % archs.len()]);
    }
    for (a, b) in archs.iter().zip(&batch) {
        assert_eq!(p.predict(a).unwrap(), *b);
    }
    // our file format round-trips it exactly
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("acc.safetensors");
    p.save(&f).unwrap();
    let q = AccuracyPredictor::load(&f, None).unwrap();
    assert_eq!(q.predict_batch(&archs).unwrap(), batch);
}

#[test]
#[cfg_attr(
    shared_absent,
    ignore = "needs ../shared/reference-data (absent here; CI=true runs it and fails)"
)]
fn compiled_note10_latency_equals_the_reference() {
    let root = reference_data();
    let table = LatencyTable::import_reference_dir(&root.join("note10-lut"), "Note10").unwrap();
    let mut space = SearchSpace::preset("ofa-mbv3-w1.2").unwrap();
    space.resolutions = vec![160, 176, 192, 208, 224];
    let lat = table.additive(&space);
    assert_eq!(lat.resolutions(), &[160, 176, 192, 208, 224]);
    let mut checked = 0;
    for e in fixture(&root) {
        let arch: ArchConfig = serde_json::from_value(e["arch"].clone()).unwrap();
        match e["latency_ms"].as_f64() {
            Some(want) => {
                let got = lat.predict(&arch).unwrap();
                assert!((got - want).abs() < 1e-9, "{got} vs {want}");
                checked += 1;
            }
            None => {
                let err = lat.predict(&arch).unwrap_err().to_string();
                assert!(err.contains("resolution"), "{err}");
            }
        }
    }
    assert!(checked >= 40, "{checked}");
}

#[test]
#[cfg_attr(
    shared_absent,
    ignore = "needs ../shared/reference-data (absent here; CI=true runs it and fails)"
)]
fn missing_layer_names_the_key_and_the_arch() {
    let root = reference_data();
    let mut table = LatencyTable::import_reference_dir(&root.join("note10-lut"), "Note10").unwrap();
    let mut space = SearchSpace::preset("ofa-mbv3-w1.2").unwrap();
    space.resolutions = vec![160, 176, 192, 208, 224];
    let mut arch = ArchConfig::largest(&space);
    arch.r = 160;
    let victim = ofa_space::latency::layer_keys(&space, &arch)[10].1.clone();
    table.tables.get_mut(&160).unwrap().remove(&victim).unwrap();
    let lat = table.additive(&space);
    let err = lat.predict(&arch).unwrap_err().to_string();
    assert!(err.contains(&victim), "{err}");
    assert!(err.contains("\"r\":160"), "{err}");
    arch.r = 176;
    lat.predict(&arch).unwrap();
}

/// A synthetic "accuracy" that an MLP can learn: grows with depth, kernels and resolution.
fn synthetic(space: &SearchSpace, n: usize, seed: u64) -> Vec<Record> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            let a = sample(space, &Choices::all(space), &mut rng);
            let c = cost(space, &a);
            let top1 = 60.0 + 20.0 * (c.macs as f64).ln() / 20.0 + (a.r as f64 - 32.0) / 4.0;
            Record {
                resolution: a.r,
                arch: a,
                top1: top1.clamp(0.0, 100.0),
                macs: c.macs,
                params: c.params,
                seconds: 0.0,
                calibration_images: 0,
                eval_images: 0,
            }
        })
        .collect()
}

#[test]
fn fit_learns_a_known_function_and_round_trips() {
    let space = SearchSpace::preset("ofa-mbv3-tiny").unwrap();
    let data = synthetic(&space, 400, 1);
    let opts = FitOptions {
        hidden: 64,
        epochs: 150,
        batch_size: 64,
        ..FitOptions::default()
    };
    let (p, report) = fit(Encoding::library(&space), &data, &opts).unwrap();
    assert_eq!((report.n_train, report.n_test), (320, 80));
    let spread = {
        let t: Vec<f64> = data.iter().map(|r| r.top1).collect();
        let m = t.iter().sum::<f64>() / t.len() as f64;
        (t.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / t.len() as f64).sqrt()
    };
    eprintln!("fit: {report:?}, target spread {spread}");
    assert!(
        report.test.rmse < spread / 2.0,
        "{report:?} vs spread {spread}"
    );
    assert!(report.test.spearman_rho > 0.8, "{report:?}");
    // deterministic for a seed
    let (_, again) = fit(Encoding::library(&space), &data, &opts).unwrap();
    assert_eq!(again.test, report.test);
    // save / load / evaluate on another file
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("acc.safetensors");
    p.save(&f).unwrap();
    let q = AccuracyPredictor::load(&f, None).unwrap();
    let other = synthetic(&space, 100, 2);
    let e1 = evaluate(&p, &other).unwrap();
    let e2 = evaluate(&q, &other).unwrap();
    assert_eq!(e1, e2);
    assert!(e1.spearman_rho > 0.8, "{e1:?}");
    // a predictor for another space is refused with a reason
    let big = SearchSpace::preset("ofa-mbv3-w1.0").unwrap();
    let err = q
        .check_space(&big, &big.resolutions)
        .unwrap_err()
        .to_string();
    assert!(err.contains("resolution"), "{err}");
    let err = fit(Encoding::library(&space), &data[..3], &opts)
        .unwrap_err()
        .to_string();
    assert!(err.contains("too few"), "{err}");
}
