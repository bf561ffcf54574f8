//! Exported subnets run by an independent runtime, tract (pure Rust, no libtorch): its logits
//! equal ours within 1e-4 · (1 + |value|) for the largest, smallest and random subnets, with and
//! without BN folding, at two batch sizes; and the reference's own fixture subnet reproduces the
//! reference's logits.

#![allow(clippy::unwrap_used)]

use ofa_onnx::check::{max_rel_diff as worst, tract_logits};
use ofa_onnx::{export, model, ExportOptions, OnnxError};
use ofa_space::{sample, ArchConfig, Choices, SearchSpace};
use ofa_supernet::checkpoint::{open_model, read_safetensors, Model};
use ofa_supernet::{Layers, Mode, Subnet, Supernet};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tch::{Device, Kind, Tensor};

fn ours(sub: &Subnet, x: &Tensor) -> Vec<f32> {
    let y = tch::no_grad(|| sub.forward(x, Mode::Eval)).unwrap();
    Vec::<f32>::try_from(y.flatten(0, -1)).unwrap()
}

/// BN statistics and affine parameters made random, so folding and BN placement matter.
fn randomise_bn(sub: &Subnet, seed: u64) {
    ofa_supernet::rng::with_seed(seed, || {
        tch::no_grad(|| {
            for bn in sub.bns() {
                let n = bn.running_mean.size()[0];
                let o = (Kind::Float, Device::Cpu);
                bn.running_mean
                    .shallow_clone()
                    .copy_(&(Tensor::randn([n], o) * 0.2));
                bn.running_var
                    .shallow_clone()
                    .copy_(&(Tensor::rand([n], o) + 0.5));
                bn.weight
                    .shallow_clone()
                    .copy_(&(Tensor::rand([n], o) + 0.5));
                bn.bias
                    .shallow_clone()
                    .copy_(&(Tensor::randn([n], o) * 0.1));
            }
        })
    });
}

#[test]
fn tract_runs_exported_subnets_as_we_do() {
    tch::set_num_threads(1);
    let space = SearchSpace::preset("ofa-mbv3-tiny").unwrap();
    let net = Supernet::new(&space, 3, Device::Cpu).unwrap();
    let mut archs = vec![ArchConfig::largest(&space), ArchConfig::smallest(&space)];
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    for _ in 0..3 {
        archs.push(sample(&space, &Choices::all(&space), &mut rng));
    }
    for (i, arch) in archs.iter().enumerate() {
        let sub = net.extract(arch).unwrap();
        randomise_bn(&sub, i as u64);
        for fold_bn in [false, true] {
            let o = ExportOptions {
                fold_bn,
                ..ExportOptions::new(arch.r)
            };
            let bytes = export(&sub, &o).unwrap();
            for n in [1, 3] {
                let r = i64::from(arch.r);
                let x = Tensor::randn([n, 3, r, r], (Kind::Float, Device::Cpu));
                let e = worst(&tract_logits(&bytes, &x).unwrap(), &ours(&sub, &x));
                assert!(e <= 1e-4, "arch {i} fold {fold_bn} batch {n}: {e}");
            }
        }
    }
}

#[test]
fn the_graph_has_the_promised_shape() {
    let space = SearchSpace::preset("ofa-mbv3-tiny").unwrap();
    let net = Supernet::new(&space, 0, Device::Cpu).unwrap();
    let arch = ArchConfig::largest(&space);
    let sub = net.extract(&arch).unwrap();
    let mut o = ExportOptions::new(arch.r);
    o.metadata.insert("arch".into(), arch.to_json());
    let m = model(&sub, &o).unwrap();
    assert_eq!(m.ir_version, 8);
    assert_eq!(m.opset_import[0].version, 17);
    assert_eq!(m.metadata_props[0].key, "arch");
    let g = m.graph.as_ref().unwrap();
    assert_eq!(g.input[0].name, "input");
    assert_eq!(g.output[0].name, "logits");
    let ops = |name: &str| g.node.iter().filter(|n| n.op_type == name).count();
    assert_eq!(ops("BatchNormalization"), sub.bns().len());
    assert!(ops("HardSwish") > 0 && ops("HardSigmoid") > 0 && ops("Add") > 0);
    assert_eq!(ops("ReduceMean"), 0);
    let hs = g.node.iter().find(|n| n.op_type == "HardSigmoid").unwrap();
    let alpha = hs.attribute.iter().find(|a| a.name == "alpha").unwrap();
    assert!((alpha.f - 1.0 / 6.0).abs() < 1e-7);
    // depthwise convolutions are grouped by their channels
    let dw = g
        .node
        .iter()
        .find(|n| {
            n.input
                .get(1)
                .is_some_and(|w| w == "blocks.1.conv.depth_conv.conv.weight")
        })
        .unwrap();
    let group = dw.attribute.iter().find(|a| a.name == "group").unwrap().i;
    let Layers::MbConv(m) = &sub.config().layers else {
        panic!("a MobileNetV3 subnet")
    };
    assert_eq!(group, m.blocks[1].mid as i64);
    // folded: no BatchNormalization left
    o.fold_bn = true;
    let m = model(&sub, &o).unwrap();
    let g = m.graph.as_ref().unwrap();
    assert!(g.node.iter().all(|n| n.op_type != "BatchNormalization"));
    // refused opsets
    for opset in [13, 22] {
        o.opset = opset;
        assert!(matches!(model(&sub, &o), Err(OnnxError::Opset(v)) if v == opset));
    }
}

