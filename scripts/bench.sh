#!/usr/bin/env bash
# `make bench`: in one run, on one topic, (a) a raw rdkafka consume + serde_json parse and
# (b) floe end to end into DuckDB. tansu's memory storage is used: both readers start at
# the beginning of the topic, the one case where it is correct.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/tansu.sh

EVENTS=${BENCH_EVENTS:-1000000}
DIR=$(mktemp -d /tmp/floe-bench.XXXX)
PORT=$(free_port)
BROKERS=127.0.0.1:$PORT
TOPIC=bench.public.transactions
trap 'stop_tansu; rm -rf "$DIR"' EXIT

start_tansu "$DIR/broker" "$PORT" "memory://tansu/"
echo "==> producing $EVENTS schema-enveloped events (100k keys, 70% updates, 10% deletes)"
"$FLOE" generate --brokers "$BROKERS" --topic "$TOPIC" --events "$EVENTS" --keys 100000 --partitions 2 >/dev/null 2>&1

# tansu holds every fetch for the full fetch.wait.max.ms even when data is ready (6x slower
# at librdkafka's 500 ms default); both readers get the same, shorter wait.
FETCH_WAIT_MS=10
cat >"$DIR/floe.toml" <<TOML
[kafka.properties]
"fetch.wait.max.ms" = "$FETCH_WAIT_MS"
TOML

echo "==> (a) raw consume + serde_json parse"
RAW=$("$FLOE" raw-consume --brokers "$BROKERS" --topic "$TOPIC" --fetch-wait-ms "$FETCH_WAIT_MS")
echo "$RAW"

echo "==> (b) floe end to end into DuckDB"
START=$(date +%s.%N)
FLOE_KAFKA_BROKERS=$BROKERS FLOE_KAFKA_TOPICS=$TOPIC FLOE_KAFKA_GROUP=bench FLOE_KAFKA_ASSIGNMENT=all \
FLOE_DUCKDB_PATH=$DIR/bench.duckdb FLOE_STATS_INTERVAL_MS=5000 "$FLOE" run --config "$DIR/floe.toml" >"$DIR/floe.log" 2>&1 &
PID=$!
"$FLOE" progress --brokers "$BROKERS" --group bench --topic "$TOPIC" --wait 900 >/dev/null
END=$(date +%s.%N)
RSS_KB=$(awk '/VmHWM/ {print $2}' /proc/$PID/status)
CPU=$(awk '{print ($14 + $15) / 100}' /proc/$PID/stat)
kill -TERM $PID; wait $PID || true
# floe's own count: the memory storage reports high watermarks slightly behind the end.
MESSAGES=$(grep -o 'consumed=[0-9]*' "$DIR/floe.log" | tail -1 | cut -d= -f2)
python3 - "$RAW" "$START" "$END" "$MESSAGES" "$RSS_KB" "$CPU" <<'PY'
import json, sys
raw = json.loads(sys.argv[1]); start, end = float(sys.argv[2]), float(sys.argv[3])
messages = int(sys.argv[4]); rss = int(sys.argv[5]); cpu = float(sys.argv[6])
floe = messages / (end - start)
print(json.dumps({"raw_events_per_s": round(raw["events_per_s"]), "floe_events_per_s": round(floe),
                  "ratio": round(floe / raw["events_per_s"], 3), "floe_peak_rss_mib": round(rss / 1024, 1),
                  "floe_cpu_seconds": cpu, "messages": messages}, indent=2))
PY
tail -n 3 "$DIR/floe.log"
