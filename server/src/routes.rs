//! The handlers.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use ofa_extractor::pipeline::OnnxOptions;
use ofa_extractor::{Constraints, Front, ParetoConfig, Predicted, Scored};
use ofa_predictors::Metric;
use ofa_space::ArchConfig;
use ofa_supernet::checkpoint::sha256_hex;
use ofa_supernet::SubnetConfig;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use tokio::sync::oneshot;

use crate::api::{
    Health, Links, ParetoRequest, PredictedBody, SearchInfo, SubnetRecord, SubnetRequest,
    SupernetInfo, SupernetList,
};
use crate::cache::{Blob, Kind};
use crate::error::ApiError;
use crate::finetune::{finetune_id, unknown_job, FinetuneRequest, JobState, JobStatus};
use crate::state::{content_id, valid_id, AppState, Served};

/// Shared state of the handlers.
pub type Shared = State<Arc<AppState>>;

/// A JSON body whose every rejection is an [`ApiError`] (415, 400, 413, 422).
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<T> FromRequest<Arc<AppState>> for ApiJson<T>
where
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    /// The body, read within `--body-timeout` (a client that trickles it gets 408).
    async fn from_request(req: Request, state: &Arc<AppState>) -> Result<Self, Self::Rejection> {
        let limit = state.limits.body_timeout;
        match tokio::time::timeout(limit, Json::<T>::from_request(req, state)).await {
            Ok(Ok(Json(v))) => Ok(ApiJson(v)),
            Ok(Err(r)) => Err(json_rejection(r)),
            Err(_) => Err(ApiError::BodyTimeout(limit.as_secs_f64())),
        }
    }
}

fn json_rejection(r: JsonRejection) -> ApiError {
    match r {
        JsonRejection::MissingJsonContentType(_) => ApiError::UnsupportedMediaType(
            "the body must be JSON with `Content-Type: application/json`".into(),
        ),
        JsonRejection::JsonSyntaxError(e) => ApiError::bad("malformed_json", e.body_text()),
        JsonRejection::JsonDataError(e) => {
            // the field that failed, as serde found it (axum deserialises through
            // `serde_path_to_error`): an objective has its own code
            let field = data_error_path(&e);
            let code = match field.as_deref() {
                Some("objective") => "invalid_objective",
                Some("strategy") => "invalid_strategy",
                _ => "invalid_request",
            };
            ApiError::unprocessable(code, e.body_text())
        }
        JsonRejection::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::PayloadTooLarge
        }
        other => ApiError::bad("bad_body", other.body_text()),
    }
}

/// The path of the field a JSON body failed on (`objective`, `constraints.latency_ms`).
fn data_error_path(e: &axum::extract::rejection::JsonDataError) -> Option<String> {
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        if let Some(p) = c.downcast_ref::<serde_path_to_error::Error<serde_json::Error>>() {
            return Some(p.path().to_string());
        }
        cause = c.source();
    }
    None
}

pub(crate) fn query_rejection(r: QueryRejection) -> ApiError {
    ApiError::bad("invalid_query", r.body_text())
}

fn json_blob<T: serde::Serialize>(v: &T) -> Blob {
    Arc::new(bytes::Bytes::from(ofa_schema::to_json(v).into_bytes()))
}

pub(crate) fn parse_blob<T: DeserializeOwned>(b: &Blob) -> Result<T, ApiError> {
    serde_json::from_slice(b)
        .map_err(|e| ApiError::Internal(format!("a cached entry does not parse: {e}")))
}

/// `GET /v1/supernets`
#[utoipa::path(get, path = "/v1/supernets", responses((status = 200, body = SupernetList)))]
pub async fn list_supernets(State(s): Shared) -> Json<SupernetList> {
    Json(SupernetList {
        supernets: s.supernets.values().map(|x| x.info()).collect(),
    })
}

/// `GET /v1/supernets/{name}`
#[utoipa::path(get, path = "/v1/supernets/{name}", params(("name" = String, Path)),
    responses((status = 200, body = SupernetInfo), (status = 404, body = crate::api::ErrorBody)))]
