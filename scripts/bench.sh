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

# Runs floe over the whole topic; prints "events_per_s rss_kib cpu_s".
run_floe() { # name, extra config
    local name=$1
    { cat "$DIR/floe.toml"; printf '%s\n' "$2"; } >"$DIR/$name.toml"
    local start end pid rss cpu messages
    start=$(date +%s.%N)
    FLOE_KAFKA_BROKERS=$BROKERS FLOE_KAFKA_TOPICS=$TOPIC FLOE_KAFKA_GROUP=$name FLOE_KAFKA_ASSIGNMENT=all \
    FLOE_DUCKDB_PATH=$DIR/$name.duckdb FLOE_STATS_INTERVAL_MS=5000 FLOE_WASM_CACHE_DIR=$DIR/wasm-cache \
        "$FLOE" run --config "$DIR/$name.toml" >"$DIR/$name.log" 2>&1 &
    pid=$!
    "$FLOE" progress --brokers "$BROKERS" --group "$name" --topic "$TOPIC" --wait 900 >/dev/null
    end=$(date +%s.%N)
    rss=$(awk '/VmHWM/ {print $2}' /proc/$pid/status)
    cpu=$(awk '{print ($14 + $15) / 100}' /proc/$pid/stat)
    kill -TERM $pid; wait $pid || true
    # floe's own count: the memory storage reports high watermarks slightly behind the end.
    messages=$(grep -o 'consumed=[0-9]*' "$DIR/$name.log" | tail -1 | cut -d= -f2)
    python3 -c "print($messages / ($end - $start), $rss, $cpu, $messages)"
    tail -n 1 "$DIR/$name.log" >&2
}

echo "==> (b) floe pass-through into DuckDB"
PASS=$(run_floe bench "")
echo "$PASS"
echo "==> (c) floe + transactions-validator into DuckDB"
VALIDATED=$(run_floe bench_validated "[[routes]]
table = \"transactions\"
validator = \"$FLOE_GUESTS/transactions-validator.wasm\"")
echo "$VALIDATED"
python3 - "$RAW" "$PASS" "$VALIDATED" <<'PY'
import json, sys
raw = json.loads(sys.argv[1])["events_per_s"]
def parse(s):
    rate, rss, cpu, messages = s.split()
    return {"events_per_s": round(float(rate)), "peak_rss_mib": round(int(rss) / 1024, 1),
            "cpu_seconds": float(cpu), "messages": int(messages)}
passthrough, validated = parse(sys.argv[2]), parse(sys.argv[3])
print(json.dumps({"raw_events_per_s": round(raw),
                  "floe_passthrough": passthrough, "floe_validated": validated,
                  "passthrough_vs_raw": round(passthrough["events_per_s"] / raw, 3),
                  "validated_vs_raw": round(validated["events_per_s"] / raw, 3),
                  "validator_cost": round(1 - validated["events_per_s"] / passthrough["events_per_s"], 3)},
                 indent=2))
PY
