//! Turning one JSON value into a typed [`Value`] according to its Debezium encoding.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use num_bigint::BigInt;
use serde_json::value::RawValue;
use std::borrow::Cow;

use crate::change::{ColumnType, Value};

use super::schema::{Unit, Wire};

/// The value Debezium writes for an unchanged TOASTed column (its default placeholder).
pub const TOAST_PLACEHOLDER: &str = "__debezium_unavailable_value";

/// Debezium's encodings of PostgreSQL `infinity` / `-infinity` timestamps, in
/// microseconds (`MicroTimestamp`) and in milliseconds (`time.precision.mode=connect`).
const PG_INFINITY_US: i64 = 9_223_372_036_825_200_000;
const PG_NEG_INFINITY_US: i64 = -9_223_372_036_832_400_000;
const PG_INFINITY_MS: i64 = PG_INFINITY_US / 1000;
const PG_NEG_INFINITY_MS: i64 = PG_NEG_INFINITY_US / 1000;
/// Debezium's `io.debezium.time.Date` for PostgreSQL's `infinity` / `-infinity` dates: the
/// server's ±2^31 days from 2000-01-01 moved to 1970 in 32-bit arithmetic, which wraps.
const PG_DATE_INFINITY: i64 = -2_147_472_692;
const PG_DATE_NEG_INFINITY: i64 = -2_147_472_691;
/// floe's in-memory infinity for dates.
pub const DATE_INFINITY: i32 = i32::MAX;
pub const DATE_NEG_INFINITY: i32 = -i32::MAX;
/// floe's in-memory infinity for timestamps, matching DuckDB's encoding.
pub const TS_INFINITY: i64 = i64::MAX;
pub const TS_NEG_INFINITY: i64 = -i64::MAX;

pub(crate) fn decode(raw: &RawValue, wire: &Wire) -> Result<Value, String> {
    let text = raw.get();
    if text == "null" {
        return Ok(Value::Null);
    }
    match wire {
        Wire::Bool => match text {
            "true" => Ok(Value::Bool(true)),
            "false" => Ok(Value::Bool(false)),
            _ => Err(format!("expected a boolean, found {}", excerpt(text))),
        },
        Wire::Int => parse_int(text).map(Value::Int),
        Wire::Float => parse_float(text).map(Value::Float),
        Wire::Text => string_or_toast(raw, |s| Value::Text(s.into_owned())),
        // JSON text inside a string: the row's check of nesting does not see into it.
        Wire::Json => {
            let value = string_or_toast(raw, |s| Value::Json(s.into_owned()))?;
            if let Value::Json(json) = &value {
                check_depth(json)?;
            }
            Ok(value)
        }
        Wire::Uuid => string_or_toast(raw, |s| Value::Uuid(s.into_owned())),
        Wire::Bytes => {
            let s = string(raw)?;
            let bytes = BASE64
                .decode(s.as_bytes())
                .map_err(|e| format!("invalid base64 in a bytes value: {e}"))?;
            if bytes == TOAST_PLACEHOLDER.as_bytes() {
                Ok(Value::Unavailable)
            } else {
                Ok(Value::Bytes(bytes))
            }
        }
        Wire::Decimal { scale } => decimal(raw, *scale).map(Value::Decimal),
        Wire::VariableDecimal => variable_decimal(raw).map(Value::Decimal),
        Wire::Date => {
            let days = parse_int(text)?;
            match days {
                PG_DATE_INFINITY => Ok(Value::Date(DATE_INFINITY)),
                PG_DATE_NEG_INFINITY => Ok(Value::Date(DATE_NEG_INFINITY)),
                _ => i32::try_from(days)
                    .map(Value::Date)
                    .map_err(|_| format!("date {days} days from the epoch is out of range")),
            }
        }
        Wire::Time(unit) => {
            let micros = to_micros(parse_int(text)?, *unit)?;
            // PostgreSQL's times run from 00:00:00 to 24:00:00 inclusive.
            if (0..=crate::change::MICROS_PER_DAY).contains(&micros) {
                Ok(Value::Time(micros))
            } else {
                Err(format!("time {micros} µs is outside 00:00:00..24:00:00"))
            }
        }
        Wire::Timestamp(unit) => {
            let n = parse_int(text)?;
            let micros = match (unit, n) {
                (Unit::Millis, PG_INFINITY_MS) | (Unit::Micros, PG_INFINITY_US) => TS_INFINITY,
                (Unit::Millis, PG_NEG_INFINITY_MS) | (Unit::Micros, PG_NEG_INFINITY_US) => {
                    TS_NEG_INFINITY
                }
                _ => to_micros(n, *unit)?,
            };
            check_timestamp_range(micros).map(Value::Timestamp)
        }
        Wire::ZonedTimestamp => {
            let s = string(raw)?;
            if s == TOAST_PLACEHOLDER {
                return Ok(Value::Unavailable);
            }
            zoned_timestamp(&s).map(Value::TimestampTz)
        }
        Wire::StructAsJson => Ok(Value::Json(text.to_string())),
        Wire::List(item) => {
            let items: Vec<&RawValue> = serde_json::from_str(text)
                .map_err(|_| format!("expected an array, found {}", excerpt(text)))?;
            let values = items
                .iter()
                .map(|raw| decode(raw, item))
                .collect::<Result<Vec<_>, _>>()?;
            if is_toast_list(&values) {
                return Ok(Value::Unavailable);
            }
            Ok(Value::List(values))
        }
    }
}