pub async fn get_supernet(
    State(s): Shared,
    Path(name): Path<String>,
) -> Result<Json<SupernetInfo>, ApiError> {
    Ok(Json(s.supernet(&name)?.info()))
}

/// The record of `arch` on `sn`: hardware-independent predictions, latency on every hardware.
pub(crate) fn base_record(sn: &Served, scored: &Scored) -> Result<SubnetRecord, ApiError> {
    let arch = scored.arch.clone();
    let p = Predicted::of(scored);
    let mut by_hw = BTreeMap::new();
    let spec = sn.spec();
    for h in spec.hardware_names() {
        let ms = spec
            .hardware(&h)?
            .predict(&arch)
            .map_err(ofa_extractor::ExtractError::from)?;
        by_hw.insert(h, ms);
    }
    let id = sn.subnet_id(&arch);
    Ok(SubnetRecord {
        links: Links {
            record: format!("/v1/subnets/{id}"),
            weights: format!("/v1/subnets/{id}/weights"),
            net_config: format!("/v1/subnets/{id}/net-config"),
            onnx: format!("/v1/subnets/{id}/model.onnx"),
        },
        id,
        supernet: sn.name.clone(),
        arch,
        predicted: PredictedBody {
            top1: p.top1,
            latency_ms: None,
            macs_m: p.macs_m,
            params_m: p.params_m,
        },
        hardware: None,
        latency_ms_by_hardware: by_hw,
        search: None,
        finetuned: None,
    })
}

/// The base record with the latency on `hardware` filled in.
fn for_hardware(mut r: SubnetRecord, hardware: Option<&str>) -> SubnetRecord {
    if let Some(h) = hardware {
        r.predicted.latency_ms = r.latency_ms_by_hardware.get(h).copied();
        r.hardware = Some(h.to_string());
    }
    r
}

async fn within<T>(
    s: &AppState,
    f: impl std::future::Future<Output = Result<T, ApiError>>,
) -> Result<T, ApiError> {
    let limit = s.limits.request_timeout;
    tokio::time::timeout(limit, f)
        .await
        .unwrap_or_else(|_| Err(ApiError::Timeout(limit.as_secs_f64())))
}

/// Run `f` on the rayon pool behind a search permit, and wait for it without blocking.
async fn on_rayon<T: Send + 'static>(
    s: &AppState,
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let permit = s.searches.clone().try_acquire_owned().map_err(|_| {
        metrics::counter!("ofa_rejected_total", "reason" => "searches_full").increment(1);
        ApiError::Overloaded(s.max_searches)
    })?;
    let (tx, rx) = oneshot::channel();
    rayon::spawn(move || {
        let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|_| {
            metrics::counter!("ofa_panics_total", "where" => "search").increment(1);
            Err(ApiError::Internal("the search panicked".into()))
        });
        drop(permit);
        let _ = tx.send(out);
    });
    rx.await
        .map_err(|_| ApiError::Internal("the search thread dropped its result".into()))?
}

/// `POST /v1/subnets`
#[utoipa::path(post, path = "/v1/subnets", request_body = SubnetRequest,
    responses((status = 200, body = SubnetRecord), (status = 422, body = crate::api::ErrorBody),
              (status = 404, body = crate::api::ErrorBody), (status = 503, body = crate::api::ErrorBody)))]
