//! Two real ranks (two processes: this test binary run again) on 127.0.0.1 with Gloo: the
//! primitives against known values, and a rank that dies making the other fail on the closed
//! connection (not by the timeout) with an error that says so. Timeouts here are hang guards far
//! beyond any run: no test depends on how fast a rank is.

#![allow(clippy::unwrap_used)]
// A test reports what it measured.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ofa_dist::{bucket_layout, Backend, DistError, LaunchEnv, ProcessGroup};
use tch::{Kind, Tensor};

/// Set in the children: which scenario this process plays.
const ROLE: &str = "OFA_DIST_TEST_ROLE";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Start `test` of this binary as the ranks of a 2-rank job, each with `role`.
fn spawn(test: &str, role: &str) -> Vec<std::process::Child> {
    let port = free_port().to_string();
    let exe = std::env::current_exe().unwrap();
    (0..2)
        .map(|rank| {
            Command::new(&exe)
                .args([test, "--exact", "--nocapture", "--test-threads", "1"])
                .env(ROLE, role)
                .env("RANK", rank.to_string())
                .env("WORLD_SIZE", "2")
                .env("LOCAL_RANK", rank.to_string())
                .env("MASTER_ADDR", "127.0.0.1")
                .env("MASTER_PORT", &port)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect()
}

/// A child process killed and reaped when this goes out of scope, even on a failed assertion.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Run `test` of this binary as the ranks of a 2-rank job, each with `role`; their outputs.
fn spawn_ranks(test: &str, role: &str) -> Vec<std::process::Output> {
    spawn(test, role)
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect()
}

/// Every rank exited successfully and printed `rank K ok`.
fn assert_every_rank_ok(outs: &[std::process::Output]) {
    for (k, o) in outs.iter().enumerate() {
        let text =
            String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "rank {k}: {text}");
        assert!(text.contains(&format!("rank {k} ok")), "rank {k}: {text}");
    }
}

fn join(timeout: Duration) -> ProcessGroup {
    let env = LaunchEnv::from_env().unwrap().unwrap();
    ProcessGroup::gloo(&env, timeout).unwrap()
}

#[test]
fn two_ranks_all_reduce_broadcast_and_barrier() {
    match std::env::var(ROLE).as_deref() {
        Ok("primitives") => {
            let pg = join(Duration::from_secs(600));
            let r = pg.rank() as f32;
            // All-reduce: rank k holds (k + 1) · [1, 2, 3, 4]; the sum is 3 · [1, 2, 3, 4].
            let mut t = Tensor::from_slice(&[1f32, 2., 3., 4.]) * f64::from(r + 1.0);
            pg.all_reduce_sum(&mut t).unwrap();
            assert_eq!(Vec::<f32>::try_from(&t).unwrap(), [3., 6., 9., 12.]);
            // A large flat tensor, as a gradient bucket.
            let mut big = Tensor::ones([1 << 20], (Kind::Float, tch::Device::Cpu)) * f64::from(r);
            pg.all_reduce_sum(&mut big).unwrap();
            assert_eq!(big.sum(Kind::Float).double_value(&[]), f64::from(1 << 20));
            // Broadcast from rank 1.
            let mut b = Tensor::from_slice(&[r, r * 10.0]);
            pg.broadcast(&mut b, 1).unwrap();
            assert_eq!(Vec::<f32>::try_from(&b).unwrap(), [1., 10.]);
            pg.barrier().unwrap();
            // Exchange: every rank's value, in rank order, exactly (even past f64's 2^53).
            let big = (1i64 << 62) + 7;
            assert_eq!(pg.exchange(big - pg.rank() as i64).unwrap(), [big, big - 1]);
            // Bucketed broadcast from rank 0 into rank-dependent tensors, one of them
            // channels-last (strided), across two buckets.
            let mut cl = Tensor::empty_strided(
                [2, 3, 4, 4],
                [48, 1, 12, 3],
                (Kind::Float, tch::Device::Cpu),
            );
            cl.copy_(
                &(Tensor::arange(96, (Kind::Float, tch::Device::Cpu)).reshape([2, 3, 4, 4])
                    + f64::from(r) * 1000.0),
            );
            let mut model = vec![
                Tensor::full([5], f64::from(r) + 0.5, (Kind::Float, tch::Device::Cpu)),
                cl.shallow_clone(),
            ];
            let sent = pg.broadcast_in_buckets(&mut model, 0, 64).unwrap();
            assert_eq!(sent, (5 + 96) * 4);
            assert_eq!(Vec::<f32>::try_from(&model[0]).unwrap(), [0.5; 5]);
            let want = Tensor::arange(96, (Kind::Float, tch::Device::Cpu)).reshape([2, 3, 4, 4]);
            assert!(
                cl.equal(&want),
                "the channels-last tensor got rank 0's values in place"
            );
            assert!(!cl.is_contiguous(), "and kept its layout");
            // Refused before c10d sees them.
            let mut strided = Tensor::zeros([4, 4], (Kind::Float, tch::Device::Cpu)).t_();
            let e = pg.all_reduce_sum(&mut strided).unwrap_err();
            assert!(matches!(e, DistError::BadTensor { .. }), "{e}");
            let e = pg.broadcast(&mut b, 2).unwrap_err();
            assert!(e.to_string().contains("root 2"), "{e}");
            println!("rank {} ok", pg.rank());
        }
        Ok(other) => panic!("unexpected role {other}"),
        Err(_) => {
            let outs = spawn_ranks("two_ranks_all_reduce_broadcast_and_barrier", "primitives");
            assert_every_rank_ok(&outs);
        }
    }
}

#[test]
fn a_rank_that_dies_fails_the_other_on_the_closed_connection() {
    match std::env::var(ROLE).as_deref() {
        Ok("dies") => {
            // A timeout far beyond the test: the failure must come from the closed connection
            // (a timeout's error would say "timed out").
            let pg = join(Duration::from_secs(600));
            pg.barrier().unwrap();
            if pg.rank() == 1 {
                // Gone without a word, as a killed process.
                std::process::exit(0);
            }
            let t0 = Instant::now();
            let mut t = Tensor::ones([16], (Kind::Float, tch::Device::Cpu));
            let e = pg.all_reduce_sum(&mut t).unwrap_err();
            println!(
                "rank 0 failed after {:.1} s: {e}",
                t0.elapsed().as_secs_f64()
            );
            assert!(e.to_string().contains("all-reduce (rank 0 of 2)"), "{e}");
            assert!(!e.to_string().to_lowercase().contains("timed out"), "{e}");
        }
        Ok(other) => panic!("unexpected role {other}"),
        Err(_) => {
            let outs = spawn_ranks(
                "a_rank_that_dies_fails_the_other_on_the_closed_connection",
                "dies",
            );
            let text = String::from_utf8_lossy(&outs[0].stdout).to_string()
                + &String::from_utf8_lossy(&outs[0].stderr);
            assert!(outs[0].status.success(), "rank 0: {text}");
            assert!(text.contains("rank 0 failed after"), "rank 0: {text}");
        }
    }
}

/// A small model's gradient on rows `rows` of a fixed batch (the same on every rank).
// each rank is a process of its own, drawing on one thread
#[allow(clippy::disallowed_methods)]
fn shard_gradients(rows: std::ops::Range<i64>) -> Vec<Tensor> {
    tch::manual_seed(0);
    let w1 = Tensor::randn([16, 8], (Kind::Float, tch::Device::Cpu)).set_requires_grad(true);
    let w2 = Tensor::randn([3, 16], (Kind::Float, tch::Device::Cpu)).set_requires_grad(true);
    let b2 = Tensor::randn([3], (Kind::Float, tch::Device::Cpu)).set_requires_grad(true);
    tch::manual_seed(1);
    let x = Tensor::randn([8, 8], (Kind::Float, tch::Device::Cpu));
    let y = Tensor::randint(3, [8], (Kind::Int64, tch::Device::Cpu));
    let n = rows.end - rows.start;
    let (x, y) = (x.narrow(0, rows.start, n), y.narrow(0, rows.start, n));
    let out = x.matmul(&w1.tr()).relu().matmul(&w2.tr()) + &b2;
    out.cross_entropy_for_logits(&y).backward();
    [w1, w2, b2]
        .iter()
        .map(|t| t.grad().detach().copy())
        .collect()
}

#[test]
fn the_averaged_gradient_is_the_mean_of_the_shards_gradients() {
    match std::env::var(ROLE).as_deref() {
        Ok("gradients") => {
            let pg = join(Duration::from_secs(600));
            let k = pg.rank() as i64;
            let mut mine = shard_gradients(4 * k..4 * k + 4);
            // 600 bytes a bucket: w1 (512 bytes) alone, then w2 and b2 (192 + 12) together.
            let bytes = pg.average_in_buckets(&mut mine, 600).unwrap();
            assert_eq!(bytes, (128 + 48 + 3) * 4);
            // Both shards' gradients computed here, separately, and averaged.
            let (g0, g1) = (shard_gradients(0..4), shard_gradients(4..8));
            for ((m, a), b) in mine.iter().zip(&g0).zip(&g1) {
                let want = (a + b) / 2.0;
                assert!(
                    m.equal(&want),
                    "max diff {}",
                    (m - want).abs().max().double_value(&[])
                );
            }
            let mut ints = vec![Tensor::zeros([2], (Kind::Int64, tch::Device::Cpu))];
            assert!(pg.average_in_buckets(&mut ints, 600).is_err());
            println!("rank {} ok", pg.rank());
        }
        Ok(other) => panic!("unexpected role {other}"),
        Err(_) => {
            let outs = spawn_ranks(
                "the_averaged_gradient_is_the_mean_of_the_shards_gradients",
                "gradients",
            );
            assert_every_rank_ok(&outs);
        }
    }
}

#[test]
fn ranks_with_different_bucket_layouts_stop_with_an_error() {
    match std::env::var(ROLE).as_deref() {
        Ok("layout") => {
            let pg = join(Duration::from_secs(600));
            let zeros = |s: &[i64]| Tensor::zeros(s, (Kind::Float, tch::Device::Cpu));
            let same = [zeros(&[4]), zeros(&[2, 3])];
            pg.agree("the layout", bucket_layout(&same)).unwrap();
            // rank 1's second tensor is transposed: the same bytes, another layout
            let mine = if pg.rank() == 0 {
                [zeros(&[4]), zeros(&[2, 3])]
            } else {
                [zeros(&[4]), zeros(&[3, 2])]
            };
            let e = pg.agree("the layout", bucket_layout(&mine)).unwrap_err();
            assert!(matches!(e, DistError::Disagree { .. }), "{e}");
            assert!(
                e.to_string()
                    .contains("the ranks disagree on the layout: rank 0: "),
                "{e}"
            );
            // a type counts too
            let typed = if pg.rank() == 0 {
                [zeros(&[4])]
            } else {
                [Tensor::zeros([4], (Kind::Double, tch::Device::Cpu))]
            };
            assert!(pg.agree("the layout", bucket_layout(&typed)).is_err());
            println!("rank {} ok", pg.rank());
        }
        Ok(other) => panic!("unexpected role {other}"),
        Err(_) => {
            let outs = spawn_ranks(
                "ranks_with_different_bucket_layouts_stop_with_an_error",
                "layout",
            );
            assert_every_rank_ok(&outs);
        }
    }
}

#[test]
fn a_hung_rank_poisons_the_group_and_the_survivor_exits() {
    match std::env::var(ROLE).as_deref() {
        Ok("hung") => {
            // The timeout is what is tested: a rank that never joins the collective.
            let pg = join(Duration::from_secs(2));
            pg.barrier().unwrap();
            if pg.rank() == 1 {
                // alive, connected, and never calling again (the parent kills it)
                std::thread::sleep(Duration::from_secs(3600));
                return;
            }
            let mut t = Tensor::ones([16], (Kind::Float, tch::Device::Cpu));
            let first = pg.all_reduce_sum(&mut t).unwrap_err();
            assert!(matches!(first, DistError::C10d { .. }), "{first}");
            // the group is one collective out of step: it refuses at once, naming why
            let e = pg.barrier().unwrap_err();
            assert!(matches!(e, DistError::Poisoned { .. }), "{e}");
            assert!(e.to_string().contains("all-reduce (rank 0 of 2)"), "{e}");
            assert!(pg.is_poisoned());
            // dropping it does not wait on the hung collective
            drop(pg);
            println!("rank 0 ok: {first}");
        }
        Ok(other) => panic!("unexpected role {other}"),
        Err(_) => {
            let mut children = spawn(
                "a_hung_rank_poisons_the_group_and_the_survivor_exits",
                "hung",
            );
            // the silent rank is killed however this test ends (it would sleep for an hour)
            let _hung = KillOnDrop(children.pop().unwrap());
            let survivor = children.pop().unwrap().wait_with_output().unwrap();
            let text = String::from_utf8_lossy(&survivor.stdout).to_string()
                + &String::from_utf8_lossy(&survivor.stderr);
            assert!(survivor.status.success(), "rank 0: {text}");
            assert!(text.contains("rank 0 ok"), "rank 0: {text}");
        }
    }
}

/// An environment of these variables alone, as `LaunchEnv::from_lookup` reads one.
fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
    move |k: &str| {
        pairs
            .iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| v.to_string())
    }
}

