#!/bin/bash
# The transactions worker against the machine's limits and its Python peer
# (issue 10). Figures, never pass/fail; prints markdown (run.sh appends it
# to bench/results.md).
#
# Per repetition (REPS, default 3), on the same N preloaded events:
#   - broker alone (bench_broker: consume + produce the same bytes, no work)
#   - Redis alone (bench_redis: the worker's HMGET + EVALSHA, pipelined)
#   - one C worker (streamml-transactions), then the Python peer
#     (bench/peer_transactions.py), each on a fresh stack
#   - two C workers in one consumer group
# Events/s = N / (first prediction -> N-th prediction), as in run.sh; CPU
# per event = user+sys of the process over that same span, from
# /proc/PID/stat (all its threads), so start-up and the group join are left
# out. Then end-to-end latency (bench_latency) at 25/50/75/100% of the
# measured 1-worker and 2-worker maxima, after a floor row at FLOOR_RATE.
# Knobs: N, REPS, PEER_N (events for the peer, default N), LAT_S (seconds per
# load, default 5), LAT_X (the worker's -X settings for the latency runs),
# FLOOR_RATE (default 500 events/s), USERS (distinct users, default 20,000),
# PEER=0 / TWO=0 (leave out the Python peer / the two-worker rows),
# LAT_PCTS (loads in % of each max, default "25 50 75 100"), CLUSTER=0 /
# NOCACHE=0 (leave out the Redis Cluster rows / the cache-off row), CLUSTER_LAT=0
# (leave out only the cluster's latency rows).
# Issue 19's table comes last: broker alone, one worker on one Redis (state
# cache on, the default, and off: state.cache_entries=0), one worker on a
# Redis Cluster of 3 masters, side by side, with p50/p99 at 25% and 50% of
# each one's own maximum and the issue's targets next to the figures.
set -euo pipefail
BUILD=${BUILD:-build}
N=${N:-100000}
REPS=${REPS:-3}
PEER_N=${PEER_N:-$N}
LAT_S=${LAT_S:-5}
USERS=${USERS:-20000}
PEER=${PEER:-1}
TWO=${TWO:-1}
CLUSTER=${CLUSTER:-1}
NOCACHE=${NOCACHE:-1}
LAT_PCTS=${LAT_PCTS:-25 50 75 100}
# The workers' own settings. Explanations are off: the bench model declines
# nearly every event, and a TreeSHAP explanation of each (issue 18) would be
# most of the worker's CPU; WORKER_X= measures with them.
read -r -a WX <<<"${WORKER_X--X explain.decisions=none}"
SM="$BUILD/streamml"
MODEL="$BUILD/bench/xgb500.json"
CARD=models/credit_scorecard.json
TOPICS=transactions:32,predictions.transactions:32,transactions.dlq:2,bench.passthrough:32
# LOGS=DIR keeps the broker, worker and peer logs (and the last run's
# prediction timestamps) there (bench/lib.sh runs this hook on exit).
bench_before_rm() {
    [ -z "${LOGS:-}" ] || { mkdir -p "$LOGS"; cp "$tmp"/*.log "$tmp"/meta* "$LOGS"/ 2>/dev/null || true; }
}
. bench/lib.sh benchlim
spid=
calc() { $PY -c "print($1)"; }

[ -s "$MODEL" ] || $PY bench/make_model.py "$SM" "$MODEL" >/dev/null
gen_events() { txn_events "$1" "$USERS" >"$2"; } # $1 = count, $2 = file
gen_events "$N" "$tmp/events.jsonl"
[ "$PEER_N" = "$N" ] && cp "$tmp/events.jsonl" "$tmp/peer.jsonl" || gen_events "$PEER_N" "$tmp/peer.jsonl"

# Fresh broker + redis-server; sets bs, rport, bpid, rpid.
stack_up() {
    rm -f "$tmp/bs"
    "$SM" broker --topics "$TOPICS" --bootstrap-file "$tmp/bs" >>"$tmp/broker.log" 2>&1 &
    bpid=$!; pids+=($bpid)
    rport=$(free_port)
    redis-server --port "$rport" --bind 127.0.0.1 --dir "$tmp" --save '' --appendonly no >/dev/null 2>&1 &
    rpid=$!; pids+=($rpid)
    for _ in $(seq 100); do [ -s "$tmp/bs" ] && redis-cli -p "$rport" ping >/dev/null 2>&1 && break; sleep 0.1; done
    bs=$(cat "$tmp/bs")
}
# Workers first, while the broker is still up: a consumer closing against a
# broker that is already gone waits for its coordinator (librdkafka) and
# would hang the run; one still alive after 15 s is killed.
stack_down() {
    kill "$@" 2>/dev/null || true
    for _ in $(seq 150); do
        local alive=0; for p in "$@"; do kill -0 "$p" 2>/dev/null && alive=1; done
        [ "$alive" = 0 ] && break; sleep 0.1
    done
    kill -9 "$@" 2>/dev/null || true
    wait "$@" 2>/dev/null || true
    kill "$bpid" "$rpid" 2>/dev/null || true; wait "$bpid" "$rpid" 2>/dev/null || true
}
# A Redis Cluster of 3 masters with one replica each on free ports (bus ports
# too); sets cnodes ("127.0.0.1:p,..."), cpids.
cluster_up() {
    local ports=() d
    cpids=(); cnodes=
    for i in 1 2 3 4 5 6; do
        local p pid try; d="$tmp/rc$i"; mkdir -p "$d"
        # A port free when asked may be taken by another user's server before
        # ours binds it: ours must be the one answering (its process_id).
        for try in 1 2 3 4 5; do
            p=$(free_port)
            rm -f "$d/nodes.conf" # a cluster of the run before: the server would rejoin it
            redis-server --port "$p" --bind 127.0.0.1 --dir "$d" --save '' --appendonly no \
                --cluster-enabled yes --cluster-config-file nodes.conf --cluster-node-timeout 1000 \
                --cluster-port "$(free_port)" >/dev/null 2>&1 &
            pid=$!
            for _ in $(seq 100); do redis-cli -p "$p" ping >/dev/null 2>&1 && break; sleep 0.1; done
            redis-cli -p "$p" info server 2>/dev/null | grep -q "^process_id:$pid" && break
            kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true
        done
        cpids+=("$pid"); pids+=("$pid"); ports+=("127.0.0.1:$p"); cnodes="$cnodes${cnodes:+,}127.0.0.1:$p"
    done
    redis-cli --cluster create "${ports[@]}" --cluster-replicas 1 --cluster-yes >>"$tmp/cluster.log" 2>&1
    for _ in $(seq 300); do
        local ok=1
        for a in "${ports[@]}"; do
            redis-cli -p "${a#*:}" cluster info 2>/dev/null | grep -q cluster_state:ok || ok=0
        done
        [ "$ok" = 1 ] && break; sleep 0.1
    done
}
cluster_down() { kill "${cpids[@]}" 2>/dev/null || true; wait "${cpids[@]}" 2>/dev/null || true; }
worker_log() { # $1 = log file (info level: rebalances); appends the pid to wpids
    "$BUILD/streamml-transactions" -b "$bs" -X redis.port="$rport" -X model.gbdt="$MODEL" \
        "${WX[@]}" --log-level info 2>>"$1" &
    wpids+=($!); pids+=($!)
}
worker() { # extra -X args; echoes nothing, appends the pid to wpids
    "$BUILD/streamml-transactions" -b "$bs" -X redis.port="$rport" -X model.gbdt="$MODEL" \
        "${WX[@]}" "$@" --log-level warn 2>>"$tmp/worker.log" &
    wpids+=($!); pids+=($!)
}

# Samples CPU of the given pids (and broker, redis) while waiting for n
# predictions, then takes events/s and CPU us/event over the span from the
# first prediction to the n-th (bench/span.py). Sets rate, cpu_w (the pids
# together), cpu_b, cpu_r (broker, redis-server).
sample() { # pids: starts the sampler (measure starts it when not yet started)
    $PY bench/span.py sample "$tmp/samples" "$@" "$bpid" "$rpid" &
    spid=$!; pids+=($spid)
}
# Consumes n predictions (extra consume args after --) into $out while the
# given pids run; fails fast, with their logs, when one of them dies before
# the n-th prediction (a dead peer must not leave the consumer waiting out
# its 10-minute timeout). MLOG names the log to show (default: every log).
alive() { [ -r "/proc/$1/stat" ] && [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]; }
await() { # $1 = n, $2 = out file, $3 = "consume args", then pids
    local n=$1 out=$2 args=$3; shift 3
    # shellcheck disable=SC2086
    timeout 600 "$SM" consume -b "$bs" -t predictions.transactions -f -n "$n" $args \
        --log-level error >"$out" 2>/dev/null &
    local cpid=$!; pids+=($cpid)
    while alive "$cpid"; do
        for p in "$@"; do
            alive "$p" && continue
            sleep 1 # its last predictions may still be in flight
            alive "$cpid" || break 2
            kill "$cpid" 2>/dev/null; wait "$cpid" 2>/dev/null || true
            echo "limits.sh: pid $p exited after $(wc -l <"$out") of $n predictions; its log:" >&2
            # shellcheck disable=SC2086 # MLOG may name two logs
            tail -20 ${MLOG:-$tmp/worker.log} >&2
            exit 1
        done
        sleep 0.2
    done
    wait "$cpid" 2>/dev/null || true
    if [ "$(wc -l <"$out")" -lt "$n" ]; then
        echo "limits.sh: only $(wc -l <"$out") of $n predictions (pids $*); logs:" >&2
        tail -5 "$tmp"/*.log >&2
        exit 1
    fi
}
measure() { # $1 = n, then pids
    local n=$1; shift
    [ -n "${spid:-}" ] || sample "$@"
    await "$n" "$tmp/meta" "--meta" "$@"
    cp "$tmp/meta" "$tmp/meta.$#"
    kill "$spid"; wait "$spid" || true; spid=
    local -a v; read -r -a v < <($PY bench/span.py report "$n" "$tmp/meta" "$tmp/samples")
    rate=${v[0]}; cpu_b=${v[-2]}; cpu_r=${v[-1]}; vals=("${v[@]}")
    cpu_w=$(calc "round($(IFS=+; echo "${v[*]:1:$#}"), 2)")
}

# The peer does the same work: on 3,000 events over 300 users (windows and
# moments populated), its predictions are compared with the C worker's,
# event by event (probability, score, decision). Printed with the figures.
peer_check() {
    $PY -c "
import json
t = 1_700_000_000_000
for i in range(3000):
    t += 37000
    print(json.dumps({'event_id': f'k{i}', 'user_id': f'u{(i * 7919) % 300}', 'event_time': t,
                      'amount': 500 + i % 2000, 'income': 80 + i % 200, 'expenses': 40 + i % 50,
                      'term_months': 12 + 12 * (i % 5), 'age': 20 + i % 50, 'home': 'rent',
                      'debt': i % 3000 if i % 3 else None, 'credit_limit': 5000,
                      'credit_used': i % 5000}))" >"$tmp/check.jsonl"
    for who in c py; do
        stack_up
        "$SM" produce -b "$bs" -i "$tmp/check.jsonl" --log-level error >/dev/null 2>&1
        if [ "$who" = c ]; then wpids=(); worker; p=${wpids[0]}; MLOG=$tmp/worker.log
        else $PY bench/peer_transactions.py "$bs" "$rport" "$MODEL" "$CARD" 3000 >>"$tmp/peer.log" 2>&1 &
             p=$!; pids+=($p); MLOG=$tmp/peer.log; fi
        await 3000 "$tmp/check_$who.jsonl" "" "$p"
        stack_down "$p"
    done
    $PY - "$tmp/check_c.jsonl" "$tmp/check_py.jsonl" <<'PYEOF'
import json, sys
c, p = ({json.loads(l)["event_id"]: json.loads(l) for l in open(f)} for f in sys.argv[1:])
k = [e for e in c if e in p]
dp = max((abs(c[e]["probability"] - p[e]["probability"]) for e in k), default=float("nan"))
ds = sum(c[e]["score"] != p[e]["score"] for e in k)
dd = sum(c[e]["decision"] != p[e]["decision"] for e in k)
print(f"Peer check: {len(k)} of 3000 events scored by both; max |probability difference| {dp:.2g},"
      f" scores differing {ds}, decisions differing {dd}.")
PYEOF
}

declare -a d_brk r_brk c_brk r_red c_red c_rsrv r_c c_c c_cb c_cr rss_c r_py c_py rss_py r_c2 c_c2
declare -a r_cl c_cl c_clsrv c_clb r_nc c_nc c_ncb c_ncr r_l1 c_l1 c_l1r r_l2 c_l2 c_l2r r_l3 c_l3 c_l3r
r_py=(); c_py=(); rss_py=(); r_c2=(); c_c2=() # may stay empty (PEER=0, TWO=0, ...)
r_nc=(); c_nc=(); c_ncb=(); c_ncr=(); r_cl=(); c_cl=(); c_clb=(); c_clsrv=()
r_l1=(); c_l1=(); c_l1r=(); r_l2=(); c_l2=(); c_l2r=(); r_l3=(); c_l3=(); c_l3r=()
lastv() { local n; eval "n=\${#$1[@]}"; if [ "$n" -gt 0 ]; then eval "echo \${$1[-1]}"; else echo -; fi; }
for rep in $(seq "$REPS"); do
    # Limits and the C worker share one stack and one preload.
    stack_up
    "$SM" produce -b "$bs" -i "$tmp/events.jsonl" --log-level error >/dev/null 2>&1
    out=$("$BUILD/bench/bench_broker" "$bs" "$N")
    r_brk+=("$(echo "$out" | sed -E 's/.*: ([0-9]+) events\/s.*/\1/')")
    c_brk+=("$(echo "$out" | sed -E 's/.*CPU ([0-9.]+) us.*/\1/')")
    d_brk+=("$(echo "$out" | sed -E 's/.*\(([0-9]+) events\/s to the last delivery.*/\1/')")
    r0=$(ticks "$rpid")
    out=$("$BUILD/bench/bench_redis" "$rport" "$N")
    r_red+=("$(echo "$out" | sed -E 's/.*: ([0-9]+) events\/s.*/\1/')")
    c_red+=("$(echo "$out" | sed -E 's/.*CPU ([0-9.]+) us.*/\1/')")
    c_rsrv+=("$(calc "round(($(ticks "$rpid")-$r0)/$TCK/$N*1e6, 2)")")
    wpids=(); worker
    MLOG=$tmp/worker.log measure "$N" "${wpids[0]}"
    r_c+=("$rate"); c_c+=("$cpu_w"); c_cb+=("$cpu_b"); c_cr+=("$cpu_r")
    rss_c+=("$(awk '/VmHWM/ {print int($2/1024)}' "/proc/${wpids[0]}/status")")
    stack_down "${wpids[0]}"

    # The same without the users' cache (state.cache_entries=0): every
    # batch reads its users from Redis, as before issue 19.
    if [ "$NOCACHE" = 1 ]; then
    stack_up
    "$SM" produce -b "$bs" -i "$tmp/events.jsonl" --log-level error >/dev/null 2>&1
    wpids=(); worker -X state.cache_entries=0
    MLOG=$tmp/worker.log measure "$N" "${wpids[0]}"
    r_nc+=("$rate"); c_nc+=("$cpu_w"); c_ncb+=("$cpu_b"); c_ncr+=("$cpu_r")
    stack_down "${wpids[0]}"
    fi

    # The same again (cache on), the store in the users' key layout 1 of
    # before issue 19 (a hash per user: HMGET, HSET + PEXPIRE), which a
    # store saying <prefix>layout=1 keeps: redis-server's CPU before and
    # after the layout change, in one run.
    stack_up
    redis-cli -p "$rport" set layout 1 >/dev/null
    "$SM" produce -b "$bs" -i "$tmp/events.jsonl" --log-level error >/dev/null 2>&1
    wpids=(); worker
    MLOG=$tmp/worker.log measure "$N" "${wpids[0]}"
    r_l1+=("$rate"); c_l1+=("$cpu_w"); c_l1r+=("$cpu_r")
    stack_down "${wpids[0]}"

    # Layout 2 (a string per user, SET PX in the script), the default for
    # a new store before layout 3 (users as fields of hash buckets).
    stack_up
    "$SM" produce -b "$bs" -i "$tmp/events.jsonl" --log-level error >/dev/null 2>&1
    wpids=(); worker -X state.layout=2
    MLOG=$tmp/worker.log measure "$N" "${wpids[0]}"
    r_l2+=("$rate"); c_l2+=("$cpu_w"); c_l2r+=("$cpu_r")
    stack_down "${wpids[0]}"

    # Layout 3 (the default) again on a fresh server, as the rows above:
    # the first row's server also holds bench_redis's keys.
    stack_up
    "$SM" produce -b "$bs" -i "$tmp/events.jsonl" --log-level error >/dev/null 2>&1
    wpids=(); worker
    MLOG=$tmp/worker.log measure "$N" "${wpids[0]}"
    r_l3+=("$rate"); c_l3+=("$cpu_w"); c_l3r+=("$cpu_r")
    stack_down "${wpids[0]}"

    # The same worker, the same events, its state on a Redis Cluster of 3
    # masters with one replica each (redis.nodes): the servers' CPU summed.
    if [ "$CLUSTER" = 1 ]; then
    stack_up; cluster_up
    "$SM" produce -b "$bs" -i "$tmp/events.jsonl" --log-level error >/dev/null 2>&1
    wpids=(); worker -X redis.nodes="$cnodes"
    sample "${wpids[0]}" "${cpids[@]}"
    MLOG=$tmp/worker.log measure "$N" "${wpids[0]}"
    r_cl+=("$rate"); c_cl+=("$cpu_w"); c_clb+=("$cpu_b")
    c_clsrv+=("$(calc "round($(IFS=+; echo "${vals[*]:2:6}"), 2)")")
    stack_down "${wpids[0]}"; cluster_down
    fi

    # The Python peer: fresh stack, the same events.
    if [ "$PEER" = 1 ]; then
    stack_up
    "$SM" produce -b "$bs" -i "$tmp/peer.jsonl" --log-level error >/dev/null 2>&1
    $PY bench/peer_transactions.py "$bs" "$rport" "$MODEL" "$CARD" "$PEER_N" >>"$tmp/peer.log" 2>&1 &
    ppid=$!; pids+=($ppid)
    MLOG=$tmp/peer.log measure "$PEER_N" "$ppid"
    r_py+=("$rate"); c_py+=("$cpu_w")
    rss_py+=("$(awk '/VmHWM/ {print int($2/1024)}' "/proc/$ppid/status")")
    stack_down "$ppid"
    fi

    # Two C workers in one group. Both must hold their partitions before the
    # events arrive: on a loaded machine one may start after the group's
    # initial rebalance, and a second rebalance mid-run would be measured.
    # So they join on an empty topic (up to 60 s), then the N events are
    # produced while they run (streamml produce is faster than the workers).
    if [ "$TWO" = 1 ]; then
    stack_up
    wpids=(); : >"$tmp/w2a.log"; : >"$tmp/w2b.log"
    worker_log "$tmp/w2a.log"; worker_log "$tmp/w2b.log"
    # Settled: each worker's latest rebalance line is an assignment, and the
    # two assignments cover the 32 partitions.
    held() { grep -o 'rebalance: [a-z]* [0-9]*' "$1" | awk '{v = $2 == "assigned" ? $3 : 0} END {print v + 0}'; }
    for _ in $(seq 600); do
        [ "$(( $(held "$tmp/w2a.log") + $(held "$tmp/w2b.log") ))" = 32 ] && \
            [ "$(held "$tmp/w2a.log")" != 32 ] && [ "$(held "$tmp/w2b.log")" != 32 ] && break
        sleep 0.1
    done
    echo "2 workers: partitions held $(held "$tmp/w2a.log") + $(held "$tmp/w2b.log")" >&2
    sample "${wpids[@]}"; sleep 0.5
    "$SM" produce -b "$bs" -i "$tmp/events.jsonl" --log-level error >/dev/null 2>&1 &
    pids+=($!)
    MLOG="$tmp/w2a.log $tmp/w2b.log" measure "$N" "${wpids[@]}"
    r_c2+=("$rate"); c_c2+=("$cpu_w")
    stack_down "${wpids[@]}"
    fi
    echo "rep $rep: broker alone ${r_brk[-1]}/s, redis alone ${r_red[-1]}/s, C ${r_c[-1]}/s ${c_c[-1]} us," \
         "no cache $(lastv r_nc)/s, cluster $(lastv r_cl)/s, peer $(lastv r_py)/s, 2 C workers $(lastv r_c2)/s" \
         "(load $(cut -d' ' -f1 /proc/loadavg))" >&2
done

[ "$PEER" = 1 ] || { r_py=(0); c_py=(0); rss_py=(0); }
[ "$TWO" = 1 ] || { r_c2=(0); c_c2=(0); }
[ "$NOCACHE" = 1 ] || { r_nc=(0); c_nc=(0); c_ncb=(0); c_ncr=(0); }
[ "$CLUSTER" = 1 ] || { r_cl=(0); c_cl=(0); c_clb=(0); c_clsrv=(0); }
mr_brk=$(med "${r_brk[@]}"); mr_red=$(med "${r_red[@]}"); mr_c=$(med "${r_c[@]}")
mc_c=$(med "${c_c[@]}"); mr_py=$(med "${r_py[@]}"); mc_py=$(med "${c_py[@]}")
mr_c2=$(med "${r_c2[@]}"); mc_cb=$(med "${c_cb[@]}"); mc_cr=$(med "${c_cr[@]}")
mr_cl=$(med "${r_cl[@]}")
if [ "$PEER" = 1 ]; then peer_check; fi
echo
echo "Worker against its limits and its Python peer: $N preloaded events (peer: $PEER_N), $USERS users,"
echo "500-tree depth-6 model + scorecard, Redis state. Median of $REPS runs (all runs in brackets)."
echo "CPU per event = user+sys of the process (all threads) from the first to the N-th prediction."
echo
echo "| figure | events/s | CPU us/event | peak RSS MB |"
echo "|---|---:|---:|---:|"
echo "| broker alone (consume + produce the same bytes), to the N-th produce [${r_brk[*]}] | $mr_brk | $(med "${c_brk[@]}") | |"
echo "| broker alone, to the N-th delivery (includes a fixed ~1 s before the first delivery on the mock) [${d_brk[*]}] | $(med "${d_brk[@]}") | | |"
echo "| Redis alone, one connection (HMGET + EVALSHA, batches of 1000) [${r_red[*]}] | $mr_red | client $(med "${c_red[@]}"), redis-server $(med "${c_rsrv[@]}") | |"
echo "| C worker, 1 process [${r_c[*]}] | $mr_c | $mc_c [${c_c[*]}] | $(med "${rss_c[@]}") |"
echo "| (during it: broker, redis-server) | | $mc_cb, $mc_cr | |"
echo "| C worker, 1 process, users' cache off (state.cache_entries=0) [${r_nc[*]}] | $(med "${r_nc[@]}") | $(med "${c_nc[@]}") [${c_nc[*]}] | |"
echo "| (during it: broker, redis-server) | | $(med "${c_ncb[@]}"), $(med "${c_ncr[@]}") | |"
echo "| C worker, 1 process, state on a Redis Cluster (3 masters + 3 replicas, WAIT 1 per batch) [${r_cl[*]}] | $mr_cl | $(med "${c_cl[@]}") [${c_cl[*]}] | |"
echo "| (during it: the 6 redis-servers together) | | $(med "${c_clsrv[@]}") | |"
echo "| Python peer, 1 process [${r_py[*]}] | $mr_py | $mc_py [${c_py[*]}] | $(med "${rss_py[@]}") |"
echo "| C worker, 2 processes in one group (joined first, events produced live) [${r_c2[*]}] | $mr_c2 | $(med "${c_c2[@]}") (both) | |"
[ "$PEER" = 1 ] && echo "| **ratio C / Python** | **$(calc "round($mr_c/$mr_py, 1)")x** throughput | **$(calc "round($mc_py/max($mc_c, 0.01), 1)")x** less CPU | |"
echo "| load average at the end | $(cut -d' ' -f1-3 /proc/loadavg) | | |"

p99_50=-
# Latency at fractions of the measured maxima (1 and 2 workers), on a fresh
# stack each. The mock cluster does not answer a waiting Fetch when data
# arrives, so each consumer's fetch.wait.max.ms is added to the latency (the
# default 500 would be the floor; a real broker answers at once): the worker
# and the measuring consumer (bench_latency) use 1 ms, and the worker's
# producer lingers 1 ms (default 5) before sending a batch of predictions.
# LAT_X replaces the worker's settings. The first row, at FLOOR_RATE events/s,
# shows the floor these settings leave.
LAT_X=${LAT_X:--X fetch.wait.max.ms=1 -X fetch.error.backoff.ms=1 -X linger.ms=1}
FLOOR_RATE=${FLOOR_RATE:-500}
echo
echo "End-to-end latency, event produced -> prediction consumed, at fractions of the measured max"
echo "(${LAT_S} s per load; generator and consumer in one process on the same 2 cores; worker"
echo "settings: ${LAT_X}):"
echo
echo "| workers | % of max | offered events/s | achieved | p50 ms | p99 ms | p99.9 ms | max ms | missing |"
echo "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
declare -A p50 p99
lat_configs="1"; [ "$TWO" = 1 ] && lat_configs="$lat_configs 2"
[ "$CLUSTER" = 1 ] && [ "${CLUSTER_LAT:-1}" = 1 ] && lat_configs="$lat_configs cluster"
for cfgn in $lat_configs; do
    case $cfgn in 1) max=$mr_c; nw=1 ;; 2) max=$mr_c2; nw=2 ;; cluster) max=$mr_cl; nw=1 ;; esac
    stack_up
    wpids=()
    xcl=()
    if [ "$cfgn" = cluster ]; then cluster_up; xcl=(-X redis.nodes="$cnodes"); fi
    # shellcheck disable=SC2086 # LAT_X is a list of -X options
    for _ in $(seq "$nw"); do worker $LAT_X "${xcl[@]}"; done
    label=$([ "$cfgn" = cluster ] && echo "1 (cluster)" || echo "$nw")
    if [ "$cfgn" = 1 ]; then
        "$BUILD/bench/bench_latency" "$bs" "$FLOOR_RATE" "$LAT_S" "$USERS" | sed "s/^|/| 1 | floor |/"
    fi
    for pct in $LAT_PCTS; do
        line=$("$BUILD/bench/bench_latency" "$bs" "$(calc "round($max*$pct/100)")" "$LAT_S" "$USERS" | sed "s/^|/| $label | $pct |/")
        echo "$line"
        p50[$cfgn$pct]=$(echo "$line" | awk -F'|' '{gsub(/ /, "", $6); print $6}')
        p99[$cfgn$pct]=$(echo "$line" | awk -F'|' '{gsub(/ /, "", $7); print $7}')
    done
    stack_down "${wpids[@]}"
    if [ "$cfgn" = cluster ]; then cluster_down; fi
