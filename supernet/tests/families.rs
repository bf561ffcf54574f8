//! Conformance of the ProxylessNAS family against the reference implementation's outputs
//! (`tests/fixtures/ofa-proxyless-tiny`, made by `scripts/family_fixtures.py`).

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use common::assert_close;
use ofa_schema::net_config::NetConfig;
use ofa_space::{cost, latency, ArchConfig, Family, SearchSpace};
use ofa_supernet::checkpoint::read_safetensors;
use ofa_supernet::import::{import_supernet, infer_space, normalize_names, ImportOptions};
use ofa_supernet::{Layers, Mode, Subnet, SubnetConfig, Supernet};
use serde::Deserialize;
use tch::{Device, Kind, Tensor};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/ofa-proxyless-tiny")
}

fn space() -> SearchSpace {
    SearchSpace::preset("ofa-proxyless-tiny").unwrap()
}

fn load_supernet() -> Supernet {
    let f = read_safetensors(&fixtures().join("supernet.safetensors")).unwrap();
    Supernet::from_tensors(&space(), f.tensors, Device::Cpu).unwrap()
}

#[derive(Deserialize)]
struct Case {
    index: usize,
    kind: String,
    #[serde(flatten)]
    arch: ArchConfig,
    batch: i64,
    macs: u64,
    params: u64,
    subnet_file: Option<String>,
}

