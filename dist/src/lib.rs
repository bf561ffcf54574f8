//! `ofa-dist`: the ranks of a data-parallel job on PyTorch's own collective layer, c10d.
//!
//! A narrow C++ shim (`csrc/shim.cpp`, compiled against the torch wheel's headers) exposes a C
//! ABI over c10d's `TCPStore` rendezvous and `ProcessGroupGloo`: join, all-reduce (sum) of one flat
//! tensor, broadcast, barrier, leave. [`ProcessGroup`] wraps it safely. [`LaunchEnv`] reads the
//! variables torchrun and Slurm set (`RANK`, `WORLD_SIZE`, `LOCAL_RANK`, `MASTER_ADDR`,
//! `MASTER_PORT`, `TORCHELASTIC_USE_AGENT_STORE`).
//!
//! Gloo sums the tensors of one call together, so every call takes exactly one (flat) tensor.

#![warn(missing_docs)]

use std::ffi::{c_char, c_int, c_void, CString};
use std::ptr::NonNull;
use std::time::Duration;

use tch::{Device, Tensor};

/// Why a collective or the rendezvous failed.
#[derive(Debug, thiserror::Error)]
pub enum DistError {
    /// A launch variable is missing or malformed.
    #[error("launch environment: {0}")]
    Env(String),
    /// c10d reported an error (a peer that died, a timeout, a refused connection…).
    #[error("{op} (rank {rank} of {world}): {message}")]
    C10d {
        /// The operation.
        op: &'static str,
        /// This rank.
        rank: usize,
        /// The world size.
        world: usize,
        /// c10d's message.
        message: String,
    },
    /// A backend this build does not have.
    #[error("{0}")]
    Unsupported(String),
    /// An earlier collective of this group failed: the ranks are out of step and a C++ thread
    /// may still be inside that collective, so the group takes no more calls.
    #[error("{op}: the group is unusable after an earlier collective failed ({first})")]
    Poisoned {
        /// The operation refused.
        op: &'static str,
        /// The failure that poisoned the group.
        first: String,
    },
    /// The ranks passed different values where they must agree.
    #[error("the ranks disagree on {what}: {values}")]
    Disagree {
        /// What they must agree on.
        what: &'static str,
        /// Each rank's value.
        values: String,
    },
    /// A tensor the collectives cannot take.
    #[error("{op}: {reason}")]
    BadTensor {
        /// The operation.
        op: &'static str,
        /// What is wrong.
        reason: String,
    },
}

#[allow(unsafe_code)]
mod ffi {
    use super::*;
    extern "C" {
        pub fn ofa_c10d_gloo_new(
            host: *const c_char,
            port: u16,
            rank: c_int,
            world: c_int,
            client_only: c_int,
            timeout_ms: i64,
            prefix: *const c_char,
            err: *mut c_char,
            err_len: usize,
        ) -> *mut c_void;
        pub fn ofa_c10d_allreduce_sum(
            g: *mut c_void,
            t: *mut c_void,
            err: *mut c_char,
            err_len: usize,
        ) -> c_int;
        pub fn ofa_c10d_broadcast(
            g: *mut c_void,
            t: *mut c_void,
            root: c_int,
            err: *mut c_char,
            err_len: usize,
        ) -> c_int;
        pub fn ofa_c10d_barrier(g: *mut c_void, err: *mut c_char, err_len: usize) -> c_int;
        pub fn ofa_c10d_free(g: *mut c_void);
        pub fn ofa_c10d_store_host(
            host: *const c_char,
            port: u16,
            timeout_ms: i64,
            port_out: *mut u16,
            err: *mut c_char,
            err_len: usize,
        ) -> *mut c_void;
        pub fn ofa_c10d_store_free(s: *mut c_void);
    }
}

/// Where and how a rank joins its job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchEnv {
    /// This rank (`RANK`).
    pub rank: usize,
    /// Ranks in the job (`WORLD_SIZE`).
    pub world: usize,
    /// This rank's index on its machine (`LOCAL_RANK`; the GPU it uses).
    pub local_rank: usize,
    /// The rendezvous host (`MASTER_ADDR`).
    pub master_addr: String,
    /// The rendezvous port (`MASTER_PORT`).
    pub master_port: u16,
    /// Every rank is a store client (`TORCHELASTIC_USE_AGENT_STORE=True`: torchrun's agent hosts
    /// the store); otherwise rank 0 hosts it.
    pub agent_store: bool,
    /// How many times the agent has restarted the job (`TORCHELASTIC_RESTART_COUNT`): under the
    /// agent store each attempt's keys live under `/worker/attempt_N`, as PyTorch keeps them.
    pub restart_count: u32,
}

