//! Streaming image folders: torchvision's file order, bad data, batches that do not depend on the
//! worker count or the shard, the fused colour pass against the tensor one, and the `paper`
//! recipe (shortened) starting on an ImageNet-layout folder without decoding it up front.

#![allow(clippy::unwrap_used)]
// A test reports what it measured.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use ofa_trainer::augment::{color_normalize, AugmentConfig, SampleAugment};
use ofa_trainer::data::{load_any, DataError, Split};
use ofa_trainer::folder::{
    centre_offset, jitter_normalize, scan, write_synthetic_folder, FolderStream, JpegDecoder,
};
use ofa_trainer::loader::{BatchPlan, Loader, TrainData};
use ofa_trainer::recipe::Recipe;
use ofa_trainer::run::{train, Outcome, Silent, TrainOptions};
use serde_json::Value;
use tch::{Device, Kind, Tensor};

fn touch_jpeg(path: &Path, w: u32, h: u32, v: u8) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    image::RgbImage::from_pixel(w, h, image::Rgb([v, v / 2, 255 - v]))
        .save(path)
        .unwrap();
}

fn names(samples: &[ofa_trainer::folder::Sample], root: &Path) -> Vec<(String, i64)> {
    samples
        .iter()
        .map(|s| {
            let rel = s.path.strip_prefix(root).unwrap().to_string_lossy();
            (rel.into_owned(), s.label)
        })
        .collect()
}

#[test]
fn scan_follows_torchvision_order_and_names_bad_layouts() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    // Sorted folders (`sorted(os.walk(…))`), then sorted names within each: `b/sub/c.png` comes
    // before `b/sub-2/d.jpeg`, though a sort of whole paths would put it after.
    for f in [
        "train/b/z.jpg",
        "train/b/a.JPG",
        "train/b/sub/c.png",
        "train/b/sub-2/d.jpeg",
        "train/a/1.jpg",
        "val/b/v.jpg",
    ] {
        touch_jpeg(&d.join(f), 8, 6, 100);
    }
    std::fs::write(d.join("train/a/notes.txt"), "not an image").unwrap();
    std::fs::write(
        d.join("train/a/x.webp"),
        "a format read by torchvision, not here",
    )
    .unwrap();
    let ix = scan(d).unwrap();
    assert_eq!(ix.classes, ["a", "b"]);
    assert_eq!(
        names(&ix.train, &d.join("train")),
        [
            ("a/1.jpg".to_string(), 0),
            ("b/a.JPG".into(), 1),
            ("b/z.jpg".into(), 1),
            ("b/sub/c.png".into(), 1),
            ("b/sub-2/d.jpeg".into(), 1),
        ]
    );
    assert_eq!(
        names(ix.test.as_ref().unwrap(), &d.join("val")),
        [("b/v.jpg".to_string(), 1)]
    );
    assert_eq!(ix.skipped, 1, "the .webp file is counted, the .txt ignored");

    // A val class train does not have.
    touch_jpeg(&d.join("val/zebra/1.jpg"), 8, 6, 1);
    let e = scan(d).unwrap_err().to_string();
    assert!(e.contains("zebra") && e.contains("not a class"), "{e}");
    std::fs::remove_dir_all(d.join("val/zebra")).unwrap();

    // An empty class.
    std::fs::create_dir_all(d.join("train/c")).unwrap();
    let e = scan(d).unwrap_err().to_string();
    assert!(e.contains("train/c") && e.contains("no .png/.jpg"), "{e}");
    std::fs::remove_dir_all(d.join("train/c")).unwrap();

    // A symlink loop.
    std::os::unix::fs::symlink(d.join("train/b"), d.join("train/b/sub/loop")).unwrap();
    let e = scan(d).unwrap_err().to_string();
    assert!(e.contains("symlink loop"), "{e}");
    std::fs::remove_file(d.join("train/b/sub/loop")).unwrap();

    // A folder that is not there.
    let e = scan(&d.join("missing")).unwrap_err();
    assert!(matches!(e, DataError::Io { .. }), "{e}");
}

