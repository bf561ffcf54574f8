//! The regression corpus (`corpus/<target>/`: the seeds, and every input a fuzzing run found that
//! crashed, hung or grew memory, kept after the fix) replayed through the same entry points the
//! libFuzzer targets call. A reader that panics on any of them fails this test.

#![allow(clippy::unwrap_used)]
// A test reports what it measured.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::Path;

use ofa_hostile::{target, TARGETS};

fn corpus() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/corpus"))
}

#[test]
fn every_target_has_a_corpus_and_every_corpus_a_target() {
    for t in TARGETS {
        let d = corpus().join(t.name);
        let n = std::fs::read_dir(&d)
            .unwrap_or_else(|e| panic!("{}: {e}", d.display()))
            .count();
        assert!(n > 0, "{} ({}) has an empty corpus", t.name, t.what);
        let fuzz = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../fuzz/fuzz_targets"))
            .join(format!("{}.rs", t.name));
        assert!(fuzz.is_file(), "{} has no libFuzzer target", fuzz.display());
    }
    for e in std::fs::read_dir(corpus()).unwrap() {
        let name = e.unwrap().file_name().into_string().unwrap();
        assert!(target(&name).is_some(), "corpus/{name} names no target");
    }
}

#[test]
fn the_regression_corpus_replays_without_a_panic() {
    let mut replayed = 0;
    for t in TARGETS {
        let mut files: Vec<_> = std::fs::read_dir(corpus().join(t.name))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        for f in files {
            let bytes = std::fs::read(&f).unwrap();
            let r = std::panic::catch_unwind(|| (t.run)(&bytes));
            assert!(r.is_ok(), "{} panicked on {}", t.name, f.display());
            replayed += 1;
        }
    }
    eprintln!(
        "{replayed} corpus files replayed through {} targets",
        TARGETS.len()
    );
}

/// The seeds are valid files: each reader accepts its seed, so the fuzzer starts from the
/// success path (a seed that only reached an early refusal would waste the run).
#[test]
fn the_seeds_are_accepted_by_their_readers() {
    use ofa_space::{ArchConfig, SearchSpace};
    use std::path::PathBuf;
    let seed = |t: &str, n: &str| -> PathBuf { corpus().join(t).join(n) };
    let tmp = tempfile::tempdir().unwrap();
    let copy = |from: PathBuf, name: &str| -> PathBuf {
        let to = tmp.path().join(name);
        std::fs::copy(&from, &to).unwrap();
        to
    };
    let dev = tch::Device::Cpu;
    ofa_supernet::Supernet::load(
        &copy(seed("supernet_safetensors", "seed-tiny"), "s.safetensors"),
        dev,
    )
    .unwrap();
    ofa_supernet::checkpoint::open_model(
        &copy(seed("subnet_safetensors", "seed-smallest"), "n.safetensors"),
        dev,
    )
    .unwrap();
    let map =
        ofa_supernet::checkpoint::read_pth(&copy(seed("pth", "seed-one-tensor"), "w.pth")).unwrap();
    assert_eq!(
        Vec::<f32>::try_from(&map["w"]).unwrap(),
        vec![1.0, 2.0],
        "the hand-made torch.save archive reads back"
    );
    let tiny = SearchSpace::preset("ofa-mbv3-tiny").unwrap();
    let a =
        ArchConfig::from_json(&std::fs::read_to_string(seed("arch_json", "seed-largest")).unwrap())
            .unwrap();
    a.validate(&tiny).unwrap();
    SearchSpace::from_json(
        &std::fs::read_to_string(seed("space_json", "seed-ofa-mbv3-tiny")).unwrap(),
    )
    .unwrap();
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(seed("net_config_json", "seed-smallest")).unwrap())
            .unwrap();
    ofa_supernet::SubnetConfig::from_net_config(&v).unwrap();
    let t = ofa_predictors::LatencyTable::load(&seed("latency_json", "seed-tiny-largest")).unwrap();
    assert!(t.predict(&tiny, &ArchConfig::largest(&tiny)).unwrap() > 0.0);
    let ydir = tmp.path().join("yaml");
    std::fs::create_dir(&ydir).unwrap();
    std::fs::copy(
        seed("latency_yaml", "seed-tiny-largest"),
        ydir.join("48_lookup_table.yaml"),
    )
    .unwrap();
    let y = ofa_predictors::LatencyTable::import_reference_dir(&ydir, "seed").unwrap();
    assert!(y.predict(&tiny, &ArchConfig::largest(&tiny)).unwrap() > 0.0);
    for r in ["seed-smoke", "seed-fmnist-short"] {
        ofa_trainer::recipe::Recipe::from_toml(
            &std::fs::read_to_string(seed("recipe_toml", r)).unwrap(),
            r,
        )
        .unwrap();
    }
    for f in ["seed-images", "seed-labels", "seed-images-gz"] {
        ofa_trainer::data::read_idx(&seed("idx", f)).unwrap();
    }
    let cdir = tmp.path().join("cifar");
    std::fs::create_dir(&cdir).unwrap();
    std::fs::copy(
        seed("cifar", "seed-two-images"),
        cdir.join("data_batch_1.bin"),
    )
    .unwrap();
    assert_eq!(
        ofa_trainer::data::load_cifar10_dir(&cdir)
            .unwrap()
            .train
            .len(),
        2
    );
    let m = ofa_predictors::AccuracyPredictor::load(&seed("accuracy_predictor", "seed-tiny"), None)
        .unwrap();
    m.check_space(&tiny, &tiny.resolutions).unwrap();
    assert_eq!(
        ofa_predictors::dataset::read(&seed("accuracy_dataset", "seed-two"))
            .unwrap()
            .len(),
        2
    );
}

