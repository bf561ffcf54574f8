//! `ofa train`: progressive shrinking from a recipe, resumable.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};
use ofa_schema::finetune::EpochRecord;
use ofa_schema::metrics::ValidationRow;
use ofa_trainer::recipe::Recipe;
use ofa_trainer::run::{branch, resume, train, Observer, Outcome, Silent, TrainOptions};

/// How long the other local ranks may take to end on their own after one fails.
const RANK_GRACE: Duration = Duration::from_secs(30);

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
    /// Built-in recipe (paper, fmnist, fmnist-no-ps, fmnist-short, fmnist-short-no-ps, fmnist-quick, fmnist-proxyless-short, fmnist-resnet-short, smoke, smoke-proxyless, smoke-resnet) or a recipe TOML file.
    #[arg(long, required_unless_present = "resume")]
    recipe: Option<String>,
    /// Dataset directory: MNIST-style IDX, CIFAR-10 binary batches or an image folder
    /// (`class/*.png|jpg`); default: the recipe's.
    #[arg(long)]
    data: Option<PathBuf>,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu", value_parser = super::device_arg)]
    device: tch::Device,
    /// Run directory to create.
    #[arg(long, required_unless_present_any = ["resume", "print_recipe"], conflicts_with = "resume")]
    out: Option<PathBuf>,
    /// Continue the run in this directory from its last checkpoint.
    #[arg(long)]
    resume: Option<PathBuf>,
    /// Start the new run from another run's checkpoint saved at a phase boundary (its phases so
    /// far must open --recipe, all other settings equal): ablations that share one full network.
    #[arg(long, conflicts_with = "resume", requires = "recipe")]
    branch_from: Option<PathBuf>,
    /// Stop (checkpoint saved) after this many steps in total; resume later.
    #[arg(long)]
    stop_after: Option<u64>,
    /// Print the resolved recipe and exit.
    #[arg(long)]
    print_recipe: bool,
    #[command(flatten)]
    ranks: super::launch::RankArgs,
}

/// Run `ofa train`.
pub fn run(a: Args) -> anyhow::Result<()> {
    if a.print_recipe {
        let Some(name) = &a.recipe else {
            bail!("--print-recipe needs --recipe")
        };
        out!("{}", Recipe::load(name)?.to_toml());
        return Ok(());
    }
    if let Some(n) = a.ranks.nproc_per_node {
        return super::launch::spawn_local(n, RANK_GRACE, a.ranks.timeout());
    }
    // Ranks other than 0 stay quiet: rank 0 draws the progress and tables.
    let quiet = super::launch::is_follower();
    let stop = stop_on_signals(quiet, "step")?;
    let device = a.device;
    let (group, device) = match a.ranks.join(device)? {
        Some((g, d)) => (Some(g), d),
        None => (None, device),
    };
    let observer: Arc<dyn Observer> = if quiet {
        Arc::new(Silent)
    } else {
        Arc::new(Render::new(std::io::stderr().is_terminal()))
    };
    let opts = TrainOptions {
        data: a.data,
        device,
        observer,
        stop,
        stop_after: a.stop_after,
        group,
    };
    let (dir, outcome) = match (&a.resume, &a.recipe, &a.out) {
        (Some(dir), _, _) => (dir.clone(), resume(dir, opts)?),
        (None, Some(name), Some(out)) => match &a.branch_from {
            Some(from) => (out.clone(), branch(Recipe::load(name)?, out, from, opts)?),
            None => (out.clone(), train(Recipe::load(name)?, out, opts)?),
        },
        _ => bail!("give --recipe and --out, or --resume RUN"),
    };
    if quiet {
        return Ok(());
    }
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

/// A flag that the first stop signal (SIGINT, SIGTERM, SIGHUP) sets, so the run stops after the
/// current `unit` with a checkpoint; a later signal exits at once (see [`StopRequests`]).
pub(super) fn stop_on_signals(quiet: bool, unit: &'static str) -> anyhow::Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let mut requests = StopRequests::default();
    ctrlc::set_handler(move || match requests.on_signal(Instant::now()) {
        OnSignal::Stop => {
            flag.store(true, Ordering::SeqCst);
            if !quiet {
                eprintln!(
                    "\ninterrupt: saving a checkpoint after this {unit} (Ctrl-C again to abort)"
                );
            }
        }
        OnSignal::Ignore => {}
        OnSignal::Abort => {
            eprintln!("\nsecond interrupt: exiting without a checkpoint");
            std::process::exit(130);
        }
    })
    .context("cannot install the signal handler")?;
    Ok(stop)
}

/// Progress bars (on a terminal) and phase-end tables on stderr.
pub(super) struct Render {
    bars: bool,
    bar: Mutex<Option<ProgressBar>>,
    /// The last held-out top-1 of a fine-tuning run, shown beside the loss.
    heldout: Mutex<Option<f64>>,
}

impl Render {
    pub(super) fn new(bars: bool) -> Render {
        Render {
            bars,
            bar: Mutex::new(None),
            heldout: Mutex::new(None),
        }
    }

    fn with_bar(&self, f: impl FnOnce(&ProgressBar)) {
        if let Some(b) = self.bar.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            f(b);
        }
    }
}

