//! The WebAssembly host against real components built from `guest-examples/`: verdicts,
//! mapping, hostile guests isolated to the culprit change, refused imports, the cache.

use floe::change::{Column, ColumnType, Op, RowChange, SourcePosition, TableSchema, Value};
use floe::config::{RouteConfig, SandboxLimits};
use floe::dlq::{Category, Origin};
use floe::transform::{LoadError, Outcome, Routes, Runtime, Staged};
use floe_e2e::{guest, scratch_dir};
use std::sync::Arc;

fn route_for(table: &str, guest_name: &str) -> RouteConfig {
    RouteConfig {
        table: table.into(),
        validator: Some(guest(guest_name)),
        target: None,
        key: None,
        limits: SandboxLimits::default(),
        name: None,
        dlq_topic: None,
        tenant: None,
    }
}

fn staged(schema: &Arc<TableSchema>, op: Op, values: Vec<Value>, offset: i64) -> Staged {
    Staged {
        change: RowChange {
            table: "t".into(),
            op,
            schema: schema.clone(),
            values,
            source: SourcePosition::default(),
        },
        origin: Origin {
            topic: "topic".into(),
            partition: 0,
            offset,
            key: None,
            value: None,
        },
    }
}

fn column(name: &str, ty: ColumnType) -> Column {
    Column {
        name: name.into(),
        ty,
    }
}

fn notes_schema() -> Arc<TableSchema> {
    Arc::new(TableSchema {
        columns: vec![
            column("id", ColumnType::Int64),
            column("note", ColumnType::Text),
        ],
        key: vec![0],
    })
}

fn validate(routes: &Routes, changes: Vec<Staged>) -> Vec<Outcome> {
    let route = routes.get("t").expect("route");
    let validator = route.validator.as_ref().expect("validator");
    let results = route.validate(validator, changes);
    results.into_iter().map(|(_, outcome)| outcome).collect()
}

#[test]
fn each_hostile_guest_fails_only_its_culprit_change() {
    let cache = scratch_dir("sandbox-hostile");
    let runtime = Runtime::new(&cache, false).expect("runtime");
    let schema = notes_schema();
    let culprit = 537;
    let changes = || -> Vec<Staged> {
        (0..1000)
            .map(|i| {
                let note = if i == culprit { "poison" } else { "fine" };
                staged(
                    &schema,
                    Op::Insert,
                    vec![Value::Int(i), Value::Text(note.into())],
                    i,
                )
            })
            .collect()
    };
    for (name, category, reason) in [
        (
            "poison-infinite-loop",
            Category::TransformTimeout,
            "exceeded its deadline",
        ),
        (
            "poison-memory-bomb",
            Category::TransformOom,
            "exceeded its memory limit",
        ),
        (
            "poison-trap",
            Category::TransformTrap,
            "poisoned record reached the validator",
        ),
        (
            "poison-wrong-count",
            Category::TransformContract,
            "2 verdicts for 1 changes",
        ),
    ] {
        let routes = Routes::load(&[route_for("t", name)], Some(&runtime)).expect(name);
        let outcomes = validate(&routes, changes());
        assert_eq!(outcomes.len(), 1000, "{name}: one outcome per change");
        for (i, outcome) in outcomes.iter().enumerate() {
            match outcome {
                Outcome::Failed {
                    category: c,
                    reason: r,
                } if i == culprit as usize => {
                    assert_eq!(*c, category, "{name}");
                    assert!(r.contains(reason), "{name}: reason {r:?} lacks {reason:?}");
                }
                Outcome::Accept(change) if i != culprit as usize => {
                    assert_eq!(change.values[0], Value::Int(i as i64), "{name}: order kept")
                }
                other => panic!("{name}: change {i} got {other:?}"),
            }
        }
    }
}

