//! The control plane: tenants, their API keys (hashes only) and their validators with
//! every uploaded version. Components are stored content-addressed; the metadata is one
//! document replaced whole on each change.
//!
//! A cluster shares it through a compacted Kafka topic (see [`log`]); a single process
//! without one keeps it in `state.json`.

mod log;
mod model;

use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

pub use model::{State, Tenant, TenantLimits, TenantRoute, ValidatorEntry, Version};

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("tenant {0:?} does not exist")]
    NoTenant(String),
    #[error("tenant {0:?} already exists")]
    TenantExists(String),
    #[error("validator {0:?} does not exist")]
    NoValidator(String),
    #[error("validator {name:?} has no version {version}")]
    NoVersion { name: String, version: u32 },
    #[error("validator {0:?} has no earlier active version to roll back to")]
    NoRollback(String),
    #[error("{0}")]
    InvalidName(String),
    #[error("table {table:?} is already routed by tenant {tenant:?}")]
    RouteConflict { table: String, tenant: String },
    #[error("validator {0:?} has no active version: activate one before routing to it")]
    NotActive(String),
    #[error("validator {name:?} is used by the route of table {table:?}")]
    InUse { name: String, table: String },
    #[error("table {0:?} has no route")]
    NoRoute(String),
    #[error("tenant {tenant:?} may keep at most {limit} validators")]
    TooManyValidators { tenant: String, limit: usize },
    #[error("cannot store the control-plane state: {0}")]
    Storage(String),
    #[error("the control-plane log is unavailable: {0}")]
    Log(String),
    #[error("another node changed the control plane at the same time; try again")]
    Contended,
    #[error("{0}")]
    InvalidSink(String),
    #[error("topic {topic:?} already loads into the sink of tenant {tenant:?}")]
    TopicClaimed { topic: String, tenant: String },
}

/// The state as of a revision: a counter in `state.json`, the record's offset in the log.
#[derive(Debug, Clone, Default)]
pub(crate) struct Versioned {
    pub revision: i64,
    pub state: State,
}

/// What the pipeline, the API and the log follower share.
pub(crate) struct Shared {
    pub current: RwLock<Versioned>,
    /// Bumped on every change; the pipeline reloads its routes when it moves.
    pub generation: tokio::sync::watch::Sender<u64>,
    /// Components by hash, `{hash}.wasm`.
    pub components: PathBuf,
}

impl Shared {
    fn snapshot(&self) -> Versioned {
        match self.current.read() {
            Ok(v) => v.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub(crate) fn install(&self, next: Versioned) {
        match self.current.write() {
            Ok(mut v) => *v = next,
            Err(poisoned) => *poisoned.into_inner() = next,
        }
        self.generation.send_modify(|g| *g += 1);
    }

    pub(crate) fn revision(&self) -> i64 {
        match self.current.read() {
            Ok(v) => v.revision,
            Err(poisoned) => poisoned.into_inner().revision,
        }
    }

    pub(crate) fn component_path(&self, hash: &str) -> PathBuf {
        self.components.join(format!("{hash}.wasm"))
    }

    /// Writes a component under its hash unless it is there already.
    pub(crate) fn store_component(&self, hash: &str, bytes: &[u8]) -> Result<(), ControlError> {
        let path = self.component_path(hash);
        if path.exists() {
            return Ok(());
        }
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, bytes)
            .and_then(|_| std::fs::rename(&tmp, &path))
            .map_err(|e| ControlError::Storage(format!("{}: {e}", path.display())))
    }
}

/// Where changes are kept.
enum Store {
    /// `state.json` in the control-plane directory: one process.
    File(PathBuf),
    /// The compacted topic every node of a cluster follows.
    Log(log::ControlLog),
}

pub struct ControlPlane {
    shared: Arc<Shared>,
    store: Store,
    /// One local change at a time; the log orders changes between nodes.
    writer: Mutex<()>,
}

pub fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// A new random API key (256 bits).
pub fn new_key() -> String {
    let bytes: [u8; 32] = rand::random();
    format!("floe_{}", hex::encode(bytes))
}

/// Tenant and validator names: what is safe in a path, a topic and a file name.
pub fn check_name(kind: &str, name: &str) -> Result<(), ControlError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(ControlError::InvalidName(format!(
            "{kind} name {name:?} must be 1-64 characters of a-z, 0-9, '-' and '_'"
        )))
    }
}

