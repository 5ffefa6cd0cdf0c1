//! Replays every seed and every input a fuzzer has failed on (`fuzz/artifacts/<target>/`,
//! committed with the fix) through the same checks the fuzz targets run.

use std::path::{Path, PathBuf};

fn inputs(target: &str, seed_dirs: &[&str]) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let own_seeds = format!("seeds/{target}");
    let artifacts = format!("artifacts/{target}");
    let mut files = Vec::new();
    for dir in seed_dirs
        .iter()
        .copied()
        .chain([own_seeds.as_str(), artifacts.as_str()])
    {
        collect(&root.join(dir), &mut files);
    }
    files.sort();
    files
}

fn collect(dir: &Path, files: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect(&path, files);
        } else {
            files.push(path);
        }
    }
}

fn replay(target: &str, seed_dirs: &[&str], check: fn(&[u8])) {
    let files = inputs(target, seed_dirs);
    assert!(
        files.len() >= 10,
        "{target}: only {} seeds found",
        files.len()
    );
    for file in files {
        let bytes = std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let outcome = std::panic::catch_unwind(|| check(&bytes));
        assert!(outcome.is_ok(), "{target} fails on {}", file.display());
    }
}

#[test]
fn decoder_seeds_and_past_failures_pass() {
    replay(
        "decode",
        &["../tests/fixtures/debezium", "../tests/fixtures/bad"],
        floe_fuzz::check_decode,
    );
}

#[test]
fn sql_text_seeds_and_past_failures_pass() {
    replay("sql_text", &[], floe_fuzz::check_sql_text);
}
