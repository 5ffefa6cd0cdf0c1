//! A mapper for tables holding personal data: masks `email` (keeping its domain), drops
//! `ssn`, and derives `email_domain`. Other columns pass unchanged.

wit_bindgen::generate!({ world: "validator", path: "../../wit" });

use floe::transform::types::{Column, DataType, Value, Verdict};

struct PiiMask;

fn mask(email: &str) -> (String, Option<String>) {
    match email.split_once('@') {
        Some((local, domain)) => {
            let first: String = local.chars().take(1).collect();
            (format!("{first}***@{domain}"), Some(domain.to_lowercase()))
        }
        None => ("***".into(), None),
    }
}

impl Guest for PiiMask {
    fn validate(batch: TableBatch) -> BatchResult {
        let email = batch.columns.iter().position(|c| c.name == "email");
        let keep: Vec<usize> = (0..batch.columns.len())
            .filter(|&i| batch.columns[i].name != "ssn")
            .collect();
        let mut columns: Vec<Column> = keep.iter().map(|&i| batch.columns[i].clone()).collect();
        columns.push(Column {
            name: "email_domain".into(),
            ty: DataType::Text,
            is_list: false,
        });
        let verdicts = batch
            .changes
            .into_iter()
            .map(|change| {
                let row = change.after.or(change.before).unwrap_or_default();
                let mut domain = Value::Null;
                let mut mapped: Vec<Value> = keep
                    .iter()
                    .map(|&i| {
                        let value = row.get(i).cloned().unwrap_or(Value::Null);
                        match value {
                            Value::Text(address) if Some(i) == email => {
                                let (masked, d) = mask(&address);
                                domain = d.map_or(Value::Null, Value::Text);
                                Value::Text(masked)
                            }
                            other => other,
                        }
                    })
                    .collect();
                mapped.push(domain);
                Verdict::Mapped(mapped)
            })
            .collect();
        BatchResult {
            mapped_columns: Some(columns),
            verdicts,
        }
    }
}

export!(PiiMask);
