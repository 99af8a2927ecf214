#!/bin/bash
# make bench: figures, never pass/fail. Per-stage ns/event (median of 5),
# the worker end to end against the broker, Redis and its Python peer
# (bench/limits.sh), replay, monitoring cost. Size knobs (env): N (events
# end to end, 100000), STAGES_N (200000), REPS (3), PEER_N (= N), LAT_S (5),
# REPLAY_N (1000000).
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
echo "Load average at the start: $(cut -d' ' -f1-3 /proc/loadavg) (the 2 cores may be shared: quote it with the figures)."
echo
echo "| stage | median ns/event | min | max |"
echo "|---|---:|---:|---:|"
mkdir -p "$BUILD/bench"
$PY bench/make_model.py "$SM" "$BUILD/bench/xgb500.json"
"$BUILD/bench/bench_stages" "$BUILD/bench/xgb500.json" "${STAGES_N:-200000}"
} | tee "$out"

# One worker end to end against the broker-alone and Redis-alone ceilings
# and the Python peer, two workers in one group, latency at 25/50/75/100%
# of the measured max (issue 10): bench/limits.sh (knobs N, REPS, PEER_N,
# LAT_S).
GBDT_NS=$(awk -F'|' '/gbdt, 500 trees depth 6, batched/ {gsub(/ /, "", $3); print $3}' "$out")
{ echo; BUILD="$BUILD" N="$N" GBDT_NS="$GBDT_NS" bench/limits.sh; } | tee -a "$out"

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

# Exact TreeSHAP next to xgboost's exact and approximate contributions
# (issue 18): bench/treeshap.sh, same model and rows, one run.
{ echo; BUILD="$BUILD" bench/treeshap.sh; } | tee -a "$out"

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
# Issue 20: the same worker with pools of 2,000 candidates from eight sources and a catalogue
# of 101,000 items (the target: 5,000 recommendations/s), at the default probe 64 and at 32
# (the pool's other sources make up what the lower probe misses: bench/results.md).
for probe in 64 32; do
    { echo; echo "## Clickstream with pools of 2,000 candidates, probe $probe"; echo
      SOURCES=gru:800,covisit:400,category:300,popular:200,region:100,cart:50,new:100,content:50 \
      PROBE=$probe BUILD="$BUILD" STAGES=0 QUALITY=0 ONLY=ivf bench/clickstream.sh; } | tee -a "$out"
done

# Images (issue 21): per-stage costs, then the worker's images/s against the
# ONNX runtime's own for the demo model, in one run with the ratio.
{ echo; echo "## Images worker against the ONNX runtime"; echo; BUILD="$BUILD" bench/images.sh; } | tee -a "$out"
