#!/usr/bin/env bash
# `make bench`: in one run, on one broker and the same topics, on this machine:
#   (a) the raw baseline: rdkafka consume + serde_json parse, nothing else;
#   (b) floe pass-through → DuckDB; (c) floe + transactions-validator → DuckDB;
#   (d) floe → the Snowflake emulator (a slice of the topic; the emulator is the bottleneck);
#   (e) latency produce → visible at fixed rates into a table that already holds 10M rows;
#   (f) RSS with 100 tenants × 1 validator; a 2 MB component from upload to live, and a
#       restart that finds it compiled.
# Results: $BENCH_OUT (JSON) and docs/benchmarks.md (Markdown, with machine and commit).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/tansu.sh

EVENTS=${BENCH_EVENTS:-1000000}
SNOWFLAKE_EVENTS=${BENCH_SNOWFLAKE_EVENTS:-20000}
PRELOAD_ROWS=${BENCH_PRELOAD_ROWS:-10000000}
LATENCY_SECONDS=${BENCH_LATENCY_SECONDS:-20}
LATENCY_RATES=${BENCH_LATENCY_RATES:-1000 10000 50000}
TENANTS=${BENCH_TENANTS:-100}
OUT=${BENCH_OUT:-docs/benchmarks.json}
BENCH=${FLOE_BENCH:?path of floe-bench}
DIR=$(mktemp -d /tmp/floe-bench.XXXX)
RESULTS=$DIR/results
mkdir -p "$RESULTS"
PORT=$(free_port)
BROKERS=127.0.0.1:$PORT
TOPIC=bench.public.transactions
FLOE_PID=
FAKESNOW_PID=
cleanup() {
    [ -n "$FLOE_PID" ] && kill "$FLOE_PID" 2>/dev/null
    [ -n "$FAKESNOW_PID" ] && kill "$FAKESNOW_PID" 2>/dev/null
    stop_tansu
    rm -rf "$DIR"
}
trap cleanup EXIT

start_tansu "$DIR/broker" "$PORT" "memory://tansu/"
echo "==> producing $EVENTS schema-enveloped events (10 columns, 100k keys, 70% updates, 10% deletes)"
"$FLOE" generate --brokers "$BROKERS" --topic "$TOPIC" --profile transactions-wide --events "$EVENTS" \
    --keys 100000 --partitions 2 >/dev/null 2>&1

# tansu holds every fetch for the full fetch.wait.max.ms even when data is ready (6x slower
# at librdkafka's 500 ms default); every reader gets the same, shorter wait.
FETCH_WAIT_MS=10
BASE_TOML="[kafka.properties]
\"fetch.wait.max.ms\" = \"$FETCH_WAIT_MS\""
VALIDATOR_ROUTE="[[routes]]
table = \"transactions\"
validator = \"$FLOE_GUESTS/transactions-validator.wasm\""

echo "==> (a) raw consume + serde_json parse"
"$BENCH" raw-consume --brokers "$BROKERS" --topic "$TOPIC" --fetch-wait-ms "$FETCH_WAIT_MS" | tee "$RESULTS/raw.json"

# start_floe NAME TOPIC EXTRA_TOML [ENV...]: floe in the background (FLOE_PID), admin API on
# $ADMIN_PORT, waits until it is ready.
start_floe() {
    local name=$1 topic=$2 extra=$3
    shift 3
    printf '%s\n%s\n' "$BASE_TOML" "$extra" >"$DIR/$name.toml"
    ADMIN_PORT=$(free_port)
    env FLOE_KAFKA_BROKERS="$BROKERS" FLOE_KAFKA_TOPICS="$topic" FLOE_KAFKA_GROUP="$name" \
        FLOE_KAFKA_ASSIGNMENT=all FLOE_DUCKDB_PATH="$DIR/$name.duckdb" FLOE_STATS_INTERVAL_MS=5000 \
        FLOE_WASM_CACHE_DIR="$DIR/wasm-cache" FLOE_ADMIN_DIR="$DIR/$name-control" FLOE_ADMIN_LISTEN="127.0.0.1:$ADMIN_PORT" \
        FLOE_OPERATOR_KEY=bench-operator-key "$@" \
        "$FLOE" run --config "$DIR/$name.toml" >>"$DIR/$name.log" 2>&1 &
    FLOE_PID=$!
    for _ in $(seq 1 600); do
        curl -sf "http://127.0.0.1:$ADMIN_PORT/healthz" >/dev/null && return 0
        kill -0 "$FLOE_PID" 2>/dev/null || break
        sleep 0.05
    done
    echo "floe did not start; see below" >&2
    tail -20 "$DIR/$name.log" >&2
    return 1
}

