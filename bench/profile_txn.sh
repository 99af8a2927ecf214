#!/bin/bash
# Where the transactions worker's and redis-server's CPU goes (issue 10):
# both run under valgrind --tool=callgrind (perf has no hardware counters in
# this VM: `perf stat -e instructions true` says <not supported>) on N
# preloaded bench events (the limits.sh workload: 500-tree model, 20,000
# users, Redis state), and the top functions by inclusive and exclusive
# instruction counts are printed, per event. Figures, not pass/fail.
#   N=20000 bench/profile_txn.sh [OUTDIR]   (callgrind.out.* kept in OUTDIR)
set -euo pipefail
BUILD=${BUILD:-build}
N=${N:-20000}
PY=/usr/bin/python3
SM="$BUILD/streamml"
MODEL="$BUILD/bench/xgb500.json"
out=${1:-$(mktemp -d /tmp/streamml-prof-XXXXXX)}
mkdir -p "$out"
tmp=$(mktemp -d /tmp/streamml-profrun-XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
    rm -rf "$tmp"
}
trap cleanup EXIT INT TERM
free_port() { $PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

[ -s "$MODEL" ] || $PY bench/make_model.py "$SM" "$MODEL" >/dev/null
$PY - "$N" >"$tmp/events.jsonl" <<'PYEOF'
import json, sys
n = int(sys.argv[1]); t = 1_700_000_000_000
for i in range(n):
    t += 1000
    print(json.dumps({"event_id": f"b{i}", "user_id": f"u{(i * 7919) % 20000}", "event_time": t,
                      "amount": 500 + i % 2000, "income": 80 + i % 200, "expenses": 40 + i % 50,
                      "term_months": 12 + 12 * (i % 5), "age": 20 + i % 50, "home": "rent"}))
PYEOF
"$SM" broker --topics transactions:32,predictions.transactions:32,transactions.dlq:2 \
    --bootstrap-file "$tmp/bs" >"$tmp/broker.log" 2>&1 &
pids+=($!)
rport=$(free_port)
valgrind --tool=callgrind --callgrind-out-file="$out/callgrind.out.redis" \
    redis-server --port "$rport" --bind 127.0.0.1 --dir "$tmp" --save '' --appendonly no \
    >"$tmp/redis.log" 2>&1 &
rpid=$!; pids+=($rpid)
for _ in $(seq 300); do [ -s "$tmp/bs" ] && redis-cli -p "$rport" ping >/dev/null 2>&1 && break; sleep 0.1; done
"$SM" produce -b "$(cat "$tmp/bs")" -i "$tmp/events.jsonl" --log-level error >/dev/null 2>&1
valgrind --tool=callgrind --callgrind-out-file="$out/callgrind.out.worker" \
    "$BUILD/streamml-transactions" -b "$(cat "$tmp/bs")" -X redis.port="$rport" \
    -X model.gbdt="$MODEL" -X worker.max_messages="$N" --log-level warn 2>"$tmp/worker.log"
redis-cli -p "$rport" shutdown nosave >/dev/null 2>&1 || true
wait "$rpid" 2>/dev/null || true

report() { # $1 = file, $2 = title
    local total
    total=$(callgrind_annotate "$1" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(/,/, "", $1); print $1}')
    echo "### $2: $(( total / N )) instructions per event ($total in all)"
    echo
    echo "Inclusive (a function and what it calls), top 25:"
    echo '```'
    callgrind_annotate --inclusive=yes "$1" 2>/dev/null | sed -n '/^Ir/,$p' | sed -n '3,27p'
    echo '```'
    echo "Exclusive (own instructions), top 20:"
    echo '```'
    callgrind_annotate "$1" 2>/dev/null | sed -n '/^Ir/,$p' | sed -n '3,22p'
    echo '```'
}
report "$out/callgrind.out.worker" "streamml-transactions, $N events"
report "$out/callgrind.out.redis" "redis-server, the same $N events"
