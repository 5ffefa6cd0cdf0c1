//! Properties of the load path, against real DuckDB: in-batch deduplication and the rule
//! that a replay never moves a row backwards (a change stream over a few keys is cut into
//! batches and delivered in any order, parts of it any number of times; the table always
//! ends as the stream's last word on each key); any table and column name reaching the
//! target exactly as the source spelt it; and the decoder, fed mutated copies of the
//! Debezium fixtures and the bad-input corpus, never panicking.

use std::collections::BTreeMap;
use std::sync::Arc;

use floe::batch::Batch;
use floe::change::{Column, ColumnType, Op, RowChange, SourcePosition, TableSchema, Value};
use floe::config::{SinkConfig, SinkKind};
use floe::sink::Sink;
use proptest::prelude::*;

const TOPIC: &str = "dbserver1.public.items";

/// One change: key, operation, value.
type Step = (i64, Op, i64);

fn schema() -> Arc<TableSchema> {
    Arc::new(TableSchema {
        columns: vec![
            Column {
                name: "id".into(),
                ty: ColumnType::Int64,
            },
            Column {
                name: "v".into(),
                ty: ColumnType::Int64,
            },
        ],
        key: vec![0],
    })
}

/// The change at `offset` of the stream, with the source position Debezium gives it.
fn change(schema: &Arc<TableSchema>, offset: usize, (id, op, v): Step) -> RowChange {
    RowChange {
        table: "items".into(),
        op,
        schema: schema.clone(),
        values: vec![Value::Int(id), Value::Int(v)],
        source: SourcePosition {
            lsn: Some(1_000 + offset as i64),
            tx_id: None,
            ts_ms: Some(1_767_225_600_000),
            snapshot: false,
        },
    }
}

/// The stream's offsets `from..to` as one batch.
fn batch(stream: &[Step], from: usize, to: usize) -> Batch {
    let schema = schema();
    let topic: Arc<str> = TOPIC.into();
    let mut batch = Batch::default();
    for (offset, step) in stream.iter().enumerate().take(to).skip(from) {
        batch.advance(&topic, 0, offset as i64);
        batch.add_row(change(&schema, offset, *step), &topic, 0, offset as i64);
    }
    batch
}

/// The last word of the stream on each key that is not deleted: its value.
fn model(stream: &[Step]) -> BTreeMap<i64, i64> {
    let mut out = BTreeMap::new();
    for (id, op, v) in stream {
        match op {
            Op::Delete => out.remove(id),
            _ => out.insert(*id, *v),
        };
    }
    out
}

fn step() -> impl Strategy<Value = Step> {
    (
        0i64..5,
        prop_oneof![
            Just(Op::Insert),
            Just(Op::Update),
            Just(Op::Update),
            Just(Op::Delete)
        ],
        -1_000i64..1_000,
    )
}

/// A DuckDB sink on a new file in the scratch directory `name`, and the file's path.
fn open(name: &str, soft_delete: bool) -> (Box<dyn Sink>, std::path::PathBuf) {
    let path = floe_e2e::scratch_dir(name).join("t.duckdb");
    (sink_at(&path, soft_delete), path)
}

/// A DuckDB sink on the file at `path`, as a (re)started floe opens it.
fn sink_at(path: &std::path::Path, soft_delete: bool) -> Box<dyn Sink> {
    let mut config = SinkConfig {
        kind: SinkKind::Duckdb,
        soft_delete,
        ..SinkConfig::default()
    };
    config.duckdb.path = path.to_path_buf();
    floe::sink::open(&config).expect("open DuckDB")
}

/// (id, v) of every row of the table that is not (softly) deleted.
fn table(path: &std::path::Path, soft_delete: bool) -> BTreeMap<i64, i64> {
    let conn = duckdb::Connection::open(path).expect("open the table");
    let deleted = if soft_delete {
        "_floe_deleted"
    } else {
        "false"
    };
    let mut stmt = conn
        .prepare(&format!("SELECT id, v, {deleted} FROM items"))
        .expect("query");
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, bool>(2)?,
            ))
        })
        .expect("rows");
    rows.map(|r| r.expect("row"))
        .filter(|(_, _, deleted)| !deleted)
        .map(|(id, v, _)| (id, v))
        .collect()
}