fn plan(batch: usize, shard: Option<(usize, usize)>) -> BatchPlan {
    BatchPlan {
        seed: 5,
        phase: 1,
        batch_size: batch,
        resolutions: vec![24, 32],
        channels: 3,
        augment: AugmentConfig::imagenet(),
        shard,
    }
}

fn batches(data: &TrainData, p: &BatchPlan, workers: usize) -> Vec<(Tensor, Tensor)> {
    Loader::new(data, p, 0, 5, workers, 2)
        .map(|b| {
            let b = b.unwrap();
            (b.x, b.y)
        })
        .collect()
}

#[test]
fn batches_do_not_depend_on_workers_and_shards_concatenate() {
    tch::set_num_threads(1);
    let tmp = tempfile::tempdir().unwrap();
    write_synthetic_folder(tmp.path(), 3, 6, (40, 30), 1).unwrap();
    let ix = scan(tmp.path()).unwrap();
    let stream = TrainData::Stream(Arc::new(FolderStream::new(
        ix.train.clone(),
        JpegDecoder::default(),
        0,
    )));
    let memory = TrainData::Memory(load_any(tmp.path(), 36, false).unwrap().train);
    for data in [&stream, &memory] {
        let one = batches(data, &plan(6, None), 1);
        let three = batches(data, &plan(6, None), 3);
        assert_eq!(one.len(), 5);
        for (a, b) in one.iter().zip(&three) {
            assert!(a.0.equal(&b.0) && a.1.equal(&b.1));
        }
        // Two ranks' shards of each step, concatenated, are the global batch.
        let r0 = batches(data, &plan(6, Some((0, 2))), 2);
        let r1 = batches(data, &plan(6, Some((1, 2))), 1);
        for ((g, a), b) in one.iter().zip(&r0).zip(&r1) {
            assert_eq!(a.0.size()[0], 3);
            assert!(Tensor::cat(&[&a.0, &b.0], 0).equal(&g.0));
            assert!(Tensor::cat(&[&a.1, &b.1], 0).equal(&g.1));
        }
        // Normalised images, finite.
        let x = &one[0].0;
        assert_eq!(x.kind(), Kind::Float);
        assert!(x.isfinite().all().int64_value(&[]) == 1);
    }
    // DCT-scaled and full-size jpeg-decoder produce the same shapes and labels.
    for dec in [JpegDecoder::Full, JpegDecoder::Scaled] {
        let s = FolderStream::new(ix.train.clone(), dec, 0);
        let (x, y) = s
            .train_batch(&[0, 7, 17], 0, 32, &AugmentConfig::imagenet(), [1, 2, 3])
            .unwrap();
        assert_eq!(x.size(), [3, 3, 32, 32]);
        assert_eq!(Vec::<i64>::try_from(&y).unwrap(), [0, 1, 2]);
    }
}

