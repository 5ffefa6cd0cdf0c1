//! What the control plane keeps: tenants, their keys, validators, routes and limits.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

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
    /// Where this tenant's topics load, if not into the process's sinks; set by the
    /// operator (it reaches files, secrets and hosts outside the sandbox).
    #[serde(default)]
    pub sink: Option<crate::config::SinkConfig>,
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

/// Everything the control plane knows; replaced whole on each change.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct State {
    pub tenants: BTreeMap<String, Tenant>,
}
