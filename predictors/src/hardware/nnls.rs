//! Non-negative least squares on relative error, exact for a handful of columns.

/// Non-negative least squares on relative error: `argmin_{w ≥ 0} Σ_i ((a_i · w − y_i) / y_i)²`.
///
/// Exact: the optimum's positive weights are the unconstrained least-squares solution on their
/// own support, so trying every support (columns scaled to unit norm, normal equations by
/// Gaussian elimination with partial pivoting) and keeping the best non-negative solution finds
/// it. With at most [`N_FEATURES`] columns that is at most 127 solves of at most 7 unknowns: far
/// less code than an active-set method, and no convergence to reason about. `None` when no
/// support gives a solution (every column zero, or `y` not positive).
pub fn nnls_relative(a: &[Vec<f64>], y: &[f64]) -> Option<Vec<f64>> {
    let p = a.first()?.len();
    if y.iter().any(|v| !(v.is_finite() && *v > 0.0)) || p == 0 || p > 16 {
        return None;
    }
    // rows divided by y: the target is then 1 everywhere
    let rows: Vec<Vec<f64>> = a
        .iter()
        .zip(y)
        .map(|(r, y)| r.iter().map(|v| v / y).collect())
        .collect();
    let norms: Vec<f64> = (0..p)
        .map(|j| rows.iter().map(|r| r[j] * r[j]).sum::<f64>().sqrt())
        .collect();
    let usable: Vec<usize> = (0..p)
        .filter(|&j| norms[j] > 0.0 && norms[j].is_finite())
        .collect();
    let mut best: Option<(f64, Vec<f64>)> = None;
    for mask in 1u32..(1 << usable.len()) {
        let cols: Vec<usize> = usable
            .iter()
            .enumerate()
            .filter(|(i, _)| mask & (1 << i) != 0)
            .map(|(_, j)| *j)
            .collect();
        if cols.len() > rows.len() {
            continue;
        }
        let k = cols.len();
        // normal equations of the scaled columns
        let mut g = vec![vec![0.0; k + 1]; k];
        for r in &rows {
            for (i, &ci) in cols.iter().enumerate() {
                let vi = r[ci] / norms[ci];
                for (jj, &cj) in cols.iter().enumerate() {
                    g[i][jj] += vi * r[cj] / norms[cj];
                }
                g[i][k] += vi;
            }
        }
        let Some(z) = solve(g) else { continue };
        if z.iter().any(|v| *v < 0.0) {
            continue;
        }
        let mut w = vec![0.0; p];
        for (i, &ci) in cols.iter().enumerate() {
            w[ci] = z[i] / norms[ci];
        }
        let loss: f64 = rows
            .iter()
            .map(|r| {
                let e = r.iter().zip(&w).map(|(v, w)| v * w).sum::<f64>() - 1.0;
                e * e
            })
            .sum();
        if best.as_ref().is_none_or(|(l, _)| loss < *l - 1e-15) {
            best = Some((loss, w));
        }
    }
    best.map(|(_, w)| w)
}

/// Solve the augmented system `g = [A | b]` (k × (k+1)); `None` if singular.
fn solve(mut g: Vec<Vec<f64>>) -> Option<Vec<f64>> {
    let k = g.len();
    let scale = g
        .iter()
        .enumerate()
        .map(|(i, r)| r[i].abs())
        .fold(0.0, f64::max);
    for col in 0..k {
        let piv = (col..k).max_by(|a, b| g[*a][col].abs().total_cmp(&g[*b][col].abs()))?;
        if g[piv][col].abs() <= 1e-12 * scale.max(1e-300) {
            return None;
        }
        g.swap(col, piv);
        let (top, rest) = g.split_at_mut(col + 1);
        let pivot_row = &top[col];
        for row in rest.iter_mut() {
            let f = row[col] / pivot_row[col];
            for (x, p) in row[col..].iter_mut().zip(&pivot_row[col..]) {
                *x -= f * p;
            }
        }
    }
    let mut z = vec![0.0; k];
    for i in (0..k).rev() {
        let s: f64 = (i + 1..k).map(|j| g[i][j] * z[j]).sum();
        z[i] = (g[i][k] - s) / g[i][i];
    }
    z.iter().all(|v| v.is_finite()).then_some(z)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn nnls_recovers_exact_weights_and_clamps_negative_ones() {
        // y = 2·x0 + 0.5·x1 exactly
        let a: Vec<Vec<f64>> = (1..10)
            .map(|i| vec![i as f64, (i * i % 7 + 1) as f64])
            .collect();
        let y: Vec<f64> = a.iter().map(|r| 2.0 * r[0] + 0.5 * r[1]).collect();
        let w = nnls_relative(&a, &y).unwrap();
        assert!(
            (w[0] - 2.0).abs() < 1e-9 && (w[1] - 0.5).abs() < 1e-9,
            "{w:?}"
        );
        // a target that is exactly 3·x0 − 0.5·x1 (a negative weight) gets 0 on x1
        let y: Vec<f64> = a.iter().map(|r| 3.0 * r[0] - 0.5 * r[1]).collect();
        let w = nnls_relative(&a, &y).unwrap();
        assert_eq!(w[1], 0.0, "{w:?}");
        assert!(w[0] > 0.0);
    }
}
