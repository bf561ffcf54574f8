//! `ofa train` as the ranks of a data-parallel job (Gloo on 127.0.0.1), launched as users launch
//! it: `--nproc-per-node 2`, or two processes given torchrun's variables by hand. One package with
//! the weights every rank agreed on; stopped and resumed equal to uninterrupted, bit for bit; a
//! rank killed, hung or interrupted.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use common::{assert_same_tensors, ofa, run_ok, s, smoke_recipe, wait_until_exists};
use ofa_supernet::checkpoint::read_safetensors;
use ofa_supernet::Supernet;
use ofa_trainer::data::write_synthetic_idx;
use ofa_trainer::run::weights_fingerprint;
use serde_json::Value;
use tch::Device;

/// The jobs here start several processes each and time their faults: on a small machine they
/// take turns, so no rank is starved past a timeout by another test's ranks.
static ONE_JOB_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn turn() -> std::sync::MutexGuard<'static, ()> {
    ONE_JOB_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// Synthetic IDX data (160 training, 40 test images, 4 classes) in `dir/data`.
fn data(dir: &Path) -> PathBuf {
    let d = dir.join("data");
    std::fs::create_dir_all(&d).unwrap();
    write_synthetic_idx(&d, 160, 40, 4).unwrap();
    d
}

/// `train --recipe RECIPE --data DATA --out OUT`.
fn train_args<'a>(recipe: &'a Path, data: &'a Path, out: &'a Path) -> [&'a str; 7] {
    [
        "train",
        "--recipe",
        s(recipe),
        "--data",
        s(data),
        "--out",
        s(out),
    ]
}

/// `ofa train` of `recipe` on `data` into `out` as 2 local ranks.
fn local_job(recipe: &Path, data: &Path, out: &Path) -> Command {
    let mut c = ofa();
    c.args(train_args(recipe, data, out))
        .args(["--nproc-per-node", "2"]);
    c
}

fn metrics(run: &Path, kind: &str) -> Vec<Value> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v["kind"] == kind)
        .collect()
}

fn checkpoint_state(run: &Path) -> Option<Value> {
    let f = read_safetensors(&run.join("checkpoint.safetensors")).ok()?;
    serde_json::from_str(f.metadata.get("state")?).ok()
}

#[test]
fn two_local_ranks_train_one_package_and_resume_bit_for_bit() {
    let _turn = turn();
    let tmp = tempfile::tempdir().unwrap();
    let d = data(tmp.path());
    let recipe = smoke_recipe(tmp.path(), 6, 2);
    let train = |out: &Path, extra: &[&str]| run_ok(local_job(&recipe, &d, out).args(extra));

    let a = tmp.path().join("a");
    train(&a, &[]);
    // One package, written by rank 0 alone, that records the job.
    for f in [
        "supernet.safetensors",
        "calibration.safetensors",
        "card.json",
    ] {
        assert!(a.join(f).is_file(), "{f} missing");
    }
    let card: Value =
        serde_json::from_str(&std::fs::read_to_string(a.join("card.json")).unwrap()).unwrap();
    assert_eq!(card["world_size"], 2);
    assert_eq!(card["backend"], "gloo");
    let run: Value =
        serde_json::from_str(&std::fs::read_to_string(a.join("run.json")).unwrap()).unwrap();
    assert_eq!(run["world_size"], 2);
    // At each phase end both ranks held the same weights (the run fails otherwise), and the
    // last fingerprint is the package's.
    let agreed = metrics(&a, "ranks");
    assert_eq!(agreed.len(), 6, "one agreement per phase");
    let pkg = Supernet::load(&a.join("supernet.safetensors"), Device::Cpu).unwrap();
    assert_eq!(
        agreed.last().unwrap()["weights_fingerprint"],
        format!("{:016x}", weights_fingerprint(&pkg.net))
    );
    // One metrics line per step of the job, not one per rank.
    let steps = metrics(&a, "step");
    assert_eq!(steps.len(), 6 + 2 * 5);
    assert_eq!(steps[0]["global_step"], 1);

    // A setup error on one rank (rank 0 refuses a folder that holds a run) ends every rank with
    // a named error, not a wait at the next collective.
    let out = local_job(&recipe, &d, &a).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("error (rank 0):") && err.contains("already holds a run"),
        "{err}"
    );
    assert!(
        err.contains("error (rank 1): data-parallel job: rank 0 of 2 failed while setting up"),
        "{err}"
    );

    // Stopped mid-phase, then resumed: the same package.
    let b = tmp.path().join("b");
    train(&b, &["--stop-after", "3"]);
    assert!(!b.join("supernet.safetensors").exists());
    let state = checkpoint_state(&b).unwrap();
    assert_eq!(state["global_step"], 3);
    assert_eq!(state["world_size"], 2);
    assert_eq!(state["backend"], "gloo");
    let mut c = ofa();
    c.args(["train", "--resume", s(&b), "--nproc-per-node", "2"]);
    run_ok(&mut c);
    assert_same_tensors(
        &a.join("supernet.safetensors"),
        &b.join("supernet.safetensors"),
        "a 2-rank run stopped at step 3 and resumed",
    );
}