/// Whether a decoded array is Debezium's stand-in for an unchanged TOASTed array: a
/// one-element list of the placeholder (text arrays), or the placeholder's bytes as the
/// elements (numeric arrays: an unchanged `int[]` arrives as `[95,95,100,…]`).
fn is_toast_list(values: &[Value]) -> bool {
    match values {
        [Value::Unavailable] => true,
        [Value::Text(s)] => s == TOAST_PLACEHOLDER,
        _ => {
            values.len() == TOAST_PLACEHOLDER.len()
                && values
                    .iter()
                    .zip(TOAST_PLACEHOLDER.bytes())
                    .all(|(v, b)| match v {
                        Value::Int(i) => *i == i64::from(b),
                        Value::Float(f) => *f == f64::from(b),
                        Value::Decimal(d) => d.parse::<u8>() == Ok(b),
                        _ => false,
                    })
        }
    }
}

/// Whether schemaless JSON text is an unchanged TOASTed array's placeholder (see
/// [`is_toast_list`]); the converter writes it without spaces.
fn is_toast_json_array(text: &str) -> bool {
    let Some(inner) = text.strip_prefix('[').and_then(|t| t.strip_suffix(']')) else {
        return false;
    };
    if inner.len() > 4 * TOAST_PLACEHOLDER.len() {
        return false;
    }
    if inner.strip_prefix('"').and_then(|t| t.strip_suffix('"')) == Some(TOAST_PLACEHOLDER) {
        return true;
    }
    let mut parts = inner.split(',');
    TOAST_PLACEHOLDER
        .bytes()
        .all(|b| parts.next().and_then(|p| p.trim().parse::<f64>().ok()) == Some(f64::from(b)))
        && parts.next().is_none()
}

