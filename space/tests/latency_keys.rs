//! Lookup-table keys equal the reference LatencyTable's for the published Note10 fixture
//! (`../shared/reference-data`, read in place; the test skips with a message where it is absent).

#![allow(clippy::unwrap_used)]

use std::path::Path;

use ofa_space::latency::layer_keys;
use ofa_space::{ArchConfig, SearchSpace};

#[test]
#[cfg_attr(
    shared_absent,
    ignore = "needs ../shared/reference-data (absent here; CI=true runs it and fails)"
)]
fn keys_match_the_reference_note10_table_layers() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/reference-data/predictor_fixture_note10.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (the reference data lives in ../shared)",
            path.display()
        )
    });
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let space = SearchSpace::preset("ofa-mbv3-w1.2").unwrap();
    let mut checked = 0;
    for entry in v["archs"].as_array().unwrap() {
        let Some(layers) = entry["lut_layers"].as_array() else {
            continue;
        };
        let arch: ArchConfig = serde_json::from_value(entry["arch"].clone()).unwrap();
        arch.validate(&space).unwrap();
        let ours: Vec<String> = layer_keys(&space, &arch)
            .into_iter()
            .map(|(_, k)| k)
            .collect();
        let theirs: Vec<String> = layers
            .iter()
            .map(|l| l["key"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(ours, theirs, "arch {}", entry["index"]);
        checked += 1;
    }
    assert!(
        checked >= 2,
        "the fixture lists layers for at least two archs"
    );
}