impl LaunchEnv {
    /// The job this process is a rank of, from the environment (`lookup` is `std::env::var` in
    /// use): `None` when `RANK` and `WORLD_SIZE` are unset (a single-process run).
    ///
    /// A partial launch (`RANK` without `WORLD_SIZE`, or the reverse, or `LOCAL_RANK` alone) is
    /// an error, never a single-process run. Under Slurm without torchrun (`srun -n4 ofa train`:
    /// `SLURM_PROCID` and `SLURM_STEP_NUM_TASKS` > 1, no `RANK`), the job is read as PyTorch's
    /// launchers read it: rank `SLURM_PROCID`, world the step's tasks (`SLURM_NTASKS` when the
    /// step spans the allocation), local rank `SLURM_LOCALID`, the store on the step's first node
    /// (`MASTER_ADDR` overrides) at `MASTER_PORT`, or else 20000 + (`SLURM_JOB_ID` + 1009 ·
    /// `SLURM_STEP_ID`) mod 10000 (one port per job step, the same on every rank of it).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Option<Self>, DistError> {
        let (rank, world) = match (lookup("RANK"), lookup("WORLD_SIZE")) {
            (Some(r), Some(w)) => (r, w),
            (Some(_), None) | (None, Some(_)) => {
                return Err(DistError::Env(
                    "RANK and WORLD_SIZE go together: set both (a launcher such as torchrun does) \
                     or neither (a single-process run)"
                        .into(),
                ))
            }
            (None, None) => {
                if let Some(job) = slurm(&lookup)? {
                    return Ok(Some(job));
                }
                if lookup("LOCAL_RANK").is_some() {
                    return Err(DistError::Env(
                        "LOCAL_RANK is set without RANK and WORLD_SIZE: a partial launch".into(),
                    ));
                }
                return Ok(None);
            }
        };
        let rank = num("RANK", &rank)?;
        let world = num("WORLD_SIZE", &world)?;
        if world == 0 || rank >= world {
            return Err(DistError::Env(format!(
                "RANK={rank} is not a rank of WORLD_SIZE={world}"
            )));
        }
        let local_rank = match lookup("LOCAL_RANK") {
            Some(v) => num("LOCAL_RANK", &v)?,
            None => 0,
        };
        let master_addr =
            lookup("MASTER_ADDR").ok_or_else(|| DistError::Env("MASTER_ADDR is not set".into()))?;
        let port =
            lookup("MASTER_PORT").ok_or_else(|| DistError::Env("MASTER_PORT is not set".into()))?;
        let master_port = port
            .trim()
            .parse()
            .map_err(|_| DistError::Env(format!("MASTER_PORT={port:?} is not a port")))?;
        let agent_store = lookup("TORCHELASTIC_USE_AGENT_STORE")
            .is_some_and(|v| v.eq_ignore_ascii_case("true") || v == "1");
        let restart_count = match lookup("TORCHELASTIC_RESTART_COUNT") {
            Some(v) => v.trim().parse().map_err(|_| {
                DistError::Env(format!(
                    "TORCHELASTIC_RESTART_COUNT={v:?} is not a whole number"
                ))
            })?,
            None => 0,
        };
        Ok(Some(LaunchEnv {
            rank,
            world,
            local_rank,
            master_addr,
            master_port,
            agent_store,
            restart_count,
        }))
    }

    /// [`LaunchEnv::from_lookup`] over this process's environment.
    pub fn from_env() -> Result<Option<Self>, DistError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// The key prefix of this job's group in the store: under torchrun's agent store PyTorch
    /// puts each attempt's keys under `/worker/attempt_N`; ours go beneath, under `ofa/`.
    pub fn store_prefix(&self) -> String {
        if self.agent_store {
            format!("/worker/attempt_{}/ofa/", self.restart_count)
        } else {
            "ofa/".to_string()
        }
    }
}

/// The launch variable `name`, whose value is `v`, as a whole number.
fn num(name: &str, v: &str) -> Result<usize, DistError> {
    v.trim()
        .parse()
        .map_err(|_| DistError::Env(format!("{name}={v:?} is not a whole number")))
}

