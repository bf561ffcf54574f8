//! Fine-tuning runs on a smoke package: the subnet file they write, exact resume, the
//! from-scratch control's initialisation, and bad input.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, OnceLock};

use ofa_package::measure::Recalibration;
use ofa_package::Package;
use ofa_schema::finetune::{EpochRecord, FinetuneRecord, Init, Teacher};
use ofa_schema::metrics::{read_metrics, MetricsLine};
use ofa_space::ArchConfig;
use ofa_supernet::checkpoint::read_safetensors;
use ofa_supernet::{Role, Subnet};
use ofa_trainer::data::write_synthetic_idx;
use ofa_trainer::finetune::{finetune, resume, Base, Outcome, Settings};
use ofa_trainer::recipe::Recipe;
use ofa_trainer::run::{train, Observer, Silent, TrainOptions};
use tch::{Device, Kind};

/// Runs take turns: they share the package, and libtorch's thread count that it is trained at.
static ONE_RUN_AT_A_TIME: Mutex<()> = Mutex::new(());

fn opts(data: &Path, stop_after: Option<u64>) -> TrainOptions {
    TrainOptions {
        data: Some(data.to_path_buf()),
        device: Device::Cpu,
        observer: Arc::new(Silent),
        stop: Arc::new(AtomicBool::new(false)),
        stop_after,
        group: None,
    }
}

/// A smoke package trained once for the whole file: (its folder, its data).
fn package() -> &'static (PathBuf, PathBuf) {
    static PKG: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    PKG.get_or_init(|| {
        let _turn = ONE_RUN_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        tch::set_num_threads(1);
        let tmp = tempfile::tempdir().unwrap().keep();
        let data = tmp.join("data");
        std::fs::create_dir(&data).unwrap();
        write_synthetic_idx(&data, 160, 40, 4).unwrap();
        let pkg = tmp.join("pkg");
        train(Recipe::load("smoke").unwrap(), &pkg, opts(&data, None)).unwrap();
        (pkg, data)
    })
}

/// A middle-sized subnet of the package, cut and recalibrated as `ofa extract` does.
fn base(pkg: &Path) -> Base {
    let p = Package::open(pkg, Device::Cpu).unwrap();
    let mut arch = ArchConfig::largest(p.space());
    arch.ks.iter_mut().for_each(|k| *k = 5);
    arch.e.iter_mut().for_each(|e| *e = 4.into());
    arch.d.iter_mut().for_each(|d| *d = 3);
    let r = Recalibration {
        images: 32,
        batch: 16,
        seed: 0,
    };
    Base {
        subnet: p.recalibrated(&arch, &r).unwrap(),
        arch,
    }
}

/// The evaluations an observer is shown: (step, best so far).
#[derive(Default)]
struct Epochs(Mutex<Vec<(u64, bool)>>);

impl Observer for Epochs {
    fn epoch(&self, record: &EpochRecord, best: bool) {
        self.0.lock().unwrap().push((record.step, best));
    }
}

fn steps(n: u64) -> Settings {
    Settings {
        epochs: None,
        steps: Some(n),
        ..Settings::default()
    }
}

fn record(path: &Path) -> FinetuneRecord {
    let f = read_safetensors(path).unwrap();
    serde_json::from_str(&f.metadata["finetune"]).unwrap()
}