impl ControlPlane {
    /// Opens (or starts) the control plane kept in `dir` by this process alone.
    pub fn open(dir: &Path) -> Result<Self, ControlError> {
        let shared = Self::shared(dir)?;
        let path = dir.join("state.json");
        let state = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| ControlError::Storage(format!("{}: {e}", path.display())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => State::default(),
            Err(e) => return Err(ControlError::Storage(format!("{}: {e}", path.display()))),
        };
        shared.install(Versioned { revision: 0, state });
        Ok(Self {
            shared,
            store: Store::File(path),
            writer: Mutex::new(()),
        })
    }

    /// Joins the control plane a cluster keeps in `topic` (created compacted when
    /// missing): replays it, then follows it. `dir` caches the components locally.
    pub async fn join(
        kafka: &crate::config::KafkaConfig,
        topic: &str,
        dir: &Path,
    ) -> Result<Self, ControlError> {
        let shared = Self::shared(dir)?;
        let log = log::ControlLog::open(kafka, topic, shared.clone()).await?;
        Ok(Self {
            shared,
            store: Store::Log(log),
            writer: Mutex::new(()),
        })
    }

    /// The control plane `admin` describes: shared through its topic, or in its directory.
    pub async fn from_config(
        admin: &crate::config::AdminConfig,
        kafka: &crate::config::KafkaConfig,
    ) -> Result<Self, ControlError> {
        if admin.control_topic.is_empty() {
            Self::open(&admin.dir)
        } else {
            Self::join(kafka, &admin.control_topic, &admin.dir).await
        }
    }

    fn shared(dir: &Path) -> Result<Arc<Shared>, ControlError> {
        let components = dir.join("components");
        std::fs::create_dir_all(&components)
            .map_err(|e| ControlError::Storage(format!("{}: {e}", components.display())))?;
        Ok(Arc::new(Shared {
            current: RwLock::new(Versioned::default()),
            generation: tokio::sync::watch::Sender::new(0),
            components,
        }))
    }