#[test]
fn launch_variables_are_read_as_torchrun_sets_them() {
    assert_eq!(LaunchEnv::from_lookup(env(&[])).unwrap(), None);
    let e = LaunchEnv::from_lookup(env(&[
        ("RANK", "1"),
        ("WORLD_SIZE", "4"),
        ("LOCAL_RANK", "1"),
        ("MASTER_ADDR", "10.0.0.1"),
        ("MASTER_PORT", "29500"),
        ("TORCHELASTIC_USE_AGENT_STORE", "True"),
        ("TORCHELASTIC_RESTART_COUNT", "2"),
    ]))
    .unwrap()
    .unwrap();
    assert_eq!(
        (e.rank, e.world, e.local_rank, e.master_port),
        (1, 4, 1, 29500)
    );
    assert!(e.agent_store);
    // PyTorch's key space for each of the agent's attempts.
    assert_eq!(e.store_prefix(), "/worker/attempt_2/ofa/");
    // Backends by PyTorch's names; anything else is named back.
    assert_eq!("GLOO".parse::<Backend>().unwrap(), Backend::Gloo);
    assert_eq!("nccl".parse::<Backend>().unwrap(), Backend::Nccl);
    let e = "mpi".parse::<Backend>().unwrap_err().to_string();
    assert!(e.contains("\"mpi\"") && e.contains("gloo or nccl"), "{e}");
    assert!(Backend::Gloo.is_built() && !Backend::Nccl.is_built());
    for (bad, want) in [
        (&[("RANK", "4"), ("WORLD_SIZE", "4")][..], "not a rank"),
        (&[("RANK", "x"), ("WORLD_SIZE", "4")][..], "RANK=\"x\""),
        (&[("RANK", "0"), ("WORLD_SIZE", "2")][..], "MASTER_ADDR"),
        (
            &[
                ("RANK", "0"),
                ("WORLD_SIZE", "2"),
                ("MASTER_ADDR", "h"),
                ("MASTER_PORT", "70000"),
            ][..],
            "MASTER_PORT=\"70000\" is not a port",
        ),
        (
            &[
                ("RANK", "0"),
                ("WORLD_SIZE", "2"),
                ("MASTER_ADDR", "h"),
                ("MASTER_PORT", "1"),
                ("TORCHELASTIC_RESTART_COUNT", "-1"),
            ][..],
            "TORCHELASTIC_RESTART_COUNT=\"-1\"",
        ),
        // partial launches are errors, never N independent single-process runs
        (&[("RANK", "1")][..], "RANK and WORLD_SIZE go together"),
        (
            &[("WORLD_SIZE", "4")][..],
            "RANK and WORLD_SIZE go together",
        ),
        (&[("LOCAL_RANK", "0")][..], "partial launch"),
        (
            &[("SLURM_PROCID", "4"), ("SLURM_STEP_NUM_TASKS", "4")][..],
            "SLURM_PROCID=4 is not a rank",
        ),
        (
            &[("SLURM_PROCID", "1"), ("SLURM_STEP_NUM_TASKS", "4")][..],
            "no node list",
        ),
    ] {
        let bad: &'static [(&str, &str)] = Box::leak(bad.to_vec().into_boxed_slice());
        let e = LaunchEnv::from_lookup(env(bad)).unwrap_err().to_string();
        assert!(e.contains(want), "{e}");
    }
}

