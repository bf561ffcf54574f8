//! Every failure of a request, mapped to one status and one stable code. Client mistakes are 4xx;
//! only the server's own failures are 5xx (and 503 for load and time limits).

use std::collections::BTreeMap;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use ofa_extractor::{ExtractError, SearchError};

use crate::api::{ErrorBody, ErrorDetail};

tokio::task_local! {
    /// The `x-request-id` of the request being answered (set by [`with_request_id`]).
    static REQUEST_ID: String;
}

/// Middleware: run the request with its `x-request-id` at hand, so a 500 can name it.
pub async fn with_request_id(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_string();
    REQUEST_ID.scope(id, next.run(req)).await
}

/// The id of the request being answered, or `-` outside one.
fn current_request_id() -> String {
    REQUEST_ID
        .try_with(String::clone)
        .unwrap_or_else(|_| "-".to_string())
}

/// Why a request failed (`Clone`: the waiters of one computation share its error).
#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed (bad JSON, bad query, bad id).
    #[error("{message}")]
    BadRequest {
        /// Stable code.
        code: &'static str,
        /// What is wrong.
        message: String,
    },
    /// No or wrong bearer token.
    #[error("a valid bearer token is required (Authorization: Bearer <token>)")]
    Unauthorized,
    /// No such route, supernet, hardware or subnet.
    #[error("{message}")]
    NotFound {
        /// Stable code.
        code: &'static str,
        /// What was not found.
        message: String,
        /// The names there are.
        available: Option<Vec<String>>,
    },
    /// A route that exists without this method.
    #[error("method not allowed on this route")]
    MethodNotAllowed,
    /// A body over the limit.
    #[error("the request body is over the server's size limit")]
    PayloadTooLarge,
    /// A body that is not `application/json`.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// Well-formed but unusable: invalid constraint or arch, infeasible bounds.
    #[error("{message}")]
    Unprocessable {
        /// Stable code.
        code: &'static str,
        /// What is wrong.
        message: String,
        /// For `infeasible`: the smallest achievable value per bound.
        feasible_minimum: Option<BTreeMap<String, f64>>,
    },
    /// The request conflicts with what exists (a hardware name taken).
    #[error("{message}")]
    Conflict {
        /// Stable code.
        code: &'static str,
        /// What conflicts.
        message: String,
    },
    /// The work queue is full.
    #[error("the server is busy ({0} requests queued); retry later")]
    Overloaded(usize),
    /// The request's body did not arrive in time.
    #[error("the request body did not arrive within {0:.1} s")]
    BodyTimeout(f64),
    /// The request ran past its time limit. A search stops at it; a cut goes on and fills the
    /// cache, so a retry may find it done.
    #[error("the request ran past its time limit of {0:.1} s; retry later (a download being cut goes on and is kept)")]
    Timeout(f64),
    /// A queued cut that nobody waited for any more was dropped; one arriving just then is told
    /// to retry.
    #[error("the cut was dropped from the queue as nobody waited for it any more; retry")]
    Abandoned,
    /// The server's own failure.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::NotFound { .. } => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Unprocessable { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Conflict { .. } => StatusCode::CONFLICT,
            ApiError::Overloaded(_) | ApiError::Timeout(_) | ApiError::Abandoned => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable code.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest { code, .. }
            | ApiError::NotFound { code, .. }
            | ApiError::Unprocessable { code, .. }
            | ApiError::Conflict { code, .. } => code,
            ApiError::Unauthorized => "unauthorized",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::PayloadTooLarge => "payload_too_large",
            ApiError::BodyTimeout(_) => "body_timeout",
            ApiError::UnsupportedMediaType(_) => "unsupported_media_type",
            ApiError::Overloaded(_) => "overloaded",
            ApiError::Timeout(_) => "timeout",
            ApiError::Abandoned => "abandoned",
            ApiError::Internal(_) => "internal",
        }
    }

    pub(crate) fn bad(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::BadRequest {
            code,
            message: message.into(),
        }
    }

    pub(crate) fn unprocessable(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::Unprocessable {
            code,
            message: message.into(),
            feasible_minimum: None,
        }
    }

    pub(crate) fn not_found(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::NotFound {
            code,
            message: message.into(),
            available: None,
        }
    }
}