#[test]
fn a_two_step_finetune_changes_the_weights_and_keeps_the_subnet_format() {
    let (pkg, data) = package();
    let _turn = ONE_RUN_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("ft");
    let b = base(pkg);
    let before = b.subnet.named_tensors();
    let Outcome::Finished(rec) = finetune(pkg, b, &steps(2), &out, opts(data, None)).unwrap()
    else {
        panic!("not finished")
    };
    for f in [
        "finetune.json",
        "checkpoint.safetensors",
        "metrics.jsonl",
        "net.config.json",
        "subnet.safetensors",
        "last.safetensors",
    ] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    // the last weights moved; every tensor keeps its reference name and shape
    let last = Subnet::load(&out.join("last.safetensors"), Device::Cpu).unwrap();
    let after = last.net.named_tensors();
    assert_eq!(before.len(), after.len());
    let mut moved = 0;
    for ((n0, t0), (n1, t1)) in before.iter().zip(&after) {
        assert_eq!(n0, n1);
        assert_eq!(t0.size(), t1.size(), "{n0}");
        moved += usize::from(!t0.equal(t1));
    }
    assert!(moved > before.len() / 2, "only {moved} tensors changed");
    let meta = &last.metadata;
    assert!(meta.contains_key("net_config") && meta.contains_key("arch"));
    let net_config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("net.config.json")).unwrap())
            .unwrap();
    assert_eq!(
        net_config,
        serde_json::from_str::<serde_json::Value>(&meta["net_config"]).unwrap()
    );
    // the record: the start (epoch 0) and the end, the best among them in subnet.safetensors
    let r = record(&out.join("last.safetensors"));
    assert_eq!(r.history.len(), 2);
    assert_eq!((r.history[0].step, r.history[1].step), (0, 2));
    assert_eq!(r.chosen.step, 2);
    assert_eq!((r.init, r.teacher), (Init::Inherited, Teacher::Largest));
    assert_eq!(r.schedule.steps, 2);
    assert!(r.test_top1.is_some());
    assert_eq!(record(&out.join("subnet.safetensors")).chosen, rec.chosen);
    assert!(rec
        .history
        .iter()
        .all(|e| e.heldout_top1 <= rec.chosen.heldout_top1));
    // the metrics: step lines and one epoch line per evaluation
    let log = read_metrics(&out.join("metrics.jsonl")).unwrap();
    let epochs = log
        .lines
        .iter()
        .filter(|l| matches!(l, MetricsLine::Epoch(_)))
        .count();
    assert_eq!(epochs, 2);
    assert!(log.lines.iter().any(|l| matches!(l, MetricsLine::Step(_))));
}

#[test]
fn an_interrupted_and_resumed_finetune_equals_an_uninterrupted_one_bit_for_bit() {
    let (pkg, data) = package();
    let _turn = ONE_RUN_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    // 8 steps: past the first epoch's end (6 batches of 16), stopped at step 3 and again at 7
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let whole = finetune(pkg, base(pkg), &steps(8), &a, opts(data, None)).unwrap();
    assert!(matches!(whole, Outcome::Finished(_)));
    assert_eq!(
        finetune(pkg, base(pkg), &steps(8), &b, opts(data, Some(3))).unwrap(),
        Outcome::Interrupted { step: 3 }
    );
    // the resumed run first shows where it stands (its last evaluation), then goes on
    let seen = Arc::new(Epochs::default());
    let observed = TrainOptions {
        observer: seen.clone(),
        ..opts(data, Some(7))
    };
    assert_eq!(
        resume(&b, observed).unwrap(),
        Outcome::Interrupted { step: 7 }
    );
    let seen = seen.0.lock().unwrap().clone();
    assert_eq!(
        seen.iter().map(|e| e.0).collect::<Vec<_>>(),
        [0, 6],
        "{seen:?}"
    );
    assert!(
        seen[0].1,
        "step 0 is the only evaluation, so the best: {seen:?}"
    );
    let resumed = resume(&b, opts(data, None)).unwrap();
    for f in [
        "last.safetensors",
        "subnet.safetensors",
        "checkpoint.safetensors",
    ] {
        let (ta, tb) = (
            read_safetensors(&a.join(f)).unwrap().tensors,
            read_safetensors(&b.join(f)).unwrap().tensors,
        );
        assert_eq!(ta.len(), tb.len(), "{f}");
        for (name, t) in &ta {
            assert!(t.equal(&tb[name]), "{f}: {name} differs");
        }
    }
    let (Outcome::Finished(ra), Outcome::Finished(rb)) = (whole, resumed) else {
        panic!("not finished")
    };
    assert_eq!(ra.history, rb.history);
    assert_eq!(ra.test_top1, rb.test_top1);
}

