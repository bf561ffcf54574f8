//! Whole runs of the `smoke` recipe on a small synthetic IDX dataset: every phase, the package,
//! exact resume, and bad input.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use ofa_supernet::checkpoint::read_safetensors;
use ofa_supernet::Supernet;
use ofa_trainer::data::write_synthetic_idx;
use ofa_trainer::recipe::Recipe;
use ofa_trainer::run::{branch, resume, train, Outcome, Silent, TrainOptions};
use serde_json::Value;
use tch::Device;

/// 160 training and 40 test images, 4 learnable classes.
fn dataset(dir: &Path) {
    write_synthetic_idx(dir, 160, 40, 4).unwrap();
}

fn opts(data: &Path, stop_after: Option<u64>) -> TrainOptions {
    TrainOptions {
        data: Some(data.to_path_buf()),
        device: Device::Cpu,
        observer: Arc::new(Silent),
        stop: Arc::new(AtomicBool::new(false)),
        stop_after,
        group: None,
    }
}

/// Runs draw dropout masks from libtorch's one global generator (seeded per step), so two runs
/// in one process must not interleave: the training tests take turns.
static ONE_RUN_AT_A_TIME: Mutex<()> = Mutex::new(());

/// One intra-op thread and a fresh dataset in a temporary folder: (the folder, the data).
fn one_thread_with_data() -> (tempfile::TempDir, std::path::PathBuf) {
    tch::set_num_threads(1);
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir(&data).unwrap();
    dataset(&data);
    (tmp, data)
}

fn weights(dir: &Path) -> Vec<(String, tch::Tensor)> {
    let ck = Supernet::load(&dir.join("supernet.safetensors"), Device::Cpu).unwrap();
    ck.net
        .tensors()
        .iter()
        .map(|(s, t)| (s.name.clone(), t.detach()))
        .collect()
}

