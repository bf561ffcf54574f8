//! Invariants of the supernet, checkpoints round trips, BN recalibration and bad input.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use ofa_space::{sample, ArchConfig, Choices, SearchSpace};
use ofa_supernet::checkpoint::{read_safetensors, write_safetensors};
use ofa_supernet::{
    channels_last, recalibrate_bn, Layout, Mode, Provenance, Subnet, Supernet, SupernetError,
};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tch::{Device, Kind, Tensor};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/ofa-tiny")
}

fn space() -> SearchSpace {
    SearchSpace::preset("ofa-mbv3-tiny").unwrap()
}

fn fixture_tensors() -> HashMap<String, Tensor> {
    read_safetensors(&fixtures().join("supernet.safetensors"))
        .unwrap()
        .tensors
}

fn load() -> Supernet {
    Supernet::from_tensors(&space(), fixture_tensors(), Device::Cpu).unwrap()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

#[test]
fn largest_config_equals_its_extracted_subnet() {
    let net = load();
    let arch = ArchConfig::largest(net.space());
    let x = Tensor::randn([3, 3, 48, 48], (Kind::Float, Device::Cpu));
    let a = net.forward(&x, &arch, Mode::Eval).unwrap();
    let b = net.extract(&arch).unwrap().forward(&x, Mode::Eval).unwrap();
    assert_eq!(max_abs_diff(&a, &b), 0.0);
}

#[test]
fn random_configs_supernet_equals_extracted_subnet() {
    let net = load();
    let s = space();
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    for _ in 0..10 {
        let arch = sample(&s, &Choices::all(&s), &mut rng);
        let x = Tensor::randn(
            [2, 3, i64::from(arch.r), i64::from(arch.r)],
            (Kind::Float, Device::Cpu),
        );
        let a = net.forward(&x, &arch, Mode::Eval).unwrap();
        let b = net.extract(&arch).unwrap().forward(&x, Mode::Eval).unwrap();
        assert!(max_abs_diff(&a, &b) <= 1e-5, "{arch:?}");
    }
}

#[test]
fn batched_equals_per_sample() {
    let net = load();
    let s = space();
    let arch = sample(&s, &Choices::all(&s), &mut ChaCha8Rng::seed_from_u64(11));
    let x = Tensor::randn([4, 3, 40, 40], (Kind::Float, Device::Cpu));
    let batched = net.forward(&x, &arch, Mode::Eval).unwrap();
    for i in 0..4 {
        let one = net.forward(&x.narrow(0, i, 1), &arch, Mode::Eval).unwrap();
        assert!(max_abs_diff(&one, &batched.narrow(0, i, 1)) <= 1e-5);
    }
}

#[test]
fn train_mode_bn_updates_only_the_first_channels() {
    let net = load();
    let s = space();
    let mut arch = ArchConfig::smallest(&s);
    arch.r = 32;
    let name = "blocks.1.conv.depth_conv.bn.bn.running_mean";
    let counter = "blocks.1.conv.depth_conv.bn.bn.num_batches_tracked";
    let get = |n: &str| {
        net.tensors()
            .iter()
            .find(|(s, _)| s.name == n)
            .map(|(_, t)| t.detach().copy())
            .unwrap()
    };
    let before = get(name);
    let count_before = get(counter).int64_value(&[]);
    let x = Tensor::randn([4, 3, 32, 32], (Kind::Float, Device::Cpu));
    let _ = net.forward(&x, &arch, Mode::Train).unwrap();
    let after = get(name);
    let m = i64::from(s.blocks()[1].mid(3.into()));
    let max = before.size()[0];
    assert!(m < max);
    assert!(
        max_abs_diff(&before.narrow(0, 0, m), &after.narrow(0, 0, m)) > 0.0,
        "first C updated"
    );
    assert_eq!(
        max_abs_diff(&before.narrow(0, m, max - m), &after.narrow(0, m, max - m)),
        0.0
    );
    assert_eq!(get(counter).int64_value(&[]), count_before + 1);
    // Skipped blocks are untouched.
    let skipped = "blocks.4.conv.depth_conv.bn.bn.running_mean";
    let before4 = read_safetensors(&fixtures().join("supernet.safetensors"))
        .unwrap()
        .tensors[skipped]
        .copy();
    assert_eq!(max_abs_diff(&before4, &get(skipped)), 0.0);
}

#[test]
fn train_mode_gradients_reach_the_kernel_transforms() {
    let net = load();
    let s = space();
    let mut arch = ArchConfig::largest(&s);
    arch.ks = vec![3; 20];
    let x = Tensor::randn([2, 3, 32, 32], (Kind::Float, Device::Cpu));
    let y = net.forward(&x, &arch, Mode::Train).unwrap();
    y.sum(Kind::Float).backward();
    for (spec, t) in net.tensors() {
        if spec.name == "blocks.1.conv.depth_conv.conv.5to3_matrix"
            || spec.name == "blocks.1.conv.depth_conv.conv.7to5_matrix"
        {
            assert!(t.grad().defined(), "{} has no gradient", spec.name);
            assert!(t.grad().abs().sum(Kind::Float).double_value(&[]) > 0.0);
        }
    }
}

#[test]
fn channels_last_copy_computes_the_same_and_shares_bn() {
    let net = load();
    let s = space();
    let arch = sample(&s, &Choices::all(&s), &mut ChaCha8Rng::seed_from_u64(8));
    let sub = net.extract(&arch).unwrap();
    assert_eq!(sub.layout(), Layout::Contiguous);
    let cl = sub.to_layout(Layout::ChannelsLast);
    assert_eq!(cl.layout(), Layout::ChannelsLast);
    assert_eq!(
        cl.to_layout(Layout::Contiguous).layout(),
        Layout::Contiguous
    );
    let r = i64::from(arch.r);
    let x = Tensor::randn([4, 3, r, r], (Kind::Float, Device::Cpu));
    let a = sub.forward(&x, Mode::Eval).unwrap();
    let b = cl.forward(&cl.match_layout(&x), Mode::Eval).unwrap();
    assert!(max_abs_diff(&a, &b) <= 1e-5);
    // Recalibrating the channels-last copy recalibrates the original.
    let before: HashMap<String, Tensor> = sub
        .named_tensors()
        .into_iter()
        .map(|(n, t)| (n, t.copy()))
        .collect();
    recalibrate_bn(&cl, std::iter::once(channels_last(&x))).unwrap();
    let after: HashMap<String, Tensor> = sub.named_tensors().into_iter().collect();
    let key = "first_conv.bn.running_mean";
    assert!(max_abs_diff(&before[key], &after[key]) > 0.0);
}

#[test]
fn bn_recalibration_reference_semantics() {
    let net = load();
    let s = space();
    let arch = sample(&s, &Choices::all(&s), &mut ChaCha8Rng::seed_from_u64(5));
    let sub = net.extract(&arch).unwrap();
    let r = i64::from(arch.r);
    let batches: Vec<Tensor> = (0..3)
        .map(|i| Tensor::randn([5 + i, 3, r, r], (Kind::Float, Device::Cpu)))
        .collect();
    let n = recalibrate_bn(&sub, batches.iter().map(Tensor::shallow_clone)).unwrap();
    assert_eq!(n, 18);
    // The stem BN sees the stem conv output directly: check the weighted average by hand.
    let stem_w = &sub.named_tensors()[0].1;
    let (mut sm, mut sv) = (
        Tensor::zeros([8], (Kind::Float, Device::Cpu)),
        Tensor::zeros([8], (Kind::Float, Device::Cpu)),
    );
    for b in &batches {
        let h = b.conv2d(stem_w, None::<Tensor>, 2, 1, 1, 1);
        let mean = h.mean_dim([0i64, 2, 3].as_slice(), false, Kind::Float);
        let var = h.var_correction([0i64, 2, 3].as_slice(), 0, false);
        sm += mean * b.size()[0] as f64;
        sv += var * b.size()[0] as f64;
    }
    let named: HashMap<String, Tensor> = sub.named_tensors().into_iter().collect();
    assert!(max_abs_diff(&named["first_conv.bn.running_mean"], &(sm / 18.0)) < 1e-5);
    assert!(max_abs_diff(&named["first_conv.bn.running_var"], &(sv / 18.0)) < 1e-4);
    // On a supernet view it writes the first C entries of the supernet's buffers only.
    let view = net.view(&arch).unwrap();
    recalibrate_bn(&view, batches.iter().map(Tensor::shallow_clone)).unwrap();
    let after = net.extract(&arch).unwrap().named_tensors();
    for ((name, a), (_, b)) in after.iter().zip(sub.named_tensors().iter()) {
        assert!(
            max_abs_diff(a, b) < 1e-5,
            "{name}: view and subnet recalibration differ"
        );
    }
    let empty: Vec<Tensor> = Vec::new();
    assert!(matches!(
        recalibrate_bn(&sub, empty),
        Err(SupernetError::BadInput(_))
    ));
}

#[test]
fn supernet_checkpoint_round_trip_and_init() {
    let dir = tempfile::tempdir().unwrap();
    let s = space();
    let net = Supernet::new(&s, 1, Device::Cpu).unwrap();
    // he_fout init: conv std √(2 / (k·k·out)); BN γ = 1.
    let w = &net
        .tensors()
        .iter()
        .find(|(sp, _)| sp.name == "final_expand_layer.conv.weight")
        .unwrap()
        .1;
    let std = w.std(true).double_value(&[]);
    assert!(
        (std - (2.0f64 / 240.0).sqrt()).abs() < 0.01,
        "init std {std}"
    );
    let path = dir.path().join("s.safetensors");
    let prov = Provenance {
        source: Some("test".into()),
        seed: Some(1),
        ..Default::default()
    };
    net.save(&path, &prov, None).unwrap();
    let back = Supernet::load(&path, Device::Cpu).unwrap();
    assert_eq!(back.provenance, prov);
    assert_eq!(back.net.space(), &s);
    for ((a, x), (b, y)) in net.tensors().iter().zip(back.net.tensors()) {
        assert_eq!(a, b);
        assert!(x.detach().equal(y));
    }
    // Subnet round trip keeps the function.
    let arch = ArchConfig::smallest(&s);
    let sub = net.extract(&arch).unwrap();
    let sp = dir.path().join("sub.safetensors");
    let mut meta = BTreeMap::new();
    meta.insert("arch".to_string(), arch.to_json());
    sub.save(&sp, &meta).unwrap();
    let loaded = Subnet::load(&sp, Device::Cpu).unwrap();
    assert_eq!(loaded.arch.as_ref(), Some(&arch));
    let x = Tensor::randn([2, 3, 32, 32], (Kind::Float, Device::Cpu));
    let a = sub.forward(&x, Mode::Eval).unwrap();
    let b = loaded.net.forward(&x, Mode::Eval).unwrap();
    assert_eq!(max_abs_diff(&a, &b), 0.0);
}

#[test]
fn reference_subnet_files_load_from_their_net_config() {
    let f = Subnet::load(&fixtures().join("subnet_3.safetensors"), Device::Cpu).unwrap();
    let io = read_safetensors(&fixtures().join("io_3.safetensors")).unwrap();
    let y = f.net.forward(&io.tensors["input"], Mode::Eval).unwrap();
    assert!(max_abs_diff(&y, &io.tensors["logits_subnet"]) < 1e-4);
}

// ---------------------------------------------------------------- bad input

fn write_variant(
    dir: &Path,
    name: &str,
    edit: impl FnOnce(&mut HashMap<String, Tensor>),
) -> PathBuf {
    let mut t = fixture_tensors();
    edit(&mut t);
    let v: Vec<(String, Tensor)> = t.into_iter().collect();
    let mut meta = BTreeMap::new();
    meta.insert("format".to_string(), "ofa-supernet/1".to_string());
    meta.insert("space".to_string(), space().to_json());
    let p = dir.join(name);
    write_safetensors(&p, &v, &meta).unwrap();
    p
}

#[test]
fn corrupt_provenance_or_metrics_metadata_is_an_error_not_a_default() {
    let dir = tempfile::tempdir().unwrap();
    let t: Vec<(String, Tensor)> = fixture_tensors().into_iter().collect();
    for (key, value, expect) in [
        ("provenance", "{\"dataset\": 3", "metadata `provenance`"),
        (
            "metrics",
            "{\"tables\": [{\"phase\": 1}]}",
            "metadata `metrics`",
        ),
    ] {
        let mut meta = BTreeMap::new();
        meta.insert("format".to_string(), "ofa-supernet/1".to_string());
        meta.insert("space".to_string(), space().to_json());
        meta.insert(key.to_string(), value.to_string());
        let p = dir.path().join(format!("{key}.safetensors"));
        write_safetensors(&p, &t, &meta).unwrap();
        let e = Supernet::load(&p, Device::Cpu).unwrap_err().to_string();
        assert!(
            e.contains(expect) && e.contains(&format!("{key}.safetensors")),
            "{e}"
        );
    }
}

#[test]
fn bad_checkpoints_give_typed_errors_naming_the_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ok = write_variant(d, "ok.safetensors", |_| {});
    Supernet::load(&ok, Device::Cpu).unwrap();

    let p = write_variant(d, "missing.safetensors", |t| {
        t.remove("blocks.3.conv.depth_conv.conv.7to5_matrix");
    });
    let e = Supernet::load(&p, Device::Cpu).unwrap_err().to_string();
    assert!(
        e.contains("missing tensor `blocks.3.conv.depth_conv.conv.7to5_matrix`"),
        "{e}"
    );

    let p = write_variant(d, "unknown.safetensors", |t| {
        t.insert(
            "blocks.99.extra".into(),
            Tensor::zeros([2], (Kind::Float, Device::Cpu)),
        );
    });
    let e = Supernet::load(&p, Device::Cpu).unwrap_err().to_string();
    assert!(e.contains("unknown tensor `blocks.99.extra`"), "{e}");

    let p = write_variant(d, "shape.safetensors", |t| {
        t.insert(
            "classifier.linear.bias".into(),
            Tensor::zeros([11], (Kind::Float, Device::Cpu)),
        );
    });
    let e = Supernet::load(&p, Device::Cpu).unwrap_err().to_string();
    assert!(
        e.contains("`classifier.linear.bias` has shape [11], expected [10]"),
        "{e}"
    );

    let p = write_variant(d, "dtype.safetensors", |t| {
        t.insert(
            "first_conv.bn.running_mean".into(),
            Tensor::zeros([8], (Kind::Int64, Device::Cpu)),
        );
    });
    let e = Supernet::load(&p, Device::Cpu).unwrap_err().to_string();
    assert!(
        e.contains("`first_conv.bn.running_mean` has dtype Int64"),
        "{e}"
    );

    // Truncated and corrupted files.
    let bytes = std::fs::read(&ok).unwrap();
    let trunc = d.join("trunc.safetensors");
    std::fs::write(&trunc, &bytes[..bytes.len() / 2]).unwrap();
    let e = Supernet::load(&trunc, Device::Cpu).unwrap_err().to_string();
    assert!(
        e.contains("trunc.safetensors") && e.contains("not a valid safetensors"),
        "{e}"
    );
    let mut bad = bytes.clone();
    for b in bad.iter_mut().skip(8).take(40) {
        *b = b'#';
    }
    let corrupt = d.join("corrupt.safetensors");
    std::fs::write(&corrupt, &bad).unwrap();
    let e = Supernet::load(&corrupt, Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(e.contains("not a valid safetensors"), "{e}");
    std::fs::write(&corrupt, b"abc").unwrap();
    assert!(Supernet::load(&corrupt, Device::Cpu).is_err());
    let e = Supernet::load(&d.join("nope.safetensors"), Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(e.contains("nope.safetensors"), "{e}");
    // A reference state_dict without metadata points the user at `ofa import`.
    let e = Supernet::load(&fixtures().join("supernet.safetensors"), Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(e.contains("ofa import"), "{e}");
    // Garbage .pth.
    let pth = d.join("x.pth");
    std::fs::write(&pth, b"PK\x03\x04 not really a zip").unwrap();
    let e =
        ofa_supernet::import::import_supernet(&pth, &Default::default(), Device::Cpu).unwrap_err();
    assert!(e.to_string().contains("x.pth"), "{e}");
}

#[test]
fn invalid_archs_and_inputs_are_errors_not_panics() {
    let net = load();
    let s = space();
    let x = Tensor::randn([1, 3, 32, 32], (Kind::Float, Device::Cpu));
    let mut a = ArchConfig::smallest(&s);
    a.ks[0] = 4;
    let e = net.forward(&x, &a, Mode::Eval).unwrap_err().to_string();
    assert!(e.contains("`ks[0]` = 4"), "{e}");
    let mut a = ArchConfig::smallest(&s);
    a.d[1] = 5;
    assert!(net
        .extract(&a)
        .unwrap_err()
        .to_string()
        .contains("`d[1]` = 5"));
    let mut a = ArchConfig::smallest(&s);
    a.ks.truncate(19);
    assert!(net
        .forward(&x, &a, Mode::Eval)
        .unwrap_err()
        .to_string()
        .contains("`ks` has 19 entries"));
    let mut a = ArchConfig::smallest(&s);
    a.r = 224;
    assert!(net
        .extract(&a)
        .unwrap_err()
        .to_string()
        .contains("resolution 224"));
    let a = ArchConfig::smallest(&s);
    let bad = Tensor::randn([1, 1, 32, 32], (Kind::Float, Device::Cpu));
    let e = net.forward(&bad, &a, Mode::Eval).unwrap_err().to_string();
    assert!(e.contains("[N, 3, H, W]"), "{e}");
    let bad = Tensor::zeros([1, 3, 32, 32], (Kind::Int64, Device::Cpu));
    assert!(net.forward(&bad, &a, Mode::Eval).is_err());
}
