//! Dataset readers: real formats, deterministic splits, bad data named by file.

#![allow(clippy::unwrap_used)]
// A test reports what it measured.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::io::Write;
use std::path::Path;

use ofa_trainer::data::{
    load_cifar10_dir, load_dir, load_idx_dir, read_idx, DataError, FASHION_MNIST_DIR,
};

fn idx_bytes(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut v = vec![0, 0, 0x08, dims.len() as u8];
    for d in dims {
        v.extend_from_slice(&d.to_be_bytes());
    }
    v.extend_from_slice(data);
    v
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn write_mnist(dir: &Path, n: u32, gzip: bool) {
    let images: Vec<u8> = (0..n * 4 * 4).map(|i| (i % 251) as u8).collect();
    let labels: Vec<u8> = (0..n).map(|i| (i % 3) as u8).collect();
    let (i, l) = (idx_bytes(&[n, 4, 4], &images), idx_bytes(&[n], &labels));
    if gzip {
        std::fs::write(dir.join("train-images-idx3-ubyte.gz"), gz(&i)).unwrap();
        std::fs::write(dir.join("train-labels-idx1-ubyte.gz"), gz(&l)).unwrap();
    } else {
        std::fs::write(dir.join("train-images-idx3-ubyte"), i).unwrap();
        std::fs::write(dir.join("train-labels-idx1-ubyte"), l).unwrap();
    }
}

#[test]
fn idx_raw_and_gzip_and_validation_split() {
    for gzip in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        write_mnist(dir.path(), 20, gzip);
        let ds = load_dir(dir.path()).unwrap();
        assert_eq!(ds.train.images.size(), vec![20, 1, 4, 4]);
        assert_eq!(ds.n_classes, 3);
        assert!(ds.test.is_none());
        assert_eq!(ds.train.images.int64_value(&[1, 0, 0, 1]), 17);
        let (tr, va) = ds.train.split_validation(5, 7);
        assert_eq!((tr.len(), va.len()), (15, 5));
        let (tr2, va2) = ds.train.split_validation(5, 7);
        assert!(
            va.labels.equal(&va2.labels) && tr.images.equal(&tr2.images),
            "deterministic"
        );
        let (_, va3) = ds.train.split_validation(5, 8);
        assert!(!va3.images.equal(&va.images), "seed matters");
    }
}

#[test]
fn bad_idx_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_mnist(d, 10, false);
    let img = d.join("train-images-idx3-ubyte");
    let good = std::fs::read(&img).unwrap();
    std::fs::write(&img, &good[..good.len() - 3]).unwrap();
    let e = load_idx_dir(d).unwrap_err().to_string();
    assert!(
        e.contains("train-images-idx3-ubyte") && e.contains("truncated"),
        "{e}"
    );
    let mut wrong = good.clone();
    wrong[0] = 7;
    std::fs::write(&img, &wrong).unwrap();
    let e = read_idx(&img).unwrap_err().to_string();
    assert!(e.contains("wrong magic"), "{e}");
    std::fs::write(&img, &good).unwrap();
    std::fs::write(d.join("train-labels-idx1-ubyte"), idx_bytes(&[9], &[0; 9])).unwrap();
    let e = load_idx_dir(d).unwrap_err().to_string();
    assert!(e.contains("9 labels for 10 images"), "{e}");
    std::fs::write(d.join("t.gz"), [0x1f, 0x8b, 1, 2, 3]).unwrap();
    let e = read_idx(&d.join("t.gz")).unwrap_err().to_string();
    assert!(e.contains("gzip"), "{e}");
    let e = load_dir(&d.join("missing")).unwrap_err();
    assert!(
        matches!(e, DataError::Io { .. }) && e.to_string().contains("missing"),
        "{e}"
    );
    let empty = tempfile::tempdir().unwrap();
    let e = load_dir(empty.path()).unwrap_err().to_string();
    assert!(e.contains("neither"), "{e}");
}