done
p99_50=${p99[150]:--}
echo
echo "Load average after the latency runs: $(cut -d' ' -f1-3 /proc/loadavg)"

# Which stage bounds the worker: the lowest of the ceilings measured above.
# CPU ceiling = cores / (worker + broker + redis-server CPU per event).
# One worker thread cannot pass 1 / its own CPU per event; it would fall to
# the serial figure, 1 / (its CPU + redis-server's), if it waited for every
# Redis command. It waits for the batch's read only: the write is applied
# while the batch is scored (state_put_begin/end), so it sits between.
cpu_ceiling=$(calc "round($(nproc)*1e6/($mc_c+$mc_cb+$mc_cr))")
serial_ceiling=$(calc "round(1e6/max($mc_c+$mc_cr, 0.01))")
thread_ceiling=$(calc "round(1e6/max($mc_c, 0.01))")
echo
echo "| ceiling | events/s |"
echo "|---|---:|"
echo "| broker alone | $mr_brk |"
echo "| Redis alone (one connection) | $mr_red |"
echo "| CPU: $(nproc) cores / (worker $mc_c + broker $mc_cb + redis $mc_cr us/event) | $cpu_ceiling |"
echo "| one worker thread: 1 / (worker $mc_c us/event) | $thread_ceiling |"
echo "| (it would be, waiting for every Redis command: 1 / (worker $mc_c + redis-server $mc_cr us/event)) | $serial_ceiling |"
echo "| C worker measured (1 process) | $mr_c |"
bound=$(printf '%s %s\n' "$mr_brk" "broker" "$mr_red" "Redis (one connection)" \
    "$cpu_ceiling" "CPU (all processes on $(nproc) cores)" \
    "$thread_ceiling" "the worker's own CPU (one thread), plus its wait for each batch's Redis read" | sort -n | head -1 | cut -d' ' -f2-)