#[test]
fn bad_images_are_skipped_counted_and_stop_the_run_past_the_limit() {
    tch::set_num_threads(1);
    let tmp = tempfile::tempdir().unwrap();
    write_synthetic_folder(tmp.path(), 2, 4, (40, 30), 2).unwrap();
    let good = tmp.path().join("n00000000/000001.jpg");
    let bytes = std::fs::read(&good).unwrap();
    // A truncated JPEG and an HTML page saved as `.jpg` (a common scraping accident).
    std::fs::write(&good, &bytes[..bytes.len() / 3]).unwrap();
    std::fs::write(
        tmp.path().join("n00000001/000002.jpg"),
        "<html><body>404</body></html>",
    )
    .unwrap();
    let ix = scan(tmp.path()).unwrap();
    let cfg = AugmentConfig::imagenet();
    let all: Vec<usize> = (0..ix.train.len()).collect();
    let s = FolderStream::new(ix.train.clone(), JpegDecoder::default(), 5);
    let (x, y) = s.train_batch(&all, 0, 24, &cfg, [0, 0, 0]).unwrap();
    assert_eq!(x.size()[0], 8, "every slot is filled");
    // The truncated image's slot takes the next file (same class here); the HTML file's slot
    // takes the next one.
    assert_eq!(Vec::<i64>::try_from(&y).unwrap(), [0, 0, 0, 0, 1, 1, 1, 1]);
    let bad = s.bad_files();
    assert_eq!(bad.len(), 2, "{bad:?}");
    assert!(bad.iter().any(|(p, _)| p.ends_with("n00000001/000002.jpg")));
    // The same again: the same batch, the bad files counted once.
    let (x2, _) = s.train_batch(&all, 0, 24, &cfg, [0, 0, 0]).unwrap();
    assert!(x.equal(&x2));
    assert_eq!(s.bad_files().len(), 2);
    // Eval leaves bad files out.
    assert_eq!(s.eval_images(&all, 16, 0.875).unwrap().len(), 6);
    // Past the limit the run stops, naming the files.
    let s = FolderStream::new(ix.train, JpegDecoder::default(), 1);
    let e = s.train_batch(&all, 0, 24, &cfg, [0, 0, 0]).unwrap_err();
    assert!(
        matches!(
            e,
            DataError::TooManyBadImages {
                limit: 1,
                count: 2,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("000002.jpg"), "{e}");
    // Decoding into memory stops at the first bad file, naming it.
    let e = load_any(tmp.path(), 16, false).unwrap_err().to_string();
    assert!(
        e.contains("000001.jpg") && e.contains("cannot decode"),
        "{e}"
    );
}

#[test]
fn the_fused_colour_pass_is_the_tensor_one() {
    let r = 9usize;
    let rgb: Vec<u8> = (0..3 * r * r).map(|i| (i * 37 % 256) as u8).collect();
    let cfg = AugmentConfig::imagenet();
    for flip in [false, true] {
        let a = SampleAugment {
            top: 0,
            left: 0,
            height: r as i64,
            width: r as i64,
            flip,
            brightness: 1.09,
            saturation: 0.63,
        };
        let mut fused = vec![0f32; 3 * r * r];
        jitter_normalize(&rgb, r, &a, &cfg, &mut fused);
        // The tensor path: HWC bytes to a [1, 3, r, r] float in [0, 1], mirrored, jittered.
        let ri = r as i64;
        let mut x = Tensor::from_slice(&rgb)
            .reshape([ri, ri, 3])
            .permute([2, 0, 1])
            .unsqueeze(0)
            .to_kind(Kind::Float)
            / 255.0;
        if flip {
            x = x.flip([3]);
        }
        let want = color_normalize(x, &[1.09], &[0.63], &cfg);
        let got = Tensor::from_slice(&fused).reshape([1, 3, ri, ri]);
        let diff = (got - want).abs().max().double_value(&[]);
        assert!(diff < 1e-5, "flip {flip}: {diff}");
    }
}

#[test]
fn eval_images_resize_the_short_side_and_centre_crop() {
    let tmp = tempfile::tempdir().unwrap();
    // 30 wide, 20 high: columns striped, so the crop's left edge shows in the pixels.
    let img = image::RgbImage::from_fn(30, 20, |x, _| image::Rgb([(x * 8) as u8, 0, 0]));
    let path = tmp.path().join("c/a.png");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    img.save(&path).unwrap();
    let s = FolderStream::new(
        vec![ofa_trainer::folder::Sample { path, label: 0 }],
        JpegDecoder::default(),
        0,
    );
    // crop 1: no resize (short side 20), 30 − 20 = 10, offset 5.
    let split: Split = s.eval_images(&[0], 20, 1.0).unwrap();
    assert_eq!(split.images.size(), [1, 3, 20, 20]);
    assert_eq!(split.images.int64_value(&[0, 0, 0, 0]), 40, "column 5");
    // Resize(ceil(10 / 0.5) = 20) is the identity; CenterCrop(10) offsets 10 and 5.
    let split = s.eval_images(&[0], 10, 0.5).unwrap();
    assert_eq!(split.images.size(), [1, 3, 10, 10]);
    assert_eq!(split.images.int64_value(&[0, 0, 0, 0]), 80, "column 10");
    // CenterCrop's offset rounds half to even, as Python's `round`.
    assert_eq!([23, 25, 27, 24].map(|n| centre_offset(n, 20)), [2, 2, 4, 2]);
}

#[test]
fn the_paper_recipe_shortened_streams_an_imagenet_layout_folder() {
    tch::set_num_threads(1);
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("imagenet");
    write_synthetic_folder(&data.join("train"), 4, 10, (120, 90), 3).unwrap();
    write_synthetic_folder(&data.join("val"), 4, 2, (120, 90), 4).unwrap();
    let short = paper_shortened();
    let recipe = Recipe::from_toml(&short, "paper (shortened)").unwrap();
    assert_eq!(recipe.space, "ofa-mbv3-w1.0");
    let out = tmp.path().join("run");
    let opts = cpu_options(&data, 2);
    let o = train(recipe, &out, opts).unwrap();
    assert!(
        matches!(o, Outcome::Interrupted { global_step: 2 }),
        "{o:?}"
    );
    let run: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("run.json")).unwrap()).unwrap();
    assert_eq!(run["data_loading"], "stream");
    assert_eq!(run["train_images"], 36);
    let steps = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    assert!(steps.contains("\"kind\":\"step\""), "{steps}");
    // An HTML page saved as a JPEG, in the first batch (its file worked out as the run picks
    // it: the holdout taken out, then step 0's indices): skipped, and counted in the metrics at
    // the phase's end.
    let victim = spoil_step0_image(&data, 0);
    let out = tmp.path().join("run-bad");
    let recipe = Recipe::from_toml(&short, "paper (shortened)").unwrap();
    let opts = cpu_options(&data, 1);
    let o = train(recipe, &out, opts).unwrap();
    assert!(
        matches!(o, Outcome::Interrupted { global_step: 1 }),
        "{o:?}"
    );
    let data_line = data_line(&out);
    assert_eq!(data_line["bad_images"], 1, "{data_line}");
    assert_eq!(data_line["files"][0]["path"], victim.display().to_string());
}

