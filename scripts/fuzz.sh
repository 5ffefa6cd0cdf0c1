#!/usr/bin/env bash
# Fuzzes the Debezium decoder and the SQL text renderer for FUZZ_SECONDS each (cargo-fuzz,
# libFuzzer, AddressSanitizer). Only floe-cdc and sqlparser are instrumented, so a cold build
# takes about two minutes. The grown corpus stays in the cache; a failing input is written to
# fuzz/artifacts/<target>/ — commit it with the fix and `make test` replays it for good.
set -euo pipefail

cd "$(dirname "$0")/.."
CACHE=${CACHE:-$HOME/.cache/floe}
FUZZ_SECONDS=${FUZZ_SECONDS:-120}
export CARGO_TARGET_DIR=$CACHE/fuzz-target

rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
if [ ! -x "$CACHE/cargo-fuzz/bin/cargo-fuzz" ]; then
    CARGO_TARGET_DIR=$CACHE/cargo-fuzz-build cargo install cargo-fuzz --version 0.13.2 --locked \
        --root "$CACHE/cargo-fuzz"
    rm -rf "$CACHE/cargo-fuzz-build"
fi
export PATH=$CACHE/cargo-fuzz/bin:$PATH

seeds_decode=(tests/fixtures/debezium tests/fixtures/bad fuzz/seeds/decode)
seeds_sql_text=(fuzz/seeds/sql_text)

cargo +nightly fuzz build --features libfuzzer
for target in decode sql_text; do
    corpus=$CACHE/fuzz-corpus/$target
    mkdir -p "$corpus"
    seeds="seeds_${target}[@]"
    echo "== fuzzing $target for ${FUZZ_SECONDS}s (corpus $corpus)"
    if ! cargo +nightly fuzz run --features libfuzzer "$target" "$corpus" "${!seeds}" -- \
        -max_total_time="$FUZZ_SECONDS" -max_len=65536 -print_final_stats=1 2>"$corpus.log"; then
        tail -40 "$corpus.log"
        echo "fuzz: $target failed; the input is in fuzz/artifacts/$target/ (commit it with the fix)" >&2
        exit 1
    fi
    grep -E '^stat::number_of_executed_units|^Done' "$corpus.log" || true
done