stop_floe() {
    kill -TERM "$FLOE_PID"
    wait "$FLOE_PID" || true
    FLOE_PID=
}

# throughput NAME TOPIC EXTRA_TOML [ENV...]: floe over the whole topic from the start;
# writes RESULTS/NAME.json with events/s, peak RSS and CPU seconds.
throughput() {
    local name=$1 topic=$2
    local start end rss cpu messages
    start=$(date +%s.%N)
    start_floe "$@"
    "$FLOE" progress --brokers "$BROKERS" --group "$name" --topic "$topic" --wait 1800 >/dev/null
    end=$(date +%s.%N)
    rss=$(awk '/VmHWM/ {print $2}' "/proc/$FLOE_PID/status")
    cpu=$(awk '{print ($14 + $15) / 100}' "/proc/$FLOE_PID/stat")
    stop_floe
    # floe's own count: the memory storage reports high watermarks slightly behind the end.
    messages=$(grep -o 'consumed=[0-9]*' "$DIR/$name.log" | tail -1 | cut -d= -f2)
    python3 - "$messages" "$start" "$end" "$rss" "$cpu" >"$RESULTS/$name.json" <<'PY'
import json, sys
messages, start, end, rss, cpu = int(sys.argv[1]), *map(float, sys.argv[2:])
print(json.dumps({"messages": messages, "seconds": round(end - start, 3),
                  "events_per_s": round(messages / (end - start)),
                  "peak_rss_mib": round(rss / 1024, 1), "cpu_seconds": cpu,
                  "cpu_seconds_per_million": round(cpu / messages * 1e6, 2)}))
PY
    cat "$RESULTS/$name.json"
}

echo "==> (b) floe pass-through into DuckDB"
throughput passthrough "$TOPIC" ""
echo "==> (c) floe + transactions-validator into DuckDB"
throughput validated "$TOPIC" "$VALIDATOR_ROUTE"

echo "==> (d) floe into the Snowflake emulator ($SNOWFLAKE_EVENTS events)"
SF_TOPIC=sf.public.transactions
"$FLOE" generate --brokers "$BROKERS" --topic "$SF_TOPIC" --profile transactions-wide \
    --events "$SNOWFLAKE_EVENTS" --keys 10000 --partitions 2 >/dev/null 2>&1
SF=$DIR/fakesnow
mkdir -p "$SF/db"
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=floe bench CA" \
    -keyout "$SF/ca.key" -out "$SF/ca.pem" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj "/CN=floebench.snowflakecomputing.com" \
    -keyout "$SF/server.key" -out "$SF/server.csr" 2>/dev/null
printf 'subjectAltName=DNS:floebench.snowflakecomputing.com,DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >"$SF/ext"
openssl x509 -req -in "$SF/server.csr" -CA "$SF/ca.pem" -CAkey "$SF/ca.key" -CAcreateserial \
    -days 2 -extfile "$SF/ext" -out "$SF/server.pem" 2>/dev/null
SF_PORT=$(free_port)
"$FLOE_FAKESNOW_PYTHON" scripts/fakesnow_server.py --port "$SF_PORT" --certfile "$SF/server.pem" \
    --keyfile "$SF/server.key" --db-path "$SF/db" >/dev/null 2>"$SF/fakesnow.log" &
FAKESNOW_PID=$!
for _ in $(seq 1 600); do
    python3 -c "import socket,sys; socket.create_connection(('127.0.0.1', int(sys.argv[1])), 1)" "$SF_PORT" 2>/dev/null && break
    sleep 0.1
done
throughput snowflake "$SF_TOPIC" "" FLOE_SINK=snowflake FLOE_SNOWFLAKE_ACCOUNT=floebench \
    FLOE_SNOWFLAKE_USER=floe FLOE_SNOWFLAKE_DATABASE=FLOE FLOE_SNOWFLAKE_SCHEMA=PUBLIC \
    FLOE_SNOWFLAKE_PASSWORD=bench FLOE_SNOWFLAKE_CA_FILE="$SF/ca.pem" \
    FLOE_SNOWFLAKE_RESOLVE="127.0.0.1:$SF_PORT"
kill "$FAKESNOW_PID"; wait "$FAKESNOW_PID" 2>/dev/null || true
FAKESNOW_PID=

echo "==> (e) latency into a table of $PRELOAD_ROWS rows"
LAT_TOPIC=lat.public.transactions
# One change creates the table as floe creates it; then it is filled in DuckDB directly.
"$FLOE" generate --brokers "$BROKERS" --topic "$LAT_TOPIC" --profile transactions-wide --events 1 \
    --keys 1 --partitions 2 >/dev/null 2>&1