#[test]
fn smoke_runs_every_phase_and_resumes_exactly() {
    let _turn = ONE_RUN_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (tmp, data) = one_thread_with_data();

    // Uninterrupted.
    let a = tmp.path().join("a");
    assert_eq!(
        train(Recipe::load("smoke").unwrap(), &a, opts(&data, None)).unwrap(),
        Outcome::Finished
    );
    for f in [
        "recipe.toml",
        "metrics.jsonl",
        "checkpoint.safetensors",
        "supernet.safetensors",
        "calibration.safetensors",
        "card.json",
    ] {
        assert!(a.join(f).is_file(), "{f} missing");
    }
    let metrics = std::fs::read_to_string(a.join("metrics.jsonl")).unwrap();
    let lines: Vec<Value> = metrics
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let phases: Vec<&str> = lines
        .iter()
        .filter(|l| l["kind"] == "validation")
        .map(|l| l["phase"].as_str().unwrap())
        .collect();
    assert_eq!(
        phases,
        ["full", "kernel", "depth-1", "depth-2", "width-1", "width-2"]
    );
    assert_eq!(lines.iter().filter(|l| l["kind"] == "step").count(), 13);
    assert!(lines
        .iter()
        .all(|l| l["kind"] != "step" || l["loss"].as_f64().unwrap().is_finite()));
    let card: Value =
        serde_json::from_str(&std::fs::read_to_string(a.join("card.json")).unwrap()).unwrap();
    assert_eq!(card["steps"], 13);
    let last = &card["validation"][5]["rows"];
    assert_eq!(last.as_array().unwrap().len(), 3);
    assert!(last[2]["test_top1"].is_number());
    let calib = read_safetensors(&a.join("calibration.safetensors")).unwrap();
    assert_eq!(calib.tensors["images"].size(), vec![32, 1, 28, 28]);

    // Interrupted mid-phase (after step 4, inside "kernel") and mid-way again, then resumed.
    let b = tmp.path().join("b");
    let out = train(Recipe::load("smoke").unwrap(), &b, opts(&data, Some(4))).unwrap();
    assert_eq!(out, Outcome::Interrupted { global_step: 4 });
    assert_eq!(
        resume(&b, opts(&data, Some(9))).unwrap(),
        Outcome::Interrupted { global_step: 9 }
    );
    assert_eq!(resume(&b, opts(&data, None)).unwrap(), Outcome::Finished);
    for ((na, ta), (nb, tb)) in weights(&a).iter().zip(weights(&b).iter()) {
        assert_eq!(na, nb);
        assert!(
            ta.equal(tb),
            "{na} differs between the uninterrupted and the resumed run"
        );
    }

    // A finished run grows by phases appended to its recipe.toml: resuming trains only those,
    // with the same teacher (here a sandwich phase, which trains the largest and smallest
    // subnets in every step).
    let c = tmp.path().join("c");
    std::fs::create_dir(&c).unwrap();
    for f in ["recipe.toml", "run.json", "checkpoint.safetensors"] {
        std::fs::copy(a.join(f), c.join(f)).unwrap();
    }
    let mut recipe = std::fs::read_to_string(c.join("recipe.toml")).unwrap();
    recipe.push_str(
        "\n[[phase]]\nname = \"sandwich\"\nks = [3, 5, 7]\nexpand = [3, 4, 6]\ndepth = [2, 3, 4]\n\
         subnets_per_step = 3\nsandwich = true\nsteps = 2\nlr = 0.01\n",
    );
    std::fs::write(c.join("recipe.toml"), recipe).unwrap();
    assert_eq!(resume(&c, opts(&data, None)).unwrap(), Outcome::Finished);
    let card: Value =
        serde_json::from_str(&std::fs::read_to_string(c.join("card.json")).unwrap()).unwrap();
    assert_eq!(card["steps"], 15);
    assert_eq!(card["validation"][6]["phase"], "sandwich");
    assert!(card["validation"][6]["rows"][2]["test_top1"].is_number());
    let steps: Vec<Value> = std::fs::read_to_string(c.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|l: &Value| l["kind"] == "step")
        .collect();
    assert!(steps.iter().all(|l| l["phase"] == "sandwich"), "{steps:?}");
    let changed = weights(&a)
        .iter()
        .zip(weights(&c).iter())
        .filter(|((_, ta), (_, tc))| !ta.equal(tc))
        .count();
    assert!(changed > 0, "the appended phase changed no weight");

    // A run directory is not overwritten.
    let e = train(Recipe::load("smoke").unwrap(), &a, opts(&data, None))
        .unwrap_err()
        .to_string();
    assert!(e.contains("already holds a run"), "{e}");
}

#[test]
fn bad_data_and_recipes_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let e = train(
        Recipe::load("smoke").unwrap(),
        &tmp.path().join("r1"),
        opts(&tmp.path().join("nope"), None),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("nope"), "{e}");
    let data = tmp.path().join("data");
    std::fs::create_dir(&data).unwrap();
    dataset(&data);
    let f = data.join("train-images-idx3-ubyte");
    let bytes = std::fs::read(&f).unwrap();
    std::fs::write(&f, &bytes[..bytes.len() - 10]).unwrap();
    let e = train(
        Recipe::load("smoke").unwrap(),
        &tmp.path().join("r2"),
        opts(&data, None),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("train-images-idx3-ubyte") && e.contains("truncated"),
        "{e}"
    );

    let smoke = Recipe::builtin_toml("smoke").unwrap();
    let e = Recipe::from_toml(&smoke.replace("[train]", "[train]\nbogus = 1"), "x.toml")
        .unwrap_err()
        .to_string();
    assert!(e.contains("x.toml") && e.contains("bogus"), "{e}");
    let e = Recipe::from_toml(&smoke.replace("lr = 0.05", "lr = -1"), "x.toml")
        .unwrap_err()
        .to_string();
    assert!(e.contains("lr must be positive"), "{e}");
    let e = Recipe::from_toml(
        &smoke.replace("name = \"full\"", "name = \"full\"\nsandwich = true"),
        "x.toml",
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("phase `full`") && e.contains("sandwich needs subnets_per_step ≥ 2"),
        "{e}"
    );
    let e = Recipe::load("no-such-recipe").unwrap_err().to_string();
    assert!(
        e.contains("no-such-recipe") && e.contains("fmnist-quick"),
        "{e}"
    );
    for &name in ofa_trainer::recipe::BUILTIN {
        let r = Recipe::load(name).unwrap();
        assert_eq!(
            Recipe::from_toml(&r.to_toml(), name).unwrap(),
            r,
            "{name} round trip"
        );
    }
}

