//! Write the smallest valid file of every format into `corpus/<target>/seed-*`: where the fuzzer
//! starts, and what the replay test reads back through the full success path of each reader.
//!
//! ```text
//! cargo run -p ofa-hostile --example seeds [-- DIR]      # default: hostile/corpus
//! ```
//! The seeds are committed; rerun this only when a format changes.

#![allow(clippy::unwrap_used)]
// An example program: it reports on stdout.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use ofa_space::latency::layer_keys;
use ofa_space::{ArchConfig, Encoding, SearchSpace};
use tch::{Device, Kind, Tensor};

fn put(dir: &Path, target: &str, name: &str, bytes: &[u8]) {
    let d = dir.join(target);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join(name), bytes).unwrap();
}

/// A space as small as the format allows: widths of 8, two kernel sizes, expand and depth
/// choices, one resolution, grayscale, two classes.
fn seed_space() -> SearchSpace {
    let mut s = SearchSpace::mobilenet_v3("seed", 0.25, 2, vec![32]);
    s.in_channels = 1;
    s.ks_list = vec![3, 5];
    s.expand_ratio_list = vec![2.into(), 3.into()];
    s.depth_list = vec![1, 2];
    s.final_expand_base_width = Some(32);
    s.last_channel_base_width = Some(32);
    s.dropout_rate = 0.0;
    s
}

/// A torch.save zip archive of `{"w": tensor([1., 2.])}` (pickle protocol 2), as PyTorch writes
/// it: `archive/data.pkl`, the storage in `archive/data/0`, `version` and `byteorder`.
fn pth() -> Vec<u8> {
    let mut p = Vec::new();
    p.extend_from_slice(b"\x80\x02ccollections\nOrderedDict\nq\x00)Rq\x01(");
    p.extend_from_slice(b"X\x01\x00\x00\x00w");
    p.extend_from_slice(b"ctorch._utils\n_rebuild_tensor_v2\nq\x02((");
    p.extend_from_slice(b"X\x07\x00\x00\x00storagectorch\nFloatStorage\nq\x03");
    p.extend_from_slice(b"X\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x02tq\x04Q");
    p.extend_from_slice(
        b"K\x00K\x02\x85K\x01\x85\x89ccollections\nOrderedDict\nq\x05)Rq\x06tq\x07Rq\x08u.",
    );
    let mut out = std::io::Cursor::new(Vec::new());
    let mut z = zip::ZipWriter::new(&mut out);
    let o =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for (name, data) in [
        ("archive/data.pkl", p),
        ("archive/byteorder", b"little".to_vec()),
        (
            "archive/data/0",
            [1.0f32, 2.0].iter().flat_map(|v| v.to_le_bytes()).collect(),
        ),
        ("archive/version", b"3\n".to_vec()),
    ] {
        z.start_file(name, o).unwrap();
        z.write_all(&data).unwrap();
    }
    z.finish().unwrap();
    out.into_inner()
}

fn idx(dims: &[u32]) -> Vec<u8> {
    let mut b = vec![0, 0, 8, dims.len() as u8];
    for d in dims {
        b.extend_from_slice(&d.to_be_bytes());
    }
    let n: u32 = dims.iter().product();
    b.extend((0..n).map(|i| (i * 37 % 256) as u8));
    b
}

