//! What the in-process server tests share: the shipped package, its space, and a request.

// Each test binary uses its own share of these.
#![allow(dead_code)]

use std::path::PathBuf;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use ofa_space::{ArchConfig, SearchSpace};
use serde_json::Value;
use tower::ServiceExt;

/// The package `checkpoints/fashion-mnist` the project ships.
pub fn shipped() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../checkpoints/fashion-mnist"
    ))
}

/// The shipped package's search space (from its card).
pub fn shipped_space() -> SearchSpace {
    let card: Value = serde_json::from_slice(
        &std::fs::read(shipped().join("card.json")).expect("the shipped card"),
    )
    .expect("card JSON");
    SearchSpace::from_json(&card["space"].to_string()).expect("the shipped space")
}

/// `POST /v1/subnets` of `arch` on the shipped package: the subnet's id.
pub async fn post_arch(app: &axum::Router, arch: &ArchConfig) -> String {
    let body = serde_json::json!({"supernet": "fashion-mnist", "arch": arch});
    let (status, rec) = call(app, "POST", "/v1/subnets", Some(body)).await;
    assert_eq!(status, StatusCode::OK, "{rec}");
    rec["id"].as_str().expect("an id").to_string()
}

/// One request to `app`, in process: its status and body bytes.
pub async fn call_raw(
    app: &axum::Router,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, bytes::Bytes) {
    let mut req = Request::builder().method(method).uri(path);
    if body.is_some() {
        req = req.header("content-type", "application/json");
    }
    let req = req
        .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
        .expect("a request");
    let resp = app
        .clone()
        .oneshot(req)
        .await
        .unwrap_or_else(|e| match e {});
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 26)
        .await
        .expect("a body");
    (status, bytes)
}

/// [`call_raw`], its body read as JSON (`Null` when it is not).
pub async fn call(
    app: &axum::Router,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let (status, bytes) = call_raw(app, method, path, body).await;
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}
