//! `ofa serve`: the subnet service over HTTP.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use ofa_package::measure::Recalibration;
use ofa_server::{ServeConfig, Server, Stopped};

/// Arguments of `ofa serve`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A supernet package to serve (repeat for several); its name is its folder name. Each needs
    /// accuracy.safetensors; its hardware profiles are its latency/*.json tables.
    #[arg(long, required = true)]
    package: Vec<PathBuf>,
    /// Address to listen on (port 0: any free port; the address is printed).
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: SocketAddr,
    /// Keep searches and weights here too: they survive restarts and replicas can share them.
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// Memory for cached results, MiB.
    #[arg(long, default_value_t = 512)]
    cache_mb: u64,
    /// The most --cache-dir may hold, MiB: past it the least recently used entries (by any
    /// replica on the folder) are removed.
    #[arg(long, default_value_t = 4096, value_parser = clap::value_parser!(u64).range(1..=1 << 40))]
    cache_dir_mb: u64,
    /// Require `Authorization: Bearer TOKEN` (except on /healthz and /readyz).
    #[arg(long, env = "OFA_API_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Cut requests queued per supernet (and searches at once) before answering 503, 1 to 100000.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    max_queue: u32,
    /// Fine-tuning jobs waiting per supernet (one runs at a time) before answering 503, 1 to 1000.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=1000))]
    max_jobs: u32,
    /// Time limit of a request's work, seconds, at most a day (then a JSON 503: a search stops;
    /// a cut goes on and is served on a retry).
    #[arg(long, default_value_t = 30.0)]
    request_timeout: f64,
    /// How long in-flight requests may finish after SIGTERM / Ctrl-C, seconds, at most a day (the
    /// default lets a request that runs to its default time limit finish).
    #[arg(long, default_value_t = 30.0)]
    drain_timeout: f64,
    /// Time for a request's head to arrive, seconds, at most a day; also the longest a kept-alive
    /// connection may sit idle and a response may wait for the client to read it.
    #[arg(long, default_value_t = 30.0)]
    header_timeout: f64,
    /// Time for a request's body to arrive, seconds, at most a day (then 408).
    #[arg(long, default_value_t = 30.0)]
    body_timeout: f64,
    /// Connections served at once, 1 to 1000000 (more wait in the listen backlog).
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    max_connections: u32,
    /// Images for BN recalibration of served subnets (as `ofa extract --calibration-images`).
    #[arg(long, default_value_t = 2000)]
    calibration_images: usize,
    /// Device of the model threads: cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu", value_parser = super::device_arg)]
    device: tch::Device,
    /// Before serving, time N probe subnets here (libtorch, at --threads) and add the hardware
    /// `local` fitted to them: latency budgets that hold on this machine (default N: 20).
    #[arg(long, num_args = 0..=1, default_missing_value = "20", value_name = "N")]
    calibrate: Option<usize>,
}

/// The longest timeout: a day (a deadline is `now + timeout`,
/// which must not overflow the clock).
const MAX_SECONDS: f64 = 86_400.0;

fn seconds(s: f64, what: &str) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(s)
        .ok()
        .filter(|d| !d.is_zero() && s <= MAX_SECONDS)
        .with_context(|| {
            format!("--{what} must be a positive number of seconds, at most {MAX_SECONDS}, got {s}")
        })
}

/// Run `ofa serve`.
pub fn run(a: Args) -> anyhow::Result<()> {
    if let Some(n) = a.calibrate {
        anyhow::ensure!(
            (3..=1000).contains(&n),
            "--calibrate takes 3 to 1000 probes, got {n}"
        );
    }
    let cfg = ServeConfig {
        packages: a.package.clone(),
        addr: a.addr,
        cache_dir: a.cache_dir.clone(),
        cache_bytes: a.cache_mb.saturating_mul(1 << 20),
        cache_dir_bytes: a.cache_dir_mb.saturating_mul(1 << 20),
        token: a.token.clone(),
        max_queue: a.max_queue as usize,
        max_jobs: a.max_jobs as usize,
        request_timeout: seconds(a.request_timeout, "request-timeout")?,
        drain_timeout: seconds(a.drain_timeout, "drain-timeout")?,
        header_timeout: seconds(a.header_timeout, "header-timeout")?,
        body_timeout: seconds(a.body_timeout, "body-timeout")?,
        max_connections: a.max_connections as usize,
        device: a.device,
        recalibration: Recalibration {
            images: a.calibration_images,
            ..Recalibration::default()
        },
        // this thread's count: `--threads`, or libtorch's default
        threads: tch::get_num_threads(),
        calibrate: a
            .calibrate
            .map(|probes| ofa_extractor::calibrate::CalibrateOptions {
                probes,
                ..Default::default()
            }),
        ..ServeConfig::default()
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("ofa-http")
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async move {
        let server = Server::bind(cfg).await?;
        outln!("listening on http://{}", server.local_addr());
        match server.run(ofa_server::shutdown_signal()).await? {
            Stopped::Drained => eprintln!("stopped"),
            Stopped::DrainTimedOut => {
                eprintln!("stopped: the drain timeout passed with requests in flight")
            }
        }
        Ok(())
    })
}