#[test]
fn a_fuel_budget_stops_a_loop_whatever_the_deadline() {
    let runtime = Runtime::new(&scratch_dir("sandbox-fuel"), true).expect("runtime");
    let mut route = route_for("t", "poison-infinite-loop");
    route.limits.deadline_ms = 600_000;
    route.limits.fuel = Some(5_000_000);
    let routes = Routes::load(&[route], Some(&runtime)).expect("load");
    let schema = notes_schema();
    let changes = vec![
        staged(
            &schema,
            Op::Insert,
            vec![Value::Int(1), Value::Text("fine".into())],
            0,
        ),
        staged(
            &schema,
            Op::Insert,
            vec![Value::Int(2), Value::Text("poison".into())],
            1,
        ),
    ];
    let outcomes = validate(&routes, changes);
    assert!(matches!(outcomes[0], Outcome::Accept(_)), "{outcomes:?}");
    match &outcomes[1] {
        Outcome::Failed { category, reason } => {
            assert_eq!(*category, Category::TransformTimeout);
            assert!(
                reason.contains("ran out of fuel (5000000 units)"),
                "{reason}"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn components_reaching_outside_the_sandbox_are_refused_at_load() {
    let runtime = Runtime::new(&scratch_dir("sandbox-imports"), false).expect("runtime");
    let limits = SandboxLimits::default();
    let err = runtime
        .load_file("reads-files", &guest("reads-files"), &limits)
        .expect_err("a component importing wasi:filesystem must be refused");
    assert!(
        matches!(&err, LoadError::ForbiddenImport(i) if i.starts_with("wasi:filesystem/")),
        "{err}"
    );
    assert!(err.to_string().contains("wasi:filesystem/"), "{err}");

    let err = runtime
        .load("junk", b"\0asm not really", &limits)
        .expect_err("junk");
    assert!(matches!(err, LoadError::Invalid(_)), "{err}");

    let small = SandboxLimits {
        max_component_mib: 0,
        ..SandboxLimits::default()
    };
    let err = runtime
        .load_file("tv", &guest("transactions-validator"), &small)
        .expect_err("too large");
    assert!(matches!(err, LoadError::TooLarge { .. }), "{err}");
}

#[test]
fn compiled_components_are_cached_by_content_hash() {
    let cache = scratch_dir("sandbox-cache");
    let artifacts = || std::fs::read_dir(&cache).map_or(0, |d| d.count());
    let limits = SandboxLimits::default();
    let first = Runtime::new(&cache, false)
        .expect("runtime")
        .load_file("tv", &guest("transactions-validator"), &limits)
        .expect("load");
    assert_eq!(artifacts(), 1, "the compiled artifact is written once");
    let again = Runtime::new(&cache, false)
        .expect("runtime")
        .load_file("tv", &guest("transactions-validator"), &limits)
        .expect("load from cache");
    assert_eq!(artifacts(), 1, "a restart reuses the artifact");
    assert_eq!(first.hash, again.hash);
    assert_eq!(first.hash.len(), 64);
}

fn transactions_schema() -> Arc<TableSchema> {
    Arc::new(TableSchema {
        columns: vec![
            column("transaction_id", ColumnType::Int64),
            column("user_id", ColumnType::Int32),
            column(
                "amount",
                ColumnType::Decimal {
                    precision: Some(10),
                    scale: 2,
                },
            ),
            column("status", ColumnType::Text),
        ],
        key: vec![0],
    })
}

#[test]
fn transactions_validator_applies_its_rules_and_spares_key_only_deletes() {
    let runtime = Runtime::new(&scratch_dir("sandbox-tv"), false).expect("runtime");
    let routes =
        Routes::load(&[route_for("t", "transactions-validator")], Some(&runtime)).expect("load");
    let schema = transactions_schema();
    let row = |id: i64, user: i64, amount: &str, status: &str| {
        vec![
            Value::Int(id),
            Value::Int(user),
            Value::Decimal(amount.into()),
            Value::Text(status.into()),
        ]
    };
    let changes = vec![
        staged(&schema, Op::Insert, row(1, 7, "12.50", "pending"), 0),
        staged(&schema, Op::Update, row(2, 7, "-0.01", "settled"), 1),
        staged(&schema, Op::Update, row(3, 7, "1.00", "chargeback"), 2),
        staged(&schema, Op::Insert, row(4, 0, "1.00", "pending"), 3),
        staged(&schema, Op::Insert, row(-5, 7, "1.00", "pending"), 4),
        staged(&schema, Op::Update, row(6, 7, "-0.00", "failed"), 5),
        staged(
            &schema,
            Op::Delete,
            vec![Value::Int(7), Value::Null, Value::Null, Value::Null],
            6,
        ),
    ];
    let codes: Vec<String> = validate(&routes, changes)
        .into_iter()
        .map(|o| match o {
            Outcome::Accept(_) => "accept".into(),
            Outcome::Reject { code, message } => {
                assert!(!message.is_empty());
                code
            }
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(
        codes,
        [
            "accept",
            "amount_negative",
            "status_unknown",
            "user_id_not_positive",
            "transaction_id_not_positive",
            "accept",
            "accept"
        ]
    );
}

#[test]
fn pii_mask_masks_drops_and_derives_columns() {
    let runtime = Runtime::new(&scratch_dir("sandbox-pii"), false).expect("runtime");
    let routes = Routes::load(&[route_for("t", "pii-mask")], Some(&runtime)).expect("load");
    let schema = Arc::new(TableSchema {
        columns: vec![
            column("id", ColumnType::Int64),
            column("email", ColumnType::Text),
            column("ssn", ColumnType::Text),
            column("name", ColumnType::Text),
        ],
        key: vec![0],
    });
    let changes = vec![
        staged(
            &schema,
            Op::Insert,
            vec![
                Value::Int(1),
                Value::Text("Jane.Doe@Example.COM".into()),
                Value::Text("123-45-6789".into()),
                Value::Text("Jane 🦀".into()),
            ],
            0,
        ),
        staged(
            &schema,
            Op::Delete,
            vec![Value::Int(2), Value::Null, Value::Null, Value::Null],
            1,
        ),
    ];
    let outcomes = validate(&routes, changes);
    let Outcome::Accept(insert) = &outcomes[0] else {
        panic!("{outcomes:?}")
    };
    let names: Vec<&str> = insert
        .schema
        .columns
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(names, ["id", "email", "name", "email_domain"]);
    assert_eq!(insert.schema.key, vec![0]);
    assert_eq!(
        insert.values,
        vec![
            Value::Int(1),
            Value::Text("J***@Example.COM".into()),
            Value::Text("Jane 🦀".into()),
            Value::Text("example.com".into()),
        ]
    );
    let Outcome::Accept(delete) = &outcomes[1] else {
        panic!("{outcomes:?}")
    };
    assert_eq!(delete.op, Op::Delete);
    assert_eq!(delete.values[0], Value::Int(2));
}