/// One rank of a 2-rank job, launched as torchrun launches it.
fn rank(rank: usize, port: u16, args: &[&str]) -> Child {
    ofa()
        .args(args)
        .env("RANK", rank.to_string())
        .env("WORLD_SIZE", "2")
        .env("LOCAL_RANK", rank.to_string())
        .env("MASTER_ADDR", "127.0.0.1")
        .env("MASTER_PORT", port.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// The two ranks of a job started by hand: killed and reaped when the test ends, however it ends
/// (a rank stopped with SIGSTOP would otherwise outlive it).
struct Job([Child; 2]);

impl Job {
    fn start(args: &[&str]) -> Job {
        let port = free_port();
        Job([rank(0, port, args), rank(1, port, args)])
    }
}

impl Drop for Job {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Wait until rank 0 has saved a checkpoint at or past step `step` (failing if a rank ends first).
fn wait_for_checkpoint(run: &Path, step: u64, ranks: &mut [Child]) {
    while checkpoint_state(run)
        .and_then(|s| s["global_step"].as_u64())
        .is_none_or(|s| s < step)
    {
        for r in ranks.iter_mut() {
            assert!(r.try_wait().unwrap().is_none(), "a rank ended early");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Wait for a rank to end; its exit status and stderr.
fn ended(child: &mut Child) -> Output {
    let mut stderr = Vec::new();
    if let Some(mut e) = child.stderr.take() {
        std::io::Read::read_to_end(&mut e, &mut stderr).unwrap();
    }
    let status = child.wait().unwrap();
    Output {
        status,
        stdout: Vec::new(),
        stderr,
    }
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{sig}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

#[test]
fn a_killed_or_hung_rank_ends_the_job_with_a_clear_error_and_it_resumes_exactly() {
    let _turn = turn();
    let tmp = tempfile::tempdir().unwrap();
    let d = data(tmp.path());
    let recipe = smoke_recipe(tmp.path(), 400, 2);
    // Two ranks of a job writing `out`, given torchrun's variables by hand, once rank 0 has
    // saved a checkpoint at step 4.
    let started = |out: &Path, timeout: &str| -> Job {
        let args = [
            &train_args(&recipe, &d, out)[..],
            &["--dist-timeout", timeout],
        ]
        .concat();
        let mut job = Job::start(&args);
        wait_for_checkpoint(out, 4, &mut job.0);
        job
    };

    // Killed: the other rank fails at its next collective on the closed connection, not by the
    // (long) timeout, whose error would say "timed out".
    let run = tmp.path().join("killed");
    let mut job = started(&run, "600");
    job.0[1].kill().unwrap();
    job.0[1].wait().unwrap();
    let out = ended(&mut job.0[0]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(!err.to_lowercase().contains("timed out"), "{err}");
    assert!(err.contains("error (rank 0): data-parallel job"), "{err}");
    assert!(err.contains("rank 0 of 2"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    // The job resumes from rank 0's last checkpoint; stopped again a few steps later, it
    // stands exactly where an uninterrupted job does.
    let at = checkpoint_state(&run).unwrap()["global_step"]
        .as_u64()
        .unwrap();
    let stop = (at + 3).to_string();
    let mut c = ofa();
    c.args([
        "train",
        "--resume",
        s(&run),
        "--nproc-per-node",
        "2",
        "--stop-after",
        &stop,
    ]);
    run_ok(&mut c);
    let straight = tmp.path().join("straight");
    run_ok(local_job(&recipe, &d, &straight).args(["--stop-after", &stop]));
    let wa = read_safetensors(&run.join("checkpoint.safetensors")).unwrap();
    assert_eq!(
        wa.metadata
            .get("state")
            .map(|s| s.contains(&format!("\"global_step\":{stop}"))),
        Some(true)
    );
    assert_same_tensors(
        &run.join("checkpoint.safetensors"),
        &straight.join("checkpoint.safetensors"),
        "a job resumed after a killed rank",
    );

    // Hung (stopped with SIGSTOP): the other rank gives up when the 10 s timeout passes, with
    // c10d's message. (A healthy peer is never 10 s behind here: the two ranks run the same
    // steps and this test's jobs take turns with the others.)
    let run = tmp.path().join("hung");
    let mut job = started(&run, "10");
    signal(&job.0[1], "STOP");
    let out = ended(&mut job.0[0]);
    drop(job); // rank 1, still stopped, is killed
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.to_lowercase().contains("timed out"), "{err}");
}

#[test]
fn ctrl_c_on_one_rank_stops_the_job_with_a_checkpoint() {
    let _turn = turn();
    let tmp = tempfile::tempdir().unwrap();
    let d = data(tmp.path());
    let recipe = smoke_recipe(tmp.path(), 400, 1000);
    let run = tmp.path().join("run");
    let args = train_args(&recipe, &d, &run);
    let mut job = Job::start(&args);
    wait_until_exists(&run.join("metrics.jsonl"), &mut job.0);
    signal(&job.0[1], "INT");
    let out0 = ended(&mut job.0[0]);
    let out1 = ended(&mut job.0[1]);
    let err0 = String::from_utf8_lossy(&out0.stderr);
    assert!(out0.status.success(), "{err0}");
    assert!(
        out1.status.success(),
        "{}",
        String::from_utf8_lossy(&out1.stderr)
    );
    assert!(err0.contains("continue with: ofa train --resume"), "{err0}");
    let step = checkpoint_state(&run).unwrap()["global_step"]
        .as_u64()
        .unwrap();
    assert!((1..400).contains(&step), "{step}");
}

/// PyTorch's own launcher, where the environment names one (`OFA_TORCHRUN`; `make test-torchrun`
/// installs it: torch with its CUDA stack is 4.6 GB, too much for every test run).
fn torchrun() -> Option<PathBuf> {
    std::env::var_os("OFA_TORCHRUN").map(PathBuf::from)
}

#[test]
#[ignore = "needs PyTorch's torchrun: `make test-torchrun` (installs it, 4.6 GB, and runs this)"]
fn torchrun_launches_the_ranks_as_it_launches_pytorch_and_reports_their_errors() {
    let _turn = turn();
    let torchrun = torchrun().expect("OFA_TORCHRUN names torchrun");
    let tmp = tempfile::tempdir().unwrap();
    let d = data(tmp.path());
    let recipe = smoke_recipe(tmp.path(), 6, 2);
    let launch = |nproc: &str, out: &Path| {
        Command::new(&torchrun)
            .args(["--nproc-per-node", nproc, "--no-python"])
            .arg(env!("CARGO_BIN_EXE_ofa"))
            .args(["--threads", "1"])
            .args(train_args(&recipe, &d, out))
            .output()
            .unwrap()
    };
    // Under torchrun's agent store, the same job as --nproc-per-node's: the same weights.
    let under_torchrun = tmp.path().join("torchrun");
    let out = launch("2", &under_torchrun);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ours = tmp.path().join("ours");
    run_ok(&mut local_job(&recipe, &d, &ours));
    let last = |run: &Path| metrics(run, "ranks").last().unwrap()["weights_fingerprint"].clone();
    assert_eq!(last(&under_torchrun), last(&ours));
    assert_same_tensors(
        &under_torchrun.join("supernet.safetensors"),
        &ours.join("supernet.safetensors"),
        "torchrun against --nproc-per-node",
    );
    // A failing rank's error reaches torchrun's summary (its error file), as a Python rank's does.
    let out = launch("3", &tmp.path().join("three"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("Root Cause"), "{err}");
    assert!(
        err.contains("does not split evenly between 3 ranks"),
        "{err}"
    );
}

#[test]
fn two_local_ranks_finetune_one_subnet_and_resume_bit_for_bit() {
    let _turn = turn();
    let tmp = tempfile::tempdir().unwrap();
    let pkg = common::smoke_package(tmp.path());
    let job = |out: &Path, extra: &[&str]| {
        let mut c = ofa();
        c.args(["finetune", "--package", s(&pkg), "--arch", "largest"])
            .args([
                "--calibration-images",
                "32",
                "--steps",
                "8",
                "--out",
                s(out),
            ])
            .args(["--nproc-per-node", "2"])
            .args(extra);
        run_ok(&mut c)
    };
    let a = tmp.path().join("a");
    job(&a, &[]);
    let spec: Value =
        serde_json::from_str(&std::fs::read_to_string(a.join("finetune.json")).unwrap()).unwrap();
    assert_eq!(spec["world_size"], 2);
    // one metrics line per step of the job (rank 0 writes), not one per rank
    assert_eq!(metrics(&a, "step").len(), 8);
    assert_eq!(
        metrics(&a, "epoch").len(),
        3,
        "the start, epoch 1 (6 steps), the end"
    );
    // stopped, then resumed as a job again: the same files
    let b = tmp.path().join("b");
    job(&b, &["--stop-after", "3"]);
    assert!(!b.join("last.safetensors").exists());
    let mut c = ofa();
    c.args(["finetune", "--resume", s(&b), "--nproc-per-node", "2"]);
    run_ok(&mut c);
    for f in ["subnet.safetensors", "last.safetensors"] {
        assert_same_tensors(
            &a.join(f),
            &b.join(f),
            &format!("{f}: a 2-rank fine-tune stopped at step 3 and resumed"),
        );
    }
}