/// The job of an `srun` step of several tasks, launched without torchrun (see
/// [`LaunchEnv::from_lookup`]); `None` outside Slurm or for a single task.
fn slurm(lookup: &impl Fn(&str) -> Option<String>) -> Result<Option<LaunchEnv>, DistError> {
    // The step's task count, not the job's `SLURM_NTASKS`: an `sbatch` script's own process sees
    // `SLURM_NTASKS=4` and `SLURM_PROCID=0` too, and is one process, not rank 0 of 4.
    let (Some(procid), Some(ntasks)) = (lookup("SLURM_PROCID"), lookup("SLURM_STEP_NUM_TASKS"))
    else {
        return Ok(None);
    };
    let world = num("SLURM_STEP_NUM_TASKS", &ntasks)?;
    if world <= 1 {
        return Ok(None);
    }
    let rank = num("SLURM_PROCID", &procid)?;
    if rank >= world {
        return Err(DistError::Env(format!(
            "SLURM_PROCID={rank} is not a rank of SLURM_STEP_NUM_TASKS={world}"
        )));
    }
    let local_rank = match lookup("SLURM_LOCALID") {
        Some(v) => num("SLURM_LOCALID", &v)?,
        None => 0,
    };
    let master_addr = match lookup("MASTER_ADDR") {
        Some(a) => a,
        None => {
            let nodes = lookup("SLURM_STEP_NODELIST")
                .or_else(|| lookup("SLURM_JOB_NODELIST"))
                .ok_or_else(|| {
                    DistError::Env(
                        "Slurm set SLURM_PROCID and SLURM_STEP_NUM_TASKS but no node list \
                         (SLURM_STEP_NODELIST): set MASTER_ADDR"
                            .into(),
                    )
                })?;
            first_host(&nodes).ok_or_else(|| {
                DistError::Env(format!("SLURM_STEP_NODELIST={nodes:?} names no host"))
            })?
        }
    };
    let master_port = match lookup("MASTER_PORT") {
        Some(p) => p
            .trim()
            .parse()
            .map_err(|_| DistError::Env(format!("MASTER_PORT={p:?} is not a port")))?,
        None => {
            let job = lookup("SLURM_JOB_ID").ok_or_else(|| {
                DistError::Env("Slurm set no SLURM_JOB_ID: set MASTER_PORT".into())
            })?;
            let id: u64 = job
                .trim()
                .parse()
                .map_err(|_| DistError::Env(format!("SLURM_JOB_ID={job:?} is not a number")))?;
            // two steps of one allocation running at once get ports of their own
            let step: u64 = match lookup("SLURM_STEP_ID") {
                Some(v) => v
                    .trim()
                    .parse()
                    .map_err(|_| DistError::Env(format!("SLURM_STEP_ID={v:?} is not a number")))?,
                None => 0,
            };
            // below 30000: the result always fits a port
            u16::try_from(20_000 + (id + 1_009 * step) % 10_000).unwrap_or(29_500)
        }
    };
    Ok(Some(LaunchEnv {
        rank,
        world,
        local_rank,
        master_addr,
        master_port,
        agent_store: false,
        restart_count: 0,
    }))
}

/// The first host of a Slurm host list (`node[01-04,07],gpu5` → `node01`): each bracket of the
/// first entry contributes its first number, zero padding kept.
fn first_host(list: &str) -> Option<String> {
    let mut host = String::new();
    let mut chars = list.trim().chars();
    while let Some(c) = chars.next() {
        match c {
            ',' => break,
            '[' => {
                let inner: String = chars.by_ref().take_while(|&c| c != ']').collect();
                let first = inner.split(',').next()?.split('-').next()?;
                host.push_str(first.trim());
            }
            c => host.push(c),
        }
    }
    (!host.is_empty()).then_some(host)
}

/// The longest timeout c10d is given: a week (c10d adds it to the clock).
pub const MAX_TIMEOUT: Duration = Duration::from_secs(7 * 24 * 3600);

/// `timeout` in whole milliseconds, within 1 ms..=[`MAX_TIMEOUT`]: below 1 ms c10d reads 0, which
/// Gloo takes as "no timeout", the opposite of what a tiny timeout asks for.
fn timeout_ms(timeout: Duration) -> i64 {
    let ms = timeout
        .clamp(Duration::from_millis(1), MAX_TIMEOUT)
        .as_millis();
    i64::try_from(ms).unwrap_or(i64::MAX)
}

