//! The admin API: tenants, their keys and their validators over HTTP.
//!
//! Every route under `/v1/tenants/{tenant}` takes the tenant's key or the operator key
//! (`Authorization: Bearer …`); creating and deleting tenants takes the operator key.
//! Errors are JSON `{"error": {"code", "message"}}` with a stable code.

pub mod client;
mod dry_run;
mod error;
mod sinks;
mod validators;

use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use std::future::Future;
use std::sync::Arc;

use crate::config::{AdminConfig, KafkaConfig, SandboxLimits};
use crate::control::{hash_key, ControlPlane, Tenant, TenantLimits, TenantRoute};
use crate::telemetry::Stats;
use crate::transform::Runtime;
pub use error::ApiError;
use validators::{
    activate, delete_validator, dry_run_validator, get_validator, list_validators, rollback,
    upload_validator,
};

#[derive(Clone)]
pub struct AdminState {
    pub control: Arc<ControlPlane>,
    /// SHA-256 of the operator key; without one, only tenant keys work.
    pub operator_key_hash: Option<String>,
    /// Checks uploads: compiles them and matches them against the validator world.
    pub runtime: Arc<Runtime>,
    pub limits: SandboxLimits,
    /// The pipeline's counters and breakers, for `/readyz` and `/v1/stats`.
    pub stats: Option<Arc<Stats>>,
    /// Asks the Kafka cluster for metadata on each `/readyz`.
    pub broker: Option<Arc<crate::source::BrokerProbe>>,
    /// Tables the configuration (`[[routes]]`) routes: the operator's, never a tenant's.
    pub configured_tables: Arc<std::collections::BTreeSet<String>>,
}

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error(transparent)]
    Control(#[from] crate::control::ControlError),
    #[error(transparent)]
    Wasm(#[from] crate::transform::LoadError),
    #[error("cannot read the operator key from {path}: {source}")]
    OperatorKey {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

impl AdminState {
    /// The state `floe run` serves: the control plane shared through `admin.control_topic`
    /// (or kept in `admin.dir` alone), the operator key from its file or variable, uploads
    /// checked by an engine caching into `cache_dir`.
    pub async fn from_config(
        admin: &AdminConfig,
        kafka: &KafkaConfig,
        cache_dir: &std::path::Path,
    ) -> Result<Self, AdminError> {
        let operator_key = match &admin.operator_key_file {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .map_err(|source| AdminError::OperatorKey {
                        path: path.clone(),
                        source,
                    })?
                    .trim()
                    .to_string(),
            ),
            None => std::env::var(&admin.operator_key_env).ok(),
        };
        if operator_key.is_none() {
            tracing::warn!(variable = %admin.operator_key_env, "no operator key: tenants cannot be created");
        }
        Ok(Self {
            control: Arc::new(ControlPlane::from_config(admin, kafka).await?),
            operator_key_hash: operator_key.filter(|k| !k.is_empty()).map(|k| hash_key(&k)),
            runtime: Arc::new(Runtime::new(cache_dir, false)?),
            limits: SandboxLimits {
                max_component_mib: admin.max_component_mib,
                ..SandboxLimits::default()
            },
            stats: None,
            broker: crate::source::BrokerProbe::new(kafka).ok().map(Arc::new),
            configured_tables: Arc::default(),
        })
    }
}

/// Who is calling.
#[derive(Debug, PartialEq)]
enum Caller {
    Operator,
    Tenant(String),
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

fn caller(state: &AdminState, headers: &HeaderMap) -> Result<Caller, ApiError> {
    let key = bearer(headers).ok_or_else(ApiError::unauthorized)?;
    if state.operator_key_hash.as_deref() == Some(hash_key(key).as_str()) {
        return Ok(Caller::Operator);
    }
    state
        .control
        .tenant_of_key(key)
        .map(Caller::Tenant)
        .ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "unknown API key"))
}

fn require_operator(state: &AdminState, headers: &HeaderMap) -> Result<(), ApiError> {
    match caller(state, headers)? {
        Caller::Operator => Ok(()),
        Caller::Tenant(_) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "this needs the operator key",
        )),
    }
}

/// The caller may act on `tenant`, which exists.
fn require_tenant(
    state: &AdminState,
    headers: &HeaderMap,
    tenant: &str,
) -> Result<Tenant, ApiError> {
    match caller(state, headers)? {
        Caller::Tenant(own) if own != tenant => Err(ApiError::forbidden()),
        _ => state.control.tenant(tenant).ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "tenant_not_found",
                format!("tenant {tenant:?} does not exist"),
            )
        }),
    }
}

