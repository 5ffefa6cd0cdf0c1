//! The pipeline restarts when a tenant's sink changes: lanes and subscriptions are set up
//! at start. A tenant sink that cannot be reached holds back only its own topics and is
//! tried again later.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::PipelineError;
use crate::config::{Config, SinkConfig};
use crate::control::ControlPlane;
use crate::telemetry::Stats;

/// How long a tenant sink that could not be opened waits before it is tried again.
const RETRY_UNREACHABLE: Duration = Duration::from_secs(30);

/// Runs the pipeline with the configuration's sinks plus the tenants' own until `stopped`
/// turns true, restarting it whenever the tenants' sinks change.
pub async fn run_with_tenant_sinks(
    config: Config,
    stats: Arc<Stats>,
    control: Option<Arc<ControlPlane>>,
    stopped: tokio::sync::watch::Receiver<bool>,
) -> Result<(), PipelineError> {
    let until_stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    loop {
        let tenant_sinks = control
            .as_ref()
            .map(|c| c.tenant_sinks())
            .unwrap_or_default();
        let unreachable = unreachable_sinks(&config.kafka, &tenant_sinks).await;
        let restart = sinks_changed(
            control.clone(),
            tenant_sinks.clone(),
            !unreachable.is_empty(),
        );
        let stopping = until_stopped(stopped.clone());
        let effective = match with_reachable_sinks(&config, &tenant_sinks, &unreachable) {
            Ok(effective) => effective,
            Err(e) => {
                tracing::error!(error = %e, "the tenants' sinks do not fit the configuration; waiting for a change");
                tokio::select! { _ = stopping => return Ok(()), _ = restart => continue }
            }
        };
        let shutdown = async {
            tokio::select! { _ = stopping => {}, _ = restart => {} }
        };
        super::run(effective, stats.clone(), control.clone(), shutdown).await?;
        if *stopped.borrow() || control.is_none() {
            return Ok(());
        }
        tracing::info!("tenant sinks changed: pipeline restarted");
    }
}

/// `config` with the tenants' reachable sinks; the topics of unreachable ones are not
/// read at all, so they never load anywhere else.
fn with_reachable_sinks(
    config: &Config,
    tenant_sinks: &BTreeMap<String, SinkConfig>,
    unreachable: &[String],
) -> Result<Config, crate::config::ConfigError> {
    let (held, reachable): (BTreeMap<_, _>, BTreeMap<_, _>) = tenant_sinks
        .iter()
        .map(|(n, s)| (n.clone(), s.clone()))
        .partition(|(name, _)| unreachable.contains(name));
    let mut effective = config.clone();
    effective
        .kafka
        .topics
        .retain(|t| !held.values().any(|s| s.topics.contains(t)));
    effective.with_tenant_sinks(&reachable)
}

/// The tenants' sinks that cannot be used now (the sink cannot be opened, or one of its
/// topics does not exist), each logged with its reason.
async fn unreachable_sinks(
    kafka: &crate::config::KafkaConfig,
    sinks: &BTreeMap<String, SinkConfig>,
) -> Vec<String> {
    let mut out = Vec::new();
    if sinks.is_empty() {
        return out;
    }
    let broker = match crate::source::BrokerProbe::new(kafka) {
        Ok(broker) => Arc::new(broker),
        Err(e) => {
            tracing::error!(error = %e, "cannot ask the cluster for the tenants' topics");
            return sinks.keys().cloned().collect();
        }
    };
    for (name, sink) in sinks {
        let probe = sink.clone();
        let broker = broker.clone();
        let reached = tokio::task::spawn_blocking(move || -> Result<(), String> {
            crate::sink::probe(&probe).map_err(|e| e.to_string())?;
            let missing = broker.missing(&probe.topics).map_err(|e| e.to_string())?;
            match missing.is_empty() {
                true => Ok(()),
                false => Err(format!("no such topic: {}", missing.join(", "))),
            }
        })
        .await;
        if let Ok(Err(e)) = reached {
            tracing::error!(sink = %name, error = %e, "tenant sink unusable: its topics wait");
            out.push(name.clone());
        }
    }
    out
}

/// Resolves when the tenants' sinks differ from `current`, or after a while when some
/// could not be reached (to try them again).
async fn sinks_changed(
    control: Option<Arc<ControlPlane>>,
    current: BTreeMap<String, SinkConfig>,
    retry: bool,
) {
    let Some(control) = control else {
        return std::future::pending().await;
    };
    let mut changes = control.subscribe();
    let retry_later = async {
        if retry {
            tokio::time::sleep(RETRY_UNREACHABLE).await
        } else {
            std::future::pending().await
        }
    };
    let changed = async {
        while changes.changed().await.is_ok() {
            if control.tenant_sinks() != current {
                return;
            }
        }
        std::future::pending().await
    };
    tokio::select! { _ = retry_later => {}, _ = changed => {} }
}
