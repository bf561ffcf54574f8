//! The main job on a freshly trained smoke package with a predictor and a latency table of this
//! CPU: `make demo`'s script (`scripts/demo.sh`) in its fast mode (serve, three requests over
//! HTTP with curl, weights downloaded, one subnet cut offline, every file measured, the Pareto
//! plot, the server stopped, one table), and `ofa bench quality` (the search's picks against the
//! predictor dataset's best).

#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use common::{ofa, run_ok, s, specialised_package};
use serde_json::Value;

/// The package and its predictor dataset, for every test.
fn package() -> (&'static Path, PathBuf) {
    static PKG: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    let (tmp, pkg) = PKG.get_or_init(|| {
        let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
        let pkg = specialised_package(tmp.path());
        (tmp, pkg)
    });
    (pkg, common::accuracy_data_of(tmp.path(), "pkg"))
}

#[test]
fn demo_script_fast_mode_serves_downloads_measures_and_tabulates() {
    let tmp = tempfile::tempdir().unwrap();
    let (pkg, _) = package();
    let data = pkg.parent().unwrap().join("data");
    let out = tmp.path().join("demo");
    let root = env!("CARGO_MANIFEST_DIR");
    let run = Command::new("bash")
        .arg(format!("{root}/scripts/demo.sh"))
        .env("OFA", env!("CARGO_BIN_EXE_ofa"))
        .env("PACKAGE", pkg)
        .env("DATA", &data)
        .env("OUT", &out)
        .env("THREADS", "1")
        .env("DEMO_FAST", "1")
        .env_remove("BUDGETS")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stdout}\n{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    // this machine's latency fitted from probes timed here, into a served copy of the package
    let name = pkg.file_name().unwrap();
    assert!(out.join(name).join("latency/local.json").is_file());
    let fit: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("fit.json")).unwrap()).unwrap();
    assert_eq!(fit["measurements"], 20, "{fit}");
    assert!(
        !pkg.join("latency/local.json").exists(),
        "the package itself is untouched"
    );

    // three subnets over HTTP and one offline, each with its files and its own measurement
    let dirs = ["http-1", "http-2", "http-3", "offline"];
    for d in dirs {
        let d = out.join(d);
        for f in ["subnet.safetensors", "net.config.json", "measured.json"] {
            assert!(d.join(f).is_file(), "{}/{f} missing", d.display());
        }
        let m: Value =
            serde_json::from_str(&std::fs::read_to_string(d.join("measured.json")).unwrap())
                .unwrap();
        assert_eq!(m["split"], "test");
        assert!((0.0..=100.0).contains(&m["top1"].as_f64().unwrap()), "{m}");
        assert!(m["latency_ms"].as_f64().unwrap() > 0.0, "{m}");
    }
    // the budgets climb, and each HTTP answer fits its budget by prediction
    let mut last = 0.0;
    for d in &dirs[..3] {
        let budget: f64 = std::fs::read_to_string(out.join(d).join("budget"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(budget > last, "budgets not increasing");
        last = budget;
        let rec: Value = serde_json::from_str(
            &std::fs::read_to_string(out.join(d).join("record.json")).unwrap(),
        )
        .unwrap();
        // the search was asked for the budget less the fit's headroom (2 to 10 %)
        let asked: f64 = std::fs::read_to_string(out.join(d).join("asked"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(
            asked <= budget * 0.98 + 1e-3 && asked >= budget * 0.90 - 1e-3,
            "asked {asked} for budget {budget}"
        );
        assert!(rec["predicted"]["latency_ms"].as_f64().unwrap() <= asked + 1e-9);
        assert_eq!(rec["hardware"], "local");
    }
    assert!(out.join("front/front.svg").is_file());
    // the server drained and stopped; the table has a header and four rows
    assert!(stdout.lines().any(|l| l == "stopped"), "{stdout}");
    let table: Vec<&str> = stdout
        .lines()
        .skip_while(|l| !l.starts_with("via "))
        .take_while(|l| !l.is_empty())
        .collect();
    assert_eq!(table.len(), 5, "{stdout}");
    assert_eq!(
        table.iter().filter(|l| l.starts_with("HTTP ")).count(),
        3,
        "{stdout}"
    );
    assert!(table[4].starts_with("ofa extract "), "{stdout}");
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("measured here: ")
                && l.ends_with(" within 10 % of their prediction")),
        "{stdout}"
    );
}

#[test]
fn bench_quality_compares_the_picks_with_the_datasets_best() {
    let (pkg, acc) = package();
    let data = pkg.parent().unwrap().join("data");
    // just above the fastest point of the front, and a budget everything fits
    let front: Value = serde_json::from_str(&run_ok(ofa().args([
        "search",
        "--package",
        s(pkg),
        "--hardware",
        "cpu",
        "--pareto",
        "latency_ms",
        "--json",
    ])))
    .unwrap();
    let lo = front["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["metrics"]["latency_ms"].as_f64().unwrap())
        .fold(f64::MAX, f64::min);
    let budgets = format!("{},1000000", lo * 1.01);
    let q: Value = serde_json::from_str(&run_ok(ofa().args([
        "bench",
        "quality",
        "--package",
        s(pkg),
        "--dataset",
        s(&acc),
        "--data",
        s(&data),
        "--budgets",
        &budgets,
        "--noise-samples",
        "2",
        "--latency-repeats",
        "2",
        "--json",
    ])))
    .unwrap();
    let records: Vec<Value> = std::fs::read_to_string(&acc)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(q["dataset_records"], records.len());
    let rows = q["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    for r in rows {
        let b = r["budget_ms"].as_f64().unwrap();
        assert!(
            r["search"]["predicted_latency_ms"].as_f64().unwrap() <= b + 1e-9,
            "{r}"
        );
        assert!(r["search"]["measured_latency_ms"].as_f64().unwrap() > 0.0);
        if let Some(best) = r["dataset_best"].as_object() {
            assert!(
                best["predicted_latency_ms"].as_f64().unwrap() <= b + 1e-9,
                "{r}"
            );
            // re-measured exactly as the dataset measured it: the record's own top-1
            let rec = records.iter().find(|x| x["arch"] == best["arch"]).unwrap();
            assert_eq!(best["val_top1"], rec["top1"], "{r}");
            let gap = r["val_gap"].as_f64().unwrap();
            let sv = r["search"]["val_top1"].as_f64().unwrap();
            assert!((gap - (sv - rec["top1"].as_f64().unwrap())).abs() < 1e-9);
        }
    }
    // every record fits the largest budget; the best of them is the dataset's maximum
    let last = &rows[1];
    assert_eq!(last["dataset_fitting"], records.len());
    let max = records
        .iter()
        .map(|r| r["top1"].as_f64().unwrap())
        .fold(0.0, f64::max);
    assert_eq!(last["dataset_best"]["val_top1"].as_f64().unwrap(), max);
    assert_eq!(q["noise"]["samples"], 2);
    assert!(q["noise"]["sd_points"].as_f64().unwrap() >= 0.0);
}
