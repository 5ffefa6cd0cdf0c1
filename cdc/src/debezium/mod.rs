//! Decoding Debezium change events (JSON, PostgreSQL connector) into [`Change`]s.
//!
//! Accepts the Kafka Connect JsonConverter envelope (`{"schema", "payload"}`) and bare
//! payloads, for keys and values alike. Typed values follow the schema when the message
//! carries one; a bare payload is loaded as its JSON types.

mod message;
mod schema;
mod values;

#[cfg(test)]
mod tests;

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;

use crate::change::{Change, Event, KafkaPosition, TableSchema};

pub use values::{
    DATE_INFINITY, DATE_NEG_INFINITY, TOAST_PLACEHOLDER, TS_INFINITY, TS_NEG_INFINITY,
};

/// Why a message could not be decoded. Every variant is category `decode`.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DecodeError {
    #[error("value is not valid JSON: {0}")]
    Json(String),
    #[error("value is not a Debezium change event: {0}")]
    NotAnEvent(String),
    #[error("unknown op {0:?} (expected c, u, d, r, t or m)")]
    UnknownOp(String),
    #[error("invalid schema: {0}")]
    Schema(String),
    #[error("invalid key: {0}")]
    Key(String),
    #[error("column {column:?}: {reason}")]
    Column { column: String, reason: String },
    #[error("value of {bytes} bytes is larger than kafka.max_value_bytes ({limit})")]
    TooLarge { bytes: usize, limit: usize },
}

/// Values larger than this are dead-lettered rather than decoded (`kafka.max_value_bytes`).
pub const DEFAULT_MAX_VALUE_BYTES: usize = 8 << 20;

/// More columns than a PostgreSQL table can have: such a row cannot be a real change.
pub const MAX_COLUMNS: usize = 1600;

fn check_column_count(columns: usize) -> Result<(), DecodeError> {
    if columns > MAX_COLUMNS {
        return Err(DecodeError::Schema(format!(
            "{columns} columns: more than a PostgreSQL table can have ({MAX_COLUMNS})"
        )));
    }
    Ok(())
}

/// Parsed column layouts, keyed by the hash of the schema's JSON text: a schema-enveloped
/// topic repeats the same schema in every message, so it is parsed once.
pub struct Decoder {
    schemas: HashMap<u64, Parsed>,
    /// The last schema text and its hash: a topic repeats one schema, and comparing the
    /// text costs a fraction of hashing it again.
    last_schema: Option<(Box<str>, u64)>,
    max_value_bytes: usize,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::with_max_value_bytes(DEFAULT_MAX_VALUE_BYTES)
    }
}

/// A parsed envelope schema and the table schema built for one key layout.
struct Parsed {
    columns: Arc<Vec<schema::ColumnDecoder>>,
    table: Option<(Vec<String>, Arc<TableSchema>)>,
}

impl Decoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// A decoder that dead-letters values larger than `limit` bytes.
    pub fn with_max_value_bytes(limit: usize) -> Self {
        Self {
            schemas: HashMap::new(),
            last_schema: None,
            max_value_bytes: limit,
        }
    }

    /// Decodes one Kafka message. `key` and `value` are the raw message bytes.
    pub fn decode(
        &mut self,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        kafka: KafkaPosition,
    ) -> Result<Change, DecodeError> {
        let event = message::decode_event(self, key, value)?;
        Ok(Change { kafka, event })
    }

    /// The column decoders and table schema of an enveloped message, parsed once per
    /// distinct schema text and key layout.
    fn schema_for(
        &mut self,
        raw_schema: message::SchemaText<'_>,
        key_names: &[&str],
    ) -> Result<(Arc<Vec<schema::ColumnDecoder>>, Arc<TableSchema>), DecodeError> {
        use message::SchemaText;
        let id = match (&raw_schema, &self.last_schema) {
            (SchemaText::Last, Some((_, id))) => *id,
            (SchemaText::Text(raw), Some((text, id))) if **text == **raw => *id,
            (SchemaText::Text(raw), _) => {
                let mut hasher = DefaultHasher::new();
                raw.hash(&mut hasher);
                let id = hasher.finish();
                self.last_schema = Some((Box::from(*raw), id));
                id
            }
            (SchemaText::Last, None) => {
                return Err(DecodeError::Schema("no previous schema to repeat".into()))
            }
        };
        // Bounded: a topic whose schema changes on every message must not grow memory.
        if self.schemas.len() >= 1024 && !self.schemas.contains_key(&id) {
            self.schemas.clear();
        }
        let parsed = match self.schemas.entry(id) {
            Entry::Occupied(known) => known.into_mut(),
            Entry::Vacant(new) => {
                // A schema seen before that did not parse is parsed (and refused) again.
                let text = match (&raw_schema, &self.last_schema) {
                    (SchemaText::Text(raw), _) => *raw,
                    (SchemaText::Last, last) => last.as_ref().map_or("", |(text, _)| &**text),
                };
                let envelope: schema::FieldSchema = serde_json::from_str(text).map_err(|e| {
                    DecodeError::Schema(format!("schema is not a Connect schema: {e}"))
                })?;
                new.insert(Parsed {
                    columns: Arc::new(schema::row_columns(&envelope)?),
                    table: None,
                })
            }
        };
        if let Some((keys, table)) = &parsed.table {
            if keys
                .iter()
                .map(String::as_str)
                .eq(key_names.iter().copied())
            {
                return Ok((parsed.columns.clone(), table.clone()));
            }
        }
        let table = message::table_schema(
            parsed
                .columns
                .iter()
                .map(|c| (c.name.clone(), c.ty.clone()))
                .collect(),
            key_names,
        )?;
        parsed.table = Some((
            key_names.iter().map(|k| k.to_string()).collect(),
            table.clone(),
        ));
        Ok((parsed.columns.clone(), table))
    }
}

/// True when the event carries nothing to load but must still be committed.
pub fn is_skip(event: &Event) -> bool {
    matches!(event, Event::Skip(_))
}
