//! A new device onboarded as a user does it, on a copy of the shipped package: `ofa hardware
//! probes` exports ONNX probes and the timing script, the script times them in ONNX Runtime (the
//! project's own copy, installed by `make setup`), `ofa hardware fit` writes the device's table,
//! `ofa predict`, `ofa search` and `ofa hardware check` use it; bad measurements are refused
//! line by line. Nothing here depends on how fast anything runs: timings are only required to be
//! positive.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{fails_with, ofa, run_ok, s};
use serde_json::Value;

/// A copy of the shipped package (fits write into its `latency/`).
fn package(dir: &Path) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("checkpoints/fashion-mnist");
    let dst = dir.join("fashion-mnist");
    std::fs::create_dir_all(dst.join("latency")).unwrap();
    for f in [
        "supernet.safetensors",
        "calibration.safetensors",
        "card.json",
        "accuracy.safetensors",
    ] {
        std::fs::copy(src.join(f), dst.join(f)).unwrap();
    }
    std::fs::copy(
        src.join("latency/cpu-xeon-emr-2t.json"),
        dst.join("latency/cpu-xeon-emr-2t.json"),
    )
    .unwrap();
    dst
}

/// `python3` with the project's ONNX Runtime (installed by `make setup`) on its path.
fn python() -> Command {
    let site = Path::new(env!("CARGO_MANIFEST_DIR")).join(".onnxruntime/site");
    assert!(
        site.join("onnxruntime").is_dir(),
        "{} is missing: run `make setup` (it installs ONNX Runtime there)",
        site.display()
    );
    let mut c = Command::new("python3");
    c.env("PYTHONPATH", site);
    c
}

/// `ofa hardware probes --package PKG --count 8 --out OUT`.
fn probes_cmd(pkg: &Path, out: &Path) -> Command {
    let mut c = ofa();
    c.args([
        "hardware",
        "probes",
        "--package",
        s(pkg),
        "--count",
        "8",
        "--out",
        s(out),
    ]);
    c
}

/// `ofa hardware fit --package PKG --measurements CSV --name NAME`.
fn fit(pkg: &Path, csv: &Path, name: &str) -> Command {
    let mut c = ofa();
    c.args([
        "hardware",
        "fit",
        "--package",
        s(pkg),
        "--measurements",
        s(csv),
        "--name",
        name,
    ]);
    c
}

