//! Conformance of the ResNet family against the reference implementation's outputs
//! (`tests/fixtures/ofa-resnet-tiny`, made by `scripts/family_fixtures.py`), through the public
//! API: the supernet, its views and extracted subnets, their files and `net.config`.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use common::assert_close;
use ofa_schema::net_config::NetConfig;
use ofa_space::{ArchConfig, Family, SearchSpace};
use ofa_supernet::checkpoint::read_safetensors;
use ofa_supernet::{recalibrate_bn, Layers, Mode, Subnet, SubnetConfig, Supernet};
use serde_json::Value;
use tch::{Device, Kind, Tensor};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/ofa-resnet-tiny")
}

fn space() -> SearchSpace {
    SearchSpace::preset("ofa-resnet-tiny").unwrap()
}

fn load_supernet() -> Supernet {
    let f = read_safetensors(&fixtures().join("supernet.safetensors")).unwrap();
    Supernet::from_tensors(&space(), f.tensors, Device::Cpu).unwrap()
}

fn cases() -> Vec<Value> {
    let text = std::fs::read_to_string(fixtures().join("cases.json")).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    v["cases"].as_array().unwrap().clone()
}

fn arch_of(case: &Value) -> ArchConfig {
    let v = serde_json::json!({"d": case["d"], "e": case["e"], "w": case["w"], "r": case["r"]});
    ArchConfig::from_json(&v.to_string()).unwrap()
}

fn io() -> HashMap<String, Tensor> {
    read_safetensors(&fixtures().join("io.safetensors"))
        .unwrap()
        .tensors
}

#[test]
fn supernet_views_and_extracted_subnets_compute_the_reference_logits() {
    let net = load_supernet();
    let io = io();
    for case in cases() {
        let i = case["index"].as_u64().unwrap();
        let arch = arch_of(&case);
        let x = &io[&format!("input_{i}")];
        let y = tch::no_grad(|| net.forward(x, &arch, Mode::Eval)).unwrap();
        assert_close(&y, &io[&format!("logits_supernet_{i}")], 1e-4, "supernet");
        let sub = net.extract(&arch).unwrap();
        let y = tch::no_grad(|| sub.forward(x, Mode::Eval)).unwrap();
        assert_close(&y, &io[&format!("logits_subnet_{i}")], 1e-4, "subnet");
        // the extracted config is the reference's `ResNets` config, layer for layer
        let theirs: NetConfig = serde_json::from_value(case["net_config"].clone()).unwrap();
        assert_eq!(sub.config().to_net_config(), theirs, "case {i}");
        assert_eq!(sub.config().family, Family::ResNet);
    }
}

