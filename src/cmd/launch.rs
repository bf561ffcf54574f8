//! Data-parallel launches: joining the job a launcher (torchrun, Slurm, `--nproc-per-node`)
//! describes in the environment, and `--nproc-per-node N` itself, which runs this command again
//! as N local ranks with torchrun's contract.

use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use ofa_dist::{Backend, LaunchEnv, ProcessGroup, StoreHost};
use tch::Device;

/// The flags of a command that can run as a rank of a data-parallel job.
#[derive(Debug, Clone, clap::Args)]
pub struct RankArgs {
    /// Run N local ranks of a data-parallel job (this command again, with torchrun's RANK,
    /// WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT). Under torchrun or Slurm, leave it
    /// out: those variables make this process one rank.
    #[arg(long, value_name = "N")]
    pub nproc_per_node: Option<usize>,
    /// Collective backend: gloo or nccl (default: gloo on the CPU, nccl for cuda).
    #[arg(long)]
    pub backend: Option<String>,
    /// Seconds a collective (or the rendezvous) waits for the other ranks before it fails: a
    /// rank that hangs ends the job with an error after this long; one that dies ends it at once.
    #[arg(long, default_value_t = 1800, value_name = "SECONDS")]
    pub dist_timeout: u64,
}

impl RankArgs {
    /// The collectives' timeout.
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.dist_timeout.max(1))
    }

    /// Join the job of this process's environment, if it is a rank of one: the process group,
    /// and the device moved to `cuda:LOCAL_RANK` where the device is CUDA.
    pub fn join(&self, device: Device) -> anyhow::Result<Option<(Arc<ProcessGroup>, Device)>> {
        let Some(env) = LaunchEnv::from_env()? else {
            if let Some(b) = &self.backend {
                bail!("--backend {b}: this process is not a rank of a job (RANK and WORLD_SIZE are unset; use --nproc-per-node or a launcher)");
            }
            return Ok(None);
        };
        let device = match device {
            Device::Cuda(_) => Device::Cuda(env.local_rank),
            d => d,
        };
        let backend = match &self.backend {
            Some(b) => b.parse()?,
            None => {
                let b = Backend::for_device(device);
                if b.is_built() {
                    b
                } else {
                    tracing::warn!(
                        "NCCL is not in this build: gloo reduces the CUDA gradients through host memory"
                    );
                    Backend::Gloo
                }
            }
        };
        let group = ProcessGroup::join(&env, backend, self.timeout()).with_context(|| {
            format!("joining the job at {}:{}", env.master_addr, env.master_port)
        })?;
        tracing::info!(
            rank = env.rank,
            world = env.world,
            backend = backend.name(),
            ?device,
            "joined"
        );
        Ok(Some((Arc::new(group), device)))
    }
}

/// Under torchrun, write the error where its agent looks for a failed rank's root cause
/// (`TORCHELASTIC_ERROR_FILE`, in the JSON layout of PyTorch's `record_exception`), so the agent's
/// failure summary names it instead of "<N/A>".
pub fn record_error(message: &str) {
    let Some(path) = std::env::var_os("TORCHELASTIC_ERROR_FILE") else {
        return;
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let data = serde_json::json!({
        "message": {
            "message": format!("ofa: {message}"),
            "extraInfo": {"py_callstack": message, "timestamp": now.to_string()},
        }
    });
    if let Err(e) = std::fs::write(&path, data.to_string()) {
        tracing::warn!(path = %std::path::Path::new(&path).display(), error = %e, "cannot write torchrun's error file");
    }
}

/// Whether this process is a rank other than 0 of a job (it stays quiet: rank 0 reports).
pub fn is_follower() -> bool {
    matches!(LaunchEnv::from_env(), Ok(Some(e)) if e.rank != 0)
}

/// This process's arguments without `--nproc-per-node N` (either spelling).
fn args_without_nproc() -> Vec<String> {
    let mut out = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--nproc-per-node" {
            args.next();
        } else if !a.starts_with("--nproc-per-node=") {
            out.push(a);
        }
    }
    out
}

