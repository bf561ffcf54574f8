//! The shipped package opens with its card typed; a damaged card is an error naming the file,
//! never an empty card.

#![allow(clippy::unwrap_used)]

use std::path::Path;

use ofa_package::{Package, CALIBRATION_FILE, CARD_FILE, SUPERNET_FILE};
use tch::Device;

fn shipped() -> &'static Path {
    Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../checkpoints/fashion-mnist"
    ))
}

#[test]
fn the_shipped_card_is_typed_and_a_damaged_one_is_named() {
    let pkg = Package::open(shipped(), Device::Cpu).unwrap();
    let card = pkg.card::<serde_json::Value>().unwrap().unwrap();
    assert_eq!(card.name, "fmnist-short");
    assert_eq!(card.world_size, 1);

    let dir = tempfile::tempdir().unwrap();
    for f in [SUPERNET_FILE, CALIBRATION_FILE] {
        std::fs::copy(shipped().join(f), dir.path().join(f)).unwrap();
    }
    // no card: an imported supernet
    let pkg = Package::open(dir.path(), Device::Cpu).unwrap();
    assert!(pkg.card::<serde_json::Value>().unwrap().is_none());
    let text = std::fs::read_to_string(shipped().join(CARD_FILE)).unwrap();
    for (damage, expect) in [
        (text[..text.len() / 2].to_string(), "EOF while parsing"),
        (
            text.replacen("\"steps\": 1905", "\"stepz\": 1905", 1),
            "missing field `steps`",
        ),
        (String::new(), "EOF while parsing"),
    ] {
        std::fs::write(dir.path().join(CARD_FILE), damage).unwrap();
        let Err(e) = Package::open(dir.path(), Device::Cpu) else {
            panic!("a damaged card opened ({expect})");
        };
        let e = e.to_string();
        assert!(e.contains(CARD_FILE) && e.contains(expect), "{e}");
    }
}