start_floe latency "$LAT_TOPIC" ""
"$FLOE" progress --brokers "$BROKERS" --group latency --topic "$LAT_TOPIC" --wait 120 >/dev/null
stop_floe
"$BENCH" sql --duckdb "$DIR/latency.duckdb" "DELETE FROM transactions;
INSERT INTO transactions BY NAME
SELECT i AS transaction_id, (i % 5000 + 1)::INTEGER AS user_id, (i % 100000) / 100.0 AS amount,
       'settled' AS status, TIMESTAMP '2025-01-01' AS created_at,
       TIMESTAMPTZ '2025-01-01 00:00:00+00' AS updated_at, (i % 1000) / 10.0 AS fee,
       'EUR' AS currency, 'preloaded row ' || i AS memo,
       '{\"channel\":\"web\",\"risk\":0}'::JSON AS attributes,
       'r' AS _floe_op, 0 AS _floe_lsn, TIMESTAMPTZ '2025-01-01 00:00:00+00' AS _floe_source_ts,
       now() AS _floe_loaded_at, 0 AS _floe_partition, -1 AS _floe_offset
FROM range(1, $PRELOAD_ROWS + 1) r(i);
CHECKPOINT;"
for rate in $LATENCY_RATES; do
    events=$((rate * LATENCY_SECONDS))
    start_floe latency "$LAT_TOPIC" ""
    started=$(date +%s.%N)
    "$FLOE" generate --brokers "$BROKERS" --topic "$LAT_TOPIC" --profile transactions-wide \
        --wall-clock --rate "$rate" --events "$events" --keys 100000 --seed "$rate" >/dev/null 2>&1
    produced=$(date +%s.%N)
    "$FLOE" progress --brokers "$BROKERS" --group latency --topic "$LAT_TOPIC" --wait 600 >/dev/null
    # floe's own histogram runs to the load's commit, i.e. to the row being visible.
    curl -sf -H "authorization: Bearer bench-operator-key" "http://127.0.0.1:$ADMIN_PORT/metrics" \
        >"$DIR/metrics-$rate.txt"
    stop_floe
    # The load transaction's start (`_floe_loaded_at`) against the producer's stamp.
    "$FLOE" query --duckdb "$DIR/latency.duckdb" "SELECT count(*),
        quantile_cont(ms, 0.5), quantile_cont(ms, 0.99), max(ms),
        (SELECT count(*) FROM transactions)
        FROM (SELECT (epoch_us(_floe_loaded_at) - epoch_us(updated_at)) / 1000.0 AS ms
              FROM transactions WHERE updated_at >= to_timestamp($started))" >"$DIR/latency-$rate.txt"
    python3 - "$rate" "$events" "$started" "$produced" "$DIR/latency-$rate.txt" "$DIR/metrics-$rate.txt" \
        >"$RESULTS/latency-$rate.json" <<'PY'
import json, re, sys
rate, events, started, produced, path, metrics = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), sys.argv[5], sys.argv[6]
cells = [l for l in open(path).read().splitlines() if l.strip()][-1].replace("|", " ").replace(",", " ").split()
rows, p50, p99, worst, table = int(cells[0]), float(cells[1]), float(cells[2]), float(cells[3]), int(cells[4])
# Quantiles of floe_end_to_end_seconds, interpolated within buckets as Prometheus does.
buckets = sorted((float("inf") if le == "+Inf" else float(le), float(n)) for le, n in
                 re.findall(r'^floe_end_to_end_seconds_bucket\{le="([^"]+)"\} (\S+)', open(metrics).read(), re.M))
def quantile(q):
    total, lower, below = buckets[-1][1], 0.0, 0.0
    for upper, count in buckets:
        if count >= q * total:
            if upper == float("inf"):
                return lower * 1000
            return (lower + (upper - lower) * (q * total - below) / max(count - below, 1)) * 1000
        lower, below = upper, count
print(json.dumps({"target_events_per_s": rate, "events": events,
                  "produced_events_per_s": round(events / (produced - started)),
                  "rows_measured": rows, "table_rows": table,
                  "p50_ms": round(p50, 1), "p99_ms": round(p99, 1), "max_ms": round(worst, 1),
                  "visible_p50_ms": round(quantile(0.5), 1), "visible_p99_ms": round(quantile(0.99), 1)}))
PY
    cat "$RESULTS/latency-$rate.json"
done

