//! The routes that learn hardware: the probes a device should time, and a device's
//! measurements turned into a hardware every later search can name (kept in `--cache-dir`).

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use ofa_space::ArchConfig;
use serde::Deserialize;

use crate::api::SubnetRecord;
use crate::error::ApiError;
use crate::routes::{base_record, keep_record, parse_blob, query_rejection, ApiJson, Shared};
use crate::state::valid_id;

/// Query of `GET /v1/supernets/{name}/probes`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ProbesQuery {
    /// Probes, 3 to 200 (default 20).
    count: Option<usize>,
    /// Seed of the selection (default 0).
    seed: Option<u64>,
}

/// `GET /v1/supernets/{name}/probes`
#[utoipa::path(get, path = "/v1/supernets/{name}/probes", params(("name" = String, Path), ProbesQuery),
    responses((status = 200, body = crate::api::ProbeSet), (status = 404, body = crate::api::ErrorBody),
              (status = 400, body = crate::api::ErrorBody), (status = 422, body = crate::api::ErrorBody)))]
pub async fn get_probes(
    State(s): Shared,
    Path(name): Path<String>,
    q: Result<Query<ProbesQuery>, QueryRejection>,
) -> Result<Json<crate::api::ProbeSet>, ApiError> {
    let Query(q) = q.map_err(query_rejection)?;
    let sn = s.supernet(&name)?;
    let count = q.count.unwrap_or(20);
    if !(3..=200).contains(&count) {
        return Err(ApiError::unprocessable(
            "invalid_count",
            format!("count must be 3 to 200, got {count}"),
        ));
    }
    let seed = q.seed.unwrap_or(0);
    let spec = sn.spec();
    let base = sn.base.as_ref();
    let archs = {
        let features = ofa_predictors::hardware::Features::new(&spec.space, base.map(|b| &b.1));
        ofa_predictors::hardware::choose_probes(
            &features,
            &ofa_space::Choices::all(&spec.space),
            count,
            seed,
            ofa_predictors::hardware::ProbeSelection::Spread,
        )
        .map_err(ofa_extractor::ExtractError::from)?
    };
    let mut probes = Vec::with_capacity(archs.len());
    for arch in &archs {
        let record = base_record(sn, &spec.score(arch, None)?)?;
        keep_record(&s, &record).await;
        probes.push(record);
    }
    Ok(Json(crate::api::ProbeSet {
        supernet: sn.name.clone(),
        base: base.map_or_else(|| "none".to_string(), |b| b.0.clone()),
        seed,
        probes,
    }))
}

/// Whether `name` can name a hardware (and a file): letters, digits, `-`, `_`, `.`, not first, at
/// most 64.
pub fn valid_hardware_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// `POST /v1/supernets/{name}/hardware`
#[utoipa::path(post, path = "/v1/supernets/{name}/hardware", params(("name" = String, Path)),
    request_body = crate::api::HardwareRequest,
    responses((status = 201, body = crate::api::HardwareFitted), (status = 404, body = crate::api::ErrorBody),
              (status = 409, body = crate::api::ErrorBody), (status = 422, body = crate::api::ErrorBody)))]