#[test]
fn probes_timed_in_onnx_runtime_become_a_table_every_command_reads() {
    let tmp = tempfile::tempdir().unwrap();
    let pkg = package(tmp.path());
    let probes = tmp.path().join("probes");
    let out = run_ok(&mut probes_cmd(&pkg, &probes));
    assert!(out.contains("wrote 8 probes (spread)"), "{out}");
    let manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(probes.join("manifest.json")).unwrap())
            .unwrap();
    assert_eq!(manifest["format"], "ofa-probes/1");
    assert_eq!(manifest["base"], "cpu-xeon-emr-2t");
    let list = manifest["probes"].as_array().unwrap();
    assert_eq!(list.len(), 8);
    for p in list {
        assert!(probes.join(p["file"].as_str().unwrap()).is_file(), "{p}");
        assert!(p["base_latency_ms"].as_f64().unwrap() > 0.0);
    }
    // a second export into the same folder would mix two probe sets
    fails_with(&mut probes_cmd(&pkg, &probes), "is not empty");

    // the device side: Python and ONNX Runtime only
    let st = python()
        .args([
            s(&probes.join("time_probes.py")),
            "--repeats",
            "3",
            "--warmup",
            "1",
            "--rounds",
            "1",
        ])
        .status()
        .unwrap();
    assert!(st.success());
    let csv = probes.join("measurements.csv");
    let text = std::fs::read_to_string(&csv).unwrap();
    let rows: Vec<&str> = text.lines().collect();
    assert_eq!(rows[0], "id,latency_ms");
    assert_eq!(rows.len(), 9, "{text}");
    for r in &rows[1..] {
        let ms: f64 = r.split(',').nth(1).unwrap().parse().unwrap();
        assert!(ms > 0.0, "{r}");
    }
    let env: Value =
        serde_json::from_str(&std::fs::read_to_string(probes.join("environment.json")).unwrap())
            .unwrap();
    assert_eq!(env["runtime"], "onnxruntime");
    assert_eq!(env["threads"], 1);

    // the same probes timed by ofa itself in ONNX Runtime (the wheel's library, loaded at run
    // time) and in libtorch, each set with its environment
    for runtime in ["onnxruntime", "libtorch"] {
        run_ok(ofa().args([
            "hardware",
            "time",
            "--runtime",
            runtime,
            "--package",
            s(&pkg),
            "--dir",
            s(&probes),
            "--rounds",
            "1",
            "--repeats",
            "3",
        ]));
        let text =
            std::fs::read_to_string(probes.join(format!("measurements-{runtime}.csv"))).unwrap();
        assert_eq!(text.lines().count(), 9, "{text}");
        let env: Value = serde_json::from_str(
            &std::fs::read_to_string(probes.join(format!("environment-{runtime}.json"))).unwrap(),
        )
        .unwrap();
        assert_eq!(env["runtime"], runtime);
    }
    let env: Value = serde_json::from_str(
        &std::fs::read_to_string(probes.join("environment-onnxruntime.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(env["version"], "1.32.0");
    // a runtime that is not there is a named error, not a crash
    let out = fails_with(
        ofa()
            .env("ORT_DYLIB_PATH", tmp.path().join("nope.so"))
            .args([
                "hardware",
                "time",
                "--runtime",
                "onnxruntime",
                "--package",
                s(&pkg),
                "--dir",
                s(&probes),
            ]),
        "nope.so is not a file",
    );
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));

    // the fit: a table in the package, in the format every command reads
    let report = run_ok(fit(&pkg, &csv, "ort-1t").arg("--json"));
    let report: Value = serde_json::from_str(&report).unwrap();
    assert_eq!(report["measurements"], 8);
    assert!(
        report["loo"]["mape_pct"].as_f64().unwrap().is_finite(),
        "{report}"
    );
    let table: Value =
        serde_json::from_str(&std::fs::read_to_string(pkg.join("latency/ort-1t.json")).unwrap())
            .unwrap();
    assert_eq!(table["format"], "ofa-latency-table/1");
    assert_eq!(table["meta"]["runtime"], "onnxruntime");
    assert!(table["meta"]["libraries"]["onnxruntime"].is_string());
    assert_eq!(table["meta"]["fit"]["measurements"], 8);
    // not overwritten unless asked
    fails_with(
        &mut fit(&pkg, &csv, "ort-1t"),
        "already has a hardware `ort-1t`",
    );

    // `ofa predict` of every probe on both hardware
    let jsonl = tmp.path().join("archs.jsonl");
    let archs: Vec<String> = list.iter().map(|p| p["arch"].to_string()).collect();
    std::fs::write(&jsonl, archs.join("\n")).unwrap();
    let lines = run_ok(ofa().args([
        "predict",
        "--package",
        s(&pkg),
        "--arch",
        s(&jsonl),
        "--hardware",
        "ort-1t",
        "--hardware",
        "cpu-xeon-emr-2t",
        "--json",
    ]));
    let preds: Vec<Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(preds.len(), 8);
    for p in &preds {
        assert!(p["latency_ms"]["ort-1t"].as_f64().unwrap() > 0.0, "{p}");
        assert!(p["top1"].as_f64().unwrap() > 0.0);
        assert!(p["macs_m"].as_f64().unwrap() > 0.0);
    }
    // the check against the probes themselves
    let check = run_ok(ofa().args([
        "hardware",
        "check",
        "--package",
        s(&pkg),
        "--hardware",
        "ort-1t",
        "--measurements",
        s(&csv),
        "--json",
    ]));
    let check: Value = serde_json::from_str(&check).unwrap();
    assert_eq!(check["n"], 8);
    // a search names the new hardware like any other
    let mid = {
        let mut v: Vec<f64> = preds
            .iter()
            .map(|p| p["latency_ms"]["ort-1t"].as_f64().unwrap())
            .collect();
        v.sort_by(f64::total_cmp);
        v[4]
    };
    let found = run_ok(ofa().args([
        "search",
        "--package",
        s(&pkg),
        "--hardware",
        "ort-1t",
        "--max-latency-ms",
        &mid.to_string(),
        "--generations",
        "20",
        "--json",
    ]));
    let found: Value = serde_json::from_str(&found).unwrap();
    let got = found["predicted"]["latency_ms"]
        .as_f64()
        .unwrap_or_else(|| panic!("{found}"));
    assert!(got <= mid, "{got} > {mid}");

    // bad measurements: every bad line named, nothing written
    let bad = probes.join("bad.csv");
    std::fs::write(
        &bad,
        "id,latency_ms\np000,0.1\np000,0.2\nnope,1\np001,-3\np002,abc\n",
    )
    .unwrap();
    let out = fails_with(&mut fit(&pkg, &bad, "bad"), "4 bad line(s)");
    let err = String::from_utf8_lossy(&out.stderr);
    for needle in [
        "line 3: duplicate id `p000`",
        "line 4: unknown id `nope`",
        "line 5: latency -3 ms",
        "line 6: latency `abc`",
    ] {
        assert!(err.contains(needle), "{needle}: {err}");
    }
    assert!(!pkg.join("latency/bad.json").exists());
    // too few for any model
    let few = probes.join("few.csv");
    std::fs::write(&few, "p000,0.1\np001,0.2\n").unwrap();
    fails_with(&mut fit(&pkg, &few, "few"), "2 measurements are too few");
    fails_with(
        &mut fit(&pkg, &csv, "../escape"),
        "a hardware name is letters",
    );
}