echo
echo "Bound: $bound."

# The issue's targets for this worker on this 2-core machine. What bounds
# each and what would move it comes from the figures above (see the
# Performance section of README.md for the reading of a quiet-machine run).
e2e_target=$(calc "min(150000, round(0.8*$mr_brk))")
yn() { $PY -c "print('yes' if $1 else '**no**')"; }
echo
echo "| target | measured | met | bounded by / what would move it |"
echo "|---|---:|:---:|---|"
echo "| worker CPU <= 1.5 us/event | $mc_c | $(yn "$mc_c <= 1.5") | Avro decode + encode through avro-c (about 45% of the worker's instructions in bench/profile_txn.sh), then tree scoring (about 17%, batched SIMD kernel), hiredis, librdkafka; a schema-specialised Avro path would move it most |"
echo "| >= 20x less CPU than the Python peer | $(calc "round($mc_py/max($mc_c, 0.01), 1)")x | $(yn "$mc_py/max($mc_c, 0.01) >= 20") | the C worker's own CPU (row above) |"
echo "| end to end >= min(150,000, 80% of broker alone = $e2e_target) events/s | $mr_c | $(yn "$mr_c >= $e2e_target") | $bound |"
echo "| p99 < 5 ms at 50% load (1 worker) | ${p99_50} ms | $(yn "'${p99_50}' != '-' and float('${p99_50}') < 5") | the floor row (fetch waits on the mock + linger), then queueing behind a batch when the 2 cores are shared by the load generator, the broker, Redis and the worker |"
if [ -n "${GBDT_NS:-}" ]; then echo "| tree scoring <= 1 us/event batched | $(calc "round(${GBDT_NS}/1000, 2)") us | $(yn "${GBDT_NS} <= 1000") | the kernel level this CPU runs (README \"Tree scoring kernels\"): splitting 64 rows at each inner node plus quantising the features; one row at a time stays 2.7 us (500 adds in tree order) |"; fi

