#!/bin/bash
# Monitoring cost: per-event cost of the monitor and metrics (bench_monitor),
# then one worker end to end with monitoring off and on (monitor.baseline +
# metrics.port), alternating, 3 runs each; events/s as in limits.sh (first
# to N-th prediction, by their Kafka timestamps) and the worker's CPU per
# event over that span. Figures, never pass/fail. Prints markdown.
set -euo pipefail
BUILD=${BUILD:-build}
N=${N:-100000}
SM="$BUILD/streamml"
BASE=models/credit_gbdt.baseline.json
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh" benchmon # $tmp, pids, $PY, free_port, med, txn_events

[ -s "$BUILD/bench/xgb500.json" ] || $PY bench/make_model.py "$SM" "$BUILD/bench/xgb500.json" >/dev/null
echo "Monitoring cost per event (bench_monitor, 200,000 vectors, median of 5):"
echo
"$BUILD/bench/bench_monitor" "$BASE" "$(free_port)" 2>/dev/null | tee "$tmp/stages.md"
per_event=$(awk -F'|' '/monitor:|metrics:/ {s += $3} END {print s}' "$tmp/stages.md")

txn_events "$N" 20000 >"$tmp/events.jsonl"

run_once() { # $1 = off|on; prints events/s and CPU us/event
    "$SM" broker --topics transactions:32,predictions.transactions:32,transactions.dlq:2,monitoring:1 \
        --bootstrap-file "$tmp/bs" >"$tmp/broker.log" 2>&1 &
    local bpid=$!; pids+=($bpid)
    local rport; rport=$(free_port)
    redis-server --port "$rport" --bind 127.0.0.1 --dir "$tmp" --save '' --appendonly no >/dev/null 2>&1 &
    local rpid=$!; pids+=($rpid)
    for _ in $(seq 100); do [ -s "$tmp/bs" ] && redis-cli -p "$rport" ping >/dev/null 2>&1 && break; sleep 0.1; done
    local bs; bs=$(cat "$tmp/bs")
    "$SM" produce -b "$bs" -i "$tmp/events.jsonl" --log-level error 2>/dev/null
    local mon=()
    [ "$1" = on ] && mon=(-X monitor.baseline="$BASE" -X metrics.port="$(free_port)")
    "$BUILD/streamml-transactions" -b "$bs" -X redis.port="$rport" -X model.gbdt="$BUILD/bench/xgb500.json" \
        "${mon[@]}" --log-level error 2>"$tmp/worker.log" &
    local wpid=$!; pids+=($wpid)
    # Events/s over the span from the first prediction's Kafka timestamp to
    # the N-th's, CPU over the same span (bench/span.py, as limits.sh): a
    # consumer started to catch the first prediction would start the clock
    # late, after the worker had already run, and overstate events/s.
    $PY bench/span.py sample "$tmp/samples" "$wpid" &
    local spid=$!; pids+=($spid)
    "$SM" consume -b "$bs" -t predictions.transactions -f -n "$N" --meta --log-level error \
        >"$tmp/meta" 2>/dev/null
    kill "$spid"; wait "$spid" 2>/dev/null || true
    local r c
    read -r r c < <($PY bench/span.py report "$N" "$tmp/meta" "$tmp/samples")
    # The worker first, while the broker is up: a consumer closing against a
    # broker already gone waits for its coordinator (librdkafka), past the
    # worker's shutdown deadline.
    kill "$wpid"; wait "$wpid" 2>/dev/null || true
    kill "$bpid" "$rpid"; wait "$bpid" "$rpid" 2>/dev/null || true
    rm -f "$tmp/bs"
    echo "$r $c"
}

off=(); on=(); coff=(); con=()
for rep in 1 2 3; do
    read -r r c < <(run_once off); off+=("$r"); coff+=("$c")
    read -r r c < <(run_once on); on+=("$r"); con+=("$c")
done
moff=$(med "${off[@]}"); mon_=$(med "${on[@]}")
echo
echo "One worker end to end, $N preloaded events, 500-tree model, Redis state, runs alternating:"
echo
echo "| monitoring | events/s (median of 3) | runs | worker CPU us/event (median) |"
echo "|---|---:|---|---:|"
echo "| off | $moff | ${off[*]} | $(med "${coff[@]}") |"
echo "| on (37-feature baseline + /metrics) | $mon_ | ${on[*]} | $(med "${con[@]}") |"
echo
echo "Throughput with monitoring on: $($PY -c "print(round(100*$mon_/$moff, 1))")% of off."
echo "Monitor + metrics CPU: ${per_event} ns/event = $($PY -c "print(round($per_event/10/$(med "${coff[@]}"), 1))")% of the worker's CPU per event with monitoring off (the end-to-end ratio is within the run-to-run noise of a shared machine)."
