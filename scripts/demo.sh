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
    stop_tansu
}
trap cleanup EXIT

echo "==> starting the tansu broker on $BROKERS"
start_tansu "$DIR/broker" "$PORT" "sqlite://tansu.db"

echo "==> generating $EVENTS changes at $RATE/s into $TOPIC"
"$FLOE" generate --brokers "$BROKERS" --topic "$TOPIC" --events "$EVENTS" --keys 5000 --rate "$RATE" \
    >"$DIR/generate.log" 2>&1 &
GEN_PID=$!
sleep 1

echo "==> running floe into $DIR/floe.duckdb (stats every 2 s)"
FLOE_KAFKA_BROKERS=$BROKERS FLOE_KAFKA_TOPICS=$TOPIC FLOE_KAFKA_GROUP=demo \
FLOE_DUCKDB_PATH=$DIR/floe.duckdb FLOE_STATS_INTERVAL_MS=2000 \
    "$FLOE" run --config floe.example.toml 2>&1 | tee "$DIR/floe.log" | grep --line-buffered -E "floe::stats|ERROR|WARN" &
FLOE_PID=$(pgrep -n -f "$FLOE run") || true

wait "$GEN_PID"; GEN_PID=
echo "==> generator done; waiting for floe to catch up"
"$FLOE" progress --brokers "$BROKERS" --group demo --topic "$TOPIC" --wait 120
echo "==> stopping floe (SIGTERM: flush, commit, exit)"
kill -TERM "$FLOE_PID"; wait 2>/dev/null || true; FLOE_PID=

echo "==> rows by status"
"$FLOE" query --duckdb "$DIR/floe.duckdb" \
    "SELECT status, CAST(count(*) AS VARCHAR) AS row_count, CAST(sum(amount) AS VARCHAR) AS total_amount FROM transactions GROUP BY status ORDER BY status"
echo "==> a few rows"
"$FLOE" query --duckdb "$DIR/floe.duckdb" \
    "SELECT CAST(transaction_id AS VARCHAR) AS transaction_id, CAST(user_id AS VARCHAR) AS user_id, CAST(amount AS VARCHAR) AS amount, status, CAST(created_at AS VARCHAR) AS created_at, CAST(updated_at AS VARCHAR) AS updated_at, _floe_op FROM transactions ORDER BY transaction_id LIMIT 5"
echo "==> done: $DIR/floe.duckdb"