pub async fn post_subnet(
    State(s): Shared,
    ApiJson(req): ApiJson<SubnetRequest>,
) -> Result<Response, ApiError> {
    let sn = s.supernet(&req.supernet)?;
    let hardware = req.hardware.as_deref();
    if let Some(h) = hardware {
        s.learn_hardware(sn, h);
        sn.spec().hardware(h)?;
    }
    match (req.arch, req.constraints) {
        (Some(_), Some(_)) => Err(ApiError::unprocessable(
            "invalid_request",
            "give either `arch` or `constraints`, not both",
        )),
        (Some(a), None) => {
            if req.seed.is_some() || req.strategy.is_some() {
                return Err(ApiError::unprocessable(
                    "invalid_request",
                    "`seed` and `strategy` go with `constraints`",
                ));
            }
            let arch = ArchConfig::deserialize(a).map_err(|e| {
                ApiError::unprocessable("invalid_arch", format!("not a valid arch: {e}"))
            })?;
            let scored = sn.spec().score(&arch, None)?;
            let record = base_record(sn, &scored)?;
            keep_record(&s, &record).await;
            Ok(Json(for_hardware(record, hardware)).into_response())
        }
        (None, Some(c)) => {
            let constraints = c;
            constraints.validate()?;
            if constraints.is_empty() {
                return Err(ofa_extractor::ExtractError::NothingToSearch.into());
            }
            if constraints.latency_ms.is_some() && hardware.is_none() {
                return Err(ofa_extractor::ExtractError::NeedsHardware("constraint").into());
            }
            let seed = req.seed.unwrap_or(0);
            let constraints_json = ofa_schema::to_json(&constraints);
            let seed_text = seed.to_string();
            let mut parts: Vec<&[u8]> = vec![
                b"search/1",
                sn.sha256.as_bytes(),
                hardware.unwrap_or("").as_bytes(),
                constraints_json.as_bytes(),
                seed_text.as_bytes(),
            ];
            // a calibrated hardware is keyed by its table too (keys of the others are unchanged)
            let tag = sn.hardware_tag(hardware);
            if !tag.is_empty() {
                parts.push(tag.as_bytes());
            }
            // so is a strategy other than the default (the default's keys are unchanged)
            let strategy = req.strategy.unwrap_or_default();
            let strategy_tag = format!("strategy={strategy}");
            if strategy != ofa_search::Strategy::Evolution {
                parts.push(strategy_tag.as_bytes());
            }
            let key = content_id(&parts);
            let blob = within(
                &s,
                s.store.get_or_compute(Kind::Search, &key, |_| {
                    search(
                        s.clone(),
                        req.supernet.clone(),
                        constraints,
                        hardware.map(str::to_string),
                        seed,
                        strategy,
                    )
                }),
            )
            .await?;
            // The search's subnet stays addressable by its id even if its record left the cache.
            let mut base: SubnetRecord = parse_blob(&blob)?;
            base.hardware = None;
            base.predicted.latency_ms = None;
            base.search = None;
            keep_record(&s, &base).await;
            Ok(json_response(&blob))
        }
        (None, None) => Err(ofa_extractor::ExtractError::NothingToSearch.into()),
    }
}

/// A search, owning what it needs: it runs detached from the request (see
/// [`Store::get_or_compute`](crate::cache::Store::get_or_compute)).
async fn search(
    s: Arc<AppState>,
    supernet: String,
    constraints: Constraints,
    hardware: Option<String>,
    seed: u64,
    strategy: ofa_search::Strategy,
) -> Result<Blob, ApiError> {
    let sn = s.supernet(&supernet)?;
    let spec = sn.spec();
    let hw = hardware.clone();
    let deadline = Instant::now() + s.limits.request_timeout;
    let cfg = ofa_extractor::EvolutionConfig {
        seed,
        strategy,
        ..Default::default()
    };
    let t = Instant::now();
    let result = on_rayon(&s, move || {
        Ok(spec.search(&constraints, hw.as_deref(), &cfg, Some(deadline))?)
    })
    .await?;
    metrics::histogram!("ofa_search_seconds").record(t.elapsed().as_secs_f64());
    let base = base_record(sn, &result.best)?;
    keep_record(&s, &base).await;
    let mut record = for_hardware(base, hardware.as_deref());
    record.search = Some(SearchInfo {
        evaluated: result.evaluated,
        generations: result.history.len(),
        seconds: result.seconds,
        seed,
        strategy,
    });
    Ok(json_blob(&record))
}

/// Store a subnet's record unless it is there already (a memory lookup on the hot path).
pub(crate) async fn keep_record(s: &AppState, r: &SubnetRecord) {
    if s.store.peek(Kind::Subnet, &r.id).await.is_none() {
        s.store.put(Kind::Subnet, &r.id, json_blob(r)).await;
    }
}

/// A cached JSON body as it is.
fn json_response(b: &Blob) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        bytes::Bytes::clone(b),
    )
        .into_response()
}

