//! End-to-end tests of the `ofa` binary, driven as a user would.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use ofa_supernet::checkpoint::read_safetensors;
use serde_json::Value;
use tch::Kind;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ofa-tiny")
}

fn ofa(args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_ofa"))
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("panicked"),
        "ofa {args:?} panicked: {stderr}"
    );
    out
}

fn ok(args: &[&str]) -> String {
    let out = ofa(args);
    assert!(
        out.status.success(),
        "ofa {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs, expects exit code 1 and returns stderr.
fn fails(args: &[&str]) -> String {
    let out = ofa(args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "ofa {args:?}: {stderr}");
    stderr
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn arch_of(index: usize) -> String {
    let v: Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("subnets.json")).unwrap())
            .unwrap();
    let c = &v[index];
    serde_json::json!({"ks": c["ks"], "e": c["e"], "d": c["d"], "r": [c["resolution"]]}).to_string()
}

fn max_diff(a: &tch::Tensor, b: &tch::Tensor) -> f64 {
    (a.to_kind(Kind::Double) - b.to_kind(Kind::Double))
        .abs()
        .max()
        .double_value(&[])
}

#[test]
fn import_extract_infer_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sup = d.join("supernet.safetensors");
    ok(&[
        "import",
        s(&fixtures().join("supernet_current_naming.pth")),
        "--out",
        s(&sup),
    ]);
    let info: Value = serde_json::from_str(&ok(&["inspect", s(&sup), "--json"])).unwrap();
    assert_eq!(info["kind"], "supernet");
    assert_eq!(info["tensors"], 475);
    assert_eq!(info["space"]["width_mult"], 0.25);
    // MACs of the largest subnet at 48 px equal the reference's count.
    let largest = &info["subnets"][0]["by_resolution"];
    let at48 = largest
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["resolution"] == 48)
        .unwrap();
    assert_eq!(at48["macs"], 5196896);
    // --arch takes the same names as everywhere else
    let named: Value =
        serde_json::from_str(&ok(&["inspect", s(&sup), "--arch", "largest", "--json"])).unwrap();
    assert_eq!(named["subnets"].as_array().unwrap().len(), 1);
    assert_eq!(named["subnets"][0], info["subnets"][0]);

    let arch = d.join("arch.json");
    std::fs::write(&arch, arch_of(3)).unwrap();
    let sub = d.join("subnet.safetensors");
    let nc = d.join("net.config.json");
    ok(&[
        "extract",
        "--supernet",
        s(&sup),
        "--arch",
        s(&arch),
        "--out",
        s(&sub),
        "--net-config",
        s(&nc),
    ]);
    // Same tensors as the reference's get_active_subnet.
    let ours = read_safetensors(&sub).unwrap();
    let reference = read_safetensors(&fixtures().join("subnet_3.safetensors")).unwrap();
    assert_eq!(ours.tensors.len(), reference.tensors.len());
    for (name, r) in &reference.tensors {
        let t = ours
            .tensors
            .get(name)
            .unwrap_or_else(|| panic!("missing {name}"));
        assert!(max_diff(t, r) <= 1e-5, "{name}");
    }
    // The net.config JSON is the reference's.
    let ref_nc: Value = serde_json::from_str(&reference.metadata["net_config"]).unwrap();
    let mut our_nc: Value = serde_json::from_str(&std::fs::read_to_string(&nc).unwrap()).unwrap();
    // Training dropout is not in a state_dict: the import keeps the reference default (0.1), the
    // fixture was built with 0.
    assert_eq!(our_nc["classifier"]["dropout_rate"], 0.1);
    our_nc["classifier"]["dropout_rate"] = ref_nc["classifier"]["dropout_rate"].clone();
    assert!(our_nc == ref_nc, "net.config differs from the reference's");

    // Subnet and supernet + arch give the reference logits.
    let io = fixtures().join("io_3.safetensors");
    let expected = read_safetensors(&io).unwrap();
    let out = d.join("logits.safetensors");
    ok(&[
        "infer",
        "--model",
        s(&sub),
        "--input",
        s(&io),
        "--out",
        s(&out),
    ]);
    let got = read_safetensors(&out).unwrap();
    assert!(max_diff(&got.tensors["logits"], &expected.tensors["logits_subnet"]) < 1e-4);
    ok(&[
        "infer",
        "--model",
        s(&sup),
        "--arch",
        s(&arch),
        "--input",
        s(&io),
        "--out",
        s(&out),
    ]);
    let got = read_safetensors(&out).unwrap();
    assert!(max_diff(&got.tensors["logits"], &expected.tensors["logits_supernet"]) < 1e-4);
    // A reference state_dict works directly as a model too.
    let legacy = fixtures().join("supernet_legacy_naming.pth");
    ok(&[
        "infer",
        "--model",
        s(&legacy),
        "--arch",
        s(&arch),
        "--input",
        s(&io),
        "--out",
        s(&out),
    ]);
    let sub_info: Value = serde_json::from_str(&ok(&["inspect", s(&sub), "--json"])).unwrap();
    assert_eq!(sub_info["kind"], "subnet");
    // `--arch largest|smallest`: the space's extremes at its largest / smallest resolution.
    let resolutions: Vec<u64> = info["space"]["resolutions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_u64().unwrap())
        .collect();
    for (which, k, e, depth, r) in [
        ("largest", 7, 6, 4, resolutions.iter().max()),
        ("smallest", 3, 3, 2, resolutions.iter().min()),
    ] {
        let f = d.join(format!("{which}.safetensors"));
        ok(&[
            "extract",
            "--supernet",
            s(&sup),
            "--arch",
            which,
            "--out",
            s(&f),
        ]);
        let meta = read_safetensors(&f).unwrap().metadata;
        let arch: Value = serde_json::from_str(&meta["arch"]).unwrap();
        assert!(
            arch["ks"].as_array().unwrap().iter().all(|v| v == k),
            "{which}: {arch}"
        );
        assert!(
            arch["e"].as_array().unwrap().iter().all(|v| v == e),
            "{which}: {arch}"
        );
        assert!(
            arch["d"].as_array().unwrap().iter().all(|v| v == depth),
            "{which}: {arch}"
        );
        assert_eq!(arch["r"].as_u64(), r.copied(), "{which}: {arch}");
    }
    let cases: Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("subnets.json")).unwrap())
            .unwrap();
    assert_eq!(sub_info["macs"], cases[3]["macs"]);
}