    /// Resolves each change: a receiver whose value moves on every change.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.shared.generation.subscribe()
    }

    /// Every tenant route as a pipeline route, its validator at the active version, its
    /// dead letters to the tenant's own topic `{dlq_topic}.{tenant}`.
    pub fn route_configs(&self, dlq_topic: &str) -> Vec<crate::config::RouteConfig> {
        self.read(|s| {
            let mut out = Vec::new();
            for (tenant_name, tenant) in &s.tenants {
                for (table, route) in &tenant.routes {
                    let active = route.validator.as_ref().and_then(|name| {
                        let entry = tenant.validators.get(name)?;
                        let version = entry
                            .versions
                            .iter()
                            .find(|v| Some(v.version) == entry.active)?;
                        Some((name, version))
                    });
                    out.push(crate::config::RouteConfig {
                        table: table.clone(),
                        validator: active.map(|(_, v)| self.component_path(&v.hash)),
                        name: active.map(|(n, v)| format!("{tenant_name}/{n}@v{}", v.version)),
                        target: route.target.clone(),
                        key: route.key.clone(),
                        limits: tenant.limits.sandbox(),
                        dlq_topic: Some(format!("{dlq_topic}.{tenant_name}")),
                        tenant: Some(tenant_name.clone()),
                    });
                }
            }
            out
        })
    }

    /// Routes `table` of `tenant`; a table belongs to one tenant, and a route's validator
    /// must have an active version.
    pub fn set_route(
        &self,
        tenant: &str,
        table: &str,
        route: TenantRoute,
    ) -> Result<(), ControlError> {
        self.change(|s| {
            if let Some((owner, _)) = s
                .tenants
                .iter()
                .find(|(n, t)| n.as_str() != tenant && t.routes.contains_key(table))
            {
                return Err(ControlError::RouteConflict {
                    table: table.into(),
                    tenant: owner.clone(),
                });
            }
            let t = s
                .tenants
                .get_mut(tenant)
                .ok_or_else(|| ControlError::NoTenant(tenant.into()))?;
            if let Some(name) = &route.validator {
                let entry = t
                    .validators
                    .get(name)
                    .ok_or_else(|| ControlError::NoValidator(name.clone()))?;
                if entry.active.is_none() {
                    return Err(ControlError::NotActive(name.clone()));
                }
            }
            t.routes.insert(table.into(), route.clone());
            Ok(())
        })
    }

    pub fn delete_route(&self, tenant: &str, table: &str) -> Result<(), ControlError> {
        self.change(|s| {
            s.tenants
                .get_mut(tenant)
                .ok_or_else(|| ControlError::NoTenant(tenant.into()))?
                .routes
                .remove(table)
                .map(|_| ())
                .ok_or_else(|| ControlError::NoRoute(table.into()))
        })
    }

    fn read<T>(&self, f: impl FnOnce(&State) -> T) -> T {
        match self.shared.current.read() {
            Ok(v) => f(&v.state),
            Err(poisoned) => f(&poisoned.into_inner().state),
        }
    }

    /// Applies `change` to a copy of the state and stores it; only then does it become
    /// current, so a change that cannot be stored is not made. In the log, a change that
    /// lost a race with another node's is made again on top of the winner's.
    fn change<T>(
        &self,
        mut change: impl FnMut(&mut State) -> Result<T, ControlError>,
    ) -> Result<T, ControlError> {
        let _one_at_a_time = self
            .writer
            .lock()
            .map_err(|_| ControlError::Storage("control-plane writer lock poisoned".into()))?;
        match &self.store {
            Store::File(path) => {
                let Versioned {
                    revision,
                    mut state,
                } = self.shared.snapshot();
                let out = change(&mut state)?;
                let text = serde_json::to_vec_pretty(&state)
                    .map_err(|e| ControlError::Storage(e.to_string()))?;
                let tmp = path.with_extension("json.tmp");
                std::fs::write(&tmp, text)
                    .and_then(|_| std::fs::rename(&tmp, path))
                    .map_err(|e| ControlError::Storage(format!("{}: {e}", path.display())))?;
                self.shared.install(Versioned {
                    revision: revision + 1,
                    state,
                });
                Ok(out)
            }
            Store::Log(log) => {
                for _ in 0..log::MAX_ATTEMPTS {
                    log.catch_up()?;
                    let Versioned {
                        revision,
                        mut state,
                    } = self.shared.snapshot();
                    let out = change(&mut state)?;
                    if log.append_state(revision, &state)? {
                        return Ok(out);
                    }
                }
                Err(ControlError::Contended)
            }
        }
    }

    pub fn tenant(&self, name: &str) -> Option<Tenant> {
        self.read(|s| s.tenants.get(name).cloned())
    }

    pub fn tenant_names(&self) -> Vec<String> {
        self.read(|s| s.tenants.keys().cloned().collect())
    }

    /// The tenant a key belongs to.
    pub fn tenant_of_key(&self, key: &str) -> Option<String> {
        let hash = hash_key(key);
        self.read(|s| {
            s.tenants
                .iter()
                .find(|(_, t)| t.key_hashes.contains(&hash))
                .map(|(n, _)| n.clone())
        })
    }

    /// Creates a tenant and returns its first API key.
    pub fn create_tenant(&self, name: &str) -> Result<String, ControlError> {
        check_name("tenant", name)?;
        let key = new_key();
        self.change(|s| {
            if s.tenants.contains_key(name) {
                return Err(ControlError::TenantExists(name.into()));
            }
            s.tenants.insert(
                name.into(),
                Tenant {
                    key_hashes: vec![hash_key(&key)],
                    ..Tenant::default()
                },
            );
            Ok(())
        })?;
        Ok(key)
    }

    pub fn set_limits(&self, tenant: &str, limits: TenantLimits) -> Result<(), ControlError> {
        self.change(|s| {
            s.tenants
                .get_mut(tenant)
                .ok_or_else(|| ControlError::NoTenant(tenant.into()))?
                .limits = limits.clone();
            Ok(())
        })
    }

    /// Gives a tenant's topics a sink of their own (`None`: back to the process's sinks).
    pub fn set_sink(
        &self,
        tenant: &str,
        sink: Option<crate::config::SinkConfig>,
    ) -> Result<(), ControlError> {
        if sink.as_ref().is_some_and(|s| s.topics.is_empty()) {
            return Err(ControlError::InvalidSink(
                "a tenant's sink lists the topics it loads (\"topics\")".into(),
            ));
        }
        self.change(|s| {
            if let Some(sink) = &sink {
                for (name, other) in s.tenants.iter().filter(|(n, _)| n.as_str() != tenant) {
                    let theirs = other.sink.iter().flat_map(|o| &o.topics);
                    if let Some(topic) = theirs.into_iter().find(|t| sink.topics.contains(t)) {
                        return Err(ControlError::TopicClaimed {
                            topic: topic.clone(),
                            tenant: name.clone(),
                        });
                    }
                }
            }
            s.tenants
                .get_mut(tenant)
                .ok_or_else(|| ControlError::NoTenant(tenant.into()))?
                .sink = sink.clone();
            Ok(())
        })
    }

    /// Each tenant's own sink, named `tenant-{name}`.
    pub fn tenant_sinks(&self) -> BTreeMap<String, crate::config::SinkConfig> {
        self.read(|s| {
            s.tenants
                .iter()
                .filter_map(|(name, t)| Some((format!("tenant-{name}"), t.sink.clone()?)))
                .collect()
        })
    }

    pub fn delete_tenant(&self, name: &str) -> Result<(), ControlError> {
        self.change(|s| {
            s.tenants
                .remove(name)
                .map(|_| ())
                .ok_or_else(|| ControlError::NoTenant(name.into()))
        })
    }

    /// Issues another key for a tenant.
    pub fn issue_key(&self, tenant: &str) -> Result<String, ControlError> {
        let key = new_key();
        self.change(|s| {
            let t = s
                .tenants
                .get_mut(tenant)
                .ok_or_else(|| ControlError::NoTenant(tenant.into()))?;
            t.key_hashes.push(hash_key(&key));
            Ok(())
        })?;
        Ok(key)
    }

    pub fn component_path(&self, hash: &str) -> PathBuf {
        self.shared.component_path(hash)
    }

    /// Stores a checked component as the next version of `name` (not yet active).
    pub fn add_version(
        &self,
        tenant: &str,
        name: &str,
        bytes: &[u8],
    ) -> Result<Version, ControlError> {
        check_name("validator", name)?;
        let hash = hex::encode(Sha256::digest(bytes));
        self.shared.store_component(&hash, bytes)?;
        // Before the version that names it, so every node has it when the version arrives.
        if let Store::Log(log) = &self.store {
            log.append_component(&hash, bytes)?;
        }
        self.change(|s| {
            let t = s
                .tenants
                .get_mut(tenant)
                .ok_or_else(|| ControlError::NoTenant(tenant.into()))?;
            if !t.validators.contains_key(name) && t.validators.len() >= t.limits.max_validators {
                return Err(ControlError::TooManyValidators {
                    tenant: tenant.into(),
                    limit: t.limits.max_validators,
                });
            }
            let entry = t.validators.entry(name.into()).or_default();
            let version = Version {
                version: entry.versions.last().map_or(1, |v| v.version + 1),
                hash: hash.clone(),
                size: bytes.len(),
                uploaded_at: chrono::Utc::now().timestamp(),
            };
            entry.versions.push(version.clone());
            Ok(version)
        })
    }

    fn validator_mut<'a>(
        s: &'a mut State,
        tenant: &str,
        name: &str,
    ) -> Result<&'a mut ValidatorEntry, ControlError> {
        s.tenants
            .get_mut(tenant)
            .ok_or_else(|| ControlError::NoTenant(tenant.into()))?
            .validators
            .get_mut(name)
            .ok_or_else(|| ControlError::NoValidator(name.into()))
    }

    pub fn activate(&self, tenant: &str, name: &str, version: u32) -> Result<(), ControlError> {
        self.change(|s| {
            let entry = Self::validator_mut(s, tenant, name)?;
            if !entry.versions.iter().any(|v| v.version == version) {
                return Err(ControlError::NoVersion {
                    name: name.into(),
                    version,
                });
            }
            if let Some(current) = entry.active.filter(|c| *c != version) {
                entry.previous.push(current);
            }
            entry.active = Some(version);
            Ok(())
        })
    }

    /// Makes the previously active version active again; returns it.
    pub fn rollback(&self, tenant: &str, name: &str) -> Result<u32, ControlError> {
        self.change(|s| {
            let entry = Self::validator_mut(s, tenant, name)?;
            let previous = entry
                .previous
                .pop()
                .ok_or_else(|| ControlError::NoRollback(name.into()))?;
            entry.active = Some(previous);
            Ok(previous)
        })
    }

    pub fn delete_validator(&self, tenant: &str, name: &str) -> Result<(), ControlError> {
        self.change(|s| {
            let t = s
                .tenants
                .get_mut(tenant)
                .ok_or_else(|| ControlError::NoTenant(tenant.into()))?;
            if let Some((table, _)) = t
                .routes
                .iter()
                .find(|(_, r)| r.validator.as_deref() == Some(name))
            {
                return Err(ControlError::InUse {
                    name: name.into(),
                    table: table.clone(),
                });
            }
            t.validators
                .remove(name)
                .map(|_| ())
                .ok_or_else(|| ControlError::NoValidator(name.into()))
        })
    }
}
