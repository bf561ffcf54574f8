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
