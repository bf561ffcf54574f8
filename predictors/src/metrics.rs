//! Regression and ranking quality of a predictor: RMSE and MAE (in top-1 points when given
//! points), Kendall τ-b and Spearman ρ (average ranks for ties).

use serde::{Deserialize, Serialize};

/// Quality of predictions against measurements.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Quality {
    /// Pairs scored.
    pub n: usize,
    /// Root mean squared error.
    pub rmse: f64,
    /// Mean absolute error.
    pub mae: f64,
    /// Kendall τ-b.
    pub kendall_tau: f64,
    /// Spearman ρ.
    pub spearman_rho: f64,
}

/// Score `pred` against `truth` (same length, at least 2).
pub fn quality(pred: &[f64], truth: &[f64]) -> Quality {
    let n = pred.len().min(truth.len());
    let (mut se, mut ae) = (0.0, 0.0);
    for (p, t) in pred.iter().zip(truth) {
        se += (p - t) * (p - t);
        ae += (p - t).abs();
    }
    let nf = n.max(1) as f64;
    Quality {
        n,
        rmse: (se / nf).sqrt(),
        mae: ae / nf,
        kendall_tau: kendall_tau(&pred[..n], &truth[..n]),
        spearman_rho: spearman(&pred[..n], &truth[..n]),
    }
}

/// Kendall τ-b (O(n²); fine for the few thousand test points of a predictor dataset).
pub fn kendall_tau(x: &[f64], y: &[f64]) -> f64 {
    let n = x.len().min(y.len());
    let (mut c, mut d, mut tx, mut ty) = (0i64, 0i64, 0i64, 0i64);
    for i in 0..n {
        for j in i + 1..n {
            let a = (x[i] - x[j]).signum() * f64::from(u8::from(x[i] != x[j]));
            let b = (y[i] - y[j]).signum() * f64::from(u8::from(y[i] != y[j]));
            match (a == 0.0, b == 0.0) {
                (true, true) => {}
                (true, false) => tx += 1,
                (false, true) => ty += 1,
                (false, false) => {
                    if a == b {
                        c += 1
                    } else {
                        d += 1
                    }
                }
            }
        }
    }
    let denom = (((c + d + tx) as f64) * ((c + d + ty) as f64)).sqrt();
    if denom == 0.0 {
        0.0
    } else {
        (c - d) as f64 / denom
    }
}

/// Average ranks (1-based), ties sharing their mean rank.
pub fn ranks(x: &[f64]) -> Vec<f64> {
    let mut idx: Vec<usize> = (0..x.len()).collect();
    idx.sort_by(|&a, &b| x[a].total_cmp(&x[b]));
    let mut r = vec![0.0; x.len()];
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && x[idx[j + 1]] == x[idx[i]] {
            j += 1;
        }
        let avg = (i + j) as f64 / 2.0 + 1.0;
        for k in &idx[i..=j] {
            r[*k] = avg;
        }
        i = j + 1;
    }
    r
}

/// Pearson correlation.
pub fn pearson(x: &[f64], y: &[f64]) -> f64 {
    let n = x.len().min(y.len()) as f64;
    if n < 2.0 {
        return 0.0;
    }
    let mx = x.iter().sum::<f64>() / n;
    let my = y.iter().sum::<f64>() / n;
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (a, b) in x.iter().zip(y) {
        sxy += (a - mx) * (b - my);
        sxx += (a - mx) * (a - mx);
        syy += (b - my) * (b - my);
    }
    if sxx == 0.0 || syy == 0.0 {
        0.0
    } else {
        sxy / (sxx * syy).sqrt()
    }
}

/// Spearman ρ: Pearson correlation of the average ranks.
pub fn spearman(x: &[f64], y: &[f64]) -> f64 {
    pearson(&ranks(x), &ranks(y))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values() {
        // scipy.stats.kendalltau([1,2,3,4,5],[3,4,1,2,5]) = 0.2; spearmanr = 1 - 6·16/120 = 0.2
        let x = [1.0, 2.0, 3.0, 4.0, 5.0];
        let y = [3.0, 4.0, 1.0, 2.0, 5.0];
        assert!((kendall_tau(&x, &y) - 0.2).abs() < 1e-12);
        assert!((spearman(&x, &y) - 0.2).abs() < 1e-12);
        // ties: kendalltau([1,1,2,3],[1,2,2,3]) = 0.8 (tau-b)
        let t = kendall_tau(&[1.0, 1.0, 2.0, 3.0], &[1.0, 2.0, 2.0, 3.0]);
        assert!((t - 0.8).abs() < 1e-12, "{t}");
        assert_eq!(ranks(&[10.0, 20.0, 10.0]), vec![1.5, 3.0, 1.5]);
        let q = quality(&[1.0, 2.0], &[2.0, 2.0]);
        assert!((q.rmse - (0.5f64).sqrt()).abs() < 1e-12);
        assert!((q.mae - 0.5).abs() < 1e-12);
        assert!((kendall_tau(&x, &x) - 1.0).abs() < 1e-12);
        assert!((spearman(&x, &[5.0, 4.0, 3.0, 2.0, 1.0]) + 1.0).abs() < 1e-12);
    }
}
