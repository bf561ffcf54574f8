//! The shipped package's card reads as the schema says, and writes back to the same JSON.

use std::path::Path;

use ofa_schema::run::RunCard;

#[test]
fn the_shipped_card_reads_and_writes_back_unchanged() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../checkpoints/fashion-mnist/card.json");
    let card: RunCard<serde_json::Value> = ofa_schema::read_json(&path).expect("the shipped card");
    assert_eq!(
        card.world_size, 1,
        "absent in cards before data-parallel runs"
    );
    assert!(!card.validation.is_empty());
    let written: serde_json::Value =
        serde_json::from_str(&ofa_schema::to_json(&card)).expect("JSON");
    let mut original: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("JSON");
    // what the writer now adds to an old card: the defaults it was read with
    original["world_size"] = 1.into();
    original["backend"] = serde_json::Value::Null;
    assert_eq!(written, original);
}

#[test]
fn the_shipped_metrics_log_reads_line_by_line_and_writes_back_unchanged() {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../checkpoints/fashion-mnist/metrics.jsonl");
    let log = ofa_schema::metrics::read_metrics(&path).expect("the shipped log");
    assert!(!log.torn_tail);
    let text = std::fs::read_to_string(&path).expect("read");
    assert_eq!(log.lines.len(), text.lines().count());
    for (line, original) in log.lines.iter().zip(text.lines()) {
        let a: serde_json::Value = serde_json::from_str(&line.to_line()).expect("JSON");
        let b: serde_json::Value = serde_json::from_str(original).expect("JSON");
        assert_eq!(a, b);
    }
}

/// The `net_config` metadata the reference wrote into a fixture subnet file.
fn reference_net_config(name: &str) -> serde_json::Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/ofa-tiny")
        .join(name);
    let bytes = std::fs::read(&path).expect("the fixture");
    let n = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).expect("header");
    let text = header["__metadata__"]["net_config"]
        .as_str()
        .expect("net_config metadata");
    serde_json::from_str(text).expect("JSON")
}

#[test]
fn the_reference_net_configs_read_as_the_wire_type_and_write_back_unchanged() {
    for name in ["subnet_1.safetensors", "subnet_3.safetensors"] {
        let original = reference_net_config(name);
        let wire: ofa_schema::net_config::NetConfig =
            serde_json::from_value(original.clone()).expect("a reference net config");
        let again: serde_json::Value =
            serde_json::from_str(&ofa_schema::to_json(&wire)).expect("JSON");
        assert_eq!(again, original, "{name}");
    }
}
