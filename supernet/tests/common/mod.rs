//! Helpers of the conformance tests.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use tch::{Device, Kind, Tensor};

/// |a − b| ≤ tol · (1 + |b|) elementwise (the tolerance the reference itself meets).
pub fn assert_close(a: &Tensor, b: &Tensor, tol: f64, what: &str) {
    assert_eq!(a.size(), b.size(), "{what}: shape");
    let a = a.to_kind(Kind::Double);
    let b = b.to_kind(Kind::Double);
    let excess = ((&a - &b).abs() - (b.abs() + 1.0) * tol)
        .max()
        .double_value(&[]);
    assert!(
        excess <= 0.0,
        "{what}: differs beyond tolerance {tol} (by {excess:e})"
    );
}

/// A state_dict of zeros with the shapes of a `published_shapes.json` fixture, each name passed
/// through `rename` (to write it in another naming).
#[allow(dead_code)] // each test binary compiles this module; not every one imports checkpoints
pub fn zeros_of_published(
    shapes_json: &Path,
    rename: impl Fn(&str) -> String,
) -> HashMap<String, Tensor> {
    let text = std::fs::read_to_string(shapes_json).unwrap();
    let shapes: BTreeMap<String, Vec<i64>> = serde_json::from_str(&text).unwrap();
    shapes
        .iter()
        .map(|(name, shape)| {
            let name = rename(name);
            let kind = if name.ends_with("num_batches_tracked") {
                Kind::Int64
            } else {
                Kind::Float
            };
            (name, Tensor::zeros(shape.as_slice(), (kind, Device::Cpu)))
        })
        .collect()
}