fn cases() -> Vec<Case> {
    let text = std::fs::read_to_string(fixtures().join("cases.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn io() -> HashMap<String, Tensor> {
    read_safetensors(&fixtures().join("io.safetensors"))
        .unwrap()
        .tensors
}

#[test]
fn the_cases_cover_largest_smallest_and_random_at_batch_1_and_3() {
    let cs = cases();
    assert_eq!(cs.len(), 9);
    for kind in ["largest", "smallest", "random"] {
        let batches: Vec<i64> = cs
            .iter()
            .filter(|c| c.kind == kind)
            .map(|c| c.batch)
            .collect();
        assert!(batches.contains(&1) && batches.contains(&3), "{kind}");
    }
    let s = space();
    for c in &cs {
        c.arch.validate(&s).unwrap();
        // 21 blocks, 6 depths; the reference samples the last as 1 and clips any other to 1
        assert_eq!((c.arch.ks.len(), c.arch.d.len()), (21, 6));
        let want = if c.kind == "clipped" { 4 } else { 1 };
        assert_eq!(c.arch.d[5], want, "case {}", c.index);
    }
}

#[test]
fn supernet_and_extracted_logits_match_the_reference() {
    let net = load_supernet();
    let io = io();
    for c in cases() {
        let x = &io[&format!("input_{}", c.index)];
        assert_eq!(x.size()[0], c.batch);
        let y = net.forward(x, &c.arch, Mode::Eval).unwrap();
        let want = &io[&format!("logits_supernet_{}", c.index)];
        assert_close(&y, want, 1e-4, &format!("supernet, case {}", c.index));
        let sub = net.extract(&c.arch).unwrap();
        let y = sub.forward(x, Mode::Eval).unwrap();
        let want = &io[&format!("logits_subnet_{}", c.index)];
        assert_close(&y, want, 1e-4, &format!("subnet, case {}", c.index));
    }
}

#[test]
fn extraction_gives_the_reference_subnet_its_names_and_net_config() {
    let net = load_supernet();
    let c = cases()
        .into_iter()
        .find(|c| c.subnet_file.is_some())
        .unwrap();
    let path = fixtures().join(c.subnet_file.as_ref().unwrap());
    let reference = read_safetensors(&path).unwrap();
    let sub = net.extract(&c.arch).unwrap();
    let ours: BTreeMap<String, Tensor> = sub.named_tensors().into_iter().collect();
    let names: Vec<&String> = ours.keys().collect();
    let mut want: Vec<&String> = reference.tensors.keys().collect();
    want.sort();
    assert_eq!(names, want, "tensor names");
    for (name, t) in &ours {
        let r = &reference.tensors[name];
        assert_eq!(t.kind(), r.kind(), "{name} dtype");
        if t.kind() == Kind::Int64 {
            assert_eq!(t.int64_value(&[]), r.int64_value(&[]), "{name}");
        } else {
            assert_close(t, r, 1e-5, name);
        }
    }
    // Our net.config is the reference's `ProxylessNASNets` config, layer for layer.
    let theirs: NetConfig = serde_json::from_str(&reference.metadata["net_config"]).unwrap();
    let mine = sub.config().to_net_config();
    assert_eq!(mine, theirs);
    assert_eq!(mine.name(), "ProxylessNASNets");
    let NetConfig::MbConv(mine) = mine else {
        panic!("an MBConv config")
    };
    assert!(mine.final_expand_layer.is_none());

    // The reference's own file loads through its net_config and computes its logits.
    let file = Subnet::load(&path, Device::Cpu).unwrap();
    assert_eq!(file.net.config().family, Family::ProxylessNas);
    let x = &io()[&format!("input_{}", c.index)];
    let y = file.net.forward(x, Mode::Eval).unwrap();
    assert_close(
        &y,
        &io()[&format!("logits_subnet_{}", c.index)],
        1e-4,
        "the reference subnet file",
    );

    // And ours round-trips: saved, loaded, the same logits.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("sub.safetensors");
    sub.save(&out, &BTreeMap::new()).unwrap();
    let back = Subnet::load(&out, Device::Cpu).unwrap();
    assert_eq!(back.net.config(), sub.config());
    let y2 = back.net.forward(x, Mode::Eval).unwrap();
    assert!(y2.equal(&sub.forward(x, Mode::Eval).unwrap()));
}

#[test]
fn macs_and_params_equal_the_reference_counts() {
    let s = space();
    for c in cases() {
        let got = cost(&s, &c.arch);
        assert_eq!(
            (got.macs, got.params),
            (c.macs, c.params),
            "case {} ({})",
            c.index,
            c.kind
        );
    }
}

#[test]
fn channel_sorting_at_stage_0_computes_what_the_reference_does() {
    let mut net = load_supernet();
    net.sort_channels(0);
    let io = io();
    for c in cases() {
        let x = &io[&format!("input_{}", c.index)];
        let y = net.forward(x, &c.arch, Mode::Eval).unwrap();
        let want = &io[&format!("logits_reorg_{}", c.index)];
        assert_close(&y, want, 1e-4, &format!("sorted, case {}", c.index));
    }
    // The sorting changed what narrower subnets compute (so the check above can fail).
    let before = load_supernet();
    let c = cases().into_iter().find(|c| c.kind == "smallest").unwrap();
    let x = &io[&format!("input_{}", c.index)];
    let a = before.forward(x, &c.arch, Mode::Eval).unwrap();
    let b = net.forward(x, &c.arch, Mode::Eval).unwrap();
    assert!(!a.allclose(&b, 1e-3, 1e-3, false));
}

#[test]
fn the_published_w1_3_layout_imports_as_the_preset_in_both_namings() {
    let zeros = |legacy: bool| {
        common::zeros_of_published(&fixtures().join("published_shapes.json"), |name| {
            // Published checkpoints may carry the legacy names the reference's
            // load_state_dict maps back: `.mobile_inverted_conv.` and no inner wrapper.
            if legacy && name.starts_with("blocks.") {
                // `blocks.N.conv.X.conv.conv.weight` → `blocks.N.mobile_inverted_conv.X.conv.weight`
                let (block, rest) = name.split_at(name.find(".conv.").unwrap());
                let rest = rest
                    .replacen(".conv.", ".mobile_inverted_conv.", 1)
                    .replace(".conv.conv.", ".conv.")
                    .replace(".bn.bn.", ".bn.");
                format!("{block}{rest}")
            } else {
                name.to_string()
            }
        })
    };
    let mut want = SearchSpace::preset("ofa-proxyless-w1.3").unwrap();
    for legacy in [false, true] {
        let raw = zeros(legacy);
        assert_eq!(
            raw.contains_key("blocks.1.mobile_inverted_conv.depth_conv.conv.weight"),
            legacy
        );
        let map = normalize_names(raw);
        let got = infer_space(&map, &ImportOptions::default()).unwrap();
        want.name = got.name.clone();
        want.dropout_rate = got.dropout_rate;
        assert_eq!(got, want, "legacy naming: {legacy}");
        let net = Supernet::from_tensors(&got, map, Device::Cpu).unwrap();
        assert_eq!(net.space().family, Family::ProxylessNas);
    }
}

#[test]
fn latency_keys_are_the_reference_proxyless_table_keys() {
    let s = space();
    let arch = ArchConfig::largest(&s);
    let keys: Vec<String> = latency::layer_keys(&s, &arch)
        .into_iter()
        .map(|(_, k)| k)
        .collect();
    // ProxylessNASLatencyTable.predict_network_latency: `Conv`, one `expanded_conv` per block
    // (expand as the ratio, the first block's 1), `Conv_1` (feature mix), `Logits`.
    assert_eq!(keys.len(), 1 + 22 + 2);
    assert_eq!(keys[0], "Conv-input:48x48x3-output:24x24x8");
    assert_eq!(
        keys[1],
        "expanded_conv-input:24x24x8-output:24x24x8-expand:1-kernel:3-stride:1-idskip:0"
    );
    assert_eq!(
        keys[2],
        "expanded_conv-input:24x24x8-output:12x12x8-expand:6-kernel:7-stride:2-idskip:0"
    );
    assert_eq!(keys[23], "Conv_1-input:2x2x80-output:2x2x320");
    assert_eq!(keys[24], "Logits-input:2x2x320-output:10");
}

#[test]
fn reference_net_configs_without_bn_or_with_legacy_names_load_as_the_reference_builds_them() {
    let c = cases()
        .into_iter()
        .find(|c| c.subnet_file.is_some())
        .unwrap();
    let path = fixtures().join(c.subnet_file.as_ref().unwrap());
    let file = read_safetensors(&path).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&file.metadata["net_config"]).unwrap();
    // without `bn`, ProxylessNASNets.build_from_config sets eps 1e-3 (PyTorch's default is 1e-5)
    v.as_object_mut().unwrap().remove("bn");
    // and older configs call each block's layer `mobile_inverted_conv`
    for b in v["blocks"].as_array_mut().unwrap() {
        let conv = b.as_object_mut().unwrap().remove("conv").unwrap();
        b["mobile_inverted_conv"] = conv;
    }
    let config = SubnetConfig::from_net_config(&v).unwrap();
    assert_eq!(config.bn_eps, 1e-3);
    let net = Subnet::from_tensors(config.clone(), file.tensors, Device::Cpu).unwrap();
    let io = io();
    let x = &io[&format!("input_{}", c.index)];
    let y = net.forward(x, Mode::Eval).unwrap();
    let want = &io[&format!("logits_subnet_{}", c.index)];
    assert_close(&y, want, 1e-4, "without bn");

    // a feature mix without BN is not a ProxylessNAS network: named, not guessed
    let mut no_bn_mix = v.clone();
    no_bn_mix["feature_mix_layer"]["use_bn"] = false.into();
    let e = SubnetConfig::from_net_config(&no_bn_mix).unwrap_err();
    assert!(e.contains("`feature_mix_layer` has use_bn false"), "{e}");
    // a typed config whose head is not its family's is refused
    let mut mixed = config;
    let Layers::MbConv(m) = &mut mixed.layers else {
        panic!("MBConv layers")
    };
    m.final_expand_width = Some(64);
    let e = mixed.validate().unwrap_err();
    assert!(
        e.contains("ProxylessNASNets has no final expand layer"),
        "{e}"
    );
}

#[test]
fn the_reference_state_dict_file_imports_with_its_family_and_space_inferred() {
    let path = fixtures().join("supernet.safetensors");
    let net = import_supernet(&path, &ImportOptions::default(), Device::Cpu).unwrap();
    let mut want = space();
    want.name = net.space().name.clone();
    want.dropout_rate = net.space().dropout_rate;
    assert_eq!(net.space(), &want);
    let reference = read_safetensors(&path).unwrap();
    assert_eq!(net.tensors().len(), reference.tensors.len());
    for (spec, t) in net.tensors() {
        assert!(
            t.detach().equal(&reference.tensors[&spec.name]),
            "{}",
            spec.name
        );
    }
}
