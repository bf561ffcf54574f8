//! The service called in process on its router (no socket, no spawned binary, no training run):
//! the shipped package, its routes and their JSON errors.

mod common;

use axum::http::StatusCode;
use common::{call, post_arch, shipped, shipped_space};
use ofa_server::{ServeConfig, Server};
use serde_json::json;

async fn app() -> axum::Router {
    let cfg = ServeConfig {
        packages: vec![shipped()],
        addr: ([127, 0, 0, 1], 0).into(),
        threads: 1,
        ..ServeConfig::default()
    };
    Server::bind(cfg)
        .await
        .expect("the shipped package serves")
        .router()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_and_their_errors_on_the_shipped_package() {
    let app = app().await;
    let (status, list) = call(&app, "GET", "/v1/supernets", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["supernets"][0]["name"], "fashion-mnist", "{list}");
    let (_, info) = call(&app, "GET", "/v1/supernets/fashion-mnist", None).await;
    let hw = &info["hardware"][0];
    let (lo, hi) = (
        hw["latency_ms"]["min"].as_f64().expect("min"),
        hw["latency_ms"]["max"].as_f64().expect("max"),
    );
    let hardware = hw["name"].as_str().expect("a hardware name").to_string();
    // a search, answered with a record whose prediction fits the budget
    let budget = (lo + hi) / 2.0;
    let (status, rec) = call(
        &app,
        "POST",
        "/v1/subnets",
        Some(json!({"supernet": "fashion-mnist", "hardware": hardware,
                    "constraints": {"latency_ms": budget}})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{rec}");
    assert!(rec["predicted"]["latency_ms"].as_f64().expect("latency") <= budget);
    // errors: a status and a stable code each
    let cases = [
        ("GET", "/nope", None, StatusCode::NOT_FOUND, "not_found"),
        (
            "DELETE",
            "/v1/subnets",
            None,
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
        (
            "GET",
            "/v1/supernets/nope",
            None,
            StatusCode::NOT_FOUND,
            "unknown_supernet",
        ),
        (
            "GET",
            "/v1/subnets/xyz",
            None,
            StatusCode::BAD_REQUEST,
            "invalid_id",
        ),
        (
            "POST",
            "/v1/subnets",
            Some(json!({"supernet": "fashion-mnist", "constraints": {"flops": 1}})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
        ),
        (
            "POST",
            "/v1/subnets",
            Some(json!({"supernet": "fashion-mnist", "constraints": {"macs_m": -1}})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_constraint",
        ),
        (
            "POST",
            "/v1/subnets",
            Some(json!({"supernet": "fashion-mnist", "hardware": hardware,
                        "constraints": {"latency_ms": lo / 2.0}})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "infeasible",
        ),
        (
            "POST",
            "/v1/pareto",
            Some(json!({"supernet": "fashion-mnist", "objective": "flops"})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_objective",
        ),
    ];
    for (method, path, body, want, code) in cases {
        let (status, v) = call(&app, method, path, body).await;
        assert_eq!(status, want, "{method} {path}: {v}");
        assert_eq!(v["error"]["code"], code, "{method} {path}: {v}");
    }
    // the infeasible answer states the smallest achievable latency
    let (_, v) = call(
        &app,
        "POST",
        "/v1/subnets",
        Some(json!({"supernet": "fashion-mnist", "hardware": hardware,
                    "constraints": {"latency_ms": lo / 2.0}})),
    )
    .await;
    let min = v["error"]["feasible_minimum"]["latency_ms"]
        .as_f64()
        .expect("a minimum");
    assert!((min - lo).abs() <= 1e-6 * lo, "{v}");
}

/// Two replicas on one cache folder that recalibrate BN differently: each serves the weights it
/// cuts, never the other's file for the same id (the cut settings are part of the weights key).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_that_cut_differently_never_serve_each_others_weights() {
    let cache = tempfile::tempdir().expect("a temporary folder");
    let replica = |images: usize| {
        let cfg = ServeConfig {
            packages: vec![shipped()],
            addr: ([127, 0, 0, 1], 0).into(),
            threads: 1,
            cache_dir: Some(cache.path().to_path_buf()),
            recalibration: ofa_package::measure::Recalibration {
                images,
                ..Default::default()
            },
            ..ServeConfig::default()
        };
        async move {
            Server::bind(cfg)
                .await
                .expect("the shipped package serves")
                .router()
        }
    };
    let space = shipped_space();
    let arch = ofa_space::ArchConfig::smallest(&space);
    let mut served = Vec::new();
    for images in [2000, 200] {
        let app = replica(images).await;
        let id = post_arch(&app, &arch).await;
        let (status, bytes) =
            common::call_raw(&app, "GET", &format!("/v1/subnets/{id}/weights"), None).await;
        assert_eq!(status, StatusCode::OK);
        served.push((id, bytes));
    }
    assert_eq!(served[0].0, served[1].0, "one arch, one id");
    assert_ne!(
        served[0].1, served[1].1,
        "the second replica served the first one's recalibration"
    );
    let files = std::fs::read_dir(cache.path().join("weights"))
        .expect("the weights folder")
        .count();
    assert_eq!(files, 2, "one weights file per cut setting");
}

/// Bytes of the cache entries under `dir` (temporary files aside).
fn cached_bytes(dir: &std::path::Path) -> (u64, usize) {
    let (mut bytes, mut files) = (0, 0);
    for kind in std::fs::read_dir(dir).expect("the cache folder").flatten() {
        if kind.file_name() == "hardware" || !kind.path().is_dir() {
            continue;
        }
        for f in std::fs::read_dir(kind.path())
            .expect("a kind folder")
            .flatten()
        {
            if !f.file_name().to_string_lossy().starts_with('.') {
                bytes += f.metadata().expect("metadata").len();
                files += 1;
            }
        }
    }
    (bytes, files)
}

/// A stream of distinct explicit archs cannot fill the disk: the folder stays within its bound,
/// the least recently used records go first, and a killed write's temporary file is removed at
/// start-up (a live one is left alone).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_disk_cache_stays_within_its_bound() {
    let cache = tempfile::tempdir().expect("a temporary folder");
    let subnets = cache.path().join("subnet");
    std::fs::create_dir_all(&subnets).expect("a folder");
    let stale = subnets.join(".tmpKilled");
    std::fs::write(&stale, b"half a record").expect("a planted file");
    let hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    std::fs::File::options()
        .write(true)
        .open(&stale)
        .and_then(|f| f.set_modified(hour_ago))
        .expect("an old file");
    let live = subnets.join(".tmpWriting");
    std::fs::write(&live, b"being written").expect("a planted file");

    let max = 16 << 10;
    let app = Server::bind(ServeConfig {
        packages: vec![shipped()],
        addr: ([127, 0, 0, 1], 0).into(),
        threads: 1,
        cache_dir: Some(cache.path().to_path_buf()),
        cache_dir_bytes: max,
        ..ServeConfig::default()
    })
    .await
    .expect("the shipped package serves")
    .router();
    assert!(!stale.exists(), "a killed write's temporary file stayed");
    assert!(live.exists(), "a recent temporary file was removed");

    let space = shipped_space();
    let base = ofa_space::ArchConfig::smallest(&space);
    let n = 100;
    let mut last = String::new();
    for k in 0..n {
        // distinct archs: k's base-3 digits as the first blocks' kernel sizes
        let mut arch = base.clone();
        let mut rest = k;
        for ks in arch.ks.iter_mut().take(5) {
            *ks = space.ks_list[rest % 3];
            rest /= 3;
        }
        last = post_arch(&app, &arch).await;
        let (bytes, _) = cached_bytes(cache.path());
        assert!(
            bytes <= max,
            "{bytes} bytes on disk after {} records, bound {max}",
            k + 1
        );
    }
    let (_, files) = cached_bytes(cache.path());
    assert!(files < n, "nothing was evicted ({files} files)");
    assert!(
        subnets.join(&last).exists(),
        "the newest record was evicted"
    );
}

/// Every `$ref` of the OpenAPI document names a schema it holds (types shared with other crates,
/// such as `Constraints` and `Metric`, included).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_resolves_every_reference() {
    fn refs(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, x) in m {
                    match (k.as_str(), x.as_str()) {
                        ("$ref", Some(r)) => out.push(r.to_string()),
                        _ => refs(x, out),
                    }
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
            _ => {}
        }
    }
    let app = app().await;
    let (status, doc) = call(&app, "GET", "/openapi.json", None).await;
    assert_eq!(status, StatusCode::OK);
    let mut found = Vec::new();
    refs(&doc, &mut found);
    assert!(found.iter().any(|r| r.ends_with("/Metric")), "{found:?}");
    for r in found {
        let name = r
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("a reference outside the schemas: {r}"));
        assert!(
            doc["components"]["schemas"][name].is_object(),
            "{r} does not resolve"
        );
    }
}
