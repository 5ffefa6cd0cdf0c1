//! The pipeline's routes follow the control plane: reloaded after every change.

use std::sync::Arc;

use crate::config::{Config, KafkaConfig, RouteConfig};
use crate::control::ControlPlane;
use crate::source;
use crate::transform::{Routes, Runtime, SharedRoutes};

/// Keeps the routes in force equal to the configuration's plus the control plane's (with
/// each validator at its active version), loading them again after every change. Routes
/// that cannot be loaded are logged and the previous ones stay in force.
pub(super) async fn follow_control_plane(
    control: Arc<ControlPlane>,
    mut changes: tokio::sync::watch::Receiver<u64>,
    config: Config,
    runtime: Option<Arc<Runtime>>,
    routes: Arc<SharedRoutes>,
) {
    while changes.changed().await.is_ok() {
        let mut all = config.routes.clone();
        all.extend(control.route_configs(&config.dlq.topic));
        create_dlq_topics(&config.kafka, &all).await;
        let validators: Vec<String> = all.iter().filter_map(|r| r.name.clone()).collect();
        let runtime = runtime.clone();
        let loaded =
            tokio::task::spawn_blocking(move || Routes::load(&all, runtime.as_deref())).await;
        match loaded {
            Ok(Ok(next)) => {
                routes.replace(next);
                tracing::info!(
                    ?validators,
                    "routes loaded from the configuration and the control plane"
                );
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, "cannot load the control plane's routes; the previous routes stay")
            }
            Err(e) => tracing::error!(error = %e, "route loading stopped"),
        }
    }
}

/// Creates the tenants' DLQ topics the routes name (existing ones are left alone).
/// A DLQ topic, made to take a dead letter as large as any record of its sources.
pub(super) async fn create_dlq_topic(
    kafka: &KafkaConfig,
    topic: &str,
) -> Result<(), rdkafka::error::KafkaError> {
    let settings = [("max.message.bytes", crate::dlq::DLQ_MAX_MESSAGE_BYTES)];
    source::create_topic_with(&kafka.brokers, &kafka.properties, topic, 1, &settings).await
}

pub(super) async fn create_dlq_topics(kafka: &KafkaConfig, routes: &[RouteConfig]) {
    let topics: std::collections::BTreeSet<&str> = routes
        .iter()
        .filter_map(|r| r.dlq_topic.as_deref())
        .collect();
    for topic in topics {
        if let Err(e) = create_dlq_topic(kafka, topic).await {
            tracing::warn!(%topic, error = %e, "cannot create a tenant's DLQ topic");
        }
    }
}
