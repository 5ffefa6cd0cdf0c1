use anyhow::Context;

// The consume thread allocates every change and the load thread frees it; glibc's malloc
// serializes such cross-thread frees on an arena lock, mimalloc does not.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::Parser;
use std::sync::Arc;
use std::time::{Duration, Instant};

use floe::cli::{Cli, Command, DlqCommand, LogFormat};
use floe::config::Config;
use floe::generate::{produce, Workload};
use floe::telemetry::{self, Stats};

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // `run` reads its configuration first: it says where spans are exported.
    let run_config = match &cli.command {
        Command::Run { config } => Some(Config::load(config.as_deref())?),
        _ => None,
    };
    let telemetry_config = run_config
        .as_ref()
        .map(|c| c.telemetry.clone())
        .unwrap_or_default();
    let telemetry = telemetry::init(cli.log_format == LogFormat::Json, &telemetry_config)
        .context("cannot set up trace export")?;
    if let Some(target) = telemetry.target() {
        tracing::info!(to = %target.describe(), "exporting traces");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    match cli.command {
        Command::Tenant { api, command } => {
            call_api(&runtime, &api, floe::admin::client::tenant(&command))
        }
        Command::Validator { api, command } => {
            call_api(&runtime, &api, floe::admin::client::validator(&command)?)
        }
        Command::Stats { api } => call_api(&runtime, &api, floe::admin::client::stats()),
        Command::Route { api, command } => {
            call_api(&runtime, &api, floe::admin::client::route(&command))
        }
        Command::Check { config } => {
            let config = Config::load(config.as_deref())?;
            let findings = floe::check::check(&config);
            for finding in &findings {
                println!("{finding}");
            }
            let failed = findings.iter().filter(|f| f.problem.is_some()).count();
            anyhow::ensure!(failed == 0, "{failed} of {} checks failed", findings.len());
            Ok(())
        }
        Command::Run { .. } => {
            let config = run_config.context("configuration not loaded")?;
            let stats = Arc::new(Stats::default());
            runtime.block_on(run(config, stats))
        }
        Command::Generate {
            brokers,
            topic,
            profile,
            events,
            keys,
            seed,
            rate,
            partitions,
            invalid_percent,
            wall_clock,
        } => {
            runtime
                .block_on(floe::source::create_topic(
                    &brokers,
                    &Default::default(),
                    &topic,
                    partitions,
                ))
                .with_context(|| format!("cannot create topic {topic}"))?;
            let mut workload =
                Workload::new(profile, keys, events, seed).with_invalid_percent(invalid_percent);
            if wall_clock {
                workload = workload.with_wall_clock();
            }
            let records = produce::produce(&brokers, &topic, &mut workload, events, rate, |n| {
                if n % 50_000 == 0 && n > 0 {
                    tracing::info!(events = n, "produced");
                }
            })
            .with_context(|| format!("cannot produce to {topic}"))?;
            tracing::info!(
                events,
                records,
                invalid = workload.invalid_events,
                rows = workload.expected().len(),
                topic,
                "generated"
            );
            Ok(())
        }
        Command::Progress {
            brokers,
            group,
            topic,
            wait,
        } => progress(&brokers, &group, &topic, wait),
        Command::Query { duckdb, sql } => query(&duckdb, &sql),
        Command::Dlq {
            command:
                DlqCommand::Replay {
                    config,
                    category,
                    table,
                    tenant,
                    from_offset,
                    to_offset,
                    dry_run,
                },
        } => {
            let mut config = Config::load(config.as_deref())?;
            if let Some(tenant) = tenant {
                runtime.block_on(replay_as_tenant(&mut config, &tenant))?;
            }
            let category = match category {
                Some(c) => Some(
                    floe::dlq::Category::parse(&c)
                        .with_context(|| format!("unknown DLQ category {c:?}"))?,
                ),
                None => None,
            };
            let filter = floe::replay::Filter {
                category,
                table,
                from_offset,
                to_offset,
            };
            let report = floe::replay::replay(&config, &filter, dry_run)?;
            println!("{report}");
            Ok(())
        }
    }
}

/// Points a replay at a tenant's DLQ topic and routes: the control plane's, each
/// validator at its active version.
async fn replay_as_tenant(config: &mut Config, tenant: &str) -> anyhow::Result<()> {
    let control = floe::control::ControlPlane::from_config(&config.admin, &config.kafka).await?;
    anyhow::ensure!(
        control.tenant(tenant).is_some(),
        "tenant {tenant:?} does not exist"
    );
    let routes = control.route_configs(&config.dlq.topic);
    config.routes.extend(
        routes
            .into_iter()
            .filter(|r| r.tenant.as_deref() == Some(tenant)),
    );
    config.dlq.topic = format!("{}.{tenant}", config.dlq.topic);
    Ok(())
}