/// Routes anyone may call; every other one needs a key.
const OPEN_ROUTES: &[&str] = &["/healthz", "/readyz", "/openapi.json"];

/// Checks the caller's key before a handler reads the request's body, so a client without
/// a key (or with another tenant's) cannot make floe take in an upload's megabytes. The
/// handlers still decide what the operator alone may do.
async fn authenticate(State(state): State<AdminState>, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    if !OPEN_ROUTES.contains(&path) {
        let tenant = path
            .strip_prefix("/v1/tenants/")
            .and_then(|rest| rest.split('/').next())
            .filter(|t| !t.is_empty());
        let allowed = caller(&state, request.headers()).and_then(|who| match (who, tenant) {
            (Caller::Tenant(own), Some(tenant)) if own != tenant => Err(ApiError::forbidden()),
            _ => Ok(()),
        });
        if let Err(refused) = allowed {
            return refused.into_response();
        }
    }
    next.run(request).await
}

pub fn app(state: AdminState) -> Router {
    let upload_limit = usize::try_from(state.limits.max_component_mib << 20).unwrap_or(usize::MAX);
    Router::new()
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/readyz", get(readyz))
        .route("/openapi.json", get(openapi))
        .route("/v1/stats", get(stats))
        .route("/metrics", get(metrics))
        .route("/v1/tenants", post(create_tenant).get(list_tenants))
        .route(
            "/v1/tenants/{tenant}",
            get(get_tenant).delete(delete_tenant),
        )
        .route("/v1/tenants/{tenant}/keys", post(issue_key))
        .route("/v1/tenants/{tenant}/limits", put(set_limits))
        .route(
            "/v1/tenants/{tenant}/sink",
            put(sinks::set_sink).delete(sinks::delete_sink),
        )
        .route("/v1/tenants/{tenant}/validators", get(list_validators))
        .route(
            "/v1/tenants/{tenant}/validators/{name}",
            put(upload_validator)
                .get(get_validator)
                .delete(delete_validator)
                // One byte over the limit is enough to tell an oversized upload.
                .layer(DefaultBodyLimit::max(upload_limit.saturating_add(1))),
        )
        .route(
            "/v1/tenants/{tenant}/validators/{name}/activate",
            post(activate),
        )
        .route(
            "/v1/tenants/{tenant}/validators/{name}/rollback",
            post(rollback),
        )
        .route(
            "/v1/tenants/{tenant}/validators/{name}/dry-run",
            post(dry_run_validator),
        )
        .route("/v1/tenants/{tenant}/routes", get(list_routes))
        .route(
            "/v1/tenants/{tenant}/routes/{table}",
            put(set_route).delete(delete_route),
        )
        .route_layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .with_state(state)
}

/// Serves the admin API on `listener` until `shutdown` resolves.
pub async fn run(
    listener: tokio::net::TcpListener,
    state: AdminState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app(state))
        .with_graceful_shutdown(shutdown)
        .await
}

/// Ready when the pipeline runs and every dependency's breaker (Kafka, the DLQ, each sink)
/// is closed; otherwise 503 with each breaker's state.
/// The API's description, checked in as `docs/openapi.json`.
const OPENAPI: &str = include_str!("../../../docs/openapi.json");

async fn openapi() -> ([(header::HeaderName, &'static str); 1], &'static str) {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI)
}

async fn readyz(State(state): State<AdminState>) -> (StatusCode, Json<Value>) {
    let running = state
        .stats
        .as_ref()
        .is_some_and(|s| s.running.load(std::sync::atomic::Ordering::Relaxed));
    let breakers = state
        .stats
        .as_ref()
        .map(|s| s.breaker_states())
        .unwrap_or_default();
    let broker_reachable = match state.broker.clone() {
        Some(probe) => {
            let checked =
                tokio::task::spawn_blocking(move || probe.check(std::time::Duration::from_secs(2)))
                    .await;
            match checked {
                Ok(Ok(())) => Some(true),
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "readiness: the Kafka cluster does not answer");
                    Some(false)
                }
                Err(_) => Some(false),
            }
        }
        None => None,
    };
    let ready =
        running && broker_reachable != Some(false) && breakers.iter().all(|(_, s)| *s == "closed");
    let mut dependencies: serde_json::Map<String, Value> = breakers
        .into_iter()
        .map(|(n, s)| (n, Value::from(s)))
        .collect();
    if let Some(reachable) = broker_reachable {
        let word = if reachable {
            "reachable"
        } else {
            "unreachable"
        };
        dependencies.insert("kafka_cluster".into(), Value::from(word));
    }
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let word = if ready { "ready" } else { "not_ready" };
    (
        status,
        Json(json!({"status": word, "dependencies": dependencies})),
    )
}

