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

# End-to-end latency at fixed offered loads (event produced -> prediction
# consumed), on a fresh stack per fetch setting. The mock cluster does not
# answer a waiting Fetch when data arrives (a real broker does), so its
# latency floor is fetch.wait.max.ms: shown with librdkafka's default (500)
# and with 5 ms, the setting the demo and tests use.
LOADS=${LOADS:-"5000 10000 20000 30000"}
{
echo
echo "End-to-end latency, event produced -> prediction consumed, one worker, fixed offered load"
echo "(5 s per load; generator and consumer in one process on the same 2 cores):"
echo
echo "| worker fetch.wait.max.ms | offered events/s | achieved | p50 ms | p99 ms | p99.9 ms | max ms | missing |"
echo "|---:|---:|---:|---:|---:|---:|---:|---:|"
} | tee -a "$out"
for fw in 500 5; do
    "$SM" broker --topics transactions:32,predictions.transactions:32,transactions.dlq:2 \
        --bootstrap-file "$tmp/lbs$fw" >"$tmp/lbroker$fw.log" 2>&1 &
    bpid=$!; pids+=($bpid)
    rport=$(free_port)
    redis-server --port "$rport" --bind 127.0.0.1 --dir "$tmp" --save '' --appendonly no >/dev/null 2>&1 &
    rpid=$!; pids+=($rpid)
    for _ in $(seq 100); do [ -s "$tmp/lbs$fw" ] && redis-cli -p "$rport" ping >/dev/null 2>&1 && break; sleep 0.1; done
    bs=$(cat "$tmp/lbs$fw")
    "$BUILD/streamml-transactions" -b "$bs" -X redis.port="$rport" -X model.gbdt="$BUILD/bench/xgb500.json" \
        -X fetch.wait.max.ms="$fw" -X fetch.error.backoff.ms="$fw" --log-level warn 2>"$tmp/lworker$fw.log" &
    wpid=$!; pids+=($wpid)
    for load in $LOADS; do
        "$BUILD/bench/bench_latency" "$bs" "$load" 5 | sed "s/^|/| $fw |/" | tee -a "$out"
    done
    kill "$wpid" "$bpid" "$rpid"; wait "$wpid" "$bpid" "$rpid" 2>/dev/null || true
done

# Replay throughput (issue 3): 1,000,000 events from 4 Avro container files
# (k-way merged), 50,000 users, in-memory state, the demo models, predictions
# as JSON lines to /dev/null. Median of 3 runs; CPU from the shell's times.
RN=${REPLAY_N:-1000000}
"$BUILD/bench/bench_replay" schemas "$RN" 4 "$tmp/replay"
rrates=()
for rep in 1 2 3; do
    t0=$(date +%s.%N)
    /usr/bin/time -f "%U %S" -o "$tmp/rtime$rep" "$SM" replay -q --log-level error \
        --avro-file "$tmp/replay0.avro" --avro-file "$tmp/replay1.avro" \
        --avro-file "$tmp/replay2.avro" --avro-file "$tmp/replay3.avro" -o /dev/null 2>/dev/null
    t1=$(date +%s.%N)
    rrates+=("$($PY -c "print(round($RN/($t1-$t0)))")")
done
rmed=$(printf '%s\n' "${rrates[@]}" | sort -n | sed -n 2p)
rcpu=$(awk '{print $1+$2}' "$tmp/rtime3")
{
echo
echo "Replay, $RN events from 4 Avro files, 50,000 users, in-memory state, demo models (200 trees depth 4 + scorecard), JSON lines out:"
echo
echo "| figure | value |"
echo "|---|---:|"
echo "| events/s (median of 3: ${rrates[*]}; target >= 300,000) | $rmed |"
echo "| CPU, last run, both threads | ${rcpu} s = $($PY -c "print(round($rcpu/$RN*1e6, 2))") us/event |"
echo "| load average when measured | $(cut -d' ' -f1-3 /proc/loadavg) |"
} | tee -a "$out"

# Monitoring cost (issue 4): monitor + metrics per event, worker off vs on.
{ echo; BUILD="$BUILD" N="$N" bench/monitoring.sh; } | tee -a "$out"

# ONNX runtime: EfficientNet-B0, streamml vs PyTorch (bench/onnx.sh), its own section.
{
echo
echo "## ONNX: EfficientNet-B0, streamml vs PyTorch"
echo
BUILD="$BUILD" bench/onnx.sh
} | tee -a "$out"

# Clickstream (issue 6): stages in process and one worker end to end,
# 100,000 items, hidden 128 (make models-clickstream-bench, random init).
{ echo; BUILD="$BUILD" bench/clickstream.sh; } | tee -a "$out"
