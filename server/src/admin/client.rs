//! The `floe tenant|validator|route` commands: each is one request to the admin API.

use serde_json::{json, Value};

use crate::cli::{ApiArgs, RouteCommand, TenantCommand, ValidatorCommand};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not JSON: {source}")]
    NotJson {
        path: std::path::PathBuf,
        source: serde_json::Error,
    },
    #[error("cannot reach the admin API at {url}: {source}")]
    Unreachable { url: String, source: reqwest::Error },
    #[error("{status} {code}: {message}")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
}

pub enum Body {
    None,
    Json(Value),
    Wasm(Vec<u8>),
}

/// One request: method, path below the API's base URL, body.
pub struct Request {
    pub method: reqwest::Method,
    pub path: String,
    pub body: Body,
}

fn request(method: reqwest::Method, path: String, body: Body) -> Request {
    Request { method, path, body }
}

fn read(path: &std::path::Path) -> Result<Vec<u8>, ClientError> {
    std::fs::read(path).map_err(|source| ClientError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// `floe stats`: the running pipeline's figures.
pub fn stats() -> Request {
    request(reqwest::Method::GET, "/v1/stats".into(), Body::None)
}

pub fn tenant(command: &TenantCommand) -> Request {
    use reqwest::Method;
    match command {
        TenantCommand::Create { name } => request(
            Method::POST,
            "/v1/tenants".into(),
            Body::Json(json!({"name": name})),
        ),
        TenantCommand::List => request(Method::GET, "/v1/tenants".into(), Body::None),
        TenantCommand::Delete { name } => {
            request(Method::DELETE, format!("/v1/tenants/{name}"), Body::None)
        }
    }
}

pub fn validator(command: &ValidatorCommand) -> Result<Request, ClientError> {
    use reqwest::Method;
    let base = |tenant: &str| format!("/v1/tenants/{tenant}/validators");
    Ok(match command {
        ValidatorCommand::Upload { tenant, name, file } => request(
            Method::PUT,
            format!("{}/{name}", base(tenant)),
            Body::Wasm(read(file)?),
        ),
        ValidatorCommand::List { tenant } => request(Method::GET, base(tenant), Body::None),
        ValidatorCommand::Activate {
            tenant,
            name,
            version,
        } => request(
            Method::POST,
            format!("{}/{name}/activate", base(tenant)),
            Body::Json(json!({"version": version})),
        ),
        ValidatorCommand::Rollback { tenant, name } => request(
            Method::POST,
            format!("{}/{name}/rollback", base(tenant)),
            Body::Json(json!({})),
        ),
        ValidatorCommand::DryRun {
            tenant,
            name,
            messages,
            version,
        } => {
            let messages: Value = serde_json::from_slice(&read(messages)?).map_err(|source| {
                ClientError::NotJson {
                    path: messages.clone(),
                    source,
                }
            })?;
            request(
                Method::POST,
                format!("{}/{name}/dry-run", base(tenant)),
                Body::Json(json!({"messages": messages, "version": version})),
            )
        }
    })
}

pub fn route(command: &RouteCommand) -> Request {
    use reqwest::Method;
    match command {
        RouteCommand::Set {
            tenant,
            table,
            validator,
            target,
            key_columns,
        } => request(
            Method::PUT,
            format!("/v1/tenants/{tenant}/routes/{table}"),
            Body::Json(json!({"validator": validator, "target": target, "key": key_columns})),
        ),
        RouteCommand::List { tenant } => request(
            Method::GET,
            format!("/v1/tenants/{tenant}/routes"),
            Body::None,
        ),
    }
}

/// Sends `request`; the answer's JSON, or the API's error with its code.
pub async fn send(api: &ApiArgs, request: Request) -> Result<Value, ClientError> {
    let url = format!("{}{}", api.api.trim_end_matches('/'), request.path);
    let client = reqwest::Client::new();
    let mut builder = client.request(request.method, &url);
    if let Some(key) = &api.key {
        builder = builder.bearer_auth(key);
    }
    builder = match request.body {
        Body::None => builder,
        Body::Json(v) => builder.json(&v),
        Body::Wasm(bytes) => builder
            .header("content-type", "application/wasm")
            .body(bytes),
    };
    let unreachable = |source| ClientError::Unreachable {
        url: url.clone(),
        source,
    };
    let response = builder.send().await.map_err(unreachable)?;
    let status = response.status();
    let text = response.text().await.map_err(unreachable)?;
    let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    if status.is_success() {
        return Ok(value);
    }
    Err(ClientError::Api {
        status: status.as_u16(),
        code: value["error"]["code"].as_str().unwrap_or("").to_string(),
        message: value["error"]["message"]
            .as_str()
            .map_or_else(|| value.to_string(), str::to_string),
    })
}
