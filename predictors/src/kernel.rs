//! The dense layer of the accuracy predictor: `y[m × n] += x[m × k] · wt[k × n]`, register-tiled.
//!
//! Each output tile (`MR` rows × `NR` columns) is accumulated in registers over the whole `k`
//! loop, reading one row of the transposed weights per step, so nothing is packed or copied: this
//! is what makes the search's small batches (100 archs a generation) as fast per arch as large
//! ones. Every output element is the sum over `k` in ascending order, whatever the batch size or
//! the row's position, so predictions are bit-identical in any batch.
//!
//! The body is plain Rust over fixed-size arrays, compiled three times: for AVX-512, for AVX2 +
//! FMA (chosen at run time), and for the baseline target.

/// `y[m × n] += x[m × k] · wt[k × n]` (all row-major).
pub fn matmul_acc(x: &[f32], wt: &[f32], y: &mut [f32], m: usize, k: usize, n: usize) {
    assert!(x.len() >= m * k && wt.len() >= k * n && y.len() >= m * n);
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU supports AVX-512F (checked just above).
            #[allow(unsafe_code)]
            unsafe {
                return avx512(x, wt, y, m, k, n);
            }
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU supports AVX2 and FMA (checked just above).
            #[allow(unsafe_code)]
            unsafe {
                return avx2(x, wt, y, m, k, n);
            }
        }
    }
    tiled::<4, 16, false>(x, wt, y, m, k, n);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
fn avx512(x: &[f32], wt: &[f32], y: &mut [f32], m: usize, k: usize, n: usize) {
    tiled::<6, 64, true>(x, wt, y, m, k, n);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn avx2(x: &[f32], wt: &[f32], y: &mut [f32], m: usize, k: usize, n: usize) {
    tiled::<3, 32, true>(x, wt, y, m, k, n);
}

/// `a · b + c`: one fused instruction where the target has FMA (Rust never contracts `a * b + c`
/// by itself), two operations elsewhere (a software `fma` call would be far slower).
#[inline(always)]
fn madd<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

/// Rows of `wt` per pass: a 64-column tile of them (24 KiB) stays in L1 across all row blocks.
const KB: usize = 96;

#[inline(always)]
fn tiled<const MR: usize, const NR: usize, const FMA: bool>(
    x: &[f32],
    wt: &[f32],
    y: &mut [f32],
    m: usize,
    k: usize,
    n: usize,
) {
    let full = n - n % NR;
    let mut k0 = 0;
    while k0 < k {
        let k1 = (k0 + KB).min(k);
        let mut c0 = 0;
        while c0 < n {
            let width = if c0 < full {
                NR
            } else if c0 + 16 <= n {
                16
            } else {
                1
            };
            let mut r0 = 0;
            while r0 < m {
                let rows = MR.min(m - r0);
                let t = Tile {
                    r0,
                    rows,
                    c0,
                    k0,
                    k1,
                    k,
                    n,
                };
                match width {
                    w if w == NR => tile::<MR, NR, FMA>(x, wt, y, &t),
                    16 => tile::<MR, 16, FMA>(x, wt, y, &t),
                    _ => tile::<MR, 1, FMA>(x, wt, y, &t),
                }
                r0 += MR;
            }
            c0 += width;
        }
        k0 = k1;
    }
}

/// Where a tile sits: rows `r0..r0 + rows`, columns from `c0`, inner index `k0..k1`.
struct Tile {
    r0: usize,
    rows: usize,
    c0: usize,
    k0: usize,
    k1: usize,
    k: usize,
    n: usize,
}

#[inline(always)]
fn tile<const MR: usize, const NR: usize, const FMA: bool>(
    x: &[f32],
    wt: &[f32],
    y: &mut [f32],
    t: &Tile,
) {
    let Tile {
        r0,
        rows,
        c0,
        k0,
        k1,
        k,
        n,
    } = *t;
    let mut acc = [[0f32; NR]; MR];
    if rows == MR {
        let xr: [&[f32]; MR] = std::array::from_fn(|r| &x[(r0 + r) * k + k0..(r0 + r) * k + k1]);
        for (ii, i) in (k0..k1).enumerate() {
            let w: &[f32; NR] = wt[i * n + c0..i * n + c0 + NR]
                .try_into()
                .unwrap_or(&[0.0; NR]);
            for r in 0..MR {
                let xv = xr[r][ii];
                for j in 0..NR {
                    acc[r][j] = madd::<FMA>(xv, w[j], acc[r][j]);
                }
            }
        }
    } else {
        for i in k0..k1 {
            let w: &[f32; NR] = wt[i * n + c0..i * n + c0 + NR]
                .try_into()
                .unwrap_or(&[0.0; NR]);
            for r in 0..rows {
                let xv = x[(r0 + r) * k + i];
                for j in 0..NR {
                    acc[r][j] = madd::<FMA>(xv, w[j], acc[r][j]);
                }
            }
        }
    }
    for (r, a) in acc.iter().enumerate().take(rows) {
        let yr = &mut y[(r0 + r) * n + c0..(r0 + r) * n + c0 + NR];
        for (o, v) in yr.iter_mut().zip(a) {
            *o += v;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equals_a_naive_product_for_awkward_shapes() {
        for (m, k, n) in [
            (1, 3, 1),
            (7, 5, 17),
            (13, 400, 400),
            (6, 33, 129),
            (100, 64, 80),
        ] {
            let x: Vec<f32> = (0..m * k)
                .map(|i| ((i * 7 % 13) as f32 - 6.0) / 8.0)
                .collect();
            let wt: Vec<f32> = (0..k * n)
                .map(|i| ((i * 5 % 11) as f32 - 5.0) / 16.0)
                .collect();
            let mut y: Vec<f32> = (0..m * n).map(|i| i as f32 / 100.0).collect();
            let mut want = y.clone();
            for r in 0..m {
                for c in 0..n {
                    let mut s = 0f32;
                    for i in 0..k {
                        s += x[r * k + i] * wt[i * n + c];
                    }
                    want[r * n + c] += s;
                }
            }
            matmul_acc(&x, &wt, &mut y, m, k, n);
            for (a, b) in y.iter().zip(&want) {
                assert!(
                    (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
                    "{m}x{k}x{n}: {a} vs {b}"
                );
            }
        }
    }
}