/// Set in the children of the 2-rank test: the folder its parent prepared.
const RANK_ROLE: &str = "OFA_TRAINER_RANK_OF";

#[test]
fn two_ranks_stream_their_shards_and_count_every_ranks_bad_images() {
    const NAME: &str = "two_ranks_stream_their_shards_and_count_every_ranks_bad_images";
    if let Some(dir) = std::env::var_os(RANK_ROLE) {
        // A rank: one step of the shortened recipe, then the phase end.
        tch::set_num_threads(1);
        let dir = Path::new(&dir);
        let env = ofa_dist::LaunchEnv::from_env().unwrap().unwrap();
        let group =
            ofa_dist::ProcessGroup::gloo(&env, std::time::Duration::from_secs(600)).unwrap();
        let text = std::fs::read_to_string(dir.join("short.toml")).unwrap();
        let recipe = Recipe::from_toml(&text, "paper (shortened)").unwrap();
        let mut opts = cpu_options(&dir.join("imagenet"), 1);
        opts.group = Some(Arc::new(group));
        let o = train(recipe, &dir.join("run"), opts).unwrap();
        assert!(
            matches!(o, Outcome::Interrupted { global_step: 1 }),
            "{o:?}"
        );
        println!("rank {} ok", env.rank);
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("imagenet");
    write_synthetic_folder(&data.join("train"), 4, 10, (120, 90), 3).unwrap();
    write_synthetic_folder(&data.join("val"), 4, 2, (120, 90), 4).unwrap();
    let short = paper_shortened();
    std::fs::write(tmp.path().join("short.toml"), &short).unwrap();
    // The bad file in rank 1's shard (positions 2 and 3 of the global batch of 4) of step 0.
    spoil_step0_image(&data, 2);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    let exe = std::env::current_exe().unwrap();
    let ranks: Vec<_> = (0..2)
        .map(|rank| {
            std::process::Command::new(&exe)
                .args([NAME, "--exact", "--nocapture", "--test-threads", "1"])
                .env(RANK_ROLE, tmp.path())
                .env("RANK", rank.to_string())
                .env("WORLD_SIZE", "2")
                .env("MASTER_ADDR", "127.0.0.1")
                .env("MASTER_PORT", &port)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    // Both ranks end before anything is asserted, so a failure leaves no rank behind.
    let outs: Vec<_> = ranks
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    for (rank, out) in outs.into_iter().enumerate() {
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "rank {rank}: {text}");
        assert!(
            text.contains(&format!("rank {rank} ok")),
            "rank {rank}: {text}"
        );
    }
    let data_line = data_line(&tmp.path().join("run"));
    assert_eq!(data_line["bad_images"], 1, "{data_line}");
    assert_eq!(
        data_line["bad_images_per_rank"],
        serde_json::json!([0, 1]),
        "{data_line}"
    );
    assert_eq!(
        data_line["files"],
        serde_json::json!([]),
        "rank 0 names its own files"
    );
}

/// Replace the image at `position` of step 0's global batch of 4 (as a run of
/// [`paper_shortened`] picks it: the holdout taken out, then step 0's indices) with an HTML page
/// saved as a JPEG; its path.
fn spoil_step0_image(data: &Path, position: usize) -> std::path::PathBuf {
    let ix = scan(data).unwrap();
    let (rest, _) = ofa_package::holdout_indices(ix.train.len(), 4, 0);
    let step0 = BatchPlan {
        seed: 0,
        phase: 0,
        ..plan(4, None)
    };
    let i = step0.indices(rest.len(), 0)[position];
    let victim = ix.train[rest[i as usize] as usize].path.clone();
    std::fs::write(&victim, "<html></html>").unwrap();
    victim
}

/// The run's `"kind": "data"` metrics line.
fn data_line(run: &Path) -> Value {
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    metrics
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|v| v["kind"] == "data")
        .unwrap_or_else(|| panic!("no data line: {metrics}"))
}

/// The `paper` recipe at 4 images a batch, 32 px, one step a phase, streamed.
fn paper_shortened() -> String {
    let paper = Recipe::builtin_toml("paper").unwrap();
    let short = paper
        .replace("batch_size = 2048", "batch_size = 4")
        .replace("workers = 8", "workers = 2\ndata_loading = \"stream\"")
        .replace("holdout = 10000", "holdout = 4")
        .replace("images = 10000", "images = 4")
        .replace("calibration_images = 2000", "calibration_images = 4")
        .replace("batch_size = 200", "batch_size = 4")
        .replace(
            "space = \"ofa-mbv3-w1.0\"",
            "space = \"ofa-mbv3-w1.0\"\nresolutions = [32]",
        );
    one_step_phases(&short)
}

/// Train on the CPU from `data`, stopping after `steps` global steps.
fn cpu_options(data: &Path, steps: u64) -> TrainOptions {
    TrainOptions {
        data: Some(data.to_path_buf()),
        device: Device::Cpu,
        observer: Arc::new(Silent),
        stop: Arc::new(AtomicBool::new(false)),
        stop_after: Some(steps),
        group: None,
    }
}

/// Every phase's `epochs = N` / `warmup_epochs = N` becomes one step without warmup.
fn one_step_phases(toml: &str) -> String {
    toml.lines()
        .map(|l| {
            if l.starts_with("epochs = ") {
                "steps = 1".to_string()
            } else if l.starts_with("warmup_epochs = ") {
                "warmup_epochs = 0".to_string()
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}
