#!/bin/bash
# make bench: figures, never pass/fail. Per-stage ns/event (median of 5) and
# one worker end to end on the embedded stack (median of 3 runs).
set -euo pipefail
BUILD=${BUILD:-build}
N=${N:-100000}
PY=/usr/bin/python3
SM="$BUILD/streamml"
tmp=$(mktemp -d /tmp/streamml-bench-XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; rm -rf "$tmp"; }
trap cleanup EXIT INT TERM
free_port() { $PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

out=bench/results.md
{
echo "# streamml benchmark results"
echo
echo "$(date -u +%Y-%m-%d), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores,"
echo "SIMD: $(grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' | grep -E '^(sse4_2|avx|avx2|avx512f|fma)$' | tr '\n' ' ')"
echo
echo "| stage | median ns/event | min | max |"
echo "|---|---:|---:|---:|"
mkdir -p "$BUILD/bench"
$PY bench/make_model.py "$SM" "$BUILD/bench/xgb500.json"
"$BUILD/bench/bench_stages" "$BUILD/bench/xgb500.json" 200000
} | tee "$out"

# N events, 20,000 users, ~250 bytes each: 32 partitions keep each under the
# mock broker's ~5 MB per partition.
$PY - "$N" > "$tmp/events.jsonl" <<'PYEOF'
import json, sys
n = int(sys.argv[1]); t = 1_700_000_000_000
for i in range(n):
    t += 1000
    print(json.dumps({"event_id": f"b{i}", "user_id": f"u{(i * 7919) % 20000}", "event_time": t,
                      "amount": 500 + i % 2000, "income": 80 + i % 200, "expenses": 40 + i % 50,
                      "term_months": 12 + 12 * (i % 5), "age": 20 + i % 50, "home": "rent"}))
PYEOF

rates=()
for rep in 1 2 3; do
    "$SM" broker --topics transactions:32,predictions.transactions:32,transactions.dlq:2 \
        --bootstrap-file "$tmp/bs$rep" >"$tmp/broker$rep.log" 2>&1 &
    bpid=$!; pids+=($bpid)
    rport=$(free_port)
    redis-server --port "$rport" --bind 127.0.0.1 --dir "$tmp" --save '' --appendonly no >/dev/null 2>&1 &
    rpid=$!; pids+=($rpid)
    for _ in $(seq 100); do [ -s "$tmp/bs$rep" ] && redis-cli -p "$rport" ping >/dev/null 2>&1 && break; sleep 0.1; done
    bs=$(cat "$tmp/bs$rep")
    "$SM" produce -b "$bs" -i "$tmp/events.jsonl" --log-level error 2>/dev/null
    "$BUILD/streamml-transactions" -b "$bs" -X redis.port="$rport" -X model.gbdt="$BUILD/bench/xgb500.json" \
        --log-level warn 2>"$tmp/worker$rep.log" &
    wpid=$!; pids+=($wpid)
    # Time from the first prediction to the N-th: excludes the group's
    # initial rebalance delay (about 3 s on the mock cluster).
    "$SM" consume -b "$bs" -t predictions.transactions -f -n 1 --log-level error >/dev/null 2>&1
    t0=$(date +%s.%N)
    "$SM" consume -b "$bs" -t predictions.transactions -f -n "$N" --log-level error >/dev/null 2>&1
    t1=$(date +%s.%N)
    cpu=$(awk '{print ($14+$15)/100}' /proc/$wpid/stat)
    rss=$(awk '/VmHWM/ {print $2/1024}' /proc/$wpid/status)
    kill "$wpid" "$bpid" "$rpid"; wait "$wpid" "$bpid" "$rpid" 2>/dev/null || true
    r=$($PY -c "print(round($N/($t1-$t0)))")
    rates+=("$r")
    echo "run $rep: $r events/s, worker CPU ${cpu} s total, peak RSS ${rss} MB"
    last_cpu=$cpu; last_rss=$rss
done
med=$(printf '%s\n' "${rates[@]}" | sort -n | sed -n 2p)
{
echo
echo "End to end, one worker process, $N preloaded events, 500-tree depth-6 model, Redis state:"
echo
echo "| figure | value |"
echo "|---|---:|"
echo "| events/s (median of 3: ${rates[*]}) | $med |"
echo "| worker CPU, last run (incl. start-up) | ${last_cpu} s = $($PY -c "print(round($last_cpu/$N*1e6, 1))") us/event |"
echo "| worker peak RSS, last run | ${last_rss} MB |"
} | tee -a "$out"

# ONNX runtime: EfficientNet-B0, streamml vs PyTorch (bench/onnx.sh), its own section.
{
echo
echo "## ONNX: EfficientNet-B0, streamml vs PyTorch"
echo
BUILD="$BUILD" bench/onnx.sh
} | tee -a "$out"
