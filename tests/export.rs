//! `ofa export` and `ofa extract --onnx` as a user runs them, checked by an independent runtime:
//! tract runs the written ONNX files and its logits equal `ofa infer`'s within
//! 1e-4 · (1 + |value|); and bad input is a named error with nothing written.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};

use common::{fails_with, ofa, run_ok, s};
use ofa_onnx::check::{max_rel_diff as worst, tract_logits};
use ofa_supernet::checkpoint::read_safetensors;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ofa-tiny")
}

/// tract's logits through the ONNX file `model` for `x`.
fn tract_file(model: &Path, x: &tch::Tensor) -> Vec<f32> {
    tract_logits(&std::fs::read(model).unwrap(), x).unwrap()
}

/// `ofa infer`'s logits of `model` (with `arch` for a supernet) for the io file's input.
fn infer_logits(model: &Path, arch: Option<&str>, io: &Path, dir: &Path) -> Vec<f32> {
    let out = dir.join("logits.safetensors");
    let mut c = ofa();
    c.args([
        "infer",
        "--model",
        s(model),
        "--input",
        s(io),
        "--out",
        s(&out),
    ]);
    if let Some(a) = arch {
        c.args(["--arch", a]);
    }
    run_ok(&mut c);
    let t = read_safetensors(&out).unwrap();
    Vec::<f32>::try_from(t.tensors["logits"].flatten(0, -1)).unwrap()
}

#[test]
fn exported_files_run_under_tract_as_under_ofa_infer() {
    let tmp = tempfile::tempdir().unwrap();
    let fx = fixtures();
    let io = fx.join("io_3.safetensors");
    let x = read_safetensors(&io).unwrap().tensors["input"].shallow_clone();
    // the reference's own subnet file, BN kept and folded, two opsets
    let subnet = fx.join("subnet_3.safetensors");
    let want = infer_logits(&subnet, None, &io, tmp.path());
    for (extra, name) in [
        (&[][..], "a.onnx"),
        (&["--fold-bn", "--opset", "18"][..], "b.onnx"),
    ] {
        let out = tmp.path().join(name);
        run_ok(
            ofa()
                .args(["export", "--model", s(&subnet), "--out", s(&out)])
                .args(extra),
        );
        let e = worst(&tract_file(&out, &x), &want);
        assert!(e <= 1e-4, "{name}: {e}");
    }
    // a supernet with an arch: fixture config 3 (a random subnet), at its resolution
    let sup = fx.join("supernet.safetensors");
    let arch = tmp.path().join("arch.json");
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fx.join("subnets.json")).unwrap()).unwrap();
    let c = &cfg.as_array().unwrap()[3];
    std::fs::write(
        &arch,
        serde_json::json!({"ks": c["ks"], "e": c["e"], "d": c["d"], "r": c["resolution"]})
            .to_string(),
    )
    .unwrap();
    let out = tmp.path().join("c.onnx");
    run_ok(ofa().args([
        "export",
        "--model",
        s(&sup),
        "--arch",
        s(&arch),
        "--out",
        s(&out),
    ]));
    let want = infer_logits(&sup, Some(s(&arch)), &io, tmp.path());
    assert!(worst(&tract_file(&out, &x), &want) <= 1e-4);
}

#[test]
fn bad_exports_are_named_errors_and_write_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let fx = fixtures();
    let sup = fx.join("supernet.safetensors");
    let out = tmp.path().join("m.onnx");
    fails_with(
        ofa().args(["export", "--model", s(&sup), "--out", s(&out)]),
        "give --arch",
    );
    // `ofa export --model SUPERNET --arch largest` and then `extra`
    let largest = |extra: &[&str]| {
        let mut c = ofa();
        c.args(["export", "--model", s(&sup), "--arch", "largest"])
            .args(extra);
        c
    };
    fails_with(
        &mut largest(&["--format", "tflite", "--out", s(&out)]),
        "tflite",
    );
    fails_with(
        &mut largest(&["--opset", "13", "--out", s(&out)]),
        "opset 13",
    );
    // the output's parent is a file: nothing can be written there
    let file = tmp.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    fails_with(&mut largest(&["--out", s(&file.join("m.onnx"))]), "a-file");
    fails_with(
        ofa().args([
            "extract",
            "--supernet",
            s(&sup),
            "--arch",
            "largest",
            "--out",
            s(&out),
            "--onnx",
        ]),
        "ofa export",
    );
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        left,
        vec![std::ffi::OsString::from("a-file")],
        "something was written"
    );
}
