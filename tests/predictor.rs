//! `ofa predictor` as a user runs it: a dataset measured on a trained package (resumable), a
//! predictor fitted on it and evaluated, and clear errors for bad inputs.

#![allow(clippy::unwrap_used)]

mod common;

use common::{fails_with, ofa, run_ok, s, smoke_package};

#[test]
fn dataset_fit_eval_and_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let pkg = smoke_package(tmp.path());
    let acc = tmp.path().join("acc.jsonl");
    let dataset = |n: &str| {
        run_ok(ofa().args([
            "predictor",
            "dataset",
            "--package",
            s(&pkg),
            "--samples",
            n,
            "--eval-images",
            "32",
            "--out",
            s(&acc),
        ]))
    };
    dataset("8");
    let first = std::fs::read_to_string(&acc).unwrap();
    assert_eq!(first.lines().count(), 8);
    for line in first.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let t = v["top1"].as_f64().unwrap();
        assert!((0.0..=100.0).contains(&t));
        assert_eq!(v["eval_images"], 32);
        assert!(v["macs"].as_u64().unwrap() > 0);
    }
    // resumable: a rerun keeps the measured lines and adds the missing ones only
    dataset("12");
    let all = std::fs::read_to_string(&acc).unwrap();
    assert_eq!(all.lines().count(), 12);
    assert!(all.starts_with(&first));

    let report = common::quick_fit(&pkg, &acc, 20, &["--json"]);
    let r: serde_json::Value = serde_json::from_str(&report).unwrap();
    assert_eq!(
        r["n_train"].as_u64().unwrap() + r["n_test"].as_u64().unwrap(),
        12
    );
    assert!(r["test"]["rmse"].as_f64().unwrap().is_finite());
    let predictor = pkg.join("accuracy.safetensors");
    assert!(predictor.is_file());
    let q = run_ok(ofa().args([
        "predictor",
        "eval",
        "--predictor",
        s(&predictor),
        "--data",
        s(&acc),
        "--json",
    ]));
    let q: serde_json::Value = serde_json::from_str(&q).unwrap();
    assert_eq!(q["n"], 12);

    // bad inputs
    let empty = tmp.path().join("empty.jsonl");
    std::fs::write(&empty, "").unwrap();
    fails_with(
        ofa().args([
            "predictor",
            "fit",
            "--data",
            s(&empty),
            "--package",
            s(&pkg),
        ]),
        "empty",
    );
    let nan = tmp.path().join("nan.jsonl");
    let line = all.lines().next().unwrap();
    let top1 = serde_json::from_str::<serde_json::Value>(line).unwrap()["top1"].to_string();
    std::fs::write(&nan, format!("{line}\n{}\n", line.replace(&top1, "NaN"))).unwrap();
    fails_with(
        ofa().args([
            "predictor",
            "eval",
            "--predictor",
            s(&predictor),
            "--data",
            s(&nan),
        ]),
        "nan.jsonl:2",
    );
    // a dataset of the tiny space cannot train a predictor for the w1.0 space
    fails_with(
        ofa().args([
            "predictor",
            "fit",
            "--data",
            s(&acc),
            "--space",
            "ofa-mbv3-w1.0",
            "--out",
            s(&tmp.path().join("x.safetensors")),
        ]),
        "does not fit the space",
    );
    fails_with(
        ofa().args([
            "predictor",
            "dataset",
            "--package",
            s(tmp.path()),
            "--samples",
            "2",
            "--out",
            s(&acc),
        ]),
        "not a supernet package",
    );
    fails_with(
        ofa().args([
            "predictor",
            "eval",
            "--predictor",
            s(&acc),
            "--data",
            s(&acc),
        ]),
        "acc.jsonl",
    );
}
