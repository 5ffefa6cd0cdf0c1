//! A load generator writing realistic Debezium change streams, and the reference model
//! of the table they should produce. `floe generate`, the demo, the tests and the
//! benchmark all use it.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use num_bigint::BigInt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use std::collections::BTreeMap;

/// Which table the stream describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Profile {
    /// `transactions(transaction_id, user_id, amount DECIMAL(10,2), status, created_at, updated_at)`.
    Transactions,
    /// `all_types`: every logical type floe decodes, TOAST placeholders, a mixed-case
    /// column name (`Note`), and a column that appears halfway through the stream.
    AllTypes,
    /// `transactions` with four more columns — `fee DECIMAL(12,4)`, `currency`, `memo`
    /// text and `attributes` JSON: ten columns, the benchmark's workload.
    TransactionsWide,
}

const CURRENCIES: &[&str] = &["EUR", "USD", "GBP", "JPY", "CHF"];

/// One Kafka record: key and value JSON (a `None` value is a tombstone).
#[derive(Debug, Clone)]
pub struct Record {
    pub key: String,
    pub value: Option<String>,
}

const STATUSES: &[&str] = &["pending", "authorized", "settled", "refunded", "failed"];
const NOTES: &[&str] = &[
    "plain",
    "it's quoted",
    "back\\slash and \"double\"",
    "multi\nline\ttabbed",
    "unicode: żółw, 日本, 🦀",
    "'; DROP TABLE all_types; --",
    "$$dollar$$",
];

#[derive(Debug, Clone)]
struct Row {
    id: i64,
    user_id: i32,
    cents: i64,
    status: &'static str,
    created_us: i64,
    updated_us: i64,
    // all_types only
    ratio_unscaled: i64,
    ratio_scale: u32,
    day: i32,
    at_time_us: i64,
    ts_ms: i64,
    zone_minutes: i32,
    doc_n: i64,
    uid: u128,
    raw: Vec<u8>,
    tags: Vec<String>,
    nums: Vec<i32>,
    flag: bool,
    score_quarters: i64,
    note: &'static str,
    bio: String,
    region: Option<String>,
}

/// Generates a stream of inserts, updates and deletes over a key space, and keeps the
/// final state a correct loader must end with.
pub struct Workload {
    profile: Profile,
    keys: i64,
    rng: StdRng,
    live: Vec<i64>,
    /// Deleted keys, re-created once the key space is used up.
    dead: Vec<i64>,
    rows: BTreeMap<i64, Row>,
    /// The table a loader ends with when it also accepts the `chargeback` status.
    lenient: BTreeMap<i64, Row>,
    next_key: i64,
    lsn: i64,
    emitted: u64,
    /// Events after which `all_types` rows carry the `region` column.
    region_after: u64,
    base_us: i64,
    /// Share of `transactions` updates made invalid (negative amount or unknown status).
    invalid_percent: u32,
    /// Invalid updates emitted; a validating loader rejects each and keeps the row as it was.
    pub invalid_events: u64,
    /// Stamp changes with the wall clock instead of a synthetic one (latency runs).
    wall_clock: bool,
    /// The rendered envelope schema and whether it has `region`: it repeats in every
    /// record, and building it anew made the generator slower than the broker.
    schema_text: Option<(bool, String)>,
}

impl Workload {
    /// `keys` bounds the key space; `expected_events` places the schema change halfway.
    pub fn new(profile: Profile, keys: u64, expected_events: u64, seed: u64) -> Self {
        Self {
            profile,
            keys: keys.max(1) as i64,
            rng: StdRng::seed_from_u64(seed),
            live: Vec::new(),
            dead: Vec::new(),
            rows: BTreeMap::new(),
            lenient: BTreeMap::new(),
            next_key: 1,
            lsn: 30_000_000,
            emitted: 0,
            region_after: expected_events / 2,
            base_us: 1_767_225_600_000_000, // 2026-01-01T00:00:00Z
            invalid_percent: 0,
            invalid_events: 0,
            wall_clock: false,
            schema_text: None,
        }
    }

    /// Stamps each change's `updated_at` and source `ts_ms` with the time it is made, so
    /// that a target row tells how long it took to become visible.
    pub fn with_wall_clock(mut self) -> Self {
        self.wall_clock = true;
        self
    }