proptest! {
    // Each case loads a fresh DuckDB file statement by statement: few, small cases.
    #![proptest_config(ProptestConfig { cases: 24, max_shrink_iters: 64, ..ProptestConfig::default() })]

    /// Soft deletes keep every key's position, so any delivery order is safe: the stream cut
    /// into batches, plus replays of any stretches, all applied in a shuffled order.
    #[test]
    fn any_order_and_any_replays_end_in_the_model_with_soft_deletes(
        stream in prop::collection::vec(step(), 1..24),
        cuts in prop::collection::vec(0usize..24, 0..5),
        replays in prop::collection::vec((0usize..24, 1usize..10), 0..4),
        order in any::<u64>(),
    ) {
        let n = stream.len();
        let mut bounds: Vec<usize> = cuts.into_iter().filter(|c| *c < n).collect();
        bounds.extend([0, n]);
        bounds.sort_unstable();
        bounds.dedup();
        let mut segments: Vec<(usize, usize)> = bounds.windows(2).map(|w| (w[0], w[1])).collect();
        segments.extend(
            replays
                .into_iter()
                .filter(|(from, _)| *from < n)
                .map(|(from, len)| (from, (from + len).min(n))),
        );
        // A deterministic shuffle of the segments, seeded by the case.
        let mut state = order | 1;
        for i in (1..segments.len()).rev() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            segments.swap(i, (state % (i as u64 + 1)) as usize);
        }
        let (mut sink, path) = open("prop-soft", true);
        for (from, to) in &segments {
            sink.apply(&batch(&stream, *from, *to)).expect("apply");
        }
        drop(sink);
        prop_assert_eq!(table(&path, true), model(&stream));
    }

    /// With hard deletes floe resumes exactly where the sink's stored offsets say: any batch
    /// boundaries, any number of crashes (a batch delivered, then the process restarted
    /// from the stored offsets) end in the model, with the offsets at the stream's end.
    #[test]
    fn any_batches_and_crashes_end_in_the_model_with_hard_deletes(
        stream in prop::collection::vec(step(), 1..24),
        sizes in prop::collection::vec(1usize..8, 1..8),
        crashes in prop::collection::vec(any::<bool>(), 1..8),
    ) {
        let n = stream.len();
        let (mut sink, path) = open("prop-hard", false);
        let mut next = 0;
        let mut round = 0;
        while next < n {
            let size = sizes[round % sizes.len()];
            let to = (next + size).min(n);
            sink.apply(&batch(&stream, next, to)).expect("apply");
            if crashes[round % crashes.len()] {
                // A restarted process reads where to resume from the sink.
                drop(sink);
                sink = sink_at(&path, false);
            }
            let stored = sink.stored_offsets().expect("stored offsets");
            next = stored
                .iter()
                .find(|(t, p, _)| t == TOPIC && *p == 0)
                .map_or(0, |(_, _, o)| *o as usize);
            prop_assert_eq!(next, to, "the stored offset is the batch's end");
            round += 1;
        }
        drop(sink);
        prop_assert_eq!(table(&path, false), model(&stream));
    }
}

/// The Debezium samples and the bad-input corpus: the seeds the decoder is mutated from.
fn seeds() -> Vec<Vec<u8>> {
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    let mut out = Vec::new();
    for dir in ["debezium", "bad"] {
        for entry in std::fs::read_dir(fixtures.join(dir)).expect("fixtures") {
            let path = entry.expect("entry").path();
            if path.extension().is_some_and(|e| e == "json" || e == "bin") {
                out.push(std::fs::read(&path).expect("fixture"));
            }
        }
    }
    out
}

