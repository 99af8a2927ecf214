#!/bin/bash
# Exactly-once clickstream counts and the clickstream monitor: bench_covis
# against its own redis-server on a free port. Figures, never pass/fail.
set -euo pipefail
BUILD=${BUILD:-build}
tmp=$(mktemp -d /tmp/streamml-benchcov-XXXXXX)
rpid=
cleanup() { [ -n "$rpid" ] && kill "$rpid" 2>/dev/null && wait "$rpid" 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT INT TERM
port=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
redis-server --port "$port" --bind 127.0.0.1 --dir "$tmp" --save '' --appendonly no >/dev/null 2>&1 &
rpid=$!
for _ in $(seq 100); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
"$BUILD/bench/bench_covis" "$port" "${BATCHES:-200}"
