//! `ofa train` as a user runs it: killed with SIGKILL mid-run and resumed, the final weights
//! equal those of an uninterrupted run with the same seed and thread count.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use ofa_supernet::checkpoint::read_safetensors;
use ofa_trainer::data::write_synthetic_idx;

mod common;
use common::{assert_same_tensors, ofa, run_ok, smoke_recipe, wait_until_exists};

fn global_step(run: &Path) -> Option<u64> {
    let f = read_safetensors(&run.join("checkpoint.safetensors")).ok()?;
    let state: serde_json::Value = serde_json::from_str(f.metadata.get("state")?).ok()?;
    state["global_step"].as_u64()
}

#[test]
fn kill_9_then_resume_equals_an_uninterrupted_run() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir(&data).unwrap();
    write_synthetic_idx(&data, 160, 40, 4).unwrap();
    // A first phase far longer than the test needs, so the run is still going when it is killed
    // however fast the machine; both arms stop at the same step with `--stop-after`.
    let recipe = smoke_recipe(tmp.path(), 400, 3);
    let (r, d) = (recipe.to_str().unwrap(), data.to_str().unwrap());
    let train = |out: &Path| {
        let mut c = ofa();
        c.args([
            "train",
            "--recipe",
            r,
            "--data",
            d,
            "--out",
            out.to_str().unwrap(),
        ]);
        c
    };

    let b = tmp.path().join("b");
    let mut child = train(&b)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Killed once a checkpoint past step 6 is on disk (a write of the next one may be under way).
    while global_step(&b).is_none_or(|s| s < 6) {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before it could be killed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let killed_at = global_step(&b).unwrap();
    assert!(
        killed_at < 400,
        "killed after the first phase ({killed_at})"
    );
    assert!(!b.join("supernet.safetensors").exists());
    let stop = (killed_at + 4).to_string();
    run_ok(ofa().args([
        "train",
        "--resume",
        b.to_str().unwrap(),
        "--stop-after",
        &stop,
    ]));

    let a = tmp.path().join("a");
    run_ok(train(&a).args(["--stop-after", &stop]));
    assert_same_tensors(
        &a.join("checkpoint.safetensors"),
        &b.join("checkpoint.safetensors"),
        &format!("after kill -9 at step {killed_at} and resume to step {stop}"),
    );
}