pub async fn post_hardware(
    State(s): Shared,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<crate::api::HardwareRequest>,
) -> Result<Response, ApiError> {
    let sn = s.supernet(&name)?;
    if !valid_hardware_name(&req.name) {
        return Err(ApiError::unprocessable(
            "invalid_name",
            format!(
                "hardware name `{}`: letters, digits, `-`, `_` and `.` (not first), at most 64",
                req.name
            ),
        ));
    }
    sn.may_add(&req.name, req.replace)?;
    let spec = sn.spec();
    // the measurements, each checked and named by its position
    let mut ms = Vec::with_capacity(req.measurements.len());
    for (i, m) in req.measurements.iter().enumerate() {
        let bad = |why: String| {
            ApiError::unprocessable("invalid_measurement", format!("measurements[{i}]: {why}"))
        };
        if !(m.latency_ms.is_finite() && m.latency_ms > 0.0) {
            return Err(bad(format!(
                "latency_ms {} is not a positive finite number",
                m.latency_ms
            )));
        }
        let arch = match (&m.id, &m.arch) {
            (Some(id), None) => {
                // the same checked read as the subnet routes (a foreign record is unknown)
                let record = if valid_id(id) {
                    crate::routes::record_blob(&s, id).await.ok()
                } else {
                    None
                };
                let record: SubnetRecord = match record {
                    Some(b) => parse_blob(&b)?,
                    None => return Err(bad(format!("unknown subnet id `{id}` (ask GET /v1/supernets/{name}/probes, or send the arch)"))),
                };
                if record.supernet != sn.name {
                    return Err(bad(format!(
                        "subnet `{id}` belongs to the supernet {}",
                        record.supernet
                    )));
                }
                record.arch
            }
            (None, Some(a)) => {
                let arch = ArchConfig::deserialize(a.clone())
                    .map_err(|e| bad(format!("not a valid arch: {e}")))?;
                arch.validate(&spec.space)
                    .map_err(|e| bad(format!("not an arch of this supernet: {e}")))?;
                arch.canonical(&spec.space)
            }
            _ => return Err(bad("give `id` or `arch`, one of them".into())),
        };
        ms.push(ofa_predictors::hardware::Measurement {
            id: format!("{i}"),
            arch,
            latency_ms: m.latency_ms,
        });
    }
    {
        let mut seen = std::collections::HashMap::new();
        for (i, m) in ms.iter().enumerate() {
            if let Some(first) = seen.insert(m.arch.clone(), i) {
                return Err(ApiError::unprocessable(
                    "invalid_measurement",
                    format!("measurements[{i}]: the same subnet as measurements[{first}]"),
                ));
            }
        }
    }
    let base = match req.base.as_deref() {
        Some("none") => None,
        Some(b) => {
            let path = ofa_package::latency_tables(&sn.dir)
                .into_iter()
                .find(|(n, _)| n == b)
                .map(|(_, p)| p)
                .ok_or_else(|| {
                    ApiError::unprocessable(
                        "invalid_base",
                        format!(
                            "`{b}` is not a latency table of the package {} (or `none`)",
                            sn.name
                        ),
                    )
                })?;
            Some((
                b.to_string(),
                ofa_extractor::specialiser::load_latency_table(&path)?,
            ))
        }
        None => sn.base.clone(),
    };
    let fitted = {
        let (space, base) = (spec.space.clone(), base.clone());
        let runtime = req.runtime.clone();
        let hw = req.name.clone();
        tokio::task::spawn_blocking(move || -> Result<_, ApiError> {
            let features =
                ofa_predictors::hardware::Features::new(&space, base.as_ref().map(|b| &b.1));
            let report = ofa_predictors::hardware::fit(
                &features,
                &ms,
                ofa_predictors::hardware::ModelChoice::Auto,
            )
            .map_err(ofa_extractor::ExtractError::from)?;
            let meta = ofa_predictors::latency::Meta {
                device: hw.clone(),
                batch: Some(1),
                source: Some(format!(
                    "POST /v1/supernets/…/hardware: {} measurements, model `{}`, base {}",
                    report.measurements,
                    report.model.name,
                    base.as_ref().map_or("none", |b| b.0.as_str())
                )),
                runtime,
                ..Default::default()
            };
            let table = ofa_predictors::hardware::to_table(&features, &report, meta)
                .map_err(ofa_extractor::ExtractError::from)?;
            Ok((report, table))
        })
        .await
        .map_err(|e| ApiError::Internal(format!("the fit thread failed: {e}")))??
    };
    let (report, table) = fitted;
    let fit = crate::api::FitInfo {
        model: report.model.name.clone(),
        measurements: report.measurements,
        base: base.as_ref().map_or_else(|| "none".into(), |b| b.0.clone()),
        runtime: req.runtime.clone(),
        loo_mape_pct: report.loo.mape_pct,
        loo_within_10pct: report.loo.within_10pct,
        loo_spearman: report.loo.spearman,
        candidates: report
            .candidates
            .iter()
            .map(|c| (c.name.clone(), c.loo.mape_pct))
            .collect(),
    };
    sn.add_hardware(&req.name, &table, req.replace, None, Some(fit), None)?;
    if let Some(dir) = &s.hardware_dir {
        crate::state::keep_hardware(dir, sn, &req.name, &table)?;
    }
    let hardware = sn
        .info()
        .hardware
        .into_iter()
        .find(|h| h.name == req.name)
        .ok_or_else(|| ApiError::Internal("the new hardware is not listed".into()))?;
    Ok((
        StatusCode::CREATED,
        Json(crate::api::HardwareFitted { hardware }),
    )
        .into_response())
}
