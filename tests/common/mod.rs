//! Helpers shared by the end-to-end tests: the `ofa` binary and a freshly trained smoke package.

#![allow(clippy::unwrap_used, dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use ofa_trainer::data::write_synthetic_idx;

/// The `ofa` binary with one intra-op thread.
pub fn ofa() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ofa"));
    c.args(["--threads", "1"]);
    c
}

/// Run and require success without a panic; returns stdout.
pub fn run_ok(c: &mut Command) -> String {
    let out = c.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{c:?}: {err}");
    assert!(!err.contains("panicked"), "{err}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Run and require exit code 1 with a message containing `needle` and no panic.
pub fn fails_with(c: &mut Command, needle: &str) -> Output {
    let out = c.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{c:?}: {err}");
    assert!(err.contains(needle), "expected `{needle}` in: {err}");
    assert!(!err.contains("panicked"), "{err}");
    out
}

/// Train the smoke recipe on synthetic IDX data in `dir`; returns the package folder.
pub fn smoke_package(dir: &Path) -> PathBuf {
    smoke_package_of(dir, "smoke", "pkg")
}

/// Train the built-in `recipe` on synthetic IDX data in `dir` into `dir/name`; returns it.
pub fn smoke_package_of(dir: &Path, recipe: &str, name: &str) -> PathBuf {
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    write_synthetic_idx(&data, 160, 40, 4).unwrap();
    let run = dir.join(name);
    run_ok(ofa().args([
        "train",
        "--recipe",
        recipe,
        "--data",
        data.to_str().unwrap(),
        "--out",
        run.to_str().unwrap(),
    ]));
    run
}

/// The smoke recipe with a first phase of `first_phase_steps` steps (time to stop it mid-way) and
/// a checkpoint every `checkpoint_every` steps, written into `dir`; returns its path.
pub fn smoke_recipe(dir: &Path, first_phase_steps: u32, checkpoint_every: u32) -> PathBuf {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("trainer/recipes/smoke.toml"),
    )
    .unwrap()
    .replacen("steps = 3", &format!("steps = {first_phase_steps}"), 1)
    .replace(
        "checkpoint_every = 2",
        &format!("checkpoint_every = {checkpoint_every}"),
    );
    let path = dir.join(format!("smoke-{first_phase_steps}-{checkpoint_every}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

/// Every tensor of two safetensors files equal, bit for bit (`why` names the comparison).
pub fn assert_same_tensors(a: &Path, b: &Path, why: &str) {
    let wa = ofa_supernet::checkpoint::read_safetensors(a)
        .unwrap()
        .tensors;
    let wb = ofa_supernet::checkpoint::read_safetensors(b)
        .unwrap()
        .tensors;
    assert_eq!(wa.len(), wb.len(), "{why}");
    for (name, t) in &wa {
        assert!(t.equal(&wb[name]), "{name} differs: {why}");
    }
}

/// Wait until `path` exists (a run's first metrics line: training has started), failing if one of
/// `children` (the processes that would write it) ends first.
pub fn wait_until_exists(path: &Path, children: &mut [std::process::Child]) {
    while !path.exists() {
        for c in children.iter_mut() {
            if let Some(st) = c.try_wait().unwrap() {
                panic!(
                    "{} did not appear: a process ended ({st:?})",
                    path.display()
                );
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Path as &str.
pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The measured subnets [`specialised_package_of`]`(dir, _, name)` fits its predictor on.
pub fn accuracy_data_of(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}-acc.jsonl"))
}

/// A smoke package made ready for specialisation in `dir`: an accuracy predictor fitted on 10
/// measured subnets and a latency table of this CPU (`latency/cpu.json`).
pub fn specialised_package(dir: &Path) -> PathBuf {
    specialised_package_of(dir, "smoke", "pkg")
}

/// [`specialised_package`] of the built-in `recipe`, in `dir/name`; its measured subnets in
/// [`accuracy_data_of`]`(dir, name)`.
pub fn specialised_package_of(dir: &Path, recipe: &str, name: &str) -> PathBuf {
    let pkg = smoke_package_of(dir, recipe, name);
    let acc = accuracy_data_of(dir, name);
    run_ok(ofa().args([
        "predictor",
        "dataset",
        "--package",
        s(&pkg),
        "--samples",
        "10",
        "--eval-images",
        "32",
        "--out",
        s(&acc),
    ]));
    quick_fit(&pkg, &acc, 10, &[]);
    quick_profile(&pkg, &[]);
    pkg
}

/// `ofa profile` of `pkg` with the suite's quick settings (3 timed runs after 1 warm-up) and
/// `extra`; its stdout.
pub fn quick_profile(pkg: &Path, extra: &[&str]) -> String {
    run_ok(
        ofa()
            .args([
                "profile",
                "--package",
                s(pkg),
                "--repeats",
                "3",
                "--warmup",
                "1",
            ])
            .args(extra),
    )
}

/// `ofa predictor fit` of a small predictor (32 hidden units, `epochs`) on `data` for `pkg`,
/// with `extra`; its stdout.
pub fn quick_fit(pkg: &Path, data: &Path, epochs: u32, extra: &[&str]) -> String {
    let epochs = epochs.to_string();
    run_ok(
        ofa()
            .args(["predictor", "fit", "--data", s(data), "--package", s(pkg)])
            .args(["--epochs", &epochs, "--hidden", "32"])
            .args(extra),
    )
}

/// `ofa infer` of `model` on a random `[2, 3, 32, 32]` input written in `dir`; returns the logits
/// file.
pub fn infer(model: &Path, dir: &Path) -> PathBuf {
    let input = dir.join("input.safetensors");
    ofa_supernet::checkpoint::write_safetensors(
        &input,
        &[(
            "input".to_string(),
            tch::Tensor::rand([2, 3, 32, 32], tch::kind::FLOAT_CPU),
        )],
        &std::collections::BTreeMap::new(),
    )
    .unwrap();
    let logits = dir.join("logits.safetensors");
    run_ok(ofa().args([
        "infer",
        "--model",
        s(model),
        "--input",
        s(&input),
        "--out",
        s(&logits),
    ]));
    logits
}
