//! The ResNet family's description against the reference `OFAResNets` (`tests/fixtures/
//! ofa-resnet-tiny`, made by `scripts/family_fixtures.py`): widths, costs and the accuracy
//! predictor's encoding of the reference's own archs.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ofa_space::latency::{layer_keys, LayerKind};
use ofa_space::{cost, ArchConfig, Encoding, Family, SearchSpace};
use serde_json::Value;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/ofa-resnet-tiny")
}

fn cases() -> (usize, Vec<Value>) {
    let text = std::fs::read_to_string(fixtures().join("cases.json")).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    let n = v["encoder_n_dim"].as_u64().unwrap() as usize;
    (n, v["cases"].as_array().unwrap().clone())
}

fn arch_of(case: &Value) -> ArchConfig {
    ArchConfig::from_json(
        &serde_json::json!({
            "d": case["d"], "e": case["e"], "w": case["w"], "r": case["r"]
        })
        .to_string(),
    )
    .unwrap()
}

fn uint(v: &Value) -> u32 {
    v.as_u64().unwrap() as u32
}

#[test]
fn the_reference_archs_parse_in_their_own_format_and_cost_what_the_reference_counts() {
    let space = SearchSpace::preset("ofa-resnet-tiny").unwrap();
    assert_eq!(space.family, Family::ResNet);
    let (_, cases) = cases();
    assert_eq!(cases.len(), 9);
    for case in &cases {
        let arch = arch_of(case);
        arch.validate(&space).unwrap();
        // the same JSON form back: no `ks`, fractional `e`
        let json: Value = serde_json::from_str(&arch.to_json()).unwrap();
        assert_eq!(json["e"], case["e"], "{json}");
        assert!(json.get("ks").is_none());
        let c = cost(&space, &arch);
        assert_eq!(
            (c.macs, c.params),
            (
                case["macs"].as_u64().unwrap(),
                case["params"].as_u64().unwrap()
            ),
            "case {} ({})",
            case["index"],
            case["kind"]
        );
        // the canonical form is the same network
        assert_eq!(cost(&space, &arch.canonical(&space)), c);
    }
}

#[test]
fn stem_and_bottleneck_widths_are_those_of_the_extracted_net_config() {
    let space = SearchSpace::preset("ofa-resnet-tiny").unwrap();
    for case in &cases().1 {
        let arch = arch_of(case);
        let net = &case["net_config"];
        let stem = arch.resnet_stem(&space);
        let layers = net["input_stem"].as_array().unwrap();
        // the residual conv is there iff d[0] is the largest depth choice
        assert_eq!(
            layers.len(),
            if stem.middle { 3 } else { 2 },
            "case {}",
            case["index"]
        );
        assert_eq!(stem.middle, case["d"][0] == 2);
        assert_eq!(uint(&layers[0]["out_channels"]), stem.mid);
        if stem.middle {
            assert_eq!(layers[1]["name"], "ResidualBlock");
            assert_eq!(uint(&layers[1]["conv"]["out_channels"]), stem.mid);
        }
        let last = layers.last().unwrap();
        assert_eq!(
            (uint(&last["in_channels"]), uint(&last["out_channels"])),
            (stem.mid, stem.out)
        );
        let blocks = net["blocks"].as_array().unwrap();
        let ours = arch.bottlenecks(&space);
        assert_eq!(ours.len(), blocks.len(), "case {}", case["index"]);
        for (b, r) in ours.iter().zip(blocks) {
            assert_eq!(
                (b.in_ch, b.mid, b.out_ch, b.stride),
                (
                    uint(&r["in_channels"]),
                    uint(&r["mid_channels"]),
                    uint(&r["out_channels"]),
                    uint(&r["stride"])
                )
            );
            assert_eq!(b.e.get(), r["expand_ratio"].as_f64().unwrap());
            // the static block has the downsample shortcut unless stride 1 and in == out
            let static_downsample = !(b.stride == 1 && b.in_ch == b.out_ch);
            assert_eq!(b.downsample, static_downsample);
        }
        assert_eq!(
            uint(&net["classifier"]["in_features"]),
            ours.last().unwrap().out_ch
        );
        // one latency key per layer: three or two stem convs, the max-pool, the blocks, logits
        let keys = layer_keys(&space, &arch);
        assert_eq!(keys.len(), layers.len() + 1 + blocks.len() + 1);
        assert_eq!(
            keys.iter().filter(|k| k.0 == LayerKind::Block).count(),
            blocks.len()
        );
    }
}

#[test]
fn the_encoding_is_the_reference_resnet_arch_encoders() {
    let space = SearchSpace::preset("ofa-resnet-tiny").unwrap();
    let enc = Encoding::library(&space);
    enc.check_space(&space).unwrap();
    let (n_dim, cases) = cases();
    assert_eq!(enc.dim(), n_dim);
    let mut hot = Vec::new();
    for case in &cases {
        let want: Vec<u32> = case["feature_ones"]
            .as_array()
            .unwrap()
            .iter()
            .map(uint)
            .collect();
        let arch = arch_of(case);
        if case["kind"] == "stem_skip_1" {
            // The reference encodes d[0] = 1 as running the stem's middle conv (`d[0] > 0`),
            // which its network skips; we encode the network, as the reference encodes the same
            // network written canonically (d[0] = 0).
            let mut canonical = arch.clone();
            canonical.d[0] = 0;
            let mut theirs_canonical = Vec::new();
            enc.hot_into(&canonical, &mut theirs_canonical).unwrap();
            enc.hot_into(&arch, &mut hot).unwrap();
            assert_eq!(hot, theirs_canonical);
            assert_ne!(hot, want);
            assert_eq!(
                hot.iter().filter(|h| !want.contains(h)).count(),
                1,
                "only the stem slot differs"
            );
            continue;
        }
        enc.hot_into(&arch, &mut hot).unwrap();
        assert_eq!(hot, want, "case {} ({})", case["index"], case["kind"]);
    }
    // an MBConv encoding does not take a ResNet space, nor the other way round
    let mbv3 = SearchSpace::preset("ofa-mbv3-tiny").unwrap();
    assert!(Encoding::library(&mbv3).check_space(&space).is_err());
    let e = enc.check_space(&mbv3).unwrap_err().to_string();
    assert!(e.contains("is a ResNet one"), "{e}");
}