pub(crate) async fn record_blob(s: &AppState, id: &str) -> Result<Blob, ApiError> {
    if !valid_id(id) {
        return Err(ApiError::bad(
            "invalid_id",
            format!("`{id}` is not a subnet id (32 lowercase hex digits)"),
        ));
    }
    // An id means one set of bytes everywhere: a record read from disk (maybe written by another
    // replica, of another version of the package) must name a supernet served here, with a valid
    // arch whose id on this supernet is `id`. Anything else is not this replica's subnet. Records
    // in memory were made here or checked when read, so the hot path does no more work.
    let ours = |bytes: &[u8]| {
        let ok = serde_json::from_slice::<SubnetRecord>(bytes).is_ok_and(|r| {
            r.id == id
                && s.supernets.get(&r.supernet).is_some_and(|sn| {
                    if r.arch.validate(&sn.spec().space).is_err() {
                        return false;
                    }
                    let cut = sn.subnet_id(&r.arch);
                    match &r.finetuned {
                        // a fine-tuned subnet's id is its base's, cut here, and its settings
                        Some(f) => f.base == cut && finetune_id(&cut, &sn.cut, &f.request()) == id,
                        None => cut == id,
                    }
                })
        });
        if !ok {
            tracing::warn!(
                id,
                "a cached record does not match this replica's supernet: not served"
            );
            metrics::counter!("ofa_cache_foreign_records_total").increment(1);
        }
        ok
    };
    if let Some(b) = s.store.peek_checked(Kind::Subnet, id, ours).await {
        return Ok(b);
    }
    // a fine-tuning job's result, kept in its run folder (the cache may have let it go)
    match s.jobs.kept_record(id) {
        Some(bytes) if ours(&bytes) => {
            let b: Blob = Arc::new(bytes::Bytes::from(bytes));
            s.store.put(Kind::Subnet, id, b.clone()).await;
            Ok(b)
        }
        _ => Err(ApiError::not_found(
            "unknown_subnet",
            format!("no subnet `{id}` here"),
        )),
    }
}

async fn record(s: &AppState, id: &str) -> Result<SubnetRecord, ApiError> {
    parse_blob(&record_blob(s, id).await?)
}

/// `GET /v1/subnets/{id}`
#[utoipa::path(get, path = "/v1/subnets/{id}", params(("id" = String, Path)),
    responses((status = 200, body = SubnetRecord), (status = 400, body = crate::api::ErrorBody), (status = 404, body = crate::api::ErrorBody)))]
pub async fn get_subnet(State(s): Shared, Path(id): Path<String>) -> Result<Response, ApiError> {
    Ok(json_response(&record_blob(&s, &id).await?))
}

/// `GET /v1/subnets/{id}/net-config`
#[utoipa::path(get, path = "/v1/subnets/{id}/net-config", params(("id" = String, Path)),
    responses((status = 200, description = "the reference `net.config` JSON"), (status = 404, body = crate::api::ErrorBody)))]
pub async fn get_net_config(
    State(s): Shared,
    Path(id): Path<String>,
) -> Result<Json<ofa_schema::net_config::NetConfig>, ApiError> {
    let r = record(&s, &id).await?;
    let sn = s.supernet(&r.supernet)?;
    Ok(Json(
        SubnetConfig::from_arch(&sn.spec().space, &r.arch).to_net_config(),
    ))
}

/// `GET|HEAD /v1/subnets/{id}/weights`
#[utoipa::path(get, path = "/v1/subnets/{id}/weights", params(("id" = String, Path)),
    responses((status = 200, description = "safetensors, BN recalibrated", content_type = "application/octet-stream"),
              (status = 304, description = "not modified (If-None-Match)"), (status = 404, body = crate::api::ErrorBody),
              (status = 503, body = crate::api::ErrorBody)))]