#[test]
fn extraction_gives_the_reference_state_dict_and_the_files_round_trip() {
    let net = load_supernet();
    let case = cases()
        .into_iter()
        .find(|c| c.get("subnet_file").is_some())
        .unwrap();
    let arch = arch_of(&case);
    let sub = net.extract(&arch).unwrap();
    let reference = read_safetensors(&fixtures().join("subnet.safetensors")).unwrap();
    let mine = sub.named_tensors();
    assert_eq!(mine.len(), reference.tensors.len());
    for (name, t) in &mine {
        let r = &reference.tensors[name];
        assert!(t.to_kind(r.kind()).equal(r), "{name}");
    }
    // every BN once, in call order: a block's shortcut BN before its convs' (the reference's)
    let bns = sub.bns();
    assert_eq!(
        bns.len(),
        mine.iter()
            .filter(|(n, _)| n.ends_with("bn.weight"))
            .count()
    );
    let stem = if arch.d[0] == 2 { 3 } else { 2 };
    assert!(bns[stem]
        .weight
        .equal(&reference.tensors["blocks.0.downsample.bn.weight"]));
    assert!(bns[stem + 1]
        .weight
        .equal(&reference.tensors["blocks.0.conv1.bn.weight"]));
    // The reference's file loads through its net_config and computes its logits.
    let io = io();
    let i = case["index"].as_u64().unwrap();
    let x = &io[&format!("input_{i}")];
    let want = &io[&format!("logits_subnet_{i}")];
    let file = Subnet::load(&fixtures().join("subnet.safetensors"), Device::Cpu).unwrap();
    assert_eq!(file.net.config(), sub.config());
    let y = tch::no_grad(|| file.net.forward(x, Mode::Eval)).unwrap();
    assert_close(&y, want, 1e-4, "reference file");
    // Ours is written and read back the same.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("subnet.safetensors");
    let extra = BTreeMap::from([("arch".to_string(), arch.to_json())]);
    sub.save(&path, &extra).unwrap();
    let back = Subnet::load(&path, Device::Cpu).unwrap();
    assert_eq!(back.arch.as_ref(), Some(&arch));
    assert_eq!(back.net.config(), sub.config());
    let y = tch::no_grad(|| back.net.forward(x, Mode::Eval)).unwrap();
    assert_close(&y, want, 1e-4, "our file");
    // and its net_config alone rebuilds the same layers
    let nc = serde_json::to_value(sub.config().to_net_config()).unwrap();
    assert_eq!(&SubnetConfig::from_net_config(&nc).unwrap(), sub.config());
}

#[test]
fn channel_re_organisation_at_stages_0_and_1_computes_what_the_reference_does() {
    let io = io();
    for stage in [0usize, 1] {
        let mut net = load_supernet();
        net.sort_channels(stage);
        for case in cases() {
            let i = case["index"].as_u64().unwrap();
            let x = &io[&format!("input_{i}")];
            let y = tch::no_grad(|| net.forward(x, &arch_of(&case), Mode::Eval)).unwrap();
            let want = &io[&format!("logits_reorg{stage}_{i}")];
            assert_close(&y, want, 1e-4, &format!("stage {stage}, case {i}"));
        }
    }
}

#[test]
fn a_fresh_resnet_supernet_trains_and_recalibrates_through_its_views() {
    let space = space();
    let net = Supernet::new(&space, 7, Device::Cpu).unwrap();
    assert_eq!(
        net.tensors().len(),
        read_safetensors(&fixtures().join("supernet.safetensors"))
            .unwrap()
            .tensors
            .len()
    );
    let arch = ArchConfig::smallest(&space);
    let x = Tensor::randn([4, 3, 32, 32], (Kind::Float, Device::Cpu));
    // a train-mode step reaches the supernet's weights through the view
    let view = net.view(&arch).unwrap();
    let loss = view.forward(&x, Mode::Train).unwrap().square().mean(None);
    loss.backward();
    let (spec, w) = &net.tensors()[0];
    assert_eq!(spec.name, "input_stem.0.conv.conv.weight");
    assert!(w.grad().abs().sum(None).double_value(&[]) > 0.0);
    // recalibration writes the view's BN statistics into the supernet's buffers
    let before = net.extract(&arch).unwrap();
    recalibrate_bn(&view, [x.shallow_clone()]).unwrap();
    let after = net.extract(&arch).unwrap();
    let means = |s: &Subnet| s.bns()[0].running_mean.copy();
    assert!(!means(&before).equal(&means(&after)));
    // bf16 casts keep the layers
    let cast = view.cast_weights(Kind::BFloat16);
    let y = cast
        .forward(&x.to_kind(Kind::BFloat16), Mode::Eval)
        .unwrap();
    assert_eq!(y.size(), vec![4, 10]);
    let Layers::ResNet(r) = &view.config().layers else {
        panic!("ResNet layers")
    };
    assert!(
        !r.stem_middle,
        "the smallest arch skips the stem's residual conv"
    );
}

