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

/// Order statistics of timings (ms): the report type, with its constructor, lives in the schema.
pub use ofa_schema::bench::Summary;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_ms_warms_up_then_times() {
        let calls = std::cell::Cell::new(0);
        let ms = time_ms(Device::Cpu, 2, 3, || calls.set(calls.get() + 1));
        assert_eq!((ms.len(), calls.get()), (3, 5));
    }
}