#[test]
fn the_reference_fixture_subnet_reproduces_the_reference_logits() {
    tch::set_num_threads(1);
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/ofa-tiny");
    let Model::Subnet(f) = open_model(&dir.join("subnet_3.safetensors"), Device::Cpu).unwrap()
    else {
        panic!("subnet_3 is a subnet")
    };
    let io = read_safetensors(&dir.join("io_3.safetensors")).unwrap();
    tract_gives(&f.net, &io.tensors["input"], &io.tensors["logits_subnet"]);
}

/// Exported with and without BN folding, `net` computes `want` on `x` under tract.
fn tract_gives(net: &Subnet, x: &Tensor, want: &Tensor) {
    let want = Vec::<f32>::try_from(want.flatten(0, -1)).unwrap();
    for fold_bn in [false, true] {
        let o = ExportOptions {
            fold_bn,
            ..ExportOptions::new(x.size()[2] as u32)
        };
        let bytes = export(net, &o).unwrap();
        let e = worst(&tract_logits(&bytes, x).unwrap(), &want);
        assert!(e <= 1e-4, "fold {fold_bn}: {e}");
    }
}

#[test]
fn proxyless_subnets_run_under_tract_as_under_the_reference() {
    tch::set_num_threads(1);
    // The reference's own ProxylessNAS subnet file: tract computes the reference's logits.
    let (net, x, want) = reference_subnet("ofa-proxyless-tiny");
    tract_gives(&net, &x, &want);
    let m = model(&net, &ExportOptions::new(x.size()[2] as u32)).unwrap();
    let g = m.graph.as_ref().unwrap();
    assert!(g.node.iter().any(|n| n.op_type == "Clip"));
    assert!(g.node.iter().all(|n| n.op_type != "HardSwish"));
    // Random ProxylessNAS subnets with random BN, at batch 1 and 3.
    let space = SearchSpace::preset("ofa-proxyless-tiny").unwrap();
    let archs = extremes_and_a_sample(&space);
    tract_runs_as_we_do(&space, &archs, 100);
}

/// The largest and smallest archs of `space` and one seeded sample.
fn extremes_and_a_sample(space: &SearchSpace) -> Vec<ArchConfig> {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let mut archs = vec![ArchConfig::largest(space), ArchConfig::smallest(space)];
    archs.push(sample(space, &Choices::all(space), &mut rng));
    archs
}

/// Subnets of a fresh supernet of `space`, with random BN, give our logits under tract at batch
/// 1 and 3.
fn tract_runs_as_we_do(space: &SearchSpace, archs: &[ArchConfig], bn_seed: u64) {
    let net = Supernet::new(space, 5, Device::Cpu).unwrap();
    for (i, arch) in archs.iter().enumerate() {
        let sub = net.extract(arch).unwrap();
        randomise_bn(&sub, bn_seed + i as u64);
        let bytes = export(&sub, &ExportOptions::new(arch.r)).unwrap();
        for n in [1, 3] {
            let r = i64::from(arch.r);
            let x = Tensor::randn([n, 3, r, r], (Kind::Float, Device::Cpu));
            let e = worst(&tract_logits(&bytes, &x).unwrap(), &ours(&sub, &x));
            assert!(e <= 1e-4, "arch {i} batch {n}: {e}");
        }
    }
}

/// The reference fixture's subnet file in `dir`, the input of its case and the reference's
/// logits on it.
fn reference_subnet(dir: &str) -> (Subnet, Tensor, Tensor) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(dir);
    let Model::Subnet(f) = open_model(&dir.join("subnet.safetensors"), Device::Cpu).unwrap() else {
        panic!("subnet.safetensors is a subnet")
    };
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("cases.json")).unwrap()).unwrap();
    // a list of cases, or `{"cases": [...]}`
    let cases = v.get("cases").unwrap_or(&v).as_array().unwrap();
    let i = cases.iter().find(|c| c["subnet_file"].is_string()).unwrap()["index"]
        .as_u64()
        .unwrap();
    let mut io = read_safetensors(&dir.join("io.safetensors"))
        .unwrap()
        .tensors;
    let x = io.remove(&format!("input_{i}")).unwrap();
    let want = io.remove(&format!("logits_subnet_{i}")).unwrap();
    (f.net, x, want)
}

#[test]
fn resnet_subnets_run_under_tract_as_under_the_reference() {
    tch::set_num_threads(1);
    // The reference's own ResNet subnet file: tract computes the reference's logits.
    let (net, x, want) = reference_subnet("ofa-resnet-tiny");
    tract_gives(&net, &x, &want);
    let m = model(&net, &ExportOptions::new(x.size()[2] as u32)).unwrap();
    let g = m.graph.as_ref().unwrap();
    let ops: Vec<&str> = g.node.iter().map(|n| n.op_type.as_str()).collect();
    for op in ["MaxPool", "AveragePool", "Add", "Relu", "Gemm"] {
        assert!(ops.contains(&op), "{op} missing from {ops:?}");
    }
    // Random ResNet subnets with random BN, at odd feature sizes (the shortcut's ceil-mode
    // average pool over a partial window), with the stem's residual conv run and skipped.
    let space = SearchSpace::preset("ofa-resnet-tiny").unwrap();
    let mut archs = extremes_and_a_sample(&space);
    archs[0].r = 36;
    archs[1].r = 44;
    tract_runs_as_we_do(&space, &archs, 200);
}
