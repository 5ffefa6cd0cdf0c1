#!/usr/bin/env bash
# The main job on the embedded default: Debezium-shaped changes for a `transactions`
# table flow from a local broker through floe into a DuckDB file.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/tansu.sh

DIR=.demo
rm -rf "$DIR" && mkdir -p "$DIR"
PORT=$(free_port)
BROKERS=127.0.0.1:$PORT
TOPIC=dbserver1.public.transactions
EVENTS=${DEMO_EVENTS:-60000}
RATE=${DEMO_RATE:-6000}

cleanup() {
    [ -n "${GEN_PID:-}" ] && kill "$GEN_PID" 2>/dev/null || true
    [ -n "${FLOE_PID:-}" ] && kill "$FLOE_PID" 2>/dev/null || true
    [ -n "${TAIL_PID:-}" ] && kill "$TAIL_PID" 2>/dev/null || true
    stop_tansu
}
trap cleanup EXIT

echo "==> starting the tansu broker on $BROKERS"
start_tansu "$DIR/broker" "$PORT" "sqlite://tansu.db"

echo "==> generating $EVENTS changes at $RATE/s into $TOPIC"
"$FLOE" generate --brokers "$BROKERS" --topic "$TOPIC" --events "$EVENTS" --keys 5000 --rate "$RATE" \
    --invalid-percent 2 \
    >"$DIR/generate.log" 2>&1 &
GEN_PID=$!
sleep 1

# The transactions table goes through the example validator; what it rejects lands in
# the dead-letter topic.
cat >"$DIR/floe.toml" <<TOML
[kafka]
brokers = "$BROKERS"
topics = ["$TOPIC"]
group = "demo"

[sink.duckdb]
path = "$DIR/floe.duckdb"

[runtime]
stats_interval_ms = 2000

[dlq]
topic = "demo.dlq"

[wasm]
cache_dir = "$DIR/wasm-cache"

[[routes]]
table = "transactions"
validator = "$FLOE_GUESTS/transactions-validator.wasm"
TOML

echo "==> running floe into $DIR/floe.duckdb, transactions validated by transactions-validator.wasm"
"$FLOE" run --config "$DIR/floe.toml" >"$DIR/floe.log" 2>&1 &
FLOE_PID=$!
# Live progress: the stats line and anything that goes wrong.
tail -n +1 -f "$DIR/floe.log" | grep --line-buffered -E "floe::stats|ERROR|WARN" &
TAIL_PID=$!

wait "$GEN_PID"; GEN_PID=
echo "==> generator done; waiting for floe to catch up"
"$FLOE" progress --brokers "$BROKERS" --group demo --topic "$TOPIC" --wait 120
echo "==> stopping floe (SIGTERM: flush, commit, exit)"
kill -TERM "$FLOE_PID"
if wait "$FLOE_PID"; then echo "floe exited cleanly"; else echo "floe exited with $?" >&2; fi
FLOE_PID=
kill "$TAIL_PID" 2>/dev/null || true

echo "==> rows by status"
"$FLOE" query --duckdb "$DIR/floe.duckdb" \
    "SELECT status, count(*) AS row_count, sum(amount) AS total_amount FROM transactions GROUP BY status ORDER BY status"
echo "==> a few rows"
"$FLOE" query --duckdb "$DIR/floe.duckdb" \
    "SELECT transaction_id, user_id, amount, status, created_at, updated_at, _floe_op, _floe_lsn FROM transactions ORDER BY transaction_id LIMIT 5"
echo "==> dead letters in demo.dlq (what a replay with today's validator would do)"
"$FLOE" dlq replay --config "$DIR/floe.toml" --dry-run
echo "==> done: $DIR/floe.duckdb"