/// A `TCPStore` this process hosts for ranks that are all clients of it, as torchrun's agent
/// does (they run with `TORCHELASTIC_USE_AGENT_STORE=True`). The store lives as long as this value.
#[derive(Debug)]
pub struct StoreHost {
    ptr: NonNull<c_void>,
    port: u16,
}

// SAFETY: the store is a heap object owned by this value alone and only freed, in `Drop`.
#[allow(unsafe_code)]
unsafe impl Send for StoreHost {}

impl StoreHost {
    /// Host a store on `port` (0: any free port). c10d's `TCPStore` server listens on every
    /// interface, whatever `host` says (as torchrun's agent store does): `host` is only where the
    /// ranks connect. Keep the port behind the cluster's firewall.
    pub fn bind(host: &str, port: u16, timeout: Duration) -> Result<Self, DistError> {
        let fail = |message: String| DistError::C10d {
            op: "host the store",
            rank: 0,
            world: 0,
            message,
        };
        let h = CString::new(host).map_err(|_| DistError::Env("host holds a NUL byte".into()))?;
        let mut err = vec![0u8; ERR_LEN];
        let mut bound = 0u16;
        #[allow(unsafe_code)]
        // SAFETY: `h` is NUL-terminated and outlives the call; `bound` and `err` are writable
        // (`err` of `ERR_LEN` bytes, filled NUL-terminated on failure).
        let ptr = unsafe {
            ffi::ofa_c10d_store_host(
                h.as_ptr(),
                port,
                timeout_ms(timeout),
                &mut bound,
                err.as_mut_ptr().cast(),
                ERR_LEN,
            )
        };
        let ptr = NonNull::new(ptr).ok_or_else(|| fail(message(&err)))?;
        Ok(StoreHost { ptr, port: bound })
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for StoreHost {
    fn drop(&mut self) {
        #[allow(unsafe_code)]
        // SAFETY: `self.ptr` came from `ofa_c10d_store_host` and is freed once, here.
        unsafe {
            ffi::ofa_c10d_store_free(self.ptr.as_ptr())
        }
    }
}

/// The collective backend of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Gloo: CPU tensors (CUDA tensors are staged through host memory).
    Gloo,
    /// NCCL: CUDA tensors, one GPU per rank.
    Nccl,
}

impl Backend {
    /// PyTorch's choice for tensors on `device`: Gloo for the CPU, NCCL for CUDA.
    pub fn for_device(device: Device) -> Backend {
        match device {
            Device::Cuda(_) => Backend::Nccl,
            _ => Backend::Gloo,
        }
    }

    /// `gloo` or `nccl`, as PyTorch names them.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Gloo => "gloo",
            Backend::Nccl => "nccl",
        }
    }

    /// Whether this build can form a group with this backend. NCCL needs the CUDA and NCCL headers
    /// at build time, which only a GPU machine has; this build has Gloo alone.
    pub fn is_built(self) -> bool {
        matches!(self, Backend::Gloo)
    }
}

impl std::str::FromStr for Backend {
    type Err = DistError;
    fn from_str(s: &str) -> Result<Self, DistError> {
        match s.to_ascii_lowercase().as_str() {
            "gloo" => Ok(Backend::Gloo),
            "nccl" => Ok(Backend::Nccl),
            _ => Err(DistError::Env(format!(
                "backend {s:?}: expected gloo or nccl"
            ))),
        }
    }
}

const ERR_LEN: usize = 2048;

/// DDP's default gradient bucket: 25 MiB.
pub const BUCKET_BYTES: usize = 25 << 20;

/// One rank's membership of a Gloo process group (CPU tensors).
#[derive(Debug)]
pub struct ProcessGroup {
    ptr: NonNull<c_void>,
    /// Held across each call into c10d; holds the failure that poisoned the group, if one did.
    lock: std::sync::Mutex<Option<String>>,
    rank: usize,
    world: usize,
}

// SAFETY: the group is a heap object owned by this value alone, freed once in `Drop`; c10d
// process groups may be used from any thread.
#[allow(unsafe_code)]
unsafe impl Send for ProcessGroup {}