/// Values of a payload that carries no schema: loaded as their JSON types.
pub(crate) fn infer(raw: &RawValue) -> (Option<ColumnType>, Value) {
    let text = raw.get();
    match text.as_bytes().first() {
        Some(b'n') => (None, Value::Null),
        Some(b't') => (Some(ColumnType::Boolean), Value::Bool(true)),
        Some(b'f') => (Some(ColumnType::Boolean), Value::Bool(false)),
        Some(b'"') => match string(raw) {
            Ok(s) if s == TOAST_PLACEHOLDER => (Some(ColumnType::Text), Value::Unavailable),
            Ok(s) => (Some(ColumnType::Text), Value::Text(s.into_owned())),
            Err(_) => (Some(ColumnType::Json), Value::Json(text.to_string())),
        },
        Some(b'[') if is_toast_json_array(text) => (Some(ColumnType::Json), Value::Unavailable),
        Some(b'{') | Some(b'[') => (Some(ColumnType::Json), Value::Json(text.to_string())),
        _ => match text.parse::<i64>() {
            Ok(n) => (Some(ColumnType::Int64), Value::Int(n)),
            Err(_) => match text.parse::<f64>() {
                Ok(f) => (Some(ColumnType::Float64), Value::Float(f)),
                Err(_) => (Some(ColumnType::Json), Value::Json(text.to_string())),
            },
        },
    }
}

fn string(raw: &RawValue) -> Result<Cow<'_, str>, String> {
    serde_json::from_str::<Cow<str>>(raw.get())
        .map_err(|_| format!("expected a string, found {}", excerpt(raw.get())))
}

fn string_or_toast(raw: &RawValue, make: impl FnOnce(Cow<str>) -> Value) -> Result<Value, String> {
    let s = string(raw)?;
    if s == TOAST_PLACEHOLDER {
        Ok(Value::Unavailable)
    } else {
        Ok(make(s))
    }
}

fn parse_int(text: &str) -> Result<i64, String> {
    // Some converters quote large numbers; accept both forms.
    let unquoted = text.trim_matches('"');
    unquoted
        .parse::<i64>()
        .map_err(|_| format!("expected an integer, found {}", excerpt(text)))
}

fn parse_float(text: &str) -> Result<f64, String> {
    match text {
        "\"NaN\"" | "\"NAN\"" => Ok(f64::NAN),
        "\"Infinity\"" => Ok(f64::INFINITY),
        "\"-Infinity\"" => Ok(f64::NEG_INFINITY),
        _ => text
            .parse::<f64>()
            .map_err(|_| format!("expected a number, found {}", excerpt(text))),
    }
}

fn to_micros(n: i64, unit: Unit) -> Result<i64, String> {
    match unit {
        Unit::Millis => n
            .checked_mul(1000)
            .ok_or_else(|| format!("{n} ms is out of range")),
        Unit::Micros => Ok(n),
        Unit::Nanos => Ok(n.div_euclid(1000)),
    }
}

fn check_timestamp_range(micros: i64) -> Result<i64, String> {
    if micros == TS_INFINITY || micros == TS_NEG_INFINITY {
        return Ok(micros);
    }
    // PostgreSQL's BC dates and its rounding into year 10000 are data: every instant
    // floe can also print is kept (DuckDB's range is wider still). A target that cannot
    // hold it refuses that row alone.
    match chrono::DateTime::from_timestamp_micros(micros) {
        Some(_) => Ok(micros),
        None => Err(format!(
            "timestamp {micros} µs from the epoch is outside years -262143..262142"
        )),
    }
}

fn zoned_timestamp(s: &str) -> Result<i64, String> {
    match s {
        "infinity" => return Ok(TS_INFINITY),
        "-infinity" => return Ok(TS_NEG_INFINITY),
        _ => {}
    }
    let parsed = chrono::DateTime::parse_from_rfc3339(s).or_else(|e| {
        // Java's ISO formatter writes years outside 0000..9999 with a sign ("+10000-…",
        // "-4712-…"), which RFC 3339 does not allow.
        let offset_form = s.strip_suffix('Z').map(|t| format!("{t}+00:00"));
        chrono::DateTime::parse_from_str(
            offset_form.as_deref().unwrap_or(s),
            "%Y-%m-%dT%H:%M:%S%.f%:z",
        )
        .map_err(|_| format!("invalid ZonedTimestamp {}: {e}", excerpt(s)))
    })?;
    check_timestamp_range(parsed.timestamp_micros())
}