    fn is_transactions(&self) -> bool {
        matches!(
            self.profile,
            Profile::Transactions | Profile::TransactionsWide
        )
    }

    /// Makes `percent`% of `transactions` updates break `transactions-validator`'s rules:
    /// a negative amount or the status `chargeback`. The reference model leaves their
    /// rows unchanged, as a loader that rejects them must.
    pub fn with_invalid_percent(mut self, percent: u32) -> Self {
        self.invalid_percent = percent.min(100);
        self
    }

    pub fn table(&self) -> &'static str {
        match self.profile {
            Profile::Transactions | Profile::TransactionsWide => "transactions",
            Profile::AllTypes => "all_types",
        }
    }

    /// The next change: one record, or a delete followed by its tombstone.
    pub fn next_records(&mut self) -> Vec<Record> {
        self.emitted += 1;
        self.lsn += 8 + self.rng.random_range(0..64);
        // 20% inserts (new keys, then re-created deleted ones), 70% updates, 10% deletes.
        let roll = self.rng.random_range(0..100);
        let can_insert = self.next_key <= self.keys || !self.dead.is_empty();
        if can_insert && (self.live.is_empty() || roll < 20) {
            return vec![self.insert()];
        }
        if roll >= 90 {
            return self.delete();
        }
        vec![self.update()]
    }

    fn with_region(&self) -> bool {
        self.profile == Profile::AllTypes && self.emitted > self.region_after
    }

    fn now_us(&self) -> i64 {
        if self.wall_clock {
            let since_epoch = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            return since_epoch.as_micros() as i64;
        }
        self.base_us + self.emitted as i64 * 1_000 + 7
    }

    fn insert(&mut self) -> Record {
        let id = if self.next_key <= self.keys {
            self.next_key += 1;
            self.next_key - 1
        } else {
            let idx = self.rng.random_range(0..self.dead.len());
            self.dead.swap_remove(idx)
        };
        let now = self.now_us();
        let mut row = self.random_row(id, now);
        row.created_us = now;
        self.live.push(id);
        let snapshot = self.emitted <= 20;
        let op = if snapshot { "r" } else { "c" };
        let record = self.record(op, &row, false);
        self.lenient.insert(id, row.clone());
        self.rows.insert(id, row);
        record
    }

    fn update(&mut self) -> Record {
        let idx = self.rng.random_range(0..self.live.len());
        let id = self.live[idx];
        let now = self.now_us();
        let mut row = self.random_row(id, now);
        let Some(old) = self.rows.get(&id) else {
            return self.insert();
        };
        row.created_us = old.created_us;
        // An unchanged TOASTed column arrives as Debezium's placeholder.
        let toast = self.profile == Profile::AllTypes && self.rng.random_range(0..100) < 30;
        if toast {
            row.bio = old.bio.clone();
        }
        if self.is_transactions() && self.rng.random_range(0..100) < self.invalid_percent {
            self.invalid_events += 1;
            if self.rng.random_bool(0.5) {
                row.cents = -row.cents;
            } else {
                row.status = "chargeback";
                self.lenient.insert(id, row.clone());
            }
            return self.record("u", &row, false);
        }
        let record = self.record("u", &row, toast);
        self.lenient.insert(id, row.clone());
        self.rows.insert(id, row);
        record
    }

    fn delete(&mut self) -> Vec<Record> {
        let idx = self.rng.random_range(0..self.live.len());
        let id = self.live.swap_remove(idx);
        self.dead.push(id);
        self.lenient.remove(&id);
        let Some(row) = self.rows.remove(&id) else {
            return vec![];
        };
        let delete = self.record("d", &row, false);
        vec![
            delete,
            Record {
                key: self.key_json(id),
                value: None,
            },
        ]
    }

    fn random_row(&mut self, id: i64, now: i64) -> Row {
        let r = &mut self.rng;
        let tag_count = r.random_range(0..4);
        Row {
            id,
            user_id: r.random_range(1..5_000),
            cents: r.random_range(100..10_000_000),
            status: STATUSES[r.random_range(0..STATUSES.len())],
            created_us: now,
            updated_us: now,
            ratio_unscaled: r.random_range(-10_000_000_000i64..10_000_000_000),
            ratio_scale: r.random_range(0..12),
            day: r.random_range(-1000..30_000),
            // Odd microseconds: DuckDB prints all six fraction digits.
            at_time_us: r.random_range(0..86_400_000_000i64) | 1,
            ts_ms: r.random_range(-2_000_000_000_000i64..4_000_000_000_000),
            zone_minutes: [0, 120, -300, 330][r.random_range(0..4)],
            doc_n: r.random_range(-1000..1000),
            uid: r.random(),
            raw: (0..r.random_range(0..12)).map(|_| r.random()).collect(),
            tags: (0..tag_count)
                .map(|i| format!("t{}", r.random_range(0..50) + i))
                .collect(),
            nums: (0..r.random_range(0..5))
                .map(|_| r.random_range(-1000..1000))
                .collect(),
            flag: r.random(),
            score_quarters: r.random_range(-4000..4000),
            note: NOTES[r.random_range(0..NOTES.len())],
            bio: format!("bio {} {}", id, r.random_range(0..1_000_000)),
            region: (self.profile == Profile::AllTypes && self.emitted > self.region_after)
                .then(|| format!("region-{}", id % 7)),
        }
    }

    fn key_json(&self, id: i64) -> String {
        let field = if self.is_transactions() {
            "transaction_id"
        } else {
            "id"
        };
        json!({
            "schema": {"type": "struct", "optional": false,
                       "name": format!("dbserver1.public.{}.Key", self.table()),
                       "fields": [{"type": "int64", "optional": false, "field": field}]},
            "payload": {field: id}
        })
        .to_string()
    }

    fn record(&mut self, op: &str, row: &Row, toast: bool) -> Record {
        let image = self.image(row, toast);
        let (before, after) = match op {
            "d" => (self.key_only_image(row), serde_json::Value::Null),
            _ => (serde_json::Value::Null, image),
        };
        let ts_ms = self.now_us() / 1000;
        let payload = json!({
            "before": before,
            "after": after,
            "source": {
                "version": "3.0.0.Final", "connector": "postgresql", "name": "dbserver1",
                "ts_ms": ts_ms, "ts_us": ts_ms * 1000, "ts_ns": ts_ms * 1_000_000,
                "snapshot": if op == "r" { "true" } else { "false" },
                "db": "shop",
                "sequence": format!("[\"{}\",\"{}\"]", self.lsn - 8, self.lsn),
                "schema": "public", "table": self.table(),
                "txId": 700 + self.emitted as i64, "lsn": self.lsn, "xmin": null
            },
            "op": op,
            "ts_ms": ts_ms + 3,
            "transaction": null
        });
        // As Kafka Connect's JsonConverter writes it: compact, the schema first.
        let value = format!(
            r#"{{"schema":{},"payload":{payload}}}"#,
            self.rendered_schema()
        );
        Record {
            key: self.key_json(row.id),
            value: Some(value),
        }
    }

    fn rendered_schema(&mut self) -> &str {
        let with_region = self.with_region();
        if self.schema_text.as_ref().map(|(r, _)| *r) != Some(with_region) {
            self.schema_text = Some((with_region, self.envelope_schema().to_string()));
        }
        self.schema_text.as_ref().map_or("", |(_, text)| text)
    }

    fn key_only_image(&self, row: &Row) -> serde_json::Value {
        match self.profile {
            Profile::Transactions | Profile::TransactionsWide => json!({"transaction_id": row.id}),
            Profile::AllTypes => json!({"id": row.id}),
        }
    }

    fn image(&self, row: &Row, toast: bool) -> serde_json::Value {
        match self.profile {
            Profile::Transactions => transactions_image(row),
            Profile::TransactionsWide => {
                let mut v = transactions_image(row);
                if let Some(obj) = v.as_object_mut() {
                    obj.insert("fee".into(), json!(decimal_base64(fee_units(row))));
                    let currency = CURRENCIES[row.user_id as usize % CURRENCIES.len()];
                    obj.insert("currency".into(), json!(currency));
                    obj.insert("memo".into(), json!(row.note));
                    obj.insert("attributes".into(), json!(attributes(row)));
                }
                v
            }
            Profile::AllTypes => {
                let mut v = json!({
                    "id": row.id,
                    "amount": decimal_base64(i128::from(row.cents) * -37),
                    "ratio": {"scale": row.ratio_scale, "value": decimal_base64(i128::from(row.ratio_unscaled))},
                    "day": row.day,
                    "at_time": row.at_time_us,
                    "ts_milli": row.ts_ms,
                    "ts_micro": row.updated_us,
                    "zts": zoned(row.updated_us, row.zone_minutes),
                    "doc": format!("{{\"n\":{},\"s\":\"x\"}}", row.doc_n),
                    "uid": uuid_text(row.uid),
                    "raw": BASE64.encode(&row.raw),
                    "tags": row.tags,
                    "nums": row.nums,
                    "flag": row.flag,
                    "score": row.score_quarters as f64 / 4.0,
                    "Note": row.note,
                    "bio": if toast { crate::debezium::TOAST_PLACEHOLDER.to_string() } else { row.bio.clone() },
                });
                if let (Some(region), Some(obj)) = (&row.region, v.as_object_mut()) {
                    obj.insert("region".into(), json!(region));
                }
                v
            }
        }
    }

    fn envelope_schema(&self) -> serde_json::Value {
        let field = |t: &str, name: &str, f: &str| {
            if name.is_empty() {
                json!({"type": t, "optional": true, "field": f})
            } else {
                json!({"type": t, "optional": true, "name": name, "version": 1, "field": f})
            }
        };
        let transactions = || {
            vec![
                json!({"type": "int64", "optional": false, "field": "transaction_id"}),
                field("int32", "", "user_id"),
                json!({"type": "bytes", "optional": true, "name": "org.apache.kafka.connect.data.Decimal",
                       "version": 1, "parameters": {"scale": "2", "connect.decimal.precision": "10"}, "field": "amount"}),
                field("string", "", "status"),
                field("int64", "io.debezium.time.MicroTimestamp", "created_at"),
                field("string", "io.debezium.time.ZonedTimestamp", "updated_at"),
            ]
        };
        let mut columns = match self.profile {
            Profile::Transactions => transactions(),
            Profile::TransactionsWide => {
                let mut columns = transactions();
                columns.extend([
                    json!({"type": "bytes", "optional": true, "name": "org.apache.kafka.connect.data.Decimal",
                           "version": 1, "parameters": {"scale": "4", "connect.decimal.precision": "12"}, "field": "fee"}),
                    field("string", "", "currency"),
                    field("string", "", "memo"),
                    field("string", "io.debezium.data.Json", "attributes"),
                ]);
                columns
            }
            Profile::AllTypes => vec![
                json!({"type": "int64", "optional": false, "field": "id"}),
                json!({"type": "bytes", "optional": true, "name": "org.apache.kafka.connect.data.Decimal",
                       "version": 1, "parameters": {"scale": "4", "connect.decimal.precision": "20"}, "field": "amount"}),
                json!({"type": "struct", "optional": true, "name": "io.debezium.data.VariableScaleDecimal",
                       "version": 1, "field": "ratio",
                       "fields": [{"type": "int32", "optional": false, "field": "scale"},
                                  {"type": "bytes", "optional": false, "field": "value"}]}),
                field("int32", "io.debezium.time.Date", "day"),
                field("int64", "io.debezium.time.MicroTime", "at_time"),
                field("int64", "io.debezium.time.Timestamp", "ts_milli"),
                field("int64", "io.debezium.time.MicroTimestamp", "ts_micro"),
                field("string", "io.debezium.time.ZonedTimestamp", "zts"),
                field("string", "io.debezium.data.Json", "doc"),
                field("string", "io.debezium.data.Uuid", "uid"),
                field("bytes", "", "raw"),
                json!({"type": "array", "optional": true, "field": "tags", "items": {"type": "string", "optional": true}}),
                json!({"type": "array", "optional": true, "field": "nums", "items": {"type": "int32", "optional": true}}),
                field("boolean", "", "flag"),
                field("double", "", "score"),
                field("string", "", "Note"),
                field("string", "", "bio"),
            ],
        };
        if self.with_region() {
            columns.push(field("string", "", "region"));
        }
        let row = |name: &str| {
            json!({"type": "struct", "optional": true, "fields": columns,
                   "name": format!("dbserver1.public.{}.Value", self.table()), "field": name})
        };
        json!({
            "type": "struct", "optional": false,
            "name": format!("dbserver1.public.{}.Envelope", self.table()),
            "version": 2,
            "fields": [
                row("before"), row("after"),
                {"type": "struct", "optional": false, "name": "io.debezium.connector.postgresql.Source", "field": "source",
                 "fields": [
                    {"type": "string", "optional": false, "field": "version"},
                    {"type": "string", "optional": false, "field": "connector"},
                    {"type": "string", "optional": false, "field": "name"},
                    {"type": "int64", "optional": false, "field": "ts_ms"},
                    {"type": "string", "optional": true, "name": "io.debezium.data.Enum", "version": 1,
                     "parameters": {"allowed": "true,first,first_in_data_collection,last_in_data_collection,last,false,incremental"},
                     "default": "false", "field": "snapshot"},
                    {"type": "string", "optional": false, "field": "db"},
                    {"type": "string", "optional": true, "field": "sequence"},
                    {"type": "int64", "optional": true, "field": "ts_us"},
                    {"type": "int64", "optional": true, "field": "ts_ns"},
                    {"type": "string", "optional": false, "field": "schema"},
                    {"type": "string", "optional": false, "field": "table"},
                    {"type": "int64", "optional": true, "field": "txId"},
                    {"type": "int64", "optional": true, "field": "lsn"},
                    {"type": "int64", "optional": true, "field": "xmin"}]},
                {"type": "string", "optional": false, "field": "op"},
                {"type": "int64", "optional": true, "field": "ts_ms"},
                {"type": "struct", "optional": true, "name": "event.block", "version": 1, "field": "transaction",
                 "fields": [{"type": "string", "optional": false, "field": "id"},
                            {"type": "int64", "optional": false, "field": "total_order"},
                            {"type": "int64", "optional": false, "field": "data_collection_order"}]}
            ]
        })
    }

    /// A query whose rows, all rendered as text, must equal [`Workload::expected`].
    pub fn check_query(&self) -> &'static str {
        match self.profile {
            Profile::Transactions => {
                "SELECT CAST(transaction_id AS VARCHAR), CAST(user_id AS VARCHAR), CAST(amount AS VARCHAR), \
                 status, CAST(epoch_us(created_at) AS VARCHAR), CAST(epoch_us(updated_at) AS VARCHAR) \
                 FROM transactions ORDER BY transaction_id"
            }
            Profile::TransactionsWide => {
                "SELECT CAST(transaction_id AS VARCHAR), CAST(user_id AS VARCHAR), CAST(amount AS VARCHAR), \
                 status, CAST(epoch_us(created_at) AS VARCHAR), CAST(epoch_us(updated_at) AS VARCHAR), \
                 CAST(fee AS VARCHAR), currency, memo, CAST(attributes AS VARCHAR) \
                 FROM transactions ORDER BY transaction_id"
            }
            Profile::AllTypes => {
                "SELECT CAST(id AS VARCHAR), CAST(amount AS VARCHAR), ratio, CAST(day AS VARCHAR), \
                 CAST(at_time AS VARCHAR), CAST(epoch_us(ts_milli) AS VARCHAR), CAST(epoch_us(ts_micro) AS VARCHAR), \
                 CAST(epoch_us(zts) AS VARCHAR), CAST(doc AS VARCHAR), CAST(uid AS VARCHAR), hex(raw), \
                 array_to_string(tags, '|'), array_to_string(nums, ','), CAST(flag AS VARCHAR), \
                 CAST(CAST(score * 4 AS BIGINT) AS VARCHAR), note, bio, region \
                 FROM all_types ORDER BY id"
            }
        }
    }

    /// The final table as text, ordered by key, column by column as in `check_query`.
    pub fn expected(&self) -> Vec<Vec<Option<String>>> {
        self.as_text(&self.rows)
    }

    /// The final table had the `chargeback` updates been accepted too (each change
    /// applied in source order, as the never-move-backwards guard ensures).
    pub fn expected_lenient(&self) -> Vec<Vec<Option<String>>> {
        self.as_text(&self.lenient)
    }

    fn as_text(&self, rows: &BTreeMap<i64, Row>) -> Vec<Vec<Option<String>>> {
        rows.values()
            .map(|r| match self.profile {
                Profile::Transactions => vec![
                    Some(r.id.to_string()),
                    Some(r.user_id.to_string()),
                    Some(scaled(i128::from(r.cents), 2)),
                    Some(r.status.to_string()),
                    Some(r.created_us.to_string()),
                    Some(r.updated_us.to_string()),
                ],
                Profile::TransactionsWide => vec![
                    Some(r.id.to_string()),
                    Some(r.user_id.to_string()),
                    Some(scaled(i128::from(r.cents), 2)),
                    Some(r.status.to_string()),
                    Some(r.created_us.to_string()),
                    Some(r.updated_us.to_string()),
                    Some(scaled(fee_units(r), 4)),
                    Some(CURRENCIES[r.user_id as usize % CURRENCIES.len()].to_string()),
                    Some(r.note.to_string()),
                    Some(attributes(r)),
                ],
                Profile::AllTypes => vec![
                    Some(r.id.to_string()),
                    Some(scaled(i128::from(r.cents) * -37, 4)),
                    Some(scaled(i128::from(r.ratio_unscaled), r.ratio_scale)),
                    Some(crate::change::format_date(r.day)),
                    Some(crate::change::format_time(r.at_time_us)),
                    Some((r.ts_ms * 1000).to_string()),
                    Some(r.updated_us.to_string()),
                    Some(r.updated_us.to_string()),
                    Some(format!("{{\"n\":{},\"s\":\"x\"}}", r.doc_n)),
                    Some(uuid_text(r.uid)),
                    Some(r.raw.iter().map(|b| format!("{b:02X}")).collect()),
                    Some(r.tags.join("|")),
                    Some(
                        r.nums
                            .iter()
                            .map(|n| n.to_string())
                            .collect::<Vec<_>>()
                            .join(","),
                    ),
                    Some(r.flag.to_string()),
                    Some(r.score_quarters.to_string()),
                    Some(r.note.to_string()),
                    Some(r.bio.clone()),
                    r.region.clone(),
                ],
            })
            .collect()
    }
}