/// Run this command again as `n` local ranks on 127.0.0.1 and wait for them. Like torchrun's
/// agent, this process hosts the rendezvous store (on a free port) and the ranks are its clients
/// (`TORCHELASTIC_USE_AGENT_STORE=True`). When a rank fails
/// the others end on their own within moments (their collectives see it leave); any still running
/// after `grace` are killed. A stop signal to this launcher is passed on to every rank (which
/// then stop together after a checkpoint). Fails with the first failing rank's status.
pub fn spawn_local(n: usize, grace: Duration, timeout: Duration) -> anyhow::Result<()> {
    if n == 0 {
        bail!("--nproc-per-node must be at least 1");
    }
    if std::env::var_os("RANK").is_some() {
        bail!("--nproc-per-node inside a launched rank (RANK is set): use one launcher");
    }
    let store = StoreHost::bind("127.0.0.1", 0, timeout)
        .context("cannot host the rendezvous store on 127.0.0.1")?;
    let port = store.port();
    let exe = std::env::current_exe().context("cannot find this executable")?;
    let args = args_without_nproc();
    // As torchrun, the ranks do not each take every core: without OMP_NUM_THREADS (or
    // `--threads`), each gets its share of this machine's cores.
    let threads = std::env::var("OMP_NUM_THREADS").unwrap_or_else(|_| {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        (cores / n).max(1).to_string()
    });
    let mut children: Vec<Child> = Vec::with_capacity(n);
    for rank in 0..n {
        let child = Command::new(&exe)
            .args(&args)
            .env("RANK", rank.to_string())
            .env("WORLD_SIZE", n.to_string())
            .env("LOCAL_RANK", rank.to_string())
            .env("LOCAL_WORLD_SIZE", n.to_string())
            .env("OMP_NUM_THREADS", &threads)
            .env("MASTER_ADDR", "127.0.0.1")
            .env("MASTER_PORT", port.to_string())
            .env("TORCHELASTIC_USE_AGENT_STORE", "True")
            .env("TORCHELASTIC_RESTART_COUNT", "0")
            .spawn()
            .with_context(|| format!("cannot start rank {rank}"));
        match child {
            Ok(c) => children.push(c),
            Err(e) => {
                for c in &mut children {
                    let _ = c.kill();
                    let _ = c.wait();
                }
                return Err(e);
            }
        }
    }
    let pids: Vec<i32> = children.iter().map(|c| c.id() as i32).collect();
    let forward = Arc::new(AtomicBool::new(false));
    let flag = forward.clone();
    // The ranks share this terminal's process group, so a Ctrl-C there reaches each of them
    // already; a signal sent to the launcher alone is passed on.
    let _ = ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst));
    let mut status: Vec<Option<std::process::ExitStatus>> = vec![None; n];
    let mut first_failure: Option<(usize, std::process::ExitStatus, Instant)> = None;
    let mut forwarded = false;
    loop {
        for (rank, c) in children.iter_mut().enumerate() {
            if status[rank].is_none() {
                if let Some(s) = c.try_wait().context("waiting for a rank")? {
                    status[rank] = Some(s);
                    if !s.success() && first_failure.is_none() {
                        first_failure = Some((rank, s, Instant::now()));
                    }
                }
            }
        }
        if status.iter().all(Option::is_some) {
            break;
        }
        if forward.load(Ordering::SeqCst) && !forwarded {
            forwarded = true;
            for (rank, &pid) in pids.iter().enumerate() {
                if status[rank].is_none() {
                    // SAFETY: kill(2) on the pid of a child not yet reaped (so not reused).
                    #[allow(unsafe_code)]
                    unsafe {
                        libc::kill(pid, libc::SIGTERM);
                    }
                }
            }
        }
        if let Some((_, _, at)) = first_failure {
            if at.elapsed() > grace {
                for (rank, c) in children.iter_mut().enumerate() {
                    if status[rank].is_none() {
                        let _ = c.kill();
                    }
                }
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(store);
    if let Some((rank, s, _)) = first_failure {
        bail!("rank {rank} of {n} failed ({s}); see its error above");
    }
    Ok(())
}
