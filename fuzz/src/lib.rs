//! What the fuzz targets check, shared with `tests/regressions.rs`, which replays the seed
//! corpus and every input a fuzzer has failed on as part of `make test`.

use floe_cdc::change::{Change, Event, KafkaPosition};
use floe_cdc::debezium::Decoder;
use floe_cdc::sql_text::{quote_ident, snowflake_string_literal};
use sqlparser::ast::{Expr, Ident, SelectItem, SetExpr, Statement, Value};
use sqlparser::dialect::{Dialect, DuckDbDialect, SnowflakeDialect};
use sqlparser::parser::Parser;

/// Byte that splits a fuzz input in two. It never occurs in UTF-8, so neither half loses a
/// character to it and the seeds stay readable.
pub const SEPARATOR: u8 = 0xff;

/// The two halves of an input, split at the first [`SEPARATOR`]; the first is absent when
/// there is none. For the decoder they are the message key and value.
pub fn split_input(input: &[u8]) -> (Option<&[u8]>, &[u8]) {
    match input.iter().position(|&b| b == SEPARATOR) {
        Some(at) => (Some(&input[..at]), &input[at + 1..]),
        None => (None, input),
    }
}

/// Decodes one message and checks what the stages after the decoder rely on: no panic; a
/// row holds one value per column, its key columns exist, and its names can be written
/// into SQL (non-empty, unique); an error says what is wrong; and a decoder that has seen
/// the schema before (its cache) answers as a fresh one does.
pub fn check_decode(input: &[u8]) {
    let (key, value) = split_input(input);
    let position = KafkaPosition {
        topic: "fuzz".into(),
        partition: 0,
        offset: 0,
    };
    let mut decoder = Decoder::new();
    let fresh = decoder.decode(key, Some(value), position.clone());
    let cached = decoder.decode(key, Some(value), position);
    // Debug text, not `==`: a decoded NaN is a correct answer that is not equal to itself.
    assert_eq!(format!("{fresh:?}"), format!("{cached:?}"));
    match fresh {
        Ok(Change {
            event: Event::Row(row),
            ..
        }) => {
            let columns = &row.schema.columns;
            assert_eq!(row.values.len(), columns.len());
            assert!(row.schema.key.iter().all(|&k| k < columns.len()));
            assert!(!row.table.is_empty());
            let mut names: Vec<&str> = columns.iter().map(|c| c.name.as_str()).collect();
            assert!(names.iter().all(|n| !n.is_empty()));
            names.sort_unstable();
            names.dedup();
            assert_eq!(names.len(), columns.len(), "a column name repeats");
        }
        Ok(_) => {}
        Err(error) => assert!(!error.to_string().is_empty()),
    }
}

/// Renders the input's first half as an identifier and its second as a string literal and
/// parses the statement back with sqlparser: each must read back exactly as given, in
/// DuckDB and in Snowflake, so no name or value from the source can end a quote early.
/// Empty names are out of scope: the decoder refuses them (`check_decode`).
pub fn check_sql_text(input: &[u8]) {
    let (name, text) = split_input(input);
    let name = String::from_utf8_lossy(name.unwrap_or_default());
    let text = String::from_utf8_lossy(text);
    let (name, text) = (name.as_ref(), text.as_ref());
    if name.is_empty() {
        return;
    }
    let ident = quote_ident(name);
    let sql = format!("SELECT {} AS {ident}", snowflake_string_literal(text));
    let (literal, alias) = select_item(&SnowflakeDialect {}, &sql);
    assert_eq!(literal.as_deref(), Some(text), "Snowflake literal: {sql}");
    assert_eq!(alias.value, name, "Snowflake identifier: {sql}");

    let sql = format!("SELECT 1 AS {ident}");
    let (_, alias) = select_item(&DuckDbDialect {}, &sql);
    assert_eq!(alias.value, name, "DuckDB identifier: {sql}");
}

/// The single-quoted string (if the expression is one) and the alias of the only item of
/// a one-statement `SELECT <expr> AS <alias>`.
fn select_item(dialect: &dyn Dialect, sql: &str) -> (Option<String>, Ident) {
    let statements = match Parser::parse_sql(dialect, sql) {
        Ok(statements) => statements,
        Err(e) => panic!("{sql:?} does not parse: {e}"),
    };
    assert_eq!(
        statements.len(),
        1,
        "{sql:?} is {} statements",
        statements.len()
    );
    let Statement::Query(query) = &statements[0] else {
        panic!("{sql:?} is not a query");
    };
    let SetExpr::Select(select) = query.body.as_ref() else {
        panic!("{sql:?} is not a SELECT");
    };
    assert_eq!(select.projection.len(), 1, "{sql:?}");
    let SelectItem::ExprWithAlias { expr, alias } = &select.projection[0] else {
        panic!("{sql:?} has no alias");
    };
    let literal = match expr {
        Expr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) => Some(s.clone()),
            _ => None,
        },
        _ => None,
    };
    (literal, alias.clone())
}
