//! `ofa-server`: the subnet service over HTTP.
//!
//! A team trains once and serves its packages; device teams ask for the best subnet within their
//! budget and download it. Layout (after text-embeddings-inference):
//! - [`state`]: per package, its predictors (shared by search threads), its model [`worker`]
//!   thread (the package's tensors have one owner, fed through a bounded queue), its summary;
//! - [`routes`]: the handlers; searches run on rayon behind permits and a deadline, cuts on the
//!   model thread; every wait is bounded by the request timeout;
//! - [`finetune`]: fine-tuning jobs, one at a time per package on its own thread, whose results
//!   are subnets served like any other;
//! - [`hardware`]: the routes that learn a device: its probes, and its measurements fitted into a
//!   hardware that later searches can name (kept in `--cache-dir`);
//! - [`cache`]: results in memory (bounded in bytes) and on disk (atomic, hash-checked), with
//!   identical concurrent cold requests sharing one computation;
//! - [`error`]: one enum mapped to statuses and stable codes; [`api`]: the JSON types;
//!   [`openapi`]: the document generated from both.
//!
//! Nothing here prints: the caller renders what [`Server::bind`] and [`Server::run`] return.

#![warn(missing_docs)]

pub mod api;
pub mod budget;
pub mod cache;
pub mod error;
pub mod finetune;
pub mod hardware;
pub mod listen;
pub mod openapi;
pub mod routes;
pub mod state;
pub mod worker;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{header, HeaderName, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use ofa_package::measure::Recalibration;
use sha2::Digest;
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::error::ApiError;
use crate::state::{AppState, Limits, Served};

/// How to serve.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Package folders; each is served under its folder name.
    pub packages: Vec<PathBuf>,
    /// Address to listen on (port 0: any free port).
    pub addr: SocketAddr,
    /// Keep results here too (survives restarts; may be shared by replicas).
    pub cache_dir: Option<PathBuf>,
    /// Memory for cached results, bytes.
    pub cache_bytes: u64,
    /// The most `cache_dir` may hold, bytes (least recently used entries go first).
    pub cache_dir_bytes: u64,
    /// Require `Authorization: Bearer <token>` (except on `/healthz` and `/readyz`).
    pub token: Option<String>,
    /// Cut requests queued per supernet, and searches running or waiting, before 503.
    pub max_queue: usize,
    /// Fine-tuning jobs waiting per supernet (besides the running one) before 503.
    pub max_jobs: usize,
    /// Time limit of a request's work.
    pub request_timeout: Duration,
    /// How long in-flight requests may take to finish after a shutdown signal.
    pub drain_timeout: Duration,
    /// Time for a request's head to arrive; also the longest a kept-alive connection may idle.
    pub header_timeout: Duration,
    /// Time for a request's body to arrive.
    pub body_timeout: Duration,
    /// Connections served at once (more wait in the listen backlog).
    pub max_connections: usize,
    /// Request bodies above this many bytes get 413.
    pub max_body_bytes: usize,
    /// Device of the model threads.
    pub device: tch::Device,
    /// BN recalibration of served subnets (the same as `ofa extract`'s by default).
    pub recalibration: Recalibration,
    /// libtorch intra-op threads of the model threads (weights are bit-identical to `ofa
    /// extract`'s at the same count).
    pub threads: i32,
    /// Before serving, time probes on each model thread and add the hardware `local` fitted to
    /// them (`ofa serve --calibrate N`).
    pub calibrate: Option<ofa_extractor::calibrate::CalibrateOptions>,
}

impl Default for ServeConfig {
    fn default() -> ServeConfig {
        ServeConfig {
            packages: Vec::new(),
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            cache_dir: None,
            cache_bytes: 512 << 20,
            cache_dir_bytes: 4 << 30,
            token: None,
            max_queue: 64,
            max_jobs: 4,
            request_timeout: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(30),
            header_timeout: Duration::from_secs(30),
            body_timeout: Duration::from_secs(30),
            max_connections: 1024,
            max_body_bytes: 64 << 10,
            device: tch::Device::Cpu,
            recalibration: Recalibration::default(),
            threads: tch::get_num_threads(),
            calibrate: None,
        }
    }
}

/// Why the server could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Nothing to serve.
    #[error("give at least one package (--package DIR)")]
    NoPackage,
    /// An empty token, which would accept an empty `Authorization: Bearer`.
    #[error("the API token is empty: give a token, or none to serve without authentication")]
    EmptyToken,
    /// Two packages with one name.
    #[error("two packages are named `{0}` (a package's name is its folder name)")]
    DuplicateName(String),
    /// A package that cannot be served.
    #[error("package `{name}`: {reason}")]
    Package {
        /// Its name.
        name: String,
        /// Why.
        reason: String,
    },
    /// The cache folder.
    #[error("cannot use the cache folder {}", path.display())]
    Cache {
        /// The folder.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Listening or serving.
    #[error("cannot listen or serve on {addr}")]
    Io {
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
}

/// How [`Server::run`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// Every in-flight request finished.
    Drained,
    /// The drain timeout passed with requests still in flight.
    DrainTimedOut,
}