#[test]
fn a_branch_continues_another_runs_phase_boundary() {
    let _turn = ONE_RUN_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (tmp, data) = one_thread_with_data();
    let smoke = Recipe::load("smoke").unwrap();

    // A stops where its first phase ends (3 steps); B branches there with the same recipe and
    // must end as an uninterrupted run does, bit for bit.
    let a = tmp.path().join("a");
    assert_eq!(
        train(smoke.clone(), &a, opts(&data, Some(3))).unwrap(),
        Outcome::Interrupted { global_step: 3 }
    );
    let ck = a.join("checkpoint.safetensors");
    let b = tmp.path().join("b");
    assert_eq!(
        branch(smoke.clone(), &b, &ck, opts(&data, None)).unwrap(),
        Outcome::Finished
    );
    let full = tmp.path().join("full");
    assert_eq!(
        train(smoke.clone(), &full, opts(&data, None)).unwrap(),
        Outcome::Finished
    );
    for ((na, ta), (_, tb)) in weights(&full).iter().zip(weights(&b).iter()) {
        assert!(
            ta.equal(tb),
            "{na} differs between the branch and the whole run"
        );
    }
    let lines: Vec<Value> = std::fs::read_to_string(b.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // the source's first phase (3 steps and its table), the branch record, then its own phases
    assert_eq!(lines[3]["kind"], "validation");
    assert_eq!(lines[3]["phase"], "full");
    assert_eq!(lines[4]["kind"], "branch");
    assert_eq!(lines.iter().filter(|l| l["kind"] == "step").count(), 13);
    let card: Value =
        serde_json::from_str(&std::fs::read_to_string(b.join("card.json")).unwrap()).unwrap();
    assert_eq!(card["branched_from"]["phases"], 1);
    assert_eq!(card["branched_from"]["recipe"], "smoke");
    assert_eq!(card["validation"].as_array().unwrap().len(), 6);

    // A different continuation (one all-choices phase) trains from the same full network.
    let mut other = smoke.clone();
    other.name = "smoke-no-ps".into();
    let mut all = other.phases[5].clone();
    all.name = "all".into();
    all.sort_channels = None;
    other.phases.truncate(1);
    other.phases.push(all);
    let c = tmp.path().join("c");
    assert_eq!(
        branch(other.clone(), &c, &ck, opts(&data, None)).unwrap(),
        Outcome::Finished
    );
    let card: Value =
        serde_json::from_str(&std::fs::read_to_string(c.join("card.json")).unwrap()).unwrap();
    assert_eq!(card["steps"], 5);

    // Refused: a first phase that differs, other settings, a mid-phase checkpoint, an
    // existing run directory.
    let mut bad = other.clone();
    bad.phases[0].lr *= 2.0;
    let e = branch(bad, &tmp.path().join("d"), &ck, opts(&data, None))
        .unwrap_err()
        .to_string();
    assert!(e.contains("phase 1 (`full`) differs"), "{e}");
    let mut bad = other.clone();
    bad.train.seed = 1;
    let e = branch(bad, &tmp.path().join("d"), &ck, opts(&data, None))
        .unwrap_err()
        .to_string();
    assert!(e.contains("[train] differs"), "{e}");
    let mid = tmp.path().join("mid");
    train(smoke.clone(), &mid, opts(&data, Some(4))).unwrap();
    let e = branch(
        other.clone(),
        &tmp.path().join("d"),
        &mid.join("checkpoint.safetensors"),
        opts(&data, None),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("not at a phase boundary"), "{e}");
    assert!(
        !tmp.path().join("d").exists(),
        "a refused branch left a directory"
    );
    let e = branch(other, &c, &ck, opts(&data, None))
        .unwrap_err()
        .to_string();
    assert!(e.contains("already holds a run"), "{e}");
}
