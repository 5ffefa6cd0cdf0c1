//! The pipeline's routes follow the control plane: reloaded after every change.

use std::collections::BTreeSet;
use std::sync::Arc;

use crate::config::{Config, KafkaConfig, RouteConfig};
use crate::control::ControlPlane;
use crate::source;
use crate::transform::{Routes, Runtime, SharedRoutes};

/// The configuration's routes plus the control plane's, without a tenant's route of a
/// table the configuration (or another tenant) already routes: state the API would have
/// refused (written before the configuration routed the table, or not through the API)
/// costs that tenant its route, never the pipeline its start.
pub(super) fn with_tenant_routes(
    configured: &[RouteConfig],
    tenants: Vec<RouteConfig>,
) -> Vec<RouteConfig> {
    let mut all = configured.to_vec();
    for route in tenants {
        if let Some(holder) = all.iter().find(|r| r.table == route.table) {
            let holder = holder.tenant.as_deref().unwrap_or("the configuration");
            tracing::error!(
                tenant = route.tenant.as_deref().unwrap_or("?"),
                table = %route.table,
                routed_by = holder,
                "a tenant's route of a table already routed is not in force"
            );
            continue;
        }
        all.push(route);
    }
    all
}

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
    let mut dlq_topics = BTreeSet::new();
    while changes.changed().await.is_ok() {
        let all = with_tenant_routes(&config.routes, control.route_configs(&config.dlq.topic));
        create_route_dlq_topics(&config.kafka, &all, &mut dlq_topics).await;
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

/// A DLQ topic, made to take a dead letter as large as any record of its sources.
pub(super) async fn create_dlq_topic(
    kafka: &KafkaConfig,
    topic: &str,
) -> Result<(), rdkafka::error::KafkaError> {
    create_dlq_topics(kafka, &[topic]).await
}

async fn create_dlq_topics(
    kafka: &KafkaConfig,
    topics: &[&str],
) -> Result<(), rdkafka::error::KafkaError> {
    let settings = [("max.message.bytes", crate::dlq::DLQ_MAX_MESSAGE_BYTES)];
    source::create_topics_with(&kafka.brokers, &kafka.properties, topics, 1, &settings).await
}

/// Creates the tenants' DLQ topics the routes name that are not in `created` yet (existing
/// ones are left alone), in one request, and remembers them: routes are loaded again after
/// every control-plane change, and asking for a hundred tenants' topics each time made an
/// upload take seconds to go live.
pub(super) async fn create_route_dlq_topics(
    kafka: &KafkaConfig,
    routes: &[RouteConfig],
    created: &mut BTreeSet<String>,
) {
    let topics: BTreeSet<&str> = routes
        .iter()
        .filter_map(|r| r.dlq_topic.as_deref())
        .filter(|t| !created.contains(*t))
        .collect();
    let topics: Vec<&str> = topics.into_iter().collect();
    match create_dlq_topics(kafka, &topics).await {
        Ok(()) => created.extend(topics.iter().map(|t| t.to_string())),
        Err(e) => tracing::warn!(?topics, error = %e, "cannot create the tenants' DLQ topics"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(table: &str, tenant: Option<&str>) -> RouteConfig {
        RouteConfig {
            table: table.into(),
            validator: None,
            target: None,
            key: None,
            limits: Default::default(),
            name: None,
            dlq_topic: None,
            tenant: tenant.map(String::from),
        }
    }

    #[test]
    fn a_tenant_route_of_a_routed_table_is_left_out_not_fatal() {
        let all = with_tenant_routes(
            &[route("orders", None)],
            vec![
                route("orders", Some("acme")),
                route("notes", Some("acme")),
                route("notes", Some("other")),
            ],
        );
        let kept: Vec<(&str, Option<&str>)> = all
            .iter()
            .map(|r| (r.table.as_str(), r.tenant.as_deref()))
            .collect();
        assert_eq!(kept, [("orders", None), ("notes", Some("acme"))]);
        assert!(Routes::load(&all, None).is_ok());
    }
}
