#!/bin/sh
# Changes to the shop while it runs: inserts, updates and deletes of orders, at about
# RATE statements a second (default 20), for DURATION seconds (default 60).
#   docker compose -f docker/compose.yaml exec postgres load.sh
set -eu
RATE=${RATE:-20}
SECONDS_TO_RUN=${DURATION:-60}
total=$((RATE * SECONDS_TO_RUN))
i=0
while [ "$i" -lt "$total" ]; do
    case $((i % 10)) in
        0|1|2|3)
            sql="INSERT INTO orders (customer_id, amount, details)
                 VALUES (1 + floor(random() * 20)::int, round((random() * 500)::numeric, 2),
                         jsonb_build_object('items', 1 + floor(random() * 5)::int, 'channel', 'app'))" ;;
        4|5|6|7|8)
            sql="UPDATE orders SET status = (ARRAY['paid','shipped','delivered'])[1 + floor(random() * 3)::int],
                 amount = amount + 1.25, updated_at = now()
                 WHERE id = (SELECT id FROM orders ORDER BY random() LIMIT 1)" ;;
        *)
            sql="DELETE FROM orders WHERE id = (SELECT id FROM orders ORDER BY random() LIMIT 1)" ;;
    esac
    psql -q -U postgres -d shop -c "$sql" >/dev/null
    i=$((i + 1))
    sleep "$(awk "BEGIN { print 1 / $RATE }")"
done
echo "load.sh: $total statements"
