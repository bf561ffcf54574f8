//! `ofa train`: progressive shrinking from a recipe, resumable.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use ofa_trainer::recipe::Recipe;
use ofa_trainer::run::{resume, train, Outcome, TrainOptions};

/// What a stop signal (SIGINT, SIGTERM, SIGHUP) means, given the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OnSignal {
    /// Finish the current step, save a checkpoint, exit.
    Stop,
    /// The first request delivered again (see [`StopRequests`]).
    Ignore,
    /// Exit at once, without a checkpoint.
    Abort,
}

/// Stop requests so far. Schedulers and `docker stop` send SIGTERM, a terminal SIGINT: the first
/// stops after the current step with a checkpoint, a later one aborts. A signal within a second of
/// the first is the same request delivered twice (`timeout` and shells signal both the process and
/// its process group) and must not cost the checkpoint.
#[derive(Debug, Default)]
struct StopRequests {
    first: Option<Instant>,
}

impl StopRequests {
    const REPEAT_WINDOW: Duration = Duration::from_secs(1);

    fn on_signal(&mut self, now: Instant) -> OnSignal {
        match self.first {
            None => {
                self.first = Some(now);
                OnSignal::Stop
            }
            Some(t) if now.saturating_duration_since(t) < Self::REPEAT_WINDOW => OnSignal::Ignore,
            Some(_) => OnSignal::Abort,
        }
    }
}

/// Arguments of `ofa train`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Built-in recipe (paper, fmnist, fmnist-quick, smoke) or a recipe TOML file.
    #[arg(long, required_unless_present = "resume")]
    recipe: Option<String>,
    /// Dataset directory: MNIST-style IDX, CIFAR-10 binary batches or an image folder
    /// (`class/*.png|jpg`); default: the recipe's.
    #[arg(long)]
    data: Option<PathBuf>,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Run directory to create.
    #[arg(long, required_unless_present_any = ["resume", "print_recipe"], conflicts_with = "resume")]
    out: Option<PathBuf>,
    /// Continue the run in this directory from its last checkpoint.
    #[arg(long)]
    resume: Option<PathBuf>,
    /// Stop (checkpoint saved) after this many steps in total; resume later.
    #[arg(long)]
    stop_after: Option<u64>,
    /// Print the resolved recipe and exit.
    #[arg(long)]
    print_recipe: bool,
}

/// Run `ofa train`.
pub fn run(a: Args) -> anyhow::Result<()> {
    if a.print_recipe {
        let Some(name) = &a.recipe else {
            bail!("--print-recipe needs --recipe")
        };
        print!("{}", Recipe::load(name)?.to_toml());
        return Ok(());
    }
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let mut requests = StopRequests::default();
    ctrlc::set_handler(move || match requests.on_signal(Instant::now()) {
        OnSignal::Stop => {
            flag.store(true, Ordering::SeqCst);
            eprintln!("\ninterrupt: saving a checkpoint after this step (Ctrl-C again to abort)");
        }
        OnSignal::Ignore => {}
        OnSignal::Abort => {
            eprintln!("\nsecond interrupt: exiting without a checkpoint");
            std::process::exit(130);
        }
    })
    .context("cannot install the signal handler")?;
    let opts = TrainOptions {
        data: a.data,
        device: super::device(&a.device)?,
        progress: std::io::stderr().is_terminal(),
        stop,
        stop_after: a.stop_after,
    };
    let (dir, outcome) = match (&a.resume, &a.recipe, &a.out) {
        (Some(dir), _, _) => (dir.clone(), resume(dir, opts)?),
        (None, Some(name), Some(out)) => (out.clone(), train(Recipe::load(name)?, out, opts)?),
        _ => bail!("give --recipe and --out, or --resume RUN"),
    };
    match outcome {
        Outcome::Finished => {
            eprintln!(
                "done: {} holds supernet.safetensors, calibration.safetensors, card.json",
                dir.display()
            );
            super::curves::write(&dir, &dir);
        }
        Outcome::Interrupted { global_step } => eprintln!(
            "stopped after step {global_step}; continue with: ofa train --resume {}",
            dir.display()
        ),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_signal_is_ignored_and_a_later_one_aborts() {
        let mut r = StopRequests::default();
        let t0 = Instant::now();
        assert_eq!(r.on_signal(t0), OnSignal::Stop);
        assert_eq!(r.on_signal(t0 + Duration::from_millis(5)), OnSignal::Ignore);
        assert_eq!(
            r.on_signal(t0 + Duration::from_millis(999)),
            OnSignal::Ignore
        );
        assert_eq!(r.on_signal(t0 + Duration::from_secs(2)), OnSignal::Abort);
    }
}