#[test]
fn bad_input_is_a_clear_error_with_exit_code_1() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sup = fixtures().join("supernet.safetensors");
    let io = fixtures().join("io_1.safetensors");
    let out = d.join("o.safetensors");
    let arch = d.join("arch.json");

    let e = fails(&[
        "extract",
        "--supernet",
        s(&sup),
        "--arch",
        s(&d.join("nope.json")),
        "--out",
        s(&out),
    ]);
    assert!(e.contains("nope.json"), "{e}");

    std::fs::write(&arch, arch_of(1).replace("[3,3,3,", "[4,3,3,")).unwrap();
    let e = fails(&[
        "extract",
        "--supernet",
        s(&sup),
        "--arch",
        s(&arch),
        "--out",
        s(&out),
    ]);
    assert!(e.contains("`ks[0]` = 4"), "{e}");

    std::fs::write(&arch, "{\"ks\": [3], ").unwrap();
    let e = fails(&[
        "extract",
        "--supernet",
        s(&sup),
        "--arch",
        s(&arch),
        "--out",
        s(&out),
    ]);
    assert!(e.contains("not a valid arch"), "{e}");

    std::fs::write(&arch, arch_of(1)).unwrap();
    let e = fails(&[
        "infer",
        "--model",
        s(&sup),
        "--input",
        s(&io),
        "--out",
        s(&out),
    ]);
    assert!(e.contains("--arch"), "{e}");
    let e = fails(&[
        "infer",
        "--model",
        s(&sup),
        "--arch",
        s(&arch),
        "--input",
        s(&sup),
        "--out",
        s(&out),
    ]);
    assert!(e.contains("no tensor named `input`"), "{e}");
    let e = fails(&[
        "infer",
        "--model",
        s(&sup),
        "--arch",
        s(&arch),
        "--input",
        s(&io),
        "--out",
        s(&out),
        "--device",
        "cuda:7",
    ]);
    assert!(e.contains("cuda:7"), "{e}");

    let bytes = std::fs::read(&sup).unwrap();
    let trunc = d.join("trunc.safetensors");
    std::fs::write(&trunc, &bytes[..1000]).unwrap();
    let e = fails(&["inspect", s(&trunc)]);
    assert!(e.contains("trunc.safetensors"), "{e}");
    let e = fails(&["import", s(&d.join("missing.pth")), "--out", s(&out)]);
    assert!(e.contains("missing.pth"), "{e}");
    assert!(!out.exists(), "nothing written on failure");
    let e = fails(&["frobnicate"]);
    assert!(e.contains("frobnicate"), "{e}");
}

