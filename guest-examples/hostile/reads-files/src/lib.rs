//! A validator that reads a file: it imports WASI filesystem interfaces, which floe
//! refuses to load.

wit_bindgen::generate!({ world: "validator", path: "../../../wit" });

use floe::transform::types::Verdict;

struct ReadsFiles;

impl Guest for ReadsFiles {
    fn validate(batch: TableBatch) -> BatchResult {
        let secret = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
        let verdicts = batch
            .changes
            .iter()
            .map(|_| {
                if secret.is_empty() {
                    Verdict::Accept
                } else {
                    Verdict::Skip
                }
            })
            .collect();
        BatchResult {
            mapped_columns: None,
            verdicts,
        }
    }
}

export!(ReadsFiles);