pub async fn get_weights(
    State(s): Shared,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let r = record(&s, &id).await?;
    if r.finetuned.is_some() {
        return finetuned_download(&s, &id, None, &headers).await;
    }
    let sn = s.supernet(&r.supernet)?;
    // The metadata's predictions come from the predictors, as `ofa extract` computes them.
    let predicted = Predicted::of(&sn.spec().score(&r.arch, None)?).without_latency();
    let t = Instant::now();
    let arch = r.arch.clone();
    let key = format!("{id}.{}", sn.cut);
    let blob = within(
        &s,
        s.store.get_or_compute(Kind::Weights, &key, |wanted| {
            cut_blob(s.clone(), r.supernet.clone(), arch, predicted, None, wanted)
        }),
    )
    .await?;
    metrics::histogram!("ofa_weights_seconds").record(t.elapsed().as_secs_f64());
    let (etag, tag) = etag_of(&s, &key, &blob).await?;
    if if_none_match(&headers, &etag) {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, tag)]).into_response());
    }
    download(tag, &blob, &format!("{id}.safetensors"))
}

/// Query of `GET /v1/subnets/{id}/model.onnx`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct OnnxQuery {
    /// ONNX opset, 14 to 21 (default 17).
    opset: Option<i64>,
    /// Fold BatchNormalization into the convolutions (default false).
    fold_bn: Option<bool>,
}

/// `GET /v1/subnets/{id}/model.onnx`
#[utoipa::path(get, path = "/v1/subnets/{id}/model.onnx", params(("id" = String, Path), OnnxQuery),
    responses((status = 200, description = "ONNX model of the BN-recalibrated subnet: input `input` [N, C, R, R], output `logits`",
               content_type = "application/octet-stream"),
              (status = 304, description = "not modified (If-None-Match)"), (status = 404, body = crate::api::ErrorBody),
              (status = 422, body = crate::api::ErrorBody), (status = 503, body = crate::api::ErrorBody)))]
pub async fn get_onnx(
    State(s): Shared,
    Path(id): Path<String>,
    q: Result<Query<OnnxQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let Query(q) = q.map_err(query_rejection)?;
    let o = OnnxOptions {
        opset: q.opset.unwrap_or(ofa_onnx::DEFAULT_OPSET),
        fold_bn: q.fold_bn.unwrap_or(false),
    };
    if !(ofa_onnx::MIN_OPSET..=ofa_onnx::MAX_OPSET).contains(&o.opset) {
        return Err(ofa_extractor::ExtractError::from(ofa_onnx::OnnxError::Opset(o.opset)).into());
    }
    let r = record(&s, &id).await?;
    if r.finetuned.is_some() {
        return finetuned_download(&s, &id, Some(o), &headers).await;
    }
    let sn = s.supernet(&r.supernet)?;
    let predicted = Predicted::of(&sn.spec().score(&r.arch, None)?).without_latency();
    let arch = r.arch.clone();
    let key = format!(
        "{id}.{}.opset{}{}",
        sn.cut,
        o.opset,
        if o.fold_bn { ".folded" } else { "" }
    );
    let blob = within(
        &s,
        s.store.get_or_compute(Kind::Onnx, &key, |wanted| {
            cut_blob(
                s.clone(),
                r.supernet.clone(),
                arch,
                predicted,
                Some(o),
                wanted,
            )
        }),
    )
    .await?;
    let (etag, tag) = etag_of(&s, &key, &blob).await?;
    if if_none_match(&headers, &etag) {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, tag)]).into_response());
    }
    download(tag, &blob, &format!("{id}.onnx"))
}

/// A cut of `arch` on `supernet`'s model thread, detached from the request (it owns what it
/// needs): the subnet file, or with `onnx` its ONNX model.
async fn cut_blob(
    s: Arc<AppState>,
    supernet: String,
    arch: ArchConfig,
    predicted: Predicted,
    onnx: Option<OnnxOptions>,
    wanted: crate::cache::Waiters,
) -> Result<Blob, ApiError> {
    let worker = &s.supernet(&supernet)?.worker;
    let art = worker.cut(arch, predicted, onnx, Some(wanted)).await?;
    let bytes = match onnx {
        None => art.subnet,
        Some(_) => art
            .onnx
            .ok_or_else(|| ApiError::Internal("the model thread wrote no ONNX".into()))?,
    };
    Ok(Arc::new(bytes::Bytes::from(bytes)))
}

