//! The control plane: tenants, their API keys (hashes only) and their validators with
//! every uploaded version. Components are stored content-addressed; the metadata is one
//! document rewritten atomically on each change.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

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
}

/// Where one source table of a tenant goes.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TenantRoute {
    /// The tenant's validator; its active version runs.
    #[serde(default)]
    pub validator: Option<String>,
    #[serde(default)]
    pub target: Option<String>,
    #[serde(default)]
    pub key: Option<Vec<String>>,
}

/// One uploaded version of a validator.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Version {
    pub version: u32,
    /// SHA-256 of the component, hex.
    pub hash: String,
    pub size: usize,
    /// Seconds since the epoch.
    pub uploaded_at: i64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ValidatorEntry {
    pub versions: Vec<Version>,
    pub active: Option<u32>,
    /// Versions active before the current one, newest last: what rollback returns to.
    pub previous: Vec<u32>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Tenant {
    /// SHA-256 of each API key, hex; keys themselves are shown once and never stored.
    pub key_hashes: Vec<String>,
    pub validators: BTreeMap<String, ValidatorEntry>,
    /// Routes by source table.
    #[serde(default)]
    pub routes: BTreeMap<String, TenantRoute>,
    /// What this tenant's validators may use; set by the operator.
    #[serde(default)]
    pub limits: TenantLimits,
}

/// A tenant's sandbox: per call of each validator, and how many validators it may keep.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TenantLimits {
    pub memory_mib: u64,
    /// Wall-clock time per validator call.
    pub deadline_ms: u64,
    pub max_component_mib: u64,
    pub max_validators: usize,
}

impl Default for TenantLimits {
    fn default() -> Self {
        let sandbox = crate::config::SandboxLimits::default();
        Self {
            memory_mib: sandbox.memory_mib,
            deadline_ms: sandbox.deadline_ms,
            max_component_mib: sandbox.max_component_mib,
            max_validators: 20,
        }
    }
}

impl TenantLimits {
    pub fn sandbox(&self) -> crate::config::SandboxLimits {
        crate::config::SandboxLimits {
            memory_mib: self.memory_mib,
            deadline_ms: self.deadline_ms,
            max_component_mib: self.max_component_mib,
            ..crate::config::SandboxLimits::default()
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
struct State {
    tenants: BTreeMap<String, Tenant>,
}

pub struct ControlPlane {
    dir: PathBuf,
    state: RwLock<State>,
    /// Bumped on every change; the pipeline reloads its routes when it moves.
    generation: tokio::sync::watch::Sender<u64>,
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
    /// Opens (or starts) the control plane kept in `dir`.
    pub fn open(dir: &Path) -> Result<Self, ControlError> {
        let storage = |e: std::io::Error| ControlError::Storage(format!("{}: {e}", dir.display()));
        std::fs::create_dir_all(dir.join("components")).map_err(storage)?;
        let state = match std::fs::read(dir.join("state.json")) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| ControlError::Storage(format!("state.json: {e}")))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => State::default(),
            Err(e) => return Err(storage(e)),
        };
        Ok(Self {
            dir: dir.to_path_buf(),
            state: RwLock::new(state),
            generation: tokio::sync::watch::Sender::new(0),
        })
    }

    /// Resolves each change: a receiver whose value moves on every change.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.generation.subscribe()
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
            t.routes.insert(table.into(), route);
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
        match self.state.read() {
            Ok(state) => f(&state),
            Err(poisoned) => f(&poisoned.into_inner()),
        }
    }

    /// Applies `change` to a copy of the state, stores it, then makes it current: a change
    /// that cannot be stored is not made.
    fn change<T>(
        &self,
        change: impl FnOnce(&mut State) -> Result<T, ControlError>,
    ) -> Result<T, ControlError> {
        let mut guard = self
            .state
            .write()
            .map_err(|_| ControlError::Storage("state lock poisoned".into()))?;
        let mut next = guard.clone();
        let out = change(&mut next)?;
        let text =
            serde_json::to_vec_pretty(&next).map_err(|e| ControlError::Storage(e.to_string()))?;
        let tmp = self.dir.join("state.json.tmp");
        std::fs::write(&tmp, text)
            .and_then(|_| std::fs::rename(&tmp, self.dir.join("state.json")))
            .map_err(|e| ControlError::Storage(e.to_string()))?;
        *guard = next;
        self.generation.send_modify(|g| *g += 1);
        Ok(out)
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
                .limits = limits;
            Ok(())
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
        self.dir.join("components").join(format!("{hash}.wasm"))
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
        let path = self.component_path(&hash);
        if !path.exists() {
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, bytes)
                .and_then(|_| std::fs::rename(&tmp, &path))
                .map_err(|e| ControlError::Storage(e.to_string()))?;
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
                hash,
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
