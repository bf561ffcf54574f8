//! Every reader `ofa` points at files from outside, behind one entry point each: untrusted bytes
//! in, nothing out. A reader may refuse the bytes (that is its job); it must not panic, hang,
//! run anything or allocate more than the bytes justify.
//!
//! The libFuzzer targets in `fuzz/` call these functions, and `tests/replay.rs` replays the
//! regression corpus in `corpus/<target>/` through the same functions in every `make test`, so a
//! crash found once stays fixed without a nightly toolchain.
//!
//! Readers that take a path get the bytes written to a scratch file first (one per thread, under
//! the system temp dir), with the file name the real reader expects.

use std::cell::RefCell;
use std::path::{Path, PathBuf};

use ofa_space::{cost, ArchConfig, SearchSpace};
use tch::Device;

/// One fuzz target: its name (also its corpus folder and its `fuzz/fuzz_targets/` file) and its
/// entry point.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    /// Name, e.g. `pth`.
    pub name: &'static str,
    /// What it reads.
    pub what: &'static str,
    /// The entry point.
    pub run: fn(&[u8]),
}

/// All targets.
pub const TARGETS: &[Target] = &[
    Target {
        name: "supernet_safetensors",
        what: "supernet checkpoint (safetensors, `format`/`space`/`provenance` metadata)",
        run: supernet_safetensors,
    },
    Target {
        name: "subnet_safetensors",
        what: "subnet file (safetensors, `ofa_subnet` or reference `net_config` metadata)",
        run: subnet_safetensors,
    },
    Target {
        name: "pth",
        what: "reference `.pth` (zip + pickle, or legacy), imported with an inferred space",
        run: pth,
    },
    Target {
        name: "arch_json",
        what: "arch JSON (`ks`, `e`, `d`, `r`), validated against every preset",
        run: arch_json,
    },
    Target {
        name: "space_json",
        what: "search-space JSON (a supernet's `space` metadata)",
        run: space_json,
    },
    Target {
        name: "net_config_json",
        what: "the reference `net.config` JSON",
        run: net_config_json,
    },
    Target {
        name: "latency_json",
        what: "latency table, ours (JSON)",
        run: latency_json,
    },
    Target {
        name: "latency_yaml",
        what: "latency table, the reference's `{R}_lookup_table.yaml`",
        run: latency_yaml,
    },
    Target {
        name: "recipe_toml",
        what: "training recipe (TOML)",
        run: recipe_toml,
    },
    Target {
        name: "idx",
        what: "IDX file (raw or gzip), as MNIST and Fashion-MNIST ship",
        run: idx,
    },
    Target {
        name: "cifar",
        what: "CIFAR-10 binary batch",
        run: cifar,
    },
    Target {
        name: "accuracy_predictor",
        what: "accuracy predictor (safetensors: ours, the reference's or the tutorial's naming)",
        run: accuracy_predictor,
    },
    Target {
        name: "accuracy_dataset",
        what: "accuracy dataset (JSON lines)",
        run: accuracy_dataset,
    },
];

/// The target called `name`.
pub fn target(name: &str) -> Option<&'static Target> {
    TARGETS.iter().find(|t| t.name == name)
}

thread_local! {
    static SCRATCH: RefCell<Option<tempfile::TempDir>> = const { RefCell::new(None) };
}

/// Write `data` as `name` in this thread's scratch folder (emptied first) and return its path.
fn scratch_file(name: &str, data: &[u8]) -> Option<PathBuf> {
    SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        if s.is_none() {
            // One thread of libtorch: the readers are serial, and spinning threads would only
            // slow a fuzzing run.
            tch::set_num_threads(1);
            *s = tempfile::Builder::new()
                .prefix("ofa-hostile-")
                .tempdir()
                .ok();
        }
        let dir = s.as_ref()?.path();
        for e in std::fs::read_dir(dir).ok()?.flatten() {
            let _ = std::fs::remove_file(e.path());
        }
        let p = dir.join(name);
        std::fs::write(&p, data).ok()?;
        Some(p)
    })
}

fn text(data: &[u8]) -> Option<&str> {
    std::str::from_utf8(data).ok()
}

/// Presets the arch-level readers are checked against.
fn presets() -> Vec<SearchSpace> {
    SearchSpace::PRESETS
        .iter()
        .filter_map(|n| SearchSpace::preset(n).ok())
        .collect()
}