echo "==> (f) $TENANTS tenants × 1 validator; a 2 MB component from upload to live"
# Each tenant's component differs by a custom section, so each is compiled on its own.
pad_component() { # in out tag total_bytes
    python3 - "$@" <<'PY'
import sys
src, out, tag, total = sys.argv[1], sys.argv[2], sys.argv[3].encode(), int(sys.argv[4])
def leb(n):
    b = bytearray()
    while True:
        byte, n = n & 0x7f, n >> 7
        b.append(byte | (0x80 if n else 0))
        if not n: return bytes(b)
data = open(src, "rb").read()
pad = max(0, total - len(data) - len(tag) - 16)
body = leb(len(tag)) + tag + b"\0" * pad
open(out, "wb").write(data + b"\x00" + leb(len(body)) + body)
PY
}
API=(--key bench-operator-key)
start_floe tenants "$TOPIC" ""
export FLOE_API="http://127.0.0.1:$ADMIN_PORT"
for i in $(seq 1 "$TENANTS"); do
    pad_component "$FLOE_GUESTS/transactions-validator.wasm" "$DIR/v$i.wasm" "floe-bench-$i" 0
    "$FLOE" tenant create "t$i" "${API[@]}" >/dev/null
    "$FLOE" validator upload "t$i" check "$DIR/v$i.wasm" "${API[@]}" >/dev/null
    "$FLOE" validator activate "t$i" check 1 "${API[@]}" >/dev/null
    table=table_$i
    [ "$i" = 1 ] && table=transactions
    "$FLOE" route set "t$i" "$table" --validator check "${API[@]}" >/dev/null
done
"$FLOE" progress --brokers "$BROKERS" --group tenants --topic "$TOPIC" --wait 1800 >/dev/null
tenants_rss=$(awk '/VmRSS/ {print $2}' "/proc/$FLOE_PID/status")
tenants_hwm=$(awk '/VmHWM/ {print $2}' "/proc/$FLOE_PID/status")

pad_component "$FLOE_GUESTS/transactions-validator.wasm" "$DIR/big.wasm" "floe-bench-2mb" 2097152
big_bytes=$(stat -c %s "$DIR/big.wasm")
live_ms() { # version: ms from upload to the first change judged by that version
    local t0 version=$1
    t0=$(date +%s%N)
    "$FLOE" validator upload t1 check "$DIR/big.wasm" "${API[@]}" >/dev/null
    "$FLOE" validator activate t1 check "$version" "${API[@]}" >/dev/null
    until curl -sf -H "authorization: Bearer bench-operator-key" "$FLOE_API/v1/stats" |
        python3 -c "import json,sys; t=json.load(sys.stdin)['tables'].get('transactions', {}); sys.exit(0 if t.get('validator', '').endswith('@v$version') else 1)"; do
        [ $(($(date +%s%N) - t0)) -lt 60000000000 ] || { echo "version $version never went live" >&2; return 1; }
        sleep 0.01
    done
    echo $((($(date +%s%N) - t0) / 1000000))
}
# Live means the first change judged by the new version, so changes keep arriving.
"$FLOE" generate --brokers "$BROKERS" --topic "$TOPIC" --profile transactions-wide --rate 2000 \
    --events 1000000 --keys 100000 --seed 7 >/dev/null 2>&1 &
TRAFFIC_PID=$!
upload_ms=$(live_ms 2)
kill "$TRAFFIC_PID"; wait "$TRAFFIC_PID" 2>/dev/null || true
stop_floe
compiled_before=$(grep -c "compiled validator" "$DIR/tenants.log" || true)
restart_t0=$(date +%s%N)
start_floe tenants "$TOPIC" ""
for _ in $(seq 1 3000); do curl -sf "http://127.0.0.1:$ADMIN_PORT/readyz" >/dev/null && break; sleep 0.02; done
restart_ready_ms=$((($(date +%s%N) - restart_t0) / 1000000))
compiled_on_restart=$(($(grep -c "compiled validator" "$DIR/tenants.log" || true) - compiled_before))
stop_floe
python3 - "$TENANTS" "$tenants_rss" "$tenants_hwm" "$big_bytes" "$upload_ms" "$restart_ready_ms" \
    "$compiled_on_restart" >"$RESULTS/tenants.json" <<'PY'
import json, sys
n, rss, hwm, size, upload, restart, recompiled = map(int, sys.argv[1:])
print(json.dumps({"tenants": n, "rss_mib": round(rss / 1024, 1), "peak_rss_mib": round(hwm / 1024, 1),
                  "component_bytes": size, "upload_to_live_ms": upload, "restart_to_ready_ms": restart,
                  "compiled_on_restart": recompiled}))
PY
cat "$RESULTS/tenants.json"

python3 scripts/bench_report.py "$RESULTS" "$OUT" docs/benchmarks.md
