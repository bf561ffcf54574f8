//! Work outlives the request that started it (in its own test binary: it reads the process's
//! metrics). A cut slower than the request timeout still fills the cache and is served on a later
//! request, computed once in all.

mod common;

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use common::{call_raw as call, post_arch, shipped, shipped_space};
use ofa_server::{ServeConfig, Server};
use ofa_space::ArchConfig;
use serde_json::Value;

fn counter(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_slower_than_the_request_timeout_is_served_later_computed_once() {
    // A timeout that nothing but a cache hit meets: a request that has to wait for the cut gives
    // up on its first poll, whatever the machine's speed.
    let cfg = ServeConfig {
        packages: vec![shipped()],
        addr: ([127, 0, 0, 1], 0).into(),
        threads: 1,
        request_timeout: Duration::from_nanos(1),
        ..ServeConfig::default()
    };
    let app = Server::bind(cfg)
        .await
        .expect("the shipped package serves")
        .router();
    let id = post_arch(&app, &ArchConfig::largest(&shipped_space())).await;
    let weights = format!("/v1/subnets/{id}/weights");

    let (status, body) = call(&app, "GET", &weights, None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body:?}");
    let err: Value = serde_json::from_slice(&body).expect("a JSON error");
    assert_eq!(err["error"]["code"], "timeout", "{err}");

    // Later requests time out too while the cut runs, then one finds it done. Before the work
    // ran detached, each timed-out request threw its cut away and none was ever served.
    let guard = Instant::now() + Duration::from_secs(600);
    let mut timeouts = 1;
    let served = loop {
        let (status, body) = call(&app, "GET", &weights, None).await;
        if status == StatusCode::OK {
            break body;
        }
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body:?}");
        timeouts += 1;
        assert!(
            Instant::now() < guard,
            "the cut was never served ({timeouts} timeouts)"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(served.len() > 1000, "a safetensors file");
    let (_, metrics) = call(&app, "GET", "/metrics", None).await;
    let metrics = String::from_utf8_lossy(&metrics);
    assert_eq!(
        counter(&metrics, "ofa_computations_total{kind=\"weights\"}"),
        1.0,
        "one cut for {timeouts} timed-out requests and the served one:\n{metrics}"
    );
    // and it is a cache hit from now on
    let (status, again) = call(&app, "GET", &weights, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again, served);
}