#[test]
fn the_published_resnet50_layout_imports_as_the_preset_in_both_namings() {
    use ofa_supernet::import::{infer_space, normalize_names, ImportOptions};
    let zeros = |static_names: bool| {
        // the static `ResNets` naming, which `OFAResNets.load_state_dict` maps back
        common::zeros_of_published(&fixtures().join("published_shapes.json"), |name| {
            if static_names {
                name.replace(".conv.conv.", ".conv.")
                    .replace(".bn.bn.", ".bn.")
                    .replace(".linear.linear.", ".linear.")
            } else {
                name.to_string()
            }
        })
    };
    let mut want = SearchSpace::preset("ofa-resnet50").unwrap();
    for static_names in [false, true] {
        let raw = zeros(static_names);
        assert_eq!(raw.contains_key("input_stem.0.conv.weight"), static_names);
        let map = normalize_names(raw);
        let got = infer_space(&map, &ImportOptions::default()).unwrap();
        want.name = got.name.clone();
        assert_eq!(got, want, "static naming: {static_names}");
        let net = Supernet::from_tensors(&got, map, Device::Cpu).unwrap();
        assert_eq!(net.space().family, Family::ResNet);
    }
}

#[test]
fn the_reference_state_dict_file_imports_with_its_space_inferred() {
    use ofa_supernet::import::{import_supernet, ImportOptions};
    let path = fixtures().join("supernet.safetensors");
    // the tiny widths are not the published ones: shapes give the largest, the rest is asked for
    let opts = ImportOptions {
        width_mult_list: Some(vec![0.05, 0.1, 0.125]),
        resolutions: Some((32..=48).step_by(4).collect()),
        ..ImportOptions::default()
    };
    let net = import_supernet(&path, &opts, Device::Cpu).unwrap();
    let mut want = space();
    want.name = net.space().name.clone();
    assert_eq!(net.space(), &want);
    let reference = read_safetensors(&path).unwrap();
    for (spec, t) in net.tensors() {
        assert!(
            t.detach().equal(&reference.tensors[&spec.name]),
            "{}",
            spec.name
        );
    }
    // without them, the largest width alone; a list that misses it is refused by name
    let alone = import_supernet(&path, &ImportOptions::default(), Device::Cpu).unwrap();
    assert_eq!(alone.space().width_mult_list, vec![0.125]);
    let wrong = ImportOptions {
        width_mult_list: Some(vec![0.05, 0.1]),
        ..ImportOptions::default()
    };
    let e = import_supernet(&path, &wrong, Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("largest width 0.1") && e.contains("0.125"),
        "{e}"
    );
}

#[test]
fn malformed_net_configs_are_refused_naming_what_is_wrong() {
    let largest = cases()
        .into_iter()
        .find(|c| c["kind"] == "largest")
        .unwrap();
    let refused = |edit: &dyn Fn(&mut Value), says: &str| {
        let mut v = largest["net_config"].clone();
        edit(&mut v);
        let e = SubnetConfig::from_net_config(&v).unwrap_err();
        assert!(e.contains(says), "{e}");
    };
    refused(
        &|v| {
            v.as_object_mut().unwrap().remove("classifier");
        },
        "missing field `classifier`",
    );
    refused(
        &|v| {
            v["input_stem"].as_array_mut().unwrap().pop();
        },
        "`input_stem` must be conv, an optional residual conv, conv",
    );
    refused(&|v| v["name"] = "MobileNetV3".into(), "is not \"ResNets\"");
    refused(
        &|v| v["blocks"][0]["downsample_mode"] = "conv".into(),
        "block 0 must be a 3×3 ReLU bottleneck",
    );
    refused(
        &|v| v["classifier"]["in_features"] = 7.into(),
        "the classifier takes 7 features",
    );
    // an MBConv config is read as one, and its errors name its fields too
    let e =
        SubnetConfig::from_net_config(&serde_json::json!({"name": "MobileNetV3", "blocks": []}))
            .unwrap_err();
    assert!(e.contains("missing field"), "{e}");
}
