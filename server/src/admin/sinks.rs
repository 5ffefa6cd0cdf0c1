//! A tenant's own sink target. Operator only: a sink reaches files, secrets and hosts
//! outside the sandbox. A target is opened before it is stored, so one that cannot be
//! reached is refused with the reason rather than stalling the pipeline later.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde_json::{json, Value};

use super::{require_operator, AdminState, ApiError};
use crate::config::SinkConfig;
use crate::control::ControlError;

pub(super) async fn set_sink(
    State(state): State<AdminState>,
    headers: HeaderMap,
    Path(tenant): Path<String>,
    body: Result<Json<SinkConfig>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    require_operator(&state, &headers)?;
    let Json(sink) = body?;
    let current = state
        .control
        .tenant(&tenant)
        .ok_or_else(|| ControlError::NoTenant(tenant.clone()))?
        .sink;
    if current.as_ref() != Some(&sink) {
        let probe = sink.clone();
        let reached = tokio::task::spawn_blocking(move || crate::sink::probe(&probe))
            .await
            .map_err(|_| ApiError::internal("the sink could not be checked"))?;
        if let Err(e) = reached {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "sink_unreachable",
                format!("the sink cannot be used: {e}"),
            ));
        }
        // A topic the cluster does not know would stop the pipeline's start.
        if let Some(probe) = state.broker.clone() {
            let topics = sink.topics.clone();
            let missing = tokio::task::spawn_blocking(move || probe.missing(&topics))
                .await
                .map_err(|_| ApiError::internal("the sink's topics could not be checked"))?
                .map_err(|e| {
                    ApiError::new(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "sink_unreachable",
                        format!("the Kafka cluster does not answer: {e}"),
                    )
                })?;
            if !missing.is_empty() {
                return Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "sink_unreachable",
                    format!("no such topic: {}; create it first", missing.join(", ")),
                ));
            }
        }
    }
    state.control.set_sink(&tenant, Some(sink.clone()))?;
    tracing::info!(%tenant, topics = ?sink.topics, kind = ?sink.kind, "tenant sink set");
    Ok(Json(json!({"tenant": tenant, "sink": sink})))
}

pub(super) async fn delete_sink(
    State(state): State<AdminState>,
    headers: HeaderMap,
    Path(tenant): Path<String>,
) -> Result<StatusCode, ApiError> {
    require_operator(&state, &headers)?;
    state.control.set_sink(&tenant, None)?;
    tracing::info!(%tenant, "tenant sink removed");
    Ok(StatusCode::NO_CONTENT)
}
