//! Validator routes: upload (checked against the world), versions, activation, rollback,
//! dry runs.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{dry_run, require_tenant, AdminState, ApiError};

fn validator_view(name: &str, entry: &crate::control::ValidatorEntry) -> Value {
    json!({"name": name, "active": entry.active, "versions": entry.versions})
}

pub(super) async fn list_validators(
    State(state): State<AdminState>,
    headers: HeaderMap,
    Path(tenant): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let t = require_tenant(&state, &headers, &tenant)?;
    let all: Vec<Value> = t
        .validators
        .iter()
        .map(|(n, e)| validator_view(n, e))
        .collect();
    Ok(Json(json!({"validators": all})))
}

pub(super) async fn get_validator(
    State(state): State<AdminState>,
    headers: HeaderMap,
    Path((tenant, name)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let t = require_tenant(&state, &headers, &tenant)?;
    let entry = t
        .validators
        .get(&name)
        .ok_or_else(|| ApiError::from(crate::control::ControlError::NoValidator(name.clone())))?;
    Ok(Json(validator_view(&name, entry)))
}

/// Stores a new version after checking it: a WebAssembly component, within the size
/// limit, implementing the validator world, importing nothing outside the sandbox.
pub(super) async fn upload_validator(
    State(state): State<AdminState>,
    headers: HeaderMap,
    Path((tenant, name)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let owner = require_tenant(&state, &headers, &tenant)?;
    crate::control::check_name("validator", &name)?;
    // The tenant's own limit, within the API's.
    let mut limits = owner.limits.sandbox();
    limits.max_component_mib = limits.max_component_mib.min(state.limits.max_component_mib);
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if content_type != "application/wasm" {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("a validator is uploaded as application/wasm, not {content_type:?}"),
        ));
    }
    let limit = state.limits.max_component_mib << 20;
    let bytes = body.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "component_too_large",
            format!("a component may have at most {limit} bytes"),
        )
    })?;
    let check = {
        let runtime = state.runtime.clone();
        let bytes = bytes.clone();
        let name = name.clone();
        // Compiling is CPU work: off the async workers.
        tokio::task::spawn_blocking(move || runtime.load(&name, &bytes, &limits).map(|_| ()))
    };
    match check.await {
        Ok(result) => result?,
        Err(e) => {
            tracing::error!(error = %e, "validator check panicked");
            return Err(ApiError::internal("the component could not be checked"));
        }
    }
    let version = state.control.add_version(&tenant, &name, &bytes)?;
    tracing::info!(%tenant, validator = %name, version = version.version, hash = %version.hash, "validator uploaded");
    Ok((
        StatusCode::CREATED,
        Json(json!({"name": name, "version": version})),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Activation {
    version: u32,
}

pub(super) async fn activate(
    State(state): State<AdminState>,
    headers: HeaderMap,
    Path((tenant, name)): Path<(String, String)>,
    body: Result<Json<Activation>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    require_tenant(&state, &headers, &tenant)?;
    let Json(body) = body?;
    state.control.activate(&tenant, &name, body.version)?;
    tracing::info!(%tenant, validator = %name, version = body.version, "validator activated");
    Ok(Json(json!({"name": name, "active": body.version})))
}

pub(super) async fn rollback(
    State(state): State<AdminState>,
    headers: HeaderMap,
    Path((tenant, name)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    require_tenant(&state, &headers, &tenant)?;
    let active = state.control.rollback(&tenant, &name)?;
    tracing::info!(%tenant, validator = %name, version = active, "validator rolled back");
    Ok(Json(json!({"name": name, "active": active})))
}

/// Sample messages through a version (default: the active one): verdicts, the rows that
/// would load and the guest's output; nothing is written anywhere.
pub(super) async fn dry_run_validator(
    State(state): State<AdminState>,
    headers: HeaderMap,
    Path((tenant, name)): Path<(String, String)>,
    body: Result<Json<dry_run::DryRun>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    use crate::control::ControlError;
    let t = require_tenant(&state, &headers, &tenant)?;
    let Json(body) = body?;
    if body.messages.len() > dry_run::MAX_SAMPLES {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_many_samples",
            format!(
                "a dry run takes at most {} messages, not {}",
                dry_run::MAX_SAMPLES,
                body.messages.len()
            ),
        ));
    }
    let entry = t
        .validators
        .get(&name)
        .ok_or_else(|| ControlError::NoValidator(name.clone()))?;
    let number = body
        .version
        .or(entry.active)
        .ok_or_else(|| ControlError::NotActive(name.clone()))?;
    let version = entry
        .versions
        .iter()
        .find(|v| v.version == number)
        .ok_or_else(|| ControlError::NoVersion {
            name: name.clone(),
            version: number,
        })?;
    let path = state.control.component_path(&version.hash);
    let label = format!("{tenant}/{name}@v{number}");
    let runtime = state.runtime.clone();
    let routes = t.routes.clone();
    let limits = t.limits.sandbox();
    let report = tokio::task::spawn_blocking(move || {
        dry_run::run(&runtime, &path, &label, &routes, &limits, &body.messages)
    })
    .await
    .map_err(|_| ApiError::internal("the dry run failed"))?;
    Ok(Json(report))
}

pub(super) async fn delete_validator(
    State(state): State<AdminState>,
    headers: HeaderMap,
    Path((tenant, name)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    require_tenant(&state, &headers, &tenant)?;
    state.control.delete_validator(&tenant, &name)?;
    Ok(StatusCode::NO_CONTENT)
}