#[test]
fn from_scratch_weights_differ_from_the_inherited_and_follow_the_reference_init() {
    let (pkg, data) = package();
    let _turn = ONE_RUN_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("scratch");
    let b = base(pkg);
    let inherited = b.subnet.named_tensors();
    let specs = b.subnet.config().tensor_specs();
    let settings = Settings {
        init: Init::Scratch,
        ..steps(1)
    };
    // stopped before its first step: the checkpoint holds the initial weights
    assert_eq!(
        finetune(pkg, b, &settings, &out, opts(data, Some(0))).unwrap(),
        Outcome::Interrupted { step: 0 }
    );
    let ck = read_safetensors(&out.join("checkpoint.safetensors"))
        .unwrap()
        .tensors;
    let (mut convs, mut differ) = (0, 0);
    for (spec, (name, t0)) in specs.iter().zip(&inherited) {
        let t = &ck[&format!("net.{name}")];
        differ += usize::from(!t.equal(t0));
        match spec.role {
            // he_fout: N(0, sqrt(2 / (k·k·out)))
            Role::ConvWeight if t.numel() >= 512 => {
                let s = t.size();
                let want = (2.0 / (s[0] * s[2] * s[3]) as f64).sqrt();
                let std = t.std(true).double_value(&[]);
                let mean = t.mean(Kind::Float).double_value(&[]);
                assert!(
                    (std / want - 1.0).abs() < 0.2,
                    "{name}: std {std}, he_fout {want}"
                );
                assert!(mean.abs() < 0.2 * want, "{name}: mean {mean}");
                convs += 1;
            }
            Role::BnWeight => assert!(t.equal(&t.ones_like()), "{name}"),
            Role::BnBias | Role::ConvBias | Role::LinearBias => {
                assert!(t.equal(&t.zeros_like()), "{name}")
            }
            _ => {}
        }
    }
    assert!(convs >= 5, "{convs} convolutions checked");
    assert!(differ > inherited.len() / 2, "only {differ} tensors differ");
}

#[test]
fn bad_input_is_named_and_overwrites_nothing() {
    let (pkg, data) = package();
    let _turn = ONE_RUN_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("ft");
    let err = |s: &Settings, b: Base, out: &Path| {
        finetune(pkg, b, s, out, opts(data, None))
            .unwrap_err()
            .to_string()
    };
    for e in [0.0, -1.0, f64::NAN] {
        let s = Settings {
            epochs: Some(e),
            ..Settings::default()
        };
        let m = err(&s, base(pkg), &out);
        assert!(m.contains("epochs must be above 0"), "{m}");
    }
    assert!(err(&steps(0), base(pkg), &out).contains("steps must be at least 1"));
    // an arch outside the package's space
    let mut b = base(pkg);
    b.arch.ks[0] = 9;
    let m = err(&steps(1), b, &out);
    assert!(m.contains("kernel") || m.contains("ks"), "{m}");
    // weights that are not the arch's
    let mut b = base(pkg);
    b.arch.e[0] = 6.into();
    let m = err(&steps(1), b, &out);
    assert!(m.contains("not those of its arch"), "{m}");
    // another dataset: 2 classes for a 4-class package
    let other = tmp.path().join("other");
    std::fs::create_dir(&other).unwrap();
    write_synthetic_idx(&other, 160, 40, 2).unwrap();
    let m = finetune(pkg, base(pkg), &steps(1), &out, opts(&other, None))
        .unwrap_err()
        .to_string();
    assert!(m.contains("classes"), "{m}");
    // a folder holding a run is not overwritten
    let done = tmp.path().join("done");
    finetune(pkg, base(pkg), &steps(1), &done, opts(data, None)).unwrap();
    let before = std::fs::read(done.join("subnet.safetensors")).unwrap();
    let m = err(&steps(1), base(pkg), &done);
    assert!(m.contains("already holds a fine-tuning run"), "{m}");
    assert_eq!(
        std::fs::read(done.join("subnet.safetensors")).unwrap(),
        before
    );
    // resuming what is not a fine-tuning run
    let m = resume(pkg, opts(data, None)).unwrap_err().to_string();
    assert!(m.contains("is a training run"), "{m}");
    let m = resume(tmp.path(), opts(data, None))
        .unwrap_err()
        .to_string();
    assert!(m.contains("not a fine-tuning run"), "{m}");
}
