//! API errors: a status, a stable code clients can branch on, and a message for people.
//! Internal details (paths, storage errors) are logged, never returned.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::control::ControlError;
use crate::transform::LoadError;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    /// A failure inside floe: the caller learns what could not be done, not why.
    pub fn internal(what: &str) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", what)
    }

    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "an API key is required: Authorization: Bearer <key>",
        )
    }

    pub fn forbidden() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "this key may not act on this tenant",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"error": {"code": self.code, "message": self.message}});
        (self.status, Json(body)).into_response()
    }
}

impl From<ControlError> for ApiError {
    fn from(e: ControlError) -> Self {
        use ControlError as E;
        let (status, code) = match &e {
            E::NoTenant(_) => (StatusCode::NOT_FOUND, "tenant_not_found"),
            E::TenantExists(_) => (StatusCode::CONFLICT, "tenant_exists"),
            E::NoValidator(_) => (StatusCode::NOT_FOUND, "validator_not_found"),
            E::NoVersion { .. } => (StatusCode::NOT_FOUND, "version_not_found"),
            E::NoRollback(_) => (StatusCode::CONFLICT, "nothing_to_roll_back"),
            E::InvalidName(_) => (StatusCode::BAD_REQUEST, "invalid_name"),
            E::RouteConflict { .. } => (StatusCode::CONFLICT, "route_conflict"),
            E::NotActive(_) => (StatusCode::CONFLICT, "validator_not_active"),
            E::InUse { .. } => (StatusCode::CONFLICT, "validator_in_use"),
            E::NoRoute(_) => (StatusCode::NOT_FOUND, "route_not_found"),
            E::TooManyValidators { .. } => (StatusCode::CONFLICT, "too_many_validators"),
            E::Contended => (StatusCode::SERVICE_UNAVAILABLE, "contended"),
            E::InvalidSink(_) => (StatusCode::BAD_REQUEST, "invalid_sink"),
            E::TopicClaimed { .. } => (StatusCode::CONFLICT, "topic_claimed"),
            E::Storage(detail) | E::Log(detail) => {
                tracing::error!(error = %detail, "control-plane storage failed");
                return Self::internal("the request could not be stored; try again");
            }
        };
        Self::new(status, code, e.to_string())
    }
}

/// A request body that is not the JSON the route takes.
impl From<axum::extract::rejection::JsonRejection> for ApiError {
    fn from(e: axum::extract::rejection::JsonRejection) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_body", e.body_text())
    }
}

impl From<LoadError> for ApiError {
    fn from(e: LoadError) -> Self {
        use LoadError as E;
        let (status, code) = match &e {
            E::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "component_too_large"),
            E::Invalid(_) => (StatusCode::BAD_REQUEST, "invalid_component"),
            E::ForbiddenImport(_) => (StatusCode::BAD_REQUEST, "forbidden_import"),
            E::WrongWorld(_) => (StatusCode::BAD_REQUEST, "wrong_world"),
            E::Read { .. } | E::Engine(_) => {
                tracing::error!(error = %e, "validator check failed");
                return Self::internal("the component could not be checked; try again");
            }
        };
        Self::new(status, code, e.to_string())
    }
}
