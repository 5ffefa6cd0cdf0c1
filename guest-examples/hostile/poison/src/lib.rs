//! A validator that misbehaves on one record: the change whose after-image holds the
//! text `poison`. Which misbehaviour is chosen by a cargo feature.

wit_bindgen::generate!({ world: "validator", path: "../../../wit" });

use floe::transform::types::{Change, Value, Verdict};

struct Poison;

fn is_poisoned(change: &Change) -> bool {
    change
        .after
        .iter()
        .flatten()
        .any(|v| matches!(v, Value::Text(t) if t == "poison"))
}

// Each build compiles one branch; the others leave `verdicts` unused.
#[allow(unreachable_code, unused_variables)]
fn misbehave(verdicts: &mut Vec<Verdict>) {
    #[cfg(feature = "infinite-loop")]
    {
        let mut n = 0u64;
        loop {
            n = std::hint::black_box(n.wrapping_add(1));
        }
    }
    #[cfg(feature = "memory-bomb")]
    {
        let mut hoard: Vec<Vec<u8>> = Vec::new();
        loop {
            hoard.push(std::hint::black_box(vec![1u8; 1 << 20]));
        }
    }
    #[cfg(feature = "trap")]
    panic!("poisoned record reached the validator");
    #[cfg(feature = "wrong-count")]
    verdicts.push(Verdict::Accept);
}

impl Guest for Poison {
    fn validate(batch: TableBatch) -> BatchResult {
        let mut verdicts = Vec::with_capacity(batch.changes.len());
        let mut poisoned = false;
        for change in &batch.changes {
            poisoned |= is_poisoned(change);
            verdicts.push(Verdict::Accept);
        }
        if poisoned {
            misbehave(&mut verdicts);
        }
        BatchResult {
            mapped_columns: None,
            verdicts,
        }
    }
}

export!(Poison);