/// One edit of a message: a byte changed, removed or inserted, or the rest cut off.
#[derive(Debug, Clone)]
enum Edit {
    Set(usize, u8),
    Remove(usize),
    Insert(usize, u8),
    Truncate(usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Edit::Set(i, b)),
        any::<usize>().prop_map(Edit::Remove),
        (
            any::<usize>(),
            prop::sample::select(b"{}[]\",:0-9eE.nulltrufas ".to_vec())
        )
            .prop_map(|(i, b)| Edit::Insert(i, b)),
        any::<usize>().prop_map(Edit::Truncate),
    ]
}

fn mutate(mut bytes: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for edit in edits {
        let len = bytes.len().max(1);
        match *edit {
            Edit::Set(i, b) if !bytes.is_empty() => bytes[i % len] = b,
            Edit::Remove(i) if !bytes.is_empty() => {
                bytes.remove(i % len);
            }
            Edit::Insert(i, b) => bytes.insert(i % (bytes.len() + 1), b),
            Edit::Truncate(i) => bytes.truncate(i % len),
            _ => {}
        }
    }
    bytes
}

/// A name as a source database might spell it: quotes, dots, spaces, backslashes,
/// semicolons, SQL keywords and letters outside ASCII.
fn identifier() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9 .\"'`;\\$éüß漢🙂-]{1,16}".prop_filter("names floe reserves or the key takes", |n| {
        !n.to_ascii_lowercase().starts_with("_floe") && !n.eq_ignore_ascii_case("id")
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Whatever a mutated message holds, decoding it answers (a change or an error that
    /// names the problem); it never panics.
    #[test]
    fn the_decoder_never_panics_on_mutated_messages(
        seed in any::<prop::sample::Index>(),
        edits in prop::collection::vec(edit(), 1..8),
        key_edits in prop::collection::vec(edit(), 0..3),
    ) {
        let seeds = seeds();
        let value = mutate(seed.get(&seeds).clone(), &edits);
        let key = mutate(br#"{"id": 1}"#.to_vec(), &key_edits);
        let position = floe::change::KafkaPosition { topic: TOPIC.into(), partition: 0, offset: 0 };
        if let Err(e) = floe::debezium::Decoder::new().decode(Some(&key), Some(&value), position) {
            prop_assert!(!e.to_string().is_empty());
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, max_shrink_iters: 64, ..ProptestConfig::default() })]

    /// A table and a column named anyhow load under exactly those names, with the value.
    #[test]
    fn any_table_and_column_name_reaches_the_target_as_spelt(
        table in identifier(),
        column in identifier(),
        value in "[ -~é漢]{0,24}",
    ) {
        let schema = Arc::new(TableSchema {
            columns: vec![
                Column { name: "id".into(), ty: ColumnType::Int64 },
                Column { name: column.clone(), ty: ColumnType::Text },
            ],
            key: vec![0],
        });
        let change = RowChange {
            table: table.as_str().into(),
            op: Op::Insert,
            schema,
            values: vec![Value::Int(1), Value::Text(value.clone())],
            source: SourcePosition { lsn: Some(1), tx_id: None, ts_ms: None, snapshot: false },
        };
        let topic: Arc<str> = TOPIC.into();
        let mut batch = Batch::default();
        batch.advance(&topic, 0, 0);
        batch.add_row(change, &topic, 0, 0);
        let (mut sink, path) = open("prop-names", false);
        sink.apply(&batch).expect("apply");
        drop(sink);
        let conn = duckdb::Connection::open(&path).expect("open");
        let names: Vec<(String, String)> = conn
            .prepare("SELECT table_name, column_name FROM information_schema.columns \
                      WHERE column_name NOT LIKE '\\_floe%' ESCAPE '\\' AND column_name <> 'id' \
                      AND table_name <> '_floe_offsets'")
            .expect("query")
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .expect("rows")
            .map(|r| r.expect("row"))
            .collect();
        prop_assert_eq!(names, vec![(table.clone(), column.clone())]);
        let stored: String = conn
            .query_row(
                &format!(
                    "SELECT {} FROM {}",
                    quoted(&column),
                    quoted(&table)
                ),
                [],
                |r| r.get(0),
            )
            .expect("the row");
        prop_assert_eq!(stored, value);
    }
}

/// An identifier quoted for DuckDB, written here independently of floe's renderer.
fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}