impl From<ExtractError> for ApiError {
    fn from(e: ExtractError) -> ApiError {
        let message = ofa_space::chain(&e);
        match e {
            ExtractError::Search(SearchError::Constraint(_)) => {
                ApiError::unprocessable("invalid_constraint", message)
            }
            ExtractError::NothingToSearch => ApiError::unprocessable("missing_constraint", message),
            ExtractError::NeedsHardware(_) => ApiError::unprocessable("hardware_required", message),
            ExtractError::UnknownHardware { available, .. } => ApiError::NotFound {
                code: "unknown_hardware",
                message,
                available: Some(available),
            },
            ExtractError::ArchMismatch(_) => ApiError::unprocessable("invalid_arch", message),
            ExtractError::Search(SearchError::Config(_)) => {
                ApiError::unprocessable("invalid_search_settings", message)
            }
            ExtractError::Search(SearchError::Infeasible { minima, .. }) => {
                ApiError::Unprocessable {
                    code: "infeasible",
                    message,
                    feasible_minimum: Some(
                        minima
                            .iter()
                            .map(|(m, _, v)| (m.name().to_string(), *v))
                            .collect(),
                    ),
                }
            }
            ExtractError::Search(SearchError::DeadlineExceeded { seconds, .. }) => {
                ApiError::Timeout(seconds)
            }
            ExtractError::Onnx(ofa_onnx::OnnxError::Opset(_)) => {
                ApiError::unprocessable("invalid_opset", message)
            }
            ExtractError::Onnx(_) => ApiError::Internal(message),
            ExtractError::Hardware(_) => ApiError::unprocessable("invalid_measurements", message),
            ExtractError::MissingSplit(_)
            | ExtractError::IncompleteLatencyTable { .. }
            | ExtractError::NoAccuracyPredictor { .. }
            | ExtractError::Predictor(_)
            | ExtractError::Efficiency(_)
            | ExtractError::Search(SearchError::Efficiency(_) | SearchError::Accuracy(_))
            | ExtractError::Latency(_)
            | ExtractError::Accuracy(_)
            | ExtractError::Net(_)
            | ExtractError::Package(_)
            | ExtractError::File { .. } => ApiError::Internal(message),
        }
    }
}

impl From<ofa_extractor::SearchError> for ApiError {
    fn from(e: ofa_extractor::SearchError) -> ApiError {
        ExtractError::from(e).into()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        match &self {
            ApiError::Timeout(_) => metrics::counter!("ofa_timeouts_total").increment(1),
            ApiError::Overloaded(_) => metrics::counter!("ofa_overloaded_total").increment(1),
            _ => {}
        }
        // The detail of a server failure (paths, libtorch's text) is logged once, inside the
        // request's span, and never sent: the client gets the request id to quote.
        let request_id = match &self {
            ApiError::Internal(detail) => {
                tracing::error!(code = self.code(), "internal error: {detail}");
                Some(current_request_id())
            }
            _ => None,
        };
        let (feasible_minimum, available) = match &self {
            ApiError::Unprocessable {
                feasible_minimum, ..
            } => (feasible_minimum.clone(), None),
            ApiError::NotFound { available, .. } => (None, available.clone()),
            _ => (None, None),
        };
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code().to_string(),
                message: match &self {
                    ApiError::Internal(_) => "internal error".to_string(),
                    _ => self.to_string(),
                },
                feasible_minimum,
                available,
                request_id,
            },
        };
        let mut resp = (status, Json(body)).into_response();
        let h = resp.headers_mut();
        match self {
            ApiError::Overloaded(_) | ApiError::Timeout(_) | ApiError::Abandoned => {
                h.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            ApiError::Unauthorized => {
                h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            _ => {}
        }
        resp
    }
}
