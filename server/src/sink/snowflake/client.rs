//! One Snowflake session through the `snowflake-api` crate, used from a plain thread.

use arrow_array::{
    Array, BooleanArray, Decimal128Array, Int64Array, LargeStringArray, StringArray,
};
use snowflake_api::{
    AuthArgs, AuthType, CertificateArgs, PasswordArgs, QueryResult, SnowflakeApi,
    SnowflakeApiBuilder, SnowflakeApiError,
};
use std::time::Duration;

use crate::config::{SnowflakeAuth, SnowflakeConfig};
use crate::sink::SinkError;

/// Rows of a result, every cell as text.
pub type TextRows = Vec<Vec<Option<String>>>;

#[derive(Clone)]
enum Secret {
    Password(String),
    PrivateKey(String),
}

/// A session, opened on first use and again after a transient failure (a lost session
/// cannot be resumed: its transaction is gone with it).
pub struct Client {
    config: SnowflakeConfig,
    secret: Secret,
    /// Always present until dropped.
    runtime: Option<tokio::runtime::Runtime>,
    api: Option<SnowflakeApi>,
}

impl Drop for Client {
    fn drop(&mut self) {
        // A runtime cannot be dropped (blocking) on a worker of another one, which is
        // where offset readers end; this stops it without waiting.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

fn read_secret(env: &str, file: Option<&std::path::Path>, what: &str) -> Result<String, SinkError> {
    if let Some(path) = file {
        return std::fs::read_to_string(path)
            .map(|s| s.trim_end_matches(['\n', '\r']).to_string())
            .map_err(|e| {
                SinkError::Permanent(format!(
                    "cannot read the Snowflake {what} from {}: {e}",
                    path.display()
                ))
            });
    }
    std::env::var(env).map_err(|_| {
        SinkError::Permanent(format!(
            "the Snowflake {what} is missing: set {env} (or the sink's {what} file setting)"
        ))
    })
}

/// Which failures a retry can fix (the network, the service, an expired or lost session,
/// a lock, a conflict with a concurrent transaction, a timeout), which are a value the target refuses (Snowflake's 100xxx data
/// errors, or the emulator's conversion errors), and which are the statement's fault.
pub fn classify(e: SnowflakeApiError) -> SinkError {
    let text = e.to_string();
    let SnowflakeApiError::ApiError(code, message) = &e else {
        return SinkError::Transient(text);
    };
    let lower = message.to_lowercase();
    let mentions = |words: &[&str]| words.iter().any(|w| lower.contains(w));
    if code.starts_with("390")
        || matches!(code.as_str(), "000603" | "000604" | "000625" | "000630")
        || mentions(&[
            "lock",
            "timeout",
            "timed out",
            "throttl",
            "try again",
            "conflict",
        ])
    {
        SinkError::Transient(text)
    } else if code.starts_with("100")
        || mentions(&[
            "conversion error",
            "invalid input error",
            "out of range",
            "is not recognized",
            "constraint error",
        ])
    {
        SinkError::Refused(text)
    } else {
        SinkError::Permanent(text)
    }
}

impl Client {
    pub fn new(config: &SnowflakeConfig) -> Result<Self, SinkError> {
        let secret = match config.auth {
            SnowflakeAuth::Password => Secret::Password(read_secret(
                &config.password_env,
                config.password_file.as_deref(),
                "password",
            )?),
            SnowflakeAuth::KeyPair => Secret::PrivateKey(read_secret(
                &config.private_key_env,
                config.private_key_file.as_deref(),
                "private key",
            )?),
        };
        Self::new_with_secret(config, secret)
    }

    /// Another session with the same settings.
    pub fn another(&self) -> Result<Self, SinkError> {
        Self::new_with_secret(&self.config, self.secret.clone())
    }

    fn new_with_secret(config: &SnowflakeConfig, secret: Secret) -> Result<Self, SinkError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| {
                SinkError::Permanent(format!("cannot start the Snowflake client runtime: {e}"))
            })?;
        Ok(Self {
            config: config.clone(),
            secret,
            runtime: Some(runtime),
            api: None,
        })
    }

    fn http_client(&self) -> Result<reqwest_middleware::ClientWithMiddleware, SinkError> {
        let config = &self.config;
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .timeout(Duration::from_millis(config.request_timeout_ms))
            // The offset reader's connection idles between rebalances; a connection the
            // server or a load balancer closed meanwhile would fail the next read.
            .pool_idle_timeout(Duration::from_secs(3))
            .gzip(true);
        if let Some(path) = &config.ca_file {
            let pem = std::fs::read(path).map_err(|e| {
                SinkError::Permanent(format!("cannot read ca_file {}: {e}", path.display()))
            })?;
            let cert = reqwest::Certificate::from_pem(&pem).map_err(|e| {
                SinkError::Permanent(format!(
                    "ca_file {} is not a PEM certificate: {e}",
                    path.display()
                ))
            })?;
            builder = builder.add_root_certificate(cert);
        }
        if let Some(addr) = &config.resolve {
            let socket = addr.parse().map_err(|_| {
                SinkError::Permanent(format!("resolve = {addr:?} is not an ip:port address"))
            })?;
            let host = format!("{}.snowflakecomputing.com", config.account.to_lowercase());
            builder = builder.resolve(&host, socket);
        }
        let client = builder
            .build()
            .map_err(|e| SinkError::Permanent(format!("cannot build the HTTP client: {e}")))?;
        // No retry middleware: a retried MERGE is not idempotent; floe owns retries.
        Ok(reqwest_middleware::ClientBuilder::new(client).build())
    }