# Issue 19: the rows side by side, and its targets next to the figures.
mc_brk=$(med "${c_brk[@]}"); mr_nc=$(med "${r_nc[@]}"); mc_nc=$(med "${c_nc[@]}")
mc_ncb=$(med "${c_ncb[@]}"); mc_ncr=$(med "${c_ncr[@]}"); mc_cl=$(med "${c_cl[@]}")
mc_clb=$(med "${c_clb[@]}"); mc_clsrv=$(med "${c_clsrv[@]}")
pb() { calc "round(100*$1/max($mr_brk, 1))"; }
lat() { echo "${p50[$1]:--} / ${p99[$1]:--}"; }
echo
echo "Issue 19, one run: $N preloaded events, $USERS users, medians of $REPS; latency at 25% and"
echo "50% of each row's own maximum (${LAT_S} s per load, worker settings: ${WX[*]} ${LAT_X})."
echo
echo "| row | events/s | % of broker alone | worker CPU us/event | broker | redis-server(s) | p50 / p99 ms at 25% | p50 / p99 ms at 50% |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|"
echo "| broker alone (consume + produce, to the N-th produce) | $mr_brk | 100 | | $mc_brk | | | |"
echo "| 1 worker, 1 Redis (users' cache on, the default; users' keys in layout 3) | $mr_c | $(pb "$mr_c") | $mc_c | $mc_cb | $mc_cr | $(lat 125) | $(lat 150) |"
echo "| 1 worker, 1 Redis, cache off (state.cache_entries=0) | $mr_nc | $(pb "$mr_nc") | $mc_nc | $mc_ncb | $mc_ncr | | |"
echo "| 1 worker, 1 Redis, users' keys in layout 1 (a hash per user, as before issue 19's layout 2) | $(med "${r_l1[@]}") | $(pb "$(med "${r_l1[@]}")") | $(med "${c_l1[@]}") | | $(med "${c_l1r[@]}") | | |"
echo "| 1 worker, 1 Redis, users' keys in layout 2 (a string per user, state.layout=2) | $(med "${r_l2[@]}") | $(pb "$(med "${r_l2[@]}")") | $(med "${c_l2[@]}") | | $(med "${c_l2r[@]}") | | |"
echo "| 1 worker, 1 Redis, users' keys in layout 3 (the default), a fresh server as the two rows above | $(med "${r_l3[@]}") | $(pb "$(med "${r_l3[@]}")") | $(med "${c_l3[@]}") | | $(med "${c_l3r[@]}") | | |"
[ "$CLUSTER" = 0 ] ||
    echo "| 1 worker, Redis Cluster 3 masters + 3 replicas (cache on) | $mr_cl | $(pb "$mr_cl") | $mc_cl | $mc_clb | $mc_clsrv (6 servers) | $(lat cluster25) | $(lat cluster50) |"