/// A fine-tuned subnet's weights (the job's `subnet.safetensors`), or with `onnx` its ONNX export
/// (made once on a blocking thread and cached).
async fn finetuned_download(
    s: &Arc<AppState>,
    id: &str,
    onnx: Option<OnnxOptions>,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let path = s.jobs.weights_path(id);
    let message =
        format!("the weights of the fine-tuned subnet `{id}` are no longer on this server");
    let gone = move || ApiError::not_found("unknown_subnet", message.clone());
    let (kind, key, filename) = match onnx {
        None => (
            Kind::Weights,
            format!("{id}.finetuned"),
            format!("{id}.safetensors"),
        ),
        Some(o) => (
            Kind::Onnx,
            format!(
                "{id}.finetuned.opset{}{}",
                o.opset,
                if o.fold_bn { ".folded" } else { "" }
            ),
            format!("{id}.onnx"),
        ),
    };
    let blob = within(
        s,
        s.store.get_or_compute(kind, &key, |_| async move {
            let made = tokio::task::spawn_blocking(move || -> Result<Vec<u8>, ApiError> {
                if !path.is_file() {
                    return Err(gone());
                }
                let Some(o) = onnx else {
                    return std::fs::read(&path).map_err(|e| {
                        ApiError::Internal(format!("reading {}: {e}", path.display()))
                    });
                };
                let f = ofa_supernet::Subnet::load(&path, tch::Device::Cpu)
                    .map_err(|e| ApiError::Internal(ofa_space::chain(&e)))?;
                let arch = f.arch.ok_or_else(|| {
                    ApiError::Internal("a fine-tuned subnet file records no arch".into())
                })?;
                let e = ofa_onnx::ExportOptions {
                    opset: o.opset,
                    fold_bn: o.fold_bn,
                    ..ofa_onnx::ExportOptions::new(arch.r)
                }
                .with_metadata_from(&f.metadata);
                ofa_onnx::export(&f.net, &e)
                    .map_err(|e| ApiError::from(ofa_extractor::ExtractError::from(e)))
            })
            .await
            .map_err(|e| ApiError::Internal(format!("reading a fine-tuned subnet: {e}")))??;
            Ok(Arc::new(bytes::Bytes::from(made)))
        }),
    )
    .await?;
    let (etag, tag) = etag_of(s, &key, &blob).await?;
    if if_none_match(headers, &etag) {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, tag)]).into_response());
    }
    download(tag, &blob, &filename)
}

/// `POST /v1/subnets/{id}/finetune`
#[utoipa::path(post, path = "/v1/subnets/{id}/finetune", params(("id" = String, Path)),
    request_body = FinetuneRequest,
    responses((status = 202, body = JobStatus, description = "queued, or already queued or running"),
              (status = 200, body = JobStatus, description = "done before: the job's subnet is served"),
              (status = 404, body = crate::api::ErrorBody), (status = 409, body = crate::api::ErrorBody),
              (status = 422, body = crate::api::ErrorBody), (status = 503, body = crate::api::ErrorBody)))]
pub async fn post_finetune(
    State(s): Shared,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<FinetuneRequest>,
) -> Result<Response, ApiError> {
    req.settings()?;
    let base = record(&s, &id).await?;
    if base.finetuned.is_some() {
        return Err(ApiError::unprocessable(
            "invalid_base",
            format!(
                "`{id}` is itself fine-tuned: fine-tune its base subnet `{}` for longer instead",
                base.finetuned.as_ref().map_or("?", |f| f.base.as_str())
            ),
        ));
    }
    let sn = s.supernet(&base.supernet)?;
    crate::finetune::training_data(&sn.dir)?;
    let job = finetune_id(&base.id, &sn.cut, &req);
    let st = s.jobs.submit(&job, base, req)?;
    let status = if st.state == JobState::Succeeded {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    let location = HeaderValue::from_str(&st.links.job)
        .map_err(|e| ApiError::Internal(ofa_space::chain(&e)))?;
    Ok((status, [(header::LOCATION, location)], Json(st)).into_response())
}

/// `GET /v1/jobs/{job}`
#[utoipa::path(get, path = "/v1/jobs/{job}", params(("job" = String, Path)),
    responses((status = 200, body = JobStatus), (status = 400, body = crate::api::ErrorBody),
              (status = 404, body = crate::api::ErrorBody)))]
