//! libtorch's global random generator, seeded and drawn from by one caller at a time.
//!
//! Dropout masks and fresh initialisations come from libtorch's one process-wide CPU generator
//! (`tch` exposes no per-call generator). A run makes them reproducible by seeding it right
//! before it draws, but two threads that do so at once (the server runs one fine-tuning job per
//! package, each on its own thread) would consume each other's numbers, and each run's masks
//! would then depend on thread timing. Every seeded draw in the workspace goes through
//! [`with_seed`], which holds one process-wide lock from the seeding to the last draw.

use std::sync::Mutex;

static GLOBAL: Mutex<()> = Mutex::new(());

/// Run `f` with libtorch's global generator seeded from `seed`, while no other caller of this
/// function seeds or draws. `f` must not call `with_seed` itself (the lock is not re-entrant).
pub fn with_seed<R>(seed: u64, f: impl FnOnce() -> R) -> R {
    // a panic in another holder leaves nothing half-done here: the next caller re-seeds
    let _held = GLOBAL.lock().unwrap_or_else(|e| e.into_inner());
    #[allow(clippy::disallowed_methods)] // the one place that seeds it
    tch::manual_seed(seed as i64);
    f()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use tch::{Kind, Tensor};

    fn draws(seed: u64) -> Vec<f32> {
        with_seed(seed, || {
            let a = Tensor::randn([8], (Kind::Float, tch::Device::Cpu));
            // give another thread every chance to seed or draw in between
            std::thread::yield_now();
            let b = Tensor::rand([8], (Kind::Float, tch::Device::Cpu));
            Vec::<f32>::try_from(Tensor::cat(&[a, b], 0)).expect("f32 values")
        })
    }

    #[test]
    fn threads_drawing_at_once_each_get_their_seeds_numbers() {
        let want: Vec<Vec<f32>> = (0..4).map(draws).collect();
        let handles: Vec<_> = (0..4u64)
            .map(|s| {
                let want = want[s as usize].clone();
                std::thread::spawn(move || (0..200).filter(|_| draws(s) != want).count())
            })
            .collect();
        let wrong: Vec<usize> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        assert_eq!(
            wrong, [0; 4],
            "draws that differ from the seed's, per thread"
        );
    }
}