#[test]
fn devices_and_bench_json() {
    let v: Value = serde_json::from_str(&ok(&["inspect", "--devices", "--json"])).unwrap();
    assert!(v["devices"]["cpu"]["threads"].as_i64().unwrap() >= 1);
    assert!(v["devices"]["cuda_available"].is_boolean());
    let b: Value = serde_json::from_str(&ok(&[
        "bench",
        "extract",
        "--space",
        "ofa-mbv3-tiny",
        "--repeats",
        "3",
        "--forward-repeats",
        "1",
        "--resolution",
        "32",
        "--batch",
        "2",
        "--json",
    ]))
    .unwrap();
    assert!(b["median_ms"].as_f64().unwrap() > 0.0);
    assert!(b["forward_largest"]["median_ms"].as_f64().unwrap() > 0.0);
    // Training steps of the tiny space, batch 4 at 32 px, with `extra` arguments.
    let bench_train = |extra: &[&str]| -> Value {
        let mut args = vec![
            "--threads",
            "1",
            "bench",
            "train",
            "--space",
            "ofa-mbv3-tiny",
        ];
        args.extend(["--batch", "4", "--resolution", "32", "--json"]);
        args.extend(extra);
        serde_json::from_str(&ok(&args)).unwrap()
    };
    let t = bench_train(&["--steps", "2", "--subnets-per-step", "2"]);
    assert!(t["images_per_s"].as_f64().unwrap() > 0.0);
    assert!(t["breakdown_ms"]["backward"].as_f64().unwrap() > 0.0);
    assert_eq!(t["layout"], "channels_last");
    assert_eq!(t["world_size"], 1);
    assert_eq!(t["reduced_bytes_per_step"], 0);
    // The same steps as 2 local ranks: each step reduces every trainable float once.
    let t = bench_train(&["--steps", "2", "--nproc-per-node", "2"]);
    assert_eq!(t["world_size"], 2);
    assert_eq!(t["backend"], "gloo");
    let space = ofa_space::SearchSpace::preset("ofa-mbv3-tiny").unwrap();
    let net = ofa_supernet::Supernet::new(&space, 0, tch::Device::Cpu).unwrap();
    let trainable: i64 = net
        .tensors()
        .iter()
        .filter(|(spec, _)| spec.role.trainable())
        .map(|(_, t)| t.numel() as i64 * 4)
        .sum();
    assert_eq!(t["reduced_bytes_per_step"], trainable, "{t}");
    let share = t["allreduce_share"].as_f64().unwrap();
    assert!(share > 0.0 && share < 1.0, "{t}");
    let e = fails(&["bench", "train", "--backend", "gloo"]);
    assert!(e.contains("not a rank of a job"), "{e}");
    let e = fails(&["bench", "train", "--nproc-per-node", "0"]);
    assert!(e.contains("at least 1"), "{e}");

    // A generated folder of real JPEGs, streamed: the data benchmark, and training steps fed by it.
    let tmp = tempfile::tempdir().unwrap();
    let folder = tmp.path().join("jpegs");
    let f = folder.to_str().unwrap();
    let d: Value = serde_json::from_str(&ok(&[
        "bench",
        "data",
        "--data",
        f,
        "--generate",
        "20",
        "--resolution",
        "32",
        "--batch",
        "4",
        "--batches",
        "2",
        "--warmup",
        "1",
        "--profile-images",
        "3",
        "--json",
    ]))
    .unwrap();
    assert_eq!(d["dataset_images"], 20);
    assert!(d["images_per_s"].as_f64().unwrap() > 0.0, "{d}");
    assert_eq!(d["per_image_ms"]["images"], 3);
    assert!(d["per_image_ms"]["decode"].as_f64().unwrap() > 0.0, "{d}");
    let t = bench_train(&["--steps", "1", "--data", f]);
    let share = t["data_wait_share"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&share), "{t}");
    let e = fails(&["bench", "data", "--data", f, "--decoder", "turbo"]);
    assert!(e.contains("turbo"), "{e}");
}