pub async fn get_job(
    State(s): Shared,
    Path(job): Path<String>,
) -> Result<Json<JobStatus>, ApiError> {
    job_id(&job)?;
    s.jobs.get(&job).map(Json).ok_or_else(|| unknown_job(&job))
}

/// `DELETE /v1/jobs/{job}`
#[utoipa::path(delete, path = "/v1/jobs/{job}", params(("job" = String, Path)),
    responses((status = 202, body = JobStatus, description = "cancelled (queued) or stopping after its current step (running)"),
              (status = 404, body = crate::api::ErrorBody), (status = 409, body = crate::api::ErrorBody)))]
pub async fn delete_job(
    State(s): Shared,
    Path(job): Path<String>,
) -> Result<(StatusCode, Json<JobStatus>), ApiError> {
    job_id(&job)?;
    Ok((StatusCode::ACCEPTED, Json(s.jobs.cancel(&job)?)))
}

fn job_id(id: &str) -> Result<(), ApiError> {
    if valid_id(id) {
        Ok(())
    } else {
        Err(ApiError::bad(
            "invalid_id",
            format!("`{id}` is not a job id (32 lowercase hex digits)"),
        ))
    }
}

/// A file download: immutable, named, with its ETag.
fn download(tag: HeaderValue, blob: &Blob, filename: &str) -> Result<Response, ApiError> {
    let disposition = format!("attachment; filename=\"{filename}\"");
    Ok((
        [
            (header::ETAG, tag),
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            ),
            (header::CONTENT_LENGTH, HeaderValue::from(blob.len())),
            (
                header::CONTENT_DISPOSITION,
                HeaderValue::from_str(&disposition)
                    .map_err(|e| ApiError::Internal(ofa_space::chain(&e)))?,
            ),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=31536000, immutable"),
            ),
        ],
        bytes::Bytes::clone(blob),
    )
        .into_response())
}

/// Whether `If-None-Match` names `etag` (or `*`).
fn if_none_match(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim() == etag || t.trim() == "*")
}

/// The quoted ETag of a downloadable artefact cached under `key` (a weights file's id, an ONNX
/// file's key): its SHA-256, computed once, on a blocking thread, and cached beside it. A 304
/// costs a cache lookup.
async fn etag_of(s: &AppState, key: &str, blob: &Blob) -> Result<(String, HeaderValue), ApiError> {
    let b = blob.clone();
    let e = s
        .store
        .get_or_compute(Kind::Etag, key, |_| async move {
            let hex = tokio::task::spawn_blocking(move || sha256_hex(&b))
                .await
                .map_err(|e| ApiError::Internal(format!("hashing a download: {e}")))?;
            Ok(Arc::new(bytes::Bytes::from(hex)))
        })
        .await?;
    let etag = format!("\"{}\"", String::from_utf8_lossy(&e));
    let tag = HeaderValue::from_str(&etag)
        .map_err(|_| ApiError::Internal(format!("a cached ETag is not a header value: {etag}")))?;
    Ok((etag, tag))
}

/// `?format=json|csv`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FormatQuery {
    /// `json` (default) or `csv`.
    format: Option<String>,
}

/// `POST /v1/pareto`
#[utoipa::path(post, path = "/v1/pareto", request_body = ParetoRequest,
    params(("format" = Option<String>, Query, description = "json (default) or csv")),
    responses((status = 200, description = "the front: points by increasing objective"), (status = 422, body = crate::api::ErrorBody)))]
