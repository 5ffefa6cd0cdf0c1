# Sourced by the demo and bench scripts: start_tansu DIR PORT STORAGE starts a broker and
# waits for it; stop_tansu stops it.
start_tansu() {
    local dir=$1 port=$2 storage=$3
    mkdir -p "$dir"
    (cd "$dir" && exec "$TANSU" broker --listener-url "tcp://127.0.0.1:$port" \
        --advertised-listener-url "tcp://127.0.0.1:$port" --storage-engine "$storage" \
        >broker.log 2>&1) &
    TANSU_PID=$!
    for _ in $(seq 1 300); do
        if sed 's/\x1b\[[0-9;]*m//g' "$dir/broker.log" 2>/dev/null | grep -q "ready in"; then
            if [ -f "$dir/tansu.db" ]; then
                python3 -c "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.execute('create index if not exists header_topition_offset on header(topition, offset_id)'); c.commit()" "$dir/tansu.db"
            fi
            return 0
        fi
        if ! kill -0 "$TANSU_PID" 2>/dev/null; then break; fi
        sleep 0.2
    done
    echo "tansu did not start; see $dir/broker.log" >&2
    cat "$dir/broker.log" >&2
    return 1
}

stop_tansu() {
    [ -n "${TANSU_PID:-}" ] && kill "$TANSU_PID" 2>/dev/null && wait "$TANSU_PID" 2>/dev/null
    TANSU_PID=
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