/// Start a long smoke run, send `signals` (kill's names, back to back) once training has begun,
/// and check that it saved a checkpoint mid-run and exited cleanly.
fn signals_save_a_checkpoint(signals: &[&str]) {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir(&data).unwrap();
    write_synthetic_idx(&data, 160, 40, 4).unwrap();
    let recipe = smoke_recipe(tmp.path(), 400, 1000);
    let run = tmp.path().join("run");
    let mut child = ofa()
        .args([
            "train",
            "--recipe",
            recipe.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
        ])
        .args(["--out", run.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until training has started (metrics are logged every step in this recipe).
    wait_until_exists(&run.join("metrics.jsonl"), std::slice::from_mut(&mut child));
    for sig in signals {
        let status = Command::new("kill")
            .args([&format!("-{sig}"), &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{signals:?}: {err}");
    assert!(err.contains("continue with: ofa train --resume"), "{err}");
    let step = global_step(&run).expect("a checkpoint was saved on the signal");
    assert!((1..400).contains(&step), "{step}");
}

#[test]
fn ctrl_c_saves_a_checkpoint_and_exits_cleanly() {
    signals_save_a_checkpoint(&["INT"]);
}

/// Batch schedulers and `docker stop` send SIGTERM; `timeout -s INT` signals the process and its
/// process group, so one request arrives twice at once: neither may lose the checkpoint.
#[test]
fn sigterm_and_a_doubled_interrupt_save_a_checkpoint_too() {
    signals_save_a_checkpoint(&["TERM"]);
    signals_save_a_checkpoint(&["INT", "INT"]);
}

#[test]
fn train_cli_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let out = ofa()
        .args([
            "train",
            "--recipe",
            "nope",
            "--out",
            tmp.path().join("r").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nope"));
    let out = ofa()
        .args(["train", "--resume", tmp.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a run directory"));
    let out = ofa()
        .args(["train", "--recipe", "smoke", "--print-recipe"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("name = \"smoke\""));

    // A folder another launch holds (its lock taken here, as a running `ofa train` holds it):
    // neither a new run nor a resume starts in it.
    let held = tmp.path().join("held");
    std::fs::create_dir(&held).unwrap();
    let lock = std::fs::File::create(held.join(".lock")).unwrap();
    #[allow(unsafe_code)]
    // SAFETY: `flock` on a descriptor `lock` owns, open for the call.
    let rc = unsafe {
        libc::flock(
            std::os::fd::AsRawFd::as_raw_fd(&lock),
            libc::LOCK_EX | libc::LOCK_NB,
        )
    };
    assert_eq!(rc, 0);
    let h = held.to_str().unwrap();
    for args in [
        &["train", "--recipe", "smoke", "--out", h][..],
        &["train", "--resume", h][..],
    ] {
        std::fs::write(held.join("recipe.toml"), "").unwrap();
        if args[1] == "--recipe" {
            std::fs::remove_file(held.join("recipe.toml")).unwrap();
        }
        let out = ofa().args(args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.contains("another `ofa train` or `ofa finetune` is running"),
            "{args:?}: {err}"
        );
    }
    drop(lock);
}

#[test]
fn a_checkpoint_write_that_runs_out_of_space_is_named_and_the_run_resumes_from_the_last_one() {
    use std::os::unix::process::CommandExt;

    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir(&data).unwrap();
    write_synthetic_idx(&data, 160, 40, 4).unwrap();
    let recipe = smoke_recipe(tmp.path(), 400, 2);
    let (r, d) = (recipe.to_str().unwrap(), data.to_str().unwrap());
    let b = tmp.path().join("b");
    let bs = b.to_str().unwrap();
    run_ok(ofa().args([
        "train",
        "--recipe",
        r,
        "--data",
        d,
        "--out",
        bs,
        "--stop-after",
        "4",
    ]));
    assert_eq!(global_step(&b), Some(4));
    let before = std::fs::read(b.join("checkpoint.safetensors")).unwrap();
    // the next session can write small files (metrics lines) but no checkpoint: a disk that fills
    let mut full = ofa();
    full.args(["train", "--resume", bs, "--stop-after", "8"]);
    #[allow(unsafe_code)]
    // SAFETY: `setrlimit` and `signal` are async-signal-safe and touch only the child, between
    // fork and exec; ignoring SIGXFSZ makes a write past the limit fail with EFBIG (as a full disk
    // fails with ENOSPC) instead of killing the process. Dispositions set to "ignore" survive exec.
    unsafe {
        full.pre_exec(|| {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let lim = libc::rlimit {
                rlim_cur: 256 << 10,
                rlim_max: 256 << 10,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &lim) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    let out = full.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        stderr.contains("checkpoint.safetensors") && stderr.contains("too large"),
        "{stderr}"
    );
    // the previous checkpoint is whole, and no temporary file is left beside it
    assert_eq!(
        std::fs::read(b.join("checkpoint.safetensors")).unwrap(),
        before
    );
    let stray: Vec<_> = std::fs::read_dir(&b)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".tmp"))
        .collect();
    assert!(stray.is_empty(), "{stray:?}");
    // with space again, the run resumes from it and ends where an uninterrupted run does
    run_ok(ofa().args(["train", "--resume", bs, "--stop-after", "8"]));
    let a = tmp.path().join("a");
    run_ok(ofa().args([
        "train",
        "--recipe",
        r,
        "--data",
        d,
        "--out",
        a.to_str().unwrap(),
        "--stop-after",
        "8",
    ]));
    assert_same_tensors(
        &a.join("checkpoint.safetensors"),
        &b.join("checkpoint.safetensors"),
        "after a failed checkpoint write at step 6 and a resume",
    );
}