/// The wide profile's fee: 2.9% of the amount plus 0.30, at scale 4.
fn fee_units(row: &Row) -> i128 {
    i128::from(row.cents) * 29 + 3000
}

fn attributes(row: &Row) -> String {
    format!(
        "{{\"channel\":\"{}\",\"risk\":{},\"tags\":[\"t{}\"]}}",
        ["web", "pos", "api"][(row.id % 3) as usize],
        row.doc_n,
        row.user_id % 10
    )
}

fn decimal_base64(unscaled: i128) -> String {
    BASE64.encode(BigInt::from(unscaled).to_signed_bytes_be())
}

fn scaled(unscaled: i128, scale: u32) -> String {
    let negative = unscaled < 0;
    let digits = unscaled.unsigned_abs().to_string();
    let s = scale as usize;
    let body = if s == 0 {
        digits
    } else if digits.len() > s {
        format!(
            "{}.{}",
            &digits[..digits.len() - s],
            &digits[digits.len() - s..]
        )
    } else {
        format!("0.{}{}", "0".repeat(s - digits.len()), digits)
    };
    if negative {
        format!("-{body}")
    } else {
        body
    }
}

/// An ISO-8601 timestamp of the instant `micros`, written in a zone `offset_minutes`
/// east of UTC, as the PostgreSQL connector writes TIMESTAMPTZ.
fn zoned(micros: i64, offset_minutes: i32) -> String {
    let offset = chrono::FixedOffset::east_opt(offset_minutes * 60);
    let instant = chrono::DateTime::from_timestamp_micros(micros);
    match (offset, instant) {
        (Some(offset), Some(t)) => t
            .with_timezone(&offset)
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        _ => String::new(),
    }
}

