//! Specialisation as a user runs it, on a freshly trained smoke package: measure a predictor
//! dataset, fit, profile this CPU, search (one budget and the Pareto front), extract with
//! evaluation, load the result with `ofa infer`; and every bad input is a clear error with exit
//! code 1 and nothing written.

#![allow(clippy::unwrap_used)]

mod common;

use common::{fails_with, infer, ofa, run_ok, s, specialised_package};
use ofa_supernet::checkpoint::read_safetensors;
use serde_json::Value;

#[test]
fn search_extract_profile_end_to_end() {
    let tmp = tempfile::tempdir().unwrap();
    // a predictor fitted on 10 measured subnets and a profile of this CPU, then the table checked
    let pkg = specialised_package(tmp.path());
    // training drew its curves; `ofa curves` draws any run, a torn last line and all
    let font = std::path::Path::new("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf").is_file();
    if font {
        let svg = std::fs::read_to_string(pkg.join("curves.svg")).unwrap();
        assert!(
            svg.contains("<svg") && svg.contains("training loss") && svg.contains("held-out top-1")
        );
        let torn = tmp.path().join("torn");
        std::fs::create_dir_all(&torn).unwrap();
        let mut m = std::fs::read_to_string(pkg.join("metrics.jsonl")).unwrap();
        m.push_str("{\"kind\": \"step\", \"phase\": \"wid");
        std::fs::write(torn.join("metrics.jsonl"), m).unwrap();
        let pics = tmp.path().join("pics");
        run_ok(ofa().args(["curves", s(&torn), "--out", s(&pics)]));
        assert!(std::fs::read(pics.join("curves.png"))
            .unwrap()
            .starts_with(b"\x89PNG"));
    }
    fails_with(
        ofa().args(["curves", s(&tmp.path().join("absent"))]),
        "absent",
    );
    let table = pkg.join("latency/cpu.json");
    let t: Value = serde_json::from_str(&std::fs::read_to_string(&table).unwrap()).unwrap();
    assert_eq!(t["format"], "ofa-latency-table/1");
    assert_eq!(t["meta"]["batch"], 1);
    let layers = t["tables"]["32"].as_object().unwrap();
    // 3 kernels × 3 expands × 5 stages × 2 shapes (first block of a stage, the others share
    // theirs) + first conv, block 0 and 4 head layers
    assert_eq!(layers.len(), 9 * 5 * 2 + 6);
    assert!(layers.values().all(|e| e["mean"].as_f64().unwrap() > 0.0));
    // resumable: a rerun measures nothing new and keeps the values
    common::quick_profile(&pkg, &[]);
    let again: Value = serde_json::from_str(&std::fs::read_to_string(&table).unwrap()).unwrap();
    assert_eq!(again["tables"], t["tables"]);
    let v = run_ok(ofa().args([
        "profile",
        "validate",
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
    assert!(v["mape"].as_f64().unwrap().is_finite());

    // one budget, from predictors alone
    let out = run_ok(ofa().args([
        "search",
        "--package",
        s(&pkg),
        "--max-latency-ms",
        "1000",
        "--max-macs-m",
        "2",
        "--generations",
        "20",
        "--json",
    ]));
    let r: Value = serde_json::from_str(&out).unwrap();
    assert!(r["predicted"]["macs_m"].as_f64().unwrap() <= 2.0);
    assert!(r["predicted"]["latency_ms"].as_f64().unwrap() <= 1000.0);
    assert_eq!(r["hardware"], "cpu");

    // the front, with its files
    let front = tmp.path().join("front");
    run_ok(ofa().args([
        "search",
        "--package",
        s(&pkg),
        "--pareto",
        "macs_m",
        "--out",
        s(&front),
        "--generations",
        "10",
        "--population",
        "20",
    ]));
    let f: Value =
        serde_json::from_str(&std::fs::read_to_string(front.join("front.json")).unwrap()).unwrap();
    let points = f["points"].as_array().unwrap();
    assert!(!points.is_empty());
    let csv = std::fs::read_to_string(front.join("front.csv")).unwrap();
    assert_eq!(csv.lines().count(), points.len() + 1);
    if std::path::Path::new("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf").is_file() {
        assert!(std::fs::read_to_string(front.join("front.svg"))
            .unwrap()
            .contains("<svg"));
        assert!(std::fs::read(front.join("front.png"))
            .unwrap()
            .starts_with(b"\x89PNG"));
    }

    // the pipeline: search → cut → recalibrate → write, with evaluation
    let dir = tmp.path().join("subnet");
    run_ok(ofa().args([
        "extract",
        "--package",
        s(&pkg),
        "--max-macs-m",
        "1.5",
        "--generations",
        "20",
        "--calibration-images",
        "16",
        "--eval",
        "--eval-images",
        "32",
        "--out",
        s(&dir),
    ]));
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap()).unwrap();
    assert!(report["predicted"]["macs_m"].as_f64().unwrap() <= 1.5);
    let top1 = report["measured"]["top1"].as_f64().unwrap();
    assert!((0.0..=100.0).contains(&top1));
    assert!(report["measured"]["latency_ms"].as_f64().unwrap() > 0.0);
    for step in [
        "load_predictors_s",
        "search_s",
        "load_supernet_s",
        "cut_s",
        "write_s",
        "eval_top1_s",
        "eval_latency_s",
    ] {
        assert!(report["times"][step].as_f64().is_some(), "{step}");
    }
    let nc: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("net.config.json")).unwrap())
            .unwrap();
    assert_eq!(nc["name"], "MobileNetV3");
    // the subnet runs under `ofa infer`
    let logits = infer(&dir.join("subnet.safetensors"), tmp.path());
    assert_eq!(
        read_safetensors(&logits).unwrap().tensors["logits"].size(),
        [2, 4]
    );
    // a given arch skips the search and gives the same subnet
    let arch = tmp.path().join("arch.json");
    std::fs::write(&arch, report["arch"].to_string()).unwrap();
    let dir2 = tmp.path().join("subnet2");
    run_ok(ofa().args([
        "extract",
        "--package",
        s(&pkg),
        "--arch",
        s(&arch),
        "--calibration-images",
        "16",
        "--eval",
        "--eval-split",
        "test",
        "--out",
        s(&dir2),
    ]));
    let a = read_safetensors(&dir.join("subnet.safetensors")).unwrap();
    let b = read_safetensors(&dir2.join("subnet.safetensors")).unwrap();
    assert_eq!(a.tensors.len(), b.tensors.len());
    for (n, t) in &a.tensors {
        assert!(t.equal(&b.tensors[n]), "{n}");
    }
    // the file scores itself: `ofa eval` on the test split equals extract's measurement
    let report2: Value =
        serde_json::from_str(&std::fs::read_to_string(dir2.join("report.json")).unwrap()).unwrap();
    let data = tmp.path().join("data");
    let model2 = dir2.join("subnet.safetensors");
    let e: Value = serde_json::from_str(&run_ok(ofa().args([
        "eval",
        "--model",
        s(&model2),
        "--data",
        s(&data),
        "--latency-repeats",
        "3",
        "--json",
    ])))
    .unwrap();
    assert_eq!(e["split"], "test");
    assert!(e["latency_ms"].as_f64().unwrap() > 0.0, "{e}");
    assert_eq!(e["images"], report2["measured"]["images"]);
    assert_eq!(e["top1"], report2["measured"]["top1"]);
    fails_with(
        ofa().args([
            "eval",
            "--model",
            s(&pkg.join("supernet.safetensors")),
            "--data",
            s(&data),
        ]),
        "is a supernet",
    );
    fails_with(
        ofa().args([
            "eval",
            "--model",
            s(&model2),
            "--data",
            s(&tmp.path().join("absent")),
        ]),
        "absent",
    );
    // `--arch smallest` needs no file; its report names the space's smallest subnet
    let dir3 = tmp.path().join("subnet3");
    run_ok(ofa().args([
        "extract",
        "--package",
        s(&pkg),
        "--arch",
        "smallest",
        "--calibration-images",
        "16",
        "--out",
        s(&dir3),
    ]));
    let small: Value =
        serde_json::from_str(&std::fs::read_to_string(dir3.join("report.json")).unwrap()).unwrap();
    assert!(
        small["arch"]["ks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|k| k == 3),
        "{}",
        small["arch"]
    );

    // bad inputs: exit 1, a message naming the problem, nothing written
    let nowhere = tmp.path().join("never");
    let extract = |extra: &[&str]| {
        let mut c = ofa();
        c.args(["extract", "--package", s(&pkg), "--out", s(&nowhere)]);
        c.args(extra);
        c
    };
    fails_with(
        &mut extract(&["--hardware", "nope", "--max-latency-ms", "5"]),
        "unknown hardware `nope`",
    );
    fails_with(&mut extract(&["--max-latency-ms=-1"]), "positive finite");
    fails_with(&mut extract(&["--max-macs-m", "0"]), "positive finite");
    fails_with(&mut extract(&["--max-params-m", "NaN"]), "positive finite");
    fails_with(
        &mut extract(&["--max-macs-m", "0.001"]),
        "smallest achievable macs_m",
    );
    std::fs::write(tmp.path().join("bad.json"), "{\"ks\": [3").unwrap();
    fails_with(
        &mut extract(&["--arch", s(&tmp.path().join("bad.json"))]),
        "bad.json",
    );
    let mut big = report["arch"].clone();
    big["ks"][0] = Value::from(9);
    std::fs::write(tmp.path().join("big.json"), big.to_string()).unwrap();
    fails_with(
        &mut extract(&["--arch", s(&tmp.path().join("big.json"))]),
        "`ks[0]` = 9",
    );
    assert!(!nowhere.exists());
    // a package whose calibration file holds no images
    let hollow = tmp.path().join("hollow");
    std::fs::create_dir_all(&hollow).unwrap();
    for f in ["supernet.safetensors", "accuracy.safetensors", "card.json"] {
        std::fs::copy(pkg.join(f), hollow.join(f)).unwrap();
    }
    let cal = read_safetensors(&pkg.join("calibration.safetensors")).unwrap();
    let none: Vec<(String, tch::Tensor)> = ["images", "labels"]
        .iter()
        .map(|n| (n.to_string(), cal.tensors[*n].narrow(0, 0, 0)))
        .collect();
    ofa_supernet::checkpoint::write_safetensors(
        &hollow.join("calibration.safetensors"),
        &none,
        &cal.metadata,
    )
    .unwrap();
    fails_with(
        ofa().args([
            "extract",
            "--package",
            s(&hollow),
            "--arch",
            "largest",
            "--out",
            s(&nowhere),
        ]),
        "no calibration images",
    );
    assert!(!nowhere.exists());
    // a predictor made for another space
    fails_with(
        ofa().args([
            "search",
            "--space",
            "ofa-mbv3-w1.0",
            "--predictor",
            s(&pkg.join("accuracy.safetensors")),
            "--max-macs-m",
            "100",
        ]),
        "does not fit the space",
    );
    // a table without a layer the space needs
    let mut broken = t.clone();
    let first = broken["tables"]["32"]
        .as_object()
        .unwrap()
        .keys()
        .next()
        .unwrap()
        .clone();
    broken["tables"]["32"]
        .as_object_mut()
        .unwrap()
        .remove(&first);
    std::fs::write(pkg.join("latency/broken.json"), broken.to_string()).unwrap();
    fails_with(
        ofa().args([
            "search",
            "--package",
            s(&pkg),
            "--hardware",
            "cpu",
            "--max-macs-m",
            "2",
        ]),
        &first,
    );
}