/// What a caller does with an arch once it is valid for `space`.
fn use_arch(space: &SearchSpace, a: &ArchConfig) {
    if a.validate(space).is_ok() {
        let c = a.canonical(space);
        let _ = cost(space, &c);
        let _ = ofa_space::latency::layer_keys(space, &c);
        let _ = c.active_blocks(space);
        let _ = c.bottlenecks(space);
    }
}

/// A supernet checkpoint.
pub fn supernet_safetensors(data: &[u8]) {
    if let Some(p) = scratch_file("supernet.safetensors", data) {
        let _ = ofa_supernet::Supernet::load(&p, Device::Cpu);
    }
}

/// A subnet file, through `open_model` as `ofa infer` and `ofa eval` open it.
pub fn subnet_safetensors(data: &[u8]) {
    if let Some(p) = scratch_file("subnet.safetensors", data) {
        let _ = ofa_supernet::checkpoint::open_model(&p, Device::Cpu);
    }
}

/// A reference `.pth`, imported as `ofa import` does.
pub fn pth(data: &[u8]) {
    if let Some(p) = scratch_file("supernet.pth", data) {
        let _ = ofa_supernet::import::import_supernet(&p, &Default::default(), Device::Cpu);
    }
}

/// Arch JSON.
pub fn arch_json(data: &[u8]) {
    let Some(t) = text(data) else { return };
    if let Ok(a) = ArchConfig::from_json(t) {
        for s in presets() {
            use_arch(&s, &a);
        }
    }
}

/// Search-space JSON.
pub fn space_json(data: &[u8]) {
    let Some(t) = text(data) else { return };
    if let Ok(s) = SearchSpace::from_json(t) {
        let _ = s.blocks();
        use_arch(&s, &ArchConfig::largest(&s));
        use_arch(&s, &ArchConfig::smallest(&s));
    }
}

/// The reference `net.config` JSON.
pub fn net_config_json(data: &[u8]) {
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) {
        if let Ok(c) = ofa_supernet::SubnetConfig::from_net_config(&v) {
            let _ = c.to_net_config();
        }
    }
}

/// Our JSON latency table, and a prediction from it for every preset's largest arch.
pub fn latency_json(data: &[u8]) {
    if let Some(p) = scratch_file("table.json", data) {
        if let Ok(t) = ofa_predictors::LatencyTable::load(&p) {
            for s in presets() {
                let _ = t.predict(&s, &ArchConfig::largest(&s));
            }
        }
    }
}

/// The reference's YAML lookup table.
pub fn latency_yaml(data: &[u8]) {
    if let Some(p) = scratch_file("48_lookup_table.yaml", data) {
        let dir = p.parent().unwrap_or(Path::new("."));
        if let Ok(t) = ofa_predictors::LatencyTable::import_reference_dir(dir, "fuzz") {
            let _ = t.to_json();
            for s in presets() {
                let _ = t.predict(&s, &ArchConfig::largest(&s));
            }
        }
    }
}

/// A recipe.
pub fn recipe_toml(data: &[u8]) {
    let Some(t) = text(data) else { return };
    if let Ok(r) = ofa_trainer::recipe::Recipe::from_toml(t, "fuzz") {
        for p in &r.phases {
            let _ = (p.total_steps(100), p.warmup(100));
        }
        let _ = r.to_toml();
    }
}

/// An IDX file.
pub fn idx(data: &[u8]) {
    if let Some(p) = scratch_file("train-images-idx3-ubyte", data) {
        let _ = ofa_trainer::data::read_idx(&p);
    }
}

/// A CIFAR-10 binary batch.
pub fn cifar(data: &[u8]) {
    if let Some(p) = scratch_file("data_batch_1.bin", data) {
        let dir = p.parent().unwrap_or(Path::new("."));
        let _ = ofa_trainer::data::load_cifar10_dir(dir);
    }
}

/// An accuracy predictor, and a prediction from it where a preset fits.
pub fn accuracy_predictor(data: &[u8]) {
    if let Some(p) = scratch_file("accuracy.safetensors", data) {
        if let Ok(m) = ofa_predictors::AccuracyPredictor::load(&p, None) {
            for s in presets() {
                if m.check_space(&s, &s.resolutions).is_ok() {
                    let _ = m.predict(&ArchConfig::largest(&s));
                }
            }
        }
    }
}

/// An accuracy dataset.
pub fn accuracy_dataset(data: &[u8]) {
    if let Some(p) = scratch_file("dataset.jsonl", data) {
        let _ = ofa_predictors::dataset::read(&p);
    }
}
