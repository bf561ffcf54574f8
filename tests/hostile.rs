//! Files from strangers: a `.pth` whose pickle would run code under
//! `torch.load(weights_only=False)` is refused with the global it names, and a zip bomb by its
//! declared sizes, before anything is interpreted or inflated; nothing is written.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write;
use std::path::Path;

use common::{fails_with, ofa, run_ok, s};

/// A torch.save-style zip archive holding `pickle` as `archive/data.pkl` (deflated when asked).
fn archive(path: &Path, pickle: &[u8], extra: Option<(&str, &[u8])>, deflate: bool) {
    let mut z = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    let method = if deflate {
        zip::CompressionMethod::Deflated
    } else {
        zip::CompressionMethod::Stored
    };
    let o = zip::write::SimpleFileOptions::default().compression_method(method);
    z.start_file("archive/data.pkl", o).unwrap();
    z.write_all(pickle).unwrap();
    if let Some((name, data)) = extra {
        z.start_file(name, o).unwrap();
        z.write_all(data).unwrap();
    }
    z.finish().unwrap();
}

#[test]
fn a_pickle_that_would_run_code_is_refused_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    // {"state_dict": os.system("touch PWNED")}: what torch.load(weights_only=False) would run
    let evil = tmp.path().join("evil.pth");
    let mut p = b"\x80\x02}q\x00X\x0a\x00\x00\x00state_dictq\x01cos\nsystem\nq\x02X\x0b\x00\x00\x00touch PWNEDq\x03\x85q\x04Rq\x05s.".to_vec();
    archive(&evil, &p, None, false);
    let out = tmp.path().join("out.safetensors");
    for args in [
        vec!["import", s(&evil), "--out", s(&out)],
        vec!["inspect", s(&evil)],
    ] {
        fails_with(ofa().args(&args), "`os.system`");
    }
    // the same through protocol 4's STACK_GLOBAL
    p = b"\x80\x04\x95\x2a\x00\x00\x00\x00\x00\x00\x00\x8c\x08builtins\x94\x8c\x04exec\x94\x93\x94\x8c\x0fprint('pwned')\x94\x85\x94R\x94.".to_vec();
    let evil4 = tmp.path().join("evil4.pth");
    archive(&evil4, &p, None, false);
    fails_with(
        ofa().args(["import", s(&evil4), "--out", s(&out)]),
        "`builtins.exec`",
    );
    assert!(!out.exists() && !tmp.path().join("PWNED").exists());
}

#[test]
fn a_zip_bomb_is_refused_by_its_declared_sizes() {
    let tmp = tempfile::tempdir().unwrap();
    let bomb = tmp.path().join("bomb.pth");
    let ok = b"\x80\x02ccollections\nOrderedDict\nq\x00)Rq\x01.";
    // 256 MiB of zeros deflate to a few hundred KiB
    let zeros = vec![0u8; 256 << 20];
    archive(&bomb, ok, Some(("archive/data/0", &zeros)), true);
    drop(zeros);
    assert!(std::fs::metadata(&bomb).unwrap().len() < 2 << 20);
    let out = tmp.path().join("out.safetensors");
    fails_with(
        ofa().args(["import", s(&bomb), "--out", s(&out)]),
        "zip bomb",
    );
    assert!(!out.exists());
}

#[test]
fn a_gzip_bomb_dataset_is_refused_before_it_fills_memory() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir(&data).unwrap();
    // an IDX header for 4096 images of 256×256, then 256 MiB of zeros: about 250 KiB gzipped
    let mut idx = vec![0, 0, 0x08, 3];
    for d in [4096u32, 256, 256] {
        idx.extend(d.to_be_bytes());
    }
    let f = std::fs::File::create(data.join("train-images-idx3-ubyte.gz")).unwrap();
    let mut gz = flate2::write::GzEncoder::new(f, flate2::Compression::fast());
    gz.write_all(&idx).unwrap();
    let chunk = vec![0u8; 1 << 20];
    for _ in 0..256 {
        gz.write_all(&chunk).unwrap();
    }
    gz.finish().unwrap();
    let mut labels = vec![0, 0, 0x08, 1];
    labels.extend(4096u32.to_be_bytes());
    labels.extend(vec![0u8; 4096]);
    std::fs::write(data.join("train-labels-idx1-ubyte"), labels).unwrap();
    let run = tmp.path().join("run");
    fails_with(
        ofa().args([
            "train",
            "--recipe",
            "smoke",
            "--data",
            s(&data),
            "--out",
            s(&run),
        ]),
        "gzip bomb",
    );
}

#[test]
fn the_references_own_checkpoints_still_load() {
    let fx = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ofa-tiny");
    for f in ["supernet_current_naming.pth", "supernet_legacy_naming.pth"] {
        let out = run_ok(ofa().args(["inspect", s(&fx.join(f))]));
        assert!(out.contains("supernet"), "{f}: {out}");
    }
}
