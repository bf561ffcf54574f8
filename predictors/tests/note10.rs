//! The reference's Note10 tables: imported from YAML, they predict exactly what the reference
//! LatencyTable predicted for the 54 fixture archs (read from `../shared`, skipped when absent).

#![allow(clippy::unwrap_used)]

use std::path::Path;

use ofa_predictors::latency::{LatencyError, LatencyTable};
use ofa_space::{ArchConfig, SearchSpace};

#[test]
#[cfg_attr(
    shared_absent,
    ignore = "needs ../shared/reference-data (absent here; CI=true runs it and fails)"
)]
fn note10_predictions_equal_the_reference() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/reference-data");
    assert!(
        root.is_dir(),
        "{} is absent: the reference data lives in ../shared",
        root.display()
    );
    let table =
        LatencyTable::import_reference_dir(&root.join("note10-lut"), "Samsung Note10").unwrap();
    assert_eq!(
        table.tables.keys().copied().collect::<Vec<_>>(),
        vec![160, 176, 192, 208, 224]
    );
    // JSON round trip.
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("note10.json");
    std::fs::write(&p, table.to_json()).unwrap();
    let table = LatencyTable::load(&p).unwrap();

    let space = SearchSpace::preset("ofa-mbv3-w1.2").unwrap();
    let fixture: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("predictor_fixture_note10.json")).unwrap(),
    )
    .unwrap();
    let (mut checked, mut missing) = (0, 0);
    for e in fixture["archs"].as_array().unwrap() {
        let arch: ArchConfig = serde_json::from_value(e["arch"].clone()).unwrap();
        match (e["latency_ms"].as_f64(), table.predict(&space, &arch)) {
            (Some(want), Ok(got)) => {
                assert!(
                    (got - want).abs() <= 1e-9 * want.max(1.0),
                    "arch {}: {got} vs {want}",
                    e["index"]
                );
                checked += 1;
            }
            (None, Err(LatencyError::MissingResolution { resolution, .. })) => {
                assert!(!table.tables.contains_key(&resolution));
                missing += 1;
            }
            (want, got) => panic!("arch {}: reference {want:?}, ours {got:?}", e["index"]),
        }
    }
    assert!(checked >= 40, "{checked} archs compared");
    assert!(
        missing > 0,
        "archs outside the table's resolutions are reported, not guessed"
    );
}

#[test]
fn bad_tables_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let e = LatencyTable::import_reference_dir(dir.path(), "x")
        .unwrap_err()
        .to_string();
    assert!(e.contains("no {R}_lookup_table.yaml"), "{e}");
    std::fs::write(dir.path().join("160_lookup_table.yaml"), "key: [unclosed").unwrap();
    let e = LatencyTable::import_reference_dir(dir.path(), "x")
        .unwrap_err()
        .to_string();
    assert!(e.contains("160_lookup_table.yaml"), "{e}");
    std::fs::write(
        dir.path().join("160_lookup_table.yaml"),
        "Logits-input:1x1x1536-output:1000:\n  count: 1\n  mean: 0.1\n  std: 0.0\n",
    )
    .unwrap();
    let t = LatencyTable::import_reference_dir(dir.path(), "x").unwrap();
    let space = SearchSpace::preset("ofa-mbv3-w1.2").unwrap();
    let mut arch = ArchConfig::smallest(&space);
    arch.r = 160;
    let e = t.predict(&space, &arch).unwrap_err().to_string();
    assert!(
        e.contains("no entry `Conv-input:160x160x3-output:80x80x24`")
            && e.contains("needed by arch"),
        "{e}"
    );
    let p = dir.path().join("t.json");
    std::fs::write(
        &p,
        "{\"format\": \"other\", \"meta\": {\"device\": \"x\"}, \"tables\": {}}",
    )
    .unwrap();
    assert!(LatencyTable::load(&p)
        .unwrap_err()
        .to_string()
        .contains("format `other`"));
}

#[test]
fn a_single_reference_yaml_table_is_read_at_the_resolution_its_keys_name() {
    // the reference's default ProxylessNAS table is one file, `mobile_trim.yaml`, of one
    // resolution: its first conv's key says which
    let space = SearchSpace::preset("ofa-proxyless-tiny").unwrap();
    let mut arch = ArchConfig::smallest(&space);
    arch.r = 40;
    let keys = ofa_space::latency::layer_keys(&space, &arch);
    let yaml: String = keys
        .iter()
        .map(|(_, k)| format!("{k}:\n  count: 5\n  mean: 0.5\n  std: 0.01\n"))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("mobile_trim.yaml");
    std::fs::write(&p, &yaml).unwrap();
    let t = LatencyTable::load_any(&p, "mobile").unwrap();
    assert_eq!(t.tables.keys().copied().collect::<Vec<_>>(), vec![40]);
    let got = t.predict(&space, &arch).unwrap();
    assert!((got - 0.5 * keys.len() as f64).abs() < 1e-9);
    // a `{R}_lookup_table.yaml` file alone takes its name's resolution
    let q = dir.path().join("40_lookup_table.yaml");
    std::fs::write(&q, &yaml).unwrap();
    assert!(LatencyTable::load_any(&q, "x")
        .unwrap()
        .tables
        .contains_key(&40));
    // without either, the error says what is missing
    let none = dir.path().join("blocks.yaml");
    std::fs::write(
        &none,
        "Logits-input:1x1x8-output:10:\n  count: 1\n  mean: 0.1\n  std: 0.0\n",
    )
    .unwrap();
    let e = LatencyTable::load_any(&none, "x").unwrap_err().to_string();
    assert!(
        e.contains("no resolution") && e.contains("blocks.yaml"),
        "{e}"
    );
}
