#!/bin/bash
# Where the transactions worker's and redis-server's CPU goes (issue 10):
# both run under valgrind --tool=callgrind (perf has no hardware counters in
# this VM: `perf stat -e instructions true` says <not supported>) on N
# preloaded bench events (the limits.sh workload: 500-tree model, 20,000
# users, Redis state), and the top functions by inclusive and exclusive
# instruction counts are printed, per event. Figures, not pass/fail.
#   N=20000 bench/profile_txn.sh [OUTDIR]   (callgrind.out.* kept in OUTDIR)
# Default: two runs (N0 = N/3 and N events) and the difference per event.
# USERS (default 20,000) sets the distinct users, as in limits.sh.
set -euo pipefail
BUILD=${BUILD:-build}
N=${N:-20000}
# N0 (default N/3; 0: one run, totals with the start-up): a second run of N0
# events, and the figures are the difference per event (steady state).
N0=${N0:-$((N / 3))}
SM="$BUILD/streamml"
MODEL="$BUILD/bench/xgb500.json"
# The worker's settings, as in limits.sh (explanations off): WORKER_X=
# profiles with them.
read -r -a WX <<<"${WORKER_X--X explain.decisions=none}"
out=${1:-$(mktemp -d /tmp/streamml-prof-XXXXXX)}
mkdir -p "$out"
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh" profrun # $tmp, pids, $PY, free_port, txn_events

[ -s "$MODEL" ] || $PY bench/make_model.py "$SM" "$MODEL" >/dev/null
txn_events "$N" "${USERS:-20000}" >"$tmp/events.jsonl"
# One fresh stack (broker, redis-server under callgrind), n events preloaded,
# the worker under callgrind until it has taken n: $1 = n, $2 = file suffix.
prof_run() {
    local n=$1 sfx=$2 bpid rport rpid
    rm -f "$tmp/bs"
    head -n "$n" "$tmp/events.jsonl" >"$tmp/ev.jsonl"
    "$SM" broker --topics transactions:32,predictions.transactions:32,transactions.dlq:2 \
        --bootstrap-file "$tmp/bs" >"$tmp/broker.log" 2>&1 &
    bpid=$!; pids+=($bpid)
    rport=$(free_port)
    valgrind --tool=callgrind --callgrind-out-file="$out/callgrind.out.redis$sfx" \
        redis-server --port "$rport" --bind 127.0.0.1 --dir "$tmp" --save '' --appendonly no \
        >"$tmp/redis.log" 2>&1 &
    rpid=$!; pids+=($rpid)
    for _ in $(seq 300); do [ -s "$tmp/bs" ] && redis-cli -p "$rport" ping >/dev/null 2>&1 && break; sleep 0.1; done
    "$SM" produce -b "$(cat "$tmp/bs")" -i "$tmp/ev.jsonl" --log-level error >/dev/null 2>&1
    valgrind --tool=callgrind --callgrind-out-file="$out/callgrind.out.worker$sfx" \
        "$BUILD/streamml-transactions" -b "$(cat "$tmp/bs")" -X redis.port="$rport" \
        -X model.gbdt="$MODEL" -X worker.max_messages="$n" "${WX[@]}" --log-level warn 2>"$tmp/worker.log"
    redis-cli -p "$rport" shutdown nosave >/dev/null 2>&1 || true
    wait "$rpid" 2>/dev/null || true
    kill "$bpid" 2>/dev/null || true; wait "$bpid" 2>/dev/null || true
}
prof_run "$N" ""
[ "$N0" = 0 ] || prof_run "$N0" .n0

report() { # $1 = file, $2 = title
    local total
    total=$(callgrind_annotate "$1" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(/,/, "", $1); print $1}')
    echo "### $2: $(( total / N )) instructions per event ($total in all)"
    echo
    echo "Inclusive (a function and what it calls), top 25:"
    echo '```'
    callgrind_annotate --inclusive=yes "$1" 2>/dev/null | sed -n '/^Ir/,$p' | sed -n '3,27p'
    echo '```'
    echo "Exclusive (own instructions), top 20:"
    echo '```'
    callgrind_annotate "$1" 2>/dev/null | sed -n '/^Ir/,$p' | sed -n '3,22p'
    echo '```'
}
# The marginal cost: (run of N - run of N0) / (N - N0) per function, so the
# start-up (model load: ~700 M instructions) and the shutdown cancel out.
marginal() { # $1 = file of N, $2 = file of N0, $3 = title
    local a b
    a=$(mktemp "$tmp/a.XXXXXX"); b=$(mktemp "$tmp/b.XXXXXX")
    callgrind_annotate --inclusive=yes --auto=no --threshold=100 "$1" >"$a" 2>/dev/null
    callgrind_annotate --inclusive=yes --auto=no --threshold=100 "$2" >"$b" 2>/dev/null
    $PY - "$a" "$b" "$N" "$N0" "$3" "${TOP:-45}" <<'PYEOF'
import re, sys
def load(f):
    tot, fn, seen = 0, {}, {}
    for l in open(f):
        m = re.match(r"\s*([\d,]+) \([ \d.]+%\)\s+(.*)$", l)
        if not m:
            continue
        v, name = int(m.group(1).replace(",", "")), m.group(2).strip()
        if name.startswith("PROGRAM TOTALS"):
            tot = v
            continue
        # file:function [object]; a function's lines inlined from another
        # file (a header) come as file:function alone: added to it
        m = re.match(r"(.*?):(\S+)(?: \[(.*)\])?$", name)
        if m:
            name = m.group(2) + (f" ({m.group(3).rsplit('/', 1)[-1]})" if m.group(2).startswith("0x") else "")
        if v not in seen.setdefault(name, set()):  # one file under two spellings
            seen[name].add(v)
            fn[name] = fn.get(name, 0) + v
    return tot, fn
(ta, fa), (tb, fb) = load(sys.argv[1]), load(sys.argv[2])
n, n0, top = int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[6])
d = n - n0
print(f"### {sys.argv[5]}: {(ta - tb) / d:,.0f} instructions per event (marginal, events {n0} to {n})")
print()
print("Inclusive per event (a function and what it calls; all threads), top %d:" % top)
print("```")
rows = sorted(((fa[k] - fb.get(k, 0)) / d, k) for k in fa)
for v, k in reversed(rows[-top:]):
    print(f"{v:>10,.0f}  {k}")
print("```")
PYEOF
}
if [ "$N0" = 0 ]; then
    report "$out/callgrind.out.worker" "streamml-transactions, $N events"
    report "$out/callgrind.out.redis" "redis-server, the same $N events"
else
    marginal "$out/callgrind.out.worker" "$out/callgrind.out.worker.n0" "streamml-transactions"
    marginal "$out/callgrind.out.redis" "$out/callgrind.out.redis.n0" "redis-server"
fi