#[test]
fn srun_without_torchrun_is_read_from_the_slurm_variables() {
    // `srun -N2 -n4 ofa train …` on nodes gpu07 and gpu08: the third task
    let e = LaunchEnv::from_lookup(env(&[
        ("SLURM_PROCID", "2"),
        ("SLURM_NTASKS", "4"),
        ("SLURM_STEP_NUM_TASKS", "4"),
        ("SLURM_LOCALID", "0"),
        ("SLURM_STEP_NODELIST", "gpu[07-08],cpu1"),
        ("SLURM_JOB_ID", "123456"),
    ]))
    .unwrap()
    .unwrap();
    assert_eq!((e.rank, e.world, e.local_rank), (2, 4, 0));
    assert_eq!(e.master_addr, "gpu07");
    assert_eq!(e.master_port, 23456, "20000 + the job id mod 10000");
    // another step of the allocation, running beside it, gets another port
    let e = LaunchEnv::from_lookup(env(&[
        ("SLURM_PROCID", "0"),
        ("SLURM_STEP_NUM_TASKS", "4"),
        ("SLURM_STEP_ID", "1"),
        ("SLURM_STEP_NODELIST", "gpu[07-08]"),
        ("SLURM_JOB_ID", "123456"),
    ]))
    .unwrap()
    .unwrap();
    assert_eq!(e.master_port, 24465);
    assert!(!e.agent_store);
    // MASTER_ADDR and MASTER_PORT win; torchrun's variables win over Slurm's
    let e = LaunchEnv::from_lookup(env(&[
        ("SLURM_PROCID", "1"),
        ("SLURM_STEP_NUM_TASKS", "2"),
        ("SLURM_STEP_NODELIST", "n[1-2]"),
        ("MASTER_ADDR", "10.0.0.9"),
        ("MASTER_PORT", "29400"),
    ]))
    .unwrap()
    .unwrap();
    assert_eq!(
        (e.rank, e.master_addr.as_str(), e.master_port),
        (1, "10.0.0.9", 29400)
    );
    let e = LaunchEnv::from_lookup(env(&[
        ("SLURM_PROCID", "0"),
        ("SLURM_STEP_NUM_TASKS", "2"),
        ("RANK", "3"),
        ("WORLD_SIZE", "8"),
        ("MASTER_ADDR", "h"),
        ("MASTER_PORT", "1"),
    ]))
    .unwrap()
    .unwrap();
    assert_eq!((e.rank, e.world), (3, 8));
    // one task, or an `sbatch` script's own process (the job's task count, no step), is a
    // single-process run
    for one in [
        &[("SLURM_PROCID", "0"), ("SLURM_STEP_NUM_TASKS", "1")][..],
        &[("SLURM_PROCID", "0"), ("SLURM_NTASKS", "4")][..],
    ] {
        let one: &'static [(&str, &str)] = Box::leak(one.to_vec().into_boxed_slice());
        assert_eq!(LaunchEnv::from_lookup(env(one)).unwrap(), None);
    }
}