ok() { $PY -c "print('yes' if $1 else '**no**')"; }
# the cluster's columns: "-" when its rows were left out (CLUSTER=0)
cv() { [ "$CLUSTER" = 0 ] && echo "-" || echo "$1"; }
okc() { [ "$CLUSTER" = 0 ] && echo "-" || ok "$1"; }
okv() { [ "$1" = - ] && echo "-" || ok "$1 <= $2"; }
echo
echo "| target (issue 19) | 1 Redis | met | cluster | met |"
echo "|---|---:|:---:|---:|:---:|"
echo "| redis-server CPU <= 1.5 us/event | $mc_cr | $(ok "$mc_cr <= 1.5") | $(cv "$mc_clsrv") | $(okc "$mc_clsrv <= 1.5") |"
echo "| worker CPU <= 2x broker alone (2 x $mc_brk us) | $mc_c | $(ok "$mc_c <= 2 * $mc_brk") | $(cv "$mc_cl") | $(okc "$mc_cl <= 2 * $mc_brk") |"
echo "| one worker >= 60% of broker alone's events/s | $(pb "$mr_c")% | $(ok "$mr_c >= 0.6 * $mr_brk") | $(cv "$(pb "$mr_cl")%") | $(okc "$mr_cl >= 0.6 * $mr_brk") |"
echo "| p99 <= 20 ms at 25% of max | ${p99[125]:--} | $(okv "${p99[125]:--}" 20) | ${p99[cluster25]:--} | $(okv "${p99[cluster25]:--}" 20) |"
echo "| p99 <= 50 ms at 50% of max | ${p99[150]:--} | $(okv "${p99[150]:--}" 50) | ${p99[cluster50]:--} | $(okv "${p99[cluster50]:--}" 50) |"
echo
echo "Load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
