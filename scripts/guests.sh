#!/usr/bin/env bash
# Builds the example and hostile validators as components into $GUESTS_OUT, one file per
# variant. Incremental: cargo skips what is up to date.
set -euo pipefail
cd "$(dirname "$0")/../guest-examples"
out=${GUESTS_OUT:?GUESTS_OUT names the output folder}
target=${GUESTS_TARGET_DIR:-$out/../guest-target}
rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
mkdir -p "$out"
build() { # package, features, output name
    CARGO_TARGET_DIR=$target cargo build --quiet --release --target wasm32-wasip2 \
        -p "$1" ${2:+--features "$2"}
    cp "$target/wasm32-wasip2/release/${1//-/_}.wasm" "$out/$3.wasm"
}
build transactions-validator "" transactions-validator
build transactions-validator chargebacks transactions-validator-chargebacks
build pii-mask "" pii-mask
build reads-files "" reads-files
for misbehaviour in infinite-loop memory-bomb trap wrong-count; do
    build poison "$misbehaviour" "poison-$misbehaviour"
done
echo "guests in $out: $(ls "$out" | tr '\n' ' ')"