/// A bound server, ready to run.
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    app: Router,
    addr: SocketAddr,
    drain: Duration,
    conn: listen::ConnLimits,
    /// The metrics upkeep task: it stops when the server does (returns from [`Server::run`] or
    /// is dropped unstarted).
    upkeep: Background,
}

/// A background task that ends with its owner.
#[derive(Debug)]
struct Background(tokio::task::JoinHandle<()>);

impl Drop for Background {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn recorder() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets(&[
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    10.0, 30.0,
                ])
                .unwrap_or_else(|_| PrometheusBuilder::new());
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be installed (an embedding program); then the
            // server's metrics go there and `/metrics` renders this one's (empty) view.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

impl Server {
    /// Open every package (predictors, then weights on a model thread each) and bind `addr`.
    pub async fn bind(cfg: ServeConfig) -> Result<Server, ServeError> {
        if cfg.packages.is_empty() {
            return Err(ServeError::NoPackage);
        }
        if cfg.token.as_deref().is_some_and(|t| t.trim().is_empty()) {
            return Err(ServeError::EmptyToken);
        }
        let metrics = recorder();
        let mut supernets = BTreeMap::new();
        for dir in &cfg.packages {
            let name = ofa_package::package_name(dir);
            if supernets.contains_key(&name) {
                return Err(ServeError::DuplicateName(name));
            }
            let (d, n, device, recal, q, threads, calibrate) = (
                dir.clone(),
                name.clone(),
                cfg.device,
                cfg.recalibration,
                cfg.max_queue,
                cfg.threads,
                cfg.calibrate,
            );
            let served = tokio::task::spawn_blocking(move || {
                Served::open(&n, &d, device, recal, q, threads, calibrate)
            })
            .await
            .map_err(|e| ServeError::Package {
                name: name.clone(),
                reason: e.to_string(),
            })?
            .map_err(|reason| ServeError::Package {
                name: name.clone(),
                reason,
            })?;
            supernets.insert(name, served);
        }
        // hardware added over HTTP before, on this cache folder
        let hardware_dir = cfg.cache_dir.as_ref().map(|d| d.join("hardware"));
        if let Some(dir) = &hardware_dir {
            for sn in supernets.values() {
                state::restore_hardware(dir, sn);
            }
        }
        let store = cache::Store::new(
            cfg.cache_dir.as_deref(),
            cfg.cache_bytes,
            cfg.cache_dir_bytes,
        )
        .map_err(|e| {
            ServeError::Cache {
                // only a cache folder can fail to open: the path is always there
                path: cfg.cache_dir.clone().unwrap_or_default(),
                source: e,
            }
        })?;
        // Histograms keep their samples until drained: drain them every few seconds, whether or
        // not anything scrapes `/metrics`, so memory stays flat under load.
        let handle = metrics.clone();
        let upkeep = Background(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tick.tick().await;
                handle.run_upkeep();
            }
        }));
        let jobs = finetune::Jobs::new(
            cfg.cache_dir.as_ref().map(|d| d.join("finetune")),
            cfg.max_jobs.max(1),
            supernets
                .values()
                .map(|sn| {
                    let c = finetune::JobConfig {
                        dir: sn.dir.clone(),
                        device: cfg.device,
                        recalibration: cfg.recalibration,
                        threads: cfg.threads,
                    };
                    (sn.name.clone(), c)
                })
                .collect(),
        )
        .map_err(|e| ServeError::Cache {
            path: cfg.cache_dir.clone().unwrap_or_else(std::env::temp_dir),
            source: e,
        })?;
        let state = Arc::new(AppState {
            jobs,
            supernets,
            store,
            searches: Arc::new(Semaphore::new(cfg.max_queue.max(1))),
            max_searches: cfg.max_queue.max(1),
            limits: Limits {
                request_timeout: cfg.request_timeout,
                max_body_bytes: cfg.max_body_bytes,
                body_timeout: cfg.body_timeout,
            },
            token: cfg.token.as_deref().map(token_digest),
            metrics,
            hardware_dir,
        });
        let listener = TcpListener::bind(cfg.addr)
            .await
            .map_err(|e| ServeError::Io {
                addr: cfg.addr,
                source: e,
            })?;
        let addr = listener.local_addr().map_err(|e| ServeError::Io {
            addr: cfg.addr,
            source: e,
        })?;
        Ok(Server {
            listener,
            app: router(state),
            addr,
            drain: cfg.drain_timeout,
            conn: listen::ConnLimits {
                max_connections: cfg.max_connections,
                header_timeout: cfg.header_timeout,
            },
            upkeep,
        })
    }

    /// The application, to call in process (`tower::ServiceExt::oneshot`): the same routes,
    /// state and middleware as over TCP.
    pub fn router(&self) -> Router {
        self.app.clone()
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serve until `shutdown` completes; then refuse new connections and let in-flight requests
    /// finish for at most the drain timeout.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<Stopped, ServeError> {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let serve = listen::serve(self.listener, self.app, self.conn, async move {
            shutdown.await;
            let _ = tx.send(());
        });
        let drain = self.drain;
        // dropped when this returns: the upkeep task stops with the server
        let _upkeep = self.upkeep;
        tokio::pin!(serve);
        tokio::select! {
            () = &mut serve => Ok(Stopped::Drained),
            _ = async { if rx.await.is_ok() { tokio::time::sleep(drain).await } else { std::future::pending::<()>().await } } => {
                Ok(Stopped::DrainTimedOut)
            }
        }
    }
}

/// Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

/// The application: routes, fallbacks and the middleware stack.
pub fn router(state: Arc<AppState>) -> Router {
    let limit = state.limits.max_body_bytes;
    let x_request_id = HeaderName::from_static("x-request-id");
    Router::new()
        .route("/v1/supernets", get(routes::list_supernets))
        .route("/v1/supernets/{name}", get(routes::get_supernet))
        .route("/v1/supernets/{name}/probes", get(hardware::get_probes))
        .route("/v1/supernets/{name}/hardware", post(hardware::post_hardware))
        .route("/v1/subnets", post(routes::post_subnet))
        .route("/v1/subnets/{id}", get(routes::get_subnet))
        .route("/v1/subnets/{id}/weights", get(routes::get_weights))
        .route("/v1/subnets/{id}/net-config", get(routes::get_net_config))
        .route("/v1/subnets/{id}/model.onnx", get(routes::get_onnx))
        .route("/v1/subnets/{id}/finetune", post(routes::post_finetune))
        .route(
            "/v1/jobs/{job}",
            get(routes::get_job).delete(routes::delete_job),
        )
        .route("/v1/pareto", post(routes::post_pareto))
        .route("/healthz", get(routes::healthz))
        .route("/readyz", get(routes::readyz))
        .route("/metrics", get(routes::metrics))
        .route("/openapi.json", get(routes::openapi))
        .fallback(routes::not_found)
        .method_not_allowed_fallback(routes::method_not_allowed)
        .layer(DefaultBodyLimit::max(limit))
        .layer(middleware::from_fn_with_state(state.clone(), authorize))
        .layer(middleware::from_fn(track))
        .layer(catch_panics())
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|req: &Request| {
                    let id = req
                        .headers()
                        .get("x-request-id")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("-");
                    tracing::info_span!("request", method = %req.method(), uri = %req.uri(), request_id = %id)
                })
                .on_request(())
                .on_response(log_response),
        )
        .layer(middleware::from_fn(error::with_request_id))
        .layer(PropagateRequestIdLayer::new(x_request_id.clone()))
        .layer(SetRequestIdLayer::new(x_request_id, MakeRequestUuid))
        .with_state(state)
}

/// The request log, inside the request's span (method, URI, request id): answers that went well
/// at debug level (`ofa -v serve`; at tens of thousands of cached answers a second, a line each
/// costs a third of the throughput), the others at info.
fn log_response(resp: &Response, latency: Duration, _: &tracing::Span) {
    let (status, ms) = (resp.status().as_u16(), latency.as_secs_f64() * 1e3);
    if resp.status().is_success() || resp.status().is_redirection() {
        tracing::debug!(status, ms, "answered");
    } else {
        tracing::info!(status, ms, "answered");
    }
}

/// A panic in a handler becomes a counted JSON 500; the connection and the server go on.
pub fn catch_panics() -> CatchPanicLayer<fn(Box<dyn std::any::Any + Send>) -> Response> {
    fn respond(_: Box<dyn std::any::Any + Send>) -> Response {
        metrics::counter!("ofa_panics_total", "where" => "handler").increment(1);
        ApiError::Internal("the handler panicked; the server goes on".into()).into_response()
    }
    CatchPanicLayer::custom(respond as fn(Box<dyn std::any::Any + Send>) -> Response)
}

/// The SHA-256 of a token: what the server keeps and compares, so the comparison takes the same
/// time whatever the length of the token given or expected.
fn token_digest(token: &str) -> [u8; 32] {
    sha2::Sha256::digest(token.as_bytes()).into()
}

