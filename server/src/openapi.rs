//! `/openapi.json`, generated from the handlers' annotations and the API types.

use utoipa::OpenApi;

use crate::api;
use crate::routes;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "ofa",
        description = "Once-for-All subnets on demand: search, cut and download the best subnet of a trained supernet for a hardware budget."
    ),
    paths(
        routes::list_supernets,
        routes::get_supernet,
        crate::hardware::get_probes,
        crate::hardware::post_hardware,
        routes::post_subnet,
        routes::get_subnet,
        routes::get_weights,
        routes::get_onnx,
        routes::get_net_config,
        routes::post_pareto,
        routes::post_finetune,
        routes::get_job,
        routes::delete_job,
        routes::healthz,
        routes::readyz,
        routes::metrics,
    ),
    components(schemas(
        api::SubnetRequest,
        api::ParetoRequest,
        ofa_search::Constraints,
        ofa_search::Strategy,
        api::SubnetRecord,
        api::PredictedBody,
        api::Links,
        api::SearchInfo,
        api::SupernetList,
        api::SupernetInfo,
        api::SpaceInfo,
        api::HardwareInfo,
        api::CalibrationInfo,
        api::FitInfo,
        api::HardwareRequest,
        api::MeasurementBody,
        api::HardwareFitted,
        api::ProbeSet,
        api::Range,
        api::ErrorBody,
        api::ErrorDetail,
        api::Health,
        crate::finetune::FinetuneRequest,
        crate::finetune::FinetunedInfo,
        crate::finetune::JobStatus,
        crate::finetune::JobState,
        crate::finetune::JobLinks,
    ))
)]
struct ApiDoc;

/// The OpenAPI document.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}
