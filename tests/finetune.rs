//! `ofa finetune` as a user runs it: a short run whose subnet the other commands take, a run
//! killed with SIGKILL and resumed that equals an uninterrupted one, and bad input.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use ofa_supernet::checkpoint::read_safetensors;

mod common;
use common::{assert_same_tensors, fails_with, ofa, run_ok, s, smoke_package};

/// One smoke package for the file.
fn package() -> &'static Path {
    static PKG: OnceLock<PathBuf> = OnceLock::new();
    PKG.get_or_init(|| smoke_package(&tempfile::tempdir().unwrap().keep()))
}

fn data(pkg: &Path) -> PathBuf {
    pkg.parent().unwrap().join("data")
}

fn step(run: &Path) -> Option<u64> {
    let f = read_safetensors(&run.join("checkpoint.safetensors")).ok()?;
    let state: serde_json::Value = serde_json::from_str(f.metadata.get("state")?).ok()?;
    state["step"].as_u64()
}

#[test]
fn a_finetuned_subnet_is_evaluated_exported_and_inspected_like_any_subnet() {
    let pkg = package();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("ft");
    let json = run_ok(ofa().args([
        "finetune",
        "--package",
        s(pkg),
        "--arch",
        "smallest",
        "--steps",
        "3",
        "--calibration-images",
        "32",
        "--out",
        s(&out),
        "--json",
    ]));
    let record: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    assert_eq!(record["schedule"]["steps"], 3);
    assert_eq!(record["init"], "inherited");
    let model = out.join("subnet.safetensors");
    let eval = run_ok(ofa().args([
        "eval",
        "--model",
        s(&model),
        "--data",
        s(&data(pkg)),
        "--json",
    ]));
    let eval: serde_json::Value = serde_json::from_str(eval.trim()).unwrap();
    assert!(eval["top1"].as_f64().is_some(), "{eval}");
    let onnx = tmp.path().join("m.onnx");
    run_ok(ofa().args([
        "export",
        "--model",
        s(&model),
        "--format",
        "onnx",
        "--out",
        s(&onnx),
    ]));
    assert!(std::fs::metadata(&onnx).unwrap().len() > 1000);
    let inspect = run_ok(ofa().args(["inspect", s(&model)]));
    assert!(inspect.contains("finetune"), "{inspect}");
}

#[test]
fn kill_9_then_resume_equals_an_uninterrupted_finetune() {
    let pkg = package();
    let tmp = tempfile::tempdir().unwrap();
    let run = |out: &Path| {
        let mut c = ofa();
        c.args([
            "finetune",
            "--package",
            s(pkg),
            "--arch",
            "largest",
            "--calibration-images",
            "32",
            // far longer than the test needs, so the run is still going when it is killed
            // however fast the machine; both arms stop at the same step with --stop-after
            "--steps",
            "400",
            "--out",
            s(out),
        ]);
        c
    };
    let b = tmp.path().join("b");
    let mut child = run(&b)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // killed once a checkpoint past step 6 (the first epoch's end) is on disk
    while step(&b).is_none_or(|n| n < 7) {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before it could be killed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let killed_at = step(&b).unwrap();
    assert!(killed_at < 400, "killed after the end ({killed_at})");
    let stop = (killed_at + 4).to_string();
    run_ok(ofa().args(["finetune", "--resume", s(&b), "--stop-after", &stop]));
    let a = tmp.path().join("a");
    run_ok(run(&a).args(["--stop-after", &stop]));
    let why = format!("after kill -9 at step {killed_at} and resume to step {stop}");
    for f in [
        "checkpoint.safetensors",
        "last.safetensors",
        "subnet.safetensors",
    ] {
        assert_same_tensors(&a.join(f), &b.join(f), &format!("{f} {why}"));
    }
}

#[test]
fn bad_input_is_a_named_error() {
    let pkg = package();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("ft");
    let base = |extra: &[&str]| {
        let mut c = ofa();
        c.args(["finetune", "--package", s(pkg), "--out", s(&out)]);
        c.args(extra);
        c
    };
    fails_with(
        &mut base(&["--arch", "largest", "--epochs", "0"]),
        "epochs must be above 0",
    );
    fails_with(
        &mut base(&["--arch", "largest", "--epochs=-2"]),
        "epochs must be above 0",
    );
    let arch = tmp.path().join("arch.json");
    std::fs::write(&arch, r#"{"ks": [9], "e": [3], "d": [1], "r": 32}"#).unwrap();
    fails_with(
        &mut base(&["--arch", s(&arch), "--steps", "1"]),
        "outside the package's search space",
    );
    assert!(!out.exists(), "a refused run left {}", out.display());
    fails_with(
        ofa().args(["finetune", "--resume", s(pkg)]),
        "is a training run",
    );
    fails_with(
        ofa().args(["finetune", "--resume", s(tmp.path())]),
        "is not a fine-tuning run",
    );
    // a resumed run keeps its settings: others are refused, not ignored
    fails_with(
        ofa().args(["finetune", "--resume", s(tmp.path()), "--epochs", "3"]),
        "cannot be used with",
    );
    fails_with(
        ofa().args(["finetune", "--resume", s(tmp.path()), "--seed", "1"]),
        "cannot be used with",
    );

    // an --out that holds other files (here an `ofa extract` folder) is left as it is
    let cut = tmp.path().join("cut");
    std::fs::create_dir(&cut).unwrap();
    for f in ["subnet.safetensors", "net.config.json", "report.json"] {
        std::fs::write(cut.join(f), f).unwrap();
    }
    fails_with(
        ofa()
            .args(["finetune", "--package", s(pkg), "--out", s(&cut)])
            .args(["--arch", "smallest", "--steps", "1"]),
        "is not empty (it holds report.json, subnet.safetensors)",
    );
    for f in ["subnet.safetensors", "net.config.json", "report.json"] {
        assert_eq!(std::fs::read_to_string(cut.join(f)).unwrap(), f);
    }

    // what a start killed before it wrote finetune.json leaves is no run: a new start replaces it
    let cut_short = tmp.path().join("cut-short");
    std::fs::create_dir(&cut_short).unwrap();
    for f in [".lock", "checkpoint.safetensors", "net.config.json"] {
        std::fs::write(cut_short.join(f), "left by a killed start").unwrap();
    }
    // (the package given relative to the working directory: the run records where it is)
    run_ok(ofa().current_dir(pkg.parent().unwrap()).args([
        "finetune",
        "--package",
        pkg.file_name().unwrap().to_str().unwrap(),
        "--arch",
        "smallest",
        "--steps",
        "1",
        "--calibration-images",
        "32",
        "--out",
        s(&cut_short),
    ]));
    assert_eq!(step(&cut_short), Some(1));
    let spec: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(cut_short.join("finetune.json")).unwrap())
            .unwrap();
    let recorded = Path::new(spec["package"].as_str().unwrap());
    assert!(recorded.is_absolute(), "{spec}");
    assert_eq!(
        std::fs::canonicalize(recorded).unwrap(),
        std::fs::canonicalize(pkg).unwrap()
    );
}