/// The credentials of an `Authorization: Bearer <token>` header (the scheme in any case, as
/// RFC 7235 has it).
fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Bearer-token check (constant time, on digests); `/healthz` and `/readyz` stay open.
async fn authorize(State(s): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    if let Some(expected) = &s.token {
        let path = req.uri().path();
        if path != "/healthz" && path != "/readyz" {
            let given = req
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(bearer)
                .filter(|t| !t.is_empty());
            let ok = given.is_some_and(|t| bool::from(token_digest(t).ct_eq(expected)));
            if !ok {
                return ApiError::Unauthorized.into_response();
            }
        }
    }
    next.run(req).await
}

/// Requests by route, method and status, and their latency by route.
async fn track(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    // a fixed set of labels: a client cannot add series with made-up methods
    let method: &'static str = match req.method().as_str() {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "OPTIONS" => "OPTIONS",
        "PATCH" => "PATCH",
        _ => "other",
    };
    let t = Instant::now();
    let resp = next.run(req).await;
    let status = resp.status();
    metrics::counter!("ofa_http_requests_total", "route" => route.clone(), "method" => method,
                      "status" => status.as_u16().to_string())
    .increment(1);
    metrics::histogram!("ofa_http_request_duration_seconds", "route" => route)
        .record(t.elapsed().as_secs_f64());
    if status == StatusCode::INTERNAL_SERVER_ERROR {
        metrics::counter!("ofa_http_internal_errors_total").increment(1);
    }
    resp
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    use super::*;

    /// The layers of [`router`] that shape a 500, over `app`.
    fn layered(app: Router) -> Router {
        let x = HeaderName::from_static("x-request-id");
        app.layer(catch_panics())
            .layer(middleware::from_fn(error::with_request_id))
            .layer(PropagateRequestIdLayer::new(x.clone()))
            .layer(SetRequestIdLayer::new(x, MakeRequestUuid))
    }

    async fn call(app: &Router, path: &str) -> (StatusCode, String, serde_json::Value) {
        let r = app
            .clone()
            .oneshot(Request::get(path).body(Body::empty()).expect("a request"))
            .await
            .unwrap_or_else(|e| match e {});
        let status = r.status();
        let id = r
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let body = axum::body::to_bytes(r.into_body(), 1 << 16)
            .await
            .expect("a body");
        (status, id, serde_json::from_slice(&body).expect("JSON"))
    }

    #[tokio::test]
    async fn a_500_says_internal_error_and_the_request_id_and_nothing_else() {
        async fn fail() -> Result<&'static str, ApiError> {
            Err(ApiError::Internal(
                "/srv/cache/weights/abc: libtorch said no".into(),
            ))
        }
        async fn boom() -> &'static str {
            panic!("boom at /srv/secret")
        }
        let app = layered(
            Router::new()
                .route("/fail", get(fail))
                .route("/boom", get(boom)),
        );
        for path in ["/fail", "/boom"] {
            let (status, id, v) = call(&app, path).await;
            assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
            assert_eq!(v["error"]["code"], "internal", "{v}");
            assert_eq!(v["error"]["message"], "internal error", "{v}");
            assert!(id.len() >= 32, "no request id header: {id:?}");
            assert_eq!(v["error"]["request_id"], id.as_str(), "{v}");
            assert!(!v.to_string().contains("/srv"), "{v}");
        }
    }

    #[tokio::test]
    async fn a_background_task_ends_with_its_owner() {
        let alive = Arc::new(());
        let held = alive.clone();
        let task = Background(tokio::spawn(async move {
            let _held = held;
            std::future::pending::<()>().await
        }));
        tokio::task::yield_now().await;
        assert_eq!(Arc::strong_count(&alive), 2, "the task holds its Arc");
        drop(task);
        // on this single-threaded runtime the aborted task is dropped at its next turn
        for _ in 0..100 {
            if Arc::strong_count(&alive) == 1 {
                return;
            }
            tokio::task::yield_now().await;
        }
        panic!("the task outlived its owner");
    }

    #[tokio::test]
    async fn a_panicking_handler_is_a_json_500_and_the_router_goes_on() {
        async fn boom() -> &'static str {
            panic!("boom")
        }
        let app = Router::new()
            .route("/boom", get(boom))
            .route("/ok", get(|| async { "ok" }))
            .layer(catch_panics());
        let r = app
            .clone()
            .oneshot(
                Request::get("/boom")
                    .body(Body::empty())
                    .expect("a request"),
            )
            .await
            .unwrap_or_else(|e| match e {});
        assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = axum::body::to_bytes(r.into_body(), 1 << 16)
            .await
            .expect("a body");
        let v: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
        assert_eq!(v["error"]["code"], "internal");
        let r = app
            .oneshot(Request::get("/ok").body(Body::empty()).expect("a request"))
            .await
            .unwrap_or_else(|e| match e {});
        assert_eq!(r.status(), StatusCode::OK);
    }
}