fn uuid_text(u: u128) -> String {
    let h = format!("{u:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// The six columns of the `transactions` profile, which the wide profile extends.
fn transactions_image(row: &Row) -> serde_json::Value {
    json!({
        "transaction_id": row.id,
        "user_id": row.user_id,
        "amount": decimal_base64(i128::from(row.cents)),
        "status": row.status,
        "created_at": row.created_us,
        "updated_at": zoned(row.updated_us, 0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scaled_formats_like_a_decimal() {
        assert_eq!(scaled(12345, 2), "123.45");
        assert_eq!(scaled(-5, 3), "-0.005");
        assert_eq!(scaled(7, 0), "7");
    }

    #[test]
    fn stream_decodes_and_deletes_carry_tombstones() {
        for profile in [Profile::AllTypes, Profile::TransactionsWide] {
            decodes_with_tombstones(Workload::new(profile, 50, 400, 7));
        }
    }

    fn decodes_with_tombstones(mut w: Workload) {
        let mut decoder = crate::debezium::Decoder::new();
        let mut tombstones = 0;
        for i in 0..400 {
            for r in w.next_records() {
                let pos = crate::change::KafkaPosition {
                    topic: "t".into(),
                    partition: 0,
                    offset: i,
                };
                let c = decoder
                    .decode(
                        Some(r.key.as_bytes()),
                        r.value.as_deref().map(str::as_bytes),
                        pos,
                    )
                    .unwrap_or_else(|e| panic!("{e}: {:?}", r.value));
                if r.value.is_none() {
                    tombstones += 1;
                    assert!(crate::debezium::is_skip(&c.event));
                }
            }
        }
        assert!(tombstones > 0);
        assert!(!w.expected().is_empty());
    }
}

/// Producing a generated stream into Kafka.
pub mod produce {
    use rdkafka::config::ClientConfig;
    use rdkafka::error::{KafkaError, RDKafkaErrorCode};
    use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
    use rdkafka::ClientContext;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::{Duration, Instant};

    use super::Workload;

    #[derive(Default)]
    struct Deliveries {
        failed: AtomicU64,
    }

    impl ClientContext for Deliveries {}

    impl ProducerContext for Deliveries {
        type DeliveryOpaque = ();
        fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
            if let Err((e, _)) = result {
                self.failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "delivery failed");
            }
        }
    }

    /// Sends `events` changes (deletes add a tombstone) at up to `rate` events/s
    /// (0 = as fast as possible). Returns the number of records written.
    pub fn produce(
        brokers: &str,
        topic: &str,
        workload: &mut Workload,
        events: u64,
        rate: u64,
        mut progress: impl FnMut(u64),
    ) -> Result<u64, KafkaError> {
        // At a fixed rate each change carries the time it was made, so at most a tenth of a
        // second's worth waits in the producer: when the broker falls behind, the rate
        // drops instead of the stamps ageing in a local queue.
        let queued = if rate > 0 {
            (rate / 10).max(1000)
        } else {
            500_000
        };
        let producer: BaseProducer<Deliveries> = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("linger.ms", "20")
            .set("batch.num.messages", "10000")
            .set("queue.buffering.max.messages", queued.to_string())
            .set("enable.idempotence", "false")
            .create_with_context(Deliveries::default())?;
        let started = Instant::now();
        let mut records = 0u64;
        for i in 0..events {
            if rate > 0 {
                let due = Duration::from_secs_f64(i as f64 / rate as f64);
                let elapsed = started.elapsed();
                if due > elapsed {
                    std::thread::sleep(due - elapsed);
                }
            }
            for record in workload.next_records() {
                let mut out = BaseRecord::to(topic).key(record.key.as_str());
                if let Some(v) = &record.value {
                    out = out.payload(v.as_str());
                }
                let mut pending = out;
                loop {
                    match producer.send(pending) {
                        Ok(()) => break,
                        Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                            producer.poll(Duration::from_millis(50));
                            pending = back;
                        }
                        Err((e, _)) => return Err(e),
                    }
                }
                records += 1;
            }
            if i % 1000 == 0 {
                producer.poll(Duration::ZERO);
                progress(i);
            }
        }
        producer.flush(Duration::from_secs(120))?;
        progress(events);
        let failed = producer.context().failed.load(Ordering::Relaxed);
        if failed > 0 {
            return Err(KafkaError::MessageProduction(RDKafkaErrorCode::Fail));
        }
        Ok(records)
    }
}
