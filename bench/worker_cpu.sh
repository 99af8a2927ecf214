#!/bin/bash
# The transactions worker's own CPU per event (issue 19), builds and the
# users' cache side by side: each run is a fresh broker + redis-server with
# N preloaded limits.sh events (USERS distinct users, each seen N/USERS
# times), one worker (limits.sh's settings) until its N-th prediction; its
# CPU (user+sys, all threads, /proc) then, less the same for a run of N0
# events, over N - N0: the marginal CPU per event, start-up and the model's
# loading cancelled; the same for its minor page faults. Rounds alternate the builds and cache settings, so the
# machine's load falls on each alike. Prints a markdown table of medians.
#   bench/worker_cpu.sh                     # this build, cache on and off
#   BUILDS="/path/old/build build" bench/worker_cpu.sh   # old against new
# Knobs: N (default 50000), N0 (10000), USERS (20000), REPS (3), CACHES
# ("20000 0": state.cache_entries values), PERF=DIR (then one more run of
# each, not counted, under perf record -g into DIR/perf.<build#>.<cache>.data,
# with perf report's top symbols in DIR/perf.*.txt).
set -euo pipefail
N=${N:-50000}
N0=${N0:-10000}
USERS=${USERS:-20000}
REPS=${REPS:-3}
CACHES=${CACHES:-20000 0}
read -r -a BUILDS <<<"${BUILDS:-build}"
MODEL=${MODEL:-${BUILDS[-1]}/bench/xgb500.json}
TOPICS=transactions:32,predictions.transactions:32,transactions.dlq:2
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh" wcpu # $tmp, pids, $PY, free_port, ticks, $TCK, med, txn_events
[ -s "$MODEL" ] || $PY bench/make_model.py "${BUILDS[-1]}/streamml" "$MODEL" >/dev/null
txn_events "$N" "$USERS" >"$tmp/events.jsonl"
head -n "$N0" "$tmp/events.jsonl" >"$tmp/events0.jsonl"

# $1 = build, $2 = events, $3 = file, $4 = cache entries, $5 = perf file or "";
# echoes the worker's CPU seconds at its n-th prediction.
one_run() {
    local b=$1 n=$2 f=$3 c=$4 pf=$5 bpid rpid rport wpid cpid ppid=
    rm -f "$tmp/bs"
    "$b/streamml" broker --topics "$TOPICS" --bootstrap-file "$tmp/bs" >>"$tmp/broker.log" 2>&1 &
    bpid=$!; pids+=($bpid)
    rport=$(free_port)
    redis-server --port "$rport" --bind 127.0.0.1 --dir "$tmp" --save '' --appendonly no >/dev/null 2>&1 &
    rpid=$!; pids+=($rpid)
    for _ in $(seq 100); do [ -s "$tmp/bs" ] && redis-cli -p "$rport" ping >/dev/null 2>&1 && break; sleep 0.1; done
    "$b/streamml" produce -b "$(cat "$tmp/bs")" -i "$f" --log-level error >/dev/null 2>&1
    "$b/streamml-transactions" -b "$(cat "$tmp/bs")" -X redis.port="$rport" -X model.gbdt="$MODEL" \
        -X explain.decisions=none -X state.cache_entries="$c" --log-level warn 2>>"$tmp/worker.log" &
    wpid=$!; pids+=($wpid)
    if [ -n "$pf" ]; then perf record -q -g -F 999 -e cpu-clock -o "$pf" -p "$wpid" >/dev/null 2>&1 & ppid=$!; fi
    timeout 600 "$b/streamml" consume -b "$(cat "$tmp/bs")" -t predictions.transactions -f -n "$n" \
        --log-level error >/dev/null 2>&1 &
    cpid=$!; pids+=($cpid)
    while kill -0 "$cpid" 2>/dev/null; do sleep 0.05; done
    # CPU seconds, minor page faults, peak RSS in kB
    echo "$(ticks "$wpid") $TCK $(awk '{print $10}' "/proc/$wpid/stat")" \
        "$(awk '/VmHWM/ {print $2}' "/proc/$wpid/status")" | awk '{printf "%.3f %d %d\n", $1 / $2, $3, $4}'
    [ -z "$ppid" ] || { kill -INT "$ppid"; wait "$ppid" 2>/dev/null || true; }
    kill "$wpid"; for _ in $(seq 100); do kill -0 "$wpid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$wpid" 2>/dev/null || true; wait "$wpid" 2>/dev/null || true
    kill "$bpid" "$rpid" 2>/dev/null || true; wait "$bpid" "$rpid" 2>/dev/null || true
}

declare -A res flt hwm
load0=$(cut -d' ' -f1-3 /proc/loadavg)
for rep in $(seq "$REPS"); do
    for bi in "${!BUILDS[@]}"; do
        for c in $CACHES; do
            b=${BUILDS[$bi]}
            read -r t0 f0 _ < <(one_run "$b" "$N0" "$tmp/events0.jsonl" "$c" "")
            read -r t1 f1 rss < <(one_run "$b" "$N" "$tmp/events.jsonl" "$c" "")
            us=$($PY -c "print(round(($t1 - $t0) / ($N - $N0) * 1e6, 2))")
            fl=$($PY -c "print(round(($f1 - $f0) / ($N - $N0), 3))")
            res[$bi.$c]="${res[$bi.$c]:-} $us"
            flt[$bi.$c]="${flt[$bi.$c]:-} $fl"
            hwm[$bi.$c]="${hwm[$bi.$c]:-} $((rss / 1024))"
            echo "rep $rep: $b cache $c: $t0 s / $t1 s -> $us us/event, $fl faults/event," \
                 "peak RSS $((rss / 1024)) MB (load $(cut -d' ' -f1 /proc/loadavg))" >&2
        done
    done
done
echo
echo "Worker CPU per event (user+sys, all threads), marginal between $N0 and $N preloaded events"
echo "over $USERS users; medians of $REPS alternated runs; load average $load0 at the start,"
echo "$(cut -d' ' -f1-3 /proc/loadavg) at the end."
echo
echo "Page faults (minor, marginal per event) and peak RSS (of the N-event run) do not depend"
echo "on the load; the CPU figures do."
echo
echo "| build | state.cache_entries | worker CPU us/event (median) | runs | page faults/event | peak RSS MB |"
echo "|---|---:|---:|---|---:|---:|"
for bi in "${!BUILDS[@]}"; do
    for c in $CACHES; do
        # shellcheck disable=SC2086
        echo "| ${BUILDS[$bi]} | $c | $(med ${res[$bi.$c]}) | ${res[$bi.$c]# } |" \
             "$(med ${flt[$bi.$c]}) | $(med ${hwm[$bi.$c]}) |"
    done
done
if [ -n "${PERF:-}" ]; then # one more run per build and cache setting, not counted above
    mkdir -p "$PERF"
    for bi in "${!BUILDS[@]}"; do
        for c in $CACHES; do
            one_run "${BUILDS[$bi]}" "$N" "$tmp/events.jsonl" "$c" "$PERF/perf.$bi.$c.data" >/dev/null
        done
    done
    for f in "$PERF"/perf.*.data; do
        perf report -i "$f" --stdio --no-children --sort symbol 2>/dev/null | grep -E '^ +[0-9]' | head -25 >"${f%.data}.txt" || true
    done
    echo; echo "perf reports (self time, top 25 symbols): $PERF/perf.*.txt"
fi