#[test]
fn cifar10_binary_batches() {
    let dir = tempfile::tempdir().unwrap();
    let mut rec = vec![0u8; 2 * 3073];
    rec[0] = 4;
    rec[3073] = 9;
    rec[3074] = 200;
    std::fs::write(dir.path().join("data_batch_1.bin"), &rec).unwrap();
    std::fs::write(dir.path().join("test_batch.bin"), &rec[..3073]).unwrap();
    let ds = load_dir(dir.path()).unwrap();
    assert_eq!(ds.train.images.size(), vec![2, 3, 32, 32]);
    assert_eq!(ds.train.labels.int64_value(&[1]), 9);
    assert_eq!(ds.train.images.int64_value(&[1, 0, 0, 0]), 200);
    assert_eq!(ds.test.as_ref().unwrap().len(), 1);
    std::fs::write(dir.path().join("data_batch_2.bin"), &rec[..100]).unwrap();
    let e = load_cifar10_dir(dir.path()).unwrap_err().to_string();
    assert!(
        e.contains("data_batch_2.bin") && e.contains("whole number"),
        "{e}"
    );
    rec[0] = 12;
    std::fs::write(dir.path().join("data_batch_2.bin"), &rec).unwrap();
    let e = load_cifar10_dir(dir.path()).unwrap_err().to_string();
    assert!(e.contains("label 12"), "{e}");
}

#[test]
fn fashion_mnist_from_the_debian_package() {
    let dir = Path::new(FASHION_MNIST_DIR);
    if !dir.is_dir() {
        eprintln!(
            "skipped: {FASHION_MNIST_DIR} absent (make setup installs dataset-fashion-mnist)"
        );
        return;
    }
    let ds = load_dir(dir).unwrap();
    assert_eq!(ds.train.images.size(), vec![60000, 1, 28, 28]);
    assert_eq!(ds.test.as_ref().unwrap().len(), 10000);
    assert_eq!(ds.n_classes, 10);
    let (tr, va) = ds.train.split_validation(10000, 0);
    assert_eq!((tr.len(), va.len()), (50000, 10000));
}

#[test]
fn image_folders_decode_resize_and_name_bad_files() {
    use ofa_trainer::data::load_any;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for (split, n) in [("train", 3u8), ("test", 1)] {
        for (ci, class) in ["cat", "dog"].iter().enumerate() {
            let cdir = d.join(split).join(class);
            std::fs::create_dir_all(&cdir).unwrap();
            for i in 0..n {
                // 40×20 images: red channel encodes the class.
                let img = image::RgbImage::from_fn(40, 20, |x, _| {
                    image::Rgb([100 * ci as u8 + 10, i * 20, x as u8])
                });
                img.save(cdir.join(format!("{i}.png"))).unwrap();
            }
        }
    }
    let ds = load_any(d, 16, false).unwrap();
    assert_eq!(ds.train.images.size(), vec![6, 3, 16, 16]);
    assert_eq!(ds.test.as_ref().unwrap().len(), 2);
    assert_eq!(ds.n_classes, 2);
    assert_eq!(ds.train.labels.int64_value(&[3]), 1);
    assert_eq!(
        ds.train.images.int64_value(&[4, 0, 5, 5]),
        110,
        "class 1 red value"
    );
    // Bad image and empty class are named.
    std::fs::write(d.join("train/dog/bad.png"), b"not a png").unwrap();
    let e = load_any(d, 16, false).unwrap_err().to_string();
    assert!(e.contains("bad.png") && e.contains("cannot decode"), "{e}");
    std::fs::remove_file(d.join("train/dog/bad.png")).unwrap();
    std::fs::create_dir_all(d.join("train/empty")).unwrap();
    let e = load_any(d, 16, false).unwrap_err().to_string();
    assert!(e.contains("empty") && e.contains("no .png/.jpg"), "{e}");
}