impl Observer for Render {
    fn phase_start(&self, index: usize, phases: usize, name: &str, from: u64, total: u64) {
        if !self.bars {
            return;
        }
        let bar = ProgressBar::new(total).with_position(from);
        let style = ProgressStyle::with_template(
            "{prefix:>14} [{bar:30}] {pos}/{len} {per_sec} eta {eta} {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        bar.set_style(style);
        bar.set_prefix(format!("{}/{phases} {name}", index + 1));
        *self.bar.lock().unwrap_or_else(|e| e.into_inner()) = Some(bar);
    }

    fn step(&self, step: u64, loss: f64, lr: f64) {
        self.with_bar(|b| {
            b.set_position(step);
            let heldout = *self.heldout.lock().unwrap_or_else(|e| e.into_inner());
            let heldout = heldout.map_or(String::new(), |h| format!(" held-out {h:.2} %"));
            b.set_message(format!("loss {loss:.3} lr {lr:.4}{heldout}"));
        });
    }

    fn phase_steps_end(&self, finished: bool) {
        self.with_bar(|b| {
            if finished {
                b.finish();
            } else {
                b.abandon();
            }
        });
    }

    fn validation(&self, phase: &str, rows: &[ValidationRow]) {
        eprintln!("{}", validation_table(phase, rows));
    }

    fn epoch(&self, r: &EpochRecord, best: bool) {
        *self.heldout.lock().unwrap_or_else(|e| e.into_inner()) = Some(r.heldout_top1);
        let line = format!(
            "epoch {:.2} (step {}): held-out top-1 {:.2} %{}",
            r.epoch,
            r.step,
            r.heldout_top1,
            if best { " (best so far)" } else { "" }
        );
        let mut shown = false;
        self.with_bar(|b| {
            if !b.is_hidden() && !b.is_finished() {
                b.println(&line);
                shown = true;
            }
        });
        if !shown {
            eprintln!("{line}");
        }
    }
}

/// A phase-end validation table as text.
fn validation_table(phase: &str, rows: &[ValidationRow]) -> String {
    let mut s = format!(
        "phase {phase}: top-1 after BN recalibration\n  {:<6} {:>10} {:>10}",
        "subnet", "resolution", "val %"
    );
    let has_test = rows.iter().any(|r| r.test_top1.is_some());
    if has_test {
        s.push_str(&format!(" {:>10}", "test %"));
    }
    for r in rows {
        s.push_str(&format!(
            "\n  {:<6} {:>10} {:>10.2}",
            r.subnet.name(),
            r.resolution,
            r.val_top1
        ));
        if let Some(t) = r.test_top1 {
            s.push_str(&format!(" {t:>10.2}"));
        }
    }
    s
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