fn progress(brokers: &str, group: &str, topic: &str, wait: Option<u64>) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(wait.unwrap_or(0));
    loop {
        let parts = floe::source::group_progress(brokers, group, topic)?;
        let lag: i64 = parts.iter().map(|p| p.lag()).sum();
        if wait.is_none() || lag == 0 || Instant::now() >= deadline {
            for p in &parts {
                let committed = p.committed.map_or("-".to_string(), |c| c.to_string());
                println!(
                    "{topic}[{}] committed={committed} high={} lag={}",
                    p.partition,
                    p.high,
                    p.lag()
                );
            }
            if wait.is_some() && lag > 0 {
                anyhow::bail!("group {group} is still {lag} messages behind on {topic}");
            }
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn query(path: &std::path::Path, sql: &str) -> anyhow::Result<()> {
    let config = duckdb::Config::default().access_mode(duckdb::AccessMode::ReadOnly)?;
    let conn = duckdb::Connection::open_with_flags(path, config).with_context(|| {
        format!(
            "cannot open {} read-only (is floe still running on it?)",
            path.display()
        )
    })?;
    let mut stmt = conn.prepare(sql)?;
    let mut rows = stmt.query([])?;
    let mut printed_header = false;
    while let Some(row) = rows.next()? {
        let stmt = row.as_ref();
        let n = stmt.column_count();
        if !printed_header {
            let names: Vec<String> = (0..n)
                .map(|i| stmt.column_name(i).map_or("?".into(), |s| s.to_string()))
                .collect();
            println!("{}", names.join(" | "));
            printed_header = true;
        }
        let values: Vec<String> = (0..n)
            .map(|i| match row.get::<_, duckdb::types::Value>(i) {
                Ok(value) => display(value),
                Err(e) => format!("<{e}>"),
            })
            .collect();
        println!("{}", values.join(" | "));
    }
    Ok(())
}

/// The pipeline, and the admin API beside it when `admin.listen` is set; SIGTERM/SIGINT
/// stops both.
async fn run(config: Config, stats: Arc<Stats>) -> anyhow::Result<()> {
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop.send(true);
    });
    let until_stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let mut control = None;
    let admin = if config.admin.listen.is_empty() {
        None
    } else {
        let mut state = floe::admin::AdminState::from_config(
            &config.admin,
            &config.kafka,
            &config.wasm.cache_dir,
        )
        .await?;
        state.stats = Some(stats.clone());
        state.configured_tables = Arc::new(config.routes.iter().map(|r| r.table.clone()).collect());
        control = Some(state.control.clone());
        let listener = tokio::net::TcpListener::bind(&config.admin.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.admin.listen))?;
        tracing::info!(listen = %listener.local_addr()?, "admin API listening");
        let shutdown = until_stopped(stopped.clone());
        Some(tokio::spawn(floe::admin::run(listener, state, shutdown)))
    };
    let result =
        floe::pipeline::run_with_tenant_sinks(config, stats, control, stopped.clone()).await;
    if let Some(admin) = admin {
        admin.abort();
    }
    Ok(result?)
}

/// One admin API request; prints the answer as JSON.
fn call_api(
    runtime: &tokio::runtime::Runtime,
    api: &floe::cli::ApiArgs,
    request: floe::admin::client::Request,
) -> anyhow::Result<()> {
    let answer = runtime.block_on(floe::admin::client::send(api, request))?;
    println!("{}", serde_json::to_string_pretty(&answer)?);
    Ok(())
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    match (term, int) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Plain text for the common DuckDB types; cast in SQL for anything shown as `Debug`.
fn display(value: duckdb::types::Value) -> String {
    use duckdb::types::Value as V;
    match value {
        V::Null => "NULL".into(),
        V::Boolean(b) => b.to_string(),
        V::TinyInt(i) => i.to_string(),
        V::SmallInt(i) => i.to_string(),
        V::Int(i) => i.to_string(),
        V::BigInt(i) => i.to_string(),
        V::HugeInt(i) => i.to_string(),
        V::Float(f) => f.to_string(),
        V::Double(f) => f.to_string(),
        V::Decimal(d) => d.to_string(),
        V::Text(t) => t,
        V::Timestamp(unit, v) => floe::change::format_timestamp(unit.to_micros(v)),
        V::Date32(days) => floe::change::format_date(days),
        V::Time64(unit, v) => floe::change::format_time(unit.to_micros(v)),
        other => format!("{other:?}"),
    }
}