fn gzip(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir: PathBuf = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("corpus"));
    let tmp = tempfile::tempdir().unwrap();

    // supernet and subnet files
    let space = seed_space();
    space.validate().unwrap();
    let net = ofa_supernet::Supernet::new(&space, 0, Device::Cpu).unwrap();
    let sup = tmp.path().join("supernet.safetensors");
    net.save(&sup, &Default::default(), None).unwrap();
    put(
        &dir,
        "supernet_safetensors",
        "seed-tiny",
        &std::fs::read(&sup).unwrap(),
    );
    let small = ArchConfig::smallest(&space);
    let sub = net.extract(&small).unwrap();
    let mut extra = BTreeMap::new();
    extra.insert("arch".to_string(), small.to_json());
    put(
        &dir,
        "subnet_safetensors",
        "seed-smallest",
        &sub.to_safetensors(&extra).unwrap(),
    );
    put(
        &dir,
        "net_config_json",
        "seed-smallest",
        serde_json::to_string(&sub.config().to_net_config())
            .unwrap()
            .as_bytes(),
    );
    // a ProxylessNAS subnet (its own net_config: no final expand, ReLU6)
    let mut px = SearchSpace::proxyless("seed-proxyless", 0.25, 2, vec![32]);
    px.in_channels = 1;
    px.ks_list = vec![3, 5];
    px.expand_ratio_list = vec![2.into(), 3.into()];
    px.depth_list = vec![1, 2];
    for st in &mut px.stages {
        st.base_width = 32;
    }
    px.stem_base_width = 32;
    px.last_channel_base_width = Some(32);
    px.validate().unwrap();
    let px_net = ofa_supernet::Supernet::new(&px, 0, Device::Cpu).unwrap();
    let px_small = ArchConfig::smallest(&px);
    let px_sub = px_net.extract(&px_small).unwrap();
    let mut extra = BTreeMap::new();
    extra.insert("arch".to_string(), px_small.to_json());
    put(
        &dir,
        "subnet_safetensors",
        "seed-proxyless-smallest",
        &px_sub.to_safetensors(&extra).unwrap(),
    );
    put(
        &dir,
        "net_config_json",
        "seed-proxyless-smallest",
        serde_json::to_string(&px_sub.config().to_net_config())
            .unwrap()
            .as_bytes(),
    );
    // a ResNet subnet (its `ResNets` net_config: input stem, bottlenecks), the smallest of a
    // narrow space with one stage of one block each
    let mut rn = SearchSpace::resnet("seed-resnet", vec![0.05, 0.1], 2, vec![32]);
    rn.in_channels = 1;
    rn.depth_list = vec![0, 1];
    rn.expand_ratio_list.truncate(2);
    for st in &mut rn.stages {
        st.base_depth = 1;
    }
    rn.validate().unwrap();
    let rn_net = ofa_supernet::Supernet::new(&rn, 0, Device::Cpu).unwrap();
    let rn_small = ArchConfig::smallest(&rn);
    let rn_sub = rn_net.extract(&rn_small).unwrap();
    let mut extra = BTreeMap::new();
    extra.insert("arch".to_string(), rn_small.to_json());
    put(
        &dir,
        "subnet_safetensors",
        "seed-resnet-smallest",
        &rn_sub.to_safetensors(&extra).unwrap(),
    );
    put(
        &dir,
        "net_config_json",
        "seed-resnet-smallest",
        serde_json::to_string(&rn_sub.config().to_net_config())
            .unwrap()
            .as_bytes(),
    );
    put(
        &dir,
        "arch_json",
        "seed-resnet-smallest",
        rn_small.to_json().as_bytes(),
    );
    put(&dir, "pth", "seed-one-tensor", &pth());

    // archs and spaces
    let tiny = SearchSpace::preset("ofa-mbv3-tiny").unwrap();
    for (name, a) in [
        ("seed-largest", ArchConfig::largest(&tiny)),
        ("seed-smallest", ArchConfig::smallest(&tiny)),
    ] {
        put(&dir, "arch_json", name, a.to_json().as_bytes());
    }
    for p in [
        "ofa-mbv3-tiny",
        "ofa-mbv3-small32",
        "ofa-proxyless-tiny",
        "ofa-resnet-tiny",
    ] {
        put(
            &dir,
            "space_json",
            &format!("seed-{p}"),
            SearchSpace::preset(p).unwrap().to_json().as_bytes(),
        );
    }

    // latency tables: every layer of the tiny preset's largest arch
    let largest = ArchConfig::largest(&tiny);
    let keys: Vec<String> = layer_keys(&tiny, &largest)
        .into_iter()
        .map(|(_, k)| k)
        .collect();
    let entries: serde_json::Map<String, serde_json::Value> = keys
        .iter()
        .map(|k| {
            (
                k.clone(),
                serde_json::json!({"count": 3, "mean": 0.25, "std": 0.01}),
            )
        })
        .collect();
    let table = serde_json::json!({
        "format": ofa_predictors::latency::FORMAT,
        "meta": {"device": "seed", "batch": 1},
        "tables": {largest.r.to_string(): entries},
    });
    put(
        &dir,
        "latency_json",
        "seed-tiny-largest",
        table.to_string().as_bytes(),
    );
    let yaml: String = keys
        .iter()
        .map(|k| format!("{k}:\n  count: 3\n  mean: 0.25\n  std: 0.01\n"))
        .collect();
    put(&dir, "latency_yaml", "seed-tiny-largest", yaml.as_bytes());

    // recipes: the built-in ones
    for r in [
        "smoke",
        "fmnist-short",
        "fmnist-short-no-ps",
        "smoke-proxyless",
        "fmnist-proxyless-short",
        "smoke-resnet",
        "fmnist-resnet-short",
    ] {
        let t = ofa_trainer::recipe::Recipe::builtin_toml(r).unwrap();
        put(&dir, "recipe_toml", &format!("seed-{r}"), t.as_bytes());
    }

    // data files
    let images = idx(&[2, 4, 4]);
    put(&dir, "idx", "seed-images", &images);
    put(&dir, "idx", "seed-labels", &idx(&[2]));
    put(&dir, "idx", "seed-images-gz", &gzip(&images));
    let cifar: Vec<u8> = (0..2)
        .flat_map(|i| std::iter::once(i as u8).chain((0..3072).map(move |j| ((i + j) % 251) as u8)))
        .collect();
    put(&dir, "cifar", "seed-two-images", &cifar);

    // an accuracy predictor for the tiny preset: one hidden layer of 4
    let enc = Encoding::library(&tiny);
    let d = enc.dim() as i64;
    let w0 = Tensor::ones([4, d], (Kind::Float, Device::Cpu)) * 0.01;
    let b0 = Tensor::zeros([4], (Kind::Float, Device::Cpu));
    let out_w = Tensor::ones([1, 4], (Kind::Float, Device::Cpu)) * 0.5;
    let m = ofa_predictors::AccuracyPredictor::from_layers(enc, &[(w0, b0)], &out_w, None, 0.8)
        .unwrap();
    let acc = tmp.path().join("accuracy.safetensors");
    m.save(&acc).unwrap();
    put(
        &dir,
        "accuracy_predictor",
        "seed-tiny",
        &std::fs::read(&acc).unwrap(),
    );

    // an accuracy dataset
    let line = |a: &ArchConfig, top1: f64| {
        let c = ofa_space::cost(&tiny, a);
        format!(
            "{{\"arch\":{},\"resolution\":{},\"top1\":{top1},\"macs\":{},\"params\":{},\"seconds\":1.5,\"calibration_images\":2000,\"eval_images\":5000}}\n",
            a.to_json(),
            a.r,
            c.macs,
            c.params
        )
    };
    let ds = line(&ArchConfig::largest(&tiny), 88.5) + &line(&ArchConfig::smallest(&tiny), 85.25);
    put(&dir, "accuracy_dataset", "seed-two", ds.as_bytes());
    eprintln!("seeds written to {}", dir.display());
}