#[test]
fn bench_hardware_reports_the_onboarding_figures_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let pkg = package(tmp.path());
    let out = run_ok(ofa().args([
        "bench",
        "hardware",
        "--package",
        s(&pkg),
        "--probes",
        "5",
        "--heldout",
        "4",
        "--json",
    ]));
    let v: Value = serde_json::from_str(&out).unwrap();
    for key in [
        "probes_export_s",
        "fit_s",
        "calibrate_s",
        "heldout_mape_pct",
        "within_10pct",
        "spearman",
    ] {
        assert!(v[key].as_f64().is_some_and(f64::is_finite), "{key}: {v}");
    }
    assert_eq!(v["probes"], 5);
    assert_eq!(v["runtime"], "libtorch");
}

#[test]
fn eval_scores_and_times_a_subnet_file_in_onnx_runtime_as_in_libtorch() {
    let tmp = tempfile::tempdir().unwrap();
    let pkg = package(tmp.path());
    let out = tmp.path().join("cut");
    run_ok(ofa().args([
        "extract",
        "--package",
        s(&pkg),
        "--arch",
        "smallest",
        "--out",
        s(&out),
    ]));
    let file = out.join("subnet.safetensors");
    let eval = |runtime: &str| -> Value {
        let text = run_ok(ofa().args([
            "eval",
            "--model",
            s(&file),
            "--images",
            "300",
            "--latency-repeats",
            "5",
            "--runtime",
            runtime,
            "--json",
        ]));
        serde_json::from_str(&text).unwrap()
    };
    let (lt, ort) = (eval("libtorch"), eval("onnxruntime"));
    assert_eq!(ort["runtime"], "onnxruntime 1.32.0");
    assert_eq!(ort["images"], 300);
    assert!(ort["latency_ms"].as_f64().unwrap() > 0.0);
    // the same network in two runtimes: the same answers, up to an image whose two best logits
    // are within float rounding
    let (a, b) = (lt["top1"].as_f64().unwrap(), ort["top1"].as_f64().unwrap());
    assert!(
        (a - b).abs() <= 100.0 / 300.0 + 1e-9,
        "libtorch {a} %, onnxruntime {b} %"
    );
}

