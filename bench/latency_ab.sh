#!/bin/bash
# End-to-end latency (event produced -> prediction consumed) at fixed
# offered rates, for two builds alternated in one run (issue 19), each row
# on a fresh broker + redis-server + one transactions worker. Figures,
# never pass/fail; prints markdown.
#
#   A=DIR B=DIR RATES="17606 35212" bench/latency_ab.sh
#
# A, B: build directories (B defaults to build, A to B: one build); RATES:
# events/s offered (default: 25% and 50% of one worker's quiet maximum on
# main, 70,423 events/s); ROUNDS (default 3) repetitions of A then B;
# LAT_S seconds per row (default 5); GEN: the bench_latency binary for
# every row (default each build's own); LAT_X: the worker's -X settings
# (limits.sh's); MODEL (default B's bench/xgb500.json, made when missing).
# STAGES=DIR keeps each row's per-stage histograms
# (worker.stage_times) there, for builds that have the key. Each row
# also shows the CPU seconds (user+sys) its generator, worker,
# redis-server and broker used; the generator's own settings (TICK_US,
# SPIN, LINGER_MS, GEN_PRODUCER, GEN_CONSUMER) pass through the
# environment (bench/bench_latency.c).
set -euo pipefail
B=${B:-build}
A=${A:-$B}
RATES=${RATES:-17606 35212}
ROUNDS=${ROUNDS:-3}
LAT_S=${LAT_S:-5}
USERS=${USERS:-20000}
LAT_X=${LAT_X:--X fetch.wait.max.ms=1 -X fetch.error.backoff.ms=1 -X linger.ms=1}
TOPICS=transactions:32,predictions.transactions:32,transactions.dlq:2
. bench/lib.sh latab
[ -z "${STAGES:-}" ] || mkdir -p "$STAGES"
MODEL=${MODEL:-$B/bench/xgb500.json} # limits.sh's model, made once
[ -s "$MODEL" ] || $PY bench/make_model.py "$B/streamml" "$MODEL" >/dev/null

cpu_s() { # user+sys seconds of a live process
    awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f", ($14 + $15) / hz}' "/proc/$1/stat" 2>/dev/null || echo -
}

row() { # $1 = label, $2 = build dir, $3 = rate, $4 = round
    local bd=$2 rate=$3 bs rport bpid rpid wpid gen=${GEN:-$2/bench/bench_latency} line
    local -a sx=()
    "$bd/streamml" broker --topics "$TOPICS" --bootstrap-file "$tmp/bs" >>"$tmp/broker.log" 2>&1 &
    bpid=$!; pids+=($bpid)
    rport=$(free_port)
    redis-server --port "$rport" --bind 127.0.0.1 --dir "$tmp" --save '' --appendonly no >/dev/null 2>&1 &
    rpid=$!; pids+=($rpid)
    for _ in $(seq 100); do [ -s "$tmp/bs" ] && redis-cli -p "$rport" ping >/dev/null 2>&1 && break; sleep 0.1; done
    bs=$(cat "$tmp/bs")
    # (not `--help | grep -q`: under pipefail grep's early exit makes the
    # writer's SIGPIPE fail the test now and then, and the row had no stages)
    if [ -n "${STAGES:-}" ] && [[ $("$bd/streamml-transactions" --help 2>&1 || true) == *worker.stage_times* ]]; then
        sx=(-X "worker.stage_times=$STAGES/$1-$rate-$4.md")
    fi
    # shellcheck disable=SC2086 # LAT_X is a list of -X options
    "$bd/streamml-transactions" -b "$bs" -X redis.port="$rport" -X model.gbdt="$MODEL" \
        -X explain.decisions=none $LAT_X "${sx[@]}" --log-level warn 2>>"$tmp/worker.log" &
    wpid=$!; pids+=($wpid)
    local l0; l0=$(cut -d' ' -f1 /proc/loadavg)
    line=$("$gen" "$bs" "$rate" "$LAT_S" "$USERS" 2>"$tmp/gen.err")
    # CPU seconds (user+sys) each process used over the row, its start,
    # warm-up and drain included: the generator's own report, the others'
    # /proc/PID/stat before they are stopped
    local cg cw cr cb
    cg=$(sed -n 's/.*own CPU \([0-9.]*\) s.*/\1/p' "$tmp/gen.err")
    cw=$(cpu_s "$wpid"); cr=$(cpu_s "$rpid"); cb=$(cpu_s "$bpid")
    echo "$line" | sed "s/^|/| $1 | $4 |/; s/|\$/| ${cg:--} | $cw | $cr | $cb | $l0 |/"
    kill "$wpid" 2>/dev/null || true
    for _ in $(seq 150); do kill -0 "$wpid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$wpid" 2>/dev/null || true; wait "$wpid" 2>/dev/null || true
    kill "$bpid" "$rpid" 2>/dev/null || true; wait "$bpid" "$rpid" 2>/dev/null || true
    rm -f "$tmp/bs"
}

echo "Latency, A = $A, B = $B, ${LAT_S} s per row, $USERS users, worker settings: $LAT_X"
echo "(OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-unset}; the load average is taken as each row starts)"
echo
echo "| build | round | offered events/s | achieved | p50 ms | p99 ms | p99.9 ms | max ms | missing | CPU s: generator | worker | redis | broker | load |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
for r in $(seq "$ROUNDS"); do
    for rate in $RATES; do
        row A "$A" "$rate" "$r"
        [ "$A" = "$B" ] || row B "$B" "$rate" "$r"
    done
done
echo
echo "Load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