    fn connect(&mut self) -> Result<(), SinkError> {
        if self.api.is_none() {
            let c = &self.config;
            let auth_type = match &self.secret {
                Secret::Password(password) => AuthType::Password(PasswordArgs {
                    password: password.clone(),
                }),
                Secret::PrivateKey(pem) => AuthType::Certificate(CertificateArgs {
                    private_key_pem: pem.clone(),
                }),
            };
            let auth = AuthArgs {
                account_identifier: c.account.clone(),
                warehouse: c.warehouse.clone(),
                database: Some(c.database.clone()),
                schema: Some(c.schema.clone()),
                username: c.user.clone(),
                role: c.role.clone(),
                auth_type,
            };
            let api = SnowflakeApiBuilder::new(auth)
                .with_client(self.http_client()?)
                .build()
                .map_err(classify)?;
            self.api = Some(api);
        }
        Ok(())
    }

    fn run(&mut self, sql: &str) -> Result<QueryResult, SinkError> {
        self.connect()?;
        let result = match (&self.api, &self.runtime) {
            (Some(api), Some(runtime)) => block_on(runtime, api.exec(sql)),
            _ => return Err(SinkError::Transient("no Snowflake session".into())),
        };
        result.map_err(|e| {
            let e = classify(e);
            if matches!(e, SinkError::Transient(_)) {
                // The session may be gone (server restart, expiry): log in afresh.
                self.api = None;
            }
            e
        })
    }

    pub fn execute(&mut self, sql: &str) -> Result<(), SinkError> {
        self.run(sql).map(|_| ())
    }

    /// Runs a query and returns its rows as text (select text columns: `TO_VARCHAR(…)`).
    pub fn query_text(&mut self, sql: &str) -> Result<TextRows, SinkError> {
        match self.run(sql)? {
            QueryResult::Empty => Ok(Vec::new()),
            QueryResult::Json(json) => Ok(json
                .value
                .as_array()
                .map(|rows| {
                    rows.iter()
                        .map(|row| {
                            row.as_array()
                                .map(|cells| {
                                    cells
                                        .iter()
                                        .map(|c| match c {
                                            serde_json::Value::Null => None,
                                            serde_json::Value::String(s) => Some(s.clone()),
                                            other => Some(other.to_string()),
                                        })
                                        .collect()
                                })
                                .unwrap_or_default()
                        })
                        .collect()
                })
                .unwrap_or_default()),
            QueryResult::Arrow(batches) => {
                let mut rows = Vec::new();
                for batch in batches {
                    let columns: Vec<Vec<Option<String>>> = batch
                        .columns()
                        .iter()
                        .map(|c| column_text(c.as_ref()))
                        .collect::<Result<_, _>>()?;
                    for r in 0..batch.num_rows() {
                        rows.push(columns.iter().map(|c| c[r].clone()).collect());
                    }
                }
                Ok(rows)
            }
        }
    }

    /// Ends the session (best effort).
    pub fn close(&mut self) {
        if let (Some(mut api), Some(runtime)) = (self.api.take(), &self.runtime) {
            let _ = block_on(runtime, api.close_session());
        }
    }
}

/// Runs the client's future to completion from any thread, also from a worker of floe's
/// own (multi-threaded) runtime, such as during startup or a rebalance callback.
fn block_on<F: std::future::Future>(runtime: &tokio::runtime::Runtime, future: F) -> F::Output {
    if tokio::runtime::Handle::try_current().is_ok() {
        tokio::task::block_in_place(|| runtime.block_on(future))
    } else {
        runtime.block_on(future)
    }
}

fn column_text(column: &dyn Array) -> Result<Vec<Option<String>>, SinkError> {
    let any = column.as_any();
    let cells = |f: &dyn Fn(usize) -> String| -> Vec<Option<String>> {
        (0..column.len())
            .map(|i| (!column.is_null(i)).then(|| f(i)))
            .collect()
    };
    if let Some(a) = any.downcast_ref::<StringArray>() {
        return Ok(cells(&|i| a.value(i).to_string()));
    }
    if let Some(a) = any.downcast_ref::<LargeStringArray>() {
        return Ok(cells(&|i| a.value(i).to_string()));
    }
    if let Some(a) = any.downcast_ref::<Int64Array>() {
        return Ok(cells(&|i| a.value(i).to_string()));
    }
    if let Some(a) = any.downcast_ref::<BooleanArray>() {
        return Ok(cells(&|i| a.value(i).to_string()));
    }
    if let Some(a) = any.downcast_ref::<Decimal128Array>() {
        return Ok(cells(&|i| a.value_as_string(i)));
    }
    Err(SinkError::Permanent(format!(
        "cannot read a {} result column as text",
        column.data_type()
    )))
}
