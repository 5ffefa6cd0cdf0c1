#!/usr/bin/env bash
# Line coverage of the whole test suite, end-to-end tests included. Only floe's own crates
# are instrumented (a rustc wrapper applied to workspace members), so the cached build of
# every dependency is reused; each floe process a test starts writes its own profile.
# Prints the server crate's line coverage last.
set -euo pipefail
: "${CARGO_TARGET_DIR:?set CARGO_TARGET_DIR (make coverage does)}"
host=$(rustc -vV | sed -n 's/^host: //p')
tools="$(rustc --print sysroot)/lib/rustlib/$host/bin"
[ -x "$tools/llvm-cov" ] || rustup component add llvm-tools-preview
out="$CARGO_TARGET_DIR/coverage"
rm -rf "$out"
mkdir -p "$out"

export RUSTC_WORKSPACE_WRAPPER="$PWD/scripts/coverage-rustc.sh"
export LLVM_PROFILE_FILE="$out/%p-%m.profraw"
cargo build --workspace --bins --tests
status=0
cargo test --workspace --no-fail-fast -- --test-threads=1 || status=$?

"$tools/llvm-profdata" merge -sparse "$out"/*.profraw -o "$out/floe.profdata"
rm -f "$out"/*.profraw
# Every instrumented executable: the floe binary and the test binaries.
mapfile -t objects < <(
    cargo test --workspace --no-run --message-format=json 2>/dev/null |
        python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable"):
        print(m["executable"])'
    echo "$CARGO_TARGET_DIR/debug/floe"
)
args=()
for o in "${objects[@]:1}"; do args+=(-object "$o"); done
"$tools/llvm-cov" report --summary-only --instr-profile "$out/floe.profdata" \
    --ignore-filename-regex '(/\.cargo/registry/|^/rustc/|/tests/|/guest-examples/)' \
    "${objects[0]}" "${args[@]}" | tee "$out/summary.txt"
lines=$(awk '/^TOTAL/ { print $10 }' "$out/summary.txt")
echo "line coverage of the server crate: $lines (report: $out/summary.txt)"
[ "$status" -eq 0 ] || echo "note: some tests failed (exit $status); the figure covers what ran"
# The next plain build rebuilds floe's crates without instrumentation.