/// Prometheus exposition (operator key: the labels name tenants and tables).
async fn metrics(
    State(state): State<AdminState>,
    headers: HeaderMap,
) -> Result<([(header::HeaderName, &'static str); 1], String), ApiError> {
    require_operator(&state, &headers)?;
    let stats = state.stats.clone().unwrap_or_default();
    let text = crate::metrics::render(&stats)
        .map_err(|_| ApiError::internal("the metrics could not be rendered"))?;
    Ok(([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text))
}

async fn stats(
    State(state): State<AdminState>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    require_operator(&state, &headers)?;
    Ok(Json(
        state.stats.as_ref().map_or(Value::Null, |s| s.to_json()),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewTenant {
    name: String,
}

async fn create_tenant(
    State(state): State<AdminState>,
    headers: HeaderMap,
    body: Result<Json<NewTenant>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    require_operator(&state, &headers)?;
    let Json(body) = body?;
    let key = state.control.create_tenant(&body.name)?;
    tracing::info!(tenant = %body.name, "tenant created");
    Ok((
        StatusCode::CREATED,
        Json(json!({"tenant": body.name, "api_key": key, "note": "the key is shown once"})),
    ))
}

async fn list_tenants(
    State(state): State<AdminState>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    require_operator(&state, &headers)?;
    Ok(Json(json!({"tenants": state.control.tenant_names()})))
}

/// Sets a tenant's sandbox limits (operator only); routes reload with them.
async fn set_limits(
    State(state): State<AdminState>,
    headers: HeaderMap,
    Path(tenant): Path<String>,
    body: Result<Json<TenantLimits>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    require_operator(&state, &headers)?;
    let Json(limits) = body?;
    state.control.set_limits(&tenant, limits.clone())?;
    Ok(Json(json!({"tenant": tenant, "limits": limits})))
}

fn tenant_view(name: &str, tenant: &Tenant) -> Value {
    json!({
        "tenant": name,
        "limits": tenant.limits,
        "sink": tenant.sink,
        "keys": tenant.key_hashes.len(),
        "validators": tenant.validators.keys().collect::<Vec<_>>(),
    })
}

async fn get_tenant(
    State(state): State<AdminState>,
    headers: HeaderMap,
    Path(tenant): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let t = require_tenant(&state, &headers, &tenant)?;
    Ok(Json(tenant_view(&tenant, &t)))
}

async fn delete_tenant(
    State(state): State<AdminState>,
    headers: HeaderMap,
    Path(tenant): Path<String>,
) -> Result<StatusCode, ApiError> {
    require_operator(&state, &headers)?;
    state.control.delete_tenant(&tenant)?;
    tracing::info!(%tenant, "tenant deleted");
    Ok(StatusCode::NO_CONTENT)
}

async fn issue_key(
    State(state): State<AdminState>,
    headers: HeaderMap,
    Path(tenant): Path<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    require_tenant(&state, &headers, &tenant)?;
    let key = state.control.issue_key(&tenant)?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"tenant": tenant, "api_key": key, "note": "the key is shown once"})),
    ))
}

async fn list_routes(
    State(state): State<AdminState>,
    headers: HeaderMap,
    Path(tenant): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let t = require_tenant(&state, &headers, &tenant)?;
    Ok(Json(json!({"routes": t.routes})))
}

/// Routes a source table through one of the tenant's validators (its active version);
/// the running pipeline picks the change up without a restart.
async fn set_route(
    State(state): State<AdminState>,
    headers: HeaderMap,
    Path((tenant, table)): Path<(String, String)>,
    body: Result<Json<TenantRoute>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    require_tenant(&state, &headers, &tenant)?;
    let Json(route) = body?;
    if state.configured_tables.contains(&table) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "route_conflict",
            format!("table {table:?} is routed by floe's configuration"),
        ));
    }
    state.control.set_route(&tenant, &table, route.clone())?;
    tracing::info!(%tenant, %table, validator = ?route.validator, "route set");
    Ok(Json(json!({"table": table, "route": route})))
}

async fn delete_route(
    State(state): State<AdminState>,
    headers: HeaderMap,
    Path((tenant, table)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    require_tenant(&state, &headers, &tenant)?;
    state.control.delete_route(&tenant, &table)?;
    Ok(StatusCode::NO_CONTENT)
}