/// Headers that claim more than the file holds are refused before anything that size is
/// allocated, with what they claimed.
#[test]
fn claims_beyond_the_file_are_refused_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    // IDX: 10^12 bytes of images claimed, none present
    let p = tmp.path().join("train-images-idx3-ubyte");
    let mut b = vec![0u8, 0, 8, 3];
    for d in [1_000_000u32, 1_000, 1_000] {
        b.extend_from_slice(&d.to_be_bytes());
    }
    std::fs::write(&p, &b).unwrap();
    let e = ofa_trainer::data::read_idx(&p).unwrap_err().to_string();
    assert!(e.contains("need 1000000000000 bytes"), "{e}");

    // safetensors: a header length of 2^40 in a 16-byte file
    let p = tmp.path().join("big.safetensors");
    let mut b = (1u64 << 40).to_le_bytes().to_vec();
    b.extend_from_slice(b"{}      ");
    std::fs::write(&p, &b).unwrap();
    let e = ofa_supernet::checkpoint::read_safetensors(&p)
        .unwrap_err()
        .to_string();
    assert!(e.contains("not a valid safetensors file"), "{e}");

    // a tensor whose shape claims 10^12 elements over 8 bytes of data
    let header = br#"{"w":{"dtype":"F32","shape":[1000000,1000000],"data_offsets":[0,8]}}"#;
    let mut b = (header.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(header);
    b.extend_from_slice(&[0u8; 8]);
    std::fs::write(&p, &b).unwrap();
    let e = ofa_supernet::checkpoint::read_safetensors(&p)
        .unwrap_err()
        .to_string();
    assert!(e.contains("not a valid safetensors file"), "{e}");

    // a space of 10^9 blocks per stage, or of 2^31-wide layers
    let mut s: serde_json::Value = serde_json::from_str(
        &ofa_space::SearchSpace::preset("ofa-mbv3-tiny")
            .unwrap()
            .to_json(),
    )
    .unwrap();
    s["depth_list"] = serde_json::json!([2, 1_000_000_000]);
    let e = ofa_space::SearchSpace::from_json(&s.to_string())
        .unwrap_err()
        .to_string();
    assert!(e.contains("1000000000"), "{e}");
    s["depth_list"] = serde_json::json!([2, 3]);
    s["last_channel_base_width"] = serde_json::json!(1u32 << 31);
    let e = ofa_space::SearchSpace::from_json(&s.to_string())
        .unwrap_err()
        .to_string();
    assert!(e.contains("base widths must be at most"), "{e}");
}

/// A YAML alias bomb (10^10 integers from 638 bytes) is refused, not expanded.
#[test]
fn a_yaml_alias_bomb_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::copy(
        corpus().join("latency_yaml/billion-laughs"),
        tmp.path().join("48_lookup_table.yaml"),
    )
    .unwrap();
    let e = ofa_predictors::LatencyTable::import_reference_dir(tmp.path(), "bomb")
        .unwrap_err()
        .to_string();
    assert!(e.contains("not a reference lookup table"), "{e}");
}
