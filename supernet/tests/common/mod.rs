//! Helpers of the conformance tests.

use tch::{Kind, Tensor};

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
