#!/bin/bash
# Exactly-once clickstream counts and the clickstream monitor: bench_covis
# against its own redis-server on a free port. Figures, never pass/fail.
set -euo pipefail
BUILD=${BUILD:-build}
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh" benchcov # $tmp, pids, free_port
port=$(free_port)
redis-server --port "$port" --bind 127.0.0.1 --dir "$tmp" --save '' --appendonly no >/dev/null 2>&1 &
pids+=($!)
for _ in $(seq 100); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
"$BUILD/bench/bench_covis" "$port" "${BATCHES:-200}"
