//! `ofa`: Once-for-All neural architecture search — train once, specialise in seconds.
//!
//! This binary only parses arguments and reports; the work lives in the workspace crates.

// The CLI is where output is rendered: the libraries deny printing (workspace lints).
#![allow(clippy::print_stdout, clippy::print_stderr)]

/// `println!` for the command's output: a closed stdout (`ofa inspect … --json | head`) ends the
/// program quietly with status 0, as ripgrep does, instead of panicking.
macro_rules! outln {
    () => {
        $crate::out::line(format_args!(""))
    };
    ($($t:tt)*) => {
        $crate::out::line(format_args!($($t)*))
    };
}

/// `print!` for the command's output (see [`outln!`]).
macro_rules! out {
    ($($t:tt)*) => {
        $crate::out::text(format_args!($($t)*))
    };
}

mod cmd;
mod out;
mod plot;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Once-for-All: train one elastic network, then hand out the best subnet for any budget.
#[derive(Debug, Parser)]
#[command(name = "ofa", version, about, long_about = None, propagate_version = true)]
struct Cli {
    /// Threads for libtorch's intra-op parallelism (default: libtorch's choice).
    #[arg(long, global = true)]
    threads: Option<i32>,
    /// More log output (-v info, -vv debug); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Train a supernet by progressive shrinking (resumable).
    Train(cmd::train::Args),
    /// Draw a training run's loss and held-out top-1 (curves.svg, curves.png).
    Curves(cmd::curves::Args),
    /// Describe a supernet, subnet or reference checkpoint (and the devices available).
    Inspect(cmd::inspect::Args),
    /// Cut a subnet's weights out of a supernet.
    Extract(cmd::extract::Args),
    /// Fine-tune one subnet of a package (or train it from scratch), resumable.
    Finetune(cmd::finetune::Args),
    /// Run a supernet (with an arch) or a subnet on an input tensor.
    Infer(cmd::infer::Args),
    /// A subnet file's top-1 on a dataset (its test split by default).
    Eval(cmd::eval::Args),
    /// Write a subnet as a deployable file (ONNX).
    Export(cmd::export::Args),
    /// Convert a reference state_dict (.pth or .safetensors) to an ofa supernet checkpoint.
    Import(cmd::import::Args),
    /// Find the best subnet for a budget (or the Pareto front) from predictors alone.
    Search(cmd::search::Args),
    /// Build a latency lookup table on this machine, or validate one (`ofa profile validate`).
    Profile(cmd::profile::Args),
    /// Accuracy predictor: build a dataset of measured subnets, fit, evaluate.
    Predictor(cmd::predictor::Args),
    /// Predicted top-1, latency on each hardware, MACs and params of given archs.
    Predict(cmd::predict::Args),
    /// Onboard a device: export probes, fit its latency table from their timings, check it.
    Hardware(cmd::hardware::Args),
    /// Serve subnets over HTTP: search, cut and download on demand.
    Serve(cmd::serve::Args),
    /// Benchmarks (readable table, or one JSON object with --json).
    Bench(cmd::bench::Args),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 1 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    // A server logs its requests (info) by default; other commands only warn.
    init_tracing(cli.verbose + u8::from(matches!(cli.command, Command::Serve(_))));
    ofa_supernet::device::init();
    if let Some(n) = cli.threads {
        tch::set_num_threads(n.max(1));
    }
    let result = match cli.command {
        Command::Train(a) => cmd::train::run(a),
        Command::Curves(a) => cmd::curves::run(a),
        Command::Inspect(a) => cmd::inspect::run(a),
        Command::Extract(a) => cmd::extract::run(a),
        Command::Finetune(a) => cmd::finetune::run(a),
        Command::Infer(a) => cmd::infer::run(a),
        Command::Export(a) => cmd::export::run(a),
        Command::Eval(a) => cmd::eval::run(a),
        Command::Import(a) => cmd::import::run(a),
        Command::Search(a) => cmd::search::run(a),
        Command::Profile(a) => cmd::profile::run(a),
        Command::Predictor(a) => cmd::predictor::run(a),
        Command::Predict(a) => cmd::predict::run(a),
        Command::Hardware(a) => cmd::hardware::run(a),
        Command::Serve(a) => cmd::serve::run(a),
        Command::Bench(a) => cmd::bench::run(a),
    };
    out::flush();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One write per line: the ranks of a local job share this stderr.
            let line = match std::env::var("RANK") {
                Ok(rank) => format!("error (rank {rank}): {}\n", cmd::render(&e)),
                Err(_) => format!("error: {}\n", cmd::render(&e)),
            };
            let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
            cmd::launch::record_error(&cmd::render_line(&e));
            ExitCode::from(cmd::exit_code(&e))
        }
    }
}

fn init_tracing(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
