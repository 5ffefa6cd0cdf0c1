//! The rules a payments team writes for its `transactions` table: ids positive, status
//! known, amount non-negative. Deletes carry only the key, so only the key is checked.

wit_bindgen::generate!({ world: "validator", path: "../../wit" });

use floe::transform::host::{log, Level};
use floe::transform::types::{Column, Op, Rejection, Value, Verdict};

#[cfg(not(feature = "chargebacks"))]
const STATUSES: &[&str] = &["pending", "authorized", "settled", "refunded", "failed"];
#[cfg(feature = "chargebacks")]
const STATUSES: &[&str] = &[
    "pending",
    "authorized",
    "settled",
    "refunded",
    "failed",
    "chargeback",
];

struct TransactionsValidator;

/// Positions of the checked columns; looked up once per batch.
struct Layout {
    id: Option<usize>,
    user_id: Option<usize>,
    amount: Option<usize>,
    status: Option<usize>,
}

impl Layout {
    fn of(columns: &[Column]) -> Self {
        let at = |name: &str| columns.iter().position(|c| c.name == name);
        Self {
            id: at("transaction_id"),
            user_id: at("user_id"),
            amount: at("amount"),
            status: at("status"),
        }
    }
}

fn reject(code: &str, message: String) -> Verdict {
    Verdict::Reject(Rejection {
        code: code.into(),
        message,
    })
}

fn positive(row: &[Value], at: Option<usize>, column: &str) -> Result<(), Verdict> {
    match at.and_then(|i| row.get(i)) {
        Some(Value::Int(n)) if *n > 0 => Ok(()),
        Some(Value::Int(n)) => Err(reject(
            &format!("{column}_not_positive"),
            format!("{column} must be positive, got {n}"),
        )),
        _ => Err(reject(
            &format!("{column}_missing"),
            format!("{column} is missing or not an integer"),
        )),
    }
}

fn check_row(layout: &Layout, row: &[Value]) -> Result<(), Verdict> {
    positive(row, layout.id, "transaction_id")?;
    positive(row, layout.user_id, "user_id")?;
    match layout.status.and_then(|i| row.get(i)) {
        Some(Value::Text(s)) if STATUSES.contains(&s.as_str()) => {}
        Some(Value::Text(s)) => {
            return Err(reject(
                "status_unknown",
                format!("status {s:?} is not one of {STATUSES:?}"),
            ))
        }
        _ => return Err(reject("status_missing", "status is missing".into())),
    }
    match layout.amount.and_then(|i| row.get(i)) {
        Some(Value::Decimal(d))
            if d.starts_with('-') && d.chars().any(|c| matches!(c, '1'..='9')) =>
        {
            Err(reject(
                "amount_negative",
                format!("amount must not be negative, got {d}"),
            ))
        }
        Some(Value::Decimal(_)) => Ok(()),
        _ => Err(reject(
            "amount_missing",
            "amount is missing or not a decimal".into(),
        )),
    }
}

impl Guest for TransactionsValidator {
    fn validate(batch: TableBatch) -> BatchResult {
        install_panic_hook();
        let layout = Layout::of(&batch.columns);
        let verdicts = batch
            .changes
            .iter()
            .map(|change| {
                let checked = match (change.op, &change.before, &change.after) {
                    (Op::Delete, Some(before), _) => positive(before, layout.id, "transaction_id"),
                    (_, _, Some(after)) => check_row(&layout, after),
                    _ => Err(reject("image_missing", "the change carries no row".into())),
                };
                checked.err().unwrap_or(Verdict::Accept)
            })
            .collect();
        BatchResult {
            mapped_columns: None,
            verdicts,
        }
    }
}

/// A panic's message would otherwise be lost in the trap; floe puts this log line in
/// its own log and in the dead-letter record's reason.
fn install_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            log(Level::Error, &format!("panic: {info}"))
        }));
    });
}

export!(TransactionsValidator);
