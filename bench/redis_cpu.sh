#!/bin/bash
# redis-server CPU per event of the transactions state traffic (issue 19):
# bench_redis (the worker's reads and writes through common/state, without
# the rest of the worker) against a fresh redis-server per run, the store
# in layout 1 (a hash per user: HMGET reads, HSET + PEXPIRE in the script)
# in layout 2 (a string per user: one MGET per chunk, SET PX in the
# script) and in layout 3 (users as fields of hash buckets: one HMGET per
# bucket to read, one EVALSHA per chunk with one HSET per bucket, no
# per-user expiry), interleaved in one run. LAYOUTS="1 2 3" picks them,
# BUCKETS the layout-3 bucket count (8). redis-server's CPU comes from its own
# INFO cpu (user + sys) around the run, the per-command figures from INFO
# commandstats. CALLGRIND=1 adds one more pair of runs with redis-server
# under valgrind --tool=callgrind: its instructions per event (counted from
# bench_redis's start to its end), which the machine's load does not move.
# Figures, not pass/fail; prints markdown.
# BASES=1: every put carries the base it was read at (the users' cache's
# compare-and-set, state.cache_entries > 0, the workers' default).
#   N=20000 USERS=20000 REPS=3 [CALLGRIND=1] [LAYOUTS="1 2 3"] [BUCKETS=8] [BASES=1] bench/redis_cpu.sh
set -euo pipefail
BUILD=${BUILD:-build}
N=${N:-20000}
USERS=${USERS:-20000}
BATCH=${BATCH:-1000}
REPS=${REPS:-3}
LAYOUTS=${LAYOUTS:-1 2 3}
BUCKETS=${BUCKETS:-8}
PY=/usr/bin/python3
tmp=$(mktemp -d /tmp/streamml-rcpu-XXXXXX)
rpid=
cleanup() { [ -z "$rpid" ] || { kill "$rpid" 2>/dev/null; wait "$rpid" 2>/dev/null; }; rm -rf "$tmp"; }
trap cleanup EXIT INT TERM
free_port() { $PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
med() { printf '%s\n' "$@" | sort -g | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
cpu() { redis-cli -p "$1" info cpu | tr -d '\r' | awk -F: '/^used_cpu_(user|sys):/ {s+=$2} END {printf "%.6f", s}'; }
declare -A us calls
for rep in $(seq "$REPS"); do
    for layout in $LAYOUTS; do
        port=$(free_port)
        redis-server --port "$port" --bind 127.0.0.1 --dir "$tmp" --save '' --appendonly no >/dev/null 2>&1 &
        rpid=$!
        for _ in $(seq 100); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
        # A store that says layout 1 is read and written as one written before layout 2.
        if [ "$layout" = 1 ]; then redis-cli -p "$port" set bench:layout 1 >/dev/null; fi
        redis-cli -p "$port" config resetstat >/dev/null
        c0=$(cpu "$port")
        STATE_LAYOUT=${layout/1/2} STATE_BUCKETS=$BUCKETS STATE_BASES=${BASES:-0} "$BUILD/bench/bench_redis" "$port" "$N" "$BATCH" "$USERS" >"$tmp/out"
        c1=$(cpu "$port")
        us[$layout]="${us[$layout]:-} $($PY -c "print(round(($c1 - $c0) / $N * 1e6, 2))")"
        calls[$layout]=$(redis-cli -p "$port" info commandstats | tr -d '\r' | grep -E '^cmdstat_(hmget|mget|exists|get|set|hset|pexpire|evalsha|hscan|hdel|watch|multi|exec|incr):' |
            sed -E 's/^cmdstat_([a-z]+):calls=([0-9]+),usec=[0-9]+,usec_per_call=([0-9.]+).*/\1 \2 (\3 us)/' | paste -sd, -)
        kill "$rpid"; wait "$rpid" 2>/dev/null || true; rpid=
    done
done
declare -A ins
if [ "${CALLGRIND:-0}" = 1 ]; then
    for layout in $LAYOUTS; do
        port=$(free_port)
        valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$tmp/cg.$layout" \
            redis-server --port "$port" --bind 127.0.0.1 --dir "$tmp" --save '' --appendonly no >/dev/null 2>&1 &
        rpid=$!
        for _ in $(seq 300); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
        if [ "$layout" = 1 ]; then redis-cli -p "$port" set bench:layout 1 >/dev/null; fi
        callgrind_control -i on "$rpid" >/dev/null 2>&1
        STATE_LAYOUT=${layout/1/2} STATE_BUCKETS=$BUCKETS STATE_BASES=${BASES:-0} "$BUILD/bench/bench_redis" "$port" "$N" "$BATCH" "$USERS" >"$tmp/out"
        callgrind_control -i off "$rpid" >/dev/null 2>&1
        redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true
        wait "$rpid" 2>/dev/null || true; rpid=
        ins[$layout]=$(callgrind_annotate "$tmp/cg.$layout" 2>/dev/null |
            awk -v n="$N" '/PROGRAM TOTALS/ {gsub(/,/, "", $1); printf "%d", $1 / n}')
    done
fi
echo "redis-server CPU per event, $N events over $USERS users in batches of $BATCH (bench_redis, bases ${BASES:-0}),"
echo "medians of $REPS runs interleaved, load average $(cut -d' ' -f1-3 /proc/loadavg):"
echo
echo "| layout | redis-server us/event [runs] | instructions/event (callgrind) | commands (calls, usec_per_call) of the last run |"
echo "|---|---:|---:|---|"
declare -A name=([1]="1: a hash per user (HMGET; HMGET + HSET + PEXPIRE in the script)"
    [2]="2: a string per user (MGET; MGET + SET PX in the script)"
    [3]="3: users as fields of $BUCKETS hash buckets (HMGET per bucket; HSET per bucket in the script)")
declare -A m
for layout in $LAYOUTS; do
    # shellcheck disable=SC2086
    m[$layout]=$(med ${us[$layout]})
    echo "| ${name[$layout]} | ${m[$layout]} [${us[$layout]# }] | ${ins[$layout]:--} | ${calls[$layout]} |"
done
last=${LAYOUTS##* }
for layout in $LAYOUTS; do
    [ "$layout" != "$last" ] || continue
    r_ins=-; [ -z "${ins[$layout]:-}" ] || r_ins="**$($PY -c "print(round(${ins[$layout]} / ${ins[$last]}, 2))")x**"
    echo "| **ratio $layout / $last** | **$($PY -c "print(round(${m[$layout]} / max(${m[$last]}, 0.01), 2))")x** | $r_ins | |"
done