/// The largest decimal scale floe renders (PostgreSQL's NUMERIC allows 1000): a larger
/// one would render as megabytes of zeros.
pub(crate) const MAX_DECIMAL_SCALE: u32 = 1000;

pub(crate) fn check_scale(scale: u32) -> Result<(), String> {
    if scale > MAX_DECIMAL_SCALE {
        return Err(format!(
            "decimal scale {scale} is out of range (at most {MAX_DECIMAL_SCALE})"
        ));
    }
    Ok(())
}

/// The deepest nesting of a JSON value floe loads: deeper values are refused before a
/// target's JSON parser (or a reader's) recurses through them.
pub(crate) const MAX_JSON_DEPTH: usize = 128;

/// Fails when the JSON text `text` nests arrays and objects deeper than [`MAX_JSON_DEPTH`].
pub(crate) fn check_depth(text: &str) -> Result<(), String> {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for b in text.bytes() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_JSON_DEPTH {
                    return Err(format!("JSON nested deeper than {MAX_JSON_DEPTH} levels"));
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// Base64 big-endian two's-complement unscaled value → exact decimal text.
/// A converter with `decimal.format=NUMERIC` sends a JSON number instead; its text is kept.
fn decimal(raw: &RawValue, scale: u32) -> Result<String, String> {
    let text = raw.get();
    if !text.starts_with('"') {
        return plain_decimal(text);
    }
    let s = string(raw)?;
    let bytes = BASE64
        .decode(s.as_bytes())
        .map_err(|e| format!("invalid base64 in a Decimal: {e}"))?;
    Ok(scaled(&BigInt::from_signed_bytes_be(&bytes), scale))
}

fn variable_decimal(raw: &RawValue) -> Result<String, String> {
    #[derive(serde::Deserialize)]
    struct Vsd<'a> {
        scale: i64,
        #[serde(borrow)]
        value: Cow<'a, str>,
    }
    let v: Vsd = serde_json::from_str(raw.get()).map_err(|_| {
        format!(
            "expected a VariableScaleDecimal {{scale, value}}, found {}",
            excerpt(raw.get())
        )
    })?;
    let scale = u32::try_from(v.scale).map_err(|_| {
        format!(
            "VariableScaleDecimal scale {} is negative or too large",
            v.scale
        )
    })?;
    check_scale(scale)?;
    let bytes = BASE64
        .decode(v.value.as_bytes())
        .map_err(|e| format!("invalid base64 in a VariableScaleDecimal: {e}"))?;
    Ok(scaled(&BigInt::from_signed_bytes_be(&bytes), scale))
}

/// Validates a decimal written as plain text and returns it unchanged (never via f64).
fn plain_decimal(text: &str) -> Result<String, String> {
    let t = text.trim_matches('"');
    let digits = t.strip_prefix('-').unwrap_or(t);
    let mut parts = digits.splitn(2, '.');
    let int_ok = parts
        .next()
        .is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    let frac_ok = parts
        .next()
        .is_none_or(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    if int_ok && frac_ok {
        Ok(t.to_string())
    } else {
        Err(format!("invalid decimal {}", excerpt(text)))
    }
}

/// Places the decimal point `scale` digits from the right of an unscaled integer.
pub(crate) fn scaled(unscaled: &BigInt, scale: u32) -> String {
    let negative = unscaled.sign() == num_bigint::Sign::Minus;
    let digits = unscaled.magnitude().to_string();
    let scale = scale as usize;
    let mut out = String::with_capacity(digits.len() + 3);
    if negative {
        out.push('-');
    }
    if scale == 0 {
        out.push_str(&digits);
    } else if digits.len() > scale {
        let (int, frac) = digits.split_at(digits.len() - scale);
        out.push_str(int);
        out.push('.');
        out.push_str(frac);
    } else {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', scale - digits.len()));
        out.push_str(&digits);
    }
    out
}

fn excerpt(text: &str) -> String {
    const MAX: usize = 60;
    if text.len() <= MAX {
        return text.to_string();
    }
    let mut end = MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}