#[test]
fn profile_times_every_layer_in_onnx_runtime_on_its_own_graph() {
    let tmp = tempfile::tempdir().unwrap();
    let pkg = package(tmp.path());
    common::quick_profile(&pkg, &["--runtime", "onnxruntime"]);
    let read = |name: &str| -> Value {
        serde_json::from_str(
            &std::fs::read_to_string(pkg.join(format!("latency/{name}.json"))).unwrap(),
        )
        .unwrap()
    };
    let (ort, lt) = (read("onnxruntime-cpu"), read("cpu-xeon-emr-2t"));
    assert_eq!(ort["meta"]["runtime"], "onnxruntime");
    assert_eq!(ort["meta"]["libraries"]["onnxruntime"], "1.32.0");
    // the same keys as the libtorch profile, every one timed
    for (r, layers) in lt["tables"].as_object().unwrap() {
        for key in layers.as_object().unwrap().keys() {
            let e = &ort["tables"][r][key];
            assert!(
                e["mean"].as_f64().is_some_and(|m| m > 0.0),
                "{r} {key}: {e}"
            );
        }
    }
    // a table every command reads
    let p = run_ok(ofa().args([
        "predict",
        "--package",
        s(&pkg),
        "--arch",
        "largest",
        "--hardware",
        "onnxruntime-cpu",
        "--json",
    ]));
    let p: Value = serde_json::from_str(&p).unwrap();
    assert!(
        p["latency_ms"]["onnxruntime-cpu"].as_f64().unwrap() > 0.0,
        "{p}"
    );
    // and checked against whole subnets timed in ONNX Runtime
    let table = pkg.join("latency/onnxruntime-cpu.json");
    let v = run_ok(ofa().args([
        "profile",
        "validate",
        "--runtime",
        "onnxruntime",
        "--package",
        s(&pkg),
        "--table",
        s(&table),
        "--samples",
        "4",
        "--repeats",
        "3",
        "--json",
    ]));
    let v: Value = serde_json::from_str(&v).unwrap();
    assert_eq!(v["n"], 4);
    assert!(v["mape"].as_f64().unwrap().is_finite(), "{v}");
}

#[test]
fn corrupt_manifests_and_environments_are_named_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let pkg = package(tmp.path());
    let dir = tmp.path().join("probes");
    run_ok(&mut probes_cmd(&pkg, &dir));
    let csv = dir.join("measurements.csv");
    let lines: Vec<String> = (0..8)
        .map(|i| format!("p{i:03},{}", 0.1 + i as f64 * 0.01))
        .collect();
    std::fs::write(&csv, lines.join("\n")).unwrap();
    // a corrupt environment beside the measurements: named, nothing written
    std::fs::write(dir.join("environment.json"), "{not json").unwrap();
    fails_with(&mut fit(&pkg, &csv, "env"), "not an environment file");
    assert!(!pkg.join("latency/env.json").exists());
    std::fs::remove_file(dir.join("environment.json")).unwrap();
    // a corrupt manifest
    std::fs::write(dir.join("manifest.json"), "[1, 2").unwrap();
    fails_with(&mut fit(&pkg, &csv, "man"), "not a probe manifest");
    let out = fails_with(
        ofa().args([
            "hardware",
            "time",
            "--package",
            s(&pkg),
            "--dir",
            s(&dir),
            "--rounds",
            "1",
        ]),
        "not a probe manifest",
    );
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));
    assert!(!pkg.join("latency/man.json").exists());
}