#[test]
fn the_published_resnet50_layout_is_the_preset() {
    let text = std::fs::read_to_string(fixtures().join("published_shapes.json")).unwrap();
    let shapes: BTreeMap<String, Vec<u32>> = serde_json::from_str(&text).unwrap();
    let space = SearchSpace::preset("ofa-resnet50").unwrap();
    let stem_mid = *space.resnet_stem_mid_widths().iter().max().unwrap();
    let stem_out = *space.resnet_stem_widths().iter().max().unwrap();
    assert_eq!(
        shapes["input_stem.0.conv.conv.weight"],
        vec![stem_mid, 3, 3, 3]
    );
    assert_eq!(
        shapes["input_stem.1.conv.conv.conv.weight"],
        vec![stem_mid, stem_mid, 3, 3]
    );
    assert_eq!(
        shapes["input_stem.2.conv.conv.weight"],
        vec![stem_out, stem_mid, 3, 3]
    );
    let blocks = space.resnet_blocks();
    let n_blocks = shapes
        .keys()
        .filter(|k| k.ends_with(".conv1.conv.conv.weight"))
        .count();
    assert_eq!(n_blocks, blocks.len());
    for b in &blocks {
        let p = format!("blocks.{}", b.index);
        assert_eq!(
            shapes[&format!("{p}.conv1.conv.conv.weight")],
            vec![b.max_mid, b.max_in, 1, 1]
        );
        assert_eq!(
            shapes[&format!("{p}.conv2.conv.conv.weight")],
            vec![b.max_mid, b.max_mid, 3, 3]
        );
        assert_eq!(
            shapes[&format!("{p}.conv3.conv.conv.weight")],
            vec![b.max_out, b.max_mid, 1, 1]
        );
        assert_eq!(
            shapes.contains_key(&format!("{p}.downsample.conv.conv.weight")),
            b.downsample,
            "{p}"
        );
    }
    assert_eq!(
        shapes["classifier.linear.linear.weight"],
        vec![1000, space.last_channel()]
    );
}

#[test]
fn the_covering_archs_have_every_key_of_every_arch() {
    use ofa_space::latency::covering_archs;
    use ofa_space::{sample, Choices};
    use rand::SeedableRng;
    let space = SearchSpace::preset("ofa-resnet-tiny").unwrap();
    let r = 40;
    let covered: std::collections::HashSet<String> = covering_archs(&space, r)
        .iter()
        .flat_map(|a| {
            a.validate(&space).unwrap();
            layer_keys(&space, a).into_iter().map(|(_, k)| k)
        })
        .collect();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    for _ in 0..200 {
        let mut a = sample(&space, &Choices::all(&space), &mut rng);
        a.r = r;
        for (_, k) in layer_keys(&space, &a) {
            assert!(covered.contains(&k), "{k} is not covered");
        }
    }
}

#[test]
fn resnet_archs_and_choices_outside_the_space_are_refused_by_name() {
    use ofa_space::Choices;
    let space = SearchSpace::preset("ofa-resnet-tiny").unwrap();
    let ok = ArchConfig::largest(&space);
    ok.validate(&space).unwrap();
    let refused = |edit: &dyn Fn(&mut ArchConfig), says: &str| {
        let mut a = ok.clone();
        edit(&mut a);
        let e = a.validate(&space).unwrap_err().to_string();
        assert!(e.contains(says), "{e}");
    };
    refused(
        &|a| a.ks = vec![3; 18],
        "`ks` has no place in a ResNet arch",
    );
    refused(
        &|a| a.w.clear(),
        "`w` is missing: the ResNet space needs 6 entries",
    );
    refused(
        &|a| a.w[3] = 3,
        "`w[3]` = 3 is not one of the space's choices",
    );
    refused(&|a| a.d[0] = 3, "`d[0]` = 3");
    refused(&|a| a.e[4] = 6.into(), "`e[4]` = 6");
    // a ResNet arch's JSON without `e` is a parse error naming it
    let e = ArchConfig::from_json(r#"{"d": [2, 2, 2, 2, 2], "w": [0, 0, 0, 0, 0, 0], "r": 32}"#)
        .unwrap_err()
        .to_string();
    assert!(e.contains("missing field `e`"), "{e}");
    // width choices belong to ResNet spaces only
    let mbv3 = SearchSpace::preset("ofa-mbv3-tiny").unwrap();
    let mut c = Choices::all(&mbv3);
    c.w = vec![0];
    let e = c.validate(&mbv3).unwrap_err().to_string();
    assert!(e.contains("has no width choices"), "{e}");
    let mut c = Choices::all(&space);
    c.w.clear();
    assert!(c
        .validate(&space)
        .unwrap_err()
        .to_string()
        .contains("`w` is empty"));
}
