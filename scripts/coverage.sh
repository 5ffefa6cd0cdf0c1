#!/usr/bin/env bash
# Line coverage of the whole test suite, end-to-end tests included: every binary is built
# instrumented (the floe processes the tests start write their own profiles), then one
# report. Prints the server crate's line coverage last.
set -euo pipefail
eval "$(cargo llvm-cov show-env --export-prefix)"
cargo llvm-cov clean --workspace
cargo build --workspace --bins --tests
cargo test --workspace -- --test-threads=1
# The server crate only: the test harness and the guests are not what is measured.
cargo llvm-cov report --summary-only --ignore-filename-regex '(^|/)(tests|guest-examples)/' \
    | tee "$CARGO_TARGET_DIR/coverage-summary.txt"
total=$(awk '/^TOTAL/ { print $10 }' "$CARGO_TARGET_DIR/coverage-summary.txt")
echo "line coverage of the server crate: ${total}"
