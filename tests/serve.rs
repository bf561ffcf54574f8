//! `ofa serve` as a user runs it: the real binary on 127.0.0.1 (port 0), a real HTTP client, a
//! freshly trained smoke package with a predictor and a latency table of this CPU. Every server a
//! test starts is killed when its handle drops, also when the test fails.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use common::{ofa, run_ok, s, specialised_package, specialised_package_of};
use serde_json::{json, Value};
use sha2::Digest;
use ureq::http;

/// A running `ofa serve`.
struct Serve {
    child: Child,
    base: String,
}

impl Serve {
    fn start(pkg: &Path, extra: &[&str]) -> Serve {
        Serve::start_with_token_env(pkg, extra, None)
    }

    fn start_with_token_env(pkg: &Path, extra: &[&str], token: Option<&str>) -> Serve {
        let mut c = ofa();
        c.args(["serve", "--package", s(pkg), "--addr", "127.0.0.1:0"])
            .args(extra);
        match token {
            Some(t) => c.env("OFA_API_TOKEN", t),
            None => c.env_remove("OFA_API_TOKEN"),
        };
        c.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = c.spawn().unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let base = match line.trim().strip_prefix("listening on ") {
            Some(b) => b.to_string(),
            None => {
                let _ = child.kill();
                panic!("`ofa serve` did not start: {line:?}");
            }
        };
        Serve { child, base }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `host:port` of the server.
    fn addr(&self) -> String {
        self.base.trim_start_matches("http://").to_string()
    }

    /// Send `sig` (a name `kill` knows) to the server.
    fn signal(&self, sig: &str) {
        let pid = self.child.id().to_string();
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &pid])
            .status()
            .unwrap();
        assert!(ok.success(), "kill -{sig} {pid}");
    }

    /// Panic if the server has exited.
    fn assert_running(&mut self) {
        if let Some(st) = self.child.try_wait().unwrap() {
            panic!("the server exited: {st:?}");
        }
    }

    /// Its exit status, once it has exited.
    fn wait(mut self) -> std::process::ExitStatus {
        self.child.wait().unwrap()
    }

    /// SIGTERM, then the exit status.
    fn terminate(self) -> std::process::ExitStatus {
        self.signal("TERM");
        self.wait()
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(600))) // a hang guard, not a measure
        .build()
        .into()
}

/// One response: status, headers, body.
struct Reply {
    status: u16,
    headers: http::HeaderMap,
    body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    fn header(&self, n: &str) -> Option<&str> {
        self.headers.get(n).and_then(|v| v.to_str().ok())
    }
}

fn send(method: &str, url: &str, headers: &[(&str, &str)], body: Option<&[u8]>) -> Reply {
    let mut b = http::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let mut resp = match body {
        Some(body) => agent().run(b.body(body.to_vec()).unwrap()),
        None => agent().run(b.body(()).unwrap()),
    }
    .unwrap();
    Reply {
        status: resp.status().as_u16(),
        headers: resp.headers().clone(),
        body: resp
            .body_mut()
            .with_config()
            .limit(64 << 20)
            .read_to_vec()
            .unwrap(),
    }
}

fn get(url: &str) -> Reply {
    send("GET", url, &[], None)
}

fn post(url: &str, body: &Value) -> Reply {
    send(
        "POST",
        url,
        &[("content-type", "application/json")],
        Some(body.to_string().as_bytes()),
    )
}