// SAFETY: every call into the group holds `self.lock` (see `ProcessGroup::call`), so c10d sees
// one collective at a time from this process (`ProcessGroupGloo::nextTag` is not atomic).
#[allow(unsafe_code)]
unsafe impl Sync for ProcessGroup {}

fn message(buf: &[u8]) -> String {
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

impl ProcessGroup {
    /// Join the job `env` describes with `backend` (see [`ProcessGroup::gloo`]).
    pub fn join(env: &LaunchEnv, backend: Backend, timeout: Duration) -> Result<Self, DistError> {
        match backend {
            Backend::Gloo => Self::gloo(env, timeout),
            Backend::Nccl => Err(DistError::Unsupported(
                "NCCL is not in this build: ofa-dist compiles its NCCL shim only where the CUDA and \
                 NCCL headers are (a GPU machine). Use --backend gloo, which stages CUDA gradients \
                 through host memory"
                    .into(),
            )),
        }
    }

    /// The backend of the group.
    pub fn backend(&self) -> Backend {
        Backend::Gloo
    }

    /// Join the job `env` describes with the Gloo backend: rank 0 hosts the `TCPStore` (unless
    /// the agent does), every rank connects, and the group forms. Every collective after fails
    /// rather than waits past `timeout` (clamped to 1 ms..=[`MAX_TIMEOUT`]). Rank 0's store
    /// listens on every interface, as PyTorch's does (see [`StoreHost::bind`]).
    pub fn gloo(env: &LaunchEnv, timeout: Duration) -> Result<Self, DistError> {
        let c10d = |message: String| DistError::C10d {
            op: "join",
            rank: env.rank,
            world: env.world,
            message,
        };
        let host = CString::new(env.master_addr.clone())
            .map_err(|_| DistError::Env("MASTER_ADDR holds a NUL byte".into()))?;
        let prefix = CString::new(env.store_prefix()).map_err(|e| c10d(e.to_string()))?;
        let mut err = vec![0u8; ERR_LEN];
        #[allow(unsafe_code)]
        // SAFETY: the strings are NUL-terminated and outlive the call; `err` is a writable
        // buffer of `ERR_LEN` bytes that the shim fills NUL-terminated on failure.
        let ptr = unsafe {
            ffi::ofa_c10d_gloo_new(
                host.as_ptr(),
                env.master_port,
                env.rank as c_int,
                env.world as c_int,
                c_int::from(env.agent_store),
                timeout_ms(timeout),
                prefix.as_ptr(),
                err.as_mut_ptr().cast(),
                ERR_LEN,
            )
        };
        let ptr = NonNull::new(ptr).ok_or_else(|| c10d(message(&err)))?;
        Ok(ProcessGroup {
            ptr,
            lock: std::sync::Mutex::new(None),
            rank: env.rank,
            world: env.world,
        })
    }

    /// This rank.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// Ranks in the group.
    pub fn world(&self) -> usize {
        self.world
    }

    fn check(op: &'static str, t: &Tensor) -> Result<(), DistError> {
        if t.device() != Device::Cpu {
            return Err(DistError::BadTensor {
                op,
                reason: format!("Gloo takes CPU tensors, not {:?}", t.device()),
            });
        }
        if !t.is_contiguous() {
            return Err(DistError::BadTensor {
                op,
                reason: "the tensor is not contiguous".into(),
            });
        }
        Ok(())
    }

    /// Run one collective; after any failure the group is poisoned: later calls fail at once
    /// with [`DistError::Poisoned`] (a timed-out `wait` does not cancel Gloo's work, so the ranks
    /// are one collective out of step and the failed one may still be running).
    fn call(
        &self,
        op: &'static str,
        f: impl FnOnce(*mut c_char, usize) -> c_int,
    ) -> Result<(), DistError> {
        let mut err = vec![0u8; ERR_LEN];
        let mut poisoned = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(first) = poisoned.as_ref() {
            return Err(DistError::Poisoned {
                op,
                first: first.clone(),
            });
        }
        if f(err.as_mut_ptr().cast(), ERR_LEN) == 0 {
            Ok(())
        } else {
            let e = DistError::C10d {
                op,
                rank: self.rank,
                world: self.world,
                message: message(&err),
            };
            *poisoned = Some(e.to_string());
            Err(e)
        }
    }

    /// Whether a collective of this group has failed (see [`DistError::Poisoned`]).
    pub fn is_poisoned(&self) -> bool {
        self.lock
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }

    /// Run a collective on `t`'s storage; if it fails, the storage is kept alive for good: a
    /// Gloo thread may still write into it after the call returned.
    fn on_tensor(
        &self,
        op: &'static str,
        t: &mut Tensor,
        f: impl FnOnce(*mut c_void, *mut c_char, usize) -> c_int,
    ) -> Result<(), DistError> {
        Self::check(op, t)?;
        let tp = t.as_mut_ptr().cast::<c_void>();
        let r = self.call(op, |e, n| f(tp, e, n));
        if matches!(r, Err(DistError::C10d { .. })) {
            std::mem::forget(t.shallow_clone());
        }
        r
    }

    /// Fail unless every rank passes the same `value` for `what` (a hash of what they must
    /// share: a bucket layout, a configuration).
    pub fn agree(&self, what: &'static str, value: u64) -> Result<(), DistError> {
        // the bits of the u64, as the i64 slot that carries them
        let values = self.exchange(i64::from_ne_bytes(value.to_ne_bytes()))?;
        if values.iter().all(|&v| v == values[0]) {
            return Ok(());
        }
        let values = values
            .iter()
            .enumerate()
            .map(|(r, v)| format!("rank {r}: {:016x}", u64::from_ne_bytes(v.to_ne_bytes())))
            .collect::<Vec<_>>()
            .join(", ");
        Err(DistError::Disagree { what, values })
    }

    /// Sum `t` in place over all ranks (every rank ends with the sum).
    pub fn all_reduce_sum(&self, t: &mut Tensor) -> Result<(), DistError> {
        self.on_tensor("all-reduce", t, |tp, e, n| {
            #[allow(unsafe_code)]
            // SAFETY: `self.ptr` is a live group; `tp` is the `at::Tensor*` of `t`, which is
            // borrowed mutably for the call (and kept alive past a failure); `e` is a writable
            // buffer of `n` bytes.
            unsafe {
                ffi::ofa_c10d_allreduce_sum(self.ptr.as_ptr(), tp, e, n)
            }
        })
    }

    /// Overwrite `t` on every rank with rank `root`'s.
    pub fn broadcast(&self, t: &mut Tensor, root: usize) -> Result<(), DistError> {
        if root >= self.world {
            return Err(DistError::BadTensor {
                op: "broadcast",
                reason: format!("root {root} is not a rank of {}", self.world),
            });
        }
        self.on_tensor("broadcast", t, |tp, e, n| {
            #[allow(unsafe_code)]
            // SAFETY: as in `all_reduce_sum`.
            unsafe {
                ffi::ofa_c10d_broadcast(self.ptr.as_ptr(), tp, root as c_int, e, n)
            }
        })
    }

    /// Average `tensors` (a model's gradients) over all ranks, in place, as DDP does: they are
    /// packed in order into flat float32 buckets of at most `bucket_bytes` (a larger tensor is a
    /// bucket of its own), each bucket summed by one all-reduce and divided by the world size.
    /// Every rank must pass tensors of the same shapes in the same order. Gloo reduces in host
    /// memory, so the buckets of CUDA tensors are staged through it. Returns the bytes reduced.
    pub fn average_in_buckets(
        &self,
        tensors: &mut [Tensor],
        bucket_bytes: usize,
    ) -> Result<usize, DistError> {
        let world = self.world as f64;
        self.in_buckets("gradient average", tensors, bucket_bytes, |flat| {
            self.all_reduce_sum(flat)?;
            *flat /= world;
            Ok(())
        })
    }

    /// Overwrite `tensors` (a model's parameters and buffers) on every rank with rank `root`'s,
    /// packed into float32 buckets as [`ProcessGroup::average_in_buckets`] does. Returns the
    /// bytes sent.
    pub fn broadcast_in_buckets(
        &self,
        tensors: &mut [Tensor],
        root: usize,
        bucket_bytes: usize,
    ) -> Result<usize, DistError> {
        self.in_buckets("broadcast", tensors, bucket_bytes, |flat| {
            self.broadcast(flat, root)
        })
    }

    /// Pack `tensors` in order into flat CPU float32 buckets of at most `bucket_bytes`, apply `op`
    /// to each, and copy the result back into the tensors (whatever their device and strides).
    fn in_buckets(
        &self,
        what: &'static str,
        tensors: &mut [Tensor],
        bucket_bytes: usize,
        mut op: impl FnMut(&mut Tensor) -> Result<(), DistError>,
    ) -> Result<usize, DistError> {
        for t in tensors.iter() {
            if t.kind() != tch::Kind::Float {
                return Err(DistError::BadTensor {
                    op: what,
                    reason: format!("buckets hold float32 tensors, not {:?}", t.kind()),
                });
            }
        }
        let size = |t: &Tensor| t.numel() * 4;
        let (mut start, mut total) = (0, 0);
        tch::no_grad(|| {
            while start < tensors.len() {
                let (mut end, mut bytes) = (start, 0);
                while end < tensors.len()
                    && (end == start || bytes + size(&tensors[end]) <= bucket_bytes)
                {
                    bytes += size(&tensors[end]);
                    end += 1;
                }
                let parts: Vec<Tensor> = tensors[start..end]
                    .iter()
                    .map(|t| t.to_device(Device::Cpu).reshape([-1]))
                    .collect();
                let mut flat = Tensor::cat(&parts, 0);
                op(&mut flat)?;
                let mut off = 0i64;
                for t in &mut tensors[start..end] {
                    let n = t.numel() as i64;
                    let part = flat.narrow(0, off, n).view(t.size().as_slice());
                    t.copy_(&part.to_device(t.device()));
                    off += n;
                }
                total += bytes;
                start = end;
            }
            Ok(total)
        })
    }

    /// The element-wise sum over all ranks of `values` (the same length on every rank): small
    /// vectors of metrics or scores.
    pub fn sum_f64(&self, values: &[f64]) -> Result<Vec<f64>, DistError> {
        let mut t = Tensor::from_slice(values);
        self.all_reduce_sum(&mut t)?;
        Vec::<f64>::try_from(&t).map_err(|e| DistError::BadTensor {
            op: "sum",
            reason: e.to_string(),
        })
    }

    /// Every rank's `value`, in rank order (one all-reduce of a slot per rank: exact, since each
    /// slot has one non-zero term).
    pub fn exchange(&self, value: i64) -> Result<Vec<i64>, DistError> {
        let mut slots = Tensor::zeros([self.world as i64], (tch::Kind::Int64, Device::Cpu));
        let _ = slots.get(self.rank as i64).fill_(value);
        self.all_reduce_sum(&mut slots)?;
        Vec::<i64>::try_from(&slots).map_err(|e| DistError::BadTensor {
            op: "exchange",
            reason: e.to_string(),
        })
    }

    /// Wait until every rank has arrived.
    pub fn barrier(&self) -> Result<(), DistError> {
        self.call("barrier", |e, n| {
            #[allow(unsafe_code)]
            // SAFETY: `self.ptr` is a live group; `e` is a writable buffer of `n` bytes.
            unsafe {
                ffi::ofa_c10d_barrier(self.ptr.as_ptr(), e, n)
            }
        })
    }
}

/// The layout in which [`ProcessGroup::average_in_buckets`] packs `tensors`: a hash of their
/// order, shapes and types. Ranks that reduce different layouts would sum unrelated numbers
/// without an error; [`ProcessGroup::agree`] on this hash catches it.
pub fn bucket_layout(tensors: &[Tensor]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    tensors.len().hash(&mut h);
    for t in tensors {
        t.size().hash(&mut h);
        format!("{:?}", t.kind()).hash(&mut h);
    }
    h.finish()
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        if self.is_poisoned() {
            // Freeing joins Gloo's threads, and one may be stuck in the failed collective on a
            // peer that is alive but hung: leave the group to the process's exit instead.
            return;
        }
        #[allow(unsafe_code)]
        // SAFETY: `self.ptr` came from `ofa_c10d_gloo_new` and is freed once, here.
        unsafe {
            ffi::ofa_c10d_free(self.ptr.as_ptr())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_reach_c10d_within_what_it_handles() {
        // 0 ms is "no timeout" to Gloo: a tiny timeout must stay a timeout
        assert_eq!(timeout_ms(Duration::from_micros(10)), 1);
        assert_eq!(timeout_ms(Duration::ZERO), 1);
        assert_eq!(timeout_ms(Duration::from_millis(1800)), 1800);
        // c10d adds the timeout to the clock: a huge one is clamped, never wrapped
        assert_eq!(timeout_ms(Duration::MAX), 7 * 24 * 3600 * 1000);
    }
}
