//! The one timing helper: wall-clock samples of a closure on a device (CUDA work synchronised
//! before the clock stops), and their summary. Used by the latency profiler, subnet measurement
//! and the benchmarks alike.

use std::time::Instant;

use tch::Device;

/// Wait for queued work on `device` (a no-op on the CPU).
pub fn sync(device: Device) {
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}

/// `warmup` untimed calls of `f`, then `repeats` (at least one) timed calls: milliseconds each,
/// in call order. `f`'s result is dropped after the clock stops, so freeing it is not timed.
pub fn time_ms<T>(
    device: Device,
    warmup: usize,
    repeats: usize,
    mut f: impl FnMut() -> T,
) -> Vec<f64> {
    for _ in 0..warmup {
        drop(f());
    }
    sync(device);
    (0..repeats.max(1))
        .map(|_| {
            let t = Instant::now();
            let y = f();
            sync(device);
            let ms = t.elapsed().as_secs_f64() * 1e3;
            drop(y);
            ms
        })
        .collect()
}

/// Milliseconds of one call of `f` (no warm-up, no device sync): for host-side steps.
pub fn once_ms<T>(f: impl FnOnce() -> T) -> (T, f64) {
    let t = Instant::now();
    let y = f();
    (y, t.elapsed().as_secs_f64() * 1e3)
}

/// Order statistics of timings (ms).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Summary {
    /// Samples.
    pub n: usize,
    /// Median.
    pub median_ms: f64,
    /// 10th percentile.
    pub p10_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// Fastest.
    pub min_ms: f64,
    /// Slowest.
    pub max_ms: f64,
}

impl Summary {
    /// Summarise `ms` (empty → all zeros).
    pub fn of(mut ms: Vec<f64>) -> Summary {
        if ms.is_empty() {
            return Summary {
                n: 0,
                median_ms: 0.0,
                p10_ms: 0.0,
                p90_ms: 0.0,
                min_ms: 0.0,
                max_ms: 0.0,
            };
        }
        ms.sort_by(f64::total_cmp);
        let q = |p: f64| ms[((ms.len() - 1) as f64 * p).round() as usize];
        Summary {
            n: ms.len(),
            median_ms: q(0.5),
            p10_ms: q(0.1),
            p90_ms: q(0.9),
            min_ms: ms[0],
            max_ms: ms[ms.len() - 1],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_orders_samples() {
        let s = Summary::of(vec![5.0, 1.0, 3.0, 2.0, 4.0]);
        assert_eq!((s.n, s.median_ms, s.min_ms, s.max_ms), (5, 3.0, 1.0, 5.0));
        assert_eq!(Summary::of(vec![]).n, 0);
        let calls = std::cell::Cell::new(0);
        let ms = time_ms(Device::Cpu, 2, 3, || calls.set(calls.get() + 1));
        assert_eq!((ms.len(), calls.get()), (3, 5));
    }
}