pub async fn post_pareto(
    State(s): Shared,
    q: Result<Query<FormatQuery>, QueryRejection>,
    ApiJson(req): ApiJson<ParetoRequest>,
) -> Result<Response, ApiError> {
    let Query(q) = q.map_err(query_rejection)?;
    let csv = match q.format.as_deref() {
        None | Some("json") => false,
        Some("csv") => true,
        Some(f) => {
            return Err(ApiError::bad(
                "invalid_query",
                format!("unknown format `{f}`: json or csv"),
            ))
        }
    };
    let sn = s.supernet(&req.supernet)?;
    let hardware = req.hardware.clone();
    if let Some(h) = &hardware {
        s.learn_hardware(sn, h);
        sn.spec().hardware(h)?;
    }
    let objective = match req.objective {
        Some(o) => o,
        None if hardware.is_some() => Metric::LatencyMs,
        None => Metric::MacsM,
    };
    if objective == Metric::LatencyMs && hardware.is_none() {
        return Err(ofa_extractor::ExtractError::NeedsHardware("front").into());
    }
    // no `constraints` in a front request: none (the front spans the whole space)
    let constraints: Constraints = req.constraints.unwrap_or_default();
    constraints.validate()?;
    let seed = req.seed.unwrap_or(0);
    let constraints_json = ofa_schema::to_json(&constraints);
    let seed_text = seed.to_string();
    let mut parts: Vec<&[u8]> = vec![
        b"pareto/1",
        sn.sha256.as_bytes(),
        hardware.as_deref().unwrap_or("").as_bytes(),
        objective.name().as_bytes(),
        constraints_json.as_bytes(),
        seed_text.as_bytes(),
    ];
    // a calibrated hardware is keyed by its table too (keys of the others are unchanged)
    let tag = sn.hardware_tag(hardware.as_deref());
    if !tag.is_empty() {
        parts.push(tag.as_bytes());
    }
    let strategy = req.strategy.unwrap_or_default();
    if strategy == ofa_search::Strategy::Aging {
        return Err(ApiError::unprocessable(
            "invalid_strategy",
            "aging evolution optimises one objective: search a front with `evolution` (NSGA-II) or `random`",
        ));
    }
    let strategy_tag = format!("strategy={strategy}");
    if strategy != ofa_search::Strategy::Evolution {
        parts.push(strategy_tag.as_bytes());
    }
    let key = content_id(&parts);
    let spec = sn.spec();
    let deadline = Instant::now() + s.limits.request_timeout;
    let blob = within(
        &s,
        s.store.get_or_compute(Kind::Front, &key, |_| {
            let s = s.clone();
            async move {
                let t = Instant::now();
                let front = on_rayon(&s, move || {
                    let cfg = ParetoConfig {
                        seed,
                        strategy,
                        ..ParetoConfig::default()
                    };
                    Ok(spec.pareto(
                        objective,
                        &constraints,
                        hardware.as_deref(),
                        &cfg,
                        Some(deadline),
                    )?)
                })
                .await?;
                metrics::histogram!("ofa_search_seconds").record(t.elapsed().as_secs_f64());
                Ok(json_blob(&front))
            }
        }),
    )
    .await?;
    if csv {
        let front: Front = parse_blob(&blob)?;
        return Ok((
            [(header::CONTENT_TYPE, "text/csv; charset=utf-8")],
            front.to_csv(),
        )
            .into_response());
    }
    Ok(json_response(&blob))
}

/// `GET /healthz`: the process answers.
#[utoipa::path(get, path = "/healthz", responses((status = 200, body = Health)))]
pub async fn healthz() -> Json<Health> {
    // alive, and nothing more: the open route does not name what is served
    Json(Health {
        status: "ok".into(),
        supernets: Vec::new(),
    })
}

/// `GET /readyz`: every model thread is running.
#[utoipa::path(get, path = "/readyz", responses((status = 200, body = Health), (status = 503, body = Health)))]
pub async fn readyz(State(s): Shared) -> (StatusCode, Json<Health>) {
    let alive: Vec<String> = s
        .supernets
        .values()
        .filter(|x| x.worker.alive())
        .map(|x| x.name.clone())
        .collect();
    let ready = alive.len() == s.supernets.len();
    (
        if ready {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        },
        Json(Health {
            status: if ready { "ok" } else { "not ready" }.into(),
            supernets: alive,
        }),
    )
}

/// `GET /metrics`: Prometheus text format.
#[utoipa::path(get, path = "/metrics", responses((status = 200, description = "Prometheus text format")))]
pub async fn metrics(State(s): Shared) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.metrics.render(),
    )
}

/// `GET /openapi.json`
pub async fn openapi() -> impl IntoResponse {
    Json(crate::openapi::document())
}

/// Unknown routes.
pub async fn not_found() -> ApiError {
    ApiError::not_found("not_found", "no such route")
}

/// Known routes, wrong method.
pub async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}