#[test]
fn a_closed_stdout_ends_quietly_with_status_0() {
    // the reader is gone before `ofa` writes anything: every write to stdout fails (EPIPE)
    for args in [
        &["inspect", "--devices", "--json"][..],
        &["inspect", "--devices"][..],
    ] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = Command::new(env!("CARGO_BIN_EXE_ofa"))
            .args(args)
            .stdout(writer)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "ofa {args:?}: {:?} {stderr}",
            out.status
        );
        assert!(stderr.is_empty(), "ofa {args:?}: {stderr}");
    }
}

#[test]
fn a_bad_device_is_refused_by_the_argument_parser_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    for device in ["tpu", "cuda:99"] {
        let e = fails(&[
            "train",
            "--recipe",
            "fmnist-short",
            "--out",
            out.to_str().unwrap(),
            "--device",
            device,
        ]);
        assert!(
            e.contains("--device") && e.contains(device),
            "{device}: {e}"
        );
        assert!(!out.exists(), "the run folder was created before the check");
    }
}

#[test]
fn bench_finetune_and_strategies_report_their_keys_and_strategies_are_named() {
    let pkg = concat!(env!("CARGO_MANIFEST_DIR"), "/checkpoints/fashion-mnist");
    let f: Value = serde_json::from_str(&ok(&[
        "--threads",
        "1",
        "bench",
        "finetune",
        "--package",
        pkg,
        "--arch",
        "smallest",
        "--batch",
        "8",
        "--steps",
        "1",
        "--json",
    ]))
    .unwrap();
    assert_eq!(f["benchmark"], "finetune");
    for k in ["finetune", "train"] {
        assert!(f[k]["images_per_s"].as_f64().unwrap() > 0.0, "{f}");
    }
    assert!(f["ratio"].as_f64().unwrap() > 0.0, "{f}");
    // the package alone (the reference data left out): 3 bounds × 1 budget × 3 strategies
    let s: Value = serde_json::from_str(&ok(&[
        "bench",
        "strategies",
        "--package",
        pkg,
        "--reference-data",
        "/nonexistent",
        "--seeds",
        "2",
        "--evaluations",
        "200",
        "--json",
    ]))
    .unwrap();
    assert_eq!(s["benchmark"], "strategies");
    let rows = s["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 9, "{s}");
    assert!(s["skipped"][0].as_str().unwrap().starts_with("note10"));
    for r in rows {
        // a regret is against the best any strategy found: never negative, zero for the best
        assert!(r["worst_regret"].as_f64().unwrap() >= r["mean_regret"].as_f64().unwrap());
        assert!(r["mean_regret"].as_f64().unwrap() >= 0.0, "{r}");
    }
    let e = fails(&[
        "search",
        "--package",
        pkg,
        "--max-macs-m",
        "5",
        "--strategy",
        "annealing",
    ]);
    assert!(e.contains("annealing") && e.contains("aging"), "{e}");
    let e = fails(&[
        "search",
        "--package",
        pkg,
        "--pareto",
        "macs_m",
        "--strategy",
        "aging",
    ]);
    assert!(e.contains("one objective"), "{e}");
    let e = fails(&[
        "search",
        "--package",
        pkg,
        "--pareto",
        "macs_m",
        "--budget",
        "100",
    ]);
    assert!(e.contains("--budget"), "{e}");
}