/// The value of a Prometheus counter line `name{labels} value` (0 when absent).
fn metric(server: &Serve, series: &str) -> f64 {
    let text = String::from_utf8(get(&server.url("/metrics")).body).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// `f(0..n)` on `n` threads at once; the results in order.
fn concurrently<T: Send>(n: usize, f: impl Fn(usize) -> T + Sync) -> Vec<T> {
    std::thread::scope(|sc| {
        let f = &f;
        let hs: Vec<_> = (0..n).map(|i| sc.spawn(move || f(i))).collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

/// One package for every test (training and profiling it takes a while).
fn package() -> &'static Path {
    static PKG: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &PKG.get_or_init(|| {
        let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
        let pkg = specialised_package(tmp.path());
        (tmp, pkg)
    })
    .1
}

/// A budget between the package's extremes on `cpu`.
fn mid_latency(server: &Serve) -> f64 {
    mid_latency_of(server, "pkg")
}

/// A budget between the extremes of the package `name` on `cpu`.
fn mid_latency_of(server: &Serve, name: &str) -> f64 {
    let info = get(&server.url(&format!("/v1/supernets/{name}"))).json();
    let hw = &info["hardware"][0];
    assert_eq!(hw["name"], "cpu");
    let (lo, hi) = (
        hw["latency_ms"]["min"].as_f64().unwrap(),
        hw["latency_ms"]["max"].as_f64().unwrap(),
    );
    assert!(0.0 < lo && lo < hi, "{hw}");
    (lo + hi) / 2.0
}

#[test]
fn happy_path_matches_ofa_extract_and_runs_under_ofa_infer() {
    let pkg = package();
    let tmp = tempfile::tempdir().unwrap();
    let server = Serve::start(pkg, &[]);
    assert_eq!(get(&server.url("/healthz")).status, 200);
    assert_eq!(get(&server.url("/readyz")).status, 200);
    let list = get(&server.url("/v1/supernets")).json();
    assert_eq!(list["supernets"][0]["name"], "pkg");
    assert_eq!(list["supernets"][0]["space"]["resolutions"], json!([32]));

    let budget = mid_latency(&server);
    let req = json!({"supernet": "pkg", "hardware": "cpu", "constraints": {"latency_ms": budget}});
    let r = post(&server.url("/v1/subnets"), &req);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let rec = r.json();
    let id = rec["id"].as_str().unwrap().to_string();
    assert_eq!(id.len(), 32);
    assert!(rec["predicted"]["latency_ms"].as_f64().unwrap() <= budget);
    assert!(rec["predicted"]["top1"].as_f64().is_some());
    assert_eq!(rec["links"]["weights"], format!("/v1/subnets/{id}/weights"));
    // deterministic: the same request is the same subnet
    assert_eq!(
        post(&server.url("/v1/subnets"), &req).json()["id"],
        id.as_str()
    );
    // a request id is echoed, or made
    let echoed = send(
        "GET",
        &server.url("/healthz"),
        &[("x-request-id", "abc-123")],
        None,
    );
    assert_eq!(echoed.header("x-request-id"), Some("abc-123"));
    assert!(get(&server.url("/healthz"))
        .header("x-request-id")
        .is_some());

    let got = get(&server.url(&format!("/v1/subnets/{id}"))).json();
    assert_eq!(got["arch"], rec["arch"]);
    assert!(got["latency_ms_by_hardware"]["cpu"].as_f64().is_some());

    // weights: the bytes `ofa extract` writes for the same arch
    let w = get(&server.url(&format!("/v1/subnets/{id}/weights")));
    assert_eq!(w.status, 200);
    assert_eq!(w.header("content-type"), Some("application/octet-stream"));
    assert_eq!(
        w.header("content-length"),
        Some(w.body.len().to_string().as_str())
    );
    let etag = w.header("etag").unwrap().to_string();
    let arch = tmp.path().join("arch.json");
    std::fs::write(&arch, rec["arch"].to_string()).unwrap();
    let out = tmp.path().join("extracted");
    run_ok(ofa().args([
        "extract",
        "--package",
        s(pkg),
        "--arch",
        s(&arch),
        "--out",
        s(&out),
        "--onnx",
    ]));
    let offline = std::fs::read(out.join("subnet.safetensors")).unwrap();
    assert!(
        offline == w.body,
        "served weights differ from `ofa extract`'s"
    );
    // ONNX: the bytes `ofa extract --onnx` writes, from the same cache and code
    assert_eq!(rec["links"]["onnx"], format!("/v1/subnets/{id}/model.onnx"));
    let onnx = get(&server.url(&format!("/v1/subnets/{id}/model.onnx")));
    assert_eq!(onnx.status, 200, "{}", String::from_utf8_lossy(&onnx.body));
    assert!(
        std::fs::read(out.join("model.onnx")).unwrap() == onnx.body,
        "served ONNX differs from `ofa extract --onnx`'s"
    );
    let oetag = onnx.header("etag").unwrap().to_string();
    let again = send(
        "GET",
        &server.url(&format!("/v1/subnets/{id}/model.onnx")),
        &[("if-none-match", &oetag)],
        None,
    );
    assert_eq!(again.status, 304);
    // each artefact's ETag is its SHA-256, hashed once: the 304 hashed nothing
    let etags = metric(&server, "ofa_computations_total{kind=\"etag\"}");
    let again = send(
        "GET",
        &server.url(&format!("/v1/subnets/{id}/model.onnx")),
        &[("if-none-match", &oetag)],
        None,
    );
    assert_eq!(again.status, 304);
    assert_eq!(
        metric(&server, "ofa_computations_total{kind=\"etag\"}"),
        etags
    );
    let folded = get(&server.url(&format!(
        "/v1/subnets/{id}/model.onnx?opset=18&fold_bn=true"
    )));
    assert_eq!(folded.status, 200);
    assert!(folded.body != onnx.body);
    for (file, tag) in [
        (&onnx, &oetag),
        (&folded, &folded.header("etag").unwrap().to_string()),
    ] {
        let sha: String = sha2::Sha256::digest(&file.body)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(*tag, format!("\"{sha}\""));
    }
    assert_eq!(
        metric(&server, "ofa_computations_total{kind=\"etag\"}"),
        etags + 1.0
    );
    let bad = get(&server.url(&format!("/v1/subnets/{id}/model.onnx?opset=13")));
    assert_eq!(bad.status, 422);
    assert_eq!(bad.json()["error"]["code"], "invalid_opset");
    let bad = get(&server.url(&format!("/v1/subnets/{id}/model.onnx?opset=x")));
    assert_eq!(bad.status, 400);
    assert_eq!(bad.json()["error"]["code"], "invalid_query");
    let nc = get(&server.url(&format!("/v1/subnets/{id}/net-config"))).json();
    let nc_offline: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("net.config.json")).unwrap())
            .unwrap();
    assert_eq!(nc, nc_offline);
    // conditional and HEAD requests
    let again = send(
        "GET",
        &server.url(&format!("/v1/subnets/{id}/weights")),
        &[("if-none-match", &etag)],
        None,
    );
    assert_eq!(again.status, 304);
    assert!(again.body.is_empty());
    let head = send(
        "HEAD",
        &server.url(&format!("/v1/subnets/{id}/weights")),
        &[],
        None,
    );
    assert_eq!(head.status, 200);
    assert_eq!(
        head.header("content-length"),
        Some(w.body.len().to_string().as_str())
    );
    assert_eq!(head.header("etag"), Some(etag.as_str()));

    // the downloaded file runs
    let file = tmp.path().join("served.safetensors");
    std::fs::write(&file, &w.body).unwrap();
    let logits = common::infer(&file, tmp.path());
    let t = ofa_supernet::checkpoint::read_safetensors(&logits).unwrap();
    assert_eq!(t.tensors["logits"].size(), [2, 4]);

    // a given arch, and the front (JSON and CSV)
    let by_arch = post(
        &server.url("/v1/subnets"),
        &json!({"supernet": "pkg", "arch": rec["arch"], "hardware": "cpu"}),
    );
    assert_eq!(by_arch.status, 200);
    assert_eq!(by_arch.json()["id"], id.as_str());
    let front = post(
        &server.url("/v1/pareto"),
        &json!({"supernet": "pkg", "hardware": "cpu"}),
    );
    assert_eq!(front.status, 200);
    let points = front.json()["points"].as_array().unwrap().len();
    assert!(points > 0);
    let csv = post(
        &server.url("/v1/pareto?format=csv"),
        &json!({"supernet": "pkg", "hardware": "cpu"}),
    );
    assert_eq!(csv.status, 200);
    assert!(csv.header("content-type").unwrap().starts_with("text/csv"));
    assert_eq!(
        String::from_utf8(csv.body).unwrap().lines().count(),
        points + 1
    );

    let doc = get(&server.url("/openapi.json")).json();
    for p in [
        "/v1/supernets",
        "/v1/subnets",
        "/v1/subnets/{id}/weights",
        "/v1/subnets/{id}/model.onnx",
        "/v1/pareto",
    ] {
        assert!(
            doc["paths"][p].is_object(),
            "{p} missing from the OpenAPI document"
        );
    }
    assert!(doc["components"]["schemas"]["SubnetRecord"].is_object());
    // made-up methods share one label: a client cannot grow the metrics
    for i in 0..3 {
        let mut conn = std::net::TcpStream::connect(server.addr()).unwrap();
        write!(
            conn,
            "MADEUP{i}X /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
        )
        .unwrap();
        let head = read_head(&mut BufReader::new(conn));
        assert!(head.starts_with("HTTP/1.1 4"), "{head}");
    }
    let m = String::from_utf8(get(&server.url("/metrics")).body).unwrap();
    assert!(!m.contains("MADEUP"), "{m}");
    assert!(m.contains("method=\"other\""), "{m}");
    assert!(m.contains("ofa_http_requests_total"), "{m}");
    assert!(m.contains("ofa_search_seconds"), "{m}");
    assert!(m.contains("ofa_cut_recalibrate_seconds"), "{m}");
}

/// A request: method, path, body, content type ("" for none).
type Case = (&'static str, String, Option<String>, &'static str);

#[test]
fn bad_requests_are_json_4xx_with_a_code() {
    let server = Serve::start(package(), &[]);
    let budget = mid_latency(&server);
    let unknown = "0123456789abcdef0123456789abcdef";
    let sub = |v: Value| {
        (
            "POST",
            "/v1/subnets".to_string(),
            Some(v.to_string()),
            "application/json",
        )
    };
    let par = |q: &str, v: Value| {
        (
            "POST",
            format!("/v1/pareto{q}"),
            Some(v.to_string()),
            "application/json",
        )
    };
    let raw = |path: &str, body: &str, ct: &'static str| {
        ("POST", path.to_string(), Some(body.to_string()), ct)
    };
    let bare = |m: &'static str, path: &str| (m, path.to_string(), None, "");
    let arch =
        |ks: usize, r: u32| json!({"ks": vec![3; ks], "e": vec![3; ks], "d": vec![2; 5], "r": r});
    let cases: Vec<(Case, u16, &str)> = vec![
        (bare("GET", "/nope"), 404, "not_found"),
        (bare("GET", "/v1/nope"), 404, "not_found"),
        (bare("GET", "/v1/subnets/a/b/c"), 404, "not_found"),
        (bare("DELETE", "/v1/subnets"), 405, "method_not_allowed"),
        (bare("PUT", "/v1/supernets"), 405, "method_not_allowed"),
        (bare("GET", "/v1/pareto"), 405, "method_not_allowed"),
        (bare("POST", "/healthz"), 405, "method_not_allowed"),
        (
            bare("DELETE", &format!("/v1/subnets/{unknown}/weights")),
            405,
            "method_not_allowed",
        ),
        (bare("GET", "/v1/supernets/nope"), 404, "unknown_supernet"),
        (bare("GET", "/v1/subnets/xyz"), 400, "invalid_id"),
        (
            bare("GET", &format!("/v1/subnets/{}", unknown.to_uppercase())),
            400,
            "invalid_id",
        ),
        (
            bare("GET", &format!("/v1/subnets/{unknown}0")),
            400,
            "invalid_id",
        ),
        (
            bare("GET", "/v1/subnets/..%2F..%2Fetc%2Fpasswd"),
            400,
            "invalid_id",
        ),
        (
            bare("GET", &format!("/v1/subnets/{unknown}")),
            404,
            "unknown_subnet",
        ),
        (
            bare("GET", &format!("/v1/subnets/{unknown}/weights")),
            404,
            "unknown_subnet",
        ),
        (bare("GET", "/v1/subnets/nothex/weights"), 400, "invalid_id"),
        (
            bare("GET", &format!("/v1/subnets/{unknown}/net-config")),
            404,
            "unknown_subnet",
        ),
        (
            raw("/v1/subnets", r#"{"supernet":"pkg"}"#, ""),
            415,
            "unsupported_media_type",
        ),
        (
            raw("/v1/subnets", r#"{"supernet":"pkg"}"#, "text/plain"),
            415,
            "unsupported_media_type",
        ),
        (
            raw("/v1/subnets", "{", "application/json"),
            400,
            "malformed_json",
        ),
        (
            raw("/v1/subnets", r#"{"supernet":"pkg"} x"#, "application/json"),
            400,
            "malformed_json",
        ),
        (
            raw("/v1/subnets", "", "application/json"),
            400,
            "malformed_json",
        ),
        (sub(json!([])), 422, "invalid_request"),
        (sub(json!({})), 422, "invalid_request"),
        (
            sub(json!({"supernet": "pkg", "budget": 5})),
            422,
            "invalid_request",
        ),
        (sub(json!({"supernet": 7})), 422, "invalid_request"),
        (
            sub(json!({"supernet": "nope", "constraints": {"macs_m": 1}})),
            404,
            "unknown_supernet",
        ),
        (
            sub(json!({"supernet": "pkg", "hardware": "tpu", "constraints": {"latency_ms": 1}})),
            404,
            "unknown_hardware",
        ),
        (sub(json!({"supernet": "pkg"})), 422, "missing_constraint"),
        (
            sub(json!({"supernet": "pkg", "constraints": {}})),
            422,
            "missing_constraint",
        ),
        (
            sub(json!({"supernet": "pkg", "constraints": null, "arch": null})),
            422,
            "missing_constraint",
        ),
        (
            sub(json!({"supernet": "pkg", "constraints": {"latency_ms": budget}})),
            422,
            "hardware_required",
        ),
        (
            sub(json!({"supernet": "pkg", "hardware": "cpu", "constraints": {"latency_ms": -1}})),
            422,
            "invalid_constraint",
        ),
        (
            sub(json!({"supernet": "pkg", "constraints": {"macs_m": 0}})),
            422,
            "invalid_constraint",
        ),
        (
            sub(json!({"supernet": "pkg", "constraints": {"macs_m": "abc"}})),
            422,
            "invalid_request",
        ),
        (
            sub(json!({"supernet": "pkg", "constraints": {"flops": 1}})),
            422,
            "invalid_request",
        ),
        (
            sub(json!({"supernet": "pkg", "hardware": "cpu", "constraints": {"latency_ms": 1e-6}})),
            422,
            "infeasible",
        ),
        (
            sub(json!({"supernet": "pkg", "constraints": {"macs_m": 1e-4}})),
            422,
            "infeasible",
        ),
        (
            sub(json!({"supernet": "pkg", "constraints": {"macs_m": 1}, "arch": arch(20, 32)})),
            422,
            "invalid_request",
        ),
        (
            sub(json!({"supernet": "pkg", "arch": arch(3, 32)})),
            422,
            "invalid_arch",
        ),
        (
            sub(json!({"supernet": "pkg", "arch": arch(20, 999)})),
            422,
            "invalid_arch",
        ),
        (
            sub(json!({"supernet": "pkg", "arch": 5})),
            422,
            "invalid_arch",
        ),
        (
            sub(json!({"supernet": "pkg", "arch": {"ks": vec![9; 20]}})),
            422,
            "invalid_arch",
        ),
        (
            sub(json!({"supernet": "pkg", "arch": arch(20, 32), "seed": 1})),
            422,
            "invalid_request",
        ),
        (
            sub(json!({"supernet": "pkg", "constraints": {"macs_m": 1}, "seed": -1})),
            422,
            "invalid_request",
        ),
        (
            raw(
                "/v1/subnets",
                &format!(r#"{{"supernet":"{}"}}"#, "x".repeat(100_000)),
                "application/json",
            ),
            413,
            "payload_too_large",
        ),
        (
            par("", json!({"supernet": "pkg", "objective": "joules"})),
            422,
            "invalid_objective",
        ),
        (
            par("", json!({"supernet": "pkg", "objective": "latency_ms"})),
            422,
            "hardware_required",
        ),
        (
            par("?format=xml", json!({"supernet": "pkg"})),
            400,
            "invalid_query",
        ),
        (
            par("?bogus=1", json!({"supernet": "pkg"})),
            400,
            "invalid_query",
        ),
        (
            par("", json!({"supernet": "nope"})),
            404,
            "unknown_supernet",
        ),
        (
            par("", json!({"supernet": "pkg", "hardware": "tpu"})),
            404,
            "unknown_hardware",
        ),
        (
            par(
                "",
                json!({"supernet": "pkg", "constraints": {"macs_m": -2}}),
            ),
            422,
            "invalid_constraint",
        ),
        (
            raw("/v1/pareto", "not json", "application/json"),
            400,
            "malformed_json",
        ),
    ];
    assert!(cases.len() >= 40);
    for ((method, path, body, ct), status, code) in &cases {
        let headers: Vec<(&str, &str)> = if ct.is_empty() {
            vec![]
        } else {
            vec![("content-type", *ct)]
        };
        let r = send(
            method,
            &server.url(path),
            &headers,
            body.as_deref().map(str::as_bytes),
        );
        let text = String::from_utf8_lossy(&r.body).into_owned();
        assert_eq!(r.status, *status, "{method} {path}: {text}");
        assert_eq!(
            r.header("content-type"),
            Some("application/json"),
            "{method} {path}"
        );
        let v = r.json();
        assert_eq!(v["error"]["code"], *code, "{method} {path}: {text}");
        assert!(!v["error"]["message"].as_str().unwrap().is_empty());
    }
    // the infeasible answer carries the feasible minimum
    let r = post(
        &server.url("/v1/subnets"),
        &json!({"supernet": "pkg", "hardware": "cpu", "constraints": {"latency_ms": 1e-6}}),
    );
    assert!(
        r.json()["error"]["feasible_minimum"]["latency_ms"]
            .as_f64()
            .unwrap()
            > 1e-6
    );
    assert_eq!(metric(&server, "ofa_http_internal_errors_total"), 0.0);
}

#[test]
fn identical_concurrent_cold_requests_share_one_computation() {
    let server = Serve::start(package(), &[]);
    let budget = mid_latency(&server) * 0.9;
    let url = server.url("/v1/subnets");
    let req = json!({"supernet": "pkg", "hardware": "cpu", "constraints": {"latency_ms": budget}, "seed": 7});
    let ids = concurrently(50, |_| {
        let r = post(&url, &req);
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        r.json()["id"].as_str().unwrap().to_string()
    });
    assert!(ids.iter().all(|i| *i == ids[0]));
    assert_eq!(
        metric(&server, "ofa_computations_total{kind=\"search\"}"),
        1.0
    );
    // and 50 downloads of its cold weights: one cut
    let wurl = server.url(&format!("/v1/subnets/{}/weights", ids[0]));
    let bodies = concurrently(50, |_| get(&wurl).body);
    assert!(bodies.iter().all(|b| *b == bodies[0] && !b.is_empty()));
    assert_eq!(
        metric(&server, "ofa_computations_total{kind=\"weights\"}"),
        1.0
    );
    // The other 49 waited on that cut or found it done (`ofa_shared_computations_total` or a
    // cache hit), depending on how fast a cut is; none computed.
}

#[test]
fn calibrate_fits_a_local_hardware_at_start_up_and_searches_use_it() {
    let server = Serve::start(package(), &["--calibrate", "6"]);
    let info = get(&server.url("/v1/supernets/pkg")).json();
    let hw = info["hardware"].as_array().unwrap();
    let names: Vec<&str> = hw.iter().map(|h| h["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["cpu", "local"], "{info}");
    // the package's own table has no calibration; `local` has the fit report
    assert!(hw[0].get("calibration").is_none(), "{info}");
    let cal = &hw[1]["calibration"];
    assert_eq!(cal["probes"], 6, "{info}");
    assert_eq!(cal["threads"], 1, "{info}");
    assert!(cal["loo_mape_pct"].as_f64().unwrap().is_finite(), "{info}");
    let (lo, hi) = (
        hw[1]["latency_ms"]["min"].as_f64().unwrap(),
        hw[1]["latency_ms"]["max"].as_f64().unwrap(),
    );
    assert!(0.0 < lo && lo < hi, "{info}");
    let budget = lo + 0.5 * (hi - lo);
    let r = post(
        &server.url("/v1/subnets"),
        &json!({"supernet": "pkg", "hardware": "local", "constraints": {"latency_ms": budget}}),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let rec = r.json();
    assert_eq!(rec["hardware"], "local");
    assert!(rec["predicted"]["latency_ms"].as_f64().unwrap() <= budget);
    // the package folder is left as it was
    assert!(!package().join("latency/local.json").exists());
    // each start measures `local` anew: a search on it is keyed by its table, so a restart on the
    // same cache folder does not answer from the previous calibration (two calibrations of real
    // timings never give bit-identical tables)
    let cache = tempfile::tempdir().unwrap();
    let c = s(cache.path());
    let body =
        json!({"supernet": "pkg", "hardware": "local", "constraints": {"latency_ms": budget}});
    let first = Serve::start(package(), &["--calibrate", "3", "--cache-dir", c]);
    assert_eq!(post(&first.url("/v1/subnets"), &body).status, 200);
    drop(first);
    let second = Serve::start(package(), &["--calibrate", "3", "--cache-dir", c]);
    assert_eq!(post(&second.url("/v1/subnets"), &body).status, 200);
    assert_eq!(
        metric(&second, "ofa_computations_total{kind=\"search\"}"),
        1.0
    );
    // a calibration needs enough probes for a model
    common::fails_with(
        ofa().args(["serve", "--package", s(package()), "--calibrate", "2"]),
        "--calibrate takes 3 to 1000 probes, got 2",
    );
}

#[test]
fn a_device_learnt_over_http_is_served_kept_and_its_bad_measurements_refused() {
    let cache = tempfile::tempdir().unwrap();
    let c = s(cache.path());
    let server = Serve::start(package(), &["--cache-dir", c]);
    // another replica on the same cache folder, running before the hardware exists
    let replica = Serve::start(package(), &["--cache-dir", c]);
    let probes = get(&server.url("/v1/supernets/pkg/probes?count=8&seed=1"));
    assert_eq!(
        probes.status,
        200,
        "{}",
        String::from_utf8_lossy(&probes.body)
    );
    let probes = probes.json();
    assert_eq!(probes["base"], "cpu");
    let list = probes["probes"].as_array().unwrap().clone();
    assert_eq!(list.len(), 8);
    // each probe is a subnet record: its ONNX is served like any subnet's
    let onnx = get(&server.url(list[0]["links"]["onnx"].as_str().unwrap()));
    assert_eq!(onnx.status, 200);
    for (q, code) in [("count=2", 422), ("count=x", 400), ("bogus=1", 400)] {
        let r = get(&server.url(&format!("/v1/supernets/pkg/probes?{q}")));
        assert_eq!(r.status, code, "{q}: {}", String::from_utf8_lossy(&r.body));
    }
    // a device whose latency is a known function of MACs (no timing in a test)
    let measurements: Vec<Value> = list
        .iter()
        .map(|p| {
            let macs = p["predicted"]["macs_m"].as_f64().unwrap();
            json!({"id": p["id"], "latency_ms": 0.02 + 0.05 * macs})
        })
        .collect();
    let url = server.url("/v1/supernets/pkg/hardware");
    let body = json!({"name": "edge", "runtime": "onnxruntime", "measurements": measurements});
    let r = post(&url, &body);
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let hw = r.json()["hardware"].clone();
    assert_eq!(hw["name"], "edge");
    assert_eq!(hw["fit"]["measurements"], 8);
    assert_eq!(hw["fit"]["runtime"], "onnxruntime");
    assert!(hw["fit"]["loo_mape_pct"].as_f64().unwrap() < 1.0, "{hw}");
    let mid = (hw["latency_ms"]["min"].as_f64().unwrap()
        + hw["latency_ms"]["max"].as_f64().unwrap())
        / 2.0;
    let search = json!({"supernet": "pkg", "hardware": "edge", "constraints": {"latency_ms": mid}});
    let found = post(&server.url("/v1/subnets"), &search);
    assert_eq!(
        found.status,
        200,
        "{}",
        String::from_utf8_lossy(&found.body)
    );
    assert!(found.json()["predicted"]["latency_ms"].as_f64().unwrap() <= mid);
    // the running replica learns it from the cache folder when a request names it
    let there = post(&replica.url("/v1/subnets"), &search);
    assert_eq!(
        there.status,
        200,
        "{}",
        String::from_utf8_lossy(&there.body)
    );
    assert_eq!(there.json()["id"], found.json()["id"]);
    // a name nobody added is still a 404 there
    let mut nobody = search.clone();
    nobody["hardware"] = json!("nobody");
    assert_eq!(post(&replica.url("/v1/subnets"), &nobody).status, 404);
    // a name taken: 409 unless replaced; the package's own tables are never replaced
    assert_eq!(post(&url, &body).status, 409);
    // a replacement (the device measured twice as slow) reaches the running replica too
    let range = |server: &Serve| {
        let info = get(&server.url("/v1/supernets/pkg")).json();
        let edge = info["hardware"]
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["name"] == "edge")
            .unwrap_or_else(|| panic!("{info}"))
            .clone();
        edge["latency_ms"]["max"].as_f64().unwrap()
    };
    let before = range(&replica);
    let mut again = body.clone();
    again["replace"] = json!(true);
    for m in again["measurements"].as_array_mut().unwrap() {
        m["latency_ms"] = json!(2.0 * m["latency_ms"].as_f64().unwrap());
    }
    assert_eq!(post(&url, &again).status, 201);
    let slower = post(&replica.url("/v1/subnets"), &search);
    assert_eq!(slower.status, 200);
    let after = range(&replica);
    assert!(
        (after / before - 2.0).abs() < 0.05,
        "the replica still serves the replaced table: {before} ms, then {after} ms"
    );
    assert!((range(&server) / after - 1.0).abs() < 1e-9);
    let mut cpu = again.clone();
    cpu["name"] = json!("cpu");
    let r = post(&url, &cpu);
    assert_eq!(r.status, 409);
    assert_eq!(r.json()["error"]["code"], "hardware_exists");
    // bad bodies: 4xx naming the entry, never 5xx
    let m0 = measurements[0].clone();
    let with = |f: &dyn Fn(&mut Value)| {
        let mut b = body.clone();
        b["name"] = json!("other");
        f(&mut b);
        post(&url, &b)
    };
    type Edit = Box<dyn Fn(&mut Value)>;
    let cases: Vec<(Edit, u16, &str)> = vec![
        (
            Box::new(|b| b["measurements"][3]["latency_ms"] = json!(-1.0)),
            422,
            "measurements[3]: latency_ms -1",
        ),
        (
            Box::new(|b| b["measurements"][2]["id"] = json!("0123456789abcdef0123456789abcdef")),
            422,
            "measurements[2]: unknown subnet id",
        ),
        (
            Box::new(|b| {
                b["measurements"][1]["arch"] = json!({"ks": [3], "e": [3], "d": [2], "r": 32})
            }),
            422,
            "measurements[1]: give `id` or `arch`",
        ),
        (
            Box::new(move |b| b["measurements"][4] = m0.clone()),
            422,
            "measurements[4]: the same subnet as measurements[0]",
        ),
        (
            Box::new(|b| {
                b["measurements"] = json!(b["measurements"].as_array().unwrap()[..2].to_vec())
            }),
            422,
            "too few",
        ),
        (
            Box::new(|b| b["name"] = json!("../x")),
            422,
            "hardware name `../x`",
        ),
        (
            Box::new(|b| b["base"] = json!("nope")),
            422,
            "`nope` is not a latency table",
        ),
        (
            Box::new(|b| b["colour"] = json!("red")),
            422,
            "unknown field",
        ),
    ];
    for (edit, status, needle) in &cases {
        let r = with(edit.as_ref());
        let text = String::from_utf8_lossy(&r.body);
        assert_eq!(r.status, *status, "{needle}: {text}");
        assert!(text.contains(needle), "{needle}: {text}");
    }
    assert_eq!(metric(&server, "ofa_http_internal_errors_total"), 0.0);
    // kept on the cache folder: a restart (or another replica on it) serves it; a kept file
    // damaged on disk is skipped (logged), not fatal
    let kept = std::fs::read_dir(cache.path().join("hardware"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    assert!(kept.join("edge.json").is_file());
    std::fs::write(kept.join("torn.json"), b"{\"fit\": ").unwrap();
    drop(server);
    let restarted = Serve::start(package(), &["--cache-dir", c]);
    let mut torn = search.clone();
    torn["hardware"] = json!("torn");
    assert_eq!(post(&restarted.url("/v1/subnets"), &torn).status, 404);
    let info = get(&restarted.url("/v1/supernets/pkg")).json();
    let edge = info["hardware"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["name"] == "edge")
        .unwrap_or_else(|| panic!("{info}"))
        .clone();
    assert_eq!(edge["fit"]["measurements"], 8);
    assert_eq!(post(&restarted.url("/v1/subnets"), &search).status, 200);
}

#[test]
fn the_disk_cache_survives_restarts_is_shared_and_recomputes_damage() {
    let pkg = package();
    let cache = tempfile::tempdir().unwrap();
    let c = s(cache.path());
    let a = Serve::start(pkg, &["--cache-dir", c]);
    let budget = mid_latency(&a);
    let mut ids = Vec::new();
    let mut weights = Vec::new();
    // a searched subnet, and the smallest (given: its id cannot be the search's)
    let smallest = json!({"ks": vec![3; 20], "e": vec![3; 20], "d": vec![2; 5], "r": 32});
    for body in [
        json!({"supernet": "pkg", "hardware": "cpu", "constraints": {"latency_ms": budget * 0.8}}),
        json!({"supernet": "pkg", "arch": smallest}),
    ] {
        let r = post(&a.url("/v1/subnets"), &body);
        let id = r.json()["id"].as_str().unwrap().to_string();
        weights.push(get(&a.url(&format!("/v1/subnets/{id}/weights"))).body);
        ids.push(id);
    }
    assert_ne!(
        ids[0], ids[1],
        "the search chose the smallest subnet: raise the budget"
    );
    assert!(a.terminate().success());
    // damage one cached weights file
    // (named `<id>.<cut>`: the cut settings are part of a weights key)
    let victim = std::fs::read_dir(cache.path().join("weights"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(&format!("{}.", ids[1]))
        })
        .expect("the cached weights file");
    let bytes = std::fs::read(&victim).unwrap();
    std::fs::write(&victim, &bytes[..bytes.len() / 2]).unwrap();

    let b = Serve::start(pkg, &["--cache-dir", c]);
    let b2 = Serve::start(pkg, &["--cache-dir", c]);
    let rec = get(&b.url(&format!("/v1/subnets/{}", ids[0])));
    assert_eq!(rec.status, 200, "a record from before the restart");
    assert_eq!(
        get(&b.url(&format!("/v1/subnets/{}/weights", ids[0]))).body,
        weights[0]
    );
    assert_eq!(metric(&b, "ofa_computations_total{kind=\"weights\"}"), 0.0);
    assert_eq!(
        get(&b.url(&format!("/v1/subnets/{}/weights", ids[1]))).body,
        weights[1]
    );
    assert_eq!(metric(&b, "ofa_cache_corrupt_total"), 1.0);
    assert_eq!(metric(&b, "ofa_computations_total{kind=\"weights\"}"), 1.0);
    // the repeated search is a disk hit, not a computation
    let again = post(
        &b.url("/v1/subnets"),
        &json!({"supernet": "pkg", "hardware": "cpu", "constraints": {"latency_ms": budget * 0.8}}),
    );
    assert_eq!(again.json()["id"], ids[0].as_str());
    assert_eq!(metric(&b, "ofa_computations_total{kind=\"search\"}"), 0.0);
    // two servers on one folder agree, and see each other's subnets
    let req = json!({"supernet": "pkg", "constraints": {"macs_m": 1.5}});
    let x = post(&b2.url("/v1/subnets"), &req).json();
    let y = post(&b.url("/v1/subnets"), &req).json();
    assert_eq!(x["id"], y["id"]);
    let fresh = post(
        &b2.url("/v1/subnets"),
        &json!({"supernet": "pkg", "constraints": {"params_m": 0.5}}),
    );
    let fid = fresh.json()["id"].as_str().unwrap().to_string();
    assert_eq!(get(&b.url(&format!("/v1/subnets/{fid}"))).status, 200);
}

#[test]
fn a_token_guards_everything_but_health_checks() {
    let server = Serve::start(package(), &["--token", "s3cret"]);
    let url = server.url("/v1/supernets");
    let none = get(&url);
    assert_eq!(none.status, 401);
    assert_eq!(none.json()["error"]["code"], "unauthorized");
    assert_eq!(none.header("www-authenticate"), Some("Bearer"));
    assert_eq!(
        send("GET", &url, &[("authorization", "Bearer wrong")], None).status,
        401
    );
    assert_eq!(
        send("GET", &url, &[("authorization", "s3cret")], None).status,
        401
    );
    assert_eq!(
        send("GET", &url, &[("authorization", "Bearer s3cret")], None).status,
        200
    );
    // the scheme in any case (RFC 7235); nothing else is the token
    assert_eq!(
        send("GET", &url, &[("authorization", "bearer s3cret")], None).status,
        200
    );
    for wrong in [
        "Bearer ",
        "Bearer s3cret2",
        "Bearer s3cre",
        "Basic s3cret",
        "Bearers3cret",
    ] {
        assert_eq!(
            send("GET", &url, &[("authorization", wrong)], None).status,
            401,
            "{wrong}"
        );
    }
    assert_eq!(get(&server.url("/healthz")).status, 200);
    // the open liveness route names nothing served
    let alive = get(&server.url("/healthz")).json();
    assert_eq!(alive, json!({"status": "ok"}));
    assert_eq!(get(&server.url("/readyz")).status, 200);
    assert_eq!(get(&server.url("/metrics")).status, 401);
    // the environment variable works too
    let env_server = Serve::start_with_token_env(package(), &[], Some("from-env"));
    assert_eq!(get(&env_server.url("/v1/supernets")).status, 401);
    let ok = send(
        "GET",
        &env_server.url("/v1/supernets"),
        &[("authorization", "Bearer from-env")],
        None,
    );
    assert_eq!(ok.status, 200);
    // an empty token would turn authentication off: the server refuses to start
    common::fails_with(
        ofa().args(["serve", "--package", s(package()), "--token", ""]),
        "the API token is empty",
    );
    common::fails_with(
        ofa()
            .args(["serve", "--package", s(package())])
            .env("OFA_API_TOKEN", " "),
        "the API token is empty",
    );
}

#[test]
fn sigterm_drains_an_in_flight_request_then_refuses_connections() {
    let mut server = Serve::start(package(), &["--drain-timeout", "600"]);
    let addr = server.addr();
    let body = json!({"supernet": "pkg", "objective": "params_m", "seed": 3}).to_string();
    // The request is in flight at SIGTERM by construction, whatever the machine's speed: its
    // headers ask for `100 Continue`, which the server sends once the handler reads the body, and
    // the body is held back until the server has taken the signal.
    let mut conn = std::net::TcpStream::connect(&addr).unwrap();
    write!(
        conn,
        "POST /v1/pareto HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nexpect: 100-continue\r\n\r\n",
        body.len()
    )
    .unwrap();
    let mut from_server = BufReader::new(conn.try_clone().unwrap());
    let interim = read_head(&mut from_server);
    assert!(interim.starts_with("HTTP/1.1 100"), "{interim}");
    server.signal("TERM");
    // Taking the signal closes the listener: from then on a new connection is refused.
    while std::net::TcpStream::connect(&addr).is_ok() {
        server.assert_running();
        std::thread::sleep(Duration::from_millis(5));
    }
    conn.write_all(body.as_bytes()).unwrap();
    let head = read_head(&mut from_server);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or_else(|| panic!("no content-length: {head}"));
    let mut reply = vec![0; len];
    from_server.read_exact(&mut reply).unwrap();
    let reply: Value = serde_json::from_slice(&reply).unwrap();
    assert!(!reply["points"].as_array().unwrap().is_empty());
    let status = server.wait();
    assert!(status.success(), "{status:?}");
    assert!(std::net::TcpStream::connect(&addr).is_err());
}

/// The status line and headers of one response, up to the blank line.
fn read_head(r: &mut impl BufRead) -> String {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        assert!(
            r.read_line(&mut line).unwrap() > 0,
            "connection closed: {head}"
        );
        if line == "\r\n" {
            return head;
        }
        head.push_str(&line);
    }
}

#[test]
fn time_and_queue_limits_answer_503_with_retry_after() {
    // A deadline of one nanosecond has passed before any search can finish its first
    // generation, on any machine: the answer is a timeout by construction.
    let slow = Serve::start(package(), &["--request-timeout", "1e-9"]);
    let r = post(
        &slow.url("/v1/subnets"),
        &json!({"supernet": "pkg", "constraints": {"macs_m": 1.1}}),
    );
    assert_eq!(r.status, 503, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["error"]["code"], "timeout");
    assert_eq!(r.header("retry-after"), Some("1"));
    assert!(metric(&slow, "ofa_timeouts_total") >= 1.0);
    // One search at a time: distinct cold searches sent together beyond it are refused at once.
    // Whether two overlap depends on how fast a search is, so rounds of 8 (released together, new
    // seeds each round) go on until one has seen both a search served and one refused; every
    // answer of every round is one or the other.
    let one = Serve::start(package(), &["--max-queue", "1"]);
    let url = one.url("/v1/subnets");
    let mut seen = Vec::new();
    for round in 0..20 {
        let go = std::sync::Barrier::new(8);
        let statuses = concurrently(8, |i| {
            let seed = 100 + 8 * round + i;
            let body = json!({"supernet": "pkg", "constraints": {"macs_m": 1.2}, "seed": seed});
            go.wait();
            let r = post(&url, &body);
            let code =
                (r.status == 503).then(|| r.json()["error"]["code"].as_str().unwrap().to_string());
            let retry = r.header("retry-after").map(str::to_string);
            (r.status, code, retry)
        });
        for st in &statuses {
            assert!(
                st.0 == 200
                    || (st.0 == 503
                        && st.1.as_deref() == Some("overloaded")
                        && st.2.as_deref() == Some("1")),
                "{statuses:?}"
            );
        }
        seen.extend(statuses);
        if seen.iter().any(|s| s.0 == 200) && seen.iter().any(|s| s.0 == 503) {
            return;
        }
    }
    panic!("no round had a search refused while another ran: {seen:?}");
}

#[test]
fn serve_refuses_bad_packages_and_arguments_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    common::fails_with(
        ofa().args(["serve", "--package", s(&empty), "--addr", "127.0.0.1:0"]),
        "no supernet.safetensors: not a supernet package",
    );
    common::fails_with(
        ofa().args([
            "serve",
            "--package",
            s(package()),
            "--package",
            s(package()),
            "--addr",
            "127.0.0.1:0",
        ]),
        "two packages are named `pkg`",
    );
    // operator input has a range: a deadline of 1e19 s would overflow the clock in every search
    for (flag, value, says) in [
        (
            "--request-timeout",
            "0",
            "--request-timeout must be a positive number",
        ),
        (
            "--request-timeout",
            "1e19",
            "--request-timeout must be a positive number of seconds, at most 86400",
        ),
        (
            "--header-timeout",
            "0",
            "--header-timeout must be a positive number",
        ),
        (
            "--body-timeout",
            "1e19",
            "--body-timeout must be a positive number",
        ),
        ("--max-queue", "0", "--max-queue"),
        ("--max-connections", "0", "--max-connections"),
        ("--cache-dir-mb", "0", "--cache-dir-mb"),
    ] {
        common::fails_with(
            ofa().args(["serve", "--package", s(package()), flag, value]),
            says,
        );
    }
}

#[test]
fn a_cached_record_is_served_only_under_its_own_id_on_this_supernet() {
    let cache = tempfile::tempdir().unwrap();
    let c = s(cache.path());
    let a = Serve::start(package(), &["--cache-dir", c]);
    let smallest = json!({"ks": vec![3; 20], "e": vec![3; 20], "d": vec![2; 5], "r": 32});
    let r = post(
        &a.url("/v1/subnets"),
        &json!({"supernet": "pkg", "arch": smallest}),
    );
    assert_eq!(r.status, 200);
    let id = r.json()["id"].as_str().unwrap().to_string();
    assert!(a.terminate().success());
    let dir = cache.path().join("subnet");
    let raw = std::fs::read(dir.join(&id)).unwrap();
    let nl = raw.iter().position(|&b| b == b'\n').unwrap();
    // a record under another id, well formed and correctly checksummed for that key (as a
    // replica serving another version of the package would write it): not this supernet's
    let foreign = "00000000000000000000000000000001";
    let mut rec: Value = serde_json::from_slice(&raw[nl + 1..]).unwrap();
    rec["id"] = json!(foreign);
    let payload = serde_json::to_vec(&rec).unwrap();
    let mut h = sha2::Sha256::new();
    h.update(b"subnet\n");
    h.update(foreign.as_bytes());
    h.update(b"\n");
    h.update(&payload);
    let sum: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    let mut file = format!("ofa-cache/2 {sum}\n").into_bytes();
    file.extend_from_slice(&payload);
    std::fs::write(dir.join(foreign), file).unwrap();
    // the same bytes copied under another key: its checksum is bound to the key it was written for
    let copied = "00000000000000000000000000000002";
    std::fs::write(dir.join(copied), &raw).unwrap();

    let b = Serve::start(package(), &["--cache-dir", c]);
    assert_eq!(get(&b.url(&format!("/v1/subnets/{id}"))).status, 200);
    for other in [foreign, copied] {
        let r = get(&b.url(&format!("/v1/subnets/{other}/weights")));
        assert_eq!(r.status, 404, "{other}");
        assert_eq!(r.json()["error"]["code"], "unknown_subnet");
    }
    assert_eq!(metric(&b, "ofa_cache_foreign_records_total"), 1.0);
    assert_eq!(metric(&b, "ofa_cache_corrupt_total"), 1.0);
}

#[test]
fn a_refitted_predictor_is_never_answered_from_the_old_ones_cache() {
    // a copy of the package (named pkg too), whose predictor is refitted between two starts on
    // one cache folder
    let tmp = tempfile::tempdir().unwrap();
    let copy = tmp.path().join("pkg");
    std::fs::create_dir_all(copy.join("latency")).unwrap();
    for f in [
        "supernet.safetensors",
        "calibration.safetensors",
        "card.json",
        "accuracy.safetensors",
        "latency/cpu.json",
    ] {
        std::fs::copy(package().join(f), copy.join(f)).unwrap();
    }
    let cache = tempfile::tempdir().unwrap();
    let c = s(cache.path());
    let body = json!({"supernet": "pkg", "constraints": {"macs_m": 1000}});
    let a = Serve::start(&copy, &["--cache-dir", c]);
    assert_eq!(post(&a.url("/v1/subnets"), &body).status, 200);
    assert!(a.terminate().success());
    // unchanged files: the restart answers from the cache
    let b = Serve::start(&copy, &["--cache-dir", c]);
    assert_eq!(post(&b.url("/v1/subnets"), &body).status, 200);
    assert_eq!(metric(&b, "ofa_computations_total{kind=\"search\"}"), 0.0);
    assert!(b.terminate().success());
    // refitted (another seed of the fit, on the same measurements): searched anew
    let data = common::accuracy_data_of(package().parent().unwrap(), "pkg");
    common::quick_fit(&copy, &data, 10, &["--seed", "7"]);
    let c2 = Serve::start(&copy, &["--cache-dir", c]);
    assert_eq!(post(&c2.url("/v1/subnets"), &body).status, 200);
    assert_eq!(metric(&c2, "ofa_computations_total{kind=\"search\"}"), 1.0);
}

/// Poll job `id` until `done` holds for its status (each poll is an answer the server gave, so
/// this waits on the job's progress, not on time); the last status.
fn wait_job(server: &Serve, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    loop {
        let st = get(&server.url(&format!("/v1/jobs/{id}"))).json();
        if done(&st) {
            return st;
        }
        assert!(
            st["state"] != "failed",
            "the job failed: {}",
            st["error"].as_str().unwrap_or("?")
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_finetuning_job_makes_a_new_subnet_that_is_served_kept_and_cancellable() {
    let pkg = package();
    let cache = tempfile::tempdir().unwrap();
    let c = s(cache.path());
    let server = Serve::start(pkg, &["--cache-dir", c, "--max-jobs", "1"]);
    let smallest = json!({"ks": vec![3; 20], "e": vec![3; 20], "d": vec![2; 5], "r": 32});
    let base = post(
        &server.url("/v1/subnets"),
        &json!({"supernet": "pkg", "arch": smallest}),
    )
    .json();
    let base_id = base["id"].as_str().unwrap().to_string();
    let url = server.url(&format!("/v1/subnets/{base_id}/finetune"));

    // a short job runs to a new subnet
    let r = post(&url, &json!({"epochs": 0.5}));
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    let job = r.json();
    let id = job["id"].as_str().unwrap().to_string();
    assert_ne!(id, base_id);
    assert_eq!(
        r.header("location"),
        Some(format!("/v1/jobs/{id}").as_str())
    );
    let done = wait_job(&server, &id, |st| st["state"] == "succeeded");
    assert!(done["heldout_top1"].as_f64().is_some(), "{done}");
    let rec = get(&server.url(&format!("/v1/subnets/{id}"))).json();
    assert_eq!(rec["finetuned"]["base"], base_id.as_str());
    assert_eq!(rec["arch"], base["arch"]);
    let w = get(&server.url(&format!("/v1/subnets/{id}/weights")));
    assert_eq!(w.status, 200);
    let etag = w.header("etag").unwrap().to_string();
    let base_w = get(&server.url(&format!("/v1/subnets/{base_id}/weights"))).body;
    assert_ne!(w.body, base_w, "the fine-tuned weights are the cut's");
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("ft.safetensors");
    std::fs::write(&file, &w.body).unwrap();
    let f = ofa_supernet::Subnet::load(&file, tch::Device::Cpu).unwrap();
    assert!(f.metadata.contains_key("finetune"));
    assert_eq!(
        get(&server.url(&format!("/v1/subnets/{id}/net-config"))).json(),
        get(&server.url(&format!("/v1/subnets/{base_id}/net-config"))).json()
    );
    let onnx = get(&server.url(&format!("/v1/subnets/{id}/model.onnx")));
    assert_eq!(onnx.status, 200);
    assert!(onnx.body.len() > 1000);
    // asking again is the same, finished job
    let again = post(&url, &json!({"epochs": 0.5, "teacher": "largest"}));
    assert_eq!(
        (again.status, again.json()["state"].clone()),
        (200, json!("succeeded"))
    );
    // a finished job is not cancelled
    let gone = send("DELETE", &server.url(&format!("/v1/jobs/{id}")), &[], None);
    assert_eq!(gone.status, 409);
    assert_eq!(gone.json()["error"]["code"], "job_finished");

    // one job runs, --max-jobs 1 waits, the next is refused; both cancel
    let long = post(&url, &json!({"epochs": 1000})).json();
    let long_id = long["id"].as_str().unwrap().to_string();
    wait_job(&server, &long_id, |st| st["state"] == "running");
    let queued = post(&url, &json!({"epochs": 999, "teacher": "none"}));
    assert_eq!(queued.status, 202);
    assert_eq!(queued.json()["state"], "queued");
    let full = post(&url, &json!({"epochs": 998}));
    assert_eq!(full.status, 503);
    assert_eq!(full.json()["error"]["code"], "overloaded");
    let qid = queued.json()["id"].as_str().unwrap().to_string();
    let del = send("DELETE", &server.url(&format!("/v1/jobs/{qid}")), &[], None);
    assert_eq!(
        (del.status, del.json()["state"].clone()),
        (202, json!("cancelled"))
    );
    // a cancelled job no longer waits: its place in the queue is free again
    let next = post(&url, &json!({"epochs": 997}));
    assert_eq!(
        (next.status, next.json()["state"].clone()),
        (202, json!("queued")),
        "{}",
        String::from_utf8_lossy(&next.body)
    );
    let nid = next.json()["id"].as_str().unwrap().to_string();
    let del = send("DELETE", &server.url(&format!("/v1/jobs/{nid}")), &[], None);
    assert_eq!(del.status, 202);
    let del = send(
        "DELETE",
        &server.url(&format!("/v1/jobs/{long_id}")),
        &[],
        None,
    );
    assert_eq!(del.status, 202);
    assert_eq!(del.json()["cancel_requested"], true);
    let stopped = wait_job(&server, &long_id, |st| st["state"] == "cancelled");
    assert!(stopped["step"].as_u64().unwrap() < 6000, "{stopped}");
    assert_eq!(
        get(&server.url(&format!("/v1/subnets/{long_id}"))).status,
        404,
        "a cancelled job has no subnet"
    );

    // bad input: 4xx with a code
    for (body, status, code) in [
        (json!({"epochs": 0}), 422, "invalid_finetune"),
        (json!({"epochs": -1}), 422, "invalid_finetune"),
        (
            json!({"epochs": 1, "teacher": "smallest"}),
            422,
            "invalid_json",
        ),
        (json!({"epochs": 1, "lr": 0.1}), 422, "invalid_json"),
        (json!({}), 422, "invalid_json"),
    ] {
        let r = post(&url, &body);
        assert_eq!(
            r.status,
            status,
            "{body}: {}",
            String::from_utf8_lossy(&r.body)
        );
        assert!(r.json()["error"]["code"].as_str().is_some(), "{body}");
        if code != "invalid_json" {
            assert_eq!(r.json()["error"]["code"], code, "{body}");
        }
    }
    let unknown = post(
        &server.url(&format!("/v1/subnets/{}/finetune", "0".repeat(32))),
        &json!({"epochs": 1}),
    );
    assert_eq!(unknown.status, 404);
    assert_eq!(get(&server.url("/v1/jobs/nope")).status, 400);
    let none = get(&server.url(&format!("/v1/jobs/{}", "0".repeat(32))));
    assert_eq!(
        (none.status, none.json()["error"]["code"].clone()),
        (404, json!("unknown_job"))
    );
    let twice = post(
        &server.url(&format!("/v1/subnets/{id}/finetune")),
        &json!({"epochs": 1}),
    );
    assert_eq!(twice.json()["error"]["code"], "invalid_base");
    assert!(
        twice.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&base_id),
        "the message names the base to fine-tune instead"
    );
    assert!(server.terminate().success());

    // after a restart on the same cache folder: the subnet and its job are still there
    let again = Serve::start(pkg, &["--cache-dir", c]);
    assert_eq!(
        get(&again.url(&format!("/v1/jobs/{id}"))).json()["state"],
        "succeeded"
    );
    let w2 = get(&again.url(&format!("/v1/subnets/{id}/weights")));
    assert_eq!((w2.status, w2.header("etag")), (200, Some(etag.as_str())));
    assert_eq!(w2.body, w.body);
}

#[test]
fn a_package_without_its_training_data_cannot_finetune() {
    // a copy of the package whose card names a dataset that is not here
    let tmp = tempfile::tempdir().unwrap();
    let copy = tmp.path().join("pkg");
    std::fs::create_dir_all(copy.join("latency")).unwrap();
    for e in walk(package()) {
        let rel = e.strip_prefix(package()).unwrap();
        std::fs::copy(&e, copy.join(rel)).unwrap();
    }
    let card = copy.join("card.json");
    let mut v: Value = serde_json::from_slice(&std::fs::read(&card).unwrap()).unwrap();
    v["dataset"] = json!("/nonexistent/fashion-mnist");
    std::fs::write(&card, v.to_string()).unwrap();
    let server = Serve::start(&copy, &[]);
    let smallest = json!({"ks": vec![3; 20], "e": vec![3; 20], "d": vec![2; 5], "r": 32});
    let id = post(
        &server.url("/v1/subnets"),
        &json!({"supernet": "pkg", "arch": smallest}),
    )
    .json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = post(
        &server.url(&format!("/v1/subnets/{id}/finetune")),
        &json!({"epochs": 1}),
    );
    assert_eq!(r.status, 409);
    assert_eq!(r.json()["error"]["code"], "no_training_data");
    // behind a token like every route
    let guarded = Serve::start(&copy, &["--token", "t"]);
    let r = post(
        &guarded.url(&format!("/v1/subnets/{id}/finetune")),
        &json!({"epochs": 1}),
    );
    assert_eq!(r.status, 401);
}

/// The files under `dir`, recursively.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn a_search_strategy_is_chosen_recorded_and_keyed() {
    let server = Serve::start(package(), &[]);
    let budget = mid_latency(&server);
    let req = |strategy: Option<&str>| {
        let mut b =
            json!({"supernet": "pkg", "hardware": "cpu", "constraints": {"latency_ms": budget}});
        if let Some(st) = strategy {
            b["strategy"] = json!(st);
        }
        post(&server.url("/v1/subnets"), &b)
    };
    let plain = req(None).json();
    assert_eq!(plain["search"]["strategy"], "evolution");
    assert_eq!(req(Some("evolution")).json(), plain, "the default, named");
    for st in ["aging", "random"] {
        let r = req(Some(st));
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let rec = r.json();
        // a search of its own (not the evolution's cached answer), within the budget
        assert_eq!(rec["search"]["strategy"], st);
        assert!(rec["predicted"]["latency_ms"].as_f64().unwrap() <= budget);
    }
    let bad = req(Some("annealing"));
    assert_eq!(bad.status, 422);
    assert_eq!(bad.json()["error"]["code"], "invalid_strategy");
    let with_arch = post(
        &server.url("/v1/subnets"),
        &json!({"supernet": "pkg", "arch": "largest", "strategy": "aging"}),
    );
    assert_eq!(with_arch.status, 422);
    // a front: NSGA-II or random samples; aging has one objective
    let front = |st: &str| {
        post(
            &server.url("/v1/pareto"),
            &json!({"supernet": "pkg", "objective": "macs_m", "strategy": st}),
        )
    };
    let random = front("random");
    assert_eq!(
        random.status,
        200,
        "{}",
        String::from_utf8_lossy(&random.body)
    );
    assert!(!random.json()["points"].as_array().unwrap().is_empty());
    assert_ne!(random.json(), front("evolution").json());
    let aging = front("aging");
    assert_eq!(
        (aging.status, aging.json()["error"]["code"].clone()),
        (422, json!("invalid_strategy"))
    );
}

#[test]
fn a_package_of_each_family_is_served_side_by_side() {
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let px = specialised_package_of(tmp.path(), "smoke-proxyless", "proxyless");
    let rn = specialised_package_of(tmp.path(), "smoke-resnet", "resnet");
    let server = Serve::start(package(), &["--package", s(&px), "--package", s(&rn)]);
    let list = get(&server.url("/v1/supernets")).json();
    let space = |name: &str| {
        list["supernets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .map(|p| p["space"].clone())
            .unwrap()
    };
    let families = [
        ("pkg", "mobilenet_v3", "MobileNetV3"),
        ("proxyless", "proxyless_nas", "ProxylessNASNets"),
        ("resnet", "resnet", "ResNets"),
    ];
    // a ResNet's width choices, which its archs' `w` index
    assert_eq!(space("resnet")["widths"], json!([0.05, 0.1, 0.125]));
    assert!(space("pkg")["widths"].is_null());
    for (name, fam, reference) in families {
        assert_eq!(space(name)["family"], fam);
        let budget = mid_latency_of(&server, name);
        let req =
            json!({"supernet": name, "hardware": "cpu", "constraints": {"latency_ms": budget}});
        let r = post(&server.url("/v1/subnets"), &req);
        assert_eq!(
            r.status,
            200,
            "{name}: {}",
            String::from_utf8_lossy(&r.body)
        );
        let rec = r.json();
        assert!(rec["predicted"]["latency_ms"].as_f64().unwrap() <= budget);
        let id = rec["id"].as_str().unwrap();
        let nc = get(&server.url(&format!("/v1/subnets/{id}/net-config"))).json();
        assert_eq!(nc["name"], reference, "{name}");
        assert_eq!(nc["final_expand_layer"].is_object(), name == "pkg");
        assert_eq!(nc["input_stem"].is_array(), name == "resnet");
        // the weights are the family's subnet file
        let w = get(&server.url(&format!("/v1/subnets/{id}/weights")));
        assert_eq!(w.status, 200);
        let file = tmp.path().join(format!("{name}.safetensors"));
        std::fs::write(&file, &w.body).unwrap();
        let inspected: Value =
            serde_json::from_str(&run_ok(ofa().args(["inspect", s(&file), "--json"]))).unwrap();
        assert_eq!(inspected["family"], fam);
        let onnx = get(&server.url(&format!("/v1/subnets/{id}/model.onnx")));
        assert_eq!(onnx.status, 200, "{name}");
    }
}
