//! `make demo`'s script (`scripts/demo.sh`) in its fast mode, on a freshly trained smoke package
//! with a predictor and a latency table of this CPU: serve, three requests over HTTP with curl,
//! weights downloaded, one subnet cut offline, every file measured, the Pareto plot, the server
//! stopped, one table.

#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;

use common::specialised_package;
use serde_json::Value;

#[test]
fn demo_script_fast_mode_serves_downloads_measures_and_tabulates() {
    let tmp = tempfile::tempdir().unwrap();
    let pkg = specialised_package(tmp.path());
    let out = tmp.path().join("demo");
    let root = env!("CARGO_MANIFEST_DIR");
    let run = Command::new("bash")
        .arg(format!("{root}/scripts/demo.sh"))
        .env("OFA", env!("CARGO_BIN_EXE_ofa"))
        .env("PACKAGE", &pkg)
        .env("DATA", tmp.path().join("data"))
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
        assert!(rec["predicted"]["latency_ms"].as_f64().unwrap() <= budget + 1e-9);
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
}
