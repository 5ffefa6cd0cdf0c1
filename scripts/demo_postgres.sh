#!/usr/bin/env bash
# The real chain on the embedded default: PostgreSQL → the Debezium PostgreSQL connector
# (embedded engine, `make debezium`) → a local broker → floe → a DuckDB file.
#
# Without DEMO_PG_PORT it starts a PostgreSQL cluster of its own with the demo shop schema
# (docker/postgres/init.sql) and makes changes while floe loads. With DEMO_PG_HOST,
# DEMO_PG_PORT, DEMO_PG_USER, DEMO_PG_PASSWORD, DEMO_PG_DB and DEMO_PG_TABLES
# (e.g. public.orders,public.customers) it streams a database of yours instead: it needs
# wal_level=logical and a user allowed to replicate; the connector makes its own slot
# (floe_demo_slot) and publication (floe_demo_pub) there, which the script drops again.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/tansu.sh

DIR=.demo-postgres
rm -rf "$DIR" && mkdir -p "$DIR"
PORT=$(free_port)
BROKERS=127.0.0.1:$PORT
PREFIX=demo
OWN_PG=
PG_HOST=${DEMO_PG_HOST:-127.0.0.1}
PG_USER=${DEMO_PG_USER:-postgres}
PG_PASSWORD=${DEMO_PG_PASSWORD:-postgres}
PG_DB=${DEMO_PG_DB:-postgres}
TABLES=${DEMO_PG_TABLES:-public.customers,public.orders}
PSQL=$(ls /usr/lib/postgresql/*/bin/psql 2>/dev/null | head -n1 || command -v psql)

cleanup() {
    [ -n "${BRIDGE_PID:-}" ] && kill "$BRIDGE_PID" 2>/dev/null && wait "$BRIDGE_PID" 2>/dev/null || true
    [ -n "${FLOE_PID:-}" ] && kill "$FLOE_PID" 2>/dev/null || true
    [ -n "${TAIL_PID:-}" ] && kill "$TAIL_PID" 2>/dev/null || true
    if [ -n "$OWN_PG" ]; then
        python3 scripts/pg_cluster.py stop "$DIR/pg"
    else
        pg "SELECT pg_drop_replication_slot('floe_demo_slot')
            WHERE EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = 'floe_demo_slot');
            DROP PUBLICATION IF EXISTS floe_demo_pub;" >/dev/null 2>&1 || true
    fi
    stop_tansu
}
trap cleanup EXIT

pg() {
    PGPASSWORD=$PG_PASSWORD "$PSQL" -X -q -v ON_ERROR_STOP=1 -h "$PG_HOST" -p "$PG_PORT" \
        -U "$PG_USER" -d "$PG_DB" -c "$1"
}

if [ -z "${DEMO_PG_PORT:-}" ]; then
    PG_PORT=$(free_port)
    OWN_PG=1
    echo "==> starting PostgreSQL (wal_level=logical) on $PG_HOST:$PG_PORT with the shop schema"
    python3 scripts/pg_cluster.py start "$DIR/pg" "$PG_PORT" >/dev/null
    pg "$(cat docker/postgres/init.sql)" >/dev/null
else
    PG_PORT=$DEMO_PG_PORT
    echo "==> streaming $TABLES from $PG_USER@$PG_HOST:$PG_PORT/$PG_DB"
fi

echo "==> starting the tansu broker on $BROKERS"
start_tansu "$DIR/broker" "$PORT" "sqlite://tansu.db"

TOPICS=""
for t in ${TABLES//,/ }; do
    TOPICS="$TOPICS\"$PREFIX.$t\", "
done
cat >"$DIR/floe.toml" <<TOML
[kafka]
brokers = "$BROKERS"
topics = [${TOPICS%, }]
group = "demo-postgres"
assignment = "all"

[sink.duckdb]
path = "$DIR/floe.duckdb"

[runtime]
stats_interval_ms = 2000

[dlq]
topic = "demo.dlq"
TOML

echo "==> starting the Debezium connector (its snapshot arrives first, op r)"
"$FLOE_DEBEZIUM_PYTHON" scripts/debezium_bridge.py --pg-host "$PG_HOST" --pg-port "$PG_PORT" \
    --pg-user "$PG_USER" --pg-password "$PG_PASSWORD" --pg-db "$PG_DB" --tables "$TABLES" \
    --topic-prefix "$PREFIX" --slot floe_demo_slot --publication floe_demo_pub \
    --offsets "$DIR/connector" --bootstrap "$BROKERS" --status "$DIR/connector.count" \
    >"$DIR/connector.out" 2>"$DIR/connector.log" &
BRIDGE_PID=$!
until grep -q "bridge ready" "$DIR/connector.out" 2>/dev/null; do
    kill -0 "$BRIDGE_PID" 2>/dev/null || { cat "$DIR/connector.log" >&2; exit 1; }
    sleep 0.5
done
# The bridge creates each topic with its first record; floe needs them to exist.
for t in ${TABLES//,/ }; do
    until "$FLOE" progress --brokers "$BROKERS" --group demo-postgres --topic "$PREFIX.$t" >/dev/null 2>&1; do
        kill -0 "$BRIDGE_PID" 2>/dev/null || { cat "$DIR/connector.log" >&2; exit 1; }
        sleep 0.5
    done
done

echo "==> running floe into $DIR/floe.duckdb"
"$FLOE" run --config "$DIR/floe.toml" >"$DIR/floe.log" 2>&1 &
FLOE_PID=$!
tail -n +1 -f "$DIR/floe.log" | grep --line-buffered -E "floe::stats|ERROR|WARN" &
TAIL_PID=$!

if [ -n "$OWN_PG" ]; then
    echo "==> changing the shop: new orders, updates, a delete, a price widened to 4 decimals"
    for round in 1 2 3; do
        pg "INSERT INTO orders (customer_id, amount, status, details)
            SELECT 1 + (i % 20), round((random() * 500)::numeric, 2), 'pending',
                   jsonb_build_object('round', $round)
            FROM generate_series(1, 50) AS i;
            UPDATE orders SET status = 'shipped', updated_at = now() WHERE id % 7 = $round;
            DELETE FROM orders WHERE id = 10 * $round;" >/dev/null
        sleep 1
    done
    pg "ALTER TABLE orders ALTER COLUMN amount TYPE numeric(14, 4);
        UPDATE orders SET amount = amount + 0.0001 WHERE id = 1;" >/dev/null
    pg "INSERT INTO customers (email, name) VALUES ('last@example.com', 'Last');" >/dev/null
    # The connector forwards in commit order: once this last customer (the 21st record of
    # the customers topic) is in the broker, every change before it is too.
    until "$FLOE" progress --brokers "$BROKERS" --group demo-postgres --topic "$PREFIX.public.customers" 2>/dev/null \
        | grep -q " high=21 "; do sleep 0.5; done
else
    echo "==> change your tables now; press Enter to stop and show what landed"
    read -r _ || true
fi

for t in ${TABLES//,/ }; do
    "$FLOE" progress --brokers "$BROKERS" --group demo-postgres --topic "$PREFIX.$t" --wait 120
done
echo "==> stopping floe (SIGTERM: flush, commit, exit)"
kill -TERM "$FLOE_PID"
if wait "$FLOE_PID"; then echo "floe exited cleanly"; else echo "floe exited with $?" >&2; fi
FLOE_PID=
kill "$TAIL_PID" 2>/dev/null || true

for t in ${TABLES//,/ }; do
    table=${t##*.}
    echo "==> $table: rows by operation, as loaded"
    "$FLOE" query --duckdb "$DIR/floe.duckdb" \
        "SELECT _floe_op, count(*) AS row_count FROM \"$table\" GROUP BY 1 ORDER BY 1"
done
if [ -n "$OWN_PG" ]; then
    echo "==> orders in PostgreSQL and in floe (count, sum of amount)"
    pg "SELECT count(*), sum(amount) FROM orders"
    "$FLOE" query --duckdb "$DIR/floe.duckdb" "SELECT count(*), sum(amount) FROM orders"
fi
echo "==> done: $DIR/floe.duckdb"
